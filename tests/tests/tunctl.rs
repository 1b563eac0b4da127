//! tunctl in a network namespace of the test's own, against the C tool.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::process::{Command, Output};

use uml_testbed::{NetNamespace, host_program, our_tool};

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn root_tunctl_output_and_devices_equal_the_c_tools() {
    let ns = NetNamespace::new("tunctl-diff");
    let c = host_program("tunctl", "uml-utilities");
    let ours = our_tool("tunctl");
    for args in [
        &["-u", "1000", "-t", "tapt"][..],
        &["-u", "1000", "-g", "100", "-t", "tapt"][..],
        &["-g", "100", "-t", "tapt"][..],
        &["-t", "tapt"][..],
        &["-b", "-u", "nobody", "-t", "tapt"][..],
    ] {
        let c_out = ns.run(&c, args);
        let c_state = ["owner", "group", "tun_flags"].map(|f| ns.sysfs("tapt", f));
        assert!(c_out.status.success(), "{args:?}: {c_out:?}");
        assert!(ns.run(&c, &["-d", "tapt"]).status.success());
        let our_out = ns.run(&ours, args);
        assert_eq!(text(&our_out), text(&c_out), "{args:?}");
        assert_eq!(our_out.status.code(), c_out.status.code(), "{args:?}");
        let our_state = ["owner", "group", "tun_flags"].map(|f| ns.sysfs("tapt", f));
        assert_eq!(our_state, c_state, "{args:?}: owner, group, flags");
        let deleted = ns.run(&ours, &["-d", "tapt"]);
        assert_eq!(text(&deleted), "Set 'tapt' nonpersistent\n");
        assert!(ns.sysfs("tapt", "tun_flags").is_empty(), "tapt survived -d");
    }
    // A kernel-chosen name is printed as chosen.
    let brief = ns.run(&ours, &["-b", "-t", "tap%d"]);
    assert!(
        text(&brief).starts_with("tap") && !text(&brief).contains('%'),
        "{brief:?}"
    );
    // Deleting what does not exist: the C tool's stdout and status, plus a note.
    let missing = ns.run(&ours, &["-d", "nosuch0"]);
    let c_missing = ns.run(&c, &["-d", "nosuch0"]);
    assert_eq!(text(&missing), text(&c_missing));
    assert_eq!(missing.status.code(), c_missing.status.code());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("did not exist"));
    // Bad owners and usage errors: the C tool's lines (naming the program as
    // started) and status, so scripts matching on them keep working.
    let errors = |out: &Output, program: &std::path::Path| {
        String::from_utf8_lossy(&out.stderr).replace(program.to_str().unwrap(), "PROG")
    };
    for args in [
        &["-u", "no-such-user-here", "-t", "x"][..],
        &["-z"][..],
        &["-b", "-x"][..],
        &["-u"][..],
        &["-t"][..],
        &["-d"][..],
        &["stray"][..],
    ] {
        let (our_out, c_out) = (ns.run(&ours, args), ns.run(&c, args));
        assert_eq!(our_out.status.code(), c_out.status.code(), "{args:?}");
        assert_eq!(text(&our_out), text(&c_out), "{args:?}");
        assert_eq!(errors(&our_out, &ours), errors(&c_out, &c), "{args:?}");
    }
    // A clone device that cannot be opened: the C line first, then ours may add.
    let (our_out, c_out) = (
        ns.run(&ours, &["-t", "x", "-f", "/nonexistent"]),
        ns.run(&c, &["-t", "x", "-f", "/nonexistent"]),
    );
    assert_eq!(our_out.status.code(), c_out.status.code());
    let c_line = errors(&c_out, &c);
    assert!(
        errors(&our_out, &ours).starts_with(c_line.trim_end()),
        "{our_out:?} vs {c_out:?}"
    );
}

#[test]
fn root_tunctl_new_options_and_list() {
    let ns = NetNamespace::new("tunctl-new");
    let ours = our_tool("tunctl");
    let made = ns.run(
        &ours,
        &[
            "-n",
            "--multi-queue",
            "--mtu",
            "9000",
            "-u",
            "1000",
            "-t",
            "tunq",
        ],
    );
    assert!(made.status.success(), "{made:?}");
    assert_eq!(ns.sysfs("tunq", "mtu"), "9000");
    let flags =
        u32::from_str_radix(ns.sysfs("tunq", "tun_flags").trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0001, 0x0001, "not a TUN device");
    assert_eq!(flags & 0x0100, 0x0100, "not multi-queue");
    assert!(ns.run(&ours, &["-t", "tapl", "-g", "100"]).status.success());
    let listed = text(&ns.run(&ours, &["--list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("tunq") && l.contains("tun") && l.contains("multi_queue")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("tapl") && l.contains("100")),
        "{listed}"
    );
    let json = text(&ns.run(&ours, &["--list", "--json"]));
    let tunq = json
        .lines()
        .find(|l| l.contains("\"name\":\"tunq\""))
        .unwrap();
    assert!(
        tunq.contains("\"kind\":\"tun\"")
            && tunq.contains("\"owner\":1000")
            && tunq.contains("\"persistent\":true"),
        "{tunq}"
    );
    assert!(ns.run(&ours, &["-d", "tunq"]).status.success());
    assert!(ns.sysfs("tunq", "tun_flags").is_empty(), "tunq survived -d");
}

#[test]
fn root_real_kernel_guest_running_as_the_owner_uses_its_tap() {
    let ns = NetNamespace::new("tunctl-uml");
    let ours = our_tool("tunctl");
    // nobody (65534) owns the tap; the guest runs as nobody, without privileges.
    let made = ns.run(&ours, &["-u", "65534", "-t", "tapu"]);
    assert_eq!(
        text(&made),
        "Set 'tapu' persistent and owned by uid 65534\n",
        "{made:?}"
    );
    ns.ip(&["addr", "add", "10.99.9.1/24", "dev", "tapu"]);
    ns.ip(&["link", "set", "tapu", "up"]);
    // This machine's /dev/net/tun is root-only (0600; distributions ship 0666).
    // The guest gets a 0666 node of its own, bound over it in a private mount
    // namespace, so nothing changes on the host.
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("tun");
    let made_node = Command::new("mknod")
        .arg(&node)
        .args(["c", "10", "200"])
        .status()
        .unwrap();
    assert!(made_node.success());
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let bind = format!(
        "mount --bind {} /dev/net/tun && exec \"$@\"",
        node.display()
    );
    let mut uml = uml_testbed::UmlBuilder::new(
        "ip link set eth0 up\nip addr add 10.99.9.2/24 dev eth0\n\
         n=0; until ping -c 1 -W 1 10.99.9.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 30 ] && break; done\n\
         ping -c 5 -i 0.2 -W 2 10.99.9.1 | tail -2\necho PING-DONE\nsleep 600",
    )
    .arg("eth0=tuntap,tapu")
    .launcher(&["unshare", "--mount", "--propagation", "private", "sh", "-c", &bind, "sh"])
    .netns(ns.name())
    .user(65534, 65534)
    .start();
    uml.wait_for_console("PING-DONE", std::time::Duration::from_secs(60));
    let console = uml.console();
    assert!(
        console.contains("5 packets received, 0% packet loss"),
        "{console}"
    );
    // The host end answers too, and sees the guest.
    let ping = ns.run(
        &host_program("busybox", "busybox-static"),
        &["ping", "-c", "3", "-W", "2", "10.99.9.2"],
    );
    assert!(ping.status.success(), "{ping:?}");
}
