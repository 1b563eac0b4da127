//! Who a requested data socket belongs to, so that a control client gets a
//! port only at a socket of its own user: the switch must not become a
//! deputy that writes a client's frames into any socket it may reach.
//!
//! The connecting user is the control connection's peer credentials
//! (`SO_PEERCRED`). A filesystem socket is opened with `O_PATH` (through
//! symlinks, as `sendto` goes) and its owner is that inode's: the switch then
//! sends to `/proc/self/fd/N`, the very socket it checked, so the path cannot
//! be pointed elsewhere afterwards. An abstract name has no file: the kernel's
//! `sock_diag` netlink interface lists every unix socket of our network
//! namespace with its bound name and, since Linux 5.3, its owner's uid
//! (`UNIX_DIAG_UID`); it needs no privilege.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    SOCK_DGRAM, TCP_CLOSE, TCP_ESTABLISHED, UDIAG_SHOW_NAME,
};
use netlink_packet_sock_diag::unix::nlas::UnixDiagName;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest, UnixResponse};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};
use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::Mode;
use uml_proto::switch::PeerAddr;

/// `UDIAG_SHOW_UID` (Linux 5.3, `linux/unix_diag.h`): ask for each socket's owner.
const UDIAG_SHOW_UID: u32 = 0x40;
/// `UNIX_DIAG_UID`: the attribute carrying it, a host-endian `u32`.
const UNIX_DIAG_UID: u16 = 7;
/// Receive buffer for the dump; the kernel fills what fits, message by message.
const RECV_BUFFER: usize = 64 * 1024;

/// What the switch knows about the socket at a requested address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A socket is bound there and belongs to this uid.
    Uid(u32),
    /// The kernel cannot tell (no `sock_diag` for unix sockets, or a kernel
    /// older than 5.3 without the uid); the reason is given.
    Unknown(String),
}

/// A requested data socket as checked.
#[derive(Debug)]
pub struct Examined {
    /// Who it belongs to.
    pub owner: Owner,
    /// For a filesystem socket, the socket itself, held open by an `O_PATH`
    /// descriptor for as long as the port lives.
    pub pin: Option<OwnedFd>,
}

impl Examined {
    /// Where to send to reach the checked socket: `/proc/self/fd/N` for a
    /// pinned filesystem socket, if `/proc` shows it (else its path, which a
    /// client could later point elsewhere); `None` for an abstract name,
    /// which is sent to as it is.
    pub fn pinned_path(&self) -> Option<PathBuf> {
        let pin = self.pin.as_ref()?;
        let via_proc = PathBuf::from(format!("/proc/self/fd/{}", pin.as_raw_fd()));
        let pinned = File::from(pin.try_clone().ok()?).metadata().ok()?;
        let seen = std::fs::metadata(&via_proc).ok()?;
        ((seen.dev(), seen.ino()) == (pinned.dev(), pinned.ino())).then_some(via_proc)
    }
}

/// Why a requested address is refused outright.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// No datagram socket is bound at the address.
    #[error("no datagram socket is bound at the requested address")]
    NotBound,
    /// The kernel supports the lookup, but it failed this time (out of
    /// descriptors or memory, say): the request is refused, never served
    /// unchecked, so exhausting the switch's resources does not open the door.
    #[error("cannot check who owns the requested socket ({0}); refusing the request")]
    Lookup(io::Error),
}

/// The uid of the process at the other end of a connection (a control
/// connection or a BESS port).
pub fn peer_uid<F: AsFd>(socket: &F) -> Option<u32> {
    getsockopt(socket, PeerCredentials).ok().map(|c| c.uid())
}

/// The socket at `addr` (as a request carries it) and who owns it.
pub fn examine(addr: &PeerAddr) -> Result<Examined, OwnerError> {
    if let Some(path) = addr.filesystem_path() {
        let (pin, uid) = pin_socket(path).ok_or(OwnerError::NotBound)?;
        return Ok(Examined {
            owner: Owner::Uid(uid),
            pin: Some(pin),
        });
    }
    let name = addr.abstract_name().unwrap_or_default();
    let owner = match abstract_owner(name) {
        Ok(found) => found?,
        Err(e) if lookup_unsupported(&e) => Owner::Unknown(format!("sock_diag: {e}")),
        Err(e) => return Err(OwnerError::Lookup(e)),
    };
    Ok(Examined { owner, pin: None })
}

/// Whether a failed `sock_diag` lookup means the kernel cannot do it at all
/// (no netlink family, no unix diag module), rather than that it failed now.
fn lookup_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP)
    )
}

/// The socket file at `path` held by an `O_PATH` descriptor, and its owner;
/// `None` if there is no socket there.
fn pin_socket(path: &Path) -> Option<(OwnedFd, u32)> {
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok()?;
    let file = File::from(fd);
    let meta = file.metadata().ok()?;
    meta.file_type()
        .is_socket()
        .then(|| (OwnedFd::from(file), meta.uid()))
}

