//! uml_watchdog as the kernel runs it: the harddog driver execs the fixed path
//! /usr/bin/uml_watchdog, so our binary is bind-mounted over it inside a
//! private mount namespace that only the guest's kernel sees (the host keeps
//! the C tool). The timeout is shortened through the kernel's environment,
//! which the kernel hands on to the tool.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uml_proto::mconsole::{Notification, NotifyKind, WatchdogHangWire};
use uml_testbed::{Uml, UmlBuilder, bind_mount_launcher, our_tool, try_wait_until, wait_until};
use zerocopy::IntoBytes;

/// Our hang timeout in these tests, in seconds.
const TIMEOUT: u64 = 3;
/// The C tool's fixed timeout.
const C_TIMEOUT: u64 = 60;
/// Time allowed on top of a timeout for signals, shutdown and a busy machine.
const MARGIN: Duration = Duration::from_secs(20);
const BOOT: Duration = Duration::from_secs(60);
/// How much later than the guest's open the test can see its console line:
/// the watchdog's count starts at the open, the test's at the line (a CI run
/// measured 2.9996 s for a 3 s timeout).
const CONSOLE_LAG: Duration = Duration::from_millis(50);

/// Opens the watchdog, pings once and then goes silent with the device open.
const HANG: &str =
    "exec 3>/dev/watchdog || echo OPEN-FAILED\necho >&3\necho WATCHDOG-OPEN\nsleep 600";

/// A guest whose kernel runs our uml_watchdog, with our timeout, logging to a file.
fn with_our_watchdog(script: &str) -> (UmlBuilder, PathBuf) {
    let builder = UmlBuilder::new(script);
    let log = builder.workdir().join("watchdog.log");
    let launcher = bind_mount_launcher(&our_tool("uml_watchdog"), "/usr/bin/uml_watchdog");
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let builder = builder
        .launcher(&launcher)
        .env("UML_WATCHDOG_TIMEOUT", TIMEOUT.to_string())
        .env("UML_WATCHDOG_LOG", &log);
    (builder, log)
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits (a bounded time) until the tool's log contains `needle`: the tool
/// may still be finishing when the guest is already gone.
fn wait_for_log(log: &Path, needle: &str) -> String {
    try_wait_until(Instant::now() + MARGIN, || {
        Some(read_log(log)).filter(|text| text.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "the watchdog never logged {needle:?}; log:\n{}",
            read_log(log)
        )
    })
}

/// Waits until the guest has opened the watchdog; returns when it saw that.
fn opened(uml: &mut Uml) -> Instant {
    uml.wait_for_console("WATCHDOG-OPEN", BOOT);
    Instant::now()
}

/// Waits for a guest that opened the watchdog at `opened` and went silent to
/// be ended; returns how long that took.
fn ended_after_hang(uml: &mut Uml, opened: Instant, timeout: u64) -> Duration {
    uml.wait_exit(Duration::from_secs(timeout) + MARGIN);
    let took = opened.elapsed();
    let console = uml.console();
    assert!(!console.contains("OPEN-FAILED"), "{console}");
    // SIGINT lets the kernel shut down and remove its umid directory; a
    // SIGKILL would have left it behind.
    let instance = uml.uml_dir().join(uml.umid());
    assert!(
        !instance.exists(),
        "{} is left: the UML did not shut down cleanly; console:\n{console}",
        instance.display()
    );
    took
}

#[test]
fn root_real_kernel_watchdog_spares_a_guest_that_keeps_pinging() {
    // Pings every half second for four timeouts, then closes the device.
    let (builder, log) = with_our_watchdog(&format!(
        "exec 3>/dev/watchdog || echo OPEN-FAILED\necho WATCHDOG-OPEN\n\
         i=0; while [ $i -lt {} ]; do echo >&3; usleep 500000; i=$((i+1)); done\n\
         exec 3>&-\necho STILL-UP",
        TIMEOUT * 8
    ));
    let mut uml = builder.start();
    uml.wait_for_console("WATCHDOG-OPEN", BOOT);
    assert!(
        uml.wait_exit(Duration::from_secs(TIMEOUT * 4) + MARGIN)
            .success()
    );
    let console = uml.console();
    assert!(console.contains("STILL-UP"), "{console}");
    assert!(!console.contains("OPEN-FAILED"), "{console}");
    let log = wait_for_log(&log, "closed the watchdog");
    assert!(
        log.contains(&format!("watching for pid {}", uml.pid())),
        "{log}"
    );
    assert!(
        log.contains(&format!("{TIMEOUT} s without a ping")),
        "{log}"
    );
    assert!(!log.contains("sending"), "it acted on a live guest:\n{log}");
}

#[test]
fn root_real_kernel_watchdog_ends_a_silent_guest_with_sigint() {
    let (builder, log) = with_our_watchdog(HANG);
    let mut uml = builder.start();
    let pid = uml.pid();
    let opened = opened(&mut uml);
    let took = ended_after_hang(&mut uml, opened, TIMEOUT);
    assert!(
        took + CONSOLE_LAG >= Duration::from_secs(TIMEOUT),
        "ended after {took:?}, before the {TIMEOUT} s timeout"
    );
    let log = wait_for_log(&log, "let go of the watchdog");
    assert!(
        log.contains(&format!(
            "no ping for {TIMEOUT} s: sending SIGINT to pid {pid}"
        )),
        "{log}"
    );
    assert!(!log.contains("SIGKILL"), "{log}");
}

/// Collects the lines `uml_mconsole --watch --notify PATH` prints.
fn watch_notifications(
    uml_dir: &Path,
    notify: &Path,
) -> (std::process::Child, mpsc::Receiver<String>) {
    std::fs::create_dir_all(uml_dir).unwrap();
    let mut watcher = Command::new(our_tool("uml_mconsole"))
        .arg("--uml-dir")
        .arg(uml_dir)
        .args(["--watch", "--notify"])
        .arg(notify)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until(Instant::now() + BOOT, "the watcher's notify socket", || {
        notify.exists()
    });
    (watcher, rx)
}

#[test]
fn root_real_kernel_watchdog_reports_a_hang_to_mconsole_watch() {
    let (builder, log) = with_our_watchdog(HANG);
    let notify = builder.workdir().join("notify.sock");
    let (mut watcher, lines) = watch_notifications(&builder.uml_dir(), &notify);
    let mut uml = builder
        .arg(format!("mconsole=notify:{}", notify.display()))
        .start();
    uml.wait_for_console("WATCHDOG-OPEN", BOOT);
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT) + MARGIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.trim_end() == "notify hang" => break,
            Ok(_) => {}
            Err(_) => panic!(
                "no hang notification; watchdog log:\n{}\nconsole:\n{}",
                read_log(&log),
                uml.console()
            ),
        }
    }
    // Reported, not killed: the guest still answers its mconsole.
    let version = Command::new(our_tool("uml_mconsole"))
        .arg(uml.mconsole_path())
        .arg("version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("OK Linux"),
        "{version:?}"
    );
    assert!(!uml.has_exited());
    let log = wait_for_log(&log, "reporting a hang");
    assert!(
        log.contains(&format!(
            "watching for mconsole notify socket {}",
            notify.display()
        )),
        "{log}"
    );
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}

