//! Sending one request to a machine and collecting its whole reply: only
//! from the machine's own socket, up to a size limit, for as long as the
//! machine lives (or until a `--timeout`).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use uml_proto::mconsole::{
    MAX_DATA, Reply, ReplyAssembler, ReplyDatagram, ReplyError, Request, RequestError,
};

use crate::locate::Machine;
use crate::process::Process;

/// How long a reply may take before a one-line notice says we are still waiting.
pub const SLOW_NOTICE: Duration = Duration::from_secs(5);
/// The most reply text we keep: far above any kernel reply (`proc` of a large
/// file, `sysrq t` on a busy guest), so only a runaway sender reaches it.
pub const MAX_REPLY: usize = 16 << 20;
/// How often a wait looks at whether the machine is still alive.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// How long to wait for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As long as the machine's process lives (and its socket is held),
    /// however slow it is: a loaded or stopped guest still answers.
    WhileAlive,
    /// At most this long for each reply datagram (`--timeout`), and never
    /// past the machine's death.
    Timeout(Duration),
}

/// Why a request got no (whole) reply.
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
    /// No reply datagram came within `--timeout`.
    #[error("machine '{machine}' did not answer within {} s ('{}')", after.as_secs_f64(), socket.display())]
    Timeout {
        /// The name given.
        machine: String,
        /// Its socket.
        socket: PathBuf,
        /// How long we waited for a datagram.
        after: Duration,
    },
    /// Part of a reply came, then nothing more within `--timeout`. The kernel
    /// drops reply datagrams when the client's receive queue is full, so a
    /// long burst (`sysrq`) can lose its final one.
    #[error("the reply of machine '{machine}' stopped before its end: nothing more came within {} s", after.as_secs_f64())]
    Incomplete {
        /// The name given.
        machine: String,
        /// How long we waited for the next datagram.
        after: Duration,
        /// What did arrive.
        partial: Reply,
    },
    /// The machine died (or let go of its socket) while we waited.
    #[error("machine '{machine}'{} is gone: it {} before its reply was complete", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), if pid.is_some() { "exited" } else { "stopped listening" })]
    Gone {
        /// The name given.
        machine: String,
        /// Its process, when known.
        pid: Option<i32>,
        /// What had arrived of the reply, if anything.
        partial: Option<Reply>,
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

/// What is printed when a reply is slow.
type Notice = Box<dyn Fn(&str)>;

/// A bound datagram socket that talks to mconsole sockets.
pub struct Client {
    socket: UnixDatagram,
    wait: Wait,
    max_reply: usize,
    notice: Notice,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("wait", &self.wait)
            .field("max_reply", &self.max_reply)
            .finish_non_exhaustive()
    }
}

/// 64 random bits from the standard library's per-process hash keys (seeded
/// from the kernel's random source), without another dependency.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(NEXT_SOCKET.load(Ordering::Relaxed));
    hasher.finish()
}

/// Makes each client socket's abstract name unique within this process.
static NEXT_SOCKET: AtomicU32 = AtomicU32::new(0);

impl Client {
    /// A client that waits for replies as `wait` says; slow replies are
    /// announced once on standard error.
    ///
    /// The kernel answers only a bound sender, so the socket gets an abstract
    /// name (nothing to clean up on the filesystem), as the C client's does.
    pub fn new(wait: Wait) -> Result<Self, ClientError> {
        // A random part, so that nobody can take the name first and make
        // the bind fail; a name taken anyway is retried with another.
        let mut attempt = 0;
        let socket = loop {
            let name = format!(
                "uml_mconsole-{}-{}-{:016x}",
                std::process::id(),
                NEXT_SOCKET.fetch_add(1, Ordering::Relaxed),
                random_u64()
            );
            let addr =
                SocketAddr::from_abstract_name(name.as_bytes()).map_err(ClientError::Socket)?;
            match UnixDatagram::bind_addr(&addr) {
                Ok(socket) => break socket,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 8 => attempt += 1,
                Err(e) => return Err(ClientError::Socket(e)),
            }
        };
        Ok(Self {
            socket,
            wait,
            max_reply: MAX_REPLY,
            notice: Box::new(|text| eprintln!("uml_mconsole: {text}")),
        })
    }

