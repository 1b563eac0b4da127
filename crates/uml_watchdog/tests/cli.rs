//! The command line as a person (or the kernel) meets it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::Write;
use std::process::{Command, Stdio};

fn watchdog() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uml_watchdog"));
    cmd.env_remove("UML_WATCHDOG_TIMEOUT")
        .env_remove("UML_WATCHDOG_LOG");
    cmd
}

#[test]
fn bad_arguments_exit_1_with_the_usage() {
    for args in [
        &[][..],
        &["-pid"][..],
        &["-pid", "0"][..],
        &["-pid", "-1"][..],
        &["-pid", "x"][..],
        &["-mconsole"][..],
        &["-pid", "1", "--timeout", "0"][..],
        &["-bogus"][..],
    ] {
        let out = watchdog().args(args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no ready byte: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: uml_watchdog"), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_timeout_in_the_environment_is_refused() {
    let out = watchdog()
        .args(["-pid", "1"])
        .env("UML_WATCHDOG_TIMEOUT", "soon")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UML_WATCHDOG_TIMEOUT"));
}

/// Run by hand (stderr is not the ready pipe): the ready byte on stdout, log
/// lines on stderr, exit 0 when the pings end with end of file.
#[test]
fn by_hand_it_logs_to_stderr_and_exits_0_on_close() {
    let mut child = watchdog()
        .args(["-pid", &std::process::id().to_string()])
        .env("UML_WATCHDOG_TIMEOUT", "30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, [0]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "watching for pid {}; a hang is 30 s",
            std::process::id()
        )),
        "{err}"
    );
    assert!(err.contains("the guest closed the watchdog"), "{err}");
}
