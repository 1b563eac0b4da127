//! The switch itself: one thread, one epoll loop over the control listener,
//! the shared data socket, BESS connections, the tap device and signals.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, accept4, bind, send, sendto, socket,
};
use uml_proto::switch::{ControlRequest, ControlRequestError, PeerAddr, ProtocolVersion};
use zerocopy::IntoBytes;

use crate::batch::{Outgoing, RX_BATCH, RxBatch};
use crate::endpoint::{BoundPath, EndpointError};
use crate::learning::{Learned, Mac, MacTable, is_group};
use crate::ports::{Link, Port, PortId, peer_key, send_addr, source_key};
use tunctl::tun::open_tap;

/// What the command line chose.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name the program was started as, for the start-up lines.
    pub program: String,
    /// The control socket path.
    pub control: PathBuf,
    /// `-compat-v0`: accept v0 requests and use a data socket file.
    pub compat_v0: bool,
    /// The data socket file of `-compat-v0` mode.
    pub data_path: PathBuf,
    /// Flood every frame.
    pub hub: bool,
    /// A tap device to attach as a port.
    pub tap: Option<String>,
    /// Where to listen for BESS (SOCK_SEQPACKET) connections.
    pub bess: Option<PathBuf>,
    /// Detach into the background once the sockets are bound.
    pub daemon: bool,
    /// How long a MAC stays learned after its last frame.
    pub max_age: Duration,
}

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A socket path is taken or unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The tap device could not be attached.
    #[error("tap device '{name}': {source}")]
    Tap {
        /// The device name.
        name: String,
        /// The failure.
        source: tunctl::tun::TunError,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The failure.
        source: io::Error,
    },
}

fn sys(what: &'static str) -> impl Fn(nix::Error) -> SwitchError {
    move |e| SwitchError::Sys {
        what,
        source: e.into(),
    }
}

/// The biggest frame forwarded whole (jumbo frames and tagged full-size frames fit).
const MAX_FRAME: usize = 65535;
/// Frames taken from one socket before the others get a turn.
const BATCH: usize = 64;
/// How often the learning table is aged, as the C switch does.
const AGE_EVERY: Duration = Duration::from_secs(2);

const T_SIGNAL: u64 = 1;
const T_CONTROL: u64 = 2;
const T_DATA: u64 = 3;
const T_BESS: u64 = 4;
const T_STDIN: u64 = 5;
const T_PENDING: u64 = 1 << 32;
const T_PORT: u64 = 2 << 32;
const ID_MASK: u64 = 0xffff_ffff;

/// A control connection whose request has not fully arrived.
struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// A running switch.
pub struct Switch {
    cfg: Config,
    epoll: Epoll,
    signals: SignalFd,
    control: BoundPath,
    data: OwnedFd,
    _data_file: Option<BoundPath>,
    data_addr: PeerAddr,
    bess: Option<BoundPath>,
    pending: HashMap<u32, Pending>,
    next_pending: u32,
    ports: HashMap<PortId, Port>,
    /// Port ids in the order they were made, for flooding.
    order: Vec<PortId>,
    next_port: PortId,
    by_key: HashMap<PeerAddr, PortId>,
    table: MacTable,
    buf: Vec<u8>,
    rx: RxBatch,
    tx: Vec<Outgoing>,
    targets: Vec<PortId>,
    now: Instant,
    last_aged: Instant,
}