    /// Prints slow-reply notices with `notice` instead of on standard error.
    pub fn with_notice(mut self, notice: impl Fn(&str) + 'static) -> Self {
        self.notice = Box::new(notice);
        self
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
    /// can slip a forged `OK` into the reply.
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
        self.discard_late_replies();
        let alive = Liveness {
            process: machine.claimed_process(),
            socket: sock.clone(),
        };
        self.socket.send(request.as_bytes()).map_err(refused)?;

        let mut assembler = ReplyAssembler::new();
        let mut total = 0usize;
        let mut buf = [0u8; 12 + MAX_DATA];
        let mut last = Instant::now();
        let mut noticed = false;
        loop {
            let slice = match self.wait {
                Wait::WhileAlive => LIVENESS_POLL,
                Wait::Timeout(limit) => {
                    let left = limit.saturating_sub(last.elapsed());
                    if left.is_zero() {
                        return Err(match assembler.into_partial() {
                            Some(partial) => ClientError::Incomplete {
                                machine: machine.name.clone(),
                                after: limit,
                                partial,
                            },
                            None => ClientError::Timeout {
                                machine: machine.name.clone(),
                                socket: sock.clone(),
                                after: limit,
                            },
                        });
                    }
                    left.min(LIVENESS_POLL)
                }
            };
            let n = match self.receive(&mut buf, slice, machine)? {
                Some(n) => n,
                None => {
                    if !alive.check() {
                        return Err(ClientError::Gone {
                            machine: machine.name.clone(),
                            pid: alive.process.map(|p| p.pid),
                            partial: assembler.into_partial(),
                        });
                    }
                    if self.wait == Wait::WhileAlive && !noticed && last.elapsed() >= SLOW_NOTICE {
                        noticed = true;
                        (self.notice)(&slow_notice(machine, alive.process.as_ref()));
                    }
                    continue;
                }
            };
            last = Instant::now();
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

    /// Waits at most `slice` for one datagram; `None` when none came.
    fn receive(
        &self,
        buf: &mut [u8],
        slice: Duration,
        machine: &Machine,
    ) -> Result<Option<usize>, ClientError> {
        let failed = |source| ClientError::Receive {
            socket: machine.socket.clone(),
            source,
        };
        self.socket.set_read_timeout(Some(slice)).map_err(failed)?;
        loop {
            match self.socket.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(source) => return Err(failed(source)),
            }
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

fn slow_notice(machine: &Machine, process: Option<&Process>) -> String {
    let pid = process
        .map(|p| format!(" (pid {})", p.pid))
        .unwrap_or_default();
    format!(
        "machine {}{pid} has not answered for {} s; waiting; Ctrl-C or --timeout to stop",
        machine.name,
        SLOW_NOTICE.as_secs()
    )
}

/// Whether the machine we wait for still lives.
struct Liveness {
    /// The process its `pid` file named when we sent the request.
    process: Option<Process>,
    socket: PathBuf,
}

impl Liveness {
    /// Alive while its process runs and something still holds its socket.
    /// A killed UML can leave helpers holding the socket, so the process
    /// decides when it is known; the socket alone decides otherwise.
    fn check(&self) -> bool {
        if self.process.is_some_and(|p| !p.is_running()) {
            return false;
        }
        let probe = UnixDatagram::unbound().and_then(|probe| probe.connect(&self.socket));
        match probe {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => false,
            // A rebooting UML re-creates its socket; its process says it lives.
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.process.is_some(),
            // Anything else (no permission to probe): we cannot tell, so it lives.
            Err(_) => true,
        }
    }
}
