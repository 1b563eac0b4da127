//! Where the bitmap and the data area sit in a COW file.

use super::header::{CowHeader, CowVersion};

/// Offsets and lengths derived from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CowLayout {
    /// File offset of the dirty bitmap.
    pub bitmap_offset: u64,
    /// Bitmap bytes the formulas assign (V1/V2 under-count; see [`CowLayout::compute`]).
    pub bitmap_len: u64,
    /// File offset of sector 0 of the data area.
    pub data_offset: u64,
    /// Number of sectors the bitmap has bits for.
    pub sectors: u64,
    /// Sector size used for the sector numbering above.
    pub sectorsize: u32,
}

/// Why a header's numbers do not give a usable layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Sector size or alignment is zero.
    #[error("sector size and alignment must be non-zero")]
    ZeroDivisor,
    /// The offsets do not fit in 64 bits.
    #[error("COW layout overflows 64-bit offsets")]
    Overflow,
}

fn div_up(a: u64, b: u64) -> Option<u64> {
    a.checked_add(b - 1).map(|s| s / b)
}

fn round_up(a: u64, b: u64) -> Option<u64> {
    div_up(a, b)?.checked_mul(b)
}

impl CowLayout {
    /// Applies the kernel's size formulas (`cow_sizes`) for a version.
    ///
    /// V3 rounds the bitmap up to whole bytes and aligns to `alignment`. V1 and V2
    /// keep the historical rounding bug, `bitmap_len = (size + ss - 1) / (8 * ss)`,
    /// which under-counts (9 sectors get 1 byte), and align to the sector size.
    pub fn compute(
        version: CowVersion,
        size: u64,
        sectorsize: u32,
        alignment: u32,
    ) -> Result<Self, LayoutError> {
        if sectorsize == 0 || alignment == 0 {
            return Err(LayoutError::ZeroDivisor);
        }
        let ss = u64::from(sectorsize);
        let header_len = version.header_len() as u64;
        let all_sectors = div_up(size, ss).ok_or(LayoutError::Overflow)?;
        let layout = match version {
            CowVersion::V1 | CowVersion::V2 => {
                let bitmap_offset = header_len;
                let bitmap_len = size
                    .checked_add(ss - 1)
                    .map(|s| s / (8 * ss))
                    .ok_or(LayoutError::Overflow)?;
                let data_offset = bitmap_offset
                    .checked_add(bitmap_len)
                    .and_then(|end| round_up(end, ss))
                    .ok_or(LayoutError::Overflow)?;
                Self {
                    bitmap_offset,
                    bitmap_len,
                    data_offset,
                    sectors: all_sectors.min(bitmap_len.saturating_mul(8)),
                    sectorsize,
                }
            }
            CowVersion::V3 | CowVersion::V3Broken => {
                let align = u64::from(alignment);
                let bitmap_offset = round_up(header_len, align).ok_or(LayoutError::Overflow)?;
                let bitmap_len = div_up(all_sectors, 8).ok_or(LayoutError::Overflow)?;
                let data_offset = bitmap_offset
                    .checked_add(bitmap_len)
                    .and_then(|end| round_up(end, align))
                    .ok_or(LayoutError::Overflow)?;
                Self {
                    bitmap_offset,
                    bitmap_len,
                    data_offset,
                    sectors: all_sectors,
                    sectorsize,
                }
            }
        };
        Ok(layout)
    }

    /// The layout of the file `header` heads.
    pub fn of(header: &CowHeader) -> Result<Self, LayoutError> {
        Self::compute(
            header.version,
            header.size,
            header.sectorsize,
            header.alignment,
        )
    }

    /// File offset of a sector's data.
    pub fn sector_offset(&self, sector: u64) -> Option<u64> {
        sector
            .checked_mul(u64::from(self.sectorsize))?
            .checked_add(self.data_offset)
    }