/// The C tool's hang handling, both modes in one 60 s wait: the reference
/// for the tests above. Our tool is also run here by hand, and its HANG
/// datagram must equal the C tool's in every byte but the padding.
#[test]
fn real_kernel_c_tool_uml_watchdog_on_a_hang() {
    let c_tool = Path::new("/usr/bin/uml_watchdog");
    assert!(
        c_tool.is_file(),
        "/usr/bin/uml_watchdog missing: install uml-utilities (cargo xtask test does)"
    );
    // Guest A: -pid. Guest B: mconsole=notify:, read raw on our socket.
    let mut killed = UmlBuilder::new(HANG).start();
    let builder = UmlBuilder::new(HANG);
    let notify = builder.workdir().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let mut reported = builder
        .arg(format!("mconsole=notify:{}", notify.display()))
        .start();
    let killed_opened = opened(&mut killed);
    let reported_opened = opened(&mut reported);

    sock.set_read_timeout(Some(Duration::from_secs(C_TIMEOUT) + MARGIN))
        .unwrap();
    let mut buf = [0u8; 1024];
    let hang = loop {
        let n = sock.recv(&mut buf).unwrap();
        let note = Notification::parse(&buf[..n]).unwrap();
        if note.kind == NotifyKind::Hang {
            break buf[..n].to_vec();
        }
    };
    assert!(
        reported_opened.elapsed() >= Duration::from_secs(C_TIMEOUT - 1),
        "the C tool reported after {:?}",
        reported_opened.elapsed()
    );
    // 24 bytes; the last 4 are struct padding the C tool leaves uninitialised.
    assert_eq!(hang.len(), 24);
    assert_eq!(hang[..20], WatchdogHangWire::new().as_bytes()[..20]);
    assert!(
        !reported.has_exited(),
        "the C tool killed a -mconsole guest"
    );

    let took = ended_after_hang(&mut killed, killed_opened, C_TIMEOUT);
    assert!(took >= Duration::from_secs(C_TIMEOUT - 1), "{took:?}");

    // Ours, started by hand with the kernel's pipes, sends the same bytes.
    let ours_path = notify.with_file_name("ours.sock");
    let ours = UnixDatagram::bind(&ours_path).unwrap();
    let mut dog = Command::new(our_tool("uml_watchdog"))
        .arg("-mconsole")
        .arg(&ours_path)
        .args(["--timeout", "0.2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(MARGIN)).unwrap();
    let n = ours.recv(&mut buf).unwrap();
    assert_eq!(n, hang.len());
    assert_eq!(buf[..20], hang[..20]);
    assert_eq!(buf[20..24], [0; 4], "ours zeroes the padding");
    assert_eq!(dog.wait().unwrap().code(), Some(1));
}
