//! `tunctl`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use tunctl::cli::Args;
use tunctl::{Request, create, delete, list, owner};

/// The C tool's usage text, naming the program as it was started.
fn usage(program: &str) -> String {
    format!(
        "Create: {program} [-b] [-u owner] [-g group] [-t device-name] [-f tun-clone-device]
Delete: {program} -d device-name [-f tun-clone-device]

The default tun clone device is /dev/net/tun - some systems use
/dev/misc/net/tun instead

-b will result in brief output (just the device name)"
    )
}

/// getopt's complaint about a bad option, as the C tool prints it before its
/// usage; nothing for a stray operand, which the C tool answers with the usage alone.
fn complaint(err: &clap::Error, program: &str) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    let short = |arg: &str| {
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        flag.strip_prefix('-')
            .filter(|rest| rest.len() == 1)
            .map(str::to_owned)
            .or_else(|| short_of(flag))
    };
    match err.kind() {
        ErrorKind::UnknownArgument if arg.starts_with('-') => match short(&arg) {
            Some(c) => Some(format!("{program}: invalid option -- '{c}'")),
            None => Some(format!("{program}: unrecognized option '{arg}'")),
        },
        ErrorKind::UnknownArgument => None,
        ErrorKind::InvalidValue | ErrorKind::NoEquals
            if err
                .get(ContextKind::InvalidValue)
                .is_some_and(|v| matches!(v, ContextValue::String(s) if s.is_empty())) =>
        {
            short(&arg).map(|c| format!("{program}: option requires an argument -- '{c}'"))
        }
        kind => Some(format!("{program}: {kind}")),
    }
}

/// The C tool's one-letter name for one of our long options.
fn short_of(flag: &str) -> Option<String> {
    let letter = match flag {
        "--brief" => "b",
        "--delete" => "d",
        "--clone-device" => "f",
        "--name" => "t",
        "--user" => "u",
        "--group" => "g",
        "--tun" => "n",
        _ => return None,
    };
    Some(letter.to_owned())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // The C tool's complaint and usage text, and its exit status 1.
            let program = std::env::args()
                .next()
                .unwrap_or_else(|| "tunctl".to_owned());
            if let Some(line) = complaint(&err, &program) {
                eprintln!("{line}");
            }
            eprintln!("{}", usage(&program));
            return ExitCode::FAILURE;
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.list {
        for device in list() {
            if args.json {
                println!("{}", serde_json::to_string(&device).unwrap_or_default());
            } else {
                println!("{device}");
            }
        }
        return Ok(());
    }
    if let Some(name) = &args.delete {
        let existed = delete(name, &args.clone, args.tun).map_err(|e| e.to_string())?;
        if !existed {
            eprintln!("tunctl: note: '{name}' did not exist; nothing was deleted");
        }
        println!("Set '{name}' nonpersistent");
        return Ok(());
    }
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "tunctl".to_owned());
    let usage = |e: owner::OwnerError| format!("{e}\n{}", usage(&program));
    let request = Request {
        name: args.name.clone(),
        clone: args.clone.clone(),
        tun: args.tun,
        multi_queue: args.multi_queue,
        owner: args
            .owner
            .as_deref()
            .map(owner::uid)
            .transpose()
            .map_err(usage)?,
        group: args
            .group
            .as_deref()
            .map(owner::gid)
            .transpose()
            .map_err(usage)?,
        mtu: args.mtu,
    };
    let created = create(&request).map_err(|e| e.to_string())?;
    if args.brief {
        println!("{}", created.name);
    } else {
        println!("{}", created.line());
    }
    Ok(())
}
