//! uml_switch under systemd's socket activation, started by
//! `systemd-socket-activate` as `uml-switch.socket` would start it: it serves
//! the sockets it is passed, reports readiness, and leaves their files to the
//! service manager; a socket of a kind it cannot serve is refused.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_testbed::switch_client::SwitchClient;
use uml_testbed::{ChildLog, host_program, our_tool, pid_of, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A started switch, killed (if still running) when the test ends, also by a panic.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A port on the switch at `ctl`, or a failure (not a hang) when no switch answers.
fn connect_within(ctl: &std::path::Path, label: &str) -> SwitchClient {
    let (tx, rx) = std::sync::mpsc::channel();
    let ctl = ctl.to_path_buf();
    let label = format!("activation-{label}-{}", std::process::id());
    std::thread::spawn(move || {
        let _ = tx.send(SwitchClient::connect(&ctl, &label));
    });
    rx.recv_timeout(WAIT)
        .expect("the switch never answered on the passed socket")
        .unwrap()
}

#[test]
fn a_socket_activated_switch_serves_the_passed_socket_and_leaves_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // No -unix: the control socket is the one passed.
    let mut switch = Running(
        Command::new(host_program("systemd-socket-activate", "systemd"))
            .arg("-l")
            .arg(&ctl)
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
            .arg("--")
            .arg(our_tool("uml_switch"))
            .arg("-hub")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = ChildLog::collect(&mut switch.0);
    wait_until(Instant::now() + WAIT, "the control socket", || ctl.exists());
    // The first connection starts the switch, which then answers it.
    let a = connect_within(&ctl, "a");
    let b = connect_within(&ctl, "b");
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0x42, 0x01, 0x08, 0x00]);
    frame.resize(60, 0x5a);
    a.send(&frame).unwrap();
    b.data.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    let n = b.data.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &frame[..], "the hub did not pass the frame on");

    notify.set_read_timeout(Some(WAIT)).unwrap();
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    let text = log.text();
    assert!(
        text.contains(&format!("attached to unix socket '{}'", ctl.display())),
        "{text}"
    );
    kill(pid_of(&switch.0), Signal::SIGTERM).unwrap();
    wait_until(Instant::now() + WAIT, "the switch to exit", || {
        switch.0.try_wait().unwrap().is_some()
    });
    assert!(switch.0.wait().unwrap().success(), "{}", log.text());
    assert!(
        ctl.exists(),
        "the switch removed the socket file it was passed"
    );
}

#[test]
fn a_passed_datagram_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dgram");
    let mut switch = Running(
        Command::new(host_program("systemd-socket-activate", "systemd"))
            .args(["--datagram", "-l"])
            .arg(&path)
            .arg("--")
            .arg(our_tool("uml_switch"))
            .arg("-unix")
            .arg(dir.path().join("ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = ChildLog::collect(&mut switch.0);
    wait_until(Instant::now() + WAIT, "the datagram socket", || {
        path.exists()
    });
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"wake up", &path)
        .unwrap();
    wait_until(Instant::now() + WAIT, "the switch to exit", || {
        switch.0.try_wait().unwrap().is_some()
    });
    let status = switch.0.wait().unwrap();
    let text = log.text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("socket activation: passed descriptor number 0 is neither a unix stream nor a seqpacket socket"),
        "{text}"
    );
    assert!(
        !dir.path().join("ctl").exists(),
        "the switch went on to bind its own control socket"
    );
}

/// `uml_switchctl SOCKET ARGS...`, or a failure (not a hang) when no switch answers.
fn switchctl_within(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(our_tool("uml_switchctl"));
    cmd.arg(socket).args(args);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output());
    });
    rx.recv_timeout(WAIT)
        .expect("uml_switchctl never returned")
        .unwrap()
}

#[test]
fn a_socket_activated_switch_serves_the_management_socket_passed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let mgmt = dir.path().join("mgmt");
    let mut switch = Running(
        Command::new(host_program("systemd-socket-activate", "systemd"))
            .arg("-l")
            .arg(&ctl)
            .arg("-l")
            .arg(&mgmt)
            // As uml-switch.socket and uml-switch-mgmt.socket name them.
            .arg("--fdname=control:mgmt")
            .arg("--")
            .arg(our_tool("uml_switch"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = ChildLog::collect(&mut switch.0);
    wait_until(Instant::now() + WAIT, "the management socket", || {
        mgmt.exists()
    });
    // The first connection, on the management socket, starts the switch.
    let version = switchctl_within(&mgmt, &["version"]);
    let said = |out: &std::process::Output| {
        format!(
            "{}{}\nswitch:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log.text()
        )
    };
    assert!(version.status.success(), "{}", said(&version));
    // A guest on the passed control socket is a port in the management table.
    let client = connect_within(&ctl, "mgmt");
    let ports = switchctl_within(&mgmt, &["ports"]);
    assert!(ports.status.success(), "{}", said(&ports));
    let table = String::from_utf8_lossy(&ports.stdout).into_owned();
    assert!(table.starts_with("PORT  NAME"), "{}", said(&ports));
    assert!(table.contains("daemon:"), "{}", said(&ports));
    drop(client);
    let text = log.text();
    assert!(
        text.contains(&format!("management socket '{}'", mgmt.display())),
        "{text}"
    );
    kill(pid_of(&switch.0), Signal::SIGTERM).unwrap();
    wait_until(Instant::now() + WAIT, "the switch to exit", || {
        switch.0.try_wait().unwrap().is_some()
    });
    assert!(switch.0.wait().unwrap().success());
    assert!(
        ctl.exists() && mgmt.exists(),
        "the switch removed a socket file it was passed"
    );
}

#[test]
fn a_socket_named_for_a_role_of_another_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bess");
    let mut switch = Running(
        Command::new(host_program("systemd-socket-activate", "systemd"))
            .arg("-l")
            .arg(&path)
            .arg("--fdname=bess")
            .arg("--")
            .arg(our_tool("uml_switch"))
            .arg("-unix")
            .arg(dir.path().join("ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = ChildLog::collect(&mut switch.0);
    wait_until(Instant::now() + WAIT, "the socket", || path.exists());
    let _wake = std::os::unix::net::UnixStream::connect(&path).unwrap();
    wait_until(Instant::now() + WAIT, "the switch to exit", || {
        switch.0.try_wait().unwrap().is_some()
    });
    let status = switch.0.wait().unwrap();
    let text = log.text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "passed descriptor number 0 is named 'bess' but is a stream socket, not a seqpacket one"
        ),
        "{text}"
    );
    assert!(
        !dir.path().join("ctl").exists(),
        "the switch went on to bind its own control socket"
    );
}
