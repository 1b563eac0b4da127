//! uml_switch's lab fabric: VLANs, link emulation and VXLAN uplinks, first
//! with hand-made clients (every frame checked byte for byte), then with real
//! guests, and across network namespaces against the kernel's own vxlan.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_proto::vxlan::VxlanHeader;
use uml_testbed::switch_client::SwitchClient;
use uml_testbed::{ChildLog, NetNamespace, Uml, UmlBuilder, our_tool, pid_of};
use zerocopy::IntoBytes;

const WAIT: Duration = Duration::from_secs(60);

/// Our switch with the given arguments (in a namespace when one is named),
/// its output collected; stopped with SIGTERM when dropped.
struct Switch {
    child: Child,
    log: ChildLog,
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
        let log = ChildLog::collect(&mut child);
        let switch = Self { child, log };
        switch.wait_for_line("attached to unix socket");
        switch
    }

    fn log(&self) -> String {
        self.log.text()
    }

    fn wait_for_line(&self, needle: &str) {
        self.log.wait_for(needle, WAIT);
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
    assert_eq!(
        t.recv(),
        Some(tagged(MacAddr::BROADCAST, a.mac, 10, b"hello ten"))
    );
    assert_eq!(c.drain(), Vec::<Vec<u8>>::new());
    assert_eq!(plain.drain(), Vec::<Vec<u8>>::new());

    // A tagged frame for VLAN 20 from the trunk reaches C untagged only.
    t.send(&tagged(MacAddr::BROADCAST, t.mac, 20, b"to twenty"));
    assert_eq!(
        c.recv(),
        Some(frame(MacAddr::BROADCAST, t.mac, b"to twenty"))
    );
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
    assert_eq!(
        b.drain(),
        Vec::<Vec<u8>>::new(),
        "known unicast was flooded"
    );
    drop(switch);
}

/// A BESS connection (SOCK_SEQPACKET, one frame per message) to `path`.
fn bess_client(path: &Path) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = uml_testbed::switch_client::connect_bess(path).unwrap();
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 300_000),
    )
    .unwrap();
    fd
}

fn bess_recv(fd: &std::os::fd::OwnedFd) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 70000];
    let n = nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn uml_switch_bess_endpoints_put_their_connections_in_a_vlan() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let switch = Switch::start(
        None,
        &[
            "-unix".to_owned(),
            path_arg(&path("ctl")),
            "--endpoint".to_owned(),
            format!("bess:{},vlan=10", path("v10.bess").display()),
            "--endpoint".to_owned(),
            format!("unix:{},trunk=10", path("trunk").display()),
        ],
    );
    switch.wait_for_line("bess socket");
    let bess = bess_client(&path("v10.bess"));
    let trunk = Client::connect(&path("trunk"));
    let plain = Client::connect(&path("ctl"));
    let mac = MacAddr([2, 0, 0, 0x55, 0, 1]);
    let hello = frame(MacAddr::BROADCAST, mac, b"from bess");
    nix::sys::socket::send(
        bess.as_raw_fd(),
        &hello,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        trunk.recv(),
        Some(tagged(MacAddr::BROADCAST, mac, 10, b"from bess"))
    );
    assert_eq!(plain.drain(), Vec::<Vec<u8>>::new());
    trunk.send(&tagged(mac, trunk.mac, 10, b"to bess"));
    assert_eq!(bess_recv(&bess), Some(frame(mac, trunk.mac, b"to bess")));
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
        fast.iter()
            .all(|d| d.is_some_and(|d| d < Duration::from_millis(80))),
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
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
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
    from_remote
        .send_to(&packet(43), ("127.0.0.1", port))
        .unwrap();
    from_remote
        .send_to(&packet(42)[..12], ("127.0.0.1", port))
        .unwrap();
    let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
    stranger.send_to(&packet(42), ("127.0.0.1", port)).unwrap();
    one.wait_for_line("VNI 43 (1 such so far)");
    one.wait_for_line("truncated VXLAN packet (12 bytes) (1 such so far)");
    one.wait_for_line("127.0.0.3");
    assert!(
        one.log().contains("not a remote (1 such so far)"),
        "{}",
        one.log()
    );
    assert_eq!(
        a.drain(),
        Vec::<Vec<u8>>::new(),
        "a bad packet was forwarded"
    );
    // The same packet from the remote's address with the right VNI is taken.
    from_remote
        .send_to(&packet(42), ("127.0.0.1", port))
        .unwrap();
    assert_eq!(a.recv(), Some(inner));
    drop(two);
}

