//! The administrator's policy: which users and groups may give their guests
//! which host addresses, publish them by proxy ARP, and switch on forwarding.
//!
//! ```text
//! # /etc/uml-utilities/uml_net.conf
//! allow group uml-net 10.99.0.0/16
//! allow user alice    192.168.7.0/24
//! allow user alice    proxy-arp
//! allow everyone      forward
//! ```
//!
//! Only `allow` lines exist: what no line allows is denied. A line the parser
//! does not understand voids the whole file (fail closed), naming the line.

use std::fs;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::request::dotted_quad;

/// Where the policy lives; fixed at build time, never taken from the environment.
pub const POLICY_PATH: &str = "/etc/uml-utilities/uml_net.conf";

/// Who is asking: the real ids of the process that ran the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// Root needs no permission from a policy: it could make every change itself.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in `gid`, as primary or supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Network {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether `addr` lies inside.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.addr)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(u32),
    Group(u32),
    Everyone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    Network(Network),
    Forward,
    ProxyArp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    subject: Subject,
    grant: Grant,
}

/// Why the policy cannot be used; every one of them denies everything.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Someone other than root could have written it.
    #[error("{path} is ignored: {why}")]
    Unsafe {
        /// The policy file.
        path: PathBuf,
        /// What is wrong with its owner or mode.
        why: String,
    },
    /// A line that does not parse.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The policy file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The parsed policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// What one caller may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Anything goes (the caller is root).
    pub unrestricted: bool,
    /// Host addresses the caller's guests may use.
    pub networks: Vec<Network>,
    /// May switch on IPv4 forwarding.
    pub forward: bool,
    /// May have guest addresses published on other host interfaces.
    pub proxy_arp: bool,
}

impl Rights {
    /// What root may do: everything.
    pub fn unrestricted() -> Self {
        Self {
            unrestricted: true,
            networks: Vec::new(),
            forward: true,
            proxy_arp: true,
        }
    }

    /// What the Debian package let a member of its `uml-net` group do: any
    /// GATE and guest address, proxy ARP and forwarding. The protections that
    /// do not change what a lab sees (addresses in use, own taps only) still apply.
    pub fn group_member() -> Self {
        Self {
            unrestricted: false,
            networks: vec![Network {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            }],
            forward: true,
            proxy_arp: true,
        }
    }

    /// Whether the caller may use `addr` as a host or guest address.
    pub fn allows(&self, addr: Ipv4Addr) -> bool {
        self.unrestricted || self.networks.iter().any(|n| n.contains(addr))
    }
}

impl Policy {
    /// Reads the policy at `path`; a missing file is an empty policy (deny all).
    /// The file must belong to root and be writable by nobody else, and so
    /// must every directory above it (see [`open_checked`]).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Ok(Self::load_if_present(path)?.unwrap_or_default())
    }

    /// Reads the policy at `path`, or `None` if there is no file.
    pub fn load_if_present(path: &Path) -> Result<Option<Self>, PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let Some(mut file) = open_checked(path)? else {
            return Ok(None);
        };
        let meta = file.metadata().map_err(read_err)?;
        let unsafe_because = |why: String| PolicyError::Unsafe {
            path: path.to_owned(),
            why,
        };
        if !meta.file_type().is_file() {
            return Err(unsafe_because("not a regular file".to_owned()));
        }
        if meta.uid() != 0 {
            return Err(unsafe_because(format!(
                "owned by uid {}, not root",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_because(format!(
                "mode {:o} lets others than root write it",
                meta.mode() & 0o7777
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_err)?;
        Self::parse(&text, path).map(Some)
    }

    /// Parses policy text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            let rule = parse_rule(&words).map_err(|message| PolicyError::Syntax {
                path: path.to_owned(),
                line: index + 1,
                message,
            })?;
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Everything the lines naming `caller` (or everyone) allow.
    pub fn rights(&self, caller: &Caller) -> Rights {
        if caller.is_root() {
            return Rights::unrestricted();
        }
        let mut rights = Rights::default();
        for rule in &self.rules {
            let applies = match rule.subject {
                Subject::User(uid) => caller.uid == uid,
                Subject::Group(gid) => caller.in_group(gid),
                Subject::Everyone => true,
            };
            if !applies {
                continue;
            }
            match rule.grant {
                Grant::Network(net) => rights.networks.push(net),
                Grant::Forward => rights.forward = true,
                Grant::ProxyArp => rights.proxy_arp = true,
            }
        }
        rights
    }
}

/// Where a caller's rights come from, for denial messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// Root: everything.
    Root,
    /// The lines of the policy file.
    Policy,
    /// No policy file, and the caller is a member of this group of the install.
    Group(u32),
    /// No policy file, and the caller is in none of these groups.
    NoPolicy(Vec<u32>),
    /// The policy file cannot be used (nothing is allowed); why.
    Broken(String),
}

