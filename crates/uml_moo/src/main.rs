//! `uml_moo`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use uml_moo::MooError;
use uml_moo::cli::Args;
use uml_moo::merge::{MergeOptions, Merged, Output, merge_in_place, merge_to_new};
use uml_proto::cow::CowVersion;

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
