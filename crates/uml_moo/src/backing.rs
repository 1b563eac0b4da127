//! The backing file: which one, and whether it is still the one the COW was made against.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use uml_proto::cow::CowHeader;

use crate::MooError;

/// An opened backing file and what the checks compare.
#[derive(Debug)]
pub struct Backing {
    /// The path it was opened by.
    pub path: PathBuf,
    /// The open file.
    pub file: File,
    /// Size in bytes (block devices measured by seeking to their end).
    pub size: u64,
    /// Modification time in seconds.
    pub mtime: i64,
    /// Device and inode.
    pub identity: (u64, u64),
}

/// The backing path to use: `-b` as given (the C tool does not absolutize it
/// either), otherwise the header's.
pub fn backing_path(header: &CowHeader, given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| header.backing_path().to_path_buf(), Path::to_path_buf)
}

impl Backing {
    /// Opens the backing file, for writing when merging in place.
    pub fn open(path: &Path, writable: bool) -> Result<Self, MooError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(MooError::io("opening backing file", path))?;
        let meta = file
            .metadata()
            .map_err(MooError::io("reading backing file", path))?;
        if meta.is_dir() {
            return Err(MooError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(MooError::io("measuring backing file", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            mtime: meta.mtime(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The kernel's check: the size must match exactly.
    pub fn check_size(&self, header: &CowHeader) -> Result<(), MooError> {
        if self.size == header.size {
            return Ok(());
        }
        Err(MooError::SizeMismatch {
            path: self.path.clone(),
            header: header.size,
            actual: self.size,
        })
    }

    /// The kernel's check: the mtime must match, compared as 64-bit seconds.
    pub fn check_mtime(&self, header: &CowHeader) -> Result<(), MooError> {
        if self.mtime == i64::from(header.mtime) {
            return Ok(());
        }
        Err(MooError::MtimeMismatch {
            path: self.path.clone(),
            header: header.mtime,
            actual: self.mtime,
        })
    }
}
