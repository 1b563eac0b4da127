//! The whole program behind the command line: one command, the prompt,
//! `--list` or `--watch`, chosen from parsed options.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Client, Wait};
use crate::list;
use crate::locate::{Machine, UmlDirs};
use crate::prompt;
use crate::session::Session;
use crate::watch::{WatchOptions, watch};

/// The parsed command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--timeout SECS`: give up on a reply after this long without a datagram.
    /// `None` waits while the machine is alive (`Some(0)` is taken as `None`).
    pub timeout: Option<Duration>,
    /// `--json`.
    pub json: bool,
    /// `--uml-dir DIR` options, in order.
    pub uml_dirs: Vec<PathBuf>,
    /// `--list`.
    pub list: bool,
    /// `--watch`.
    pub watch: bool,
    /// `--notify PATH` (with `--watch`).
    pub notify: Option<PathBuf>,
    /// The machine: a umid or a socket path.
    pub machine: Option<String>,
    /// The words of the command.
    pub command: Vec<String>,
}

/// How long `--list` waits for each instance's `version` when no `--timeout`
/// is given: a listing must end even when a machine is stopped.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs what the options ask for and returns the exit status; errors are
/// reported on standard error.
pub fn run(opts: Options) -> u8 {
    let dirs = UmlDirs::from_env(&opts.uml_dirs);
    let list_word = opts.machine.as_deref() == Some("list")
        && opts.command.is_empty()
        && Machine::locate("list", &dirs).is_err();
    if opts.list || list_word {
        let client = match Client::new(Wait::Timeout(opts.timeout.unwrap_or(LIST_TIMEOUT))) {
            Ok(client) => client,
            Err(e) => return fail(&e.to_string()),
        };
        return match list::print(&dirs, &client, opts.json, &mut std::io::stdout().lock()) {
            Ok(()) => 0,
            Err(e) => fail(&format!("writing the listing: {e}")),
        };
    }
    if opts.watch {
        let watch_opts = WatchOptions {
            dirs,
            machines: opts.machine.into_iter().chain(opts.command).collect(),
            notify: opts.notify,
            json: opts.json,
        };
        return match watch(&watch_opts, &mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => fail(&e.to_string()),
        };
    }
    let Some(name) = opts.machine else {
        eprintln!("Usage : uml_mconsole socket-name [command]");
        return 1;
    };
    let wait = opts.timeout.map_or(Wait::WhileAlive, Wait::Timeout);
    let client = match Client::new(wait) {
        Ok(client) => client,
        Err(e) => return fail(&e.to_string()),
    };
    let (machine, missing) = match Machine::locate(&name, &dirs) {
        Ok(machine) => (Some(machine), None),
        Err(e) => (None, Some(e)),
    };
    let one_shot = !opts.command.is_empty();
    if let (Some(e), false) = (&missing, one_shot) {
        eprintln!("uml_mconsole: {e}");
    }
    let mut session = Session::new(client, dirs, machine, opts.json, std::io::stdout());
    if let Some(e) = missing {
        session.set_missing(e);
    }
    if one_shot {
        let line = opts.command.join(" ");
        return session.run_line(line.trim_end()).status;
    }
    match prompt::interactive(&mut session) {
        Ok(()) => 0,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> u8 {
    eprintln!("uml_mconsole: {message}");
    1
}
