//! Frames held for a port whose socket queue is full, sent when it has room.
//!
//! A datagram receiver's queue is short (`net.unix.max_dgram_qlen`, 10 by
//! default), so a burst for one port fills it while its reader is merely
//! scheduled out. Instead of dropping the rest, the switch keeps up to a
//! bounded backlog per port and asks epoll to say when the port's own socket
//! (connected to the client's) can take frames again: the kernel wakes a
//! connected datagram or seqpacket socket's writers when the peer's queue
//! drains. A port that stops reading fills its backlog and then loses frames,
//! counted; it never holds up the others.
//!
//! A backlog that grows is also the switch taking frames faster than a
//! reader can: past [`HOLD_AT`] frames the port holds back the ports whose
//! frames filled it (the switch stops reading them, so their senders wait,
//! as they would on a slower switch) until its backlog is empty. Holding
//! back stops every frame of the held port, not only those for the slow
//! reader, so it is bounded: a port whose backlog is not sent within
//! [`STALL_AFTER`] lets them go and holds no one back for [`HOLD_COOLDOWN`]
//! (its frames are dropped once its backlog is full). A reader that stops,
//! or reads just fast enough on purpose, delays the others by at most
//! [`STALL_AFTER`] a [`HOLD_COOLDOWN`].

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, UnixAddr, send, sendmmsg};

use crate::ports::PortId;

/// Frames held for one port at most.
pub const BACKLOG_FRAMES: usize = 256;
/// Bytes held for one port at most (a few jumbo frames, or many small ones).
pub const BACKLOG_BYTES: usize = 1 << 20;
/// Bytes held for all ports together at most: many ports that never read
/// cannot make the switch hold more than this.
pub const TOTAL_BACKLOG_BYTES: usize = 64 << 20;

/// The bytes every backlog of a switch holds, against a limit.
#[derive(Debug)]
pub struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    /// Nothing held yet; at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { used: 0, limit }
    }

    /// The bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    fn take(&mut self, len: usize) -> bool {
        if self.used + len > self.limit {
            return false;
        }
        self.used += len;
        true
    }

    fn give_back(&mut self, len: usize) {
        self.used = self.used.saturating_sub(len);
    }
}
/// Backlog length from which a port holds back the ports that fill it.
pub const HOLD_AT: usize = 64;
/// How long a port may hold others back in one go.
pub const STALL_AFTER: Duration = Duration::from_millis(20);
/// How long a port that held others back for [`STALL_AFTER`] holds no one.
pub const HOLD_COOLDOWN: Duration = Duration::from_secs(1);
/// Frames handed to the kernel per `sendmmsg` at most.
pub const SEND_BATCH: usize = 64;

/// Whether a send error means the port's peer is gone for good.
pub fn peer_gone(e: Errno) -> bool {
    matches!(
        e,
        Errno::ECONNREFUSED | Errno::ENOENT | Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN
    )
}

/// What became of the frames offered to a port's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// How many the kernel took, from the front.
    pub taken: usize,
    /// Whether the port's peer is gone for good.
    pub gone: bool,
    /// Whether the peer's queue was full when the rest was offered.
    pub full: bool,
}

/// Sends `frames` in order on a connected socket without waiting, as many as
/// the peer's queue takes. A frame refused for another reason than a full
/// queue or a vanished peer is skipped: counted as taken, its index put in
/// `lost` (nothing would make it go later).
pub fn send_connected(
    fd: BorrowedFd<'_>,
    headers: &mut MultiHeaders<UnixAddr>,
    frames: &[&[u8]],
    lost: &mut Vec<usize>,
) -> Sent {
    const NO_ADDRESS: [Option<UnixAddr>; SEND_BATCH] = [None; SEND_BATCH];
    let mut taken = 0;
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    while taken < frames.len() {
        let chunk = &frames[taken..frames.len().min(taken + SEND_BATCH)];
        let sent = if let [frame] = chunk {
            // One frame (light load, ping-pong): a plain send is cheaper.
            send(fd.as_raw_fd(), frame, flags).map(|_| 1)
        } else {
            // On the stack: this runs for every batch under load.
            let mut slices = [[IoSlice::new(&[])]; SEND_BATCH];
            for (slice, frame) in slices.iter_mut().zip(chunk) {
                *slice = [IoSlice::new(frame)];
            }
            sendmmsg(
                fd.as_raw_fd(),
                headers,
                slices[..chunk.len()].iter(),
                &NO_ADDRESS[..chunk.len()],
                [],
                flags,
            )
            .map(|results| results.count())
        };
        match sent {
            Ok(count) => taken += count.max(1),
            Err(Errno::EINTR) => {}
            // ENOBUFS is the kernel short of memory, not a full queue: epoll
            // would not wait for it, so such a frame is lost, not kept.
            Err(Errno::EAGAIN) => {
                return Sent {
                    taken,
                    gone: false,
                    full: true,
                };
            }
            Err(e) if peer_gone(e) => {
                return Sent {
                    taken,
                    gone: true,
                    full: false,
                };
            }
            Err(_) => {
                lost.push(taken);
                taken += 1;
            }
        }
    }
    Sent {
        taken,
        gone: false,
        full: false,
    }
}

