//! The 110-byte `struct sockaddr_un` that identifies a port.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zerocopy::byteorder::{I32, NativeEndian, U16};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::c_string::until_nul;

/// Size of `sun_path`.
pub const SUN_PATH_LEN: usize = 108;
/// Size of a whole `struct sockaddr_un` on Linux.
pub const SOCKADDR_UN_LEN: usize = 110;
const AF_UNIX: u16 = 1;

/// A `struct sockaddr_un` carried as opaque bytes.
///
/// Equality and hashing cover all 110 bytes: the kernel leaves heap garbage after
/// the meaningful part of its data address, so a port is recognised only by
/// comparing the whole thing, exactly as `recvfrom()` reports it.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct PeerAddr {
    /// `sun_family`, host-endian (1 for AF_UNIX).
    pub family: U16<NativeEndian>,
    /// `sun_path`: a NUL-terminated filesystem path, or a NUL followed by an abstract name.
    pub path: [u8; SUN_PATH_LEN],
}

const _: () = assert!(size_of::<PeerAddr>() == SOCKADDR_UN_LEN);

/// The 12 bytes the kernel's daemon transport copies into `sun_path`
/// (`struct { char zero; int pid; int usecs; }` with C padding).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct KernelAbstractName {
    /// Always 0: the mark of an abstract address.
    pub zero: u8,
    /// C struct padding.
    pub pad: [u8; 3],
    /// The UML process's host PID.
    pub pid: I32<NativeEndian>,
    /// `tv_usec` at the time the socket was made, to tell NICs of one UML apart.
    pub usecs: I32<NativeEndian>,
}

/// Why bytes or a path do not make a socket address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Fewer than 110 bytes.
    #[error("socket address is {len} bytes; a sockaddr_un has {SOCKADDR_UN_LEN}")]
    Short {
        /// Bytes available.
        len: usize,
    },
    /// The path (plus its NUL) does not fit in `sun_path`.
    #[error("socket path is {len} bytes; at most {} fit in a sockaddr_un", SUN_PATH_LEN - 1)]
    PathTooLong {
        /// Length of the path.
        len: usize,
    },
    /// An empty path, or one containing a NUL.
    #[error("socket path is empty or contains a NUL byte")]
    BadPath,
}

impl PeerAddr {
    /// Reads an address from the first 110 bytes of `bytes`.
    pub fn from_prefix(bytes: &[u8]) -> Result<Self, AddrError> {
        Self::read_from_prefix(bytes)
            .map(|(addr, _)| addr)
            .map_err(|_| AddrError::Short { len: bytes.len() })
    }

    /// A filesystem socket address for `path`, zero-padded.
    pub fn from_path(path: &Path) -> Result<Self, AddrError> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(AddrError::BadPath);
        }
        if bytes.len() >= SUN_PATH_LEN {
            return Err(AddrError::PathTooLong { len: bytes.len() });
        }
        let mut addr = Self::empty();
        addr.path[..bytes.len()].copy_from_slice(bytes);
        Ok(addr)
    }

    /// An abstract address whose name (the bytes after the leading NUL) is `name`, zero-padded.
    pub fn from_abstract_name(name: &[u8]) -> Result<Self, AddrError> {
        if name.len() >= SUN_PATH_LEN {
            return Err(AddrError::PathTooLong { len: name.len() });
        }
        let mut addr = Self::empty();
        addr.path[1..=name.len()].copy_from_slice(name);
        Ok(addr)
    }

    /// The abstract address a UML kernel's daemon transport binds: the 12-byte
    /// [`KernelAbstractName`] with the rest zeroed (the kernel leaves garbage there instead).
    pub fn kernel_style(pid: i32, usecs: i32) -> Self {
        let name = KernelAbstractName {
            zero: 0,
            pad: [0; 3],
            pid: I32::new(pid),
            usecs: I32::new(usecs),
        };
        let mut addr = Self::empty();
        addr.path[..size_of::<KernelAbstractName>()].copy_from_slice(name.as_bytes());
        addr
    }

    fn empty() -> Self {
        Self {
            family: U16::new(AF_UNIX),
            path: [0; SUN_PATH_LEN],
        }
    }

    /// Whether this is an abstract (non-filesystem) address.
    pub fn is_abstract(&self) -> bool {
        self.path[0] == 0
    }

    /// The filesystem path, if this is a path address.
    pub fn filesystem_path(&self) -> Option<&Path> {
        if self.is_abstract() {
            return None;
        }
        Some(Path::new(OsStr::from_bytes(until_nul(&self.path))))
    }

    /// The name bytes of an abstract address (all 107 of them, as it is bound with length 110).
    pub fn abstract_name(&self) -> Option<&[u8]> {
        self.is_abstract().then(|| &self.path[1..])
    }

    /// The kernel's pid and usecs, if this address has the kernel's abstract shape.
    pub fn kernel_name(&self) -> Option<KernelAbstractName> {
        let (name, _) = KernelAbstractName::read_from_prefix(&self.path).ok()?;
        (name.zero == 0).then_some(name)
    }
}

impl std::fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(path) = self.filesystem_path() {
            return write!(f, "PeerAddr({})", path.display());
        }
        let used = self.path.iter().rposition(|&b| b != 0).map_or(1, |i| i + 1);
        write!(f, "PeerAddr(@")?;
        for b in &self.path[1..used] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_style_layout() {
        let addr = PeerAddr::kernel_style(0x79ed, 0x0bf8ed);
        let b = addr.as_bytes();
        assert_eq!(b.len(), 110);
        assert_eq!(
            &b[..14],
            &[1, 0, 0, 0, 0, 0, 0xed, 0x79, 0, 0, 0xed, 0xf8, 0x0b, 0]
        );
        let name = addr.kernel_name().unwrap();
        assert_eq!((name.pid.get(), name.usecs.get()), (0x79ed, 0x0bf8ed));
        assert!(addr.is_abstract());
        assert_eq!(addr.abstract_name().unwrap().len(), 107);
    }

    #[test]
    fn garbage_after_the_name_makes_a_different_port() {
        let a = PeerAddr::kernel_style(1, 2);
        let mut b = a;
        b.path[63] = 0xec;
        assert_ne!(a, b);
    }

    #[test]
    fn path_addresses() {
        let a = PeerAddr::from_path(Path::new("/tmp/uml.data")).unwrap();
        assert_eq!(a.filesystem_path().unwrap(), Path::new("/tmp/uml.data"));
        assert!(!a.is_abstract());
        let long = "x".repeat(108);
        assert_eq!(
            PeerAddr::from_path(Path::new(&long)).unwrap_err(),
            AddrError::PathTooLong { len: 108 }
        );
        assert!(PeerAddr::from_path(Path::new(&long[..107])).is_ok());
        assert_eq!(
            PeerAddr::from_prefix(&[0; 109]).unwrap_err(),
            AddrError::Short { len: 109 }
        );
    }
}
