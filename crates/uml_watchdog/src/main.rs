//! `uml_watchdog`: command line (the C tool's `-pid PID` / `-mconsole SOCKET`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use uml_watchdog::{
    DEFAULT_TIMEOUT, LOG_ENV, Log, Outcome, TIMEOUT_ENV, Target, Watchdog, parse_timeout,
};

const USAGE: &str = "usage: uml_watchdog (-pid PID | -mconsole SOCKET) [--timeout SECS]

Started by a UML kernel when its guest opens /dev/watchdog: stdin carries the
guest's pings, stdout takes the ready byte. After SECS (default 60, or
$UML_WATCHDOG_TIMEOUT) without a ping, -pid interrupts and then kills the UML
process, -mconsole sends a HANG notification to the mconsole notify socket.
Log lines go to the file $UML_WATCHDOG_LOG names, else to stderr when run by
hand, else to syslog.";

fn main() -> ExitCode {
    // Only alone, so that the C tool's command lines keep their meaning.
    if std::env::args().skip(1).eq(["--version"]) {
        println!("uml_watchdog {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (target, timeout) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("uml_watchdog: {message}");
            }
            eprintln!("{USAGE}");
            // The C tool exits 1 on bad arguments.
            return ExitCode::FAILURE;
        }
    };
    let log_file = std::env::var_os(LOG_ENV).map(PathBuf::from);
    let mut dog = Watchdog {
        target,
        timeout,
        grace: Duration::from_secs(1),
        log: Log::choose(log_file.as_deref()),
    };
    match dog.run(std::io::stdin(), std::io::stdout()) {
        Ok(Outcome::Closed) => ExitCode::SUCCESS,
        Ok(Outcome::Acted(_)) => ExitCode::FAILURE,
        Err(e) => {
            dog.log.line(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// The target and the timeout; `Err` holds what is wrong (empty for `--help`).
fn parse(mut args: impl Iterator<Item = String>) -> Result<(Target, Duration), String> {
    let mut target = None;
    let mut timeout = None;
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "-pid" => {
                let text = value("a process id")?;
                // 0 and negative numbers would signal whole process groups.
                match text.parse::<i32>() {
                    Ok(pid) if pid > 0 => target = Some(Target::Pid(pid)),
                    _ => return Err(format!("'{text}' is not a process id")),
                }
            }
            "-mconsole" => target = Some(Target::Mconsole(value("a socket path")?.into())),
            "--timeout" => {
                let text = value("a number of seconds")?;
                timeout = Some(parse_timeout(&text).ok_or(format!("bad timeout '{text}'"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => match other.strip_prefix("--timeout=") {
                Some(text) => {
                    timeout = Some(parse_timeout(text).ok_or(format!("bad timeout '{text}'"))?);
                }
                None => return Err(format!("unknown argument '{other}'")),
            },
        }
    }
    let target = target.ok_or("one of -pid or -mconsole is needed")?;
    let timeout = match timeout {
        Some(t) => t,
        None => match std::env::var(TIMEOUT_ENV) {
            Ok(text) => parse_timeout(&text).ok_or(format!("bad {TIMEOUT_ENV} '{text}'"))?,
            Err(_) => DEFAULT_TIMEOUT,
        },
    };
    Ok((target, timeout))
}
