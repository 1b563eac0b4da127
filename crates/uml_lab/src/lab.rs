//! The lab file: TOML read with spans, checked as a whole before anything
//! starts, and resolved into a [`Lab`] that the run directory keeps as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A mistake in the lab file, placed by line, column and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {field}: {message}", file.display())]
pub struct LabError {
    /// The lab file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a dotted path (`machines.a.interfaces[0].mac`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every mistake found in a lab file (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LabErrors(pub Vec<LabError>);

/// How guests plug into a network's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `ethN=daemon,MAC,unix,CTL` (kernels up to 6.15).
    Daemon,
    /// `vecN:transport=bess,dst=PATH,mac=MAC` (current kernels).
    Bess,
}

/// A host tap device joined to a network's switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTap {
    /// The device name.
    pub device: String,
    /// An address with prefix length given to the host side, if any.
    pub address: Option<String>,
}

/// One network: one switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its name in the lab.
    pub name: String,
    /// How guests connect.
    pub transport: Transport,
    /// Hub (flood everything) rather than a learning switch.
    pub hub: bool,
    /// A host tap made with tunctl (root only).
    pub tap: Option<HostTap>,
    /// The VLAN of its host tap and of interfaces that set none.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Its VXLAN settings, when it may span hosts.
    #[serde(default)]
    pub vxlan: Option<Vxlan>,
    /// The switch's `--vxlan` argument on this host (set by [`Lab::for_host`]).
    #[serde(default)]
    pub uplink: Option<String>,
    /// The switch's capture file (`--pcap`), if any.
    #[serde(default)]
    pub capture: Option<Capture>,
}

/// A network's capture: the switch's `--pcap` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The pcapng file (absolute; the user's, so `down` leaves it).
    pub file: PathBuf,
    /// Also the frames the switch sends (`--pcap-outbound`).
    pub outbound: bool,
    /// `SIZE[,COUNT]` for `--pcap-rotate`.
    pub rotate: Option<String>,
}

impl Capture {
    /// The switch's arguments for it.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--pcap".into(), self.file.clone().into_os_string()];
        if self.outbound {
            args.push("--pcap-outbound".into());
        }
        if let Some(rotate) = &self.rotate {
            args.push("--pcap-rotate".into());
            args.push(rotate.into());
        }
        args
    }
}

/// A network's VXLAN settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxlan {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP port, on every host.
    pub port: u16,
    /// A multicast group instead of a list of the other hosts.
    pub group: Option<String>,
    /// VTEPs outside the lab (`IP` or `IP:PORT`).
    pub remotes: Vec<String>,
    /// Every VLAN the network's interfaces use: the uplink trunks them.
    pub vlans: Vec<u16>,
}

/// A host of a lab spanning hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    /// Its name in the lab.
    pub name: String,
    /// Its address on the network between the hosts (VXLAN's underlay).
    pub address: std::net::Ipv4Addr,
}

/// A port's 802.1Q setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortVlan {
    /// Untagged frames of one VLAN.
    Access(u16),
    /// Tagged frames of these VLANs, and untagged ones of `native`.
    Trunk {
        /// The VLANs carried tagged.
        vlans: Vec<u16>,
        /// The VLAN carried untagged.
        native: Option<u16>,
    },
}

impl PortVlan {
    /// The switch's `--endpoint` options for it.
    pub fn options(&self) -> String {
        match self {
            Self::Access(vid) => format!("vlan={vid}"),
            Self::Trunk { vlans, native } => {
                let list: Vec<String> = vlans.iter().map(u16::to_string).collect();
                let mut text = format!("trunk={}", list.join(":"));
                if let Some(n) = native {
                    text.push_str(&format!(",native={n}"));
                }
                text
            }
        }
    }

    fn vlans(&self) -> Vec<u16> {
        match self {
            Self::Access(vid) => vec![*vid],
            Self::Trunk { vlans, native } => vlans.iter().chain(native).copied().collect(),
        }
    }
}

/// Where a console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "port", rename_all = "lowercase")]
pub enum Console {
    /// A pseudo-terminal (`uml_lab console` attaches to it).
    Pts,
    /// A TCP port, served through in.telnetd and port-helper.
    Port(u16),
    /// A terminal window, through port-helper.
    Xterm,
    /// Nowhere.
    Null,
    /// The kernel's output file in the run directory; no input.
    Log,
}

impl Console {
    /// The channel as the kernel's `conN=` option takes it.
    pub fn channel(self) -> String {
        match self {
            Self::Pts => "pts".into(),
            Self::Port(port) => format!("port:{port}"),
            Self::Xterm => "xterm".into(),
            Self::Null => "null".into(),
            Self::Log => "fd:0,fd:1".into(),
        }
    }

    /// The name used in the lab file and in `status`.
    pub fn describe(self) -> String {
        match self {
            Self::Log => "log".into(),
            other => other.channel(),
        }
    }
}

/// When the supervisor restarts a machine that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never (the default).
    #[default]
    No,
    /// When it dies by a signal, exits with an error, or hangs.
    OnFailure,
    /// Whenever it ends without `stop` or `down`.
    Always,
}

impl Restart {
    /// The lab file's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
        }
    }
}

/// A machine's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The network it joins.
    pub network: String,
    /// Its MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// An address with prefix length set up at boot by the lab's images.
    pub address: Option<String>,
    /// Its switch port's VLAN setting.
    #[serde(default)]
    pub vlan: Option<PortVlan>,
    /// Its link emulation, as the switch's `key=value` options.
    #[serde(default)]
    pub link: Vec<String>,
}

impl Interface {
    /// The options of the switch endpoint it plugs into, when it needs one of its own.
    pub fn endpoint_options(&self) -> Option<String> {
        let mut options: Vec<String> = self.vlan.iter().map(PortVlan::options).collect();
        options.extend(self.link.iter().cloned());
        (!options.is_empty()).then(|| options.join(","))
    }
}

