//! The command line of `uml_mkcow`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

/// Create a UML copy-on-write file COW over the backing image BACKING.
///
/// The COW is written to a temporary file beside it and renamed into place, so
/// no half-made COW is ever left under its name. Its header stores BACKING's
/// absolute path, size and modification time, as the kernel checks them.
#[derive(Parser)]
#[command(name = "uml_mkcow", version)]
pub struct Args {
    /// Replace an existing COW file (never the backing file itself).
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// The COW file to create.
    pub cow: PathBuf,
    /// The backing image the COW file records changes against.
    pub backing: PathBuf,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
