//! Typed wrappers around the TUN/TAP ioctls.
#![allow(unsafe_code)] // ioctls have no safe wrappers; each call below says why it is sound

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::libc;

/// The default clone device.
pub const CLONE_DEVICE: &str = "/dev/net/tun";
/// Layer 3 device (no Ethernet header).
pub const IFF_TUN: i16 = 0x0001;
/// Layer 2 device (Ethernet frames).
pub const IFF_TAP: i16 = 0x0002;
/// Several queues (one fd each).
pub const IFF_MULTI_QUEUE: i16 = 0x0100;
/// No packet-information header before each packet.
pub const IFF_NO_PI: i16 = 0x1000;

nix::ioctl_readwrite_bad!(
    /// TUNSETIFF: attaches the fd to the named device (creating it); the kernel writes the chosen name back.
    tun_set_iff,
    0x4004_54ca,
    libc::ifreq
);
nix::ioctl_write_int_bad!(
    /// TUNSETPERSIST: keeps the device after the fd closes (1) or not (0).
    tun_set_persist,
    0x4004_54cb
);
nix::ioctl_write_int_bad!(
    /// TUNSETOWNER: the uid allowed to attach.
    tun_set_owner,
    0x4004_54cc
);
nix::ioctl_write_int_bad!(
    /// TUNSETGROUP: the gid allowed to attach.
    tun_set_group,
    0x4004_54ce
);
nix::ioctl_write_ptr_bad!(
    /// SIOCSIFMTU: sets an interface's MTU.
    set_mtu,
    libc::SIOCSIFMTU,
    libc::ifreq
);

/// Why a device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name does not fit an interface name.
    #[error("'{0}' is not a valid interface name (1 to 15 bytes, no '/' or spaces)")]
    BadName(String),
    /// The clone device could not be opened.
    #[error("Failed to open '{path}' : {source}")]
    Open {
        /// The clone device.
        path: String,
        /// The failure.
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{call}: {source}")]
    Ioctl {
        /// Which one.
        call: &'static str,
        /// The failure.
        source: io::Error,
    },
}

fn ioctl_err(call: &'static str) -> impl Fn(nix::Error) -> TunError {
    move |e| TunError::Ioctl {
        call,
        source: e.into(),
    }
}

/// An interface name as the kernel stores it.
fn ifreq_name(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], TunError> {
    let bytes = name.as_bytes();
    // Empty means "let the kernel choose" and is allowed; a template like tap%d too.
    if bytes.len() >= libc::IFNAMSIZ
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(TunError::BadName(name.to_owned()));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in out.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(out)
}

fn name_of(raw: &[libc::c_char; libc::IFNAMSIZ]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A device attached through the clone device; closing it drops the attachment.
#[derive(Debug)]
pub struct Tun {
    /// The open clone device.
    pub file: File,
    /// The device's name as the kernel chose it.
    pub name: String,
}

impl Tun {
    /// Opens `clone` and attaches to (or creates) device `name` with `flags`.
    pub fn attach(
        clone: &Path,
        name: &str,
        flags: i16,
        nonblocking: bool,
    ) -> Result<Self, TunError> {
        let ifr_name = ifreq_name(name)?;
        let mut custom = libc::O_CLOEXEC;
        if nonblocking {
            custom |= libc::O_NONBLOCK;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(custom)
            .open(clone)
            .map_err(|source| TunError::Open {
                path: clone.display().to_string(),
                source,
            })?;
        let mut request = libc::ifreq {
            ifr_name,
            ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: flags },
        };
        // SAFETY: the fd is an open clone device and `request` is a fully
        // initialised ifreq that lives across the call; the kernel reads the
        // name and flags and writes the chosen name back into it.
        unsafe { tun_set_iff(file.as_raw_fd(), &mut request) }.map_err(ioctl_err("TUNSETIFF"))?;
        Ok(Self {
            name: name_of(&request.ifr_name),
            file,
        })
    }

    /// Makes the device outlive this fd, or not.
    pub fn set_persist(&self, persist: bool) -> Result<(), TunError> {
        // SAFETY: TUNSETPERSIST takes its argument by value; the fd is attached.
        unsafe { tun_set_persist(self.file.as_raw_fd(), i32::from(persist)) }
            .map(drop)
            .map_err(ioctl_err("TUNSETPERSIST"))
    }

    /// Lets `uid` attach to the device.
    pub fn set_owner(&self, uid: u32) -> Result<(), TunError> {
        // SAFETY: TUNSETOWNER takes the uid by value; the fd is attached.
        unsafe { tun_set_owner(self.file.as_raw_fd(), uid as libc::c_int) }
            .map(drop)
            .map_err(ioctl_err("TUNSETOWNER"))
    }

    /// Lets members of `gid` attach to the device.
    pub fn set_group(&self, gid: u32) -> Result<(), TunError> {
        // SAFETY: TUNSETGROUP takes the gid by value; the fd is attached.
        unsafe { tun_set_group(self.file.as_raw_fd(), gid as libc::c_int) }
            .map(drop)
            .map_err(ioctl_err("TUNSETGROUP"))
    }

    /// Sets the device's MTU.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TunError> {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(ioctl_err("socket"))?;
        let request = libc::ifreq {
            ifr_name: ifreq_name(&self.name)?,
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_mtu: mtu as libc::c_int,
            },
        };
        // SAFETY: `request` is a fully initialised ifreq naming our device; the
        // socket is open; SIOCSIFMTU only reads the request.
        unsafe { set_mtu(sock.as_raw_fd(), &request) }
            .map(drop)
            .map_err(ioctl_err("SIOCSIFMTU"))
    }
}

/// Opens an existing tap device (or a new, non-persistent one) for raw
/// Ethernet frames without a packet-information header, non-blocking.
pub fn open_tap(name: &str) -> Result<File, TunError> {
    if name.is_empty() {
        return Err(TunError::BadName(String::new()));
    }
    Tun::attach(Path::new(CLONE_DEVICE), name, IFF_TAP | IFF_NO_PI, true).map(|t| t.file)
}
