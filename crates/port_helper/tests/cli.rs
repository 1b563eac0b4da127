//! The command line run by hand, where there is nothing to pass or nowhere to send it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::process::{Command, Stdio};

#[test]
fn without_a_terminal_it_refuses_with_a_message() {
    for args in [&[][..], &["-uml-socket", "/nonexistent/sock"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_port-helper"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("standard input is not a terminal"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn uml_socket_needs_a_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_port-helper"))
        .arg("-uml-socket")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the UML's socket path"));
}
