//! The few route-netlink requests the helper makes: an address and link state
//! for a new tap, host routes, proxy ARP entries, and a dump of IPv4 routes.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::DefaultNla;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;

/// A netlink exchange that failed.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket itself failed.
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused a request.
    #[error("{what}: {}", errno.desc())]
    Refused {
        /// The request, in `ip` syntax.
        what: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The kernel sent something we could not read.
    #[error("netlink: unreadable answer to {what}")]
    Garbled {
        /// The request, in `ip` syntax.
        what: String,
    },
}

impl RtnlError {
    /// The kernel's errno, when it refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RtnlError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network address.
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Outgoing interface, when the route names one.
    pub oif: Option<u32>,
    /// Directly attached: no gateway in between.
    pub on_link: bool,
}

/// One network device, as route netlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its interface index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its alias (`ip link set DEV alias ...`), settable only with CAP_NET_ADMIN.
    pub alias: Option<String>,
    /// Its IPv4 proxy ARP switch, when it has IPv4 settings.
    pub proxy_arp: Option<bool>,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            alias: None,
            proxy_arp: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::AfSpecUnspec(families) => {
                    for family in families {
                        let AfSpecUnspec::Inet(inet) = family else {
                            continue;
                        };
                        for setting in inet {
                            if let AfSpecInet::DevConf(conf) = setting {
                                link.proxy_arp = Some(conf.proxy_arp != 0);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// `IFLA_INET_CONF` inside `IFLA_AF_SPEC`/`AF_INET`.
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_PROXY_ARP`, one of the settings inside `IFLA_INET_CONF`.
const IPV4_DEVCONF_PROXY_ARP: u16 = 3;
/// `IPV4_DEVCONF_ACCEPT_REDIRECTS`.
pub const IPV4_DEVCONF_ACCEPT_REDIRECTS: u16 = 4;
/// `IPV4_DEVCONF_RP_FILTER`.
pub const IPV4_DEVCONF_RP_FILTER: u16 = 8;

/// A route-netlink socket.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

const RECV_BUFFER: usize = 64 * 1024;

impl Rtnl {
    /// Opens a socket in the caller's network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        socket.bind_auto().map_err(RtnlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Self { socket, seq: 0 })
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(RtnlError::Socket)?;
        Ok(self.seq)
    }

    /// Reads answers to `seq`, handing each inner message to `each`, until the
    /// kernel's acknowledgement (or end of dump).
    fn receive(
        &mut self,
        seq: u32,
        what: &str,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), RtnlError> {
        let garbled = || RtnlError::Garbled {
            what: what.to_owned(),
        };
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let len = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(RtnlError::Socket)?;
            let mut offset = 0;
            while offset < len {
                let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..len])
                    .map_err(|_| garbled())?;
                let size = packet.header.length as usize;
                if size == 0 {
                    return Err(garbled());
                }
                offset += size;
                if packet.header.sequence_number != seq {
                    continue;
                }
                match packet.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(()),
                            Some(code) => Err(RtnlError::Refused {
                                what: what.to_owned(),
                                errno: Errno::from_raw(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }

    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), RtnlError> {
        let seq = self.send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.receive(seq, what, |_| {})
    }

    /// `ip address add ADDR/32 dev IFINDEX`.
    pub fn add_host_address(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        what: &str,
    ) -> Result<(), RtnlError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = 32;
        message.header.index = ifindex;
        message.attributes = vec![
            AddressAttribute::Local(addr.into()),
            AddressAttribute::Address(addr.into()),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        )
    }

    /// `ip link set IFINDEX up`.
    pub fn set_up(&mut self, ifindex: u32, what: &str) -> Result<(), RtnlError> {
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0, what)
    }

    /// The device with index `ifindex` (ENODEV if there is none).
    pub fn link(&mut self, ifindex: u32) -> Result<Link, RtnlError> {
        let mut query = LinkMessage::default();
        query.header.index = ifindex;
        let what = format!("ip link show (index {ifindex})");
        let seq = self.send(
            RouteNetlinkMessage::GetLink(query),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        let mut found = None;
        self.receive(seq, &what, |message| {
            if let RouteNetlinkMessage::NewLink(link) = message {
                found = Some(Link::from_message(&link));
            }
        })?;
        found.ok_or(RtnlError::Garbled { what })
    }

    /// Every device of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let seq = self.send(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut links = Vec::new();
        self.receive(seq, "ip link show", |message| {
            if let RouteNetlinkMessage::NewLink(link) = message {
                links.push(Link::from_message(&link));
            }
        })?;
        Ok(links)
    }

    /// `ip link set IFINDEX alias ALIAS`.
    pub fn set_alias(&mut self, ifindex: u32, alias: &str, what: &str) -> Result<(), RtnlError> {
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        message.attributes = vec![LinkAttribute::IfAlias(alias.to_owned())];
        self.request(RouteNetlinkMessage::SetLink(message), 0, what)
    }

    /// `sysctl -w net.ipv4.conf.DEV.proxy_arp=0|1`, addressed by index, so
    /// that it reaches the device that was checked even if a name changed.
    pub fn set_proxy_arp(&mut self, ifindex: u32, on: bool, what: &str) -> Result<(), RtnlError> {
        self.set_inet_conf(ifindex, &[(IPV4_DEVCONF_PROXY_ARP, u32::from(on))], what)
    }

    /// Sets IPv4 settings (`IPV4_DEVCONF_*`, value) of device `ifindex`.
    pub fn set_inet_conf(
        &mut self,
        ifindex: u32,
        settings: &[(u16, u32)],
        what: &str,
    ) -> Result<(), RtnlError> {
        // Nested as the kernel reads IFLA_INET_CONF; the crate's own
        // DevConfRequest leaves out zeros, so it cannot switch one off.
        let mut setting = Vec::with_capacity(8 * settings.len());
        for &(id, value) in settings {
            setting.extend_from_slice(&8u16.to_ne_bytes());
            setting.extend_from_slice(&id.to_ne_bytes());
            setting.extend_from_slice(&value.to_ne_bytes());
        }
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        message.attributes = vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
            AfSpecInet::Other(DefaultNla::new(IFLA_INET_CONF, setting)),
        ])])];
        self.request(RouteNetlinkMessage::SetLink(message), 0, what)
    }

    fn host_route(ifindex: u32, addr: Ipv4Addr) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = 32;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(addr)),
            RouteAttribute::Oif(ifindex),
        ];
        message
    }

    /// `ip route add ADDR/32 dev IFINDEX` (fails with EEXIST if it is there).
    pub fn add_host_route(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        what: &str,
    ) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::NewRoute(Self::host_route(ifindex, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        )
    }

    /// `ip route del ADDR/32 dev IFINDEX` (fails with ESRCH if it is not there).
    pub fn del_host_route(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        what: &str,
    ) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::DelRoute(Self::host_route(ifindex, addr)),
            0,
            what,
        )
    }

    fn proxy_entry(ifindex: u32, addr: Ipv4Addr) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = ifindex;
        message.header.state = NeighbourState::Permanent;
        message.header.flags = NeighbourFlags::Proxy;
        message.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        ))];
        message
    }

    /// `ip neigh add proxy ADDR dev IFINDEX`: the host answers ARP for ADDR
    /// there. Fails with EEXIST if the entry is there: someone else's entry
    /// is never adopted (a later `del` would remove it).
    pub fn add_proxy(&mut self, ifindex: u32, addr: Ipv4Addr, what: &str) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(Self::proxy_entry(ifindex, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        )
    }

    /// `ip neigh del proxy ADDR dev IFINDEX` (fails with ENOENT if it is not there).
    pub fn del_proxy(&mut self, ifindex: u32, addr: Ipv4Addr, what: &str) -> Result<(), RtnlError> {
        self.request(
            RouteNetlinkMessage::DelNeighbour(Self::proxy_entry(ifindex, addr)),
            0,
            what,
        )
    }

    /// Every IPv4 address of the host, with its device's index.
    pub fn addresses(&mut self) -> Result<Vec<(Ipv4Addr, u32)>, RtnlError> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let seq = self.send(
            RouteNetlinkMessage::GetAddress(query),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut found = Vec::new();
        self.receive(seq, "ip address show", |message| {
            let RouteNetlinkMessage::NewAddress(address) = message else {
                return;
            };
            // IFA_LOCAL is the host's own address (IFA_ADDRESS a peer's on
            // point-to-point links); without IFA_LOCAL they are the same.
            let mut local = None;
            let mut plain = None;
            for attribute in &address.attributes {
                match attribute {
                    AddressAttribute::Local(std::net::IpAddr::V4(a)) => local = Some(*a),
                    AddressAttribute::Address(std::net::IpAddr::V4(a)) => plain = Some(*a),
                    _ => {}
                }
            }
            if let Some(addr) = local.or(plain) {
                found.push((addr, address.header.index));
            }
        })?;
        Ok(found)
    }

    /// Every IPv4 address the host publishes by proxy ARP, with the device's index.
    pub fn proxies(&mut self) -> Result<Vec<(Ipv4Addr, u32)>, RtnlError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Inet;
        // The kernel dumps the proxy table only when asked with exactly this flag.
        query.header.flags = NeighbourFlags::Proxy;
        let seq = self.send(
            RouteNetlinkMessage::GetNeighbour(query),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut found = Vec::new();
        self.receive(seq, "ip neigh show proxy", |message| {
            let RouteNetlinkMessage::NewNeighbour(entry) = message else {
                return;
            };
            if !entry.header.flags.contains(NeighbourFlags::Proxy) {
                return;
            }
            for attribute in &entry.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) = attribute {
                    found.push((*addr, entry.header.ifindex));
                }
            }
        })?;
        Ok(found)
    }

    /// Every IPv4 neighbour entry (not proxy entries): address, device's
    /// index, and whether the entry says a host there answers (any state but
    /// INCOMPLETE or FAILED).
    pub fn neighbours(&mut self) -> Result<Vec<(Ipv4Addr, u32, bool)>, RtnlError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Inet;
        let seq = self.send(
            RouteNetlinkMessage::GetNeighbour(query),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut found = Vec::new();
        self.receive(seq, "ip neigh show", |message| {
            let RouteNetlinkMessage::NewNeighbour(entry) = message else {
                return;
            };
            if entry.header.flags.contains(NeighbourFlags::Proxy) {
                return;
            }
            let live = !matches!(
                entry.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed
            );
            for attribute in &entry.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) = attribute {
                    found.push((*addr, entry.header.ifindex, live));
                }
            }
        })?;
        Ok(found)
    }

    /// The IPv4 unicast routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, RtnlError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let seq = self.send(
            RouteNetlinkMessage::GetRoute(query),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut routes = Vec::new();
        self.receive(seq, "ip route show", |message| {
            let RouteNetlinkMessage::NewRoute(route) = message else {
                return;
            };
            let mut table = u32::from(route.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            let mut on_link = true;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::MultiPath(_) => on_link = false,
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                    RouteAttribute::Oif(index) => oif = Some(*index),
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN)
                && route.header.kind == RouteType::Unicast
            {
                routes.push(Route {
                    dst,
                    prefix: route.header.destination_prefix_length,
                    oif,
                    on_link,
                });
            }
        })?;
        Ok(routes)
    }
}
