//! `cargo xtask`: the project's own automation.
//!
//! - `cargo xtask test`: provisions the real-kernel test bed, then runs the format
//!   check, clippy with warnings denied, and every test of the workspace.
//! - `cargo xtask provision`: only installs what the real-kernel tests need.
//! - `cargo xtask demo`: two guests on our switch ping, are listed, halted, and
//!   one's COW file merged.
//! - `cargo xtask dist [--out DIR]`: the Debian package.
//! - `cargo xtask install [--prefix DIR]`: binaries, man pages, completions.
//! - `cargo xtask fuzz [SECONDS]`: runs every `cargo fuzz` target of `uml_proto`.
//! - `cargo xtask bench cow [--size-mib N] [--reps N] [--only TEXT] [--keep]`:
//!   times `uml_moo` against the C tool and `cp` (see BENCHMARKS.md).
//! - `cargo xtask bench switch [--secs S] [--reps N] [--unpinned] [--only TEXT] [--ours PATH]`: the C switch,
//!   `vde_switch`, ours and a reference forwarder under one load generator.

mod bench;
mod demo;
mod dist;
mod fuzz;
mod provision;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run_command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever RUST_BACKTRACE says: the error already names the fix.
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("fuzz") => {
            let seconds = match args.get(1) {
                Some(s) => s
                    .parse()
                    .with_context(|| format!("fuzz: '{s}' is not a number of seconds"))?,
                None => 60,
            };
            fuzz::run_all(&workspace_root(), seconds)
        }
        Some("provision") => provision::ensure_test_bed(),
        Some("demo") => demo::run(&workspace_root()),
        Some("dist") => dist::dist(&workspace_root(), &args[1..]),
        Some("install") => dist::install(&workspace_root(), &args[1..]),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        // Internal: the reference writer `bench cow` starts as a process.
        Some("bench-write-runs") => bench::write_runs(&args[1..]),
        // Internal: the reference forwarder `bench switch` starts as a process.
        Some("bench-forward") => bench::forward(&args[1..]),
        // Internal: the ping-pong relays `bench switch` starts as processes.
        Some("bench-relay") => bench::relay(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test             provision the test bed, then fmt check, clippy -D warnings, all tests\n  \
                 provision        only install what the real-kernel tests need\n  \
                 demo             two guests on our switch, from COW files over one image: ping,\n                   \
                 mconsole, halt, merge (the newcomer's tour; cleans up after itself)\n  \
                 dist [--out DIR] build the Debian package (replaces uml-utilities)\n  \
                 install [--prefix DIR]\n                   \
                 binaries, man pages and completions under DIR (default /usr/local)\n  \
                 fuzz [SECONDS]   run every uml_proto fuzz target for SECONDS each (default 60)\n  \
                 bench cow [--size-mib N] [--reps N] [--only TEXT] [--keep]\n                   \
                 time uml_moo against the C tool and cp (see BENCHMARKS.md);\n                   \
                 --only runs the cells whose name holds TEXT, --keep keeps the images\n  \
                 bench switch [--secs S] [--reps N] [--unpinned] [--only TEXT] [--ours PATH]\n                   \
                 uml_switch against the C switch, vde_switch and a reference forwarder,\n                   \
                 harness and switch pinned to separate CPUs unless --unpinned"
            );
            std::process::exit(2);
        }
    }
}

fn test() -> Result<()> {
    provision::ensure_test_bed()?;
    let root = workspace_root();
    cargo(&root, &["fmt", "--all", "--check"])?;
    cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(&root, &["test", "--workspace", "--locked"])?;
    Ok(())
}

/// Runs `cargo ARGS` in `dir`, failing with the command line if it fails.
pub(crate) fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new(env!("CARGO")).args(args).current_dir(dir))
}

/// Runs a command to completion, failing with its command line if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: running {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {line}"))?;
    if !status.success() {
        bail!("{line} failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    // xtask's manifest sits one level below the workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
