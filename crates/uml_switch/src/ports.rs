//! The switch's ports: daemon-protocol clients, BESS connections and a tap device.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use std::net::{SocketAddrV4, UdpSocket};
use std::rc::Rc;

use nix::sys::socket::UnixAddr;
use rustc_hash::FxHashMap;
use uml_proto::switch::{PeerAddr, SUN_PATH_LEN};
use uml_proto::vxlan::VxlanHeader;

pub use crate::fabric::PortFabric;

use crate::backlog::Backlog;

use crate::counters::{RxCounters, TxCounters};

/// A port's number, as the log lines show it; never reused while the switch runs.
pub type PortId = u32;

/// How frames reach a port.
#[allow(clippy::large_enum_variant)] // one per port, looked up per frame: no box to chase
#[derive(Debug)]
pub enum Link {
    /// A daemon-transport client. Its frames come in and go out through a
    /// data socket of the port's own, connected to the client's; a v0
    /// client's come in through the shared `-compat-v0` socket instead.
    Daemon {
        /// The port's data socket, connected to the client's data socket.
        data: OwnedFd,
        /// The client's data socket address, as its request named it (the
        /// key of a v0 client's frames on the shared socket).
        key: PeerAddr,
        /// Whether its frames arrive on the shared socket (a v0 client).
        shared: bool,
        /// The control connection; the port lives as long as it stays open.
        control: UnixStream,
    },
    /// A BESS (SOCK_SEQPACKET) connection: one frame per message.
    Bess(OwnedFd),
    /// The tap device given with `-tap`.
    Tap(File),
    /// A VXLAN remote endpoint: frames go there in UDP through the uplink's socket.
    Vxlan {
        /// The uplink's socket, shared by its ports and watched once, for the uplink.
        socket: Rc<UdpSocket>,
        /// Where the frames go.
        dest: SocketAddrV4,
        /// The header every frame gets.
        header: VxlanHeader,
    },
}

impl Link {
    /// The descriptor watched as [`PortId`]'s own: the control connection of
    /// a daemon port (its data socket is watched apart), else the frames'.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Link::Daemon { control, .. } => control.as_fd(),
            Link::Bess(fd) => fd.as_fd(),
            Link::Tap(file) => file.as_fd(),
            Link::Vxlan { socket, .. } => socket.as_fd(),
        }
    }

    /// Whether the port's descriptor is watched for it alone (a VXLAN
    /// port's socket is its uplink's, watched once).
    pub fn watched(&self) -> bool {
        !matches!(self, Link::Vxlan { .. })
    }
}

/// One port.
#[derive(Debug)]
pub struct Port {
    /// Its number.
    pub id: PortId,
    /// How to reach it.
    pub link: Link,
    /// VLAN, link emulation, split horizon: `None` for a plain port, which
    /// the fast path serves as the switch always did.
    pub fabric: Option<Box<PortFabric>>,
    // managed switch (issue 13): counters, bumped where the port is at hand.
    /// What it sent us.
    pub rx: RxCounters,
    /// What we sent it.
    pub tx: TxCounters,
    /// Frames waiting for room in its queue (daemon and BESS ports).
    pub backlog: Backlog,
    /// How many ports' backlogs hold it back: its frames are not read
    /// while this is not zero.
    pub held: u32,
    /// The user whose guest it serves (daemon and BESS ports), for the
    /// per-user limits; `None` for taps and uplinks.
    pub owner: Option<u32>,
    /// How its data socket was last read (daemon ports).
    pub reads: Reads,
}

/// How a daemon port's frames came on its last reads: the switch reads a
/// port whose frames come one at a time with a plain `recv`, and a busy one
/// a batch per `recvmmsg`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reads {
    /// The last batch read held one frame.
    pub lone: bool,
    /// The loop turn of the last read.
    pub turn: u64,
}

impl Reads {
    /// Whether to read one frame alone in loop turn `turn`: the last batch
    /// held one frame, and the port was not read in the turn before (a port
    /// ready turn after turn has frames queued).
    pub fn one_at_a_time(&self, turn: u64) -> bool {
        self.lone && self.turn.wrapping_add(1) != turn
    }
}

/// Every open port, in the order they were made.
#[derive(Debug, Default)]
pub struct PortTable {
    /// By number: numbers are ours, not chosen by clients (see the README).
    ports: FxHashMap<PortId, Port>,
    /// Port ids in the order they were made, for flooding.
    order: Vec<PortId>,
    next: PortId,
    /// Daemon ports by their client's data socket address.
    by_key: HashMap<PeerAddr, PortId>,
}

impl PortTable {
    /// An empty table; the first port is number 1.
    pub fn new() -> Self {
        Self {
            next: 1,
            ..Self::default()
        }
    }

    /// Adds a port and returns its new number.
    pub fn insert(&mut self, link: Link) -> PortId {
        let id = self.next;
        self.next += 1;
        if let Link::Daemon { key, .. } = &link {
            self.by_key.insert(*key, id);
        }
        let port = Port {
            id,
            link,
            fabric: None,
            rx: RxCounters::default(),
            tx: TxCounters::default(),
            backlog: Backlog::default(),
            held: 0,
            owner: None,
            reads: Reads::default(),
        };
        self.ports.insert(id, port);
        self.order.push(id);
        id
    }

    /// How many ports serve `uid`'s guests.
    pub fn owned_by(&self, uid: u32) -> usize {
        self.ports.values().filter(|p| p.owner == Some(uid)).count()
    }

