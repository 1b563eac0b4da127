//! `cargo xtask bench switch`: the C `uml_switch`, `vde_switch` and ours under
//! the same load, against a reference forwarder (the least work any one-thread
//! switch on this transport must do, see `forwarder.rs`).
//!
//! The load generator speaks the kernel's v3 protocol: N ports, each an
//! abstract datagram socket bound with the full 110-byte address (the test
//! bed's `SwitchClient`, shared with the switch tests), or, for our switch's
//! BESS cells, a SOCK_SEQPACKET connection. One thread sends for every port
//! (bursts of `sendmmsg`, port by port) and each port has a thread blocked in
//! `recv`, which wakes as soon as a frame arrives. Patterns: `pairs` (port i
//! sends unicast to port i^1), `broadcast` (every port floods) and
//! `all-to-one` (every other port sends to port 0, whose full queue is then
//! the normal state). Senders block when a switch's queue is full, so loss
//! only happens where a switch drops frames.
//!
//! Pinned (the default), the harness runs on CPU 0 and the switch alone on
//! CPU 1, so every switch gets one whole CPU and its CPU seconds per million
//! delivered frames (from /proc/PID/stat) is the figure that compares them;
//! `--unpinned` lets the scheduler place everything. Each cell is the median
//! of `--reps` runs by delivered frames/s. Ping-pong bounces one frame between
//! two ports with harness and switch on one CPU, 20,000 round trips a round,
//! the switches taking turns for `--reps` rounds; the median round is shown,
//! with the CPU time per round trip of the switch and of the ports' threads
//! (on one CPU their sum is the round trip, so these say where it goes).
//! Three relays that do no switching at all take their turns in the same
//! rounds: the floors of the C switch's design and of ours (`relay.rs`).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::socket::{MsgFlags, MultiHeaders, UnixAddr, recv, sendmmsg, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use uml_proto::ethernet::{EthernetHeader, HEADER_LEN, MacAddr};
use uml_testbed::switch_client::{SwitchClient, bind_data_socket, connect_bess};
use zerocopy::IntoBytes;

use super::forwarder::{Spread, hex_name};
use super::option;
use super::relay::Design;
use crate::provision::find_program;

const BROADCAST: MacAddr = MacAddr::BROADCAST;

/// Which switch a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The reference forwarder: the transport's physical limit.
    Reference,
    C,
    Vde,
    Ours,
    /// Ours, capturing every frame to a pcapng file.
    OursCapturing,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Reference => "reference",
            Kind::C => "C uml_switch",
            Kind::Vde => "vde_switch",
            Kind::Ours => "ours",
            Kind::OursCapturing => "ours, capturing",
        }
    }
}

/// How the ports reach the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Every port on the daemon transport.
    Daemon,
    /// Every port a BESS connection (ours only).
    Bess,
    /// Even ports daemon, odd ports BESS (ours only).
    Mixed,
    /// Daemon ports on an 802.1Q trunk endpoint, frames tagged (ours only):
    /// every frame untagged on the way in and tagged again on the way out.
    Trunk,
    /// Daemon ports on an endpoint whose links delay every frame by 1 ms
    /// (ours only): every frame waits in the emulation's timer heap.
    Emulated,
}

/// The VLAN the trunk cells' frames are tagged with.
const BENCH_VID: u16 = 10;

/// The traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Pairs,
    Broadcast,
    AllToOne,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
struct Cell {
    pattern: Pattern,
    size: usize,
    ports: usize,
    transport: Transport,
}

impl Cell {
    fn label(&self) -> String {
        let transport = match self.transport {
            Transport::Daemon => "",
            Transport::Bess => ", BESS",
            Transport::Mixed => ", daemon+BESS",
            Transport::Trunk => ", 802.1Q trunk",
            Transport::Emulated => ", 1 ms emulated delay",
        };
        format!(
            "{:?} {} B, {} ports{transport}",
            self.pattern, self.size, self.ports
        )
    }