impl Switch {
    /// Binds every socket and prints the start-up lines; the switch then runs with [`Switch::run`].
    pub fn start(cfg: Config) -> Result<Self, SwitchError> {
        let mut signals_set = SigSet::empty();
        signals_set.add(Signal::SIGINT);
        signals_set.add(Signal::SIGTERM);
        signals_set.add(Signal::SIGHUP);
        // Taken as events, so that our socket files are removed on the way out.
        signals_set
            .thread_block()
            .map_err(sys("blocking SIGINT, SIGTERM and SIGHUP"))?;
        let signals =
            SignalFd::with_flags(&signals_set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(sys("creating a signalfd"))?;
        let control = BoundPath::bind(&cfg.control, SockType::Stream)?;
        let (data, data_file, data_addr) = if cfg.compat_v0 {
            let file = BoundPath::bind(&cfg.data_path, SockType::Datagram)?;
            let addr = PeerAddr::from_path(&cfg.data_path).map_err(|e| SwitchError::Sys {
                what: "data socket path",
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
            let fd = file.fd.try_clone().map_err(|source| SwitchError::Sys {
                what: "duplicating the data socket",
                source,
            })?;
            (fd, Some(file), addr)
        } else {
            let (fd, addr) = bind_abstract_data_socket()?;
            (fd, None, addr)
        };
        let bess = cfg
            .bess
            .as_deref()
            .map(|path| BoundPath::bind(path, SockType::SeqPacket))
            .transpose()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(sys("creating an epoll instance"))?;
        let add = |fd: std::os::fd::BorrowedFd<'_>, token: u64| {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(sys("watching a socket"))
        };
        add(signals.as_fd(), T_SIGNAL)?;
        add(control.fd.as_fd(), T_CONTROL)?;
        add(data.as_fd(), T_DATA)?;
        if let Some(bess) = &bess {
            add(bess.fd.as_fd(), T_BESS)?;
        }
        let stdin = io::stdin();
        if stdin.is_terminal() {
            add(stdin.as_fd(), T_STDIN)?;
        }
        let mut switch = Self {
            table: MacTable::new(cfg.max_age),
            cfg,
            epoll,
            signals,
            control,
            data,
            _data_file: data_file,
            data_addr,
            bess,
            pending: HashMap::new(),
            next_pending: 0,
            ports: HashMap::new(),
            order: Vec::new(),
            next_port: 1,
            by_key: HashMap::new(),
            buf: vec![0; MAX_FRAME + 1],
            rx: RxBatch::new(),
            tx: Vec::new(),
            targets: Vec::new(),
            now: Instant::now(),
            last_aged: Instant::now(),
        };
        switch.announce();
        if let Some(name) = switch.cfg.tap.clone() {
            let file = open_tap(&name).map_err(|source| SwitchError::Tap { name, source })?;
            let id = switch.add_port(Link::Tap(file));
            log_line(&format!("Attached tap device as port {id}"));
        }
        if switch.cfg.daemon {
            nix::unistd::daemon(false, true).map_err(sys("detaching into the background"))?;
        }
        Ok(switch)
    }

    fn announce(&self) {
        let p = &self.cfg.program;
        if self.cfg.hub {
            log_line(&format!("{p} will be a hub instead of a switch"));
        }
        if self.cfg.compat_v0 {
            log_line("Control protocol 0 compatibility");
        }
        let mut line = if self.cfg.compat_v0 {
            format!(
                "{p} attached to unix sockets '{}' and '{}'",
                self.cfg.control.display(),
                self.cfg.data_path.display()
            )
        } else {
            format!(
                "{p} attached to unix socket '{}'",
                self.cfg.control.display()
            )
        };
        if let Some(tap) = &self.cfg.tap {
            line.push_str(&format!(" tap device '{tap}'"));
        }
        if let Some(bess) = &self.bess {
            line.push_str(&format!(" bess socket '{}'", bess.path().display()));
        }
        log_line(&line);
    }

    /// Serves until SIGINT, SIGTERM, SIGHUP or the end of a terminal's input.
    pub fn run(&mut self) -> Result<(), SwitchError> {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            // Wake at least as often as the table is aged.
            let timeout = EpollTimeout::try_from(AGE_EVERY).unwrap_or(EpollTimeout::NONE);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(sys("waiting for events")(e)),
            };
            for event in &events[..n] {
                let token = event.data();
                let id = (token & ID_MASK) as u32;
                match token & !ID_MASK {
                    T_PENDING => self.pending_ready(id),
                    T_PORT => self.port_ready(id),
                    _ => match token {
                        T_SIGNAL => {
                            if let Ok(Some(info)) = self.signals.read_signal() {
                                log_line(&format!(
                                    "Caught signal {}, cleaning up and exiting",
                                    info.ssi_signo
                                ));
                                return Ok(());
                            }
                        }
                        T_CONTROL => self.accept_control(),
                        T_DATA => self.data_ready(),
                        T_BESS => self.accept_bess(),
                        T_STDIN => {
                            let mut byte = [0u8; 64];
                            if matches!(io::stdin().read(&mut byte), Ok(0) | Err(_))
                                || event.events().contains(EpollFlags::EPOLLHUP)
                            {
                                log_line("EOF on stdin, cleaning up and exiting");
                                return Ok(());
                            }
                        }
                        _ => {}
                    },
                }
            }
            let now = Instant::now();
            if now.duration_since(self.last_aged) >= AGE_EVERY {
                self.table.expire(now);
                self.last_aged = now;
            }
        }
    }

