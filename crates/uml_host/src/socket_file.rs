//! Unix sockets bound at a path, without ever deleting something that is not ours.
//!
//! A path is claimed only when nothing is there or a *stale* socket is: one
//! whose server is gone, which the kernel tells by refusing a connection
//! (`ECONNREFUSED`). Any other answer, a live server, a permission error, a
//! socket of another type, leaves the file alone. Before a stale socket is
//! removed its identity (device and inode) is checked again, so a socket that
//! a new server bound meanwhile is not taken for the stale one.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};

/// Why a socket path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    /// Another server answers on the path: a live server is left alone.
    #[error("The control socket '{}' has another server attached to it", path.display())]
    Live {
        /// The path.
        path: PathBuf,
    },
    /// A socket is there whose liveness cannot be told (a permission error, say).
    #[error("'{}' is a socket that may be in use ({source}); refusing to replace it", path.display())]
    Undecided {
        /// The path.
        path: PathBuf,
        /// What connecting to it said.
        source: io::Error,
    },
    /// The path does not fit a `sockaddr_un` (the C switch silently cut it).
    #[error("socket path '{}' is {len} bytes; a unix socket path holds at most {max}", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most that fits (107: `sun_path` less its NUL).
        max: usize,
    },
    /// Something that is not a socket is there; it is never deleted.
    #[error("'{}' exists and is not a socket; refusing to replace it", path.display())]
    NotSocket {
        /// The path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{what} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl SocketFileError {
    fn io(what: &'static str, path: &Path) -> impl Fn(io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io {
            what,
            path: path.clone(),
            source,
        }
    }

    fn nix(what: &'static str, path: &Path) -> impl Fn(nix::Error) -> Self + use<> {
        let io = Self::io(what, path);
        move |e| io(e.into())
    }
}

/// Makes `path` free for a new socket of type `kind`: nothing there is fine, a
/// stale socket is removed, a live or undecidable one or any other kind of file
/// is refused.
pub fn claim(path: &Path, kind: SockType) -> Result<(), SocketFileError> {
    check_length(path)?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SocketFileError::io("examining", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketFileError::NotSocket {
            path: path.to_path_buf(),
        });
    }
    let probe = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(SocketFileError::nix("creating a socket for", path))?;
    let addr = UnixAddr::new(path).map_err(SocketFileError::nix("addressing", path))?;
    judge(path, connect(probe.as_raw_fd(), &addr))?;
    // The file judged stale must still be the one there.
    let again = std::fs::symlink_metadata(path).map_err(SocketFileError::io("examining", path))?;
    if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
        return Err(SocketFileError::Live {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(SocketFileError::io("removing the stale socket", path))
}

/// `sun_path` less the NUL that ends a path in it.
const MAX_PATH: usize = 107;

/// Refuses a path that a `sockaddr_un` cannot hold whole.
fn check_length(path: &Path) -> Result<(), SocketFileError> {
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(SocketFileError::PathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_PATH,
        });
    }
    Ok(())
}

