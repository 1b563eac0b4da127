//! The restart marker of an in-place merge.
//!
//! An in-place merge changes the backing file's mtime with its first write, after
//! which the COW header no longer matches and a plain rerun would be refused. The
//! marker, written and synced before that first write, records which COW and
//! backing file (by device and inode) and which header values were being merged;
//! a rerun that finds a matching marker accepts the changed mtime and redoes the
//! merge, which is idempotent because the COW file is never modified.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::MooError;
use crate::backing::Backing;
use crate::cow_file::CowFile;

use uml_host::publish::directory_of;

use super::sync_dir;

/// Where the marker for merging `cow` in place lives: beside it.
pub fn marker_path(cow: &Path) -> PathBuf {
    let mut name = cow.file_name().map(OsString::from).unwrap_or_default();
    name.push(".uml_moo-in-progress");
    directory_of(cow).join(name)
}

/// The marker's content for this pair of files.
fn content(cow: &CowFile, backing: &Backing) -> String {
    format!(
        "uml_moo in-place merge in progress; rerun `uml_moo -d` on the COW file to finish it\n\
         cow {} {}\nbacking {} {}\nsize {}\nmtime {}\n",
        cow.identity.0,
        cow.identity.1,
        backing.identity.0,
        backing.identity.1,
        cow.header.size,
        cow.header.mtime,
    )
}

/// Whether an interrupted merge of exactly these files left its marker.
pub(super) fn is_pending(cow: &CowFile, backing: &Backing) -> bool {
    fs::read_to_string(marker_path(&cow.path)).is_ok_and(|found| found == content(cow, backing))
}

/// Writes the marker durably before the first write to the backing file.
///
/// A plain write is enough: if it is cut short the content does not match and
/// no resume is offered, but then no backing write has happened either.
pub(super) fn write(cow: &CowFile, backing: &Backing) -> Result<(), MooError> {
    let path = marker_path(&cow.path);
    let err = MooError::io("writing restart marker", &path);
    let mut file = File::create(&path).map_err(&err)?;
    file.write_all(content(cow, backing).as_bytes())
        .map_err(&err)?;
    file.sync_all().map_err(&err)?;
    sync_dir(directory_of(&path))
}

/// Removes the marker once the merge is durable.
///
/// The removal need not be synced: a marker that comes back after a crash only
/// makes a rerun redo a merge that is already complete, which is harmless.
pub(super) fn remove(cow: &CowFile) -> Result<(), MooError> {
    let path = marker_path(&cow.path);
    fs::remove_file(&path).map_err(MooError::io("removing restart marker", &path))
}
