//! The command line of `uml_watchdog`, described for its man page and shell
//! completions. It is not used for parsing: `main.rs` reads the kernel's
//! single-dash options by hand, as the C tool did.

use clap::{Arg, ArgAction, ArgGroup, Command};

/// The clap definition, for the man page and the completions.
pub fn command() -> Command {
    Command::new("uml_watchdog")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Host side of the User-Mode Linux hardware watchdog")
        .long_about(
            "Started by a UML kernel when its guest opens /dev/watchdog: stdin carries the \
             guest's pings, stdout takes the ready byte. After SECS (default 60, or \
             $UML_WATCHDOG_TIMEOUT) without a ping, -pid interrupts and then kills the UML \
             process, -mconsole sends a HANG notification to the mconsole notify socket. \
             Log lines go to the file $UML_WATCHDOG_LOG names, else to stderr when run by \
             hand, else to syslog.",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("pid")
                .long("pid")
                .value_name("PID")
                .help("The UML process to end when the guest hangs (written -pid, one dash)"),
        )
        .arg(
            Arg::new("mconsole")
                .long("mconsole")
                .value_name("SOCKET")
                .help("The mconsole notify socket to report a hang to (written -mconsole)"),
        )
        .group(
            ArgGroup::new("target")
                .args(["pid", "mconsole"])
                .required(true),
        )
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .value_name("SECS")
                .help("Seconds without a ping before the guest counts as hung"),
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
