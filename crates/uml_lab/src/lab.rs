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
}

/// A value not yet supported: any TOML value, kept only to be refused by name.
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    kernel: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    consoles: Option<Spanned<Vec<Spanned<String>>>>,
    restart: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    transport: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    host_tap: Option<Spanned<RawTap>>,
    vlan: Unsupported,
    capture: Unsupported,
    link: Unsupported,
    vxlan: Unsupported,
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
    vlan: Unsupported,
    link: Unsupported,
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

    fn unsupported(&mut self, value: &Unsupported, field: &str, needs: &str) {
        if let Some(value) = value {
            self.error(
                &value.span(),
                field,
                format!("not supported yet: it needs {needs}, which this build's uml_switch lacks; remove the field"),
            );
        }
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
        let networks: Vec<Network> = raw
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
        Lab {
            name,
            file: self.file.to_path_buf(),
            networks,
            machines,
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
        self.unsupported(&raw.vlan, &format!("{field}.vlan"), "VLANs per switch port");
        self.unsupported(
            &raw.capture,
            &format!("{field}.capture"),
            "the switch's capture (--pcap)",
        );
        self.unsupported(
            &raw.link,
            &format!("{field}.link"),
            "the switch's link emulation",
        );
        self.unsupported(
            &raw.vxlan,
            &format!("{field}.vxlan"),
            "the switch's VXLAN uplinks",
        );
        self.unsupported(
            &raw.mgmt,
            &format!("{field}.mgmt"),
            "the switch's management socket (--mgmt)",
        );
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
        let field = format!("machines.{name}");
        if !valid_name(name) {
            self.error(
                &machine.span(),
                &field,
                "a machine name is 1 to 32 letters, digits, '-' or '_'",
            );
        }
        let raw = machine.get_ref();
        if let Some(h) = &raw.host {
            if !matches!(h.get_ref().as_str(), "localhost" | "local") {
                self.error(
                    &h.span(),
                    format!("{field}.host"),
                    "not supported yet: machines on other hosts need the switch's VXLAN uplinks, which this build's uml_switch lacks; remove the field",
                );
            }
        }
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
            self.unsupported(&r.vlan, &format!("{ifield}.vlan"), "VLANs per switch port");
            self.unsupported(
                &r.link,
                &format!("{ifield}.link"),
                "the switch's link emulation",
            );
            let network = r.network.get_ref().clone();
            if !networks.contains_key(&network) {
                self.error(
                    &r.network.span(),
                    format!("{ifield}.network"),
                    format!("no network '{network}' in [networks]"),
                );
            }
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
        }
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
    fn features_the_switch_lacks_are_refused_by_name() {
        for (field, line) in [
            ("vlan = 10", "networks.lan.vlan"),
            ("capture = \"lan.pcap\"", "networks.lan.capture"),
            ("vxlan = { remote = \"10.99.0.2\" }", "networks.lan.vxlan"),
            ("mgmt = true", "networks.lan.mgmt"),
            ("link = { delay_ms = 10 }", "networks.lan.link"),
        ] {
            let e =
                one_error(&GOOD.replace("[networks.lan]\n", &format!("[networks.lan]\n{field}\n")));
            assert_eq!(e.field, line, "{e}");
            assert!(e.message.starts_with("not supported yet"), "{e}");
            assert_eq!(e.line, 6);
        }
        let e = one_error(&GOOD.replace("memory = \"96M\"", "host = \"far.example\""));
        assert_eq!(e.field, "machines.b.host");
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
