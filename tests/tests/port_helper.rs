//! port-helper as a UML kernel runs it: for a `port:` console (through an
//! `in.telnetd` that the test puts first in the kernel's PATH) and for an
//! `xterm` console (through a terminal-emulator stand-in named by `xterm=`),
//! with the C `/usr/lib/uml/port-helper` as the reference for both.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uml_host::fd::recv_with_fd;
use uml_proto::port_helper::HelperPid;
use uml_testbed::{
    Uml, UmlBuilder, bind_mount_launcher, host_program, our_tool, try_wait_until, wait_until,
};

const BOOT: Duration = Duration::from_secs(60);
const C_HELPER: &str = "/usr/lib/uml/port-helper";

/// The guest's init starts a shell on console 1 (it blocks in open() until
/// the kernel has the terminal), then waits for it.
const SHELL_ON_TTY1: &str = "echo CONSOLE-WAITING\n\
    setsid sh -c 'exec sh </dev/tty1 >/dev/tty1 2>&1'\necho SHELL-ENDED";

/// A command whose output differs from its echo, and that output.
const COMMAND: &str = "echo MARK-$((6*7)); exit\n";
const OUTPUT: &str = "MARK-42";

fn c_helper() -> PathBuf {
    let path = PathBuf::from(C_HELPER);
    assert!(
        path.is_file(),
        "{C_HELPER} missing: install uml-utilities (cargo xtask test does)"
    );
    path
}

/// A directory of executable stand-ins that goes first in the kernel's PATH.
struct StandIns {
    dir: tempfile::TempDir,
}

impl StandIns {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("port-helper-test-")
                .tempdir()
                .unwrap(),
        }
    }

    fn add(&self, name: &str, script: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    fn path(&self) -> OsString {
        let mut path = OsString::from(self.dir.path());
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }
}

