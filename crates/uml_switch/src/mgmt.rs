//! The management socket: one request per line, one JSON reply per line
//! (schema version [`SCHEMA_VERSION`], documented in the crate README), the
//! event stream, captures, and the state they report (port descriptions,
//! counters of closed ports, the recent rate).
//!
//! Requests are words (`port close 3`) or a JSON array of strings
//! (`["capture","start","file","/tmp/a b.pcapng"]`). Families of commands
//! (`port set N KEY VALUE`) take new keys without a new schema version.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{SockType, getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{Mode as FileMode, umask};
use serde_json::{Value, json};
use uml_host::fd::accept;
use uml_host::socket_file::{BoundPath, SocketFile, SocketFileError};
use uml_proto::ethernet::MacAddr;
use uml_proto::switch::PeerAddr;

use crate::capture::{Captures, Ended, IfaceName, Rotate, Spec, Target};
use crate::counters::{RateWindow, RxCounters, TxCounters};
use crate::event_loop::Token;
use crate::events::{Event, EventLine};
use crate::learning::MacTable;
use crate::log::log_line;
use crate::ports::{Link, Port, PortId};
use crate::switch::Switch;

/// The version of the request and reply schema; every reply and event carries it.
pub const SCHEMA_VERSION: u32 = 1;
/// A request line longer than this is answered with an error and the connection closed.
pub const MAX_LINE: usize = 64 << 10;
/// Replies or events a client has not read beyond this close its connection.
const OUT_LIMIT: usize = 1 << 20;
/// Management connections served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 64;
/// While out of descriptors, how long the listener rests.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// The least time between two drop reports for one port and reason.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// What the command line chose for management and capture.
#[derive(Debug, Clone, Default)]
pub struct ManagedConfig {
    /// The management socket's path.
    pub mgmt: Option<PathBuf>,
    /// Capture from the start into this file, FIFO or `-` (standard output).
    pub pcap: Option<PathBuf>,
    /// Rotation of the capture file.
    pub pcap_rotate: Option<Rotate>,
    /// Capture the copies sent too.
    pub pcap_outbound: bool,
}

/// The listening management socket: bound by us, or handed over (socket activation).
pub struct MgmtListener {
    /// The listening socket, non-blocking.
    pub fd: OwnedFd,
    /// The socket file, removed at exit when we bound it.
    _file: Option<SocketFile>,
}

impl MgmtListener {
    /// Binds the management socket at `path`, as the control socket is
    /// (a live server's socket is refused, a stale one replaced), readable
    /// and writable by its owner only: management can close ports and
    /// write files.
    pub fn bind(path: &Path) -> Result<Self, SocketFileError> {
        // Set before bind, so that no client can connect through a wider mode first.
        let old = umask(FileMode::from_bits_truncate(0o177));
        let bound = BoundPath::bind(path, SockType::Stream);
        umask(old);
        let (fd, file) = bound?.into_parts();
        Ok(Self {
            fd,
            _file: Some(file),
        })
    }

    /// A listener someone else made (systemd's socket activation); must be non-blocking.
    pub fn from_listening(fd: OwnedFd) -> Self {
        Self { fd, _file: None }
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Requests,
    Events,
    Capture(u32),
}

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    mode: Mode,
    /// Watched for writability (replies wait in `out`).
    writing: bool,
}

/// What a port is, for the management socket and capture names.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// `daemon:3`, `bess:/tmp/sw.bess#2`, `tap:tap0`.
    pub name: String,
    /// `daemon`, `bess` or `tap`.
    pub transport: &'static str,
    /// Who is at the other end.
    pub peer: String,
    /// Set with `port set N description TEXT`.
    pub description: String,
    /// When it opened.
    pub opened: Instant,
}

