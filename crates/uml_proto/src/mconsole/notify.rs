//! Notifications the kernel (or `uml_watchdog`) sends to a `mconsole=notify:PATH` socket.

use zerocopy::byteorder::{NativeEndian, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{MAGIC, MAX_DATA, VERSION};
use crate::c_string::until_nul;

/// Byte layout of the 16-byte header the kernel puts before `len` data bytes.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct NotifyHeader {
    /// Always [`MAGIC`].
    pub magic: U32<NativeEndian>,
    /// Always [`VERSION`].
    pub version: U32<NativeEndian>,
    /// A [`NotifyKind`] code.
    pub kind: U32<NativeEndian>,
    /// Number of data bytes that follow (at most 512).
    pub len: U32<NativeEndian>,
}

/// Byte layout of the HANG datagram a 64-bit `uml_watchdog` sends: its C struct uses
/// `unsigned long` for the magic, which widens it to 8 bytes and shifts every field.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WatchdogHangWire {
    /// [`MAGIC`] widened to 64 bits.
    pub magic: U64<NativeEndian>,
    /// Always [`VERSION`].
    pub version: U32<NativeEndian>,
    /// Always [`NotifyKind::Hang`].
    pub kind: U32<NativeEndian>,
    /// Always 0.
    pub len: U32<NativeEndian>,
    /// Struct tail padding.
    pub pad: [u8; 4],
}

const _: () = assert!(size_of::<NotifyHeader>() == 16);
const _: () = assert!(size_of::<WatchdogHangWire>() == 24);

/// What a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    /// Sent once at boot; the data is the mconsole socket path.
    Socket,
    /// The kernel panicked; the data is the panic message.
    Panic,
    /// The watchdog saw no ping for a minute.
    Hang,
    /// A guest process wrote to `/proc/mconsole`; the data is exactly what it wrote.
    User,
    /// A code this crate does not know.
    Other(u32),
}

impl NotifyKind {
    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            NotifyKind::Socket => 0,
            NotifyKind::Panic => 1,
            NotifyKind::Hang => 2,
            NotifyKind::User => 3,
            NotifyKind::Other(code) => code,
        }
    }

    /// The kind for a numeric code.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => NotifyKind::Socket,
            1 => NotifyKind::Panic,
            2 => NotifyKind::Hang,
            3 => NotifyKind::User,
            other => NotifyKind::Other(other),
        }
    }
}

/// Why a notification datagram could not be decoded or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Shorter than the 16-byte header.
    #[error("notification is {len} bytes; the header alone needs 16")]
    Short {
        /// Length of the datagram.
        len: usize,
    },
    /// The magic is wrong.
    #[error("notification does not start with the mconsole magic")]
    BadMagic,
    /// A version other than 2.
    #[error("notification has version {version}; only version 2 is known")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The length field exceeds the protocol limit or the bytes received.
    #[error(
        "notification declares {declared} data bytes but carries {available} (limit {MAX_DATA})"
    )]
    BadLength {
        /// Declared data length.
        declared: u32,
        /// Data bytes present in the datagram.
        available: usize,
    },
}

/// A decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification<'a> {
    /// What is being reported.
    pub kind: NotifyKind,
    /// The data bytes, exactly as sent (the kernel includes a NUL for socket and panic messages).
    pub data: &'a [u8],
}

