//! `uml_moo COW NEW`: a complete image written beside NEW and renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use uml_host::publish::{NewFile, Replace, TargetError, directory_of, target_for};

use crate::MooError;
use crate::extents::{Copier, Holes, read_or_zeros, write_skipping_zeros};
use crate::lock::Access;
use crate::progress::Progress;

use super::{Inputs, MergeOptions, Merged, Output};

/// Writes the merged image of `cow` to `new`.
///
/// Clean stretches come from the backing file and dirty runs from the COW, each
/// copied in the kernel with holes kept. A new or existing regular NEW (or the
/// regular file a symlink NEW names) appears only complete and synced, renamed
/// over what was there, as the C tool overwrites it; a block device NEW is
/// written through, as the C tool does, once it is known to be big enough and
/// in nobody's exclusive use. NEW is never the COW or the backing file.
pub fn merge_to_new(cow: &Path, new: &Path, opts: &MergeOptions) -> Result<Merged, MooError> {
    let mut inputs = Inputs::open(cow, opts, Access::Read)?;
    let mtime_check = inputs.backing.check_mtime(&inputs.cow.header);
    inputs.override_if_forced(mtime_check, opts.force)?;
    let write_err = MooError::io("merging into", new);
    let (output, dirty_bytes) = match output_target(new, &inputs)? {
        Target::Device => {
            let device = open_device(new, inputs.cow.header.size)?;
            let dirty_bytes = write_image(&inputs, &device, opts.progress, Fresh::No)
                .and_then(|dirty| device.sync_all().map(|()| dirty))
                .map_err(&write_err)?;
            (Output::Device, dirty_bytes)
        }
        Target::File { path, existed } => {
            let dir = directory_of(&path);
            let out = NewFile::beside(&path, ".uml_moo-", 0o644)
                .map_err(MooError::io("creating a temporary file in", dir))?;
            let dirty_bytes =
                write_image(&inputs, out.file(), opts.progress, Fresh::Yes).map_err(&write_err)?;
            let exists = || MooError::Exists {
                path: new.to_path_buf(),
            };
            out.publish(Replace::existing_if(existed))
                .map_err(|e| e.either(exists, &write_err))?;
            let output = if existed {
                Output::Replaced
            } else {
                Output::Created
            };
            (output, dirty_bytes)
        }
    };
    let mut merged = inputs.into_merged(dirty_bytes, false);
    merged.output = output;
    Ok(merged)
}

/// Opens a block device to write an image of `size` bytes through it:
/// exclusively (the kernel refuses a mounted device or one another program holds
/// with `O_EXCL`), and only when the image fits.
fn open_device(path: &Path, size: u64) -> Result<File, MooError> {
    let mut device = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(nix::libc::EBUSY) => MooError::DeviceBusy {
                path: path.to_path_buf(),
            },
            _ => MooError::io("opening device", path)(source),
        })?;
    // Judged again by what was opened: the path may have been swapped for a
    // regular file since it was checked.
    let opened = device
        .metadata()
        .map_err(MooError::io("examining device", path))?;
    if !opened.file_type().is_block_device() {
        return Err(MooError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let capacity = device
        .seek(SeekFrom::End(0))
        .map_err(MooError::io("measuring device", path))?;
    if capacity < size {
        return Err(MooError::DeviceTooSmall {
            path: path.to_path_buf(),
            capacity,
            size,
        });
    }
    Ok(device)
}

/// Dirty runs whose span fits in this many bytes are merged in memory as one window.
const WINDOW: u64 = 1 << 20;
/// Only runs up to this long join a window; longer ones are copied in the kernel.
const SMALL_RUN: u64 = 64 << 10;
/// A window pays off from this many runs: fewer are cheaper copied one by one.
const WINDOW_MIN_RUNS: usize = 8;

/// Whether the output reads as zeros wherever nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// A new file: holes may stay holes and zeros need not be written.
    Yes,
    /// A device with old contents: every byte of the image is written.
    No,
}

/// Fills `out` with the image: backing bytes between the dirty runs, COW bytes in them.
/// Returns the number of image bytes taken from the COW.
fn write_image(inputs: &Inputs, out: &File, progress: bool, fresh: Fresh) -> io::Result<u64> {
    let size = inputs.cow.header.size;
    let mut writer = ImageWriter {
        inputs,
        out,
        holes: match fresh {
            Fresh::Yes => Holes::Skip,
            Fresh::No => Holes::Zero,
        },
        copier: Copier::new(Progress::new(size, progress, "merging")),
        cursor: 0,
        image: Vec::new(),
    };
    // Many short runs close together (a guest's scattered 4 KiB page writes)
    // cost two system calls each in the kernel path; a window reads the
    // stretch from both files once and writes it once.
    let mut window: Vec<Range<u64>> = Vec::new();
    let mut dirty_bytes = 0;
    for run in inputs.cow.runs() {
        let range = inputs.cow.byte_range(run);
        dirty_bytes += range.end - range.start;
        let small = range.end - range.start <= SMALL_RUN;
        if window
            .first()
            .is_some_and(|first| !small || range.end - first.start > WINDOW)
        {
            writer.flush(&mut window)?;
        }
        if small {
            window.push(range);
        } else {
            writer.run(range)?;
        }
    }
    writer.flush(&mut window)?;
    writer.clean_until(size)?;
    if fresh == Fresh::Yes {
        // Trailing holes have no data to set the length.
        out.set_len(size)?;
    }
    writer.copier.finish();
    Ok(dirty_bytes)
}

