//! uml_switch: the control protocol and data path against hostile and
//! well-behaved clients, and real guests pinging through it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_proto::switch::{PeerAddr, RequestV3};
use uml_testbed::switch_client::{SwitchClient, bind_data_socket, kernel_request};
use uml_testbed::{
    ChildLog, NetNamespace, Uml, UmlBuilder, host_program, our_tool, pid_of, try_wait_until,
    wait_until,
};
use zerocopy::IntoBytes;

const WAIT: Duration = Duration::from_secs(60);

/// Our switch, started in a directory of its own, its output collected.
struct SwitchProcess {
    child: Child,
    log: ChildLog,
    ctl: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SwitchProcess {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_as(Command::new(our_tool("uml_switch")), dir, extra)
    }

    /// The switch started by `command` (the switch itself, or a launcher
    /// that execs it with its arguments).
    fn start_as(mut command: Command, dir: &Path, extra: &[&str]) -> Self {
        let ctl = dir.join("ctl");
        let mut child = command
            .arg("-unix")
            .arg(&ctl)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = ChildLog::collect(&mut child);
        let switch = Self {
            child,
            log,
            ctl,
            _dir: None,
        };
        switch.wait_for_line("attached to unix socket");
        switch
    }

    fn in_tempdir(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut switch = Self::start(dir.path(), extra);
        switch._dir = Some(dir);
        switch
    }

    fn log(&self) -> String {
        self.log.text()
    }

