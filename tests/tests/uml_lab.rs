//! uml_lab with real guests: a routed lab whose ends ping each other, the
//! stop escalation, restart policies, the manager killed and the lab still
//! cleaned up, bad lab files refused before anything starts, and the
//! examples/ labs.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use serde_json::Value;
use uml_proto::mconsole::WatchdogHangWire;
use uml_testbed::{NetNamespace, host_program, our_tool, pid, try_wait_until, wait_until};
use zerocopy::IntoBytes;

const WAIT: Duration = Duration::from_secs(90);

/// uml_lab, with the tools it drives built beside it.
fn uml_lab_binary() -> PathBuf {
    for tool in ["uml_switch", "uml_mkcow", "uml_moo", "tunctl"] {
        our_tool(tool);
    }
    our_tool("uml_lab")
}

/// A lab in a directory of its own: the lab file, a busybox image, and the run directory.
struct Lab {
    dir: tempfile::TempDir,
    file: PathBuf,
    name: String,
}

impl Lab {
    /// Writes `text` as `<name>.toml` beside a fresh `busybox.img`.
    fn new(name: &str, text: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("lab").tempdir().unwrap();
        let lab = Self {
            file: dir.path().join(format!("{name}.toml")),
            dir,
            name: name.to_owned(),
        };
        let image = lab.run(&["image", "busybox", "busybox.img"]);
        assert!(image.status.success(), "{image:?}");
        std::fs::write(&lab.file, text).unwrap();
        lab
    }

