//! `cargo xtask install --prefix DIR`: every program, its man page and its
//! completions land under DIR, and the user is told how to give uml_net its
//! privileges.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use uml_testbed::xtask;

#[test]
fn install_puts_programs_man_pages_and_completions_under_the_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    let out = xtask(&["install", "--prefix", prefix.path().to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = prefix.path();
    for (name, dir, section) in [
        ("uml_switch", "bin", "1"),
        ("uml_switchctl", "bin", "1"),
        ("uml_mconsole", "bin", "1"),
        ("uml_mkcow", "bin", "1"),
        ("uml_moo", "bin", "1"),
        ("tunctl", "bin", "8"),
        ("uml_net", "bin", "8"),
        ("uml_watchdog", "bin", "8"),
        ("port-helper", "lib/uml", "8"),
    ] {
        let binary = p.join(dir).join(name);
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        for file in [
            format!("share/man/man{section}/{name}.{section}"),
            format!("share/bash-completion/completions/{name}"),
            format!("share/zsh/site-functions/_{name}"),
            format!("share/fish/vendor_completions.d/{name}.fish"),
        ] {
            assert!(p.join(&file).is_file(), "{file} missing");
        }
    }
    let page = std::fs::read_to_string(p.join("share/man/man1/uml_moo.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH uml_moo 1"),
        "{page}"
    );
    assert!(
        page.contains("\\-\\-info"),
        "the man page lacks --info:\n{page}"
    );
    let bash = std::fs::read_to_string(p.join("share/bash-completion/completions/tunctl")).unwrap();
    assert!(bash.contains("--multi-queue"), "{bash}");
    let uml_net = p.join("bin/uml_net");
    assert!(
        said.contains(&format!("chmod 4754 {}", uml_net.display())),
        "the privilege command is not shown:\n{said}"
    );
    assert!(said.contains("UML_PORT_HELPER="), "{said}");
}
