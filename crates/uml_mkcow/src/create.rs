//! Writing a new COW file without ever exposing a partial one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use uml_host::file_lock::{self, Access, LockError};
use uml_host::publish::{NewFile, Replace, TargetError, target_for};
use uml_proto::cow::{CowHeader, CowHeaderError, CowLayout, LayoutError};

use crate::backing::BackingFile;

/// Why a COW file was not created. Nothing is left behind in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum MkcowError {
    /// The backing file cannot be resolved, opened or measured.
    #[error("backing file '{path}': {source}")]
    Backing {
        /// The backing path as given.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// The backing mtime does not fit the header's 32-bit field.
    #[error(
        "backing file '{path}' has mtime {mtime}, which a COW header cannot store (32 bits); the kernel would refuse it"
    )]
    MtimeOutOfRange {
        /// The backing path.
        path: PathBuf,
        /// Its mtime.
        mtime: i64,
    },
    /// The header cannot be encoded (a backing path over 4095 bytes, say).
    #[error("backing file '{path}': {source}")]
    Header {
        /// The backing path.
        path: PathBuf,
        /// What the encoder refused.
        source: CowHeaderError,
    },
    /// The image is too large for 64-bit offsets.
    #[error("backing file '{path}': {source}")]
    Layout {
        /// The backing path.
        path: PathBuf,
        /// The overflow.
        source: LayoutError,
    },
    /// The COW path exists and `-f` was not given.
    #[error("open COW file '{path}': File exists (use -f to replace it)")]
    Exists {
        /// The COW path.
        path: PathBuf,
    },
    /// The COW path names the backing file: replacing it would destroy the image.
    #[error("COW file '{cow}' is the backing file '{backing}' itself; refusing to replace it")]
    SameFile {
        /// The COW path.
        cow: PathBuf,
        /// The backing path.
        backing: PathBuf,
    },
    /// The COW path exists and is a directory or a device.
    #[error("COW file '{path}' exists and is not a regular file")]
    NotRegular {
        /// The COW path.
        path: PathBuf,
    },
    /// The COW to be replaced is a running UML's disk: it would go on writing
    /// to the replaced file and its data would be lost.
    #[error(
        "COW file '{path}' is in use{holder} (a running UML locks its disk files); stop it first"
    )]
    Locked {
        /// The COW path.
        path: PathBuf,
        /// ` by process N` when the kernel names the holder.
        holder: String,
    },
    /// Writing the new file failed.
    #[error("writing COW file '{path}': {source}")]
    Write {
        /// The COW path.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
}

/// Creates `cow` as a V3 COW file over `backing`; returns the header written.
///
/// The file is built under a temporary name in the same directory, synced and
/// renamed into place: without `force` the rename refuses to replace anything
/// (even a file that appeared meanwhile); with `force` it replaces an existing
/// COW completely, so no stale bytes survive past the new end.
pub fn create_cow(cow: &Path, backing: &Path, force: bool) -> Result<CowHeader, MkcowError> {
    let info = BackingFile::inspect(backing).map_err(|source| MkcowError::Backing {
        path: backing.to_path_buf(),
        source,
    })?;
    let mtime = u32::try_from(info.mtime).map_err(|_| MkcowError::MtimeOutOfRange {
        path: backing.to_path_buf(),
        mtime: info.mtime,
    })?;
    let header = CowHeader::new_v3(&info.path, mtime, info.size);
    let bytes = header.to_bytes().map_err(|source| MkcowError::Header {
        path: backing.to_path_buf(),
        source,
    })?;
    let len = CowLayout::of(&header)
        .map_err(|source| MkcowError::Layout {
            path: backing.to_path_buf(),
            source,
        })?
        .created_file_len(info.size)
        .ok_or(MkcowError::Layout {
            path: backing.to_path_buf(),
            source: LayoutError::Overflow,
        })?;

    let target = existing_target(cow, &info, force)?;
    // Held (locked against UMLs) until the replacement is in place.
    let _replaced = lock_replaced(&target, cow)?;
    let write_err = |source| MkcowError::Write {
        path: cow.to_path_buf(),
        source,
    };
    let new = NewFile::beside(&target, ".uml_mkcow-", 0o644).map_err(write_err)?;
    (|| -> io::Result<()> {
        use std::io::Write;
        let mut file: &File = new.file();
        file.write_all(&bytes)?;
        // set_len leaves the bitmap and data area as a hole: zeros, no blocks.
        file.set_len(len)
    })()
    .map_err(write_err)?;
    let exists = || MkcowError::Exists {
        path: cow.to_path_buf(),
    };
    new.publish(Replace::existing_if(force))
        .map_err(|e| e.either(exists, write_err))?;
    Ok(header)
}

/// Locks the file about to be replaced, if any, against writers; refuses one a
/// running UML writes to (it holds a write lock on its COW files). A read lock
/// is what a read-only descriptor can take, and all this needs: a UML that only
/// reads the file loses nothing when it is replaced.
fn lock_replaced(target: &Path, cow: &Path) -> Result<Option<File>, MkcowError> {
    let Some(file) = file_lock::open_regular(target) else {
        // Nothing there (or a dangling link): nothing anyone could be using.
        return Ok(None);
    };
    match file_lock::lock(&file, Access::Read) {
        Ok(()) => Ok(Some(file)),
        Err(LockError::Held { holder }) => Err(MkcowError::Locked {
            path: cow.to_path_buf(),
            holder: file_lock::by_holder(holder),
        }),
        Err(LockError::Io(source)) => Err(MkcowError::Write {
            path: cow.to_path_buf(),
            source,
        }),
    }
}

