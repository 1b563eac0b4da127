//! `cargo xtask bench cow`: merging COW files, the C `uml_moo` against ours.
//!
//! Fixtures: a backing image (1 GiB by default) of random bytes, COW files made
//! by the C `uml_mkcow` with 1%, 25% and 100% of the image dirty in scattered
//! 4 KiB or 1 MiB runs, and a sparse backing image. Every timing is the median of
//! `--reps` runs with the inputs in the page cache, and includes the fsync of
//! the file written (ours syncs by itself; the C tool and cp do not, so the
//! harness does it for them): the time until the data is on disk.
//!
//! References: a new-file merge is compared with `cp --sparse=always BACKING`,
//! the physical cost of writing the image; `-d` with writing just the dirty
//! runs from memory and syncing. Every output is compared byte for byte with
//! the expected image, computed here from the generator, not by any merge tool.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};

use super::{median_time, option};
use crate::provision::find_program;

const SECTOR: u64 = 512;
/// Sparse backing: one MiB of data in every this many.
const SPARSE_STRIDE: u64 = 16 << 20;

/// xorshift64*: fast, deterministic, good enough to defeat any compression.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One COW file to merge and what merging it must give.
struct Fixture {
    name: String,
    backing: PathBuf,
    cow: PathBuf,
    /// Dirty byte ranges (offset, length), sorted.
    runs: Vec<(u64, u64)>,
    expected: Vec<u8>,
    /// Whether `-d` is measured too (restoring a sparse backing would fill its holes).
    in_place: bool,
}

struct Tools {
    ours: PathBuf,
    c_moo: PathBuf,
    c_mkcow: PathBuf,
    cp: PathBuf,
}

/// One line of the result table.
struct Row {
    fixture: String,
    mode: &'static str,
    reference: Duration,
    c: Duration,
    ours: Duration,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let size_mib: u64 = option(args, "--size-mib", 1024)?;
    let reps: usize = option(args, "--reps", 3)?;
    // For profiling: only the fixtures whose name contains this, and keep the files.
    let only: String = option(args, "--only", String::new())?;
    let keep = args.iter().any(|a| a == "--keep");
    ensure!(
        size_mib >= 16 && reps >= 1,
        "bench cow: --size-mib >= 16, --reps >= 1"
    );
    crate::cargo(root, &["build", "--release", "--quiet", "-p", "uml_moo"])?;
    let program = |name: &str| {
        find_program(name).with_context(|| format!("`{name}` not found (cargo xtask provision)"))
    };
    let tools = Tools {
        ours: root.join("target/release/uml_moo"),
        c_moo: program("uml_moo")?,
        c_mkcow: program("uml_mkcow")?,
        cp: program("cp")?,
    };
    let work = root.join("target/bench-cow");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let size = size_mib << 20;

    eprintln!("bench cow: writing a {size_mib} MiB backing image");
    let mut backing_data = vec![0u8; index(size)];
    Rng(0x9e37_79b9_7f4a_7c15).fill(&mut backing_data);
    let dense = work.join("backing.img");
    write_synced(&dense, &backing_data, &[(0, size)])?;

    let mut rows = Vec::new();
    for (pct, run_len) in [
        (1, 4 << 10),
        (1, 1 << 20),
        (25, 4 << 10),
        (25, 1 << 20),
        (100, 1 << 20),
    ] {
        let name = format!("{pct}% dirty, {} runs", human(run_len));
        if !name.contains(&only) {
            continue;
        }
        let fixture = make_fixture(&tools, &work, &name, &dense, &backing_data, pct, run_len)?;
        rows.extend(measure(&tools, &work, &fixture, &backing_data, reps)?);
    }

    let sparse_cells: Vec<(String, u64)> = [4 << 10, 1 << 20]
        .into_iter()
        .map(|run_len| {
            let share = 100 * (1 << 20) / SPARSE_STRIDE;
            let name = format!(
                "sparse backing ({share}% data), 1% dirty, {} runs",
                human(run_len)
            );
            (name, run_len)
        })
        .filter(|(name, _)| name.contains(&only))
        .collect();
    if sparse_cells.is_empty() {
        print_table(size_mib, reps, &rows);
        return Ok(());
    }
    eprintln!("bench cow: writing a sparse backing image");
    let mut sparse_data = vec![0u8; index(size)];
    let data_ranges: Vec<(u64, u64)> = (0..size / SPARSE_STRIDE)
        .map(|i| (i * SPARSE_STRIDE, 1 << 20))
        .collect();
    let mut rng = Rng(42);
    for &(off, len) in &data_ranges {
        rng.fill(&mut sparse_data[index(off)..index(off + len)]);
    }
    let sparse = work.join("sparse.img");
    write_synced(&sparse, &sparse_data, &data_ranges)?;
    for (name, run_len) in sparse_cells {
        let mut fixture = make_fixture(&tools, &work, &name, &sparse, &sparse_data, 1, run_len)?;
        fixture.in_place = false;
        rows.extend(measure(&tools, &work, &fixture, &sparse_data, reps)?);
    }

