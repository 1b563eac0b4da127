//! The test bed itself: a guest boots, its console is captured, and nothing outlives it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::path::Path;
use std::time::Duration;

use uml_testbed::UmlBuilder;

#[test]
fn real_kernel_fixture_boots_captures_console_and_cleans_up() {
    let mut uml = UmlBuilder::new("echo FIXTURE-MARKER $(cat /proc/cmdline)\nsleep 3600").boot();
    uml.wait_for_console("FIXTURE-MARKER", Duration::from_secs(60));
    let console = uml.console();
    assert!(!console.contains('\r'), "console line ends are normalised");
    assert!(console.contains(&format!(
        "mconsole (version 2) initialized on {}",
        uml.mconsole_path().display()
    )));
    let pid = uml.pid();
    let instance = uml.uml_dir().join(uml.umid());
    assert_eq!(
        std::fs::read_to_string(instance.join("pid"))
            .unwrap()
            .trim(),
        pid.to_string()
    );
    let workdir = uml.workdir().to_path_buf();
    drop(uml);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "guest still running"
    );
    assert!(!workdir.exists(), "work directory left behind");
}

#[test]
fn real_kernel_guest_that_powers_off_exits_cleanly() {
    let mut uml = UmlBuilder::new("echo BYE").start();
    let status = uml.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "exit status {status}; console:\n{}",
        uml.console()
    );
    assert!(uml.console().contains("BYE"));
    assert!(
        !uml.uml_dir().join(uml.umid()).exists(),
        "instance dir left behind"
    );
}
