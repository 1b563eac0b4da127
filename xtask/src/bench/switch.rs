//! `cargo xtask bench switch`: the C `uml_switch`, `vde_switch` and ours under
//! the same load, plus the load generator's own ceiling without any switch.
//!
//! The load generator speaks the kernel's v3 protocol: N ports, each an
//! abstract datagram socket bound with the full 110-byte address, one sender
//! and one receiver thread per port. Patterns: `pairs` (port i sends unicast to
//! port i^1, all ports at once) and `broadcast` (every port floods). Senders
//! block when the switch's queue is full, so loss only happens where a switch
//! drops frames. Delivered frames/s counts frames received by ports; switch CPU
//! comes from /proc/PID/stat. Ping-pong bounces one frame between two ports.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use uml_proto::switch::{PeerAddr, RequestV3, SOCKADDR_UN_LEN};
use zerocopy::IntoBytes;

use super::option;
use crate::provision::find_program;

const BROADCAST: [u8; 6] = [0xff; 6];

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
    mac: [u8; 6],
}

fn connect(running: &Running, index: usize) -> Result<Port> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = [0u8; 107];
    let label = format!("bench-{}-{n}", std::process::id());
    name[..label.len()].copy_from_slice(label.as_bytes());
    let own = SocketAddr::from_abstract_name(name)?;
    let data = UnixDatagram::bind_addr(&own)?;
    data.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mac = [2, 0xbe, 0, 0, 0, index as u8 + 1];
    if running.child.is_none() {
        return Ok(Port {
            data,
            _control: None,
            to: None,
            own,
            mac,
        });
    }
    let mut control = UnixStream::connect(&running.ctl)?;
    let mut request = RequestV3::new(PeerAddr::from_abstract_name(&name)?)
        .as_bytes()
        .to_vec();
    request.extend_from_slice(&[0, 0]); // the kernel's tail padding: 124 bytes
    control.write_all(&request)?;
    let mut reply = [0u8; SOCKADDR_UN_LEN];
    control.read_exact(&mut reply)?;
    let switch = PeerAddr::from_prefix(&reply)?;
    let to = match (switch.abstract_name(), switch.filesystem_path()) {
        (Some(name), _) => SocketAddr::from_abstract_name(name)?,
        (None, Some(path)) => SocketAddr::from_pathname(path)?,
        (None, None) => bail!("the switch answered with an empty address"),
    };
    Ok(Port {
        data,
        _control: Some(control),
        to: Some(to),
        own,
        mac,
    })
}

fn frame(dst: [u8; 6], src: [u8; 6], size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size.max(14)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
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
    let mut all: Vec<Port> = (0..ports)
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
    let macs: Vec<[u8; 6]> = all.iter().map(|p| p.mac).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let cpu_before = running.cpu_seconds();
    let started = Instant::now();
    let mut threads = Vec::new();
    for (i, port) in all.drain(..).enumerate() {
        let reader = port.data.try_clone()?;
        let (stop_r, received) = (Arc::clone(&stop), Arc::clone(&received));
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 70000];
            let mut count = 0;
            loop {
                match reader.recv(&mut buf) {
                    Ok(_) => count += 1,
                    Err(_) if stop_r.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            received.fetch_add(count, Ordering::Relaxed);
        }));
        // Destinations: the switch, or (direct) the partner or every other port.
        let (targets, dst_mac): (Vec<SocketAddr>, [u8; 6]) = match (direct, pattern) {
            (false, Pattern::Pairs) => (
                vec![port.to.clone().unwrap_or_else(|| owns[i ^ 1].clone())],
                macs[i ^ 1],
            ),
            (false, Pattern::Broadcast) => (port.to.iter().cloned().collect(), BROADCAST),
            (true, Pattern::Pairs) => (vec![owns[i ^ 1].clone()], macs[i ^ 1]),
            (true, Pattern::Broadcast) => (
                owns.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, a)| a.clone())
                    .collect(),
                BROADCAST,
            ),
        };
        let payload = frame(dst_mac, port.mac, size);
        let (stop_s, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        threads.push(std::thread::spawn(move || {
            // The whole port, control connection included: a port lives as long as it.
            let port = port;
            let mut count = 0u64;
            while !stop_s.load(Ordering::Relaxed) {
                for target in &targets {
                    let _ = port.data.send_to_addr(&payload, target);
                }
                count += 1;
            }
            sent.fetch_add(count, Ordering::Relaxed);
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let cpu = running.cpu_seconds() - cpu_before;
    Ok(Load {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        secs: elapsed,
        cpu,
    })
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
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99)))
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
