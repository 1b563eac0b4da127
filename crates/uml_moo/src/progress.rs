//! The progress bar on a terminal, shown only for merges that take more than a moment.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a merge runs before the bar appears: short merges stay silent.
const SHOW_AFTER: Duration = Duration::from_millis(700);

/// Byte progress of one merge.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    wanted: bool,
    started: Instant,
    total: u64,
    done: u64,
    label: &'static str,
}

impl Progress {
    /// Progress over `total` bytes, drawn on stderr when `wanted` and stderr is a terminal.
    pub fn new(total: u64, wanted: bool, label: &'static str) -> Self {
        Self {
            bar: None,
            wanted: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            total,
            done: 0,
            label,
        }
    }

    /// No output at all (tests, `--quiet`).
    pub fn hidden() -> Self {
        Self::new(0, false, "")
    }

    /// Records `bytes` more bytes handled.
    pub fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if self.wanted && self.started.elapsed() >= SHOW_AFTER {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(self.label);
            bar.set_position(self.done);
            self.bar = Some(bar);
        }
    }

    /// Removes the bar, leaving the terminal as it was.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
