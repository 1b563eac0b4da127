//! The UML copy-on-write (COW) file format: header, bitmap and data area.

mod bitmap;
mod header;
mod layout;

pub use bitmap::{DirtyRuns, bit_is_set, set_bit};
pub use header::{BrokenV3Wire, CowHeader, CowHeaderError, CowVersion, V1Wire, V2Wire, V3Wire};
pub use layout::{CowLayout, LayoutError};

/// The COW magic, "OOOM" when stored big-endian.
pub const COW_MAGIC: u32 = 0x4F4F_4F4D;
/// The sector size the kernel always does I/O in, whatever the header says.
pub const KERNEL_SECTOR_SIZE: u32 = 512;
/// Longest backing path a header holds (4096 bytes minus the NUL).
pub const MAX_BACKING_PATH: usize = 4095;
