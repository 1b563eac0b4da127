//! The MAC learning table: which port each source address was last seen on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uml_proto::ethernet::MacAddr;

use crate::ports::PortId;
use crate::vlan::TRANSPARENT;

/// What learning a source address changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port.
    Known,
    /// First seen.
    New,
    /// Seen before on another port.
    Moved {
        /// Where it was.
        from: PortId,
    },
    /// First seen, but not learned: the table holds its limit of addresses.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    last_seen: Instant,
}

/// Source addresses and their ports, per VLAN (see [`crate::vlan`]; ports
/// without a VLAN setting learn in [`TRANSPARENT`]), forgotten after
/// `max_age` of silence. It holds at most `capacity` addresses: a guest
/// sending from address after address (macof) would otherwise grow it, and
/// the switch's memory, without end.
#[derive(Debug)]
pub struct MacTable {
    /// The transparent domain, keyed by the address alone: the plain fast
    /// path hashes exactly what it always did.
    entries: HashMap<MacAddr, Entry>,
    /// Every VLAN's addresses.
    vlans: HashMap<(u16, MacAddr), Entry>,
    max_age: Duration,
    capacity: usize,
}

/// Learns in one map, whichever key it has.
fn learn_at<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Entry>,
    key: K,
    port: PortId,
    now: Instant,
    full: bool,
) -> Learned {
    let fresh = Entry {
        port,
        last_seen: now,
    };
    match map.get_mut(&key) {
        Some(entry) if entry.port == port => {
            entry.last_seen = now;
            Learned::Known
        }
        Some(entry) => {
            let from = entry.port;
            *entry = fresh;
            Learned::Moved { from }
        }
        None if full => Learned::Full,
        None => {
            map.insert(key, fresh);
            Learned::New
        }
    }
}

