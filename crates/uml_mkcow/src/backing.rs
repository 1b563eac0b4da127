//! What a COW header records about its backing file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use uml_host::publish::directory_of;

/// The backing file as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingFile {
    /// Absolute path: the directory resolved physically, the last component as given.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in seconds since the epoch.
    pub mtime: i64,
    /// Device and inode of the file measured, to recognise it under any other name.
    pub identity: (u64, u64),
}

/// Makes `path` absolute the way the kernel and the C tools do: the directory part
/// is resolved to its physical path, the file name is kept as given (so a
/// symlinked image keeps its link name). Unlike the C tools this also works for
/// files directly in `/`.
pub fn absolutize(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path does not name a file"))?;
    Ok(directory_of(path).canonicalize()?.join(name))
}

impl BackingFile {
    /// Resolves and measures a backing file (a regular file or a block device).
    pub fn inspect(path: &Path) -> io::Result<Self> {
        let absolute = absolutize(path)?;
        let mut file = File::open(&absolute)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        // Seeking to the end measures block devices too, where st_size is 0.
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: absolute,
            size,
            mtime: meta.mtime(),
            identity: (meta.dev(), meta.ino()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directly_in_root_stay_absolute() {
        assert_eq!(
            absolutize(Path::new("/x.img")).unwrap(),
            Path::new("/x.img")
        );
    }

    #[test]
    fn relative_names_get_the_physical_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        let abs = absolutize(&real.join("link/disk.img")).unwrap();
        assert_eq!(abs, real.join("disk.img"));
        assert!(absolutize(Path::new("/")).is_err());
    }

    #[test]
    fn inspect_measures_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.img");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        let b = BackingFile::inspect(&path).unwrap();
        assert_eq!(b.size, 1000);
        assert_eq!(b.mtime, std::fs::metadata(&path).unwrap().mtime());
        assert!(BackingFile::inspect(dir.path()).is_err());
    }
}
