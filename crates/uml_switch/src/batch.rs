//! Frames taken from a datagram socket a batch per system call.
//!
//! Under load one `recvmmsg` takes every frame queued on a daemon port's
//! data socket (or the shared `-compat-v0` one) instead of a `recvfrom` per
//! frame; the copies bound for each port then leave in one `sendmmsg` per
//! port ([`crate::backlog::send_connected`]).

use std::io;
use std::os::fd::BorrowedFd;

use uml_host::datagram::UnixRecvBatch;

use crate::forward::MAX_FRAME;
use crate::ports::PortId;

/// Frames taken per `recvmmsg`.
pub const RX_BATCH: usize = 8;
/// Buffer per frame: one byte more than the largest frame, to see truncation.
const FRAME_BUF: usize = MAX_FRAME + 1;

/// One copy of a received frame bound for a port.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    /// The receive slot holding the frame.
    pub slot: usize,
    /// Its length.
    pub len: usize,
    /// The port it goes to.
    pub to: PortId,
}

/// Receive buffers and their headers, allocated once.
pub struct RxBatch {
    rx: UnixRecvBatch,
}

impl RxBatch {
    /// Buffers for [`RX_BATCH`] frames.
    pub fn new() -> Self {
        Self {
            rx: UnixRecvBatch::new(RX_BATCH, FRAME_BUF),
        }
    }

    /// Takes the frames waiting on `fd` without blocking, with their
    /// senders' names if `senders`; returns how many came.
    pub fn receive(&mut self, fd: BorrowedFd<'_>, senders: bool) -> io::Result<usize> {
        self.rx.receive(fd, senders)
    }

    /// Takes one frame waiting on `fd` without blocking, into slot 0.
    pub fn receive_one(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.rx.receive_one(fd)
    }

    /// The length of the frame in `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.rx.data(slot).len()
    }

    /// The sender of the frame in `slot`, as `sun_path` bytes (see
    /// [`UnixRecvBatch::sender`]).
    pub fn sender(&self, slot: usize) -> &[u8] {
        self.rx.sender(slot)
    }

    /// The first `len` bytes of the frame in `slot`.
    pub fn frame(&self, slot: usize, len: usize) -> &[u8] {
        let data = self.rx.data(slot);
        &data[..len.min(data.len())]
    }
}

impl Default for RxBatch {
    fn default() -> Self {
        Self::new()
    }
}
