//! The command line of `uml_net`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

/// The privileged helper a UML kernel runs to set up host networking.
///
/// A guest booted with `eth0=tuntap,,,GATE` makes its kernel run
/// `uml_net 4 tuntap up GATE`, which creates a tap owned by the calling user,
/// gives it GATE/32 and passes it back; later `uml_net 4 add|del DEV ADDR
/// NETMASK` routes the guest's address through that tap and publishes it by
/// proxy ARP.
///
/// Who may do what. Root: anything. If /etc/uml-utilities/uml_net.conf
/// exists, it alone says what other users may do. If it does not, members of
/// the group that owns this program (when only that group may run it, as
/// Debian installs it: root:uml-net, mode 4754) and of group uml-net may do
/// what the C package let them: taps with a GATE, routes and proxy ARP for
/// their own taps' guests, IPv4 forwarding. Anyone else gets bare taps
/// (eth0=tuntap,,,) and nothing more.
///
/// Always: a GATE another device's route or a proxy ARP entry already uses is
/// refused; taps ignore IPv6 router advertisements, redirects and
/// autoconfiguration, and IPv4 packets from sources not routed through them;
/// add and del act only on the caller's own taps, and del
/// removes only what add made; a user has at most 32 taps from uml_net at a
/// time. See the README.
#[derive(Parser)]
#[command(name = "uml_net", version)]
pub struct Args {
    /// VERSION TRANSPORT ARGS..., as the kernel passes them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<OsString>,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
