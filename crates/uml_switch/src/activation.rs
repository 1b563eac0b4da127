//! Running under systemd: listening sockets handed over by socket activation
//! (`LISTEN_FDS`, as `uml-switch.socket` or `systemd-socket-activate` pass
//! them) and the readiness notification of a `Type=notify` service.
//!
//! A passed socket is recognised by its type: the one SOCK_STREAM socket is the
//! control socket, the one SOCK_SEQPACKET socket the BESS listener. Their
//! files belong to the service manager, which made them, and are never removed.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use listenfd::ListenFd;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::socket::{UnixAddr, getsockname};

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A passed descriptor is neither a Unix stream nor a seqpacket socket.
    #[error("passed descriptor number {index} is neither a unix stream nor a seqpacket socket")]
    Unexpected {
        /// Its position among the passed descriptors.
        index: usize,
    },
    /// Two passed sockets of one kind: which one serves is not clear.
    #[error("more than one {kind} socket was passed")]
    Twice {
        /// The socket kind.
        kind: &'static str,
    },
    /// A passed socket could not be prepared.
    #[error("passed descriptor number {index}: {source}")]
    Io {
        /// Its position among the passed descriptors.
        index: usize,
        /// The failure.
        source: io::Error,
    },
}

/// A listening socket the service manager bound, with the path it is bound to.
#[derive(Debug)]
pub struct Listener {
    /// The socket, non-blocking and close-on-exec.
    pub fd: OwnedFd,
    /// Its path (`None` for an abstract or unnamed socket).
    pub path: Option<PathBuf>,
}

/// The sockets socket activation passed, by role.
#[derive(Debug, Default)]
pub struct Passed {
    /// The control socket of daemon-transport guests.
    pub control: Option<Listener>,
    /// The BESS listener.
    pub bess: Option<Listener>,
}

/// Takes the sockets passed through `LISTEN_FDS` (none when the switch was not
/// socket-activated); the variables are unset so no child inherits them.
pub fn take_passed() -> Result<Passed, ActivationError> {
    let mut fds = ListenFd::from_env();
    let mut passed = Passed::default();
    for index in 0..fds.len() {
        let io = |source| ActivationError::Io { index, source };
        let (slot, kind, fd) = match fds.take_unix_listener(index) {
            Ok(Some(listener)) => (&mut passed.control, "stream", OwnedFd::from(listener)),
            Ok(None) => continue,
            Err(_) => match fds.take_custom::<OwnedFd>(
                index,
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET,
                "unix seqpacket socket",
            ) {
                Ok(Some(fd)) => (&mut passed.bess, "seqpacket", fd),
                Ok(None) => continue,
                Err(_) => return Err(ActivationError::Unexpected { index }),
            },
        };
        if slot.is_some() {
            return Err(ActivationError::Twice { kind });
        }
        // The event loop accepts until EAGAIN; systemd passes blocking sockets.
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| io(e.into()))?;
        fcntl(
            &fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| io(e.into()))?;
        let path = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .ok()
            .and_then(|addr| addr.path().map(PathBuf::from));
        *slot = Some(Listener { fd, path });
    }
    Ok(passed)
}

/// Tells a `Type=notify` service manager that the switch serves (nothing
/// happens without `NOTIFY_SOCKET`). A failure is reported, not fatal: the
/// switch works, and systemd times the start out on its own.
pub fn notify_ready() {
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        crate::log::log_line(&format!("could not notify the service manager: {err}"));
    }
}
