//! The `/proc/sys/net` switches the helper flips: forwarding, and a new tap's
//! IPv6 switches (IPv6 off). Device names reaching here are checked alphanumeric.

use std::fs;

use crate::error::NetError;

/// `/proc/sys/net/ipv4/ip_forward`.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The IPv6 switches through which a link's traffic could reconfigure the
/// host: router advertisements (default routes, on-link prefixes), redirects,
/// and stateless address autoconfiguration.
pub const IPV6_FROM_LINK: [&str; 3] = ["accept_ra", "accept_redirects", "autoconf"];

/// The switch that takes IPv6 off a device: no addresses, and every IPv6
/// packet arriving there dropped.
pub const IPV6_DISABLE: &str = "disable_ipv6";

/// The directory of device `dev`'s IPv6 switches (absent without IPv6).
pub fn ipv6_dir(dev: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{dev}")
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
