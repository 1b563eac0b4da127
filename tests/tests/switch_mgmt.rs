//! uml_switch's management socket, counters, event stream and pcapng
//! captures, through `uml_switchctl`, hostile clients, tshark and real guests.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use serde_json::Value;
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_testbed::switch_client::SwitchClient;
use uml_testbed::{
    ChildLog, Uml, UmlBuilder, host_program, our_tool, pid_of, switchctl_json, try_wait_until,
    wait_until,
};
use zerocopy::IntoBytes;

const WAIT: Duration = Duration::from_secs(60);

/// Our switch with a management socket, in a directory of its own.
struct Managed {
    child: Child,
    log: ChildLog,
    ctl: PathBuf,
    mgmt: PathBuf,
    dir: tempfile::TempDir,
}

impl Managed {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl");
        let mgmt = dir.path().join("mgmt");
        let mut child = Command::new(our_tool("uml_switch"))
            .arg("-unix")
            .arg(&ctl)
            .arg("--mgmt")
            .arg(&mgmt)
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
            mgmt,
            dir,
        };
        switch.wait_for_line("management socket");
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

    /// `uml_switchctl --json MGMT ARGS...`: its one JSON result.
    fn ctl(&self, args: &[&str]) -> Value {
        serde_json::from_str(&switchctl_json(&self.mgmt, args)).unwrap()
    }

    fn port(&self, id: u64) -> Value {
        let ports = self.ctl(&["ports"]);
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no port {id} in {ports}"))
    }

    fn stop(&mut self) {
        if self.alive() {
            kill(pid_of(&self.child), Signal::SIGTERM).unwrap();
            self.child.wait().unwrap();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One management connection, spoken to line by line.
struct Mgmt {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Mgmt {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).unwrap();
    }

    /// The next reply line, None at the end of the connection.
    fn line(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    fn ask(&mut self, request: &str) -> Value {
        self.send(format!("{request}\n").as_bytes());
        self.line().unwrap()
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A daemon port of our own, with a MAC of its own.
struct Port {
    client: SwitchClient,
    mac: MacAddr,
}

impl Port {
    fn connect(switch: &Managed) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let client = SwitchClient::connect(
            &switch.ctl,
            &format!("mgmt-test-{}-{n}", std::process::id()),
        )
        .unwrap();
        client
            .data
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let [_, _, hi, lo] = n.to_be_bytes();
        Self {
            client,
            mac: MacAddr([2, 0, 0, 0x44, hi, lo]),
        }
    }

    fn send(&self, dst: MacAddr, payload: &[u8]) {
        let frame = [
            EthernetHeader::new(dst, self.mac, 0x88b5).as_bytes(),
            payload,
        ]
        .concat();
        self.client.send(&frame).unwrap();
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.client.send(bytes).unwrap();
    }

    /// Frames waiting for us, until the line goes quiet.
    fn drain(&self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 70000];
        std::iter::from_fn(|| {
            let n = self.client.data.recv(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        })
        .collect()
    }
}

/// The port whose MAC list holds `mac`.
fn port_of(switch: &Managed, mac: &str) -> Option<u64> {
    let ports = switch.ctl(&["ports"]);
    ports.as_array()?.iter().find_map(|p| {
        p["macs"]
            .as_array()?
            .iter()
            .any(|m| m == mac)
            .then(|| p["id"].as_u64())?
    })
}

/// The port numbers in `ports` order, newest last.
fn port_ids(switch: &Managed) -> Vec<u64> {
    switch
        .ctl(&["ports"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn uml_switch_counts_every_frame_exactly() {
    let switch = Managed::start(&[]);
    let a = Port::connect(&switch);
    let b = Port::connect(&switch);
    let stalled = Port::connect(&switch); // never reads until the end
    let ids = port_ids(&switch);
    let (ia, ib, ic) = (ids[0], ids[1], ids[2]);
    let mut events = Mgmt::connect(&switch.mgmt);
    assert_eq!(events.ask("events")["ok"], true);

    // a broadcasts 400 frames of 100 bytes (114 on the wire), five at a time
    // while b keeps up: each goes to b and to the stalled port, whose queue
    // and then whose backlog in the switch (256 frames) fill.
    let mut got_b = 0;
    let mut buf = vec![0u8; 70000];
    for round in 0..80u32 {
        for i in 0..5u32 {
            let n = round * 5 + i;
            a.send(
                MacAddr::BROADCAST,
                &[n.to_le_bytes().as_slice(), &[0u8; 96]].concat(),
            );
        }
        for _ in 0..5 {
            let n = b.client.data.recv(&mut buf).expect("b's copy of a's frame");
            assert_eq!(n, 114);
            got_b += 1;
        }
    }
    // Two runts, and a frame from a stranger (a socket that is no port),
    // which the kernel refuses: a's port socket takes only a's frames.
    a.send_raw(&[1, 2, 3]);
    a.send_raw(&[0u8; 13]);
    let stranger = UnixDatagram::unbound().unwrap();
    let hello = [
        EthernetHeader::new(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 0x77]), 0x88b5).as_bytes(),
        b"stranger",
    ]
    .concat();
    let refused = stranger
        .send_to_addr(&hello, &a.client.switch)
        .expect_err("a stranger's frame was taken");
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EPERM));
    // b answers a by unicast, 5 frames of 60 bytes.
    for _ in 0..5 {
        b.send(a.mac, &[0u8; 46]);
    }
    let sent = try_wait_until(Instant::now() + WAIT, || {
        (switch.port(ia)["tx"]["frames"] == 5).then_some(())
    });
    assert!(
        sent.is_some(),
        "a never got b's 5 frames: ports {} stats {} log {}",
        switch.ctl(&["ports"]),
        switch.ctl(&["stats"]),
        switch.log()
    );
    assert_eq!(a.drain().len(), 5);

    let pa = switch.port(ia);
    assert_eq!(pa["rx"]["frames"], 402, "{pa}");
    assert_eq!(pa["rx"]["bytes"], 400 * 114 + 3 + 13, "{pa}");
    assert_eq!(pa["drops"]["runt"], 2, "{pa}");
    assert_eq!(pa["tx"]["bytes"], 5 * 60, "{pa}");
    assert_eq!(pa["macs"][0], a.mac.to_string());
    let pb = switch.port(ib);
    assert_eq!(pb["tx"]["frames"], u64::try_from(got_b).unwrap(), "{pb}");
    assert_eq!(pb["tx"]["frames"], 400, "{pb}");
    assert_eq!(pb["rx"]["frames"], 5, "{pb}");
    // The stalled port: every copy was taken by its queue, waited in its
    // backlog until it read, or was dropped.
    let queued = stalled.drain().len() as u64;
    let pc = switch.port(ic);
    assert_eq!(pc["tx"]["frames"], queued, "{pc}");
    assert_eq!(pc["drops"]["queue_full"], 400 - queued, "{pc}");
    assert!(queued < 400, "the stalled port took everything: {pc}");
    assert!(queued > 256, "the backlog held nothing back: {pc}");

    let stats = switch.ctl(&["stats"]);
    assert_eq!(stats["rx"]["frames"], 407, "{stats}");
    assert_eq!(stats["drops"]["unregistered"], 0, "{stats}");
    assert_eq!(stats["drops"]["runt"], 2, "{stats}");
    assert_eq!(stats["tx"]["frames"], 400 + queued + 5, "{stats}");
    assert_eq!(stats["ports"], 3);

    let macs = switch.ctl(&["macs"]);
    let table: Vec<(String, u64)> = macs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mac"].as_str().unwrap().to_owned(),
                m["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(table.contains(&(a.mac.to_string(), ia)), "{macs}");
    assert!(table.contains(&(b.mac.to_string(), ib)), "{macs}");
    assert_eq!(
        switch.ctl(&["macs", "flush", &ib.to_string()])["flushed"],
        1
    );
    assert_eq!(switch.ctl(&["macs"]).as_array().unwrap().len(), 1);

    // The drops were reported as events, rate-limited: their counts add up.
    let mut runts = 0;
    let mut all = Vec::new();
    while runts < 2 {
        let e = events
            .line()
            .unwrap_or_else(|| panic!("drops missing from {all:?}"));
        if e["event"] == "drops" {
            let count = e["count"].as_u64().unwrap();
            match (e["port"].as_u64(), e["reason"].as_str()) {
                (Some(p), Some("runt")) if p == ia => runts += count,
                _ => {}
            }
        }
        all.push(e);
    }
    assert_eq!(runts, 2, "{all:?}");

    // A closed port's counts stay in the totals.
    assert_eq!(
        switch.ctl(&["port", "close", &ic.to_string()])["closed"],
        ic
    );
    assert_eq!(port_ids(&switch), [ia, ib]);
    assert_eq!(switch.ctl(&["stats"])["tx"]["frames"], 400 + queued + 5);
    // Hub mode: b's unicast to a now floods... to a only (the other port is gone), and
    // a unicast to an unknown address floods too.
    assert_eq!(switch.ctl(&["hub", "on"])["hub"], true);
    assert_eq!(switch.ctl(&["stats"])["hub"], true);
}

/// The pcapng blocks in a stream: (type, body).
fn blocks(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        assert!(len >= 12 && len % 4 == 0, "bad block length {len} at {at}");
        if at + len > bytes.len() {
            break;
        }
        out.push((kind, bytes[at + 8..at + len - 4].to_vec()));
        at += len;
    }
    out
}

/// Enhanced packet blocks: type 6.
const EPB: u32 = 6;

#[test]
fn uml_switch_capture_reader_that_never_reads_costs_frames_not_forwarding() {
    let switch = Managed::start(&[]);
    let a = Port::connect(&switch);
    let b = Port::connect(&switch);
    let ids = port_ids(&switch);
    // Teach the switch b's address, so that a's frames go to b alone.
    b.send(a.mac, b"hello");
    wait_until(Instant::now() + WAIT, "b's MAC learned", || {
        port_of(&switch, &b.mac.to_string()).is_some()
    });
    a.drain();

    let mut capture = Mgmt::connect(&switch.mgmt);
    let reply = capture.ask(&format!("capture start port {}", ids[0]));
    assert_eq!(reply["ok"], true, "{reply}");
    // From here on the capture's reader reads nothing while a sends 2000
    // jumbo frames (18 MB, more than the capture's queue holds).
    let sent = 2000u64;
    let b_reader = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut buf = vec![0u8; 70000];
        while got < 2000 {
            match b.client.data.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 9014);
                    got += 1;
                }
                Err(_) => break,
            }
        }
        got
    });
    for i in 0..sent {
        a.send(
            b_mac_of(&switch, ids[1]),
            &[i.to_le_bytes().as_slice(), &[7u8; 8992]].concat(),
        );
        if i % 5 == 4 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    let got = b_reader.join().unwrap();
    let pb = switch.port(ids[1]);
    // Forwarding went on: every frame reached b or was dropped at b's full queue only.
    assert_eq!(
        got + pb["drops"]["queue_full"].as_u64().unwrap(),
        sent,
        "{pb}"
    );
    assert!(
        got >= sent * 95 / 100,
        "only {got} of {sent} frames reached b"
    );

    let mut other = Mgmt::connect(&switch.mgmt);
    let list = other.ask("capture list");
    let info = &list["result"][0];
    let (captured, dropped) = (
        info["captured"].as_u64().unwrap(),
        info["dropped"].as_u64().unwrap(),
    );
    assert_eq!(captured + dropped, sent, "{list}");
    assert!(dropped > 0, "nothing was dropped: {list}");
    let pa = switch.port(ids[0]);
    assert_eq!(pa["drops"]["capture"], dropped, "{pa}");
    assert_eq!(switch.ctl(&["stats"])["drops"]["capture"], dropped);

    // Now read: every frame captured arrives, whole, before the stream is stopped.
    let mut stream = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    wait_until(
        Instant::now() + WAIT,
        "the captured frames to arrive",
        || {
            let n = capture.reader.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "{e}: {} bytes, {} packets of {captured}",
                    stream.len(),
                    blocks(&stream).iter().filter(|(k, _)| *k == EPB).count()
                )
            });
            stream.extend_from_slice(&buf[..n]);
            blocks(&stream).iter().filter(|(k, _)| *k == EPB).count() as u64 >= captured
        },
    );
    let packets: Vec<Vec<u8>> = blocks(&stream)
        .into_iter()
        .filter(|(k, _)| *k == EPB)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(packets.len() as u64, captured);
    for body in &packets {
        // interface, timestamp (2), captured and original length, then the frame.
        let caplen = u32::from_le_bytes(body[12..16].try_into().unwrap());
        assert_eq!(caplen, 9014);
    }
    let stopped = other.ask("capture stop");
    assert_eq!(stopped["ok"], true, "{stopped}");
    // The capture's connection is closed by the switch.
    while capture.reader.read(&mut buf).unwrap() > 0 {}
}

