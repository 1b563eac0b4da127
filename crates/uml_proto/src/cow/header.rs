//! COW headers of all versions: V1, V2, V3 and the broken 64-bit V3 layout.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zerocopy::byteorder::{BigEndian, I32, NativeEndian, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{COW_MAGIC, KERNEL_SECTOR_SIZE, MAX_BACKING_PATH};

/// Byte layout of a V1 header (280 bytes, fields host-endian).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct V1Wire {
    /// [`COW_MAGIC`] in host or big-endian order.
    pub magic: [u8; 4],
    /// 1, in the same order as the magic.
    pub version: [u8; 4],
    /// NUL-terminated absolute backing path.
    pub backing_file: [u8; 256],
    /// Backing file mtime, seconds.
    pub mtime: U32<NativeEndian>,
    /// Backing file size, bytes.
    pub size: U64<NativeEndian>,
    /// Sector size.
    pub sectorsize: I32<NativeEndian>,
}

/// Byte layout of a V2 header (4120 bytes; magic and version in either order, the rest big-endian).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct V2Wire {
    /// [`COW_MAGIC`] in host or big-endian order.
    pub magic: [u8; 4],
    /// 2, in the same order as the magic.
    pub version: [u8; 4],
    /// NUL-terminated absolute backing path.
    pub backing_file: [u8; 4096],
    /// Backing file mtime, seconds.
    pub mtime: U32<BigEndian>,
    /// Backing file size, bytes.
    pub size: U64<BigEndian>,
    /// Sector size.
    pub sectorsize: I32<BigEndian>,
}

/// Byte layout of a V3 header (4128 bytes, big-endian): what the kernel and `uml_mkcow` write.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct V3Wire {
    /// [`COW_MAGIC`], written big-endian.
    pub magic: [u8; 4],
    /// 3, in the same order as the magic.
    pub version: [u8; 4],
    /// Backing file mtime, seconds, truncated to 32 bits.
    pub mtime: U32<BigEndian>,
    /// Backing file size, bytes.
    pub size: U64<BigEndian>,
    /// Sector size the size formulas use (the kernel's I/O is always 512).
    pub sectorsize: I32<BigEndian>,
    /// Alignment of the bitmap and data area (the page size).
    pub alignment: I32<BigEndian>,
    /// 0: bitmap format, the only one defined.
    pub cow_format: I32<BigEndian>,
    /// NUL-terminated absolute backing path.
    pub backing_file: [u8; 4096],
}

/// Byte layout of the V3 header as 64-bit builds wrote it before December 2005:
/// C alignment inserted padding after `mtime` and at the end (4136 bytes).
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct BrokenV3Wire {
    /// [`COW_MAGIC`], written big-endian.
    pub magic: [u8; 4],
    /// 3, in the same order as the magic.
    pub version: [u8; 4],
    /// Backing file mtime, seconds.
    pub mtime: U32<BigEndian>,
    /// C struct padding; always zero, which is how this layout is recognised.
    pub pad_after_mtime: [u8; 4],
    /// Backing file size, bytes.
    pub size: U64<BigEndian>,
    /// Sector size.
    pub sectorsize: I32<BigEndian>,
    /// Alignment.
    pub alignment: I32<BigEndian>,
    /// 0: bitmap format.
    pub cow_format: I32<BigEndian>,
    /// NUL-terminated absolute backing path.
    pub backing_file: [u8; 4096],
    /// C struct tail padding.
    pub pad_tail: [u8; 4],
}

const _: () = assert!(size_of::<V1Wire>() == 280);
const _: () = assert!(size_of::<V2Wire>() == 4120);
const _: () = assert!(size_of::<V3Wire>() == 4128);
const _: () = assert!(size_of::<BrokenV3Wire>() == 4136);

/// Which header layout a COW file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowVersion {
    /// 280-byte header, host-endian fields.
    V1,
    /// 4120-byte header, big-endian fields.
    V2,
    /// 4128-byte header, big-endian fields.
    V3,
    /// V3 written with the padded 64-bit layout (4136 bytes); read, never written by tools.
    V3Broken,
}

