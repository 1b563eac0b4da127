//! Hand-made backing images and COW files, with the image a merge must give.
//! Used by the cross-tool tests and by `uml_moo`'s unit tests.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use uml_proto::cow::{CowHeader, CowLayout, CowVersion, set_bit};

/// Bytes where every 512-byte sector differs from its neighbours.
pub fn backing_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 512).to_le_bytes()[0].wrapping_mul(31) ^ (i % 512).to_le_bytes()[0])
        .collect()
}

/// Writes `dir/backing.img` of `len` bytes of [`backing_bytes`].
pub fn write_backing(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join("backing.img");
    fs::write(&path, backing_bytes(len)).expect("writing a backing image");
    path
}

/// A COW file made by hand over a backing file, with some sectors written.
#[derive(Debug)]
pub struct TestCow {
    /// Where it is.
    pub path: PathBuf,
    /// Its data offset.
    pub data_offset: u64,
    /// What merging it must give (the whole backing size).
    pub expected: Vec<u8>,
}

impl TestCow {
    /// A V3 COW at `dir/cow.img` over `backing`; each `(sector, byte)` fills that sector.
    pub fn create(dir: &Path, backing: &Path, dirty: &[(u64, u8)]) -> Self {
        Self::build(&dir.join("cow.img"), backing, CowVersion::V3, true, dirty)
    }

    /// A COW of any header version and magic byte order at `path` over `backing`.
    pub fn build(
        path: &Path,
        backing: &Path,
        version: CowVersion,
        magic_big_endian: bool,
        dirty: &[(u64, u8)],
    ) -> Self {
        let meta = fs::metadata(backing).expect("stat of the backing file");
        let absolute = fs::canonicalize(backing).expect("resolving the backing file");
        let mtime = u32::try_from(meta.mtime()).expect("an mtime a COW header can store");
        let mut header = CowHeader::new_v3(&absolute, mtime, meta.len());
        header.version = version;
        header.magic_big_endian = magic_big_endian;
        if matches!(version, CowVersion::V1 | CowVersion::V2) {
            header.alignment = header.sectorsize;
        }
        let layout = CowLayout::of(&header).expect("a layout");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("creating the COW file");
        let bytes = header.to_bytes().expect("an encodable header");
        file.write_all_at(&bytes, 0).expect("writing the header");
        file.set_len(layout.created_file_len(header.size).expect("a file length"))
            .expect("sizing the COW file");
        let mut bitmap = vec![0; usize::try_from(layout.bitmap_len).expect("a bitmap in memory")];
        let mut expected = fs::read(backing).expect("reading the backing file");
        for &(sector, byte) in dirty {
            // The kernel writes whole sectors, also the partial last one.
            let at = layout.sector_offset(sector).expect("a sector offset");
            file.write_all_at(&[byte; 512], at)
                .expect("writing a sector");
            assert!(
                set_bit(&mut bitmap, sector),
                "sector {sector} is past the end"
            );
            let start =
                usize::try_from(sector * 512).map_or(expected.len(), |s| s.min(expected.len()));
            let end = (start + 512).min(expected.len());
            expected[start..end].fill(byte);
        }
        file.write_all_at(&bitmap, layout.bitmap_offset)
            .expect("writing the bitmap");
        Self {
            path: path.to_path_buf(),
            data_offset: layout.data_offset,
            expected,
        }
    }
}
