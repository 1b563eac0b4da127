//! Running command lines against a machine: the engine behind both the
//! one-shot command line and the interactive prompt.

use std::io::Write;
use std::path::PathBuf;

use uml_proto::mconsole::Reply;

use crate::client::{Client, ClientError};
use crate::command::{Action, LogSource, log_requests};
use crate::locate::{Machine, NotFound, UmlDirs};
use crate::output::{JsonReply, TIMEOUT_STATUS, human, status};
use crate::process::NotProven;

/// The C client's list of its own commands, printed after the kernel's help.
const LOCAL_HELP: &str = "Additional local mconsole commands:
    quit - Quit mconsole
    switch <socket-name> - Switch control to the given machine
    log -f <filename> - use contents of <filename> as UML log messages
    mconsole-version - version of this mconsole program
    int  - Interrupt UML session
";

/// What a command line led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit status it would give on the command line.
    pub status: u8,
    /// Whether the user asked to leave.
    pub quit: bool,
}

impl Outcome {
    fn status(status: u8) -> Self {
        Self {
            status,
            quit: false,
        }
    }
}

/// A conversation with one current machine.
pub struct Session<W: Write> {
    client: Client,
    dirs: UmlDirs,
    machine: Option<Machine>,
    /// Why there is no machine, when a name matched nothing.
    missing: Option<NotFound>,
    json: bool,
    out: W,
    cwd: PathBuf,
}

/// The C client's line for a command sent to no machine (its socket name is
/// empty), which scripts may match.
const NO_MACHINE: &str = "Sending command to '' : Invalid argument";
/// The C client's line when `int` finds no PID to signal.
const NO_PID: &str = "Cannot determine the PID of your UML session, not sending signal.";

impl<W: Write> Session<W> {
    /// A session printing to `out`; `machine` may be `None` when the name given matched nothing.
    pub fn new(
        client: Client,
        dirs: UmlDirs,
        machine: Option<Machine>,
        json: bool,
        out: W,
    ) -> Self {
        Self {
            client,
            dirs,
            machine,
            missing: None,
            json,
            out,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    /// Records why the name given matched nothing, for the errors of commands sent to it.
    pub fn set_missing(&mut self, not_found: NotFound) {
        self.missing = Some(not_found);
    }

    /// The current machine.
    pub fn machine(&self) -> Option<&Machine> {
        self.machine.as_ref()
    }

    /// The interactive prompt: the first 11 characters of the machine's name.
    pub fn prompt(&self) -> String {
        self.machine
            .as_ref()
            .map_or_else(|| "([None]) ".to_owned(), Machine::prompt)
    }

    /// The output, for callers that own the session.
    pub fn into_output(self) -> W {
        self.out
    }

    /// Runs one command line; errors are reported on stderr and turned into a status.
    pub fn run_line(&mut self, line: &str) -> Outcome {
        // `NAME: command` sends one command to another machine.
        if let Some((name, command)) = line.split_once(':') {
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                if let Ok(other) = Machine::locate(name, &self.dirs) {
                    let current = self.machine.replace(other);
                    let outcome = self.run_line(command.trim_start());
                    self.machine = current;
                    return outcome;
                }
            }
        }
        match Action::parse(line, &self.cwd) {
            Action::Quit => Outcome {
                status: 0,
                quit: true,
            },
            Action::Remote(command) => self.remote(&command),
            Action::Help => {
                let outcome = self.remote("help");
                if !self.json {
                    self.print(LOCAL_HELP.as_bytes());
                }
                outcome
            }
            Action::Switch(name) => match Machine::locate(&name, &self.dirs) {
                Ok(machine) => {
                    self.machine = Some(machine);
                    self.missing = None;
                    self.local("switch", &format!("Switched to '{name}'"));
                    Outcome::status(0)
                }
                // The C client's last warning for a name it cannot find, then why.
                Err(e) => self.fail_raw(
                    &format!(
                        "Warning: couldn't stat file: {name} - No such file or directory ({e})"
                    ),
                    1,
                ),
            },
            Action::Log(source) => self.log(source),
            Action::MconsoleVersion => {
                self.local("mconsole-version", "uml_mconsole client version 2");
                Outcome::status(0)
            }
            Action::Int => self.interrupt(),
        }
    }

    fn remote(&mut self, command: &str) -> Outcome {
        let Some(machine) = self.machine.clone() else {
            let why = self.missing.as_ref().map_or_else(
                || "no machine to send to (use `switch NAME`)".to_owned(),
                ToString::to_string,
            );
            return self.fail_raw(&format!("{NO_MACHINE} ({why})"), 1);
        };
        match self.client.request(&machine, command.as_bytes()) {
            Ok(reply) => {
                self.reply(&machine, command, &reply);
                Outcome::status(status(&reply))
            }
            Err(e @ ClientError::Timeout { .. }) => self.fail(&e.to_string(), TIMEOUT_STATUS),
            Err(e @ ClientError::Incomplete { .. }) => {
                // Show what came: for `sysrq` that is all of it but the terminator.
                if let ClientError::Incomplete { partial, .. } = &e {
                    self.reply(&machine, command, partial);
                }
                self.fail(&e.to_string(), TIMEOUT_STATUS)
            }
            Err(e @ ClientError::Gone { .. }) => {
                if let ClientError::Gone {
                    partial: Some(partial),
                    ..
                } = &e
                {
                    self.reply(&machine, command, partial);
                }
                self.fail(&e.to_string(), 1)
            }
            // These start with the C client's own line, which scripts match.
            Err(e @ (ClientError::NotRunning { .. } | ClientError::Send { .. })) => {
                self.fail_raw(&e.to_string(), 1)
            }
            Err(e) => self.fail(&e.to_string(), 1),
        }
    }

    fn log(&mut self, source: LogSource) -> Outcome {
        let text = match source {
            LogSource::Text(text) => text.into_bytes(),
            LogSource::File(path) => match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // The C client's perror line first.
                Err(e) => {
                    let text = e.raw_os_error().map_or_else(
                        || e.to_string(),
                        |c| nix::errno::Errno::from_raw(c).desc().to_owned(),
                    );
                    return self.fail_raw(
                        &format!("opening file: {text} (log -f '{}')", path.display()),
                        1,
                    );
                }
            },
        };
        let mut outcome = Outcome::status(0);
        for request in log_requests(&text) {
            // Log text came from the user; a non-UTF-8 byte still goes out as it is.
            let command = String::from_utf8_lossy(&request).into_owned();
            outcome = self.remote(&command);
            if outcome.status == TIMEOUT_STATUS {
                break;
            }
        }
        outcome
    }