/// What a connection attempt tells about the socket at `path`: `Ok` only when
/// it is stale (nobody has it open for connections).
fn judge(path: &Path, answer: nix::Result<()>) -> Result<(), SocketFileError> {
    match answer {
        Err(nix::Error::ECONNREFUSED) => Ok(()),
        // A server that accepts, or one of another socket type: not ours.
        Ok(()) | Err(nix::Error::EPROTOTYPE) => Err(SocketFileError::Live {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(SocketFileError::Undecided {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// A socket file we bound: removed when dropped, unless something else has
/// replaced it meanwhile.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file we bound; `None` for a socket someone
    /// else bound (a service manager), whose file is theirs to remove.
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    /// Remembers the file now at `path` (just bound by us) for removal.
    fn bound_at(path: &Path) -> Result<Self, SocketFileError> {
        let meta =
            std::fs::symlink_metadata(path).map_err(SocketFileError::io("examining", path))?;
        // Absolute, so that a daemon's chdir("/") does not make us miss it at exit.
        let path = std::path::absolute(path).map_err(SocketFileError::io("locating", path))?;
        Ok(Self {
            path,
            identity: Some((meta.dev(), meta.ino())),
        })
    }

    /// The path bound, made absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let Some(identity) = self.identity else {
            return;
        };
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A socket bound at a path we claimed; the file goes when this is dropped.
#[derive(Debug)]
pub struct BoundPath {
    /// The listening (stream, seqpacket) or datagram socket, non-blocking.
    pub fd: OwnedFd,
    file: SocketFile,
}

impl BoundPath {
    /// Claims `path` and binds a new non-blocking socket of `kind` there
    /// (listening, for connection-oriented kinds).
    pub fn bind(path: &Path, kind: SockType) -> Result<Self, SocketFileError> {
        claim(path, kind)?;
        let fd = socket(
            AddressFamily::Unix,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(SocketFileError::nix("creating a socket for", path))?;
        let addr = UnixAddr::new(path).map_err(SocketFileError::nix("addressing", path))?;
        bind(fd.as_raw_fd(), &addr).map_err(SocketFileError::nix("binding", path))?;
        let file = SocketFile::bound_at(path)?;
        if kind != SockType::Datagram {
            // The C switch's backlog; connections are accepted as fast as they come.
            let backlog = Backlog::new(128).unwrap_or(Backlog::MAXCONN);
            listen(&fd, backlog).map_err(SocketFileError::nix("listening on", path))?;
        }
        Ok(Self { fd, file })
    }

    /// A listening socket bound by someone else (systemd's socket
    /// activation) at `path`: used as it is, and its file never removed.
    pub fn inherited(fd: OwnedFd, path: &Path) -> Self {
        Self {
            fd,
            file: SocketFile {
                path: path.to_path_buf(),
                identity: None,
            },
        }
    }

    /// The path bound, made absolute.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The socket and the guard that removes its file, apart (for a caller
    /// that wraps the socket in a std type).
    pub fn into_parts(self) -> (OwnedFd, SocketFile) {
        (self.fd, self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sockets_and_files_are_left_alone_stale_ones_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl");
        let first = BoundPath::bind(&path, SockType::Stream).expect("bind");
        assert!(matches!(
            BoundPath::bind(&path, SockType::Stream),
            Err(SocketFileError::Live { .. })
        ));
        assert!(path.exists(), "the live server's socket was removed");
        drop(first);
        assert!(!path.exists());

        // A stale socket (its server died without cleaning up) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let second = BoundPath::bind(&path, SockType::Stream).expect("rebind");
        drop(second);

        std::fs::write(&path, "precious").expect("write");
        assert!(matches!(
            BoundPath::bind(&path, SockType::Stream),
            Err(SocketFileError::NotSocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious");
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("mkdir");
        assert!(BoundPath::bind(&path, SockType::Stream).is_err());
        assert!(path.is_dir());
    }

    #[test]
    fn paths_longer_than_sun_path_are_refused_naming_the_limit() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(103)));
        assert_eq!(long.as_os_str().len(), 108);
        let err = BoundPath::bind(&long, SockType::Stream).expect_err("108 bytes do not fit");
        assert!(err.to_string().contains("at most 107"), "{err}");
        assert!(!long.exists());
    }

    #[test]
    fn live_datagram_sockets_are_kept_and_stale_ones_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let live = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        assert!(matches!(
            claim(&path, SockType::Datagram),
            Err(SocketFileError::Live { .. })
        ));
        drop(live);
        claim(&path, SockType::Datagram).expect("a stale datagram socket is replaced");
        assert!(!path.exists());
    }

    #[test]
    fn a_socket_replaced_after_binding_is_not_removed_by_the_old_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl");
        let ours = BoundPath::bind(&path, SockType::Stream).expect("bind");
        std::fs::remove_file(&path).expect("rm");
        let theirs = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(ours);
        assert!(path.exists(), "another server's socket was removed");
        drop(theirs);
    }

    #[test]
    fn an_inherited_socket_file_is_left_to_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(BoundPath::inherited(OwnedFd::from(listener), &path));
        assert!(
            path.exists(),
            "the service manager's socket file was removed"
        );
    }

    /// A socket we may not connect to (EACCES) is not stale: it is refused, not removed.
    #[test]
    fn only_a_refused_connection_means_stale() {
        let path = Path::new("/x");
        assert!(judge(path, Err(nix::Error::ECONNREFUSED)).is_ok());
        assert!(matches!(
            judge(path, Err(nix::Error::EACCES)),
            Err(SocketFileError::Undecided { .. })
        ));
        assert!(matches!(
            judge(path, Err(nix::Error::EPROTOTYPE)),
            Err(SocketFileError::Live { .. })
        ));
        assert!(matches!(
            judge(path, Ok(())),
            Err(SocketFileError::Live { .. })
        ));
    }
}
