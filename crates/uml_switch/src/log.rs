//! The switch's log: one line per event on standard output, as the C switch prints them.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when standard output carries a capture (`--pcap -`).
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends the log to standard error from now on: standard output carries a capture.
pub fn to_stderr() {
    TO_STDERR.store(true, Ordering::Relaxed);
}

/// Prints a log line: flushed at once, also into a pipe or a file; a closed
/// stdout is ignored.
pub fn log_line(line: &str) {
    if TO_STDERR.load(Ordering::Relaxed) {
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "{line}");
        return;
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