/// The management state the switch carries.
pub struct Managed {
    pub(crate) listener: Option<MgmtListener>,
    conns: HashMap<u32, Conn>,
    next_conn: u32,
    paused_since: Option<Instant>,
    /// Every running capture.
    pub(crate) captures: Captures,
    pub(crate) port_info: HashMap<PortId, PortInfo>,
    /// Frames from senders that are no port.
    pub(crate) unregistered: u64,
    /// Counts of ports since closed, for the totals.
    retired_rx: RxCounters,
    retired_tx: TxCounters,
    started: Instant,
    rate: RateWindow,
    /// Drop counts last reported, by port (0: unregistered) and reason.
    reported: HashMap<(PortId, &'static str), u64>,
    last_drop_report: Instant,
}

impl Managed {
    /// Management state, listening on `listener` if there is one.
    pub fn new(listener: Option<MgmtListener>) -> Self {
        let now = Instant::now();
        Self {
            listener,
            conns: HashMap::new(),
            next_conn: 0,
            paused_since: None,
            captures: Captures::default(),
            port_info: HashMap::new(),
            unregistered: 0,
            retired_rx: RxCounters::default(),
            retired_tx: TxCounters::default(),
            started: now,
            rate: RateWindow::new(),
            reported: HashMap::new(),
            last_drop_report: now,
        }
    }

    /// Whether anyone listens to events: none are built otherwise.
    #[inline]
    pub fn listening(&self) -> bool {
        self.conns.values().any(|c| c.mode == Mode::Events)
    }