/// The frames waiting for one port.
#[derive(Debug, Default)]
pub struct Backlog {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Whether epoll was asked to report the port's socket writable.
    pub armed: bool,
    /// The ports held back until this backlog is empty.
    holding: Vec<PortId>,
    /// Since when it holds ports back.
    holding_since: Option<Instant>,
    /// Until when it may hold no one back, after holding too long.
    no_hold_until: Option<Instant>,
}

impl Backlog {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// How many frames wait.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the port should hold back the port whose frames it just took.
    pub fn wants_hold(&self) -> bool {
        self.frames.len() >= HOLD_AT && self.may_hold(Instant::now())
    }

    /// Whether the port may hold anyone back at `now` (it is not cooling down).
    pub fn may_hold(&self, now: Instant) -> bool {
        self.no_hold_until.is_none_or(|until| now >= until)
    }

    /// Holds `from` back from `now`; false if it already was.
    pub fn start_holding(&mut self, from: PortId, now: Instant) -> bool {
        if self.holding.contains(&from) {
            return false;
        }
        if self.holding.is_empty() {
            self.holding_since = Some(now);
        }
        self.holding.push(from);
        true
    }

    /// Whether the port holds ports back, and has for [`STALL_AFTER`] by `now`.
    pub fn held_too_long(&self, now: Instant) -> bool {
        !self.holding.is_empty()
            && self
                .holding_since
                .is_some_and(|since| now.saturating_duration_since(since) >= STALL_AFTER)
    }

    /// Lets go of every port held back, and returns them; `cooldown`: the
    /// port held too long and may hold no one for [`HOLD_COOLDOWN`] from `now`.
    pub fn stop_holding(&mut self, now: Instant, cooldown: bool) -> Vec<PortId> {
        if cooldown {
            self.no_hold_until = now.checked_add(HOLD_COOLDOWN);
        }
        self.holding_since = None;
        std::mem::take(&mut self.holding)
    }

    /// Whether it holds anyone back.
    pub fn is_holding(&self) -> bool {
        !self.holding.is_empty()
    }

    /// Keeps a copy of `frame` at the end; false (and nothing kept) when the
    /// backlog, or the switch's `budget` for all of them, is full.
    pub fn push(&mut self, frame: &[u8], budget: &mut Budget) -> bool {
        if self.frames.len() >= BACKLOG_FRAMES
            || self.bytes + frame.len() > BACKLOG_BYTES
            || !budget.take(frame.len())
        {
            return false;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame.to_vec());
        true
    }

    /// Offers the waiting frames to the port's socket, oldest first; those the
    /// kernel took (or refused for good, counted in `lost`) leave the
    /// backlog. Returns what `send_connected` said; the lengths of the frames
    /// taken go to `taken_lens`, for the counters.
    pub fn flush(
        &mut self,
        fd: BorrowedFd<'_>,
        headers: &mut MultiHeaders<UnixAddr>,
        taken_lens: &mut Vec<usize>,
        lost: &mut u64,
        budget: &mut Budget,
    ) -> Sent {
        let mut total = Sent {
            taken: 0,
            gone: false,
            full: false,
        };
        while !self.frames.is_empty() {
            let front: Vec<&[u8]> = self
                .frames
                .iter()
                .take(SEND_BATCH)
                .map(Vec::as_slice)
                .collect();
            let offered = front.len();
            let mut refused = Vec::new();
            let sent = send_connected(fd, headers, &front, &mut refused);
            for (i, frame) in self.frames.drain(..sent.taken).enumerate() {
                self.bytes -= frame.len();
                budget.give_back(frame.len());
                if refused.contains(&i) {
                    *lost += 1;
                } else {
                    taken_lens.push(frame.len());
                }
            }
            total.taken += sent.taken;
            if sent.gone || sent.full || sent.taken < offered {
                total.gone = sent.gone;
                total.full = sent.full;
                return total;
            }
        }
        total
    }

    /// Forgets every waiting frame; returns how many there were.
    pub fn clear(&mut self, budget: &mut Budget) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        budget.give_back(self.bytes);
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn headers() -> MultiHeaders<UnixAddr> {
        MultiHeaders::preallocate(SEND_BATCH, None)
    }

