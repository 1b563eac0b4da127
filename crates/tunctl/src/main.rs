//! `tunctl`: command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tunctl::{Request, create, delete, list, owner};
use uml_host::tun::CLONE_DEVICE;

/// Create, delete and list persistent TUN/TAP devices.
///
/// `tunctl -u USER -t tap0` makes tap0 persistent and lets USER attach to it
/// (a UML running as USER: `eth0=tuntap,tap0`). `tunctl -d tap0` deletes it
/// (a missing device is not an error). The C tool's options and output are
/// kept; `-n`, `--multi-queue`, `--mtu` and `--list` are new.
#[derive(Parser)]
#[command(name = "tunctl", version)]
struct Args {
    /// Brief output: just the device name.
    #[arg(short = 'b', long = "brief")]
    brief: bool,
    /// Delete device NAME.
    #[arg(short = 'd', long = "delete", value_name = "NAME", conflicts_with_all = ["name", "owner", "group", "mtu", "multi_queue", "list"])]
    delete: Option<String>,
    /// The tun clone device.
    #[arg(short = 'f', long = "clone-device", value_name = "FILE", default_value = CLONE_DEVICE)]
    clone: PathBuf,
    /// The device name (a template such as tap%d lets the kernel number it).
    #[arg(short = 't', long = "name", value_name = "NAME", default_value = "")]
    name: String,
    /// The user (name or number) allowed to attach.
    #[arg(short = 'u', long = "user", value_name = "OWNER")]
    owner: Option<String>,
    /// The group (name or number) allowed to attach.
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    group: Option<String>,
    /// Create a TUN (layer 3) device instead of a TAP.
    #[arg(short = 'n', long = "tun")]
    tun: bool,
    /// Create a multi-queue device.
    #[arg(long = "multi-queue")]
    multi_queue: bool,
    /// Set the device's MTU.
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,
    /// List the TUN/TAP devices: name, kind, owner, group, flags.
    #[arg(long)]
    list: bool,
    /// With --list: one JSON object per device.
    #[arg(long, requires = "list")]
    json: bool,
}

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