    /// Removes a port; returns it (with every count it had) so its
    /// descriptors can be unwatched.
    pub fn remove(&mut self, id: PortId) -> Option<Port> {
        let port = self.ports.remove(&id)?;
        if let Link::Daemon { key, .. } = &port.link {
            if self.by_key.get(key) == Some(&id) {
                self.by_key.remove(key);
            }
        }
        self.order.retain(|&p| p != id);
        Some(port)
    }

    /// The port numbered `id`.
    pub fn get(&self, id: PortId) -> Option<&Port> {
        self.ports.get(&id)
    }

    /// The port numbered `id`, to change or count its frames.
    pub fn get_mut(&mut self, id: PortId) -> Option<&mut Port> {
        self.ports.get_mut(&id)
    }

    /// Whether any port has a VLAN, emulation or horizon setting.
    pub fn any_fabric(&self) -> bool {
        self.ports.values().any(|p| p.fabric.is_some())
    }

    /// The daemon port whose client's data socket is at `key`.
    pub fn by_source(&self, key: &PeerAddr) -> Option<PortId> {
        self.by_key.get(key).copied()
    }

    /// What port `id` sent us.
    pub fn rx(&self, id: PortId) -> Option<RxCounters> {
        self.ports.get(&id).map(|port| port.rx)
    }

    /// Every port, in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = &Port> + '_ {
        self.order.iter().filter_map(|id| self.ports.get(id))
    }

    /// How many ports are open.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no port is open.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every port but `except`, newest first (the order flooding uses).
    pub fn others(&self, except: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.order
            .iter()
            .rev()
            .copied()
            .filter(move |&p| p != except)
    }
}

/// The key frames from a daemon client are matched by: abstract names are
/// compared whole, as opaque bytes (the kernel leaves heap garbage in them);
/// path names up to their NUL.
pub fn peer_key(addr: &PeerAddr) -> PeerAddr {
    match addr.filesystem_path() {
        Some(path) => PeerAddr::from_path(path).unwrap_or(*addr),
        None => *addr,
    }
}

/// The key of a received datagram's sender, from the `sun_path` bytes the
/// kernel reported for it.
pub fn source_key(sender: &[u8]) -> Option<PeerAddr> {
    match sender.split_first() {
        // An unbound sender has no name at all: such a frame has no port.
        None => None,
        Some((0, name)) => {
            // A port's abstract address is registered and sent to with all
            // 110 bytes, so only a sender bound with the full length can be a
            // port; a shorter name equal to a port's without its trailing
            // zeros is another socket, which padding would make look the same.
            if name.len() != SUN_PATH_LEN - 1 {
                return None;
            }
            PeerAddr::from_abstract_name(name).ok()
        }
        Some(_) => {
            let path = sender.split(|&b| b == 0).next().unwrap_or_default();
            PeerAddr::from_path(Path::new(OsStr::from_bytes(path))).ok()
        }
    }
}

/// The address to send a daemon client's frames to (all 110 bytes for abstract names).
pub fn send_addr(addr: &PeerAddr) -> Option<UnixAddr> {
    match addr.abstract_name() {
        Some(name) => UnixAddr::new_abstract(name).ok(),
        None => UnixAddr::new(addr.filesystem_path()?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_read_alone_only_while_its_frames_come_one_at_a_time() {
        let mut reads = Reads::default();
        assert!(!reads.one_at_a_time(1), "a new port is read in batches");
        reads = Reads {
            lone: true,
            turn: 5,
        };
        assert!(reads.one_at_a_time(7), "a lone frame, and a turn between");
        assert!(!reads.one_at_a_time(6), "ready again the very next turn");
        reads.lone = false;
        assert!(!reads.one_at_a_time(9), "the last batch held more than one");
        reads = Reads {
            lone: true,
            turn: u64::MAX,
        };
        assert!(!reads.one_at_a_time(0), "the turn count wraps");
    }

    /// The `sun_path` bytes the kernel reports for a sender bound to `addr`.
    fn reported(addr: &UnixAddr) -> Vec<u8> {
        match addr.as_abstract() {
            Some(name) => [&[0u8][..], name].concat(),
            None => addr.path().unwrap().as_os_str().as_bytes().to_vec(),
        }
    }

    #[test]
    fn kernel_addresses_round_trip_with_their_garbage() {
        let mut addr = PeerAddr::kernel_style(1234, 5678);
        addr.path[40] = 0xaa; // heap garbage, as the kernel leaves it
        let send = send_addr(&addr).unwrap();
        assert_eq!(send.as_abstract().unwrap().len(), 107);
        assert_eq!(source_key(&reported(&send)), Some(peer_key(&addr)));
    }

    #[test]
    fn a_shorter_abstract_name_is_not_the_port_it_pads_to() {
        let full = PeerAddr::from_abstract_name(b"port-1").unwrap();
        let short = UnixAddr::new_abstract(b"port-1").unwrap();
        assert_eq!(source_key(&reported(&short)), None);
        let whole = send_addr(&full).unwrap();
        assert_eq!(source_key(&reported(&whole)), Some(peer_key(&full)));
    }

    #[test]
    fn path_addresses_ignore_bytes_after_the_nul() {
        let mut addr = PeerAddr::from_path(std::path::Path::new("/tmp/x.sock")).unwrap();
        addr.path[100] = 7;
        let send = send_addr(&addr).unwrap();
        assert_eq!(source_key(&reported(&send)), Some(peer_key(&addr)));
    }

    #[test]
    fn an_unbound_sender_is_no_port() {
        assert_eq!(source_key(b""), None);
    }
}
