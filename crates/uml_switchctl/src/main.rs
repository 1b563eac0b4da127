//! `uml_switchctl`: command-line front end.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use uml_switchctl::cli::{Args, CaptureAction, Command, MacsAction, PortAction};
use uml_switchctl::{Client, ClientError, event_text, macs_table, ports_table, stats_text};

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