    fn base(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn run_dir(&self) -> PathBuf {
        self.base().join(&self.name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(uml_lab_binary())
            .args(args)
            .env("UML_LAB_RUN_DIR", self.base())
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "uml_lab {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn up(&self) -> String {
        self.ok(&["up", self.file.to_str().unwrap()])
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn machine(&self, name: &str) -> Value {
        self.status()["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap()
    }

    /// A file the guest wrote into its /lab share.
    fn shared(&self, machine: &str, file: &str) -> String {
        std::fs::read_to_string(
            self.run_dir()
                .join("vm")
                .join(machine)
                .join("share")
                .join(file),
        )
        .unwrap_or_default()
    }

    /// Waits until the guest's share has `file` containing `needle`.
    fn wait_shared(&self, machine: &str, file: &str, needle: &str) {
        let found = try_wait_until(Instant::now() + WAIT, || {
            self.shared(machine, file).contains(needle).then_some(())
        });
        assert!(
            found.is_some(),
            "{machine} never wrote {needle:?} to /lab/{file}: {:?}\n{}",
            self.shared(machine, file),
            self.diagnostics()
        );
    }

    /// Everything a failed wait should show: each machine's share, startup
    /// log and kernel log, each switch's log, and the lab's events, every file
    /// told apart from a missing one (a guest's peer or router is as likely
    /// the culprit as the guest itself).
    fn diagnostics(&self) -> String {
        let show = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => format!("--- {}:\n{text}\n", path.display()),
            Err(e) => format!("--- {}: {e}\n", path.display()),
        };
        let mut out = show(&self.run_dir().join("events.log"));
        out.push_str(&show(&self.run_dir().join("supervisor.log")));
        let entries = |dir: PathBuf| {
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        for net in entries(self.run_dir().join("net")) {
            out.push_str(&show(&net.join("switch.log")));
        }
        for vm in entries(self.run_dir().join("vm")) {
            let share = vm.join("share");
            out.push_str(&format!(
                "--- {} holds {:?}\n",
                share.display(),
                entries(share.clone())
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
            ));
            out.push_str(&show(&share.join("startup.log")));
            out.push_str(&show(&vm.join("kernel.log")));
        }
        out
    }

    /// Checks that no machine lost memory to the gap the host's address
    /// randomization puts between the kernel's program and its heap: UML adds
    /// that gap (up to 1 GiB) to its "physical" memory, and its page map and
    /// hash tables, sized for it, then take up to 20 MiB of what the machine
    /// asked for. A 48M machine was left with under 10 MiB free after boot,
    /// and panicked now and then.
    fn assert_memory_as_asked(&self) {
        let vm = self.run_dir().join("vm");
        let machines: Vec<PathBuf> = std::fs::read_dir(&vm)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(!machines.is_empty(), "no machine in {}", vm.display());
        for machine in machines {
            let log = std::fs::read_to_string(machine.join("kernel.log")).unwrap();
            // Written by the kernel itself before its consoles exist, as the gap's line is.
            assert!(
                log.contains("Checking if /dev/shm is on tmpfs"),
                "{} never started:\n{log}",
                machine.display()
            );
            let gap = log.lines().find(|l| l.contains("exec-shield gap"));
            assert_eq!(gap, None, "{} lost memory to the gap", machine.display());
        }
    }

    /// Live processes whose command line names this lab's directory.
    fn processes(&self) -> Vec<String> {
        let mark = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_str().unwrap_or("").parse::<u32>().is_ok())
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (state != "Z" && cmdline.contains(&mark)).then_some(cmdline)
            })
            .collect()
    }

    /// Takes the lab down and checks that nothing is left: no process, no
    /// socket, no file beyond the lab file and the image.
    fn down_and_check_clean(&self) {
        self.ok(&["down", "--timeout", "5"]);
        assert!(!self.base().exists(), "the run directory is left");
        assert_eq!(self.processes(), Vec::<String>::new());
        let mut left: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec!["busybox.img".to_owned(), format!("{}.toml", self.name)];
        expected.sort();
        assert_eq!(left, expected);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test still stops what it started.
        if self.base().exists() {
            let _ = self.run(&["down", "--timeout", "1"]);
        }
    }
}

/// The ends ping each other through the router and report in their share.
const ROUTED: &str = r#"
name = "routed"

[defaults]
disk = "busybox.img"
consoles = ["log"]

[networks.left]

[networks.right]
transport = "bess"
mode = "hub"

[machines.a]
interfaces = [{ network = "left", address = "10.99.41.1/24" }]
startup = """
ip route add default via 10.99.41.254
n=0; until ping -c 1 -W 1 10.99.42.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
ping -c 3 10.99.42.1 > /lab/ping.txt 2>&1 && echo PING-OK >> /lab/ping.txt
"""

[machines.router]
memory = "48M"
interfaces = [
  { network = "left", address = "10.99.41.254/24" },
  { network = "right", address = "10.99.42.254/24" },
]
startup = "echo 1 > /proc/sys/net/ipv4/ip_forward"

[machines.b]
interfaces = [{ network = "right", address = "10.99.42.1/24" }]
startup = """
ip route add default via 10.99.42.254
n=0; until ping -c 1 -W 1 10.99.41.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
ping -c 3 10.99.41.1 > /lab/ping.txt 2>&1 && echo PING-OK >> /lab/ping.txt
"""
"#;

#[test]
fn real_kernel_uml_lab_routed_lab_pings_shows_status_and_leaves_nothing() {
    let lab = Lab::new("routed", ROUTED);
    let table = lab.up();
    assert!(
        table.contains("router") && table.contains("running"),
        "{table}"
    );
    lab.wait_shared("a", "ping.txt", "PING-OK");
    lab.wait_shared("b", "ping.txt", "PING-OK");

    let status = lab.status();
    let machines = status["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3);
    for m in machines {
        assert_eq!(m["state"], "running", "{m}");
        assert!(m["pid"].as_i64().is_some(), "{m}");
    }
    let interfaces = |name: &str| {
        machines.iter().find(|m| m["name"] == name).unwrap()["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{} {} {}",
                    i["name"].as_str().unwrap(),
                    i["network"].as_str().unwrap(),
                    i["address"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(interfaces("a"), ["eth0 left 10.99.41.1/24"]);
    assert_eq!(
        interfaces("router"),
        ["eth0 left 10.99.41.254/24", "vec1 right 10.99.42.254/24"]
    );
    assert_eq!(interfaces("b"), ["vec0 right 10.99.42.1/24"]);
    let networks = status["networks"].as_array().unwrap();
    assert!(networks.iter().all(|n| n["state"] == "running"), "{status}");

    // `up` again starts nothing new.
    let pids: Vec<Value> = machines.iter().map(|m| m["pid"].clone()).collect();
    lab.up();
    let again = lab.status();
    let pids_again: Vec<Value> = again["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pid"].clone())
        .collect();
    assert_eq!(pids, pids_again);

    // The manager is killed: status and down still find everything.
    let supervisor = again["supervisor"]["pid"].as_i64().unwrap();
    kill(pid(u32::try_from(supervisor).unwrap()), Signal::SIGKILL).unwrap();
    wait_until(Instant::now() + WAIT, "the supervisor's end", || {
        lab.status()["supervisor"]["running"] == false
    });
    let orphaned = lab.status();
    assert!(
        orphaned["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "running"),
        "{orphaned}"
    );
    lab.down_and_check_clean();
}

#[test]
fn real_kernel_uml_lab_stop_escalates_and_commit_keeps_the_disk() {
    let lab = Lab::new(
        "stops",
        r#"
[defaults]
disk = "busybox.img"
consoles = ["log"]

[machines.polite]
startup = "echo kept > /root/note; sync; touch /lab/ready"

[machines.deaf]
# Ctrl-Alt-Del runs /etc/cad in the busybox image: this one ignores it.
startup = "echo 'touch /lab/cad-ignored' > /etc/cad; touch /lab/ready"

[machines.frozen]
startup = "touch /lab/ready"
"#,
    );
    lab.up();
    for m in ["polite", "deaf", "frozen"] {
        let ready = try_wait_until(Instant::now() + WAIT, || {
            lab.run_dir()
                .join("vm")
                .join(m)
                .join("share/ready")
                .exists()
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "{m} never wrote /lab/ready\n{}",
            lab.diagnostics()
        );
    }
    assert_eq!(
        lab.ok(&["stop", "polite", "--timeout", "20"]),
        "polite: stopped by cad\n"
    );
    assert_eq!(
        lab.ok(&["stop", "deaf", "--timeout", "3"]),
        "deaf: stopped by halt (it ignored cad)\n"
    );
    assert!(lab.run_dir().join("vm/deaf/share/cad-ignored").exists());
    // A stopped process answers nothing: only the signal ends it.
    let frozen = lab.machine("frozen")["pid"].as_i64().unwrap();
    kill(pid(u32::try_from(frozen).unwrap()), Signal::SIGSTOP).unwrap();
    assert_eq!(
        lab.ok(&["stop", "frozen", "--timeout", "2"]),
        "frozen: killed with SIGKILL (it ignored cad and halt)\n"
    );
    for m in ["polite", "deaf", "frozen"] {
        let state = lab.machine(m);
        assert_eq!(state["state"], "stopped", "{state}");
        assert!(state["pid"].is_null(), "{state}");
    }
    // The stopped machine's disk, merged, holds what its guest wrote.
    let out = lab.dir.path().join("polite.img");
    lab.ok(&["commit", "polite", out.to_str().unwrap()]);
    let note = Command::new(host_program("debugfs", "e2fsprogs"))
        .args(["-R", "cat /root/note"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&note.stdout), "kept\n");
    std::fs::remove_file(&out).unwrap();
    lab.down_and_check_clean();
}

#[test]
fn real_kernel_uml_lab_restarts_on_failure_but_not_by_default() {
    let lab = Lab::new(
        "restarts",
        r#"
[defaults]
disk = "busybox.img"
consoles = ["log"]

[machines.keeper]
restart = "on-failure"

[machines.plain]
"#,
    );
    lab.up();
    let keeper = lab.machine("keeper")["pid"].as_i64().unwrap();
    let plain = lab.machine("plain")["pid"].as_i64().unwrap();
    for p in [keeper, plain] {
        kill(pid(u32::try_from(p).unwrap()), Signal::SIGKILL).unwrap();
    }
    wait_until(Instant::now() + WAIT, "keeper running again", || {
        let m = lab.machine("keeper");
        m["state"] == "running" && m["restarts"] == 1 && m["pid"].as_i64() != Some(keeper)
    });
    wait_until(Instant::now() + WAIT, "plain recorded as exited", || {
        lab.machine("plain")["state"] == "exited"
    });
    let plain_state = lab.machine("plain");
    assert_eq!(plain_state["restarts"], 0, "{plain_state}");
    assert!(plain_state["pid"].is_null(), "{plain_state}");

    // A watchdog hang reported on the notify socket (as uml_watchdog
    // -mconsole sends it) counts as a failure: keeper is restarted again.
    let keeper = lab.machine("keeper")["pid"].as_i64().unwrap();
    let hang = UnixDatagram::unbound().unwrap();
    hang.send_to(
        WatchdogHangWire::new().as_bytes(),
        lab.run_dir().join("vm/keeper/notify"),
    )
    .unwrap();
    wait_until(
        Instant::now() + WAIT,
        "keeper restarted after the hang",
        || {
            let m = lab.machine("keeper");
            m["state"] == "running" && m["restarts"] == 2 && m["pid"].as_i64() != Some(keeper)
        },
    );
    let events = lab.status()["events"].to_string();
    assert!(events.contains("hang"), "{events}");
    // `up` brings the exited machine back.
    lab.up();
    assert_eq!(lab.machine("plain")["state"], "running");
    lab.down_and_check_clean();
}

/// A lab file that is fine, for the refusal test to break one way at a time.
const FINE: &str = r#"[defaults]
disk = "busybox.img"
kernel = "./kernel"

[networks.lan]

[machines.a]
interfaces = [{ network = "lan", mac = "02:00:00:00:00:01" }]

[machines.b]
interfaces = [{ network = "lan", mac = "02:00:00:00:00:02" }]
"#;

#[test]
fn uml_lab_refuses_bad_lab_files_with_line_and_field_and_starts_nothing() {
    let lab = Lab::new("bad", FINE);
    // A stand-in kernel: nothing must ever run it.
    std::fs::write(lab.dir.path().join("kernel"), "#!/bin/sh\ntouch ran\n").unwrap();
    let cases = [
        (
            FINE.replace("[machines.b]\n", "[machines.b]\nmemroy = \"64M\"\n"),
            "bad.toml:11:1: memroy: unknown field",
        ),
        (
            format!("{FINE}\n[networks.spare]\n"),
            "bad.toml:13:1: networks.spare: no machine joins this network",
        ),
        (
            FINE.replace("00:02\"", "00:01\""),
            "bad.toml:11:40: machines.b.interfaces[0].mac: duplicate MAC address",
        ),
        (
            FINE.replace("\"busybox.img\"", "\"missing.img\""),
            "bad.toml:2:8: defaults.disk: backing image",
        ),
        (
            FINE.replace("[networks.lan]\n", "[networks.lan]\nmgmt = true\n"),
            "bad.toml:6:8: networks.lan.mgmt: every network's switch has its management socket, net/lan/mgmt",
        ),
        (
            FINE.replace(
                "[networks.lan]\n",
                "[networks.lan]\ncapture = { file = \"lan.pcapng\", rotate = \"10\" }\n",
            ),
            "bad.toml:6:11: networks.lan.capture.rotate: --pcap-rotate: '10': a size of at least 4096 bytes",
        ),
        (
            FINE.replace("[networks.lan]\n", "[networks.lan]\nvlan = 4095\n"),
            "bad.toml:6:8: networks.lan.vlan: a VLAN id is 1 to 4094",
        ),
        (
            FINE.replace("00:02\" }", "00:02\", link = { delay = \"soon\" } }"),
            "bad.toml:11:78: machines.b.interfaces[0].link.delay:",
        ),
        (
            FINE.replace("[machines.b]\n", "[machines.b]\nhost = \"far\"\n"),
            "bad.toml:11:8: machines.b.host: no host 'far'",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&lab.file, &text).unwrap();
        let out = lab.run(&["up", lab.file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        assert!(stderr.contains("nothing was started"), "{stderr}");
        assert!(
            !lab.base().exists(),
            "a run directory was made for:\n{text}"
        );
        assert!(!lab.dir.path().join("ran").exists());
        assert_eq!(lab.processes(), Vec::<String>::new());
    }
}

/// Copies an example lab next to a fresh image and runs it until every
/// machine that reports has written `PING-OK` to its share.
fn run_example(file: &str, name: &str, reporters: &[&str]) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&example).unwrap();
    let lab = Lab::new(name, &text);
    lab.up();
    for m in reporters {
        lab.wait_shared(m, "result", "PING-OK");
    }
    lab.assert_memory_as_asked();
    lab.down_and_check_clean();
}

#[test]
fn real_kernel_uml_lab_example_netkit_two_hosts_and_a_router() {
    run_example(
        "netkit-two-hosts-router.toml",
        "netkit-two-hosts-router",
        &["pc1", "pc2"],
    );
}

#[test]
fn real_kernel_uml_lab_example_vnuml_simple() {
    run_example("vnuml-simple.toml", "vnuml-simple", &["uml1", "uml3"]);
}

#[test]
fn real_kernel_uml_lab_example_two_machines() {
    run_example("two-machines.toml", "two-machines", &["a"]);
}

#[test]
fn uml_lab_commented_example_is_a_valid_lab() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/commented.toml");
    let lab = Lab::new("commented", &std::fs::read_to_string(example).unwrap());
    let out = lab.ok(&["check", lab.file.to_str().unwrap()]);
    assert!(out.contains("lab 'commented' is fine"), "{out}");
    // Its commented-out VLAN, link and VXLAN settings are valid as written.
    let text = std::fs::read_to_string(&lab.file).unwrap();
    let fabric = text
        .replace("# vlan = 10", "vlan = 10")
        .replace("# link = ", "link = ")
        .replace("# vxlan = ", "vxlan = ");
    std::fs::write(&lab.file, &fabric).unwrap();
    let out = lab.ok(&["check", lab.file.to_str().unwrap()]);
    assert!(out.contains("is fine"), "{out}");
    // Both capture forms are valid as written.
    for form in ["# capture = \"", "# capture = {"] {
        let capture = text.replace(form, &form[2..]);
        std::fs::write(&lab.file, &capture).unwrap();
        let out = lab.ok(&["check", lab.file.to_str().unwrap()]);
        assert!(out.contains("is fine"), "{out}");
    }
}

/// Reads a child's stdout on a thread, so a test can wait for text with a deadline.
fn collect(
    stream: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&out);
    std::thread::spawn(move || {
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

#[test]
fn real_kernel_uml_lab_console_attaches_to_the_pts_and_watch_follows_events() {
    use std::io::Write;
    use std::process::Stdio;
    let lab = Lab::new(
        "console",
        r#"
[machines.a]
disk = "busybox.img"
startup = "echo up-and-ready > /proc/mconsole; touch /lab/ready"
"#,
    );
    lab.up();
    wait_until(Instant::now() + WAIT, "the ready file", || {
        lab.run_dir().join("vm/a/share/ready").exists()
    });
    // What the guest wrote to /proc/mconsole came through its notify socket.
    wait_until(Instant::now() + WAIT, "the guest's notification", || {
        lab.status()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "guest" && e["detail"] == "up-and-ready")
    });
    let console = lab.machine("a")["consoles"][0].clone();
    assert_eq!(console["kind"], "pts", "{console}");
    assert!(
        console["where"].as_str().unwrap().starts_with("/dev/pts/"),
        "{console}"
    );

    let mut attach = Command::new(uml_lab_binary())
        .args(["console", "a"])
        .env("UML_LAB_RUN_DIR", lab.base())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = collect(attach.stdout.take().unwrap());
    let mut input = attach.stdin.take().unwrap();
    // A shell still starting reads the line from the terminal's queue.
    input.write_all(b"echo HELLO-$((6*7))\r").unwrap();
    let answered = try_wait_until(Instant::now() + WAIT, || {
        String::from_utf8_lossy(&output.lock().unwrap())
            .contains("HELLO-42")
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "no answer on the console: {}",
        String::from_utf8_lossy(&output.lock().unwrap())
    );
    // The set-up (host name included) is done before init starts the
    // console's shell: its first prompt already names the machine.
    let seen = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert!(
        seen.contains("a:/# ") && !seen.contains("(none)"),
        "the shell's prompt does not name the machine: {seen:?}"
    );
    input.write_all(&[0x1d]).unwrap();
    let status = attach.wait().unwrap();
    assert!(status.success(), "{status}");

    let mut watch = Command::new(uml_lab_binary())
        .args(["status", "--watch", "--json"])
        .env("UML_LAB_RUN_DIR", lab.base())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect(watch.stdout.take().unwrap());
    let reports = || -> Vec<Value> {
        String::from_utf8_lossy(&lines.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until(Instant::now() + WAIT, "a first report", || {
        !reports().is_empty()
    });
    lab.ok(&["stop", "a"]);
    wait_until(Instant::now() + WAIT, "a report of a stopped", || {
        reports()
            .iter()
            .any(|r| r["machines"][0]["state"] == "stopped")
    });
    kill(pid(watch.id()), Signal::SIGTERM).unwrap();
    watch.wait().unwrap();
    lab.down_and_check_clean();
}

#[test]
fn root_real_kernel_uml_lab_host_tap_reaches_the_guest_and_goes_at_down() {
    let device = format!("ulab{}", std::process::id() % 100_000);
    let lab = Lab::new(
        "tap",
        &format!(
            r#"
[networks.lan]
host_tap = {{ device = "{device}", address = "10.99.77.254/24" }}

[machines.a]
disk = "busybox.img"
consoles = ["log"]
interfaces = [{{ network = "lan", address = "10.99.77.1/24" }}]
startup = """
n=0; until ping -c 1 -W 1 10.99.77.254 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
ping -c 3 10.99.77.254 > /lab/result 2>&1 && echo PING-OK >> /lab/result
"""
"#
        ),
    );
    lab.up();
    let sysfs = Path::new("/sys/class/net").join(&device);
    assert!(sysfs.exists(), "no tap {device}");
    lab.wait_shared("a", "result", "PING-OK");
    let ping = Command::new(host_program("busybox", "busybox-static"))
        .args(["ping", "-c", "3", "-W", "2", "10.99.77.1"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    let status = lab.status();
    assert_eq!(status["networks"][0]["tap"], device.as_str(), "{status}");
    lab.down_and_check_clean();
    assert!(!sysfs.exists(), "the tap {device} is left");
}

/// A TCP port for a guest's `port:` console, free on every address (the
/// kernel listens on 0.0.0.0) and below the ephemeral range: a port the
/// kernel handed us and we let go could be taken as the source port of any
/// outgoing connection before the guest listens on it.
fn console_port() -> u16 {
    const FIRST: u16 = 10_000;
    let ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST).max(1);
    let offset = u16::try_from(std::process::id() % u32::from(span)).unwrap();
    (0..span)
        .map(|i| FIRST + (offset + i) % span)
        .find(|&port| std::net::TcpListener::bind(("0.0.0.0", port)).is_ok())
        .expect("a free TCP port below the ephemeral range")
}

#[test]
fn real_kernel_uml_lab_port_console_through_our_port_helper() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    our_tool("port-helper");
    let port = console_port();
    let lab = Lab::new(
        "port",
        &format!(
            r#"
[machines.a]
disk = "busybox.img"
consoles = ["log", "port:{port}"]
"#
        ),
    );
    // The kernel runs `in.telnetd -L HELPER` from its PATH; Debian's telnetds
    // spell the option differently, so busybox's serves the connection.
    let stand_ins = lab.dir.path().join("bin");
    std::fs::create_dir(&stand_ins).unwrap();
    let telnetd = stand_ins.join("in.telnetd");
    std::fs::write(
        &telnetd,
        format!(
            "#!/bin/sh\n[ \"$1\" = -L ] || exit 1\nexec {} telnetd -i -f /dev/null -l \"$2\"\n",
            host_program("busybox", "busybox-static").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&telnetd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        stand_ins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let up = Command::new(uml_lab_binary())
        .args(["up", lab.file.to_str().unwrap()])
        .env("UML_LAB_RUN_DIR", lab.base())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let console = lab.machine("a")["consoles"][1].clone();
    assert_eq!(console["kind"], format!("port:{port}"), "{console}");

    // The kernel listens early in boot and keeps a connection that comes before
    // the guest's init opens tty1 until it does; the shell's prompt says the
    // line is read (typed earlier, it would answer the shell's cursor query).
    let mut client = try_wait_until(Instant::now() + WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    let output = collect(client.try_clone().unwrap());
    let text = || String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    let prompt = try_wait_until(Instant::now() + WAIT, || {
        text().contains("a:/# ").then_some(())
    });
    assert!(
        prompt.is_some(),
        "no prompt on the port console: {:?}\n{}",
        text(),
        lab.diagnostics()
    );
    client.write_all(b"echo PORT-$((6*7))\n").unwrap();
    let answered = try_wait_until(Instant::now() + WAIT, || {
        text().contains("PORT-42").then_some(())
    });
    let seen = text();
    assert!(
        answered.is_some(),
        "no answer on the port console: {seen:?}\n{}",
        lab.diagnostics()
    );
    std::fs::remove_dir_all(&stand_ins).unwrap();
    lab.down_and_check_clean();
}

#[test]
fn uml_lab_restart_always_backs_off_and_stop_ends_the_waiting() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new(
        "backoff",
        r#"
[machines.crashy]
kernel = "./crashing-kernel"
disk = "busybox.img"
consoles = ["log"]
restart = "always"
"#,
    );
    // A stand-in kernel that fails soon after it starts, every time.
    let kernel = lab.dir.path().join("crashing-kernel");
    std::fs::write(&kernel, "#!/bin/sh\nsleep 0.3\nexit 3\n").unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o755)).unwrap();
    let up = lab.run(&["up", "--timeout", "1", lab.file.to_str().unwrap()]);
    assert_eq!(up.status.code(), Some(1), "{up:?}");
    let events = || lab.status()["events"].to_string();
    wait_until(Instant::now() + WAIT, "a second restart, after 2 s", || {
        events().contains("restarting in 2 s")
    });
    assert!(events().contains("exit status: 3"), "{}", events());
    assert!(events().contains("restarting in 1 s"), "{}", events());
    wait_until(Instant::now() + WAIT, "waiting out a backoff", || {
        lab.machine("crashy")["state"] == "restarting"
    });
    // Usually caught waiting ("was not running"); a restart may just have begun.
    let stop = lab.ok(&["stop", "crashy", "--timeout", "2"]);
    assert!(stop.starts_with("crashy: "), "{stop}");
    wait_until(Instant::now() + WAIT, "stopped", || {
        lab.machine("crashy")["state"] == "stopped"
    });
    let restarts = lab.machine("crashy")["restarts"].clone();
    // Past its longest backoff so far, it is still not started again.
    std::thread::sleep(Duration::from_secs(5));
    let state = lab.machine("crashy");
    assert_eq!(state["state"], "stopped", "{state}");
    assert_eq!(state["restarts"], restarts, "{state}");
    std::fs::remove_file(&kernel).unwrap();
    lab.down_and_check_clean();
}

/// Two VLANs on one switch: a and b in VLAN 10, c and d in VLAN 20, all in
/// one subnet. a reaches b; once c and d have reached each other (so c is
/// up), a is told to try c, which must not answer.
#[test]
fn real_kernel_uml_lab_vlans_on_one_network_keep_their_guests_apart() {
    let wait_go =
        "n=0; until [ -e /lab/go ]; do sleep 0.2; n=$((n+1)); [ $n -gt 600 ] && break; done";
    let pinger = |peer: &str| {
        format!(
            "n=0; until ping -c 1 -W 1 {peer} >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done\n\
             ping -c 2 {peer} > /lab/result 2>&1 && echo PING-OK >> /lab/result"
        )
    };
    let lab = Lab::new(
        "vlans",
        &format!(
            r#"
[defaults]
disk = "busybox.img"
consoles = ["log"]
memory = "48M"

[networks.lan]
vlan = 10

[machines.a]
interfaces = [{{ network = "lan", address = "10.99.51.1/24" }}]
startup = """
{a}
{wait_go}
if ping -c 3 -W 1 10.99.51.3 >/dev/null 2>&1; then echo CROSSED > /lab/isolation; else echo ISOLATED > /lab/isolation; fi
"""

[machines.b]
interfaces = [{{ network = "lan", address = "10.99.51.2/24" }}]

[machines.c]
interfaces = [{{ network = "lan", address = "10.99.51.3/24", vlan = 20 }}]
startup = """
{c}
"""

[machines.d]
interfaces = [{{ network = "lan", address = "10.99.51.4/24", vlan = 20 }}]
"#,
            a = pinger("10.99.51.2"),
            c = pinger("10.99.51.4"),
        ),
    );
    lab.up();
    lab.wait_shared("a", "result", "PING-OK");
    lab.wait_shared("c", "result", "PING-OK");
    std::fs::write(lab.run_dir().join("vm/a/share/go"), "").unwrap();
    lab.wait_shared("a", "isolation", "ED");
    assert_eq!(lab.shared("a", "isolation").trim(), "ISOLATED");
    let c = lab.machine("c");
    assert_eq!(c["interfaces"][0]["vlan"], "vlan=20", "{c}");
    assert_eq!(lab.machine("a")["interfaces"][0]["vlan"], "vlan=10");
    lab.down_and_check_clean();
}

/// One interface's link delays what the switch sends it by 100 ms: the
/// round trip of a ping to it takes at least that (on the BESS transport,
/// so its endpoints are covered too; the VLAN test uses the daemon's).
#[test]
fn real_kernel_uml_lab_emulated_link_delays_the_ping() {
    let lab = Lab::new(
        "slow",
        r#"
[defaults]
disk = "busybox.img"
consoles = ["log"]

[networks.lan]
transport = "bess"

[machines.a]
interfaces = [{ network = "lan", address = "10.99.52.1/24" }]
startup = """
n=0; until ping -c 1 -W 2 10.99.52.2 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
ping -c 3 10.99.52.2 > /lab/result 2>&1 && echo PING-OK >> /lab/result
"""

[machines.b]
interfaces = [{ network = "lan", address = "10.99.52.2/24", link = { delay = "100ms" } }]
"#,
    );
    lab.up();
    lab.wait_shared("a", "result", "PING-OK");
    let result = lab.shared("a", "result");
    // busybox: "round-trip min/avg/max = 100.512/100.720/101.015 ms"
    let times: Vec<f64> = result
        .lines()
        .find_map(|l| l.split_once("min/avg/max = "))
        .map(|(_, t)| {
            t.trim_end_matches(" ms")
                .split('/')
                .map(|x| x.trim().parse().unwrap())
                .collect()
        })
        .unwrap_or_else(|| panic!("no round-trip line in {result}"));
    assert!(
        times[0] >= 100.0,
        "min RTT {} ms < 100 ms: {result}",
        times[0]
    );
    assert!(times[2] < 2000.0, "max RTT {} ms: {result}", times[2]);
    assert_eq!(
        lab.machine("b")["interfaces"][0]["link"],
        "delay=100ms",
        "{}",
        lab.status()
    );
    lab.down_and_check_clean();
}

/// Two hosts simulated by two network namespaces joined by a veth pair:
/// one lab file, each host bringing up its own part (one finds itself by
/// its address, the other is named with --host), the network spanning both
/// over VXLAN, and a guest on each pinging the other.
#[test]
fn root_real_kernel_uml_lab_spans_two_hosts_over_vxlan() {
    let lab = Lab::new(
        "span",
        r#"
[defaults]
disk = "busybox.img"
consoles = ["log"]

[hosts.one]
address = "10.99.90.1"

[hosts.two]
address = "10.99.90.2"

[networks.lan]
vxlan = { vni = 4242 }

[machines.a]
host = "one"
interfaces = [{ network = "lan", address = "10.99.91.1/24" }]
startup = """
n=0; until ping -c 1 -W 1 10.99.91.2 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 90 ] && break; done
ping -c 3 10.99.91.2 > /lab/result 2>&1 && echo PING-OK >> /lab/result
"""

[machines.b]
host = "two"
interfaces = [{ network = "lan", address = "10.99.91.2/24" }]
startup = """
n=0; until ping -c 1 -W 1 10.99.91.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 90 ] && break; done
ping -c 3 10.99.91.1 > /lab/result 2>&1 && echo PING-OK >> /lab/result
"""
"#,
    );
    let (one, two) = (NetNamespace::new("ulab-one"), NetNamespace::new("ulab-two"));
    one.ip(&[
        "link",
        "add",
        "ulab-a",
        "type",
        "veth",
        "peer",
        "name",
        "ulab-b",
        "netns",
        two.name(),
    ]);
    for (ns, dev, host) in [(&one, "ulab-a", 1), (&two, "ulab-b", 2)] {
        ns.ip(&["addr", "add", &format!("10.99.90.{host}/24"), "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
    // Host one's part lives in the lab's usual run directory, host two's beside it.
    let second = lab.dir.path().join("run-two");
    let in_ns = |ns: &NetNamespace, base: &Path, args: &[&str]| {
        let out = ns
            .command(&uml_lab_binary())
            .args(args)
            .env("UML_LAB_RUN_DIR", base)
            .current_dir(lab.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "uml_lab {args:?} in {}: {}\n{}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    struct DownTwo<'a>(&'a dyn Fn());
    impl Drop for DownTwo<'_> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let cleanup = || {
        if second.exists() {
            let _ = two
                .command(&uml_lab_binary())
                .args(["down", "--timeout", "1"])
                .env("UML_LAB_RUN_DIR", &second)
                .output();
        }
    };
    let _guard = DownTwo(&cleanup);
    let file = lab.file.to_str().unwrap();
    let table = in_ns(&one, &lab.base(), &["up", file]);
    assert!(table.contains("vxlan") && !table.contains(" b "), "{table}");
    in_ns(&two, &second, &["up", "--host", "two", file]);
    lab.wait_shared("a", "result", "PING-OK");
    let b_result = second.join("span/vm/b/share/result");
    wait_until(Instant::now() + WAIT, "b's ping across", || {
        std::fs::read_to_string(&b_result)
            .unwrap_or_default()
            .contains("PING-OK")
    });
    let status: Value = serde_json::from_str(&in_ns(&two, &second, &["status", "--json"])).unwrap();
    assert_eq!(status["host"], "two", "{status}");
    assert_eq!(status["machines"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(
        status["networks"][0]["uplink"], "local=10.99.90.2:4789,vni=4242,remote=10.99.90.1:4789",
        "{status}"
    );
    in_ns(&two, &second, &["down", "--timeout", "5"]);
    assert!(!second.exists(), "host two's run directory is left");
    lab.down_and_check_clean();
}

/// Two guests on one captured network; `a` pings `b` once it answers, then
/// keeps pinging.
const MANAGED: &str = r#"
name = "managed"

[defaults]
disk = "busybox.img"
consoles = ["log"]

[networks.lan]
capture = "lan.pcapng"

[machines.a]
interfaces = [{ network = "lan", mac = "02:00:00:00:63:01", address = "10.99.63.1/24" }]
startup = """
n=0; until ping -c 1 -W 1 10.99.63.2 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
ping -c 3 10.99.63.2 > /lab/ping.txt 2>&1 && echo PING-OK >> /lab/ping.txt
ping 10.99.63.2 > /dev/null 2>&1
"""

[machines.b]
interfaces = [{ network = "lan", mac = "02:00:00:00:63:02", address = "10.99.63.2/24" }]
"#;

#[test]
fn real_kernel_uml_lab_switch_counters_events_and_capture() {
    use std::process::Stdio;
    let (a_mac, b_mac) = ("02:00:00:00:63:01", "02:00:00:00:63:02");
    let lab = Lab::new("managed", MANAGED);
    lab.up();
    lab.wait_shared("a", "ping.txt", "PING-OK");

    // Counters from the switch's management socket, each port named after its guest.
    let status = lab.status();
    let network = &status["networks"][0];
    assert_eq!(
        network["mgmt"],
        lab.run_dir().join("net/lan/mgmt").to_str().unwrap(),
        "{network}"
    );
    let ports = network["counters"]["ports"].as_array().unwrap();
    for (interface, mac) in [("a.eth0", a_mac), ("b.eth0", b_mac)] {
        let port = ports
            .iter()
            .find(|p| p["interface"] == interface)
            .unwrap_or_else(|| panic!("no port of {interface}: {network}"));
        assert!(
            port["macs"].as_array().unwrap().iter().any(|m| m == mac),
            "{port}"
        );
        for way in ["rx", "tx"] {
            assert!(port[way]["frames"].as_u64().unwrap() > 0, "{port}");
            assert!(port[way]["bytes"].as_u64().unwrap() > 0, "{port}");
        }
    }
    assert!(
        network["counters"]["stats"]["rx"]["frames"]
            .as_u64()
            .unwrap()
            > 0
    );
    let table = lab.ok(&["status"]);
    assert!(table.contains("FRAMES RX/TX/DROP"), "{table}");

    // A live capture of a's port, streamed into tshark: a's echo requests, nothing of b's.
    let mut capture = Command::new(uml_lab_binary())
        .args(["capture", "lan", "--port", "a.eth0"])
        .env("UML_LAB_RUN_DIR", lab.base())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut live = Command::new(host_program("tshark", "tshark"))
        .args(["-l", "-r", "-", "-Y", "icmp", "-T", "fields"])
        .args(["-e", "eth.src", "-e", "icmp.type"])
        .stdin(Stdio::from(capture.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = collect(live.stdout.take().unwrap());
    let request = format!("{a_mac}\t8");
    wait_until(
        Instant::now() + WAIT,
        "a's echo request in the live capture",
        || {
            String::from_utf8_lossy(&seen.lock().unwrap())
                .lines()
                .any(|l| l == request)
        },
    );
    kill(pid(capture.id()), Signal::SIGTERM).unwrap();
    capture.wait().unwrap();
    live.wait().unwrap();
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(seen.lines().all(|l| l == request), "{seen}");

    // The watch follows the switch: b's port goes down when b stops.
    let mut watch = Command::new(uml_lab_binary())
        .args(["status", "--watch", "--json"])
        .env("UML_LAB_RUN_DIR", lab.base())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect(watch.stdout.take().unwrap());
    let reports = || -> Vec<Value> {
        String::from_utf8_lossy(&lines.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The first report comes once the watch has subscribed to the switch.
    wait_until(Instant::now() + WAIT, "a first report", || {
        !reports().is_empty()
    });
    lab.ok(&["stop", "b"]);
    wait_until(Instant::now() + WAIT, "the switch's port-down", || {
        reports().iter().any(|r| {
            r["events"].as_array().unwrap().iter().any(|e| {
                e["subject"] == "net lan"
                    && e["event"] == "port-down"
                    && e["detail"].as_str().unwrap().contains("port=")
            })
        })
    });
    kill(pid(watch.id()), Signal::SIGTERM).unwrap();
    watch.wait().unwrap();

    // down leaves the user's capture file, and nothing else.
    lab.ok(&["down", "--timeout", "5"]);
    assert!(!lab.base().exists(), "the run directory is left");
    assert_eq!(lab.processes(), Vec::<String>::new());
    let mut left: Vec<String> = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["busybox.img", "lan.pcapng", "managed.toml"]);

    let tshark = Command::new(host_program("tshark", "tshark"))
        .args(["-r", "lan.pcapng", "-Y", "icmp", "-T", "fields"])
        .args(["-e", "eth.src", "-e", "eth.dst", "-e", "icmp.type"])
        .current_dir(lab.dir.path())
        .output()
        .unwrap();
    assert!(tshark.status.success(), "{tshark:?}");
    let frames = String::from_utf8_lossy(&tshark.stdout);
    for frame in [
        format!("{a_mac}\t{b_mac}\t8"),
        format!("{b_mac}\t{a_mac}\t0"),
    ] {
        assert!(
            frames.lines().any(|l| l == frame),
            "no {frame:?} in the capture:\n{frames}"
        );
    }
}
