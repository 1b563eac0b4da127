//! `uml_switchctl`: command-line front end.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use uml_switchctl::{Client, ClientError, event_text, macs_table, ports_table, stats_text};

/// Manage a running `uml_switch` through its management socket (`--mgmt SOCKET`).
///
/// Human-readable tables by default; `--json` prints the switch's JSON
/// results (one per line, events too) for scripts.
#[derive(Parser)]
#[command(name = "uml_switchctl", version)]
struct Args {
    /// Print the switch's JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// The switch's management socket.
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ports: transport, peer, MACs, age, frames and bytes, drops by reason.
    Ports,
    /// The learning table, or `flush [PORT]` to empty it.
    Macs {
        #[command(subcommand)]
        action: Option<MacsAction>,
    },
    /// Totals, uptime and the recent rate.
    Stats,
    /// Close a port, or set one of its settings.
    Port {
        #[command(subcommand)]
        action: PortAction,
    },
    /// Flood everything (on) or switch (off).
    Hub {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Capture as pcapng: to standard output until interrupted (or the port
    /// closes), or with --file into a new file on the switch's side.
    Capture {
        #[command(subcommand)]
        action: Option<CaptureAction>,
        /// Only this port's frames.
        #[arg(long, value_name = "N")]
        port: Option<u32>,
        /// Also the copies the switch sends.
        #[arg(long)]
        outbound: bool,
        /// Have the switch write a new file PATH instead (it must not exist).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print events (ports up and down, MACs, drops, captures) until interrupted.
    Events,
    /// The switch's version and schema.
    Version,
}

#[derive(Subcommand)]
enum MacsAction {
    /// Forget every learned address, or those of one port.
    Flush {
        /// The port.
        port: Option<u32>,
    },
}

#[derive(Subcommand)]
enum PortAction {
    /// Close port N.
    Close {
        /// The port.
        port: u32,
    },
    /// Set a port's description.
    Set {
        /// The port.
        port: u32,
        /// The setting (description).
        key: String,
        /// Its value.
        value: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CaptureAction {
    /// Stop capture ID, or every capture.
    Stop {
        /// The capture.
        id: Option<u32>,
    },
    /// The running captures.
    List,
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn run(args: Args) -> Result<(), ClientError> {
    let mut client = Client::connect(&args.socket)?;
    let stdout = io::stdout();
    let print = |result: &Value, human: &dyn Fn(&Value) -> String| -> Result<(), ClientError> {
        let mut out = stdout.lock();
        if args.json {
            writeln!(out, "{result}")?;
        } else {
            write!(out, "{}", human(result))?;
        }
        Ok(())
    };
    let plain = |v: &Value| match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}\n",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect(),
        other => format!("{other}\n"),
    };
    match &args.command {
        Command::Ports => print(&client.request(&words(&["ports"]))?, &ports_table),
        Command::Macs { action: None } => print(&client.request(&words(&["macs"]))?, &macs_table),
        Command::Macs {
            action: Some(MacsAction::Flush { port }),
        } => {
            let mut request = words(&["macs", "flush"]);
            request.extend(port.map(|p| p.to_string()));
            print(&client.request(&request)?, &plain)
        }
        Command::Stats => print(&client.request(&words(&["stats"]))?, &stats_text),
        Command::Port {
            action: PortAction::Close { port },
        } => print(
            &client.request(&words(&["port", "close", &port.to_string()]))?,
            &plain,
        ),
        Command::Port {
            action: PortAction::Set { port, key, value },
        } => {
            let mut request = words(&["port", "set", &port.to_string(), key]);
            request.extend(value.iter().cloned());
            print(&client.request(&request)?, &plain)
        }
        Command::Hub { state } => print(&client.request(&words(&["hub", state]))?, &plain),
        Command::Version => print(&client.request(&words(&["version"]))?, &plain),
        Command::Capture {
            action: Some(CaptureAction::Stop { id }),
            ..
        } => {
            let mut request = words(&["capture", "stop"]);
            request.extend(id.map(|i| i.to_string()));
            print(&client.request(&request)?, &|v| format!("{v}\n"))
        }
        Command::Capture {
            action: Some(CaptureAction::List),
            ..
        } => print(&client.request(&words(&["capture", "list"]))?, &|v| {
            format!("{v}\n")
        }),
        Command::Capture {
            action: None,
            port,
            outbound,
            file,
        } => {
            let mut request = words(&["capture", "start"]);
            if let Some(port) = port {
                request.extend(words(&["port", &port.to_string()]));
            }
            if *outbound {
                request.push("outbound".to_owned());
            }
            if let Some(file) = file {
                let absolute = std::path::absolute(file)?;
                request.extend(["file".to_owned(), absolute.display().to_string()]);
                let result = client.request(&request)?;
                return print(&result, &plain);
            }
            // The reply, then the pcapng stream on the same connection.
            let result = client.request(&request)?;
            if args.json {
                eprintln!("{result}");
            }
            client.copy_stream(&mut stdout.lock())?;
            Ok(())
        }
        Command::Events => {
            client.request(&words(&["events"]))?;
            while let Some(event) = client.line()? {
                let mut out = stdout.lock();
                let written = if args.json {
                    writeln!(out, "{event}")
                } else {
                    writeln!(out, "{}", event_text(&event))
                };
                if written.and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uml_switchctl: {e}");
            ExitCode::FAILURE
        }
    }
}