/// The kernel runs `in.telnetd -L HELPER`; Debian's telnetds spell the option
/// differently, so ours hands the connection to busybox's, in inetd mode.
fn telnetd(stand_ins: &StandIns) {
    let busybox = host_program("busybox", "busybox-static");
    stand_ins.add(
        "in.telnetd",
        &format!(
            "#!/bin/sh\n[ \"$1\" = -L ] || exit 1\nexec {} telnetd -i -f /dev/null -l \"$2\"\n",
            busybox.display()
        ),
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads from `stream` until `needle` shows up; panics with what came otherwise.
fn read_until(stream: &mut impl Read, needle: &str, uml: &Uml) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let found = try_wait_until(Instant::now() + BOOT, || {
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "the terminal closed before {needle:?}; got {:?}; console:\n{}",
                String::from_utf8_lossy(&seen),
                uml.console()
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the terminal: {e}"),
        }
        String::from_utf8_lossy(&seen)
            .contains(needle)
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no {needle:?} on the terminal; got {:?}; console:\n{}",
        String::from_utf8_lossy(&seen),
        uml.console()
    );
    String::from_utf8_lossy(&seen).into_owned()
}

/// Boots a guest with `con1=port:PORT` and the given helper, runs a command
/// on that console over TCP, and returns the console log once the guest is done.
fn port_console(helper: &Path) -> String {
    port_session(helper, |client, uml| {
        client.write_all(COMMAND.as_bytes()).unwrap();
        read_until(client, OUTPUT, uml);
    })
}

/// Boots a guest whose console 1 is on a TCP port served through `helper`,
/// lets `session` drive the connection, and returns the console log once the
/// guest's shell has ended and the guest is down.
fn port_session(helper: &Path, session: impl FnOnce(&mut TcpStream, &Uml)) -> String {
    let stand_ins = StandIns::new();
    telnetd(&stand_ins);
    let port = free_port();
    let mut uml = UmlBuilder::new(SHELL_ON_TTY1)
        .arg(format!("con1=port:{port}"))
        .env("PATH", stand_ins.path())
        .env("UML_PORT_HELPER", helper)
        .start();
    uml.wait_for_console("CONSOLE-WAITING", BOOT);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    session(&mut client, &uml);
    uml.wait_for_console("SHELL-ENDED", BOOT);
    assert!(uml.wait_exit(BOOT).success());
    uml.console()
}

#[test]
fn real_kernel_port_console_through_our_port_helper() {
    let console = port_console(&our_tool("port-helper"));
    assert!(!console.contains("port-helper:"), "{console}");
}

#[test]
fn real_kernel_c_tool_port_console_through_the_c_port_helper() {
    port_console(&c_helper());
}

/// Resizes the telnet client's window once the guest's shell runs (telnet
/// NAWS, which telnetd turns into the pty's size) and waits for the guest's
/// terminal to report the new size. The kernel learns of resizes through a
/// watcher that must make the pty its controlling terminal, which the helper
/// allows by giving the pty up (TIOCNOTTY).
fn follows_resizes(helper: &Path) {
    port_session(helper, |client, uml| {
        read_until(client, "/ # ", uml);
        // IAC SB NAWS, width 100, height 40, IAC SE
        client
            .write_all(&[255, 250, 31, 0, 100, 0, 40, 255, 240])
            .unwrap();
        client
            .write_all(
                b"n=0; until [ \"$(stty size 2>/dev/null)\" = '40 100' ] || [ $n -ge 100 ]; \
                  do usleep 100000; n=$((n+1)); done; echo SIZE-$(stty size 2>&1 | tr ' ' x); exit\n",
            )
            .unwrap();
        read_until(client, "SIZE-40x100", uml);
    });
}

#[test]
fn real_kernel_c_tool_port_console_follows_window_resizes() {
    follows_resizes(&c_helper());
}

#[test]
fn real_kernel_port_console_follows_window_resizes() {
    follows_resizes(&our_tool("port-helper"));
}

/// Boots a guest with `con1=xterm` and `xterm=` naming a stand-in terminal:
/// `script` on a pty, fed from a FIFO the test writes, logging what the
/// terminal shows to a file the test reads. The kernel runs the fixed
/// /usr/lib/uml/port-helper inside it; with `ours` our binary is
/// bind-mounted there in a private mount namespace (the host keeps the C tool).
fn xterm_console(ours: bool) {
    let stand_ins = StandIns::new();
    let dir = stand_ins.dir.path();
    let input = dir.join("keyboard");
    let screen = dir.join("screen");
    let made = Command::new(host_program("mkfifo", "coreutils"))
        .arg(&input)
        .status()
        .unwrap();
    assert!(made.success());
    // Held open for reading and writing, so neither side's open() blocks.
    let mut keyboard = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&input)
        .unwrap();
    let terminal = stand_ins.add(
        "fake-xterm",
        &format!(
            "#!/bin/sh
[ \"$1\" = -T ] && [ \"$3\" = -e ] || exit 1
shift 3
\
             exec {} -q -f -E never -c \"$*\" {} <{} >/dev/null 2>&1\n",
            host_program("script", "bsdutils").display(),
            screen.display(),
            input.display()
        ),
    );
    let mut builder = UmlBuilder::new(SHELL_ON_TTY1)
        .arg("con1=xterm")
        .arg(format!("xterm={},-T,-e", terminal.display()))
        .env("DISPLAY", ":0");
    if ours {
        let launcher = bind_mount_launcher(&our_tool("port-helper"), C_HELPER);
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        builder = builder.launcher(&launcher);
    } else {
        c_helper();
    }
    let mut uml = builder.start();
    uml.wait_for_console("CONSOLE-WAITING", BOOT);
    keyboard.write_all(COMMAND.as_bytes()).unwrap();
    let shown = || std::fs::read_to_string(&screen).unwrap_or_default();
    if try_wait_until(Instant::now() + BOOT, || {
        shown().contains(OUTPUT).then_some(())
    })
    .is_none()
    {
        panic!(
            "the window never showed {OUTPUT}; it shows {:?}; console:\n{}",
            shown(),
            uml.console()
        );
    }
    uml.wait_for_console("SHELL-ENDED", BOOT);
    assert!(uml.wait_exit(BOOT).success());
    let console = uml.console();
    assert!(!console.contains("xterm_open"), "{console}");
}

#[test]
fn root_real_kernel_xterm_console_through_our_port_helper() {
    xterm_console(true);
}

#[test]
fn real_kernel_c_tool_xterm_console_through_the_c_port_helper() {
    xterm_console(false);
}

/// Runs `helper` as telnetd would (stdin a pty from `script`, fd 3 a datagram
/// socket) and returns the PID payload and the terminal it sent, and `script`.
fn hand_over(helper: &Path) -> (i32, OwnedFd, std::process::Child) {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    // script puts the helper on a new pty; fd 3 passes through to it.
    let script = Command::new("sh")
        .args([
            "-c",
            "exec \"$1\" -q -c \"$0\" /dev/null 3<&2 2>/dev/null </dev/null >/dev/null",
        ])
        .arg(helper)
        .arg(host_program("script", "bsdutils"))
        .stderr(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    let mut payload = [0u8; 16];
    let (len, fd) = try_wait_until(Instant::now() + BOOT, || {
        recv_with_fd(&ours, &mut payload).ok()
    })
    .expect("no datagram from the helper");
    let fd = fd.expect("no fd with the datagram");
    (HelperPid::pid_of(&payload[..len]), fd, script)
}

fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.starts_with(" Z"))
    })
}

#[test]
fn c_tool_port_helper_hands_over_its_terminal_as_ours_does() {
    for helper in [our_tool("port-helper"), c_helper()] {
        let (pid, terminal, mut script) = hand_over(&helper);
        assert!(
            terminal.is_terminal(),
            "{}: sent no terminal",
            helper.display()
        );
        let link = std::fs::read_link(format!("/proc/self/fd/{}", terminal.as_raw_fd())).unwrap();
        assert!(link.starts_with("/dev/pts"), "{}", link.display());
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(&helper).unwrap(),
            "the payload is the helper's PID"
        );
        // The window closes: script, holding the pty's master, goes away.
        drop(terminal);
        script.kill().unwrap();
        script.wait().unwrap();
        if helper.as_path() == Path::new(C_HELPER) {
            // The C tool sleeps until the kernel kills it.
            assert!(is_running(pid));
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        } else {
            wait_until(
                Instant::now() + BOOT,
                "our port-helper to leave with its terminal",
                || !is_running(pid),
            );
        }
    }
}
