//! `uml_mkcow [-f] COW BACKING`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use uml_mkcow::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    match uml_mkcow::create_cow(&args.cow, &args.backing, args.force) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("uml_mkcow: {err}");
            ExitCode::FAILURE
        }
    }
}
