//! A daemon's pid file: written whole or not at all, never through a planted
//! symlink or over anything that is not a stale pid file, and removed at exit
//! only while it is still ours.
//!
//! It is prepared before a daemon forks (so that a refused path is reported
//! while the caller's terminal still listens) and published afterwards, when
//! the daemon's own pid is known.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::publish::{NewFile, PublishError, Replace};

/// A pid file longer than this is not one: it is refused, never replaced.
const MAX_PID_FILE: u64 = 32;

/// Why a pid file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Something is at the path that is not a stale pid file.
    #[error("pid file '{}' {why}; refusing to replace it", path.display())]
    Occupied {
        /// The path.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// A system call failed.
    #[error("pid file '{}': {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl PidFileError {
    fn occupied(path: &Path, why: impl Into<String>) -> Self {
        Self::Occupied {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }

    fn io(path: &Path) -> impl Fn(io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io {
            path: path.clone(),
            source,
        }
    }
}

/// What may be replaced at a pid file's path: nothing there (`Ok(false)`) or
/// a regular file holding nothing but the pid of a process that is gone
/// (`Ok(true)`). A symlink is never followed or replaced.
fn replaceable(path: &Path) -> Result<bool, PidFileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PidFileError::io(path)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(PidFileError::occupied(path, "is a symbolic link"));
    }
    if !meta.is_file() {
        return Err(PidFileError::occupied(path, "is not a regular file"));
    }
    if meta.len() > MAX_PID_FILE {
        return Err(PidFileError::occupied(path, "is not a pid file"));
    }
    // Opened without following a link or waiting on a FIFO swapped in since
    // the look above, and judged again by what was opened.
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.is_file() {
                f.take(MAX_PID_FILE).read_to_string(&mut text)
            } else {
                Err(io::ErrorKind::InvalidData.into())
            }
        })
        .map_err(|_| PidFileError::occupied(path, "is not a pid file"))?;
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return Ok(true);
    }
    let pid = text
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| PidFileError::occupied(path, "is not a pid file"))?;
    // EPERM: the process exists under another user.
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => Ok(true),
        _ => Err(PidFileError::occupied(
            path,
            format!("names process {pid}, which is running"),
        )),
    }
}

/// A pid file checked and created beside its path, not yet published.
#[derive(Debug)]
pub struct PreparedPidFile {
    new: NewFile,
    path: PathBuf,
    replace: bool,
}

impl PreparedPidFile {
    /// Checks `path` (see the module's rules) and creates the new file beside it.
    pub fn prepare(path: &Path) -> Result<Self, PidFileError> {
        // Absolute, so that a daemon's chdir("/") does not move it.
        let path = std::path::absolute(path).map_err(PidFileError::io(path))?;
        let replace = replaceable(&path)?;
        let new = NewFile::beside(&path, ".pid-", 0o644).map_err(PidFileError::io(&path))?;
        Ok(Self { new, path, replace })
    }

    /// Writes this process's pid and renames the file into place.
    pub fn publish(self) -> Result<PidFile, PidFileError> {
        let pid = std::process::id();
        let io = PidFileError::io(&self.path);
        let mut file = self.new.file();
        file.write_all(format!("{pid}\n").as_bytes()).map_err(&io)?;
        let meta = file.metadata().map_err(&io)?;
        // Without a stale file to replace, whatever appeared since the check is refused.
        match self.new.publish(Replace::existing_if(self.replace)) {
            Ok(()) => {}
            Err(PublishError::Exists(_)) => {
                return Err(PidFileError::occupied(&self.path, "appeared meanwhile"));
            }
            Err(PublishError::Io(e)) => return Err(io(e)),
        }
        Ok(PidFile {
            path: self.path,
            identity: (meta.dev(), meta.ino()),
            contents: format!("{pid}\n"),
        })
    }
}

/// A published pid file, removed when dropped if it is still the file we wrote
/// and still holds our pid.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    identity: (u64, u64),
    contents: String,
}

impl PidFile {
    /// Where it is (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let same_file = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == self.identity);
        if same_file && std::fs::read_to_string(&self.path).is_ok_and(|t| t == self.contents) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn written_whole_and_removed_while_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sw.pid");
        let pid_file = PreparedPidFile::prepare(&path)
            .expect("prepare")
            .publish()
            .expect("publish");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
        drop(pid_file);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn a_replaced_file_is_left_at_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sw.pid");
        let pid_file = PreparedPidFile::prepare(&path)
            .expect("prepare")
            .publish()
            .expect("publish");
        std::fs::remove_file(&path).expect("rm");
        // Another switch's, which may even have our old inode number.
        std::fs::write(&path, "1\n").expect("write");
        drop(pid_file);
        assert!(path.exists(), "a file that is not ours was removed");
    }

    #[test]
    fn symlinks_other_files_and_live_pids_are_refused_stale_pids_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("victim"), "precious").expect("write");
        symlink(d.join("victim"), d.join("link")).expect("symlink");
        symlink(d.join("nowhere"), d.join("dangling")).expect("symlink");
        std::fs::write(d.join("text"), "not a pid\n").expect("write");
        std::fs::write(d.join("live"), format!("{}\n", std::process::id())).expect("write");
        std::fs::create_dir(d.join("dir")).expect("mkdir");
        for name in ["link", "dangling", "text", "live", "dir"] {
            assert!(
                matches!(
                    PreparedPidFile::prepare(&d.join(name)),
                    Err(PidFileError::Occupied { .. })
                ),
                "{name} was accepted"
            );
        }
        assert_eq!(
            std::fs::read_to_string(d.join("victim")).expect("read"),
            "precious"
        );
        assert!(
            std::fs::symlink_metadata(d.join("link"))
                .expect("stat")
                .is_symlink()
        );
        // i32::MAX is above any pid_max: no such process.
        std::fs::write(d.join("stale"), format!("{}\n", i32::MAX)).expect("write");
        let pid_file = PreparedPidFile::prepare(&d.join("stale"))
            .expect("a stale pid file is replaced")
            .publish()
            .expect("publish");
        assert_eq!(
            std::fs::read_to_string(pid_file.path()).expect("read"),
            format!("{}\n", std::process::id())
        );
    }
}
