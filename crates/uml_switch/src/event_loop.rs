//! The event loop and the data path: one thread, one epoll set over the
//! listeners, every port's sockets and the signals.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::sockopt::SocketError;
use nix::sys::socket::{MsgFlags, SockaddrIn, getsockopt, sendmsg};
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use zerocopy::IntoBytes;

use crate::backlog::{STALL_AFTER, peer_gone, send_connected};
use crate::batch::{Outgoing, RX_BATCH};
use crate::control::{ACCEPT_RETRY, CLIENT_LINES_PER_SECOND};
use crate::forward::{Destination, MAX_FRAME, decide, forwardable, learn_source};
use crate::learning::Learned;
use crate::log::log_line;
use crate::mgmt::wall_clock;
use crate::ports::{Link, Port, PortId, source_key};
use crate::switch::{Sending, Switch, SwitchError, sys};

/// Frames read from one BESS or tap port before the other sockets get a turn.
const READS_PER_TURN: usize = 64;
/// `recvmmsg` calls (of up to [`RX_BATCH`] frames each) on one daemon data
/// socket before the other sockets get a turn.
const RECEIVES_PER_TURN: usize = 64;
/// Lines about learned and moved addresses printed at most each second.
pub(crate) const LEARN_LINES_PER_SECOND: u32 = 100;
/// How often the learning table is aged, as the C switch does.
pub(crate) const AGE_EVERY: Duration = Duration::from_secs(2);

/// What an epoll event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// The signalfd.
    Signal,
    /// The control listener.
    Control,
    /// The shared data socket.
    Data,
    /// The BESS listener.
    Bess,
    /// A terminal on standard input.
    Stdin,
    /// A control connection waiting for its request.
    Pending(u32),
    /// A port: its control connection (daemon) or its frames (BESS, tap).
    Port(PortId),
    /// A daemon port's own data socket.
    PortData(PortId),
    /// An `--endpoint` listener, by its place on the command line.
    Endpoint(u32),
    /// A VXLAN uplink's socket: twice its place on the command line, plus
    /// one for its multicast group's socket.
    Vxlan(u32),
    /// The management listener (issue 13).
    Mgmt,
    /// A management connection.
    MgmtConn(u32),
    /// The periodic timer.
    Tick,
}

/// Where the kind of a token sits in epoll's 64-bit word; the low half holds an id.
const KIND_SHIFT: u32 = 32;

impl From<Token> for u64 {
    fn from(token: Token) -> u64 {
        let (kind, id) = match token {
            Token::Signal => (1, 0),
            Token::Control => (2, 0),
            Token::Data => (3, 0),
            Token::Bess => (4, 0),
            Token::Stdin => (5, 0),
            Token::Pending(id) => (6, id),
            Token::Port(id) => (7, id),
            Token::Endpoint(id) => (8, id),
            Token::Vxlan(id) => (9, id),
            Token::Mgmt => (10, 0),
            Token::MgmtConn(id) => (11, id),
            Token::PortData(id) => (12, id),
            Token::Tick => (13, 0),
        };
        (kind << KIND_SHIFT) | u64::from(id)
    }
}

impl Token {
    /// The token an event carries back.
    fn from_event(word: u64) -> Option<Self> {
        let id = u32::try_from(word & u64::from(u32::MAX)).ok()?;
        Some(match word >> KIND_SHIFT {
            1 => Token::Signal,
            2 => Token::Control,
            3 => Token::Data,
            4 => Token::Bess,
            5 => Token::Stdin,
            6 => Token::Pending(id),
            7 => Token::Port(id),
            8 => Token::Endpoint(id),
            9 => Token::Vxlan(id),
            10 => Token::Mgmt,
            11 => Token::MgmtConn(id),
            12 => Token::PortData(id),
            13 => Token::Tick,
            _ => return None,
        })
    }
}

