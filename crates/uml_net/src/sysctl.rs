//! The `/proc/sys/net/ipv4` switches the helper flips: forwarding and a
//! device's proxy ARP. Device names reaching here are checked alphanumeric.

use std::fs;

use crate::error::NetError;

/// `/proc/sys/net/ipv4/ip_forward`.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The proxy ARP switch of device `dev`.
pub fn proxy_arp(dev: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{dev}/proxy_arp")
}

/// Whether the switch at `path` is on.
pub fn is_on(path: &str) -> Result<bool, NetError> {
    fs::read_to_string(path)
        .map(|text| text.trim() != "0")
        .map_err(|source| NetError::Sysctl {
            path: path.to_owned(),
            source,
        })
}

/// Turns the switch at `path` on or off.
pub fn set(path: &str, on: bool) -> Result<(), NetError> {
    fs::write(path, if on { "1\n" } else { "0\n" }).map_err(|source| NetError::Sysctl {
        path: path.to_owned(),
        source,
    })
}
