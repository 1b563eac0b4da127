//! The client side of `uml_switch --mgmt`: requests, replies, the event
//! stream and capture streams, and the tables people read.

pub mod cli;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The schema version this client speaks.
pub const SCHEMA_VERSION: u64 = 1;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("connecting to '{}': {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Talking to the switch failed.
    #[error("talking to the switch: {0}")]
    Io(#[from] io::Error),
    /// The switch closed the connection before replying.
    #[error("the switch closed the connection without a reply")]
    Closed,
    /// A reply that is not the schema's.
    #[error("unreadable reply from the switch: {0}")]
    BadReply(String),
    /// A reply of another schema version.
    #[error("the switch speaks management schema version {0}; this client speaks {SCHEMA_VERSION}")]
    Version(u64),
    /// The switch refused the request.
    #[error("{message} ({code})")]
    Refused {
        /// The error's code (`unknown-command`, `no-such-port`...).
        code: String,
        /// What the switch said.
        message: String,
    },
}

/// A connection to a switch's management socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the management socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request (as a JSON array of words, so that words may hold
    /// spaces) and returns its result.
    pub fn request(&mut self, words: &[String]) -> Result<Value, ClientError> {
        let mut line =
            serde_json::to_vec(words).map_err(|e| ClientError::BadReply(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        self.reply()
    }

    /// Reads one reply line: its result, or the switch's error.
    pub fn reply(&mut self) -> Result<Value, ClientError> {
        let value = self.line()?.ok_or(ClientError::Closed)?;
        parse_reply(value)
    }

    /// The next line as JSON, None at the end of the stream.
    pub fn line(&mut self) -> Result<Option<Value>, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::BadReply(format!("{e}: {}", line.trim_end())))
    }

    /// Copies everything the switch sends from now on (a capture stream) to `out`.
    pub fn copy_stream(mut self, out: &mut impl Write) -> Result<u64, ClientError> {
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
                // The reader of our output left (`| head`): so do we.
                if e.kind() == io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(e.into());
            }
            total += n as u64;
        }
        Ok(total)
    }
}

/// A reply's result, or the error it carries.
pub fn parse_reply(value: Value) -> Result<Value, ClientError> {
    let v = value
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| ClientError::BadReply(format!("no schema version in {value}")))?;
    if v != SCHEMA_VERSION {
        return Err(ClientError::Version(v));
    }
    if value.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(value.get("result").cloned().unwrap_or(Value::Null));
    }
    let error = value.get("error").cloned().unwrap_or(Value::Null);
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    Err(ClientError::Refused {
        code: text("code"),
        message: text("message"),
    })
}

/// Lays out rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            text.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn num(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn secs(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map_or_else(String::new, |s| format!("{s:.0}s"))
}

/// The `ports` result as a table.
pub fn ports_table(result: &Value) -> String {
    let rows: Vec<Vec<String>> = result
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let macs: Vec<&str> = p
                .get("macs")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(p, "id"),
                text(p, "name"),
                text(p, "peer"),
                macs.join(","),
                secs(p, "age_secs"),
                num(p, &["rx", "frames"]).to_string(),
                num(p, &["rx", "bytes"]).to_string(),
                num(p, &["tx", "frames"]).to_string(),
                num(p, &["tx", "bytes"]).to_string(),
                format!(
                    "{}/{}/{}/{}",
                    num(p, &["drops", "queue_full"]),
                    num(p, &["drops", "runt"]),
                    num(p, &["drops", "oversize"]),
                    num(p, &["drops", "capture"])
                ),
                text(p, "description"),
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "NAME",
            "PEER",
            "MACS",
            "AGE",
            "RX-FRAMES",
            "RX-BYTES",
            "TX-FRAMES",
            "TX-BYTES",
            "DROPS(full/runt/over/capture)",
            "DESCRIPTION",
        ],
        &rows,
    )
}

/// The `macs` result as a table.
pub fn macs_table(result: &Value) -> String {
    let rows: Vec<Vec<String>> = result
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| vec![text(m, "mac"), text(m, "port"), secs(m, "last_seen_secs")])
        .collect();
    table(&["MAC", "PORT", "LAST-SEEN"], &rows)
}

/// The `stats` result as lines of `name: value`.
pub fn stats_text(r: &Value) -> String {
    let rate = |key: &str| {
        r.get("rate")
            .and_then(|x| x.get(key))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    format!(
        "uptime: {}\nmode: {}\nports: {}\nmacs: {}\nrx: {} frames, {} bytes\ntx: {} frames, {} bytes\n\
         drops: queue full {}, runt {}, oversize {}, unregistered {}, capture {}\n\
         rate: {:.1} frames/s, {:.0} bytes/s (last {:.0} s)\ncaptures: {}\n",
        secs(r, "uptime_secs"),
        if r.get("hub").and_then(Value::as_bool) == Some(true) {
            "hub"
        } else {
            "switch"
        },
        text(r, "ports"),
        text(r, "macs"),
        num(r, &["rx", "frames"]),
        num(r, &["rx", "bytes"]),
        num(r, &["tx", "frames"]),
        num(r, &["tx", "bytes"]),
        num(r, &["drops", "queue_full"]),
        num(r, &["drops", "runt"]),
        num(r, &["drops", "oversize"]),
        num(r, &["drops", "unregistered"]),
        num(r, &["drops", "capture"]),
        rate("rx_frames_per_sec"),
        rate("rx_bytes_per_sec"),
        rate("window_secs"),
        text(r, "captures"),
    )
}

/// One event as a line: its kind, then its fields as `key=value`.
pub fn event_text(event: &Value) -> String {
    let mut line = text(event, "event");
    if let Some(map) = event.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "event" | "v" | "time") || v.is_null() {
                continue;
            }
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_and_errors() {
        assert_eq!(
            parse_reply(json!({"v":1,"ok":true,"result":{"hub":true}})).unwrap(),
            json!({"hub": true})
        );
        let err = parse_reply(
            json!({"v":1,"ok":false,"error":{"code":"no-such-port","message":"no port 9"}}),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no port 9 (no-such-port)");
        assert!(matches!(
            parse_reply(json!({"v":2,"ok":true})),
            Err(ClientError::Version(2))
        ));
        assert!(parse_reply(json!({"ok":true})).is_err());
    }

    #[test]
    fn tables_line_up() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22\n");
        let ports = ports_table(
            &json!([{"id":3,"name":"daemon:3","macs":["02:00:00:00:00:01"],
            "rx":{"frames":5,"bytes":500},"tx":{"frames":4,"bytes":400},
            "drops":{"queue_full":1,"runt":0,"oversize":0,"capture":2}}]),
        );
        assert!(ports.contains("daemon:3"), "{ports}");
        assert!(ports.contains("1/0/0/2"), "{ports}");
        assert_eq!(
            event_text(&json!({"v":1,"time":1.0,"event":"port-up","port":3,"name":"daemon:3"})),
            "port-up name=daemon:3 port=3"
        );
    }
}