impl MacTable {
    /// An empty table whose entries expire `max_age` after their last
    /// frame, and that learns at most `capacity` addresses.
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            vlans: HashMap::new(),
            max_age,
            capacity,
        }
    }

    /// The most addresses it learns.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records that `mac` sent a frame from `port` at `now`.
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Instant) -> Learned {
        self.learn_in(TRANSPARENT, mac, port, now)
    }

    /// Records that `mac` sent a frame of VLAN `vid` from `port` at `now`.
    pub fn learn_in(&mut self, vid: u16, mac: MacAddr, port: PortId, now: Instant) -> Learned {
        let full = self.len() >= self.capacity;
        if vid == TRANSPARENT {
            learn_at(&mut self.entries, mac, port, now, full)
        } else {
            learn_at(&mut self.vlans, (vid, mac), port, now, full)
        }
    }

    /// The port `mac` was last seen on. Silent entries stay until the next
    /// [`MacTable::expire`] (the switch runs it every 2 seconds), so an entry
    /// may outlive its age by that much, as in the C switch.
    pub fn lookup(&self, mac: &MacAddr) -> Option<PortId> {
        self.lookup_in(TRANSPARENT, mac)
    }

    /// The port `mac` was last seen on in VLAN `vid`.
    pub fn lookup_in(&self, vid: u16, mac: &MacAddr) -> Option<PortId> {
        if vid == TRANSPARENT {
            self.entries.get(mac).map(|e| e.port)
        } else {
            self.vlans.get(&(vid, *mac)).map(|e| e.port)
        }
    }

    /// Drops entries silent for longer than the maximum age; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.len();
        let max_age = self.max_age;
        let fresh = |e: &Entry| now.saturating_duration_since(e.last_seen) <= max_age;
        self.entries.retain(|_, e| fresh(e));
        self.vlans.retain(|_, e| fresh(e));
        before - self.len()
    }

    /// Forgets every address learned on a port that closed.
    pub fn forget_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
        self.vlans.retain(|_, e| e.port != port);
    }

    /// Number of addresses known.
    pub fn len(&self) -> usize {
        self.entries.len() + self.vlans.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.vlans.is_empty()
    }

    // managed switch (issue 13): the management socket's views.

    /// Every entry: address, port, when it was last seen.
    pub fn entries(&self) -> impl Iterator<Item = (MacAddr, PortId, Instant)> + '_ {
        self.entries.iter().map(|(m, e)| (*m, e.port, e.last_seen))
    }

    /// The addresses learned on `port`.
    pub fn on_port(&self, port: PortId) -> impl Iterator<Item = MacAddr> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| e.port == port)
            .map(|(m, _)| *m)
    }

    /// [`MacTable::expire`], returning what was dropped (for the event stream).
    pub fn expire_listed(&mut self, now: Instant) -> Vec<(MacAddr, PortId)> {
        let max_age = self.max_age;
        let aged: Vec<(MacAddr, PortId)> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > max_age)
            .map(|(m, e)| (*m, e.port))
            .collect();
        for (mac, _) in &aged {
            self.entries.remove(mac);
        }
        // VLANs' addresses age as well; their events tell transparent ones only.
        self.vlans
            .retain(|_, e| now.saturating_duration_since(e.last_seen) <= max_age);
        aged
    }

    /// Forgets every address (`port` None) or those of one port; returns how many.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| port.is_some_and(|p| e.port != p));
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn a_full_table_still_moves_and_refreshes_but_learns_nothing_new() {
        let mut table = MacTable::new(Duration::from_secs(100), 2);
        let t0 = Instant::now();
        assert_eq!(table.learn(A, 1, t0), Learned::New);
        assert_eq!(table.learn_in(10, B, 1, t0), Learned::New);
        let c = MacAddr([2, 0, 0, 0, 0, 3]);
        assert_eq!(table.learn(c, 1, t0), Learned::Full);
        assert_eq!(
            table.learn_in(10, c, 1, t0),
            Learned::Full,
            "VLANs count too"
        );
        assert_eq!(table.lookup(&c), None);
        assert_eq!(table.learn(A, 1, t0), Learned::Known);
        assert_eq!(table.learn(A, 2, t0), Learned::Moved { from: 1 });
        assert_eq!(table.len(), 2);
        // Room again once an address ages out.
        table.learn(A, 2, t0 + Duration::from_secs(60));
        assert_eq!(table.expire(t0 + Duration::from_secs(101)), 1);
        assert_eq!(table.learn(c, 1, t0), Learned::New);
    }

    #[test]
    fn learns_moves_and_forgets() {
        let mut table = MacTable::new(Duration::from_secs(100), 100);
        let t0 = Instant::now();
        assert_eq!(table.learn(A, 1, t0), Learned::New);
        assert_eq!(table.learn(A, 1, t0), Learned::Known);
        assert_eq!(table.learn(A, 2, t0), Learned::Moved { from: 1 });
        assert_eq!(table.lookup(&A), Some(2));
        table.learn(B, 2, t0);
        table.forget_port(2);
        assert!(table.is_empty());
    }

    #[test]
    fn each_vlan_learns_apart() {
        let mut table = MacTable::new(Duration::from_secs(100), 100);
        let t0 = Instant::now();
        assert_eq!(table.learn_in(10, A, 1, t0), Learned::New);
        assert_eq!(table.learn_in(20, A, 2, t0), Learned::New);
        assert_eq!(table.lookup_in(10, &A), Some(1));
        assert_eq!(table.lookup_in(20, &A), Some(2));
        assert_eq!(table.lookup(&A), None);
    }

    #[test]
    fn vlans_addresses_age_also_while_events_are_listened_to() {
        let mut table = MacTable::new(Duration::from_secs(100), 100);
        let t0 = Instant::now();
        table.learn_in(10, A, 1, t0);
        table.learn(B, 1, t0);
        let aged = table.expire_listed(t0 + Duration::from_secs(101));
        assert_eq!(aged, vec![(B, 1)]);
        assert_eq!(table.lookup_in(10, &A), None);
        assert!(table.is_empty());
    }

    #[test]
    fn entries_age_out() {
        let mut table = MacTable::new(Duration::from_secs(100), 100);
        let t0 = Instant::now();
        table.learn(A, 1, t0);
        table.learn(B, 1, t0 + Duration::from_secs(50));
        assert_eq!(table.expire(t0 + Duration::from_secs(100)), 0);
        assert_eq!(table.expire(t0 + Duration::from_secs(101)), 1);
        assert_eq!(table.lookup(&A), None);
        assert_eq!(table.lookup(&B), Some(1));
    }
}
