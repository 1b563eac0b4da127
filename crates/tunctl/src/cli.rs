//! The command line of `tunctl`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;

use uml_host::tun::CLONE_DEVICE;

use clap::{CommandFactory, Parser};

/// Create, delete and list persistent TUN/TAP devices.
///
/// `tunctl -u USER -t tap0` makes tap0 persistent and lets USER attach to it
/// (a UML running as USER: `eth0=tuntap,tap0`). `tunctl -d tap0` deletes it
/// (a missing device is not an error). The C tool's options and output are
/// kept; `-n`, `--multi-queue`, `--mtu` and `--list` are new.
#[derive(Parser)]
#[command(name = "tunctl", version)]
pub struct Args {
    /// Brief output: just the device name.
    #[arg(short = 'b', long = "brief")]
    pub brief: bool,
    /// Delete device NAME.
    #[arg(short = 'd', long = "delete", value_name = "NAME", conflicts_with_all = ["name", "owner", "group", "mtu", "multi_queue", "list"])]
    pub delete: Option<String>,
    /// The tun clone device.
    #[arg(short = 'f', long = "clone-device", value_name = "FILE", default_value = CLONE_DEVICE)]
    pub clone: PathBuf,
    /// The device name (a template such as tap%d lets the kernel number it).
    #[arg(short = 't', long = "name", value_name = "NAME", default_value = "")]
    pub name: String,
    /// The user (name or number) allowed to attach.
    #[arg(short = 'u', long = "user", value_name = "OWNER")]
    pub owner: Option<String>,
    /// The group (name or number) allowed to attach.
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// Create a TUN (layer 3) device instead of a TAP.
    #[arg(short = 'n', long = "tun")]
    pub tun: bool,
    /// Create a multi-queue device.
    #[arg(long = "multi-queue")]
    pub multi_queue: bool,
    /// Set the device's MTU.
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// List the TUN/TAP devices: name, kind, owner, group, flags.
    #[arg(long)]
    pub list: bool,
    /// With --list: one JSON object per device.
    #[arg(long, requires = "list")]
    pub json: bool,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
