//! VXLAN uplinks (RFC 7348): the switch's frames carried in UDP to other
//! switches, to the Linux kernel's `vxlan` devices or to any VTEP.
//!
//! Each remote endpoint is a port of its own, so that remote MACs are learned
//! per endpoint and flooding replicates a frame to every remote (head-end
//! replication). The ports of one uplink form a split-horizon group: what
//! arrives from one remote is never sent on to another, as VTEPs in a full
//! mesh expect. With a multicast group, floods go to the group once and each
//! sender seen there becomes a port for unicast.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::str::FromStr;

use crate::vlan::VlanConfig;
use uml_proto::vxlan::{MAX_VNI, VXLAN_PORT};

/// Why a `--vxlan` setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VxlanConfigError {
    /// A part that does not parse.
    #[error(
        "--vxlan: '{0}' (expected local=IP[:PORT],vni=N,remote=IP[:PORT]...|group=IP[,vlan=...])"
    )]
    Bad(String),
    /// Something required is missing or two things conflict.
    #[error("--vxlan: {0}")]
    Incomplete(&'static str),
}

/// One uplink as the command line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The address and UDP port we receive on (the port is also the one we send to by default).
    pub local: SocketAddrV4,
    /// The VXLAN network identifier, 24 bits.
    pub vni: u32,
    /// Remote endpoints for head-end replication.
    pub remotes: Vec<SocketAddrV4>,
    /// A multicast group instead of (or besides) a list of remotes.
    pub group: Option<SocketAddrV4>,
    /// The VLAN the uplink's ports are in (none: transparent).
    pub vlan: Option<VlanConfig>,
}

fn endpoint(text: &str, default_port: u16) -> Option<SocketAddrV4> {
    if let Ok(addr) = text.parse::<SocketAddrV4>() {
        return Some(addr);
    }
    Some(SocketAddrV4::new(text.parse().ok()?, default_port))
}

impl FromStr for VxlanConfig {
    type Err = VxlanConfigError;