/// The state of writing an image front to back.
struct ImageWriter<'a> {
    inputs: &'a Inputs,
    out: &'a File,
    /// What to do where the source has a hole.
    holes: Holes,
    copier: Copier,
    /// Everything before this offset is written.
    cursor: u64,
    image: Vec<u8>,
}

impl ImageWriter<'_> {
    /// Copies the backing file's bytes from the cursor to `until`.
    fn clean_until(&mut self, until: u64) -> io::Result<()> {
        let backing = &self.inputs.backing.file;
        let at = self.cursor;
        self.copier
            .copy(backing, at, self.out, at, until - at, self.holes)?;
        self.cursor = until;
        Ok(())
    }

    /// Writes one dirty run (and the clean stretch before it) in the kernel.
    fn run(&mut self, range: Range<u64>) -> io::Result<()> {
        self.clean_until(range.start)?;
        let cow = &self.inputs.cow;
        let from = cow.layout.data_offset + range.start;
        let len = range.end - range.start;
        self.copier
            .copy(&cow.file, from, self.out, range.start, len, self.holes)?;
        self.cursor = range.end;
        Ok(())
    }

    /// Writes the runs gathered for a window, and empties the list.
    fn flush(&mut self, runs: &mut Vec<Range<u64>>) -> io::Result<()> {
        if runs.len() < WINDOW_MIN_RUNS {
            for range in runs.drain(..) {
                self.run(range)?;
            }
            return Ok(());
        }
        let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
            return Ok(());
        };
        let span = first.start..last.end;
        self.clean_until(span.start)?;
        let len = usize::try_from(span.end - span.start).map_err(io::Error::other)?;
        let cow = &self.inputs.cow;
        self.image.resize(len, 0);
        read_or_zeros(&self.inputs.backing.file, &mut self.image, span.start)?;
        // Run by run: reading the COW's holes between them would make the
        // kernel zero-fill page cache for nothing.
        for range in runs.drain(..) {
            let offset = |at: u64| usize::try_from(at - span.start).map_err(io::Error::other);
            let part = offset(range.start)?..offset(range.end)?;
            let from = cow.layout.data_offset + range.start;
            read_or_zeros(&cow.file, &mut self.image[part], from)?;
        }
        if self.holes == Holes::Skip {
            write_skipping_zeros(self.out, &self.image, span.start)?;
        } else {
            self.out.write_all_at(&self.image, span.start)?;
        }
        self.copier.advance(len as u64);
        self.cursor = span.end;
        Ok(())
    }
}

/// Where the merged image goes.
enum Target {
    /// A regular file at this path (NEW, or the file a symlink NEW names),
    /// replacing the one there if it `existed`.
    File {
        /// The rename's target.
        path: PathBuf,
        /// Whether a file is replaced.
        existed: bool,
    },
    /// NEW is a block device, written through.
    Device,
}

