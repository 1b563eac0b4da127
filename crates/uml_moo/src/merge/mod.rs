//! The two merges: into a new image file, and in place into the backing file.

mod in_place;
mod marker;
mod new_file;

pub use in_place::merge_in_place;
pub use marker::{is_present as marker_is_present, marker_path};
pub use new_file::merge_to_new;

use std::path::{Path, PathBuf};

use uml_proto::cow::CowVersion;

use crate::MooError;
use crate::backing::{Backing, backing_path};
use crate::cow_file::CowFile;
use crate::lock::{Access, lock};

/// Choices common to both merges.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// `-b`: the backing file to use instead of the header's.
    pub backing: Option<PathBuf>,
    /// `--force`: merge even if the backing file's size or mtime differ from the header's.
    pub force: bool,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
}

/// What a finished merge reports.
#[derive(Debug)]
pub struct Merged {
    /// The COW file's header version (the broken 64-bit V3 deserves a notice).
    pub version: CowVersion,
    /// Image bytes taken from the COW file.
    pub dirty_bytes: u64,
    /// Checks that failed and were overridden by `--force`.
    pub overridden: Vec<MooError>,
    /// Whether this run completed an interrupted in-place merge.
    pub resumed: bool,
    /// Whether the backing file already held every change, so nothing was written.
    pub already_merged: bool,
    /// What a merge into NEW wrote to.
    pub output: Output,
}

/// What a merge into NEW wrote to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// NEW did not exist (or the merge was in place).
    #[default]
    Created,
    /// A regular file NEW (or the one a symlink NEW names) was replaced whole.
    Replaced,
    /// NEW is a block device, written through.
    Device,
}

/// Both inputs opened, locked against running UMLs and size-checked.
struct Inputs {
    cow: CowFile,
    backing: Backing,
    overridden: Vec<MooError>,
}

impl Inputs {
    /// Opens the COW (read lock) and its backing file (`backing_access` lock).
    fn open(cow: &Path, opts: &MergeOptions, backing_access: Access) -> Result<Self, MooError> {
        let cow = CowFile::open(cow)?;
        lock(&cow.file, &cow.path, Access::Read)?;
        let path = backing_path(&cow.header, opts.backing.as_deref());
        let backing = Backing::open(&path, backing_access == Access::Write)?;
        if backing.identity == cow.identity {
            return Err(MooError::OwnBacking { path: cow.path });
        }
        lock(&backing.file, &backing.path, backing_access)?;
        let mut inputs = Self {
            cow,
            backing,
            overridden: Vec::new(),
        };
        let size_check = inputs.backing.check_size(&inputs.cow.header);
        inputs.override_if_forced(size_check, opts.force)?;
        Ok(inputs)
    }

    /// Keeps a failed check as a warning under `--force`, or fails.
    fn override_if_forced(
        &mut self,
        check: Result<(), MooError>,
        force: bool,
    ) -> Result<(), MooError> {
        match check {
            Ok(()) => Ok(()),
            Err(e) if force => {
                self.overridden.push(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn into_merged(self, dirty_bytes: u64, resumed: bool) -> Merged {
        Merged {
            version: self.cow.header.version,
            dirty_bytes,
            overridden: self.overridden,
            resumed,
            already_merged: false,
            output: Output::Created,
        }
    }
}
