//! Whether the process an instance directory names is the machine, and
//! whether it is still alive.
//!
//! A `pid` file is only a claim: in a shared uml dir anyone can write one. The
//! process it names is taken to be the machine only when it holds a socket
//! bound to the very file we talk to (the same device and inode), which no
//! other process can arrange for an unrelated one.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::locate::Machine;

/// Why a machine's process could not be told apart from any other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotProven {
    /// No instance directory, or no readable `pid` file in it.
    #[error("no pid file beside '{}'", socket.display())]
    NoPidFile {
        /// The machine's socket.
        socket: PathBuf,
    },
    /// The `pid` file names no running process.
    #[error("pid {pid} (from '{}') is not running", pid_file.display())]
    NotRunning {
        /// The PID named.
        pid: i32,
        /// The file that named it.
        pid_file: PathBuf,
    },
    /// The machine's socket is not a socket (or is gone).
    #[error("'{}' is not a socket", socket.display())]
    NotASocket {
        /// The path.
        socket: PathBuf,
    },
    /// The process runs as another user than the one who owns the socket.
    #[error(
        "pid {pid} runs as uid {process_owner}, but '{}' belongs to uid {socket_owner}",
        socket.display()
    )]
    OtherOwner {
        /// The PID named.
        pid: i32,
        /// Its uid.
        process_owner: u32,
        /// The machine's socket.
        socket: PathBuf,
        /// The socket file's owner.
        socket_owner: u32,
    },
    /// The process's sockets cannot be read (another user's process).
    #[error("cannot inspect pid {pid}: {reason}")]
    Unreadable {
        /// The PID named.
        pid: i32,
        /// What failed.
        reason: String,
    },
    /// The process holds no socket bound to the machine's socket file.
    #[error("pid {pid} (from '{}') does not own '{}'", pid_file.display(), socket.display())]
    NotTheOwner {
        /// The PID named.
        pid: i32,
        /// The file that named it.
        pid_file: PathBuf,
        /// The machine's socket.
        socket: PathBuf,
    },
}

/// A process identified by its PID and start time, so a reused PID is not
/// taken for the one we saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// The PID.
    pub pid: i32,
    start_time: u64,
}

impl Process {
    /// The process `pid`, if it exists and has not exited.
    pub fn find(pid: i32) -> Option<Self> {
        let (state, start_time) = stat(pid)?;
        (!exited(state)).then_some(Self { pid, start_time })
    }

    /// Whether it still runs (a zombie does not: its files are closed).
    pub fn is_running(&self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| !exited(state) && start == self.start_time)
    }
}

fn exited(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// State and start time from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of the file, the 20th after the state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

impl Machine {
    /// The process the `pid` file names, if it is running (not proven to be the machine).
    pub fn claimed_process(&self) -> Option<Process> {
        Process::find(self.pid()?)
    }

    /// The machine's process, proven: the `pid` file's process holds a socket
    /// bound to this machine's socket file.
    pub fn process(&self) -> Result<Process, NotProven> {
        let socket = self.socket.clone();
        let (Some(dir), Some(pid)) = (&self.instance_dir, self.pid()) else {
            return Err(NotProven::NoPidFile { socket });
        };
        let pid_file = dir.join("pid");
        let Some(process) = Process::find(pid) else {
            return Err(NotProven::NotRunning { pid, pid_file });
        };
        // Not following a final symlink: a link to another program's socket
        // must not make that program "the machine".
        let (target, socket_owner) = match std::fs::symlink_metadata(&socket) {
            Ok(meta) if meta.file_type().is_socket() => ((meta.dev(), meta.ino()), meta.uid()),
            _ => return Err(NotProven::NotASocket { socket }),
        };
        // A UML creates its own mconsole socket: the machine runs as the
        // socket file's owner. This also holds when the socket table below is
        // forged (a bound name may hold newlines and fake lines): a process of
        // another user is never taken for the machine, so nobody can have
        // another user's process signalled.
        let process_owner = std::fs::metadata(format!("/proc/{pid}"))
            .map(|meta| meta.uid())
            .map_err(|e| NotProven::Unreadable {
                pid,
                reason: format!("its owner: {e}"),
            })?;
        if process_owner != socket_owner {
            return Err(NotProven::OtherOwner {
                pid,
                process_owner,
                socket,
                socket_owner,
            });
        }
        if owns_socket_file(pid, target)? {
            Ok(process)
        } else {
            Err(NotProven::NotTheOwner {
                pid,
                pid_file,
                socket,
            })
        }
    }
}

/// Whether process `pid` has an open socket bound to the file `(dev, ino)`.
fn owns_socket_file(pid: i32, target: (u64, u64)) -> Result<bool, NotProven> {
    let unreadable = |what: &str, e: std::io::Error| NotProven::Unreadable {
        pid,
        reason: format!("{what}: {e}"),
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| unreadable("its fds", e))?;
    let inodes: Vec<u64> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| socket_inode(&link))
        .collect();
    if inodes.is_empty() {
        return Ok(false);
    }
    // Its network namespace's table of Unix sockets gives each socket's bound path.
    // Bytes: abstract names (the kernel's daemon transport binds binary ones)
    // and paths need not be UTF-8.
    let table = std::fs::read(format!("/proc/{pid}/net/unix"))
        .map_err(|e| unreadable("its unix socket table", e))?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    Ok(bound_paths(&table)
        .filter(|(inode, _)| inodes.contains(inode))
        .any(|(_, path)| {
            // The path as the process sees it, through its root.
            let seen = if path.is_absolute() {
                root.join(path.strip_prefix("/").unwrap_or(path))
            } else {
                PathBuf::from(format!("/proc/{pid}/cwd")).join(path)
            };
            std::fs::metadata(&seen)
                .or_else(|_| std::fs::metadata(path))
                .is_ok_and(|m| (m.dev(), m.ino()) == target)
        }))
}