/// A caller, what they may do, and on what grounds.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// Who asks.
    pub caller: Caller,
    /// What they may do.
    pub rights: Rights,
    /// Why they may do it.
    pub basis: Basis,
}

/// A group's name for messages: `uml-net (gid 105)`, or the number alone.
fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(group)) => format!("{} (gid {gid})", group.name),
        _ => format!("gid {gid}"),
    }
}

impl Permissions {
    /// Judges `caller` by the policy at `path`, or, when there is no file, by
    /// membership of one of the install's `groups` (see `privilege::install_groups`).
    /// Root needs neither.
    pub fn for_caller(caller: Caller, path: &Path, groups: &[u32]) -> Self {
        if caller.is_root() {
            return Self {
                caller,
                rights: Rights::unrestricted(),
                basis: Basis::Root,
            };
        }
        let (rights, basis) = match Policy::load_if_present(path) {
            Ok(Some(policy)) => (policy.rights(&caller), Basis::Policy),
            Ok(None) => match groups.iter().find(|&&gid| caller.in_group(gid)) {
                Some(&gid) => (Rights::group_member(), Basis::Group(gid)),
                None => (Rights::default(), Basis::NoPolicy(groups.to_vec())),
            },
            Err(e) => (Rights::default(), Basis::Broken(e.to_string())),
        };
        Self {
            caller,
            rights,
            basis,
        }
    }

    /// Why the caller may not do `what`, for a message.
    pub fn refusal(&self, what: &str) -> String {
        let uid = self.caller.uid;
        match &self.basis {
            Basis::Broken(problem) => format!("uid {uid} may not {what}: {problem}"),
            Basis::NoPolicy(groups) if !groups.is_empty() => {
                let names: Vec<String> = groups.iter().map(|&g| group_name(g)).collect();
                format!(
                    "uid {uid} may not {what}: no line of {POLICY_PATH} allows it (there is no \
                     such file), and without one only members of {} may",
                    names.join(" or ")
                )
            }
            _ => format!("uid {uid} may not {what}: no line of {POLICY_PATH} allows it"),
        }
    }

    /// Whether the caller may use `addr`; the refusal otherwise.
    pub fn check_address(&self, addr: Ipv4Addr, role: &str) -> Result<(), String> {
        if self.rights.allows(addr) {
            Ok(())
        } else {
            Err(self.refusal(&format!("use {addr} as {role}")))
        }
    }

    /// Whether the caller's rights are the install group's implicit grant
    /// (no policy file), not an administrator's lines.
    pub fn implicit_grant(&self) -> bool {
        matches!(self.basis, Basis::Group(_))
    }

    /// Refuses, under the implicit grant only, a public `addr` that the host
    /// reaches through its default route (or not at all): taking it over
    /// would divert the host's traffic to some outside server into a guest.
    /// An administrator's policy line for it is their decision.
    pub fn check_beyond_default_route(&self, addr: Ipv4Addr, role: &str) -> Result<(), String> {
        if !self.implicit_grant() || is_private(addr) {
            return Ok(());
        }
        Err(format!(
            "{addr} is a public address, reached through the default route; without a policy \
             file the group may use only private ones (10.0.0.0/8, 172.16.0.0/12, \
             192.168.0.0/16, 100.64.0.0/10) as {role}; a line of {POLICY_PATH} can grant it"
        ))
    }

    /// Whether a TUN/TAP device with this owner and group is the caller's: by
    /// the kernel's own rule for attaching, every id set must match, and a
    /// device with neither set belongs to nobody in particular.
    pub fn owns(&self, owner: Option<u32>, group: Option<u32>) -> bool {
        if self.caller.is_root() {
            return true;
        }
        (owner.is_some() || group.is_some())
            && owner.is_none_or(|uid| uid == self.caller.uid)
            && group.is_none_or(|gid| self.caller.in_group(gid))
    }
}