    /// A connected pair whose receiving end holds at most what the system allows.
    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        (a, b)
    }

    fn drain(b: &UnixDatagram) -> Vec<Vec<u8>> {
        b.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 2048];
        std::iter::from_fn(|| b.recv(&mut buf).ok().map(|n| buf[..n].to_vec())).collect()
    }

    #[test]
    fn a_full_queue_stops_the_send_and_nothing_is_reordered() {
        let (a, b) = pair();
        let frames: Vec<Vec<u8>> = (0..2000u16).map(|i| i.to_le_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut refused = Vec::new();
        let sent = send_connected(a.as_fd(), &mut headers(), &refs, &mut refused);
        assert!(sent.full, "2000 datagrams fit a queue: {sent:?}");
        assert!(!sent.gone);
        assert!(refused.is_empty());
        let mut lost = 0;
        let got = drain(&b);
        assert_eq!(got.len(), sent.taken);
        assert_eq!(got, frames[..sent.taken]);

        // The rest waits in a backlog and follows in order once there is room.
        let mut backlog = Backlog::default();
        let mut budget = Budget::new(TOTAL_BACKLOG_BYTES);
        for f in &frames[sent.taken..sent.taken + 100] {
            assert!(backlog.push(f, &mut budget));
        }
        assert_eq!(budget.used(), 200);
        let mut lens = Vec::new();
        let flushed = backlog.flush(a.as_fd(), &mut headers(), &mut lens, &mut lost, &mut budget);
        assert_eq!(budget.used(), 0);
        assert_eq!((flushed.taken, flushed.full), (100, false));
        assert!(backlog.is_empty());
        assert_eq!(lens, vec![2; 100]);
        assert_eq!(drain(&b), frames[sent.taken..sent.taken + 100]);
    }

    #[test]
    fn the_backlog_is_bounded_in_frames_and_bytes() {
        let mut backlog = Backlog::default();
        let mut budget = Budget::new(TOTAL_BACKLOG_BYTES);
        for _ in 0..BACKLOG_FRAMES {
            assert!(backlog.push(&[0u8; 60], &mut budget));
        }
        assert!(!backlog.push(&[0u8; 60], &mut budget));
        assert_eq!(backlog.clear(&mut budget), BACKLOG_FRAMES);
        assert_eq!(budget.used(), 0);
        let jumbo = vec![0u8; 65535];
        let fit = BACKLOG_BYTES / jumbo.len();
        for _ in 0..fit {
            assert!(backlog.push(&jumbo, &mut budget));
        }
        assert!(!backlog.push(&jumbo, &mut budget));
        assert_eq!(backlog.len(), fit);
    }

    #[test]
    fn all_backlogs_together_stay_within_the_switchs_budget() {
        let mut budget = Budget::new(1000);
        let (mut a, mut b) = (Backlog::default(), Backlog::default());
        assert!(a.push(&[0u8; 600], &mut budget));
        assert!(!b.push(&[0u8; 600], &mut budget), "over the budget");
        assert!(b.push(&[0u8; 400], &mut budget));
        assert_eq!(budget.used(), 1000);
        a.clear(&mut budget);
        assert!(b.push(&[0u8; 600], &mut budget));
        assert_eq!(budget.used(), 1000);
    }

    #[test]
    fn holding_back_is_bounded_in_time_and_then_cools_down() {
        let mut backlog = Backlog::default();
        let t0 = Instant::now();
        assert!(backlog.may_hold(t0));
        assert!(backlog.start_holding(3, t0));
        assert!(!backlog.start_holding(3, t0), "held twice");
        assert!(backlog.start_holding(4, t0 + STALL_AFTER / 2));
        assert!(!backlog.held_too_long(t0 + STALL_AFTER / 2));
        // The first hold's time counts for all: a later one does not extend it.
        let late = t0 + STALL_AFTER;
        assert!(backlog.held_too_long(late));
        assert_eq!(backlog.stop_holding(late, true), vec![3, 4]);
        assert!(!backlog.is_holding());
        assert!(!backlog.may_hold(late + HOLD_COOLDOWN / 2));
        assert!(backlog.may_hold(late + HOLD_COOLDOWN));
        // A backlog sent in time lets go without cooling down.
        assert!(backlog.start_holding(5, late + HOLD_COOLDOWN));
        assert_eq!(backlog.stop_holding(late + HOLD_COOLDOWN, false), vec![5]);
        assert!(backlog.may_hold(late + HOLD_COOLDOWN));
    }

    #[test]
    fn a_vanished_peer_is_gone() {
        let (a, b) = pair();
        drop(b);
        let sent = send_connected(a.as_fd(), &mut headers(), &[b"x"], &mut Vec::new());
        assert!(sent.gone, "{sent:?}");
        assert_eq!(sent.taken, 0);
    }
}