    /// Size of a freshly made COW file: the data area covers the whole backing size.
    pub fn created_file_len(&self, backing_size: u64) -> Option<u64> {
        self.data_offset.checked_add(backing_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v3(size: u64) -> CowLayout {
        CowLayout::compute(CowVersion::V3, size, 512, 4096).unwrap()
    }

    #[test]
    fn worked_examples_from_the_reference() {
        for (size, bitmap_len, data_offset, file) in [
            (16u64 << 20, 4096, 12288, 16_789_504),
            (1000, 1, 12288, 13288),
            (0, 0, 8192, 8192),
            (1 << 30, 262_144, 270_336, 270_336 + (1 << 30)),
        ] {
            let l = v3(size);
            assert_eq!(l.bitmap_offset, 8192);
            assert_eq!((l.bitmap_len, l.data_offset), (bitmap_len, data_offset));
            assert_eq!(l.created_file_len(size), Some(file));
        }
        let l = CowLayout::compute(CowVersion::V3, 1000, 512, 512).unwrap();
        assert_eq!(l.bitmap_offset, 4608);
    }

    #[test]
    fn v1_keeps_the_rounding_bug() {
        let l = CowLayout::compute(CowVersion::V1, 9 * 512, 512, 512).unwrap();
        assert_eq!(
            (l.bitmap_offset, l.bitmap_len, l.data_offset),
            (280, 1, 512)
        );
        assert_eq!(l.sectors, 8);
        let l = CowLayout::compute(CowVersion::V2, 1 << 20, 512, 512).unwrap();
        assert_eq!(
            (l.bitmap_offset, l.bitmap_len, l.data_offset),
            (4120, 256, 4608)
        );
    }

    #[test]
    fn broken_v3_starts_after_4136_bytes() {
        let l = CowLayout::compute(CowVersion::V3Broken, 1 << 20, 512, 4096).unwrap();
        assert_eq!(l.bitmap_offset, 8192);
        let l = CowLayout::compute(CowVersion::V3Broken, 1 << 20, 512, 512).unwrap();
        assert_eq!(l.bitmap_offset, 4608);
    }

    #[test]
    fn hostile_numbers_are_errors() {
        assert_eq!(
            CowLayout::compute(CowVersion::V3, 1, 0, 4096),
            Err(LayoutError::ZeroDivisor)
        );
        assert_eq!(
            CowLayout::compute(CowVersion::V3, u64::MAX, 1, 1 << 31),
            Err(LayoutError::Overflow)
        );
    }

    /// The formulas exactly as the C code writes them, in u128 so nothing overflows.
    #[allow(clippy::manual_div_ceil)] // kept in the C source's own spelling
    fn reference(version: CowVersion, size: u64, ss: u32, align: u32) -> (u128, u128, u128) {
        let (size, ss, align) = (u128::from(size), u128::from(ss), u128::from(align));
        let hdr = version.header_len() as u128;
        match version {
            CowVersion::V1 | CowVersion::V2 => {
                let len = (size + ss - 1) / (8 * ss);
                let data = (hdr + len + ss - 1) / ss * ss;
                (hdr, len, data)
            }
            _ => {
                let off = hdr.div_ceil(align) * align;
                let len = size.div_ceil(ss).div_ceil(8);
                let data = (off + len).div_ceil(align) * align;
                (off, len, data)
            }
        }
    }

    proptest! {
        #[test]
        fn layout_matches_reference_formulas(
            v in prop_oneof![Just(CowVersion::V1), Just(CowVersion::V2), Just(CowVersion::V3), Just(CowVersion::V3Broken)],
            size in any::<u64>(),
            ss in 1u32..=1 << 16,
            align in 1u32..=1 << 16,
        ) {
            let align = if matches!(v, CowVersion::V1 | CowVersion::V2) { ss } else { align };
            let (off, len, data) = reference(v, size, ss, align);
            match CowLayout::compute(v, size, ss, align) {
                Ok(l) => {
                    prop_assert_eq!(u128::from(l.bitmap_offset), off);
                    prop_assert_eq!(u128::from(l.bitmap_len), len);
                    prop_assert_eq!(u128::from(l.data_offset), data);
                    prop_assert!(u128::from(l.sectors) * u128::from(ss) >= u128::from(size).min(len * 8 * u128::from(ss)));
                }
                Err(LayoutError::Overflow) => prop_assert!(data > u128::from(u64::MAX) || size.checked_add(u64::from(ss)).is_none()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
