//! The event loop and the data path: one thread, one epoll set over the
//! listeners, the shared data socket, every port and the signals.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{MsgFlags, SockaddrIn, send, sendmsg, sendto};
use uml_proto::ethernet::EthernetHeader;
use zerocopy::IntoBytes;

use crate::batch::{Outgoing, RX_BATCH, destination_gone};
use crate::control::ACCEPT_RETRY;
use crate::forward::{Destination, MAX_FRAME, decide, forwardable, learn_source};
use crate::learning::Learned;
use crate::log::log_line;
use crate::mgmt::wall_clock;
use crate::ports::{Link, Port, PortId};
use crate::switch::{Switch, SwitchError, sys};

/// Frames read from one BESS or tap port before the other sockets get a turn.
const READS_PER_TURN: usize = 64;
/// `recvmmsg` calls (of up to [`RX_BATCH`] frames each) on the shared data
/// socket before the other sockets get a turn.
const RECEIVES_PER_TURN: usize = 64;
/// How often the learning table is aged, as the C switch does.
const AGE_EVERY: Duration = Duration::from_secs(2);

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
    /// An `--endpoint` listener, by its place on the command line.
    Endpoint(u32),
    /// A VXLAN uplink's socket: twice its place on the command line, plus
    /// one for its multicast group's socket.
    Vxlan(u32),
    /// The management listener (issue 13).
    Mgmt,
    /// A management connection.
    MgmtConn(u32),
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
            // Wake at least as often as the table is aged, and as accepting
            // is retried while out of descriptors.
            let mut wake = if self.backoff.paused() {
                ACCEPT_RETRY
            } else {
                AGE_EVERY
            };
            // An emulated link's next frame: rounded up to the next
            // millisecond (epoll's unit), so the loop never spins early.
            if let Some(due) = self.next_timer() {
                let left = due.saturating_duration_since(Instant::now());
                wake = wake.min(left.checked_add(Duration::from_micros(999)).unwrap_or(left));
            }
            // managed switch: capture output waiting for its reader.
            wake = self.managed.wake_within().map_or(wake, |w| w.min(wake));
            let timeout = EpollTimeout::try_from(wake).unwrap_or(EpollTimeout::NONE);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(sys("waiting for events")(e)),
            };
            for event in &events[..n] {
                match Token::from_event(event.data()) {
                    Some(Token::Pending(id)) => self.pending_ready(id),
                    Some(Token::Port(id)) => self.port_ready(id),
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
                    Some(Token::Data) => self.data_ready(),
                    Some(Token::Bess) => self.accept_bess(),
                    Some(Token::Endpoint(i)) => self.endpoint_ready(i),
                    Some(Token::Vxlan(i)) => self.vxlan_ready(i),
                    Some(Token::Mgmt) => self.accept_mgmt(),
                    Some(Token::MgmtConn(id)) => self.mgmt_ready(id, event.events()),
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
            let now = Instant::now();
            if self.next_timer().is_some() {
                self.release_due(now);
            }
            if now.duration_since(self.last_aged) >= AGE_EVERY {
                self.age_table(now);
                self.expire_pending(now);
                self.last_aged = now;
            }
            self.resume_listeners(now);
            self.managed_tick(now);
        }
    }

    /// A port's descriptor is readable: the end of a daemon port's control
    /// connection, or frames from a BESS or tap port.
    fn port_ready(&mut self, id: PortId) {
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

    /// Learns a frame's source and lists the ports it must go to in `self.targets`.
    fn route(&mut self, from: PortId, header: &EthernetHeader) {
        self.targets.clear();
        match learn_source(&mut self.table, from, header, self.now) {
            Some((mac, Learned::New)) => {
                log_line(&format!(" Addr: {mac} New port {from}"));
                self.mac_event(mac, from, None);
            }
            Some((mac, Learned::Moved { from: old })) => {
                log_line(&format!(" Addr: {mac} New port {from} old port {old}"));
                self.mac_event(mac, from, Some(old));
            }
            Some((_, Learned::Known)) | None => {}
        }
        match decide(from, header, &self.table, self.cfg.hub) {
            Destination::Nowhere => {}
            Destination::Port(to) => self.targets.push(to),
            Destination::Flood => self.targets.extend(self.ports.others(from)),
        }
    }

    /// Learns a frame from a BESS or tap port and sends it where it belongs.
    fn forward(&mut self, from: PortId, frame: &[u8]) {
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
        self.now = Instant::now();
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
                match send_to(&self.data.fd, port, frame) {
                    Delivery::Sent => port.tx.frame(frame.len()),
                    Delivery::Full => port.tx.queue_full += 1,
                    Delivery::Gone => dead.push(to),
                }
            }
        }
        if let Some(ts) = ts {
            self.capture_sent(frame, ts);
        }
        for id in dead {
            self.close_port(id, "Disconnect");
        }
    }

    /// Takes up to a batch of frames from the shared data socket in one system
    /// call, routes them, and sends those for daemon ports in one more.
    fn data_ready(&mut self) {
        let fd = self.data.fd.as_raw_fd();
        for _ in 0..RECEIVES_PER_TURN {
            let received = self.rx.receive(self.data.fd.as_fd());
            if received.is_empty() {
                return;
            }
            self.now = Instant::now();
            // Captures stamp a batch with the time it was taken.
            let ts = self.managed.captures.active().then(wall_clock);
            let mut dead = Vec::new();
            for (slot, len, key) in &received {
                let (slot, len) = (*slot, *len);
                // Frames from addresses that never registered are dropped, and
                // so are runts and frames our buffer cut.
                let Some(source) = key.as_ref().and_then(|k| self.ports.source_mut(k)) else {
                    self.managed.unregistered += 1;
                    continue;
                };
                source.rx.frame(len);
                let from = source.id;
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
                        if let Some(source) = key.as_ref().and_then(|k| self.ports.source_mut(k)) {
                            source.rx.capture += 1;
                        }
                    }
                }
                self.route(from, &header);
                for &to in &self.targets {
                    match self.ports.get_mut(to) {
                        Some(Port {
                            link: Link::Daemon { addr, .. },
                            tx,
                            ..
                        }) => {
                            // Counted as sent; a copy refused below is moved to the drops.
                            tx.frame(len);
                            self.tx.push(Outgoing {
                                slot,
                                len,
                                addr: *addr,
                                to,
                            });
                        }
                        Some(port) => {
                            match send_to(&self.data.fd, port, self.rx.frame(slot, len)) {
                                Delivery::Sent => port.tx.frame(len),
                                Delivery::Full => port.tx.queue_full += 1,
                                Delivery::Gone => dead.push(to),
                            }
                        }
                        None => {}
                    }
                }
                if let Some(ts) = ts {
                    let frame = self.rx.frame(slot, len).to_vec();
                    self.capture_sent(&frame, ts);
                }
            }
            // A copy whose port's queue is full is dropped for that port only.
            let mut refused = Vec::new();
            self.rx.send(fd, &self.tx, &mut dead, &mut refused);
            for i in refused {
                if let Some(&Outgoing { to, len, .. }) = self.tx.get(i) {
                    if let Some(port) = self.ports.get_mut(to) {
                        port.tx.refused(len);
                    }
                }
            }
            self.tx.clear();
            dead.sort_unstable();
            dead.dedup();
            for id in dead {
                self.close_port(id, "Disconnect");
            }
            if received.len() < RX_BATCH {
                return;
            }
        }
    }
}

