//! Per-port and switch-wide frame counters.
//!
//! Plain integers bumped by the single-threaded event loop where it already
//! holds the port it touches, so accounting costs the data path no lock, no
//! atomic, no system call and no extra table look-up; the management socket
//! reads them between events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a port sent into the switch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RxCounters {
    /// Frames received from the port, every one (the drops below included).
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames shorter than an Ethernet header, dropped.
    pub runt: u64,
    /// Frames longer than the largest frame forwarded, dropped.
    pub oversize: u64,
    /// Frames a capture could not take (its queue was full), forwarded anyway.
    pub capture: u64,
}

/// What the switch sent to a port.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TxCounters {
    /// Frames the kernel took for the port.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Copies dropped because the port's receive queue was full.
    pub queue_full: u64,
}

impl RxCounters {
    /// Counts one received frame of `len` bytes.
    #[inline]
    pub fn frame(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
    }

    /// Adds another port's counts (totals, closed ports).
    pub fn add(&mut self, other: &Self) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.runt += other.runt;
        self.oversize += other.oversize;
        self.capture += other.capture;
    }
}

impl TxCounters {
    /// Counts one copy handed to the kernel for the port.
    #[inline]
    pub fn frame(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
    }

    /// Turns a copy counted as sent into one dropped for a full queue.
    pub fn refused(&mut self, len: usize) {
        self.frames = self.frames.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len as u64);
        self.queue_full += 1;
    }

    /// Adds another port's counts (totals, closed ports).
    pub fn add(&mut self, other: &Self) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.queue_full += other.queue_full;
    }
}

/// Samples of the total received frames, for a recent rate.
#[derive(Debug)]
pub struct RateWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

/// How far back the rate looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// The least time between two samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl RateWindow {
    /// No samples yet.
    pub fn new() -> Self {
        Self {
            samples: VecDeque::new(),
        }
    }

    /// Whether a sample is due at `now` (the last is [`SAMPLE_EVERY`] old).
    pub fn due(&self, now: Instant) -> bool {
        self.samples
            .back()
            .is_none_or(|&(t, _, _)| now.saturating_duration_since(t) >= SAMPLE_EVERY)
    }

    /// Records the totals at `now`, at most once a second, keeping [`RATE_WINDOW`].
    pub fn sample(&mut self, now: Instant, frames: u64, bytes: u64) {
        if !self.due(now) {
            return;
        }
        self.samples.push_back((now, frames, bytes));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _, _)| now.saturating_duration_since(t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Frames and bytes per second between the oldest sample kept and `now`
    /// (totals `frames`, `bytes`), and the seconds that covers.
    pub fn rate(&self, now: Instant, frames: u64, bytes: u64) -> (f64, f64, f64) {
        let Some(&(t, f0, b0)) = self.samples.front() else {
            return (0.0, 0.0, 0.0);
        };
        let secs = now.saturating_duration_since(t).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        (
            frames.saturating_sub(f0) as f64 / secs,
            bytes.saturating_sub(b0) as f64 / secs,
            secs,
        )
    }
}

impl Default for RateWindow {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_copy_moves_from_sent_to_dropped() {
        let mut tx = TxCounters::default();
        tx.frame(100);
        tx.frame(60);
        tx.refused(60);
        assert_eq!(
            tx,
            TxCounters {
                frames: 1,
                bytes: 100,
                queue_full: 1
            }
        );
    }

    #[test]
    fn the_rate_covers_the_samples_kept() {
        let mut w = RateWindow::new();
        let t0 = Instant::now();
        w.sample(t0, 0, 0);
        w.sample(t0 + Duration::from_millis(500), 10, 10); // too soon: ignored
        w.sample(t0 + Duration::from_secs(2), 200, 2000);
        let (fps, bps, secs) = w.rate(t0 + Duration::from_secs(4), 400, 4000);
        assert_eq!((fps, bps, secs), (100.0, 1000.0, 4.0));
        w.sample(t0 + Duration::from_secs(20), 500, 5000);
        let (_, _, secs) = w.rate(t0 + Duration::from_secs(21), 500, 5000);
        assert_eq!(secs, 1.0);
    }
}
