//! The run directory: every file a lab makes, and the state records that let
//! `status` and `down` find (and prove) its processes after the manager died.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::lab::Lab;

/// Why the run directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A state file holds something else than we write.
    #[error("{}: unreadable state: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        source: serde_json::Error,
    },
    /// No lab is up under the base directory (or several, and none was named).
    #[error("{0}")]
    NoLab(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory all labs' run directories live in: `--run-dir`, else
/// `$UML_LAB_RUN_DIR`, else `$XDG_RUNTIME_DIR/uml_lab`, else `/tmp/uml_lab-UID`.
pub fn base_dir(option: Option<&Path>) -> PathBuf {
    if let Some(dir) = option {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("UML_LAB_RUN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("uml_lab");
    }
    PathBuf::from(format!("/tmp/uml_lab-{}", nix::unistd::geteuid()))
}

/// Makes the base directory (mode 0700) if needed and insists that it is
/// ours and closed to others: in `/tmp`, another user could have made it
/// first and would then control every state file.
pub fn ensure_private(base: &Path) -> Result<(), RunDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !base.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .map_err(io_error(base))?;
    }
    let meta = std::fs::symlink_metadata(base).map_err(io_error(base))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(RunDirError::NoLab(format!(
            "{} must be a directory of uid {me} that others cannot write to (it belongs to uid {}, mode {:o}); use --run-dir",
            base.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// One lab's run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// Its path: `<base>/<lab name>`.
    pub path: PathBuf,
}

impl RunDir {
    /// The run directory of lab `name` under `base`.
    pub fn new(base: &Path, name: &str) -> Self {
        Self {
            path: base.join(name),
        }
    }

    /// The lab named `name`, or the only lab that is up under `base`.
    pub fn find(base: &Path, name: Option<&str>) -> Result<Self, RunDirError> {
        if let Some(name) = name {
            let dir = Self::new(base, name);
            return if dir.lab_json().is_file() {
                Ok(dir)
            } else {
                Err(RunDirError::NoLab(format!(
                    "no lab '{name}' is up under {}",
                    base.display()
                )))
            };
        }
        let mut labs: Vec<String> = std::fs::read_dir(base)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("lab.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        labs.sort();
        match labs.as_slice() {
            [one] => Ok(Self::new(base, one)),
            [] => Err(RunDirError::NoLab(format!(
                "no lab is up under {}",
                base.display()
            ))),
            many => Err(RunDirError::NoLab(format!(
                "several labs are up under {} ({}): name one with --lab",
                base.display(),
                many.join(", ")
            ))),
        }
    }

    /// The resolved lab, as `up` saw it.
    pub fn lab_json(&self) -> PathBuf {
        self.path.join("lab.json")
    }

    /// The supervisor's lock: held for its whole life.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.path.join("supervisor.lock")
    }

    /// The supervisor's identity record.
    pub fn supervisor_record(&self) -> PathBuf {
        self.path.join("supervisor.json")
    }

    /// The supervisor's own output.
    pub fn supervisor_log(&self) -> PathBuf {
        self.path.join("supervisor.log")
    }

    /// The event log, one JSON object a line.
    pub fn events(&self) -> PathBuf {
        self.path.join("events.log")
    }

    /// The uml dir every machine of the lab uses.
    pub fn uml_dir(&self) -> PathBuf {
        self.path.join("uml")
    }

    /// A network's directory.
    pub fn network_dir(&self, name: &str) -> PathBuf {
        self.path.join("net").join(name)
    }

    /// A network switch's control socket.
    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.network_dir(name).join("ctl")
    }

    /// A network switch's management socket (`--mgmt`).
    pub fn mgmt_socket(&self, name: &str) -> PathBuf {
        self.network_dir(name).join("mgmt")
    }

    /// A network switch's BESS socket.
    pub fn bess_socket(&self, name: &str) -> PathBuf {
        self.network_dir(name).join("bess")
    }

    /// The switch endpoint of a machine's interface that has a VLAN or a
    /// link of its own (a control socket or a BESS listener, as the network's).
    pub fn interface_socket(&self, network: &str, machine: &str, index: usize) -> PathBuf {
        self.network_dir(network).join(format!("{machine}.{index}"))
    }

    /// A network's state record.
    pub fn network_state(&self, name: &str) -> PathBuf {
        self.network_dir(name).join("state.json")
    }

    /// A machine's directory.
    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.path.join("vm").join(name)
    }

    /// A machine's COW disk.
    pub fn cow(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("disk.cow")
    }

    /// A machine's kernel output (and its `log` console).
    pub fn kernel_log(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("kernel.log")
    }

    /// A machine's mconsole notify socket, read by the supervisor.
    pub fn notify_socket(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("notify")
    }

    /// The host directory a machine sees through hostfs as `/lab`.
    pub fn share_dir(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("share")
    }

    /// What the user wants of a machine: `up` or `down`.
    pub fn wanted(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("wanted")
    }

    /// A machine's state record.
    pub fn machine_state(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("state.json")
    }

    /// A machine's umid.
    pub fn umid(lab: &str, machine: &str) -> String {
        format!("{lab}-{machine}")
    }

    /// A machine's mconsole socket.
    pub fn mconsole_socket(&self, lab: &str, machine: &str) -> PathBuf {
        self.uml_dir()
            .join(Self::umid(lab, machine))
            .join("mconsole")
    }

    /// The lab as `up` last wrote it.
    pub fn lab(&self) -> Result<Lab, RunDirError> {
        read_json(&self.lab_json())?.ok_or_else(|| {
            RunDirError::NoLab(format!(
                "{} is not a lab's run directory",
                self.path.display()
            ))
        })
    }

    /// Whether the user wants `machine` up.
    pub fn is_wanted(&self, machine: &str) -> bool {
        self.wanted_token(machine).is_some()
    }

    /// The user's latest request for `machine`: `up TOKEN` or `down TOKEN`.
    pub fn request(&self, machine: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.wanted(machine)).ok()?;
        Some(text.trim().to_owned())
    }

    /// The user's latest request for `machine`, while it is an `up`.
    pub fn wanted_token(&self, machine: &str) -> Option<String> {
        self.request(machine).filter(|r| r.starts_with("up "))
    }

    /// Records whether the user wants `machine` up, as a request with a
    /// fresh token: the supervisor starts again a machine that had ended on
    /// each new `up`, and records the last request it acted on, which
    /// `stop` waits for. Returns the request.
    pub fn set_wanted(&self, machine: &str, up: bool) -> Result<String, RunDirError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let request = format!("{} {nanos}", if up { "up" } else { "down" });
        write_atomic(&self.wanted(machine), format!("{request}\n").as_bytes())?;
        Ok(request)
    }

    /// Appends an event to the log.
    pub fn log_event(&self, subject: &str, event: &str, detail: &str) {
        let line = Event {
            time: now(),
            subject: subject.to_owned(),
            event: event.to_owned(),
            detail: detail.to_owned(),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.events())
            {
                let _ = writeln!(file, "{text}");
            }
        }
    }

    /// Every event logged so far.
    pub fn read_events(&self) -> Vec<Event> {
        std::fs::read_to_string(self.events())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: u64,
    /// The machine or network (or `lab`).
    pub subject: String,
    /// What happened: started, running, exited, restarting, hang, panic, ...
    pub event: String,
    /// Details.
    pub detail: String,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a JSON state file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RunDirError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RunDirError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Writes a JSON state file atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunDirError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| RunDirError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes a file under a temporary name and renames it into place, so a
/// reader never sees half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    std::fs::write(tmp.path(), bytes).map_err(io_error(path))?;
    tmp.persist(path)
        .map_err(|e| io_error(path)(e.error))
        .map(|_| ())
}

