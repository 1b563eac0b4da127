//! The watch loop and what happens on a hang.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use uml_proto::mconsole::WatchdogHangWire;
use zerocopy::IntoBytes;

use crate::log::Log;

/// What to do when the guest stops pinging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Interrupt, then kill, this host process (the UML kernel).
    Pid(i32),
    /// Send a HANG notification to this mconsole notify socket.
    Mconsole(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "pid {pid}"),
            Target::Mconsole(path) => write!(f, "mconsole notify socket {}", path.display()),
        }
    }
}

/// How the watch ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest closed the device (or the UML went away) while pinging: exit 0.
    Closed,
    /// The guest hung and the watchdog acted: exit 1, as the C tool does.
    Acted(Action),
}

/// What was done about a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The UML let go of the watchdog after SIGINT.
    Interrupted,
    /// SIGINT twice did not end it; it got SIGKILL.
    Killed,
    /// The process no longer existed when signalled.
    AlreadyGone,
    /// The HANG notification was sent.
    Reported,
}

/// Why the watchdog failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The ready byte could not be written.
    #[error("telling the kernel we are ready: {0}")]
    Ready(#[source] io::Error),
    /// Reading the pings failed.
    #[error("reading pings: {0}")]
    Read(#[source] io::Error),
    /// A signal could not be sent.
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The target.
        pid: i32,
        /// The failure.
        source: Errno,
    },
    /// The HANG notification could not be sent.
    #[error("sending the hang notification to {}: {source}", path.display())]
    Notify {
        /// The notify socket.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// One event from the ping pipe.
enum Ping {
    /// One or more pings.
    Alive,
    /// The pipe closed.
    Closed,
    /// Reading failed.
    Failed(io::Error),
}

/// A configured watchdog.
#[derive(Debug)]
pub struct Watchdog {
    /// What to act on.
    pub target: Target,
    /// How long without a ping means hung.
    pub timeout: Duration,
    /// How long to wait after each SIGINT for the UML to let go.
    pub grace: Duration,
    /// Where the log lines go.
    pub log: Log,
}

impl Watchdog {
    /// Signals the kernel with the ready byte, then watches `pings` until the
    /// guest closes the device or stops pinging for the timeout.
    pub fn run(
        &mut self,
        pings: impl Read + Send + 'static,
        mut ready: impl Write,
    ) -> Result<Outcome, WatchdogError> {
        // The kernel's open() of /dev/watchdog returns once it reads this byte.
        ready
            .write_all(&[0])
            .and_then(|()| ready.flush())
            .map_err(WatchdogError::Ready)?;
        let events = spawn_reader(pings);
        self.log.line(&format!(
            "watching for {}; a hang is {} s without a ping",
            self.target,
            self.timeout.as_secs_f64()
        ));
        loop {
            match events.recv_timeout(self.timeout) {
                Ok(Ping::Alive) => {}
                Ok(Ping::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    self.log.line("the guest closed the watchdog; exiting");
                    return Ok(Outcome::Closed);
                }
                Ok(Ping::Failed(e)) => return Err(WatchdogError::Read(e)),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let action = match self.target.clone() {
            Target::Pid(pid) => self.end_process(pid, &events)?,
            Target::Mconsole(path) => self.report(path)?,
        };
        Ok(Outcome::Acted(action))
    }

    /// SIGINT (the UML shuts down and removes its umid directory), again after
    /// the grace time, then SIGKILL: the C tool's sequence, cut short as soon
    /// as the UML lets go of the watchdog.
    fn end_process(&mut self, pid: i32, events: &Receiver<Ping>) -> Result<Action, WatchdogError> {
        let silent = self.timeout.as_secs_f64();
        for signal in [Signal::SIGINT, Signal::SIGINT, Signal::SIGKILL] {
            self.log.line(&format!(
                "no ping for {silent} s: sending {signal} to pid {pid}"
            ));
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) => {}
                Err(Errno::ESRCH) => {
                    self.log.line(&format!("pid {pid} is gone"));
                    return Ok(Action::AlreadyGone);
                }
                Err(source) => {
                    return Err(WatchdogError::Signal {
                        signal,
                        pid,
                        source,
                    });
                }
            }
            if signal == Signal::SIGKILL {
                return Ok(Action::Killed);
            }
            if closed_within(events, self.grace) {
                self.log
                    .line(&format!("pid {pid} let go of the watchdog after {signal}"));
                return Ok(Action::Interrupted);
            }
        }
        Ok(Action::Killed)
    }

    /// Sends the HANG notification in the layout a 64-bit C tool uses.
    fn report(&mut self, path: PathBuf) -> Result<Action, WatchdogError> {
        self.log.line(&format!(
            "no ping for {} s: reporting a hang to {}",
            self.timeout.as_secs_f64(),
            path.display()
        ));
        let hang = WatchdogHangWire::new();
        match UnixDatagram::unbound().and_then(|sock| sock.send_to(hang.as_bytes(), &path)) {
            Ok(_) => Ok(Action::Reported),
            Err(source) => {
                self.log.line(&format!("could not send the hang: {source}"));
                Err(WatchdogError::Notify { path, source })
            }
        }
    }
}

/// Reads pings on a thread of their own, so the main loop waits with a timeout
/// on a channel instead of polling.
fn spawn_reader(mut pings: impl Read + Send + 'static) -> Receiver<Ping> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            let event = match pings.read(&mut buf) {
                Ok(0) => Ping::Closed,
                Ok(_) => Ping::Alive,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Ping::Failed(e),
            };
            let last = !matches!(event, Ping::Alive);
            if tx.send(event).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// Whether the ping pipe closes (or fails) within `grace`; pings are ignored.
fn closed_within(events: &Receiver<Ping>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Ping::Alive) => {}
            Ok(Ping::Closed | Ping::Failed(_)) | Err(RecvTimeoutError::Disconnected) => {
                return true;
            }
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Cursor;
    use std::process::{Command, Stdio};

    fn dog(target: Target, timeout_ms: u64) -> Watchdog {
        Watchdog {
            target,
            timeout: Duration::from_millis(timeout_ms),
            grace: Duration::from_millis(200),
            log: Log::Off,
        }
    }

    #[test]
    fn eof_is_a_clean_close_after_the_ready_byte() {
        let mut ready = Vec::new();
        let outcome = dog(Target::Pid(1), 10_000)
            .run(Cursor::new(b"\n\n\n".to_vec()), &mut ready)
            .unwrap();
        assert_eq!(outcome, Outcome::Closed);
        assert_eq!(ready, [0]);
    }

    #[test]
    fn silence_sends_the_hang_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        let (_keep_open, pings) = std::os::unix::net::UnixStream::pair().unwrap();
        let outcome = dog(Target::Mconsole(path.clone()), 50)
            .run(pings, Vec::new())
            .unwrap();
        assert_eq!(outcome, Outcome::Acted(Action::Reported));
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], WatchdogHangWire::new().as_bytes());
    }

    #[test]
    fn silence_interrupts_then_kills_a_process() {
        // A process that ignores SIGINT, so the whole sequence runs.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' INT; exec sleep 30"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let (_keep_open, pings) = std::os::unix::net::UnixStream::pair().unwrap();
        let outcome = dog(Target::Pid(pid), 50).run(pings, Vec::new()).unwrap();
        assert_eq!(outcome, Outcome::Acted(Action::Killed));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn a_missing_notify_socket_is_an_error() {
        let (_keep_open, pings) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = dog(Target::Mconsole("/nonexistent/notify".into()), 20)
            .run(pings, Vec::new())
            .unwrap_err();
        assert!(matches!(err, WatchdogError::Notify { .. }), "{err}");
    }
}
