//! The switches' management sockets (`uml_switch --mgmt`, schema version 1):
//! one request line, one JSON reply line; or `events`, then one event a line.
//! Spoken directly, so `status` needs no `uml_switchctl`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lab::{Lab, Machine, Network};
use crate::rundir::Event;

/// The schema version this client speaks.
const SCHEMA: u64 = 1;

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    /// Connecting, writing or reading failed (or timed out).
    #[error("management socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The reply was not a version 1 JSON object.
    #[error("management socket {path}: unexpected reply {reply:?}")]
    Reply {
        /// The socket.
        path: String,
        /// What came back.
        reply: String,
    },
    /// The switch refused the request.
    #[error("management socket {path}: {code}: {message}")]
    Refused {
        /// The socket.
        path: String,
        /// The error code (`unknown-command`, ...).
        code: String,
        /// The switch's words.
        message: String,
    },
}

/// A connection that has sent one request and read its reply line.
fn exchange(
    path: &Path,
    request: &str,
    timeout: Duration,
) -> Result<(Value, BufReader<UnixStream>), MgmtError> {
    let io = |source| MgmtError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let reply: Value = serde_json::from_str(&line).map_err(|_| MgmtError::Reply {
        path: path.display().to_string(),
        reply: line.trim().to_owned(),
    })?;
    if reply["v"] != SCHEMA {
        return Err(MgmtError::Reply {
            path: path.display().to_string(),
            reply: line.trim().to_owned(),
        });
    }
    if reply["ok"] != true {
        return Err(MgmtError::Refused {
            path: path.display().to_string(),
            code: reply["error"]["code"].as_str().unwrap_or("").to_owned(),
            message: reply["error"]["message"].as_str().unwrap_or("").to_owned(),
        });
    }
    Ok((reply["result"].clone(), reader))
}

/// Sends one request (`ports`, `stats`, ...) and returns its result.
pub fn request(path: &Path, request: &str, timeout: Duration) -> Result<Value, MgmtError> {
    exchange(path, request, timeout).map(|(result, _)| result)
}

/// Subscribes to a switch's events: the connection, past the switch's
/// acknowledgement, reading without a timeout.
pub fn subscribe(path: &Path, timeout: Duration) -> Result<BufReader<UnixStream>, MgmtError> {
    let (_, reader) = exchange(path, "events", timeout)?;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|source| MgmtError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(reader)
}

/// Starts a capture streamed into this connection (`capture start [port N]
/// [outbound]`): the switch's reply, and the connection, positioned at the
/// pcapng stream and reading without a timeout. Closing it stops the capture.
pub fn capture_stream(
    path: &Path,
    port: Option<u64>,
    outbound: bool,
    timeout: Duration,
) -> Result<(Value, BufReader<UnixStream>), MgmtError> {
    let mut request = String::from("capture start");
    if let Some(port) = port {
        request.push_str(&format!(" port {port}"));
    }
    if outbound {
        request.push_str(" outbound");
    }
    let (reply, reader) = exchange(path, &request, timeout)?;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|source| MgmtError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok((reply, reader))
}

/// Frames and bytes one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Frames.
    #[serde(default)]
    pub frames: u64,
    /// Bytes.
    #[serde(default)]
    pub bytes: u64,
}

/// One switch port's counters, as the switch's `ports` reports them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortCounters {
    /// The switch's port number.
    pub id: u64,
    /// The switch's name for it (`daemon:3`, `tap:tap0#1`, ...).
    #[serde(default)]
    pub name: String,
    /// The lab's interface on it (`a.eth0`, `host.tap0`), when known.
    #[serde(default)]
    pub interface: Option<String>,
    /// The MACs learned on it.
    #[serde(default)]
    pub macs: Vec<String>,
    /// Frames received from the port.
    #[serde(default)]
    pub rx: Traffic,
    /// Frames sent to the port.
    #[serde(default)]
    pub tx: Traffic,
    /// Frames dropped, by reason.
    #[serde(default)]
    pub drops: Value,
}

/// A network's counters: per port, and the switch's `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// The switch's management socket.
    pub mgmt: String,
    /// Every port.
    pub ports: Vec<PortCounters>,
    /// The switch's totals (`stats`: rx, tx, drops, rate, uptime...).
    pub stats: Value,
}

/// Which lab interface a port is: by the MACs learned on it, else by its name.
fn interface_of(lab: &Lab, net: &Network, port: &PortCounters) -> Option<String> {
    let by_mac = lab.machines.iter().find_map(|m| {
        m.interfaces.iter().enumerate().find_map(|(i, iface)| {
            (iface.network == net.name
                && port
                    .macs
                    .iter()
                    .any(|mac| mac.eq_ignore_ascii_case(&iface.mac)))
            .then(|| format!("{}.{}", m.name, Machine::interface_name(i, net.transport)))
        })
    });
    by_mac.or_else(|| {
        let tap = net.tap.as_ref()?;
        port.name
            .starts_with(&format!("tap:{}", tap.device))
            .then(|| format!("host.{}", tap.device))
    })
}

/// Asks a network's switch for its counters.
pub fn counters(lab: &Lab, net: &Network, mgmt: &Path) -> Result<Counters, MgmtError> {
    let timeout = Duration::from_secs(1);
    let ports = request(mgmt, "ports", timeout)?;
    let stats = request(mgmt, "stats", timeout)?;
    let mut ports: Vec<PortCounters> =
        serde_json::from_value(ports.clone()).map_err(|_| MgmtError::Reply {
            path: mgmt.display().to_string(),
            reply: ports.to_string(),
        })?;
    for port in &mut ports {
        port.interface = interface_of(lab, net, port);
    }
    Ok(Counters {
        mgmt: mgmt.display().to_string(),
        ports,
        stats,
    })
}

/// A switch event as a lab event: subject `net NAME`, the switch's kind,
/// and its fields in words.
pub fn event(network: &str, value: &Value) -> Option<Event> {
    let kind = value["event"].as_str()?;
    let detail = value
        .as_object()?
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "v" | "time" | "event"))
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Event {
        time: value["time"]
            .as_f64()
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
            .map_or_else(crate::rundir::now, |t| t.as_secs()),
        subject: format!("net {network}"),
        event: kind.to_owned(),
        detail,
    })
}
