//! The lab fabric's data path: VLANs, link emulation and VXLAN uplinks.
//!
//! A switch with none of them configured never comes here: the event loop's
//! fast path serves plain ports as it always did. Once a port has a VLAN, an
//! emulated link, or the switch has an uplink or an endpoint with a template,
//! every frame takes this path: classified into its VLAN, delayed or dropped
//! on an emulated input, learned per (VLAN, MAC), sent to the ports of its
//! VLAN (tagged or not as each port wants), and delayed or dropped on an
//! emulated output. Frames waiting for their time sit in one heap; the event
//! loop sleeps until the earliest is due.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Instant;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::SockType;
use uml_host::socket_file::BoundPath;
use uml_host::tun::open_tap;
use uml_proto::ethernet::EthernetHeader;
use uml_proto::vxlan::{VxlanError, VxlanHeader};

use crate::endpoint::{EndpointKind, EndpointSpec, PortTemplate};
use crate::event_loop::{Token, transmit};
use crate::forward::{Destination, decide_in, forwardable, learn_source_in};
use crate::link_emulation::{Direction, Emulator, LinkEmulation, Rng, Schedule, Stage};
use crate::log::log_line;
use crate::ports::{Link, PortId};
use crate::switch::{Switch, SwitchError};
use crate::vlan::{Classified, VlanConfig, egress, ingress};
use crate::vxlan::{
    MAX_GROUP_PEERS, Uplink, VxlanConfig, VxlanStats, bind, bind_group, ipv4_source,
};

/// Datagrams taken from one uplink before the other sockets get a turn.
const VXLAN_READS_PER_TURN: usize = 64;

/// A port's VLAN, link emulation and place in a split-horizon group.
#[derive(Debug, Clone)]
pub struct PortFabric {
    /// Its VLAN setting; `None` is transparent.
    pub vlan: Option<VlanConfig>,
    /// Emulation of the frames it sends into the switch.
    pub emu_in: Option<Emulator>,
    /// Emulation of the frames the switch sends out of it.
    pub emu_out: Option<Emulator>,
    /// Ports of one horizon (one VXLAN uplink) never pass frames to each other.
    pub horizon: Option<usize>,
    /// Whether floods reach it (a multicast uplink's learned senders get
    /// floods through the group instead).
    pub flood: bool,
}

impl Default for PortFabric {
    fn default() -> Self {
        Self {
            vlan: None,
            emu_in: None,
            emu_out: None,
            horizon: None,
            flood: true,
        }
    }
}

impl PortFabric {
    fn is_plain(&self) -> bool {
        self.vlan.is_none()
            && self.emu_in.is_none()
            && self.emu_out.is_none()
            && self.horizon.is_none()
            && self.flood
    }
}

/// Why a run-time change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricError {
    /// No port has that number.
    #[error("no port {0}")]
    NoSuchPort(PortId),
}

/// A listener from `--endpoint`, with what its ports start with.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) spec: EndpointSpec,
    /// The bound socket (none for a tap endpoint, which is one port).
    pub(crate) listener: Option<BoundPath>,
}

/// The fabric's state in the switch.
#[derive(Debug)]
pub(crate) struct Fabric {
    /// Whether frames take the fabric's path (set once anything needs it).
    pub(crate) active: bool,
    pub(crate) schedule: Schedule,
    pub(crate) uplinks: Vec<Uplink>,
    pub(crate) endpoints: Vec<Endpoint>,
    rng: Rng,
    due: Vec<Instant>,
    scratch: Vec<u8>,
    targets: Vec<PortId>,
}

impl Fabric {
    /// Nothing configured yet.
    pub(crate) fn new() -> Self {
        Self {
            active: false,
            schedule: Schedule::default(),
            uplinks: Vec::new(),
            endpoints: Vec::new(),
            rng: Rng::from_entropy(),
            due: Vec::new(),
            scratch: Vec::new(),
            targets: Vec::new(),
        }
    }
}

fn sys_io(what: &'static str) -> impl Fn(std::io::Error) -> SwitchError {
    move |source| SwitchError::Sys { what, source }
}

