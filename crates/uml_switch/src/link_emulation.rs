//! Per-port link emulation: delay with jitter, loss (optionally in bursts),
//! duplication, reordering and a rate limit with a bounded queue.
//!
//! Nothing here sleeps or owns a thread: [`Emulator::admit`] says when each
//! copy of a frame is due, and the event loop keeps the frames in a
//! [`Schedule`] (a heap ordered by due time) and wakes for the earliest one.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::ports::PortId;

/// Frames waiting for a rate-limited link when no `queue=` is given.
pub const DEFAULT_QUEUE: usize = 100;
/// Frames one emulated link holds at once when no `limit=` is given (netem's
/// default): a fast sender into a long delay cannot make the switch hoard memory.
pub const DEFAULT_LIMIT: usize = 1000;

/// Why an emulation setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulationError {
    /// An unknown `key=` or a value that does not parse.
    #[error(
        "link emulation: '{0}' (expected delay=, jitter=, loss=, burst=, dup=, reorder=, rate=, queue=, limit=, dir=)"
    )]
    Bad(String),
}

/// Which frames of a port are emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames the port sends into the switch.
    In,
    /// Frames the switch sends out of the port.
    Out,
    /// Both.
    Both,
}

impl FromStr for Direction {
    type Err = EmulationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "in" => Ok(Self::In),
            "out" => Ok(Self::Out),
            "both" => Ok(Self::Both),
            _ => Err(EmulationError::Bad(format!("dir={text}"))),
        }
    }
}

impl Direction {
    /// Whether frames entering the switch through the port are emulated.
    pub fn has_in(self) -> bool {
        matches!(self, Self::In | Self::Both)
    }

    /// Whether frames leaving the switch through the port are emulated.
    pub fn has_out(self) -> bool {
        matches!(self, Self::Out | Self::Both)
    }
}

/// What a link does to frames; the default does nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEmulation {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each frame's delay varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// Probability (0 to 1) that a frame is lost.
    pub loss: f64,
    /// Probability that the frame after a lost one is lost too (bursts);
    /// 0 makes losses independent.
    pub loss_burst: f64,
    /// Probability that a frame is sent twice.
    pub duplicate: f64,
    /// Probability that a frame skips the delay, overtaking those before it.
    pub reorder: f64,
    /// Bits per second the link carries; `None` for no limit.
    pub rate: Option<u64>,
    /// Frames that may wait for the rate limit; more are dropped.
    pub queue: usize,
    /// Frames the link may hold at once (waiting for the rate or the delay); more are dropped.
    pub limit: usize,
}

impl Default for LinkEmulation {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            loss_burst: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            rate: None,
            queue: DEFAULT_QUEUE,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl LinkEmulation {
    /// Whether the setting changes nothing.
    pub fn is_noop(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss <= 0.0
            && self.duplicate <= 0.0
            && self.reorder <= 0.0
            && self.rate.is_none()
    }

    /// Applies one `key=value` setting; returns false for keys that are not
    /// about emulation, so that callers can share an option string.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, EmulationError> {
        let bad = || EmulationError::Bad(format!("{key}={value}"));
        match key {
            "delay" => self.delay = parse_duration(value).ok_or_else(bad)?,
            "jitter" => self.jitter = parse_duration(value).ok_or_else(bad)?,
            "loss" => self.loss = parse_fraction(value).ok_or_else(bad)?,
            "burst" => self.loss_burst = parse_fraction(value).ok_or_else(bad)?,
            "dup" | "duplicate" => self.duplicate = parse_fraction(value).ok_or_else(bad)?,
            "reorder" => self.reorder = parse_fraction(value).ok_or_else(bad)?,
            "rate" => self.rate = Some(parse_rate(value).ok_or_else(bad)?),
            "queue" => self.queue = value.parse().map_err(|_| bad())?,
            "limit" => self.limit = value.parse().map_err(|_| bad())?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl FromStr for LinkEmulation {
    type Err = EmulationError;

    /// `delay=100ms,jitter=10ms,loss=20%,burst=25%,dup=1%,reorder=5%,rate=1mbit,queue=50`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut emulation = Self::default();
        for item in text.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| EmulationError::Bad(item.to_owned()))?;
            if !emulation.set(key, value)? {
                return Err(EmulationError::Bad(item.to_owned()));
            }
        }
        Ok(emulation)
    }
}

/// `100ms`, `1.5s`, `250us`, `0` (a bare number is milliseconds, as tc's).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1e-3)
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0 && value * scale < 3600.0)
        .then(|| Duration::from_secs_f64(value * scale))
}

/// `20%` or `0.2`.
pub fn parse_fraction(text: &str) -> Option<f64> {
    let value: f64 = match text.strip_suffix('%') {
        Some(p) => p.parse::<f64>().ok()? / 100.0,
        None => text.parse().ok()?,
    };
    (0.0..=1.0).contains(&value).then_some(value)
}