/// The inode of a `socket:[N]` fd link.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `(inode, path)` of every socket in a `/proc/net/unix` table bound to a
/// filesystem path (abstract names start with '@').
fn bound_paths(table: &[u8]) -> impl Iterator<Item = (u64, &Path)> {
    table.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        // Num RefCount Protocol Flags Type St Inode Path, padded with spaces;
        // the path is the rest of the line and may hold spaces itself.
        let mut rest = line;
        let mut inode: &[u8] = b"";
        for _ in 0..7 {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            rest = &rest[start..];
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            (inode, rest) = rest.split_at(end);
        }
        let inode = std::str::from_utf8(inode).ok()?.parse().ok()?;
        let path = rest.strip_prefix(b" ")?;
        (!path.is_empty() && !path.starts_with(b"@"))
            .then(|| (inode, Path::new(std::ffi::OsStr::from_bytes(path))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn machine(dir: &Path) -> Machine {
        Machine {
            name: "vm".into(),
            socket: dir.join("mconsole"),
            instance_dir: Some(dir.to_path_buf()),
            found_in: None,
        }
    }

    #[test]
    fn the_owner_of_the_socket_is_proven() {
        let dir = tempfile::tempdir().unwrap();
        let _sock = UnixDatagram::bind(dir.path().join("mconsole")).unwrap();
        std::fs::write(dir.path().join("pid"), format!("{}\n", std::process::id())).unwrap();
        let m = machine(dir.path());
        let process = m.process().unwrap();
        assert_eq!(i64::from(process.pid), i64::from(std::process::id()));
        assert!(process.is_running());
    }

    #[test]
    fn a_pid_that_does_not_own_the_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A live socket, but the pid file names another process (our parent).
        let _sock = UnixDatagram::bind(dir.path().join("mconsole")).unwrap();
        let other = nix::unistd::getppid().as_raw();
        std::fs::write(dir.path().join("pid"), format!("{other}\n")).unwrap();
        let err = machine(dir.path()).process().unwrap_err();
        assert!(
            matches!(err, NotProven::NotTheOwner { pid, .. } if pid == other),
            "{err}"
        );
        // A socket file nobody holds any more.
        let stale = tempfile::tempdir().unwrap();
        drop(UnixDatagram::bind(stale.path().join("mconsole")).unwrap());
        std::fs::write(
            stale.path().join("pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(matches!(
            machine(stale.path()).process(),
            Err(NotProven::NotTheOwner { .. })
        ));
        // No pid file, or a pid that is not running.
        let bare = tempfile::tempdir().unwrap();
        assert!(matches!(
            machine(bare.path()).process(),
            Err(NotProven::NoPidFile { .. })
        ));
        std::fs::write(bare.path().join("pid"), "999999999\n").unwrap();
        assert!(matches!(
            machine(bare.path()).process(),
            Err(NotProven::NotRunning { .. })
        ));
    }

    #[test]
    fn a_symlink_to_someone_elses_socket_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _sock = UnixDatagram::bind(&real).unwrap();
        let instance = dir.path().join("vm");
        std::fs::create_dir(&instance).unwrap();
        std::os::unix::fs::symlink(&real, instance.join("mconsole")).unwrap();
        std::fs::write(instance.join("pid"), format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(
            machine(&instance).process(),
            Err(NotProven::NotASocket { .. })
        ));
    }

    #[test]
    fn proc_net_unix_lines() {
        let table = b"Num       RefCount Protocol Flags    Type St Inode Path\n\
                     0000000000000000: 00000002 00000000 00000000 0002 01  4242 /tmp/uml/vm 1/mconsole\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 17 @/abstract\n\
                     0000000000000000: 00000002 00000000 00000000 0002 01 19 @\xd2\x04\xff\n\
                     0000000000000000: 00000002 00000000 00000000 0002 01 20 /tmp/\xe9t\xe9\n\
                     0000000000000000: 00000003 00000000 00000000 0001 03  18\n";
        let paths: Vec<_> = bound_paths(table).collect();
        let latin1 = std::ffi::OsStr::from_bytes(b"/tmp/\xe9t\xe9");
        assert_eq!(
            paths,
            [
                (4242, Path::new("/tmp/uml/vm 1/mconsole")),
                (20, Path::new(latin1)),
            ]
        );
        assert_eq!(socket_inode(Path::new("socket:[77]")), Some(77));
        assert_eq!(socket_inode(Path::new("pipe:[77]")), None);
    }
}
