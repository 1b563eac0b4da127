//! Merging UML copy-on-write files back into full disk images.
//!
//! A COW file records, sector by sector, what a UML wrote over a read-only
//! backing image. [`merge::merge_to_new`] folds both into a new image;
//! [`merge::merge_in_place`] writes the changes into the backing file itself;
//! [`info::inspect`] describes a COW file.

pub mod backing;
pub mod cli;
pub mod cow_file;
pub mod dirty_map;
mod error;
pub mod extents;
pub mod info;
pub mod lock;
pub mod merge;
pub mod progress;

pub use error::MooError;