fn b_mac_of(switch: &Managed, port: u64) -> MacAddr {
    let p = switch.port(port);
    let mac = p["macs"][0].as_str().unwrap();
    let octets: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    MacAddr(octets.try_into().unwrap())
}

#[test]
fn uml_switch_mgmt_answers_bad_input_and_keeps_forwarding() {
    let mut switch = Managed::start(&[]);
    let a = Port::connect(&switch);
    let b = Port::connect(&switch);

    let mut m = Mgmt::connect(&switch.mgmt);
    let r = m.ask("garbage in");
    assert_eq!(
        (r["ok"].clone(), r["error"]["code"].clone()),
        (false.into(), "unknown-command".into())
    );
    assert_eq!(r["v"], 1);
    let r = m.ask("[\"port\", 3]");
    assert_eq!(r["error"]["code"], "bad-request", "{r}");
    let r = m.ask("port close 999");
    assert_eq!(r["error"]["code"], "no-such-port", "{r}");
    let r = m.ask("port set 999 colour red");
    assert_eq!(r["error"]["code"], "bad-argument", "{r}");
    let r = m.ask("port set 999 vlan 3");
    assert_eq!(r["error"]["code"], "no-such-port", "{r}");
    let r = m.ask("port set 1 emulation sideways delay=1ms");
    assert_eq!(r["error"]["code"], "bad-argument", "{r}");
    m.send(b"\xff\xfe\n");
    assert_eq!(m.line().unwrap()["error"]["code"], "bad-request");
    let r = m.ask("version");
    assert_eq!(r["result"]["schema"], 1, "{r}");

    // A 10 MB line: an error, then the connection is closed.
    let mut long = Mgmt::connect(&switch.mgmt);
    let writer = long.writer.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let r = long.line().unwrap();
    assert_eq!(r["error"]["code"], "line-too-long", "{r}");
    assert!(long.line().is_none());
    flood.join().unwrap();

    // An event subscriber that never reads is cut off, not waited for.
    let mut deaf = Mgmt::connect(&switch.mgmt);
    assert_eq!(deaf.ask("events")["ok"], true);
    for _ in 0..40 {
        let ports: Vec<Port> = (0..100).map(|_| Port::connect(&switch)).collect();
        drop(ports);
        if switch.log().contains("event subscriber that does not read") {
            break;
        }
    }
    switch.wait_for_line("Closed an event subscriber that does not read");
    let mut buf = vec![0u8; 1 << 20];
    while deaf.reader.read(&mut buf).unwrap_or(0) > 0 {}

    // A thousand clients at once: those beyond the limit are told and closed.
    let mut clients: Vec<UnixStream> = Vec::new();
    for _ in 0..1000 {
        match UnixStream::connect(&switch.mgmt) {
            Ok(c) => clients.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let mut served = 0;
    let mut refused = 0;
    for client in &mut clients {
        client.set_read_timeout(Some(WAIT)).unwrap();
        let _ = client.write_all(b"stats\n");
        let mut line = String::new();
        let _ = BufReader::new(&*client).read_line(&mut line);
        let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if reply["ok"] == true {
            served += 1;
        } else {
            assert_eq!(reply["error"]["code"], "too-many-clients", "{reply}");
            refused += 1;
        }
    }
    assert!(
        served > 0 && refused > 0,
        "{served} served, {refused} refused"
    );
    drop(clients);

    // Through it all the switch forwarded.
    assert!(switch.alive());
    a.send(MacAddr::BROADCAST, b"still here");
    let frames = b.drain();
    assert!(frames.iter().any(|f| f.ends_with(b"still here")));
    assert_eq!(m.ask("stats")["ok"], true);
}

#[test]
fn uml_switch_mgmt_socket_is_owner_only_and_never_replaces_a_live_one() {
    use std::os::unix::fs::PermissionsExt;
    let switch = Managed::start(&[]);
    let mode = std::fs::metadata(&switch.mgmt)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = Command::new(our_tool("uml_switch"))
        .arg("-unix")
        .arg(switch.dir.path().join("ctl2"))
        .arg("--mgmt")
        .arg(&switch.mgmt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another server"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(Mgmt::connect(&switch.mgmt).ask("version")["ok"], true);
}

/// The guests' script: address up, then (with PEER) ping it 20 times and report
/// the interface's counters every 0.3 s.
const GUEST: &str = r#"mount -t proc proc /proc
mount -t sysfs sysfs /sys
ip link set "$IF" up
ip addr add "$IP/24" dev "$IF"
echo GUEST-READY
if [ -n "$HALT" ]; then exit 0; fi
if [ -n "$PEER" ]; then
  n=0
  until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
  ping -c 20 -i 0.1 -W 2 "$PEER" | tail -2
  echo PING-DONE
fi
while true; do
  echo "COUNTERS $(cat /sys/class/net/$IF/statistics/tx_packets) $(cat /sys/class/net/$IF/statistics/rx_packets)"
  sleep 0.3
done"#;

fn guest_mac(n: u8) -> String {
    format!("02:00:00:00:98:{n:02x}")
}

fn guest(switch: &Managed, n: u8, vars: &[&str]) -> Uml {
    let mut builder = UmlBuilder::new(GUEST)
        .arg(format!(
            "eth0=daemon,{},unix,{}",
            guest_mac(n),
            switch.ctl.display()
        ))
        .arg("IF=eth0");
    for var in vars {
        builder = builder.arg(*var);
    }
    let mut uml = builder.start();
    uml.wait_for_console("GUEST-READY", WAIT);
    uml
}

/// The guest's last reported (tx, rx) packet counts.
fn guest_counters(uml: &Uml) -> Option<(u64, u64)> {
    uml.console().lines().rev().find_map(|l| {
        let mut w = l.trim().strip_prefix("COUNTERS ")?.split(' ');
        Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
    })
}

fn tshark() -> PathBuf {
    host_program("tshark", "tshark")
}

/// `tshark -r FILE` (or `-` with `stdin`): one line per ICMP frame:
/// interface name, source MAC, ICMP type. Fails on any warning.
fn icmp_frames(output: std::process::Output) -> Vec<(String, String, String)> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tshark failed: {stderr}");
    // Its note about running as root (CI does) is about tshark, not the file.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Running as user \"root\""))
        .collect();
    assert!(warnings.is_empty(), "tshark warned: {stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3).then(|| (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()))
        })
        .collect()
}

const TSHARK_FIELDS: [&str; 10] = [
    "-Y",
    "icmp",
    "-T",
    "fields",
    "-e",
    "frame.interface_name",
    "-e",
    "eth.src",
    "-e",
    "icmp.type",
];

/// Checks that the echo requests come from the pinger's MAC on the pinger's
/// interface and the replies from the target's on the target's.
fn assert_ping_captured(
    frames: &[(String, String, String)],
    pinger: (u64, &str),
    target: (u64, &str),
) {
    let request = (
        format!("daemon:{}", pinger.0),
        pinger.1.to_owned(),
        "8".to_owned(),
    );
    let reply = (
        format!("daemon:{}", target.0),
        target.1.to_owned(),
        "0".to_owned(),
    );
    assert!(
        frames.contains(&request),
        "no echo request {request:?} in {frames:?}"
    );
    assert!(
        frames.contains(&reply),
        "no echo reply {reply:?} in {frames:?}"
    );
    for (iface, src, _) in frames {
        let expected = if src == pinger.1 { pinger.0 } else { target.0 };
        assert_eq!(
            iface,
            &format!("daemon:{expected}"),
            "{src} on the wrong interface"
        );
    }
}

#[test]
fn real_kernel_guests_ping_through_a_capturing_switch_and_counters_match() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ping.pcapng");
    let mut switch = Managed::start(&["--pcap", pcap.to_str().unwrap()]);
    let events = Command::new(our_tool("uml_switchctl"))
        .arg("--json")
        .arg(&switch.mgmt)
        .arg("events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let events = EventReader::new(events);
    let target = guest(&switch, 1, &["IP=10.99.6.1"]);
    let mut pinger = guest(&switch, 2, &["IP=10.99.6.2", "PEER=10.99.6.1"]);
    pinger.wait_for_console("PING-DONE", WAIT);
    assert!(
        pinger
            .console()
            .contains("20 packets received, 0% packet loss"),
        "{}",
        pinger.console()
    );
    let (mac1, mac2) = (guest_mac(1), guest_mac(2));
    let p1 = port_of(&switch, &mac1).unwrap();
    let p2 = port_of(&switch, &mac2).unwrap();

    // The switch's counters equal the guests' own, once both have settled.
    for (uml, port) in [(&target, p1), (&pinger, p2)] {
        wait_until(
            Instant::now() + WAIT,
            "the switch's counters to equal the guest's",
            || {
                let Some((tx, rx)) = guest_counters(uml) else {
                    return false;
                };
                let p = switch.port(port);
                p["rx"]["frames"] == tx && p["tx"]["frames"] == rx
            },
        );
    }
    let stats = switch.ctl(&["stats"]);
    assert!(stats["rx"]["frames"].as_u64().unwrap() >= 40, "{stats}");
    let macs = switch.ctl(&["macs"]);
    assert!(
        macs.as_array()
            .unwrap()
            .iter()
            .any(|m| m["mac"] == mac1.as_str() && m["port"] == p1),
        "{macs}"
    );

    // The port-up events named the guests' processes.
    let up = events.wait_for(|e| e["event"] == "port-up" && e["port"] == p2);
    assert!(
        up["peer"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", pinger.pid())),
        "{up}"
    );
    events.wait_for(|e| e["event"] == "mac-learned" && e["mac"] == mac2.as_str());

    drop(pinger);
    events.wait_for(|e| e["event"] == "port-down" && e["port"] == p2);
    drop(target);
    switch.stop();

    let output = Command::new(tshark())
        .arg("-r")
        .arg(&pcap)
        .args(TSHARK_FIELDS)
        .output()
        .unwrap();
    let frames = icmp_frames(output);
    assert!(frames.len() >= 40, "{frames:?}");
    assert_ping_captured(&frames, (p2, &mac2), (p1, &mac1));
}

/// An `uml_switchctl events` child whose lines are collected.
struct EventReader {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl EventReader {
    fn new(mut child: Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, lines }
    }

    fn wait_for(&self, what: impl Fn(&Value) -> bool) -> Value {
        let found = try_wait_until(Instant::now() + WAIT, || {
            self.lines.lock().unwrap().iter().find(|e| what(e)).cloned()
        });
        found.unwrap_or_else(|| panic!("no such event in {:?}", self.lines.lock().unwrap()))
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        let _ = kill(pid_of(&self.child), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn real_kernel_events_show_a_guest_port_at_boot_and_halt() {
    let switch = Managed::start(&[]);
    let events = EventReader::new(
        Command::new(our_tool("uml_switchctl"))
            .arg("--json")
            .arg(&switch.mgmt)
            .arg("events")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut uml = guest(&switch, 5, &["IP=10.99.6.5", "HALT=1"]);
    let pid = uml.pid();
    let up = events.wait_for(|e| {
        e["event"] == "port-up"
            && e["peer"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("pid {pid} ")))
    });
    assert_eq!(up["v"], 1);
    // The guest halts on its own; its port goes with it.
    uml.wait_exit(WAIT);
    let down = events.wait_for(|e| e["event"] == "port-down" && e["port"] == up["port"]);
    assert_eq!(down["name"], up["name"]);
}

#[test]
fn real_kernel_live_capture_through_a_fifo_and_uml_switchctl() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut switch = Managed::start(&["--pcap", fifo.to_str().unwrap(), "--pcap-outbound"]);
    // tshark reads the FIFO as the switch writes it.
    let fifo_reader = Command::new(tshark())
        .arg("-r")
        .arg(&fifo)
        .args(TSHARK_FIELDS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let target = guest(&switch, 1, &["IP=10.99.7.1"]);
    let p1 = port_ids(&switch)[0];
    // uml_switchctl streams the target's port (both directions) into tshark.
    let mut ctl = Command::new(our_tool("uml_switchctl"))
        .arg(&switch.mgmt)
        .args(["capture", "--port", &p1.to_string(), "--outbound"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ctl_reader = Command::new(tshark())
        .args(["-r", "-"])
        .args(TSHARK_FIELDS)
        .stdin(ctl.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Instant::now() + WAIT, "both captures running", || {
        switch.ctl(&["capture", "list"]).as_array().unwrap().len() == 2
    });
    let mut pinger = guest(&switch, 2, &["IP=10.99.7.2", "PEER=10.99.7.1"]);
    pinger.wait_for_console("PING-DONE", WAIT);
    let p2 = port_of(&switch, &guest_mac(2)).unwrap();

    // Stopping the streamed capture ends uml_switchctl, and tshark with it.
    let list = switch.ctl(&["capture", "list"]);
    let streamed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == "stream")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    switch.ctl(&["capture", "stop", &streamed.to_string()]);
    assert!(ctl.wait().unwrap().success());
    let frames = icmp_frames(ctl_reader.wait_with_output().unwrap());
    // Port p1 only: requests sent to it (outbound, on its interface) and its replies.
    assert!(
        frames
            .iter()
            .all(|(iface, _, _)| iface == &format!("daemon:{p1}")),
        "{frames:?}"
    );
    assert!(
        frames.contains(&(format!("daemon:{p1}"), guest_mac(2), "8".to_owned())),
        "{frames:?}"
    );
    assert!(
        frames.contains(&(format!("daemon:{p1}"), guest_mac(1), "0".to_owned())),
        "{frames:?}"
    );

    drop(pinger);
    drop(target);
    switch.stop();
    let frames = icmp_frames(fifo_reader.wait_with_output().unwrap());
    // Inbound and outbound copies: each request is seen on both ports.
    let requests_in = (format!("daemon:{p2}"), guest_mac(2), "8".to_owned());
    let requests_out = (format!("daemon:{p1}"), guest_mac(2), "8".to_owned());
    assert!(frames.contains(&requests_in), "{frames:?}");
    assert!(frames.contains(&requests_out), "{frames:?}");
    assert!(
        frames.contains(&(format!("daemon:{p1}"), guest_mac(1), "0".to_owned())),
        "{frames:?}"
    );
}

#[test]
fn uml_switch_pcap_to_stdout_keeps_the_log_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let mut child = Command::new(our_tool("uml_switch"))
        .arg("-unix")
        .arg(&ctl)
        .args(["--pcap", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&stream);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("attached to unix socket"), "{first}");

    let a = SwitchClient::connect(&ctl, &format!("mgmt-stdout-{}", std::process::id())).unwrap();
    let frame = [
        EthernetHeader::new(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 0x31]), 0x88b5).as_bytes(),
        &[9u8; 1000],
    ]
    .concat();
    for _ in 0..10 {
        a.send(&frame).unwrap();
    }
    wait_until(
        Instant::now() + WAIT,
        "ten frames on standard output",
        || {
            blocks(&stream.lock().unwrap())
                .iter()
                .filter(|(k, _)| *k == EPB)
                .count()
                == 10
        },
    );
    let bytes = stream.lock().unwrap().clone();
    assert_eq!(
        bytes[..4],
        0x0a0d_0d0a_u32.to_le_bytes(),
        "no section header first"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("New connection"),
        "a log line in the capture"
    );
    kill(pid_of(&child), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("New connection"), "{rest}");
}

#[test]
fn uml_switch_port_set_puts_ports_in_vlans_at_run_time() {
    let switch = Managed::start(&[]);
    let a = Port::connect(&switch);
    let b = Port::connect(&switch);
    let ids = port_ids(&switch);
    let (ia, ib) = (ids[0].to_string(), ids[1].to_string());
    assert_eq!(
        switch.ctl(&["port", "set", &ia, "vlan", "10"])["vlan"],
        "10"
    );
    switch.ctl(&["port", "set", &ib, "vlan", "20"]);
    a.send(MacAddr::BROADCAST, b"vlan 10 only");
    assert!(
        b.drain().is_empty(),
        "a frame crossed from VLAN 10 to VLAN 20"
    );
    switch.ctl(&["port", "set", &ib, "vlan", "10"]);
    a.send(MacAddr::BROADCAST, b"now both in 10");
    let got = b.drain();
    assert!(
        got.iter().any(|f| f.ends_with(b"now both in 10")),
        "{got:?}"
    );
    switch.ctl(&["port", "set", &ia, "vlan", "none"]);
    switch.ctl(&["port", "set", &ib, "vlan", "none"]);
    switch.ctl(&["port", "set", &ib, "description", "the", "second", "guest"]);
    assert_eq!(switch.port(ids[1])["description"], "the second guest");
    a.send(MacAddr::BROADCAST, b"transparent again");
    assert!(b.drain().iter().any(|f| f.ends_with(b"transparent again")));
}

#[test]
fn uml_switch_events_tell_macs_learned_moved_and_aged() {
    let switch = Managed::start(&["--max-age", "1"]);
    let mut events = Mgmt::connect(&switch.mgmt);
    assert_eq!(events.ask("events")["ok"], true);
    let a = Port::connect(&switch);
    let b = Port::connect(&switch);
    let ids = port_ids(&switch);
    let mut next = |what: &dyn Fn(&Value) -> bool| -> Value {
        let mut seen = Vec::new();
        loop {
            let e = events
                .line()
                .unwrap_or_else(|| panic!("no such event in {seen:?}"));
            if what(&e) {
                return e;
            }
            seen.push(e);
        }
    };
    let up = next(&|e| e["event"] == "port-up");
    assert_eq!(up["port"], ids[0]);
    a.send(MacAddr::BROADCAST, b"hello");
    let mac = a.mac.to_string();
    let learned = next(&|e| e["event"] == "mac-learned");
    assert_eq!(
        (learned["mac"].as_str(), learned["port"].as_u64()),
        (Some(mac.as_str()), Some(ids[0]))
    );
    // b sends with a's address: the address moves to b's port.
    let moved = [
        EthernetHeader::new(MacAddr::BROADCAST, a.mac, 0x88b5).as_bytes(),
        b"me too",
    ]
    .concat();
    b.send_raw(&moved);
    let e = next(&|e| e["event"] == "mac-moved");
    assert_eq!(
        (e["port"].as_u64(), e["from"].as_u64()),
        (Some(ids[1]), Some(ids[0]))
    );
    let e = next(&|e| e["event"] == "mac-aged");
    assert_eq!(
        (e["mac"].as_str(), e["port"].as_u64()),
        (Some(mac.as_str()), Some(ids[1]))
    );
    assert_eq!(e["v"], 1);
}

#[test]
fn uml_switch_a_guest_flooding_source_addresses_fills_neither_its_memory_nor_the_log() {
    // A guest may send from as many source addresses as it likes (macof):
    // the learning table stops at its limit and the log does not take a
    // line per address.
    let switch = Managed::start(&["--max-macs", "1000"]);
    let a = Port::connect(&switch);
    const FLOOD: u32 = 5000;
    for i in 0..FLOOD {
        let [_, x, y, z] = i.to_be_bytes();
        let src = MacAddr([2, 0x66, 0, x, y, z]);
        let frame = [
            EthernetHeader::new(MacAddr::BROADCAST, src, 0x88b5).as_bytes(),
            b"flood",
        ]
        .concat();
        a.send_raw(&frame);
    }
    let deadline = Instant::now() + WAIT;
    while switch.ctl(&["stats"])["rx"]["frames"].as_u64() < Some(u64::from(FLOOD)) {
        assert!(
            Instant::now() < deadline,
            "the switch did not take the flood"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = switch.ctl(&["stats"]);
    assert_eq!(stats["macs"], 1000, "{stats}");
    let log = switch.log();
    let learned = log.matches(" Addr: ").count();
    assert!(learned <= 200, "{learned} address lines for one flood");
    switch.wait_for_line("learning table is full (1000 addresses)");
    // What was not logged is told, at the next tick.
    switch.wait_for_line("more addresses learned or moved, not logged");
    // Addresses known before the table filled are still served.
    let b = Port::connect(&switch);
    b.send(MacAddr([2, 0x66, 0, 0, 0, 7]), b"to a known address");
    let got = a.drain();
    assert_eq!(
        got.len(),
        1,
        "the frame to a known address reached its port"
    );
}
