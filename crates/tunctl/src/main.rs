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
