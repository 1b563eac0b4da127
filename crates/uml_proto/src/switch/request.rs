//! Control requests: the first bytes a client writes on its control connection.

use zerocopy::byteorder::{NativeEndian, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::addr::PeerAddr;
use super::{KERNEL_REQUEST_LEN, REQ_NEW_CONTROL, SWITCH_MAGIC};
use crate::c_string::until_nul;

/// Byte layout of a v0 request (120 bytes, no magic; only very old kernels send it).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RequestV0 {
    /// Request type; [`REQ_NEW_CONTROL`].
    pub kind: U32<NativeEndian>,
    /// The client NIC's MAC address.
    pub mac: [u8; 6],
    /// The client's data socket address.
    pub addr: PeerAddr,
}

/// Byte layout of a v1 request (124 bytes).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RequestV1 {
    /// [`SWITCH_MAGIC`].
    pub magic: U32<NativeEndian>,
    /// Request type; [`REQ_NEW_CONTROL`]. Sits where v2/v3 keep their version.
    pub kind: U32<NativeEndian>,
    /// The client NIC's MAC address.
    pub mac: [u8; 6],
    /// The client's data socket address.
    pub addr: PeerAddr,
}

/// Byte layout of a v3 request (122 bytes; the kernel writes 2 more bytes of struct padding).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RequestV3 {
    /// [`SWITCH_MAGIC`].
    pub magic: U32<NativeEndian>,
    /// 3.
    pub version: U32<NativeEndian>,
    /// Request type; [`REQ_NEW_CONTROL`].
    pub kind: U32<NativeEndian>,
    /// The client's data socket address.
    pub addr: PeerAddr,
}

const _: () = assert!(size_of::<RequestV0>() == 120);
const _: () = assert!(size_of::<RequestV1>() == 124);
const _: () = assert!(size_of::<RequestV3>() == 122);

/// Which request format a client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// No magic; served only in `-compat-v0` mode; gets no reply.
    V0,
    /// Magic, type, MAC.
    V1,
    /// Magic, version 3, type; what current kernels send.
    V3,
}

/// A decoded control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// The format the client used.
    pub version: ProtocolVersion,
    /// The MAC the client announced (v0 and v1 only).
    pub mac: Option<[u8; 6]>,
    /// Where to send the client's frames.
    pub addr: PeerAddr,
    /// A libvdeplug port description written after a v3 (or v1) request, up to its NUL.
    pub description: Option<Vec<u8>>,
}

/// Why a control request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlRequestError {
    /// Too few bytes for the format the first bytes announce.
    #[error("control request is {len} bytes; a {format} request needs {needed}")]
    Short {
        /// Bytes received.
        len: usize,
        /// Bytes the announced format needs.
        needed: usize,
        /// Name of the announced format.
        format: &'static str,
    },
    /// Version 2, which never worked and is always refused.
    #[error("Version 2 is not supported")]
    Version2,
    /// A version newer than 3.
    #[error("Request for a version {0} port, which this switch doesn't support")]
    UnsupportedVersion(u32),
    /// A request type other than [`REQ_NEW_CONTROL`].
    #[error("Bad request type : {0}")]
    BadType(u32),
}

fn short(len: usize, needed: usize, format: &'static str) -> ControlRequestError {
    ControlRequestError::Short {
        len,
        needed,
        format,
    }
}

fn check_type(kind: u32) -> Result<(), ControlRequestError> {
    if kind == REQ_NEW_CONTROL {
        Ok(())
    } else {
        Err(ControlRequestError::BadType(kind))
    }
}

/// The description libvdeplug appends: trailing bytes up to a NUL, if any are left.
fn description(trailing: &[u8]) -> Option<Vec<u8>> {
    let text = until_nul(trailing);
    (!text.is_empty()).then(|| text.to_vec())
}

impl ControlRequest {
    /// Decodes the bytes of a client's first write, following uml_switch's rules:
    /// the magic picks v1/v3 (by the word after it), no magic means v0.
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlRequestError> {
        let Ok((magic, _)) = U32::<NativeEndian>::read_from_prefix(bytes) else {
            return Err(short(bytes.len(), 4, "control"));
        };
        if magic.get() != SWITCH_MAGIC {
            let (req, _) = RequestV0::read_from_prefix(bytes)
                .map_err(|_| short(bytes.len(), size_of::<RequestV0>(), "v0"))?;
            check_type(req.kind.get())?;
            return Ok(Self {
                version: ProtocolVersion::V0,
                mac: Some(req.mac),
                addr: req.addr,
                description: None,
            });
        }
        let Some(second) = bytes.get(4..8) else {
            return Err(short(bytes.len(), 8, "control"));
        };
        let (second, _) = U32::<NativeEndian>::read_from_prefix(second)
            .map_err(|_| short(bytes.len(), 8, "control"))?;
        match second.get() {
            2 => Err(ControlRequestError::Version2),
            3 => {
                let (req, trailing) = RequestV3::read_from_prefix(bytes)
                    .map_err(|_| short(bytes.len(), size_of::<RequestV3>(), "v3"))?;
                check_type(req.kind.get())?;
                // Exactly 124 bytes is the kernel's request with its (uninitialised) padding.
                let description = if bytes.len() == KERNEL_REQUEST_LEN {
                    None
                } else {
                    description(trailing)
                };
                Ok(Self {
                    version: ProtocolVersion::V3,
                    mac: None,
                    addr: req.addr,
                    description,
                })
            }
            v if v > 3 => Err(ControlRequestError::UnsupportedVersion(v)),
            _ => {
                let (req, trailing) = RequestV1::read_from_prefix(bytes)
                    .map_err(|_| short(bytes.len(), size_of::<RequestV1>(), "v1"))?;
                check_type(req.kind.get())?;
                Ok(Self {
                    version: ProtocolVersion::V1,
                    mac: Some(req.mac),
                    addr: req.addr,
                    description: description(trailing),
                })
            }
        }
    }

