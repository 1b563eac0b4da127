//! Real-kernel test bed shared by every tool's tests.
//!
//! [`UmlBuilder`] makes a busybox root image from an init script, boots
//! `linux.uml` under a unique umid with a private uml dir, and hands back a [`Uml`]
//! that captures the console and kills the guest (by PID, with its process group)
//! and removes its files when dropped.
//!
//! The test bed is provisioned by `cargo xtask test`; a missing kernel, busybox or
//! mke2fs is a test failure with a message naming the package, never a skip.

mod image;
mod uml;

pub use image::RootImage;
pub use uml::{Uml, UmlBuilder};

use std::path::PathBuf;

/// Finds a host program in PATH or the sbin directories, or panics naming the Debian package.
pub fn host_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found: install the Debian package {package} (cargo xtask test does)"
            )
        })
}
