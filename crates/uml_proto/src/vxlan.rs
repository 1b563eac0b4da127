//! The VXLAN header (RFC 7348, section 5): 8 bytes in front of the inner
//! Ethernet frame, carried in UDP (port 4789 by default).

use zerocopy::byteorder::{BigEndian, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// The UDP port IANA assigned to VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// The "I" flag: the VNI field is valid. RFC 7348 says it must be set.
pub const FLAG_VNI_VALID: u32 = 0x0800_0000;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Bytes the encapsulation adds in front of a frame on an IPv4 underlay:
/// outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const IPV4_OVERHEAD: usize = 50;

/// The header as it travels: flags word, then VNI and a reserved byte.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct VxlanHeader {
    /// Flags (the I bit, [`FLAG_VNI_VALID`]) in the top byte, 24 reserved bits.
    pub flags: U32<BigEndian>,
    /// The VNI in the top 24 bits, 8 reserved bits.
    pub vni_reserved: U32<BigEndian>,
}

const _: () = assert!(size_of::<VxlanHeader>() == VXLAN_HEADER_LEN);

/// Why a datagram is not a VXLAN packet we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    /// Shorter than the header plus an inner Ethernet header.
    #[error("truncated VXLAN packet ({0} bytes)")]
    Truncated(usize),
    /// The I flag is clear: the VNI field means nothing.
    #[error("VXLAN packet without the VNI flag")]
    NoVni,
}

impl VxlanHeader {
    /// A header for `vni` (only its low 24 bits are used).
    pub fn new(vni: u32) -> Self {
        Self {
            flags: U32::new(FLAG_VNI_VALID),
            vni_reserved: U32::new((vni & MAX_VNI) << 8),
        }
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        self.vni_reserved.get() >> 8
    }

    /// Splits a UDP payload into its header and inner frame. The inner frame
    /// must hold at least an Ethernet header (14 bytes); reserved bits are
    /// ignored, as RFC 7348 tells receivers to.
    pub fn parse(datagram: &[u8]) -> Result<(&Self, &[u8]), VxlanError> {
        let (header, inner) =
            Self::ref_from_prefix(datagram).map_err(|_| VxlanError::Truncated(datagram.len()))?;
        if inner.len() < crate::ethernet::HEADER_LEN {
            return Err(VxlanError::Truncated(datagram.len()));
        }
        if header.flags.get() & FLAG_VNI_VALID == 0 {
            return Err(VxlanError::NoVni);
        }
        Ok((header, inner))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn header_bytes_are_the_rfcs() {
        let header = VxlanHeader::new(0x12_3456);
        assert_eq!(header.as_bytes(), &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(header.vni(), 0x12_3456);
        assert_eq!(VxlanHeader::new(0x1ff_ffff).vni(), MAX_VNI);
    }

    #[test]
    fn parse_checks_length_and_flag() {
        let mut packet = VxlanHeader::new(42).as_bytes().to_vec();
        assert_eq!(VxlanHeader::parse(&packet), Err(VxlanError::Truncated(8)));
        packet.extend_from_slice(&[0xff; 14]);
        let (header, inner) = VxlanHeader::parse(&packet).expect("valid");
        assert_eq!((header.vni(), inner.len()), (42, 14));
        assert_eq!(
            VxlanHeader::parse(&packet[..5]),
            Err(VxlanError::Truncated(5))
        );
        packet[0] = 0;
        assert_eq!(VxlanHeader::parse(&packet), Err(VxlanError::NoVni));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok((header, inner)) = VxlanHeader::parse(&bytes) {
                prop_assert!(header.vni() <= MAX_VNI);
                prop_assert_eq!(inner.len() + VXLAN_HEADER_LEN, bytes.len());
            }
        }
    }
}