    /// Encodes the request as a client of its version writes it. A v3 request
    /// without a description gets the kernel's 2 padding bytes (zeroed).
    pub fn encode(&self) -> Vec<u8> {
        let mac = self.mac.unwrap_or_default();
        let mut out = match self.version {
            ProtocolVersion::V0 => RequestV0 {
                kind: U32::new(REQ_NEW_CONTROL),
                mac,
                addr: self.addr,
            }
            .as_bytes()
            .to_vec(),
            ProtocolVersion::V1 => RequestV1 {
                magic: U32::new(SWITCH_MAGIC),
                kind: U32::new(REQ_NEW_CONTROL),
                mac,
                addr: self.addr,
            }
            .as_bytes()
            .to_vec(),
            ProtocolVersion::V3 => RequestV3::new(self.addr).as_bytes().to_vec(),
        };
        match (&self.description, self.version) {
            (Some(desc), ProtocolVersion::V1 | ProtocolVersion::V3) => {
                out.extend_from_slice(desc);
                // 124 bytes would read back as the kernel's request with padding.
                if out.len() == KERNEL_REQUEST_LEN {
                    out.push(0);
                }
            }
            (None, ProtocolVersion::V3) => out.resize(KERNEL_REQUEST_LEN, 0),
            _ => {}
        }
        out
    }
}

impl RequestV3 {
    /// A v3 `REQ_NEW_CONTROL` request for a client whose data socket is `addr`.
    pub fn new(addr: PeerAddr) -> Self {
        Self {
            magic: U32::new(SWITCH_MAGIC),
            version: U32::new(3),
            kind: U32::new(REQ_NEW_CONTROL),
            addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kernel_request() -> Vec<u8> {
        let addr = PeerAddr::kernel_style(4242, 99);
        let mut bytes = RequestV3::new(addr).as_bytes().to_vec();
        bytes.extend_from_slice(&[0xde, 0xad]); // uninitialised padding
        bytes
    }

    #[test]
    fn kernel_v3_with_garbage_padding() {
        let req = ControlRequest::decode(&kernel_request()).unwrap();
        assert_eq!(req.version, ProtocolVersion::V3);
        assert_eq!(req.description, None);
        assert_eq!(req.addr.kernel_name().unwrap().pid.get(), 4242);
        assert_eq!(&kernel_request()[..4], &[0xce, 0xfa, 0xed, 0xfe]);
    }

    #[test]
    fn libvdeplug_description_is_kept() {
        let mut bytes = RequestV3::new(PeerAddr::kernel_style(1, 1))
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(b"user=root\0");
        let req = ControlRequest::decode(&bytes).unwrap();
        assert_eq!(req.description.as_deref(), Some(&b"user=root"[..]));
    }

    #[test]
    fn refusals() {
        let mut v2 = kernel_request();
        v2[4] = 2;
        assert_eq!(
            ControlRequest::decode(&v2).unwrap_err(),
            ControlRequestError::Version2
        );
        let mut v4 = kernel_request();
        v4[4] = 4;
        assert_eq!(
            ControlRequest::decode(&v4).unwrap_err(),
            ControlRequestError::UnsupportedVersion(4)
        );
        let mut bad_type = kernel_request();
        bad_type[8] = 1;
        assert_eq!(
            ControlRequest::decode(&bad_type).unwrap_err(),
            ControlRequestError::BadType(1)
        );
        assert!(matches!(
            ControlRequest::decode(&kernel_request()[..100]),
            Err(ControlRequestError::Short { needed: 122, .. })
        ));
        assert!(matches!(
            ControlRequest::decode(b"hi"),
            Err(ControlRequestError::Short { needed: 4, .. })
        ));
        assert!(matches!(
            ControlRequest::decode(&[7; 200]),
            Err(ControlRequestError::BadType(_))
        ));
    }

    fn any_request() -> impl Strategy<Value = ControlRequest> {
        let version = prop_oneof![
            Just(ProtocolVersion::V0),
            Just(ProtocolVersion::V1),
            Just(ProtocolVersion::V3)
        ];
        let path = proptest::collection::vec(any::<u8>(), 108);
        let desc = proptest::option::of(proptest::collection::vec(1u8..=255, 1..40));
        (version, any::<[u8; 6]>(), path, desc).prop_map(|(version, mac, path, desc)| {
            let mut addr = PeerAddr::kernel_style(0, 0);
            addr.path.copy_from_slice(&path);
            ControlRequest {
                version,
                mac: (version != ProtocolVersion::V3).then_some(mac),
                addr,
                description: desc.filter(|_| version != ProtocolVersion::V0),
            }
        })
    }

    proptest! {
        #[test]
        fn control_request_round_trips(req in any_request()) {
            prop_assert_eq!(ControlRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn control_request_decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ControlRequest::decode(&d);
        }
    }
}
