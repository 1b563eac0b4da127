//! Talking to a lab machine's mconsole through `uml_mconsole`'s client library.

use std::time::Duration;

use uml_mconsole::client::{Client, ClientError, Wait};
use uml_mconsole::locate::Machine as Target;

use crate::lab::Lab;
use crate::rundir::RunDir;

/// A machine's mconsole, as the client library names it.
fn target(run: &RunDir, lab: &Lab, machine: &str) -> Target {
    let socket = run.mconsole_socket(&lab.name, machine);
    Target {
        name: machine.to_owned(),
        instance_dir: socket.parent().map(std::path::Path::to_path_buf),
        found_in: Some(run.uml_dir()),
        socket,
    }
}

/// What a command got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Whether the kernel reported success.
    pub ok: bool,
    /// The reply text.
    pub text: String,
    /// The exit status the C client would give (low 8 bits of the error code).
    pub status: u8,
}

/// Sends `command` to a machine, waiting at most `timeout` for each reply
/// datagram (and never past the machine's death).
pub fn request(
    run: &RunDir,
    lab: &Lab,
    machine: &str,
    command: &str,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let client = Client::new(Wait::Timeout(timeout))?.with_notice(|_| {});
    let reply = client.request(&target(run, lab, machine), command.as_bytes())?;
    Ok(Answer {
        ok: reply.is_ok(),
        text: String::from_utf8_lossy(&reply.text).into_owned(),
        status: uml_mconsole::output::status(&reply),
    })
}

/// Whether a machine's mconsole answers `version` within half a second.
pub fn answers(run: &RunDir, lab: &Lab, machine: &str) -> bool {
    run.mconsole_socket(&lab.name, machine).exists()
        && request(run, lab, machine, "version", Duration::from_millis(500)).is_ok_and(|a| a.ok)
}