/// The guest side of the real-kernel tests, configured by kernel
/// command-line variables: IF, IP; MODS=1 loads 802.1Q from /mod; TAG=N
/// puts the address on a tagged sub-interface IF.N; HTTP=KB serves a file of
/// that size; PEERS (colon-separated) are waited for, then pinged COUNT
/// times every INT seconds with SIZE-byte payloads; NOPEERS are pinged 5
/// times without waiting; FETCH=IP times a download of the file IP serves.
const GUEST: &str = r#"ip link set lo up
ip link set "$IF" up
if [ -n "$MODS" ]; then for m in llc stp garp mrp 8021q; do insmod /mod/$m.ko || echo "INSMOD-FAIL $m"; done; fi
DEV="$IF"
if [ -n "$TAG" ]; then
  ip link add link "$IF" name "$IF.$TAG" type vlan id "$TAG" || echo VLAN-FAIL
  ip link set "$IF.$TAG" up
  DEV="$IF.$TAG"
fi
ip addr add "$IP/24" dev "$DEV"
if [ -n "$HTTP" ]; then
  mkdir -p /tmp/www
  dd if=/dev/zero of=/tmp/www/blob bs=1000 count="$HTTP" 2>/dev/null
  httpd -p 8080 -h /tmp/www
fi
echo GUEST-READY
for p in $(echo "$PEERS" | tr : ' '); do
  n=0
  until ping -c 1 -W 1 "$p" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
  echo "PINGRESULT $p $(ping -c ${COUNT:-10} -i ${INT:-0.2} -W 2 -s ${SIZE:-56} "$p" | tail -2 | tr '\n' ' ')"
done
for p in $(echo "$NOPEERS" | tr : ' '); do
  echo "PINGRESULT $p $(ping -c 5 -W 1 "$p" | tail -2 | tr '\n' ' ')"
done
if [ -n "$FETCH" ]; then
  t0=$(cut -d' ' -f1 /proc/uptime)
  wget -q -O /dev/null "http://$FETCH:8080/blob" && echo "FETCH-OK"
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "FETCHTIME $t0 $t1"
fi
echo PINGS-DONE
while true; do sleep 1; done"#;

/// Boots a guest plugged into the daemon control socket `ctl` (in a
/// namespace when one is named), with MAC 02:00:00:00:9a:`mac`.
fn guest(netns: Option<&str>, ctl: &Path, mac: u8, vars: &[&str], modules: bool) -> Uml {
    let mut builder = UmlBuilder::new(GUEST)
        .arg(format!(
            "eth0=daemon,02:00:00:00:9a:{mac:02x},unix,{}",
            ctl.display()
        ))
        .arg("IF=eth0");
    for var in vars {
        builder = builder.arg(*var);
    }
    if modules {
        builder = builder.arg("MODS=1");
        for (dir, name) in [
            ("llc", "llc"),
            ("802", "stp"),
            ("802", "garp"),
            ("802", "mrp"),
            ("8021q", "8021q"),
        ] {
            builder = builder.file(
                &format!("/mod/{name}.ko"),
                &std::fs::read(module(dir, name)).unwrap(),
            );
        }
    }
    if let Some(ns) = netns {
        builder = builder.netns(ns);
    }
    let mut uml = builder.start();
    uml.wait_for_console("GUEST-READY", WAIT);
    uml
}