    fn accept_control(&mut self) {
        loop {
            match accept4(
                self.control.fd.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(raw) => {
                    let stream = UnixStream::from(owned(raw));
                    let id = self.next_pending;
                    self.next_pending = self.next_pending.wrapping_add(1);
                    let token = T_PENDING | u64::from(id);
                    if self
                        .epoll
                        .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token))
                        .is_ok()
                    {
                        self.pending.insert(
                            id,
                            Pending {
                                stream,
                                buf: Vec::new(),
                            },
                        );
                    }
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    fn accept_bess(&mut self) {
        let Some(listener) = &self.bess else { return };
        let fd = listener.fd.as_raw_fd();
        loop {
            match accept4(fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(raw) => {
                    let id = self.add_port(Link::Bess(owned(raw)));
                    log_line(&format!("New BESS connection, port {id}"));
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Reads a pending control connection's request and makes it a port.
    fn pending_ready(&mut self, id: u32) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; 256];
        let outcome = match pending.stream.read(&mut chunk) {
            Ok(0) => Err("EOF from new port".to_owned()),
            Ok(n) => {
                pending.buf.extend_from_slice(&chunk[..n]);
                match ControlRequest::decode(&pending.buf) {
                    Ok(request) => Ok(Some(request)),
                    // Wait for the rest of a request split across writes.
                    Err(ControlRequestError::Short { .. }) if pending.buf.len() < 256 => Ok(None),
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
                if let Some(pending) = self.pending.remove(&id) {
                    self.register(pending.stream, &request);
                }
            }
            Err(message) => {
                log_line(&message);
                self.drop_pending(id);
            }
        }
    }

    fn drop_pending(&mut self, id: u32) {
        if let Some(pending) = self.pending.remove(&id) {
            let _ = self.epoll.delete(&pending.stream);
        }
    }

    fn register(&mut self, mut stream: UnixStream, request: &ControlRequest) {
        let _ = self.epoll.delete(&stream);
        if request.version == ProtocolVersion::V0 && !self.cfg.compat_v0 {
            log_line("Bad request: a version 0 client needs -compat-v0");
            return;
        }
        let Some(addr) = send_addr(&request.addr) else {
            log_line("Bad request: unusable data socket address");
            return;
        };
        if request.version != ProtocolVersion::V0 {
            // Exactly the 110 bytes of our data address, as the kernel reads them.
            if stream.write_all(self.data_addr.as_bytes()).is_err() {
                log_line("Sending data socket name");
                return;
            }
        }
        let key = peer_key(&request.addr);
        let id = self.add_port(Link::Daemon {
            addr,
            key,
            control: stream,
        });
        self.by_key.insert(key, id);
        log_line("New connection");
    }

    fn add_port(&mut self, link: Link) -> PortId {
        let id = self.next_port;
        self.next_port += 1;
        let token = T_PORT | u64::from(id);
        let _ = self
            .epoll
            .add(link.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token));
        self.ports.insert(id, Port { id, link });
        self.order.push(id);
        id
    }

    fn close_port(&mut self, id: PortId, message: &str) {
        let Some(port) = self.ports.remove(&id) else {
            return;
        };
        if let Link::Daemon { key, .. } = &port.link {
            if self.by_key.get(key) == Some(&id) {
                self.by_key.remove(key);
            }
        }
        let _ = self.epoll.delete(port.link.fd());
        self.order.retain(|&p| p != id);
        self.table.forget_port(id);
        log_line(message);
    }

    fn port_ready(&mut self, id: PortId) {
        let Some(port) = self.ports.get(&id) else {
            return;
        };
        if let Link::Daemon { control, .. } = &port.link {
            // Nothing more is expected; a libvdeplug description may still
            // trickle in and is ignored. Only the end of the connection matters.
            let mut scratch = [0u8; 256];
            match nix::unistd::read(control, &mut scratch) {
                Ok(0) => self.close_port(id, "Disconnect"),
                Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => self.close_port(id, "Reading request"),
            }
            return;
        }
        // The buffer is lent out while the frame is routed and sent.
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..BATCH {
            let Some(port) = self.ports.get(&id) else {
                break;
            };
            match nix::unistd::read(port.link.fd(), &mut buf) {
                Ok(0) => {
                    self.close_port(id, "Disconnect");
                    break;
                }
                Ok(n) => self.forward(id, &buf[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.close_port(id, "Disconnect");
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Learns a frame's source and lists the ports it must go to in `self.targets`.
    fn route(&mut self, from: PortId, header: &[u8]) {
        self.targets.clear();
        let (Some(dst), Some(src)) = (mac_at(header, 0), mac_at(header, 6)) else {
            return;
        };
        if !is_group(&src) {
            match self.table.learn(src, from, self.now) {
                Learned::Known => {}
                Learned::New => log_line(&format!(" Addr: {} New port {from}", mac_text(&src))),
                Learned::Moved { from: old } => log_line(&format!(
                    " Addr: {} New port {from} old port {old}",
                    mac_text(&src)
                )),
            }
        }
        let known = if self.cfg.hub || is_group(&dst) {
            None
        } else {
            self.table.lookup(&dst)
        };
        match known {
            // Never back out of the port it came in on.
            Some(to) if to == from => {}
            Some(to) => self.targets.push(to),
            None => self
                .targets
                .extend(self.order.iter().rev().copied().filter(|&to| to != from)),
        }
    }

    /// Learns a frame from a BESS or tap port and sends it where it belongs.
    fn forward(&mut self, from: PortId, frame: &[u8]) {
        // Shorter than an Ethernet header, or cut by our buffer: not a frame to pass on.
        if !(14..=MAX_FRAME).contains(&frame.len()) {
            return;
        }
        self.now = Instant::now();
        self.route(from, &frame[..12]);
        let mut dead = Vec::new();
        for &to in &self.targets {
            if let Some(port) = self.ports.get(&to) {
                if !deliver(&self.data, port, frame) {
                    dead.push(to);
                }
            }
        }
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Takes up to a batch of frames from the shared data socket in one system
    /// call, routes them, and sends those for daemon ports in one more.
    fn data_ready(&mut self) {
        let fd = self.data.as_raw_fd();
        for _ in 0..BATCH {
            let received = self.rx.receive(fd);
            if received.is_empty() {
                return;
            }
            self.now = Instant::now();
            let mut dead = Vec::new();
            for &(slot, len, addr) in &received {
                // Frames from addresses that never registered are dropped, and
                // so are runts and frames our buffer cut.
                let Some(from) = source_key(&addr).and_then(|k| self.by_key.get(&k).copied())
                else {
                    continue;
                };
                if !(14..=MAX_FRAME).contains(&len) {
                    continue;
                }
                let mut header = [0u8; 12];
                header.copy_from_slice(self.rx.frame(slot, 12));
                self.route(from, &header);
                for &to in &self.targets {
                    match self.ports.get(&to) {
                        Some(Port {
                            link: Link::Daemon { addr, .. },
                            ..
                        }) => {
                            self.tx.push(Outgoing {
                                slot,
                                len,
                                addr: *addr,
                            });
                        }
                        Some(port) if !deliver(&self.data, port, self.rx.frame(slot, len)) => {
                            dead.push(to);
                        }
                        _ => {}
                    }
                }
            }
            // A copy whose port's queue is full is dropped for that port only.
            self.rx.send(fd, &self.tx);
            self.tx.clear();
            for id in dead {
                self.close_port(id, "Disconnect");
            }
            if received.len() < RX_BATCH {
                return;
            }
        }
    }
}

fn mac_at(header: &[u8], at: usize) -> Option<Mac> {
    header.get(at..at + 6)?.try_into().ok()
}

/// Sends one frame to a port without waiting; a full queue drops the frame for
/// that port only. Returns false when the port is gone for good.
fn deliver(data: &OwnedFd, port: &Port, frame: &[u8]) -> bool {
    match &port.link {
        Link::Daemon { addr, .. } => {
            let _ = sendto(data.as_raw_fd(), frame, addr, MsgFlags::MSG_DONTWAIT);
            true
        }
        Link::Bess(fd) => !matches!(
            send(
                fd.as_raw_fd(),
                frame,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL
            ),
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
        ),
        Link::Tap(file) => {
            let _ = (&*file).write(frame);
            true
        }
    }
}

/// Prints a log line: flushed at once, also into a pipe or a file; a closed
/// stdout is ignored.
fn log_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn mac_text(mac: &Mac) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Our data socket: an abstract name built like the kernel's (a zero byte, pid,
/// microseconds), bound with the full 110-byte length.
fn bind_abstract_data_socket() -> Result<(OwnedFd, PeerAddr), SwitchError> {
    for attempt in 0..16 {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(sys("creating the data socket"))?;
        let usecs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros() as i32)
            .wrapping_add(attempt);
        let addr = PeerAddr::kernel_style(std::process::id() as i32, usecs);
        let name = addr.abstract_name().unwrap_or_default();
        let unix = UnixAddr::new_abstract(name).map_err(sys("naming the data socket"))?;
        match bind(fd.as_raw_fd(), &unix) {
            Ok(()) => return Ok((fd, addr)),
            Err(Errno::EADDRINUSE) => continue,
            Err(e) => return Err(sys("binding the data socket")(e)),
        }
    }
    Err(SwitchError::Sys {
        what: "binding the data socket",
        source: io::Error::from(io::ErrorKind::AddrInUse),
    })
}

fn owned(raw: RawFd) -> OwnedFd {
    // accept4 hands us a fresh descriptor nobody else owns.
    #[allow(unsafe_code)]
    // SAFETY: `raw` was just returned by accept4 and is owned by no other object.
    unsafe {
        OwnedFd::from_raw_fd(raw)
    }
}
