//! Typed wrappers around the TUN/TAP ioctls.
#![expect(
    unsafe_code,
    reason = "the TUN/TAP ioctls have no safe wrapper; each call says why it is sound"
)]

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The default clone device.
pub const CLONE_DEVICE: &str = "/dev/net/tun";

/// The `IFF_*` flags of a TUN/TAP device: what `TUNSETIFF` takes and what sysfs
/// shows as `tun_flags`. The values are libc's, defined per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunFlags(libc::c_int);

impl TunFlags {
    /// Layer 3 device (no Ethernet header).
    pub const TUN: Self = Self(libc::IFF_TUN);
    /// Layer 2 device (Ethernet frames).
    pub const TAP: Self = Self(libc::IFF_TAP);
    /// No packet-information header before each packet.
    pub const NO_PI: Self = Self(libc::IFF_NO_PI);
    /// Several queues (one fd each).
    pub const MULTI_QUEUE: Self = Self(libc::IFF_MULTI_QUEUE);
    /// The device outlives its file descriptors.
    pub const PERSIST: Self = Self(libc::IFF_PERSIST);
    /// A virtio-net header before each packet.
    pub const VNET_HDR: Self = Self(libc::IFF_VNET_HDR);

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> libc::c_int {
        self.0
    }

    /// Flags from raw bits, unknown ones kept.
    pub const fn from_bits(bits: libc::c_int) -> Self {
        Self(bits)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags as sysfs prints them in `tun_flags` (`0x1002`).
    pub fn from_sysfs(text: &str) -> Option<Self> {
        let text = text.trim();
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        libc::c_int::from_str_radix(digits, 16).ok().map(Self)
    }

    /// The flags as `struct ifreq` carries them (a C `short`): the kernel's
    /// TUNSETIFF flags all sit in the low 16 bits.
    fn as_ifreq_flags(self) -> Result<libc::c_short, TunError> {
        let low = u16::try_from(self.0).map_err(|_| TunError::BadFlags(self))?;
        Ok(libc::c_short::from_ne_bytes(low.to_ne_bytes()))
    }
}

impl BitOr for TunFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for TunFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Why a device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name does not fit an interface name.
    #[error("'{0}' is not a valid interface name (1 to 15 bytes, no '/' or spaces)")]
    BadName(String),
    /// Flags that do not fit the request.
    #[error("TUN/TAP flags {0:?} do not fit a TUNSETIFF request")]
    BadFlags(TunFlags),
    /// A value the kernel cannot take (an MTU over `INT_MAX`).
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: u32,
    },
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

/// The result of an ioctl as a `Result`, naming the call on failure.
fn check(call: &'static str, ret: libc::c_int) -> Result<(), TunError> {
    if ret < 0 {
        Err(TunError::Ioctl {
            call,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
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
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(out)
}

fn name_of(raw: &[libc::c_char; libc::IFNAMSIZ]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|c| c.to_ne_bytes()[0])
        .take_while(|&b| b != 0)
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
        flags: TunFlags,
        nonblocking: bool,
    ) -> Result<Self, TunError> {
        let ifr_name = ifreq_name(name)?;
        let ifru_flags = flags.as_ifreq_flags()?;
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
            ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags },
        };
        // SAFETY: the fd is an open clone device and `request` is a fully
        // initialised ifreq that lives across the call; the kernel reads the
        // name and flags and writes the chosen name back into it.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
        check("TUNSETIFF", ret)?;
        Ok(Self {
            name: name_of(&request.ifr_name),
            file,
        })
    }

    /// An ioctl whose argument is passed by value.
    fn set_value(
        &self,
        call: &'static str,
        op: libc::Ioctl,
        value: libc::c_ulong,
    ) -> Result<(), TunError> {
        // SAFETY: TUNSETPERSIST, TUNSETOWNER and TUNSETGROUP read their
        // argument as an integer, never as a pointer; the fd is attached.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), op, value) };
        check(call, ret)
    }

    /// Makes the device outlive this fd, or not.
    pub fn set_persist(&self, persist: bool) -> Result<(), TunError> {
        self.set_value(
            "TUNSETPERSIST",
            libc::TUNSETPERSIST,
            libc::c_ulong::from(persist),
        )
    }

    /// Lets `uid` attach to the device.
    pub fn set_owner(&self, uid: u32) -> Result<(), TunError> {
        self.set_value("TUNSETOWNER", libc::TUNSETOWNER, libc::c_ulong::from(uid))
    }

    /// Lets members of `gid` attach to the device.
    pub fn set_group(&self, gid: u32) -> Result<(), TunError> {
        self.set_value("TUNSETGROUP", libc::TUNSETGROUP, libc::c_ulong::from(gid))
    }

    /// Sets the device's MTU.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TunError> {
        let ifru_mtu = libc::c_int::try_from(mtu).map_err(|_| TunError::OutOfRange {
            what: "MTU",
            value: mtu,
        })?;
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| TunError::Ioctl {
            call: "socket",
            source: e.into(),
        })?;
        let request = libc::ifreq {
            ifr_name: ifreq_name(&self.name)?,
            ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_mtu },
        };
        // SAFETY: `request` is a fully initialised ifreq naming our device that
        // lives across the call; the socket is open; SIOCSIFMTU only reads it.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &raw const request) };
        check("SIOCSIFMTU", ret)
    }
}

/// Opens an existing tap device (or a new, non-persistent one) for raw
/// Ethernet frames without a packet-information header, non-blocking.
pub fn open_tap(name: &str) -> Result<File, TunError> {
    if name.is_empty() {
        return Err(TunError::BadName(String::new()));
    }
    Tun::attach(
        Path::new(CLONE_DEVICE),
        name,
        TunFlags::TAP | TunFlags::NO_PI,
        true,
    )
    .map(|t| t.file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_sysfs_prints_them() {
        let flags = TunFlags::from_sysfs("0x1002\n").expect("hex");
        assert!(flags.contains(TunFlags::TAP | TunFlags::NO_PI));
        assert!(!flags.contains(TunFlags::TUN));
        assert_eq!(TunFlags::from_sysfs("zz"), None);
    }

    #[test]
    fn names_longer_than_the_kernel_allows_are_refused() {
        assert!(ifreq_name("tap0").is_ok());
        assert!(ifreq_name("").is_ok());
        assert!(matches!(
            ifreq_name("a-name-of-16-byt"),
            Err(TunError::BadName(_))
        ));
        assert!(ifreq_name("a/b").is_err());
        let name = ifreq_name("tap7").expect("valid");
        assert_eq!(name_of(&name), "tap7");
    }

    #[test]
    fn flags_beyond_sixteen_bits_are_refused_not_truncated() {
        assert!(TunFlags::from_bits(0x1_0002).as_ifreq_flags().is_err());
        assert_eq!(
            (TunFlags::TAP | TunFlags::VNET_HDR).as_ifreq_flags().ok(),
            Some(0x4002)
        );
    }
}
