//! Makes sure the machine has what the real-kernel tests need, installing it where it can.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A program the tests run, and the package it comes from.
struct Need {
    program: &'static str,
    package: &'static str,
}

const NEEDS: &[Need] = &[
    Need {
        program: "linux.uml",
        package: "user-mode-linux",
    },
    Need {
        program: "uml_mkcow",
        package: "uml-utilities",
    },
    Need {
        program: "uml_moo",
        package: "uml-utilities",
    },
    Need {
        program: "uml_mconsole",
        package: "uml-utilities",
    },
    Need {
        program: "uml_switch",
        package: "uml-utilities",
    },
    Need {
        program: "tunctl",
        package: "uml-utilities",
    },
    Need {
        program: "mkfs.ext2",
        package: "e2fsprogs",
    },
    Need {
        program: "debugfs",
        package: "e2fsprogs",
    },
    Need {
        program: "ip",
        package: "iproute2",
    },
    Need {
        program: "uml_net",
        package: "uml-utilities",
    },
    Need {
        program: "setcap",
        package: "libcap2-bin",
    },
    // The C references of the port-helper and watchdog tests, at the fixed
    // paths the kernel runs them from.
    Need {
        program: "/usr/lib/uml/port-helper",
        package: "uml-utilities",
    },
    Need {
        program: "/usr/bin/uml_watchdog",
        package: "uml-utilities",
    },
    // The tests' stand-ins: a terminal window (script) and mount namespaces.
    Need {
        program: "script",
        package: "bsdutils",
    },
    Need {
        program: "unshare",
        package: "util-linux",
    },
    // The capture tests read the switch's pcapng with Wireshark's reader
    // (installed non-interactively: dumpcap is then not setuid).
    Need {
        program: "tshark",
        package: "tshark",
    },
    // The package: built (dpkg-shlibdeps), checked (lintian, systemd-analyze),
    // its switch socket-activated, its maintainer scripts' own needs.
    Need {
        program: "dpkg-shlibdeps",
        package: "dpkg-dev",
    },
    Need {
        program: "lintian",
        package: "lintian",
    },
    Need {
        program: "systemd-analyze",
        package: "systemd",
    },
    Need {
        program: "systemd-socket-activate",
        package: "systemd",
    },
    Need {
        program: "adduser",
        package: "adduser",
    },
    Need {
        program: "deb-systemd-helper",
        package: "init-system-helpers",
    },
    // The uml_net tests measure what a tap's fd allows with perl's ioctl.
    Need {
        program: "perl",
        package: "perl-base",
    },
];

/// Installs the test bed's packages if anything is missing (as root, with apt-get),
/// or fails with one line naming the packages.
pub fn ensure_test_bed() -> Result<()> {
    ensure(NEEDS, true, "the real-kernel tests")
}

/// What the switch benchmark runs besides the test bed: the peers it measures.
const BENCH_NEEDS: &[Need] = &[
    Need {
        program: "uml_switch",
        package: "uml-utilities",
    },
    Need {
        program: "vde_switch",
        package: "vde2",
    },
];

/// Installs what `bench switch` needs, as `ensure_test_bed` does for the tests.
pub fn ensure_bench_switch() -> Result<()> {
    ensure(BENCH_NEEDS, false, "the switch benchmark")
}

/// Installs the packages of every missing program of `needs` (and a static
/// busybox, when `busybox` is set), or fails naming them for `who`.
fn ensure(needs: &[Need], busybox: bool, who: &str) -> Result<()> {
    let missing = missing_packages(needs, busybox);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() || find_program("apt-get").is_none() {
        bail!(
            "{who} need the Debian packages {list}: install them (as root: apt-get install {list})"
        );
    }
    eprintln!("xtask: installing {list}");
    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing_packages(needs, busybox);
    if !still.is_empty() {
        bail!(
            "apt-get ran but these packages' programs are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

fn missing_packages(needs: &[Need], busybox: bool) -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = needs
        .iter()
        .filter(|need| find_program(need.program).is_none())
        .map(|need| need.package)
        .collect();
    let static_busybox =
        find_program("busybox").is_some_and(|p| is_static_elf(&p).unwrap_or(false));
    if busybox && !static_busybox {
        missing.push("busybox-static");
    }
    missing.sort_unstable();
    missing.dedup();
    missing
}

/// Looks a program up in PATH and the sbin directories (root's PATH may lack
/// them); an absolute name is taken as it is.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether an ELF executable has no program interpreter (PT_INTERP), i.e. is static.
/// The guest root image holds only busybox, so it must not need a dynamic loader.
fn is_static_elf(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |off: usize, len: usize| -> Option<u64> {
        let b = bytes.get(off..off + len)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    // Only 64-bit little-endian ELF is expected on this project's machines.
    if bytes.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (field(0x20, 8), field(0x36, 2), field(0x38, 2))
    else {
        return Ok(false);
    };
    const PT_INTERP: u64 = 3;
    let has_interp = (0..phnum).any(|i| {
        usize::try_from(phoff + i * phentsize)
            .ok()
            .and_then(|off| field(off, 4))
            == Some(PT_INTERP)
    });
    Ok(!has_interp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        // The test binary itself is dynamically linked against libc.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(
            !is_static_elf(&script).unwrap(),
            "a script is no static ELF"
        );
        // A minimal 64-bit ELF header with no program headers has no interpreter.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let minimal = dir.join("minimal");
        std::fs::write(&minimal, &elf).unwrap();
        assert!(is_static_elf(&minimal).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