impl Switch {
    /// Binds the `--endpoint` listeners and the `--vxlan` uplinks, and makes
    /// the tap endpoints' and the uplinks' ports.
    pub(crate) fn start_fabric(
        &mut self,
        endpoints: &[EndpointSpec],
        uplinks: &[VxlanConfig],
    ) -> Result<(), SwitchError> {
        for spec in endpoints {
            let index = self.fabric.endpoints.len();
            if !spec.template.is_plain() {
                self.fabric.active = true;
            }
            let listener = match &spec.kind {
                EndpointKind::Unix(path) => Some(BoundPath::bind(path, SockType::Stream)?),
                EndpointKind::Bess(path) => Some(BoundPath::bind(path, SockType::SeqPacket)?),
                EndpointKind::Tap(name) => {
                    let file = open_tap(name).map_err(|source| SwitchError::Tap {
                        name: name.clone(),
                        source,
                    })?;
                    let id = self.add_port(Link::Tap(file));
                    self.apply_template(id, &spec.template);
                    log_line(&format!("Attached tap device '{name}' as port {id}"));
                    None
                }
            };
            if let Some(listener) = &listener {
                self.epoll
                    .add(
                        listener.fd.as_fd(),
                        EpollEvent::new(
                            EpollFlags::EPOLLIN,
                            Token::Endpoint(u32::try_from(index).unwrap_or(u32::MAX)).into(),
                        ),
                    )
                    .map_err(crate::switch::sys("watching an endpoint"))?;
            }
            log_line(&format!("Endpoint {}", describe(spec)));
            self.fabric.endpoints.push(Endpoint {
                spec: spec.clone(),
                listener,
            });
        }
        for config in uplinks {
            self.add_uplink(config)?;
        }
        Ok(())
    }

    fn add_uplink(&mut self, config: &VxlanConfig) -> Result<(), SwitchError> {
        self.fabric.active = true;
        let index = self.fabric.uplinks.len();
        let socket = Rc::new(bind(config).map_err(sys_io("binding a VXLAN socket"))?);
        let group_socket = config
            .group
            .map(|group| bind_group(config, group))
            .transpose()
            .map_err(sys_io("joining a VXLAN multicast group"))?;
        let token = |group: bool| {
            let id = u32::try_from(index * 2 + usize::from(group)).unwrap_or(u32::MAX);
            EpollEvent::new(EpollFlags::EPOLLIN, Token::Vxlan(id).into())
        };
        self.epoll
            .add(socket.as_fd(), token(false))
            .map_err(crate::switch::sys("watching a VXLAN socket"))?;
        if let Some(group_socket) = &group_socket {
            self.epoll
                .add(group_socket.as_fd(), token(true))
                .map_err(crate::switch::sys("watching a VXLAN socket"))?;
        }
        let mut uplink = Uplink {
            config: config.clone(),
            socket: Rc::clone(&socket),
            group_socket,
            remotes: Vec::new(),
            group_port: None,
            stats: VxlanStats::default(),
        };
        for remote in &config.remotes {
            let id = self.add_vxlan_port(&socket, config, index, *remote, true);
            uplink.remotes.push((*remote.ip(), id));
            log_line(&format!(
                "VXLAN {} VNI {}: remote {remote} is port {id}",
                config.local, config.vni
            ));
        }
        if let Some(group) = config.group {
            let id = self.add_vxlan_port(&socket, config, index, group, true);
            uplink.group_port = Some(id);
            log_line(&format!(
                "VXLAN {} VNI {}: group {group} is port {id}",
                config.local, config.vni
            ));
        }
        self.fabric.uplinks.push(uplink);
        Ok(())
    }

    fn add_vxlan_port(
        &mut self,
        socket: &Rc<std::net::UdpSocket>,
        config: &VxlanConfig,
        uplink: usize,
        dest: SocketAddrV4,
        flood: bool,
    ) -> PortId {
        let id = self.add_port(Link::Vxlan {
            socket: Rc::clone(socket),
            dest,
            header: VxlanHeader::new(config.vni),
        });
        if let Some(port) = self.ports.get_mut(id) {
            port.fabric = Some(Box::new(PortFabric {
                vlan: config.vlan.clone(),
                horizon: Some(uplink),
                flood,
                ..PortFabric::default()
            }));
        }
        id
    }

    /// Gives a new port its endpoint's VLAN and emulation.
    pub(crate) fn apply_template(&mut self, id: PortId, template: &PortTemplate) {
        if template.is_plain() {
            return;
        }
        let _ = self.set_port_vlan(id, template.vlan.clone());
        if let Some((direction, emulation)) = &template.emulation {
            let _ = self.set_port_emulation(id, *direction, Some(emulation.clone()));
        }
    }

