//! `cargo xtask bench KIND`: our tools against the C ones, in the same invocation.

mod cow;
mod forwarder;
mod relay;
mod switch;

pub use cow::write_runs;
pub use forwarder::run as forward;
pub use relay::run as relay;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Runs the benchmark named by `args[0]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("cow") => cow::run(root, &args[1..]),
        Some("switch") => switch::run(root, &args[1..]),
        Some(other) => bail!("bench: unknown benchmark '{other}' (known: cow, switch)"),
        None => bail!("bench: name a benchmark (known: cow, switch)"),
    }
}

/// Median of `reps` timings of `f`, after `prepare` (untimed) before each.
fn median_time(
    reps: usize,
    mut prepare: impl FnMut() -> Result<()>,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        prepare()?;
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// `--name VALUE` from a benchmark's arguments, parsed, or `default`.
fn option<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => Ok(v),
            _ => bail!("bench: {name} needs a value"),
        },
    }
}
