//! `uml_lab`: command-line front end.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    uml_lab::app::run(uml_lab::app::Args::parse())
}