/// Looks the datagram socket bound to the abstract `name` (exactly: all its
/// bytes and its length) up in the kernel's list of unix sockets.
fn abstract_owner(name: &[u8]) -> io::Result<Result<Owner, OwnerError>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let request = UnixRequest {
        // Bound datagram sockets are "closed" unless connected.
        state_flags: StateFlags::from_bits_retain((1 << TCP_CLOSE) | (1 << TCP_ESTABLISHED)),
        inode: 0,
        show_flags: ShowFlags::from_bits_retain(UDIAG_SHOW_NAME | UDIAG_SHOW_UID),
        cookie: [0xff; 8],
    };
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::UnixRequest(request).into());
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut found = Err(OwnerError::NotBound);
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let len = socket.recv(&mut &mut buf[..], 0)?;
        let mut offset = 0;
        while offset < len {
            let rest = &buf[offset..len];
            // The length leads every message; one we cannot decode is skipped.
            let size = rest
                .first_chunk::<4>()
                .map(|b| u32::from_ne_bytes(*b))
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n >= 16)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "garbled dump"))?;
            offset += size.next_multiple_of(4);
            let Ok(message) = NetlinkMessage::<SockDiagMessage>::deserialize(rest) else {
                continue;
            };
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(
                        || io::Error::other("error without a code"),
                        |code| io::Error::from_raw_os_error(-code.get()),
                    ));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(response)) => {
                    if let Some(owner) = bound_to(&response, name) {
                        found = Ok(owner);
                    }
                }
                _ => {}
            }
        }
        if len == 0 {
            return Ok(found);
        }
    }
}

/// The owner of `response`'s socket if it is a datagram socket bound to `name`.
fn bound_to(response: &UnixResponse, name: &[u8]) -> Option<Owner> {
    if response.header.kind != SOCK_DGRAM {
        return None;
    }
    match response.name()? {
        UnixDiagName::Abstract(bound) if bound.as_slice() == name => {}
        _ => return None,
    }
    let uid = response.nlas.iter().find_map(|nla| {
        if nla.kind() != UNIX_DIAG_UID || nla.value_len() != 4 {
            return None;
        }
        let mut value = [0u8; 4];
        nla.emit_value(&mut value);
        Some(u32::from_ne_bytes(value))
    });
    Some(uid.map_or_else(
        || Owner::Unknown("the kernel does not report socket owners (before Linux 5.3)".to_owned()),
        Owner::Uid,
    ))
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

    use std::os::unix::net::UnixStream;

    use super::*;

    /// Our own uid, as the owner of a directory we just made.
    fn me(dir: &tempfile::TempDir) -> u32 {
        std::fs::metadata(dir.path()).unwrap().uid()
    }

    #[test]
    fn only_an_unsupported_lookup_is_served_unchecked() {
        let errno = io::Error::from_raw_os_error;
        assert!(lookup_unsupported(&errno(libc::EPROTONOSUPPORT)));
        assert!(lookup_unsupported(&errno(libc::ENOENT)));
        assert!(!lookup_unsupported(&errno(libc::EMFILE)));
        assert!(!lookup_unsupported(&errno(libc::ENOBUFS)));
        assert!(!lookup_unsupported(&errno(libc::ENOMEM)));
    }

    #[test]
    fn an_abstract_socket_is_found_by_its_whole_name_with_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let label = format!("owner-test-{}", std::process::id());
        let mut name = [0u8; 107];
        name[..label.len()].copy_from_slice(label.as_bytes());
        let addr = PeerAddr::from_abstract_name(&name).unwrap();
        // The label alone is another name to the kernel, though padding
        // makes it the same bytes.
        let _short =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(label.as_bytes()).unwrap())
                .unwrap();
        assert!(matches!(
            examine(&addr).map(|e| e.owner),
            Err(OwnerError::NotBound)
        ));
        let _full =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap();
        assert_eq!(
            examine(&addr).map(|e| e.owner).unwrap(),
            Owner::Uid(me(&dir))
        );
    }

    #[test]
    fn path_sockets_are_owned_by_their_file_and_other_files_are_not_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let _bound = UnixDatagram::bind(&path).unwrap();
        let me = me(&dir);
        let addr = PeerAddr::from_path(&path).unwrap();
        let examined = examine(&addr).unwrap();
        assert_eq!(examined.owner, Owner::Uid(me));
        // The checked socket stays the one sent to, whatever the path names later.
        let pinned = examined.pinned_path().unwrap();
        std::fs::remove_file(&path).unwrap();
        let _other = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"to the pinned one", &pinned).unwrap();
        let mut buf = [0u8; 32];
        let n = _bound.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to the pinned one");
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a), Some(me));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(examine(&PeerAddr::from_path(&file).unwrap()).is_err());
        let _listener = UnixListener::bind(dir.path().join("s")).unwrap();
        let stream_name = PeerAddr::from_abstract_name(b"no-such-dgram").unwrap();
        assert!(examine(&stream_name).is_err());
    }
}
