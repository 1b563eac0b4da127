//! Network namespaces a test creates, removed with their devices when dropped.

use std::path::Path;
use std::process::{Command, Output};

use crate::host_program;

/// A network namespace of the test's own.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// Creates `<tag>-<our pid>`, so parallel test binaries never share one.
    pub fn new(tag: &str) -> Self {
        let name = format!("{tag}-{}", std::process::id());
        let out = ip_command()
            .args(["netns", "add", &name])
            .output()
            .expect("running ip");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Self { name }
    }

    /// Its name, for `ip netns exec` and `UmlBuilder::netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS` and insists it succeeds.
    pub fn ip(&self, args: &[&str]) {
        let out = ip_command()
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {out:?}",
            self.name
        );
    }

    /// What `ip -n NAME ARGS` prints (empty if it fails).
    pub fn show(&self, args: &[&str]) -> String {
        let out = ip_command()
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A device's sysfs attribute as seen inside the namespace, trimmed
    /// (empty when the device or attribute does not exist).
    pub fn sysfs(&self, device: &str, file: &str) -> String {
        let out = self.run(
            Path::new("cat"),
            &[&format!("/sys/class/net/{device}/{file}")],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child's PID is the program's).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = ip_command();
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program ARGS` inside the namespace and collects its output.
    pub fn run(&self, program: &Path, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("running ip netns exec")
    }
}

fn ip_command() -> Command {
    Command::new(host_program("ip", "iproute2"))
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        let _ = ip_command().args(["netns", "del", &self.name]).status();
    }
}
