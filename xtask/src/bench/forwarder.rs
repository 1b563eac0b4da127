//! The reference forwarder of `bench switch`: the least work any one-thread
//! switch on the daemon transport must do per frame. It receives a batch of
//! datagrams in one `recvmmsg`, and sends each frame on to connected peers in
//! one `sendmmsg` per peer, without looking at it: no learning, no address
//! lookup, nothing that could be made cheaper. Its CPU per frame is the
//! physical limit every switch is measured against.
//!
//! It runs as a process of its own (`xtask bench-forward`), so that it can be
//! pinned to the switch's CPU and its CPU time read like a switch's.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, recvmmsg, sendmmsg};

/// Frames taken per `recvmmsg`.
const BATCH: usize = 32;
/// Receive buffer per frame.
const FRAME: usize = 2048;

/// How received frames are spread over the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Each frame to one peer, the peers in turn (unicast).
    RoundRobin,
    /// Each frame to every peer (flooding).
    All,
}

impl Spread {
    /// Its name on the command line.
    pub fn arg(self) -> &'static str {
        match self {
            Spread::RoundRobin => "round-robin",
            Spread::All => "all",
        }
    }
}

/// An abstract name given on the command line as hex (full-length names
/// hold NULs).
pub fn peer_name(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .with_context(|| format!("bench: peer name '{hex}' is not hex"))
}

/// `name` as [`peer_name`] reads it.
pub fn hex_name(name: &[u8]) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// `xtask bench-forward NAME SPREAD PEER...`: binds the abstract name NAME,
/// connects one socket to each abstract PEER (its bytes in hex: full-length
/// names hold NULs), and forwards until killed.
pub fn run(args: &[String]) -> Result<()> {
    let [name, spread, peers @ ..] = args else {
        bail!("usage: xtask bench-forward NAME round-robin|all PEER...");
    };
    let spread = match spread.as_str() {
        "round-robin" => Spread::RoundRobin,
        "all" => Spread::All,
        other => bail!("bench-forward: unknown spread '{other}'"),
    };
    if peers.is_empty() {
        bail!("bench-forward: no peers");
    }
    let own = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        .context("binding the forwarder's socket")?;
    let outs = peers
        .iter()
        .map(|peer| {
            let sock = UnixDatagram::unbound()?;
            sock.connect_addr(&SocketAddr::from_abstract_name(peer_name(peer)?)?)?;
            Ok(sock)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut bufs = vec![[0u8; FRAME]; BATCH];
    let mut rx = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut next = 0;
    loop {
        let lens: Vec<usize> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(
                own.as_raw_fd(),
                &mut rx,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => msgs.map(|m| m.bytes).collect(),
                Err(_) => continue,
            }
        };
        let frames: Vec<[IoSlice<'_>; 1]> = bufs
            .iter()
            .zip(&lens)
            .map(|(b, &len)| [IoSlice::new(&b[..len])])
            .collect();
        let targets: Vec<&UnixDatagram> = match spread {
            Spread::All => outs.iter().collect(),
            Spread::RoundRobin => {
                next = (next + 1) % outs.len();
                vec![&outs[next]]
            }
        };
        let none: Vec<Option<()>> = vec![None; frames.len()];
        for out in targets {
            // Blocking: a full peer queue makes the forwarder wait, not drop,
            // so every frame it handles is delivered and its CPU per delivered
            // frame is the true minimum.
            let mut from = 0;
            while from < frames.len() {
                match sendmmsg(
                    out.as_raw_fd(),
                    &mut tx,
                    frames[from..].iter(),
                    &none[from..],
                    [],
                    MsgFlags::empty(),
                ) {
                    Ok(sent) => from += sent.count().max(1),
                    Err(_) => break,
                }
            }
        }
    }
}