/// Checks an existing COW path; returns the path to write (a symlink is followed,
/// as the C tool writes through it).
fn existing_target(cow: &Path, backing: &BackingFile, force: bool) -> Result<PathBuf, MkcowError> {
    target_for(cow, force, &[backing.identity]).map_err(|e| match e {
        TargetError::Exists => MkcowError::Exists {
            path: cow.to_path_buf(),
        },
        TargetError::SameAs(_) => MkcowError::SameFile {
            cow: cow.to_path_buf(),
            backing: backing.path.clone(),
        },
        TargetError::NotRegular => MkcowError::NotRegular {
            path: cow.to_path_buf(),
        },
        TargetError::Io(source) => MkcowError::Write {
            path: cow.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use uml_proto::cow::CowVersion;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("base.img");
        fs::write(&backing, vec![7u8; (1 << 20) + 1000]).unwrap();
        (dir, backing)
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".uml_mkcow-"))
            .collect()
    }

    #[test]
    fn creates_a_sparse_v3_file_of_the_kernel_size() {
        let (dir, backing) = setup();
        let cow = dir.path().join("a.cow");
        let header = create_cow(&cow, &backing, false).unwrap();
        assert_eq!(header.version, CowVersion::V3);
        assert_eq!(header.backing_path(), backing.canonicalize().unwrap());
        let bytes = fs::read(&cow).unwrap();
        assert_eq!(CowHeader::parse(&bytes).unwrap(), header);
        let layout = CowLayout::of(&header).unwrap();
        assert_eq!(
            bytes.len() as u64,
            layout.created_file_len(header.size).unwrap()
        );
        let meta = fs::metadata(&cow).unwrap();
        assert!(
            meta.blocks() * 512 < 64 * 1024,
            "not sparse: {} blocks",
            meta.blocks()
        );
        assert_eq!(meta.mode() & 0o777 & !0o022, 0o644 & !0o022);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn existing_file_is_kept_without_force() {
        let (dir, backing) = setup();
        let cow = dir.path().join("a.cow");
        fs::write(&cow, b"precious").unwrap();
        let err = create_cow(&cow, &backing, false).unwrap_err();
        assert!(matches!(err, MkcowError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("a.cow"));
        assert_eq!(fs::read(&cow).unwrap(), b"precious");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn force_replaces_a_larger_file_completely() {
        let (dir, backing) = setup();
        let cow = dir.path().join("a.cow");
        fs::write(&cow, vec![0xeeu8; 4 << 20]).unwrap();
        let header = create_cow(&cow, &backing, true).unwrap();
        let bytes = fs::read(&cow).unwrap();
        let layout = CowLayout::of(&header).unwrap();
        assert_eq!(
            bytes.len() as u64,
            layout.created_file_len(header.size).unwrap()
        );
        assert!(
            bytes[4128..].iter().all(|&b| b == 0),
            "stale bytes survived"
        );
    }

    #[test]
    fn force_never_replaces_the_backing_file() {
        let (dir, backing) = setup();
        let link = dir.path().join("alias.img");
        fs::hard_link(&backing, &link).unwrap();
        for cow in [&backing, &link] {
            let err = create_cow(cow, &backing, true).unwrap_err();
            assert!(matches!(err, MkcowError::SameFile { .. }), "{err}");
        }
        assert_eq!(fs::read(&backing).unwrap(), vec![7u8; (1 << 20) + 1000]);
    }

    #[test]
    fn force_writes_through_a_symlink_like_the_c_tool() {
        let (dir, backing) = setup();
        let real = dir.path().join("real.cow");
        fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.cow");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        create_cow(&link, &backing, true).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(CowHeader::parse(&fs::read(&real).unwrap()).is_ok());
    }

    #[test]
    fn bad_inputs_leave_nothing_behind() {
        let (dir, backing) = setup();
        let cow = dir.path().join("a.cow");
        let err = create_cow(&cow, &dir.path().join("missing.img"), false).unwrap_err();
        assert!(matches!(err, MkcowError::Backing { .. }));
        assert!(err.to_string().contains("missing.img"), "{err}");
        let err = create_cow(dir.path(), &backing, true).unwrap_err();
        assert!(matches!(err, MkcowError::NotRegular { .. }), "{err}");
        let err = create_cow(&cow, dir.path(), false).unwrap_err();
        assert!(matches!(err, MkcowError::Backing { .. }), "{err}");
        let err = create_cow(&dir.path().join("no/such/dir/a.cow"), &backing, false).unwrap_err();
        assert!(matches!(err, MkcowError::Write { .. }), "{err}");
        assert!(!cow.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_backing_path_too_long_for_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Past PATH_MAX the path cannot even be resolved; the header (4095 bytes
        // plus NUL) holds every path the kernel can open.
        let mut deep = dir.path().canonicalize().unwrap();
        while deep.as_os_str().len() < 4200 {
            deep.push("d".repeat(200));
        }
        let cow = dir.path().join("a.cow");
        let err = create_cow(&cow, &deep.join("b.img"), false).unwrap_err();
        assert!(matches!(err, MkcowError::Backing { .. }), "{err}");
        assert!(err.to_string().contains("b.img"), "{err}");
        assert!(!cow.exists());
    }
}
