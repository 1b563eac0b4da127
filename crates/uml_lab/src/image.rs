//! `image busybox OUT`: a small root image from the host's static busybox,
//! with an init that runs the lab's startup script, so a lab needs nothing
//! downloaded.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::launch::program;

/// Why the image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A host program is missing.
    #[error("`{program}` not found: install the Debian package {package}")]
    Missing {
        /// The program.
        program: &'static str,
        /// Its package.
        package: &'static str,
    },
    /// busybox is not statically linked: it would not run in the guest.
    #[error("{} is not statically linked (install busybox-static)", .0.display())]
    NotStatic(PathBuf),
    /// A file could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A program failed.
    #[error("{0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// busybox init's table: the rc script at boot, a shell on con0 and con1, a
/// power-off on Ctrl-Alt-Del (`uml_lab stop` sends `cad`), kept in a script
/// a lab may change.
const INITTAB: &str = "::sysinit:/etc/rc
::respawn:/etc/console
tty1::respawn:/etc/console
::ctrlaltdel:/bin/sh /etc/cad
::shutdown:/bin/sh /etc/shutdown
";

/// Mounts the kernel filesystems and the lab's share (`/lab`, hostfs), runs
/// the set-up script uml_lab writes there (host name, interfaces) to its end,
/// then the startup script in the background. init starts the console shells
/// only after this script: the set-up must be done by then (a prompt printed
/// before `hostname` ran shows `(none)`), the startup may run for ever.
const RC: &str = "#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t hostfs hostfs /lab 2>/dev/null
ip link set lo up
if [ -f /lab/setup ]; then
  sh /lab/setup > /lab/setup.log 2>&1
fi
if [ -f /lab/startup ]; then
  UML_LAB_SET_UP=1 sh /lab/startup > /lab/startup.log 2>&1 &
fi
";

/// A shell when the console is a terminal someone can type on.
const CONSOLE: &str = "#!/bin/sh
export PATH=/bin:/sbin
/bin/sh -l
# A console with no input (log, null) ends the shell at once: respawn slowly.
sleep 2
";

const CAD: &str = "#!/bin/sh\n# What Ctrl-Alt-Del (mconsole cad) does.\nexec poweroff\n";

const SHUTDOWN: &str = "#!/bin/sh\numount /lab 2>/dev/null\nmount -o remount,ro / 2>/dev/null\n";

/// Builds the image at `out` (`size_mib` MiB, ext2).
pub fn busybox(out: &Path, size_mib: u64) -> Result<(), ImageError> {
    let busybox = program("busybox").ok_or(ImageError::Missing {
        program: "busybox",
        package: "busybox-static",
    })?;
    let mkfs = program("mkfs.ext2").ok_or(ImageError::Missing {
        program: "mkfs.ext2",
        package: "e2fsprogs",
    })?;
    let bytes = std::fs::read(&busybox).map_err(io(&busybox))?;
    if !is_static_elf(&bytes) {
        return Err(ImageError::NotStatic(busybox));
    }
    let staging_parent = tempfile::tempdir().map_err(io(Path::new("/tmp")))?;
    let root = staging_parent.path().join("root");
    for dir in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "root", "etc", "lab", "var",
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let target = root.join("bin/busybox");
    std::fs::write(&target, &bytes).map_err(io(&target))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&target))?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(io(&busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() && !applet.contains('/') {
            let link = root.join("bin").join(applet);
            symlink("busybox", &link).map_err(io(&link))?;
        }
    }
    let init = root.join("sbin/init");
    symlink("../bin/busybox", &init).map_err(io(&init))?;
    for (path, text, mode) in [
        ("etc/inittab", INITTAB, 0o644),
        ("etc/rc", RC, 0o755),
        ("etc/console", CONSOLE, 0o755),
        ("etc/cad", CAD, 0o755),
        ("etc/shutdown", SHUTDOWN, 0o755),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        (
            "etc/profile",
            "export PATH=/bin:/sbin\nPS1='\\h:\\w# '\n",
            0o644,
        ),
    ] {
        let file = root.join(path);
        std::fs::write(&file, text).map_err(io(&file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
            .map_err(io(&file))?;
    }
    let out_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".uml_lab-image")
        .tempfile_in(out_dir)
        .map_err(io(out_dir))?;
    let result = Command::new(&mkfs)
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(tmp.path())
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(io(&mkfs))?;
    if !result.status.success() {
        return Err(ImageError::Failed(format!(
            "mkfs.ext2 failed: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    tmp.persist(out).map_err(|e| ImageError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644)).map_err(io(out))?;
    Ok(())
}

/// Whether a 64-bit little-endian ELF executable has no program interpreter
/// (no PT_INTERP header): the guest's root holds busybox alone, no loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    let field = |off: u64, len: usize| -> Option<u64> {
        let off = usize::try_from(off).ok()?;
        let b = bytes.get(off..off.checked_add(len)?)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    if bytes.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (field(0x20, 8), field(0x36, 2), field(0x38, 2))
    else {
        return false;
    };
    const PT_INTERP: u64 = 3;
    !(0..count).any(|i| {
        i.checked_mul(size)
            .and_then(|o| o.checked_add(phoff))
            .and_then(|o| field(o, 4))
            == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh), "/bin/sh is dynamic on Debian");
        let busybox = crate::launch::program("busybox").unwrap();
        assert!(
            is_static_elf(&std::fs::read(busybox).unwrap()),
            "busybox-static"
        );
    }
}
