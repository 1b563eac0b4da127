//! `cargo xtask bench switch`: the C `uml_switch`, `vde_switch` and ours under
//! the same load, plus the load generator's own ceiling without any switch.
//!
//! The load generator speaks the kernel's v3 protocol: N ports, each an
//! abstract datagram socket bound with the full 110-byte address (the test
//! bed's `SwitchClient`, shared with the switch tests). One thread sends for
//! every port (bursts of `sendmmsg`, port by port) and each port has a thread
//! blocked in `recv`, which wakes as soon as a frame arrives, so the ports'
//! short queues rarely overflow and the harness takes as little of the
//! machine's CPU from the switch as it can. Patterns: `pairs` (port i sends unicast to
//! port i^1, all ports at once) and `broadcast` (every port floods). Senders
//! block when the switch's queue is full, so loss only happens where a switch
//! drops frames. Delivered frames/s counts frames received by ports; switch CPU
//! comes from /proc/PID/stat. Ping-pong bounces one frame between two ports.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, UnixAddr, sendmmsg};
use uml_proto::ethernet::{EthernetHeader, HEADER_LEN, MacAddr};
use uml_testbed::switch_client::{SwitchClient, bind_data_socket};
use zerocopy::IntoBytes;

use super::option;
use crate::provision::find_program;

const BROADCAST: MacAddr = MacAddr::BROADCAST;

/// Which switch a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Ports send straight to each other: the harness's own ceiling.
    Direct,
    C,
    Vde,
    Ours,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct (ceiling)",
            Kind::C => "C uml_switch",
            Kind::Vde => "vde_switch",
            Kind::Ours => "ours",
        }
    }
}

/// A switch process and where its control socket is.
struct Running {
    child: Option<Child>,
    ctl: PathBuf,
}

