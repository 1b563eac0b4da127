//! Running under systemd: listening sockets handed over by socket activation
//! (`LISTEN_FDS`, as `uml-switch.socket` or `systemd-socket-activate` pass
//! them) and the readiness notification of a `Type=notify` service.
//!
//! A passed socket's role comes from its name (`LISTEN_FDNAMES`, systemd's
//! `FileDescriptorName=`, `systemd-socket-activate --fdname=`): `mgmt` is the
//! management socket (a stream socket), `bess` the BESS listener (seqpacket).
//! Any other name, or none, goes by type as before names were read: the
//! stream socket is the control socket, the seqpacket socket the BESS
//! listener. `control` is such a name on purpose: systemd gives one name to
//! every socket of a unit, and `uml-switch.socket` holds the control socket
//! and the BESS one. Their files belong to the service manager, which made
//! them, and are never removed.

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
    /// Two passed sockets for one role: which one serves is not clear.
    #[error("more than one {kind} socket was passed")]
    Twice {
        /// The role.
        kind: &'static str,
    },
    /// A socket named for a role is not of that role's type.
    #[error(
        "passed descriptor number {index} is named '{name}' but is a {found} socket, not a {wanted} one"
    )]
    WrongType {
        /// Its position among the passed descriptors.
        index: usize,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// Its type.
        found: &'static str,
        /// The type its role needs.
        wanted: &'static str,
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
    /// The management socket (named `mgmt`).
    pub mgmt: Option<Listener>,
}

/// The role of a passed socket from its name and type, or the type its
/// name requires.
fn role(name: &str, stream: bool) -> Result<&'static str, &'static str> {
    match (name, stream) {
        ("mgmt", true) => Ok("management"),
        ("mgmt", false) => Err("stream"),
        ("bess", false) => Ok("seqpacket"),
        ("bess", true) => Err("seqpacket"),
        (_, true) => Ok("stream"),
        (_, false) => Ok("seqpacket"),
    }
}

/// Takes the sockets passed through `LISTEN_FDS` (none when the switch was not
/// socket-activated); the variables are unset so no child inherits them.
pub fn take_passed() -> Result<Passed, ActivationError> {
    // Read before `ListenFd` unsets the others; left in the environment
    // because unsetting is not safe here, and without `LISTEN_FDS` no child
    // reads it.
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    take_named(ListenFd::from_env(), &names)
}

fn take_named(mut fds: ListenFd, names: &[&str]) -> Result<Passed, ActivationError> {
    let mut passed = Passed::default();
    for index in 0..fds.len() {
        let io = |source| ActivationError::Io { index, source };
        let name = names.get(index).copied().unwrap_or_default();
        let (stream, fd) = match fds.take_unix_listener(index) {
            Ok(Some(listener)) => (true, OwnedFd::from(listener)),
            Ok(None) => continue,
            Err(_) => match fds.take_custom::<OwnedFd>(
                index,
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET,
                "unix seqpacket socket",
            ) {
                Ok(Some(fd)) => (false, fd),
                Ok(None) => continue,
                Err(_) => return Err(ActivationError::Unexpected { index }),
            },
        };
        let kind = role(name, stream).map_err(|wanted| ActivationError::WrongType {
            index,
            name: name.to_owned(),
            found: if stream { "stream" } else { "seqpacket" },
            wanted,
        })?;
        let slot = match kind {
            "management" => &mut passed.mgmt,
            "stream" => &mut passed.control,
            _ => &mut passed.bess,
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

#[cfg(test)]
mod tests {
    use super::role;

    #[test]
    fn names_pick_roles_and_the_rest_go_by_type() {
        assert_eq!(role("mgmt", true), Ok("management"));
        assert_eq!(role("mgmt", false), Err("stream"));
        assert_eq!(role("bess", false), Ok("seqpacket"));
        assert_eq!(role("bess", true), Err("seqpacket"));
        // systemd's default name is the socket unit's; unnamed is "".
        for name in ["control", "uml-switch.socket", "unknown", ""] {
            assert_eq!(role(name, true), Ok("stream"));
            assert_eq!(role(name, false), Ok("seqpacket"));
        }
    }
}