    /// Puts a port in a VLAN (access), makes it a trunk, or (`None`) makes it
    /// transparent again; what was learned on it is forgotten.
    pub fn set_port_vlan(
        &mut self,
        id: PortId,
        vlan: Option<VlanConfig>,
    ) -> Result<(), FabricError> {
        let port = self.ports.get_mut(id).ok_or(FabricError::NoSuchPort(id))?;
        let fabric = port.fabric.get_or_insert_with(Box::default);
        fabric.vlan = vlan;
        if fabric.is_plain() {
            port.fabric = None;
        }
        self.refresh_active();
        self.table.forget_port(id);
        Ok(())
    }

    /// Sets (or with `None` ends) a port's link emulation in `direction`;
    /// frames already waiting keep their time.
    pub fn set_port_emulation(
        &mut self,
        id: PortId,
        direction: Direction,
        emulation: Option<LinkEmulation>,
    ) -> Result<(), FabricError> {
        let emulation = emulation.filter(|e| !e.is_noop());
        let seed = self.fabric.rng.unit().to_bits() ^ u64::from(id);
        let port = self.ports.get_mut(id).ok_or(FabricError::NoSuchPort(id))?;
        let fabric = port.fabric.get_or_insert_with(Box::default);
        let make = |e: &LinkEmulation| Emulator::new(e.clone(), Rng::new(seed));
        if direction.has_in() {
            fabric.emu_in = emulation.as_ref().map(make);
        }
        if direction.has_out() {
            fabric.emu_out = emulation
                .as_ref()
                .map(|e| Emulator::new(e.clone(), Rng::new(seed.rotate_left(17))));
        }
        if fabric.is_plain() {
            port.fabric = None;
        }
        self.refresh_active();
        Ok(())
    }

    /// Frames take the fabric's path while anything needs it: an uplink, an
    /// endpoint whose ports get a template, or a port with a setting. Once
    /// nothing does, the plain fast path serves again.
    pub(crate) fn refresh_active(&mut self) {
        self.fabric.active = !self.fabric.uplinks.is_empty()
            || self
                .fabric
                .endpoints
                .iter()
                .any(|e| !e.spec.template.is_plain())
            || self.ports.any_fabric();
    }

    /// A port's VLAN setting (`None`: transparent, or no such port).
    pub fn port_vlan(&self, id: PortId) -> Option<&VlanConfig> {
        self.ports.get(id)?.fabric.as_ref()?.vlan.as_ref()
    }

    /// A port's link emulation in one direction (`Direction::Both` answers for `In`).
    pub fn port_emulation(&self, id: PortId, direction: Direction) -> Option<&LinkEmulation> {
        let fabric = self.ports.get(id)?.fabric.as_ref()?;
        let emulator = if direction.has_in() {
            fabric.emu_in.as_ref()
        } else {
            fabric.emu_out.as_ref()
        };
        emulator.map(Emulator::settings)
    }

    /// Each uplink's receive counters, in `--vxlan` order.
    pub fn vxlan_stats(&self) -> Vec<VxlanStats> {
        self.fabric.uplinks.iter().map(|u| u.stats).collect()
    }

    /// Frames waiting in emulated links.
    pub fn frames_waiting(&self) -> usize {
        self.fabric.schedule.len()
    }

    /// The fabric's path for a frame from `from`: its VLAN, then its port's
    /// emulated input, then switching.
    pub(crate) fn forward_fabric(&mut self, from: PortId, frame: &[u8]) {
        if !forwardable(frame.len()) {
            return;
        }
        let Some(port) = self.ports.get_mut(from) else {
            return;
        };
        let fabric = port.fabric.as_deref_mut();
        let Some(classified) = ingress(fabric.as_ref().and_then(|f| f.vlan.as_ref()), frame) else {
            return;
        };
        if let Some(emulator) = fabric.and_then(|f| f.emu_in.as_mut()) {
            let now = Instant::now();
            emulator.admit(classified.frame.len(), now, &mut self.fabric.due);
            let Classified {
                vid,
                pcp_dei,
                frame,
            } = classified;
            for &due in &self.fabric.due {
                self.fabric
                    .schedule
                    .push(due, Stage::Arrived(from), vid, pcp_dei, frame.clone());
            }
            return;
        }
        self.switch_classified(from, &classified);
    }

