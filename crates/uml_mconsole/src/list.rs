//! `--list`: every instance directory under the uml dirs, and whether it is alive.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;

use crate::client::Client;
use crate::locate::{Machine, UmlDirs};

/// One instance directory.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// The umid (the directory's name).
    pub umid: String,
    /// The instance directory.
    pub dir: PathBuf,
    /// The uml dir it was found in (`~/.uml`, `/tmp/uml`, `~/.netkit/mconsole`...).
    pub found_in: PathBuf,
    /// The PID in its `pid` file.
    pub pid: Option<i32>,
    /// Whether a process with that PID exists.
    pub alive: bool,
    /// Whether the mconsole socket answered `version`.
    pub answers: bool,
    /// The kernel's `version` reply.
    pub version: Option<String>,
    /// Left behind by a UML that died without cleaning up.
    pub stale: bool,
}

/// Whether a process exists (EPERM means it does, just not ours).
pub fn process_exists(pid: i32) -> bool {
    pid > 0 && matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM))
}

/// Examines one instance directory of `found_in`, asking its socket for `version`.
pub fn examine(dir: &Path, found_in: &Path, client: &Client) -> Instance {
    let umid = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine = Machine {
        name: umid.clone(),
        socket: dir.join("mconsole"),
        instance_dir: Some(dir.to_path_buf()),
        found_in: Some(found_in.to_path_buf()),
    };
    let pid = machine.pid();
    let alive = pid.is_some_and(process_exists);
    let version = machine
        .socket
        .exists()
        .then(|| client.request(&machine, b"version").ok())
        .flatten()
        .filter(|reply| reply.is_ok())
        .map(|reply| String::from_utf8_lossy(&reply.text).into_owned());
    Instance {
        umid,
        dir: dir.to_path_buf(),
        found_in: found_in.to_path_buf(),
        pid,
        alive,
        answers: version.is_some(),
        stale: !alive && version.is_none(),
        version,
    }
}

/// Every instance under `dirs`, sorted by uml dir then umid.
pub fn list(dirs: &UmlDirs, client: &Client) -> Vec<Instance> {
    let mut found = Vec::new();
    for dir in &dirs.0 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        here.sort();
        found.extend(here.iter().map(|d| examine(d, dir, client)));
    }
    found
}

/// Prints every instance under `dirs`: a header and one line each, or one JSON object each.
pub fn print(dirs: &UmlDirs, client: &Client, json: bool, out: &mut impl Write) -> io::Result<()> {
    if !json {
        writeln!(out, "{HEADER}")?;
    }
    for instance in list(dirs, client) {
        if json {
            // Strings, numbers and booleans always serialise.
            writeln!(
                out,
                "{}",
                serde_json::to_string(&instance).unwrap_or_default()
            )?;
        } else {
            writeln!(out, "{instance}")?;
        }
    }
    out.flush()
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let state = match (self.alive, self.answers) {
            (_, true) => "running",
            (true, false) => "not answering",
            (false, false) => "stale",
        };
        write!(
            f,
            "{:<16} {:>8}  {:<13}  {:<24}  {}",
            self.umid,
            pid,
            state,
            self.found_in.display(),
            self.version.as_deref().unwrap_or("-")
        )
    }
}

/// The header line of the human listing.
pub const HEADER: &str =
    "UMID                  PID  STATE          FOUND IN                  VERSION";
