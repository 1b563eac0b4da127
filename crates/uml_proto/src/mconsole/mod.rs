//! The UML management console (mconsole) datagram protocol.
//!
//! A client sends [`Request`] datagrams to `<uml_dir>/<umid>/mconsole` and reads
//! one or more reply datagrams ([`ReplyChunk`]) back; a kernel booted with
//! `mconsole=notify:PATH` also sends [`Notification`]s to PATH.

mod notify;
mod reply;
mod request;

pub use notify::{Notification, NotificationError, NotifyHeader, NotifyKind, WatchdogHangWire};
pub use reply::{Reply, ReplyAssembler, ReplyChunk, ReplyDatagram, ReplyError, ReplyWire};
pub use request::{ParsedRequest, Request, RequestError, RequestWire};

/// Magic number at the start of every request and notification (host-endian).
pub const MAGIC: u32 = 0xCAFE_BABE;
/// The only protocol version a current kernel speaks.
pub const VERSION: u32 = 2;
/// Size of the data field of requests and replies (text plus its NUL).
pub const MAX_DATA: usize = 512;
/// Longest command or reply chunk text: the data field minus the terminating NUL.
pub const MAX_TEXT: usize = MAX_DATA - 1;

/// The raw text (no header, no NUL) the kernel sends back to a request without the magic.
pub const VERSION0_REJECTION: &[u8] =
    b"ERR Version 0 mconsole clients are not supported by this driver";