/// Whether `addr` is in a private range: RFC 1918 or RFC 6598's shared space.
pub fn is_private(addr: Ipv4Addr) -> bool {
    let shared = Network {
        addr: Ipv4Addr::new(100, 64, 0, 0),
        prefix: 10,
    };
    addr.is_private() || shared.contains(addr)
}

/// Opens the file at the absolute `path` one component at a time from `/`,
/// following no symbolic link, and judges each directory it went through by
/// what was opened: whoever may add, remove or rename entries in one of them
/// could swap the policy, so each must belong to root and be writable by no
/// one else. A sticky directory (`/tmp`) may be writable by all: there only
/// root may rename or remove what root put in it. `None`: there is no file.
fn open_checked(path: &Path) -> Result<Option<fs::File>, PolicyError> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, fstat};
    use std::path::Component;

    let unsafe_because = |why: String| PolicyError::Unsafe {
        path: path.to_owned(),
        why,
    };
    let read_err = |errno: Errno| PolicyError::Read {
        path: path.to_owned(),
        source: io::Error::from(errno),
    };
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name),
            _ => return Err(unsafe_because("not an absolute, plain path".to_owned())),
        }
    }
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(unsafe_because("not a file".to_owned()));
    };
    let walk = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open("/", walk, Mode::empty()).map_err(read_err)?;
    let mut shown = PathBuf::from("/");
    // The first fault found, reported only if the file turns out to exist.
    let mut fault = None;
    for name in std::iter::once(None).chain(dirs.iter().map(Some)) {
        if let Some(name) = name {
            shown.push(name);
            dir = match openat(&dir, *name, walk, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(unsafe_because(format!(
                        "{} is a symbolic link or not a directory",
                        shown.display()
                    )));
                }
                Err(e) => return Err(read_err(e)),
            };
        }
        let stat = fstat(&dir).map_err(read_err)?;
        let mode = stat.st_mode & 0o7777;
        if fault.is_none() && stat.st_uid != 0 {
            fault = Some(format!(
                "its directory {} is owned by uid {}, not root",
                shown.display(),
                stat.st_uid
            ));
        } else if fault.is_none() && mode & 0o022 != 0 && mode & 0o1000 == 0 {
            fault = Some(format!(
                "its directory {} (mode {mode:o}) lets others than root change it",
                shown.display()
            ));
        }
    }
    let file = match openat(
        &dir,
        *file_name,
        // Non-blocking: a FIFO put there must not hang the helper.
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fs::File::from(fd),
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(unsafe_because("a symbolic link".to_owned())),
        Err(e) => return Err(read_err(e)),
    };
    match fault {
        Some(why) => Err(unsafe_because(why)),
        None => Ok(Some(file)),
    }
}

fn parse_rule(words: &[&str]) -> Result<Rule, String> {
    let (subject, grant) = match words {
        ["allow", "user", who, grant] => (Subject::User(user_id(who)?), *grant),
        ["allow", "group", who, grant] => (Subject::Group(group_id(who)?), *grant),
        ["allow", "everyone", grant] => (Subject::Everyone, *grant),
        ["allow", ..] => {
            return Err(
                "expected 'allow user NAME WHAT', 'allow group NAME WHAT' or 'allow everyone WHAT'"
                    .to_owned(),
            );
        }
        [first, ..] => {
            return Err(format!(
                "unknown keyword '{first}' (lines start with 'allow'; what is not allowed is denied)"
            ));
        }
        [] => return Err("empty rule".to_owned()),
    };
    let grant = match grant {
        "forward" => Grant::Forward,
        "proxy-arp" => Grant::ProxyArp,
        net => Grant::Network(network(net)?),
    };
    Ok(Rule { subject, grant })
}

fn user_id(word: &str) -> Result<u32, String> {
    if let Ok(uid) = word.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(word) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(format!("no user '{word}'")),
    }
}

fn group_id(word: &str) -> Result<u32, String> {
    if let Ok(gid) = word.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(word) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(format!("no group '{word}'")),
    }
}