/// A module of the guest kernel (Debian's user-mode-linux ships 802.1Q as one).
fn module(dir: &str, name: &str) -> PathBuf {
    let base = Path::new("/usr/lib/uml/modules");
    let version = std::fs::read_dir(base)
        .unwrap_or_else(|e| panic!("{}: {e}: install user-mode-linux", base.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("kernel/net").is_dir())
        .expect("a module tree for linux.uml");
    version.join(format!("kernel/net/{dir}/{name}.ko"))
}

/// What a guest's ping of `peer` reported: (received of sent, min and max
/// round trip in ms when any came back).
fn ping_result(uml: &Uml, peer: &str) -> (u32, u32, Option<(f64, f64)>) {
    let console = uml.console();
    let line = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("PINGRESULT {peer} ")))
        .unwrap_or_else(|| panic!("no ping result for {peer}:\n{console}"))
        .to_owned();
    // "[--- statistics ---] 10 packets transmitted, 9 packets received, 10% packet loss round-trip ..."
    let at = line
        .find(" packets transmitted")
        .unwrap_or_else(|| panic!("unreadable ping result: {line}"));
    let line = &line[line[..at].rfind(' ').map_or(0, |i| i + 1)..];
    let count = |part: usize| -> u32 {
        line.split(',')
            .nth(part)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unreadable ping result: {line}"))
    };
    let (sent, received) = (count(0), count(1));
    let rtt = line.split("= ").nth(1).map(|t| {
        let v: Vec<f64> = t
            .split(' ')
            .next()
            .unwrap()
            .split('/')
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[2])
    });
    (received, sent, rtt)
}

#[test]
fn real_kernel_vlan_guests_reach_their_vlan_only_and_a_trunk_sub_interface() {
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
    let _ten = guest(None, &ctl("v10"), 1, &["IP=10.99.30.1"], false);
    let _twenty = guest(None, &ctl("v20"), 3, &["IP=10.99.30.3"], false);
    let mut other_ten = guest(
        None,
        &ctl("v10"),
        2,
        &["IP=10.99.30.2", "PEERS=10.99.30.1", "NOPEERS=10.99.30.3"],
        false,
    );
    // The trunk guest's tagged sub-interface, with full-size frames
    // (1472 + 28 = a 1500-byte packet, a 1518-byte tagged frame).
    let mut trunk = guest(
        None,
        &ctl("trunk"),
        4,
        &[
            "IP=10.99.30.4",
            "TAG=10",
            "PEERS=10.99.30.1",
            "SIZE=1472",
            "COUNT=5",
        ],
        true,
    );
    other_ten.wait_for_console("PINGS-DONE", WAIT);
    trunk.wait_for_console("PINGS-DONE", WAIT);
    let (got, sent, _) = ping_result(&other_ten, "10.99.30.1");
    assert_eq!((got, sent), (10, 10), "{}", other_ten.console());
    let (got, _, _) = ping_result(&other_ten, "10.99.30.3");
    assert_eq!(got, 0, "VLAN 10 reached VLAN 20:\n{}", other_ten.console());
    assert!(!trunk.console().contains("-FAIL"), "{}", trunk.console());
    let (got, sent, _) = ping_result(&trunk, "10.99.30.1");
    assert_eq!((got, sent), (5, 5), "{}\n{}", trunk.console(), switch.log());
}

#[test]
fn real_kernel_emulated_links_delay_lose_and_limit_guests_traffic() {
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
            format!("unix:{},rate=1mbit", ctl("thin").display()),
        ],
    );
    // 250 kB is 2 Mbit: two seconds at 1 Mbit/s.
    let _server = guest(
        None,
        &ctl("ctl"),
        0x11,
        &["IP=10.99.31.1", "HTTP=250"],
        false,
    );
    let mut plain = guest(
        None,
        &ctl("ctl"),
        0x12,
        &["IP=10.99.31.2", "PEERS=10.99.31.1"],
        false,
    );
    let mut slow = guest(
        None,
        &ctl("slow"),
        0x13,
        &["IP=10.99.31.3", "PEERS=10.99.31.1"],
        false,
    );
    let mut lossy = guest(
        None,
        &ctl("lossy"),
        0x14,
        &["IP=10.99.31.4", "PEERS=10.99.31.1", "COUNT=200", "INT=0.05"],
        false,
    );
    let mut thin = guest(
        None,
        &ctl("thin"),
        0x15,
        &["IP=10.99.31.5", "PEERS=10.99.31.1", "FETCH=10.99.31.1"],
        false,
    );
    for uml in [&mut plain, &mut slow, &mut lossy, &mut thin] {
        uml.wait_for_console("PINGS-DONE", Duration::from_secs(120));
    }
    // 100 ms one way: every round trip at least 100 ms, none far beyond.
    let (got, _, rtt) = ping_result(&slow, "10.99.31.1");
    let (min, max) = rtt.unwrap();
    assert!(
        got >= 9 && min >= 100.0 && max < 400.0,
        "{}",
        slow.console()
    );
    // The port without emulation is not slowed.
    let (got, _, rtt) = ping_result(&plain, "10.99.31.1");
    assert!(got == 10 && rtt.unwrap().0 < 100.0, "{}", plain.console());
    // 20 % of the replies lost, within a wide tolerance over 200 pings.
    let (got, sent, _) = ping_result(&lossy, "10.99.31.1");
    let lost = f64::from(sent - got) / f64::from(sent);
    assert!((0.08..=0.35).contains(&lost), "{lost}: {}", lossy.console());
    // 2 Mbit at 1 Mbit/s.
    let console = thin.console();
    assert!(console.contains("FETCH-OK"), "{console}");
    let times: Vec<f64> = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("FETCHTIME "))
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let took = times[1] - times[0];
    assert!(
        (1.8..8.0).contains(&took),
        "the transfer took {took} s:\n{console}"
    );
}

