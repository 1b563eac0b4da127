//! `uml_net`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use uml_net::cli::Args;

fn main() -> ExitCode {
    // Privileges are narrowed before anything, argument parsing included, runs.
    let start = uml_net::Start::now();
    let args = Args::parse();
    ExitCode::from(uml_net::run(start, &args.words))
}
