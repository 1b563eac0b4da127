//! `port-helper`: gives a UML kernel the terminal it should use for a console
//! or serial line attached to a TCP port (`con1=port:9000`) or to a terminal
//! window (`con2=xterm`).
//!
//! For a port, the kernel accepts the TCP connection and runs
//! `in.telnetd -L port-helper` on it with fd 3 one end of a datagram socket
//! pair; telnetd starts us as its login program on the session's pty. For a
//! window, the kernel runs `TERMINAL -T TITLE -e port-helper -uml-socket PATH`
//! and listens on a datagram socket at PATH. Either way we give up the
//! terminal as our controlling terminal, send it (our stdin) to the kernel
//! (`SCM_RIGHTS`, our PID as payload), then stay until the terminal hangs up:
//! the kernel kills us when it closes the channel.

pub mod cli;

use std::io::{self, IoSlice, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use uml_proto::port_helper::HelperPid;
use zerocopy::IntoBytes;

/// The fd the kernel prepares for the port channel (through telnetd).
pub const KERNEL_FD: RawFd = 3;

/// Where the terminal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The socket the kernel left on fd 3 (`port:` channel).
    InheritedFd,
    /// The kernel's socket at this path (`xterm` channel).
    UmlSocket(PathBuf),
}

/// Why the terminal could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum PortHelperError {
    /// Standard input is not a terminal.
    #[error("standard input is not a terminal: there is nothing to pass to the kernel")]
    NothingToPass,
    /// Fd 3 is not open or not a socket.
    #[error(
        "fd 3 is {0}: port-helper is started by in.telnetd for a UML port channel, \
         which leaves the kernel's socket there (use -uml-socket PATH for a window)"
    )]
    NoKernelFd(&'static str),
    /// The kernel's socket path could not be reached.
    #[error("cannot reach the UML's socket {}: {source}", path.display())]
    Connect {
        /// The path given with `-uml-socket`.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Sending the descriptor failed.
    #[error("sending the terminal to the UML: {0}")]
    Send(#[source] Errno),
    /// Waiting on the terminal failed.
    #[error("waiting for the terminal to close: {0}")]
    Wait(#[source] Errno),
}

/// Hands stdin to the kernel, then returns when the terminal hangs up.
pub fn run(destination: &Destination) -> Result<(), PortHelperError> {
    // Hangups belong to the terminal's session, which we lead; the kernel
    // decides when we go (it kills us when it closes the channel).
    let mut hup = SigSet::empty();
    hup.add(Signal::SIGHUP);
    // Blocking a signal in a single-threaded process cannot fail usefully.
    let _ = hup.thread_block();
    let stdin = io::stdin();
    // Both channels need a terminal (the kernel reads its settings).
    if !stdin.is_terminal() {
        return Err(PortHelperError::NothingToPass);
    }
    // telnetd and terminal emulators make the pty our session's controlling
    // terminal; the kernel's window-size watcher can only take it over once
    // we let go. The console works without, so a failure is only reported.
    if let Err(e) = uml_host::tty::give_up_controlling_terminal(&stdin) {
        eprintln!(
            "port-helper: cannot give up the terminal ({e}); window resizes will not reach the UML"
        );
    }
    match destination {
        Destination::InheritedFd => send_terminal(KERNEL_FD).map_err(|e| match e {
            PortHelperError::Send(Errno::EBADF) => PortHelperError::NoKernelFd("not open"),
            PortHelperError::Send(Errno::ENOTSOCK) => PortHelperError::NoKernelFd("no socket"),
            other => other,
        })?,
        Destination::UmlSocket(path) => {
            let sock = connect(path)?;
            send_terminal(sock.as_raw_fd())?;
        }
    }
    wait_for_hangup()
}

fn connect(path: &Path) -> Result<UnixDatagram, PortHelperError> {
    UnixDatagram::unbound()
        .and_then(|sock| sock.connect(path).map(|()| sock))
        .map_err(|source| PortHelperError::Connect {
            path: path.to_owned(),
            source,
        })
}

/// One datagram: our PID, with fd 0 attached.
fn send_terminal(socket: RawFd) -> Result<(), PortHelperError> {
    let pid = HelperPid::new(nix::unistd::getpid().as_raw());
    let terminal = [io::stdin().as_raw_fd()];
    let payload = [IoSlice::new(pid.as_bytes())];
    sendmsg::<()>(
        socket,
        &payload,
        &[ControlMessage::ScmRights(&terminal)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(PortHelperError::Send)
}

/// Sleeps in poll() until stdin reports a hangup or error; data on the
/// terminal is the kernel's to read, so only those conditions are asked for.
fn wait_for_hangup() -> Result<(), PortHelperError> {
    let stdin = io::stdin();
    loop {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let seen = fds[0].revents().unwrap_or(PollFlags::POLLHUP);
                if seen.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                    return Ok(());
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(PortHelperError::Wait(e)),
        }
    }
}