    /// `local=10.99.1.1[:4789],vni=42,remote=10.99.1.2[,remote=...]` or
    /// `...,group=239.1.1.1`; `vlan=10` or `trunk=10:20` put the uplink's
    /// ports in VLANs.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut local = None;
        let mut vni = None;
        let mut remotes = Vec::new();
        let mut group = None;
        let mut vlan = None;
        let mut remote_texts = Vec::new();
        for item in text.split(',').filter(|s| !s.is_empty()) {
            let bad = || VxlanConfigError::Bad(item.to_owned());
            let (key, value) = item.split_once('=').ok_or_else(bad)?;
            match key {
                "local" => local = Some(endpoint(value, VXLAN_PORT).ok_or_else(bad)?),
                "vni" => {
                    let n: u32 = value.parse().map_err(|_| bad())?;
                    if n > MAX_VNI {
                        return Err(bad());
                    }
                    vni = Some(n);
                }
                "remote" => remote_texts.push(value),
                "group" => group = Some(value),
                "vlan" => vlan = Some(value.parse().map_err(|_| bad())?),
                "trunk" => {
                    vlan = Some(VlanConfig::trunk(value.split(':'), None).map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        let local = local.ok_or(VxlanConfigError::Incomplete("local= is required"))?;
        let vni = vni.ok_or(VxlanConfigError::Incomplete("vni= is required"))?;
        for r in remote_texts {
            remotes.push(
                endpoint(r, local.port()).ok_or_else(|| VxlanConfigError::Bad(r.to_owned()))?,
            );
        }
        let group = group
            .map(|g| {
                endpoint(g, local.port())
                    .filter(|a| a.ip().is_multicast())
                    .ok_or_else(|| VxlanConfigError::Bad(format!("group={g}")))
            })
            .transpose()?;
        if remotes.is_empty() && group.is_none() {
            return Err(VxlanConfigError::Incomplete(
                "give remote= endpoints or a multicast group=",
            ));
        }
        Ok(Self {
            local,
            vni,
            remotes,
            group,
            vlan,
        })
    }
}

/// What happened to the datagrams an uplink received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VxlanStats {
    /// Taken and switched.
    pub accepted: u64,
    /// Dropped: another VNI.
    pub wrong_vni: u64,
    /// Dropped: shorter than the header and an Ethernet header, or no VNI flag.
    pub malformed: u64,
    /// Dropped: from an address that is not one of the remotes.
    pub unknown_source: u64,
}

impl VxlanStats {
    /// Every drop.
    pub fn dropped(&self) -> u64 {
        self.wrong_vni + self.malformed + self.unknown_source
    }
}

/// A running uplink: its socket, its ports and its counters.
#[derive(Debug)]
pub struct Uplink {
    /// What the command line asked for.
    pub config: VxlanConfig,
    /// The UDP socket, shared with its ports.
    pub socket: std::rc::Rc<UdpSocket>,
    /// The socket the multicast group's datagrams arrive on.
    pub group_socket: Option<UdpSocket>,
    /// Remote endpoints (listed or learned from the group) and their ports.
    pub remotes: Vec<(Ipv4Addr, crate::ports::PortId)>,
    /// The port whose frames go to the multicast group.
    pub group_port: Option<crate::ports::PortId>,
    /// What was received.
    pub stats: VxlanStats,
}

/// The most senders a multicast uplink makes ports for.
pub const MAX_GROUP_PEERS: usize = 1024;

/// Binds an uplink's socket to the local address: everything is sent from
/// it, and unicast datagrams arrive on it. A datagram to a multicast group
/// from a socket bound to an address leaves through that address's
/// interface (the kernel picks it from the source), so no route to the
/// group is needed.
pub fn bind(config: &VxlanConfig) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(config.local)?;
    socket.set_nonblocking(true)?;
    // Our own floods to the group are not ours to receive.
    socket.set_multicast_loop_v4(false)?;
    Ok(socket)
}

/// The socket a multicast uplink receives the group's datagrams on: bound
/// to the group's address (the kernel gives a socket bound to a unicast
/// address only its unicast datagrams) and joined on the local address's
/// interface.
pub fn bind_group(config: &VxlanConfig, group: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(group)?;
    socket.join_multicast_v4(group.ip(), config.local.ip())?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The IPv4 sender of a datagram, if it is one.
pub fn ipv4_source(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uplinks() {
        let c: VxlanConfig =
            "local=10.99.1.1,vni=42,remote=10.99.1.2,remote=10.99.1.3:9999,vlan=10"
                .parse()
                .unwrap();
        assert_eq!(c.local, "10.99.1.1:4789".parse().unwrap());
        assert_eq!(c.vni, 42);
        assert_eq!(
            c.remotes,
            [
                "10.99.1.2:4789".parse().unwrap(),
                "10.99.1.3:9999".parse().unwrap()
            ]
        );
        assert_eq!(c.vlan, Some(VlanConfig::Access(10)));
        let g: VxlanConfig = "local=10.99.1.1:5000,vni=1,group=239.1.1.1"
            .parse()
            .unwrap();
        assert_eq!(g.group, Some("239.1.1.1:5000".parse().unwrap()));
        for bad in [
            "vni=1,remote=10.99.1.2",
            "local=10.99.1.1,remote=10.99.1.2",
            "local=10.99.1.1,vni=1",
            "local=10.99.1.1,vni=16777216,remote=10.99.1.2",
            "local=10.99.1.1,vni=1,group=10.99.1.2",
            "local=10.99.1.1,vni=1,remote=nowhere",
            "local=10.99.1.1,vni=1,remote=10.99.1.2,colour=red",
        ] {
            assert!(bad.parse::<VxlanConfig>().is_err(), "{bad}");
        }
    }
}
