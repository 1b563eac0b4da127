//! `uml_moo --info`: what a COW file holds, for people and for scripts.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use indicatif::HumanBytes;
use serde::Serialize;
use uml_proto::cow::CowVersion;

use crate::MooError;
use crate::backing::{Backing, backing_path};
use crate::cow_file::CowFile;
use crate::merge::{marker_is_present, marker_path};

/// Everything `--info` reports about one COW file.
#[derive(Debug, Serialize)]
pub struct CowInfo {
    /// The COW file as named.
    pub file: String,
    /// Header version number (1, 2 or 3).
    pub version: u32,
    /// Whether the header uses the broken 64-bit V3 layout.
    pub broken_64bit_layout: bool,
    /// Byte order of magic and version.
    pub magic_byte_order: &'static str,
    /// Image size in bytes, from the header.
    pub virtual_size: u64,
    /// Backing file mtime recorded in the header.
    pub backing_mtime: u32,
    /// Sector size the bitmap counts in.
    pub sector_size: u32,
    /// Alignment of bitmap and data.
    pub alignment: u32,
    /// File offset of the bitmap.
    pub bitmap_offset: u64,
    /// Bitmap length in bytes.
    pub bitmap_len: u64,
    /// File offset of sector 0's data.
    pub data_offset: u64,
    /// The COW file's length.
    pub file_size: u64,
    /// Bytes the COW file occupies on disk.
    pub disk_usage: u64,
    /// Sectors marked dirty.
    pub dirty_sectors: u64,
    /// Image bytes those sectors cover.
    pub dirty_bytes: u64,
    /// Runs of consecutive dirty sectors.
    pub dirty_runs: u64,
    /// The backing file and how it compares to the header.
    pub backing: BackingStatus,
    /// Whether an interrupted `-d` merge awaits a rerun.
    pub merge_in_progress: bool,
}

/// The backing file as found on disk.
#[derive(Debug, Serialize)]
pub struct BackingStatus {
    /// The path checked (`-b` or the header's).
    pub path: String,
    /// Why it could not be examined, if it could not.
    pub error: Option<String>,
    /// Its size.
    pub size: Option<u64>,
    /// Its mtime.
    pub mtime: Option<i64>,
    /// Whether size and mtime both equal the header's (what the kernel requires).
    pub matches: bool,
}

/// Reads `cow` without locking it (a running UML's COW can be inspected).
pub fn inspect(cow: &Path, backing: Option<&Path>) -> Result<CowInfo, MooError> {
    let cow = CowFile::open(cow)?;
    let meta = cow
        .file
        .metadata()
        .map_err(MooError::io("reading COW file", &cow.path))?;
    let (dirty_sectors, dirty_bytes) = cow.dirty_totals();
    let header = &cow.header;
    let path = backing_path(header, backing);
    let backing = match Backing::open(&path, false) {
        Ok(b) => BackingStatus {
            path: path.display().to_string(),
            error: None,
            size: Some(b.size),
            mtime: Some(b.mtime),
            matches: b.check_size(header).is_ok() && b.check_mtime(header).is_ok(),
        },
        Err(e) => BackingStatus {
            path: path.display().to_string(),
            error: Some(match e {
                MooError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            }),
            size: None,
            mtime: None,
            matches: false,
        },
    };
    Ok(CowInfo {
        file: cow.path.display().to_string(),
        version: header.version.number(),
        broken_64bit_layout: header.version == CowVersion::V3Broken,
        magic_byte_order: if header.magic_big_endian {
            "big-endian"
        } else {
            "little-endian"
        },
        virtual_size: header.size,
        backing_mtime: header.mtime,
        sector_size: header.sectorsize,
        alignment: header.alignment,
        bitmap_offset: cow.layout.bitmap_offset,
        bitmap_len: cow.layout.bitmap_len,
        data_offset: cow.layout.data_offset,
        file_size: cow.len,
        disk_usage: meta.blocks() * 512,
        dirty_sectors,
        dirty_bytes,
        dirty_runs: cow.runs().count() as u64,
        backing,
        merge_in_progress: marker_is_present(&cow.path),
    })
}

