//! `uml_mconsole`: command-line front end.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use uml_mconsole::client::Client;
use uml_mconsole::list::{self, HEADER};
use uml_mconsole::locate::{Machine, UmlDirs};
use uml_mconsole::session::Session;
use uml_mconsole::watch::{WatchOptions, watch};

/// Control a running UML through its mconsole socket.
///
/// `uml_mconsole MACHINE COMMAND...` sends one command and prints the reply as
/// `OK text` or `ERR text`; the exit status is the kernel's error code (low 8
/// bits), or 124 when the machine does not answer in time. With only MACHINE,
/// commands are read line by line (with editing and history on a terminal).
/// MACHINE is a umid, looked up as `DIR/MACHINE/mconsole` in each uml dir
/// (`--uml-dir`, else `$UML_DIR`, else `~/.uml` and `/tmp/uml`), or a socket
/// path. Options go before MACHINE: everything after it is the command.
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
    /// Seconds to wait for each reply datagram (0 waits forever).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Print one JSON object per reply (or per instance or event).
    #[arg(long)]
    json: bool,
    /// Look for machines in DIR (repeatable; replaces $UML_DIR and the defaults).
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
    ExitCode::from(run(args))
}

fn run(args: Args) -> u8 {
    let dirs = UmlDirs::from_env(&args.uml_dir);
    let timeout = (args.timeout > 0.0).then(|| Duration::from_secs_f64(args.timeout));
    let client = match Client::new(timeout) {
        Ok(client) => client,
        Err(e) => return fail(&e.to_string()),
    };
    let list_word = args.machine.as_deref() == Some("list")
        && args.command.is_empty()
        && Machine::locate("list", &dirs).is_err();
    if args.list || list_word {
        return list_instances(&dirs, &client, args.json);
    }
    if args.watch {
        let opts = WatchOptions {
            dirs,
            machines: args.machine.into_iter().chain(args.command).collect(),
            notify: args.notify,
            json: args.json,
        };
        return match watch(&opts, &mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => fail(&e.to_string()),
        };
    }
    let Some(name) = args.machine else {
        eprintln!("Usage : uml_mconsole socket-name [command]");
        return 1;
    };
    let machine = match Machine::locate(&name, &dirs) {
        Ok(machine) => Some(machine),
        Err(e) if !args.command.is_empty() => return fail(&e.to_string()),
        Err(e) => {
            eprintln!("uml_mconsole: {e}");
            None
        }
    };
    let mut session = Session::new(client, dirs, machine, args.json, std::io::stdout());
    if !args.command.is_empty() {
        let line = args.command.join(" ");
        return session.run_line(line.trim_end()).status;
    }
    interactive(&mut session)
}

/// Reads command lines until EOF or `quit`; their statuses do not matter.
fn interactive(session: &mut Session<std::io::Stdout>) -> u8 {
    if std::io::stdin().is_terminal() {
        return edit_lines(session);
    }
    // Readline, reading a pipe, echoes the prompt and each line, and at the
    // end the prompt once more; the C client then ends the line.
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        println!("{}{line}", session.prompt());
        if session.run_line(&line).quit {
            return 0;
        }
    }
    println!("{}", session.prompt());
    0
}

/// The terminal prompt, with line editing and history.
fn edit_lines(session: &mut Session<std::io::Stdout>) -> u8 {
    use rustyline::error::ReadlineError;
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => return fail(&format!("setting up the terminal: {e}")),
    };
    loop {
        match editor.readline(&session.prompt()) {
            Ok(line) => {
                if !line.is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if session.run_line(&line).quit {
                    return 0;
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => {
                println!();
                return 0;
            }
            Err(e) => return fail(&format!("reading the terminal: {e}")),
        }
    }
}

fn list_instances(dirs: &UmlDirs, client: &Client, json: bool) -> u8 {
    let instances = list::list(dirs, client);
    let mut out = std::io::stdout().lock();
    if !json {
        let _ = writeln!(out, "{HEADER}");
    }
    for instance in &instances {
        let line = if json {
            serde_json::to_string(instance).unwrap_or_default()
        } else {
            instance.to_string()
        };
        let _ = writeln!(out, "{line}");
    }
    0
}

fn fail(message: &str) -> u8 {
    eprintln!("uml_mconsole: {message}");
    1
}
