//! An opened COW file: header, layout and dirty bitmap, checked against the file's length.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use uml_proto::cow::{CowHeader, CowLayout, LayoutError};

use crate::MooError;
use crate::dirty_map::DirtyMap;

/// A COW file whose every dirty sector is known to have its data inside the file.
#[derive(Debug)]
pub struct CowFile {
    /// The path it was opened by.
    pub path: PathBuf,
    /// The open file (read-only).
    pub file: File,
    /// The decoded header.
    pub header: CowHeader,
    /// Where bitmap and data sit.
    pub layout: CowLayout,
    /// The dirty bitmap, as far as the file holds data.
    pub dirty: DirtyMap,
    /// The file's length in bytes.
    pub len: u64,
    /// Device and inode, to recognise the file under any other name.
    pub identity: (u64, u64),
}

impl CowFile {
    /// Opens and validates a COW file; nothing is read past what the header describes.
    pub fn open(path: &Path) -> Result<Self, MooError> {
        let file = File::open(path).map_err(MooError::io("opening COW file", path))?;
        let meta = file
            .metadata()
            .map_err(MooError::io("reading COW file", path))?;
        if !meta.is_file() {
            return Err(MooError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        let header = CowHeader::read_from(&mut &file).map_err(|source| MooError::Header {
            path: path.to_path_buf(),
            source,
        })?;
        if header.cow_format != 0 {
            return Err(MooError::UnknownFormat {
                path: path.to_path_buf(),
                format: header.cow_format,
            });
        }
        let layout_err = |source| MooError::Layout {
            path: path.to_path_buf(),
            source,
        };
        let layout = CowLayout::of(&header).map_err(layout_err)?;
        let len = meta.len();
        let bitmap_end = layout
            .bitmap_offset
            .checked_add(layout.bitmap_len)
            .ok_or(layout_err(LayoutError::Overflow))?;
        if bitmap_end > len {
            return Err(MooError::BitmapPastEnd {
                path: path.to_path_buf(),
                end: bitmap_end,
                len,
            });
        }
        let dirty = DirtyMap::read(
            &file,
            layout.bitmap_offset,
            layout.bitmap_len,
            layout.sectors,
        )
        .map_err(MooError::io("reading the bitmap of COW file", path))?;
        let cow = Self {
            path: path.to_path_buf(),
            file,
            header,
            layout,
            dirty,
            len,
            identity: (meta.dev(), meta.ino()),
        };
        if let Some(last) = cow.runs().last() {
            let end = cow
                .layout
                .data_offset
                .checked_add(cow.byte_range(last).end)
                .ok_or(layout_err(LayoutError::Overflow))?;
            if end > len {
                return Err(MooError::DataPastEnd {
                    path: path.to_path_buf(),
                    end,
                    len,
                });
            }
        }
        Ok(cow)
    }

    /// The runs of dirty sectors, in order.
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.dirty.runs()
    }

    /// The image bytes a run of sectors covers; the last sector may be partial.
    pub fn byte_range(&self, sectors: Range<u64>) -> Range<u64> {
        let ss = u64::from(self.layout.sectorsize);
        let size = self.header.size;
        sectors.start.saturating_mul(ss).min(size)..sectors.end.saturating_mul(ss).min(size)
    }

    /// Number of dirty sectors and the image bytes they cover.
    pub fn dirty_totals(&self) -> (u64, u64) {
        self.runs().fold((0, 0), |(sectors, bytes), run| {
            let range = self.byte_range(run.clone());
            (
                sectors + (run.end - run.start),
                bytes + (range.end - range.start),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uml_testbed::cow::{TestCow, write_backing};

    #[test]
    fn a_fresh_cow_has_no_runs() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 10_000);
        let made = TestCow::create(dir.path(), &backing, &[]);
        let cow = CowFile::open(&made.path).unwrap();
        assert_eq!(cow.runs().count(), 0);
        assert_eq!(cow.dirty_totals(), (0, 0));
        assert_eq!(cow.layout.sectors, 20);
    }

    #[test]
    fn the_partial_last_sector_counts_only_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 1000);
        let made = TestCow::create(dir.path(), &backing, &[(1, b'x')]);
        let cow = CowFile::open(&made.path).unwrap();
        assert_eq!(cow.byte_range(1..2), 512..1000);
        assert_eq!(cow.dirty_totals(), (1, 488));
    }

    #[test]
    fn a_bitmap_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 1 << 20);
        let made = TestCow::create(dir.path(), &backing, &[]);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&made.path)
            .unwrap();
        file.set_len(8192 + 100).unwrap();
        let err = CowFile::open(&made.path).unwrap_err();
        assert!(
            matches!(
                err,
                MooError::BitmapPastEnd {
                    end: 8448,
                    len: 8292,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn dirty_data_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 1 << 20);
        let made = TestCow::create(dir.path(), &backing, &[(2047, b'z')]);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&made.path)
            .unwrap();
        file.set_len(made.data_offset + 2047 * 512).unwrap();
        let err = CowFile::open(&made.path).unwrap_err();
        assert!(matches!(err, MooError::DataPastEnd { .. }), "{err}");
        assert!(err.to_string().contains(&made.path.display().to_string()));
    }

    #[test]
    fn a_truncated_header_or_an_unterminated_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backing = write_backing(dir.path(), 4096);
        let made = TestCow::create(dir.path(), &backing, &[]);
        let mut bytes = std::fs::read(&made.path).unwrap();
        std::fs::write(&made.path, &bytes[..100]).unwrap();
        let err = CowFile::open(&made.path).unwrap_err();
        assert!(err.to_string().contains("cow.img"), "{err}");
        assert!(matches!(err, MooError::Header { .. }), "{err}");
        // A path filling the whole 4096-byte field leaves no room for its NUL.
        bytes[32..32 + 4096].fill(b'a');
        std::fs::write(&made.path, &bytes).unwrap();
        let err = CowFile::open(&made.path).unwrap_err();
        assert!(matches!(err, MooError::Header { .. }), "{err}");
    }

    #[test]
    fn garbage_is_not_a_cow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, b"this is not a COW file at all").unwrap();
        let err = CowFile::open(&path).unwrap_err();
        assert!(matches!(err, MooError::Header { .. }), "{err}");
    }
}