    /// SIGINT to the machine's process, only once it is proven to be the
    /// machine: a `pid` file alone may name any process.
    fn interrupt(&mut self) -> Outcome {
        let Some(machine) = self.machine.clone() else {
            if let Some(missing) = &self.missing {
                let why = missing.to_string();
                return self.refuse_int(&why);
            }
            self.local("int", NO_PID);
            return Outcome::status(0);
        };
        match machine.process() {
            Ok(process) if is_foreign(process.pid) => {
                use nix::sys::signal::{Signal, kill};
                match kill(nix::unistd::Pid::from_raw(process.pid), Signal::SIGINT) {
                    Ok(()) => Outcome::status(0),
                    Err(e) => self.fail(&format!("sending SIGINT to {}: {e}", process.pid), 1),
                }
            }
            Ok(process) => {
                let why = format!("pid {} is this client or its process group", process.pid);
                self.refuse_int(&why)
            }
            // As the C client: no PID to be found is not an error.
            Err(NotProven::NoPidFile { .. }) => {
                self.local("int", NO_PID);
                Outcome::status(0)
            }
            Err(e) => self.refuse_int(&e.to_string()),
        }
    }

    /// A PID was named but is not the machine's: the C client's line, then why.
    fn refuse_int(&mut self, why: &str) -> Outcome {
        self.local("int", &format!("{NO_PID} ({why})"));
        Outcome::status(1)
    }

    fn reply(&mut self, machine: &Machine, command: &str, reply: &Reply) {
        let bytes = if self.json {
            JsonReply::new(&machine.name, command, reply)
                .line()
                .into_bytes()
        } else {
            human(reply)
        };
        self.print(&bytes);
    }

    /// Prints a local command's text (or its JSON object).
    fn local(&mut self, command: &str, text: &str) {
        let line = if self.json {
            let name = self.machine.as_ref().map_or("", |m| m.name.as_str());
            let reply = Reply {
                err: 0,
                last_err: 0,
                text: text.as_bytes().to_vec(),
            };
            JsonReply::new(name, command, &reply).line()
        } else {
            format!("{text}\n")
        };
        self.print(line.as_bytes());
    }

    fn fail(&mut self, message: &str, status: u8) -> Outcome {
        self.fail_raw(&format!("uml_mconsole: {message}"), status)
    }

    /// An error line printed as it is (one that starts with a C client's text).
    fn fail_raw(&mut self, line: &str, status: u8) -> Outcome {
        let _ = self.out.flush();
        eprintln!("{line}");
        Outcome::status(status)
    }

    /// Writes `bytes` to the session's output at once.
    pub fn print(&mut self, bytes: &[u8]) {
        // A closed stdout (a pipe to `head`) must not abort the other commands.
        let _ = self.out.write_all(bytes).and_then(|()| self.out.flush());
    }
}

/// A PID we may signal: a real process that is neither us nor our process group.
fn is_foreign(pid: i32) -> bool {
    let ours = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let group = nix::unistd::getpgrp().as_raw();
    pid > 1 && pid != ours && pid != group
}