    /// Copies of each sent frame the receivers should see.
    fn fanout(&self, kind: Kind) -> u64 {
        let ports = u64::try_from(self.ports).unwrap_or(u64::MAX);
        match (self.pattern, kind) {
            (Pattern::Pairs | Pattern::AllToOne, _) => 1,
            // The reference floods to every port, the sender's included.
            (Pattern::Broadcast, Kind::Reference) => ports,
            (Pattern::Broadcast, _) => ports - 1,
        }
    }
}

/// Pins `pid` (0: this thread, and the threads it starts later) to one CPU.
fn pin(pid: Pid, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(pid, &set).with_context(|| format!("pinning {pid} to CPU {cpu}"))
}

/// A switch (or the reference forwarder) process, pinned where asked.
struct Running {
    child: Child,
    ctl: PathBuf,
    bess: PathBuf,
    /// The forwarder's data address, which ports send to directly.
    forwarder: Option<SocketAddr>,
}

impl Running {
    /// Starts a switch; its control socket (and for ours, a BESS socket) in `dir`.
    fn start(kind: Kind, ours: &Path, dir: &Path, cpu: Option<usize>) -> Result<Self> {
        Self::start_with(kind, ours, dir, cpu, Transport::Daemon)
    }

    /// [`Running::start`]; for our switch's trunk and emulated cells, with
    /// an `--endpoint` that the ports connect to instead of the control socket.
    fn start_with(
        kind: Kind,
        ours: &Path,
        dir: &Path,
        cpu: Option<usize>,
        transport: Transport,
    ) -> Result<Self> {
        let ctl = dir.join(format!("{kind:?}.ctl"));
        let bess = dir.join(format!("{kind:?}.bess"));
        let endpoint = dir.join(format!("{kind:?}-endpoint.ctl"));
        let template = match transport {
            Transport::Trunk => Some(format!("trunk={BENCH_VID}")),
            Transport::Emulated => Some("delay=1ms".to_owned()),
            Transport::Daemon | Transport::Bess | Transport::Mixed => None,
        };
        let mut command = match kind {
            Kind::C => {
                let mut c = Command::new(
                    find_program("uml_switch")
                        .context("the C uml_switch (uml-utilities) is missing")?,
                );
                // One stderr line per frame it drops for a full queue: kept
                // out of the table.
                c.arg("-unix")
                    .arg(&ctl)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null());
                c
            }
            Kind::Ours | Kind::OursCapturing => {
                let mut c = Command::new(ours);
                c.arg("-unix")
                    .arg(&ctl)
                    .arg("-bess")
                    .arg(&bess)
                    .stdin(Stdio::null());
                if kind == Kind::OursCapturing {
                    // Rotating, so that a long run does not fill the disk.
                    c.arg("--pcap")
                        .arg(dir.join("bench.pcapng"))
                        .args(["--pcap-rotate", "64M,2"]);
                }
                if let Some(template) = &template {
                    c.arg("--endpoint")
                        .arg(format!("unix:{},{template}", endpoint.display()));
                    c.stdout(Stdio::null());
                    return Self::spawn(c, endpoint, bess, cpu);
                }
                c
            }
            Kind::Vde => {
                let sock_dir = dir.join("vde");
                let mut c = Command::new(
                    find_program("vde_switch").context("vde_switch (vde2) is missing")?,
                );
                // Its management console reads stdin: keep a pipe open.
                c.arg("-s")
                    .arg(&sock_dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                return Self::spawn(c, sock_dir.join("ctl"), bess, cpu);
            }
            Kind::Reference => bail!("the reference forwarder starts with its ports"),
        };
        command.stdout(Stdio::null());
        Self::spawn(command, ctl, bess, cpu)
    }

    /// Spawns `command`, owned at once so that it is killed on any error
    /// after, and pins it to `cpu`.
    fn launch(
        command: &mut Command,
        ctl: PathBuf,
        bess: PathBuf,
        forwarder: Option<SocketAddr>,
        cpu: Option<usize>,
    ) -> Result<Self> {
        let running = Self {
            child: command.spawn()?,
            ctl,
            bess,
            forwarder,
        };
        if let Some(cpu) = cpu {
            pin(Pid::from_raw(i32::try_from(running.child.id())?), cpu)?;
        }
        Ok(running)
    }

