//! The control plane: connections on the control and BESS listeners, the
//! requests that make them ports, and the ports' lifetime.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::UnixAddr;
use uml_host::fd::accept;
use uml_proto::switch::{ControlRequest, ControlRequestError, PeerAddr, ProtocolVersion};
use zerocopy::IntoBytes;

use crate::endpoint::EndpointKind;
use crate::event_loop::{Token, queued_socket};
use crate::log::log_line;
use crate::owner::{Examined, Owner, examine, peer_uid};
use crate::ports::{Link, PortId, peer_key, send_addr};
use crate::quota::{Over, Refusal};
use crate::switch::Switch;

/// A request longer than this without decoding is refused.
const MAX_REQUEST: usize = 256;
/// A connection whose request has not arrived this long after it was
/// accepted is closed: a guest sends its request at once, and a silent
/// connection holds a descriptor.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// While out of descriptors, how often accepting is tried again even if none
/// of ours was closed (another process may have freed some of the system's).
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// Lines about other users' connections and ports printed at most each second.
pub(crate) const CLIENT_LINES_PER_SECOND: u32 = 20;

/// Connections accepted from one listener per wake-up.
const ACCEPTS_PER_TURN: usize = 64;

/// A control connection whose request has not fully arrived.
#[derive(Debug)]
pub(crate) struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    accepted: Instant,
    /// The `--endpoint` it came in on (none: the main control socket).
    endpoint: Option<usize>,
    /// The connecting user, for the per-user limits.
    uid: u32,
}

/// Control connections waiting for their request, by number.
#[derive(Debug, Default)]
pub(crate) struct PendingRequests {
    waiting: HashMap<u32, Pending>,
    next: u32,
}

/// The listeners' state when descriptors run out.
///
/// `accept4` failing with EMFILE leaves the connection queued, so a
/// level-triggered listener would wake the loop again at once, for ever. The
/// listeners are unwatched instead until one of our descriptors is closed or
/// [`ACCEPT_RETRY`] passes, and the shortage is logged once per episode.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// When the listeners were unwatched, if they are.
    paused_since: Option<Instant>,
    /// One of our descriptors was closed since.
    freed: bool,
    /// The shortage was logged and no accept has succeeded since.
    logged: bool,
}

impl AcceptBackoff {
    /// Whether the listeners are unwatched.
    pub(crate) fn paused(&self) -> bool {
        self.paused_since.is_some()
    }
}

