//! The LSB-first dirty bitmap: sector `i` is bit `1 << (i % 8)` of byte `i / 8`.

use std::ops::Range;

/// Whether sector `sector` is marked dirty; sectors past the bitmap are clean.
pub fn bit_is_set(bitmap: &[u8], sector: u64) -> bool {
    usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|byte| byte & (1 << (sector % 8)) != 0)
}

/// Marks sector `sector` dirty; returns false if the bitmap is too short to hold it.
pub fn set_bit(bitmap: &mut [u8], sector: u64) -> bool {
    match usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bitmap.get_mut(i))
    {
        Some(byte) => {
            *byte |= 1 << (sector % 8);
            true
        }
        None => false,
    }
}

/// Iterator over the maximal runs of dirty sectors, in order, as half-open ranges.
///
/// Scans a machine word at a time so that large clean or fully dirty stretches
/// cost little, which matters for multi-gigabyte images.
#[derive(Debug, Clone)]
pub struct DirtyRuns<'a> {
    bitmap: &'a [u8],
    sectors: u64,
    next: u64,
}

impl<'a> DirtyRuns<'a> {
    /// Runs among the first `sectors` bits of `bitmap` (further bits are ignored;
    /// bits the bitmap lacks count as clean).
    pub fn new(bitmap: &'a [u8], sectors: u64) -> Self {
        let available = (bitmap.len() as u64).saturating_mul(8);
        Self {
            bitmap,
            sectors: sectors.min(available),
            next: 0,
        }
    }

    /// First sector at or after `from` whose bit equals `dirty`, or `self.sectors`.
    fn next_with(&self, from: u64, dirty: bool) -> u64 {
        let mut pos = from;
        while pos < self.sectors {
            let byte_index = (pos / 8) as usize;
            // Fast path: whole 8-byte words that cannot contain a match.
            if pos % 64 == 0 {
                if let Some(word) = self.bitmap.get(byte_index..byte_index + 8) {
                    let skip = if dirty { 0u8 } else { 0xff };
                    if word.iter().all(|&b| b == skip) {
                        pos += 64;
                        continue;
                    }
                }
            }
            let Some(&byte) = self.bitmap.get(byte_index) else {
                break;
            };
            let bits = if dirty { byte } else { !byte } >> (pos % 8);
            if bits != 0 {
                return (pos + u64::from(bits.trailing_zeros())).min(self.sectors);
            }
            pos = (pos / 8 + 1) * 8;
        }
        self.sectors
    }
}

impl Iterator for DirtyRuns<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        let start = self.next_with(self.next, true);
        if start >= self.sectors {
            self.next = self.sectors;
            return None;
        }
        let end = self.next_with(start, false);
        self.next = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsb_first() {
        let mut bm = [0u8; 17];
        for s in [132, 134, 135] {
            assert!(set_bit(&mut bm, s));
        }
        assert_eq!(bm[16], 0xd0);
        assert!(bit_is_set(&bm, 134) && !bit_is_set(&bm, 133));
        assert!(!set_bit(&mut bm, 17 * 8));
        let runs: Vec<_> = DirtyRuns::new(&bm, 136).collect();
        assert_eq!(runs, [132..133, 134..136]);
    }

    #[test]
    fn runs_stop_at_the_sector_count() {
        let bm = [0xffu8; 32];
        let mut runs = DirtyRuns::new(&bm, 70);
        assert_eq!((runs.next(), runs.next()), (Some(0..70), None));
        let mut runs = DirtyRuns::new(&bm, 1000);
        assert_eq!((runs.next(), runs.next()), (Some(0..256), None));
        assert_eq!(DirtyRuns::new(&[], 1000).count(), 0);
    }

    proptest! {
        #[test]
        fn runs_match_a_bit_by_bit_scan(bm in proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..100), extra in 0u64..1000) {
            let sectors = (bm.len() as u64 * 8).saturating_sub(extra % 16) + extra / 16 * (extra % 2);
            let mut expected = Vec::new();
            let limit = sectors.min(bm.len() as u64 * 8);
            let mut i = 0;
            while i < limit {
                if bit_is_set(&bm, i) {
                    let start = i;
                    while i < limit && bit_is_set(&bm, i) { i += 1; }
                    expected.push(start..i);
                } else {
                    i += 1;
                }
            }
            prop_assert_eq!(DirtyRuns::new(&bm, sectors).collect::<Vec<_>>(), expected);
        }
    }
}