    fn spawn(
        mut command: Command,
        ctl: PathBuf,
        bess: PathBuf,
        cpu: Option<usize>,
    ) -> Result<Self> {
        let running = Self::launch(&mut command, ctl, bess, None, cpu)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&running.ctl).is_err() {
            if Instant::now() > deadline {
                bail!("the switch did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(running)
    }

    /// Starts the reference forwarder for `ports`.
    fn reference(ports: &[Port], spread: Spread, cpu: Option<usize>) -> Result<Self> {
        let name = format!("bench-forward-{}", std::process::id());
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("bench-forward").arg(&name).arg(spread.arg());
        for port in ports {
            let own = port.own.as_ref().context("a datagram port")?;
            let peer = own.as_abstract_name().context("an abstract port name")?;
            // Full-length names hold NULs: passed as hex.
            command.arg(hex_name(peer));
        }
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        command.stdin(Stdio::null());
        let forwarder = Self::launch(
            &mut command,
            PathBuf::new(),
            PathBuf::new(),
            Some(addr.clone()),
            cpu,
        )?;
        let probe = UnixDatagram::unbound()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.connect_addr(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("the reference forwarder did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(forwarder)
    }

    /// Starts a ping-pong relay of `design` between ports `a` and `b`, and
    /// points each port at the address it sends to.
    fn relay(design: Design, a: &mut Port, b: &mut Port, cpu: Option<usize>) -> Result<Self> {
        let name = format!(
            "bench-relay-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("bench-relay").arg(design.arg()).arg(&name);
        for port in [&*a, &*b] {
            let own = port.own.as_ref().context("a datagram port")?;
            command.arg(hex_name(
                own.as_abstract_name().context("an abstract port name")?,
            ));
        }
        let [to_a, to_b] = design.addresses(&name);
        let addrs = [
            SocketAddr::from_abstract_name(to_a.as_bytes())?,
            SocketAddr::from_abstract_name(to_b.as_bytes())?,
        ];
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        // No forwarder address: the ports are pointed at theirs below.
        let mut relay = Self::launch(&mut command, PathBuf::new(), PathBuf::new(), None, cpu)?;
        // A socket connected to its port takes no probe's connection: the
        // relay says when its sockets are ready, or ends (end of file).
        let mut line = String::new();
        let stdout = relay.child.stdout.take().context("the relay's stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if line.trim() != "ready" {
            bail!("the {} relay did not start", design.arg());
        }
        a.to = Some(unix_addr(&addrs[0])?);
        b.to = Some(unix_addr(&addrs[1])?);
        Ok(relay)
    }

    /// Nanoseconds on a CPU (the scheduler's count, finer than `cpu_seconds`'
    /// ticks) and context switches, voluntary and not, of the process's main thread.
    fn sched(&self) -> (u64, u64, u64) {
        let pid = self.child.id();
        let run_ns = schedstat_ns(&format!("/proc/{pid}/schedstat"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (
            run_ns,
            field("voluntary_ctxt_switches:"),
            field("nonvoluntary_ctxt_switches:"),
        )
    }

    /// User plus system CPU seconds the process has used.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One port of the load generator.
struct Port {
    fd: OwnedFd,
    /// The daemon port's control connection; the port lives as long as it.
    _control: Option<UnixStream>,
    /// Where its frames go (`None`: a connected BESS socket).
    to: Option<UnixAddr>,
    /// Its own data address (daemon ports).
    own: Option<SocketAddr>,
    mac: MacAddr,
}

fn unix_addr(addr: &SocketAddr) -> Result<UnixAddr> {
    Ok(match (addr.as_abstract_name(), addr.as_pathname()) {
        (Some(name), _) => UnixAddr::new_abstract(name)?,
        (None, Some(path)) => UnixAddr::new(path)?,
        (None, None) => bail!("an unnamed destination"),
    })
}

/// A timeout so that blocked senders and receivers see the end of a run.
fn set_timeouts(fd: &OwnedFd) -> Result<()> {
    let limit = TimeVal::new(0, 200_000);
    setsockopt(fd, sockopt::ReceiveTimeout, &limit)?;
    setsockopt(fd, sockopt::SendTimeout, &limit)?;
    Ok(())
}

impl Port {
    /// A daemon port registered with `running`'s switch.
    fn daemon(running: &Running, index: usize) -> Result<Self> {
        let label = format!(
            "bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = SwitchClient::connect(&running.ctl, &label)?;
        let fd = OwnedFd::from(client.data);
        set_timeouts(&fd)?;
        Ok(Self {
            fd,
            _control: Some(client.control),
            to: Some(unix_addr(&client.switch)?),
            own: Some(client.own),
            mac: mac(index)?,
        })
    }

    /// A port of the reference forwarder: a bound socket, its destination set later.
    fn unbound_daemon(index: usize) -> Result<Self> {
        let label = format!(
            "bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (data, own, _) = bind_data_socket(&label)?;
        let fd = OwnedFd::from(data);
        set_timeouts(&fd)?;
        Ok(Self {
            fd,
            _control: None,
            to: None,
            own: Some(own),
            mac: mac(index)?,
        })
    }

    /// A BESS connection to our switch.
    fn bess(running: &Running, index: usize) -> Result<Self> {
        let fd = connect_bess(&running.bess)?;
        set_timeouts(&fd)?;
        Ok(Self {
            fd,
            _control: None,
            to: None,
            own: None,
            mac: mac(index)?,
        })
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        let sent = match &self.to {
            Some(to) => nix::sys::socket::sendto(self.fd.as_raw_fd(), frame, to, MsgFlags::empty()),
            None => nix::sys::socket::send(self.fd.as_raw_fd(), frame, MsgFlags::empty()),
        };
        sent.map(drop).context("sending a frame")
    }
}

fn mac(index: usize) -> Result<MacAddr> {
    Ok(MacAddr([2, 0xbe, 0, 0, 0, u8::try_from(index + 1)?]))
}

/// A frame of `size` bytes (at least a header) of the local experimental EtherType.
fn frame(dst: MacAddr, src: MacAddr, size: usize) -> Vec<u8> {
    let mut f = EthernetHeader::new(dst, src, 0x88b5).as_bytes().to_vec();
    f.resize(size.max(HEADER_LEN), 0);
    f
}

/// A frame of `size` bytes for `cell`: tagged with [`BENCH_VID`] on the trunk cells.
fn cell_frame(cell: &Cell, dst: MacAddr, src: MacAddr, size: usize) -> Vec<u8> {
    let mut f = frame(dst, src, size);
    if cell.transport == Transport::Trunk {
        let mut tag = 0x8100u16.to_be_bytes().to_vec();
        tag.extend_from_slice(&BENCH_VID.to_be_bytes());
        f.splice(12..12, tag);
        f.truncate(size.max(HEADER_LEN + 4));
    }
    f
}

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    sent: u64,
    received: u64,
    secs: f64,
    cpu: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }

    fn loss(&self, expected_per_frame: u64) -> f64 {
        let expected = (self.sent * expected_per_frame).max(1);
        100.0 * (1.0 - self.received as f64 / expected as f64).max(0.0)
    }

    /// CPU seconds per million delivered frames.
    fn cpu_per_m(&self) -> f64 {
        self.cpu / (self.received.max(1) as f64 / 1e6)
    }
}

/// The ports of one run, connected as the cell says.
fn ports_for(cell: &Cell, kind: Kind, running: Option<&Running>) -> Result<Vec<Port>> {
    (0..cell.ports)
        .map(|i| match (kind, running, cell.transport) {
            (Kind::Reference, _, _) => Port::unbound_daemon(i),
            (_, Some(r), Transport::Bess) => Port::bess(r, i),
            (_, Some(r), Transport::Mixed) if i % 2 == 1 => Port::bess(r, i),
            (_, Some(r), _) => Port::daemon(r, i),
            (_, None, _) => bail!("no switch to connect to"),
        })
        .collect()
}

fn run_load(
    ours: &Path,
    dir: &Path,
    kind: Kind,
    cell: &Cell,
    secs: f64,
    cpu: Option<usize>,
) -> Result<Load> {
    let (running, mut ports) = if kind == Kind::Reference {
        let ports = ports_for(cell, kind, None)?;
        let spread = match cell.pattern {
            Pattern::Broadcast => Spread::All,
            Pattern::Pairs | Pattern::AllToOne => Spread::RoundRobin,
        };
        (Running::reference(&ports, spread, cpu)?, ports)
    } else {
        let running = Running::start_with(kind, ours, dir, cpu, cell.transport)?;
        let ports = ports_for(cell, kind, Some(&running))?;
        (running, ports)
    };
    if let Some(forwarder) = &running.forwarder {
        let to = unix_addr(forwarder)?;
        for port in &mut ports {
            port.to = Some(to);
        }
    } else {
        // Let the switch learn every port, then forget the warm-up frames.
        for port in &ports {
            port.send(&cell_frame(cell, BROADCAST, port.mac, 64))?;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 2048];
        for port in &ports {
            while recv(port.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        }
    }
    let plans: Vec<(usize, Vec<u8>)> = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| cell.pattern != Pattern::AllToOne || *i != 0)
        .map(|(i, port)| {
            let dst = match cell.pattern {
                Pattern::Pairs => ports[i ^ 1].mac,
                Pattern::Broadcast => BROADCAST,
                Pattern::AllToOne => ports[0].mac,
            };
            (i, cell_frame(cell, dst, port.mac, cell.size))
        })
        .collect();
    let readers: Vec<OwnedFd> = ports
        .iter()
        .map(|p| p.fd.try_clone())
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
        std::thread::spawn(move || send_all(&ports, &plans, &stop))
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

/// The whole load from one thread: each sending port in turn sends a burst,
/// blocking while the switch's queue is full. Returns the frames sent.
fn send_all(ports: &[Port], plans: &[(usize, Vec<u8>)], stop: &AtomicBool) -> u64 {
    let mut headers = MultiHeaders::<UnixAddr>::preallocate(BURST, None);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (index, payload) in plans {
            let port = &ports[*index];
            let slices: Vec<[IoSlice<'_>; 1]> =
                (0..BURST).map(|_| [IoSlice::new(payload)]).collect();
            let addrs = vec![port.to; BURST];
            if let Ok(done) = sendmmsg(
                port.fd.as_raw_fd(),
                &mut headers,
                slices.iter(),
                &addrs,
                [],
                MsgFlags::empty(),
            ) {
                sent += done.count() as u64;
            }
        }
    }
    sent
}

/// One port's frames, from a thread of its own: a reader blocked in `recv`
/// wakes as soon as a frame arrives, so the port's short queue (10 datagrams
/// by default) rarely overflows. Returns the frames received.
fn receive_port(reader: &impl AsFd, stop: &AtomicBool) -> u64 {
    let mut buf = vec![0u8; 70000];
    let mut count = 0;
    loop {
        match recv(reader.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(_) => count += 1,
            Err(_) if stop.load(Ordering::Relaxed) => return count,
            Err(_) => {}
        }
    }
}

/// One round of ping-pong: latencies, and what the switch spent on it.
#[derive(Debug, Clone, Copy)]
struct PingPong {
    p50: Duration,
    p99: Duration,
    /// The switch's time on a CPU per round trip (it forwards two frames).
    switch_us: f64,
    /// The switch's voluntary and involuntary context switches per round trip.
    switches: (f64, f64),
    /// The two ports' threads' time on a CPU per round trip: what the
    /// switch's sockets cost their clients (a sender wakes the switch).
    harness_us: f64,
}

/// The first field of a `schedstat` file: nanoseconds on a CPU.
fn schedstat_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds the calling thread has spent on a CPU (the scheduler's count).
fn thread_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
}

/// Runs `measure` with the harness's thread (and the threads it starts)
/// pinned to `cpu`, then back on CPU 0; unpinned without one.
fn on_cpu(cpu: Option<usize>, measure: impl FnOnce() -> Result<PingPong>) -> Result<PingPong> {
    if let Some(cpu) = cpu {
        pin(Pid::from_raw(0), cpu)?;
    }
    let measured = measure();
    if cpu.is_some() {
        // The measurement's own error, if any, is the one to tell.
        let back = pin(Pid::from_raw(0), 0);
        return measured.and_then(|m| back.map(|()| m));
    }
    measured
}

/// Round trips of one frame between two daemon ports of a switch.
fn ping_pong(running: &Running, rounds: usize) -> Result<PingPong> {
    let a = Port::daemon(running, 0)?;
    let b = Port::daemon(running, 1)?;
    bounce(running, a, b, rounds)
}

/// Round trips of one frame between two ports of a relay of `design`.
fn relay_ping_pong(design: Design, cpu: Option<usize>, rounds: usize) -> Result<PingPong> {
    let mut a = Port::unbound_daemon(0)?;
    let mut b = Port::unbound_daemon(1)?;
    let relay = Running::relay(design, &mut a, &mut b, cpu)?;
    bounce(&relay, a, b, rounds)
}

/// Round trips of one frame from `a` to `b` and back through `running`.
fn bounce(running: &Running, a: Port, b: Port, rounds: usize) -> Result<PingPong> {
    let (a_mac, b_mac) = (a.mac, b.mac);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::clone(&stop);
    let echo = std::thread::spawn(move || {
        let start = thread_cpu_ns();
        let mut buf = [0u8; 2048];
        let reply = frame(a_mac, b_mac, 64);
        while !stop_b.load(Ordering::Relaxed) {
            if recv(b.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).is_ok() {
                let _ = b.send(&reply);
            }
        }
        thread_cpu_ns().saturating_sub(start)
    });
    // Teach the switch both addresses first.
    let mut buf = [0u8; 2048];
    a.send(&frame(b_mac, a_mac, 64))?;
    let _ = recv(a.fd.as_raw_fd(), &mut buf, MsgFlags::empty());
    let mut times = Vec::with_capacity(rounds);
    let request = frame(b_mac, a_mac, 64);
    let before = running.sched();
    let own_before = thread_cpu_ns();
    for _ in 0..rounds {
        let t = Instant::now();
        a.send(&request)?;
        if recv(a.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).is_ok() {
            times.push(t.elapsed());
        }
    }
    let after = running.sched();
    let own = thread_cpu_ns().saturating_sub(own_before);
    stop.store(true, Ordering::Relaxed);
    let echo_ns = echo.join().unwrap_or(0);
    times.sort();
    if times.is_empty() {
        bail!("no ping-pong round trip completed");
    }
    // The sample `permille` of the way through the sorted round trips, rounded down.
    let last = times.len() - 1;
    let at = |permille: usize| times[last * permille / 1000];
    let per_trip = |a: u64, b: u64| b.saturating_sub(a) as f64 / times.len() as f64;
    Ok(PingPong {
        p50: at(500),
        p99: at(990),
        switch_us: per_trip(before.0, after.0) / 1000.0,
        harness_us: per_trip(0, own + echo_ns) / 1000.0,
        switches: (per_trip(before.1, after.1), per_trip(before.2, after.2)),
    })
}

/// The median run of `reps` by delivered frames/s.
fn median_load(reps: usize, mut run: impl FnMut() -> Result<Load>) -> Result<Load> {
    let mut loads = (0..reps.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>>>()?;
    loads.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    Ok(loads[loads.len() / 2])
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let secs: f64 = option(args, "--secs", 3.0)?;
    let reps: usize = option(args, "--reps", 3)?;
    let pinned = !args.iter().any(|a| a == "--unpinned");
    crate::provision::ensure_bench_switch()?;
    // `--ours PATH` measures another build of our switch (an older commit's, say).
    let ours = match args.iter().position(|a| a == "--ours") {
        Some(i) => PathBuf::from(args.get(i + 1).context("bench: --ours needs a path")?),
        None => {
            crate::cargo(root, &["build", "--release", "--quiet", "-p", "uml_switch"])?;
            root.join("target/release/uml_switch")
        }
    };
    // `--only TEXT`: just the cells whose label holds TEXT.
    let only: String = option(args, "--only", String::new())?;
    let dir = tempfile_dir(root)?;
    // The harness on CPU 0 (its threads inherit it), each switch alone on CPU 1.
    let switch_cpu = if pinned {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            bail!("the pinned bench needs two CPUs (use --unpinned)");
        }
        pin(Pid::from_raw(0), 0)?;
        Some(1)
    } else {
        None
    };
    println!(
        "uml_switch benchmark, {}: {secs} s per run, median of {reps}; delivered frames/s (loss, \
         switch CPU s per million delivered frames)\n",
        if pinned {
            "pinned (harness on CPU 0, switch alone on CPU 1)"
        } else {
            "unpinned"
        }
    );
    println!(
        "| cell | reference | C uml_switch | vde_switch | ours | ours / C | ours / vde | ours CPU / C | ours CPU / reference |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let daemon_cells = [
        (Pattern::Pairs, 64, 2),
        (Pattern::Pairs, 64, 8),
        (Pattern::Pairs, 1500, 8),
        (Pattern::Broadcast, 64, 8),
        (Pattern::Broadcast, 1500, 8),
        (Pattern::AllToOne, 64, 8),
    ];
    let kinds = [Kind::Reference, Kind::C, Kind::Vde, Kind::Ours];
    for (pattern, size, ports) in daemon_cells {
        let cell = Cell {
            pattern,
            size,
            ports,
            transport: Transport::Daemon,
        };
        if !cell.label().contains(&only) {
            continue;
        }
        let mut loads = [Load::default(); 4];
        for (k, kind) in kinds.iter().enumerate() {
            loads[k] = median_load(reps, || {
                run_load(&ours, &dir, *kind, &cell, secs, switch_cpu)
            })
            .with_context(|| format!("{} in {}", kind.name(), cell.label()))?;
        }
        let shown: Vec<String> = kinds
            .iter()
            .zip(&loads)
            .map(|(kind, load)| show(load, cell.fanout(*kind)))
            .collect();
        let [reference, c, vde, ours] = loads;
        println!(
            "| {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            cell.label(),
            shown.join(" | "),
            ours.rate() / c.rate().max(1.0),
            ours.rate() / vde.rate().max(1.0),
            ours.cpu_per_m() / c.cpu_per_m().max(1e-9),
            ours.cpu_per_m() / reference.cpu_per_m().max(1e-9),
        );
    }
    // BESS (only our switch speaks it), all BESS and half-and-half.
    for (pattern, transport) in [
        (Pattern::Pairs, Transport::Bess),
        (Pattern::Broadcast, Transport::Bess),
        (Pattern::AllToOne, Transport::Bess),
        (Pattern::Pairs, Transport::Mixed),
        // The lab fabric's costs: the VLAN-tagged path and an emulated link.
        (Pattern::Pairs, Transport::Trunk),
        (Pattern::Broadcast, Transport::Trunk),
        (Pattern::Pairs, Transport::Emulated),
    ] {
        let cell = Cell {
            pattern,
            size: 64,
            ports: 8,
            transport,
        };
        if !cell.label().contains(&only) {
            continue;
        }
        let ours = median_load(reps, || {
            run_load(&ours, &dir, Kind::Ours, &cell, secs, switch_cpu)
        })
        .with_context(|| format!("ours in {}", cell.label()))?;
        println!(
            "| {} | | | | {} | | | | |",
            cell.label(),
            show(&ours, cell.fanout(Kind::Ours))
        );
    }
    // The cost of capturing (to a pcapng file on the target directory's disk).
    println!("\n| cell | ours | ours, capturing every frame to a file | capturing / not |");
    println!("|---|---:|---:|---:|");
    for (pattern, size, ports) in daemon_cells {
        let cell = Cell {
            pattern,
            size,
            ports,
            transport: Transport::Daemon,
        };
        if !cell.label().contains(&only) {
            continue;
        }
        let mut loads = [Load::default(); 2];
        for (k, kind) in [Kind::Ours, Kind::OursCapturing].iter().enumerate() {
            loads[k] = median_load(reps, || {
                run_load(&ours, &dir, *kind, &cell, secs, switch_cpu)
            })
            .with_context(|| format!("{} in {}", kind.name(), cell.label()))?;
        }
        let [plain, capturing] = loads;
        println!(
            "| {} | {} | {} | {:.2}x |",
            cell.label(),
            show(&plain, cell.fanout(Kind::Ours)),
            show(&capturing, cell.fanout(Kind::OursCapturing)),
            capturing.rate() / plain.rate().max(1.0),
        );
    }
    // Ping-pong on one CPU: the harness's threads and the switch share CPU 1.
    // (With the switch alone on a CPU of its own, a round trip on these
    // virtual machines took 104 to 115 us for every switch and relay: idle
    // CPUs waking, not switching.) The three switches and the designs' floors take turns,
    // `reps` rounds, so that the machine's drift during the runs is shared;
    // each figure is the median of its rounds.
    let kinds = [Kind::C, Kind::Vde, Kind::Ours];
    let running = kinds
        .iter()
        .map(|&kind| Running::start(kind, &ours, &dir, switch_cpu))
        .collect::<Result<Vec<_>>>()?;
    let harness_cpu = pinned.then_some(1);
    let mut rounds: Vec<Vec<PingPong>> = vec![Vec::new(); kinds.len()];
    let mut floors: Vec<Vec<PingPong>> = vec![Vec::new(); Design::ALL.len()];
    for _ in 0..reps.max(1) {
        for (k, switch) in running.iter().enumerate() {
            rounds[k].push(on_cpu(harness_cpu, || ping_pong(switch, 20_000))?);
        }
        for (d, design) in Design::ALL.into_iter().enumerate() {
            let relay = || relay_ping_pong(design, switch_cpu, 20_000);
            floors[d].push(on_cpu(harness_cpu, relay)?);
        }
    }
    drop(running);
    // Each figure's median over the rounds, on its own.
    let median = |r: &[PingPong], f: &dyn Fn(&PingPong) -> f64| {
        let mut v: Vec<f64> = r.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let latency = |r: &[PingPong]| {
        format!(
            "{:.1} / {:.1} us",
            median(r, &|p| p.p50.as_secs_f64() * 1e6),
            median(r, &|p| p.p99.as_secs_f64() * 1e6)
        )
    };
    let cost = |r: &[PingPong]| {
        format!(
            "{:.2} us ({:.2} + {:.2}); ports {:.2} us",
            median(r, &|p| p.switch_us),
            median(r, &|p| p.switches.0),
            median(r, &|p| p.switches.1),
            median(r, &|p| p.harness_us)
        )
    };
    let latencies: Vec<String> = rounds.iter().map(|r| latency(r)).collect();
    println!(
        "| ping-pong p50 / p99 (one CPU) | | {} | | | | |",
        latencies.join(" | ")
    );
    let costs: Vec<String> = rounds.iter().map(|r| cost(r)).collect();
    println!(
        "| ping-pong, CPU per round trip: switch (its context switches, voluntary + not); the two ports' threads | | {} | | | | |",
        costs.join(" | ")
    );
    // The floors: relays doing no switching at all, one per design.
    for (design, r) in Design::ALL.into_iter().zip(&floors) {
        println!(
            "| ping-pong floor, {}: p50 / p99; CPU per round trip | {}; {} | | | | | | | |",
            design.label(),
            latency(r),
            cost(r)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A cell's text: frames/s, loss and CPU per million frames.
fn show(load: &Load, fanout: u64) -> String {
    format!(
        "{:.0}k ({:.1}%, {:.2} s/M)",
        load.rate() / 1000.0,
        load.loss(fanout),
        load.cpu_per_m()
    )
}

fn tempfile_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/bench-switch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
