//! The event stream: what management clients that asked for `events` are told.

use serde::Serialize;

use crate::ports::PortId;

/// Something that happened in the switch.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A port opened.
    PortUp {
        /// Its number.
        port: PortId,
        /// Its name (`daemon:3`).
        name: String,
        /// Who is at the other end.
        peer: String,
    },
    /// A port closed.
    PortDown {
        /// Its number.
        port: PortId,
        /// Its name.
        name: String,
        /// Who was at the other end.
        peer: String,
        /// Why it closed.
        reason: String,
    },
    /// A source address was seen for the first time.
    MacLearned {
        /// The address.
        mac: String,
        /// Where.
        port: PortId,
    },
    /// A source address showed up on another port.
    MacMoved {
        /// The address.
        mac: String,
        /// Where it is now.
        port: PortId,
        /// Where it was.
        from: PortId,
    },
    /// A source address was silent for longer than the maximum age.
    MacAged {
        /// The address.
        mac: String,
        /// Where it was.
        port: PortId,
    },
    /// Frames were dropped since the last such event (at most one a second per port and reason).
    Drops {
        /// The port, or none for frames from unregistered senders.
        port: Option<PortId>,
        /// `queue_full`, `runt`, `oversize`, `unregistered` or `capture`.
        reason: &'static str,
        /// How many since the last report.
        count: u64,
    },
    /// A capture started.
    CaptureStart {
        /// Its number.
        capture: u32,
        /// The port captured, if only one.
        port: Option<PortId>,
        /// Where it goes.
        target: String,
    },
    /// A capture stopped.
    CaptureStop {
        /// Its number.
        capture: u32,
        /// Why.
        reason: String,
        /// Frames captured.
        captured: u64,
        /// Frames it had to drop.
        dropped: u64,
    },
}

/// One line of the stream: the schema version, the time, the event.
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    /// The schema version ([`crate::mgmt::SCHEMA_VERSION`]).
    pub v: u32,
    /// Seconds since the epoch.
    pub time: f64,
    /// The event.
    #[serde(flatten)]
    pub event: &'a Event,
}
