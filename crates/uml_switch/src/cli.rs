//! The command line of `uml_switch`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::capture::Rotate;
use crate::endpoint::EndpointSpec;
use crate::vxlan::VxlanConfig;

/// A userspace Ethernet switch (or hub) for User-Mode Linux guests.
///
/// Guests attach with `ethN=daemon,,unix,CTL` (kernels up to 6.15) or with
/// `vecN:transport=bess,dst=BESS` (current kernels); both kinds of port share
/// one switch. The old single-dash options (`-unix`, `-hub`, `-tap`,
/// `-daemon`, `-compat-v0`) work as they did.
#[derive(Parser)]
#[command(name = "uml_switch", version)]
pub struct Args {
    /// Control socket for daemon-transport guests (with --compat-v0: CTL DATA).
    #[arg(long, value_name = "CTL", num_args = 1..=2)]
    pub unix: Vec<PathBuf>,
    /// Flood every frame to every other port instead of switching.
    #[arg(long)]
    pub hub: bool,
    /// Attach the tap device DEV as one more port.
    #[arg(long, value_name = "DEV")]
    pub tap: Option<String>,
    /// Listen for BESS (SOCK_SEQPACKET) guests at PATH: `vec0:transport=bess,dst=PATH`.
    #[arg(long, value_name = "PATH")]
    pub bess: Option<PathBuf>,
    /// Accept version 0 requests (very old kernels) and use a data socket file.
    #[arg(long = "compat-v0")]
    pub compat_v0: bool,
    /// Detach into the background once the sockets are bound.
    #[arg(long)]
    pub daemon: bool,
    /// Write the switch's pid to PATH (after detaching), removed at exit.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// Ports one user may hold (0: no limit); root and the switch's own user
    /// are not limited.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_ports_per_user: usize,
    /// Addresses the learning table holds at most; beyond them new
    /// addresses are not learned, and frames to them flood.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_macs: u32,
    /// Seconds a learned address is kept after its last frame.
    #[arg(long, value_name = "SECS", default_value_t = 100)]
    pub max_age: u64,
    /// One more place guests plug in, with what their ports get: `unix:CTL`,
    /// `bess:PATH` or `tap:DEV`, then comma-separated options: `vlan=N`, or
    /// `trunk=A:B-C` with `native=N`; link emulation `delay=100ms`,
    /// `jitter=5ms`, `loss=1%`, `burst=25%`, `dup=1%`, `reorder=5%`,
    /// `rate=1mbit`, `queue=100`, `limit=1000`, `dir=out|in|both`.
    #[arg(long, value_name = "SPEC")]
    pub endpoint: Vec<EndpointSpec>,
    /// A VXLAN uplink, comma-separated: `local=IP[:PORT]`, `vni=N`, then
    /// `remote=IP[:PORT]` (repeatable) or `group=MCAST`, and optionally
    /// `vlan=N` or `trunk=A:B`.
    #[arg(long, value_name = "SPEC")]
    pub vxlan: Vec<VxlanConfig>,
    /// Management socket (JSON lines; see uml_switchctl), owner-only.
    #[arg(long, value_name = "PATH")]
    pub mgmt: Option<PathBuf>,
    /// Capture every frame received to FILE as pcapng (`-`: standard output, or a FIFO).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Also capture the copies the switch sends, on the egress port's interface.
    #[arg(long, requires = "pcap")]
    pub pcap_outbound: bool,
    /// Start a new capture file before one grows beyond SIZE (k, M, G), keeping COUNT files.
    #[arg(long, value_name = "SIZE[,COUNT]", requires = "pcap", value_parser = Rotate::parse)]
    pub pcap_rotate: Option<Rotate>,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