impl fmt::Display for CowInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = if self.broken_64bit_layout {
            " (broken 64-bit layout)"
        } else {
            ""
        };
        writeln!(f, "image: {}", self.file)?;
        writeln!(
            f,
            "file format: UML COW version {}{layout}, {} magic",
            self.version, self.magic_byte_order
        )?;
        writeln!(
            f,
            "virtual size: {} ({} bytes)",
            HumanBytes(self.virtual_size),
            self.virtual_size
        )?;
        writeln!(
            f,
            "disk size: {} ({} bytes long)",
            HumanBytes(self.disk_usage),
            self.file_size
        )?;
        writeln!(f, "backing file: {}", self.backing.path)?;
        let status = match (&self.backing.error, self.backing.size, self.backing.mtime) {
            (Some(e), _, _) => format!("unusable: {e}"),
            (None, Some(size), Some(mtime)) if !self.backing.matches => format!(
                "does not match the header (size {size} vs {}, mtime {mtime} vs {}); the kernel would refuse it",
                self.virtual_size, self.backing_mtime
            ),
            _ => "matches the header (size and mtime)".to_owned(),
        };
        writeln!(f, "backing file status: {status}")?;
        writeln!(f, "backing file mtime in header: {}", self.backing_mtime)?;
        writeln!(f, "sector size: {}", self.sector_size)?;
        writeln!(f, "alignment: {}", self.alignment)?;
        writeln!(
            f,
            "bitmap: offset {}, {} bytes",
            self.bitmap_offset, self.bitmap_len
        )?;
        writeln!(f, "data offset: {}", self.data_offset)?;
        let share = if self.virtual_size == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 * 100.0 / self.virtual_size as f64
        };
        writeln!(
            f,
            "dirty: {} sectors, {} ({share:.2}% of the image) in {} runs",
            self.dirty_sectors,
            HumanBytes(self.dirty_bytes),
            self.dirty_runs
        )?;
        if self.merge_in_progress {
            writeln!(
                f,
                "merge in progress: an interrupted `uml_moo -d` left {}; rerun it to finish",
                marker_path(Path::new(&self.file)).display()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uml_testbed::cow::{TestCow, write_backing};

    #[test]
    fn counts_dirty_data_and_checks_the_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 1 << 20);
        let cow = TestCow::create(dir.path(), &backing, &[(0, 1), (1, 1), (100, 2)]);
        let info = inspect(&cow.path, None).unwrap();
        assert_eq!((info.version, info.broken_64bit_layout), (3, false));
        assert_eq!(info.virtual_size, 1 << 20);
        assert_eq!((info.bitmap_offset, info.bitmap_len), (8192, 256));
        assert_eq!(info.data_offset, cow.data_offset);
        assert_eq!(
            (info.dirty_sectors, info.dirty_bytes, info.dirty_runs),
            (3, 1536, 2)
        );
        assert!(info.backing.matches && info.backing.error.is_none());
        assert!(!info.merge_in_progress);
        let text = info.to_string();
        assert!(text.contains("dirty: 3 sectors"), "{text}");
        assert!(text.contains("matches the header"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&info).unwrap();
        assert_eq!(json["dirty_bytes"], 1536);
        assert_eq!(json["backing"]["matches"], true);
    }

    #[test]
    fn a_missing_backing_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 4096);
        let cow = TestCow::create(dir.path(), &backing, &[]);
        std::fs::remove_file(&backing).unwrap();
        std::fs::write(
            marker_path(&cow.path),
            "uml_moo in-place merge in progress; rerun `uml_moo -d` on the COW file to finish it\n\
             cow 1 2\nbacking 3 4\nsize 4096\nmtime 5\n",
        )
        .unwrap();
        let info = inspect(&cow.path, None).unwrap();
        assert!(!info.backing.matches);
        assert!(
            info.backing
                .error
                .as_deref()
                .unwrap()
                .contains("No such file")
        );
        assert!(info.merge_in_progress);
        assert!(info.to_string().contains("unusable"), "{info}");
    }
}
