//! Refusing files a running UML holds.
//!
//! The kernel takes POSIX whole-file locks: a write lock on the COW and a read
//! lock on the backing file. We take open-file-description locks, which conflict
//! with those, and keep them for the whole merge so that no UML can start on the
//! files meanwhile (its own lock attempt fails and it refuses the disk).

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use crate::MooError;

/// The lock a merge needs on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it: conflicts only with writers (a UML running on it).
    Read,
    /// Rewrite it: conflicts with every user, readers included.
    Write,
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
pub fn lock(file: &File, path: &Path, access: Access) -> Result<(), MooError> {
    let kind = match access {
        Access::Read => libc::F_RDLCK,
        Access::Write => libc::F_WRLCK,
    };
    let wanted = whole_file(kind);
    match fcntl(file, FcntlArg::F_OFD_SETLK(&wanted)) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::EACCES) => {
            let mut probe = whole_file(kind);
            let holder = match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
                // An OFD lock reports pid -1: its owner is not a process.
                Ok(_) if probe.l_type != short(libc::F_UNLCK) && probe.l_pid > 0 => {
                    format!(" by process {}", probe.l_pid)
                }
                _ => String::new(),
            };
            Err(MooError::Locked {
                path: path.to_path_buf(),
                holder,
            })
        }
        Err(errno) => Err(MooError::Io {
            action: "locking",
            path: path.to_path_buf(),
            source: errno.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn read_locks_share_and_write_locks_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, b"data").unwrap();
        let open_rw = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let (a, b, c) = (open_rw(), open_rw(), open_rw());
        lock(&a, &path, Access::Read).unwrap();
        lock(&b, &path, Access::Read).unwrap();
        let err = lock(&c, &path, Access::Write).unwrap_err();
        assert!(matches!(err, MooError::Locked { .. }), "{err}");
        drop((a, b));
        lock(&c, &path, Access::Write).unwrap();
    }

    #[test]
    fn a_posix_lock_of_another_process_names_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, b"data").unwrap();
        // flock(1) takes flock(2) locks, which do not conflict; python's lockf
        // takes the fcntl POSIX lock a UML takes.
        let mut holder = Command::new("python3")
            .arg("-c")
            .arg("import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let file = File::open(&path).unwrap();
        let err = lock(&file, &path, Access::Read).unwrap_err();
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(
            err.to_string()
                .contains(&format!("by process {}", holder.id())),
            "{err}"
        );
    }
}