impl CowVersion {
    /// Size of this version's header struct in bytes.
    pub fn header_len(self) -> usize {
        match self {
            CowVersion::V1 => size_of::<V1Wire>(),
            CowVersion::V2 => size_of::<V2Wire>(),
            CowVersion::V3 => size_of::<V3Wire>(),
            CowVersion::V3Broken => size_of::<BrokenV3Wire>(),
        }
    }

    /// The number stored in the version field.
    pub fn number(self) -> u32 {
        match self {
            CowVersion::V1 => 1,
            CowVersion::V2 => 2,
            CowVersion::V3 | CowVersion::V3Broken => 3,
        }
    }
}

/// A decoded COW header, independent of the layout it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowHeader {
    /// The layout.
    pub version: CowVersion,
    /// Whether magic and version were stored big-endian (V3 always is when the kernel writes it).
    pub magic_big_endian: bool,
    /// Backing file mtime in seconds, as the header stores it (32 bits).
    pub mtime: u32,
    /// Backing file size in bytes.
    pub size: u64,
    /// Sector size used by the size formulas.
    pub sectorsize: u32,
    /// Alignment of bitmap and data (V1 and V2 use the sector size).
    pub alignment: u32,
    /// Format of the dirty map; 0 (bitmap) is the only one defined.
    pub cow_format: u32,
    /// The backing path, without its NUL.
    pub backing_file: Vec<u8>,
}

/// Why a COW header could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CowHeaderError {
    /// Fewer than 8 bytes: not even magic and version.
    #[error("short header: {len} bytes")]
    Short {
        /// Bytes read.
        len: usize,
    },
    /// The magic matches in neither byte order.
    #[error("not a COW file (no COW magic)")]
    NotCow,
    /// A version number this format never had.
    #[error("invalid COW version {0}")]
    InvalidVersion(u32),
    /// The file ends inside the header of the version it announces.
    #[error("truncated V{version} header: {len} of {needed} bytes")]
    Truncated {
        /// Version number announced.
        version: u32,
        /// Bytes read.
        len: usize,
        /// Header size of that version.
        needed: usize,
    },
    /// Sector size zero or negative: every formula would divide by it.
    #[error("invalid sector size {0}")]
    BadSectorSize(i64),
    /// Alignment zero or negative.
    #[error("invalid alignment {0}")]
    BadAlignment(i64),
    /// The backing path field has no NUL.
    #[error("backing file name is not NUL-terminated")]
    UnterminatedPath,
    /// The backing path does not fit in this version's field.
    #[error("backing file name is {len} bytes; names are limited to {max} characters")]
    PathTooLong {
        /// Path length.
        len: usize,
        /// Longest path the field holds.
        max: usize,
    },
    /// The backing path is empty or has a NUL inside.
    #[error("backing file name is empty or contains a NUL byte")]
    BadPath,
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The fields every layout stores, read in that layout's byte order.
struct Fields<'a> {
    mtime: u32,
    size: u64,
    sectorsize: i32,
    alignment: Option<i32>,
    cow_format: i32,
    backing_file: &'a [u8],
}

impl V1Wire {
    fn fields(&self) -> Fields<'_> {
        Fields {
            mtime: self.mtime.get(),
            size: self.size.get(),
            sectorsize: self.sectorsize.get(),
            alignment: None,
            cow_format: 0,
            backing_file: &self.backing_file,
        }
    }
}

impl V2Wire {
    fn fields(&self) -> Fields<'_> {
        Fields {
            mtime: self.mtime.get(),
            size: self.size.get(),
            sectorsize: self.sectorsize.get(),
            alignment: None,
            cow_format: 0,
            backing_file: &self.backing_file,
        }
    }
}

impl V3Wire {
    fn fields(&self) -> Fields<'_> {
        Fields {
            mtime: self.mtime.get(),
            size: self.size.get(),
            sectorsize: self.sectorsize.get(),
            alignment: Some(self.alignment.get()),
            cow_format: self.cow_format.get(),
            backing_file: &self.backing_file,
        }
    }
}