/// A process we started, recorded so that it is recognised later: PID, start
/// time (so a reused PID is not taken for it) and a word its command line
/// must contain (its umid, or its socket path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The PID.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// A word its command line contains.
    pub mark: String,
    /// When we started it, seconds since the epoch.
    pub started_at: u64,
}

impl ProcessRecord {
    /// Records the running process `pid`, which must carry `mark`.
    pub fn of(pid: u32, mark: &str) -> Option<Self> {
        let pid = i32::try_from(pid).ok()?;
        let (_, start_time) = stat(pid)?;
        Some(Self {
            pid,
            start_time,
            mark: mark.to_owned(),
            started_at: now(),
        })
    }

    /// Whether the recorded process still runs: same PID, same start time,
    /// not a zombie, and its command line carries the mark.
    pub fn is_alive(&self) -> bool {
        let Some((state, start)) = stat(self.pid) else {
            return false;
        };
        if start != self.start_time || matches!(state, 'Z' | 'X' | 'x') {
            return false;
        }
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        cmdline
            .split(|&b| b == 0)
            .any(|arg| contains(arg, self.mark.as_bytes()))
    }

    /// Sends `signal` to the recorded process's group, if it is still the
    /// process we started (our processes lead their own groups).
    pub fn signal_group(&self, signal: nix::sys::signal::Signal) -> bool {
        if !self.is_alive() {
            return false;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let in_own_group = nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid);
        if in_own_group {
            nix::sys::signal::killpg(pid, signal).is_ok()
        } else {
            nix::sys::signal::kill(pid, signal).is_ok()
        }
    }

