//! Frames in and out of the shared data socket a batch per system call.
//!
//! Under load, one `recvmmsg` takes every frame queued on the data socket and
//! one `sendmmsg` sends every copy bound for daemon ports, each to its own
//! address, instead of a `recvfrom` and a `sendto` per frame.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, UnixAddr, recvmmsg, sendmmsg};

use crate::forward::MAX_FRAME;
use crate::ports::PortId;

/// Frames taken per `recvmmsg`.
pub const RX_BATCH: usize = 8;
/// Buffer per frame: one byte more than the largest frame, to see truncation.
const FRAME_BUF: usize = MAX_FRAME + 1;
/// Copies sent per `sendmmsg` at most.
const TX_BATCH: usize = 256;

/// One copy of a received frame bound for a daemon port.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    /// The receive slot holding the frame.
    pub slot: usize,
    /// Its length.
    pub len: usize,
    /// Where it goes.
    pub addr: UnixAddr,
    /// The port it goes to.
    pub to: PortId,
}

/// Whether a send error means the destination socket is gone for good: no
/// socket is bound to the name any more (or to the pinned file).
pub fn destination_gone(e: Errno) -> bool {
    matches!(e, Errno::ECONNREFUSED | Errno::ENOENT)
}

/// Receive buffers and their headers, allocated once.
pub struct RxBatch {
    bufs: Vec<Vec<u8>>,
    rx_headers: MultiHeaders<UnixAddr>,
    tx_headers: MultiHeaders<UnixAddr>,
}

impl RxBatch {
    /// Buffers for [`RX_BATCH`] frames.
    pub fn new() -> Self {
        Self {
            bufs: (0..RX_BATCH).map(|_| vec![0u8; FRAME_BUF]).collect(),
            rx_headers: MultiHeaders::preallocate(RX_BATCH, None),
            tx_headers: MultiHeaders::preallocate(TX_BATCH, None),
        }
    }

    /// Takes the frames waiting on `fd` without blocking: (slot, length, sender) each.
    pub fn receive(&mut self, fd: RawFd) -> Vec<(usize, usize, UnixAddr)> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let Ok(results) = recvmmsg(
            fd,
            &mut self.rx_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) else {
            return Vec::new();
        };
        results
            .enumerate()
            .filter_map(|(slot, msg)| Some((slot, msg.bytes, msg.address?)))
            .collect()
    }

    /// The first `len` bytes of the frame in `slot`.
    pub fn frame(&self, slot: usize, len: usize) -> &[u8] {
        &self.bufs[slot][..len]
    }

    /// Sends each queued copy. A copy whose destination's queue is full gets
    /// one more try after all the others; then it is dropped, as is a copy
    /// whose destination has vanished. A stalled port costs one extra system
    /// call per batch and never holds up the others. The ports whose socket
    /// is gone are added to `gone`.
    /// The indices of the copies finally dropped for a full queue go to `refused`.
    pub fn send(
        &mut self,
        fd: RawFd,
        queue: &[Outgoing],
        gone: &mut Vec<PortId>,
        refused: &mut Vec<usize>,
    ) {
        let mut full = Vec::new();
        self.send_pass(fd, queue, &mut full, gone);
        if !full.is_empty() {
            // A receiver on another core may have drained its queue meanwhile.
            let again: Vec<Outgoing> = full.iter().map(|&i| queue[i]).collect();
            let mut still = Vec::new();
            self.send_pass(fd, &again, &mut still, gone);
            refused.extend(still.iter().filter_map(|&j| full.get(j)));
        }
    }

    /// One attempt at every copy; the indices of those refused for a full
    /// queue go to `full`, the ports whose socket is gone to `gone`.
    fn send_pass(
        &mut self,
        fd: RawFd,
        queue: &[Outgoing],
        full: &mut Vec<usize>,
        gone: &mut Vec<PortId>,
    ) {
        for (c, chunk) in queue.chunks(TX_BATCH).enumerate() {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|o| [IoSlice::new(&self.bufs[o.slot][..o.len])])
                .collect();
            let addrs: Vec<Option<UnixAddr>> = chunk.iter().map(|o| Some(o.addr)).collect();
            let mut start = 0;
            while start < chunk.len() {
                let sent = sendmmsg(
                    fd,
                    &mut self.tx_headers,
                    slices[start..].iter(),
                    &addrs[start..],
                    [],
                    MsgFlags::MSG_DONTWAIT,
                );
                start += match sent {
                    Ok(results) => results.count().max(1),
                    Err(Errno::EINTR) => 0,
                    Err(Errno::EAGAIN) => {
                        full.push(c * TX_BATCH + start);
                        1
                    }
                    Err(e) => {
                        if destination_gone(e) {
                            gone.push(chunk[start].to);
                        }
                        1
                    }
                };
            }
        }
    }
}

impl Default for RxBatch {
    fn default() -> Self {
        Self::new()
    }
}