impl BrokenV3Wire {
    fn fields(&self) -> Fields<'_> {
        Fields {
            mtime: self.mtime.get(),
            size: self.size.get(),
            sectorsize: self.sectorsize.get(),
            alignment: Some(self.alignment.get()),
            cow_format: self.cow_format.get(),
            backing_file: &self.backing_file,
        }
    }
}

/// A stored (signed) sector size or alignment as the positive number it must be.
fn positive(value: i32, err: fn(i64) -> CowHeaderError) -> Result<u32, CowHeaderError> {
    u32::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or(err(i64::from(value)))
}

/// The inverse of [`positive`]: a sector size or alignment as the signed field stores it.
fn storable(value: u32, err: fn(i64) -> CowHeaderError) -> Result<i32, CowHeaderError> {
    i32::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or(err(i64::from(value)))
}

fn path_field(field: &[u8]) -> Result<Vec<u8>, CowHeaderError> {
    let nul = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(CowHeaderError::UnterminatedPath)?;
    Ok(field[..nul].to_vec())
}

fn header_of<T: FromBytes + KnownLayout + Immutable>(
    bytes: &[u8],
    version: u32,
) -> Result<&T, CowHeaderError> {
    T::ref_from_prefix(bytes)
        .map(|(wire, _)| wire)
        .map_err(|_| CowHeaderError::Truncated {
            version,
            len: bytes.len(),
            needed: size_of::<T>(),
        })
}

impl CowHeader {
    /// The largest header of any version: read this many bytes (or up to EOF) to parse.
    pub const MAX_LEN: usize = size_of::<BrokenV3Wire>();

    /// A V3 header as the kernel and `uml_mkcow` write it: sector size 512, alignment 4096.
    pub fn new_v3(backing_file: &Path, mtime: u32, size: u64) -> Self {
        Self {
            version: CowVersion::V3,
            magic_big_endian: true,
            mtime,
            size,
            sectorsize: KERNEL_SECTOR_SIZE,
            alignment: 4096,
            cow_format: 0,
            backing_file: backing_file.as_os_str().as_bytes().to_vec(),
        }
    }

