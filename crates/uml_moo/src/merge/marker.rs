//! The restart marker of an in-place merge.
//!
//! An in-place merge changes the backing file's mtime with its first write, after
//! which the COW header no longer matches and a plain rerun would be refused. The
//! marker, written and synced before that first write, records which COW and
//! backing file (by device and inode) and which header values were being merged;
//! a rerun that finds a matching marker accepts the changed mtime and redoes the
//! merge, which is idempotent because the COW file is never modified.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

use crate::MooError;
use crate::backing::Backing;
use crate::cow_file::CowFile;

use uml_host::publish::{NewFile, Replace, directory_of};

/// Where the marker for merging `cow` in place lives: beside it.
pub fn marker_path(cow: &Path) -> PathBuf {
    let mut name = cow.file_name().map(OsString::from).unwrap_or_default();
    name.push(".uml_moo-in-progress");
    directory_of(cow).join(name)
}

/// The marker's content for this pair of files.
fn content(cow: &CowFile, backing: &Backing) -> String {
    format!(
        "{FIRST_LINE}cow {} {}\nbacking {} {}\nsize {}\nmtime {}\n",
        cow.identity.0,
        cow.identity.1,
        backing.identity.0,
        backing.identity.1,
        cow.header.size,
        cow.header.mtime,
    )
}

/// The first line of every marker; also what tells a complete marker.
const FIRST_LINE: &str =
    "uml_moo in-place merge in progress; rerun `uml_moo -d` on the COW file to finish it\n";

/// The marker's text, read without following a symlink planted at its path
/// or waiting on a FIFO. Only a marker of our own user counts: one planted by
/// another user who can write the COW's directory must not make a merge
/// accept a changed backing file.
fn read(cow: &Path) -> Option<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(marker_path(cow))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let mut text = String::new();
    // Bigger than any marker: whatever else is there is not one.
    (&mut file).take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Whether a complete marker lies beside `cow`, whatever files it names.
pub fn is_present(cow: &Path) -> bool {
    read(cow).is_some_and(|text| text.starts_with(FIRST_LINE) && text.contains("\nmtime "))
}

/// Whether an interrupted merge of exactly these files left its marker.
pub(super) fn is_pending(cow: &CowFile, backing: &Backing) -> bool {
    read(&cow.path).is_some_and(|found| found == content(cow, backing))
}

/// Writes the marker durably before the first write to the backing file.
///
/// It is written under a temporary name and renamed into place, so it is
/// either whole or absent, and a symlink planted at its path is replaced,
/// never followed.
pub(super) fn write(cow: &CowFile, backing: &Backing) -> Result<(), MooError> {
    let path = marker_path(&cow.path);
    let err = MooError::io("writing restart marker", &path);
    let new = NewFile::beside(&path, ".uml_moo-marker-", 0o644).map_err(&err)?;
    new.file()
        .write_all(content(cow, backing).as_bytes())
        .map_err(&err)?;
    new.publish(Replace::Existing)
        .map_err(|e| e.either(|| err(io::ErrorKind::AlreadyExists.into()), &err))
}

/// Removes the marker once the merge is durable.
///
/// The removal need not be synced: a marker that comes back after a crash only
/// makes a rerun redo a merge that is already complete, which is harmless.
pub(super) fn remove(cow: &CowFile) -> Result<(), MooError> {
    let path = marker_path(&cow.path);
    fs::remove_file(&path).map_err(MooError::io("removing restart marker", &path))
}
