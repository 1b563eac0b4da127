//! Creating UML COW files: V3 headers equal to the C `uml_mkcow`'s, written atomically.

mod backing;
pub mod cli;
mod create;

pub use backing::{BackingFile, absolutize};
pub use create::{MkcowError, create_cow};