/// Bits per second: `1mbit`, `512kbit`, `10gbit`, `9600bit` or a bare number
/// (decimal prefixes, as tc's `mbit`).
pub fn parse_rate(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|&(unit, scale)| lower.strip_suffix(unit).map(|n| (n.to_owned(), scale)))
        .unwrap_or((lower.clone(), 1.0));
    let value: f64 = number.parse().ok()?;
    let bits = value * scale;
    (1.0..1e13).contains(&bits).then(|| {
        // Checked above: positive, finite and below 2^64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let b = bits as u64;
        b
    })
}

/// A small, fast generator (xorshift64*): the emulation needs coin flips, not secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (0 is replaced, xorshift never leaves it).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A generator seeded from the clock and our pid.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos()) ^ d.as_secs());
        Self::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits are exactly representable.
        #[allow(clippy::cast_precision_loss)]
        let top = (self.next_u64() >> 11) as f64;
        top / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// One direction of one port's emulated link, with its state.
#[derive(Debug, Clone)]
pub struct Emulator {
    settings: LinkEmulation,
    rng: Rng,
    /// The previous frame was lost (for bursts).
    losing: bool,
    /// When the rate-limited link finishes sending what it has taken.
    busy_until: Option<Instant>,
    /// When each frame still waiting for the rate limit leaves.
    departures: VecDeque<Instant>,
    /// When each frame the link holds is due, earliest on top.
    held: BinaryHeap<std::cmp::Reverse<Instant>>,
}

impl Emulator {
    /// An emulator with `settings`, its coin flips from `rng`.
    pub fn new(settings: LinkEmulation, rng: Rng) -> Self {
        Self {
            settings,
            rng,
            losing: false,
            busy_until: None,
            departures: VecDeque::new(),
            held: BinaryHeap::new(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &LinkEmulation {
        &self.settings
    }

    /// When each copy of a `len`-byte frame offered at `now` is due (none
    /// when it is lost or the rate limit's queue is full, two when duplicated).
    pub fn admit(&mut self, len: usize, now: Instant, due: &mut Vec<Instant>) {
        due.clear();
        let s = self.settings.clone();
        let lost = if self.losing && s.loss_burst > 0.0 {
            self.rng.chance(s.loss_burst)
        } else {
            self.rng.chance(s.loss)
        };
        self.losing = lost;
        if lost {
            return;
        }
        while self.held.peek().is_some_and(|r| r.0 <= now) {
            self.held.pop();
        }
        if self.held.len() >= s.limit.max(1) {
            return;
        }
        let mut leaves = now;
        if let Some(rate) = s.rate {
            while self.departures.front().is_some_and(|&d| d <= now) {
                self.departures.pop_front();
            }
            if self.departures.len() >= s.queue.max(1) {
                return;
            }
            let bits = u64::try_from(len).unwrap_or(u64::MAX).saturating_mul(8);
            let nanos = u128::from(bits) * 1_000_000_000 / u128::from(rate.max(1));
            let serialise = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            let start = self.busy_until.filter(|&b| b > now).unwrap_or(now);
            leaves = start + serialise;
            self.busy_until = Some(leaves);
            self.departures.push_back(leaves);
        }
        let copies = if self.rng.chance(s.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.rng.chance(s.reorder) {
                Duration::ZERO
            } else {
                self.jittered()
            };
            due.push(leaves + delay);
            self.held.push(std::cmp::Reverse(leaves + delay));
        }
    }

    fn jittered(&mut self) -> Duration {
        let (delay, jitter) = (self.settings.delay, self.settings.jitter);
        if jitter.is_zero() {
            return delay;
        }
        let offset = jitter.mul_f64(self.rng.unit() * 2.0);
        (delay + offset).saturating_sub(jitter)
    }
}

/// Where a frame waiting in the schedule goes when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// It came in through this port's emulated input: now it is switched.
    Arrived(PortId),
    /// It was switched to this port's emulated output (the first port; the
    /// second is where it came from): now it is sent there.
    Leaving(PortId, PortId),
}

/// A frame waiting for its time.
#[derive(Debug)]
pub struct Scheduled {
    /// When it is due.
    pub due: Instant,
    seq: u64,
    /// What happens then.
    pub stage: Stage,
    /// Its VLAN (see [`crate::vlan::Classified`]).
    pub vid: u16,
    /// Its tag's priority bits.
    pub pcp_dei: u16,
    /// The frame.
    pub frame: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that the heap's top is the earliest (ties in arrival order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Frames waiting for their time, earliest first; a frame costs nothing while it waits.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Schedule {
    /// Adds a frame due at `due`.
    pub fn push(&mut self, due: Instant, stage: Stage, vid: u16, pcp_dei: u16, frame: Vec<u8>) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Scheduled {
            due,
            seq: self.seq,
            stage,
            vid,
            pcp_dei,
            frame,
        });
    }

