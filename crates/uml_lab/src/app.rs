//! The command line: its options, and running the verb they name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands::{self, CommandError};
use crate::rundir::{RunDir, base_dir};

/// Bring up, show, supervise and take down a lab of UML machines described in one TOML file.
#[derive(Parser)]
#[command(name = "uml_lab", version)]
pub struct Args {
    /// Directory holding the labs' run directories (default: $UML_LAB_RUN_DIR,
    /// else $XDG_RUNTIME_DIR/uml_lab, else /tmp/uml_lab-UID).
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The lab to act on, when several are up.
    #[arg(long, global = true, value_name = "NAME")]
    pub lab: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Verb,
}

/// The verbs.
#[derive(Subcommand)]
pub enum Verb {
    /// Start what the lab file describes and is not running yet; wait until
    /// every machine answers on its mconsole.
    Up {
        /// The lab file.
        file: PathBuf,
        /// Seconds to wait for the machines.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// In a lab spanning hosts, the host this is (default: the one
        /// whose address this machine has).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Check a lab file without starting anything.
    Check {
        /// The lab file.
        file: PathBuf,
    },
    /// Show machines, networks and recent events.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Update after every event until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Attach the terminal to a machine's console (Ctrl-] detaches).
    Console {
        /// The machine.
        name: String,
    },
    /// Send an mconsole command to a machine.
    Cmd {
        /// The machine.
        name: String,
        /// The command and its arguments (`sysrq s`, `config eth1=...`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stream a live pcapng capture of a network's switch to standard output
    /// (`uml_lab capture lan | tshark -r -`); Ctrl-C or the reader's end stops it.
    Capture {
        /// The network.
        network: String,
        /// Only this port: the switch's port number, or `machine.eth0`, `host.TAP`.
        #[arg(long, value_name = "PORT")]
        port: Option<String>,
        /// Also the frames the switch sends.
        #[arg(long)]
        outbound: bool,
    },
    /// Stop one machine, or all: cad, then halt, then SIGKILL.
    Stop {
        /// The machine (default: all).
        name: Option<String>,
        /// Seconds each step gets.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Stop everything and remove every file the lab made.
    Down {
        /// Seconds each step of stopping a machine gets.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Merge a stopped machine's COW disk into a new image with uml_moo.
    Commit {
        /// The machine.
        name: String,
        /// The new image.
        out: PathBuf,
    },
    /// Make a root image.
    Image {
        /// Which image.
        #[command(subcommand)]
        kind: ImageKind,
    },
    /// The lab's supervisor (started by `up`).
    #[command(hide = true)]
    Supervise {
        /// The lab's run directory.
        dir: PathBuf,
    },
}

/// The images `image` makes.
#[derive(Subcommand)]
pub enum ImageKind {
    /// A small root image from the host's static busybox.
    Busybox {
        /// The image file.
        out: PathBuf,
        /// Size in MiB.
        #[arg(long, default_value_t = 32)]
        size: u64,
    },
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(10))
}

/// Runs the verb `args` names; prints its output or its errors.
pub fn run(args: Args) -> ExitCode {
    let base = base_dir(args.run_dir.as_deref());
    let find = || RunDir::find(&base, args.lab.as_deref()).map_err(CommandError::from);
    let result: Result<(String, u8), CommandError> = match args.command {
        Verb::Up {
            file,
            timeout,
            host,
        } => commands::up(&file, &base, host.as_deref(), Duration::from_secs(timeout))
            .map(|s| (s, 0)),
        Verb::Check { file } => crate::lab::load(&file, &crate::lab::Host::current())
            .map(|lab| {
                (
                    format!("{}: lab '{}' is fine\n", file.display(), lab.name),
                    0,
                )
            })
            .map_err(CommandError::from),
        Verb::Status { json, watch } => find().and_then(|run| {
            if watch {
                commands::watch(&run, json, &mut std::io::stdout()).map(|()| (String::new(), 0))
            } else {
                commands::status(&run, json).map(|s| (s, 0))
            }
        }),
        Verb::Console { name } => {
            find().and_then(|run| commands::console(&run, &name).map(|()| (String::new(), 0)))
        }
        Verb::Cmd { name, command } => find().and_then(|run| commands::cmd(&run, &name, &command)),
        Verb::Capture {
            network,
            port,
            outbound,
        } => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                eprintln!(
                    "uml_lab: capture writes pcapng: pipe it into `tshark -r -` or `wireshark -k -i -`, or redirect it to a file"
                );
                return ExitCode::FAILURE;
            }
            find().and_then(|run| {
                commands::capture(
                    &run,
                    &network,
                    port.as_deref(),
                    outbound,
                    &mut std::io::stdout().lock(),
                )
                .map(|()| (String::new(), 0))
            })
        }
        Verb::Stop { name, timeout } => find().and_then(|run| {
            commands::stop(&run, name.as_deref(), seconds(timeout)).map(|s| (s, 0))
        }),
        Verb::Down { timeout } => {
            find().and_then(|run| commands::down(&run, seconds(timeout)).map(|s| (s, 0)))
        }
        Verb::Commit { name, out } => {
            find().and_then(|run| commands::commit(&run, &name, &out).map(|s| (s, 0)))
        }
        Verb::Image {
            kind: ImageKind::Busybox { out, size },
        } => match crate::image::busybox(&out, size) {
            Ok(()) => Ok((format!("{}: busybox root image\n", out.display()), 0)),
            Err(e) => {
                eprintln!("uml_lab: {e}");
                return ExitCode::FAILURE;
            }
        },
        Verb::Supervise { dir } => {
            let run = RunDir { path: dir };
            match crate::supervise::supervise(&run) {
                Ok(()) => Ok((String::new(), 0)),
                Err(e) => {
                    eprintln!("uml_lab supervise: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok((text, status)) => {
            print!("{text}");
            ExitCode::from(status)
        }
        Err(CommandError::Lab(errors)) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("uml_lab: the lab file has errors; nothing was started");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("uml_lab: {e}");
            ExitCode::FAILURE
        }
    }
}
