//! A userspace Ethernet switch for User-Mode Linux guests.
//!
//! Guests attach with the old `daemon` transport (control requests on a stream
//! socket, frames over a datagram socket of each port's own) or with the vector
//! transport's BESS mode (one SOCK_SEQPACKET connection per guest); a tap
//! device can be one more port. All share one learning table.

//!
//! Modules: [`switch`] holds the state and start-up, [`control`] the control
//! plane (requests, port lifetime), [`forward`] the forwarding decision,
//! [`event_loop`] the epoll loop and data path, [`batch`] the batched
//! `recvmmsg` of a data socket, [`port_socket`] a daemon port's own data
//! socket, [`backlog`] the batched sends and the frames waiting for room,
//! [`owner`] who a requested data socket belongs to. The lab fabric: [`vlan`] (802.1Q),
//! [`link_emulation`] (delay, loss, rate...), [`vxlan`] (uplinks),
//! [`endpoint`] (`--endpoint` listeners with a port template), and
//! [`fabric`], their data path and run-time changes. Management (issue 13): [`mgmt`]
//! the management socket, [`capture`] pcapng captures, [`counters`] the
//! frame counters, [`events`] the event stream.

pub mod activation;
pub mod backlog;
pub mod batch;
pub mod capture;
pub mod cli;
mod control;
pub mod counters;
pub mod endpoint;
mod event_loop;
pub mod events;
pub mod fabric;
pub mod forward;
pub mod learning;
pub mod link_emulation;
pub mod log;
pub mod mgmt;
pub mod owner;
pub mod port_socket;
pub mod ports;
pub mod quota;
pub mod switch;
pub mod vlan;
pub mod vxlan;
