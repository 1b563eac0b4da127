//! Sending one request to a machine and collecting its whole reply: only
//! from the machine's own socket, up to a size limit, with a deadline.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use uml_proto::mconsole::{
    MAX_DATA, Reply, ReplyAssembler, ReplyDatagram, ReplyError, Request, RequestError,
};

use crate::locate::Machine;

/// The most reply text we keep: far above any kernel reply (`proc` of a large
/// file, `sysrq t` on a busy guest), so only a runaway sender reaches it.
pub const MAX_REPLY: usize = 16 << 20;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Our own socket could not be made.
    #[error("creating the client socket: {0}")]
    Socket(io::Error),
    /// The command cannot be sent as one request.
    #[error("{0}")]
    Request(#[from] RequestError),
    /// The machine's socket exists but nobody reads it: the UML has died.
    /// The text starts with the C client's line, which scripts match.
    #[error("Sending command to '{}' : Connection refused (machine '{machine}' is not running: nobody listens on its socket; a stale directory?)", socket.display())]
    NotRunning {
        /// The name given.
        machine: String,
        /// Its socket.
        socket: PathBuf,
    },
    /// Sending failed for another reason (permissions, say); the text starts
    /// with the C client's line.
    #[error("Sending command to '{}' : {}", socket.display(), strerror(source))]
    Send {
        /// The machine's socket.
        socket: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// No reply datagram came in time.
    #[error("machine '{machine}' did not answer within {} s ('{}')", after.as_secs_f64(), socket.display())]
    Timeout {
        /// The name given.
        machine: String,
        /// Its socket.
        socket: PathBuf,
        /// How long we waited for a datagram.
        after: Duration,
    },
    /// Part of a reply came, then nothing more in time. The kernel drops reply
    /// datagrams when the client's receive queue (10 datagrams by default) is
    /// full, so a long burst (`sysrq`) can lose its final one.
    #[error("the reply of machine '{machine}' stopped before its end: nothing more came within {} s", after.as_secs_f64())]
    Incomplete {
        /// The name given.
        machine: String,
        /// How long we waited for the next datagram.
        after: Duration,
        /// What did arrive.
        partial: Reply,
    },
    /// The reply went on past [`MAX_REPLY`] bytes.
    #[error("the reply of machine '{machine}' exceeds {limit} bytes; stopped reading it")]
    TooLong {
        /// The name given.
        machine: String,
        /// The limit.
        limit: usize,
    },
    /// Receiving failed.
    #[error("receiving from '{}': {source}", socket.display())]
    Receive {
        /// The machine's socket.
        socket: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A datagram was not a reply.
    #[error("unreadable reply from '{}': {source}", socket.display())]
    BadReply {
        /// The machine's socket.
        socket: PathBuf,
        /// What the decoder refused.
        source: ReplyError,
    },
}

/// The C library's text for an error, as `perror` prints it.
fn strerror(e: &io::Error) -> String {
    e.raw_os_error().map_or_else(
        || e.to_string(),
        |code| nix::errno::Errno::from_raw(code).desc().to_owned(),
    )
}

/// A bound datagram socket that talks to mconsole sockets.
#[derive(Debug)]
pub struct Client {
    socket: UnixDatagram,
    timeout: Option<Duration>,
    max_reply: usize,
}

/// Makes each client socket's abstract name unique within this process.
static NEXT_SOCKET: AtomicU32 = AtomicU32::new(0);

impl Client {
    /// A client whose every wait for a reply datagram ends after `timeout` (`None`: never).
    ///
    /// The kernel answers only a bound sender, so the socket gets an abstract
    /// name (nothing to clean up on the filesystem), as the C client's does.
    pub fn new(timeout: Option<Duration>) -> Result<Self, ClientError> {
        let name = format!(
            "uml_mconsole-{}-{}",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(ClientError::Socket)?;
        let socket = UnixDatagram::bind_addr(&addr).map_err(ClientError::Socket)?;
        // The timeout applies to each receive: a long reply keeps arriving,
        // a dead machine stops at once.
        socket
            .set_read_timeout(timeout)
            .map_err(ClientError::Socket)?;
        Ok(Self {
            socket,
            timeout,
            max_reply: MAX_REPLY,
        })
    }

    /// Keeps at most `limit` bytes of reply text.
    pub fn with_max_reply(mut self, limit: usize) -> Self {
        self.max_reply = limit;
        self
    }

    /// Sends `command` and returns the reply joined from all its datagrams.
    ///
    /// The socket is connected to the machine's before sending: the kernel then
    /// refuses datagrams to us from any other socket, so no other local user
    /// can slip a forged `OK` into the reply. It also lifts the queue limit of
    /// 10 datagrams, which applies only to senders that are not our peer.
    pub fn request(&self, machine: &Machine, command: &[u8]) -> Result<Reply, ClientError> {
        let request = Request::new(command)?;
        let sock = &machine.socket;
        let refused = |source: io::Error| {
            if source.kind() == io::ErrorKind::ConnectionRefused {
                ClientError::NotRunning {
                    machine: machine.name.clone(),
                    socket: sock.clone(),
                }
            } else {
                ClientError::Send {
                    socket: sock.clone(),
                    source,
                }
            }
        };
        self.socket.connect(sock).map_err(refused)?;
        // Whatever came before the connection (from anyone) is not the reply.
        self.discard_late_replies();
        self.socket.send(request.as_bytes()).map_err(refused)?;
        let mut total = 0usize;
        let mut assembler = ReplyAssembler::new();
        let mut buf = [0u8; 12 + MAX_DATA];
        loop {
            let n = match self.receive(&mut buf, machine) {
                Ok(n) => n,
                Err(ClientError::Timeout { machine, after, .. }) if assembler.in_progress() => {
                    return Err(ClientError::Incomplete {
                        machine,
                        after,
                        partial: assembler.into_partial().unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            };
            let chunk = match ReplyDatagram::parse(&buf[..n]) {
                Ok(ReplyDatagram::Chunk(chunk)) => chunk,
                // Only a magic-less request draws raw text; report it as an error reply.
                Ok(ReplyDatagram::RawText(text)) => {
                    return Ok(Reply {
                        err: 1,
                        last_err: 1,
                        text: text.to_vec(),
                    });
                }
                Err(source) => {
                    return Err(ClientError::BadReply {
                        socket: sock.clone(),
                        source,
                    });
                }
            };
            total = total.saturating_add(chunk.text.len());
            if total > self.max_reply {
                return Err(ClientError::TooLong {
                    machine: machine.name.clone(),
                    limit: self.max_reply,
                });
            }
            if let Some(reply) = assembler.push(&chunk) {
                return Ok(reply);
            }
        }
    }

    /// Waits for one datagram, at most the timeout.
    fn receive(&self, buf: &mut [u8], machine: &Machine) -> Result<usize, ClientError> {
        loop {
            match self.socket.recv(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.timed_out(machine));
                }
                Err(source) => {
                    return Err(ClientError::Receive {
                        socket: machine.socket.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn timed_out(&self, machine: &Machine) -> ClientError {
        ClientError::Timeout {
            machine: machine.name.clone(),
            socket: machine.socket.clone(),
            after: self.timeout.unwrap_or_default(),
        }
    }

    /// Drops datagrams of an earlier request that timed out, so they are not
    /// taken for the answer to the next one.
    fn discard_late_replies(&self) {
        if self.socket.set_nonblocking(true).is_ok() {
            let mut buf = [0u8; 12 + MAX_DATA];
            while self.socket.recv(&mut buf).is_ok() {}
            // Back to blocking reads, bounded by the read timeout.
            let _ = self.socket.set_nonblocking(false);
        }
    }
}
