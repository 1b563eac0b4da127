//! Runs the `cargo fuzz` targets that live beside the protocol crate.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs every fuzz target of `crates/uml_proto/fuzz` for `seconds` each.
pub fn run_all(root: &Path, seconds: u64) -> Result<()> {
    let fuzz_dir = root.join("crates/uml_proto");
    if crate::provision::find_program("cargo-fuzz").is_none()
        && !Path::new(&std::env::var("HOME").unwrap_or_default())
            .join(".cargo/bin/cargo-fuzz")
            .is_file()
    {
        crate::cargo(root, &["install", "--locked", "cargo-fuzz"])?;
    }
    let list = Command::new(env!("CARGO"))
        .args(["fuzz", "list"])
        .current_dir(&fuzz_dir)
        .output()
        .context("running cargo fuzz list")?;
    if !list.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    let targets = String::from_utf8(list.stdout).context("cargo fuzz list printed non-UTF-8")?;
    for target in targets.lines().filter(|t| !t.is_empty()) {
        crate::run(
            Command::new(env!("CARGO"))
                .args(["fuzz", "run", "--sanitizer", "none", target, "--"])
                .arg(format!("-max_total_time={seconds}"))
                // COW headers reach 4136 bytes; libFuzzer's default cap is 4096.
                .arg("-max_len=8192")
                // cargo fuzz passes nightly-only flags; the project has only a stable toolchain.
                .env("RUSTC_BOOTSTRAP", "1")
                .current_dir(&fuzz_dir),
        )?;
    }
    Ok(())
}