impl Running {
    fn start(kind: Kind, root: &Path, dir: &Path) -> Result<Self> {
        let ctl;
        let child = match kind {
            Kind::Direct => {
                ctl = PathBuf::new();
                None
            }
            Kind::C | Kind::Ours => {
                ctl = dir.join(format!("{kind:?}.ctl"));
                let program = if kind == Kind::C {
                    find_program("uml_switch")
                        .context("the C uml_switch (uml-utilities) is missing")?
                } else {
                    root.join("target/release/uml_switch")
                };
                Some(
                    Command::new(program)
                        .arg("-unix")
                        .arg(&ctl)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()?,
                )
            }
            Kind::Vde => {
                let sock_dir = dir.join("vde");
                ctl = sock_dir.join("ctl");
                let program = find_program("vde_switch").context("vde_switch (vde2) is missing")?;
                // Its management console reads stdin: keep a pipe open.
                Some(
                    Command::new(program)
                        .arg("-s")
                        .arg(&sock_dir)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .spawn()?,
                )
            }
        };
        let running = Self { child, ctl };
        if kind != Kind::Direct {
            let deadline = Instant::now() + Duration::from_secs(10);
            while UnixStream::connect(&running.ctl).is_err() {
                if Instant::now() > deadline {
                    bail!("{} did not start", kind.name());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(running)
    }

    /// User plus system CPU seconds the switch has used.
    fn cpu_seconds(&self) -> f64 {
        let Some(child) = &self.child else { return 0.0 };
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One port of the load generator.
struct Port {
    data: UnixDatagram,
    _control: Option<UnixStream>,
    /// Where this port's frames go: the switch, or (direct) filled in later.
    to: Option<SocketAddr>,
    own: SocketAddr,
    mac: MacAddr,
}

fn connect(running: &Running, index: usize) -> Result<Port> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let label = format!("bench-{}-{n}", std::process::id());
    let mac = MacAddr([2, 0xbe, 0, 0, 0, u8::try_from(index + 1)?]);
    let (data, own, control, to) = if running.child.is_none() {
        let (data, own, _) = bind_data_socket(&label)?;
        (data, own, None, None)
    } else {
        let client = SwitchClient::connect(&running.ctl, &label)?;
        (
            client.data,
            client.own,
            Some(client.control),
            Some(client.switch),
        )
    };
    data.set_read_timeout(Some(Duration::from_millis(200)))?;
    // A sender blocked on a full queue still sees the end of the run.
    data.set_write_timeout(Some(Duration::from_millis(200)))?;
    Ok(Port {
        data,
        _control: control,
        to,
        own,
        mac,
    })
}

/// A frame of `size` bytes (at least a header) of the local experimental EtherType.
fn frame(dst: MacAddr, src: MacAddr, size: usize) -> Vec<u8> {
    let mut f = EthernetHeader::new(dst, src, 0x88b5).as_bytes().to_vec();
    f.resize(size.max(HEADER_LEN), 0);
    f
}

/// The traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Pairs,
    Broadcast,
}

/// What one load run measured.
struct Load {
    sent: u64,
    received: u64,
    secs: f64,
    cpu: f64,
}

impl Load {
    fn expected(&self, pattern: Pattern, ports: usize) -> u64 {
        match pattern {
            Pattern::Pairs => self.sent,
            Pattern::Broadcast => self.sent * (ports as u64 - 1),
        }
    }
}

fn run_load(
    running: &Running,
    pattern: Pattern,
    size: usize,
    ports: usize,
    secs: f64,
) -> Result<Load> {
    let all: Vec<Port> = (0..ports)
        .map(|i| connect(running, i))
        .collect::<Result<_>>()?;
    let direct = running.child.is_none();
    // Let the switch learn every port, then forget the warm-up frames.
    if !direct {
        for port in &all {
            port.data.send_to_addr(
                &frame(BROADCAST, port.mac, 64),
                port.to.as_ref().context("switch address")?,
            )?;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 2048];
        for port in &all {
            port.data.set_nonblocking(true)?;
            while port.data.recv(&mut buf).is_ok() {}
            port.data.set_nonblocking(false)?;
        }
    }
    let owns: Vec<SocketAddr> = all.iter().map(|p| p.own.clone()).collect();
    let macs: Vec<MacAddr> = all.iter().map(|p| p.mac).collect();
    // Each port's frame and destinations: the switch, or (direct) the partner
    // or every other port.
    let mut plans = Vec::new();
    for (i, port) in all.iter().enumerate() {
        let (targets, dst_mac): (Vec<&SocketAddr>, MacAddr) = match (direct, pattern) {
            (false, Pattern::Pairs) => (port.to.iter().collect(), macs[i ^ 1]),
            (false, Pattern::Broadcast) => (port.to.iter().collect(), BROADCAST),
            (true, Pattern::Pairs) => (vec![&owns[i ^ 1]], macs[i ^ 1]),
            (true, Pattern::Broadcast) => (
                owns.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, a)| a)
                    .collect(),
                BROADCAST,
            ),
        };
        let targets = targets
            .into_iter()
            .map(nix_addr)
            .collect::<Result<Vec<UnixAddr>>>()?;
        plans.push((frame(dst_mac, port.mac, size), targets));
    }
    let readers: Vec<UnixDatagram> = all
        .iter()
        .map(|p| p.data.try_clone())
        .collect::<std::io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = running.cpu_seconds();
    let started = Instant::now();
    let receivers: Vec<_> = readers
        .into_iter()
        .map(|reader| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || receive_port(&reader, &stop))
        })
        .collect();
    let sender = {
        let stop = Arc::clone(&stop);
        // The ports themselves, control connections included: a port lives as long as it.
        std::thread::spawn(move || send_all(&all, &plans, &stop))
    };
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    let mut received = 0;
    for receiver in receivers {
        received += receiver
            .join()
            .map_err(|_| anyhow::anyhow!("a receiver panicked"))?;
    }
    let cpu = running.cpu_seconds() - cpu_before;
    Ok(Load {
        sent,
        received,
        secs: elapsed,
        cpu,
    })
}

/// Copies of a port's frame per `sendmmsg`, before the sender moves to the next port.
const BURST: usize = 16;

fn nix_addr(addr: &SocketAddr) -> Result<UnixAddr> {
    Ok(match (addr.as_abstract_name(), addr.as_pathname()) {
        (Some(name), _) => UnixAddr::new_abstract(name)?,
        (None, Some(path)) => UnixAddr::new(path)?,
        (None, None) => bail!("an unnamed destination"),
    })
}

/// The whole load from one thread: each port in turn sends a burst to each of
/// its destinations, blocking while the destination's queue is full. Returns
/// the frames sent (counting a frame once, however many destinations).
fn send_all(ports: &[Port], plans: &[(Vec<u8>, Vec<UnixAddr>)], stop: &AtomicBool) -> u64 {
    let mut headers = MultiHeaders::<UnixAddr>::preallocate(BURST, None);
    let mut copies = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (port, (payload, targets)) in ports.iter().zip(plans) {
            let slices: Vec<[IoSlice<'_>; 1]> =
                (0..BURST).map(|_| [IoSlice::new(payload)]).collect();
            for target in targets {
                let addrs = vec![Some(*target); BURST];
                if let Ok(sent) = sendmmsg(
                    port.data.as_raw_fd(),
                    &mut headers,
                    slices.iter(),
                    &addrs,
                    [],
                    MsgFlags::empty(),
                ) {
                    copies += sent.count() as u64;
                }
            }
        }
    }
    let fanout = plans.first().map_or(1, |(_, t)| t.len().max(1)) as u64;
    copies / fanout
}

