//! The ping-pong floors of `bench switch`: relays that bounce frames between
//! two ports with the least work a one-thread switch can do on the daemon
//! transport, one per way of holding the ports' sockets and of waiting for
//! them. No learning and no look-up: a frame from one port goes to the other.
//!
//! - `shared-poll`: one socket for both ports, `poll`, `recvfrom` and
//!   `sendto` by name: the C switch's way.
//! - `ports-epoll`: a socket per port, bound and connected to its port,
//!   `epoll_wait`, `recv` and `send`: ours.
//! - `ports-poll`: the same sockets, waited for with `poll`.
//!
//! Each relay's round trip is the floor of its design on this machine; a
//! switch's distance from its design's floor is what the switch itself adds.
//! It runs as a process of its own (`xtask bench-relay`), pinned like a switch.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::forwarder::peer_name;

/// Receive buffer: one frame.
const FRAME: usize = 2048;

/// How a relay holds its ports' sockets and waits for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// One socket for both ports, `poll`, `sendto` by name.
    SharedPoll,
    /// A connected socket per port, `poll`.
    PortsPoll,
    /// A connected socket per port, `epoll`.
    PortsEpoll,
}

impl Design {
    /// Every design, in the order the bench reports them.
    pub const ALL: [Design; 3] = [Design::SharedPoll, Design::PortsPoll, Design::PortsEpoll];

    /// Its name on the command line.
    pub fn arg(self) -> &'static str {
        match self {
            Design::SharedPoll => "shared-poll",
            Design::PortsPoll => "ports-poll",
            Design::PortsEpoll => "ports-epoll",
        }
    }

    /// What the bench's table calls it.
    pub fn label(self) -> &'static str {
        match self {
            Design::SharedPoll => "shared socket + poll (C's way)",
            Design::PortsPoll => "socket per port + poll",
            Design::PortsEpoll => "socket per port + epoll (ours)",
        }
    }

    /// The abstract names the ports send to, for a relay named `name`:
    /// one shared, or one per port.
    pub fn addresses(self, name: &str) -> [String; 2] {
        match self {
            Design::SharedPoll => [name.to_owned(), name.to_owned()],
            Design::PortsPoll | Design::PortsEpoll => [format!("{name}-a"), format!("{name}-b")],
        }
    }
}

fn bind(name: &str) -> Result<UnixDatagram> {
    UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        .with_context(|| format!("bench-relay: binding @{name}"))
}

/// `xtask bench-relay DESIGN NAME A B`: relays frames between the ports
/// bound to the abstract names A and B (their bytes in hex: full-length
/// names hold NULs) until killed.
pub fn run(args: &[String]) -> Result<()> {
    let [design, name, a, b] = args else {
        bail!("usage: xtask bench-relay shared-poll|ports-poll|ports-epoll NAME A B");
    };
    let design = Design::ALL
        .into_iter()
        .find(|d| d.arg() == design)
        .with_context(|| format!("bench-relay: unknown design '{design}'"))?;
    let peers = [
        SocketAddr::from_abstract_name(peer_name(a)?)?,
        SocketAddr::from_abstract_name(peer_name(b)?)?,
    ];
    let [to_a, to_b] = design.addresses(name);
    let mut buf = [0u8; FRAME];
    if design == Design::SharedPoll {
        let own = bind(&to_a)?;
        let mut polled = [PollFd::new(own.as_fd(), PollFlags::POLLIN)];
        ready()?;
        loop {
            wait_poll(&mut polled)?;
            let Ok((len, from)) = own.recv_from(&mut buf) else {
                continue;
            };
            // The C switch tells its ports apart by the sender's name, too.
            let to = if from.as_abstract_name() == peers[0].as_abstract_name() {
                &peers[1]
            } else {
                &peers[0]
            };
            let _ = own.send_to_addr(&buf[..len], to);
        }
    }
    let sockets = [bind(&to_a)?, bind(&to_b)?];
    for (socket, peer) in sockets.iter().zip(&peers) {
        socket
            .connect_addr(peer)
            .context("bench-relay: connecting to a port")?;
        socket.set_nonblocking(true)?;
    }
    let epoll = (design == Design::PortsEpoll)
        .then(|| -> Result<Epoll> {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            for (i, socket) in (0u64..).zip(&sockets) {
                epoll.add(socket.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i))?;
            }
            Ok(epoll)
        })
        .transpose()?;
    let mut events = [EpollEvent::empty(); 2];
    let mut polled = sockets
        .each_ref()
        .map(|socket| PollFd::new(socket.as_fd(), PollFlags::POLLIN));
    ready()?;
    loop {
        let readable: [bool; 2] = match &epoll {
            Some(epoll) => {
                let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
                let mut found = [false; 2];
                for event in &events[..n] {
                    if let Some(r) = found.get_mut(usize::try_from(event.data())?) {
                        *r = true;
                    }
                }
                found
            }
            None => wait_poll(&mut polled)?,
        };
        for (from, to) in [(0, 1), (1, 0)] {
            if readable[from] {
                if let Ok(len) = sockets[from].recv(&mut buf) {
                    let _ = sockets[to].send(&buf[..len]);
                }
            }
        }
    }
}

/// Tells the bench that the relay's sockets are bound and connected.
fn ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

/// Waits with `poll` until one of `polled` has a frame; which ones do.
fn wait_poll(polled: &mut [PollFd<'_>]) -> Result<[bool; 2]> {
    match poll(polled, PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e).context("bench-relay: poll"),
    }
    let mut found = [false; 2];
    for (r, p) in found.iter_mut().zip(polled.iter()) {
        *r = p.revents().is_some_and(|e| !e.is_empty());
    }
    Ok(found)
}