/// Two network namespaces joined by a veth pair, `10.99.<net>.1` in the
/// first and `.2` in the second.
fn namespace_pair(tag: &str, net: u8) -> (NetNamespace, NetNamespace) {
    let (one, two) = (
        NetNamespace::new(&format!("{tag}-a")),
        NetNamespace::new(&format!("{tag}-b")),
    );
    one.ip(&[
        "link",
        "add",
        "vx-a",
        "type",
        "veth",
        "peer",
        "name",
        "vx-b",
        "netns",
        two.name(),
    ]);
    for (ns, dev, host) in [(&one, "vx-a", 1), (&two, "vx-b", 2)] {
        ns.ip(&["addr", "add", &format!("10.99.{net}.{host}/24"), "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
    (one, two)
}

/// A guest on each of two switches in two namespaces, the switches joined
/// by the `--vxlan` settings `link(local, remote)`: the guests ping.
fn guests_across_vxlan(tag: &str, net: u8, size: u32, link: impl Fn(&str, &str) -> String) {
    let (one, two) = namespace_pair(tag, net);
    let dir = tempfile::tempdir().unwrap();
    let (ctl1, ctl2) = (dir.path().join("one"), dir.path().join("two"));
    let (ip1, ip2) = (format!("10.99.{net}.1"), format!("10.99.{net}.2"));
    let s1 = Switch::start(
        Some(&one),
        &args(&[
            "-unix",
            ctl1.to_str().unwrap(),
            "--vxlan",
            &link(&ip1, &ip2),
        ]),
    );
    let _s2 = Switch::start(
        Some(&two),
        &args(&[
            "-unix",
            ctl2.to_str().unwrap(),
            "--vxlan",
            &link(&ip2, &ip1),
        ]),
    );
    let inner = net + 1;
    // Each guest runs in its switch's namespace: the daemon transport's
    // abstract data socket is only reachable there.
    let _far = guest(
        Some(two.name()),
        &ctl2,
        net,
        &[&format!("IP=10.99.{inner}.2")],
        false,
    );
    let peer = format!("10.99.{inner}.2");
    let mut near = guest(
        Some(one.name()),
        &ctl1,
        inner,
        &[
            &format!("IP=10.99.{inner}.1"),
            &format!("PEERS={peer}"),
            &format!("SIZE={size}"),
        ],
        false,
    );
    near.wait_for_console("PINGS-DONE", WAIT);
    let (got, sent, _) = ping_result(&near, &peer);
    assert_eq!((got, sent), (10, 10), "{}\n{}", near.console(), s1.log());
}

#[test]
fn root_real_kernel_guests_on_two_switches_joined_by_vxlan() {
    // 1500-byte packets: 1550-byte datagrams on a 1500-byte veth, fragmented by the host.
    guests_across_vxlan("uml-vxlan", 40, 1472, |local, remote| {
        format!("local={local},vni=4242,remote={remote}")
    });
}

#[test]
fn root_real_kernel_guests_on_two_switches_joined_by_a_vxlan_multicast_group() {
    guests_across_vxlan("uml-vxlan-m", 44, 56, |local, _| {
        format!("local={local},vni=4243,group=239.1.99.44")
    });
}

#[test]
fn root_real_kernel_guest_reaches_a_kernel_vxlan_device() {
    let (ours, kernel) = namespace_pair("uml-vxlan-k", 42);
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let switch = Switch::start(
        Some(&ours),
        &args(&[
            "-unix",
            ctl.to_str().unwrap(),
            "--vxlan",
            "local=10.99.42.1,vni=77,remote=10.99.42.2",
        ]),
    );
    // The kernel's side: a vxlan device of the same VNI on the standard
    // port, bridged to a veth whose peer has the address the guest pings.
    for args in [
        &[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "77",
            "dstport",
            "4789",
            "local",
            "10.99.42.2",
            "remote",
            "10.99.42.1",
            "dev",
            "vx-b",
        ][..],
        &["link", "add", "br0", "type", "bridge"],
        &["link", "add", "vb0", "type", "veth", "peer", "name", "vb1"],
        &["link", "set", "vx0", "master", "br0"],
        &["link", "set", "vb0", "master", "br0"],
        &["addr", "add", "10.99.43.9/24", "dev", "vb1"],
        &["link", "set", "vx0", "up"],
        &["link", "set", "br0", "up"],
        &["link", "set", "vb0", "up"],
        &["link", "set", "vb1", "up"],
    ] {
        kernel.ip(args);
    }
    let mut uml = guest(
        Some(ours.name()),
        &ctl,
        0x31,
        &["IP=10.99.43.1", "PEERS=10.99.43.9"],
        false,
    );
    uml.wait_for_console("PINGS-DONE", WAIT);
    let (got, sent, _) = ping_result(&uml, "10.99.43.9");
    assert_eq!((got, sent), (10, 10), "{}\n{}", uml.console(), switch.log());
    // The kernel learned the guest's MAC behind our switch's address.
    let fdb = kernel.show(&["-d", "link", "show", "vx0"]);
    assert!(fdb.contains("vxlan id 77"), "{fdb}");
    let out = Command::new(uml_testbed::host_program("bridge", "iproute2"))
        .args(["-n", kernel.name(), "fdb", "show", "dev", "vx0"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&out.stdout);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with("02:00:00:00:9a:31") && l.contains("dst 10.99.42.1")),
        "the kernel did not learn the guest behind our switch:\n{fdb}"
    );
}

#[test]
fn root_real_kernel_tap_endpoint_in_a_vlan() {
    let ns = NetNamespace::new("uml-fabric-tap");
    ns.ip(&["tuntap", "add", "dev", "tap-v10", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.99.50.1/24", "dev", "tap-v10"]);
    ns.ip(&["link", "set", "tap-v10", "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let (ctl, v10, v20) = (
        dir.path().join("ctl"),
        dir.path().join("v10"),
        dir.path().join("v20"),
    );
    let _switch = Switch::start(
        Some(&ns),
        &[
            "-unix".to_owned(),
            path_arg(&ctl),
            "--endpoint".to_owned(),
            "tap:tap-v10,vlan=10".to_owned(),
            "--endpoint".to_owned(),
            format!("unix:{},vlan=10", v10.display()),
            "--endpoint".to_owned(),
            format!("unix:{},vlan=20", v20.display()),
        ],
    );
    let mut twenty = guest(
        Some(ns.name()),
        &v20,
        0x51,
        &["IP=10.99.50.3", "NOPEERS=10.99.50.1"],
        false,
    );
    let mut ten = guest(
        Some(ns.name()),
        &v10,
        0x52,
        &["IP=10.99.50.2", "PEERS=10.99.50.1"],
        false,
    );
    ten.wait_for_console("PINGS-DONE", WAIT);
    twenty.wait_for_console("PINGS-DONE", WAIT);
    let (got, sent, _) = ping_result(&ten, "10.99.50.1");
    assert_eq!((got, sent), (10, 10), "{}", ten.console());
    let (got, _, _) = ping_result(&twenty, "10.99.50.1");
    assert_eq!(
        got,
        0,
        "VLAN 20 reached the VLAN 10 tap:\n{}",
        twenty.console()
    );
}