/// One port's frames, from a thread of its own: a reader blocked in `recv`
/// wakes as soon as a frame arrives, so the port's short queue (10 datagrams
/// by default) rarely overflows. Returns the frames received.
fn receive_port(reader: &UnixDatagram, stop: &AtomicBool) -> u64 {
    let mut buf = vec![0u8; 70000];
    let mut count = 0;
    loop {
        match reader.recv(&mut buf) {
            Ok(_) => count += 1,
            Err(_) if stop.load(Ordering::Relaxed) => return count,
            Err(_) => {}
        }
    }
}

/// Round trips of one frame between two ports: (p50, p99).
fn ping_pong(running: &Running, rounds: usize) -> Result<(Duration, Duration)> {
    let a = connect(running, 0)?;
    let b = connect(running, 1)?;
    let to_b = a.to.clone().unwrap_or_else(|| b.own.clone());
    let to_a = b.to.clone().unwrap_or_else(|| a.own.clone());
    let (a_mac, b_mac) = (a.mac, b.mac);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::clone(&stop);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let reply = frame(a_mac, b_mac, 64);
        while !stop_b.load(Ordering::Relaxed) {
            if b.data.recv(&mut buf).is_ok() {
                let _ = b.data.send_to_addr(&reply, &to_a);
            }
        }
    });
    // Teach the switch both addresses first.
    let mut buf = [0u8; 2048];
    a.data.send_to_addr(&frame(b_mac, a_mac, 64), &to_b)?;
    let _ = a.data.recv(&mut buf);
    let mut times = Vec::with_capacity(rounds);
    let request = frame(b_mac, a_mac, 64);
    for _ in 0..rounds {
        let t = Instant::now();
        a.data.send_to_addr(&request, &to_b)?;
        if a.data.recv(&mut buf).is_ok() {
            times.push(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    times.sort();
    if times.is_empty() {
        bail!("no ping-pong round trip completed");
    }
    // The sample `permille` of the way through the sorted round trips, rounded down.
    let last = times.len() - 1;
    let at = |permille: usize| times[last * permille / 1000];
    Ok((at(500), at(990)))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let secs: f64 = option(args, "--secs", 3.0)?;
    crate::cargo(root, &["build", "--release", "--quiet", "-p", "uml_switch"])?;
    let dir = tempfile_dir(root)?;
    let kinds = [Kind::Direct, Kind::C, Kind::Vde, Kind::Ours];
    println!(
        "uml_switch benchmark: {secs} s per cell; frames/s delivered to ports (loss), switch CPU s per million frames\n"
    );
    println!("| cell | direct (ceiling) | C uml_switch | vde_switch | ours | ours / C |");
    println!("|---|---:|---:|---:|---:|---:|");
    for pattern in [Pattern::Pairs, Pattern::Broadcast] {
        for size in [64, 1500] {
            for ports in [2, 8] {
                let mut cells = Vec::new();
                let mut fps = [0.0; 4];
                for (k, kind) in kinds.iter().enumerate() {
                    let running = Running::start(*kind, root, &dir)?;
                    let load = run_load(&running, pattern, size, ports, secs)?;
                    let rate = load.received as f64 / load.secs;
                    fps[k] = rate;
                    let expected = load.expected(pattern, ports).max(1);
                    let loss = 100.0 * (1.0 - load.received as f64 / expected as f64).max(0.0);
                    let cpu = if *kind == Kind::Direct {
                        String::new()
                    } else {
                        format!(
                            ", {:.2} s/M",
                            load.cpu / (load.received.max(1) as f64 / 1e6)
                        )
                    };
                    cells.push(format!("{:.0}k ({loss:.1}%{cpu})", rate / 1000.0));
                }
                println!(
                    "| {pattern:?} {size} B, {ports} ports | {} | {:.2}x |",
                    cells.join(" | "),
                    fps[3] / fps[1].max(1.0)
                );
            }
        }
    }
    let mut latencies = Vec::new();
    for kind in kinds {
        let running = Running::start(kind, root, &dir)?;
        let (p50, p99) = ping_pong(&running, 20_000)?;
        latencies.push(format!(
            "{:.1} / {:.1} us",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        ));
    }
    println!("| ping-pong p50 / p99 | {} | |", latencies.join(" | "));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/bench-switch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
