//! The commands: `up`, `status`, `stop`, `down`, `cmd`, `console`, `commit`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::lab::{self, Console, Host, Lab, LabErrors};
use crate::launch::{self, LaunchError};
use crate::mconsole;
use crate::rundir::{
    Event, MachineRecord, MachineState, NetworkRecord, ProcessRecord, RunDir, RunDirError,
    read_json, write_json,
};
use crate::status;
use crate::supervise;
use crate::switch_mgmt;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The lab file has mistakes.
    #[error("{0}\nthe lab was not started")]
    Lab(#[from] LabErrors),
    /// The run directory could not be used.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// Something could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A file could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// No such machine in the lab.
    #[error("no machine '{0}' in the lab")]
    NoMachine(String),
    /// `up` ended without every machine running.
    #[error("not every machine came up: {0}")]
    NotUp(String),
    /// The machine is running (commit needs it stopped).
    #[error("machine '{0}' is running: stop it first (uml_lab stop {0})")]
    Running(String),
    /// The machine is not running.
    #[error("machine '{0}' is not running")]
    NotRunning(String),
    /// The mconsole request failed.
    #[error("{0}")]
    Mconsole(#[from] uml_mconsole::client::ClientError),
    /// The console cannot be attached.
    #[error("{0}")]
    Console(String),
    /// The host to run on is unknown or cannot be told.
    #[error(transparent)]
    Host(#[from] lab::HostError),
    /// No such network in the lab.
    #[error("no network '{0}' in the lab")]
    NoNetwork(String),
    /// A switch's management socket failed.
    #[error(transparent)]
    Mgmt(#[from] switch_mgmt::MgmtError),
    /// A capture port that names no port of the switch.
    #[error("{0}")]
    NoPort(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CommandError + '_ {
    move |source| CommandError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `up FILE`: checks the file, records what is wanted, makes sure a
/// supervisor runs, and waits until every machine's mconsole answers. In a
/// lab spanning hosts, only `host`'s part (by default, the host whose
/// address this machine has).
pub fn up(
    file: &Path,
    base: &Path,
    host: Option<&str>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let whole = lab::load(file, &Host::current())?;
    let host = match host {
        Some(h) => Some(h.to_owned()),
        None => whole.detect_host()?,
    };
    let lab = whole.for_host(host.as_deref())?;
    let run = RunDir::new(base, &lab.name);
    launch::check_socket_paths(&lab, &run)?;
    crate::rundir::ensure_private(base)?;
    std::fs::create_dir_all(&run.path).map_err(io(&run.path))?;
    write_json(&run.lab_json(), &lab)?;
    let mut tokens = Vec::new();
    for m in &lab.machines {
        let request = run.set_wanted(&m.name, true)?;
        tokens.push((m.name.clone(), Some(request)));
    }
    if !supervise::is_running(&run) {
        start_supervisor(&run)?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let records: Vec<(String, MachineRecord)> = tokens
            .iter()
            .map(|(name, _)| {
                let rec = read_json(&run.machine_state(name))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                (name.clone(), rec)
            })
            .collect();
        let settled = records.iter().zip(&tokens).all(|((_, rec), (_, token))| {
            rec.token == *token
                && matches!(
                    rec.state,
                    MachineState::Running | MachineState::Exited | MachineState::Failed
                )
        });
        let supervisor_gone = !supervise::is_running(&run);
        if settled || Instant::now() > deadline || supervisor_gone {
            let report = status::human(&status::report(&run, &lab));
            let not_up: Vec<String> = records
                .iter()
                .filter(|(_, r)| r.state != MachineState::Running)
                .map(|(n, r)| {
                    format!(
                        "{n} is {}{}",
                        r.state.word(),
                        r.error
                            .as_ref()
                            .or(r.last_exit.as_ref())
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            return if not_up.is_empty() {
                Ok(report)
            } else {
                let why = if supervisor_gone {
                    format!(
                        "; the supervisor died (see {})",
                        run.supervisor_log().display()
                    )
                } else {
                    String::new()
                };
                Err(CommandError::NotUp(format!(
                    "{}{why}\n{report}",
                    not_up.join(", ")
                )))
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `uml_lab supervise` in the background, detached from our terminal.
fn start_supervisor(run: &RunDir) -> Result<(), CommandError> {
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let log_path = run.supervisor_log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let log_err = log.try_clone().map_err(io(&log_path))?;
    Command::new(exe)
        .arg("supervise")
        .arg(&run.path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own group: the terminal's Ctrl-C and hang-up are not for it.
        .process_group(0)
        .spawn()
        .map_err(io(&run.path))?;
    // It is ready once it has recorded itself (after taking the lock).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !supervise::is_running(run) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `status`: the report, as tables or JSON.
pub fn status(run: &RunDir, json: bool) -> Result<String, CommandError> {
    let lab = run.lab()?;
    let report = status::report(run, &lab);
    Ok(if json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        status::human(&report)
    })
}

/// Follows every network's switch events on its management socket. The
/// switches running now are subscribed to before this returns, so nothing
/// they report after the first report is missed; one that starts later (or
/// again) is subscribed to within a second.
fn follow_switches(run: &RunDir, lab: &Lab) -> std::sync::mpsc::Receiver<Event> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let timeout = Duration::from_secs(1);
    for net in &lab.networks {
        let path = run.mgmt_socket(&net.name);
        let name = net.name.clone();
        let mut conn = switch_mgmt::subscribe(&path, timeout).ok();
        let tx = tx.clone();
        std::thread::spawn(move || {
            loop {
                for line in conn.take().into_iter().flat_map(BufRead::lines) {
                    let Ok(line) = line else { break };
                    let event = serde_json::from_str(&line)
                        .ok()
                        .and_then(|v| switch_mgmt::event(&name, &v));
                    if let Some(event) = event {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                }
                std::thread::sleep(timeout);
                conn = switch_mgmt::subscribe(&path, timeout).ok();
            }
        });
    }
    rx
}

/// `status --watch`: the report again after every event (mconsole
/// notifications, exits, restarts, and the switches' events: ports up and
/// down, MACs learned, moved and aged, drops), and every few seconds for the
/// uptimes.
pub fn watch(run: &RunDir, json: bool, out: &mut impl Write) -> Result<(), CommandError> {
    let switches = follow_switches(run, &run.lab()?);
    let mut switch_events: Vec<Event> = Vec::new();
    let mut seen = u64::MAX;
    let mut last = Instant::now();
    let mut fresh = false;
    loop {
        let size = std::fs::metadata(run.events()).map_or(0, |m| m.len());
        if fresh || size != seen || last.elapsed() > Duration::from_secs(5) {
            fresh = false;
            seen = size;
            last = Instant::now();
            let lab = run.lab()?;
            let mut report = status::report(run, &lab);
            report.events.extend(switch_events.iter().cloned());
            report.events.sort_by_key(|e| e.time);
            let skip = report.events.len().saturating_sub(status::EVENTS_SHOWN);
            report.events.drain(..skip);
            let text = if json {
                serde_json::to_string(&report).unwrap_or_default() + "\n"
            } else {
                format!("\x1b[H\x1b[2J{}", status::human(&report))
            };
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(());
            }
        }
        match switches.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => {
                switch_events.push(event);
                let skip = switch_events.len().saturating_sub(status::EVENTS_SHOWN);
                switch_events.drain(..skip);
                fresh = true;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // No network to follow: wait as before.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `capture NETWORK [--port PORT] [--outbound]`: a live pcapng capture of
/// the network's switch (or one port: the switch's number, or the lab's
/// `machine.eth0` / `host.TAP`) written to `out` until the switch ends it or
/// `out` is closed, which closes the connection and so stops the capture.
pub fn capture(
    run: &RunDir,
    network: &str,
    port: Option<&str>,
    outbound: bool,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let lab = run.lab()?;
    let net = lab
        .network(network)
        .ok_or_else(|| CommandError::NoNetwork(network.to_owned()))?;
    let mgmt = run.mgmt_socket(network);
    let timeout = Duration::from_secs(2);
    let port = match port {
        None => None,
        Some(word) => Some(match word.parse::<u64>() {
            Ok(number) => number,
            Err(_) => switch_mgmt::counters(&lab, net, &mgmt)?
                .ports
                .iter()
                .find(|p| p.interface.as_deref() == Some(word))
                .map(|p| p.id)
                .ok_or_else(|| {
                    CommandError::NoPort(format!(
                        "the switch of '{network}' has no port known as '{word}' (a guest's port is known once it has sent a frame): give the switch's port number, from `uml_lab status --json`"
                    ))
                })?,
        }),
    };
    let (_, mut stream) = switch_mgmt::capture_stream(&mgmt, port, outbound, timeout)?;
    // A reader that goes away (tshark quits, a closed pipe) ends the capture;
    // that is its normal end, not an error.
    let _ = std::io::copy(&mut stream, out).and_then(|_| out.flush());
    Ok(())
}

/// How a machine was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    /// It was not running.
    NotRunning,
    /// It shut down after `cad`.
    Cad,
    /// It stopped after `halt`.
    Halt,
    /// It was killed.
    Signal,
}

impl StoppedBy {
    /// Words for the report.
    pub fn word(self) -> &'static str {
        match self {
            Self::NotRunning => "was not running",
            Self::Cad => "stopped by cad",
            Self::Halt => "stopped by halt (it ignored cad)",
            Self::Signal => "killed with SIGKILL (it ignored cad and halt)",
        }
    }
}

fn wait_gone(process: &ProcessRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process.is_alive() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Stops one machine: `cad`, then `halt`, then SIGKILL to its process
/// group, each given `step` to work. Only the recorded process is acted on.
pub fn stop_machine(
    run: &RunDir,
    lab: &Lab,
    name: &str,
    step: Duration,
) -> Result<StoppedBy, CommandError> {
    let request = run.set_wanted(name, false)?;
    // A supervisor may be starting the machine right now: once it has seen
    // the request, it starts nothing more, and its record names every process.
    let deadline = Instant::now() + Duration::from_secs(5);
    while supervise::is_running(run) && Instant::now() < deadline {
        let rec: MachineRecord = read_json(&run.machine_state(name))?.unwrap_or_default();
        if rec.token.as_deref() == Some(request.as_str()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec: MachineRecord = read_json(&run.machine_state(name))?.unwrap_or_default();
    let Some(process) = rec.process.clone().filter(ProcessRecord::is_alive) else {
        if !supervise::is_running(run)
            && matches!(
                rec.state,
                MachineState::Booting | MachineState::Running | MachineState::Restarting
            )
        {
            // Nobody else will record that it is not coming back.
            let mut rec = rec;
            rec.process = None;
            rec.state = MachineState::Stopped;
            write_json(&run.machine_state(name), &rec)?;
        }
        return Ok(StoppedBy::NotRunning);
    };
    let mut by = StoppedBy::Signal;
    for (command, outcome) in [("cad", StoppedBy::Cad), ("halt", StoppedBy::Halt)] {
        let sent = mconsole::request(run, lab, name, command, Duration::from_secs(2));
        // A halting kernel may go before it answers: that is success too.
        let _ = sent;
        if wait_gone(&process, step) {
            by = outcome;
            break;
        }
    }
    if by == StoppedBy::Signal {
        process.signal_group(Signal::SIGKILL);
        wait_gone(&process, Duration::from_secs(10));
    }
    crate::rundir::end_group_members(process.pid, &process.mark, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(run.uml_dir().join(RunDir::umid(&lab.name, name)));
    run.log_event(name, "stop", by.word());
    if !supervise::is_running(run) {
        // Nobody else will record it.
        let mut rec: MachineRecord = read_json(&run.machine_state(name))?.unwrap_or_default();
        rec.process = None;
        rec.state = MachineState::Stopped;
        write_json(&run.machine_state(name), &rec)?;
    }
    Ok(by)
}

/// `stop [NAME]`: one machine, or all of them in parallel.
pub fn stop(run: &RunDir, name: Option<&str>, step: Duration) -> Result<String, CommandError> {
    let lab = run.lab()?;
    let names: Vec<String> = match name {
        Some(n) => {
            lab.machine(n)
                .ok_or_else(|| CommandError::NoMachine(n.to_owned()))?;
            vec![n.to_owned()]
        }
        None => lab.machines.iter().map(|m| m.name.clone()).collect(),
    };
    let results: Vec<(String, Result<StoppedBy, CommandError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let lab = &lab;
                s.spawn(move || (n.clone(), stop_machine(run, lab, n, step)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut out = String::new();
    for (n, result) in results {
        out.push_str(&format!("{n}: {}\n", result?.word()));
    }
    Ok(out)
}

/// `down`: the supervisor, every machine, every switch and tap, then the run directory.
pub fn down(run: &RunDir, step: Duration) -> Result<String, CommandError> {
    let lab = run.lab()?;
    let mut out = String::new();
    if let Some(sup) = read_json::<ProcessRecord>(&run.supervisor_record())? {
        if sup.signal(Signal::SIGTERM) {
            if !wait_gone(&sup, Duration::from_secs(5)) {
                sup.signal(Signal::SIGKILL);
                wait_gone(&sup, Duration::from_secs(5));
            }
            out.push_str("supervisor: stopped\n");
        }
    }
    out.push_str(&stop(run, None, step)?);
    for net in &lab.networks {
        let rec: NetworkRecord = read_json(&run.network_state(&net.name))?.unwrap_or_default();
        if let Some(switch) = rec.switch {
            if switch.signal(Signal::SIGTERM) {
                if !wait_gone(&switch, Duration::from_secs(5)) {
                    switch.signal(Signal::SIGKILL);
                    wait_gone(&switch, Duration::from_secs(5));
                }
                out.push_str(&format!("{}: switch stopped\n", net.name));
            }
        }
        if rec.tap_created {
            if let Some(tap) = &net.tap {
                launch::delete_tap(&tap.device)?;
                out.push_str(&format!("{}: tap {} deleted\n", net.name, tap.device));
            }
        }
    }
    std::fs::remove_dir_all(&run.path).map_err(io(&run.path))?;
    if let Some(base) = run.path.parent() {
        // The base directory goes too when this was its last lab.
        let _ = std::fs::remove_dir(base);
    }
    out.push_str(&format!("lab {} is down\n", lab.name));
    Ok(out)
}

fn running_process(run: &RunDir, name: &str) -> Result<Option<ProcessRecord>, CommandError> {
    let rec: MachineRecord = read_json(&run.machine_state(name))?.unwrap_or_default();
    Ok(rec.process.filter(ProcessRecord::is_alive))
}

/// `commit NAME OUT`: merges a stopped machine's COW disk into a new image.
pub fn commit(run: &RunDir, name: &str, out: &Path) -> Result<String, CommandError> {
    let lab = run.lab()?;
    lab.machine(name)
        .ok_or_else(|| CommandError::NoMachine(name.to_owned()))?;
    if running_process(run, name)?.is_some() {
        return Err(CommandError::Running(name.to_owned()));
    }
    let cow = run.cow(name);
    launch::run_tool("uml_moo", |cmd| {
        cmd.arg("-q").arg(&cow).arg(out);
    })?;
    Ok(format!("{name}: disk merged into {}\n", out.display()))
}

/// `cmd NAME COMMAND...`: one mconsole command; the reply as `uml_mconsole` prints it.
pub fn cmd(run: &RunDir, name: &str, words: &[String]) -> Result<(String, u8), CommandError> {
    let lab = run.lab()?;
    lab.machine(name)
        .ok_or_else(|| CommandError::NoMachine(name.to_owned()))?;
    if running_process(run, name)?.is_none() {
        return Err(CommandError::NotRunning(name.to_owned()));
    }
    let answer = mconsole::request(run, &lab, name, &words.join(" "), Duration::from_secs(30))?;
    let word = if answer.ok { "OK" } else { "ERR" };
    Ok((format!("{word} {}\n", answer.text), answer.status))
}

/// `console NAME`: attaches the terminal to the machine's first console that
/// can be attached (a pts; a port through telnet; the log, followed).
pub fn console(run: &RunDir, name: &str) -> Result<(), CommandError> {
    let lab = run.lab()?;
    let machine = lab
        .machine(name)
        .ok_or_else(|| CommandError::NoMachine(name.to_owned()))?;
    if running_process(run, name)?.is_none() {
        return Err(CommandError::NotRunning(name.to_owned()));
    }
    for (i, console) in machine.consoles.iter().enumerate() {
        match console {
            Console::Pts => {
                let answer = mconsole::request(
                    run,
                    &lab,
                    name,
                    &format!("config con{i}"),
                    Duration::from_secs(5),
                )?;
                let device = answer.text.trim().trim_start_matches("pts:").to_owned();
                if !answer.ok || !device.starts_with("/dev/") {
                    return Err(CommandError::Console(format!(
                        "con{i} of '{name}' has no pts yet ({})",
                        answer.text.trim()
                    )));
                }
                return crate::terminal::attach(Path::new(&device), name)
                    .map_err(|e| CommandError::Console(format!("{device}: {e}")));
            }
            Console::Port(port) => {
                let telnet = launch::program("telnet").ok_or_else(|| {
                    CommandError::Console(format!(
                        "con{i} of '{name}' is on TCP port {port}: connect with a telnet client (none in PATH)"
                    ))
                })?;
                let err = Command::new(telnet)
                    .args(["localhost", &port.to_string()])
                    .exec();
                return Err(CommandError::Console(format!("running telnet: {err}")));
            }
            Console::Log => {
                return follow(&run.kernel_log(name), run, name);
            }
            Console::Xterm | Console::Null => {}
        }
    }
    Err(CommandError::Console(format!(
        "'{name}' has no console to attach to (its consoles: {}); add \"pts\" to its consoles",
        machine
            .consoles
            .iter()
            .map(|c| c.describe())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Prints a log console's output as it grows, while the machine runs.
fn follow(path: &Path, run: &RunDir, name: &str) -> Result<(), CommandError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut buf = [0u8; 4096];
    let mut stdout = std::io::stdout();
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n > 0 {
            let _ = stdout.write_all(&buf[..n]);
            let _ = stdout.flush();
            continue;
        }
        if running_process(run, name)?.is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
