//! Booting, watching and tearing down one UML guest.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::host_program;
use crate::image::RootImage;
use crate::wait::try_wait_until;

/// How long a guest gets to bring up its mconsole socket.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Describes a guest to boot; its work directory exists from the start, so
/// tests can put disk images there before booting.
#[derive(Debug)]
pub struct UmlBuilder {
    workdir: TempDir,
    umid: String,
    script: String,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
    mem: String,
    netns: Option<String>,
    user: Option<(u32, u32)>,
    groups: Vec<u32>,
    prefix: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl UmlBuilder {
    /// A guest whose init runs `script` (busybox sh) and then powers off.
    pub fn new(script: &str) -> Self {
        let workdir = tempfile::Builder::new()
            .prefix("uml-test-")
            .tempdir()
            .expect("creating the guest's work directory");
        let umid = format!(
            "t{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            workdir,
            umid,
            script: script.to_owned(),
            files: Vec::new(),
            args: Vec::new(),
            mem: "128M".to_owned(),
            netns: None,
            user: None,
            groups: Vec::new(),
            prefix: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The directory that holds this guest's images, uml dir and any test files.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The umid the guest will run under.
    pub fn umid(&self) -> &str {
        &self.umid
    }

    /// The uml dir the guest will use (its mconsole is `<uml_dir>/<umid>/mconsole`).
    pub fn uml_dir(&self) -> PathBuf {
        self.workdir.path().join("uml")
    }

    /// Adds a file to the guest's root image.
    pub fn file(mut self, guest_path: &str, contents: &[u8]) -> Self {
        self.files.push((guest_path.to_owned(), contents.to_vec()));
        self
    }

    /// Adds a kernel command-line argument (`ubd1=...`, `eth0=...`, `mconsole=notify:...`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets guest memory (default 128M; smaller boots sometimes panic on this kernel).
    pub fn mem(mut self, mem: &str) -> Self {
        self.mem = mem.to_owned();
        self
    }

    /// Runs the kernel inside the named network namespace (`ip netns exec`, which
    /// execs in place, so the PID is still the kernel's). Abstract socket names
    /// are per namespace: a guest must share its switch's.
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    /// Runs the kernel as `uid`:`gid` (through setpriv, with no supplementary
    /// groups); the guest's work directory is handed to that user.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Gives the user of [`UmlBuilder::user`] these supplementary groups
    /// instead of none.
    pub fn groups(mut self, groups: &[u32]) -> Self {
        self.groups = groups.to_vec();
        self
    }

    /// Starts the kernel through a command that execs its arguments (for
    /// example a shell that sets up a mount namespace first).
    pub fn launcher(mut self, prefix: &[&str]) -> Self {
        self.prefix = prefix.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets an environment variable of the kernel process (for example `PATH`,
    /// where it finds `uml_net`).
    pub fn env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Builds the root image and starts the kernel without waiting for anything.
    pub fn start(self) -> Uml {
        let root = self.workdir.path().join("root.img");
        let staging = self.workdir.path().join("root");
        let mut image = RootImage::new(&staging, &self.script);
        for (path, contents) in &self.files {
            image = image.file(path, contents);
        }
        image.build(&root);
        let uml_dir = self.uml_dir();
        // The launcher chain, outermost first: namespace, then identity, then the kernel.
        let mut chain: Vec<std::ffi::OsString> = self.prefix.iter().map(Into::into).collect();
        if let Some(ns) = &self.netns {
            chain.push(host_program("ip", "iproute2").into());
            chain.extend(["netns", "exec", ns.as_str()].map(Into::into));
        }
        if let Some((uid, gid)) = self.user {
            chown_tree(self.workdir.path(), uid, gid);
            chain.push(host_program("setpriv", "util-linux").into());
            chain.extend(
                [
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    if self.groups.is_empty() {
                        "--clear-groups".to_owned()
                    } else {
                        let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                        format!("--groups={}", list.join(","))
                    },
                ]
                .map(Into::into),
            );
        }
        chain.push(host_program("linux.uml", "user-mode-linux").into());
        let mut cmd = Command::new(&chain[0]);
        cmd.args(&chain[1..]);
        cmd.arg(format!("ubd0={}", root.display()))
            .arg("root=/dev/ubda")
            .arg(format!("mem={}", self.mem))
            .arg(format!("umid={}", self.umid))
            .arg(format!("uml_dir={}/", uml_dir.display()))
            .args(["con=null", "ssl=null", "con0=fd:0,fd:1", "init=/init"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so teardown reaches every helper it forks.
            .process_group(0);
        let mut child = cmd.spawn().expect("starting linux.uml");
        let console = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            capture(out, Arc::clone(&console));
        }
        if let Some(err) = child.stderr.take() {
            capture(err, Arc::clone(&console));
        }
        Uml {
            child,
            exit: None,
            console,
            umid: self.umid,
            uml_dir,
            workdir: self.workdir,
        }
    }

    /// Starts the kernel and waits until its mconsole socket exists.
    pub fn boot(self) -> Uml {
        let mut uml = self.start();
        uml.wait_for_mconsole();
        uml
    }
}

fn capture(mut stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut console) = into.lock() {
                console.extend_from_slice(&buf[..n]);
            }
        }
    });
}

/// A running (or finished) guest. Dropping it kills what is left and removes its files.
#[derive(Debug)]
pub struct Uml {
    child: Child,
    exit: Option<ExitStatus>,
    console: Arc<Mutex<Vec<u8>>>,
    umid: String,
    uml_dir: PathBuf,
    workdir: TempDir,
}

impl Uml {
    /// Host PID of the kernel process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's umid.
    pub fn umid(&self) -> &str {
        &self.umid
    }

    /// The private uml dir.
    pub fn uml_dir(&self) -> &Path {
        &self.uml_dir
    }

    /// The work directory (root image, test files).
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Path of the guest's mconsole socket.
    pub fn mconsole_path(&self) -> PathBuf {
        self.uml_dir.join(&self.umid).join("mconsole")
    }

    /// Everything the guest printed so far, with the console's `\r\n` turned into `\n`.
    pub fn console(&self) -> String {
        let bytes = self.console.lock().map(|c| c.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// Whether the kernel process has exited (recording its status).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("polling linux.uml");
        }
        self.exit.is_some()
    }

    /// Waits until the mconsole socket exists; panics with the console if the
    /// kernel dies first or the boot deadline passes.
    pub fn wait_for_mconsole(&mut self) {
        let path = self.mconsole_path();
        self.wait_until(BOOT_DEADLINE, "the mconsole socket", |_| path.exists());
    }

    /// Waits until the console contains `needle`; panics with the console on timeout.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(timeout, needle, |uml| uml.console().contains(needle));
    }

    fn wait_until(&mut self, timeout: Duration, what: &str, mut done: impl FnMut(&Self) -> bool) {
        self.poll(timeout, what, |uml| {
            if done(uml) {
                return Some(());
            }
            // An exited guest may still have satisfied the condition on its way out.
            (uml.has_exited() && !done(uml)).then(|| {
                panic!(
                    "guest {} exited ({:?}) before {what} appeared; console:\n{}",
                    uml.umid,
                    uml.exit,
                    uml.console()
                )
            })
        })
    }

    /// Waits for the kernel to exit; panics with the console on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.poll(timeout, "exit", |uml| {
            uml.has_exited();
            uml.exit
        })
    }

    /// Polls `check` until it yields a value; panics with the console at the deadline.
    fn poll<R>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&mut Self) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + timeout;
        match try_wait_until(deadline, || check(self)) {
            Some(value) => value,
            None => panic!(
                "guest {}: no {what} within {timeout:?}; console:\n{}",
                self.umid,
                self.console()
            ),
        }
    }
}

impl Drop for Uml {
    fn drop(&mut self) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        if !self.has_exited() {
            // The group id is our child's PID: only processes we started.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // A kernel that died abruptly (SIGINT, SIGKILL) can leave its stopped
        // helper processes behind: kill those of its group that run linux.uml.
        for helper in leftover_helpers(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(helper), Signal::SIGKILL);
        }
    }
}

/// Processes in process group `group` whose command is linux.uml.
fn leftover_helpers(group: i32) -> Vec<i32> {
    uml_host::process::group_members(group)
        .into_iter()
        .filter(|m| m.program_ends_with(b"linux.uml"))
        .map(|m| m.pid)
        .collect()
}

/// Hands a directory tree to another user, so a guest running as them can use it.
fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown of the guest's directory");
    for entry in std::fs::read_dir(dir)
        .expect("reading the guest's directory")
        .flatten()
    {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&path, uid, gid);
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).expect("chown of a guest file");
        }
    }
}
