//! Whole-file locks that conflict with a running UML's.
//!
//! The kernel takes POSIX whole-file locks on its disks: a write lock on the
//! COW file (or a plain disk) and a read lock on a backing file. We take
//! open-file-description locks, which conflict with those, and keep them as long
//! as the file stays open, so that no UML can start on the file meanwhile (its
//! own lock attempt fails and it refuses the disk).

use std::fs::File;
use std::io;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// The lock a tool needs on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it: conflicts only with writers (a UML running on it).
    Read,
    /// Rewrite or replace it: conflicts with every user, readers included.
    Write,
}

/// Why a file could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone holds a conflicting lock: the process, when the kernel names one.
    #[error("locked{}", by_holder(*holder))]
    Held {
        /// The holder's PID (a POSIX lock's owner; OFD locks have none).
        holder: Option<i32>,
    },
    /// The lock call itself failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// ` by process N` for a known holder, else nothing: the tail of a "locked" message.
pub fn by_holder(holder: Option<i32>) -> String {
    holder
        .map(|pid| format!(" by process {pid}"))
        .unwrap_or_default()
}

/// Opens the regular file at `path` read-only to lock it, or `None`: without
/// following a final symlink, without waiting on a FIFO swapped in meanwhile,
/// and judged by what was opened.
pub fn open_regular(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// A lock constant as `struct flock` stores it (a C short).
fn short(value: libc::c_int) -> libc::c_short {
    libc::c_short::try_from(value).expect("lock types and SEEK_SET are small constants")
}

fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: short(kind),
        l_whence: short(libc::SEEK_SET),
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Locks `file` for the life of its open file description, or says who holds it.
pub fn lock(file: &File, access: Access) -> Result<(), LockError> {
    let kind = match access {
        Access::Read => libc::F_RDLCK,
        Access::Write => libc::F_WRLCK,
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&whole_file(kind))) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::EACCES) => {
            let mut probe = whole_file(kind);
            let holder = match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
                // An OFD lock reports pid -1: its owner is not a process.
                Ok(_) if probe.l_type != short(libc::F_UNLCK) && probe.l_pid > 0 => {
                    Some(probe.l_pid)
                }
                _ => None,
            };
            Err(LockError::Held { holder })
        }
        Err(errno) => Err(LockError::Io(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn read_locks_share_and_write_locks_exclude() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::write(&path, b"data").expect("write");
        let open_rw = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open")
        };
        let (a, b, c) = (open_rw(), open_rw(), open_rw());
        lock(&a, Access::Read).expect("first reader");
        lock(&b, Access::Read).expect("second reader");
        assert!(matches!(
            lock(&c, Access::Write),
            Err(LockError::Held { holder: None })
        ));
        drop((a, b));
        lock(&c, Access::Write).expect("writer once the readers are gone");
    }

    #[test]
    fn a_posix_lock_of_another_process_names_its_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::write(&path, b"data").expect("write");
        // flock(1) takes flock(2) locks, which do not conflict; python's lockf
        // takes the fcntl POSIX lock a UML takes.
        let mut holder = Command::new("python3")
            .arg("-c")
            .arg("import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = holder.stdout.as_mut().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).expect("read");
        assert_eq!(line.trim(), "locked");
        let file = File::open(&path).expect("open");
        let result = lock(&file, Access::Read);
        holder.kill().expect("kill");
        holder.wait().expect("wait");
        let expected = i32::try_from(holder.id()).expect("pid");
        assert!(
            matches!(result, Err(LockError::Held { holder: Some(pid) }) if pid == expected),
            "{result:?}"
        );
    }
}
