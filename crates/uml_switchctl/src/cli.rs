//! The command line of `uml_switchctl`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// Manage a running `uml_switch` through its management socket (`--mgmt SOCKET`).
///
/// Human-readable tables by default; `--json` prints the switch's JSON
/// results (one per line, events too) for scripts.
#[derive(Parser)]
#[command(name = "uml_switchctl", version)]
pub struct Args {
    /// Print the switch's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The switch's management socket.
    pub socket: PathBuf,
    /// What to ask the switch.
    #[command(subcommand)]
    pub command: Command,
}

/// The requests.
#[derive(Subcommand)]
pub enum Command {
    /// Ports: transport, peer, MACs, age, frames and bytes, drops by reason.
    Ports,
    /// The learning table, or `flush [PORT]` to empty it.
    Macs {
        /// Flush instead of listing.
        #[command(subcommand)]
        action: Option<MacsAction>,
    },
    /// Totals, uptime and the recent rate.
    Stats,
    /// Close a port, or set one of its settings.
    Port {
        /// Close or set.
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
        /// Stop or list instead of starting one.
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

/// What `macs` does besides listing.
#[derive(Subcommand)]
pub enum MacsAction {
    /// Forget every learned address, or those of one port.
    Flush {
        /// The port.
        port: Option<u32>,
    },
}

/// What `port` does.
#[derive(Subcommand)]
pub enum PortAction {
    /// Close port N.
    Close {
        /// The port.
        port: u32,
    },
    /// Set a port's description.
    Set {
        /// The port.
        port: u32,
        /// The setting: description, vlan or emulation.
        key: String,
        /// Its value.
        value: Vec<String>,
    },
}

/// What `capture` does besides starting one.
#[derive(Subcommand)]
pub enum CaptureAction {
    /// Stop capture ID, or every capture.
    Stop {
        /// The capture.
        id: Option<u32>,
    },
    /// The running captures.
    List,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
