//! A userspace Ethernet switch for User-Mode Linux guests.
//!
//! Guests attach with the old `daemon` transport (control requests on a stream
//! socket, frames over one shared datagram socket) or with the vector
//! transport's BESS mode (one SOCK_SEQPACKET connection per guest); a tap
//! device can be one more port. All share one learning table.

pub mod batch;
pub mod endpoint;
pub mod learning;
pub mod ports;
pub mod switch;