    fn wait_for_line(&self, needle: &str) {
        self.log.wait_for(needle, WAIT);
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&mut self, signal: Signal) -> std::process::ExitStatus {
        kill(pid_of(&self.child), signal).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.signal(Signal::SIGTERM);
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A client speaking the kernel's v3 protocol, with a MAC of its own.
struct Client {
    port: SwitchClient,
    mac: MacAddr,
}

impl Client {
    fn connect(ctl: &Path) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port =
            SwitchClient::connect(ctl, &format!("switch-test-{}-{n}", std::process::id())).unwrap();
        port.data
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let [_, _, hi, lo] = n.to_be_bytes();
        Self {
            port,
            mac: MacAddr([2, 0, 0, 0, hi, lo]),
        }
    }

    fn send(&self, dst: MacAddr, payload: &[u8]) {
        self.port.send(&frame(dst, self.mac, payload)).unwrap();
    }

    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70000];
        let n = self.port.data.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Everything that arrives until the line goes quiet.
    fn drain(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

const BROADCAST: MacAddr = MacAddr::BROADCAST;

/// A frame of the local experimental EtherType 0x88b5.
fn frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    [EthernetHeader::new(dst, src, 0x88b5).as_bytes(), payload].concat()
}

#[test]
fn uml_switch_learns_floods_and_never_echoes() {
    let switch = SwitchProcess::in_tempdir(&[]);
    let (a, b, c) = (
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
    );
    a.send(BROADCAST, b"hello all");
    for other in [&b, &c] {
        assert_eq!(other.drain(), vec![frame(BROADCAST, a.mac, b"hello all")]);
    }
    assert!(a.drain().is_empty(), "a broadcast came back to its sender");
    // a is learned: unicast to it reaches a only.
    b.send(a.mac, b"to a");
    assert_eq!(a.drain(), vec![frame(a.mac, b.mac, b"to a")]);
    assert!(c.drain().is_empty() && b.drain().is_empty());
    // Unknown unicast floods, but not back out of the ingress port.
    a.send(MacAddr([2, 9, 9, 9, 9, 9]), b"who?");
    assert_eq!(b.drain().len(), 1);
    assert_eq!(c.drain().len(), 1);
    assert!(a.drain().is_empty());
    // A frame to the sender's own address is not sent back to it.
    a.send(a.mac, b"to myself");
    assert!(a.drain().is_empty() && b.drain().is_empty() && c.drain().is_empty());
    assert!(
        switch.log().contains(&format!(" Addr: {} New port", a.mac)),
        "{}",
        switch.log()
    );
}

/// A version 0 client of a `-compat-v0` switch: its data socket at `path`,
/// registered with the v0 request (type, MAC, address; no reply).
fn v0_client(ctl: &Path, path: &Path, mac: MacAddr) -> (UnixDatagram, UnixStream) {
    let data = UnixDatagram::bind(path).unwrap();
    data.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut request = vec![0u8; 4];
    request.extend_from_slice(&mac.0);
    request.extend_from_slice(PeerAddr::from_path(path).unwrap().as_bytes());
    let mut control = UnixStream::connect(ctl).unwrap();
    control.write_all(&request).unwrap();
    (data, control)
}

/// Everything that arrives on `socket` until the line goes quiet.
fn drain_socket(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70000];
    std::iter::from_fn(|| {
        let n = socket.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
    .collect()
}

#[test]
fn uml_switch_tells_v0_ports_apart_after_a_nameless_sender() {
    // v0 clients send to the one shared data socket and are told apart by
    // their address. A datagram from an unbound socket carries none. A
    // receive that let its empty name shrink the address buffer for the next
    // receive would read the next sender's address cut to nothing and take
    // the frame for whichever port that buffer held before: b's frames
    // counted as a's, flooded back to b, kept from a.
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    let mgmt = dir.path().join("mgmt");
    let switch = SwitchProcess::start_as(
        Command::new(our_tool("uml_switch")),
        dir.path(),
        &[
            data_path.to_str().unwrap(),
            "-compat-v0",
            "--mgmt",
            mgmt.to_str().unwrap(),
        ],
    );
    let macs = [1u8, 2, 3].map(|n| MacAddr([2, 0, 0, 0, 0x70, n]));
    let clients: Vec<_> = ["a", "b", "c"]
        .iter()
        .zip(macs)
        .map(|(name, mac)| v0_client(&switch.ctl, &dir.path().join(name), mac))
        .collect();
    let [(a, _), (b, _), (c, _)] = &clients[..] else {
        unreachable!()
    };
    wait_until(Instant::now() + WAIT, "three ports", || {
        switch.log().matches("New connection").count() == 3
    });
    let stranger = UnixDatagram::unbound().unwrap();
    for round in 0..3u8 {
        // Each datagram alone, so that each is the first of its batch.
        a.send_to(&frame(BROADCAST, macs[0], &[round]), &data_path)
            .unwrap();
        assert_eq!(
            drain_socket(b).len(),
            1,
            "round {round}: b missed a's frame"
        );
        assert_eq!(
            drain_socket(c).len(),
            1,
            "round {round}: c missed a's frame"
        );
        stranger
            .send_to(
                &frame(BROADCAST, MacAddr([2, 7, 7, 7, 7, 7]), b"nameless"),
                &data_path,
            )
            .unwrap();
        assert!(
            drain_socket(c).is_empty(),
            "round {round}: a stranger's frame was forwarded"
        );
        b.send_to(&frame(BROADCAST, macs[1], &[round]), &data_path)
            .unwrap();
        assert_eq!(
            drain_socket(a).len(),
            1,
            "round {round}: b's frame never reached a"
        );
        assert_eq!(
            drain_socket(c).len(),
            1,
            "round {round}: b's frame never reached c"
        );
        assert!(
            drain_socket(b).is_empty(),
            "round {round}: b's own frame came back to it"
        );
    }
    let stats: serde_json::Value =
        serde_json::from_str(&uml_testbed::switchctl_json(&mgmt, &["stats"])).unwrap();
    assert_eq!(stats["drops"]["unregistered"], 3, "{stats}");
    assert_eq!(stats["rx"]["frames"], 6, "{stats}");
}

#[test]
fn uml_switch_holds_a_burst_for_a_reader_that_is_late_and_keeps_its_order() {
    // b reads nothing while a sends it 200 frames, far more than the 10
    // datagrams a receive queue holds: the rest wait in b's backlog in the
    // switch (256 frames) and follow, in order, as b reads.
    let switch = SwitchProcess::in_tempdir(&[]);
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    b.send(BROADCAST, b"b is here");
    assert_eq!(a.drain().len(), 1);
    for n in 0..200u32 {
        a.send(b.mac, &n.to_le_bytes());
    }
    let got: Vec<u32> = b
        .drain()
        .iter()
        .map(|f| u32::from_le_bytes(f[14..18].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn uml_switch_paces_a_sender_to_a_slow_reader_instead_of_dropping() {
    // a sends 3000 frames to b as fast as it can; b reads them all, pausing
    // now and then. Far more than b's queue and its backlog in the switch
    // hold: the switch stops reading a while b's backlog is long, so a's
    // sends wait, and nothing is lost.
    let dir = tempfile::tempdir().unwrap();
    let mgmt = dir.path().join("mgmt");
    let switch = SwitchProcess::start(dir.path(), &["--mgmt", mgmt.to_str().unwrap()]);
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    b.send(BROADCAST, b"b is here");
    assert_eq!(a.drain().len(), 1);
    let to = b.mac;
    // a stays connected (the thread hands it back) until b has read all:
    // a port's frames still waiting in the switch go when it closes.
    let sender = std::thread::spawn(move || {
        for n in 0..3000u32 {
            a.send(to, &n.to_le_bytes());
        }
        a
    });
    let mut got = Vec::new();
    while let Some(f) = b.recv() {
        got.push(u32::from_le_bytes(f[14..18].try_into().unwrap()));
        if got.len() % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let _a = sender.join().unwrap();
    let ports = Command::new(our_tool("uml_switchctl"))
        .arg(&mgmt)
        .arg("ports")
        .output()
        .unwrap();
    assert_eq!(
        got.len(),
        3000,
        "frames lost: {}",
        String::from_utf8_lossy(&ports.stdout)
    );
    assert_eq!(got, (0..3000).collect::<Vec<_>>());
}

#[test]
fn uml_switch_a_reader_that_dawdles_holds_a_sender_back_only_briefly() {
    // s sends 300 frames to d and 300 to e, interleaved. d reads one frame
    // every 10 ms, just often enough never to look stalled; e reads all.
    // Holding s back for d's sake stops s's frames for e too, so it lasts at
    // most 20 ms a second: e has all its frames long before d has read 100
    // (which takes d a second). d loses what its backlog cannot hold.
    let switch = SwitchProcess::in_tempdir(&[]);
    let (s, d, e) = (
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
    );
    d.send(BROADCAST, b"d is here");
    e.send(BROADCAST, b"e is here");
    assert_eq!(s.drain().len(), 2);
    d.drain();
    e.drain();
    let (to_d, to_e) = (d.mac, e.mac);
    let sender = std::thread::spawn(move || {
        for n in 0..300u32 {
            s.send(to_d, &n.to_le_bytes());
            s.send(to_e, &n.to_le_bytes());
        }
        s
    });
    let d_read = std::sync::Arc::new(AtomicU32::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dawdler = {
        let (d_read, done) = (d_read.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if d.recv().is_some() {
                    d_read.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut got_e = 0;
    while got_e < 300 && e.recv().is_some() {
        got_e += 1;
    }
    let d_by_then = d_read.load(Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let _s = sender.join().unwrap();
    dawdler.join().unwrap();
    assert_eq!(
        got_e, 300,
        "e's frames stopped coming (d had read {d_by_then})"
    );
    assert!(
        d_by_then < 100,
        "e's frames took as long as d's slow reading: d read {d_by_then} first"
    );
}

#[test]
fn uml_switch_closes_a_port_whose_client_turns_its_socket_elsewhere() {
    // a connects its data socket to its port's, lets a frame queue, then
    // connects it elsewhere: the kernel drops the queue and flags an error
    // (ECONNRESET) on the port's socket. The switch takes the error and
    // closes the port, instead of being woken by it for ever.
    let mut switch = SwitchProcess::in_tempdir(&[]);
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    a.port.data.connect_addr(&a.port.switch).unwrap();
    a.send(BROADCAST, b"a is here");
    assert_eq!(b.drain().len(), 1);
    b.send(a.mac, b"queued for a");
    std::thread::sleep(Duration::from_millis(200));
    let elsewhere_dir = tempfile::tempdir().unwrap();
    let elsewhere = UnixDatagram::bind(elsewhere_dir.path().join("x")).unwrap();
    a.port.data.connect(elsewhere_dir.path().join("x")).unwrap();
    wait_until(Instant::now() + WAIT, "a's port to close", || {
        switch.log().matches("Disconnect").count() == 1
    });
    drop(elsewhere);
    // The switch goes on switching, and is not busy.
    let c = Client::connect(&switch.ctl);
    c.send(BROADCAST, b"c is here");
    assert_eq!(b.drain().len(), 1);
    let before = cpu_ticks(pid_of(&switch.child).as_raw());
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(pid_of(&switch.child).as_raw()) - before;
    assert!(
        spent * 1000 / ticks_per_second() < 250,
        "the switch spins: {spent} ticks in 0.5 s"
    );
    assert!(switch.alive());
}

#[test]
fn uml_switch_hub_floods_unicast() {
    let switch = SwitchProcess::in_tempdir(&["-hub"]);
    assert!(switch.log().contains("will be a hub instead of a switch"));
    let (a, b, c) = (
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
    );
    a.send(BROADCAST, b"learn me");
    b.drain();
    c.drain();
    b.send(a.mac, b"to a");
    assert_eq!(a.drain().len(), 1);
    assert_eq!(c.drain().len(), 1, "the hub did not flood a known unicast");
}

#[test]
fn uml_switch_forwards_big_frames_whole_and_drops_runts_and_strangers() {
    let mut switch = SwitchProcess::in_tempdir(&[]);
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    for size in [1514, 1518, 9000, 65535] {
        let payload = vec![0x5a; size - 14];
        a.send(BROADCAST, &payload);
        let got = b.drain();
        assert_eq!(got.len(), 1, "{size}-byte frame");
        assert_eq!(got[0].len(), size, "{size}-byte frame was cut");
    }
    // Runts: a zero-length and a 2-byte datagram.
    a.port.send(b"").unwrap();
    a.port.send(b"xy").unwrap();
    // A sender that never registered: the C switch forwards these; to us
    // the kernel refuses them, a's port socket taking only a's frames.
    let stranger = UnixDatagram::unbound().unwrap();
    let refused = stranger
        .send_to_addr(
            &frame(BROADCAST, MacAddr([2, 7, 7, 7, 7, 7]), b"spoof"),
            &a.port.switch,
        )
        .expect_err("a stranger's frame was taken");
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EPERM));
    assert!(b.drain().is_empty());
    assert!(switch.alive());
    a.send(BROADCAST, b"still switching");
    assert_eq!(b.drain().len(), 1);
}

#[test]
fn uml_switch_survives_hostile_control_requests() {
    let mut switch = SwitchProcess::in_tempdir(&[]);
    let v3 = RequestV3::new(PeerAddr::from_abstract_name(b"x").unwrap());
    let mut v2 = v3.as_bytes().to_vec();
    v2[4] = 2;
    let mut v9 = v3.as_bytes().to_vec();
    v9[4] = 9;
    let mut bad_type = v3.as_bytes().to_vec();
    bad_type[8] = 5;
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
    for request in [&b""[..], b"x", &garbage, &[0u8; 124], &v2, &v9, &bad_type] {
        let mut conn = UnixStream::connect(&switch.ctl).unwrap();
        let _ = conn.write_all(request);
        if request.len() < 4 {
            drop(conn);
            continue;
        }
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        // Refused: the switch closes the connection without a reply. A read
        // that times out means the connection was left open: that fails too.
        match conn.read_to_end(&mut reply) {
            Ok(_) => {}
            // Closed with some of our bytes unread: the kernel resets instead.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the switch did not close the connection: {e}"),
        }
        assert!(reply.is_empty(), "a bad request got a reply");
    }
    switch.wait_for_line("Version 2 is not supported");
    switch.wait_for_line("Request for a version 9 port");
    switch.wait_for_line("Bad request type : 5");
    assert!(switch.alive());
    // A libvdeplug-style request with a description after it keeps its port.
    let (data, _, name) = bind_data_socket(&format!("vde-like-{}", std::process::id())).unwrap();
    data.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut conn = UnixStream::connect(&switch.ctl).unwrap();
    let mut request = RequestV3::new(PeerAddr::from_abstract_name(&name).unwrap())
        .as_bytes()
        .to_vec();
    request.extend_from_slice(b"my port\0");
    conn.write_all(&request).unwrap();
    let mut reply = [0u8; 110];
    conn.read_exact(&mut reply).unwrap();
    let other = Client::connect(&switch.ctl);
    other.send(BROADCAST, b"for the vde client");
    let mut buf = [0u8; 200];
    assert!(
        data.recv(&mut buf).is_ok(),
        "the port with a description was dropped"
    );
}

#[test]
fn uml_switch_takes_a_thousand_clients_and_a_reader_that_stalls() {
    let mut switch = SwitchProcess::in_tempdir(&[]);
    for _ in 0..1000 {
        drop(Client::connect(&switch.ctl));
    }
    assert!(switch.alive());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", switch.child.id()))
        .unwrap()
        .count();
    assert!(fds < 50, "{fds} descriptors open after the clients left");

    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    let stalled = Client::connect(&switch.ctl); // never reads
    // In lockstep with the reading port, five frames at a time: its queue (10
    // datagrams) never overflows however loaded the machine is, so every frame
    // must arrive, while the stalled port's queue is full after ten frames and
    // stays full. A switch that waited on the stalled port would stop here.
    for burst in 0..600u32 {
        for i in 0..5 {
            a.send(BROADCAST, &(burst * 5 + i).to_le_bytes());
        }
        for i in 0..5 {
            let got = b.recv().unwrap_or_else(|| {
                panic!("frame {} never reached the reading port", burst * 5 + i)
            });
            assert_eq!(got, frame(BROADCAST, a.mac, &(burst * 5 + i).to_le_bytes()));
        }
    }
    drop(stalled);
    assert!(switch.alive());
}

#[test]
fn uml_switch_startup_leaves_live_switches_and_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let first = SwitchProcess::start(dir.path(), &[]);
    let second = Command::new(our_tool("uml_switch"))
        .args(["-unix", first.ctl.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("has another server attached"));
    assert!(first.ctl.exists());
    drop(Client::connect(&first.ctl));

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep").unwrap();
    let third = Command::new(our_tool("uml_switch"))
        .args(["-unix", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

    // A stale socket (its switch was killed) is replaced.
    let stale = dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut fourth = Command::new(our_tool("uml_switch"))
        .args(["-unix", stale.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fourth.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("attached"), "{line}");
    drop(Client::connect(&stale));
    kill(pid_of(&fourth), Signal::SIGTERM).unwrap();
    assert!(fourth.wait().unwrap().success());
}

#[test]
fn uml_switch_signals_remove_its_sockets_and_logs_reach_a_file() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, bess, log) = (
            dir.path().join("ctl"),
            dir.path().join("bess"),
            dir.path().join("log"),
        );
        let mut child = Command::new(our_tool("uml_switch"))
            .args([
                "-unix",
                ctl.to_str().unwrap(),
                "--bess",
                bess.to_str().unwrap(),
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let logged = |text: &str| std::fs::read_to_string(&log).unwrap().contains(text);
        wait_until(
            Instant::now() + WAIT,
            "the start-up line in the log file",
            || logged("attached"),
        );
        drop(Client::connect(&ctl));
        wait_until(
            Instant::now() + WAIT,
            "connection lines flushed to the log file",
            || logged("Disconnect"),
        );
        kill(pid_of(&child), signal).unwrap();
        assert!(child.wait().unwrap().success(), "{signal:?}");
        assert!(
            !ctl.exists() && !bess.exists(),
            "{signal:?} left socket files"
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("cleaning up and exiting")
        );
    }
}

#[test]
fn uml_switch_compat_v0_and_bess_clients_share_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    let bess_path = dir.path().join("bess");
    // -compat-v0 -unix CTL DATA, in the C switch's order, plus a BESS listener.
    let ctl = dir.path().join("ctl2");
    let mut child = Command::new(our_tool("uml_switch"))
        .args([
            "-compat-v0",
            "-unix",
            ctl.to_str().unwrap(),
            data_path.to_str().unwrap(),
        ])
        .args(["-bess", bess_path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    assert!(
        line.contains(&format!("'{}'", data_path.display())),
        "{line}"
    );
    // A v0 client: type, MAC, its address; no reply.
    let v0_path = dir.path().join("v0.sock");
    let (v0, _control) = v0_client(&ctl, &v0_path, MacAddr([2, 0, 0, 0, 0, 0x10]));
    v0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // A BESS client: a seqpacket connection, one frame per message.
    let bess = try_wait_until(Instant::now() + WAIT, || {
        uml_testbed::switch_client::connect_bess(&bess_path).ok()
    })
    .expect("the BESS listener never took a connection");
    // Both ports exist once the switch has logged them.
    let (mut v0_port, mut bess_port) = (false, false);
    while !(v0_port && bess_port) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the switch's log ended"
        );
        v0_port |= line.contains("New connection");
        bess_port |= line.contains("New BESS connection");
    }
    let bess_mac = MacAddr([2, 0, 0, 0, 0, 0x20]);
    let sent = frame(BROADCAST, bess_mac, b"from bess");
    nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&bess),
        &sent,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 2000];
    let n = v0.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &sent[..]);
    // And back: the v0 client sends to the data socket file.
    let back = frame(bess_mac, MacAddr([2, 0, 0, 0, 0, 0x10]), b"from v0");
    v0.send_to(&back, &data_path).unwrap();
    let mut buf = [0u8; 2000];
    let n = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&bess),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert_eq!(&buf[..n], &back[..]);
    kill(pid_of(&child), Signal::SIGINT).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!data_path.exists() && !bess_path.exists() && !ctl.exists());
}

/// The guest side of the ping tests, configured by kernel command-line variables:
/// IF, IP (and IF2, IP2 for a router), GW, FWD, PEER (ping it), OBSERVE (report rx_packets).
const GUEST: &str = r#"mount -t proc proc /proc
mount -t sysfs sysfs /sys
ip link set "$IF" up
ip addr add "$IP/24" dev "$IF"
if [ -n "$IF2" ]; then ip link set "$IF2" up; ip addr add "$IP2/24" dev "$IF2"; fi
if [ -n "$GW" ]; then ip route add default via "$GW"; fi
if [ -n "$FWD" ]; then echo 1 > /proc/sys/net/ipv4/ip_forward; fi
echo GUEST-READY
if [ -n "$PEER" ]; then
  n=0
  until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
  ping -c 20 -i 0.1 -W 2 "$PEER" | tail -2
  echo PING-DONE
fi
if [ -n "$OBSERVE" ]; then
  while true; do echo "RX $(cat /sys/class/net/$IF/statistics/rx_packets)"; sleep 0.3; done
fi
while true; do sleep 1; done"#;

/// How a guest plugs into the switch.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Daemon,
    Bess,
}

/// Boots a guest on `switch` (daemon control socket `ctl`, BESS socket `bess`).
fn guest(transport: Transport, ctl: &Path, bess: &Path, mac: u8, vars: &[&str]) -> Uml {
    guest_in(None, transport, ctl, bess, mac, vars)
}

/// [`guest`], in a network namespace when one is named.
fn guest_in(
    netns: Option<&str>,
    transport: Transport,
    ctl: &Path,
    bess: &Path,
    mac: u8,
    vars: &[&str],
) -> Uml {
    let mac = format!("02:00:00:00:99:{mac:02x}");
    let (nic, ifname) = match transport {
        Transport::Daemon => (format!("eth0=daemon,{mac},unix,{}", ctl.display()), "eth0"),
        Transport::Bess => (
            format!("vec0:transport=bess,dst={},mac={mac}", bess.display()),
            "vec0",
        ),
    };
    let mut builder = UmlBuilder::new(GUEST).arg(nic).arg(format!("IF={ifname}"));
    for var in vars {
        builder = builder.arg(*var);
    }
    if let Some(ns) = netns {
        builder = builder.netns(ns);
    }
    let mut uml = builder.start();
    uml.wait_for_console("GUEST-READY", WAIT);
    uml
}

/// Two guests ping each other through one switch while a third watches its
/// own receive counter: in switch mode it sees almost nothing, in hub mode
/// every ping.
fn ping_through(hub: bool, a: Transport, b: Transport, observer: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let bess = dir.path().join("bess");
    let bess_arg = bess.to_str().unwrap().to_owned();
    let mut args = vec!["-bess", bess_arg.as_str()];
    if hub {
        args.push("-hub");
    }
    let switch = SwitchProcess::start(dir.path(), &args);
    let watcher = guest(
        observer,
        &switch.ctl,
        &bess,
        3,
        &["IP=10.99.5.3", "OBSERVE=1"],
    );
    let _target = guest(a, &switch.ctl, &bess, 1, &["IP=10.99.5.1"]);
    let mut pinger = guest(
        b,
        &switch.ctl,
        &bess,
        2,
        &["IP=10.99.5.2", "PEER=10.99.5.1"],
    );
    pinger.wait_for_console("PING-DONE", WAIT);
    let console = pinger.console();
    assert!(
        console.contains("20 packets received, 0% packet loss"),
        "{console}"
    );
    // The watcher reports every 0.3 s: two more reports and the last one
    // counts every frame of the ping.
    let reports = |console: String| -> Vec<u64> {
        console
            .lines()
            .filter_map(|l| l.trim().strip_prefix("RX ")?.parse::<u64>().ok())
            .collect()
    };
    let before = reports(watcher.console()).len();
    wait_until(Instant::now() + WAIT, "two more RX reports", || {
        reports(watcher.console()).len() >= before + 2
    });
    let seen = reports(watcher.console()).into_iter().max().unwrap();
    if hub {
        assert!(seen >= 40, "the hub's third guest saw only {seen} frames");
    } else {
        assert!(
            seen < 15,
            "the switch leaked unicast: the third guest saw {seen} frames"
        );
    }
    assert!(switch.log().contains("New connection") || switch.log().contains("New BESS"));
}

#[test]
fn real_kernel_daemon_guests_ping_through_the_switch() {
    ping_through(
        false,
        Transport::Daemon,
        Transport::Daemon,
        Transport::Daemon,
    );
}

#[test]
fn real_kernel_daemon_guests_ping_through_the_hub() {
    ping_through(
        true,
        Transport::Daemon,
        Transport::Daemon,
        Transport::Daemon,
    );
}

#[test]
fn real_kernel_bess_guests_ping_through_the_switch() {
    ping_through(false, Transport::Bess, Transport::Bess, Transport::Bess);
}

#[test]
fn real_kernel_bess_guests_ping_through_the_hub() {
    ping_through(true, Transport::Bess, Transport::Bess, Transport::Bess);
}

#[test]
fn real_kernel_daemon_and_bess_guests_ping_through_the_switch() {
    ping_through(false, Transport::Daemon, Transport::Bess, Transport::Daemon);
}

#[test]
fn real_kernel_daemon_and_bess_guests_ping_through_the_hub() {
    ping_through(true, Transport::Bess, Transport::Daemon, Transport::Bess);
}

#[test]
fn real_kernel_guest_routes_between_two_switches() {
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = SwitchProcess::start(dir1.path(), &[]);
    let two = SwitchProcess::start(dir2.path(), &[]);
    let no_bess = Path::new("/nonexistent");
    let mut builder = UmlBuilder::new(GUEST)
        .arg(format!(
            "eth0=daemon,02:00:00:00:98:01,unix,{}",
            one.ctl.display()
        ))
        .arg(format!(
            "eth1=daemon,02:00:00:00:98:02,unix,{}",
            two.ctl.display()
        ));
    for var in [
        "IF=eth0",
        "IP=10.99.6.1",
        "IF2=eth1",
        "IP2=10.99.7.1",
        "FWD=1",
    ] {
        builder = builder.arg(var);
    }
    let mut router = builder.start();
    router.wait_for_console("GUEST-READY", WAIT);
    let _far = guest(
        Transport::Daemon,
        &two.ctl,
        no_bess,
        2,
        &["IP=10.99.7.2", "GW=10.99.7.1"],
    );
    let mut near = guest(
        Transport::Daemon,
        &one.ctl,
        no_bess,
        1,
        &["IP=10.99.6.2", "GW=10.99.6.1", "PEER=10.99.7.2"],
    );
    near.wait_for_console("PING-DONE", WAIT);
    let console = near.console();
    assert!(
        console.contains("20 packets received, 0% packet loss"),
        "{console}"
    );
}

#[test]
fn root_real_kernel_tap_port_in_a_network_namespace() {
    let ns = NetNamespace::new("uml-switch-test");
    ns.ip(&["tuntap", "add", "dev", "tap-sw", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.99.8.1/24", "dev", "tap-sw"]);
    ns.ip(&["link", "set", "tap-sw", "up"]);
    ns.ip(&["link", "set", "lo", "up"]);

    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    // Switch and guest both run inside the namespace: the tap lives there, and
    // the switch's abstract data socket is only reachable from there.
    let mut switch = ns
        .command(&our_tool("uml_switch"))
        .args(["-unix", ctl.to_str().unwrap(), "-tap", "tap-sw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(switch.stdout.take().unwrap());
    // `ip netns exec` execs the switch, so the child is the switch; it is
    // stopped (and reaped) even when an assertion fails.
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = kill(pid_of(&self.0), Signal::SIGTERM);
            let _ = self.0.wait();
        }
    }
    let _switch = Stop(switch);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("tap device 'tap-sw'"), "{line}");
    std::thread::spawn(move || for _ in out.lines() {});

    let mut uml = guest_in(
        Some(ns.name()),
        Transport::Daemon,
        &ctl,
        Path::new("/nonexistent"),
        1,
        &["IP=10.99.8.2", "PEER=10.99.8.1"],
    );
    uml.wait_for_console("PING-DONE", WAIT);
    let console = uml.console();
    assert!(
        console.contains("20 packets received, 0% packet loss"),
        "{console}"
    );
    let host_ping = ns.run(
        &host_program("busybox", "busybox-static"),
        &["ping", "-c", "3", "-W", "2", "10.99.8.2"],
    );
    assert!(host_ping.status.success(), "{host_ping:?}");
}

#[test]
fn c_tool_uml_switch_help_and_overlong_paths() {
    let c = host_program("uml_switch", "uml-utilities");
    let ours = our_tool("uml_switch");
    // -help: the C usage on stderr, nothing on stdout, status 1.
    let (our_out, c_out) = (
        Command::new(&ours).arg("-help").output().unwrap(),
        Command::new(&c).arg("-help").output().unwrap(),
    );
    assert_eq!(our_out.status.code(), c_out.status.code());
    assert_eq!(our_out.stdout, c_out.stdout);
    let usage = |out: &std::process::Output, program: &Path| {
        String::from_utf8_lossy(&out.stderr).replace(program.to_str().unwrap(), "PROG")
    };
    assert_eq!(usage(&our_out, &ours), usage(&c_out, &c));
    // A control path of 108 bytes does not fit sun_path: refused, naming the
    // limit, where the C switch would silently bind a cut name.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap().len() + 1;
    let long = dir.path().join("s".repeat(108 - base));
    assert_eq!(long.as_os_str().len(), 108);
    let out = Command::new(&ours)
        .arg("-unix")
        .arg(&long)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 107"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// What a control connection got for its request: the switch's 110-byte
/// answer, or nothing before the switch closed it. A connection left open
/// fails the test.
fn answered(mut conn: UnixStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 110];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return !reply.is_empty(),
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() >= 110 {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
            Err(e) => panic!("the switch neither answered nor closed the connection: {e}"),
        }
    }
}

#[test]
fn uml_switch_tells_a_shorter_abstract_name_from_a_ports() {
    let switch = SwitchProcess::in_tempdir(&[]);
    let (victim, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    // The victim's name without its trailing NULs: another socket to the
    // kernel, the same bytes once padded with zeros.
    let name = victim.port.own.as_abstract_name().unwrap();
    let used = name.iter().rposition(|&x| x != 0).unwrap() + 1;
    let spoofer =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name[..used]).unwrap()).unwrap();
    let refused = spoofer
        .send_to_addr(
            &frame(BROADCAST, MacAddr([2, 6, 6, 6, 6, 6]), b"spoofed"),
            &victim.port.switch,
        )
        .expect_err("the spoofer's frame was taken");
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EPERM));
    victim.send(BROADCAST, b"genuine");
    // Datagrams are taken in order: a forwarded spoof arrives first.
    assert_eq!(b.drain(), vec![frame(BROADCAST, victim.mac, b"genuine")]);
}

#[test]
fn uml_switch_refuses_a_request_for_another_ports_address() {
    let switch = SwitchProcess::in_tempdir(&[]);
    let (victim, other) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    let name = victim.port.own.as_abstract_name().unwrap();
    let mut thief = UnixStream::connect(&switch.ctl).unwrap();
    thief.write_all(&kernel_request(name).unwrap()).unwrap();
    assert!(
        !answered(thief),
        "a request for a port's own address was served"
    );
    switch.wait_for_line("already a port's");
    // The victim keeps its traffic, once, and its frames are still its own.
    other.send(BROADCAST, b"for everyone");
    assert_eq!(
        victim.drain(),
        vec![frame(BROADCAST, other.mac, b"for everyone")]
    );
    victim.send(BROADCAST, b"still me");
    assert_eq!(
        other.drain(),
        vec![frame(BROADCAST, victim.mac, b"still me")]
    );
}

/// Whether process `pid` still runs (a zombie does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// The pid a pid file holds once it is written whole.
fn pid_in(pidfile: &Path) -> i32 {
    try_wait_until(Instant::now() + WAIT, || {
        std::fs::read_to_string(pidfile)
            .ok()?
            .strip_suffix('\n')?
            .parse()
            .ok()
    })
    .unwrap_or_else(|| panic!("no pid in {}", pidfile.display()))
}

/// A daemon the test started, killed if the test fails before it ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0) {
            let _ = kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

#[test]
fn uml_switch_daemon_stops_on_sigterm_and_removes_its_files() {
    for relative in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| {
            if relative {
                PathBuf::from(name)
            } else {
                dir.path().join(name)
            }
        };
        let (ctl, bess, pidfile) = (at("ctl"), at("bess"), at("sw.pid"));
        // Not a pipe: the daemon would hold it open after its parent exits.
        let errors = dir.path().join("stderr");
        let status = Command::new(our_tool("uml_switch"))
            .current_dir(dir.path())
            .arg("-unix")
            .arg(&ctl)
            .arg("-bess")
            .arg(&bess)
            .arg("-daemon")
            .arg("--pidfile")
            .arg(&pidfile)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .status()
            .unwrap();
        let stderr = std::fs::read_to_string(&errors).unwrap();
        assert!(status.success(), "{status}: {stderr}");
        let files = [
            dir.path().join("ctl"),
            dir.path().join("bess"),
            dir.path().join("sw.pid"),
        ];
        let pid = pid_in(&files[2]);
        let _stop = KillOnDrop(pid);
        assert!(files.iter().all(|f| f.exists()), "relative: {relative}");
        // It serves, and a port is open when the signal comes.
        let _port = Client::connect(&files[0]);
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        wait_until(
            Instant::now() + Duration::from_secs(10),
            "the daemon to exit and remove its files",
            || !running(pid) && files.iter().all(|f| !f.exists()),
        );
    }
}

