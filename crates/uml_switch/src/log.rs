//! The switch's log: one line per event on standard output, as the C switch prints them.

use std::io::{self, Write};

/// Prints a log line: flushed at once, also into a pipe or a file; a closed
/// stdout is ignored.
pub fn log_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
