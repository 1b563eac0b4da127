//! The command line of `uml_mconsole`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;
use std::time::Duration;

use crate::app::Options;

use clap::{CommandFactory, Parser};

/// Control a running UML through its mconsole socket.
///
/// `uml_mconsole MACHINE COMMAND...` sends one command and prints the reply as
/// `OK text` or `ERR text`; the exit status is the kernel's error code (low 8
/// bits), 1 when the machine is gone, or 124 when `--timeout` runs out. With
/// only MACHINE, commands are read line by line (with editing and history on a
/// terminal). MACHINE is a umid, looked up as `DIR/MACHINE/mconsole` in each uml
/// dir (`--uml-dir`, else `$UML_DIR`, `~/.uml`, `/tmp/uml` and
/// `~/.netkit/mconsole`), or a socket path. Options go before MACHINE: everything after it is the command.
/// Local commands: quit, help, switch NAME, log [-f FILE] TEXT,
/// mconsole-version, int.
#[derive(Parser)]
#[command(
    name = "uml_mconsole",
    version,
    override_usage = "uml_mconsole [OPTIONS] MACHINE [COMMAND...]\n       \
                      uml_mconsole [OPTIONS] --list\n       \
                      uml_mconsole [OPTIONS] --watch [--notify PATH] [UMID...]"
)]
pub struct Args {
    /// Give up when a reply datagram takes longer than SECS (exit 124). Without it,
    /// wait as long as the machine's process is alive.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print one JSON object per reply (or per instance or event).
    #[arg(long)]
    pub json: bool,
    /// Look for machines in DIR only (repeatable; instead of $UML_DIR and the defaults).
    #[arg(long = "uml-dir", value_name = "DIR")]
    pub uml_dir: Vec<PathBuf>,
    /// List every instance under the uml dirs: pid, liveness, kernel version.
    #[arg(long, conflicts_with = "watch")]
    pub list: bool,
    /// Print instances appearing and vanishing, and kernel notifications, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: receive notifications on this socket (boot the UML with mconsole=notify:PATH).
    #[arg(long, value_name = "PATH", requires = "watch")]
    pub notify: Option<PathBuf>,
    /// The machine: a umid or a socket path.
    pub machine: Option<String>,
    /// The command to send; without one, commands are read from standard input.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}

impl Args {
    /// The options the application runs with.
    pub fn into_options(self) -> Options {
        Options {
            // 0 (or less) waits forever; a timeout does not end a live machine's wait otherwise.
            timeout: self
                .timeout
                .filter(|secs| *secs > 0.0 && secs.is_finite())
                .map(Duration::from_secs_f64),
            json: self.json,
            uml_dirs: self.uml_dir,
            list: self.list,
            watch: self.watch,
            notify: self.notify,
            machine: self.machine,
            command: self.command,
        }
    }
}