    /// Learns and sends a classified frame to the ports of its VLAN.
    fn switch_classified(&mut self, from: PortId, c: &Classified) {
        let Some(header) = EthernetHeader::parse(&c.frame).copied() else {
            return;
        };
        if let Some((mac, learned)) =
            learn_source_in(&mut self.table, c.vid, from, &header, self.now)
        {
            self.log_learned(mac, from, learned);
        }
        let horizon = self
            .ports
            .get(from)
            .and_then(|p| p.fabric.as_ref())
            .and_then(|f| f.horizon);
        let mut targets = std::mem::take(&mut self.fabric.targets);
        targets.clear();
        let apart = |p: &crate::ports::Port| {
            horizon.is_none() || p.fabric.as_ref().and_then(|f| f.horizon) != horizon
        };
        match decide_in(from, c.vid, &header, &self.table, self.cfg.hub) {
            Destination::Nowhere => {}
            Destination::Port(to) => {
                if self.ports.get(to).is_some_and(apart) {
                    targets.push(to);
                }
            }
            Destination::Flood => targets.extend(self.ports.others(from).filter(|&p| {
                self.ports
                    .get(p)
                    .is_some_and(|port| apart(port) && port.fabric.as_ref().is_none_or(|f| f.flood))
            })),
        }
        let mut dead = Vec::new();
        for &to in &targets {
            if !self.send_out(from, to, c) {
                dead.push(to);
            }
        }
        self.fabric.targets = targets;
        self.hold_backed_up(Some(from));
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Sends a frame out of port `to` as its VLAN setting wants it, through
    /// its emulated output if it has one. False when the port is gone for good.
    fn send_out(&mut self, from: PortId, to: PortId, c: &Classified) -> bool {
        let Some(port) = self.ports.get_mut(to) else {
            return true;
        };
        let mut scratch = std::mem::take(&mut self.fabric.scratch);
        let fabric = port.fabric.as_deref_mut();
        let vlan = fabric.as_ref().and_then(|f| f.vlan.as_ref());
        let mut alive = true;
        if let Some(bytes) = egress(vlan, c, &mut scratch) {
            match fabric.and_then(|f| f.emu_out.as_mut()) {
                Some(emulator) => {
                    emulator.admit(bytes.len(), Instant::now(), &mut self.fabric.due);
                    for &due in &self.fabric.due {
                        self.fabric.schedule.push(
                            due,
                            Stage::Leaving(to, from),
                            c.vid,
                            c.pcp_dei,
                            bytes.to_vec(),
                        );
                    }
                }
                None => alive = transmit(port, &[bytes], &mut self.sending),
            }
        }
        self.fabric.scratch = scratch;
        alive
    }

    /// When the earliest emulated frame is due.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.fabric.schedule.next_due()
    }

