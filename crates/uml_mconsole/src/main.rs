//! `uml_mconsole`: command-line front end.

use std::process::ExitCode;

use clap::Parser;
use uml_mconsole::app::run;
use uml_mconsole::cli::Args;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            // The C client exits 1 on usage errors.
            return ExitCode::from(u8::from(err.use_stderr()));
        }
    };
    ExitCode::from(run(args.into_options()))
}
