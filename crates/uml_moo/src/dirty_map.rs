//! A COW file's dirty bitmap, read only where the file has data.
//!
//! The bitmap of a large image is large (a 4 TiB image has a 1 GiB bitmap), but
//! a COW file is sparse and its bitmap mostly holes, which read as zeros:
//! clean. Only the bitmap's data extents are read and kept, so memory follows
//! what the file really holds, not what its header claims.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use uml_proto::cow::DirtyRuns;

/// Bitmap bytes read per piece.
const PIECE: u64 = 1 << 20;

/// The stored pieces of a bitmap: (index of its first byte, its bytes).
#[derive(Debug, Default)]
pub struct DirtyMap {
    pieces: Vec<(u64, Vec<u8>)>,
    sectors: u64,
}

impl DirtyMap {
    /// Reads the `len`-byte bitmap at `offset` in `file`, for `sectors` sectors.
    pub fn read(file: &File, offset: u64, len: u64, sectors: u64) -> io::Result<Self> {
        let mut map = Self {
            pieces: Vec::new(),
            sectors,
        };
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let Some(data) = next_data(file, pos)? else {
                break;
            };
            if data >= end {
                break;
            }
            let hole = next_hole(file, data)?.min(end);
            let mut at = data;
            while at < hole {
                let n = (hole - at).min(PIECE);
                let mut bytes = vec![0u8; usize::try_from(n).map_err(io::Error::other)?];
                file.read_exact_at(&mut bytes, at)?;
                // An all-clean piece (zeros written out) costs no memory.
                if bytes.iter().any(|&b| b != 0) {
                    map.pieces.push((at - offset, bytes));
                }
                at += n;
            }
            pos = hole.max(data + 1);
        }
        Ok(map)
    }

    /// Bytes of bitmap kept in memory.
    pub fn stored_bytes(&self) -> usize {
        self.pieces.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// The runs of dirty sectors, in order; runs that meet across pieces are joined.
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut pending: Option<Range<u64>> = None;
        let mut flat = self.pieces.iter().flat_map(move |(first_byte, bytes)| {
            let first = first_byte.saturating_mul(8);
            DirtyRuns::new(bytes, self.sectors.saturating_sub(first))
                .map(move |run| run.start + first..run.end + first)
        });
        std::iter::from_fn(move || {
            loop {
                match (flat.next(), pending.take()) {
                    (Some(run), Some(mut open)) if open.end == run.start => {
                        open.end = run.end;
                        pending = Some(open);
                    }
                    (Some(run), Some(open)) => {
                        pending = Some(run);
                        return Some(open);
                    }
                    (Some(run), None) => pending = Some(run),
                    (None, open) => return open,
                }
            }
        })
    }
}

/// The first offset at or after `pos` that holds data, or `None` past the last.
fn next_data(file: &File, pos: u64) -> io::Result<Option<u64>> {
    let at = i64::try_from(pos).map_err(io::Error::other)?;
    match lseek(file.as_fd(), at, Whence::SeekData) {
        Ok(data) => Ok(Some(u64::try_from(data).map_err(io::Error::other)?)),
        Err(Errno::ENXIO) => Ok(None),
        // No hole support: everything is data.
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(Some(pos)),
        Err(e) => Err(e.into()),
    }
}

/// The first hole at or after `pos` (the end of the file at the latest).
fn next_hole(file: &File, pos: u64) -> io::Result<u64> {
    let at = i64::try_from(pos).map_err(io::Error::other)?;
    match lseek(file.as_fd(), at, Whence::SeekHole) {
        Ok(hole) => u64::try_from(hole).map_err(io::Error::other),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(u64::MAX),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use uml_proto::cow::set_bit;

    use super::*;

    #[test]
    fn a_huge_sparse_bitmap_costs_only_its_data() {
        let file = tempfile::tempfile().expect("tempfile");
        // A 1 GiB bitmap (a 4 TiB image) with one dirty byte deep inside it.
        let len = 1u64 << 30;
        file.set_len(4096 + len).expect("set_len");
        file.write_all_at(&[0b0000_0110], 4096 + 700_000_000)
            .expect("write");
        let map = DirtyMap::read(&file, 4096, len, len * 8).expect("read");
        assert!(
            map.stored_bytes() <= usize::try_from(2 * PIECE).unwrap(),
            "{}",
            map.stored_bytes()
        );
        let first = 700_000_000 * 8;
        assert_eq!(map.runs().collect::<Vec<_>>(), vec![first + 1..first + 3]);
    }

    proptest! {
        #[test]
        fn pieces_give_the_runs_of_the_whole_bitmap(
            dirty in proptest::collection::btree_set(0u64..40_000, 0..200),
            piece in 1usize..700,
        ) {
            let mut bitmap = vec![0u8; 5000];
            for &s in &dirty {
                set_bit(&mut bitmap, s);
            }
            let whole: Vec<_> = DirtyRuns::new(&bitmap, 40_000).collect();
            let map = DirtyMap {
                pieces: bitmap
                    .chunks(piece)
                    .enumerate()
                    .map(|(i, c)| ((i * piece) as u64, c.to_vec()))
                    .collect(),
                sectors: 40_000,
            };
            prop_assert_eq!(map.runs().collect::<Vec<_>>(), whole);
        }
    }
}
