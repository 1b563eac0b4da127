//! `tunctl`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use tunctl::cli::Args;
use tunctl::{Request, create, delete, list, owner};

const USAGE: &str =
    "Create: tunctl [-b] [-u owner] [-g group] [-t device-name] [-f tun-clone-device]
Delete: tunctl -d device-name [-f tun-clone-device]

The default tun clone device is /dev/net/tun - some systems use
/dev/misc/net/tun instead

-b will result in brief output (just the device name)";

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // The C tool's usage text, and its exit status 1.
            eprintln!("tunctl: {}", err.kind());
            eprintln!("{USAGE}");
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
    let usage = |e: owner::OwnerError| format!("{e}\n{USAGE}");
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
