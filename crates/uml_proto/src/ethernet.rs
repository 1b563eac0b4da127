//! Ethernet II frames as the switch sees them: the 14-byte header, an optional
//! 802.1Q tag after it, and the 6-byte MAC address.

use std::fmt;
use std::str::FromStr;

use zerocopy::byteorder::{BigEndian, U16};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// The EtherType that announces an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// A 48-bit Ethernet address.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address, `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Whether this is a multicast or broadcast address (the group bit of the first byte).
    pub const fn is_group(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// The six bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Why text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (six hex pairs separated by ':', like 52:54:00:12:34:56)")]
pub struct MacAddrError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MacAddrError(text.to_owned());
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

/// The Ethernet II header: destination, source, EtherType (big-endian on the wire).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct EthernetHeader {
    /// Where the frame goes.
    pub destination: MacAddr,
    /// Who sent it.
    pub source: MacAddr,
    /// The payload's protocol, or [`ETHERTYPE_VLAN`] when a tag follows.
    pub ethertype: U16<BigEndian>,
}

const _: () = assert!(size_of::<EthernetHeader>() == HEADER_LEN);

/// The 4 bytes after the header's EtherType in a tagged frame.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct VlanTag {
    /// Priority (3 bits), drop eligibility (1 bit), VLAN id (12 bits).
    pub tci: U16<BigEndian>,
    /// The EtherType of the payload.
    pub ethertype: U16<BigEndian>,
}

impl VlanTag {
    /// The 12-bit VLAN id.
    pub fn vid(&self) -> u16 {
        self.tci.get() & 0x0fff
    }

    /// The 3-bit priority code point.
    pub fn priority(&self) -> u8 {
        // The shift leaves three bits, which always fit.
        u8::try_from(self.tci.get() >> 13).unwrap_or(0)
    }
}

impl EthernetHeader {
    /// The header at the start of `frame`, or `None` for a frame shorter than a header.
    pub fn parse(frame: &[u8]) -> Option<&Self> {
        Self::ref_from_prefix(frame).ok().map(|(header, _)| header)
    }

    /// A new header.
    pub fn new(destination: MacAddr, source: MacAddr, ethertype: u16) -> Self {
        Self {
            destination,
            source,
            ethertype: U16::new(ethertype),
        }
    }

    /// The 802.1Q tag that follows this header in `frame`, if the frame is tagged
    /// and long enough to hold it.
    pub fn vlan_tag(frame: &[u8]) -> Option<&VlanTag> {
        let header = Self::parse(frame)?;
        if header.ethertype.get() != ETHERTYPE_VLAN {
            return None;
        }
        let rest = frame.get(HEADER_LEN..)?;
        VlanTag::ref_from_prefix(rest).ok().map(|(tag, _)| tag)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn mac_text_round_trips() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().expect("valid");
        assert_eq!(mac.0, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(
            "FE:FD:0A:63:00:01".parse::<MacAddr>().map(|m| m.0[0]),
            Ok(0xfe)
        );
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "52-54-00-12-34-56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn group_bit() {
        assert!(MacAddr::BROADCAST.is_group());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_group());
        assert!(!MacAddr([0x52, 0x54, 0, 0, 0, 1]).is_group());
    }

    #[test]
    fn header_fields_sit_where_the_wire_puts_them() {
        let header = EthernetHeader::new(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 9]), 0x0806);
        let bytes = header.as_bytes();
        assert_eq!(&bytes[..6], &[0xff; 6]);
        assert_eq!(&bytes[6..12], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&bytes[12..], &[0x08, 0x06]);
        assert_eq!(EthernetHeader::parse(bytes), Some(&header));
        assert_eq!(EthernetHeader::parse(&bytes[..13]), None);
    }

    #[test]
    fn tags_are_read_only_from_tagged_frames() {
        let mut frame = EthernetHeader::new(MacAddr::BROADCAST, MacAddr([2; 6]), ETHERTYPE_VLAN)
            .as_bytes()
            .to_vec();
        assert_eq!(EthernetHeader::vlan_tag(&frame), None, "a cut tag was read");
        frame.extend_from_slice(&[0xa0, 0x0a, 0x08, 0x00]);
        let tag = EthernetHeader::vlan_tag(&frame).expect("tagged");
        assert_eq!(
            (tag.vid(), tag.priority(), tag.ethertype.get()),
            (10, 5, 0x0800)
        );
        frame[12] = 0x08;
        frame[13] = 0x00;
        assert_eq!(EthernetHeader::vlan_tag(&frame), None);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let header = EthernetHeader::parse(&bytes);
            prop_assert_eq!(header.is_some(), bytes.len() >= HEADER_LEN);
            let _ = EthernetHeader::vlan_tag(&bytes);
        }

        #[test]
        fn any_mac_round_trips_through_text(octets in any::<[u8; 6]>()) {
            let mac = MacAddr(octets);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        }
    }
}
