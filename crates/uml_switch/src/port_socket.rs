//! A daemon port's own data socket: connected to the client's data socket,
//! and (for a v1/v3 client) bound to a fresh abstract name that the reply
//! tells the client to send to.
//!
//! Connected, it takes datagrams from the client's socket alone (the kernel
//! refuses anyone else's with `EPERM`), so a frame's port is the socket it
//! came in on: no sender address to look up, and none to spoof. It sends to
//! the client without naming it, and epoll can say when the client's queue
//! has room again. It is connected before it is bound, so no stranger's
//! datagram can slip in between.

use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, connect, socket};
use uml_proto::switch::{PeerAddr, SUN_PATH_LEN};

/// Tries at finding a free name before giving up.
const NAME_TRIES: u32 = 16;

/// A port's data socket and the address its client is to send to.
#[derive(Debug)]
pub struct PortSocket {
    /// The socket, connected to the client's.
    pub fd: OwnedFd,
    /// Its own name, for the reply; `None` for a send-only socket.
    pub name: Option<PeerAddr>,
}

/// Why a port's data socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PortSocketError {
    /// `socket`, `connect` or `bind` failed.
    #[error("{what}: {source}")]
    Sys {
        /// The step that failed.
        what: &'static str,
        /// The kernel's answer.
        source: Errno,
    },
}

impl PortSocketError {
    /// The kernel's answer, to tell running out of descriptors from the rest.
    pub fn errno(&self) -> Errno {
        match self {
            PortSocketError::Sys { source, .. } => *source,
        }
    }
}

fn sys(what: &'static str) -> impl Fn(Errno) -> PortSocketError {
    move |source| PortSocketError::Sys { what, source }
}

/// Where fresh names come from: this process, a counter, and random bits
/// drawn for each name, so that another user who sees the names (in
/// `/proc/net/unix`) cannot bind the next ones in advance.
#[derive(Debug, Default)]
pub struct Namer {
    next: u64,
}

/// 64 bits no other user can predict: std's hasher keys come from the
/// system's random source, and each new `RandomState` hashes with other keys.
fn random_bits() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Namer {
    /// The next name: `uml_switch.PID.N.RANDOM` in the abstract namespace,
    /// padded with zeros to the whole `sun_path`.
    fn next_name(&mut self) -> Option<PeerAddr> {
        self.next += 1;
        let text = format!(
            "uml_switch.{}.{}.{:016x}",
            std::process::id(),
            self.next,
            random_bits()
        );
        let mut name = [0u8; SUN_PATH_LEN - 1];
        let len = text.len().min(name.len());
        name[..len].copy_from_slice(&text.as_bytes()[..len]);
        PeerAddr::from_abstract_name(&name).ok()
    }

    /// A socket connected to `client`; bound to a fresh name of its own if
    /// `receives` (the client sends its frames there).
    pub fn open(
        &mut self,
        client: &UnixAddr,
        receives: bool,
    ) -> Result<PortSocket, PortSocketError> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(sys("creating the port's data socket"))?;
        connect(fd.as_raw_fd(), client).map_err(sys("connecting to the client's data socket"))?;
        if !receives {
            return Ok(PortSocket { fd, name: None });
        }
        for _ in 0..NAME_TRIES {
            let Some((name, addr)) = self.next_name().and_then(|name| {
                let addr = UnixAddr::new_abstract(name.abstract_name()?).ok()?;
                Some((name, addr))
            }) else {
                continue;
            };
            match bind(fd.as_raw_fd(), &addr) {
                Ok(()) => {
                    return Ok(PortSocket {
                        fd,
                        name: Some(name),
                    });
                }
                Err(Errno::EADDRINUSE) => {}
                Err(e) => return Err(sys("naming the port's data socket")(e)),
            }
        }
        Err(sys("naming the port's data socket")(Errno::EADDRINUSE))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is how a test fails

    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    use super::*;

    #[test]
    fn the_port_socket_takes_frames_from_its_client_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client_path = dir.path().join("client");
        let client = UnixDatagram::bind(&client_path).expect("bind");
        let mut namer = Namer::default();
        let port = namer
            .open(&UnixAddr::new(&client_path).expect("addr"), true)
            .expect("open");
        let name = port.name.expect("named");
        let ours =
            SocketAddr::from_abstract_name(name.abstract_name().expect("abstract")).expect("addr");
        client
            .send_to_addr(b"from the client", &ours)
            .expect("send");
        let stranger = UnixDatagram::unbound().expect("unbound");
        let refused = stranger.send_to_addr(b"spoof", &ours).expect_err("refused");
        assert_eq!(refused.raw_os_error(), Some(nix::libc::EPERM));

        let port_socket = UnixDatagram::from(port.fd);
        let mut buf = [0u8; 64];
        let n = port_socket.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"from the client");
        port_socket.send(b"to the client").expect("send");
        let n = client.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"to the client");
    }

    #[test]
    fn names_are_fresh_and_fill_sun_path() {
        let mut namer = Namer::default();
        let (a, b) = (namer.next_name().unwrap(), namer.next_name().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.abstract_name().map(<[u8]>::len), Some(SUN_PATH_LEN - 1));
        let other = Namer::default().next_name().unwrap();
        assert_ne!(a, other, "two switches in one process share no names");
        // The random part differs from name to name, not only the counter.
        let random = |n: &PeerAddr| {
            n.abstract_name().unwrap()[..60]
                .rsplit(|&c| c == b'.')
                .next()
                .map(<[u8]>::to_vec)
        };
        assert_ne!(random(&a), random(&b));
    }

    #[test]
    fn a_client_that_is_not_there_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut namer = Namer::default();
        let err = namer
            .open(
                &UnixAddr::new(&dir.path().join("nobody")).expect("addr"),
                true,
            )
            .expect_err("nobody there");
        assert_eq!(err.errno(), Errno::ENOENT);
    }
}
