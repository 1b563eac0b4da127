//! Real-kernel test bed shared by every tool's tests.
//!
//! [`UmlBuilder`] makes a busybox root image from an init script, boots
//! `linux.uml` under a unique umid with a private uml dir, and hands back a [`Uml`]
//! that captures the console and kills the guest (by PID, with its process group)
//! and removes its files when dropped.
//!
//! The test bed is provisioned by `cargo xtask test`; a missing kernel, busybox or
//! mke2fs is a test failure with a message naming the package, never a skip.

mod child_log;
pub mod cow;
mod image;
mod netns;
pub mod switch_client;
mod uml;
mod wait;

pub use child_log::ChildLog;
pub use image::RootImage;
pub use netns::NetNamespace;
pub use uml::{Uml, UmlBuilder};
pub use wait::{try_wait_until, wait_until};

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

/// The MD5 of a host file as `md5sum` prints it, to compare with a guest's `md5sum`.
pub fn host_md5(path: &std::path::Path) -> String {
    let out = std::process::Command::new(host_program("md5sum", "coreutils"))
        .arg(path)
        .output()
        .expect("running md5sum");
    assert!(out.status.success(), "md5sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum printed a digest")
        .to_owned()
}

/// `uml_switchctl --json MGMT ARGS...`, our build of it: its standard
/// output, the one JSON result (the command must succeed).
pub fn switchctl_json(mgmt: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(our_tool("uml_switchctl"))
        .arg("--json")
        .arg(mgmt)
        .args(args)
        .output()
        .expect("running uml_switchctl");
    assert!(
        out.status.success(),
        "uml_switchctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds (if needed) and returns one of this workspace's binaries, with the
/// profile the tests run under, so a test never runs a stale tool.
pub fn our_tool(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("locating the test executable");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test executable under <target>/<profile>/deps");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--package", name, "--bin", name]);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        )
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build of {name} failed: {status}");
    let path = profile_dir.join(name);
    assert!(path.is_file(), "{} missing after the build", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}

/// `cargo xtask ARGS` as a user runs it (`cargo run -p xtask`), in the
/// workspace and with the test's target directory, so it builds nothing twice.
pub fn xtask(args: &[&str]) -> std::process::Command {
    let exe = std::env::current_exe().expect("locating the test executable");
    // Test executables live in <target>/<profile>/deps/.
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test executable under <target>/<profile>/deps");
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test bed crate sits in the workspace");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["run", "--locked", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target);
    cmd
}

/// Runs a program with arguments in `dir` and collects its output.
pub fn run_in(
    program: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// The PID of a child process the test started, for `kill`.
pub fn pid_of(child: &std::process::Child) -> nix::unistd::Pid {
    pid(child.id())
}

/// A process id as `kill` takes it.
pub fn pid(raw: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(raw).expect("Linux PIDs fit an i32"))
}

/// A file offset or length as an index into bytes read into memory.
pub fn index(offset: u64) -> usize {
    usize::try_from(offset).expect("the tests run on 64-bit hosts")
}

/// The words of a [`UmlBuilder::launcher`] that shows the kernel `file` at
/// `fixed_path` (where the kernel runs a helper from, say), bind-mounted in a
/// private mount namespace: the host's file stays as it was. Needs root.
pub fn bind_mount_launcher(file: &std::path::Path, fixed_path: &str) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("mount --bind \"$0\" {fixed_path} && exec \"$@\""),
        &file.to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec()
}
