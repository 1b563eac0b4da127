//! `uml_switch`: command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use uml_switch::cli::Args;
use uml_switch::mgmt::ManagedConfig;
use uml_switch::switch::{Config, Switch};

/// The C switch's single-dash long options, rewritten to `--` forms.
const OLD_OPTIONS: [&str; 6] = ["-unix", "-hub", "-tap", "-daemon", "-compat-v0", "-bess"];

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let program = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "uml_switch".to_owned());
    if argv.iter().skip(1).any(|a| a == "-help") {
        // The C switch's answer to -help: its usage on stderr, status 1.
        eprintln!(
            "Usage : {program} [ -unix control-socket ] [ -hub ] [ -tap tap-device ]\n\
             or : {program} -compat-v0 [ -unix control-socket data-socket ] [ -hub ] [ -tap tap-device ]"
        );
        return ExitCode::FAILURE;
    }
    for arg in argv.iter_mut().skip(1) {
        if OLD_OPTIONS.contains(&arg.as_str()) {
            arg.insert(0, '-');
        }
    }
    let args = match Args::try_parse_from(&argv) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            // The C switch exits 1 on usage errors.
            return ExitCode::from(u8::from(err.use_stderr()));
        }
    };
    let default_data = || Some(PathBuf::from("/tmp/uml.data"));
    let (control, compat_v0_data) = match (args.unix.as_slice(), args.compat_v0) {
        ([], false) => (PathBuf::from("/tmp/uml.ctl"), None),
        ([], true) => (PathBuf::from("/tmp/uml.ctl"), default_data()),
        ([ctl], false) => (ctl.clone(), None),
        ([ctl, data], true) => (ctl.clone(), Some(data.clone())),
        ([ctl], true) => (ctl.clone(), default_data()),
        _ => {
            eprintln!("{program}: -unix takes one path (two with -compat-v0: CTL DATA)");
            return ExitCode::FAILURE;
        }
    };
    let cfg = Config {
        program,
        control,
        compat_v0_data,
        hub: args.hub,
        tap: args.tap,
        bess: args.bess,
        daemon: args.daemon,
        pidfile: args.pidfile,
        max_age: Duration::from_secs(args.max_age),
        max_ports_per_user: args.max_ports_per_user,
        max_macs: usize::try_from(args.max_macs).unwrap_or(usize::MAX),
        endpoints: args.endpoint,
        vxlan: args.vxlan,
        managed: ManagedConfig {
            mgmt: args.mgmt,
            pcap: args.pcap,
            pcap_rotate: args.pcap_rotate,
            pcap_outbound: args.pcap_outbound,
        },
    };
    let result = Switch::start(cfg.clone()).and_then(|mut switch| switch.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}: {err}", cfg.program);
            ExitCode::FAILURE
        }
    }
}
