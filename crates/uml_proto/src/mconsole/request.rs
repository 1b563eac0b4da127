//! Client-to-kernel request datagrams.

use zerocopy::byteorder::{NativeEndian, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{MAGIC, MAX_DATA, MAX_TEXT, VERSION};
use crate::c_string::until_nul;

/// Byte layout of a request: 12 bytes of host-endian header, then 512 data bytes (524 in all).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RequestWire {
    /// Always [`MAGIC`].
    pub magic: U32<NativeEndian>,
    /// Protocol version; kernels answer version 2 only.
    pub version: U32<NativeEndian>,
    /// Length of the command text, without a NUL; the kernel rejects 512 and more.
    pub len: U32<NativeEndian>,
    /// Command text, NUL-padded.
    pub data: [u8; MAX_DATA],
}

const _: () = assert!(size_of::<RequestWire>() == 524);
const HEADER_LEN: usize = 12;

/// Why a request could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The command text does not fit in one datagram.
    #[error("command is {len} bytes long; an mconsole request holds at most {MAX_TEXT}")]
    TooLong {
        /// Length of the offending command.
        len: usize,
    },
    /// The command text contains a NUL byte, which the kernel would cut it at.
    #[error("command contains a NUL byte at offset {offset}")]
    ContainsNul {
        /// Offset of the first NUL.
        offset: usize,
    },
    /// Fewer bytes than the 12-byte header.
    #[error("request datagram is {len} bytes; the header alone needs {HEADER_LEN}")]
    Short {
        /// Length of the datagram received.
        len: usize,
    },
    /// The first four bytes are not the mconsole magic (the kernel answers these with raw text).
    #[error("request does not start with the mconsole magic (found {found:#010x})")]
    BadMagic {
        /// The value found where the magic belongs.
        found: u32,
    },
    /// The `len` field is 512 or more (the kernel answers "Request too large").
    #[error("request length field is {len}; at most {MAX_TEXT} is allowed")]
    TooLarge {
        /// The declared length.
        len: u32,
    },
}

/// A request ready to send: always the full 524 bytes, as the C client sends it.
#[derive(Clone)]
pub struct Request {
    wire: RequestWire,
}

impl Request {
    /// Builds a version-2 request for `command`, which must be at most 511 bytes with no NUL.
    pub fn new(command: &[u8]) -> Result<Self, RequestError> {
        Self::with_version(command, VERSION)
    }

    /// Builds a request with an explicit version number (only useful to probe a kernel).
    pub fn with_version(command: &[u8], version: u32) -> Result<Self, RequestError> {
        if command.len() > MAX_TEXT {
            return Err(RequestError::TooLong { len: command.len() });
        }
        if let Some(offset) = command.iter().position(|&b| b == 0) {
            return Err(RequestError::ContainsNul { offset });
        }
        let mut data = [0u8; MAX_DATA];
        data[..command.len()].copy_from_slice(command);
        let len = u32::try_from(command.len())
            .map_err(|_| RequestError::TooLong { len: command.len() })?;
        Ok(Self {
            wire: RequestWire {
                magic: U32::new(MAGIC),
                version: U32::new(version),
                len: U32::new(len),
                data,
            },
        })
    }

    /// The command text this request carries.
    pub fn command(&self) -> &[u8] {
        let len = (self.wire.len.get() as usize).min(MAX_TEXT);
        &self.wire.data[..len]
    }

    /// The 524 bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        self.wire.as_bytes()
    }

    /// Parses a request datagram the way the kernel does: it trusts `len`, accepts
    /// datagrams shorter than 524 bytes and stops the command at the first NUL.
    pub fn parse(datagram: &[u8]) -> Result<ParsedRequest<'_>, RequestError> {
        if datagram.len() < HEADER_LEN {
            return Err(RequestError::Short {
                len: datagram.len(),
            });
        }
        let mut header = [0u8; MAX_DATA + HEADER_LEN];
        let take = datagram.len().min(header.len());
        header[..take].copy_from_slice(&datagram[..take]);
        let wire = RequestWire::ref_from_bytes(&header[..]).map_err(|_| RequestError::Short {
            len: datagram.len(),
        })?;
        let magic = wire.magic.get();
        if magic != MAGIC {
            return Err(RequestError::BadMagic { found: magic });
        }
        let len = wire.len.get();
        if len as usize >= MAX_DATA {
            return Err(RequestError::TooLarge { len });
        }
        let data = &datagram[HEADER_LEN..];
        let declared = &data[..(len as usize).min(data.len())];
        Ok(ParsedRequest {
            version: wire.version.get(),
            command: until_nul(declared),
        })
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("version", &self.wire.version.get())
            .field("command", &String::from_utf8_lossy(self.command()))
            .finish()
    }
}

/// A request as a server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest<'a> {
    /// The version field; the kernel replies with an error for anything but 2 and still runs the command.
    pub version: u32,
    /// The command text, without its NUL.
    pub command: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_has_c_client_layout() {
        let req = Request::new(b"version").unwrap();
        let bytes = req.as_bytes();
        assert_eq!(bytes.len(), 524);
        assert_eq!(&bytes[0..4], &0xCAFE_BABEu32.to_ne_bytes());
        assert_eq!(&bytes[4..8], &2u32.to_ne_bytes());
        assert_eq!(&bytes[8..12], &7u32.to_ne_bytes());
        assert_eq!(&bytes[12..19], b"version");
        assert!(bytes[19..].iter().all(|&b| b == 0));
    }

    #[test]
    fn longest_command_fits_and_one_more_is_refused() {
        assert!(Request::new(&[b'a'; 511]).is_ok());
        assert_eq!(
            Request::new(&[b'a'; 512]).unwrap_err(),
            RequestError::TooLong { len: 512 }
        );
        assert_eq!(
            Request::new(b"a\0b").unwrap_err(),
            RequestError::ContainsNul { offset: 1 }
        );
    }

    #[test]
    fn kernel_style_parse_accepts_short_datagrams() {
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_ne_bytes());
        d.extend_from_slice(&2u32.to_ne_bytes());
        d.extend_from_slice(&4u32.to_ne_bytes());
        assert_eq!(Request::parse(&d).unwrap().command, b"");
        d.extend_from_slice(b"halt");
        assert_eq!(Request::parse(&d).unwrap().command, b"halt");
        d[8..12].copy_from_slice(&512u32.to_ne_bytes());
        assert_eq!(
            Request::parse(&d).unwrap_err(),
            RequestError::TooLarge { len: 512 }
        );
        d[0] = 0;
        assert!(matches!(
            Request::parse(&d),
            Err(RequestError::BadMagic { .. })
        ));
        assert!(matches!(
            Request::parse(&d[..5]),
            Err(RequestError::Short { len: 5 })
        ));
    }

    proptest! {
        #[test]
        fn request_round_trips(cmd in proptest::collection::vec(1u8..=255, 0..=MAX_TEXT), version in any::<u32>()) {
            let req = Request::with_version(&cmd, version).unwrap();
            let parsed = Request::parse(req.as_bytes()).unwrap();
            prop_assert_eq!(parsed.command, &cmd[..]);
            prop_assert_eq!(parsed.version, version);
        }

        #[test]
        fn request_parse_never_panics(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Request::parse(&d);
        }
    }
}