/// Checks an existing NEW: never an input, a regular file (replaced) or a
/// block device (written through), nothing else.
fn output_target(new: &Path, inputs: &Inputs) -> Result<Target, MooError> {
    let roles = [
        ("COW file", &inputs.cow.path, inputs.cow.identity),
        (
            "backing file",
            &inputs.backing.path,
            inputs.backing.identity,
        ),
    ];
    let identities = roles.map(|(_, _, id)| id);
    let existed = std::fs::symlink_metadata(new).is_ok();
    target_for(new, true, &identities)
        .map(|path| Target::File { path, existed })
        .or_else(|e| match e {
            TargetError::SameAs(index) => {
                let (role, input, _) = roles[index.min(roles.len() - 1)];
                Err(MooError::SameFile {
                    new: new.to_path_buf(),
                    role,
                    input: input.clone(),
                })
            }
            TargetError::NotRegular
                if std::fs::metadata(new).is_ok_and(|m| m.file_type().is_block_device()) =>
            {
                Ok(Target::Device)
            }
            TargetError::NotRegular | TargetError::Exists => Err(MooError::NotRegular {
                path: new.to_path_buf(),
            }),
            TargetError::Io(e) => Err(MooError::io("examining", new)(e)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};
    use uml_testbed::cow::{TestCow, write_backing};

    fn setup(len: usize, dirty: &[(u64, u8)]) -> (tempfile::TempDir, PathBuf, TestCow) {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), len);
        let cow = TestCow::create(dir.path(), &backing, dirty);
        (dir, backing, cow)
    }

    #[test]
    fn dirty_sectors_replace_backing_sectors_and_the_partial_tail_is_kept() {
        let (dir, _, cow) = setup(5000, &[(0, 0xaa), (3, 0xbb), (4, 0xcc), (9, 0xdd)]);
        let new = dir.path().join("merged.img");
        let merged = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), cow.expected);
        assert_eq!(merged.dirty_bytes, 3 * 512 + (5000 - 9 * 512));
        assert!(merged.overridden.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Windows, single runs and long runs all give the expected image.
        #[test]
        fn any_dirty_pattern_merges_exactly(
            size in 1usize..(3 << 20),
            sectors in proptest::collection::vec(0u64..6144, 0..400),
            long_run in proptest::option::of(0u64..6000),
        ) {
            let max = (size as u64).div_ceil(512);
            let mut dirty: Vec<(u64, u8)> = sectors
                .into_iter()
                .filter(|&s| s < max)
                .map(|s| (s, (s % 255) as u8 + 1))
                .collect();
            if let Some(start) = long_run {
                dirty.extend((start..(start + 300).min(max)).map(|s| (s, 0xee)));
            }
            dirty.sort_unstable();
            dirty.dedup_by_key(|d| d.0);
            let (dir, _, cow) = setup(size, &dirty);
            let new = dir.path().join("merged.img");
            merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap();
            proptest::prop_assert!(std::fs::read(&new).unwrap() == cow.expected);
        }
    }

    #[test]
    fn an_existing_new_is_replaced_whole_and_said_so() {
        let (dir, _, cow) = setup(4096, &[(1, 1)]);
        let new = dir.path().join("merged.img");
        let merged = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap();
        assert_eq!(merged.output, Output::Created);
        std::fs::write(&new, vec![9u8; 100_000]).unwrap();
        let merged = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap();
        assert_eq!(merged.output, Output::Replaced);
        assert_eq!(std::fs::read(&new).unwrap(), cow.expected);
    }

    #[test]
    fn new_may_not_be_an_input_under_any_name() {
        let (dir, backing, cow) = setup(4096, &[(1, 1)]);
        let link = dir.path().join("link.img");
        std::fs::hard_link(&backing, &link).unwrap();
        let sym = dir.path().join("sym.img");
        std::os::unix::fs::symlink(&cow.path, &sym).unwrap();
        let before = std::fs::read(&backing).unwrap();
        for (new, role) in [(&link, "backing file"), (&sym, "COW file")] {
            let err = merge_to_new(&cow.path, new, &MergeOptions::default()).unwrap_err();
            assert!(
                matches!(&err, MooError::SameFile { role: r, .. } if *r == role),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(&backing).unwrap(), before);
        assert!(crate::cow_file::CowFile::open(&cow.path).is_ok());
    }

    #[test]
    fn a_changed_backing_file_is_refused_unless_forced() {
        let (dir, backing, cow) = setup(4096, &[(1, 1)]);
        let later = SystemTime::now() + Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&backing)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let new = dir.path().join("merged.img");
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap_err();
        assert!(matches!(err, MooError::MtimeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("vs"), "{err}");
        assert!(!new.exists());
        let forced = MergeOptions {
            force: true,
            ..MergeOptions::default()
        };
        let merged = merge_to_new(&cow.path, &new, &forced).unwrap();
        assert_eq!(merged.overridden.len(), 1);
        assert_eq!(std::fs::read(&new).unwrap(), cow.expected);
    }

    #[test]
    fn a_backing_file_of_another_size_is_refused() {
        let (dir, backing, cow) = setup(4096, &[]);
        let mtime = std::fs::metadata(&backing).unwrap().modified().unwrap();
        let file = File::options().write(true).open(&backing).unwrap();
        file.set_len(8192).unwrap();
        file.set_modified(mtime).unwrap();
        let new = dir.path().join("merged.img");
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                MooError::SizeMismatch {
                    header: 4096,
                    actual: 8192,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!new.exists());
    }

    #[test]
    fn a_missing_backing_file_is_named() {
        let (dir, backing, cow) = setup(4096, &[]);
        std::fs::remove_file(&backing).unwrap();
        let new = dir.path().join("merged.img");
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(&backing.display().to_string()),
            "{err}"
        );
        assert!(!new.exists());
    }

    #[test]
    fn no_temporary_file_survives_a_failure() {
        let (dir, _, cow) = setup(4096, &[(1, 1)]);
        // The COW's data is cut short after the checks: the copy fails midway.
        let new = dir.path().join("merged.img");
        let inputs = Inputs::open(&cow.path, &MergeOptions::default(), Access::Read).unwrap();
        inputs.cow.file.metadata().unwrap();
        File::options()
            .write(true)
            .open(&cow.path)
            .unwrap()
            .set_len(cow.data_offset)
            .unwrap();
        drop(inputs);
        assert!(merge_to_new(&cow.path, &new, &MergeOptions::default()).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
