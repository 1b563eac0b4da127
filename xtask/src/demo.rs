//! `cargo xtask demo`: a newcomer's first look at the suite. Two small guests
//! on one of our switches (one on the daemon transport, one on BESS), booted
//! from COW files over one shared busybox image, ping each other; then the
//! switch's log, its port table by `uml_switchctl` through its management
//! socket, `uml_mconsole --list`, a halt through the mconsole, and
//! `uml_moo` merging one guest's COW. Everything it starts runs in its own
//! process group and is ended, and its directory removed, on the way out, on
//! success, failure or SIGINT/SIGTERM/SIGHUP alike.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;
use uml_testbed::{RootImage, try_wait_until};

/// How long a guest may take to boot and ping, on a slow shared machine.
const WAIT: Duration = Duration::from_secs(120);

/// What every guest runs: configured by `VAR=value` kernel arguments, which
/// the kernel hands to init as its environment. Lines meant for the demo's
/// output start with `demo:`.
const GUEST: &str = r#"ip link set "$IF" up
ip addr add "$IP/24" dev "$IF"
echo "demo: $NAME is up on $IF with $IP"
if [ -n "$NOTE" ]; then
  mount -o remount,rw /
  echo "$NOTE" > /demo-note
  sync
  echo "demo: $NAME wrote /demo-note into its COW file"
fi
if [ -n "$PEER" ]; then
  n=0
  until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done
  ping -c 5 -i 0.2 "$PEER" | sed 's/^/demo: /'
  echo "demo: PING-DONE"
fi
while true; do sleep 1; done"#;

/// Processes to end and the directory to remove, shared with the signal thread.
#[derive(Default)]
struct Cleanup {
    groups: Vec<Pid>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn run(&mut self) {
        for group in self.groups.drain(..) {
            // Each child leads its own process group: a UML's helper threads
            // and processes go with it.
            let _ = killpg(group, Signal::SIGKILL);
        }
        if let Some(dir) = self.dir.take() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => println!("==> removed {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("demo: could not remove {}: {e}", dir.display()),
            }
        }
    }
}

/// A started program whose output is collected (and echoed, with a prefix).
struct Running {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Running {
    fn start(
        name: &str,
        cmd: &mut Command,
        echo: fn(&str) -> bool,
        cleanup: &Shared,
    ) -> Result<Self> {
        println!("    $ {}", show(cmd));
        // Held from spawn to registration, so an interruption cannot miss the child.
        let mut registry = lock(cleanup);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = i32::try_from(child.id()).context("a process id out of range")?;
        registry.groups.push(Pid::from_raw(pid));
        drop(registry);
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let output = Arc::clone(&output);
            let prefix = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = line.trim_end_matches('\r').to_owned();
                    if echo(&line) {
                        println!("    {prefix:>8} | {}", line.trim_start_matches("demo: "));
                    }
                    if let Ok(mut out) = output.lock() {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            output,
        })
    }

    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until the output holds `needle`; fails with the output if the
    /// deadline passes or the program ends first.
    fn wait_for(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let found = try_wait_until(deadline, || {
            if self.output().contains(needle) {
                return Some(true);
            }
            matches!(self.child.try_wait(), Ok(Some(_))).then_some(false)
        });
        if found != Some(true) {
            bail!(
                "{} did not print '{needle}'; its output:\n{}",
                self.name,
                self.output()
            );
        }
        Ok(())
    }

    fn wait_exit(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        if try_wait_until(deadline, || self.child.try_wait().ok().flatten()).is_none() {
            bail!("{} did not end", self.name);
        }
        Ok(())
    }
}

type Shared = Arc<Mutex<Cleanup>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Cleanup> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `cargo xtask demo`.
pub fn run(root: &Path) -> Result<()> {
    crate::provision::ensure_test_bed()?;
    println!("==> building the tools (cargo build --release)");
    let bin = crate::dist::build_release(root)?;
    let cleanup: Shared = Arc::default();
    // Signals are taken by a thread of ours, which cleans up and exits; the
    // programs we start get the default mask back (std resets it at spawn).
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("blocking SIGINT, SIGTERM and SIGHUP")?;
    {
        let cleanup = Arc::clone(&cleanup);
        std::thread::spawn(move || {
            if let Ok(signal) = signals.wait() {
                // Held until the process exits: the main thread, which sees
                // its guests die, must not end the process first (with 1).
                let mut cleanup = lock(&cleanup);
                println!("==> {signal} received: stopping the guests and the switch");
                cleanup.run();
                std::process::exit(130);
            }
        });
    }
    let result = steps(&bin, &cleanup);
    lock(&cleanup).run();
    result
}

