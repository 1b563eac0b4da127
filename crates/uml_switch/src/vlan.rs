//! 802.1Q VLANs: which VLAN a frame entering a port belongs to, and how it
//! leaves a port (untagged on an access port, tagged on a trunk).
//!
//! A port without a VLAN setting stays as the switch always was: frames pass
//! unchanged, tags and all, among such ports (the "transparent" domain).

use std::fmt;
use std::str::FromStr;

use uml_proto::ethernet::{ETHERTYPE_VLAN, EthernetHeader, HEADER_LEN};

/// A VLAN id, 1 to 4094.
pub type Vid = u16;

/// The learning and flooding domain of ports without a VLAN setting; real
/// VLAN ids are 1 to 4094, so 0 never collides with one.
pub const TRANSPARENT: u16 = 0;

/// Bytes of an 802.1Q tag.
pub const TAG_LEN: usize = 4;

/// Why a VLAN setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    /// Not a number from 1 to 4094.
    #[error("'{0}' is not a VLAN id (1 to 4094)")]
    BadVid(String),
    /// A trunk needs at least one VLAN.
    #[error("a trunk needs at least one VLAN")]
    EmptyTrunk,
    /// The native VLAN of a trunk must be one of its VLANs.
    #[error("native VLAN {0} is not one of the trunk's VLANs")]
    NativeNotCarried(Vid),
}

/// A set of VLAN ids, one bit each.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl VlanSet {
    /// No VLANs.
    pub fn new() -> Self {
        Self(Box::new([0; 64]))
    }

    /// Adds `vid`.
    pub fn insert(&mut self, vid: Vid) {
        let v = usize::from(vid & 0x0fff);
        self.0[v / 64] |= 1 << (v % 64);
    }

    /// Whether `vid` is in the set.
    pub fn contains(&self, vid: Vid) -> bool {
        let v = usize::from(vid & 0x0fff);
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Vid> + '_ {
        (1..4095).filter(|&v| self.contains(v))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What a port carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanConfig {
    /// Frames enter and leave untagged and belong to this VLAN.
    Access(Vid),
    /// Tagged frames of these VLANs pass with their tag; untagged frames
    /// belong to the native VLAN if there is one, else they are dropped.
    Trunk {
        /// The VLANs carried.
        vlans: VlanSet,
        /// The VLAN whose frames travel untagged on this port.
        native: Option<Vid>,
    },
}

/// Parses a VLAN id, 1 to 4094.
pub fn parse_vid(text: &str) -> Result<Vid, VlanError> {
    match text.trim().parse::<Vid>() {
        Ok(v) if (1..=4094).contains(&v) => Ok(v),
        _ => Err(VlanError::BadVid(text.to_owned())),
    }
}

impl VlanConfig {
    /// A trunk of `vlans` (ids or ranges `A-B`), with an optional native VLAN.
    pub fn trunk<'a>(
        vlans: impl IntoIterator<Item = &'a str>,
        native: Option<Vid>,
    ) -> Result<Self, VlanError> {
        let mut set = VlanSet::new();
        for item in vlans {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse_vid(a)?, parse_vid(b)?);
                    for v in a.min(b)..=a.max(b) {
                        set.insert(v);
                    }
                }
                None => set.insert(parse_vid(item)?),
            }
        }
        if set.is_empty() {
            return Err(VlanError::EmptyTrunk);
        }
        if let Some(n) = native {
            if !set.contains(n) {
                return Err(VlanError::NativeNotCarried(n));
            }
        }
        Ok(Self::Trunk { vlans: set, native })
    }

    /// Whether frames of `vid` may leave through this port.
    pub fn carries(&self, vid: Vid) -> bool {
        match self {
            Self::Access(v) => *v == vid,
            Self::Trunk { vlans, .. } => vlans.contains(vid),
        }
    }
}

impl FromStr for VlanConfig {
    type Err = VlanError;

