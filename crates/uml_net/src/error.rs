//! Why a request was refused or failed.

use std::io;

use uml_host::tun::TunError;

use crate::rtnl::RtnlError;

/// A refused or failed request; the message is what the kernel prints.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The policy (or ownership) forbids it; nothing was changed.
    #[error("denied: {0}")]
    Denied(String),
    /// A transport the host kernel no longer has.
    #[error(
        "the {0} transport is not supported: host kernels lost ethertap in 2.6 and slip \
         links are a relic; boot the guest with eth0=tuntap,,,GATE or plug it into uml_switch"
    )]
    Unsupported(&'static str),
    /// The named device is missing or not a tap.
    #[error("{0}")]
    Device(String),
    /// Creating the tap failed.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// A netlink request failed.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// A `/proc/sys/net` switch could not be read or written.
    #[error("{path}: {source}")]
    Sysctl {
        /// The switch.
        path: String,
        /// The failure.
        source: io::Error,
    },
    /// The helper runs without CAP_NET_ADMIN.
    #[error(
        "uml_net lacks CAP_NET_ADMIN: install it setuid root (chown root:uml-net; chmod 4754) \
         or with the capability (setcap cap_net_admin+ep)"
    )]
    NoNetAdmin,
    /// The capability sets could not be restricted, so the helper does nothing.
    #[error(transparent)]
    Privilege(#[from] crate::privilege::PrivilegeError),
}
