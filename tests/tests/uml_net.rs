//! uml_net as the kernel and unprivileged users meet it: a setuid-root copy of
//! our helper first in PATH, a policy in /etc/uml-utilities seen only inside a
//! private mount namespace (an overlay over /etc), callers made with setpriv,
//! all inside a network namespace of the test's own.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use uml_host::fd::recv_with_fd;
use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_proto::net_helper::{TapAnswer, TextFrame};
use uml_testbed::{NetNamespace, UmlBuilder, host_program, our_tool, wait_until};
use zerocopy::IntoBytes;

const NOBODY: u32 = 65534;

/// A setuid-root copy of our uml_net in a directory anyone may search, and
/// the policy file to show it.
struct Helper {
    dir: tempfile::TempDir,
    policy_mode: &'static str,
    tun_mode: Option<&'static str>,
    /// Shell commands run in the helper's mount namespace once the policy is
    /// in place (for example to loosen its directory).
    etc_script: String,
    /// Shell commands run inside the network namespace just before the
    /// caller's identity is taken.
    netns_script: Option<String>,
}

impl Helper {
    fn new(policy: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("uml-net-test-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::set_permissions(&bin, PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::copy(our_tool("uml_net"), bin.join("uml_net")).unwrap();
        std::fs::set_permissions(bin.join("uml_net"), PermissionsExt::from_mode(0o4755)).unwrap();
        std::fs::create_dir(dir.path().join("overlay")).unwrap();
        if let Some(policy) = policy {
            std::fs::write(dir.path().join("policy"), policy).unwrap();
        }
        Self {
            dir,
            policy_mode: "644",
            tun_mode: None,
            etc_script: String::new(),
            netns_script: None,
        }
    }

    /// Installs the helper with file capabilities (cap_net_admin+ep) instead
    /// of setuid root, and shows it a /dev/net/tun of `tun_mode`.
    fn with_file_capabilities(mut self, tun_mode: &'static str) -> Self {
        let binary = self.binary();
        std::fs::set_permissions(&binary, PermissionsExt::from_mode(0o755)).unwrap();
        let setcap = Command::new(host_program("setcap", "libcap2-bin"))
            .arg("cap_net_admin+ep")
            .arg(&binary)
            .output()
            .unwrap();
        assert!(setcap.status.success(), "{setcap:?}");
        self.tun_mode = Some(tun_mode);
        self
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("bin/uml_net")
    }

    /// PATH with our helper first.
    fn path(&self) -> OsString {
        let mut path = OsString::from(self.dir.path().join("bin"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }

    /// The words that start a command in a private mount namespace where
    /// /etc is an overlay holding our policy; the host's /etc is untouched.
    fn launcher(&self) -> Vec<String> {
        let d = self.dir.path().display();
        let mut script = format!(
            "set -e; mount -t tmpfs none {d}/overlay; mkdir {d}/overlay/u {d}/overlay/w; \
             mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/overlay/u,workdir={d}/overlay/w /etc; \
             rm -f /etc/uml-utilities/uml_net.conf; "
        );
        if self.dir.path().join("policy").exists() {
            script.push_str(&format!(
                "mkdir -p /etc/uml-utilities; cp {d}/policy /etc/uml-utilities/uml_net.conf; \
                 chmod {} /etc/uml-utilities/uml_net.conf; ",
                self.policy_mode
            ));
        }
        script.push_str(&self.etc_script);
        if let Some(mode) = self.tun_mode {
            // A clone device of our own over the host's, seen only in here.
            script.push_str(&format!(
                "mknod {d}/overlay/tun c 10 200; chmod {mode} {d}/overlay/tun; \
                 mount --bind {d}/overlay/tun /dev/net/tun; "
            ));
        }
        script.push_str("exec \"$@\"");
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `uml_net ARGS` as `who` inside `ns`, with fd 1 = `stdout`.
    fn run_as(
        &self,
        ns: &NetNamespace,
        who: impl Into<Who>,
        args: &[&str],
        stdout: Stdio,
    ) -> Output {
        let launcher = self.launcher();
        let mut cmd = Command::new(&launcher[0]);
        cmd.args(&launcher[1..])
            .arg(host_program("ip", "iproute2"))
            .args(["netns", "exec", ns.name()]);
        if let Some(script) = &self.netns_script {
            cmd.args(["sh", "-c", &format!("set -e; {script}; exec \"$@\""), "sh"]);
        }
        cmd.arg(host_program("setpriv", "util-linux"))
            .args(who.into().setpriv_args())
            // setpriv holds every capability through its own exec: a shell
            // run by it holds none, so the kernel checks the helper's mode.
            .args(["sh", "-c", "exec \"$0\" \"$@\""])
            .arg(self.binary())
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped());
        cmd.output().unwrap()
    }

    /// `add`/`del` as `who`: exit status and the framed text.
    fn route(
        &self,
        ns: &NetNamespace,
        who: impl Into<Who>,
        args: &[&str],
    ) -> (Option<i32>, String) {
        let out = self.run_as(ns, who, args, Stdio::piped());
        let text = match TextFrame::parse(&out.stdout) {
            Ok((frame, used)) => {
                assert_eq!(used, out.stdout.len(), "one frame only: {out:?}");
                String::from_utf8_lossy(frame.text).into_owned()
            }
            Err(e) => panic!("{args:?}: unframed answer ({e}): {out:?}"),
        };
        (out.status.code(), text)
    }

    /// `tuntap up [GATE]` as `who`, fd 1 a datagram socket as the kernel
    /// makes it: exit status, the datagram, and the fd that came with it.
    fn tap_up(
        &self,
        ns: &NetNamespace,
        who: impl Into<Who>,
        args: &[&str],
    ) -> (Option<i32>, Vec<u8>, Option<OwnedFd>) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let out = self.run_as(ns, who, args, Stdio::from(OwnedFd::from(theirs)));
        let mut buf = vec![0u8; 4096];
        let (len, fd) = recv_with_fd(&ours, &mut buf)
            .unwrap_or_else(|e| panic!("no answer datagram ({e}): {out:?}"));
        (out.status.code(), buf[..len].to_vec(), fd)
    }

    /// Installs the helper as Debian installs the C one: owner root, group
    /// `gid`, `mode` (4754: setuid, runnable by that group only).
    fn installed_as(self, gid: u32, mode: u32) -> Self {
        let binary = self.binary();
        std::os::unix::fs::chown(&binary, Some(0), Some(gid)).unwrap();
        // chown clears the setuid bit, so the mode comes after.
        std::fs::set_permissions(&binary, PermissionsExt::from_mode(mode)).unwrap();
        self
    }
}

/// Who runs the helper: real uid and gid, and supplementary groups.
#[derive(Clone, Debug)]
struct Who {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl From<u32> for Who {
    /// `uid` with the same number as gid and no supplementary groups.
    fn from(uid: u32) -> Self {
        Self {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }
}

impl From<&Who> for Who {
    fn from(who: &Who) -> Self {
        who.clone()
    }
}

impl Who {
    fn in_groups(uid: u32, groups: &[u32]) -> Self {
        Self {
            groups: groups.to_vec(),
            ..Self::from(uid)
        }
    }

    fn setpriv_args(&self) -> Vec<String> {
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            groups,
        ]
    }
}

/// Everything on the namespace's host side a request could change.
fn host_state(ns: &NetNamespace) -> String {
    let mut state = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"][..],
        &["route"][..],
        &["neigh", "show", "proxy"][..],
    ] {
        state.push_str(&ns.show(args));
    }
    let sysctls = ns.run(
        Path::new("sh"),
        &[
            "-c",
            "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/proxy_arp",
        ],
    );
    state.push_str(&String::from_utf8_lossy(&sysctls.stdout));
    state
}

/// A `/proc/sys/net/` switch inside `ns`, trimmed.
fn sysctl(ns: &NetNamespace, path: &str) -> String {
    let out = ns.run(Path::new("cat"), &[&format!("/proc/sys/net/{path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn make_tap(ns: &NetNamespace, name: &str, owner: u32) {
    let made = ns.run(&our_tool("tunctl"), &["-u", &owner.to_string(), "-t", name]);
    assert!(made.status.success(), "{made:?}");
    ns.ip(&["link", "set", name, "up"]);
}

#[test]
fn root_real_kernel_guest_gets_a_working_link_from_uml_net() {
    let ns = NetNamespace::new("umlnet-boot");
    let helper = Helper::new(Some(
        "allow user nobody 10.99.11.0/24\nallow user nobody forward\n",
    ));
    let launcher = helper.launcher();
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    // The guest adds its address (uml_net add), pings the host end, then adds
    // and removes a second address (add, del) and tries one the policy forbids.
    let mut uml = UmlBuilder::new(
        "ip link set eth0 up\nip addr add 10.99.11.2/24 dev eth0\n\
         n=0; until ping -c 1 -W 1 10.99.11.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 30 ] && break; done\n\
         ping -c 5 -i 0.2 -W 2 10.99.11.1 | tail -2\necho PING-DONE\n\
         ip addr add 10.99.11.3/24 dev eth0\nip addr del 10.99.11.3/24 dev eth0\n\
         ip addr add 10.99.12.5/24 dev eth0\necho ADDRESSES-DONE\nsleep 600",
    )
    .arg("eth0=tuntap,,,10.99.11.1")
    .launcher(&launcher)
    .netns(ns.name())
    .user(NOBODY, NOBODY)
    .env("PATH", helper.path())
    .start();
    uml.wait_for_console("PING-DONE", Duration::from_secs(60));
    let console = uml.console();
    assert!(
        console.contains("5 packets received, 0% packet loss"),
        "{console}"
    );
    // The kernel printed our tap answer; the tap is the guest user's.
    assert!(
        console.contains("* ip address add 10.99.11.1/32 dev tap0"),
        "{console}"
    );
    assert_eq!(ns.sysfs("tap0", "owner"), NOBODY.to_string());
    // `add` made the host route, so the host reaches the guest.
    let routes = ns.show(&["route"]);
    assert!(routes.contains("10.99.11.2 dev tap0"), "{routes}");
    let ping = ns.run(
        &host_program("busybox", "busybox-static"),
        &["ping", "-c", "3", "-W", "2", "10.99.11.2"],
    );
    assert!(ping.status.success(), "{ping:?}");
    uml.wait_for_console("ADDRESSES-DONE", Duration::from_secs(30));
    // The helper runs per address change; the last one's denial ends the series.
    wait_until(
        Instant::now() + Duration::from_secs(5),
        "the helper's denial of 10.99.12.5",
        || uml.console().contains("may not use 10.99.12.5"),
    );
    let routes = ns.show(&["route"]);
    let console = uml.console();
    assert!(
        console.contains("* ip route del 10.99.11.3/32 dev tap0"),
        "{console}"
    );
    assert!(
        !routes.contains("10.99.11.3"),
        "del left the route: {routes}"
    );
    assert!(
        console.contains("denied: uid 65534 may not use 10.99.12.5 as a guest address"),
        "{console}"
    );
    assert!(
        !routes.contains("10.99.12.5"),
        "a denied add routed: {routes}"
    );
    assert!(routes.contains("10.99.11.2 dev tap0"), "{routes}");
}

#[test]
fn root_uml_net_denials_change_nothing_on_the_host() {
    let ns = NetNamespace::new("umlnet-deny");
    let helper = Helper::new(Some(
        "# the lab's policy\nallow user nobody 10.99.13.0/24\nallow user nobody proxy-arp\n",
    ));
    make_tap(&ns, "tapn", NOBODY);
    make_tap(&ns, "tapo", 1000);
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.99.13.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    // Another user's guest already has this address.
    ns.ip(&["route", "add", "10.99.13.7/32", "dev", "tapo"]);
    let before = host_state(&ns);
    let denied: &[(u32, &[&str], &str)] = &[
        // An address outside the policy.
        (
            NOBODY,
            &["4", "add", "tapn", "10.99.14.5", "255.255.255.0"],
            "denied: uid 65534 may not use 10.99.14.5 as a guest address: no line of /etc/uml-utilities/uml_net.conf allows it",
        ),
        // Another user's tap, and an interface that is no tap at all.
        (
            NOBODY,
            &["4", "add", "tapo", "10.99.13.5", "255.255.255.0"],
            "denied: 'tapo' belongs to uid 1000, not to uid 65534",
        ),
        (
            NOBODY,
            &["4", "add", "lan0", "10.99.13.5", "255.255.255.0"],
            "denied: 'lan0' is not a TUN/TAP device",
        ),
        (
            NOBODY,
            &["4", "del", "lan0", "10.99.13.1", "255.255.255.0"],
            "denied: 'lan0' is not a TUN/TAP device",
        ),
        (
            NOBODY,
            &["4", "add", "tapn", "10.99.13.7", "255.255.255.0"],
            "denied: 10.99.13.7 is already routed through tapo",
        ),
        // Bad arguments.
        (
            NOBODY,
            &["4", "add", "tapn", "010.99.13.5", "255.255.255.0"],
            "ADDR '010.99.13.5' is not a dotted quad",
        ),
        (
            NOBODY,
            &["4", "add", "tap/../n", "10.99.13.5"],
            "is not 1 to 15 alphanumeric characters",
        ),
        (
            NOBODY,
            &["4", "add", "tapn", "10.99.13.5", "255.0.255.0"],
            "not a contiguous mask",
        ),
        (
            NOBODY,
            &["4", "add", "tapn", "10.99.13.5", "255.255.255.0", "extra"],
            "unexpected argument 'extra'",
        ),
        (
            NOBODY,
            &["4", "add", "nosuch0", "10.99.13.5"],
            "no network device 'nosuch0'",
        ),
        // A caller the policy does not name, on their own tap.
        (
            1000,
            &["4", "add", "tapo", "10.99.13.6", "255.255.255.0"],
            "denied: uid 1000 may not use 10.99.13.6",
        ),
    ];
    for (uid, args, expected) in denied {
        let (code, text) = helper.route(&ns, *uid, args);
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert_eq!(host_state(&ns), before, "{args:?} changed the host");
    }
    // tuntap up: a GATE outside the policy, or a caller without a line, gets
    // the error as the datagram's text and no fd; no tap is left.
    for (uid, gate, expected) in [
        (
            NOBODY,
            "10.99.14.1",
            "denied: uid 65534 may not use 10.99.14.1 as a tap's host address",
        ),
        (
            1000,
            "10.99.13.1",
            "denied: uid 1000 may not use 10.99.13.1",
        ),
        (
            NOBODY,
            "10.99.13.256",
            "GATE '10.99.13.256' is not a dotted quad",
        ),
    ] {
        let (code, datagram, fd) = helper.tap_up(&ns, uid, &["4", "tuntap", "up", gate]);
        assert_eq!(code, Some(1));
        assert!(fd.is_none(), "a denied tuntap up passed an fd");
        let text = String::from_utf8_lossy(&datagram);
        assert!(text.contains(expected), "{text}");
        assert!(datagram.ends_with(b"\n\0"), "{datagram:?}");
        assert_eq!(host_state(&ns), before, "tuntap up {gate} changed the host");
    }
    // What the policy allows does happen: the route, the tap's proxy ARP, and
    // the address published on the LAN that holds it; del takes it all back.
    let (code, text) = helper.route(
        &ns,
        NOBODY,
        &["4", "add", "tapn", "10.99.13.5", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text,
        "* ip route add 10.99.13.5/32 dev tapn\n\
         * sysctl -w net.ipv4.conf.tapn.proxy_arp=1\n\
         * ip neigh add proxy 10.99.13.5 dev lan0\n"
    );
    let proxies = ns.show(&["neigh", "show", "proxy"]);
    assert!(proxies.contains("10.99.13.5 dev lan0"), "{proxies}");
    let (code, text) = helper.route(
        &ns,
        NOBODY,
        &["4", "del", "tapn", "10.99.13.5", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(host_state(&ns), before, "del did not undo add: {text}");
}

#[test]
fn root_uml_net_makes_bare_taps_for_anyone_and_nothing_more_without_a_policy() {
    let ns = NetNamespace::new("umlnet-bare");
    let helper = Helper::new(None);
    let before = host_state(&ns);
    // No policy: a tap without an address, owned by the caller, is all.
    let (code, datagram, fd) = helper.tap_up(&ns, 1000, &["4", "tuntap", "up"]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
    let answer = TapAnswer::parse(&datagram).unwrap();
    let name = String::from_utf8_lossy(answer.ifname).into_owned();
    assert!(name.starts_with("tap"), "{name}");
    let fd = fd.expect("the tap's fd");
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    assert!(fdinfo.contains(&format!("iff:\t{name}")), "{fdinfo}");
    assert_eq!(ns.sysfs(&name, "owner"), "1000");
    // No address at all: none of IPv4, and IPv6 is off.
    let link = ns.show(&["-o", "addr", "show", "dev", &name]);
    assert!(!link.contains("inet"), "{link}");
    // The tap goes with its last fd.
    drop(fd);
    assert_eq!(host_state(&ns), before);
    let (code, datagram, fd) = helper.tap_up(&ns, 1000, &["4", "tuntap", "up", "10.99.15.1"]);
    assert_eq!((code, fd.is_none()), (Some(1), true));
    assert!(
        String::from_utf8_lossy(&datagram)
            .contains("no line of /etc/uml-utilities/uml_net.conf allows it")
    );
    assert_eq!(host_state(&ns), before);
}

#[test]
fn root_uml_net_ignores_a_policy_others_could_write() {
    let ns = NetNamespace::new("umlnet-unsafe");
    let mut helper = Helper::new(Some("allow everyone 0.0.0.0/0\nallow everyone forward\n"));
    helper.policy_mode = "666";
    make_tap(&ns, "tapw", NOBODY);
    let before = host_state(&ns);
    let (code, text) = helper.route(
        &ns,
        NOBODY,
        &["4", "add", "tapw", "10.99.16.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "/etc/uml-utilities/uml_net.conf is ignored: mode 666 lets others than root write it"
        ),
        "{text}"
    );
    assert_eq!(host_state(&ns), before);
    // The same file in a directory others could change is no better.
    for loosen in [
        "chmod 777 /etc/uml-utilities",
        "chown 65534 /etc/uml-utilities",
    ] {
        let mut helper = Helper::new(Some("allow everyone 0.0.0.0/0\nallow everyone forward\n"));
        helper.etc_script = format!("{loosen}; ");
        let (code, text) = helper.route(
            &ns,
            NOBODY,
            &["4", "add", "tapw", "10.99.16.2", "255.255.255.0"],
        );
        assert_eq!(code, Some(1), "{loosen}: {text}");
        assert!(
            text.contains(
                "/etc/uml-utilities/uml_net.conf is ignored: its directory /etc/uml-utilities"
            ),
            "{loosen}: {text}"
        );
        assert_eq!(host_state(&ns), before);
    }
}

#[test]
fn root_uml_net_with_file_capabilities_serves_its_caller() {
    let ns = NetNamespace::new("umlnet-caps");
    let policy = "allow user nobody 10.99.17.0/24\n";
    make_tap(&ns, "tapc", NOBODY);
    let before = host_state(&ns);
    // Never root: the caller's own uid opens the clone device.
    let closed = Helper::new(Some(policy)).with_file_capabilities("600");
    let (code, datagram, fd) = closed.tap_up(&ns, NOBODY, &["4", "tuntap", "up", "10.99.17.1"]);
    assert_eq!((code, fd.is_none()), (Some(1), true));
    let text = String::from_utf8_lossy(&datagram);
    assert!(
        text.contains("Permission denied")
            && text.contains("uml_net with file capabilities opens it as uid 65534"),
        "{text}"
    );
    let open = Helper::new(Some(policy)).with_file_capabilities("666");
    let (code, datagram, fd) = open.tap_up(&ns, NOBODY, &["4", "tuntap", "up", "10.99.17.1"]);
    let answer = TapAnswer::parse(&datagram).unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(answer.text));
    assert!(fd.is_some());
    assert!(
        String::from_utf8_lossy(answer.text).contains("* ip address add 10.99.17.1/32 dev tap")
    );
    drop(fd);
    let (code, text) = open.route(
        &ns,
        NOBODY,
        &["4", "add", "tapc", "10.99.17.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = open.route(
        &ns,
        NOBODY,
        &["4", "del", "tapc", "10.99.17.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = open.route(
        &ns,
        NOBODY,
        &["4", "add", "tapc", "10.99.18.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(host_state(&ns), before);
}

#[test]
fn c_tool_uml_net_complaints_equal_ours() {
    let c = host_program("uml_net", "uml-utilities");
    let ours = our_tool("uml_net");
    for args in [
        &[][..],
        &["4"][..],
        &["5", "tuntap", "up"][..],
        &["4", "nosuch"][..],
        &["tuntap", "up"][..],
    ] {
        // No namespace needed: none of these reaches the network.
        let run = |program: &Path| Command::new(program).args(args).output().unwrap();
        let (c_out, our_out) = (run(&c), run(&ours));
        assert_eq!(our_out.stdout, c_out.stdout, "{args:?} stdout");
        assert_eq!(our_out.stderr, c_out.stderr, "{args:?} stderr");
        assert_eq!(our_out.status.code(), c_out.status.code(), "{args:?}");
    }
}

#[test]
fn obsolete_transports_get_a_clear_answer_in_their_framing() {
    let ours = our_tool("uml_net");
    let slip = Command::new(&ours)
        .args(["4", "slip", "up", "10.99.19.1"])
        .output()
        .unwrap();
    assert_eq!(slip.status.code(), Some(1));
    let (frame, used) = TextFrame::parse(&slip.stdout).unwrap();
    assert_eq!(used, slip.stdout.len());
    assert!(
        String::from_utf8_lossy(frame.text).contains("the slip transport is not supported"),
        "{slip:?}"
    );
    // ethertap: a status byte (0, failure) before the framed text.
    let ethertap = Command::new(&ours)
        .args(["4", "ethertap", "tap0", "3", "10.99.19.1"])
        .output()
        .unwrap();
    assert_eq!(ethertap.status.code(), Some(1));
    assert_eq!(ethertap.stdout.first(), Some(&0));
    let (frame, _) = TextFrame::parse(&ethertap.stdout[1..]).unwrap();
    assert!(
        String::from_utf8_lossy(frame.text).contains("the ethertap transport is not supported")
    );
}

/// The host's IPv6 state a router advertisement could change: routes other
/// than the kernel's own link-local ones, and global addresses.
fn ipv6_state(ns: &NetNamespace) -> String {
    let routes: String = ns
        .show(&["-6", "route", "show", "table", "all"])
        .lines()
        .filter(|l| {
            !l.starts_with("fe80::")
                && !l.starts_with("local fe80::")
                && !l.starts_with("multicast")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    routes + &ns.show(&["-6", "-o", "addr", "show", "scope", "global"])
}

/// The Internet checksum of `data`.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded above: the sum fits 16 bits.
    !u16::try_from(sum).unwrap()
}

const GUEST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x0a, 0x63, 0x15, 0x02]);

/// An Ethernet frame carrying a router advertisement from fe80::99:2 to all
/// nodes: default router for 1800 s, and prefix 2001:db8:99::/64 on-link and
/// for autoconfiguration.
fn router_advertisement() -> Vec<u8> {
    let src: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99, 0, 2];
    let dst: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    // Type, code, checksum, hop limit, flags, router lifetime, reachable, retransmit.
    let mut icmp = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend([1, 1]); // source link-layer address
    icmp.extend(GUEST_MAC.octets());
    icmp.extend([3, 4, 64, 0xc0]); // prefix information: /64, on-link, autonomous
    icmp.extend(86_400u32.to_be_bytes());
    icmp.extend(14_400u32.to_be_bytes());
    icmp.extend([0; 4]);
    icmp.extend([
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut pseudo = Vec::new();
    pseudo.extend(src);
    pseudo.extend(dst);
    pseudo.extend(u32::try_from(icmp.len()).unwrap().to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    pseudo.extend(&icmp);
    let sum = internet_checksum(&pseudo);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let all_nodes = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let mut frame = EthernetHeader::new(all_nodes, GUEST_MAC, 0x86dd)
        .as_bytes()
        .to_vec();
    frame.extend([0x60, 0, 0, 0]);
    frame.extend(u16::try_from(icmp.len()).unwrap().to_be_bytes());
    frame.extend([58, 255]);
    frame.extend(src);
    frame.extend(dst);
    frame.extend(icmp);
    frame
}

/// An Ethernet frame asking who has `target`, from the guest's `sender`
/// (0.0.0.0: a probe, which the host answers whatever its routes).
fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut frame = EthernetHeader::new(MacAddr::BROADCAST, GUEST_MAC, 0x0806)
        .as_bytes()
        .to_vec();
    frame.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend(GUEST_MAC.octets());
    frame.extend(sender);
    frame.extend([0; 6]);
    frame.extend(target);
    frame
}

/// Waits until the host answers, on the tap, the ARP request for `target`:
/// frames written to a tap are processed in order, so everything written
/// before the request has been processed by then, and frames the host sent
/// out of the tap before its answer are read before it. Returns those frames.
fn wait_for_arp_reply(tap: &std::fs::File, target: [u8; 4]) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut reader = tap.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut before = Vec::new();
        while let Ok(n) = reader.read(&mut buf) {
            let frame = &buf[..n];
            if n >= 42
                && EthernetHeader::parse(frame).is_some_and(|h| h.ethertype.get() == 0x0806)
                && frame[20..22] == [0, 2]
                && frame[28..32] == target
            {
                let _ = tx.send(before);
                return;
            }
            before.push(frame.to_vec());
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the host never answered ARP on the tap")
}

#[test]
fn root_uml_net_taps_ignore_router_advertisements_from_the_guest() {
    use std::io::Write;
    let ns = NetNamespace::new("umlnet-ra");
    let helper = Helper::new(Some("allow user nobody 10.99.21.0/24\n"));
    let before = ipv6_state(&ns);
    let (code, datagram, fd) = helper.tap_up(&ns, NOBODY, &["4", "tuntap", "up", "10.99.21.1"]);
    let answer = TapAnswer::parse(&datagram).unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(answer.text));
    let name = String::from_utf8_lossy(answer.ifname).into_owned();
    let mut tap = std::fs::File::from(fd.expect("the tap's fd"));
    // What a hostile guest writes: a router advertisement, then an ARP
    // request whose answer shows the advertisement has been processed.
    tap.write_all(&router_advertisement()).unwrap();
    tap.write_all(&arp_request([0, 0, 0, 0], [10, 99, 21, 1]))
        .unwrap();
    wait_for_arp_reply(&tap, [10, 99, 21, 1]);
    assert_eq!(
        ipv6_state(&ns),
        before,
        "a guest's RA reconfigured the host"
    );
    for switch in ["accept_ra", "accept_redirects", "autoconf"] {
        assert_eq!(
            sysctl(&ns, &format!("ipv6/conf/{name}/{switch}")),
            "0",
            "{switch} of {name}"
        );
    }
}

/// Two users' taps and a LAN (lan0, 10.99.X.1/24) in `ns`, the victim's
/// guest at 10.99.X.7 routed through its tap and published on the LAN by the
/// helper itself.
fn two_users_and_a_lan(ns: &NetNamespace, helper: &Helper, x: u8, victim: &Who) {
    make_tap(ns, "tapn", NOBODY);
    make_tap(ns, "tapv", victim.uid);
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", &format!("10.99.{x}.1/24"), "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    let (code, text) = helper.route(
        ns,
        victim,
        &["4", "add", "tapv", &format!("10.99.{x}.7"), "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("* ip neigh add proxy 10.99.{x}.7 dev lan0")),
        "{text}"
    );
}

#[test]
fn root_uml_net_del_removes_only_what_add_made_for_that_tap() {
    let ns = NetNamespace::new("umlnet-del");
    // One grant shared by both users, proxy ARP included.
    let helper = Helper::new(Some(
        "allow group 4321 10.99.23.0/24\nallow group 4321 proxy-arp\n",
    ));
    let attacker = Who::in_groups(NOBODY, &[4321]);
    let victim = Who::in_groups(1000, &[4321]);
    two_users_and_a_lan(&ns, &helper, 23, &victim);
    let before = host_state(&ns);
    // The attacker names the victim's guest address on its own tap.
    let (_, text) = helper.route(
        &ns,
        &attacker,
        &["4", "del", "tapn", "10.99.23.7", "255.255.255.0"],
    );
    assert_eq!(
        host_state(&ns),
        before,
        "del on tapn changed the host: {text}"
    );
    let proxies = ns.show(&["neigh", "show", "proxy"]);
    assert!(proxies.contains("10.99.23.7 dev lan0"), "{proxies}");
    let routes = ns.show(&["route"]);
    assert!(routes.contains("10.99.23.7 dev tapv"), "{routes}");
    // The victim's own del takes back everything its add made.
    let (code, text) = helper.route(
        &ns,
        &victim,
        &["4", "del", "tapv", "10.99.23.7", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        !ns.show(&["neigh", "show", "proxy"]).contains("10.99.23.7"),
        "{text}"
    );
}

#[test]
fn root_uml_net_gate_never_takes_an_address_in_use() {
    let ns = NetNamespace::new("umlnet-gate");
    // One grant shared by both users: it names addresses, not whose they are.
    let helper = Helper::new(Some(
        "allow group 4321 10.99.22.0/23\nallow group 4321 proxy-arp\n",
    ));
    let attacker = Who::in_groups(NOBODY, &[4321]);
    let victim = Who::in_groups(1000, &[4321]);
    two_users_and_a_lan(&ns, &helper, 22, &victim);
    // Published by the administrator for some host behind this one.
    ns.ip(&["neigh", "add", "proxy", "10.99.23.8", "dev", "lan0"]);
    // Another guest's address, routed (not published) through the victim's tap.
    ns.ip(&["route", "add", "10.99.23.9/32", "dev", "tapv"]);
    let before = host_state(&ns);
    for (gate, why) in [
        // The victim's guest: routed through tapv and published on lan0.
        ("10.99.22.7", "routed through tapv"),
        // A LAN address: some host on lan0's network may have it.
        ("10.99.22.9", "on the network of lan0"),
        ("10.99.23.8", "published by proxy ARP on lan0"),
        ("10.99.23.9", "routed through tapv"),
    ] {
        let (code, datagram, fd) = helper.tap_up(&ns, &attacker, &["4", "tuntap", "up", gate]);
        let text = String::from_utf8_lossy(&datagram);
        assert_eq!((code, fd.is_none()), (Some(1), true), "GATE {gate}: {text}");
        assert!(text.contains(why), "GATE {gate}: {text}");
        assert_eq!(host_state(&ns), before, "GATE {gate} changed the host");
        let route = ns.show(&["route", "get", gate]);
        assert!(!route.starts_with("local"), "{gate} became local: {route}");
    }
    // A guest address that is already the host's own is refused to `add`
    // too: the local address would shadow the route.
    let (code, text) = helper.route(
        &ns,
        &attacker,
        &["4", "add", "tapn", "10.99.22.1", "255.255.255.0"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("is an address of this host (on lan0)"),
        "{text}"
    );
    assert_eq!(host_state(&ns), before);
    // The claim does not hold for an address the host already has: the
    // HOWTO's "reuse the host's eth IP for the host ends of the taps". It was
    // delivered locally before and still is; nothing else changes meaning.
    let local_before = ns.show(&["route", "get", "10.99.22.1"]);
    assert!(
        local_before.starts_with("local 10.99.22.1"),
        "{local_before}"
    );
    let (code, datagram, fd) = helper.tap_up(&ns, &attacker, &["4", "tuntap", "up", "10.99.22.1"]);
    let answer = TapAnswer::parse(&datagram).unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(answer.text));
    assert_eq!(ns.show(&["route", "get", "10.99.22.1"]), local_before);
    let victims = ns.show(&["route", "get", "10.99.22.7"]);
    assert!(victims.starts_with("10.99.22.7 dev tapv"), "{victims}");
    drop(fd);
    assert_eq!(host_state(&ns), before);
}

/// How many taps the helper keeps alive for one user at a time.
const TAPS_PER_USER: usize = 32;

/// What a holder of a tap's fd with no capability at all can do with it: each
/// TUN ioctl's outcome, as perl run as nobody on that fd reports it.
fn fd_powers(fd: &OwnedFd) -> String {
    let script = r#"
        open(my $status, "<", "/proc/self/status") or die;
        print grep { /^CapEff:/ } <$status>;
        my $ifr = pack("Z16 s x22", "evil0", 0x1002);
        my $mac = pack("Z16 S C6 x16", "", 1, 2, 0, 10, 99, 28, 153);
        my $on = pack("i", 1);
        for (["TUNSETIFF", 0x400454ca, $ifr], ["TUNSETPERSIST", 0x400454cb, 1],
             ["TUNSETOWNER", 0x400454cc, 1000], ["TUNSETGROUP", 0x400454ce, 1000],
             ["SIOCSIFHWADDR", 0x8924, $mac], ["TUNSETCARRIER", 0x400454e2, $on]) {
            my ($name, $request, $arg) = @$_;
            print "$name ", (ioctl(STDIN, $request, $arg) ? "ok" : "$!"), "\n";
        }
    "#;
    let out = Command::new(host_program("setpriv", "util-linux"))
        .args(Who::from(NOBODY).setpriv_args())
        .arg(host_program("perl", "perl-base"))
        .args(["-e", script])
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn root_uml_net_caps_a_users_taps_whatever_the_fd_is_used_for() {
    let ns = NetNamespace::new("umlnet-fd");
    let helper = Helper::new(None);
    let tap_up = |who: u32| {
        let (code, datagram, fd) = helper.tap_up(&ns, who, &["4", "tuntap", "up"]);
        (code, datagram, fd)
    };
    // Measured: the kernel lets the fd's holder, without CAP_NET_ADMIN, make
    // the tap persistent, give it to another user, set its MAC address and
    // carrier; only a second TUNSETIFF fails.
    let (code, datagram, fd) = tap_up(NOBODY);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
    let name = String::from_utf8_lossy(TapAnswer::parse(&datagram).unwrap().ifname).into_owned();
    let fd = fd.expect("the tap's fd");
    let powers = fd_powers(&fd);
    assert!(powers.contains("CapEff:\t0000000000000000"), "{powers}");
    for expected in [
        "TUNSETIFF File exists",
        "TUNSETPERSIST ok",
        "TUNSETOWNER ok",
        "TUNSETGROUP ok",
        "SIOCSIFHWADDR ok",
        "TUNSETCARRIER ok",
    ] {
        assert!(powers.contains(expected), "{expected}: {powers}");
    }
    drop(fd);
    assert_eq!(ns.sysfs(&name, "owner"), "1000", "the tap outlived its fd");
    // The helper still knows whose it was: uid 1000 cannot route through it.
    let (code, text) = helper.route(
        &ns,
        1000,
        &["4", "del", &name, "10.99.28.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("'{name}' was made by uml_net for uid 65534")),
        "{text}"
    );
    // It counts against its maker, however many are kept and given away.
    for _ in 1..TAPS_PER_USER {
        let (code, datagram, fd) = tap_up(NOBODY);
        assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
        assert!(fd_powers(&fd.expect("fd")).contains("TUNSETPERSIST ok"));
    }
    // What a refused request could leave: a device, an address, a route
    // (carrier and IPv6 states of the taps just closed settle asynchronously).
    let devices_and_routes = || {
        let names: Vec<String> = ns
            .show(&["-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
            .collect();
        (names, ns.show(&["-o", "-4", "addr"]), ns.show(&["route"]))
    };
    let before = devices_and_routes();
    let (code, datagram, fd) = tap_up(NOBODY);
    let text = String::from_utf8_lossy(&datagram);
    assert_eq!((code, fd.is_none()), (Some(1), true), "{text}");
    assert!(
        text.contains(&format!(
            "uid 65534 already has {TAPS_PER_USER} taps made by uml_net"
        )),
        "{text}"
    );
    assert_eq!(
        devices_and_routes(),
        before,
        "a refused tuntap up left something"
    );
    // The user they were given to is not charged for them.
    let (code, datagram, fd) = tap_up(1000);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
    assert!(fd.is_some());
}

#[test]
fn root_uml_net_sets_proxy_arp_on_the_device_it_checked() {
    let ns = NetNamespace::new("umlnet-index");
    let mut helper = Helper::new(Some("allow user nobody 10.99.27.0/24\n"));
    make_tap(&ns, "tapn", NOBODY);
    make_tap(&ns, "tapo", 1000);
    ns.run(
        Path::new("sh"),
        &["-c", "echo 1 > /proc/sys/net/ipv4/conf/tapo/proxy_arp"],
    );
    // Stands in for tapn being renamed or recreated between the helper's
    // check and its change: in the helper's view, tapn's switches are tapo's.
    helper.netns_script =
        Some("mount --bind /proc/sys/net/ipv4/conf/tapo /proc/sys/net/ipv4/conf/tapn".to_owned());
    let proxy_arp = |dev: &str| sysctl(&ns, &format!("ipv4/conf/{dev}/proxy_arp"));
    let (code, text) = helper.route(
        &ns,
        NOBODY,
        &["4", "add", "tapn", "10.99.27.5", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        (proxy_arp("tapn"), proxy_arp("tapo")),
        ("1".into(), "1".into()),
        "{text}"
    );
    let (code, text) = helper.route(
        &ns,
        NOBODY,
        &["4", "del", "tapn", "10.99.27.5", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        (proxy_arp("tapn"), proxy_arp("tapo")),
        ("0".into(), "1".into()),
        "{text}"
    );
}

/// The gid of Debian's `uml-net` group (made by the uml-utilities package).
fn uml_net_group() -> u32 {
    let out = Command::new("getent")
        .args(["group", "uml-net"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|gid| gid.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no uml-net group: install the Debian package uml-utilities (cargo xtask test does)"
            )
        })
}

#[test]
fn root_uml_net_serves_its_group_without_a_policy_and_nobody_else() {
    let ns = NetNamespace::new("umlnet-group");
    let gid = uml_net_group();
    let helper = Helper::new(None).installed_as(gid, 0o4754);
    let member = Who::in_groups(1000, &[gid]);
    let before = host_state(&ns);
    // Mode 4754: a non-member cannot even run it.
    let out = helper.run_as(
        &ns,
        NOBODY,
        &["4", "tuntap", "up", "10.99.29.1"],
        Stdio::piped(),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(host_state(&ns), before);
    // A member, with no policy file: a tap with GATE, then routes through it.
    let (code, datagram, fd) = helper.tap_up(&ns, &member, &["4", "tuntap", "up", "10.99.29.1"]);
    let answer = TapAnswer::parse(&datagram).unwrap();
    let text = String::from_utf8_lossy(answer.text);
    assert_eq!(code, Some(0), "{text}");
    let name = String::from_utf8_lossy(answer.ifname).into_owned();
    assert!(
        text.contains(&format!("* ip address add 10.99.29.1/32 dev {name}")),
        "{text}"
    );
    let (code, text) = helper.route(
        &ns,
        &member,
        &["4", "add", &name, "10.99.29.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        ns.show(&["route"])
            .contains(&format!("10.99.29.2 dev {name}"))
    );
    let (code, text) = helper.route(
        &ns,
        &member,
        &["4", "del", &name, "10.99.29.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    drop(fd);
    // The group owning the helper counts when only it may run the helper
    // (here a group with no name), not when everyone may.
    let own_group = Who::in_groups(1000, &[4242]);
    for (mode, served) in [(0o4754, true), (0o4755, false)] {
        let helper = Helper::new(None).installed_as(4242, mode);
        let (code, datagram, _fd) =
            helper.tap_up(&ns, &own_group, &["4", "tuntap", "up", "10.99.29.1"]);
        let text = String::from_utf8_lossy(&datagram);
        assert_eq!(
            code,
            Some(if served { 0 } else { 1 }),
            "mode {mode:o}: {text}"
        );
    }
    // A policy file, when there is one, is all a member gets.
    let narrowed = Helper::new(Some("allow user 4242 10.99.0.0/16\n")).installed_as(gid, 0o4754);
    let (code, datagram, fd) = narrowed.tap_up(&ns, &member, &["4", "tuntap", "up", "10.99.29.1"]);
    let text = String::from_utf8_lossy(&datagram);
    assert_eq!((code, fd.is_none()), (Some(1), true), "{text}");
    assert!(
        text.contains("no line of /etc/uml-utilities/uml_net.conf allows it"),
        "{text}"
    );
}

#[test]
fn root_real_kernel_uml_net_group_member_gets_the_c_packages_host_state() {
    let ns = NetNamespace::new("umlnet-debian");
    let gid = uml_net_group();
    let helper = Helper::new(None).installed_as(gid, 0o4754);
    // The host's LAN; the guest gets an address on it, published by proxy
    // ARP, and the tap's host end reuses the host's LAN address (the HOWTO's way).
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.99.25.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    let launcher = helper.launcher();
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let mut uml = UmlBuilder::new(
        "ip link set eth0 up\nip addr add 10.99.25.2/24 dev eth0\n\
         n=0; until ping -c 1 -W 1 10.99.25.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 30 ] && break; done\n\
         ping -c 3 -i 0.2 -W 2 10.99.25.1 | tail -2\necho PING-DONE\nsleep 600",
    )
    .arg("eth0=tuntap,,,10.99.25.1")
    .launcher(&launcher)
    .netns(ns.name())
    .user(1000, 1000)
    .groups(&[gid])
    .env("PATH", helper.path())
    .start();
    uml.wait_for_console("PING-DONE", Duration::from_secs(60));
    let console = uml.console();
    assert!(
        console.contains("3 packets received, 0% packet loss"),
        "{console}"
    );
    // What the C package left on the host, in the same places.
    assert_eq!(ns.sysfs("tap0", "owner"), "1000");
    let addr = ns.show(&["-o", "addr", "show", "dev", "tap0"]);
    assert!(addr.contains("inet 10.99.25.1/32"), "{addr}");
    let routes = ns.show(&["route"]);
    assert!(routes.contains("10.99.25.2 dev tap0"), "{routes}");
    assert_eq!(sysctl(&ns, "ipv4/conf/tap0/proxy_arp"), "1");
    let proxies = ns.show(&["neigh", "show", "proxy"]);
    assert!(proxies.contains("10.99.25.2 dev lan0"), "{proxies}");
    assert_eq!(sysctl(&ns, "ipv4/ip_forward"), "1");
}

#[test]
fn root_real_kernel_uml_net_group_member_gets_the_standard_lab_beyond_the_default_route() {
    let ns = NetNamespace::new("umlnet-lab");
    let gid = uml_net_group();
    let helper = Helper::new(None).installed_as(gid, 0o4754);
    // A host whose only route to the lab's network is its default route, as
    // with `eth0=tuntap,,,10.0.0.1` and a guest at 10.0.0.2.
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.99.38.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    ns.ip(&["route", "add", "default", "via", "10.99.38.254"]);
    let launcher = helper.launcher();
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let mut uml = UmlBuilder::new(
        "ip link set eth0 up\nip addr add 10.99.37.2/24 dev eth0\n\
         n=0; until ping -c 1 -W 1 10.99.37.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 30 ] && break; done\n\
         ping -c 3 -i 0.2 -W 2 10.99.37.1 | tail -2\necho PING-DONE\nsleep 600",
    )
    .arg("eth0=tuntap,,,10.99.37.1")
    .launcher(&launcher)
    .netns(ns.name())
    .user(1000, 1000)
    .groups(&[gid])
    .env("PATH", helper.path())
    .start();
    uml.wait_for_console("PING-DONE", Duration::from_secs(60));
    let console = uml.console();
    assert!(
        console.contains("3 packets received, 0% packet loss"),
        "{console}"
    );
    assert!(
        console.contains("* ip route add 10.99.37.2/32 dev tap0"),
        "{console}"
    );
    let routes = ns.show(&["route"]);
    assert!(routes.contains("10.99.37.2 dev tap0"), "{routes}");
    // Nowhere to publish it: no LAN of the host holds it.
    assert_eq!(ns.show(&["neigh", "show", "proxy"]), "");
}

/// An IPv4 header (no options) with its checksum.
fn ipv4_header(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: usize) -> Vec<u8> {
    let mut header = vec![0x45, 0];
    header.extend(u16::try_from(20 + payload).unwrap().to_be_bytes());
    header.extend([0, 0, 0, 0, 64, protocol, 0, 0]);
    header.extend(src);
    header.extend(dst);
    let sum = internet_checksum(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

/// An Ethernet frame to `mac` carrying an ICMP host redirect that claims to
/// come from `old_gw`: "for `target`, use `new_gw`". The quoted packet is an
/// echo reply from `quoted_src` (a host address) to `target` (the kind the
/// kernel applies without a socket to match).
fn icmp_redirect(
    mac: [u8; 6],
    old_gw: [u8; 4],
    to: [u8; 4],
    new_gw: [u8; 4],
    quoted_src: [u8; 4],
    target: [u8; 4],
) -> Vec<u8> {
    let mut icmp = vec![5, 1, 0, 0];
    icmp.extend(new_gw);
    icmp.extend(ipv4_header(quoted_src, target, 1, 8));
    icmp.extend([0, 0, 0, 0, 0, 1, 0, 1]);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut frame = EthernetHeader::new(MacAddr(mac), GUEST_MAC, 0x0800)
        .as_bytes()
        .to_vec();
    frame.extend(ipv4_header(old_gw, to, 1, icmp.len()));
    frame.extend(icmp);
    frame
}

#[test]
fn root_uml_net_taps_ignore_ipv4_redirects_from_the_guest() {
    use std::io::Write;
    let ns = NetNamespace::new("umlnet-redir");
    // A host on a LAN whose router is 10.99.30.254; 10.99.30.9 is another LAN host.
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.99.30.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    for (addr, mac) in [
        ("10.99.30.254", "02:00:00:00:00:fe"),
        ("10.99.30.9", "02:00:00:00:00:09"),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            "lan0",
            "nud",
            "permanent",
        ]);
    }
    ns.ip(&["route", "add", "default", "via", "10.99.30.254"]);
    // No forwarding: then the kernel heeds redirects whatever a device's
    // accept_redirects says (with forwarding on, it refuses them itself).
    let helper = Helper::new(Some("allow user nobody 10.99.31.0/24\n"));
    let (code, datagram, fd) = helper.tap_up(&ns, NOBODY, &["4", "tuntap", "up", "10.99.31.1"]);
    let answer = TapAnswer::parse(&datagram).unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(answer.text));
    let name = String::from_utf8_lossy(answer.ifname).into_owned();
    let route_before = ns.show(&["route", "get", "10.99.99.1"]);
    assert!(route_before.contains("via 10.99.30.254"), "{route_before}");
    let mac: Vec<u8> = ns
        .sysfs(&name, "address")
        .split(':')
        .map(|octet| u8::from_str_radix(octet, 16).unwrap())
        .collect();
    let mut tap = std::fs::File::from(fd.expect("the tap's fd"));
    // The guest poses as the host's router: "for 10.99.99.1, use 10.99.30.9".
    tap.write_all(&icmp_redirect(
        mac.try_into().unwrap(),
        [10, 99, 30, 254],
        [10, 99, 31, 1],
        [10, 99, 30, 9],
        [10, 99, 30, 1],
        [10, 99, 99, 1],
    ))
    .unwrap();
    tap.write_all(&arp_request([0, 0, 0, 0], [10, 99, 31, 1]))
        .unwrap();
    wait_for_arp_reply(&tap, [10, 99, 31, 1]);
    assert_eq!(
        ns.show(&["route", "get", "10.99.99.1"]),
        route_before,
        "a guest's redirect rerouted the host"
    );
    assert_eq!(sysctl(&ns, &format!("ipv4/conf/{name}/rp_filter")), "1");
    assert_eq!(
        sysctl(&ns, &format!("ipv4/conf/{name}/accept_redirects")),
        "0"
    );
}

#[test]
fn root_uml_net_add_never_takes_an_address_in_use() {
    let ns = NetNamespace::new("umlnet-add");
    let gid = uml_net_group();
    // Debian's model: the group's members, no policy file.
    let helper = Helper::new(None).installed_as(gid, 0o4754);
    let member = Who::in_groups(1000, &[gid]);
    make_tap(&ns, "tapm", 1000);
    // The host's LAN: its router 10.99.33.254 (the default route) and a host
    // 10.99.33.9, both live in the neighbour table; a network behind the
    // router; an address routed to one LAN host; an address the
    // administrator publishes for a host behind this one.
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.99.33.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    for (addr, mac) in [
        ("10.99.33.254", "02:00:00:00:00:fe"),
        ("10.99.33.9", "02:00:00:00:00:09"),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            "lan0",
            "nud",
            "reachable",
        ]);
    }
    ns.ip(&["route", "add", "default", "via", "10.99.33.254"]);
    ns.ip(&["route", "add", "10.99.34.0/24", "via", "10.99.33.254"]);
    ns.ip(&["route", "add", "10.99.35.5/32", "dev", "lan0"]);
    ns.ip(&["neigh", "add", "proxy", "10.99.33.20", "dev", "lan0"]);
    let before = host_state(&ns);
    for (addr, why) in [
        ("10.99.33.254", "a host on lan0 has it"),
        ("10.99.33.9", "a host on lan0 has it"),
        ("10.99.33.20", "published by proxy ARP on lan0"),
        ("10.99.34.5", "routed through a gateway"),
        ("10.99.35.5", "already routed through lan0"),
        // The host's DNS resolver, say, reached through the default route.
        ("192.0.2.53", "can grant it"),
    ] {
        let (code, text) = helper.route(&ns, &member, &["4", "add", "tapm", addr, "255.255.255.0"]);
        assert_eq!(code, Some(1), "{addr}: {text}");
        assert!(text.contains(why), "{addr}: {text}");
        assert_eq!(host_state(&ns), before, "add {addr} changed the host");
        let route = ns.show(&["route", "get", addr]);
        assert!(
            !route.contains("dev tapm"),
            "{addr} went to the guest: {route}"
        );
    }
    // A public GATE under the implicit grant is refused the same way.
    let (code, datagram, fd) = helper.tap_up(&ns, &member, &["4", "tuntap", "up", "192.0.2.53"]);
    let text = String::from_utf8_lossy(&datagram);
    assert_eq!((code, fd.is_none()), (Some(1), true), "{text}");
    assert!(text.contains("can grant it"), "{text}");
    assert_eq!(host_state(&ns), before, "GATE 192.0.2.53 changed the host");
    // What the lab needs still works: a free LAN address, published on the
    // LAN, and a private address reached only through the default route.
    let (code, text) = helper.route(
        &ns,
        &member,
        &["4", "add", "tapm", "10.99.33.50", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("* ip neigh add proxy 10.99.33.50 dev lan0"),
        "{text}"
    );
    let (code, text) = helper.route(
        &ns,
        &member,
        &["4", "add", "tapm", "10.99.36.2", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(ns.show(&["route"]).contains("10.99.36.2 dev tapm"));
    // An explicit policy line is the administrator's decision.
    let granted = Helper::new(Some("allow user 1000 192.0.2.0/24\n")).installed_as(gid, 0o4754);
    let (code, text) = granted.route(
        &ns,
        &member,
        &["4", "add", "tapm", "192.0.2.53", "255.255.255.0"],
    );
    assert_eq!(code, Some(0), "{text}");
}

/// An Ethernet frame to `mac` carrying an IPv6 packet with no payload (next
/// header 59) from `src` to `dst`.
fn ipv6_packet(mac: [u8; 6], src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut frame = EthernetHeader::new(MacAddr(mac), GUEST_MAC, 0x86dd)
        .as_bytes()
        .to_vec();
    frame.extend([0x60, 0, 0, 0, 0, 0, 59, 64]);
    frame.extend(src);
    frame.extend(dst);
    frame
}

#[test]
fn root_uml_net_taps_carry_no_ipv6_from_the_guest() {
    use std::io::Write;
    let ns = NetNamespace::new("umlnet-ipv6");
    let helper = Helper::new(None);
    // Anyone's bare tap, and root's, out of which the host would forward to
    // 2001:db8:99:1::/64; the host forwards IPv6.
    let (code, datagram, fd) = helper.tap_up(&ns, NOBODY, &["4", "tuntap", "up"]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
    let name = String::from_utf8_lossy(TapAnswer::parse(&datagram).unwrap().ifname).into_owned();
    let mut tap = std::fs::File::from(fd.expect("the tap's fd"));
    let (code, datagram, fd) = helper.tap_up(&ns, 0, &["4", "tuntap", "up"]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&datagram));
    let out = String::from_utf8_lossy(TapAnswer::parse(&datagram).unwrap().ifname).into_owned();
    let mut out_tap = std::fs::File::from(fd.expect("the tap's fd"));
    let set = ns.run(
        Path::new("sh"),
        &[
            "-c",
            &format!(
                "echo 0 > /proc/sys/net/ipv6/conf/{out}/disable_ipv6 && \
                 echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"
            ),
        ],
    );
    assert!(set.status.success(), "{set:?}");
    ns.ip(&["addr", "add", "10.99.32.1/32", "dev", &out]);
    ns.ip(&["-6", "route", "add", "2001:db8:99:1::/64", "dev", &out]);
    ns.ip(&[
        "-6",
        "neigh",
        "add",
        "2001:db8:99:1::9",
        "lladdr",
        "02:00:0a:63:20:09",
        "dev",
        &out,
        "nud",
        "permanent",
    ]);
    let mac: Vec<u8> = ns
        .sysfs(&name, "address")
        .split(':')
        .map(|octet| u8::from_str_radix(octet, 16).unwrap())
        .collect();
    // A source nobody gave the guest, to an address the host forwards to.
    let spoofed: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5,
    ];
    let dst: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9,
    ];
    tap.write_all(&ipv6_packet(mac.try_into().unwrap(), spoofed, dst))
        .unwrap();
    tap.write_all(&arp_request([0, 0, 0, 0], [10, 99, 32, 1]))
        .unwrap();
    wait_for_arp_reply(&tap, [10, 99, 32, 1]);
    // Whatever the host forwarded out of the other tap comes out before its
    // answer to this.
    out_tap
        .write_all(&arp_request([0, 0, 0, 0], [10, 99, 32, 1]))
        .unwrap();
    let forwarded: Vec<Vec<u8>> = wait_for_arp_reply(&out_tap, [10, 99, 32, 1])
        .into_iter()
        .filter(|frame| {
            frame.len() >= 54 && frame[12..14] == [0x86, 0xdd] && frame[22..38] == spoofed
        })
        .collect();
    assert!(
        forwarded.is_empty(),
        "the host forwarded IPv6 from the guest: {forwarded:02x?}"
    );
    assert_eq!(sysctl(&ns, &format!("ipv6/conf/{name}/disable_ipv6")), "1");
    let addresses = ns.show(&["-6", "-o", "addr", "show", "dev", &name]);
    assert!(addresses.is_empty(), "{addresses}");
}