    /// `10` (access) or `trunk:10,20-22` / `trunk:10,20,native=1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix("trunk:") {
            Some(list) => {
                let mut native = None;
                let mut vlans = Vec::new();
                for item in list.split(',') {
                    match item.strip_prefix("native=") {
                        Some(n) => native = Some(parse_vid(n)?),
                        None => vlans.push(item),
                    }
                }
                Self::trunk(vlans, native)
            }
            None => Ok(Self::Access(parse_vid(text)?)),
        }
    }
}

/// A frame inside the switch: its VLAN (or [`TRANSPARENT`]), the tag's
/// priority bits, and its bytes without a tag (a transparent frame keeps
/// whatever it arrived with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The learning and flooding domain.
    pub vid: u16,
    /// The priority and drop-eligible bits of the tag it came with.
    pub pcp_dei: u16,
    /// The frame, untagged unless transparent.
    pub frame: Vec<u8>,
}

/// The VLAN a frame entering a port with `config` belongs to, with its tag
/// taken off; `None` when the port does not take such frames (a tagged frame
/// on an access port, a tag the trunk does not carry, an untagged frame on a
/// trunk without a native VLAN).
pub fn ingress(config: Option<&VlanConfig>, frame: &[u8]) -> Option<Classified> {
    let Some(config) = config else {
        return Some(Classified {
            vid: TRANSPARENT,
            pcp_dei: 0,
            frame: frame.to_vec(),
        });
    };
    let tag = EthernetHeader::vlan_tag(frame);
    let (vid, pcp_dei) = match (config, tag) {
        // A priority tag (VLAN id 0) means "untagged, with a priority".
        (VlanConfig::Access(v), None) => (*v, 0),
        (VlanConfig::Access(v), Some(t)) if t.vid() == 0 => (*v, t.tci.get() & 0xf000),
        (VlanConfig::Access(_), Some(_)) => return None,
        (VlanConfig::Trunk { native, .. }, None) => (native.as_ref().copied()?, 0),
        (VlanConfig::Trunk { vlans, native }, Some(t)) => {
            let vid = match t.vid() {
                0 => native.as_ref().copied()?,
                v => v,
            };
            if !vlans.contains(vid) {
                return None;
            }
            (vid, t.tci.get() & 0xf000)
        }
    };
    let mut out = Vec::with_capacity(frame.len());
    match tag {
        Some(_) => {
            out.extend_from_slice(frame.get(..12)?);
            out.extend_from_slice(frame.get(HEADER_LEN + 2..)?);
        }
        None => out.extend_from_slice(frame),
    }
    // A tagged frame too short to hold its EtherType after the tag is not forwarded.
    (out.len() >= HEADER_LEN).then_some(Classified {
        vid,
        pcp_dei,
        frame: out,
    })
}

