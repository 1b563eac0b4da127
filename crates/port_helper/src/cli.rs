//! The command line of `port-helper`, described for its man page and shell
//! completions. It is not used for parsing: the kernel's and telnetd's
//! argument vectors are matched by hand in `main.rs`, as the C tool took them.

use clap::{Arg, ArgAction, Command};

/// The clap definition, for the man page and the completions.
pub fn command() -> Command {
    Command::new("port-helper")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Pass a console's terminal to a User-Mode Linux kernel")
        .long_about(
            "Run by a UML kernel, not by hand: through in.telnetd for a port: console \
             (con1=port:9000; the kernel's socket is on fd 3), or by a terminal emulator \
             for an xterm console (-uml-socket PATH). It passes its standard input, the \
             terminal, to the kernel and waits until the terminal closes. The kernel runs \
             it as /usr/lib/uml/port-helper, or as $UML_PORT_HELPER for port: consoles.",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("uml-socket")
                .long("uml-socket")
                .value_name("PATH")
                .help("The kernel's socket of an xterm console (written -uml-socket, one dash)"),
        )
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print the usage"),
        )
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version"),
        )
}
