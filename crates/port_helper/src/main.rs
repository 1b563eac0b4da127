//! `port-helper` command line: none (port channel) or `-uml-socket PATH` (xterm channel).

use std::process::ExitCode;

use port_helper::{Destination, run};

const USAGE: &str = "usage: port-helper [-uml-socket PATH]

Run by a UML kernel, not by hand: through in.telnetd for a port: console
(the kernel's socket on fd 3), or by a terminal emulator for an xterm
console (-uml-socket PATH). Passes its standard input, the terminal, to the
kernel and waits until the terminal closes.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let destination = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["-uml-socket", path, ..] => Destination::UmlSocket(path.into()),
        ["-uml-socket"] => {
            eprintln!("port-helper: -uml-socket needs the UML's socket path\n{USAGE}");
            return ExitCode::FAILURE;
        }
        ["--version"] => {
            println!("port-helper {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        // A telnetd may pass its login program arguments (`-h HOST -p`): ignored, as the C tool does.
        _ => Destination::InheritedFd,
    };
    match run(&destination) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("port-helper: {e}");
            ExitCode::FAILURE
        }
    }
}
