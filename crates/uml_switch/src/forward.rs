//! The forwarding decision: where a frame that came in on one port goes.
//!
//! Pure functions over the frame's header and the learning table, so every
//! rule is tested without sockets: known unicast goes to one port, group and
//! unknown unicast are flooded, nothing goes back out of its ingress port, and
//! a hub floods everything.

use std::time::Instant;

use uml_proto::ethernet::{EthernetHeader, HEADER_LEN, MacAddr};

use crate::learning::{Learned, MacTable};
use crate::ports::PortId;
use crate::vlan::TRANSPARENT;

/// The biggest frame forwarded whole (jumbo frames and tagged full-size frames fit).
pub const MAX_FRAME: usize = 65535;

/// Whether a received length is a frame to pass on: at least an Ethernet
/// header, and not cut by a buffer of [`MAX_FRAME`] + 1 bytes.
pub fn forwardable(len: usize) -> bool {
    (HEADER_LEN..=MAX_FRAME).contains(&len)
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Nowhere: its destination sits behind the port it came in on.
    Nowhere,
    /// To the one port its destination was learned on.
    Port(PortId),
    /// To every port but the one it came in on.
    Flood,
}

/// Decides where a frame from `ingress` goes, given what `table` has learned.
pub fn decide(
    ingress: PortId,
    header: &EthernetHeader,
    table: &MacTable,
    hub: bool,
) -> Destination {
    decide_in(ingress, TRANSPARENT, header, table, hub)
}

/// [`decide`] within VLAN `vid`: a flood means every port of that VLAN.
pub fn decide_in(
    ingress: PortId,
    vid: u16,
    header: &EthernetHeader,
    table: &MacTable,
    hub: bool,
) -> Destination {
    let dst = header.destination;
    if hub || dst.is_group() {
        return Destination::Flood;
    }
    match table.lookup_in(vid, &dst) {
        Some(port) if port == ingress => Destination::Nowhere,
        Some(port) => Destination::Port(port),
        None => Destination::Flood,
    }
}

/// Learns the frame's source on `ingress` (group sources are never learned);
/// returns the address and what changed, for the log.
pub fn learn_source(
    table: &mut MacTable,
    ingress: PortId,
    header: &EthernetHeader,
    now: Instant,
) -> Option<(MacAddr, Learned)> {
    learn_source_in(table, TRANSPARENT, ingress, header, now)
}

/// [`learn_source`] within VLAN `vid`.
pub fn learn_source_in(
    table: &mut MacTable,
    vid: u16,
    ingress: PortId,
    header: &EthernetHeader,
    now: Instant,
) -> Option<(MacAddr, Learned)> {
    let src = header.source;
    if src.is_group() {
        return None;
    }
    Some((src, table.learn_in(vid, src, ingress, now)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn header(dst: MacAddr, src: MacAddr) -> EthernetHeader {
        EthernetHeader::new(dst, src, 0x0800)
    }

    fn table() -> MacTable {
        MacTable::new(Duration::from_secs(100), 100)
    }

    #[test]
    fn known_unicast_goes_to_one_port_and_never_back_to_its_ingress() {
        let mut t = table();
        let now = Instant::now();
        learn_source(&mut t, 1, &header(B, A), now);
        learn_source(&mut t, 2, &header(A, B), now);
        assert_eq!(decide(2, &header(A, B), &t, false), Destination::Port(1));
        assert_eq!(decide(1, &header(B, A), &t, false), Destination::Port(2));
        // B's frame for A arrives on A's own port: nowhere to send it.
        assert_eq!(decide(1, &header(A, B), &t, false), Destination::Nowhere);
    }

    #[test]
    fn group_and_unknown_unicast_flood() {
        let mut t = table();
        learn_source(&mut t, 1, &header(B, A), Instant::now());
        assert_eq!(
            decide(1, &header(MacAddr::BROADCAST, A), &t, false),
            Destination::Flood
        );
        let multicast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(
            decide(2, &header(multicast, B), &t, false),
            Destination::Flood
        );
        assert_eq!(decide(1, &header(B, A), &t, false), Destination::Flood);
    }

    #[test]
    fn a_hub_floods_even_known_unicast() {
        let mut t = table();
        learn_source(&mut t, 1, &header(B, A), Instant::now());
        assert_eq!(decide(2, &header(A, B), &t, true), Destination::Flood);
    }

    #[test]
    fn a_mac_that_moves_is_followed() {
        let mut t = table();
        let now = Instant::now();
        assert_eq!(
            learn_source(&mut t, 1, &header(B, A), now),
            Some((A, Learned::New))
        );
        assert_eq!(
            learn_source(&mut t, 1, &header(B, A), now),
            Some((A, Learned::Known))
        );
        assert_eq!(
            learn_source(&mut t, 3, &header(B, A), now),
            Some((A, Learned::Moved { from: 1 }))
        );
        assert_eq!(decide(2, &header(A, B), &t, false), Destination::Port(3));
    }

    #[test]
    fn group_sources_are_not_learned() {
        let mut t = table();
        assert_eq!(
            learn_source(&mut t, 1, &header(A, MacAddr::BROADCAST), Instant::now()),
            None
        );
        assert!(t.is_empty());
    }

    #[test]
    fn an_aged_entry_floods_again() {
        let mut t = table();
        let then = Instant::now();
        learn_source(&mut t, 1, &header(B, A), then);
        assert_eq!(decide(2, &header(A, B), &t, false), Destination::Port(1));
        t.expire(then + Duration::from_secs(101));
        assert_eq!(decide(2, &header(A, B), &t, false), Destination::Flood);
    }

    #[test]
    fn a_mac_known_in_one_vlan_is_unknown_in_another() {
        let mut t = table();
        let now = Instant::now();
        learn_source_in(&mut t, 10, 1, &header(B, A), now);
        assert_eq!(
            decide_in(2, 10, &header(A, B), &t, false),
            Destination::Port(1)
        );
        assert_eq!(
            decide_in(2, 20, &header(A, B), &t, false),
            Destination::Flood
        );
    }

    #[test]
    fn frame_lengths() {
        assert!(!forwardable(13));
        assert!(forwardable(14));
        assert!(forwardable(MAX_FRAME));
        assert!(!forwardable(MAX_FRAME + 1));
    }
}
