//! uml_switch's lab fabric: VLANs, link emulation and VXLAN uplinks, first
//! with hand-made clients (every frame checked byte for byte), then with real
//! guests, and across network namespaces against the kernel's own vxlan.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_proto::vxlan::VxlanHeader;
use uml_testbed::switch_client::SwitchClient;
use uml_testbed::{NetNamespace, our_tool, pid_of, try_wait_until};
use zerocopy::IntoBytes;

const WAIT: Duration = Duration::from_secs(60);

/// Our switch with the given arguments (in a namespace when one is named),
/// its output collected; stopped with SIGTERM when dropped.
struct Switch {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Switch {
    fn start(netns: Option<&NetNamespace>, args: &[String]) -> Self {
        let mut command = match netns {
            Some(ns) => ns.command(&our_tool("uml_switch")),
            None => Command::new(our_tool("uml_switch")),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let switch = Self { child, log };
        switch.wait_for_line("attached to unix socket");
        switch
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for_line(&self, needle: &str) {
        let printed = try_wait_until(Instant::now() + WAIT, || {
            self.log().contains(needle).then_some(())
        });
        assert!(printed.is_some(), "switch never printed `{needle}`:\n{}", self.log());
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = kill(pid_of(&self.child), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A daemon-transport client with a MAC of its own.
struct Client {
    port: SwitchClient,
    mac: MacAddr,
}

impl Client {
    fn connect(ctl: &Path) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port =
            SwitchClient::connect(ctl, &format!("fabric-test-{}-{n}", std::process::id())).unwrap();
        port.data
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let [_, _, hi, lo] = n.to_be_bytes();
        Self {
            port,
            mac: MacAddr([2, 0, 0, 0x77, hi, lo]),
        }
    }

    fn send(&self, frame: &[u8]) {
        self.port.send(frame).unwrap();
    }

    fn recv_within(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.port.data.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 70000];
        let n = self.port.data.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    fn recv(&self) -> Option<Vec<u8>> {
        self.recv_within(Duration::from_millis(300))
    }

    /// Everything that arrives until the line goes quiet.
    fn drain(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

/// An untagged frame of EtherType 0x88b5 with `payload`.
fn frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    let mut f = EthernetHeader::new(dst, src, 0x88b5).as_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// The same frame with an 802.1Q tag for `vid` after the addresses.
fn tagged(dst: MacAddr, src: MacAddr, vid: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = EthernetHeader::new(dst, src, 0x8100).as_bytes().to_vec();
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn path_arg(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn uml_switch_vlans_keep_domains_apart_and_trunks_carry_tags() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = |n: &str| dir.path().join(n);
    let switch = Switch::start(
        None,
        &[
            "-unix".to_owned(),
            path_arg(&ctl("ctl")),
            "--endpoint".to_owned(),
            format!("unix:{},vlan=10", ctl("v10").display()),
            "--endpoint".to_owned(),
            format!("unix:{},vlan=20", ctl("v20").display()),
            "--endpoint".to_owned(),
            format!("unix:{},trunk=10:20", ctl("trunk").display()),
        ],
    );
    let a = Client::connect(&ctl("v10"));
    let b = Client::connect(&ctl("v10"));
    let c = Client::connect(&ctl("v20"));
    let t = Client::connect(&ctl("trunk"));
    let plain = Client::connect(&ctl("ctl"));

    // A broadcast in VLAN 10 reaches B untagged, the trunk tagged, and
    // neither VLAN 20 nor a port without a VLAN.
    let hello = frame(MacAddr::BROADCAST, a.mac, b"hello ten");
    a.send(&hello);
    assert_eq!(b.recv(), Some(hello.clone()));
    assert_eq!(t.recv(), Some(tagged(MacAddr::BROADCAST, a.mac, 10, b"hello ten")));
    assert_eq!(c.drain(), Vec::<Vec<u8>>::new());
    assert_eq!(plain.drain(), Vec::<Vec<u8>>::new());

    // A tagged frame for VLAN 20 from the trunk reaches C untagged only.
    t.send(&tagged(MacAddr::BROADCAST, t.mac, 20, b"to twenty"));
    assert_eq!(c.recv(), Some(frame(MacAddr::BROADCAST, t.mac, b"to twenty")));
    assert_eq!(a.drain(), Vec::<Vec<u8>>::new());
    assert_eq!(b.drain(), Vec::<Vec<u8>>::new());

    // A tag the trunk does not carry, and a tagged frame on an access port, go nowhere.
    t.send(&tagged(MacAddr::BROADCAST, t.mac, 30, b"thirty"));
    a.send(&tagged(MacAddr::BROADCAST, a.mac, 20, b"hop"));
    for client in [&a, &b, &c, &plain] {
        assert_eq!(client.drain(), Vec::<Vec<u8>>::new());
    }

    // Learning is per VLAN: A was learned in 10, so a unicast for A in
    // VLAN 20 floods VLAN 20 instead of crossing over.
    t.send(&tagged(a.mac, t.mac, 20, b"not for ten"));
    assert_eq!(c.recv(), Some(frame(a.mac, t.mac, b"not for ten")));
    assert_eq!(a.drain(), Vec::<Vec<u8>>::new());

    // Full-size frames cross whole: 1514 bytes untagged in, 1518 tagged out, and back.
    let payload = vec![0x5a; 1500];
    let big = frame(t.mac, a.mac, &payload);
    assert_eq!(big.len(), 1514);
    t.send(&tagged(MacAddr::BROADCAST, t.mac, 10, b"learn me"));
    assert!(a.recv().is_some() && b.recv().is_some());
    a.send(&big);
    let out = t.recv().unwrap();
    assert_eq!(out.len(), 1518);
    assert_eq!(out, tagged(t.mac, a.mac, 10, &payload));
    t.send(&tagged(a.mac, t.mac, 10, &payload));
    assert_eq!(a.recv().map(|f| f.len()), Some(1514));
    assert_eq!(b.drain(), Vec::<Vec<u8>>::new(), "known unicast was flooded");
    drop(switch);
}

/// Sends `count` frames from `from` to `to` and returns each one's arrival
/// time after its sending (None when lost).
fn one_way(from: &Client, to: &Client, count: usize, gap: Duration) -> Vec<Option<Duration>> {
    (0..count)
        .map(|i| {
            let start = Instant::now();
            from.send(&frame(to.mac, from.mac, &i.to_be_bytes()));
            let got = to.recv_within(gap.max(Duration::from_millis(1)));
            got.map(|_| start.elapsed())
        })
        .collect()
}

#[test]
fn uml_switch_emulated_links_delay_lose_and_limit_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = |n: &str| dir.path().join(n);
    let _switch = Switch::start(
        None,
        &[
            "-unix".to_owned(),
            path_arg(&ctl("ctl")),
            "--endpoint".to_owned(),
            format!("unix:{},delay=100ms", ctl("slow").display()),
            "--endpoint".to_owned(),
            format!("unix:{},loss=20%", ctl("lossy").display()),
            "--endpoint".to_owned(),
            format!("unix:{},rate=1mbit,queue=1000", ctl("thin").display()),
        ],
    );
    let plain = Client::connect(&ctl("ctl"));
    let other = Client::connect(&ctl("ctl"));
    let slow = Client::connect(&ctl("slow"));
    let lossy = Client::connect(&ctl("lossy"));
    let thin = Client::connect(&ctl("thin"));
    // Every client announces itself, so later frames are known unicast.
    for c in [&plain, &other, &slow, &lossy, &thin] {
        c.send(&frame(MacAddr::BROADCAST, c.mac, b"hi"));
    }
    // Each drain waits for 300 ms of quiet, longer than the slow port's delay.
    for c in [&plain, &other, &slow, &lossy, &thin] {
        c.drain();
    }

    // 100 ms one way, out towards the slow port only.
    let delays = one_way(&plain, &slow, 10, Duration::from_secs(2));
    for d in &delays {
        let d = d.expect("a delayed frame was lost");
        assert!(d >= Duration::from_millis(100), "{d:?}");
        assert!(d < Duration::from_millis(600), "{d:?}");
    }
    // The other ports are not slowed.
    let fast = one_way(&plain, &other, 10, Duration::from_secs(2));
    assert!(
        fast.iter().all(|d| d.is_some_and(|d| d < Duration::from_millis(80))),
        "{fast:?}"
    );

    // 20 % loss over 500 frames, sent 5 at a time: a datagram socket's
    // queue holds only 10 (net.unix.max_dgram_qlen), and a full queue would
    // lose frames the emulation did not.
    let mut arrived = 0;
    for burst in 0..100u32 {
        for i in 0..5u32 {
            plain.send(&frame(lossy.mac, plain.mac, &(burst * 5 + i).to_be_bytes()));
        }
        while lossy.recv_within(Duration::from_millis(50)).is_some() {
            arrived += 1;
        }
    }
    assert!((330..=460).contains(&arrived), "{arrived} of 500 arrived");

    // 1 Mbit/s: 100 frames of 1250 bytes are 1 Mbit, a second's worth.
    let start = Instant::now();
    for _ in 0..100 {
        plain.send(&frame(thin.mac, plain.mac, &[0u8; 1236]));
    }
    let mut got = 0;
    while got < 100 {
        if thin.recv_within(Duration::from_secs(3)).is_none() {
            break;
        }
        got += 1;
    }
    let took = start.elapsed();
    assert_eq!(got, 100);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}

/// Two switches joined over VXLAN on loopback addresses; a third address
/// plays a stranger.
#[test]
fn uml_switch_vxlan_joins_two_switches_and_drops_what_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl1, ctl2) = (dir.path().join("one"), dir.path().join("two"));
    let port = 20_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let one = Switch::start(
        None,
        &args(&[
            "-unix",
            ctl1.to_str().unwrap(),
            "--vxlan",
            &format!("local=127.0.0.1:{port},vni=42,remote=127.0.0.2:{port}"),
        ]),
    );
    let two = Switch::start(
        None,
        &args(&[
            "-unix",
            ctl2.to_str().unwrap(),
            "--vxlan",
            &format!("local=127.0.0.2:{port},vni=42,remote=127.0.0.1:{port}"),
        ]),
    );
    let a = Client::connect(&ctl1);
    let b = Client::connect(&ctl2);
    let hello = frame(MacAddr::BROADCAST, a.mac, b"across");
    a.send(&hello);
    assert_eq!(b.recv(), Some(hello));
    let back = frame(a.mac, b.mac, b"and back");
    b.send(&back);
    assert_eq!(a.recv(), Some(back));

    // Datagrams a switch must drop: another VNI and a cut header from its
    // remote's address, a good one from a stranger's.
    let inner = frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0x66, 0, 1]), b"bad");
    let packet = |vni: u32| {
        let mut p = VxlanHeader::new(vni).as_bytes().to_vec();
        p.extend_from_slice(&inner);
        p
    };
    let from_remote = UdpSocket::bind("127.0.0.2:0").unwrap();
    from_remote.send_to(&packet(43), ("127.0.0.1", port)).unwrap();
    from_remote.send_to(&packet(42)[..12], ("127.0.0.1", port)).unwrap();
    let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
    stranger.send_to(&packet(42), ("127.0.0.1", port)).unwrap();
    one.wait_for_line("VNI 43 (1 such so far)");
    one.wait_for_line("truncated VXLAN packet (12 bytes) (1 such so far)");
    one.wait_for_line("127.0.0.3");
    assert!(one.log().contains("not a remote (1 such so far)"), "{}", one.log());
    assert_eq!(a.drain(), Vec::<Vec<u8>>::new(), "a bad packet was forwarded");
    // The same packet from the remote's address with the right VNI is taken.
    from_remote.send_to(&packet(42), ("127.0.0.1", port)).unwrap();
    assert_eq!(a.recv(), Some(inner));
    drop(two);
}
