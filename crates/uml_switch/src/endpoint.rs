//! Socket files: binding our listeners without ever deleting something that is not ours.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};

/// Why a socket path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Another server answers on the path: a live switch is left alone.
    #[error("The control socket '{}' has another server attached to it", path.display())]
    Live {
        /// The path.
        path: PathBuf,
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

impl EndpointError {
    fn io(what: &'static str, path: &Path) -> impl Fn(nix::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |e| Self::Io {
            what,
            path: path.clone(),
            source: e.into(),
        }
    }
}

/// Makes `path` free for a new socket of type `kind`: nothing there is fine, a
/// stale socket (nobody accepts connections) is removed, a live one or any
/// other kind of file is refused.
pub fn claim(path: &Path, kind: SockType) -> Result<(), EndpointError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(EndpointError::NotSocket {
            path: path.to_path_buf(),
        });
    }
    let probe = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(EndpointError::io("creating a socket for", path))?;
    let addr = UnixAddr::new(path).map_err(EndpointError::io("addressing", path))?;
    match connect(probe.as_raw_fd(), &addr) {
        Err(nix::Error::ECONNREFUSED) => {
            std::fs::remove_file(path).map_err(|source| EndpointError::Io {
                what: "removing the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        // Connected, or a socket of another type that someone holds: not ours to take.
        _ => Err(EndpointError::Live {
            path: path.to_path_buf(),
        }),
    }
}

/// A socket bound at a path we claimed; the file is removed when it is dropped,
/// unless something else has replaced it meanwhile.
#[derive(Debug)]
pub struct BoundPath {
    /// The listening or datagram socket.
    pub fd: OwnedFd,
    path: PathBuf,
    identity: (u64, u64),
}

impl BoundPath {
    /// Claims `path` and binds a new socket of `kind` there (listening, for stream kinds).
    pub fn bind(path: &Path, kind: SockType) -> Result<Self, EndpointError> {
        claim(path, kind)?;
        let fd = socket(
            AddressFamily::Unix,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(EndpointError::io("creating a socket for", path))?;
        let addr = UnixAddr::new(path).map_err(EndpointError::io("addressing", path))?;
        bind(fd.as_raw_fd(), &addr).map_err(EndpointError::io("binding", path))?;
        if kind != SockType::Datagram {
            // The C switch's backlog; connections are accepted as fast as they come.
            let backlog = Backlog::new(128).unwrap_or(Backlog::MAXCONN);
            listen(&fd, backlog).map_err(EndpointError::io("listening on", path))?;
        }
        let meta = std::fs::symlink_metadata(path).map_err(|source| EndpointError::Io {
            what: "examining",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The path bound.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sockets_and_files_are_left_alone_stale_ones_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl");
        let first = BoundPath::bind(&path, SockType::Stream).unwrap();
        assert!(matches!(
            BoundPath::bind(&path, SockType::Stream),
            Err(EndpointError::Live { .. })
        ));
        assert!(path.exists(), "the live switch's socket was removed");
        drop(first);
        assert!(!path.exists());

        // A stale socket (its server died without cleaning up) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let second = BoundPath::bind(&path, SockType::Stream).unwrap();
        drop(second);

        std::fs::write(&path, "precious").unwrap();
        assert!(matches!(
            BoundPath::bind(&path, SockType::Stream),
            Err(EndpointError::NotSocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(BoundPath::bind(&path, SockType::Stream).is_err());
        assert!(path.is_dir());
    }
}
