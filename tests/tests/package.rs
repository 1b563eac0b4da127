//! The Debian package of `cargo xtask dist`, installed into this machine as a
//! user would: it replaces Debian's `uml-utilities`, its tools work (a guest
//! pings another through the installed switch, socket-activated as
//! `uml-switch.socket` would start it), its units and generator pass
//! `systemd-analyze verify`, and removing it leaves nothing it made. Debian's
//! `uml-utilities` is put back afterwards, whatever happens, for the tests
//! that use the C tools as their reference.
//!
//! One test, alone in its binary: while it runs, `/usr/bin` holds our tools.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use uml_testbed::{
    ChildLog, NetNamespace, Uml, UmlBuilder, host_program, pid_of, wait_until, xtask,
};

const PACKAGE: &str = "uml-utilities-rs";
const DEBIAN: &str = "uml-utilities";
const WAIT: Duration = Duration::from_secs(120);

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

/// Every program, where the package puts it, and its man section.
const TOOLS: &[(&str, &str, &str)] = &[
    ("uml_switch", "/usr/bin", "1"),
    ("uml_switchctl", "/usr/bin", "1"),
    ("uml_mconsole", "/usr/bin", "1"),
    ("uml_mkcow", "/usr/bin", "1"),
    ("uml_moo", "/usr/bin", "1"),
    ("tunctl", "/usr/bin", "8"),
    ("uml_net", "/usr/bin", "8"),
    ("uml_watchdog", "/usr/bin", "8"),
    ("port-helper", "/usr/lib/uml", "8"),
];

/// The Debian package a program of this test comes from, for the message
/// when it is missing.
fn package_of(program: &str) -> &'static str {
    match program {
        "lintian" => "lintian",
        "systemd-analyze" => "systemd",
        "apt-get" => "apt",
        "deluser" | "delgroup" => "adduser",
        "getent" => "libc-bin",
        "id" => "coreutils",
        _ => "dpkg",
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(host_program(program, package_of(program)))
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap()
}

fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dpkg-query`'s status of a package ("install ok installed", "deinstall ok
/// config-files", or empty when dpkg does not know it).
fn status(package: &str) -> String {
    let out = run("dpkg-query", &["-W", "-f=${Status}", package]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn installed(package: &str) -> bool {
    status(package) == "install ok installed"
}

fn account_exists(db: &str, name: &str) -> bool {
    Command::new("getent")
        .args([db, name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Puts the machine back as it was: our package purged, Debian's reinstalled
/// if it was there (its maintainer scripts recreate the uml-net accounts).
struct Restore {
    debian_was_installed: bool,
}

impl Restore {
    fn now(&self) {
        let _ = run("dpkg", &["--purge", PACKAGE]);
        if self.debian_was_installed && !installed(DEBIAN) {
            let out = run(
                "apt-get",
                &["install", "-y", "-q", "--no-install-recommends", DEBIAN],
            );
            if !out.status.success() {
                eprintln!(
                    "could not reinstall {DEBIAN}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.now();
    }
}

/// The package's files, from `dpkg-deb -c` (directories left out).
fn files_of(deb: &Path) -> Vec<PathBuf> {
    must("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect()
}

const CONFFILES: &[&str] = &[
    "/etc/default/uml-utilities",
    "/etc/network/if-pre-up.d/uml-utilities",
];

/// Files this package makes outside its own list: enablement and state.
const STATE: &[&str] = &[
    "/var/lib/uml-utilities-rs",
    "/etc/systemd/system/sockets.target.wants/uml-switch.socket",
    "/var/lib/systemd/deb-systemd-helper-enabled/uml-switch.socket.dsh-also",
];

#[test]
fn root_real_kernel_the_deb_replaces_uml_utilities_serves_guests_and_removes_cleanly() {
    let out_dir = tempfile::tempdir().unwrap();
    let built = xtask(&["dist", "--out", out_dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo xtask dist failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    assert!(deb.is_file(), "no package at {}", deb.display());
    let deb_arg = deb.to_str().unwrap();

    // lintian: no errors, and no warnings (its informational tags are listed,
    // with reasons, in xtask/README.md).
    let lint = run("lintian", &["--tag-display-limit", "0", deb_arg]);
    let lint_text = String::from_utf8_lossy(&lint.stdout).into_owned();
    assert!(lint.status.success(), "lintian failed:\n{lint_text}");
    assert!(
        !lint_text
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian:\n{lint_text}"
    );

    let restore = Restore {
        debian_was_installed: installed(DEBIAN),
    };

    // 1. Over Debian's package: dpkg replaces it, and takes none of its accounts.
    if restore.debian_was_installed {
        must("dpkg", &["-i", deb_arg]);
        assert!(installed(PACKAGE));
        assert!(!installed(DEBIAN), "{DEBIAN} is still installed");
        let version = must("/usr/bin/uml_switch", &["--version"]);
        assert!(version.starts_with("uml_switch "), "{version}");
        let created =
            std::fs::read_to_string("/var/lib/uml-utilities-rs/created").unwrap_or_default();
        assert!(
            !created.contains("user") && !created.contains("group"),
            "the package claims accounts Debian's made: {created}"
        );
        must("dpkg", &["--purge", PACKAGE]);
        assert!(account_exists("passwd", "uml-net") && account_exists("group", "uml-net"));
        // As on a machine that never had uml-utilities: the accounts go too,
        // so that ours are created and removed by the package itself.
        must("dpkg", &["--purge", DEBIAN]);
        if account_exists("passwd", "uml-net") {
            must("deluser", &["--quiet", "--system", "uml-net"]);
        }
        if account_exists("group", "uml-net") {
            must("delgroup", &["--quiet", "--system", "uml-net"]);
        }
    }
    let accounts_before = account_exists("passwd", "uml-net") || account_exists("group", "uml-net");

    // 2. A fresh install.
    must("dpkg", &["-i", deb_arg]);
    assert!(account_exists("passwd", "uml-net") && account_exists("group", "uml-net"));
    for (name, dir, section) in TOOLS {
        let path = format!("{dir}/{name}");
        let version = must(&path, &["--version"]);
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{path} --version"
        );
        for doc in [
            format!("/usr/share/man/man{section}/{name}.{section}.gz"),
            format!("/usr/share/bash-completion/completions/{name}"),
            format!("/usr/share/zsh/vendor-completions/_{name}"),
            format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
        ] {
            assert!(Path::new(&doc).is_file(), "{doc} is missing");
        }
    }
    // uml_net as Debian installs it: setuid root, run by group uml-net only.
    let meta = std::fs::metadata("/usr/bin/uml_net").unwrap();
    let gid = must("getent", &["group", "uml-net"])
        .split(':')
        .nth(2)
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4754);
    assert_eq!((meta.uid(), meta.gid()), (0, gid));
    let man = Command::new("man")
        .args(["-w", "uml_switch"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // `man` itself is optional on a CI machine; when it is there it finds the page.
    assert!(
        man.is_empty() || man.contains("/usr/share/man/man1/uml_switch.1.gz"),
        "{man}"
    );

    // Enabled, as the old init script started the switch (a link even
    // without systemd running, which removal must take away).
    assert!(
        std::fs::symlink_metadata(STATE[1]).is_ok(),
        "uml-switch.socket is not enabled"
    );
    verify_units();
    generator_follows_etc_default();
    ifupdown_hook_makes_the_tap();
    socket_activated_switch_serves_guests();

    // 3. Removal leaves configuration only; purge takes that too.
    must("dpkg", &["-r", PACKAGE]);
    for file in files_of(&deb) {
        let conffile = CONFFILES.iter().any(|c| Path::new(c) == file);
        assert_eq!(
            file.exists(),
            conffile,
            "{} after dpkg -r (a conffile stays until purge)",
            file.display()
        );
    }
    for state in STATE {
        assert!(!Path::new(state).exists(), "{state} left after dpkg -r");
    }
    // dpkg-statoverride --list exits 1 when it lists nothing.
    let overrides = run("dpkg-statoverride", &["--list"]);
    assert!(!String::from_utf8_lossy(&overrides.stdout).contains("/usr/bin/uml_net"));
    if !accounts_before {
        assert!(
            !account_exists("passwd", "uml-net"),
            "user uml-net left behind"
        );
        assert!(
            !account_exists("group", "uml-net"),
            "group uml-net left behind"
        );
    }
    must("dpkg", &["--purge", PACKAGE]);
    for conffile in CONFFILES {
        assert!(!Path::new(conffile).exists(), "{conffile} left after purge");
    }
    assert_eq!(status(PACKAGE), "", "dpkg still knows {PACKAGE}");

    // 4. Debian's package is back for the other tests.
    restore.now();
    if restore.debian_was_installed {
        assert!(installed(DEBIAN), "{DEBIAN} was not reinstalled");
        assert!(account_exists("passwd", "uml-net"));
        assert!(must("dpkg-query", &["-S", "/usr/bin/uml_switch"]).starts_with(DEBIAN));
    }
}

/// The installed units, as shipped and with the generator's drop-ins, pass
/// `systemd-analyze verify` without a complaint.
fn verify_units() {
    let units = [
        "/lib/systemd/system/uml-switch.socket",
        "/lib/systemd/system/uml-switch.service",
        "/lib/systemd/system/uml-switch-mgmt.socket",
    ];
    let out = run("systemd-analyze", &["verify", units[0], units[1], units[2]]);
    let complaints = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "systemd-analyze verify: {complaints}");
    assert!(
        !complaints.contains("uml-switch"),
        "systemd-analyze verify: {complaints}"
    );
}

/// `/etc/default/uml-utilities` becomes drop-ins: the control path, a BESS
/// socket, the user, CAP_NET_ADMIN for `-tap`, a management socket;
/// `UML_SWITCH_START=false` masks.
fn generator_follows_etc_default() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    for unit in [
        "uml-switch.socket",
        "uml-switch.service",
        "uml-switch-mgmt.socket",
    ] {
        std::fs::copy(
            Path::new("/lib/systemd/system").join(unit),
            units.join(unit),
        )
        .unwrap();
    }
    let defaults = dir.path().join("defaults");
    std::fs::write(
        &defaults,
        "UML_SWITCH_CTL=/run/uml-test/sw.ctl\nUML_SWITCH_BESS=/run/uml-test/sw.bess\n\
         UML_SWITCH_OPTIONS=\"-hub -tap tap0\"\nUML_SWITCH_USER=uml-net\n\
         UML_SWITCH_MGMT=/run/uml-test/sw.mgmt\n",
    )
    .unwrap();
    let generator = "/lib/systemd/system-generators/uml-utilities-generator";
    let gen_out = Command::new(generator)
        .args([&units, &units, &units])
        .env("UML_UTILITIES_DEFAULTS", &defaults)
        .output()
        .unwrap();
    assert!(gen_out.status.success(), "{gen_out:?}");
    let socket =
        std::fs::read_to_string(units.join("uml-switch.socket.d/50-etc-default.conf")).unwrap();
    let service =
        std::fs::read_to_string(units.join("uml-switch.service.d/50-etc-default.conf")).unwrap();
    for line in [
        "ListenStream=\n",
        "ListenStream=/run/uml-test/sw.ctl\n",
        "ListenSequentialPacket=/run/uml-test/sw.bess\n",
        "SocketUser=uml-net\n",
    ] {
        assert!(socket.contains(line), "{line} missing from:\n{socket}");
    }
    for line in [
        "User=uml-net\n",
        "CapabilityBoundingSet=CAP_NET_ADMIN\n",
        "Sockets=uml-switch-mgmt.socket\n",
    ] {
        assert!(service.contains(line), "{line} missing from:\n{service}");
    }
    let mgmt = std::fs::read_to_string(units.join("uml-switch-mgmt.socket.d/50-etc-default.conf"))
        .unwrap();
    for line in ["ListenStream=\n", "ListenStream=/run/uml-test/sw.mgmt\n"] {
        assert!(mgmt.contains(line), "{line} missing from:\n{mgmt}");
    }
    assert_eq!(
        std::fs::read_link(units.join("sockets.target.wants/uml-switch-mgmt.socket")).unwrap(),
        Path::new("/lib/systemd/system/uml-switch-mgmt.socket")
    );
    let verify = Command::new(host_program("systemd-analyze", "systemd"))
        .arg("verify")
        .args([
            units.join("uml-switch.socket"),
            units.join("uml-switch.service"),
            units.join("uml-switch-mgmt.socket"),
        ])
        // The generator's directory is searched for drop-ins, as systemd does.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(
        verify.status.success() && !complaints.contains("uml-switch"),
        "{complaints}"
    );

    let masked = dir.path().join("masked");
    std::fs::create_dir(&masked).unwrap();
    std::fs::write(&defaults, "UML_SWITCH_START=false\n").unwrap();
    let gen_out = Command::new(generator)
        .args([&masked, &masked, &masked])
        .env("UML_UTILITIES_DEFAULTS", &defaults)
        .output()
        .unwrap();
    assert!(gen_out.status.success(), "{gen_out:?}");
    for unit in [
        "uml-switch.socket",
        "uml-switch.service",
        "uml-switch-mgmt.socket",
    ] {
        assert_eq!(
            std::fs::read_link(masked.join(unit)).unwrap(),
            Path::new("/dev/null")
        );
    }
}

/// The ifupdown hook makes a `tunctl_user` stanza's tap, owned by that user
/// (inside a network namespace of the test's own).
fn ifupdown_hook_makes_the_tap() {
    let ns = NetNamespace::new("pkg-ifup");
    let out = ns
        .command(Path::new("/etc/network/if-pre-up.d/uml-utilities"))
        .env("IFACE", "tap-pkg")
        .env("IF_TUNCTL_USER", "uml-net")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let uid = must("id", &["-u", "uml-net"]);
    assert_eq!(ns.sysfs("tap-pkg", "owner"), uid.trim());
    // Without tunctl_user the hook leaves the interface alone.
    let out = ns
        .command(Path::new("/etc/network/if-pre-up.d/uml-utilities"))
        .env("IFACE", "tap-other")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ns.sysfs("tap-other", "owner"), "");
}

/// The guest side: configured by kernel command-line variables.
const GUEST: &str = r#"ip link set "$IF" up
ip addr add "$IP/24" dev "$IF"
echo GUEST-READY
if [ -n "$PEER" ]; then
  n=0
  until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
  ping -c 5 -i 0.2 -W 2 "$PEER" | tail -2
  echo PING-DONE
fi
while true; do sleep 1; done"#;

fn guest(nic: String, vars: &[&str]) -> Uml {
    let mut builder = UmlBuilder::new(GUEST).arg(nic);
    for var in vars {
        builder = builder.arg(*var);
    }
    builder.start()
}

/// The installed switch, socket-activated by `systemd-socket-activate` as
/// `uml-switch.socket` and `uml-switch-mgmt.socket` would start it (control,
/// management and BESS sockets passed by name, run as uml-net with no
/// capabilities), serves a daemon guest and a BESS guest that ping each
/// other, shows both in `uml_switchctl MGMT ports`, tells `NOTIFY_SOCKET` it
/// is ready, and ends cleanly on SIGTERM, leaving the passed sockets' files
/// to their owner.
fn socket_activated_switch_serves_guests() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let bess = dir.path().join("bess");
    let mgmt = dir.path().join("mgmt");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // The switch runs as uml-net, and systemd's notify socket is open to all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let activate = host_program("systemd-socket-activate", "systemd");
    let mut switch = Running(
        Command::new(&activate)
            .arg("-l")
            .arg(&ctl)
            .arg("-l")
            .arg(&mgmt)
            // The names the units give (FileDescriptorName=).
            .arg("--fdname=control:mgmt")
            .arg("--")
            .arg(&activate)
            // The activators pass on only the environment they are told to.
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
            .arg("--seqpacket")
            .arg("-l")
            .arg(&bess)
            // This activator names the sockets it inherits too.
            .arg("--fdname=control:mgmt:bess")
            .arg("--")
            .arg(host_program("setpriv", "util-linux"))
            .args([
                "--reuid=uml-net",
                "--regid=uml-net",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "/usr/bin/uml_switch",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = ChildLog::collect(&mut switch.0);
    let log_text = || log.text();
    wait_until(Instant::now() + WAIT, "the control socket", || ctl.exists());
    // A connection on the control socket starts the second activator, which
    // opens the BESS socket; a connection there starts the switch.
    let mut target = guest(
        format!("eth0=daemon,02:00:00:00:41:01,unix,{}", ctl.display()),
        &["IF=eth0", "IP=10.99.41.1"],
    );
    wait_until(Instant::now() + WAIT, "the BESS socket", || bess.exists());
    let mut pinger = guest(
        format!(
            "vec0:transport=bess,dst={},mac=02:00:00:00:41:02",
            bess.display()
        ),
        &["IF=vec0", "IP=10.99.41.2", "PEER=10.99.41.1"],
    );
    target.wait_for_console("GUEST-READY", WAIT);
    pinger.wait_for_console("PING-DONE", WAIT);
    let console = pinger.console();
    assert!(
        console.contains("5 packets received, 0% packet loss"),
        "{console}\nswitch:\n{}",
        log_text()
    );
    let log_now = log_text();
    assert!(
        log_now.contains(&format!(
            "attached to unix socket '{}' bess socket '{}'",
            ctl.display(),
            bess.display()
        )),
        "{log_now}"
    );
    assert!(
        log_now.contains(&format!("management socket '{}'", mgmt.display())),
        "{log_now}"
    );
    // The installed client, through the passed management socket: both
    // guests' ports, with the MACs the switch learned from their pings.
    let ports = Command::new("/usr/bin/uml_switchctl")
        .arg(&mgmt)
        .arg("ports")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ports.stdout).into_owned();
    assert!(
        ports.status.success(),
        "{table}{}\nswitch:\n{}",
        String::from_utf8_lossy(&ports.stderr),
        log_text()
    );
    for needle in ["daemon:", "bess:", "02:00:00:00:41:01", "02:00:00:00:41:02"] {
        assert!(table.contains(needle), "{needle} not in:\n{table}");
    }
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no readiness notification ({e}); switch:\n{}", log_text()));
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The activators exec'd: the child's PID is the switch's.
    kill(pid_of(&switch.0), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + WAIT;
    wait_until(deadline, "the switch to exit", || {
        switch.0.try_wait().unwrap().is_some()
    });
    let exit = switch.0.wait().unwrap();
    assert!(exit.success(), "{exit}\n{}", log_text());
    assert!(
        ctl.exists() && bess.exists() && mgmt.exists(),
        "the switch removed a socket file it was passed"
    );
    drop(pinger);
    drop(target);
}
