//! `cargo xtask demo`, run as a newcomer runs it: every step shows in its
//! output, and it leaves no process or file behind, also when interrupted.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_testbed::{pid_of, wait_until, xtask};

/// The demo's work directory, from its "==> working in DIR" line.
fn workdir(output: &str) -> PathBuf {
    output
        .lines()
        .find_map(|l| l.strip_prefix("==> working in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the demo named no work directory:\n{output}"))
}

/// Processes whose command line names `dir` (the demo's guests and switch do).
fn processes_using(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let cmdline = std::fs::read(path.join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle).then_some(text)
        })
        .collect()
}

#[test]
fn real_kernel_the_demo_pings_lists_halts_merges_and_cleans_up() {
    let out = xtask(&["demo"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the demo failed:\n{all}");
    for step in [
        "uml_mkcow",
        "guest-a | guest-a is up on eth0 with 10.99.77.1",
        "guest-b | guest-b is up on vec0 with 10.99.77.2",
        "5 packets transmitted, 5 packets received, 0% packet loss",
        "switch | New connection",
        "switch | New BESS connection",
        "--list",
        "guest-a has stopped",
        "guest-b has stopped",
        "dirty: ",
        "hello-from-guest-a",
        "the shared image is untouched",
        "Caught signal 15",
        "==> demo done",
    ] {
        assert!(
            text.contains(step),
            "the demo's output lacks '{step}':\n{all}"
        );
    }
    // The port table, through the management socket: a row per guest, on
    // its transport, with its MAC and frames counted.
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !(l.contains("$ ") && l.contains("uml_switchctl")))
        .skip(1)
        .take_while(|l| !l.starts_with("==>"))
        .collect();
    assert!(
        table
            .first()
            .is_some_and(|l| l.contains("PORT") && l.contains("RX-FRAMES")),
        "no port table in:\n{all}"
    );
    for (transport, mac) in [
        ("daemon:", "02:00:00:00:77:01"),
        ("bess:", "02:00:00:00:77:02"),
    ] {
        let row = table
            .iter()
            .find(|l| l.contains(mac))
            .unwrap_or_else(|| panic!("no port with {mac} in the table:\n{all}"));
        assert!(row.contains(transport), "{row}");
        // RX-FRAMES, after the MACs and the age, counts the pings at least.
        let words: Vec<&str> = row.split_whitespace().collect();
        let at = words.iter().position(|w| w.contains(mac)).unwrap();
        let rx: u64 = words[at + 2].parse().unwrap();
        assert!(rx >= 5, "{row}");
    }
    // Both guests were listed as running by uml_mconsole --list.
    let listed = text
        .lines()
        .filter(|l| l.contains("running") && (l.contains("guest-a-") || l.contains("guest-b-")))
        .count();
    assert_eq!(
        listed, 2,
        "uml_mconsole --list did not show both guests:\n{all}"
    );
    let dir = workdir(&text);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(processes_using(&dir).is_empty());
}

#[test]
fn real_kernel_an_interrupted_demo_stops_its_guests_and_removes_its_files() {
    let mut child = xtask(&["demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut text = String::new();
    // Interrupted once both guests run and the switch serves them.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !text.contains("guest-b | guest-b is up") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo's guests did not come up:\n{text}"));
        text.push_str(&line);
        text.push('\n');
    }
    let dir = workdir(&text);
    assert!(!processes_using(&dir).is_empty(), "no guest runs:\n{text}");
    // `cargo run` execs the demo, so the child's PID is the demo's.
    kill(pid_of(&child), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    text.extend(rx.try_iter().map(|l| l + "\n"));
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("SIGINT received"), "{text}");
    assert!(!dir.exists(), "{} was left behind:\n{text}", dir.display());
    // SIGKILL to a process group is delivered at once, but a UML's processes
    // take a moment to be reaped.
    wait_until(
        Instant::now() + Duration::from_secs(30),
        "the demo's processes to end",
        || processes_using(&dir).is_empty(),
    );
}