    /// Sends or switches every emulated frame whose time has come.
    pub(crate) fn release_due(&mut self, now: Instant) {
        let mut dead = Vec::new();
        while let Some(item) = self.fabric.schedule.pop_due(now) {
            match item.stage {
                Stage::Arrived(from) => {
                    if self.ports.get(from).is_some() {
                        let c = Classified {
                            vid: item.vid,
                            pcp_dei: item.pcp_dei,
                            frame: item.frame,
                        };
                        self.switch_classified(from, &c);
                    }
                }
                Stage::Leaving(to, from) => {
                    if let Some(port) = self.ports.get_mut(to) {
                        if !transmit(port, &[&item.frame], &mut self.sending) {
                            dead.push(to);
                        }
                    }
                    self.hold_backed_up(Some(from));
                }
            }
        }
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Datagrams on uplink `index`: each from a remote (or, with a group,
    /// from any sender, which becomes a port) with our VNI is switched as a
    /// frame from that remote's port; anything else is dropped and counted.
    pub(crate) fn vxlan_ready(&mut self, token: u32) {
        let Ok(token) = usize::try_from(token) else {
            return;
        };
        let (index, group) = (token / 2, token % 2 == 1);
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..VXLAN_READS_PER_TURN {
            let Some(uplink) = self.fabric.uplinks.get(index) else {
                break;
            };
            let socket = if group {
                uplink.group_socket.as_ref()
            } else {
                Some(&*uplink.socket)
            };
            let Some(socket) = socket else {
                break;
            };
            let (len, source) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let Some(datagram) = buf.get(..len) else {
                break;
            };
            match self.vxlan_source(index, ipv4_source(source)) {
                Some(port) => match VxlanHeader::parse(datagram) {
                    Ok((header, inner)) if header.vni() == uplink_vni(self, index) => {
                        if let Some(u) = self.fabric.uplinks.get_mut(index) {
                            u.stats.accepted += 1;
                        }
                        self.forward_fabric(port, inner);
                    }
                    Ok((header, _)) => {
                        let vni = header.vni();
                        self.count_drop(index, source, &format!("VNI {vni}"), |s| &mut s.wrong_vni);
                    }
                    Err(e @ (VxlanError::Truncated(_) | VxlanError::NoVni)) => {
                        self.count_drop(index, source, &e.to_string(), |s| &mut s.malformed);
                    }
                },
                None => {
                    self.count_drop(index, source, "not a remote", |s| &mut s.unknown_source);
                }
            }
        }
        self.buf = buf;
    }

    /// The port of a datagram's sender, made now for a new sender to a group.
    fn vxlan_source(&mut self, index: usize, source: Option<Ipv4Addr>) -> Option<PortId> {
        let source = source?;
        let uplink = self.fabric.uplinks.get(index)?;
        if let Some(&(_, id)) = uplink.remotes.iter().find(|(ip, _)| *ip == source) {
            return Some(id);
        }
        uplink.config.group?;
        if uplink.remotes.len() >= MAX_GROUP_PEERS {
            return None;
        }
        let config = uplink.config.clone();
        let socket = Rc::clone(&uplink.socket);
        let dest = SocketAddrV4::new(source, config.local.port());
        // Floods reach this sender through the group already.
        let id = self.add_vxlan_port(&socket, &config, index, dest, false);
        log_line(&format!(
            "VXLAN {} VNI {}: sender {source} is port {id}",
            config.local, config.vni
        ));
        self.fabric
            .uplinks
            .get_mut(index)?
            .remotes
            .push((source, id));
        Some(id)
    }

    /// Counts a dropped datagram; the first of each kind and then every
    /// power of two is logged, so a flood of them cannot flood the log.
    fn count_drop(
        &mut self,
        index: usize,
        source: std::net::SocketAddr,
        why: &str,
        counter: impl Fn(&mut VxlanStats) -> &mut u64,
    ) {
        let Some(uplink) = self.fabric.uplinks.get_mut(index) else {
            return;
        };
        let n = counter(&mut uplink.stats);
        *n += 1;
        if n.is_power_of_two() {
            let count = *n;
            log_line(&format!(
                "VXLAN {}: dropped a packet from {source}: {why} ({count} such so far)",
                uplink.config.local
            ));
        }
    }
}

fn uplink_vni(switch: &Switch, index: usize) -> u32 {
    switch
        .fabric
        .uplinks
        .get(index)
        .map_or(u32::MAX, |u| u.config.vni)
}

fn describe(spec: &EndpointSpec) -> String {
    let place = match &spec.kind {
        EndpointKind::Unix(p) => format!("unix socket '{}'", p.display()),
        EndpointKind::Bess(p) => format!("bess socket '{}'", p.display()),
        EndpointKind::Tap(d) => format!("tap device '{d}'"),
    };
    let vlan = match &spec.template.vlan {
        None => String::new(),
        Some(VlanConfig::Access(v)) => format!(" VLAN {v}"),
        Some(VlanConfig::Trunk { vlans, native }) => format!(
            " trunk {:?}{}",
            vlans,
            native.map(|n| format!(" native {n}")).unwrap_or_default()
        ),
    };
    let emulated = match &spec.template.emulation {
        Some((dir, _)) => format!(" emulated link ({dir:?})"),
        None => String::new(),
    };
    format!("{place}{vlan}{emulated}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use uml_proto::ethernet::{ETHERTYPE_VLAN, MacAddr};
    use zerocopy::IntoBytes;

    use super::*;
    use crate::switch::Config;

    fn switch(dir: &std::path::Path) -> Switch {
        Switch::start(Config {
            program: "uml_switch".to_owned(),
            control: dir.join("ctl"),
            compat_v0_data: None,
            hub: false,
            tap: None,
            bess: None,
            daemon: false,
            pidfile: None,
            max_age: Duration::from_secs(100),
            max_ports_per_user: 64,
            max_macs: 1000,
            endpoints: Vec::new(),
            vxlan: Vec::new(),
            managed: Default::default(),
        })
        .unwrap()
    }

    /// A port whose frames the test reads from the other end of a socket pair.
    fn port(sw: &mut Switch) -> (PortId, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        (sw.add_port(Link::Bess(OwnedFd::from(ours))), theirs)
    }

    fn broadcast(src: u8) -> Vec<u8> {
        let mut f = EthernetHeader::new(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, src]), 0x88b5)
            .as_bytes()
            .to_vec();
        f.extend_from_slice(b"frame");
        f
    }

    fn received(s: &UnixDatagram) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        std::iter::from_fn(|| s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())).collect()
    }

    #[test]
    fn vlans_change_at_run_time_and_plain_ports_return_to_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut sw = switch(dir.path());
        let (p1, s1) = port(&mut sw);
        let (p2, s2) = port(&mut sw);
        let (p3, s3) = port(&mut sw);
        sw.set_port_vlan(p1, Some(VlanConfig::Access(10))).unwrap();
        assert!(sw.fabric.active);
        sw.forward_fabric(p2, &broadcast(2));
        assert!(
            received(&s1).is_empty(),
            "a transparent port reached VLAN 10"
        );
        assert_eq!(received(&s3), [broadcast(2)]);
        sw.set_port_vlan(p2, Some(VlanConfig::Access(10))).unwrap();
        sw.set_port_vlan(p3, Some("trunk:10".parse().unwrap()))
            .unwrap();
        sw.forward_fabric(p2, &broadcast(2));
        assert_eq!(received(&s1), [broadcast(2)]);
        let tagged = received(&s3);
        assert_eq!(tagged.len(), 1);
        assert_eq!(
            EthernetHeader::parse(&tagged[0]).unwrap().ethertype.get(),
            ETHERTYPE_VLAN
        );
        assert!(
            received(&s2).is_empty(),
            "a frame went back to its own port"
        );
        assert_eq!(sw.port_vlan(p1), Some(&VlanConfig::Access(10)));
        for p in [p1, p2, p3] {
            sw.set_port_vlan(p, None).unwrap();
            assert!(sw.ports.get(p).unwrap().fabric.is_none());
        }
        assert!(!sw.fabric.active, "plain ports left on the slow path");
        assert_eq!(
            sw.set_port_vlan(999, None),
            Err(FabricError::NoSuchPort(999))
        );
    }

    #[test]
    fn emulation_changes_at_run_time_and_waiting_frames_are_released_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut sw = switch(dir.path());
        let (p1, s1) = port(&mut sw);
        let (p2, s2) = port(&mut sw);
        let delay: LinkEmulation = "delay=50ms".parse().unwrap();
        sw.set_port_emulation(p2, Direction::Out, Some(delay.clone()))
            .unwrap();
        assert_eq!(sw.port_emulation(p2, Direction::Out), Some(&delay));
        assert_eq!(sw.port_emulation(p2, Direction::In), None);
        let sent = Instant::now();
        sw.forward_fabric(p1, &broadcast(1));
        assert!(received(&s2).is_empty());
        assert_eq!(sw.frames_waiting(), 1);
        let due = sw.next_timer().unwrap();
        assert!(due >= sent + Duration::from_millis(50));
        sw.release_due(due - Duration::from_millis(1));
        assert!(received(&s2).is_empty());
        sw.release_due(due);
        assert_eq!(received(&s2), [broadcast(1)]);
        assert_eq!(sw.frames_waiting(), 0);

        // Loss on the way in: nothing from p1 reaches anyone, nothing waits.
        let lossy: LinkEmulation = "loss=100%".parse().unwrap();
        sw.set_port_emulation(p1, Direction::In, Some(lossy))
            .unwrap();
        sw.set_port_emulation(p2, Direction::Out, None).unwrap();
        sw.forward_fabric(p1, &broadcast(1));
        assert_eq!(sw.frames_waiting(), 0);
        assert!(received(&s2).is_empty());
        // Off again: frames flow at once, and the ports are plain.
        sw.set_port_emulation(p1, Direction::Both, None).unwrap();
        assert!(sw.ports.get(p1).unwrap().fabric.is_none());
        sw.forward_fabric(p2, &broadcast(2));
        assert_eq!(received(&s1), [broadcast(2)]);
        assert_eq!(
            sw.set_port_emulation(42, Direction::In, None),
            Err(FabricError::NoSuchPort(42))
        );
    }
}
