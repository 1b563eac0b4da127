//! New files that appear whole or not at all.
//!
//! A file is written under a temporary name in the target's directory, synced,
//! renamed onto the target (refusing to replace anything unless asked, even a
//! file that appeared meanwhile), and the directory is synced so the rename
//! survives a crash. A failure at any step leaves no temporary file behind.

use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Why a new file was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The target exists and replacing was not asked for.
    #[error("'{}' exists", .0.display())]
    Exists(PathBuf),
    /// Writing, syncing or renaming failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl PublishError {
    /// This error as a caller's own: `exists()` when the target was there, else `io(error)`.
    pub fn either<E>(self, exists: impl FnOnce() -> E, io: impl FnOnce(io::Error) -> E) -> E {
        match self {
            PublishError::Exists(_) => exists(),
            PublishError::Io(e) => io(e),
        }
    }
}

/// Whether publishing may replace an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Refuse if anything is at the target.
    Never,
    /// Replace whatever regular file is there, whole.
    Existing,
}

impl Replace {
    /// [`Replace::Existing`] when `replace` is true, else [`Replace::Never`].
    pub fn existing_if(replace: bool) -> Self {
        if replace {
            Replace::Existing
        } else {
            Replace::Never
        }
    }
}

/// The directory `path` is in (`.` for a bare name).
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Why a new file may not be published at a path.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Something is there and replacing was not asked for.
    #[error("exists")]
    Exists,
    /// It is one of the files the new one is made from (by device and inode),
    /// the index of which is given.
    #[error("is input {0}")]
    SameAs(usize),
    /// It is a directory, a device or anything but a regular file.
    #[error("is not a regular file")]
    NotRegular,
    /// It could not be examined.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks what is at `path` before a new file is published there, and returns
/// where the rename must go: `path` itself, or, for a symlink to a regular
/// file, the file it names (written through, as the C tools' `open` does; a
/// dangling symlink is itself replaced). An existing file is refused unless
/// `replace`, and so is any file whose device and inode is among `inputs`
/// (the files the new one is made from, under whatever name) or that is not a
/// regular file.
pub fn target_for(
    path: &Path,
    replace: bool,
    inputs: &[(u64, u64)],
) -> Result<PathBuf, TargetError> {
    let link_meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(e.into()),
    };
    let is_link = link_meta.file_type().is_symlink();
    let target = match std::fs::metadata(path) {
        Ok(meta) => {
            // Compared with the file just measured, not looked up again by name.
            if let Some(index) = inputs.iter().position(|&id| id == (meta.dev(), meta.ino())) {
                return Err(TargetError::SameAs(index));
            }
            if !meta.is_file() {
                return Err(TargetError::NotRegular);
            }
            if is_link {
                path.canonicalize()?
            } else {
                path.to_path_buf()
            }
        }
        Err(_) if is_link => path.to_path_buf(),
        Err(e) => return Err(e.into()),
    };
    if replace {
        Ok(target)
    } else {
        Err(TargetError::Exists)
    }
}

/// Makes a rename or a removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// A file being written beside its target, not yet visible there.
#[derive(Debug)]
pub struct NewFile {
    tmp: NamedTempFile,
    target: PathBuf,
}

impl NewFile {
    /// Creates an empty temporary file named `PREFIX…` with `mode` in
    /// `target`'s directory (so the final rename never crosses filesystems).
    pub fn beside(target: &Path, prefix: &str, mode: u32) -> io::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(directory_of(target))?;
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// The open file, for writing its contents.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Syncs the contents, renames the file onto its target and syncs the directory.
    pub fn publish(self, replace: Replace) -> Result<(), PublishError> {
        self.tmp.as_file().sync_all()?;
        let persisted = match replace {
            Replace::Existing => self.tmp.persist(&self.target),
            Replace::Never => self.tmp.persist_noclobber(&self.target),
        };
        match persisted {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(PublishError::Exists(self.target));
            }
            Err(e) => return Err(e.error.into()),
        }
        sync_dir(directory_of(&self.target))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write(new: &NewFile, text: &str) {
        let mut file = new.file();
        file.write_all(text.as_bytes()).expect("write");
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("read_dir").count()
    }

    #[test]
    fn appears_only_when_published_and_never_clobbers_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.img");
        let new = NewFile::beside(&target, ".t-", 0o644).expect("create");
        write(&new, "first");
        assert!(!target.exists(), "visible before publishing");
        new.publish(Replace::Never).expect("publish");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "first");

        let new = NewFile::beside(&target, ".t-", 0o644).expect("create");
        write(&new, "second");
        assert!(matches!(
            new.publish(Replace::Never),
            Err(PublishError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "first");
        assert_eq!(entries(dir.path()), 1, "a temporary file was left behind");

        let new = NewFile::beside(&target, ".t-", 0o600).expect("create");
        write(&new, "third");
        new.publish(Replace::Existing).expect("replace");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "third");
        let mode = std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = NewFile::beside(&dir.path().join("x"), ".t-", 0o644).expect("create");
        write(&new, "partial");
        drop(new);
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn targets_are_checked_before_anything_is_written() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let free = d.join("free");
        assert_eq!(target_for(&free, false, &[]).ok(), Some(free.clone()));
        std::fs::write(d.join("file"), "x").expect("write");
        assert!(matches!(
            target_for(&d.join("file"), false, &[]),
            Err(TargetError::Exists)
        ));
        symlink(d.join("file"), d.join("link")).expect("symlink");
        let resolved = d.join("file").canonicalize().expect("canonical");
        assert_eq!(target_for(&d.join("link"), true, &[]).ok(), Some(resolved));
        symlink(d.join("nowhere"), d.join("dangling")).expect("symlink");
        assert_eq!(
            target_for(&d.join("dangling"), true, &[]).ok(),
            Some(d.join("dangling"))
        );
        assert!(matches!(
            target_for(&d.join("dangling"), false, &[]),
            Err(TargetError::Exists)
        ));
        let meta = std::fs::metadata(d.join("file")).expect("stat");
        let ids = [(0, 0), (meta.dev(), meta.ino())];
        assert!(matches!(
            target_for(&d.join("link"), true, &ids),
            Err(TargetError::SameAs(1))
        ));
        assert!(matches!(
            target_for(d, true, &[]),
            Err(TargetError::NotRegular)
        ));
    }

    #[test]
    fn bare_names_live_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("x.cow")), Path::new("."));
        assert_eq!(directory_of(Path::new("/a/x.cow")), Path::new("/a"));
    }
}