    print_table(size_mib, reps, &rows);
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Writes only `ranges` of `data` (the rest stays a hole), sized to `data`, synced.
fn write_synced(path: &Path, data: &[u8], ranges: &[(u64, u64)]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(data.len() as u64)?;
    for &(off, len) in ranges {
        file.write_all_at(&data[index(off)..index(off + len)], off)?;
    }
    file.sync_all()?;
    Ok(())
}

/// Creates a COW over `backing` with the C `uml_mkcow`, then dirties `pct`% of
/// the image in runs of `run_len` bytes at random places.
fn make_fixture(
    tools: &Tools,
    work: &Path,
    name: &str,
    backing: &Path,
    backing_data: &[u8],
    pct: u64,
    run_len: u64,
) -> Result<Fixture> {
    eprintln!("bench cow: preparing {name}");
    let size = backing_data.len() as u64;
    let cow = work.join("bench.cow");
    let _ = fs::remove_file(&cow);
    crate::run(Command::new(&tools.c_mkcow).arg(&cow).arg(backing))?;

    // The V3 layout, computed here from the format's formulas.
    let bitmap_offset = 8192;
    let bitmap_len = size.div_ceil(SECTOR).div_ceil(8);
    let data_offset = (bitmap_offset + bitmap_len).div_ceil(4096) * 4096;

    let slots = size / run_len;
    let mut chosen: Vec<u64> = (0..slots).collect();
    let mut rng = Rng(pct * 1000 + run_len);
    let count = index(slots * pct / 100);
    // A partial Fisher-Yates shuffle picks `count` distinct slots.
    for i in 0..count {
        let j = i + index(rng.below(slots - i as u64));
        chosen.swap(i, j);
    }
    chosen.truncate(count);
    chosen.sort_unstable();

    let file = OpenOptions::new().write(true).open(&cow)?;
    let mut bitmap = vec![0u8; index(bitmap_len)];
    let mut expected = backing_data.to_vec();
    let mut runs = Vec::with_capacity(count);
    for slot in chosen {
        let off = slot * run_len;
        let range = index(off)..index(off + run_len);
        rng.fill(&mut expected[range.clone()]);
        file.write_all_at(&expected[range], data_offset + off)?;
        for sector in off / SECTOR..(off + run_len) / SECTOR {
            bitmap[index(sector / 8)] |= 1 << (sector % 8);
        }
        runs.push((off, run_len));
    }
    file.write_all_at(&bitmap, bitmap_offset)?;
    file.sync_all()?;
    Ok(Fixture {
        name: name.to_owned(),
        backing: backing.to_path_buf(),
        cow,
        runs,
        expected,
        in_place: true,
    })
}

/// Runs a tool and syncs the file it wrote.
fn run_and_sync(cmd: &mut Command, written: &Path) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    File::open(written)?.sync_all()?;
    Ok(())
}

fn verify(path: &Path, expected: &[u8], what: &str) -> Result<()> {
    let got = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if got.len() != expected.len() {
        bail!(
            "{what}: {} has {} bytes, expected {}",
            path.display(),
            got.len(),
            expected.len()
        );
    }
    if got != expected {
        let at = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        bail!(
            "{what}: {} differs from the expected image at byte {at}",
            path.display()
        );
    }
    Ok(())
}

fn measure(
    tools: &Tools,
    work: &Path,
    f: &Fixture,
    backing_data: &[u8],
    reps: usize,
) -> Result<Vec<Row>> {
    let out = work.join("merged.img");
    let clear = || -> Result<()> {
        let _ = fs::remove_file(&out);
        Ok(())
    };
    let time_new =
        |cmd: &mut dyn FnMut() -> Command, want: &[u8], what: &str| -> Result<Duration> {
            let t = median_time(reps, clear, || run_and_sync(&mut cmd(), &out))?;
            verify(&out, want, what)?;
            Ok(t)
        };
    let backing_bytes = backing_data;
    let reference = time_new(
        &mut || {
            let mut c = Command::new(&tools.cp);
            c.arg("--sparse=always").arg(&f.backing).arg(&out);
            c
        },
        backing_bytes,
        "cp",
    )?;
    let c = time_new(
        &mut || {
            let mut c = Command::new(&tools.c_moo);
            c.arg(&f.cow).arg(&out);
            c
        },
        &f.expected,
        "C uml_moo",
    )?;
    let ours = time_new(
        &mut || {
            let mut c = Command::new(&tools.ours);
            c.arg("--quiet").arg(&f.cow).arg(&out);
            c
        },
        &f.expected,
        "our uml_moo",
    )?;
    clear()?;
    let mut rows = vec![Row {
        fixture: f.name.clone(),
        mode: "new file",
        reference,
        c,
        ours,
    }];
    if f.in_place {
        rows.push(measure_in_place(tools, f, backing_data, reps)?);
    }
    Ok(rows)
}