fn network(word: &str) -> Result<Network, String> {
    let bad =
        || format!("'{word}' is not 'forward', 'proxy-arp' or a network such as 10.99.0.0/16");
    let (addr, prefix) = match word.split_once('/') {
        Some((addr, prefix)) => (addr, prefix.parse::<u8>().map_err(|_| bad())?),
        None => (word, 32),
    };
    let addr = dotted_quad(addr).ok_or_else(bad)?;
    if prefix > 32 {
        return Err(bad());
    }
    let net = Network { addr, prefix };
    let masked = Ipv4Addr::from(u32::from(addr) & net.mask());
    if masked != addr {
        return Err(format!(
            "'{word}' has host bits set (the network is {masked}/{prefix})"
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("test.conf")).expect("parses")
    }

    fn error(text: &str) -> String {
        Policy::parse(text, Path::new("test.conf"))
            .expect_err("must not parse")
            .to_string()
    }

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn rules_apply_to_users_groups_and_everyone() {
        let p = policy(
            "# lab\n\
             allow user 1000 10.99.1.0/24\n\
             allow group 2000 10.99.2.0/24   # students\n\
             allow group 2000 proxy-arp\n\
             \n\
             allow everyone 10.99.200.7\n\
             allow user 1001 forward\n",
        );
        let alice = p.rights(&caller(1000, 100, &[]));
        assert!(alice.allows(Ipv4Addr::new(10, 99, 1, 9)));
        assert!(!alice.allows(Ipv4Addr::new(10, 99, 2, 9)));
        assert!(alice.allows(Ipv4Addr::new(10, 99, 200, 7)));
        assert!(!alice.allows(Ipv4Addr::new(10, 99, 200, 8)));
        assert!(!alice.forward && !alice.proxy_arp);
        let student = p.rights(&caller(1002, 100, &[2000]));
        assert!(student.allows(Ipv4Addr::new(10, 99, 2, 9)) && student.proxy_arp);
        let primary = p.rights(&caller(1003, 2000, &[]));
        assert!(primary.allows(Ipv4Addr::new(10, 99, 2, 9)));
        assert!(p.rights(&caller(1001, 100, &[])).forward);
        assert_eq!(p.rights(&caller(0, 0, &[])), Rights::unrestricted());
    }

    #[test]
    fn no_policy_allows_nothing() {
        let none = Policy::default().rights(&caller(1000, 1000, &[]));
        assert!(!none.allows(Ipv4Addr::new(10, 99, 0, 1)));
        assert!(!none.forward && !none.proxy_arp && !none.unrestricted);
    }

    #[test]
    fn names_resolve_and_mistakes_name_their_line() {
        let p = policy("allow user root 10.0.0.0/8\nallow group root forward\n");
        assert!(p.rights(&caller(5, 0, &[])).forward);
        assert_eq!(
            error("allow user 1 10.0.0.0/8\ndeny user 2 10.0.0.0/8\n"),
            "test.conf:2: unknown keyword 'deny' (lines start with 'allow'; what is not allowed is denied)"
        );
        assert!(error("allow user no-such-user-xyz forward").contains("no user"));
        assert!(error("allow group no-such-group-xyz forward").contains("no group"));
        assert!(error("allow user 1 10.99.1.1/16").contains("host bits"));
        assert!(error("allow user 1 10.99.0.0/33").contains("not 'forward'"));
        assert!(error("allow user 1 forwrd").contains("'forwrd'"));
        assert!(error("allow user 1").starts_with("test.conf:1: expected"));
        assert!(error("allow everyone 10.0.0.0/8 extra").contains("expected"));
    }

    #[test]
    fn without_a_file_the_install_groups_members_get_the_c_packages_rights() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.conf");
        let member = caller(1000, 1000, &[105]);
        let judged = Permissions::for_caller(member.clone(), &missing, &[4242, 105]);
        assert_eq!(judged.basis, Basis::Group(105));
        assert_eq!(judged.rights, Rights::group_member());
        assert!(judged.rights.allows(Ipv4Addr::new(192, 0, 2, 1)));
        let outsider = Permissions::for_caller(caller(1001, 1001, &[]), &missing, &[105]);
        assert_eq!(outsider.rights, Rights::default());
        let refusal = outsider.refusal("use 10.99.0.1 as a tap's host address");
        assert!(
            refusal.contains("no line of /etc/uml-utilities/uml_net.conf allows it")
                && refusal.contains("only members of"),
            "{refusal}"
        );
        if nix::unistd::geteuid().is_root() {
            // A file, when there is one, is all a member gets.
            let present = dir.path().join("p.conf");
            fs::write(&present, "allow user 4242 10.99.0.0/16\n").expect("write");
            let narrowed = Permissions::for_caller(member, &present, &[105]);
            assert_eq!(
                (narrowed.basis, narrowed.rights),
                (Basis::Policy, Rights::default())
            );
        }
    }

    #[test]
    fn only_the_implicit_grant_is_kept_to_private_addresses_beyond_the_default_route() {
        for (addr, private) in [
            ([10, 0, 0, 2], true),
            ([172, 31, 255, 254], true),
            ([172, 32, 0, 1], false),
            ([192, 168, 1, 1], true),
            ([100, 64, 0, 1], true),
            ([100, 127, 255, 254], true),
            ([100, 128, 0, 1], false),
            ([192, 0, 2, 53], false),
            ([8, 8, 8, 8], false),
        ] {
            assert_eq!(is_private(Ipv4Addr::from(addr)), private, "{addr:?}");
        }
        let judged = |basis| Permissions {
            caller: caller(1000, 1000, &[105]),
            rights: Rights::group_member(),
            basis,
        };
        let public = Ipv4Addr::new(192, 0, 2, 53);
        let refusal = judged(Basis::Group(105))
            .check_beyond_default_route(public, "a guest address")
            .expect_err("public under the implicit grant");
        assert!(refusal.contains("a line of /etc/uml-utilities/uml_net.conf can grant it"));
        assert!(
            judged(Basis::Group(105))
                .check_beyond_default_route(Ipv4Addr::new(10, 0, 0, 2), "a guest address")
                .is_ok()
        );
        assert!(
            judged(Basis::Policy)
                .check_beyond_default_route(public, "a guest address")
                .is_ok()
        );
    }

    #[test]
    fn networks_contain_what_they_should() {
        let all = network("0.0.0.0/0").expect("parses");
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 1)));
        let host = network("10.99.0.5").expect("parses");
        assert!(host.contains(Ipv4Addr::new(10, 99, 0, 5)));
        assert!(!host.contains(Ipv4Addr::new(10, 99, 0, 6)));
        assert_eq!(host.to_string(), "10.99.0.5/32");
    }

    #[test]
    fn a_policy_others_could_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("uml_net.conf");
        assert_eq!(
            Policy::load(&path).expect("missing is empty"),
            Policy::default()
        );
        fs::write(&path, "allow everyone forward\n").expect("write");
        let mode = |m| {
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m))
                .expect("chmod")
        };
        mode(0o666);
        let err = Policy::load(&path).expect_err("world-writable").to_string();
        // Run as root the mode is the complaint; as anyone else, the owner.
        assert!(err.contains("is ignored"), "{err}");
        if nix::unistd::geteuid().is_root() {
            assert!(err.contains("mode 666"), "{err}");
            mode(0o644);
            assert!(Policy::load(&path).is_ok());
        }
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let err = Policy::load(&link).expect_err("a symlink").to_string();
        assert!(err.ends_with("is ignored: a symbolic link"), "{err}");
        if nix::unistd::geteuid().is_root() {
            // Every directory on the way counts; a sticky one may be open to all.
            let sub = dir.path().join("sub");
            fs::create_dir(&sub).expect("mkdir");
            fs::write(sub.join("p.conf"), "allow everyone forward\n").expect("write");
            let dir_mode = |m| {
                fs::set_permissions(&sub, std::os::unix::fs::PermissionsExt::from_mode(m))
                    .expect("chmod")
            };
            dir_mode(0o777);
            let err = Policy::load(&sub.join("p.conf"))
                .expect_err("in a world-writable directory")
                .to_string();
            assert!(
                err.contains(&format!("its directory {} (mode 777)", sub.display())),
                "{err}"
            );
            dir_mode(0o1777);
            assert!(Policy::load(&sub.join("p.conf")).is_ok());
            assert_eq!(
                Policy::load(&sub.join("missing.conf")).expect("missing is empty"),
                Policy::default()
            );
            let linked = dir.path().join("linked");
            std::os::unix::fs::symlink(&sub, &linked).expect("symlink");
            let err = Policy::load(&linked.join("p.conf"))
                .expect_err("through a link")
                .to_string();
            assert!(
                err.contains("is a symbolic link or not a directory"),
                "{err}"
            );
        }
        let err = Policy::load(dir.path())
            .expect_err("a directory")
            .to_string();
        assert!(
            err.contains("not a regular file") || err.contains("owned by"),
            "{err}"
        );
    }
}