    /// Sends `signal` to the recorded process alone, if it is still ours.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> bool {
        self.is_alive()
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal).is_ok()
    }

    /// Seconds since it was started.
    pub fn uptime(&self) -> u64 {
        now().saturating_sub(self.started_at)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// State and start time from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

/// Processes of process group `group` whose command line carries `mark`:
/// helpers a UML forked, left behind when the kernel itself was killed.
pub fn group_members(group: i32, mark: &str) -> Vec<i32> {
    uml_host::process::group_members(group)
        .into_iter()
        .filter(|m| m.has_arg_containing(mark.as_bytes()))
        .map(|m| m.pid)
        .collect()
}

/// Kills what is left of a kernel's process group (`group_members`) and
/// waits, at most `timeout`, until none of it runs. A UML's host processes
/// (its guest's processes) outlive its main process for a moment, and a
/// SIGKILL takes effect only as each exits: returning at once would leave
/// them running after `stop` or `down` said the machine was gone. Returns
/// whether they are all gone.
pub fn end_group_members(group: i32, mark: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let members = group_members(group, mark);
        if members.is_empty() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        for pid in members {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A machine's lifecycle state, as the supervisor records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineState {
    /// Started; its mconsole has not answered yet.
    Booting,
    /// Its mconsole answers.
    Running,
    /// Ended; waiting out the backoff before a restart.
    Restarting,
    /// Ended and not restarted (by policy).
    Exited,
    /// Stopped by `stop` or `down`.
    Stopped,
    /// Could not be started.
    Failed,
}

impl MachineState {
    /// The word `status` prints.
    pub fn word(self) -> &'static str {
        match self {
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// What the supervisor knows of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Its state.
    pub state: MachineState,
    /// The kernel process, while there is one.
    pub process: Option<ProcessRecord>,
    /// How many times the supervisor restarted it.
    pub restarts: u32,
    /// Failures in a row, for the backoff.
    pub failures: u32,
    /// When the next start may happen (seconds since the epoch).
    pub next_start: u64,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Why it could not start, when it could not.
    pub error: Option<String>,
    /// The request (`up TOKEN`, `down TOKEN`) last acted on.
    pub token: Option<String>,
}

impl MachineRecord {
    /// A machine not started yet.
    pub fn new() -> Self {
        Self {
            state: MachineState::Stopped,
            process: None,
            restarts: 0,
            failures: 0,
            next_start: 0,
            last_exit: None,
            error: None,
            token: None,
        }
    }
}

impl Default for MachineRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// What the supervisor knows of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkRecord {
    /// The switch process.
    pub switch: Option<ProcessRecord>,
    /// Whether we created the host tap (and so delete it at `down`).
    pub tap_created: bool,
    /// Why the switch could not start, when it could not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_base_directory_is_made_private_and_an_open_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("labs");
        ensure_private(&base).unwrap();
        let mode = std::fs::metadata(&base).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private(&base).unwrap_err().to_string();
        assert!(err.contains("others cannot write"), "{err}");
    }

    #[test]
    fn a_process_record_knows_its_process_and_not_a_stranger() {
        let me = ProcessRecord::of(std::process::id(), "").unwrap();
        assert!(me.is_alive());
        let marked = ProcessRecord {
            mark: "no-such-word-in-our-command-line".into(),
            ..me.clone()
        };
        assert!(!marked.is_alive());
        let reborn = ProcessRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reborn.is_alive());
    }
}
