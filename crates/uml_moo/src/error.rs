//! Everything that can stop a merge, each naming the file concerned.

use std::io;
use std::path::PathBuf;

use uml_proto::cow::{CowHeaderError, LayoutError};

/// Why a merge or an inspection did not happen. In every case the files that
/// existed before are left as they were, except for an interrupted `-d` merge,
/// which a rerun completes.
#[derive(Debug, thiserror::Error)]
pub enum MooError {
    /// A system call on a named file failed.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done ("opening COW file", "writing", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The COW header is missing, damaged or of an unknown version.
    #[error("reading COW header of '{path}' failed: {source}")]
    Header {
        /// The COW file.
        path: PathBuf,
        /// What the decoder refused.
        source: CowHeaderError,
    },
    /// The header's numbers give no usable layout.
    #[error("COW file '{path}': {source}")]
    Layout {
        /// The COW file.
        path: PathBuf,
        /// The arithmetic failure.
        source: LayoutError,
    },
    /// The header names a dirty-map format other than the bitmap.
    #[error("COW file '{path}': unknown cow_format {format} (only 0, the bitmap, exists)")]
    UnknownFormat {
        /// The COW file.
        path: PathBuf,
        /// The format number found.
        format: u32,
    },
    /// The bitmap the header describes does not fit in the file.
    #[error(
        "COW file '{path}' is truncated: its bitmap ends at byte {end} but the file has {len} bytes"
    )]
    BitmapPastEnd {
        /// The COW file.
        path: PathBuf,
        /// Where the bitmap ends.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A sector marked dirty has no data in the file.
    #[error(
        "COW file '{path}' is truncated: dirty data runs to byte {end} but the file has {len} bytes"
    )]
    DataPastEnd {
        /// The COW file.
        path: PathBuf,
        /// Where the last dirty sector's data ends.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A file that must be a regular file (or a block device) is not.
    #[error("'{path}' is not a regular file")]
    NotRegular {
        /// The file concerned.
        path: PathBuf,
    },
    /// The backing file's size differs from the one recorded in the header.
    #[error(
        "Size mismatch ({header} vs {actual}) of COW header vs backing file \"{path}\": \
         the header records {header} bytes, the file has {actual} (--force merges anyway)"
    )]
    SizeMismatch {
        /// The backing file.
        path: PathBuf,
        /// Size in the header.
        header: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The backing file's mtime differs from the one recorded in the header.
    #[error(
        "mtime mismatch ({header} vs {actual}) of COW header vs backing file \"{path}\": \
         the backing file changed after the COW was made (--force merges anyway)"
    )]
    MtimeMismatch {
        /// The backing file.
        path: PathBuf,
        /// Mtime in the header.
        header: u32,
        /// Mtime of the file.
        actual: i64,
    },
    /// The output exists and `-f` was not given.
    #[error("'{path}' already exists (-f replaces it)")]
    Exists {
        /// The output path.
        path: PathBuf,
    },
    /// The output is one of the inputs: writing it would destroy the data being read.
    #[error("'{new}' is the {role} '{input}' itself; refusing to overwrite it")]
    SameFile {
        /// The output path.
        new: PathBuf,
        /// "COW file" or "backing file".
        role: &'static str,
        /// The input's path.
        input: PathBuf,
    },
    /// NEW is a block device that is mounted or held open exclusively.
    #[error(
        "device '{path}' is in use (mounted, or held open exclusively); refusing to write to it"
    )]
    DeviceBusy {
        /// The device.
        path: PathBuf,
    },
    /// NEW is a block device smaller than the image.
    #[error("device '{path}' holds {capacity} bytes; the image needs {size}")]
    DeviceTooSmall {
        /// The device.
        path: PathBuf,
        /// Its capacity.
        capacity: u64,
        /// The image's size.
        size: u64,
    },
    /// The COW file was named as its own backing file (`-b COW`).
    #[error(
        "'{path}' is given as its own backing file; a COW file records changes to another image (see --info for the one its header names)"
    )]
    OwnBacking {
        /// The COW path.
        path: PathBuf,
    },
    /// Another process holds a conflicting lock: a running UML uses the file.
    #[error("'{path}' is in use{holder} (a running UML locks its disk files); stop it first")]
    Locked {
        /// The locked file.
        path: PathBuf,
        /// " by process N" when the holder is known.
        holder: String,
    },
}

impl MooError {
    /// A closure that wraps an I/O error with what was being done to which file.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl Fn(io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path: path.clone(),
            source,
        }
    }
}
