//! `uml_moo`: command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use uml_moo::MooError;
use uml_moo::merge::{MergeOptions, Merged, Output, merge_in_place, merge_to_new};
use uml_proto::cow::CowVersion;

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
struct Args {
    /// Merge in place: write the changes into the backing file (destroys the old backing image).
    #[arg(short = 'd', long = "in-place", conflicts_with = "new")]
    in_place: bool,
    /// Use this backing file instead of the one the COW header names.
    #[arg(short = 'b', long = "backing", value_name = "BACKING")]
    backing: Option<PathBuf>,
    /// Accepted for scripts: an existing NEW is replaced anyway, as the C tool
    /// overwrites it (never when NEW is the COW or the backing file).
    #[arg(short = 'f', long = "overwrite")]
    overwrite: bool,
    /// Merge even if the backing file's size or mtime differ from those in the COW header.
    #[arg(long)]
    force: bool,
    /// No progress bar and no notices.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Describe the COW file (header, backing file, dirty data) instead of merging.
    #[arg(long, conflicts_with_all = ["in_place", "new", "overwrite", "force"])]
    info: bool,
    /// With --info: print one JSON object.
    #[arg(long, requires = "info")]
    json: bool,
    /// The COW file.
    cow: PathBuf,
    /// The merged image to create.
    #[arg(required_unless_present_any = ["in_place", "info"])]
    new: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // The C tool exits 1 on usage errors too.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("uml_moo: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), MooError> {
    if args.info {
        let info = uml_moo::info::inspect(&args.cow, args.backing.as_deref())?;
        if args.json {
            // Serialising plain strings and numbers cannot fail.
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
        } else {
            print!("{info}");
        }
        return Ok(());
    }
    let opts = MergeOptions {
        backing: args.backing.clone(),
        force: args.force,
        progress: !args.quiet,
    };
    let merged = match &args.new {
        // clap guarantees NEW unless -d or --info.
        Some(new) if !args.in_place => merge_to_new(&args.cow, new, &opts)?,
        _ => merge_in_place(&args.cow, &opts)?,
    };
    report(
        &merged,
        args.new.as_deref().filter(|_| !args.in_place),
        args.quiet,
    );
    Ok(())
}

fn report(merged: &Merged, new: Option<&std::path::Path>, quiet: bool) {
    for warning in &merged.overridden {
        eprintln!("uml_moo: warning: {warning}");
    }
    if quiet {
        return;
    }
    if merged.version == CowVersion::V3Broken {
        // The C tool's notice, on stdout as it prints it.
        println!("read_cow_header - broken V3 file with 64-bit layout - recovering content.");
    }
    match (&merged.output, new) {
        (Output::Replaced, Some(new)) => {
            eprintln!("uml_moo: replaced the existing '{}'", new.display());
        }
        (Output::Device, Some(new)) => {
            eprintln!("uml_moo: wrote the image onto device '{}'", new.display());
        }
        _ => {}
    }
    if merged.resumed {
        eprintln!("uml_moo: finished an interrupted in-place merge");
    }
    if merged.already_merged {
        eprintln!(
            "uml_moo: the backing file already holds every change of the COW file; nothing to do"
        );
    }
}
