//! The host side of the UML hardware watchdog (`CONFIG_UML_WATCHDOG`).
//!
//! When a guest opens `/dev/watchdog`, the kernel starts this tool with a pipe
//! on each of stdin and stdout and waits for one byte on stdout; every write
//! to the device then arrives as one byte on stdin, and closing the device
//! closes stdin. If no byte arrives within the timeout the guest is taken to
//! be hung: with `-pid` the UML process is interrupted (and killed if that is
//! not enough), with `-mconsole` a HANG notification goes to the mconsole
//! notify socket and the guest is left running.

pub mod cli;
mod dog;
mod log;

pub use dog::{Action, Outcome, Target, Watchdog, WatchdogError};
pub use log::Log;

use std::time::Duration;

/// The C tool's fixed hang timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable that shortens (or lengthens) the hang timeout; the
/// kernel passes its environment to the tool, so a host sets it for the UML.
pub const TIMEOUT_ENV: &str = "UML_WATCHDOG_TIMEOUT";

/// Environment variable naming a file the log lines are appended to.
pub const LOG_ENV: &str = "UML_WATCHDOG_LOG";

/// Reads a timeout in seconds (fractions allowed, at least one millisecond).
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d >= Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_timeout("0"), None);
        assert_eq!(parse_timeout("-1"), None);
        assert_eq!(parse_timeout("x"), None);
        assert_eq!(parse_timeout("inf"), None);
    }
}