#[test]
fn uml_switch_pidfile_is_never_written_through_a_symlink_and_removed_only_while_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, pidfile, victim) = (
        dir.path().join("ctl"),
        dir.path().join("sw.pid"),
        dir.path().join("victim"),
    );
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &pidfile).unwrap();
    let refused = Command::new(our_tool("uml_switch"))
        .arg("-unix")
        .arg(&ctl)
        .arg("--pidfile")
        .arg(&pidfile)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("symbolic link"),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&pidfile).unwrap().is_symlink());
    assert!(!ctl.exists(), "a refused start left its socket");

    std::fs::remove_file(&pidfile).unwrap();
    let mut switch = SwitchProcess::start(dir.path(), &["--pidfile", pidfile.to_str().unwrap()]);
    assert_eq!(pid_in(&pidfile), pid_of(&switch.child).as_raw());
    // A second switch is refused: the pid file names a running process.
    let second = Command::new(our_tool("uml_switch"))
        .arg("-unix")
        .arg(dir.path().join("ctl2"))
        .arg("--pidfile")
        .arg(&pidfile)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert_eq!(pid_in(&pidfile), pid_of(&switch.child).as_raw());
    // Replaced by someone else: left alone at exit.
    std::fs::remove_file(&pidfile).unwrap();
    std::fs::write(&pidfile, "someone else's\n").unwrap();
    assert!(switch.signal(Signal::SIGTERM).success());
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        "someone else's\n"
    );
}