/// One guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Its name in the lab.
    pub name: String,
    /// The UML kernel binary.
    pub kernel: PathBuf,
    /// `mem=`.
    pub memory: String,
    /// The shared backing image (absolute).
    pub disk: PathBuf,
    /// con0, con1, ...
    pub consoles: Vec<Console>,
    /// Extra kernel arguments.
    pub kernel_args: Vec<String>,
    /// Restart policy.
    pub restart: Restart,
    /// Shell script the lab's images run at boot.
    pub startup: Option<String>,
    /// Interfaces in order: interface i is `eth{i}` or `vec{i}`.
    pub interfaces: Vec<Interface>,
    /// Seconds the host watchdog waits for the guest (`UML_WATCHDOG_TIMEOUT`).
    pub watchdog_timeout: Option<f64>,
    /// The host that runs it, in a lab spanning hosts.
    #[serde(default)]
    pub host: Option<String>,
}

impl Machine {
    /// The guest's name for interface `index` on `transport`.
    pub fn interface_name(index: usize, transport: Transport) -> String {
        match transport {
            Transport::Daemon => format!("eth{index}"),
            Transport::Bess => format!("vec{index}"),
        }
    }
}

/// A lab, checked and with every path absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lab {
    /// The lab's name (its run directory's name).
    pub name: String,
    /// The lab file.
    pub file: PathBuf,
    /// Networks by name.
    pub networks: Vec<Network>,
    /// Machines by name.
    pub machines: Vec<Machine>,
    /// The hosts of a lab spanning hosts (none: everything runs here).
    #[serde(default)]
    pub hosts: Vec<LabHost>,
    /// The host this run directory's part of the lab runs on.
    #[serde(default)]
    pub local_host: Option<String>,
}

/// Why a lab cannot be run on a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// `--host` names no host of the lab.
    #[error("the lab has no host '{0}' (its hosts: {1})")]
    Unknown(String, String),
    /// `--host` on a lab without `[hosts]`.
    #[error("the lab has no [hosts]: it runs on one host, without --host")]
    NoHosts,
    /// No or several of the hosts' addresses are this machine's.
    #[error("{0}: say which host this is with --host")]
    Ambiguous(String),
}

impl Lab {
    /// The network named `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The machine named `name`.
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }

    /// The host whose address this machine has (a UDP socket binds to it),
    /// for a lab spanning hosts; `None` for a lab without `[hosts]`.
    pub fn detect_host(&self) -> Result<Option<String>, HostError> {
        if self.hosts.is_empty() {
            return Ok(None);
        }
        let mine: Vec<&LabHost> = self
            .hosts
            .iter()
            .filter(|h| std::net::UdpSocket::bind((h.address, 0)).is_ok())
            .collect();
        match mine.as_slice() {
            [one] => Ok(Some(one.name.clone())),
            [] => Err(HostError::Ambiguous(
                "none of the lab's host addresses is this machine's".into(),
            )),
            _ => Err(HostError::Ambiguous(format!(
                "this machine has the addresses of {}",
                mine.iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The part of the lab that runs on `host`: its machines, the networks
    /// they join, and those networks' VXLAN uplinks to the other hosts.
    pub fn for_host(&self, host: Option<&str>) -> Result<Lab, HostError> {
        let Some(host) = host else {
            return Ok(self.clone());
        };
        if self.hosts.is_empty() {
            return Err(HostError::NoHosts);
        }
        let Some(me) = self.hosts.iter().find(|h| h.name == host) else {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(HostError::Unknown(host.to_owned(), names.join(", ")));
        };
        let on = |m: &Machine, h: &str| m.host.as_deref() == Some(h);
        let joins = |m: &Machine, net: &str| m.interfaces.iter().any(|i| i.network == net);
        let mut networks = Vec::new();
        for net in &self.networks {
            if !self
                .machines
                .iter()
                .any(|m| on(m, host) && joins(m, &net.name))
            {
                continue;
            }
            let mut net = net.clone();
            net.uplink = net.vxlan.as_ref().and_then(|vx| {
                let mut parts = vec![format!("local={}:{},vni={}", me.address, vx.port, vx.vni)];
                if let Some(group) = &vx.group {
                    parts.push(format!("group={group}"));
                } else {
                    for other in &self.hosts {
                        if other.name != host
                            && self
                                .machines
                                .iter()
                                .any(|m| on(m, &other.name) && joins(m, &net.name))
                        {
                            parts.push(format!("remote={}:{}", other.address, vx.port));
                        }
                    }
                    parts.extend(vx.remotes.iter().map(|r| format!("remote={r}")));
                    if parts.len() == 1 {
                        return None;
                    }
                }
                if !vx.vlans.is_empty() {
                    let list: Vec<String> = vx.vlans.iter().map(u16::to_string).collect();
                    parts.push(format!("trunk={}", list.join(":")));
                }
                Some(parts.join(","))
            });
            networks.push(net);
        }
        Ok(Lab {
            name: self.name.clone(),
            file: self.file.clone(),
            networks,
            machines: self
                .machines
                .iter()
                .filter(|m| on(m, host))
                .cloned()
                .collect(),
            hosts: self.hosts.clone(),
            local_host: Some(host.to_owned()),
        })
    }
}

/// A field that no longer applies: any TOML value, kept only to be refused by name.
type Unsupported = Option<Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: Option<Spanned<String>>,
    #[serde(default)]
    defaults: RawDefaults,
    // In the file's order: that is the order of `status` and of start-up.
    #[serde(default)]
    networks: IndexMap<String, Spanned<RawNetwork>>,
    #[serde(default)]
    machines: IndexMap<String, Spanned<RawMachine>>,
    #[serde(default)]
    hosts: IndexMap<String, Spanned<RawHost>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    kernel: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    consoles: Option<Spanned<Vec<Spanned<String>>>>,
    restart: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
}

/// Link emulation: the switch's option names, each with a string or a number.
type RawLink = Spanned<IndexMap<String, Spanned<toml::Value>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Spanned<i64>,
    port: Option<Spanned<i64>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    remotes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    transport: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    host_tap: Option<Spanned<RawTap>>,
    vlan: Option<Spanned<i64>>,
    link: Option<RawLink>,
    vxlan: Option<Spanned<RawVxlan>>,
    capture: Option<Spanned<toml::Value>>,
    mgmt: Unsupported,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTap {
    device: Spanned<String>,
    address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    kernel: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    consoles: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    kernel_args: Vec<Spanned<String>>,
    restart: Option<Spanned<String>>,
    startup: Option<Spanned<String>>,
    #[serde(default)]
    interfaces: Vec<Spanned<RawInterface>>,
    watchdog_timeout: Option<Spanned<f64>>,
    host: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    network: Spanned<String>,
    mac: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    vlan: Option<Spanned<i64>>,
    trunk: Option<Spanned<Vec<Spanned<i64>>>>,
    native: Option<Spanned<i64>>,
    link: Option<RawLink>,
}

/// Where the host looks for things the lab names.
#[derive(Debug, Clone)]
pub struct Host {
    /// The directories searched for a kernel named without a slash.
    pub path: Vec<PathBuf>,
    /// Whether we run as root (host taps need it).
    pub root: bool,
}

impl Host {
    /// This process's view: `PATH` (then the usual bin directories) and its user.
    pub fn current() -> Self {
        let mut path: Vec<PathBuf> =
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
        path.extend(["/usr/bin", "/bin"].map(PathBuf::from));
        Self {
            path,
            root: nix::unistd::geteuid().is_root(),
        }
    }

    fn find(&self, program: &str) -> Option<PathBuf> {
        self.path
            .iter()
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    }
}

/// Reads and checks the lab file at `file`.
pub fn load(file: &Path, host: &Host) -> Result<Lab, LabErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        LabErrors(vec![LabError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: "-".into(),
            message: format!("cannot read the lab file: {e}"),
        }])
    })?;
    parse(&text, file, host)
}