/// `-d` merges, each on the backing file restored to its original bytes and mtime.
fn measure_in_place(tools: &Tools, f: &Fixture, backing_data: &[u8], reps: usize) -> Result<Row> {
    let mtime = fs::metadata(&f.backing)?.modified()?;
    let restore = || restore_runs(&f.backing, backing_data, &f.runs, mtime);
    // The reference is a process too, so that both sides pay for starting one.
    let work = f.cow.parent().context("fixture directory")?;
    let (runs_txt, runs_bin) = (work.join("runs.txt"), work.join("runs.bin"));
    let mut listing = String::new();
    let mut data = Vec::new();
    for &(off, len) in &f.runs {
        listing.push_str(&format!("{off} {len}\n"));
        data.extend_from_slice(&f.expected[index(off)..index(off + len)]);
    }
    fs::write(&runs_txt, listing)?;
    write_synced(&runs_bin, &data, &[(0, data.len() as u64)])?;
    drop(data);
    let me = std::env::current_exe()?;
    let reference = median_time(reps, restore, || {
        run_and_sync(
            Command::new(&me)
                .arg("bench-write-runs")
                .args([&f.backing, &runs_txt, &runs_bin]),
            &f.backing,
        )
    })?;
    verify(&f.backing, &f.expected, "dirty-run writer")?;
    let c = median_time(reps, restore, || {
        run_and_sync(Command::new(&tools.c_moo).arg("-d").arg(&f.cow), &f.backing)
    })?;
    verify(&f.backing, &f.expected, "C uml_moo -d")?;
    let ours = median_time(reps, restore, || {
        run_and_sync(
            Command::new(&tools.ours)
                .args(["-d", "--quiet"])
                .arg(&f.cow),
            &f.backing,
        )
    })?;
    verify(&f.backing, &f.expected, "our uml_moo -d")?;
    restore()?;
    Ok(Row {
        fixture: f.name.clone(),
        mode: "-d",
        reference,
        c,
        ours,
    })
}

/// Puts the original bytes back where a merge wrote, synced, with the original mtime.
fn restore_runs(
    path: &Path,
    original: &[u8],
    runs: &[(u64, u64)],
    mtime: SystemTime,
) -> Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    for &(off, len) in runs {
        file.write_all_at(&original[index(off)..index(off + len)], off)?;
    }
    file.sync_all()?;
    file.set_modified(mtime)?;
    Ok(())
}

fn print_table(size_mib: u64, reps: usize, rows: &[Row]) {
    println!(
        "uml_moo, {size_mib} MiB image, median of {reps}; times include syncing the written file"
    );
    println!(
        "(reference: `cp --sparse=always` for new-file merges; for -d a process that writes only the dirty runs, from a flat file)\n"
    );
    println!(
        "| image | mode | reference | C uml_moo | ours | C / ref | ours / ref | ours vs C | target |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let ours_ref = ratio(r.ours, r.reference);
        println!(
            "| {} | {} | {:.3} s | {:.3} s | {:.3} s | {:.1}x | {:.2}x | {:.1}x faster | {} |",
            r.fixture,
            r.mode,
            r.reference.as_secs_f64(),
            r.c.as_secs_f64(),
            r.ours.as_secs_f64(),
            ratio(r.c, r.reference),
            ours_ref,
            ratio(r.c, r.ours),
            if ours_ref <= 1.5 {
                "met (<= 1.5x)"
            } else {
                "MISSED (> 1.5x)"
            },
        );
    }
}

/// `xtask bench-write-runs FILE RUNS DATA`: the `-d` reference. Writes the bytes
/// of DATA, in order, at the (offset, length) pairs listed in RUNS, then syncs.
pub fn write_runs(args: &[String]) -> Result<()> {
    let [file, runs, data] = args else {
        bail!("usage: xtask bench-write-runs FILE RUNS DATA");
    };
    let out = OpenOptions::new().write(true).open(file)?;
    let data = fs::read(data)?;
    let mut at = 0usize;
    for line in fs::read_to_string(runs)?.lines() {
        let mut fields = line.split(' ').map(str::parse::<u64>);
        let (Some(Ok(off)), Some(Ok(len))) = (fields.next(), fields.next()) else {
            bail!("bad run line '{line}'");
        };
        let chunk = data
            .get(at..at + index(len))
            .context("DATA is shorter than RUNS")?;
        out.write_all_at(chunk, off)?;
        at += index(len);
    }
    out.sync_all()?;
    Ok(())
}

/// A size or offset of the generated images as an index into them in memory.
fn index(value: u64) -> usize {
    usize::try_from(value).expect("the bench runs on 64-bit hosts")
}
