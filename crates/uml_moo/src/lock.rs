//! Refusing files a running UML holds (the locks themselves: `uml_host::file_lock`).

use std::fs::File;
use std::path::Path;

pub use uml_host::file_lock::Access;
use uml_host::file_lock::LockError;

use crate::MooError;

/// Locks `file` for the life of its open file description, or says who holds it.
pub fn lock(file: &File, path: &Path, access: Access) -> Result<(), MooError> {
    uml_host::file_lock::lock(file, access).map_err(|e| match e {
        LockError::Held { holder } => MooError::Locked {
            path: path.to_path_buf(),
            holder: uml_host::file_lock::by_holder(holder),
        },
        LockError::Io(source) => MooError::Io {
            action: "locking",
            path: path.to_path_buf(),
            source,
        },
    })
}