#[test]
fn uml_switch_sigterm_at_any_stage_leaves_no_socket_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, bess) = (dir.path().join("ctl"), dir.path().join("bess"));
    let start = || {
        Command::new(our_tool("uml_switch"))
            .arg("-unix")
            .arg(&ctl)
            .arg("-bess")
            .arg(&bess)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let no_files = || !ctl.exists() && !bess.exists();
    // During start-up: the signal lands anywhere from before the first bind
    // to the loop's first wait.
    for _ in 0..20 {
        let mut child = start();
        kill(pid_of(&child), Signal::SIGTERM).unwrap();
        child.wait().unwrap();
        assert!(no_files(), "a signal during start-up left socket files");
    }
    // With a connection that never sent its request, and with a port.
    for with_port in [false, true] {
        let mut child = start();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _idle = UnixStream::connect(&ctl).unwrap();
        let _port = with_port.then(|| Client::connect(&ctl));
        kill(pid_of(&child), Signal::SIGTERM).unwrap();
        assert!(child.wait().unwrap().success());
        assert!(no_files(), "with_port: {with_port}");
    }
}

/// CPU time (user and system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second, as /proc counts CPU time.
fn ticks_per_second() -> u64 {
    let out = Command::new(host_program("getconf", "libc-bin"))
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A connection that never sends its request, made without waiting (a full
/// backlog refuses it with EAGAIN instead of blocking the test).
fn idle_connection(ctl: &Path) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(ctl).unwrap(),
    )
    .ok()?;
    Some(fd)
}

