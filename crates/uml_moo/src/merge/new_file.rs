//! `uml_moo COW NEW`: a complete image written beside NEW and renamed into place.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::MooError;
use crate::extents::{Copier, Holes};
use crate::lock::Access;
use crate::progress::Progress;

use super::{Inputs, MergeOptions, Merged, directory_of, sync_dir};

/// Writes the merged image of `cow` to `new`.
///
/// Clean stretches come from the backing file and dirty runs from the COW, each
/// copied in the kernel with holes kept. NEW appears only complete and synced;
/// an existing NEW is replaced only with `overwrite`, and never when it is the
/// COW or the backing file.
pub fn merge_to_new(
    cow: &Path,
    new: &Path,
    opts: &MergeOptions,
    overwrite: bool,
) -> Result<Merged, MooError> {
    let mut inputs = Inputs::open(cow, opts, Access::Read)?;
    let mtime_check = inputs.backing.check_mtime(&inputs.cow.header);
    inputs.override_if_forced(mtime_check, opts.force)?;
    let target = output_target(new, &inputs, overwrite)?;
    let dir = directory_of(&target);
    let tmp = tempfile::Builder::new()
        .prefix(".uml_moo-")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(MooError::io("creating a temporary file in", dir))?;
    let write_err = MooError::io("merging into", new);
    let dirty_bytes = write_image(&inputs, tmp.as_file(), opts.progress).map_err(&write_err)?;
    tmp.as_file().sync_all().map_err(&write_err)?;
    let persisted = if overwrite {
        tmp.persist(&target)
    } else {
        tmp.persist_noclobber(&target)
    };
    match persisted {
        Ok(_) => {}
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(MooError::Exists {
                path: new.to_path_buf(),
            });
        }
        Err(e) => return Err(write_err(e.error)),
    }
    sync_dir(dir)?;
    Ok(inputs.into_merged(dirty_bytes, false))
}

/// Fills `out` with the image: backing bytes between the dirty runs, COW bytes in them.
fn write_image(inputs: &Inputs, out: &File, progress: bool) -> io::Result<u64> {
    let Inputs { cow, backing, .. } = inputs;
    let size = cow.header.size;
    let mut copier = Copier::new(Progress::new(size, progress, "merging"));
    let mut cursor = 0;
    let mut dirty_bytes = 0;
    for run in cow.runs() {
        let range = cow.byte_range(run);
        let clean = range.start - cursor;
        copier.copy(&backing.file, cursor, out, cursor, clean, Holes::Skip)?;
        let dirty = range.end - range.start;
        let from = cow.layout.data_offset + range.start;
        copier.copy(&cow.file, from, out, range.start, dirty, Holes::Skip)?;
        dirty_bytes += dirty;
        cursor = range.end;
    }
    copier.copy(
        &backing.file,
        cursor,
        out,
        cursor,
        size - cursor,
        Holes::Skip,
    )?;
    // Trailing holes have no data to set the length.
    out.set_len(size)?;
    copier.finish();
    Ok(dirty_bytes)
}

/// Checks an existing NEW; returns the path to rename onto (a symlink to a
/// regular file is written through, as the C tool's `creat` does).
fn output_target(new: &Path, inputs: &Inputs, overwrite: bool) -> Result<PathBuf, MooError> {
    let Ok(link_meta) = fs::symlink_metadata(new) else {
        return Ok(new.to_path_buf());
    };
    let is_link = link_meta.file_type().is_symlink();
    let meta = match fs::metadata(new) {
        Ok(meta) => meta,
        // A dangling symlink: the link itself is replaced.
        Err(_) if is_link => return refuse_unless(overwrite, new, new.to_path_buf()),
        Err(e) => return Err(MooError::io("examining", new)(e)),
    };
    let identity = (meta.dev(), meta.ino());
    for (role, input, id) in [
        ("COW file", &inputs.cow.path, inputs.cow.identity),
        (
            "backing file",
            &inputs.backing.path,
            inputs.backing.identity,
        ),
    ] {
        if identity == id {
            return Err(MooError::SameFile {
                new: new.to_path_buf(),
                role,
                input: input.clone(),
            });
        }
    }
    if !meta.is_file() {
        return Err(MooError::NotRegular {
            path: new.to_path_buf(),
        });
    }
    let target = if is_link {
        new.canonicalize().map_err(MooError::io("resolving", new))?
    } else {
        new.to_path_buf()
    };
    refuse_unless(overwrite, new, target)
}

fn refuse_unless(overwrite: bool, new: &Path, target: PathBuf) -> Result<PathBuf, MooError> {
    if overwrite {
        Ok(target)
    } else {
        Err(MooError::Exists {
            path: new.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_images::{TestCow, write_backing};
    use std::time::{Duration, SystemTime};

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
        let merged = merge_to_new(&cow.path, &new, &MergeOptions::default(), false).unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), cow.expected);
        assert_eq!(merged.dirty_bytes, 3 * 512 + (5000 - 9 * 512));
        assert!(merged.overridden.is_empty());
    }

    #[test]
    fn an_existing_new_is_kept_without_overwrite_and_replaced_with_it() {
        let (dir, _, cow) = setup(4096, &[(1, 1)]);
        let new = dir.path().join("merged.img");
        std::fs::write(&new, b"precious").unwrap();
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default(), false).unwrap_err();
        assert!(matches!(err, MooError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&new).unwrap(), b"precious");
        merge_to_new(&cow.path, &new, &MergeOptions::default(), true).unwrap();
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
            let err = merge_to_new(&cow.path, new, &MergeOptions::default(), true).unwrap_err();
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
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default(), false).unwrap_err();
        assert!(matches!(err, MooError::MtimeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("vs"), "{err}");
        assert!(!new.exists());
        let forced = MergeOptions {
            force: true,
            ..MergeOptions::default()
        };
        let merged = merge_to_new(&cow.path, &new, &forced, false).unwrap();
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
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default(), false).unwrap_err();
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
        let err = merge_to_new(&cow.path, &new, &MergeOptions::default(), false).unwrap_err();
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
        assert!(merge_to_new(&cow.path, &new, &MergeOptions::default(), false).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
