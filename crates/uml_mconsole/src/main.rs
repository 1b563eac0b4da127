//! `uml_mconsole`: command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use uml_mconsole::app::{Options, run};

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
struct Args {
    /// Give up when a reply datagram takes longer than SECS (exit 124). Without it,
    /// wait as long as the machine's process is alive.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Print one JSON object per reply (or per instance or event).
    #[arg(long)]
    json: bool,
    /// Look for machines in DIR only (repeatable; instead of $UML_DIR and the defaults).
    #[arg(long = "uml-dir", value_name = "DIR")]
    uml_dir: Vec<PathBuf>,
    /// List every instance under the uml dirs: pid, liveness, kernel version.
    #[arg(long, conflicts_with = "watch")]
    list: bool,
    /// Print instances appearing and vanishing, and kernel notifications, until interrupted.
    #[arg(long)]
    watch: bool,
    /// With --watch: receive notifications on this socket (boot the UML with mconsole=notify:PATH).
    #[arg(long, value_name = "PATH", requires = "watch")]
    notify: Option<PathBuf>,
    /// The machine: a umid or a socket path.
    machine: Option<String>,
    /// The command to send; without one, commands are read from standard input.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            // The C client exits 1 on usage errors.
            return ExitCode::from(u8::from(err.use_stderr()));
        }
    };
    ExitCode::from(run(args.into_options()))
}

impl Args {
    fn into_options(self) -> Options {
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