/// How `frame` leaves a port with `config`: `None` if the port is not in its
/// VLAN; else the bytes to send (tagged on a trunk, except for the native VLAN).
pub fn egress<'a>(
    config: Option<&VlanConfig>,
    frame: &'a Classified,
    scratch: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    let tagged = match (config, frame.vid) {
        (None, TRANSPARENT) => return Some(&frame.frame),
        (None, _) | (Some(_), TRANSPARENT) => return None,
        (Some(VlanConfig::Access(v)), vid) => {
            if *v != vid {
                return None;
            }
            false
        }
        (Some(VlanConfig::Trunk { vlans, native }), vid) => {
            if !vlans.contains(vid) {
                return None;
            }
            *native != Some(vid)
        }
    };
    if !tagged {
        return Some(&frame.frame);
    }
    let body = frame.frame.get(12..)?;
    scratch.clear();
    scratch.extend_from_slice(frame.frame.get(..12)?);
    scratch.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    scratch.extend_from_slice(&(frame.pcp_dei | frame.vid).to_be_bytes());
    scratch.extend_from_slice(body);
    Some(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(b"payload");
        f
    }

    fn tagged(tci: u16) -> Vec<u8> {
        let mut f = untagged(ETHERTYPE_VLAN);
        f.truncate(14);
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(b"payload");
        f
    }

    #[test]
    fn parses_access_and_trunks() {
        assert_eq!("10".parse(), Ok(VlanConfig::Access(10)));
        assert!("0".parse::<VlanConfig>().is_err());
        assert!("4095".parse::<VlanConfig>().is_err());
        let trunk: VlanConfig = "trunk:10,20-22,native=21".parse().unwrap();
        let VlanConfig::Trunk { vlans, native } = &trunk else {
            panic!("{trunk:?}")
        };
        assert_eq!(vlans.iter().collect::<Vec<_>>(), [10, 20, 21, 22]);
        assert_eq!(*native, Some(21));
        assert_eq!(
            "trunk:10,native=5".parse::<VlanConfig>(),
            Err(VlanError::NativeNotCarried(5))
        );
        assert_eq!(
            "trunk:".parse::<VlanConfig>().map(|_| ()),
            Err(VlanError::BadVid(String::new()))
        );
    }

    #[test]
    fn access_ports_take_untagged_frames_and_give_them_back_untagged() {
        let access = VlanConfig::Access(10);
        let frame = untagged(0x0800);
        let c = ingress(Some(&access), &frame).unwrap();
        assert_eq!((c.vid, &c.frame), (10, &frame));
        assert_eq!(ingress(Some(&access), &tagged(10)), None);
        let mut scratch = Vec::new();
        assert_eq!(egress(Some(&access), &c, &mut scratch), Some(&frame[..]));
        assert_eq!(
            egress(Some(&VlanConfig::Access(20)), &c, &mut scratch),
            None
        );
        assert_eq!(egress(None, &c, &mut scratch), None);
    }

    #[test]
    fn trunks_keep_tags_and_priority() {
        let trunk: VlanConfig = "trunk:10,20".parse().unwrap();
        let frame = tagged(0xa00a); // priority 5, VLAN 10
        let c = ingress(Some(&trunk), &frame).unwrap();
        assert_eq!(c.vid, 10);
        assert_eq!(c.frame, untagged(0x0800));
        let mut scratch = Vec::new();
        assert_eq!(egress(Some(&trunk), &c, &mut scratch), Some(&frame[..]));
        assert_eq!(ingress(Some(&trunk), &tagged(30)), None);
        assert_eq!(ingress(Some(&trunk), &untagged(0x0800)), None);
        // An access frame leaves a trunk tagged.
        let from_access = ingress(Some(&VlanConfig::Access(20)), &untagged(0x0800)).unwrap();
        assert_eq!(
            egress(Some(&trunk), &from_access, &mut scratch),
            Some(&tagged(20)[..])
        );
    }

    #[test]
    fn native_vlans_travel_untagged() {
        let trunk: VlanConfig = "trunk:1,10,native=1".parse().unwrap();
        let c = ingress(Some(&trunk), &untagged(0x0800)).unwrap();
        assert_eq!(c.vid, 1);
        let mut scratch = Vec::new();
        assert_eq!(
            egress(Some(&trunk), &c, &mut scratch),
            Some(&untagged(0x0800)[..])
        );
    }

    #[test]
    fn transparent_ports_pass_everything_unchanged_among_themselves() {
        let frame = tagged(10);
        let c = ingress(None, &frame).unwrap();
        assert_eq!(c.vid, TRANSPARENT);
        let mut scratch = Vec::new();
        assert_eq!(egress(None, &c, &mut scratch), Some(&frame[..]));
        assert_eq!(
            egress(Some(&VlanConfig::Access(10)), &c, &mut scratch),
            None
        );
    }

    #[test]
    fn short_tagged_frames_are_dropped() {
        let mut frame = tagged(10);
        frame.truncate(16);
        let trunk: VlanConfig = "trunk:10".parse().unwrap();
        assert_eq!(ingress(Some(&trunk), &frame), None);
    }
}
