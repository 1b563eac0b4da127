//! `uml_net`: command-line front end.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// The privileged helper a UML kernel runs to set up host networking.
///
/// A guest booted with `eth0=tuntap,,,GATE` makes its kernel run
/// `uml_net 4 tuntap up GATE`, which creates a tap owned by the calling user,
/// gives it GATE/32 and passes it back; later `uml_net 4 add|del DEV ADDR
/// NETMASK` routes the guest's address through that tap. Users other than root
/// get only what /etc/uml-utilities/uml_net.conf allows them (see the README);
/// without a line for them they may make bare taps and nothing else.
#[derive(Parser)]
#[command(name = "uml_net", version)]
struct Args {
    /// VERSION TRANSPORT ARGS..., as the kernel passes them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    words: Vec<OsString>,
}

fn main() -> ExitCode {
    // Privileges are narrowed before anything, argument parsing included, runs.
    let start = uml_net::Start::now();
    let args = Args::parse();
    ExitCode::from(uml_net::run(start, &args.words))
}
