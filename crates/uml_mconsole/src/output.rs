//! How replies are printed: the C client's `OK `/`ERR ` lines, or JSON objects.

use serde::Serialize;
use uml_proto::mconsole::Reply;

/// Exit status when a machine does not answer in time (as `timeout(1)` uses).
pub const TIMEOUT_STATUS: u8 = 124;

/// The C client's line: `OK ` or `ERR `, the text, a newline. The first
/// datagram's error code decides the word, as the kernel meant it.
pub fn human(reply: &Reply) -> Vec<u8> {
    let word: &[u8] = if reply.is_ok() { b"OK " } else { b"ERR " };
    [word, &reply.text, b"\n"].concat()
}

/// The exit status the C client gives a reply: the last datagram's error code, low 8 bits
/// (so -EBUSY from `config` is 240).
pub fn status(reply: &Reply) -> u8 {
    (reply.last_err & 0xff) as u8
}

/// One reply as a JSON object, for scripts.
#[derive(Debug, Serialize)]
pub struct JsonReply<'a> {
    /// The machine's name as given.
    pub machine: &'a str,
    /// The command sent.
    pub command: &'a str,
    /// Whether the kernel reported success.
    pub ok: bool,
    /// The kernel's error code (negative errnos as the signed number).
    pub err: i32,
    /// The reply text.
    pub output: String,
}

impl<'a> JsonReply<'a> {
    /// The JSON form of a kernel reply.
    pub fn new(machine: &'a str, command: &'a str, reply: &Reply) -> Self {
        Self {
            machine,
            command,
            ok: reply.is_ok(),
            // The kernel puts negative errnos in the unsigned field.
            err: i32::from_ne_bytes(reply.err.to_ne_bytes()),
            output: String::from_utf8_lossy(&reply.text).into_owned(),
        }
    }

    /// The object as one line.
    pub fn line(&self) -> String {
        // Strings and numbers always serialise.
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A negative errno as the kernel stores it in the unsigned field.
    fn errno(e: i32) -> u32 {
        u32::from_ne_bytes(e.to_ne_bytes())
    }

    fn reply(err: u32, last_err: u32, text: &str) -> Reply {
        Reply {
            err,
            last_err,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lines_and_statuses_follow_the_c_client() {
        assert_eq!(human(&reply(0, 0, "")), b"OK \n");
        assert_eq!(
            human(&reply(1, 1, "Unknown command")),
            b"ERR Unknown command\n"
        );
        assert_eq!(status(&reply(0, 0, "")), 0);
        assert_eq!(status(&reply(errno(-16), errno(-16), "busy")), 240);
        assert_eq!(status(&reply(errno(-2), errno(-2), "")), 254);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let line = JsonReply::new("vm1", "config ubd1", &reply(errno(-16), 0, "busy")).line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["machine"], "vm1");
        assert_eq!(v["command"], "config ubd1");
        assert_eq!(v["ok"], false);
        assert_eq!(v["err"], -16);
        assert_eq!(v["output"], "busy");
    }
}