/// Checks lab file text; `file` names it in errors and anchors relative paths.
pub fn parse(text: &str, file: &Path, host: &Host) -> Result<Lab, LabErrors> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let mut check = Checker {
        text,
        file: &file,
        errors: Vec::new(),
        hosts: Vec::new(),
    };
    let raw: RawLab = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let field = field_of_parse_error(text, e.message(), &span);
            check.error(&span, field, first_line(e.message()));
            return Err(LabErrors(check.errors));
        }
    };
    let lab = check.lab(raw, host);
    check.errors.sort_by_key(|e| (e.line, e.column));
    if check.errors.is_empty() {
        Ok(lab)
    } else {
        Err(LabErrors(check.errors))
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

/// The field a TOML error is about: the unknown one it names, else the key
/// on the line it points at.
fn field_of_parse_error(text: &str, message: &str, span: &Range<usize>) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, _)) = rest.split_once('`') {
            return name.to_owned();
        }
    }
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None => line.trim().trim_matches(['[', ']']).to_owned(),
    }
}

struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<LabError>,
    /// The lab's `[hosts]`, once read.
    hosts: Vec<LabHost>,
}

/// A lab name, machine or network name: used in file names, umids and
/// interface names, so kept to a safe alphabet.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

fn valid_memory(text: &str) -> bool {
    let digits = text.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text.len() - digits.len() <= 1
}