    /// How long the loop may sleep: briefly while capture output waits.
    pub fn wake_within(&self) -> Option<Duration> {
        (self.captures.backlog()).then_some(Duration::from_millis(20))
    }
}

/// The seconds since the epoch, as captures and events stamp them.
pub fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn reply_ok(result: Value) -> Value {
    json!({"v": SCHEMA_VERSION, "ok": true, "result": result})
}

fn reply_err(code: &str, message: impl Into<String>) -> Value {
    json!({"v": SCHEMA_VERSION, "ok": false, "error": {"code": code, "message": message.into()}})
}

/// How a port is described: its name, transport and peer.
fn describe(id: PortId, link: &Link, bess: Option<&Path>, tap: Option<&str>) -> PortInfo {
    let (transport, name, peer) = match link {
        Link::Daemon { key, control, .. } => {
            let mut peer = peer_of_addr(key);
            if let Ok(cred) = getsockopt(control, PeerCredentials) {
                peer.push_str(&format!(" (pid {} uid {})", cred.pid(), cred.uid()));
            }
            ("daemon", format!("daemon:{id}"), peer)
        }
        Link::Bess(fd) => {
            let peer = getsockopt(fd, PeerCredentials).map_or_else(
                |_| "unknown".to_owned(),
                |c| format!("pid {} uid {}", c.pid(), c.uid()),
            );
            let path = bess.map_or_else(String::new, |p| p.display().to_string());
            ("bess", format!("bess:{path}#{id}"), peer)
        }
        Link::Vxlan { dest, header, .. } => (
            "vxlan",
            format!("vxlan:{dest}#{id}"),
            format!("{dest} vni {}", header.vni()),
        ),
        Link::Tap(_) => {
            let dev = tap.unwrap_or_default();
            ("tap", format!("tap:{dev}#{id}"), dev.to_owned())
        }
    };
    PortInfo {
        name,
        transport,
        peer,
        description: String::new(),
        opened: Instant::now(),
    }
}

/// A daemon client's data address as people read it.
fn peer_of_addr(addr: &PeerAddr) -> String {
    if let Some(path) = addr.filesystem_path() {
        return path.display().to_string();
    }
    if let Some(name) = addr.kernel_name() {
        return format!("@uml pid {} usecs {}", name.pid.get(), name.usecs.get());
    }
    format!("{addr:?}")
}

/// A port's pcapng interface: its name, and its peer and learned MACs.
fn iface_name(info: &HashMap<PortId, PortInfo>, table: &MacTable, port: PortId) -> IfaceName {
    let macs: Vec<String> = table.on_port(port).map(|m| m.to_string()).collect();
    match info.get(&port) {
        Some(i) => IfaceName {
            name: i.name.clone(),
            description: format!("{} peer {} mac {}", i.name, i.peer, macs.join(",")),
        },
        None => IfaceName {
            name: format!("port:{port}"),
            description: String::new(),
        },
    }
}

/// Parses a request line into words.
fn words(line: &str) -> Result<Vec<String>, String> {
    let line = line.trim();
    if line.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(line)
            .map_err(|e| format!("a JSON request is an array of strings: {e}"));
    }
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

fn port_arg(word: Option<&String>) -> Result<PortId, Value> {
    let word = word.ok_or_else(|| reply_err("bad-argument", "a port number is missing"))?;
    word.parse()
        .map_err(|_| reply_err("bad-argument", format!("'{word}' is not a port number")))
}

impl Switch {
    /// The management listener is readable: accepts every waiting client.
    pub(crate) fn accept_mgmt(&mut self) {
        loop {
            let Some(listener) = &self.managed.listener else {
                return;
            };
            match accept(&listener.fd, true) {
                Ok(fd) => {
                    let mut stream = UnixStream::from(fd);
                    if self.managed.conns.len() >= MAX_CLIENTS {
                        let line = reply_err(
                            "too-many-clients",
                            format!("{MAX_CLIENTS} management clients are connected already"),
                        );
                        let _ = stream.write_all(format!("{line}\n").as_bytes());
                        continue;
                    }
                    let id = self.managed.next_conn;
                    self.managed.next_conn = self.managed.next_conn.wrapping_add(1);
                    let event = EpollEvent::new(EpollFlags::EPOLLIN, Token::MgmtConn(id).into());
                    if self.epoll.add(&stream, event).is_ok() {
                        self.managed.conns.insert(
                            id,
                            Conn {
                                stream,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                                mode: Mode::Requests,
                                writing: false,
                            },
                        );
                    }
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
                    // A level-triggered listener would wake us at once, for ever.
                    let _ = self.epoll.delete(listener.fd.as_fd());
                    self.managed.paused_since = Some(Instant::now());
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// A management connection is readable or writable.
    pub(crate) fn mgmt_ready(&mut self, id: u32, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.mgmt_flush(id);
        }
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let Some(conn) = self.managed.conns.get_mut(&id) else {
                return;
            };
            match conn.stream.read(&mut chunk) {
                Ok(0) => return self.close_conn(id),
                Ok(n) => {
                    if conn.mode != Mode::Requests {
                        // Nothing more is expected on a stream; only its end matters.
                        continue;
                    }
                    conn.inbuf.extend_from_slice(&chunk[..n]);
                    while let Some(pos) = self
                        .managed
                        .conns
                        .get(&id)
                        .and_then(|c| c.inbuf.iter().position(|&b| b == b'\n'))
                    {
                        let Some(conn) = self.managed.conns.get_mut(&id) else {
                            return;
                        };
                        let line: Vec<u8> = conn.inbuf.drain(..=pos).collect();
                        self.request(id, &line[..pos]);
                        if self
                            .managed
                            .conns
                            .get(&id)
                            .is_none_or(|c| c.mode != Mode::Requests)
                        {
                            break;
                        }
                    }
                    let Some(conn) = self.managed.conns.get(&id) else {
                        return;
                    };
                    if conn.mode == Mode::Requests && conn.inbuf.len() > MAX_LINE {
                        let line = reply_err(
                            "line-too-long",
                            format!("a request line holds at most {MAX_LINE} bytes"),
                        );
                        self.send_line(id, &line);
                        return self.close_conn(id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.close_conn(id),
            }
        }
    }

    fn close_conn(&mut self, id: u32) {
        let Some(conn) = self.managed.conns.remove(&id) else {
            return;
        };
        let _ = self.epoll.delete(&conn.stream);
        if let Mode::Capture(capture) = conn.mode {
            self.stop_capture(capture, "the client went away");
        }
    }

    /// Queues a line for a connection and writes what it can; a client that
    /// lets [`OUT_LIMIT`] bytes pile up is disconnected.
    fn send_line(&mut self, id: u32, value: &impl serde::Serialize) {
        let Some(conn) = self.managed.conns.get_mut(&id) else {
            return;
        };
        if serde_json::to_writer(&mut conn.out, value).is_err() {
            return;
        }
        conn.out.push(b'\n');
        if conn.out.len() > OUT_LIMIT {
            log_line("Closed a management client that does not read");
            return self.close_conn(id);
        }
        self.mgmt_flush(id);
    }

    fn mgmt_flush(&mut self, id: u32) {
        let Some(conn) = self.managed.conns.get_mut(&id) else {
            return;
        };
        let mut done = 0;
        let mut failed = false;
        while done < conn.out.len() {
            match conn.stream.write(&conn.out[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        conn.out.drain(..done);
        if failed {
            return self.close_conn(id);
        }
        let want = !conn.out.is_empty();
        if want != conn.writing {
            conn.writing = want;
            let flags = if want {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut event = EpollEvent::new(flags, Token::MgmtConn(id).into());
            let _ = self.epoll.modify(&conn.stream, &mut event);
        }
    }

    /// Answers one request line.
    fn request(&mut self, id: u32, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            let reply = reply_err("bad-request", "a request is UTF-8 text");
            return self.send_line(id, &reply);
        };
        let args = match words(text) {
            Ok(args) => args,
            Err(why) => return self.send_line(id, &reply_err("bad-request", why)),
        };
        if args.is_empty() {
            return;
        }
        let reply = match self.command(id, &args) {
            Ok(Some(result)) => reply_ok(result),
            Ok(None) => return,
            Err(reply) => reply,
        };
        self.send_line(id, &reply);
    }

    /// Runs a command: its result, None when it answered itself, or an error reply.
    fn command(&mut self, id: u32, args: &[String]) -> Result<Option<Value>, Value> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["version"] => Ok(Some(json!({
                "schema": SCHEMA_VERSION,
                "switch": concat!("uml_switch ", env!("CARGO_PKG_VERSION")),
                "commands": ["version", "ports", "macs", "macs flush [PORT]", "stats",
                    "port close N", "port set N description TEXT",
                    "port set N vlan N|trunk:LIST|none", "port set N emulation in|out|both SPEC|off",
                    "hub on|off",
                    "capture start [port N] [outbound] [file PATH]", "capture stop [ID]",
                    "capture list", "events"],
            }))),
            ["ports"] => Ok(Some(self.ports_view())),
            ["macs"] => Ok(Some(self.macs_view())),
            ["macs", "flush", rest @ ..] => {
                let port = match rest {
                    [] => None,
                    [_] => Some(port_arg(args.get(2))?),
                    _ => return Err(reply_err("bad-argument", "macs flush [PORT]")),
                };
                let flushed = self.table.flush(port);
                Ok(Some(json!({ "flushed": flushed })))
            }
            ["stats"] => Ok(Some(self.stats_view())),
            ["port", "close", _] => {
                let port = port_arg(args.get(2))?;
                if self.ports.get(port).is_none() {
                    return Err(reply_err("no-such-port", format!("no port {port}")));
                }
                self.close_port(port, &format!("Port {port} closed by management"));
                Ok(Some(json!({ "closed": port })))
            }
            ["port", "set", _, "description", ..] => {
                let port = port_arg(args.get(2))?;
                let text = args.get(4..).map(|w| w.join(" ")).unwrap_or_default();
                let info = self
                    .managed
                    .port_info
                    .get_mut(&port)
                    .ok_or_else(|| reply_err("no-such-port", format!("no port {port}")))?;
                info.description = text;
                Ok(Some(
                    json!({ "port": port, "description": info.description }),
                ))
            }
            ["port", "set", _, "vlan", spec] => {
                let port = port_arg(args.get(2))?;
                let vlan =
                    match *spec {
                        "none" => None,
                        spec => Some(spec.parse::<crate::vlan::VlanConfig>().map_err(|e| {
                            reply_err("bad-argument", format!("vlan '{spec}': {e}"))
                        })?),
                    };
                self.set_port_vlan(port, vlan)
                    .map_err(|e| reply_err("no-such-port", e.to_string()))?;
                Ok(Some(json!({ "port": port, "vlan": spec })))
            }
            ["port", "set", _, "emulation", direction, spec] => {
                use crate::link_emulation::{Direction, LinkEmulation};
                let port = port_arg(args.get(2))?;
                let dir: Direction = direction
                    .parse()
                    .map_err(|e| reply_err("bad-argument", format!("{e}: in, out or both")))?;
                let emulation = match *spec {
                    "off" => None,
                    spec => Some(spec.parse::<LinkEmulation>().map_err(|e| {
                        reply_err("bad-argument", format!("emulation '{spec}': {e}"))
                    })?),
                };
                self.set_port_emulation(port, dir, emulation)
                    .map_err(|e| reply_err("no-such-port", e.to_string()))?;
                Ok(Some(
                    json!({ "port": port, "emulation": spec, "direction": direction }),
                ))
            }
            ["port", "set", _, key, ..] => Err(reply_err(
                "bad-argument",
                format!(
                    "'port set N {key}': this switch knows description TEXT, vlan N|trunk:LIST|none, \
                     emulation in|out|both SPEC|off"
                ),
            )),
            ["hub", state @ ("on" | "off")] => {
                self.cfg.hub = *state == "on";
                log_line(&format!(
                    "Hub mode {} by management",
                    if self.cfg.hub { "on" } else { "off" }
                ));
                Ok(Some(json!({ "hub": self.cfg.hub })))
            }
            ["capture", "start", rest @ ..] => self.capture_command(id, rest),
            ["capture", "stop"] => {
                let ids: Vec<u32> = self.managed.captures.list().iter().map(|c| c.id).collect();
                let stopped: Vec<Value> = ids
                    .into_iter()
                    .filter_map(|c| self.stop_capture(c, "stopped by management"))
                    .collect();
                Ok(Some(json!({ "stopped": stopped })))
            }
            ["capture", "stop", capture] => {
                let capture: u32 = capture.parse().map_err(|_| {
                    reply_err(
                        "bad-argument",
                        format!("'{capture}' is not a capture number"),
                    )
                })?;
                match self.stop_capture(capture, "stopped by management") {
                    Some(info) => Ok(Some(json!({ "stopped": [info] }))),
                    None => Err(reply_err(
                        "no-such-capture",
                        format!("no capture {capture}"),
                    )),
                }
            }
            ["capture", "list"] => Ok(Some(json!(self.managed.captures.list()))),
            ["events"] => {
                self.send_line(id, &reply_ok(json!({ "events": true })));
                if let Some(conn) = self.managed.conns.get_mut(&id) {
                    conn.mode = Mode::Events;
                }
                Ok(None)
            }
            [first, ..] => Err(reply_err(
                "unknown-command",
                format!("unknown command '{first}' (try 'version')"),
            )),
            [] => Ok(None),
        }
    }

    /// `capture start [port N] [outbound] [file PATH]`: into a new file, or
    /// (without `file`) into this very connection after the reply line.
    fn capture_command(&mut self, id: u32, rest: &[&str]) -> Result<Option<Value>, Value> {
        let mut port = None;
        let mut outbound = false;
        let mut file = None;
        let mut i = 0;
        while i < rest.len() {
            match (rest[i], rest.get(i + 1)) {
                ("port", Some(n)) => {
                    port = Some(n.parse::<PortId>().map_err(|_| {
                        reply_err("bad-argument", format!("'{n}' is not a port number"))
                    })?);
                    i += 2;
                }
                ("outbound", _) => {
                    outbound = true;
                    i += 1;
                }
                ("file", Some(path)) => {
                    file = Some(PathBuf::from(path));
                    i += 2;
                }
                (word, _) => {
                    return Err(reply_err(
                        "bad-argument",
                        format!("'{word}': capture start [port N] [outbound] [file PATH]"),
                    ));
                }
            }
        }
        if let Some(p) = port {
            if self.ports.get(p).is_none() {
                return Err(reply_err("no-such-port", format!("no port {p}")));
            }
        }
        let target = match &file {
            Some(path) => Target::Path {
                path: path.clone(),
                rotate: None,
                new_only: true,
            },
            None => {
                let conn = self.managed.conns.get(&id).ok_or(Value::Null)?;
                if !conn.out.is_empty() {
                    return Err(reply_err(
                        "busy",
                        "read the replies waiting on this connection first",
                    ));
                }
                let fd = conn.stream.as_fd().try_clone_to_owned().map_err(|e| {
                    reply_err("capture-failed", format!("duplicating the connection: {e}"))
                })?;
                Target::Stream(fd)
            }
        };
        let capture = self
            .managed
            .captures
            .start(Spec {
                port,
                outbound,
                target,
            })
            .map_err(|e| reply_err("capture-failed", e.to_string()))?;
        let target_name = file.map_or_else(|| "stream".to_owned(), |p| p.display().to_string());
        self.emit(Event::CaptureStart {
            capture,
            port,
            target: target_name.clone(),
        });
        let result = json!({ "capture": capture, "port": port, "target": target_name });
        if target_name == "stream" {
            // The reply goes first, whole, then the pcapng stream; the
            // connection's buffer is empty, so a short line fits at once.
            let line = format!("{}\n", reply_ok(result));
            let written = self
                .managed
                .conns
                .get_mut(&id)
                .map(|c| c.stream.write(line.as_bytes()));
            if !matches!(written, Some(Ok(n)) if n == line.len()) {
                self.stop_capture(capture, "the client did not take the reply");
                self.close_conn(id);
                return Ok(None);
            }
            if let Some(conn) = self.managed.conns.get_mut(&id) {
                conn.mode = Mode::Capture(capture);
            }
            return Ok(None);
        }
        Ok(Some(result))
    }

    /// Stops a capture and closes the connection streaming it, if any.
    pub(crate) fn stop_capture(&mut self, capture: u32, reason: &str) -> Option<Value> {
        let info = self.managed.captures.stop(capture)?;
        self.close_streams(capture);
        self.emit(Event::CaptureStop {
            capture,
            reason: reason.to_owned(),
            captured: info.captured,
            dropped: info.dropped,
        });
        Some(json!(info))
    }

    /// Closes the connection a capture streamed into, if any.
    fn close_streams(&mut self, capture: u32) {
        let streaming: Vec<u32> = self
            .managed
            .conns
            .iter()
            .filter(|(_, c)| c.mode == Mode::Capture(capture))
            .map(|(&id, _)| id)
            .collect();
        for id in streaming {
            if let Some(conn) = self.managed.conns.get_mut(&id) {
                conn.mode = Mode::Requests;
            }
            self.close_conn(id);
        }
    }

    fn ended(&mut self, ended: Vec<Ended>) {
        for e in ended {
            log_line(&format!("Capture {} ended: {}", e.id, e.why));
            self.close_streams(e.id);
            self.emit(Event::CaptureStop {
                capture: e.id,
                reason: e.why,
                captured: 0,
                dropped: 0,
            });
        }
    }

    /// Tells every event subscriber.
    pub(crate) fn emit(&mut self, event: Event) {
        if !self.managed.listening() {
            return;
        }
        let line = EventLine {
            v: SCHEMA_VERSION,
            time: wall_clock().as_secs_f64(),
            event: &event,
        };
        let Ok(mut text) = serde_json::to_vec(&line) else {
            return;
        };
        text.push(b'\n');
        let subscribers: Vec<u32> = self
            .managed
            .conns
            .iter()
            .filter(|(_, c)| c.mode == Mode::Events)
            .map(|(&id, _)| id)
            .collect();
        for id in subscribers {
            let Some(conn) = self.managed.conns.get_mut(&id) else {
                continue;
            };
            conn.out.extend_from_slice(&text);
            if conn.out.len() > OUT_LIMIT {
                log_line("Closed an event subscriber that does not read");
                self.close_conn(id);
                continue;
            }
            self.mgmt_flush(id);
        }
    }

    /// A port opened: described, announced.
    pub(crate) fn port_opened(&mut self, id: PortId) {
        let Some(port) = self.ports.get(id) else {
            return;
        };
        let info = describe(
            id,
            &port.link,
            self.bess.as_ref().map(|b| b.path()),
            self.cfg.tap.as_deref(),
        );
        let event = Event::PortUp {
            port: id,
            name: info.name.clone(),
            peer: info.peer.clone(),
        };
        self.managed.port_info.insert(id, info);
        self.emit(event);
    }

    /// A port closed: its counts join the totals, its captures stop.
    pub(crate) fn port_closed(&mut self, port: &Port, reason: &str) {
        self.managed.retired_rx.add(&port.rx);
        self.managed.retired_tx.add(&port.tx);
        let info = self.managed.port_info.remove(&port.id);
        let only_this: Vec<u32> = self
            .managed
            .captures
            .list()
            .iter()
            .filter(|c| c.port == Some(port.id))
            .map(|c| c.id)
            .collect();
        for capture in only_this {
            self.stop_capture(capture, "its port closed");
        }
        if let Some(info) = info {
            self.emit(Event::PortDown {
                port: port.id,
                name: info.name,
                peer: info.peer,
                reason: reason.to_owned(),
            });
        }
    }

    /// A source address was learned or moved (the rare path of learning).
    pub(crate) fn mac_event(&mut self, mac: MacAddr, port: PortId, from: Option<PortId>) {
        if !self.managed.listening() {
            return;
        }
        let mac = mac.to_string();
        self.emit(match from {
            None => Event::MacLearned { mac, port },
            Some(from) => Event::MacMoved { mac, port, from },
        });
    }

    /// Ages the learning table, telling subscribers what was forgotten.
    pub(crate) fn age_table(&mut self, now: Instant) {
        if !self.managed.listening() {
            self.table.expire(now);
            return;
        }
        for (mac, port) in self.table.expire_listed(now) {
            self.emit(Event::MacAged {
                mac: mac.to_string(),
                port,
            });
        }
    }

    /// Captures a frame received from (or, `outbound`, sent to) `port`; false
    /// when a capture had to drop it.
    pub(crate) fn capture(
        &mut self,
        port: PortId,
        outbound: bool,
        frame: &[u8],
        ts: Duration,
    ) -> bool {
        let mut ended = Vec::new();
        let info = &self.managed.port_info;
        let table = &self.table;
        let name = |p: PortId| iface_name(info, table, p);
        let taken = self
            .managed
            .captures
            .frame(port, outbound, frame, ts, &name, &mut ended);
        if !ended.is_empty() {
            self.ended(ended);
        }
        taken
    }

    /// Once per loop turn: capture output written, the rate sampled, drops
    /// reported, a resting listener woken.
    pub(crate) fn managed_tick(&mut self, now: Instant) {
        if self.managed.captures.active() {
            let ended = self.managed.captures.flush(now);
            if !ended.is_empty() {
                self.ended(ended);
            }
        }
        // Summing every port's counters is worth it once a sample is due.
        if self.managed.rate.due(now) {
            let (rx, _, _) = self.totals();
            self.managed.rate.sample(now, rx.frames, rx.bytes);
        }
        if now.saturating_duration_since(self.managed.last_drop_report) >= DROP_REPORT_EVERY {
            self.managed.last_drop_report = now;
            if self.managed.listening() {
                self.report_drops();
            }
        }
        if let Some(since) = self.managed.paused_since {
            if now.saturating_duration_since(since) >= ACCEPT_PAUSE {
                self.managed.paused_since = None;
                if let Some(listener) = &self.managed.listener {
                    let event = EpollEvent::new(EpollFlags::EPOLLIN, Token::Mgmt.into());
                    let _ = self.epoll.add(listener.fd.as_fd(), event);
                }
            }
        }
    }

    fn report_drops(&mut self) {
        let mut current: Vec<((PortId, &'static str), u64)> =
            vec![((0, "unregistered"), self.managed.unregistered)];
        for port in self.ports.iter() {
            let rx = self.ports.rx(port.id).unwrap_or_default();
            current.push(((port.id, "queue_full"), port.tx.queue_full));
            current.push(((port.id, "runt"), rx.runt));
            current.push(((port.id, "oversize"), rx.oversize));
            current.push(((port.id, "capture"), rx.capture));
        }
        for (key, count) in current {
            let before = self.managed.reported.insert(key, count).unwrap_or(0);
            if count > before {
                let (port, reason) = key;
                self.emit(Event::Drops {
                    port: (port != 0).then_some(port),
                    reason,
                    count: count - before,
                });
            }
        }
    }

    /// Received, sent and switch-wide drops, over every port ever open.
    fn totals(&self) -> (RxCounters, TxCounters, u64) {
        let mut rx = self.managed.retired_rx;
        let mut tx = self.managed.retired_tx;
        for port in self.ports.iter() {
            rx.add(&self.ports.rx(port.id).unwrap_or_default());
            tx.add(&port.tx);
        }
        (rx, tx, self.managed.unregistered)
    }

    fn ports_view(&self) -> Value {
        let now = Instant::now();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|port| {
                let rx = self.ports.rx(port.id).unwrap_or_default();
                let info = self.managed.port_info.get(&port.id);
                let macs: Vec<String> =
                    self.table.on_port(port.id).map(|m| m.to_string()).collect();
                json!({
                    "id": port.id,
                    "name": info.map(|i| i.name.clone()),
                    "transport": info.map(|i| i.transport),
                    "peer": info.map(|i| i.peer.clone()),
                    "description": info.map(|i| i.description.clone()),
                    "macs": macs,
                    "age_secs": info.map(|i| now.saturating_duration_since(i.opened).as_secs_f64()),
                    "rx": {"frames": rx.frames, "bytes": rx.bytes},
                    "tx": {"frames": port.tx.frames, "bytes": port.tx.bytes},
                    "drops": {
                        "queue_full": port.tx.queue_full,
                        "runt": rx.runt,
                        "oversize": rx.oversize,
                        "capture": rx.capture,
                    },
                })
            })
            .collect();
        json!(ports)
    }

    fn macs_view(&self) -> Value {
        let now = Instant::now();
        let mut macs: Vec<(MacAddr, PortId, Instant)> = self.table.entries().collect();
        macs.sort_by_key(|&(m, p, _)| (p, m.octets()));
        json!(
            macs.into_iter()
                .map(|(mac, port, seen)| json!({
                    "mac": mac.to_string(),
                    "port": port,
                    "last_seen_secs": now.saturating_duration_since(seen).as_secs_f64(),
                }))
                .collect::<Vec<_>>()
        )
    }

    fn stats_view(&self) -> Value {
        let now = Instant::now();
        let (rx, tx, unregistered) = self.totals();
        let (fps, bps, window) = self.managed.rate.rate(now, rx.frames, rx.bytes);
        json!({
            "uptime_secs": now.saturating_duration_since(self.managed.started).as_secs_f64(),
            "hub": self.cfg.hub,
            "ports": self.ports.len(),
            "macs": self.table.len(),
            "rx": {"frames": rx.frames, "bytes": rx.bytes},
            "tx": {"frames": tx.frames, "bytes": tx.bytes},
            "drops": {
                "queue_full": tx.queue_full,
                "runt": rx.runt,
                "oversize": rx.oversize,
                "unregistered": unregistered,
                "capture": self.managed.captures.dropped(),
            },
            "rate": {"window_secs": window, "rx_frames_per_sec": fps, "rx_bytes_per_sec": bps},
            "captures": self.managed.captures.list().len(),
        })
    }
}

impl Switch {
    /// The capture of `--pcap`, from the start.
    pub(crate) fn start_pcap(&mut self) -> Result<(), crate::switch::SwitchError> {
        let Some(path) = self.cfg.managed.pcap.clone() else {
            return Ok(());
        };
        let target = if path == Path::new("-") {
            Target::Stdout
        } else {
            Target::Path {
                path,
                rotate: self.cfg.managed.pcap_rotate,
                new_only: false,
            }
        };
        self.managed.captures.start(Spec {
            port: None,
            outbound: self.cfg.managed.pcap_outbound,
            target,
        })?;
        Ok(())
    }
}

impl Switch {
    /// Captures the copies of `frame` just sent to `self.targets`.
    pub(crate) fn capture_sent(&mut self, frame: &[u8], ts: Duration) {
        if !self.managed.captures.outbound() {
            return;
        }
        let targets = std::mem::take(&mut self.targets);
        for &to in &targets {
            self.capture(to, true, frame, ts);
        }
        self.targets = targets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_words_or_a_json_array() {
        assert_eq!(words(" port  close 3 ").unwrap(), ["port", "close", "3"]);
        assert_eq!(
            words(r#"["capture","start","file","/tmp/a b"]"#).unwrap(),
            ["capture", "start", "file", "/tmp/a b"]
        );
        assert!(words(r#"["port", 3]"#).is_err());
        assert!(words("").unwrap().is_empty());
    }

    #[test]
    fn replies_carry_the_schema_version() {
        let ok = reply_ok(json!({"x": 1}));
        assert_eq!(ok["v"], SCHEMA_VERSION);
        assert_eq!(ok["ok"], true);
        let err = reply_err("unknown-command", "no");
        assert_eq!(err["error"]["code"], "unknown-command");
        assert_eq!(err["ok"], false);
    }
}