/// Whether an `accept4` error means "out of descriptors or memory": try later.
fn exhausted(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

impl Switch {
    /// Accepts every waiting control connection; each waits for its request.
    pub(crate) fn accept_control(&mut self) {
        self.accept_control_at(None);
    }

    /// An `--endpoint` listener is ready: its connections are accepted as
    /// the main listener's are, and remember where they came in.
    pub(crate) fn endpoint_ready(&mut self, index: u32) {
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        match self.fabric.endpoints.get(index).map(|e| &e.spec.kind) {
            Some(EndpointKind::Unix(_)) => self.accept_control_at(Some(index)),
            Some(EndpointKind::Bess(_)) => self.accept_bess_at(Some(index)),
            Some(EndpointKind::Tap(_)) | None => {}
        }
    }

    /// The listening socket of the main control socket, or of an endpoint.
    fn listener_fd(&self, endpoint: Option<usize>) -> Option<&std::os::fd::OwnedFd> {
        match endpoint {
            None => Some(&self.control.fd),
            Some(i) => Some(&self.fabric.endpoints.get(i)?.listener.as_ref()?.fd),
        }
    }

    fn accept_control_at(&mut self, endpoint: Option<usize>) {
        // Bounded, so that a flood of connections (each refused and closed at
        // once) cannot keep the loop from the frames; the rest wait in the
        // listen queue and wake the loop again.
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener_fd(endpoint) else {
                return;
            };
            match accept(listener, true) {
                Ok(fd) => {
                    let stream = UnixStream::from(fd);
                    // Closed at once when refused: the user's own waiting
                    // connections are what keeps theirs out.
                    let Some(uid) = peer_uid(&stream) else {
                        self.refused(
                            Refusal::Waiting,
                            "Refused a connection: its credentials are unknown",
                        );
                        continue;
                    };
                    let waiting = self
                        .pending
                        .waiting
                        .values()
                        .filter(|p| p.uid == uid)
                        .count();
                    if let Err(over) = self.quota.may_wait(uid, waiting, self.held_by_others()) {
                        let why = match over {
                            Over::User(n) => {
                                format!("uid {uid} has {n} connections that sent no request")
                            }
                            over => self.over_all(over),
                        };
                        self.refused(Refusal::Waiting, &format!("Refused a connection: {why}"));
                        continue;
                    }
                    let id = self.pending.next;
                    self.pending.next = self.pending.next.wrapping_add(1);
                    let token = Token::Pending(id);
                    if self
                        .epoll
                        .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token.into()))
                        .is_ok()
                    {
                        self.pending.waiting.insert(
                            id,
                            Pending {
                                stream,
                                buf: Vec::new(),
                                accepted: Instant::now(),
                                endpoint,
                                uid,
                            },
                        );
                    }
                    self.backoff.logged = false;
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(e) if exhausted(e) => return self.pause_listeners(e),
                Err(_) => return,
            }
        }
    }

    /// Accepts every waiting BESS connection; each is a port at once.
    pub(crate) fn accept_bess(&mut self) {
        self.accept_bess_at(None);
    }

    fn accept_bess_at(&mut self, endpoint: Option<usize>) {
        for _ in 0..ACCEPTS_PER_TURN {
            let listener = match endpoint {
                None => self.bess.as_ref(),
                Some(i) => self
                    .fabric
                    .endpoints
                    .get(i)
                    .and_then(|e| e.listener.as_ref()),
            };
            let Some(listener) = listener else { return };
            match accept(&listener.fd, true) {
                Ok(fd) => {
                    let Some(uid) = peer_uid(&fd) else {
                        self.refused(
                            Refusal::BessPort,
                            "Refused a BESS connection: its credentials are unknown",
                        );
                        continue;
                    };
                    let open = self.ports.owned_by(uid);
                    if let Err(over) = self.quota.may_open(uid, open, self.held_by_others(), 1) {
                        let why = self.over_ports(uid, over);
                        self.refused(
                            Refusal::BessPort,
                            &format!("Refused a BESS connection: {why}"),
                        );
                        continue;
                    }
                    let id = self.add_port(Link::Bess(fd));
                    self.set_owner(id, uid);
                    self.apply_endpoint(id, endpoint);
                    self.log_client(Some(uid), &format!("New BESS connection, port {id}"));
                    self.backoff.logged = false;
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(e) if exhausted(e) => return self.pause_listeners(e),
                Err(_) => return,
            }
        }
    }

    /// Reads a pending control connection's request and makes it a port.
    pub(crate) fn pending_ready(&mut self, id: u32) {
        let Some(pending) = self.pending.waiting.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; MAX_REQUEST];
        let outcome = match pending.stream.read(&mut chunk) {
            Ok(0) => Err("EOF from new port".to_owned()),
            Ok(n) => {
                pending.buf.extend_from_slice(&chunk[..n]);
                match ControlRequest::decode(&pending.buf) {
                    Ok(request) => Ok(Some(request)),
                    // Wait for the rest of a request split across writes.
                    Err(ControlRequestError::Short { .. }) if pending.buf.len() < MAX_REQUEST => {
                        Ok(None)
                    }
                    Err(ControlRequestError::UnsupportedVersion(v)) => Err(format!(
                        "Request for a version {v} port, which this uml_switch doesn't support"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(_) => Err("Reading request".to_owned()),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(request)) => {
                if let Some(pending) = self.pending.waiting.remove(&id) {
                    // A refused request's connection is closed here, an
                    // accepted one becomes a port: either way, accepting is
                    // worth another try.
                    self.backoff.freed = true;
                    self.register(pending.stream, &request, pending.endpoint);
                }
            }
            Err(message) => {
                let pending = self.pending.waiting.remove(&id);
                self.log_client(pending.as_ref().map(|p| p.uid), &message);
                if let Some(pending) = pending {
                    let _ = self.epoll.delete(&pending.stream);
                    self.backoff.freed = true;
                }
            }
        }
    }

    /// Closes the connections that have not sent their request in time.
    pub(crate) fn expire_pending(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .pending
            .waiting
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.accepted) >= REQUEST_TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        if late.is_empty() {
            return;
        }
        for id in &late {
            if let Some(pending) = self.pending.waiting.remove(id) {
                let _ = self.epoll.delete(&pending.stream);
            }
        }
        self.backoff.freed = true;
        log_line(&format!(
            "Closed {} connection(s) that sent no request in {} s",
            late.len(),
            REQUEST_TIMEOUT.as_secs()
        ));
    }

    /// Stops watching the listeners: out of descriptors (`e`), nothing can be
    /// accepted, and a queued connection would wake the loop at once, for ever.
    fn pause_listeners(&mut self, e: Errno) {
        if self.backoff.paused() {
            return;
        }
        let _ = self.epoll.delete(self.control.fd.as_fd());
        if let Some(bess) = &self.bess {
            let _ = self.epoll.delete(bess.fd.as_fd());
        }
        for endpoint in &self.fabric.endpoints {
            if let Some(listener) = &endpoint.listener {
                let _ = self.epoll.delete(listener.fd.as_fd());
            }
        }
        self.backoff.paused_since = Some(Instant::now());
        self.backoff.freed = false;
        if !self.backoff.logged {
            self.backoff.logged = true;
            log_line(&format!(
                "Accepting a connection: {}; new connections wait until descriptors are free",
                e.desc()
            ));
        }
    }

    /// Watches the listeners again once a descriptor of ours was closed or
    /// the retry interval has passed; the next accept tells whether it helped.
    pub(crate) fn resume_listeners(&mut self, now: Instant) {
        let Some(since) = self.backoff.paused_since else {
            return;
        };
        if !self.backoff.freed && now.saturating_duration_since(since) < ACCEPT_RETRY {
            return;
        }
        self.backoff.paused_since = None;
        let events = |token: Token| EpollEvent::new(EpollFlags::EPOLLIN, token.into());
        let _ = self
            .epoll
            .add(self.control.fd.as_fd(), events(Token::Control));
        if let Some(bess) = &self.bess {
            let _ = self.epoll.add(bess.fd.as_fd(), events(Token::Bess));
        }
        for (i, endpoint) in self.fabric.endpoints.iter().enumerate() {
            if let (Some(listener), Ok(i)) = (&endpoint.listener, u32::try_from(i)) {
                let _ = self
                    .epoll
                    .add(listener.fd.as_fd(), events(Token::Endpoint(i)));
            }
        }
    }

    /// Answers a decoded request and makes its connection a daemon port.
    fn register(
        &mut self,
        mut stream: UnixStream,
        request: &ControlRequest,
        endpoint: Option<usize>,
    ) {
        let _ = self.epoll.delete(&stream);
        let peer = peer_uid(&stream);
        if request.version == ProtocolVersion::V0 && self.cfg.compat_v0_data.is_none() {
            self.log_client(peer, "Bad request: a version 0 client needs -compat-v0");
            return;
        }
        let Some(uid) = peer else {
            log_line("Bad request: the client's credentials are unknown");
            return;
        };
        let open = self.ports.owned_by(uid);
        // The port's socket and the control connection.
        if let Err(over) = self.quota.may_open(uid, open, self.held_by_others(), 2) {
            let why = self.over_ports(uid, over);
            self.refused(Refusal::Port, &format!("Bad request: {why}"));
            return;
        }
        let key = peer_key(&request.addr);
        // One port per client data socket: a second would send it every
        // frame twice (and, for v0 clients, divert the first one's frames).
        if self.ports.by_source(&key).is_some() {
            self.log_client(
                Some(uid),
                "Bad request: that data socket address is already a port's",
            );
            return;
        }
        let examined = match self.check_owner(&stream, &request.addr) {
            Ok(examined) => examined,
            Err(why) => {
                self.log_client(Some(uid), &format!("Bad request: {why}"));
                return;
            }
        };
        // A filesystem data socket is reached through the descriptor that
        // was checked, not through a path someone could swap meanwhile.
        let addr = match examined.pinned_path() {
            Some(path) => UnixAddr::new(&path).ok(),
            None => send_addr(&request.addr),
        };
        let Some(addr) = addr else {
            self.log_client(Some(uid), "Bad request: unusable data socket address");
            return;
        };
        let v0 = request.version == ProtocolVersion::V0;
        let socket = match self.namer.open(&addr, !v0) {
            Ok(socket) => socket,
            Err(e) => {
                self.log_client(Some(uid), &format!("Bad request: {e}"));
                return;
            }
        };
        // Connected now: the pin has done its work.
        drop(examined);
        if let Some(name) = &socket.name {
            // Exactly the 110 bytes of the port's data address, as the kernel reads them.
            if stream.write_all(name.as_bytes()).is_err() {
                self.log_client(Some(uid), "Sending data socket name");
                return;
            }
        }
        let id = self.add_port(Link::Daemon {
            data: socket.fd,
            key,
            shared: v0,
            control: stream,
        });
        self.set_owner(id, uid);
        self.apply_endpoint(id, endpoint);
        self.log_client(Some(uid), "New connection");
    }

    /// Whether the client at the other end of `stream` may have a port at
    /// `addr`: a datagram socket must be bound there, and belong to the
    /// client's user unless that is root. Where the kernel cannot tell an
    /// abstract socket's owner, the request is served and that logged once.
    fn check_owner(&mut self, stream: &UnixStream, addr: &PeerAddr) -> Result<Examined, String> {
        let peer = peer_uid(stream).ok_or("the client's credentials are unknown")?;
        let examined = examine(addr).map_err(|e| e.to_string())?;
        match &examined.owner {
            Owner::Uid(owner) if *owner == peer || peer == 0 => Ok(examined),
            Owner::Uid(owner) => Err(format!(
                "the data socket belongs to uid {owner}, not to the client's uid {peer}"
            )),
            Owner::Unknown(why) => {
                if !self.owner_unknown_logged {
                    self.owner_unknown_logged = true;
                    log_line(&format!(
                        "Cannot tell who owns abstract data sockets ({why}); serving requests unchecked"
                    ));
                }
                Ok(examined)
            }
        }
    }

    /// Records whose guest port `id` serves.
    fn set_owner(&mut self, id: PortId, uid: u32) {
        if let Some(port) = self.ports.get_mut(id) {
            port.owner = Some(uid);
        }
    }

    /// Descriptors that the ports and waiting connections of users held to
    /// the limits take: two for a daemon port (its socket and its control
    /// connection), one for a BESS port or a waiting connection.
    fn held_by_others(&self) -> usize {
        let ports: usize = self
            .ports
            .iter()
            .filter(|p| p.owner.is_some_and(|uid| self.quota.limited(uid)))
            .map(|p| match p.link {
                Link::Daemon { .. } => 2,
                _ => 1,
            })
            .sum();
        let waiting = self
            .pending
            .waiting
            .values()
            .filter(|p| self.quota.limited(p.uid))
            .count();
        ports + waiting
    }

    /// Why a port for `uid` is refused.
    fn over_ports(&self, uid: u32, over: Over) -> String {
        match over {
            Over::User(n) => format!("uid {uid} has {n} ports (--max-ports-per-user)"),
            over => self.over_all(over),
        }
    }

    /// Why a request is refused when all other users hold their share.
    fn over_all(&self, over: Over) -> String {
        match over {
            Over::All { held, budget } => format!(
                "users other than root and uid {} hold {held} of the {budget} descriptors they may",
                self.quota.own_uid()
            ),
            Over::User(n) => format!("{n} held"),
        }
    }

    /// Logs a refusal by the per-user limits, at most one a second.
    fn refused(&mut self, kind: Refusal, message: &str) {
        if self.quota.log_refusal(kind, Instant::now()) {
            log_line(message);
        }
    }

    /// Gives a new port the VLAN and emulation of the endpoint it came in on.
    fn apply_endpoint(&mut self, id: PortId, endpoint: Option<usize>) {
        let Some(template) = endpoint
            .and_then(|i| self.fabric.endpoints.get(i))
            .map(|e| e.spec.template.clone())
        else {
            return;
        };
        self.apply_template(id, &template);
    }

    /// Makes `link` a port and watches its descriptors.
    pub(crate) fn add_port(&mut self, link: Link) -> PortId {
        let id = self.ports.insert(link);
        if let Some(port) = self.ports.get(id).filter(|p| p.link.watched()) {
            let _ = self.epoll.add(
                port.link.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, Token::Port(id).into()),
            );
            // A daemon port's data socket is watched apart, as its backlog
            // and holding back will change it.
            if let (Link::Daemon { .. }, Some((data, token, base))) =
                (&port.link, queued_socket(&port.link, id))
            {
                let _ = self.epoll.add(data, EpollEvent::new(base, token.into()));
            }
        }
        self.port_opened(id); // managed switch: described, announced
        id
    }

    /// Closes a port: unwatched, forgotten by the learning table, logged.
    pub(crate) fn close_port(&mut self, id: PortId, message: &str) {
        self.release_holds(id, false);
        let Some(mut port) = self.ports.remove(id) else {
            return;
        };
        if port.link.watched() {
            let _ = self.epoll.delete(port.link.fd());
        }
        if let Link::Daemon { data, .. } = &port.link {
            let _ = self.epoll.delete(data);
        }
        // What waited for it is lost with it.
        port.tx.queue_full += port.backlog.clear(&mut self.sending.budget) as u64;
        self.backoff.freed = true;
        self.table.forget_port(id);
        if port.fabric.is_some() {
            self.refresh_active();
        }
        self.port_closed(&port, message); // managed switch: counts kept, announced
        self.log_client(port.owner, message);
    }

    /// Logs a line about a client's connection or port. Those of users held
    /// to the limits are printed at most [`CLIENT_LINES_PER_SECOND`] a
    /// second, all such users together (the rest are counted, and told at
    /// the next tick): opening and closing ports in a loop must not fill the
    /// log. Root's and the switch's own user's lines are always printed.
    pub(crate) fn log_client(&mut self, uid: Option<u32>, line: &str) {
        if uid.is_some_and(|uid| self.quota.limited(uid)) && !self.client_lines.allow(self.now) {
            return;
        }
        log_line(line);
    }
}