    /// When the earliest frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|s| s.due)
    }

    /// The earliest frame if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Scheduled> {
        if self.heap.peek()?.due <= now {
            self.heap.pop()
        } else {
            None
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator(text: &str) -> Emulator {
        Emulator::new(text.parse().unwrap(), Rng::new(7))
    }

    #[test]
    fn parses_settings() {
        let e: LinkEmulation =
            "delay=100ms,jitter=1.5ms,loss=20%,burst=0.5,dup=1%,reorder=5%,rate=1mbit,queue=10"
                .parse()
                .unwrap();
        assert_eq!(e.delay, Duration::from_millis(100));
        assert_eq!(e.jitter, Duration::from_micros(1500));
        assert!((e.loss - 0.2).abs() < 1e-9 && (e.loss_burst - 0.5).abs() < 1e-9);
        assert_eq!((e.rate, e.queue), (Some(1_000_000), 10));
        assert!("loss=120%".parse::<LinkEmulation>().is_err());
        assert!("speed=1".parse::<LinkEmulation>().is_err());
        assert!("delay=-1ms".parse::<LinkEmulation>().is_err());
        assert_eq!(parse_rate("512kbit"), Some(512_000));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert!("".parse::<LinkEmulation>().unwrap().is_noop());
    }

    #[test]
    fn delay_and_jitter_stay_in_their_window() {
        let mut e = emulator("delay=100ms,jitter=10ms");
        let now = Instant::now();
        let mut due = Vec::new();
        for _ in 0..1000 {
            e.admit(100, now, &mut due);
            let d = due[0] - now;
            assert!(
                d >= Duration::from_millis(90) && d <= Duration::from_millis(110),
                "{d:?}"
            );
        }
    }

    #[test]
    fn loss_is_near_its_probability_and_bursts_cluster() {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut count = |text: &str| {
            let mut e = emulator(text);
            let mut lost = 0;
            let mut runs = 0;
            let mut previous = false;
            for _ in 0..20_000 {
                e.admit(100, now, &mut due);
                let l = due.is_empty();
                lost += usize::from(l);
                runs += usize::from(l && !previous);
                previous = l;
            }
            (lost, runs)
        };
        let (lost, runs) = count("loss=20%");
        assert!((3600..4400).contains(&lost), "{lost}");
        let (burst_lost, burst_runs) = count("loss=20%,burst=80%");
        // Bursts: longer runs of losses than independent ones.
        assert!(
            burst_lost / burst_runs.max(1) > lost / runs.max(1),
            "{burst_lost}/{burst_runs} vs {lost}/{runs}"
        );
    }

    #[test]
    fn duplicates_and_reorders() {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut e = emulator("dup=100%");
        e.admit(100, now, &mut due);
        assert_eq!(due, [now, now]);
        let mut e = emulator("delay=50ms,reorder=100%");
        e.admit(100, now, &mut due);
        assert_eq!(due, [now]);
    }

    #[test]
    fn the_rate_spaces_frames_and_the_queue_is_bounded() {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut e = emulator("rate=1mbit,queue=3");
        let mut times = Vec::new();
        for _ in 0..5 {
            e.admit(1250, now, &mut due); // 10 ms at 1 Mbit/s
            times.push(due.first().copied());
        }
        let ms = |n| Some(now + Duration::from_millis(n));
        assert_eq!(times, [ms(10), ms(20), ms(30), None, None]);
        // Once the first has left, one more fits, after the third.
        e.admit(1250, now + Duration::from_millis(10), &mut due);
        assert_eq!(due, [now + Duration::from_millis(40)]);
    }

    #[test]
    fn a_link_holds_at_most_its_limit() {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut e = emulator("delay=1s,limit=3");
        let held: Vec<bool> = (0..5)
            .map(|_| {
                e.admit(100, now, &mut due);
                !due.is_empty()
            })
            .collect();
        assert_eq!(held, [true, true, true, false, false]);
        // Once the first are delivered, there is room again.
        e.admit(100, now + Duration::from_secs(1), &mut due);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn the_schedule_gives_the_earliest_first() {
        let mut s = Schedule::default();
        let now = Instant::now();
        s.push(
            now + Duration::from_millis(20),
            Stage::Leaving(1, 2),
            0,
            0,
            vec![2],
        );
        s.push(
            now + Duration::from_millis(10),
            Stage::Arrived(2),
            0,
            0,
            vec![1],
        );
        s.push(
            now + Duration::from_millis(20),
            Stage::Leaving(1, 2),
            0,
            0,
            vec![3],
        );
        assert_eq!(s.next_due(), Some(now + Duration::from_millis(10)));
        assert!(s.pop_due(now).is_none());
        let later = now + Duration::from_millis(30);
        let order: Vec<u8> = std::iter::from_fn(|| s.pop_due(later))
            .map(|f| f.frame[0])
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(s.is_empty());
    }
}