/// Parses `xx:xx:xx:xx:xx:xx` into bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A link setting's value as the switch's option takes it.
fn link_value(value: &Spanned<toml::Value>) -> Option<String> {
    match value.get_ref() {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// The network's link settings, overridden key by key by the interface's.
fn merged_link(network: Option<&RawLink>, interface: Option<&RawLink>) -> Vec<String> {
    let mut merged: IndexMap<&str, String> = IndexMap::new();
    for link in network.into_iter().chain(interface) {
        for (key, value) in link.get_ref() {
            if let Some(text) = link_value(value) {
                merged.insert(key, text);
            }
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn valid_cidr(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else {
        return false;
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
}

/// A MAC address derived from the lab, machine and interface: stable across
/// runs, locally administered, unicast (FNV-1a of the three).
pub fn derived_mac(lab: &str, machine: &str, index: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{lab}/{machine}/{index}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

impl Checker<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
        (line, column)
    }

    fn error(&mut self, span: &Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        let error = LabError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        };
        // A default's mistake is found once per machine that uses it.
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    fn refused(&mut self, value: &Unsupported, field: &str, why: &str) {
        if let Some(value) = value {
            self.error(&value.span(), field, format!("{why}; remove the field"));
        }
    }

    /// `capture = "FILE"` or `capture = { file, outbound, rotate }`.
    fn capture(&mut self, value: &Spanned<toml::Value>, field: &str) -> Option<Capture> {
        let span = value.span();
        let (file, outbound, rotate) = match value.get_ref() {
            toml::Value::String(file) => (Some(file.clone()), false, None),
            toml::Value::Table(table) => {
                let mut ok = true;
                for key in table.keys() {
                    if !matches!(key.as_str(), "file" | "outbound" | "rotate") {
                        self.error(
                            &span,
                            format!("{field}.{key}"),
                            format!("unknown field `{key}`, expected one of `file`, `outbound`, `rotate`"),
                        );
                        ok = false;
                    }
                }
                let file = match table.get("file") {
                    Some(toml::Value::String(f)) => Some(f.clone()),
                    Some(_) => {
                        self.error(&span, format!("{field}.file"), "expected a file name");
                        None
                    }
                    None => {
                        self.error(&span, format!("{field}.file"), "missing field `file`");
                        None
                    }
                };
                let outbound = match table.get("outbound") {
                    None => false,
                    Some(toml::Value::Boolean(b)) => *b,
                    Some(_) => {
                        self.error(&span, format!("{field}.outbound"), "expected true or false");
                        ok = false;
                        false
                    }
                };
                let rotate = match table.get("rotate") {
                    None => None,
                    Some(toml::Value::String(r)) => {
                        if let Err(e) = uml_switch::capture::Rotate::parse(r) {
                            self.error(
                                &span,
                                format!("{field}.rotate"),
                                format!("--pcap-rotate: {e}"),
                            );
                            ok = false;
                        }
                        Some(r.clone())
                    }
                    Some(_) => {
                        self.error(
                            &span,
                            format!("{field}.rotate"),
                            "expected \"SIZE[,COUNT]\", like \"10M,5\"",
                        );
                        ok = false;
                        None
                    }
                };
                (file.filter(|_| ok), outbound, rotate)
            }
            _ => {
                self.error(
                    &span,
                    field,
                    "expected a file name or { file = \"...\", outbound = true, rotate = \"10M,5\" }",
                );
                (None, false, None)
            }
        };
        let file = file?;
        if file.is_empty() || file == "-" {
            self.error(
                &span,
                field,
                "expected a file name (relative to the lab file)",
            );
            return None;
        }
        let file = self.relative(&file);
        match file.parent() {
            Some(dir) if dir.is_dir() => {}
            _ => {
                self.error(
                    &span,
                    field,
                    format!("the directory of {} does not exist", file.display()),
                );
                return None;
            }
        }
        Some(Capture {
            file,
            outbound,
            rotate,
        })
    }

    fn relative(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new("/")).join(path)
        }
    }

    fn lab(&mut self, raw: RawLab, host: &Host) -> Lab {
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match &raw.name {
            Some(name) => {
                if !valid_name(name.get_ref()) {
                    self.error(
                        &name.span(),
                        "name",
                        "a lab name is 1 to 32 letters, digits, '-' or '_'",
                    );
                }
                name.get_ref().clone()
            }
            None => {
                if !valid_name(&stem) {
                    self.error(
                        &(0..0),
                        "name",
                        format!("the file name '{stem}' cannot name the lab: set `name`"),
                    );
                }
                stem
            }
        };
        if raw.machines.is_empty() {
            self.error(&(0..0), "machines", "the lab has no machines");
        }
        let hosts = self.lab_hosts(&raw.hosts);
        self.hosts = hosts.clone();
        let mut networks: Vec<Network> = raw
            .networks
            .iter()
            .map(|(name, net)| self.network(name, net, host))
            .collect();
        let mut joined = BTreeSet::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();
        let mut machines = Vec::new();
        for (mname, machine) in &raw.machines {
            let m = self.machine(&name, mname, machine, &raw.defaults, &raw.networks, host);
            for (i, (iface, raw_iface)) in m
                .interfaces
                .iter()
                .zip(&machine.get_ref().interfaces)
                .enumerate()
            {
                joined.insert(iface.network.clone());
                let field = format!("machines.{mname}.interfaces[{i}]");
                let key = iface.mac.to_ascii_lowercase();
                if let Some(other) = macs.get(&key) {
                    let span = raw_iface
                        .get_ref()
                        .mac
                        .as_ref()
                        .map_or_else(|| raw_iface.span(), Spanned::span);
                    self.error(
                        &span,
                        format!("{field}.mac"),
                        format!("duplicate MAC address {key}: {other} has it too"),
                    );
                } else {
                    macs.insert(key, field);
                }
            }
            machines.push(m);
        }
        for (nname, net) in &raw.networks {
            if !joined.contains(nname) {
                self.error(
                    &net.span(),
                    format!("networks.{nname}"),
                    "no machine joins this network",
                );
            }
        }
        for (net, raw_net) in networks.iter_mut().zip(raw.networks.values()) {
            self.spanning(net, raw_net, &machines);
        }
        Lab {
            name,
            file: self.file.to_path_buf(),
            networks,
            machines,
            hosts,
            local_host: None,
        }
    }

    fn lab_hosts(&mut self, raw: &IndexMap<String, Spanned<RawHost>>) -> Vec<LabHost> {
        let mut out: Vec<LabHost> = Vec::new();
        for (name, h) in raw {
            let field = format!("hosts.{name}");
            if !valid_name(name) || matches!(name.as_str(), "localhost" | "local") {
                self.error(
                    &h.span(),
                    &field,
                    "a host name is 1 to 32 letters, digits, '-' or '_' (and not localhost)",
                );
            }
            let a = &h.get_ref().address;
            let Ok(address) = a.get_ref().parse::<std::net::Ipv4Addr>() else {
                self.error(
                    &a.span(),
                    format!("{field}.address"),
                    "expected the host's IPv4 address between the hosts, like \"10.99.0.1\"",
                );
                continue;
            };
            if let Some(other) = out.iter().find(|o| o.address == address) {
                let message = format!("hosts.{} has this address too", other.name);
                self.error(&a.span(), format!("{field}.address"), message);
            }
            out.push(LabHost {
                name: name.clone(),
                address,
            });
        }
        out
    }

    /// A network joined from several hosts needs VXLAN, and its uplink
    /// trunks every VLAN its interfaces use.
    fn spanning(&mut self, net: &mut Network, raw: &Spanned<RawNetwork>, machines: &[Machine]) {
        let field = format!("networks.{}", net.name);
        let ifaces = || {
            machines.iter().flat_map(|m| {
                m.interfaces
                    .iter()
                    .filter(|i| i.network == net.name)
                    .map(move |i| (m, i))
            })
        };
        let on: BTreeSet<&str> = ifaces().filter_map(|(m, _)| m.host.as_deref()).collect();
        let vlans: BTreeSet<u16> = ifaces()
            .filter_map(|(_, i)| i.vlan.as_ref())
            .flat_map(PortVlan::vlans)
            .collect();
        if on.len() > 1 {
            let list = on.iter().copied().collect::<Vec<_>>().join(" and ");
            if net.vxlan.is_none() {
                self.error(
                    &raw.span(),
                    &field,
                    format!("machines on {list} join this network: give it `vxlan = {{ vni = N }}` to span the hosts"),
                );
            }
            if let Some(tap) = &raw.get_ref().host_tap {
                self.error(
                    &tap.span(),
                    format!("{field}.host_tap"),
                    format!("a host tap on a network spanning {list} is not supported: which host would have it is ambiguous"),
                );
            }
        }
        if let Some(vx) = &mut net.vxlan {
            vx.vlans = vlans.into_iter().collect();
        }
    }

    fn network(&mut self, name: &str, net: &Spanned<RawNetwork>, host: &Host) -> Network {
        let field = format!("networks.{name}");
        if !valid_name(name) {
            self.error(
                &net.span(),
                &field,
                "a network name is 1 to 32 letters, digits, '-' or '_'",
            );
        }
        let raw = net.get_ref();
        self.refused(
            &raw.mgmt,
            &format!("{field}.mgmt"),
            &format!("every network's switch has its management socket, net/{name}/mgmt in the lab's run directory (`uml_lab status` shows it)"),
        );
        let capture = raw
            .capture
            .as_ref()
            .and_then(|c| self.capture(c, &format!("{field}.capture")));
        let vlan = raw
            .vlan
            .as_ref()
            .and_then(|v| self.vid(v, &format!("{field}.vlan")));
        if let Some(link) = &raw.link {
            self.check_link(link, &format!("{field}.link"));
        }
        let vxlan = raw
            .vxlan
            .as_ref()
            .map(|vx| self.vxlan(vx.get_ref(), &field));
        let transport = match raw
            .transport
            .as_ref()
            .map(|t| (t.get_ref().as_str(), t.span()))
        {
            None | Some(("daemon", _)) => Transport::Daemon,
            Some(("bess", _)) => Transport::Bess,
            Some((other, span)) => {
                self.error(
                    &span,
                    format!("{field}.transport"),
                    format!("unknown transport '{other}': use \"daemon\" or \"bess\""),
                );
                Transport::Daemon
            }
        };
        let hub = match raw.mode.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            None | Some(("switch", _)) => false,
            Some(("hub", _)) => true,
            Some((other, span)) => {
                self.error(
                    &span,
                    format!("{field}.mode"),
                    format!("unknown mode '{other}': use \"switch\" or \"hub\""),
                );
                false
            }
        };
        let tap = raw.host_tap.as_ref().map(|tap| {
            let t = tap.get_ref();
            let device = t.device.get_ref().clone();
            if device.is_empty()
                || device.len() > 15
                || !device
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                self.error(
                    &t.device.span(),
                    format!("{field}.host_tap.device"),
                    "a device name is 1 to 15 letters, digits, '-', '_' or '.'",
                );
            }
            if let Some(address) = &t.address {
                if !valid_cidr(address.get_ref()) {
                    self.error(
                        &address.span(),
                        format!("{field}.host_tap.address"),
                        "expected an IPv4 address with prefix length, like \"10.99.1.254/24\"",
                    );
                }
            }
            if !host.root {
                self.error(
                    &tap.span(),
                    format!("{field}.host_tap"),
                    "a host tap needs root (tunctl and the switch's -tap); run uml_lab as root or remove it",
                );
            }
            HostTap {
                device,
                address: t.address.as_ref().map(|a| a.get_ref().clone()),
            }
        });
        Network {
            name: name.to_owned(),
            transport,
            hub,
            tap,
            vlan,
            vxlan,
            uplink: None,
            capture,
        }
    }

    /// A VLAN id, 1 to 4094.
    fn vid(&mut self, value: &Spanned<i64>, field: &str) -> Option<u16> {
        match u16::try_from(*value.get_ref()) {
            Ok(vid @ 1..=4094) => Some(vid),
            _ => {
                self.error(&value.span(), field, "a VLAN id is 1 to 4094");
                None
            }
        }
    }

    fn vxlan(&mut self, raw: &RawVxlan, network: &str) -> Vxlan {
        let field = format!("{network}.vxlan");
        let vni = u32::try_from(*raw.vni.get_ref())
            .ok()
            .filter(|v| *v < 1 << 24)
            .unwrap_or_else(|| {
                self.error(
                    &raw.vni.span(),
                    format!("{field}.vni"),
                    "a VNI is 0 to 16777215",
                );
                0
            });
        let port = match &raw.port {
            None => 4789,
            Some(p) => u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .unwrap_or_else(|| {
                    self.error(
                        &p.span(),
                        format!("{field}.port"),
                        "a UDP port is 1 to 65535",
                    );
                    4789
                }),
        };
        if let Some(g) = &raw.group {
            if !g
                .get_ref()
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_multicast())
            {
                self.error(
                    &g.span(),
                    format!("{field}.group"),
                    "expected an IPv4 multicast address, like \"239.1.1.1\"",
                );
            }
            if !raw.remotes.is_empty() {
                self.error(
                    &g.span(),
                    format!("{field}.group"),
                    "a group or remotes, not both",
                );
            }
        }
        for (i, r) in raw.remotes.iter().enumerate() {
            let text = r.get_ref();
            if text.parse::<std::net::Ipv4Addr>().is_err()
                && text.parse::<std::net::SocketAddrV4>().is_err()
            {
                self.error(
                    &r.span(),
                    format!("{field}.remotes[{i}]"),
                    "expected an IPv4 address, with or without :PORT",
                );
            }
        }
        Vxlan {
            vni,
            port,
            group: raw.group.as_ref().map(|g| g.get_ref().clone()),
            remotes: raw.remotes.iter().map(|r| r.get_ref().clone()).collect(),
            vlans: Vec::new(),
        }
    }

    /// Checks each link setting with the switch's own parser.
    fn check_link(&mut self, link: &RawLink, field: &str) {
        for (key, value) in link.get_ref() {
            let kfield = format!("{field}.{key}");
            let Some(text) = link_value(value) else {
                self.error(&value.span(), kfield, "expected a string or a number");
                continue;
            };
            if matches!(key.as_str(), "vlan" | "trunk" | "native") {
                self.error(
                    &value.span(),
                    kfield,
                    "not a link setting: VLANs are the interface's `vlan`, `trunk` and `native`",
                );
                continue;
            }
            if let Err(e) =
                format!("unix:x,{key}={text}").parse::<uml_switch::endpoint::EndpointSpec>()
            {
                let message = e.to_string();
                self.error(
                    &value.span(),
                    kfield,
                    message.strip_prefix("--endpoint: ").unwrap_or(&message),
                );
            }
        }
    }

    fn consoles(&mut self, list: &Spanned<Vec<Spanned<String>>>, field: &str) -> Vec<Console> {
        let mut out = Vec::new();
        for (i, item) in list.get_ref().iter().enumerate() {
            let text = item.get_ref().as_str();
            let console = match text {
                "pts" => Some(Console::Pts),
                "xterm" => Some(Console::Xterm),
                "null" => Some(Console::Null),
                "log" => Some(Console::Log),
                _ => text
                    .strip_prefix("port:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p > 0)
                    .map(Console::Port),
            };
            match console {
                Some(c) => out.push(c),
                None => self.error(
                    &item.span(),
                    format!("{field}[{i}]"),
                    format!("unknown console '{text}': use \"pts\", \"port:PORT\", \"xterm\", \"null\" or \"log\""),
                ),
            }
        }
        if out.iter().filter(|c| **c == Console::Log).count() > 1 {
            self.error(
                &list.span(),
                field,
                "only one console can be \"log\" (the kernel has one output file)",
            );
        }
        out
    }

    fn machine(
        &mut self,
        lab: &str,
        name: &str,
        machine: &Spanned<RawMachine>,
        defaults: &RawDefaults,
        networks: &IndexMap<String, Spanned<RawNetwork>>,
        host: &Host,
    ) -> Machine {
        let hosts = self.hosts.clone();
        let field = format!("machines.{name}");
        if !valid_name(name) {
            self.error(
                &machine.span(),
                &field,
                "a machine name is 1 to 32 letters, digits, '-' or '_'",
            );
        }
        let raw = machine.get_ref();
        let on_host = match (&raw.host, &defaults.host) {
            (Some(h), _) | (None, Some(h)) => {
                let hfield = if raw.host.is_some() {
                    format!("{field}.host")
                } else {
                    "defaults.host".into()
                };
                let text = h.get_ref().as_str();
                if hosts.is_empty() {
                    if !matches!(text, "localhost" | "local") {
                        self.error(
                            &h.span(),
                            hfield,
                            format!("no host '{text}': name the lab's hosts and their addresses in [hosts.NAME]"),
                        );
                    }
                    None
                } else if hosts.iter().any(|x| x.name == text) {
                    Some(text.to_owned())
                } else {
                    self.error(&h.span(), hfield, format!("no host '{text}' in [hosts]"));
                    None
                }
            }
            (None, None) => {
                if !hosts.is_empty() {
                    self.error(
                        &machine.span(),
                        format!("{field}.host"),
                        "the lab has [hosts]: say which runs this machine (here or in [defaults])",
                    );
                }
                None
            }
        };
        let (kernel_text, kernel_span, kernel_field) = match (&raw.kernel, &defaults.kernel) {
            (Some(k), _) => (k.get_ref().clone(), k.span(), format!("{field}.kernel")),
            (None, Some(k)) => (k.get_ref().clone(), k.span(), "defaults.kernel".into()),
            (None, None) => (
                "linux.uml".into(),
                machine.span(),
                format!("{field}.kernel"),
            ),
        };
        let kernel = if kernel_text.contains('/') {
            Some(self.relative(&kernel_text)).filter(|p| p.is_file())
        } else {
            host.find(&kernel_text)
        };
        let kernel = kernel.unwrap_or_else(|| {
            self.error(
                &kernel_span,
                kernel_field,
                format!(
                    "no kernel '{kernel_text}' (install Debian's user-mode-linux for linux.uml)"
                ),
            );
            PathBuf::from(&kernel_text)
        });
        let memory = match (&raw.memory, &defaults.memory) {
            (Some(m), _) | (None, Some(m)) => {
                if !valid_memory(m.get_ref()) {
                    self.error(
                        &m.span(),
                        format!("{field}.memory"),
                        format!("'{}' is not a size like \"64M\"", m.get_ref()),
                    );
                }
                m.get_ref().clone()
            }
            (None, None) => "64M".into(),
        };
        let disk = match (&raw.disk, &defaults.disk) {
            (Some(d), _) | (None, Some(d)) => {
                let path = self.relative(d.get_ref());
                let which = if raw.disk.is_some() {
                    format!("{field}.disk")
                } else {
                    "defaults.disk".into()
                };
                if !path.is_file() {
                    self.error(
                        &d.span(),
                        which,
                        format!(
                            "backing image '{}' does not exist (make one with `uml_lab image busybox {}`)",
                            path.display(),
                            d.get_ref()
                        ),
                    );
                }
                path
            }
            (None, None) => {
                self.error(
                    &machine.span(),
                    format!("{field}.disk"),
                    "no disk: set `disk` here or in [defaults]",
                );
                PathBuf::new()
            }
        };
        let consoles = match (&raw.consoles, &defaults.consoles) {
            (Some(c), _) => self.consoles(c, &format!("{field}.consoles")),
            (None, Some(c)) => self.consoles(c, "defaults.consoles"),
            (None, None) => vec![Console::Pts],
        };
        let restart = match (&raw.restart, &defaults.restart) {
            (Some(r), _) | (None, Some(r)) => match r.get_ref().as_str() {
                "no" => Restart::No,
                "on-failure" => Restart::OnFailure,
                "always" => Restart::Always,
                other => {
                    self.error(
                        &r.span(),
                        format!("{field}.restart"),
                        format!(
                            "unknown policy '{other}': use \"no\", \"on-failure\" or \"always\""
                        ),
                    );
                    Restart::No
                }
            },
            (None, None) => Restart::No,
        };
        let watchdog_timeout = raw.watchdog_timeout.as_ref().map(|t| {
            let value = *t.get_ref();
            if !(value.is_finite() && value > 0.0) {
                self.error(
                    &t.span(),
                    format!("{field}.watchdog_timeout"),
                    "expected a positive number of seconds",
                );
            }
            value
        });
        let mut interfaces = Vec::new();
        for (i, iface) in raw.interfaces.iter().enumerate() {
            let ifield = format!("{field}.interfaces[{i}]");
            let r = iface.get_ref();
            let network = r.network.get_ref().clone();
            let raw_net = networks.get(&network).map(Spanned::get_ref);
            if raw_net.is_none() {
                self.error(
                    &r.network.span(),
                    format!("{ifield}.network"),
                    format!("no network '{network}' in [networks]"),
                );
            }
            if let Some(link) = &r.link {
                self.check_link(link, &format!("{ifield}.link"));
            }
            let link = merged_link(raw_net.and_then(|n| n.link.as_ref()), r.link.as_ref());
            let vlan = self.port_vlan(r, raw_net, &ifield);
            let mac = match &r.mac {
                Some(m) => match parse_mac(m.get_ref()) {
                    Some(bytes) if bytes[0] & 1 == 0 && bytes != [0; 6] => {
                        m.get_ref().to_ascii_lowercase()
                    }
                    _ => {
                        self.error(
                            &m.span(),
                            format!("{ifield}.mac"),
                            format!(
                                "'{}' is not a unicast MAC address like \"02:00:00:00:00:01\"",
                                m.get_ref()
                            ),
                        );
                        m.get_ref().clone()
                    }
                },
                None => derived_mac(lab, name, i),
            };
            if let Some(a) = &r.address {
                if !valid_cidr(a.get_ref()) {
                    self.error(
                        &a.span(),
                        format!("{ifield}.address"),
                        "expected an IPv4 address with prefix length, like \"10.99.1.1/24\"",
                    );
                }
            }
            interfaces.push(Interface {
                network,
                mac,
                address: r.address.as_ref().map(|a| a.get_ref().clone()),
                vlan,
                link,
            });
        }
        for (i, arg) in raw.kernel_args.iter().enumerate() {
            let text = arg.get_ref();
            let key = text.split(['=', ':']).next().unwrap_or("");
            let managed = [
                "ubd0", "umid", "uml_dir", "mem", "mconsole", "hostfs", "con", "ssl",
            ];
            if managed.contains(&key)
                || key.starts_with("con") && key[3..].bytes().all(|b| b.is_ascii_digit())
                || key.starts_with("eth") && key[3..].bytes().all(|b| b.is_ascii_digit())
                || key.starts_with("vec") && key[3..].bytes().all(|b| b.is_ascii_digit())
            {
                self.error(
                    &arg.span(),
                    format!("{field}.kernel_args[{i}]"),
                    format!("`{key}` is set by uml_lab (use the machine's own fields)"),
                );
            }
        }
        Machine {
            name: name.to_owned(),
            kernel,
            memory,
            disk,
            consoles,
            kernel_args: raw
                .kernel_args
                .iter()
                .map(|a| a.get_ref().clone())
                .collect(),
            restart,
            startup: raw.startup.as_ref().map(|s| s.get_ref().clone()),
            interfaces,
            watchdog_timeout,
            host: on_host,
        }
    }

    /// An interface's `vlan`, or `trunk` and `native`, else its network's `vlan`.
    fn port_vlan(
        &mut self,
        r: &RawInterface,
        net: Option<&RawNetwork>,
        field: &str,
    ) -> Option<PortVlan> {
        if let (Some(v), Some(_)) = (&r.vlan, &r.trunk) {
            self.error(
                &v.span(),
                format!("{field}.vlan"),
                "an access port (`vlan`) or a trunk (`trunk`), not both",
            );
        }
        if let (Some(n), None) = (&r.native, &r.trunk) {
            self.error(
                &n.span(),
                format!("{field}.native"),
                "`native` is the untagged VLAN of a `trunk`: set `trunk` too",
            );
        }
        if let Some(trunk) = &r.trunk {
            let vlans: Vec<u16> = trunk
                .get_ref()
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.vid(v, &format!("{field}.trunk[{i}]")))
                .collect();
            if trunk.get_ref().is_empty() {
                self.error(
                    &trunk.span(),
                    format!("{field}.trunk"),
                    "a trunk carries at least one VLAN",
                );
            }
            let native = r
                .native
                .as_ref()
                .and_then(|n| self.vid(n, &format!("{field}.native")));
            let port = PortVlan::Trunk { vlans, native };
            // The switch's own parser has the last word (the native VLAN
            // must be one the trunk carries, ...).
            if let Err(e) =
                format!("unix:x,{}", port.options()).parse::<uml_switch::endpoint::EndpointSpec>()
            {
                let message = e.to_string();
                self.error(
                    &trunk.span(),
                    format!("{field}.trunk"),
                    message.strip_prefix("--endpoint: ").unwrap_or(&message),
                );
            }
            return Some(port);
        }
        if let Some(v) = &r.vlan {
            return self.vid(v, &format!("{field}.vlan")).map(PortVlan::Access);
        }
        // The network's default was checked with the network.
        net.and_then(|n| n.vlan.as_ref())
            .and_then(|v| u16::try_from(*v.get_ref()).ok())
            .filter(|v| (1..=4094).contains(v))
            .map(PortVlan::Access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> Host {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("linux.uml"), b"").unwrap();
        Host {
            path: vec![bin],
            root: false,
        }
    }

    fn check(text: &str) -> Result<Lab, LabErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.img"), b"x").unwrap();
        parse(text, &dir.path().join("lab.toml"), &host(dir.path()))
    }

    const GOOD: &str = r#"
[defaults]
disk = "root.img"

[networks.lan]

[machines.a]
interfaces = [{ network = "lan", address = "10.99.1.1/24" }]

[machines.b]
memory = "96M"
consoles = ["log", "port:9000"]
restart = "on-failure"
interfaces = [{ network = "lan", mac = "02:00:00:00:00:02" }]
"#;

    #[test]
    fn a_good_lab_resolves_with_derived_macs() {
        let lab = check(GOOD).unwrap();
        assert_eq!(lab.name, "lab");
        let a = lab.machine("a").unwrap();
        assert_eq!(a.memory, "64M");
        assert_eq!(a.consoles, vec![Console::Pts]);
        assert_eq!(a.interfaces[0].mac, derived_mac("lab", "a", 0));
        assert!(parse_mac(&a.interfaces[0].mac).is_some());
        let b = lab.machine("b").unwrap();
        assert_eq!(b.consoles, vec![Console::Log, Console::Port(9000)]);
        assert_eq!(b.restart, Restart::OnFailure);
        assert_eq!(derived_mac("lab", "a", 0), derived_mac("lab", "a", 0));
        assert_ne!(derived_mac("lab", "a", 0), derived_mac("lab", "a", 1));
    }

    fn one_error(text: &str) -> LabError {
        let errors = check(text).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    #[test]
    fn an_unknown_field_is_placed_and_named() {
        let e = one_error(&GOOD.replace("memory = \"96M\"", "memroy = \"96M\""));
        assert_eq!((e.line, e.field.as_str()), (11, "memroy"), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_network_nobody_joins_is_refused() {
        let e = one_error(&format!("{GOOD}\n[networks.spare]\n"));
        assert_eq!(e.field, "networks.spare");
        assert_eq!(e.line, 16, "{e}");
    }

    #[test]
    fn a_duplicate_mac_names_both_interfaces() {
        let text = GOOD.replace(
            "interfaces = [{ network = \"lan\", address",
            "interfaces = [{ network = \"lan\", mac = \"02:00:00:00:00:02\", address",
        );
        let e = one_error(&text);
        assert_eq!(e.field, "machines.b.interfaces[0].mac", "{e}");
        assert!(e.message.contains("machines.a.interfaces[0]"), "{e}");
        assert_eq!(e.line, 14);
    }

    #[test]
    fn a_missing_backing_image_is_refused() {
        let e = one_error(&GOOD.replace("root.img", "nowhere.img"));
        assert_eq!((e.line, e.field.as_str()), (3, "defaults.disk"), "{e}");
    }

    #[test]
    fn mgmt_is_refused_by_name_and_capture_is_checked() {
        for (field, name, says) in [
            ("mgmt = true", "networks.lan.mgmt", "net/lan/mgmt"),
            (
                "capture = 3",
                "networks.lan.capture",
                "expected a file name",
            ),
            (
                "capture = { file = \"x.pcapng\", rotate = \"10\" }",
                "networks.lan.capture.rotate",
                "4096",
            ),
            (
                "capture = { file = \"x.pcapng\", every = true }",
                "networks.lan.capture.every",
                "unknown field",
            ),
            (
                "capture = \"no/such/dir/x.pcapng\"",
                "networks.lan.capture",
                "does not exist",
            ),
        ] {
            let e =
                one_error(&GOOD.replace("[networks.lan]\n", &format!("[networks.lan]\n{field}\n")));
            assert_eq!(e.field, name, "{e}");
            assert!(e.message.contains(says), "{e}");
            assert_eq!(e.line, 6);
        }
        let e = one_error(&GOOD.replace("memory = \"96M\"", "host = \"far\""));
        assert_eq!(e.field, "machines.b.host");
    }

    #[test]
    fn capture_becomes_the_switch_options() {
        let lab = check(&GOOD.replace(
            "[networks.lan]\n",
            "[networks.lan]\ncapture = { file = \"lan.pcapng\", outbound = true, rotate = \"1M,3\" }\n",
        ))
        .unwrap();
        let capture = lab.networks[0].capture.clone().unwrap();
        assert!(capture.file.is_absolute() && capture.file.ends_with("lan.pcapng"));
        let args: Vec<String> = capture
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[2..], ["--pcap-outbound", "--pcap-rotate", "1M,3"]);
        let plain = check(&GOOD.replace(
            "[networks.lan]\n",
            "[networks.lan]\ncapture = \"lan.pcapng\"\n",
        ))
        .unwrap();
        assert_eq!(plain.networks[0].capture.as_ref().unwrap().args().len(), 2);
    }

    #[test]
    fn vlans_and_links_resolve_to_endpoint_options() {
        let text = GOOD
            .replace(
                "[networks.lan]\n",
                "[networks.lan]\nvlan = 10\nlink = { delay = \"50ms\", loss = \"1%\" }\n",
            )
            .replace(
                "mac = \"02:00:00:00:00:02\" }",
                "mac = \"02:00:00:00:00:02\", trunk = [10, 20], native = 20, link = { delay = 100, dir = \"both\" } }",
            );
        let lab = check(&text).unwrap();
        let a = &lab.machine("a").unwrap().interfaces[0];
        assert_eq!(
            a.endpoint_options().as_deref(),
            Some("vlan=10,delay=50ms,loss=1%")
        );
        let b = &lab.machine("b").unwrap().interfaces[0];
        assert_eq!(
            b.endpoint_options().as_deref(),
            Some("trunk=10:20,native=20,delay=100,loss=1%,dir=both")
        );
        for option in [a, b].map(|i| i.endpoint_options().unwrap()) {
            format!("unix:/x,{option}")
                .parse::<uml_switch::endpoint::EndpointSpec>()
                .unwrap();
        }
    }

    #[test]
    fn bad_vlans_and_links_are_placed_and_named() {
        let errors = check(
            &GOOD
                .replace("[networks.lan]\n", "[networks.lan]\nvlan = 5000\n")
                .replace(
                    "address = \"10.99.1.1/24\" }",
                    "address = \"10.99.1.1/24\", native = 3, link = { delay = \"soon\", speed = 1 } }",
                ),
        )
        .unwrap_err()
        .0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "networks.lan.vlan",
                "machines.a.interfaces[0].native",
                "machines.a.interfaces[0].link.delay",
                "machines.a.interfaces[0].link.speed",
            ],
            "{errors:?}"
        );
    }

    const SPANNING: &str = r#"
[defaults]
disk = "root.img"

[hosts.one]
address = "10.99.0.1"

[hosts.two]
address = "10.99.0.2"

[networks.lan]
vxlan = { vni = 42 }

[networks.local]

[machines.a]
host = "one"
interfaces = [{ network = "lan", vlan = 7 }, { network = "local" }]

[machines.b]
host = "two"
interfaces = [{ network = "lan", vlan = 7 }]
"#;

    #[test]
    fn a_lab_spanning_hosts_splits_into_each_hosts_part() {
        let lab = check(SPANNING).unwrap();
        let one = lab.for_host(Some("one")).unwrap();
        assert_eq!(one.machines.len(), 1);
        assert_eq!(one.networks.len(), 2);
        assert_eq!(
            one.network("lan").unwrap().uplink.as_deref(),
            Some("local=10.99.0.1:4789,vni=42,remote=10.99.0.2:4789,trunk=7")
        );
        assert_eq!(one.network("local").unwrap().uplink, None);
        let two = lab.for_host(Some("two")).unwrap();
        assert_eq!(two.machine("b").unwrap().host.as_deref(), Some("two"));
        assert!(two.network("local").is_none());
        let uplink = two.network("lan").unwrap().uplink.clone().unwrap();
        assert!(uplink.contains("remote=10.99.0.1:4789"), "{uplink}");
        uplink.parse::<uml_switch::vxlan::VxlanConfig>().unwrap();
        assert!(lab.for_host(Some("three")).is_err());
        assert!(lab.for_host(None).unwrap().machines.len() == 2);
    }

    #[test]
    fn a_network_across_hosts_needs_vxlan() {
        let e = one_error(&SPANNING.replace("vxlan = { vni = 42 }", ""));
        assert_eq!(e.field, "networks.lan", "{e}");
        assert_eq!(e.line, 11, "{e}");
        let e = one_error(&SPANNING.replace("host = \"two\"", "host = \"three\""));
        assert_eq!((e.line, e.field.as_str()), (21, "machines.b.host"), "{e}");
        let e = one_error(&SPANNING.replace("vni = 42", "vni = 42, group = \"10.99.0.9\""));
        assert_eq!(e.field, "networks.lan.vxlan.group", "{e}");
    }

    #[test]
    fn bad_values_and_managed_kernel_args_are_refused() {
        let errors = check(
            &GOOD
                .replace("\"96M\"", "\"lots\"")
                .replace("\"port:9000\"", "\"port:99999\"")
                .replace("\"on-failure\"", "\"sometimes\"")
                .replace(
                    "[machines.b]",
                    "[machines.b]\nkernel_args = [\"quiet\", \"eth3=tuntap\"]",
                ),
        )
        .unwrap_err()
        .0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "machines.b.kernel_args[1]",
                "machines.b.memory",
                "machines.b.consoles[1]",
                "machines.b.restart",
            ]
        );
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        let e = one_error("[machines.a]\ndisk = \"root.img\nmemory = 1\n");
        assert_eq!(e.line, 2, "{e}");
    }
}