#[test]
fn uml_switch_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = Command::new("sh");
    limited.args([
        "-c",
        "ulimit -Sn 256 && ulimit -Hn 4096 && exec \"$0\" \"$@\"",
    ]);
    limited.arg(our_tool("uml_switch"));
    let switch = SwitchProcess::start_as(limited, dir.path(), &[]);
    let pid = pid_of(&switch.child).as_raw();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // "Max open files SOFT HARD files"
    assert_eq!(open_files[3..5], ["4096", "4096"], "{limits}");
}

#[test]
fn uml_switch_out_of_descriptors_idles_times_out_silent_clients_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = Command::new("sh");
    limited.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""]);
    limited.arg(our_tool("uml_switch"));
    let switch = SwitchProcess::start_as(limited, dir.path(), &[]);
    let pid = pid_of(&switch.child).as_raw();
    let idle: Vec<_> = (0..200)
        .filter_map(|_| idle_connection(&switch.ctl))
        .collect();
    assert!(idle.len() > 64, "only {} connections made", idle.len());
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    wait_until(
        Instant::now() + WAIT,
        "the switch to run out of descriptors",
        || descriptors() >= 60,
    );
    // Three seconds of being out of descriptors cost (nearly) nothing.
    let window = Duration::from_secs(3);
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    let budget = ticks_per_second() * window.as_secs() / 5;
    assert!(
        used < budget,
        "the switch used {used} ticks of CPU in {window:?} while out of descriptors"
    );
    switch.wait_for_line("descriptors");
    // A connection that never sends its request is closed in time.
    let mut byte = [0u8; 1];
    wait_until(
        Instant::now() + WAIT,
        "a silent connection to be closed",
        || {
            idle.iter().any(|fd| {
                matches!(
                    nix::sys::socket::recv(
                        std::os::fd::AsRawFd::as_raw_fd(fd),
                        &mut byte,
                        nix::sys::socket::MsgFlags::empty()
                    ),
                    Ok(0)
                )
            })
        },
    );
    // Once they go, guests are served again.
    drop(idle);
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    a.send(BROADCAST, b"back");
    assert_eq!(b.drain(), vec![frame(BROADCAST, a.mac, b"back")]);
}

