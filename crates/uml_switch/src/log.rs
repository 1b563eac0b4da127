//! The switch's log: one line per event on standard output, as the C switch prints them.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Lines of one kind that a client can cause at any rate (a guest sending
/// from a new address in every frame): at most `per_second` of them are
/// printed in any one second, and the rest only counted.
#[derive(Debug)]
pub struct LineLimit {
    per_second: u32,
    /// When the current second began, and the lines printed in it.
    window: Option<(Instant, u32)>,
    /// Lines not printed since [`LineLimit::take_held_back`] last asked.
    held_back: u64,
}

impl LineLimit {
    /// At most `per_second` lines a second.
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: None,
            held_back: 0,
        }
    }

    /// Whether a line may be printed at `now`; counted as held back if not.
    pub fn allow(&mut self, now: Instant) -> bool {
        let used = match self.window {
            Some((start, used))
                if now.saturating_duration_since(start) < Duration::from_secs(1) =>
            {
                used
            }
            _ => {
                self.window = Some((now, 0));
                0
            }
        };
        if used < self.per_second {
            self.window = self.window.map(|(start, _)| (start, used + 1));
            true
        } else {
            self.held_back += 1;
            false
        }
    }

    /// How many lines were not printed since the last call.
    pub fn take_held_back(&mut self) -> u64 {
        std::mem::take(&mut self.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_so_many_lines_a_second_and_the_rest_counted() {
        let mut limit = LineLimit::new(3);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| limit.allow(t0)).count();
        assert_eq!((allowed, limit.take_held_back()), (3, 7));
        assert_eq!(limit.take_held_back(), 0, "told once");
        assert!(!limit.allow(t0 + Duration::from_millis(999)));
        assert!(limit.allow(t0 + Duration::from_secs(1)), "a new second");
        assert_eq!(limit.take_held_back(), 1);
    }
}
