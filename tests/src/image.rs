//! Busybox root filesystem images built with `mkfs.ext2 -d`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_program;

/// Lines every init script starts with: the root fs is read-only, so only
/// kernel filesystems are mounted (devtmpfs is mounted by the kernel itself).
const INIT_PRELUDE: &str = "#!/bin/sh\n\
export PATH=/bin\n\
mount -t proc proc /proc\n\
mount -t sysfs sysfs /sys\n\
mount -t tmpfs tmpfs /tmp\n";

/// A root image in the making: a staging directory that becomes an ext2 image.
#[derive(Debug)]
pub struct RootImage {
    staging: PathBuf,
    size_mib: u64,
}

impl RootImage {
    /// Stages a busybox system under `staging` whose `/init` runs `script` and then powers off.
    pub fn new(staging: &Path, script: &str) -> Self {
        let busybox = host_program("busybox", "busybox-static");
        for dir in ["bin", "dev", "proc", "sys", "tmp", "mnt", "root", "etc"] {
            fs::create_dir_all(staging.join(dir)).expect("creating the staging tree");
        }
        fs::copy(&busybox, staging.join("bin/busybox")).expect("copying busybox");
        let list = Command::new(&busybox)
            .arg("--list")
            .output()
            .expect("running busybox --list");
        // Links are made here because the guest's root is read-only at boot.
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.contains('/') {
                symlink("busybox", staging.join("bin").join(applet))
                    .expect("linking a busybox applet");
            }
        }
        let init = format!("{INIT_PRELUDE}{script}\npoweroff -f\n");
        let init_path = staging.join("init");
        fs::write(&init_path, init).expect("writing /init");
        fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))
            .expect("making /init executable");
        Self {
            staging: staging.to_path_buf(),
            size_mib: 16,
        }
    }

    /// Adds a file to the image at `guest_path` (absolute inside the guest).
    pub fn file(self, guest_path: &str, contents: &[u8]) -> Self {
        let host = self.staging.join(guest_path.trim_start_matches('/'));
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent).expect("creating a directory in the staging tree");
        }
        fs::write(&host, contents).expect("writing a file into the staging tree");
        self
    }

    /// Sets the image size (default 16 MiB).
    pub fn size_mib(mut self, size_mib: u64) -> Self {
        self.size_mib = size_mib;
        self
    }

    /// Writes the ext2 image to `image`.
    pub fn build(&self, image: &Path) {
        let status = Command::new(host_program("mkfs.ext2", "e2fsprogs"))
            .args(["-q", "-F", "-d"])
            .arg(&self.staging)
            .arg(image)
            .arg(format!("{}M", self.size_mib))
            .status()
            .expect("running mkfs.ext2");
        assert!(
            status.success(),
            "mkfs.ext2 -d {} {} failed: {status}",
            self.staging.display(),
            image.display()
        );
    }
}
