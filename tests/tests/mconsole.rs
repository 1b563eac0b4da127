//! uml_mconsole against live kernels: the C client's output as the reference,
//! every command on a running UML, timeouts, `--list` and `--watch`.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_testbed::{Uml, UmlBuilder, host_program, our_tool, pid_of, try_wait_until, wait_until};

const BOOT: Duration = Duration::from_secs(60);
/// A guest that stays up, printing a tick ten times a second.
const TICKING: &str =
    "mount -t proc proc /proc\necho GUEST-READY\nwhile true; do echo tick; sleep 0.1; done";

fn ours(dir: &Path, args: &[&str]) -> Output {
    Command::new(our_tool("uml_mconsole"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn c_client(args: &[&str], stdin: Option<&str>) -> Output {
    run_with_stdin(
        Command::new(host_program("uml_mconsole", "uml-utilities")).args(args),
        stdin,
    )
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || std::io::Write::write_all(&mut pipe, input.as_bytes()));
    child.wait_with_output().unwrap()
}

fn booted(builder: UmlBuilder) -> Uml {
    let mut uml = builder.start();
    uml.wait_for_console("GUEST-READY", BOOT);
    uml.wait_for_mconsole();
    uml
}

#[test]
fn real_kernel_c_tool_uml_mconsole_output_equals_ours() {
    let uml = booted(UmlBuilder::new(TICKING));
    let sock = uml.mconsole_path();
    let sock = sock.to_str().unwrap();
    let dir = uml.workdir().to_path_buf();
    // Deterministic commands only; bursts of more than ten datagrams (sysrq m,
    // stack) can lose datagrams in the kernel and are checked elsewhere.
    for command in [
        "version",
        "help",
        "proc cmdline",
        "proc version",
        "proc",
        "config ubd0",
        "config con0",
        "config mem",
        "config",
        "config ubd5=/nonexistent/disk.img",
        "remove ubd0",
        "remove ubd9",
        "remove",
        "go",
        "nonsense",
        "sysrq h",
        "log hello from the test",
        "mconsole-version",
    ] {
        let words: Vec<&str> = command.split(' ').collect();
        let args: Vec<&str> = [sock].into_iter().chain(words).collect();
        let c = c_client(&args, None);
        let our = ours(&dir, &args);
        assert_eq!(
            String::from_utf8_lossy(&our.stdout),
            String::from_utf8_lossy(&c.stdout),
            "stdout of `{command}`"
        );
        assert_eq!(
            our.status.code(),
            c.status.code(),
            "exit status of `{command}`"
        );
    }
    // Commands read from a pipe: the prompt and the line are echoed, as readline does.
    let script = format!("version\nmconsole-version\nnonsense\n\nswitch {sock}\nconfig con0\n");
    let c = c_client(&[sock], Some(&script));
    let our = run_with_stdin(
        Command::new(our_tool("uml_mconsole")).arg(sock),
        Some(&script),
    );
    assert_eq!(
        String::from_utf8_lossy(&our.stdout),
        String::from_utf8_lossy(&c.stdout)
    );
    assert_eq!(our.status.code(), c.status.code());
    let quit = "version\nquit\nversion\n";
    let c = c_client(&[sock], Some(quit));
    let our = run_with_stdin(Command::new(our_tool("uml_mconsole")).arg(sock), Some(quit));
    assert_eq!(
        String::from_utf8_lossy(&our.stdout),
        String::from_utf8_lossy(&c.stdout)
    );
}

fn console_ticks(uml: &Uml) -> usize {
    uml.console().matches("tick").count()
}

#[test]
fn real_kernel_mconsole_drives_a_live_uml() {
    let mut uml = booted(UmlBuilder::new(TICKING));
    let dir = uml.workdir().to_path_buf();
    let uml_dir = uml.uml_dir().to_str().unwrap().to_owned();
    let umid = uml.umid().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--uml-dir", uml_dir.as_str(), umid.as_str()];
        all.extend_from_slice(args);
        ours(&dir, &all)
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // A reply spread over several datagrams arrives whole.
    let meminfo = run(&["proc", "meminfo"]);
    assert!(meminfo.status.success(), "{meminfo:?}");
    assert!(stdout(&meminfo).len() > 600 && stdout(&meminfo).contains("MemTotal:"));
    assert!(
        stdout(&meminfo).trim_end().ends_with("kB"),
        "{}",
        stdout(&meminfo)
    );

    // stop freezes the guest, requests are still served, go resumes it.
    assert_eq!(stdout(&run(&["stop"])), "OK stopped\n");
    std::thread::sleep(Duration::from_millis(300));
    let frozen = console_ticks(&uml);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(console_ticks(&uml), frozen, "the guest ran while stopped");
    assert!(stdout(&run(&["version"])).starts_with("OK Linux"));
    assert_eq!(run(&["stop"]).status.code(), Some(1));
    assert_eq!(stdout(&run(&["go"])), "OK \n");
    wait_until(Instant::now() + BOOT, "the guest to resume ticking", || {
        console_ticks(&uml) > frozen + 3
    });

    // Hot-plug a disk named relative to our working directory, then remove it.
    std::fs::write(dir.join("extra.img"), vec![0u8; 1 << 20]).unwrap();
    let added = run(&["config", "ubd1=extra.img"]);
    assert!(added.status.success(), "{added:?}");
    let real = dir.canonicalize().unwrap().join("extra.img");
    assert_eq!(
        stdout(&run(&["config", "ubd1"])),
        format!("OK {}\n", real.display())
    );
    assert_eq!(stdout(&run(&["remove", "ubd1"])), "OK \n");
    assert_eq!(stdout(&run(&["config", "ubd1"])), "OK \n");

    // A command longer than one request is refused, not cut.
    let long = "x".repeat(600);
    let refused = run(&["proc", &long]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("511"),
        "{refused:?}"
    );
    // log text of any length is split as the C client splits it.
    let logged = run(&["log", &long]);
    assert!(logged.status.success());
    // 506 + 94 bytes, then a newline of its own.
    assert_eq!(stdout(&logged), "OK \nOK \nOK \n");

    // log -f sends a file's lines; the kernel logs them as they are.
    std::fs::write(
        dir.join("note.txt"),
        "first line from a file\nsecond line\n",
    )
    .unwrap();
    let from_file = run(&["log", "-f", "note.txt"]);
    assert!(from_file.status.success(), "{from_file:?}");
    assert_eq!(stdout(&from_file), "OK \n");
    wait_until(
        Instant::now() + BOOT,
        "the logged file in the console",
        || uml.console().contains("second line"),
    );

    // cad and reboot restart the kernel in the same process.
    let pid = uml.pid();
    for command in ["cad", "reboot"] {
        assert_eq!(stdout(&run(&[command])), "OK \n", "{command}");
        wait_until(Instant::now() + BOOT, "the UML to come back", || {
            run(&["version"]).status.success()
        });
        assert!(!uml.has_exited(), "{command} ended the process");
        assert_eq!(uml.pid(), pid);
    }

    // A frozen process: our client gives up with status 124 instead of hanging.
    kill(uml_testbed::pid(pid), Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let timed_out = run_with_stdin(
        Command::new(our_tool("uml_mconsole"))
            .args(["--timeout", "1", "--uml-dir", &uml_dir, &umid, "version"])
            .current_dir(&dir),
        None,
    );
    kill(uml_testbed::pid(pid), Signal::SIGCONT).unwrap();
    assert_eq!(timed_out.status.code(), Some(124), "{timed_out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&timed_out.stderr).contains(&umid));

    // stack shows a task's stack through the console capture. Its burst of
    // datagrams can overflow our queue (see the README): then what arrived is
    // printed and the status is 124, never a hang.
    let stack = ours(
        &dir,
        &["--timeout", "2", "--uml-dir", &uml_dir, &umid, "stack", "1"],
    );
    assert!(matches!(stack.status.code(), Some(0 | 124)), "{stack:?}");
    // What the trace says is the kernel's business (6.1 sometimes faults
    // walking it); the reply itself must come.
    assert!(stdout(&stack).starts_with("OK "), "{}", stdout(&stack));

    // int sends SIGINT to the pid in the instance directory: a UML exits on it.
    assert!(run(&["int"]).status.success());
    uml.wait_exit(BOOT);
    // With the machine gone its socket is stale or missing: an error, not a hang.
    let gone = run(&["version"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
}

#[test]
fn real_kernel_mconsole_list_and_watch_follow_instances() {
    let builder = UmlBuilder::new(
        "mount -t proc proc /proc\necho backup-finished > /proc/mconsole\necho GUEST-READY\nwhile true; do sleep 1; done",
    );
    let dir = builder.workdir().to_path_buf();
    let uml_dir = builder.uml_dir();
    std::fs::create_dir_all(&uml_dir).unwrap();
    // A directory left by a UML that died: its pid is no process.
    let stale = uml_dir.join("crashed");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("pid"), "999999\n").unwrap();
    let notify = dir.join("notify.sock");
    let uml_dir_s = uml_dir.to_str().unwrap().to_owned();

    let mut watcher = Command::new(our_tool("uml_mconsole"))
        .args(["--uml-dir", &uml_dir_s, "--watch", "--notify"])
        .arg(&notify)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let out = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until(Instant::now() + BOOT, "the notify socket", || {
        notify.exists()
    });

    let mut uml = builder
        .arg(format!("mconsole=notify:{}", notify.display()))
        .start();
    uml.wait_for_console("GUEST-READY", BOOT);
    let umid = uml.umid().to_owned();
    // Events come in any order; wait until each wanted line has been seen.
    let expect = |wanted: &[String]| {
        let mut missing: Vec<&String> = wanted.iter().collect();
        let deadline = Instant::now() + BOOT;
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => missing.retain(|w| **w != line),
                Err(_) => panic!("watch never printed {missing:?}"),
            }
        }
    };
    expect(&[
        format!("appeared {umid}"),
        format!("notify socket {umid} {}/{umid}/mconsole", uml_dir.display()),
        "notify user backup-finished".to_owned(),
    ]);

    let listed = ours(&dir, &["--uml-dir", &uml_dir_s, "--list", "--json"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let live = listed
        .lines()
        .find(|l| l.contains(&format!("\"umid\":\"{umid}\"")))
        .unwrap();
    assert!(live.contains(&format!("\"pid\":{}", uml.pid())), "{live}");
    assert!(
        live.contains("\"alive\":true") && live.contains("\"answers\":true"),
        "{live}"
    );
    assert!(
        live.contains("\"stale\":false") && live.contains("Linux"),
        "{live}"
    );
    let dead = listed
        .lines()
        .find(|l| l.contains("\"umid\":\"crashed\""))
        .unwrap();
    assert!(
        dead.contains("\"stale\":true") && dead.contains("\"alive\":false"),
        "{dead}"
    );
    let human = ours(&dir, &["--uml-dir", &uml_dir_s, "list"]);
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("crashed") && l.contains("stale")),
        "{human}"
    );

    assert!(
        ours(&dir, &["--uml-dir", &uml_dir_s, &umid, "halt"])
            .status
            .success()
    );
    assert!(uml.wait_exit(BOOT).success());
    expect(&[format!("vanished {umid}")]);

    kill(pid_of(&watcher), Signal::SIGINT).unwrap();
    assert!(watcher.wait().unwrap().success());
    assert!(
        !notify.exists(),
        "the watcher left its notify socket behind"
    );
}

#[test]
fn uml_mconsole_options_are_never_taken_for_a_machine() {
    let dir = tempfile::tempdir().unwrap();
    let help = ours(dir.path(), &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--timeout"));
    let version = ours(dir.path(), &["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("uml_mconsole "));
    let bare = ours(dir.path(), &[]);
    assert_eq!(bare.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bare.stderr),
        "Usage : uml_mconsole socket-name [command]\n"
    );
    let unknown = ours(
        dir.path(),
        &["--uml-dir", "/nonexistent", "nosuchvm", "version"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuchvm"));
    // Words after the machine belong to the command, dashes and all.
    let stale = dir.path().join("vm/mconsole");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
    let refused = ours(
        dir.path(),
        &[
            "--uml-dir",
            dir.path().to_str().unwrap(),
            "vm",
            "log",
            "-f",
            "--json",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--json"),
        "{refused:?}"
    );
}

#[test]
fn real_kernel_mconsole_prompt_on_a_terminal() {
    let uml = booted(UmlBuilder::new(TICKING));
    let dir = uml.workdir().to_path_buf();
    let uml_dir = uml.uml_dir().to_str().unwrap().to_owned();
    let umid = uml.umid().to_owned();
    // script(1) gives the client a pseudo-terminal, so line editing is in use.
    let command = format!(
        "{} --uml-dir {uml_dir} {umid}",
        our_tool("uml_mconsole").display()
    );
    let mut child = Command::new(host_program("script", "bsdutils"))
        .args(["-qfc", &command, "/dev/null"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for line in ["version\n", "mconsole-version\n", "quit\n"] {
        std::io::Write::write_all(&mut input, line.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("({}) ", &umid[..umid.len().min(11)])),
        "{text}"
    );
    assert!(text.contains("OK Linux"), "{text}");
    assert!(text.contains("uml_mconsole client version 2"), "{text}");
}

#[test]
fn real_kernel_c_tool_mconsole_search_path_keeps_the_defaults() {
    let uml = booted(UmlBuilder::new(TICKING));
    let umid = uml.umid().to_owned();
    // A home whose ~/.uml is the guest's uml dir, and an unrelated UML_DIR.
    let home = uml.workdir().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::symlink(uml.uml_dir(), home.join(".uml")).unwrap();
    let elsewhere = uml.workdir().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let with_env = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env("HOME", &home)
            .env("UML_DIR", &elsewhere)
            .current_dir(uml.workdir())
            .output()
            .unwrap()
    };
    let c = with_env(
        &host_program("uml_mconsole", "uml-utilities"),
        &[&umid, "version"],
    );
    let our = with_env(&our_tool("uml_mconsole"), &[&umid, "version"]);
    assert!(
        String::from_utf8_lossy(&c.stdout).starts_with("OK Linux"),
        "{c:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&our.stdout),
        String::from_utf8_lossy(&c.stdout)
    );
    assert_eq!(our.status.code(), c.status.code());

    // netkit boots its guests with uml_dir=~/.netkit/mconsole.
    std::fs::remove_file(home.join(".uml")).unwrap();
    std::fs::create_dir(home.join(".netkit")).unwrap();
    let netkit = home.join(".netkit/mconsole");
    std::os::unix::fs::symlink(uml.uml_dir(), &netkit).unwrap();
    let our = with_env(&our_tool("uml_mconsole"), &[&umid, "version"]);
    assert_eq!(
        String::from_utf8_lossy(&our.stdout),
        String::from_utf8_lossy(&c.stdout)
    );
    // --list says where each machine was found.
    let listed = with_env(&our_tool("uml_mconsole"), &["--list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.starts_with(&umid))
        .unwrap_or_else(|| panic!("{umid} not listed: {listed}"));
    assert!(line.contains(netkit.to_str().unwrap()), "{line}");
    let json = with_env(&our_tool("uml_mconsole"), &["--list", "--json"]);
    let json = String::from_utf8_lossy(&json.stdout).into_owned();
    assert!(
        json.lines()
            .any(|l| l.contains(&format!("\"umid\":\"{umid}\""))
                && l.contains(&format!("\"found_in\":\"{}\"", netkit.display()))),
        "{json}"
    );
}

#[test]
fn c_tool_mconsole_error_lines_start_with_the_c_text() {
    let dir = tempfile::tempdir().unwrap();
    // A socket nobody holds any more, as a UML killed without cleaning up leaves.
    let stale = dir.path().join("vm/mconsole");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
    let stale = stale.to_str().unwrap();
    let run = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let c_tool = host_program("uml_mconsole", "uml-utilities");
    for args in [
        vec![stale, "version"],
        vec!["no-such-machine", "version"],
        vec![stale, "log", "-f", "/nonexistent/file"],
        vec![stale, "int"],
    ] {
        let c = run(&c_tool, &args);
        let our = run(&our_tool("uml_mconsole"), &args);
        assert_eq!(our.status.code(), c.status.code(), "status of {args:?}");
        // The C client's error line starts ours; its "couldn't stat" warnings
        // for the places that did not match are left out on purpose.
        let c_err = String::from_utf8_lossy(&c.stderr);
        let c_line = c_err
            .lines()
            .rev()
            .find(|l| !l.starts_with("Warning: couldn't stat file"))
            .unwrap_or("");
        let our_err = String::from_utf8_lossy(&our.stderr);
        // Every case but `int` (which prints on stdout) has an error line.
        assert_eq!(c_line.is_empty(), args[1] == "int", "C said {c_err:?}");
        assert!(
            our_err.starts_with(c_line),
            "{args:?}: C says {c_line:?}, we say {our_err:?}"
        );
        let c_out = String::from_utf8_lossy(&c.stdout);
        let our_out = String::from_utf8_lossy(&our.stdout);
        assert!(
            our_out.starts_with(c_out.trim_end()),
            "{args:?}: C prints {c_out:?}, we print {our_out:?}"
        );
    }
}

/// The unprivileged user the attacker tests act as.
const NOBODY: u32 = 65534;

/// A directory other users can enter, as `/tmp/uml` is.
fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs a program as `nobody` (no groups) and collects its output.
fn as_nobody(program: &Path, args: &[&str]) -> Output {
    Command::new(host_program("setpriv", "util-linux"))
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
        ])
        .arg(program)
        .args(args)
        .output()
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fake machine: a socket in `<uml_dir>/<umid>/` whose `pid` file names this
/// test process, which owns the socket, as a UML's names the kernel.
fn fake_machine(uml_dir: &Path, umid: &str) -> std::os::unix::net::UnixDatagram {
    let instance = uml_dir.join(umid);
    std::fs::create_dir_all(&instance).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(instance.join("mconsole")).unwrap();
    std::fs::write(instance.join("pid"), format!("{}\n", std::process::id())).unwrap();
    sock.set_read_timeout(Some(BOOT)).unwrap();
    sock
}

fn reply_bytes(err: u32, more: bool, text: &[u8]) -> Vec<u8> {
    uml_proto::mconsole::ReplyChunk { err, more, text }
        .encode()
        .unwrap()
}

#[test]
fn root_mconsole_ignores_replies_forged_by_another_user() {
    let dir = shared_tempdir();
    let uml_dir = dir.path().join("uml");
    let machine = fake_machine(&uml_dir, "vm1");
    // The attacker's program must be runnable by nobody.
    let forger = dir.path().join("uml_dgram");
    std::fs::copy(env!("CARGO_BIN_EXE_uml_dgram"), &forger).unwrap();
    let forged = hex(&reply_bytes(0, false, b"FORGED by nobody"));
    for json in [false, true] {
        let mut args = vec!["--uml-dir", uml_dir.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        args.extend(["vm1", "version"]);
        let client = Command::new(our_tool("uml_mconsole"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 600];
        let (_, from) = machine.recv_from(&mut buf).unwrap();
        use std::os::linux::net::SocketAddrExt;
        let name = from
            .as_abstract_name()
            .expect("the client binds an abstract name");
        // The attacker knows the name (it is predictable) and gets in first.
        let target = format!("@{}", String::from_utf8_lossy(name));
        let attack = as_nobody(&forger, &[&target, &forged]);
        // A client that took the forgery has already gone: then this fails.
        let _ = machine.send_to_addr(&reply_bytes(0, false, b"genuine"), &from);
        let out = client.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            !stdout.contains("FORGED"),
            "a forged reply was taken: {stdout}"
        );
        if json {
            let v: serde_like::Value = serde_like::parse(&stdout);
            assert_eq!(v.output, "genuine", "{stdout}");
        } else {
            assert_eq!(stdout, "OK genuine\n");
        }
        // The kernel refuses the forged datagram outright.
        assert_eq!(attack.status.code(), Some(3), "{attack:?}");
    }
}

/// Just enough of the `--json` line to read its output field.
mod serde_like {
    pub struct Value {
        pub output: String,
    }

    pub fn parse(line: &str) -> Value {
        let start = line.find("\"output\":\"").expect("an output field") + 10;
        let end = line[start..].find('"').expect("a closing quote") + start;
        Value {
            output: line[start..end].to_owned(),
        }
    }
}

#[test]
fn mconsole_endless_reply_ends_with_an_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let uml_dir = dir.path().join("uml");
    let machine = fake_machine(&uml_dir, "vm1");
    let client = Command::new(our_tool("uml_mconsole"))
        .args([
            "--uml-dir",
            uml_dir.to_str().unwrap(),
            "vm1",
            "proc",
            "kcore",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 600];
    let (_, from) = machine.recv_from(&mut buf).unwrap();
    // A sender that never sets the last datagram; it stops at 256 MiB, or
    // when the client is gone.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let chunk = reply_bytes(0, true, &[b'x'; 511]);
    let sender = std::thread::spawn(move || {
        while counter.load(Ordering::Relaxed) < 256 << 20 {
            if machine.send_to_addr(&chunk, &from).is_err() {
                break;
            }
            counter.fetch_add(511, Ordering::Relaxed);
        }
    });
    let out = client.wait_with_output().unwrap();
    let sent_when_done = sent.load(Ordering::Relaxed);
    sender.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exceeds"), "{stderr}");
    // It stopped reading long before the sender gave up: its memory is bounded.
    assert!(
        sent_when_done < 64 << 20,
        "{sent_when_done} bytes were sent"
    );
}

#[test]
fn mconsole_a_burst_of_reply_datagrams_is_queued_whole() {
    let dir = tempfile::tempdir().unwrap();
    let uml_dir = dir.path().join("uml");
    let machine = fake_machine(&uml_dir, "vm1");
    let client = Command::new(our_tool("uml_mconsole"))
        .args(["--uml-dir", uml_dir.to_str().unwrap(), "vm1", "sysrq", "t"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 600];
    let (_, from) = machine.recv_from(&mut buf).unwrap();
    // As the kernel sends a console capture: without waiting, all at once.
    machine.set_nonblocking(true).unwrap();
    let count = 100;
    for i in 0..count {
        let line = format!("{i:03} {}\n", "x".repeat(500));
        let sent = machine.send_to_addr(&reply_bytes(0, i + 1 < count, line.as_bytes()), &from);
        // An unconnected receiver refuses the 11th with EAGAIN.
        assert!(sent.is_ok(), "datagram {i} refused: {sent:?}");
    }
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), count);
    assert!(text.ends_with(&format!("{:03} {}\n\n", count - 1, "x".repeat(500))));
}

#[test]
fn root_mconsole_int_never_signals_a_process_a_planted_directory_names() {
    let dir = shared_tempdir();
    // A shared uml dir, writable by everyone, as /tmp/uml is.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    // An unrelated process of ours that SIGINT would end.
    let mut victim = Command::new(host_program("sleep", "coreutils"))
        .arg("600")
        .spawn()
        .unwrap();
    let victim_pid = victim.id();
    // nobody plants vm1 with a pid file naming it.
    let planted = as_nobody(
        &host_program("sh", "dash"),
        &[
            "-c",
            &format!(
                "mkdir {0}/vm1 && echo {victim_pid} > {0}/vm1/pid && : > {0}/vm1/mconsole",
                shared.display()
            ),
        ],
    );
    assert!(planted.status.success(), "{planted:?}");
    // Our own instance directory whose pid file names it, beside a live socket
    // that it does not hold.
    let mine = dir.path().join("mine");
    let _socket = fake_machine(&mine, "vm2");
    std::fs::write(mine.join("vm2/pid"), format!("{victim_pid}\n")).unwrap();

    let shared_s = shared.to_str().unwrap();
    let run = |env_dir: &Path, args: &[&str]| {
        Command::new(our_tool("uml_mconsole"))
            .args(args)
            .env("UML_DIR", env_dir)
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // Found by searching (UML_DIR is searched like /tmp/uml), by its socket
    // path, and our own directory with a pid that does not own the socket.
    let planted_socket = format!("{shared_s}/vm1/mconsole");
    let attempts = [
        run(&shared, &["vm1", "int"]),
        run(&shared, &[&planted_socket, "int"]),
        run(&mine, &["vm2", "int"]),
    ];
    let still_running = victim.try_wait().unwrap().is_none();
    let _ = kill(uml_testbed::pid(victim_pid), Signal::SIGKILL);
    let _ = victim.wait();
    assert!(
        still_running,
        "int signalled pid {victim_pid}: {attempts:?}"
    );
    for out in &attempts {
        assert_ne!(out.status.code(), Some(0), "{out:?}");
    }
    // Refused with the C client's line first, then why (the planted
    // directory is passed over when searched).
    for out in &attempts {
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .starts_with("Cannot determine the PID of your UML session, not sending signal. ("),
            "{out:?}"
        );
    }
    assert!(
        String::from_utf8_lossy(&attempts[0].stdout).contains("belongs to uid 65534"),
        "{:?}",
        attempts[0]
    );
}

/// Collects a child's stderr lines as they come.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn signal(uml: &Uml, sig: Signal) {
    kill(uml_testbed::pid(uml.pid()), sig).unwrap();
}

/// How long the guests stay stopped: longer than the slow-reply notice.
const STOPPED_FOR: Duration = Duration::from_secs(8);

#[test]
fn real_kernel_c_tool_mconsole_waits_for_a_stopped_guest() {
    // One guest for the C client, one for ours: both get the same commands
    // while frozen, and must answer them alike once thawed.
    let mut theirs = UmlBuilder::new(TICKING).start();
    let mut mine = UmlBuilder::new(TICKING).start();
    for uml in [&mut theirs, &mut mine] {
        uml.wait_for_console("GUEST-READY", BOOT);
        uml.wait_for_mconsole();
    }
    let their_sock = theirs.mconsole_path();
    let uml_dir = mine.uml_dir().to_str().unwrap().to_owned();
    let umid = mine.umid().to_owned();
    let notice = format!(
        "machine {umid} (pid {}) has not answered for 5 s; waiting; Ctrl-C or --timeout to stop",
        mine.pid()
    );
    for command in ["config con0", "halt"] {
        signal(&theirs, Signal::SIGSTOP);
        signal(&mine, Signal::SIGSTOP);
        let stopped = Instant::now();
        let words: Vec<&str> = command.split(' ').collect();
        let c = Command::new(host_program("uml_mconsole", "uml-utilities"))
            .arg(&their_sock)
            .args(&words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ours = Command::new(our_tool("uml_mconsole"))
            .args(["--uml-dir", &uml_dir, &umid])
            .args(&words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let notices = stderr_lines(&mut ours);
        // The notice says ours is still waiting after 5 s.
        let first = notices.recv_timeout(BOOT).expect("a notice on stderr");
        assert!(first.ends_with(&notice), "{first}");
        std::thread::sleep(STOPPED_FOR.saturating_sub(stopped.elapsed()));
        assert!(
            ours.try_wait().unwrap().is_none(),
            "ours gave up on `{command}`"
        );
        signal(&theirs, Signal::SIGCONT);
        signal(&mine, Signal::SIGCONT);
        let c = c.wait_with_output().unwrap();
        let our = ours.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&our.stdout),
            String::from_utf8_lossy(&c.stdout),
            "stdout of `{command}`"
        );
        assert!(!our.stdout.is_empty(), "`{command}` printed nothing");
        assert_eq!(our.status.code(), c.status.code(), "status of `{command}`");
        assert_eq!(our.status.code(), Some(0), "status of `{command}`");
        // One notice only.
        assert!(
            notices.try_recv().is_err(),
            "`{command}`: more than one notice"
        );
    }
    assert!(theirs.wait_exit(BOOT).success());
    assert!(mine.wait_exit(BOOT).success());
}

#[test]
fn real_kernel_mconsole_stops_waiting_when_the_guest_is_killed() {
    let mut uml = booted(UmlBuilder::new(TICKING));
    let uml_dir = uml.uml_dir().to_str().unwrap().to_owned();
    let umid = uml.umid().to_owned();
    let pid = uml.pid();
    signal(&uml, Signal::SIGSTOP);
    let mut ours = Command::new(our_tool("uml_mconsole"))
        .args(["--uml-dir", &uml_dir, &umid, "version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut ours);
    // Waiting on a guest that cannot answer.
    let notice = lines.recv_timeout(BOOT).expect("a notice on stderr");
    assert!(notice.contains("has not answered"), "{notice}");
    signal(&uml, Signal::SIGKILL);
    let status = try_wait_until(Instant::now() + Duration::from_secs(1), || {
        ours.try_wait().unwrap()
    })
    .expect("still waiting a second after the guest was killed");
    assert_eq!(status.code(), Some(1));
    let error = lines.recv_timeout(BOOT).expect("an error on stderr");
    assert!(
        error.contains(&format!("machine '{umid}' (pid {pid}) is gone")),
        "{error}"
    );
    assert!(uml.has_exited());
}

/// A bound abstract name may hold newlines, which the kernel prints raw in
/// /proc/net/unix: another user can forge table lines that pair a victim
/// process's socket with their own "machine" socket. `int` must still never
/// signal a process of another user than the socket's owner.
#[test]
fn root_mconsole_int_ignores_a_forged_socket_table() {
    let dir = shared_tempdir();
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::os::unix::fs::chown(&evil, Some(NOBODY), Some(NOBODY)).unwrap();
    // Root's victim: a process holding a socket, which SIGINT would end.
    let perl = host_program("perl", "perl-base");
    let mut victim = Command::new(&perl)
        .args([
            "-e",
            "use Socket; socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die $!; \
             bind($s, pack_sockaddr_un(\"\\0victim-of-a-forged-table\")) or die $!; \
             $| = 1; print \"ready\\n\"; sleep 120",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(victim.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let victim_pid = victim.id();
    let inode = std::fs::read_dir(format!("/proc/{victim_pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
        .find_map(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .unwrap();
    // nobody's "machine": a socket, a pid file naming the victim, and an
    // abstract name whose second line pairs the victim's socket with it.
    let socket = evil.join("m");
    let script = format!(
        "use Socket;\n\
         socket(my $m, AF_UNIX, SOCK_DGRAM, 0) or die $!; bind($m, pack_sockaddr_un('{sock}')) or die $!;\n\
         open(my $p, '>', '{pid}') or die $!; print $p \"{victim_pid}\\n\"; close($p);\n\
         socket(my $f, AF_UNIX, SOCK_DGRAM, 0) or die $!;\n\
         bind($f, pack_sockaddr_un(\"\\0x\\n0000000000000000: 00000002 00000000 00000000 0002 01 {inode} {sock}\")) or die $!;\n\
         $| = 1; print \"ready\\n\"; sleep 120;\n",
        sock = socket.display(),
        pid = evil.join("pid").display(),
    );
    let mut attacker = Command::new(host_program("setpriv", "util-linux"))
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
        ])
        .arg(&perl)
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attacker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let out = Command::new(our_tool("uml_mconsole"))
        .arg(&socket)
        .arg("int")
        .output()
        .unwrap();
    let still_running = victim.try_wait().unwrap().is_none();
    for child in [&mut victim, &mut attacker] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        still_running,
        "int signalled root's pid {victim_pid}: {out:?}"
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
}
