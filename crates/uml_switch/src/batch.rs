//! Frames in and out of the shared data socket a batch per system call.
//!
//! Under load, one `recvmmsg` takes every frame queued on the data socket and
//! one `sendmmsg` sends every copy bound for daemon ports, each to its own
//! address, instead of a `recvfrom` and a `sendto` per frame.

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, UnixAddr, sendmmsg};
use uml_host::datagram::UnixRecvBatch;
use uml_proto::switch::PeerAddr;

use crate::forward::MAX_FRAME;
use crate::ports::{PortId, source_key};

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
    rx: UnixRecvBatch,
    tx_headers: MultiHeaders<UnixAddr>,
}

impl RxBatch {
    /// Buffers for [`RX_BATCH`] frames.
    pub fn new() -> Self {
        Self {
            rx: UnixRecvBatch::new(RX_BATCH, FRAME_BUF),
            tx_headers: MultiHeaders::preallocate(TX_BATCH, None),
        }
    }

    /// Takes the frames waiting on `fd` without blocking: (slot, length, the
    /// port key of the sender) each; `None` for a sender no port can have.
    pub fn receive(&mut self, fd: BorrowedFd<'_>) -> Vec<(usize, usize, Option<PeerAddr>)> {
        let Ok(count) = self.rx.receive(fd) else {
            return Vec::new();
        };
        (0..count)
            .map(|slot| {
                (
                    slot,
                    self.rx.data(slot).len(),
                    source_key(self.rx.sender(slot)),
                )
            })
            .collect()
    }

    /// The first `len` bytes of the frame in `slot`.
    pub fn frame(&self, slot: usize, len: usize) -> &[u8] {
        let data = self.rx.data(slot);
        &data[..len.min(data.len())]
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
                .map(|o| {
                    let data = self.rx.data(o.slot);
                    [IoSlice::new(&data[..o.len.min(data.len())])]
                })
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