impl Switch {
    /// Serves until SIGINT, SIGTERM, SIGHUP or the end of a terminal's input.
    pub fn run(&mut self) -> Result<(), SwitchError> {
        if let Some(signo) = self.stop_before_loop {
            log_line(&format!("Caught signal {signo}, cleaning up and exiting"));
            return Ok(());
        }
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            // The tick wakes the loop for ageing; a timeout is set only for
            // what is due sooner: accepting retried while out of
            // descriptors, an emulated link's next frame, a stalling holder,
            // capture output. Without one, no kernel timer is armed and
            // cancelled around each sleep (3% of the switch's samples in a
            // ping-pong profile).
            let mut wake = self.backoff.paused().then_some(ACCEPT_RETRY);
            let mut sooner = |within: Duration| {
                wake = Some(wake.map_or(within, |w| w.min(within)));
            };
            // An emulated link's next frame: rounded up to the next
            // millisecond (epoll's unit), so the loop never spins early.
            if let Some(due) = self.next_timer() {
                let left = due.saturating_duration_since(Instant::now());
                sooner(left.checked_add(Duration::from_micros(999)).unwrap_or(left));
            }
            // A port holding others back is checked for stalling.
            if !self.sending.holders.is_empty() {
                sooner(STALL_AFTER);
            }
            // managed switch: capture output waiting for its reader.
            if let Some(within) = self.managed.wake_within() {
                sooner(within);
            }
            let timeout = wake.map_or(EpollTimeout::NONE, |w| {
                EpollTimeout::try_from(w).unwrap_or(EpollTimeout::NONE)
            });
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(sys("waiting for events")(e)),
            };
            // One reading of the clock a turn, for learning and the periodic
            // work below (holding back, emulated links and captures read
            // their own, later in the turn).
            let now = Instant::now();
            self.now = now;
            self.turn = self.turn.wrapping_add(1);
            let mut ticked = false;
            for event in &events[..n] {
                match Token::from_event(event.data()) {
                    Some(Token::Pending(id)) => self.pending_ready(id),
                    Some(Token::Port(id)) => self.port_ready(id, event.events()),
                    Some(Token::PortData(id)) => self.port_data_ready(id, event.events()),
                    Some(Token::Signal) => {
                        if let Ok(Some(info)) = self.signals.read_signal() {
                            log_line(&format!(
                                "Caught signal {}, cleaning up and exiting",
                                info.ssi_signo
                            ));
                            return Ok(());
                        }
                    }
                    Some(Token::Control) => self.accept_control(),
                    Some(Token::Data) => self.receive_frames(Inlet::Shared),
                    Some(Token::Bess) => self.accept_bess(),
                    Some(Token::Endpoint(i)) => self.endpoint_ready(i),
                    Some(Token::Vxlan(i)) => self.vxlan_ready(i),
                    Some(Token::Mgmt) => self.accept_mgmt(),
                    Some(Token::MgmtConn(id)) => self.mgmt_ready(id, event.events()),
                    Some(Token::Tick) => {
                        // Read, or it stays ready; a missed tick changes nothing.
                        let _ = self.tick.wait();
                        ticked = true;
                    }
                    Some(Token::Stdin) => {
                        let mut byte = [0u8; 64];
                        if matches!(io::stdin().read(&mut byte), Ok(0) | Err(_))
                            || event.events().contains(EpollFlags::EPOLLHUP)
                        {
                            log_line("EOF on stdin, cleaning up and exiting");
                            return Ok(());
                        }
                    }
                    None => {}
                }
            }
            self.check_stalls(now);
            if self.next_timer().is_some() {
                // Read again: frames the emulation took in this turn were
                // stamped after `now`, and those due at once leave now.
                self.release_due(Instant::now());
            }
            if ticked {
                self.age_table(now);
                self.expire_pending(now);
                self.tell_held_back();
            }
            self.resume_listeners(now);
            self.managed_tick(now);
            // Last, after the emulated links' frames have left too.
            self.arm_backlogs();
            // Whatever no source claimed holds no one.
            self.hold_backed_up(None);
        }
    }

    /// A port's own descriptor is ready: the end of a daemon port's control
    /// connection, or frames from (or room toward) a BESS or tap port.
    fn port_ready(&mut self, id: PortId, events: EpollFlags) {
        let Some(port) = self.ports.get(id) else {
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
        if events.contains(EpollFlags::EPOLLOUT) && !self.flush_backlog(id) {
            return;
        }
        if !events.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..READS_PER_TURN {
            let Some(port) = self.ports.get_mut(id) else {
                break;
            };
            match nix::unistd::read(port.link.fd(), &mut buf) {
                Ok(0) => {
                    self.close_port(id, "Disconnect");
                    break;
                }
                Ok(n) => {
                    port.rx.frame(n);
                    if n > MAX_FRAME {
                        port.rx.oversize += 1;
                    } else if !forwardable(n) {
                        port.rx.runt += 1;
                    }
                    self.forward(id, &buf[..n]);
                    if self.ports.get(id).is_some_and(|p| p.held > 0) {
                        break;
                    }
                }
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

    /// A daemon port's data socket is ready: frames from its client, room
    /// in the client's queue for the port's backlog, or an error.
    fn port_data_ready(&mut self, id: PortId, events: EpollFlags) {
        if events.contains(EpollFlags::EPOLLERR) {
            // Taken here, also while the port is held back and its frames
            // are not read: a pending error would wake the loop for ever.
            let error = match self.ports.get(id).map(|p| &p.link) {
                Some(Link::Daemon { data, .. }) => getsockopt(data, SocketError).unwrap_or(0),
                _ => 0,
            };
            if peer_gone(Errno::from_raw(error)) {
                self.close_port(id, "Disconnect");
                return;
            }
        }
        if events.contains(EpollFlags::EPOLLOUT) && !self.flush_backlog(id) {
            return;
        }
        if events.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) {
            self.receive_frames(Inlet::Port(id));
        }
    }

    /// Learns a frame's source and lists the ports it must go to in `self.targets`.
    fn route(&mut self, from: PortId, header: &EthernetHeader) {
        self.targets.clear();
        if let Some((mac, learned)) = learn_source(&mut self.table, from, header, self.now) {
            match self.log_learned(mac, from, learned) {
                Learned::New => self.mac_event(mac, from, None),
                Learned::Moved { from: old } => self.mac_event(mac, from, Some(old)),
                Learned::Known | Learned::Full => {}
            }
        }
        match decide(from, header, &self.table, self.cfg.hub) {
            Destination::Nowhere => {}
            Destination::Port(to) => self.targets.push(to),
            Destination::Flood => self.targets.extend(self.ports.others(from)),
        }
    }

    /// Logs what learning `mac` on port `from` changed, as the C switch does,
    /// but at most [`LEARN_LINES_PER_SECOND`] lines a second (the rest are
    /// counted, and told at the next tick), and a full table once a second.
    pub(crate) fn log_learned(&mut self, mac: MacAddr, from: PortId, learned: Learned) -> Learned {
        let line = match learned {
            Learned::New => format!(" Addr: {mac} New port {from}"),
            Learned::Moved { from: old } => format!(" Addr: {mac} New port {from} old port {old}"),
            Learned::Full => {
                if self.full_lines.allow(self.now) {
                    log_line(&format!(
                        "The learning table is full ({} addresses): new addresses are not learned, frames to them flood (--max-macs)",
                        self.table.capacity()
                    ));
                }
                return learned;
            }
            Learned::Known => return learned,
        };
        if self.learn_lines.allow(self.now) {
            log_line(&line);
        }
        learned
    }

    /// At a tick: how many learning and client lines the limits held back.
    fn tell_held_back(&mut self) {
        let held_back = self.learn_lines.take_held_back();
        if held_back > 0 {
            log_line(&format!(
                "{held_back} more addresses learned or moved, not logged (at most {LEARN_LINES_PER_SECOND} lines a second)"
            ));
        }
        self.full_lines.take_held_back();
        let held_back = self.client_lines.take_held_back();
        if held_back > 0 {
            log_line(&format!(
                "{held_back} more lines about the connections of users other than root and uid {}, not logged (at most {CLIENT_LINES_PER_SECOND} a second)",
                self.quota.own_uid()
            ));
        }
    }

    /// Learns a frame from a BESS, tap or VXLAN port and sends it where it belongs.
    pub(crate) fn forward(&mut self, from: PortId, frame: &[u8]) {
        if self.fabric.active {
            // managed switch: the fabric's frames are captured as they come in.
            if self.managed.captures.active() {
                self.capture(from, false, frame, wall_clock());
            }
            return self.forward_fabric(from, frame);
        }
        if !forwardable(frame.len()) {
            return;
        }
        let Some(header) = EthernetHeader::parse(frame) else {
            return;
        };
        let ts = self.managed.captures.active().then(wall_clock);
        if let Some(ts) = ts {
            if !self.capture(from, false, frame, ts) {
                if let Some(port) = self.ports.get_mut(from) {
                    port.rx.capture += 1;
                }
            }
        }
        self.route(from, header);
        let mut dead = Vec::new();
        for &to in &self.targets {
            if let Some(port) = self.ports.get_mut(to) {
                if !transmit(port, &[frame], &mut self.sending) {
                    dead.push(to);
                }
            }
        }
        if let Some(ts) = ts {
            self.capture_sent(frame, ts);
        }
        self.hold_backed_up(Some(from));
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Takes the frames waiting on a daemon port's data socket (or the
    /// shared `-compat-v0` one) a batch per system call, routes them, and
    /// sends the copies for each port in one more.
    fn receive_frames(&mut self, inlet: Inlet) {
        for _ in 0..RECEIVES_PER_TURN {
            let received = match inlet {
                Inlet::Port(id) => {
                    let Some(port) = self.ports.get_mut(id) else {
                        return;
                    };
                    let Link::Daemon { data, .. } = &port.link else {
                        return;
                    };
                    if port.held > 0 {
                        return;
                    }
                    // A lone frame taken with `recv` costs the switch less
                    // than a `recvmmsg` that copies headers and tries again
                    // for a second; more frames waiting bring the port back
                    // next turn, and it is then read in batches.
                    let received = if port.reads.one_at_a_time(self.turn) {
                        self.rx.receive_one(data.as_fd())
                    } else {
                        let received = self.rx.receive(data.as_fd(), false);
                        port.reads.lone = matches!(received, Ok(1));
                        received
                    };
                    port.reads.turn = self.turn;
                    received
                }
                Inlet::Shared => match &self.data {
                    Some(data) => self.rx.receive(data.fd.as_fd(), true),
                    None => return,
                },
            };
            let count = match received {
                Ok(count) => count,
                Err(e) => {
                    let gone = e
                        .raw_os_error()
                        .is_some_and(|n| peer_gone(Errno::from_raw(n)));
                    if let (Inlet::Port(id), true) = (inlet, gone) {
                        self.close_port(id, "Disconnect");
                    }
                    return;
                }
            };
            // Captures stamp a batch with the time it was taken.
            let ts = self.managed.captures.active().then(wall_clock);
            for slot in 0..count {
                let len = self.rx.len(slot);
                let from = match inlet {
                    Inlet::Port(id) => id,
                    Inlet::Shared => {
                        // Frames from addresses that never registered are dropped.
                        let port = source_key(self.rx.sender(slot))
                            .and_then(|key| self.ports.by_source(&key));
                        match port {
                            Some(id) => id,
                            None => {
                                self.managed.unregistered += 1;
                                continue;
                            }
                        }
                    }
                };
                let Some(source) = self.ports.get_mut(from) else {
                    continue;
                };
                source.rx.frame(len);
                // Runts and frames our buffer cut are dropped.
                if !forwardable(len) {
                    if len > MAX_FRAME {
                        source.rx.oversize += 1;
                    } else {
                        source.rx.runt += 1;
                    }
                    continue;
                }
                if self.fabric.active {
                    // VLANs and emulation rewrite or keep frames: off the batch.
                    let frame = self.rx.frame(slot, len).to_vec();
                    if let Some(ts) = ts {
                        self.capture(from, false, &frame, ts);
                    }
                    self.forward_fabric(from, &frame);
                    continue;
                }
                let Some(header) = EthernetHeader::parse(self.rx.frame(slot, len)).copied() else {
                    continue;
                };
                if let Some(ts) = ts {
                    let frame = self.rx.frame(slot, len).to_vec();
                    if !self.capture(from, false, &frame, ts) {
                        if let Some(source) = self.ports.get_mut(from) {
                            source.rx.capture += 1;
                        }
                    }
                }
                self.route(from, &header);
                self.tx
                    .extend(self.targets.iter().map(|&to| Outgoing { slot, len, to }));
                if let Some(ts) = ts {
                    let frame = self.rx.frame(slot, len).to_vec();
                    self.capture_sent(&frame, ts);
                }
            }
            self.send_outgoing();
            self.hold_backed_up(match inlet {
                Inlet::Port(id) => Some(id),
                Inlet::Shared => None,
            });
            if count < RX_BATCH {
                return;
            }
        }
    }

    /// Sends the batch's copies, one `sendmmsg` per port, in the order they
    /// were received.
    fn send_outgoing(&mut self) {
        if self.tx.is_empty() {
            return;
        }
        // A stable sort keeps each port's frames in order.
        self.tx.sort_by_key(|o| o.to);
        let mut dead = Vec::new();
        let mut start = 0;
        while let Some(first) = self.tx.get(start) {
            let to = first.to;
            let end = start + self.tx[start..].iter().take_while(|o| o.to == to).count();
            let group = &self.tx[start..end];
            let one;
            let many: Vec<&[u8]>;
            // A lone frame (light load) needs no list.
            let frames: &[&[u8]] = if let [o] = group {
                one = [self.rx.frame(o.slot, o.len)];
                &one
            } else {
                many = group.iter().map(|o| self.rx.frame(o.slot, o.len)).collect();
                &many
            };
            if let Some(port) = self.ports.get_mut(to) {
                if !transmit(port, frames, &mut self.sending) {
                    dead.push(to);
                }
            }
            start = end;
        }
        self.tx.clear();
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Hands port `id`'s backlog to its socket, as much as the client's
    /// queue takes. False when the port was closed (its client is gone).
    fn flush_backlog(&mut self, id: PortId) -> bool {
        let Some(Port {
            link, backlog, tx, ..
        }) = self.ports.get_mut(id)
        else {
            return false;
        };
        let Some((fd, _, _)) = queued_socket(link, id) else {
            return true;
        };
        let mut lens = Vec::new();
        let mut lost = 0;
        let sent = backlog.flush(
            fd,
            &mut self.sending.headers,
            &mut lens,
            &mut lost,
            &mut self.sending.budget,
        );
        tx.queue_full += lost;
        for len in lens {
            tx.frame(len);
        }
        if sent.gone {
            self.close_port(id, "Disconnect");
            return false;
        }
        if backlog.is_empty() {
            backlog.armed = false;
            self.set_interest(id);
            self.release_holds(id, false);
        }
        true
    }

    /// Asks epoll to report room for every port that got a backlog.
    pub(crate) fn arm_backlogs(&mut self) {
        for id in std::mem::take(&mut self.sending.arm) {
            let Some(Port { backlog, .. }) = self.ports.get_mut(id) else {
                continue;
            };
            if backlog.armed || backlog.is_empty() {
                continue;
            }
            backlog.armed = true;
            self.set_interest(id);
        }
    }

    /// Tells epoll what port `id`'s queued socket is watched for now: its
    /// frames unless it is held back, room while it has a backlog.
    fn set_interest(&mut self, id: PortId) {
        let Some(port) = self.ports.get(id) else {
            return;
        };
        if let Some((fd, token, base)) = queued_socket(&port.link, id) {
            let mut flags = base;
            if port.held > 0 {
                flags.remove(EpollFlags::EPOLLIN);
            }
            if port.backlog.armed {
                flags |= EpollFlags::EPOLLOUT;
            }
            let _ = self
                .epoll
                .modify(fd, &mut EpollEvent::new(flags, token.into()));
        }
    }

    /// The ports whose backlog the frames just sent made grow hold back
    /// `from`, the port those frames came from (none: they hold no one).
    pub(crate) fn hold_backed_up(&mut self, from: Option<PortId>) {
        if self.sending.backed_up.is_empty() {
            return;
        }
        let mut backed_up = std::mem::take(&mut self.sending.backed_up);
        if let Some(from) = from {
            for &to in &backed_up {
                self.hold(from, to);
            }
        }
        backed_up.clear();
        self.sending.backed_up = backed_up;
    }

    /// Port `to`'s backlog grew with `from`'s frames: `from` is not read
    /// until `to` has sent its backlog (or stalls, or closes).
    fn hold(&mut self, from: PortId, to: PortId) {
        let holdable = self.ports.get(from).is_some_and(|p| match &p.link {
            Link::Daemon { shared, .. } => !shared,
            Link::Bess(_) => true,
            Link::Tap(_) | Link::Vxlan { .. } => false,
        });
        let Some(dest) = self.ports.get_mut(to) else {
            return;
        };
        if !holdable || from == to || !dest.backlog.start_holding(from, Instant::now()) {
            return;
        }
        if !self.sending.holders.contains(&to) {
            self.sending.holders.push(to);
        }
        if let Some(source) = self.ports.get_mut(from) {
            source.held += 1;
            if source.held == 1 {
                self.set_interest(from);
            }
        }
    }

    /// Lets go of every port that port `to` holds back; `cooldown`: it held
    /// them too long, and holds no one for a while.
    pub(crate) fn release_holds(&mut self, to: PortId, cooldown: bool) {
        let Some(dest) = self.ports.get_mut(to) else {
            return;
        };
        for from in dest.backlog.stop_holding(Instant::now(), cooldown) {
            if let Some(source) = self.ports.get_mut(from) {
                source.held = source.held.saturating_sub(1);
                if source.held == 0 {
                    self.set_interest(from);
                }
            }
        }
    }

    /// A port that has held others back for [`STALL_AFTER`] lets them go.
    fn check_stalls(&mut self, now: Instant) {
        if self.sending.holders.is_empty() {
            return;
        }
        for to in std::mem::take(&mut self.sending.holders) {
            let Some(dest) = self.ports.get_mut(to) else {
                continue;
            };
            if dest.backlog.held_too_long(now) {
                self.release_holds(to, true);
            } else if dest.backlog.is_holding() {
                self.sending.holders.push(to);
            }
        }
    }
}

/// Where a batch of daemon frames comes in.
#[derive(Debug, Clone, Copy)]
enum Inlet {
    /// A port's own data socket.
    Port(PortId),
    /// The shared `-compat-v0` socket.
    Shared,
}

/// A port's socket that a full queue can refuse frames on, the token it is
/// watched with and the events it is always watched for.
pub(crate) fn queued_socket(
    link: &Link,
    id: PortId,
) -> Option<(BorrowedFd<'_>, Token, EpollFlags)> {
    match link {
        Link::Daemon { data, shared, .. } => {
            // A v0 port's socket only sends: watched for room alone.
            let base = if *shared {
                EpollFlags::empty()
            } else {
                EpollFlags::EPOLLIN
            };
            Some((data.as_fd(), Token::PortData(id), base))
        }
        Link::Bess(fd) => Some((fd.as_fd(), Token::Port(id), EpollFlags::EPOLLIN)),
        Link::Tap(_) | Link::Vxlan { .. } => None,
    }
}

/// Sends `frames` to `port` without waiting, in order, counted in its sent
/// frames or its full-queue drops. On a daemon or BESS port, what its
/// client's queue cannot take now waits in the port's backlog (frames after
/// it wait too, to keep the order) until the backlog is full. Returns false
/// when the port is gone for good.
pub(crate) fn transmit(port: &mut Port, frames: &[&[u8]], sending: &mut Sending) -> bool {
    let fd = match &port.link {
        Link::Daemon { data, .. } => data.as_fd(),
        Link::Bess(fd) => fd.as_fd(),
        Link::Tap(file) => {
            for frame in frames {
                // A tap takes a frame whole or not at all.
                match (&*file).write(frame) {
                    Ok(n) if n == frame.len() => port.tx.frame(frame.len()),
                    Ok(_) => port.tx.queue_full += 1,
                    Err(_) => port.tx.queue_full += 1,
                }
            }
            return true;
        }
        Link::Vxlan {
            socket,
            dest,
            header,
        } => {
            for frame in frames {
                // Header and frame gathered by the kernel: no copy of the frame.
                let parts = [IoSlice::new(header.as_bytes()), IoSlice::new(frame)];
                let sent = sendmsg(
                    socket.as_raw_fd(),
                    &parts,
                    &[],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&SockaddrIn::from(*dest)),
                );
                match sent {
                    Ok(_) => port.tx.frame(frame.len()),
                    Err(_) => port.tx.queue_full += 1,
                }
            }
            return true;
        }
    };
    let was_empty = port.backlog.is_empty();
    let mut rest = frames;
    if was_empty {
        let mut lost = Vec::new();
        let sent = send_connected(fd, &mut sending.headers, frames, &mut lost);
        for (i, frame) in frames[..sent.taken].iter().enumerate() {
            if lost.contains(&i) {
                port.tx.queue_full += 1;
            } else {
                port.tx.frame(frame.len());
            }
        }
        if sent.gone {
            return false;
        }
        rest = &frames[sent.taken..];
    }
    if rest.is_empty() {
        return true;
    }
    for frame in rest {
        if !port.backlog.push(frame, &mut sending.budget) {
            port.tx.queue_full += 1;
        }
    }
    // Listed once, when its backlog begins.
    if was_empty && !port.backlog.armed && !port.backlog.is_empty() {
        sending.arm.push(port.id);
    }
    if port.backlog.wants_hold() {
        sending.backed_up.push(port.id);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_survive_the_round_trip_through_epoll() {
        for token in [
            Token::Signal,
            Token::Control,
            Token::Data,
            Token::Bess,
            Token::Stdin,
            Token::Pending(0),
            Token::Pending(u32::MAX),
            Token::Port(1),
            Token::Port(u32::MAX),
            Token::Endpoint(3),
            Token::Vxlan(u32::MAX),
            Token::Mgmt,
            Token::MgmtConn(0),
            Token::MgmtConn(u32::MAX),
            Token::PortData(7),
            Token::Tick,
        ] {
            assert_eq!(Token::from_event(token.into()), Some(token));
        }
        assert_eq!(Token::from_event(0), None);
        assert_eq!(Token::from_event(14 << KIND_SHIFT), None);
    }
}
