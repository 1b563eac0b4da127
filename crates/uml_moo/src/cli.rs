//! The command line of `uml_moo`, shared by the binary (parsing) and by
//! `cargo xtask` (man page and shell completions).

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

/// Merge a UML copy-on-write file with its backing file into a full disk image.
///
/// `uml_moo COW NEW` writes the merged image to NEW (beside it under a temporary
/// name first, synced, then renamed). `uml_moo -d COW` writes the COW's changes
/// into the backing file itself; if it is interrupted, running it again finishes
/// the job. `uml_moo --info COW` describes a COW file. Options go in any order.
/// Exit status: 0 on success, 1 on any error (as the C uml_moo).
#[derive(Parser)]
#[command(
    name = "uml_moo",
    version,
    override_usage = "uml_moo [OPTIONS] COW NEW\n       uml_moo [OPTIONS] -d COW\n       uml_moo --info [--json] [-b BACKING] COW"
)]
pub struct Args {
    /// Merge in place: write the changes into the backing file (destroys the old backing image).
    #[arg(short = 'd', long = "in-place", conflicts_with = "new")]
    pub in_place: bool,
    /// Use this backing file instead of the one the COW header names.
    #[arg(short = 'b', long = "backing", value_name = "BACKING")]
    pub backing: Option<PathBuf>,
    /// Accepted for scripts: an existing NEW is replaced anyway, as the C tool
    /// overwrites it (never when NEW is the COW or the backing file).
    #[arg(short = 'f', long = "overwrite")]
    pub overwrite: bool,
    /// Merge even if the backing file's size or mtime differ from those in the COW header.
    #[arg(long)]
    pub force: bool,
    /// No progress bar and no notices.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Describe the COW file (header, backing file, dirty data) instead of merging.
    #[arg(long, conflicts_with_all = ["in_place", "new", "overwrite", "force"])]
    pub info: bool,
    /// With --info: print one JSON object.
    #[arg(long, requires = "info")]
    pub json: bool,
    /// The COW file.
    pub cow: PathBuf,
    /// The merged image to create.
    #[arg(required_unless_present_any = ["in_place", "info"])]
    pub new: Option<PathBuf>,
}

/// The clap definition, for the man page and the completions.
pub fn command() -> clap::Command {
    Args::command()
}