/// What became of a frame sent to a port.
enum Delivery {
    /// The kernel took it.
    Sent,
    /// The port's queue was full (or the send failed otherwise): dropped for that port only.
    Full,
    /// The port is gone for good (for a daemon port: its data socket is;
    /// another socket may bind the name later).
    Gone,
}

/// Sends one frame to a port without waiting.
fn send_to(data: &OwnedFd, port: &Port, frame: &[u8]) -> Delivery {
    let sent = match &port.link {
        Link::Daemon { addr, .. } => {
            match sendto(data.as_raw_fd(), frame, addr, MsgFlags::MSG_DONTWAIT) {
                Err(e) if destination_gone(e) => return Delivery::Gone,
                other => other.is_ok(),
            }
        }
        Link::Bess(fd) => match send(
            fd.as_raw_fd(),
            frame,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => return Delivery::Gone,
            other => other.is_ok(),
        },
        Link::Tap(file) => (&*file).write(frame).is_ok(),
        Link::Vxlan {
            socket,
            dest,
            header,
        } => {
            // Header and frame gathered by the kernel: no copy of the frame.
            let parts = [IoSlice::new(header.as_bytes()), IoSlice::new(frame)];
            sendmsg(
                socket.as_raw_fd(),
                &parts,
                &[],
                MsgFlags::MSG_DONTWAIT,
                Some(&SockaddrIn::from(*dest)),
            )
            .is_ok()
        }
    };
    if sent { Delivery::Sent } else { Delivery::Full }
}

/// Sends one frame to a port without waiting, counted in the port's sent
/// frames or its full-queue drops (the fabric's path; the plain path counts
/// where it sends); a full queue drops the frame for that port only.
/// Returns false when the port is gone for good (for a daemon port: its data
/// socket is; another socket may bind the name later).
pub(crate) fn deliver_counted(data: &OwnedFd, port: &mut Port, frame: &[u8]) -> bool {
    match send_to(data, port, frame) {
        Delivery::Sent => port.tx.frame(frame.len()),
        Delivery::Full => port.tx.queue_full += 1,
        Delivery::Gone => return false,
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
        ] {
            assert_eq!(Token::from_event(token.into()), Some(token));
        }
        assert_eq!(Token::from_event(0), None);
        assert_eq!(Token::from_event(12 << KIND_SHIFT), None);
    }
}