/// A copy of the test bed's `switch_port` helper in `dir`, where other users
/// can run it (the build directory may be private to root).
fn helper_in(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("switch_port");
    std::fs::copy(env!("CARGO_BIN_EXE_switch_port"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// The `switch_port` helper run as `uid` (root: as ourselves).
fn switch_port(helper: &Path, uid: u32, args: &[&str]) -> Command {
    let mut command = if uid == 0 {
        Command::new(helper)
    } else {
        let mut setpriv = Command::new(host_program("setpriv", "util-linux"));
        setpriv.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ]);
        setpriv.arg(helper);
        setpriv
    };
    command.args(args);
    command
}

/// A socket bound by `switch_port bind…` as `uid`, held until dropped.
struct HeldSocket(Child);

impl HeldSocket {
    fn bind(helper: &Path, uid: u32, args: &[&str]) -> Self {
        Self::start(helper, uid, args, "BOUND")
    }

    /// Runs `switch_port` with `args` as `uid` until it prints `first`.
    fn start(helper: &Path, uid: u32, args: &[&str], first: &str) -> Self {
        let mut child = switch_port(helper, uid, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim_end(), first, "{args:?}");
        Self(child)
    }
}

impl Drop for HeldSocket {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// What the switch said to `switch_port request|register` run as `uid`.
fn asked(helper: &Path, uid: u32, args: &[&str]) -> String {
    let out = switch_port(helper, uid, args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A switch run by root in a directory every user may make sockets in, its
/// control socket open to all, and the `switch_port` helper beside it. The
/// directory comes first, so that bound as `let (dir, switch, helper)` it
/// is dropped last, after the switch has removed its files.
fn shared_switch(args: &[&str]) -> (tempfile::TempDir, SwitchProcess, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let switch = SwitchProcess::start(dir.path(), args);
    std::fs::set_permissions(&switch.ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let helper = helper_in(dir.path());
    (dir, switch, helper)
}

const NOBODY: u32 = 65534;
const OTHER_USER: u32 = 65533;
const THIRD_USER: u32 = 65532;
const FOURTH_USER: u32 = 65531;

#[test]
fn root_uml_switch_serves_only_data_sockets_of_the_connecting_user() {
    // Other users reach the control socket and make sockets beside it.
    let (dir, switch, helper) = shared_switch(&[]);
    let ctl = switch.ctl.to_str().unwrap();
    let tag = std::process::id();

    // Another user's abstract and filesystem sockets, and root's.
    let theirs = format!("victim-{tag}");
    let _abstract = HeldSocket::bind(&helper, OTHER_USER, &["bind", &theirs]);
    let their_path = dir.path().join("victim.sock");
    let their_path = their_path.to_str().unwrap();
    let _path = HeldSocket::bind(&helper, OTHER_USER, &["bind-path", their_path]);
    let root_path = dir.path().join("root.sock");
    let _root_socket = UnixDatagram::bind(&root_path).unwrap();
    let root_abstract = format!("root-{tag}");
    let _root_abstract = bind_data_socket(&root_abstract).unwrap();

    for target in [
        theirs.as_str(),
        their_path,
        root_path.to_str().unwrap(),
        root_abstract.as_str(),
        &format!("nobody-bound-this-{tag}"),
    ] {
        assert_eq!(
            asked(&helper, NOBODY, &["request", ctl, target]),
            "REFUSED",
            "{target}"
        );
    }
    switch.wait_for_line("belongs to uid");
    // The user's own socket is served, as a guest's is.
    assert_eq!(
        asked(&helper, NOBODY, &["register", ctl, &format!("own-{tag}")]),
        "ANSWERED"
    );
    // Root may name any user's socket.
    assert_eq!(asked(&helper, 0, &["request", ctl, &theirs]), "ANSWERED");
}

#[test]
fn root_uml_switch_limits_each_other_user_s_ports_and_silent_connections() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let bess = dir.path().join("bess");
    let switch = SwitchProcess::start(
        dir.path(),
        &[
            "--max-ports-per-user",
            "2",
            "--bess",
            bess.to_str().unwrap(),
        ],
    );
    for socket in [&switch.ctl, &bess] {
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let ctl = switch.ctl.to_str().unwrap();
    let helper = helper_in(dir.path());
    let tag = std::process::id();

    // BESS ports count alike: the third connection is closed at once.
    let _bess = HeldSocket::start(
        &helper,
        FOURTH_USER,
        &["hold-bess", bess.to_str().unwrap(), "3"],
        "OPEN 2",
    );
    switch.wait_for_line("Refused a BESS connection: uid 65531 has 2 ports (--max-ports-per-user)");

    // A user gets two ports; the third request is refused.
    let nobody = HeldSocket::start(
        &helper,
        NOBODY,
        &["hold-ports", ctl, &format!("nobody-{tag}"), "3"],
        "ANSWERED ANSWERED REFUSED",
    );
    switch.wait_for_line("Bad request: uid 65534 has 2 ports (--max-ports-per-user)");
    // Another user is not held to the first one's count.
    let _other = HeldSocket::start(
        &helper,
        OTHER_USER,
        &["hold-ports", ctl, &format!("other-{tag}"), "2"],
        "ANSWERED ANSWERED",
    );
    // Neither is root, nor the user the switch runs as (root here).
    let own: Vec<SwitchClient> = (0..3)
        .map(|i| SwitchClient::connect(&switch.ctl, &format!("root-{tag}-{i}")).unwrap())
        .collect();
    assert_eq!(own.len(), 3);
    // Ports given back may be asked for again, once the switch has seen
    // them go.
    drop(nobody);
    let again = try_wait_until(Instant::now() + WAIT, || {
        let answer = asked(&helper, NOBODY, &["register", ctl, &format!("again-{tag}")]);
        (answer == "ANSWERED").then_some(())
    });
    assert!(again.is_some(), "the user's closed ports still count");

    // Connections that send nothing: a user keeps 8 open, the rest are
    // closed at once, and others are still served meanwhile.
    let _idle = HeldSocket::start(&helper, NOBODY, &["hold-idle", ctl, "40"], "OPEN 8");
    switch.wait_for_line("Refused a connection: uid 65534 has 8 connections that sent no request");
    assert_eq!(
        asked(
            &helper,
            THIRD_USER,
            &["register", ctl, &format!("meanwhile-{tag}")]
        ),
        "ANSWERED"
    );
}

#[test]
fn root_uml_switch_leaves_a_reserve_of_descriptors_whatever_many_users_hold() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // 64 descriptors: other users may hold 48 of them together (a quarter
    // is kept), each at most 20 ports (40 descriptors).
    let mut limited = Command::new("sh");
    limited.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""]);
    limited.arg(our_tool("uml_switch"));
    let switch = SwitchProcess::start_as(limited, dir.path(), &["--max-ports-per-user", "20"]);
    std::fs::set_permissions(&switch.ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ctl = switch.ctl.to_str().unwrap();
    let helper = helper_in(dir.path());
    let tag = std::process::id();

    let twenty = vec!["ANSWERED"; 20].join(" ");
    let _nobody = HeldSocket::start(
        &helper,
        NOBODY,
        &["hold-ports", ctl, &format!("reserve-nobody-{tag}"), "20"],
        &twenty,
    );
    // A second user, within its own limit, gets the 8 descriptors left.
    let _other = HeldSocket::start(
        &helper,
        OTHER_USER,
        &["hold-ports", ctl, &format!("reserve-other-{tag}"), "5"],
        "ANSWERED ANSWERED ANSWERED ANSWERED REFUSED",
    );
    // Refused as it connects: even a connection still to send its request
    // takes a descriptor.
    switch.wait_for_line(
        "Refused a connection: users other than root and uid 0 hold 48 of the 48 descriptors they may",
    );
    assert_eq!(
        asked(
            &helper,
            THIRD_USER,
            &["register", ctl, &format!("reserve-third-{tag}")]
        ),
        "REFUSED"
    );
    // Root, the switch's own user here, still gets in.
    let root: Vec<SwitchClient> = (0..3)
        .map(|i| SwitchClient::connect(&switch.ctl, &format!("reserve-root-{tag}-{i}")).unwrap())
        .collect();
    assert_eq!(root.len(), 3);
}

#[test]
fn root_uml_switch_logs_another_user_s_port_churn_at_a_bounded_rate() {
    let (_dir, switch, helper) = shared_switch(&[]);
    let ctl = switch.ctl.to_str().unwrap();
    let tag = std::process::id();
    let churn_lines = || {
        switch
            .log()
            .lines()
            .filter(|l| *l == "New connection" || *l == "Disconnect")
            .count()
    };
    // Root's churn is logged whole, however fast: 60 ports, 120 lines.
    let root = asked(&helper, 0, &["churn", ctl, &format!("root-{tag}"), "60"]);
    assert_eq!(root, "ANSWERED 60");
    let deadline = Instant::now() + Duration::from_secs(30);
    while churn_lines() < 120 {
        assert!(Instant::now() < deadline, "root's lines:\n{}", switch.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another user's: 300 ports asked for and given back, 600 lines unlimited.
    let started = Instant::now();
    let churn = asked(
        &helper,
        NOBODY,
        &["churn", ctl, &format!("churn-{tag}"), "300"],
    );
    assert_eq!(churn, "ANSWERED 300");
    switch.wait_for_line("more lines about the connections of users other than root");
    let seconds = started.elapsed().as_secs() + 1;
    let lines = churn_lines() - 120;
    let bound = usize::try_from(20 * seconds).unwrap();
    assert!(
        lines <= bound,
        "{lines} lines in {seconds} s:\n{}",
        switch.log()
    );
}

#[test]
fn root_uml_switch_run_by_a_user_does_not_limit_that_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut as_other = Command::new(host_program("setpriv", "util-linux"));
    as_other.args([
        format!("--reuid={OTHER_USER}"),
        format!("--regid={OTHER_USER}"),
        "--clear-groups".to_owned(),
        our_tool("uml_switch").to_str().unwrap().to_owned(),
    ]);
    let switch = SwitchProcess::start_as(as_other, dir.path(), &["--max-ports-per-user", "1"]);
    let ctl = switch.ctl.to_str().unwrap();
    let helper = helper_in(dir.path());
    let tag = std::process::id();
    // The switch's socket is its user's; others need it opened to them.
    let chmod = Command::new("chmod").args(["0666", ctl]).status().unwrap();
    assert!(chmod.success());
    let _own = HeldSocket::start(
        &helper,
        OTHER_USER,
        &["hold-ports", ctl, &format!("own-user-{tag}"), "3"],
        "ANSWERED ANSWERED ANSWERED",
    );
    let _nobody = HeldSocket::start(
        &helper,
        NOBODY,
        &["hold-ports", ctl, &format!("own-user-nobody-{tag}"), "2"],
        "ANSWERED REFUSED",
    );
}

#[test]
fn root_real_kernel_unprivileged_daemon_guests_ping_through_a_root_switch() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let switch = SwitchProcess::start(dir.path(), &[]);
    std::fs::set_permissions(&switch.ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Each guest binds its data socket and connects itself, as its own user:
    // the switch finds the socket by the kernel's whole address and checks
    // its owner against the connection's.
    let nic = |mac: u8| {
        format!(
            "eth0=daemon,02:00:00:00:97:{mac:02x},unix,{}",
            switch.ctl.display()
        )
    };
    let mut target = UmlBuilder::new(GUEST)
        .arg(nic(1))
        .arg("IF=eth0")
        .arg("IP=10.99.13.1")
        .user(NOBODY, NOBODY)
        .start();
    target.wait_for_console("GUEST-READY", WAIT);
    let mut pinger = UmlBuilder::new(GUEST)
        .arg(nic(2))
        .arg("IF=eth0")
        .arg("IP=10.99.13.2")
        .arg("PEER=10.99.13.1")
        .user(NOBODY, NOBODY)
        .start();
    pinger.wait_for_console("PING-DONE", WAIT);
    let console = pinger.console();
    assert!(
        console.contains("20 packets received, 0% packet loss"),
        "{console}\n{}",
        switch.log()
    );
    assert!(!switch.log().contains("Bad request"), "{}", switch.log());
}

#[test]
fn root_uml_switch_keeps_sending_to_the_socket_it_checked_not_to_a_swapped_path() {
    let (dir, switch, helper) = shared_switch(&[]);
    let ctl = switch.ctl.to_str().unwrap();
    // A user's port at a filesystem socket of its own...
    let path = dir.path().join("mine.sock");
    let _port = HeldSocket::start(
        &helper,
        NOBODY,
        &["hold-port", ctl, path.to_str().unwrap()],
        "ANSWERED",
    );
    // ...whose path then names root's socket instead.
    let root_socket = UnixDatagram::bind(dir.path().join("root.sock")).unwrap();
    root_socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(dir.path().join("root.sock"), &path).unwrap();
    let (a, b) = (Client::connect(&switch.ctl), Client::connect(&switch.ctl));
    a.send(BROADCAST, b"flooded");
    // The flood went out (b has it), in the same batch as the port's copy.
    assert_eq!(b.drain(), vec![frame(BROADCAST, a.mac, b"flooded")]);
    let mut buf = [0u8; 100];
    assert!(
        root_socket.recv(&mut buf).is_err(),
        "the switch wrote a port's frames into root's socket through a swapped path"
    );
}

#[test]
fn uml_switch_closes_a_port_whose_data_socket_is_gone() {
    let switch = SwitchProcess::in_tempdir(&[]);
    let (a, b, c) = (
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
        Client::connect(&switch.ctl),
    );
    let Client {
        port: SwitchClient {
            data, control, own, ..
        },
        ..
    } = b;
    drop(data);
    a.send(BROADCAST, b"one");
    assert_eq!(c.drain(), vec![frame(BROADCAST, a.mac, b"one")]);
    // The port is closed with its control connection.
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        (&control).read(&mut byte).ok(),
        Some(0),
        "the port of a vanished socket stayed open"
    );
    // Whoever binds the name next gets nothing of the port's.
    let newcomer = UnixDatagram::bind_addr(&own).unwrap();
    newcomer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    a.send(BROADCAST, b"two");
    assert_eq!(c.drain(), vec![frame(BROADCAST, a.mac, b"two")]);
    assert!(newcomer.recv(&mut [0u8; 100]).is_err());
}

/// Out of descriptors, the switch cannot ask the kernel who owns an abstract
/// data socket: the request is refused, never served unchecked, so exhausting
/// the switch's descriptors does not open the confused-deputy door.
#[test]
fn uml_switch_out_of_descriptors_refuses_requests_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = Command::new("sh");
    limited.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""]);
    limited.arg(our_tool("uml_switch"));
    let switch = SwitchProcess::start_as(limited, dir.path(), &[]);
    let pid = pid_of(&switch.child).as_raw();
    // Connected first, its request sent once the switch has no descriptor left.
    let mut conn = UnixStream::connect(&switch.ctl).unwrap();
    let idle: Vec<_> = (0..200)
        .filter_map(|_| idle_connection(&switch.ctl))
        .collect();
    wait_until(
        Instant::now() + WAIT,
        "the switch to run out of descriptors",
        || {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count()
                >= 64
        },
    );
    let (_data, _, name) = bind_data_socket(&format!("exhausted-{}", std::process::id())).unwrap();
    let request = uml_testbed::switch_client::kernel_request(&name).unwrap();
    conn.write_all(&request).unwrap();
    assert!(!answered(conn), "a request was served unchecked");
    switch.wait_for_line("cannot check who owns");
    drop(idle);
}
