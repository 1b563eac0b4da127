//! COW headers: never panics; a decoded header re-encodes to one that decodes the same and has a layout or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::cow::{CowHeader, CowLayout, DirtyRuns};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = CowHeader::parse(data) {
        if let Ok(bytes) = header.to_bytes() {
            assert_eq!(
                CowHeader::parse(&bytes).expect("re-encoded header parses"),
                header
            );
        }
        if let Ok(layout) = CowLayout::of(&header) {
            let _ = layout.sector_offset(layout.sectors);
            let _ = layout.created_file_len(header.size);
        }
    }
    // The bitmap scan on arbitrary bytes with an arbitrary sector count.
    if let Some((count, bitmap)) = data.split_first_chunk::<8>() {
        let sectors = u64::from_le_bytes(*count);
        let mut last_end = 0;
        for run in DirtyRuns::new(bitmap, sectors) {
            assert!(run.start >= last_end && run.start < run.end);
            last_end = run.end;
        }
    }
});