impl Notification<'_> {
    /// Decodes a datagram in either the kernel's 16-byte-header form or the 64-bit watchdog form.
    pub fn parse(datagram: &[u8]) -> Result<Notification<'_>, NotificationError> {
        if let Ok((wide, _)) = WatchdogHangWire::ref_from_prefix(datagram) {
            // In the kernel form bytes 4..8 hold the version (2), never zero.
            if wide.magic.get() == u64::from(MAGIC) {
                return Self::checked(wide.version.get(), wide.kind.get(), wide.len.get(), &[]);
            }
        }
        let (header, data) =
            NotifyHeader::ref_from_prefix(datagram).map_err(|_| NotificationError::Short {
                len: datagram.len(),
            })?;
        if header.magic.get() != MAGIC {
            return Err(NotificationError::BadMagic);
        }
        Self::checked(
            header.version.get(),
            header.kind.get(),
            header.len.get(),
            data,
        )
    }

    fn checked(
        version: u32,
        kind: u32,
        len: u32,
        data: &[u8],
    ) -> Result<Notification<'_>, NotificationError> {
        if version != VERSION {
            return Err(NotificationError::UnsupportedVersion { version });
        }
        let bad_length = NotificationError::BadLength {
            declared: len,
            available: data.len(),
        };
        let len = usize::try_from(len).map_err(|_| bad_length.clone())?;
        if len > MAX_DATA || len > data.len() {
            return Err(bad_length);
        }
        Ok(Notification {
            kind: NotifyKind::from_code(kind),
            data: &data[..len],
        })
    }

    /// The data as text: up to the first NUL, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(until_nul(self.data)).into_owned()
    }

    /// Encodes the notification in the kernel's form (16 + len bytes).
    pub fn encode(&self) -> Result<Vec<u8>, NotificationError> {
        let bad_length = NotificationError::BadLength {
            declared: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            available: self.data.len(),
        };
        if self.data.len() > MAX_DATA {
            return Err(bad_length);
        }
        let header = NotifyHeader {
            magic: U32::new(MAGIC),
            version: U32::new(VERSION),
            kind: U32::new(self.kind.code()),
            len: U32::new(u32::try_from(self.data.len()).map_err(|_| bad_length)?),
        };
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(self.data);
        Ok(out)
    }
}

impl WatchdogHangWire {
    /// The 24-byte HANG datagram exactly as a 64-bit `uml_watchdog` sends it.
    pub fn new() -> Self {
        Self {
            magic: U64::new(u64::from(MAGIC)),
            version: U32::new(VERSION),
            kind: U32::new(NotifyKind::Hang.code()),
            len: U32::new(0),
            pad: [0; 4],
        }
    }
}

impl Default for WatchdogHangWire {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn socket_notification_as_observed() {
        let path = b"/root/.uml/spec-b/mconsole\0";
        let mut d = Vec::new();
        for v in [MAGIC, 2, 0, u32::try_from(path.len()).unwrap_or(u32::MAX)] {
            d.extend_from_slice(&v.to_ne_bytes());
        }
        d.extend_from_slice(path);
        let n = Notification::parse(&d).unwrap();
        assert_eq!(n.kind, NotifyKind::Socket);
        assert_eq!(n.data.len(), 27);
        assert_eq!(n.text(), "/root/.uml/spec-b/mconsole");
    }

    #[test]
    fn watchdog_hang_on_64_bit() {
        let wire = WatchdogHangWire::new();
        let bytes = wire.as_bytes();
        assert_eq!(
            &bytes[..20],
            &[
                0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let n = Notification::parse(bytes).unwrap();
        assert_eq!(n.kind, NotifyKind::Hang);
        assert!(n.data.is_empty());
    }

    #[test]
    fn bad_notifications_are_errors() {
        assert!(matches!(
            Notification::parse(&[0; 10]),
            Err(NotificationError::Short { len: 10 })
        ));
        let mut d = Notification {
            kind: NotifyKind::User,
            data: b"hi",
        }
        .encode()
        .unwrap();
        d[12] = 9;
        assert!(matches!(
            Notification::parse(&d),
            Err(NotificationError::BadLength { declared: 9, .. })
        ));
        d[4] = 3;
        assert!(matches!(
            Notification::parse(&d),
            Err(NotificationError::UnsupportedVersion { version: 3 })
        ));
    }

    proptest! {
        #[test]
        fn notification_round_trips(kind in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..=MAX_DATA)) {
            let n = Notification { kind: NotifyKind::from_code(kind), data: &data };
            let bytes = n.encode().unwrap();
            prop_assert_eq!(Notification::parse(&bytes).unwrap(), n);
        }

        #[test]
        fn notification_parse_never_panics(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Notification::parse(&d);
        }
    }
}
