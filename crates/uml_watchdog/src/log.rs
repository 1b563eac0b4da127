//! Where the log lines go.
//!
//! When the kernel starts the tool, stderr is the same pipe as stdout: the
//! kernel reads only the ready byte from it and never again, so lines written
//! there would be lost (and, before the ready byte, would be mistaken for it).
//! They go to syslog instead, or to the file named by [`crate::LOG_ENV`].

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// A destination for one line per action.
#[derive(Debug)]
pub enum Log {
    /// Appended to a file.
    File(File),
    /// Written to stderr (run by hand).
    Stderr,
    /// Sent to the local syslog socket.
    Syslog(UnixDatagram),
    /// Nowhere: stderr is the kernel's pipe and there is no syslog.
    Off,
}

impl Log {
    /// The destination for this run: the file in `log_file` if given, else
    /// stderr unless it is the kernel's pipe, else syslog when there is one.
    pub fn choose(log_file: Option<&Path>) -> Self {
        if let Some(path) = log_file {
            match File::options().create(true).append(true).open(path) {
                Ok(file) => return Log::File(file),
                Err(e) => eprintln!("uml_watchdog: cannot open log {}: {e}", path.display()),
            }
        }
        if !stderr_is_stdout() {
            return Log::Stderr;
        }
        UnixDatagram::unbound()
            .and_then(|sock| sock.connect("/dev/log").map(|()| sock))
            .map_or(Log::Off, Log::Syslog)
    }

    /// Records one line; a failure to log never stops the watchdog.
    pub fn line(&mut self, message: &str) {
        let pid = std::process::id();
        match self {
            Log::File(file) => {
                let _ = writeln!(file, "uml_watchdog[{pid}]: {message}");
            }
            Log::Stderr => eprintln!("uml_watchdog[{pid}]: {message}"),
            Log::Syslog(sock) => {
                // daemon.notice
                let _ = sock.send(format!("<29>uml_watchdog[{pid}]: {message}").as_bytes());
            }
            Log::Off => {}
        }
    }
}

/// Whether fds 1 and 2 are the same open pipe or file (as the kernel sets them up).
fn stderr_is_stdout() -> bool {
    match (
        std::fs::read_link("/proc/self/fd/1"),
        std::fs::read_link("/proc/self/fd/2"),
    ) {
        (Ok(out), Ok(err)) => out == err && out.to_string_lossy().starts_with("pipe:"),
        _ => false,
    }
}