fn steps(bin: &Path, cleanup: &Shared) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("uml-demo-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    lock(cleanup).dir = Some(dir.clone());
    println!("==> working in {}", dir.display());
    let tool = |name: &str| bin.join(name);

    println!("==> one shared root image: busybox, made with mkfs.ext2 -d");
    let image = dir.join("shared.img");
    RootImage::new(&dir.join("staging"), GUEST).build(&image);
    println!("    {}", image.display());

    println!("==> a copy-on-write file per guest over it, with our uml_mkcow");
    let cows = [dir.join("guest-a.cow"), dir.join("guest-b.cow")];
    for cow in &cows {
        run_shown(Command::new(tool("uml_mkcow")).arg(cow).arg(&image))?;
    }

    println!(
        "==> our switch, for the daemon transport (ctl) and BESS (bess), managed through mgmt"
    );
    let ctl = dir.join("ctl");
    let bess = dir.join("bess");
    let mgmt = dir.join("mgmt");
    let mut switch = Running::start(
        "switch",
        Command::new(tool("uml_switch"))
            .arg("-unix")
            .arg(&ctl)
            .arg("-bess")
            .arg(&bess)
            .arg("--mgmt")
            .arg(&mgmt),
        |_| false,
        cleanup,
    )?;
    switch.wait_for("attached to unix socket")?;

    let uml_dir = dir.join("uml");
    let kernel = crate::provision::find_program("linux.uml")
        .context("linux.uml is missing: apt-get install user-mode-linux")?;
    let id = std::process::id();
    let guest = |name: &str, cow: &Path, nic: String, vars: &[String]| {
        let mut cmd = Command::new(&kernel);
        cmd.arg(format!("ubd0={},{}", cow.display(), image.display()))
            .args(["root=/dev/ubda", "mem=128M"])
            .arg(format!("umid={name}-{id}"))
            .arg(format!("uml_dir={}/", uml_dir.display()))
            .args(["con=null", "ssl=null", "con0=fd:0,fd:1", "init=/init"])
            .arg(nic)
            .arg(format!("NAME={name}"))
            .args(vars)
            .current_dir(&dir);
        cmd
    };
    println!("==> guest-a: daemon transport, its disk guest-a.cow");
    let mut guest_a = Running::start(
        "guest-a",
        &mut guest(
            "guest-a",
            &cows[0],
            format!("eth0=daemon,02:00:00:00:77:01,unix,{}", ctl.display()),
            &[
                "IF=eth0".into(),
                "IP=10.99.77.1".into(),
                "NOTE=hello-from-guest-a".into(),
            ],
        ),
        |l| l.starts_with("demo: "),
        cleanup,
    )?;
    println!("==> guest-b: BESS transport (vec0), its disk guest-b.cow; it pings guest-a");
    let mut guest_b = Running::start(
        "guest-b",
        &mut guest(
            "guest-b",
            &cows[1],
            format!(
                "vec0:transport=bess,dst={},mac=02:00:00:00:77:02",
                bess.display()
            ),
            &[
                "IF=vec0".into(),
                "IP=10.99.77.2".into(),
                "PEER=10.99.77.1".into(),
            ],
        ),
        |l| l.starts_with("demo: "),
        cleanup,
    )?;
    guest_a.wait_for("wrote /demo-note")?;
    guest_b.wait_for("demo: PING-DONE")?;
    if !guest_b.output().contains(" 0% packet loss") {
        bail!("guest-b's pings were lost:\n{}", guest_b.output());
    }

    println!("==> the switch's log so far");
    for line in switch.output().lines() {
        println!("    switch | {line}");
    }

    println!("==> the switch's port table, by uml_switchctl through its management socket");
    let mut ports = Command::new(tool("uml_switchctl"));
    ports.arg(&mgmt).arg("ports");
    println!("    $ {}", show(&ports));
    let out = ports.output().context("running uml_switchctl")?;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in table.lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        bail!(
            "uml_switchctl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each guest's port, with the address it pinged from or answered with.
    for mac in ["02:00:00:00:77:01", "02:00:00:00:77:02"] {
        if !table.contains(mac) {
            bail!("the port table lacks {mac}:\n{table}");
        }
    }

    println!("==> the running machines, by uml_mconsole --list");
    let mconsole = |args: &[String]| -> Result<String> {
        let mut cmd = Command::new(tool("uml_mconsole"));
        cmd.arg("--uml-dir").arg(&uml_dir).args(args);
        println!("    $ {}", show(&cmd));
        let out = cmd.output().context("running uml_mconsole")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in text.lines() {
            println!("    {line}");
        }
        if !out.status.success() {
            bail!(
                "uml_mconsole failed ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    };
    mconsole(&["--list".into()])?;

    println!("==> halting both guests through their mconsole");
    for (name, guest) in [("guest-a", &mut guest_a), ("guest-b", &mut guest_b)] {
        mconsole(&[format!("{name}-{id}"), "halt".into()])?;
        guest.wait_exit()?;
        println!("    {name} has stopped");
    }

    println!("==> what guest-a changed, by uml_moo --info, then merged into a new image");
    let mut info = Command::new(tool("uml_moo"));
    info.arg("--info").arg(&cows[0]);
    println!("    $ {}", show(&info));
    let out = info.output().context("running uml_moo --info")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    let merged = dir.join("guest-a-merged.img");
    run_shown(
        Command::new(tool("uml_moo"))
            .arg("-q")
            .arg(&cows[0])
            .arg(&merged),
    )?;
    let debugfs = crate::provision::find_program("debugfs")
        .context("debugfs is missing: apt-get install e2fsprogs")?;
    let note = |image: &Path| -> Result<String> {
        let mut cat = Command::new(&debugfs);
        cat.args(["-R", "cat /demo-note"]).arg(image);
        println!("    $ {}", show(&cat));
        let out = cat.output().context("running debugfs")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!(
            "    {}",
            if text.is_empty() {
                "(no such file)"
            } else {
                &text
            }
        );
        Ok(text)
    };
    if !note(&merged)?.contains("hello-from-guest-a") {
        bail!("the merged image lacks guest-a's note");
    }
    if !note(&image)?.is_empty() {
        bail!("the shared image was changed");
    }
    println!("    guest-a's file is in the merged image; the shared image is untouched");

    println!("==> stopping the switch");
    if let Ok(pid) = i32::try_from(switch.child.id()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    switch.wait_exit()?;
    for line in switch
        .output()
        .lines()
        .skip_while(|l| !l.contains("signal"))
    {
        println!("    switch | {line}");
    }
    println!("==> demo done");
    Ok(())
}

/// Runs a command, shown first as typed, failing if it fails.
fn run_shown(cmd: &mut Command) -> Result<()> {
    println!("    $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// A command line as a user would type it.
fn show(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