    /// The backing path as a filesystem path.
    pub fn backing_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.backing_file))
    }

    /// Decodes a header from the start of a COW file; `bytes` may be longer than the header.
    pub fn parse(bytes: &[u8]) -> Result<Self, CowHeaderError> {
        let (Some(magic), Some(version)) = (bytes.get(0..4), bytes.get(4..8)) else {
            return Err(CowHeaderError::Short { len: bytes.len() });
        };
        let (magic, version) = (<[u8; 4]>::try_from(magic), <[u8; 4]>::try_from(version));
        let (Ok(magic), Ok(version)) = (magic, version) else {
            return Err(CowHeaderError::Short { len: bytes.len() });
        };
        let (magic_big_endian, number) = if u32::from_ne_bytes(magic) == COW_MAGIC {
            (cfg!(target_endian = "big"), u32::from_ne_bytes(version))
        } else if u32::from_be_bytes(magic) == COW_MAGIC {
            (true, u32::from_be_bytes(version))
        } else {
            return Err(CowHeaderError::NotCow);
        };
        // In a correct V3 the bytes at offset 32 start the absolute path; in the
        // broken layout they are the (zero) cow_format.
        let broken = bytes.get(32..36).is_none_or(|b| b == [0; 4]);
        let (version, fields) = match number {
            1 => (CowVersion::V1, header_of::<V1Wire>(bytes, 1)?.fields()),
            2 => (CowVersion::V2, header_of::<V2Wire>(bytes, 2)?.fields()),
            3 if !broken => (CowVersion::V3, header_of::<V3Wire>(bytes, 3)?.fields()),
            3 => (
                CowVersion::V3Broken,
                header_of::<BrokenV3Wire>(bytes, 3)?.fields(),
            ),
            other => return Err(CowHeaderError::InvalidVersion(other)),
        };
        let sectorsize = positive(fields.sectorsize, CowHeaderError::BadSectorSize)?;
        let header = Self {
            version,
            magic_big_endian,
            mtime: fields.mtime,
            size: fields.size,
            sectorsize,
            // V1 and V2 align to the sector size.
            alignment: match fields.alignment {
                Some(alignment) => positive(alignment, CowHeaderError::BadAlignment)?,
                None => sectorsize,
            },
            // The field is a C int; the value's bits are kept as they are.
            cow_format: u32::from_ne_bytes(fields.cow_format.to_ne_bytes()),
            backing_file: path_field(fields.backing_file)?,
        };
        Ok(header)
    }

    /// Reads and decodes the header at the reader's position (up to [`Self::MAX_LEN`] bytes).
    pub fn read_from<R: Read>(reader: &mut R) -> Result<Self, CowHeaderError> {
        let mut buf = Vec::with_capacity(Self::MAX_LEN);
        reader.take(Self::MAX_LEN as u64).read_to_end(&mut buf)?;
        Self::parse(&buf)
    }

    /// Encodes the header in its version's layout. Tools should only ever write V3;
    /// the other layouts exist for test fixtures. Padding is zeroed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CowHeaderError> {
        let field_len = match self.version {
            CowVersion::V1 => 256,
            _ => MAX_BACKING_PATH + 1,
        };
        if self.backing_file.is_empty() || self.backing_file.contains(&0) {
            return Err(CowHeaderError::BadPath);
        }
        if self.backing_file.len() >= field_len {
            return Err(CowHeaderError::PathTooLong {
                len: self.backing_file.len(),
                max: field_len - 1,
            });
        }
        let sectorsize = storable(self.sectorsize, CowHeaderError::BadSectorSize)?;
        let alignment = storable(self.alignment, CowHeaderError::BadAlignment)?;
        let cow_format = i32::from_ne_bytes(self.cow_format.to_ne_bytes());
        let number = self.version.number();
        let (magic, version) = if self.magic_big_endian {
            (COW_MAGIC.to_be_bytes(), number.to_be_bytes())
        } else {
            (COW_MAGIC.to_le_bytes(), number.to_le_bytes())
        };
        let mut path = [0u8; MAX_BACKING_PATH + 1];
        path[..self.backing_file.len()].copy_from_slice(&self.backing_file);
        let bytes = match self.version {
            CowVersion::V1 => {
                let mut backing_file = [0u8; 256];
                backing_file.copy_from_slice(&path[..256]);
                V1Wire {
                    magic,
                    version,
                    backing_file,
                    mtime: U32::new(self.mtime),
                    size: U64::new(self.size),
                    sectorsize: I32::new(sectorsize),
                }
                .as_bytes()
                .to_vec()
            }
            CowVersion::V2 => V2Wire {
                magic,
                version,
                backing_file: path,
                mtime: U32::new(self.mtime),
                size: U64::new(self.size),
                sectorsize: I32::new(sectorsize),
            }
            .as_bytes()
            .to_vec(),
            CowVersion::V3 => V3Wire {
                magic,
                version,
                mtime: U32::new(self.mtime),
                size: U64::new(self.size),
                sectorsize: I32::new(sectorsize),
                alignment: I32::new(alignment),
                cow_format: I32::new(cow_format),
                backing_file: path,
            }
            .as_bytes()
            .to_vec(),
            CowVersion::V3Broken => BrokenV3Wire {
                magic,
                version,
                mtime: U32::new(self.mtime),
                pad_after_mtime: [0; 4],
                size: U64::new(self.size),
                sectorsize: I32::new(sectorsize),
                alignment: I32::new(alignment),
                cow_format: I32::new(cow_format),
                backing_file: path,
                pad_tail: [0; 4],
            }
            .as_bytes()
            .to_vec(),
        };
        Ok(bytes)
    }

    /// Writes the encoded header.
    pub fn write_to<W: Write>(&self, writer: &mut W) -> Result<(), CowHeaderError> {
        writer.write_all(&self.to_bytes()?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v3_as_uml_mkcow_writes_it() {
        let h = CowHeader::new_v3(Path::new("/srv/root.img"), 0x6543_2100, 16 << 20);
        let b = h.to_bytes().unwrap();
        assert_eq!(b.len(), 4128);
        assert_eq!(&b[0..8], &[0x4f, 0x4f, 0x4f, 0x4d, 0, 0, 0, 3]);
        assert_eq!(&b[8..12], &[0x65, 0x43, 0x21, 0x00]);
        assert_eq!(&b[12..20], &(16u64 << 20).to_be_bytes());
        assert_eq!(&b[20..32], &[0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0, 0, 0]);
        assert_eq!(&b[32..45], b"/srv/root.img");
        assert!(b[45..].iter().all(|&x| x == 0));
        assert_eq!(CowHeader::parse(&b).unwrap(), h);
    }

    #[test]
    fn broken_v3_is_told_apart_by_offset_32() {
        let mut h = CowHeader::new_v3(Path::new("/a"), 1, 2);
        h.version = CowVersion::V3Broken;
        let b = h.to_bytes().unwrap();
        assert_eq!(b.len(), 4136);
        assert_eq!(&b[32..36], &[0; 4]);
        assert_eq!(CowHeader::parse(&b).unwrap(), h);
    }

    #[test]
    fn v1_with_either_magic_order() {
        for magic_big_endian in [false, true] {
            let h = CowHeader {
                version: CowVersion::V1,
                magic_big_endian,
                mtime: 7,
                size: 1000,
                sectorsize: 512,
                alignment: 512,
                cow_format: 0,
                backing_file: b"/b".to_vec(),
            };
            let b = h.to_bytes().unwrap();
            assert_eq!(b.len(), 280);
            assert_eq!(&b[268..276], &1000u64.to_ne_bytes());
            assert_eq!(CowHeader::parse(&b).unwrap(), h);
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            CowHeader::parse(b"OOOM"),
            Err(CowHeaderError::Short { len: 4 })
        ));
        assert!(matches!(
            CowHeader::parse(&[0; 300]),
            Err(CowHeaderError::NotCow)
        ));
        let mut b = CowHeader::new_v3(Path::new("/x"), 0, 0).to_bytes().unwrap();
        assert!(matches!(
            CowHeader::parse(&b[..4000]),
            Err(CowHeaderError::Truncated {
                version: 3,
                needed: 4128,
                ..
            })
        ));
        b[24..28].fill(0); // alignment 0
        assert!(matches!(
            CowHeader::parse(&b),
            Err(CowHeaderError::BadAlignment(0))
        ));
        b[7] = 9;
        assert!(matches!(
            CowHeader::parse(&b),
            Err(CowHeaderError::InvalidVersion(9))
        ));
        let long = CowHeader::new_v3(Path::new(&"/".repeat(4096)), 0, 0);
        assert!(matches!(
            long.to_bytes(),
            Err(CowHeaderError::PathTooLong {
                len: 4096,
                max: 4095
            })
        ));
    }

    fn any_header() -> impl Strategy<Value = CowHeader> {
        let version = prop_oneof![
            Just(CowVersion::V1),
            Just(CowVersion::V2),
            Just(CowVersion::V3),
            Just(CowVersion::V3Broken)
        ];
        (
            version,
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            1u32..=i32::MAX as u32,
            1u32..=i32::MAX as u32,
            proptest::collection::vec(1u8..=255, 1..255),
        )
            .prop_map(|(version, be, mtime, size, ss, align, mut path)| {
                path[0] = b'/';
                let v12 = matches!(version, CowVersion::V1 | CowVersion::V2);
                CowHeader {
                    version,
                    magic_big_endian: be,
                    mtime,
                    size,
                    sectorsize: ss,
                    alignment: if v12 { ss } else { align },
                    cow_format: 0,
                    backing_file: path,
                }
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(h in any_header()) {
            let bytes = h.to_bytes().unwrap();
            prop_assert_eq!(bytes.len(), h.version.header_len());
            prop_assert_eq!(CowHeader::parse(&bytes).unwrap(), h);
        }

        #[test]
        fn header_parse_never_panics(d in proptest::collection::vec(any::<u8>(), 0..4200)) {
            let _ = CowHeader::parse(&d);
        }
    }
}
