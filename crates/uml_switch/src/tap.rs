//! Attaching an existing tap device as a switch port.
#![allow(unsafe_code)] // the TUNSETIFF ioctl has no safe wrapper

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::libc;

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

nix::ioctl_write_ptr_bad!(
    /// Binds the open tun fd to the interface the `ifreq` names.
    tun_set_iff,
    TUNSETIFF,
    libc::ifreq
);

/// Opens the tap device `name` (creating a non-persistent one if it does not
/// exist) for raw Ethernet frames without a packet-information header.
pub fn open_tap(name: &str) -> io::Result<File> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a valid interface name (1 to 15 bytes)"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let request = libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        },
    };
    // SAFETY: the fd is an open /dev/net/tun and `request` is a fully
    // initialised ifreq that outlives the call; TUNSETIFF only reads it
    // (and writes the chosen name back into it).
    unsafe { tun_set_iff(file.as_raw_fd(), &request) }.map_err(io::Error::from)?;
    Ok(file)
}
