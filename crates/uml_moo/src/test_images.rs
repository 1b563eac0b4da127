//! Small backing files and COW files built for unit tests, with the image they should merge to.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use uml_proto::cow::{CowHeader, CowLayout, set_bit};

/// A backing file of `len` bytes whose every byte depends on its offset.
pub fn write_backing(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join("backing.img");
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A COW file made over a backing file, with some sectors written.
pub struct TestCow {
    /// Where it is.
    pub path: PathBuf,
    /// Its data offset.
    pub data_offset: u64,
    /// What merging it must give.
    pub expected: Vec<u8>,
}

impl TestCow {
    /// Creates `cow.img` in `dir` over `backing`; each `(sector, byte)` fills that sector.
    pub fn create(dir: &Path, backing: &Path, dirty: &[(u64, u8)]) -> Self {
        let meta = std::fs::metadata(backing).unwrap();
        let header = CowHeader::new_v3(backing, meta.mtime() as u32, meta.len());
        let layout = CowLayout::of(&header).unwrap();
        let path = dir.join("cow.img");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&header.to_bytes().unwrap(), 0).unwrap();
        file.set_len(layout.created_file_len(meta.len()).unwrap())
            .unwrap();
        let mut bitmap = vec![0; layout.bitmap_len as usize];
        let mut expected = std::fs::read(backing).unwrap();
        for &(sector, byte) in dirty {
            // The kernel writes whole sectors, also the partial last one.
            file.write_all_at(&[byte; 512], layout.data_offset + sector * 512)
                .unwrap();
            assert!(set_bit(&mut bitmap, sector));
            let start = (sector as usize * 512).min(expected.len());
            let end = (start + 512).min(expected.len());
            expected[start..end].fill(byte);
        }
        file.write_all_at(&bitmap, layout.bitmap_offset).unwrap();
        Self {
            path,
            data_offset: layout.data_offset,
            expected,
        }
    }
}
