//! `uml_moo -d`: writing the dirty sectors into the backing file itself.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::MooError;
use crate::extents::{Copier, Holes};
use crate::lock::Access;
use crate::progress::Progress;

use super::{Inputs, MergeOptions, Merged, marker};

/// Merges `cow` into its backing file; costs time in proportion to the dirty data.
///
/// Every check happens before the first write. The backing file is locked
/// against running UMLs (which hold read locks on it) for the whole merge. If
/// the merge is killed, running it again finishes it (see the marker module).
pub fn merge_in_place(cow: &Path, opts: &MergeOptions) -> Result<Merged, MooError> {
    let mut inputs = Inputs::open(cow, opts, Access::Write)?;
    let (_, dirty_bytes) = inputs.cow.dirty_totals();
    let resumed = match inputs.backing.check_mtime(&inputs.cow.header) {
        Ok(()) => false,
        Err(_) if marker::is_pending(&inputs.cow, &inputs.backing) => true,
        // Killed after the final sync: the merge would write nothing, so
        // finishing it is safe whatever else changed the mtime.
        Err(_) if holds_every_change(&inputs)? => {
            let mut merged = inputs.into_merged(dirty_bytes, false);
            merged.already_merged = true;
            return Ok(merged);
        }
        Err(e) => {
            inputs.override_if_forced(Err(e), opts.force)?;
            false
        }
    };
    let Inputs { cow, backing, .. } = &inputs;
    marker::write(cow, backing)?;
    let progress = Progress::new(dirty_bytes, opts.progress, "merging in place");
    let mut copier = Copier::new(progress);
    let write_err = MooError::io("merging into backing file", &backing.path);
    for run in cow.runs() {
        let range = cow.byte_range(run);
        copier
            .copy(
                &cow.file,
                cow.layout.data_offset + range.start,
                &backing.file,
                range.start,
                range.end - range.start,
                Holes::Zero,
            )
            .map_err(&write_err)?;
    }
    backing.file.sync_all().map_err(&write_err)?;
    copier.finish();
    marker::remove(cow)?;
    Ok(inputs.into_merged(dirty_bytes, resumed))
}

/// Whether the backing file already has the COW's data in every dirty sector.
fn holds_every_change(inputs: &Inputs) -> Result<bool, MooError> {
    const BUF: usize = 1 << 20;
    let Inputs { cow, backing, .. } = inputs;
    let (mut ours, mut theirs) = (vec![0u8; BUF], vec![0u8; BUF]);
    for run in cow.runs() {
        let range = cow.byte_range(run);
        let mut pos = range.start;
        while pos < range.end {
            let n = usize::try_from(range.end - pos).map_or(BUF, |left| left.min(BUF));
            cow.file
                .read_exact_at(&mut ours[..n], cow.layout.data_offset + pos)
                .map_err(MooError::io("reading COW file", &cow.path))?;
            // Short means the backing file shrank: not merged.
            if backing.file.read_exact_at(&mut theirs[..n], pos).is_err()
                || ours[..n] != theirs[..n]
            {
                return Ok(false);
            }
            pos += n as u64;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::marker_path;
    use std::fs::File;
    use std::time::{Duration, SystemTime};
    use uml_testbed::cow::{TestCow, write_backing};

    #[test]
    fn dirty_sectors_land_in_the_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 5000);
        let cow = TestCow::create(dir.path(), &backing, &[(2, 7), (3, 8), (9, 9)]);
        let merged = merge_in_place(&cow.path, &MergeOptions::default()).unwrap();
        assert!(!merged.resumed);
        assert_eq!(std::fs::read(&backing).unwrap(), cow.expected);
        assert!(!marker_path(&cow.path).exists());
    }

    #[test]
    fn a_hole_in_a_dirty_run_zeroes_the_backing_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 64 << 10);
        let mut cow = TestCow::create(dir.path(), &backing, &[(8, 1), (9, 1), (10, 1)]);
        // A discard leaves a dirty bit over a hole: the sectors read as zeros.
        let file = File::options().write(true).open(&cow.path).unwrap();
        file.set_len(cow.data_offset + 8 * 512).unwrap();
        file.set_len(cow.data_offset + (64 << 10)).unwrap();
        cow.expected[8 * 512..11 * 512].fill(0);
        merge_in_place(&cow.path, &MergeOptions::default()).unwrap();
        assert_eq!(std::fs::read(&backing).unwrap(), cow.expected);
    }

    #[test]
    fn an_interrupted_merge_is_finished_by_a_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 8192);
        let cow = TestCow::create(dir.path(), &backing, &[(1, 0x11), (15, 0x22)]);
        // As if killed after the marker and part of the writes: the mtime moved.
        {
            let inputs = Inputs::open(&cow.path, &MergeOptions::default(), Access::Write).unwrap();
            marker::write(&inputs.cow, &inputs.backing).unwrap();
        }
        let file = File::options().write(true).open(&backing).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[0x11; 512], 512).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let merged = merge_in_place(&cow.path, &MergeOptions::default()).unwrap();
        assert!(merged.resumed);
        assert!(merged.overridden.is_empty());
        assert_eq!(std::fs::read(&backing).unwrap(), cow.expected);
        assert!(!marker_path(&cow.path).exists());
    }

    #[test]
    fn a_rerun_after_a_finished_merge_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 8192);
        let cow = TestCow::create(dir.path(), &backing, &[(1, 0x11), (15, 0x22)]);
        merge_in_place(&cow.path, &MergeOptions::default()).unwrap();
        // As if the merge had taken longer than a second.
        let mtime = SystemTime::now() + Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&backing)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let merged = merge_in_place(&cow.path, &MergeOptions::default()).unwrap();
        assert!(merged.already_merged);
        assert_eq!(std::fs::read(&backing).unwrap(), cow.expected);
        assert_eq!(
            std::fs::metadata(&backing).unwrap().modified().unwrap(),
            mtime
        );
    }

    #[test]
    fn a_changed_backing_file_without_a_marker_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 8192);
        let cow = TestCow::create(dir.path(), &backing, &[(1, 0x11)]);
        File::options()
            .write(true)
            .open(&backing)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let before = std::fs::read(&backing).unwrap();
        let err = merge_in_place(&cow.path, &MergeOptions::default()).unwrap_err();
        assert!(matches!(err, MooError::MtimeMismatch { .. }), "{err}");
        assert_eq!(std::fs::read(&backing).unwrap(), before);
        assert!(!marker_path(&cow.path).exists());
    }
}
