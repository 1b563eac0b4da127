//! `uml_mkcow [-f] COW BACKING`: command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Create a UML copy-on-write file COW over the backing image BACKING.
///
/// The COW is written to a temporary file beside it and renamed into place, so
/// no half-made COW is ever left under its name. Its header stores BACKING's
/// absolute path, size and modification time, as the kernel checks them.
#[derive(Parser)]
#[command(name = "uml_mkcow", version)]
struct Args {
    /// Replace an existing COW file (never the backing file itself).
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// The COW file to create.
    cow: PathBuf,
    /// The backing image the COW file records changes against.
    backing: PathBuf,
}

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
