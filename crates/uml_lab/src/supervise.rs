//! The supervisor: one background process per lab that starts what is wanted
//! and missing, notices what ended, restarts it as its policy says (with a
//! backoff), and reads each machine's mconsole notifications (boot, panic,
//! watchdog hang, guest messages) into the event log.
//!
//! It is the only process that starts machines and switches; the commands
//! only write what they want (`wanted` files, `lab.json`) and read the state
//! records it writes. Killing it loses nothing: a new one adopts the running
//! processes from their records.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

use crate::lab::{Lab, Machine, Restart};
use crate::launch;
use crate::mconsole;
use crate::rundir::{
    MachineRecord, MachineState, NetworkRecord, ProcessRecord, RunDir, RunDirError,
    end_group_members, now, read_json, write_json,
};

/// How often the supervisor looks at everything.
const TICK: Duration = Duration::from_millis(100);
/// The longest wait between restarts of a machine that keeps failing.
const MAX_BACKOFF: u64 = 30;
/// A machine that ran this long has its failure count forgotten.
const HEALTHY_AFTER: u64 = 60;

/// Why the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The run directory could not be used.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The lock file could not be opened.
    #[error("opening the supervisor lock: {0}")]
    Lock(std::io::Error),
}

/// Takes the supervisor lock of a run directory; `None` when another
/// supervisor keeps holding it. A short wait lets a dying one go.
fn lock(run: &RunDir) -> Result<Option<Flock<File>>, std::io::Error> {
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run.supervisor_lock())?;
    for _ in 0..50 {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => file = back,
            Err((_, e)) => return Err(e.into()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// The running supervisor of this run directory, proven by its record (PID,
/// start time, and its command line naming the run directory).
pub fn running(run: &RunDir) -> Option<ProcessRecord> {
    read_json::<ProcessRecord>(&run.supervisor_record())
        .ok()
        .flatten()
        .filter(ProcessRecord::is_alive)
}

/// Whether a supervisor runs for this run directory.
pub fn is_running(run: &RunDir) -> bool {
    running(run).is_some()
}

/// The backoff before restart number `failures` (1, 2, 4 ... 30 s).
pub fn backoff(failures: u32) -> u64 {
    1u64.checked_shl(failures.saturating_sub(1))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

struct Supervisor {
    run: RunDir,
    machines: HashMap<String, Child>,
    switches: HashMap<String, Child>,
    notify: HashMap<String, UnixDatagram>,
    hung: HashMap<String, bool>,
    next_switch_try: HashMap<String, u64>,
}

/// Runs the supervisor of `run` until it is killed. Returns at once when
/// another supervisor already runs there.
pub fn supervise(run: &RunDir) -> Result<(), SuperviseError> {
    let Some(_lock) = lock(run).map_err(SuperviseError::Lock)? else {
        return Ok(());
    };
    if let Some(me) = ProcessRecord::of(std::process::id(), &run.path.to_string_lossy()) {
        write_json(&run.supervisor_record(), &me)?;
    }
    run.log_event("lab", "supervisor", &format!("pid {}", std::process::id()));
    let mut sup = Supervisor {
        run: run.clone(),
        machines: HashMap::new(),
        switches: HashMap::new(),
        notify: HashMap::new(),
        hung: HashMap::new(),
        next_switch_try: HashMap::new(),
    };
    loop {
        // Re-read every tick: a second `up` may have added machines.
        let lab = run.lab()?;
        let ready: HashSet<String> = lab
            .networks
            .iter()
            .filter(|net| sup.network(&lab, net))
            .map(|net| net.name.clone())
            .collect();
        for machine in &lab.machines {
            sup.machine(&lab, machine, &ready);
        }
        std::thread::sleep(TICK);
    }
}

impl Supervisor {
    /// Looks after a network's switch; returns whether it runs (and listens).
    fn network(&mut self, lab: &crate::lab::Lab, net: &crate::lab::Network) -> bool {
        let path = self.run.network_state(&net.name);
        let mut rec: NetworkRecord = read_json(&path).ok().flatten().unwrap_or_default();
        if let Some(child) = self.switches.get_mut(&net.name) {
            if let Ok(Some(status)) = child.try_wait() {
                self.switches.remove(&net.name);
                self.run
                    .log_event(&net.name, "switch-exited", &status.to_string());
            }
        }
        if rec.switch.as_ref().is_some_and(ProcessRecord::is_alive) {
            return true;
        }
        if rec.switch.take().is_some() && !self.switches.contains_key(&net.name) {
            self.run
                .log_event(&net.name, "switch-exited", "restarting it");
        }
        if self
            .next_switch_try
            .get(&net.name)
            .is_some_and(|t| now() < *t)
        {
            return false;
        }
        let result = launch::make_tap(net).and_then(|created| {
            rec.tap_created |= created;
            launch::start_switch(lab, &self.run, net)
        });
        let started = match result {
            Ok((child, record)) => {
                self.run
                    .log_event(&net.name, "switch-started", &format!("pid {}", record.pid));
                rec.switch = Some(record);
                rec.error = None;
                self.switches.insert(net.name.clone(), child);
                true
            }
            Err(e) => {
                self.run
                    .log_event(&net.name, "switch-failed", &e.to_string());
                rec.error = Some(e.to_string());
                self.next_switch_try.insert(net.name.clone(), now() + 5);
                false
            }
        };
        let _ = write_json(&path, &rec);
        started
    }

    fn notify_socket(&mut self, name: &str) -> Option<&UnixDatagram> {
        if !self.notify.contains_key(name) {
            let path = self.run.notify_socket(name);
            let _ = std::fs::create_dir_all(self.run.machine_dir(name));
            // Ours alone: the file is in our run directory, and a previous
            // supervisor's socket is stale once we hold the lock.
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).ok()?;
            socket.set_nonblocking(true).ok()?;
            self.notify.insert(name.to_owned(), socket);
        }
        self.notify.get(name)
    }

    /// Reads every pending notification of a machine into the event log;
    /// returns whether one reported a watchdog hang.
    fn drain_notifications(&mut self, name: &str) -> bool {
        let mut hang = false;
        let mut lines = Vec::new();
        if let Some(socket) = self.notify_socket(name) {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if let Some(uml_mconsole::watch::Event::Notify { kind, text, .. }) =
                    uml_mconsole::watch::Event::from_notification(&buf[..n])
                {
                    hang |= kind == "hang";
                    lines.push((kind, text));
                }
            }
        }
        for (kind, text) in lines {
            let event = match kind {
                "socket" => "mconsole",
                "user" => "guest",
                other => other,
            };
            self.run.log_event(name, event, &text);
        }
        hang
    }

    /// Looks after a machine; it is started only once every network it
    /// joins is in `ready`: the kernel connects its interfaces at boot, once.
    fn machine(&mut self, lab: &Lab, machine: &Machine, ready: &HashSet<String>) {
        let name = machine.name.as_str();
        let path = self.run.machine_state(name);
        let mut rec: MachineRecord = read_json(&path).ok().flatten().unwrap_or_default();
        let before = rec.clone();
        let hang = self.drain_notifications(name);
        let exit = self.machines.get_mut(name).and_then(|child| {
            let status = child.try_wait().ok().flatten()?;
            Some(status)
        });
        if exit.is_some() {
            self.machines.remove(name);
        }
        let alive = rec.process.as_ref().is_some_and(ProcessRecord::is_alive);
        let request = self.run.request(name);
        let wanted = request.as_ref().filter(|r| r.starts_with("up "));
        let new_request = wanted.is_some_and(|r| Some(r) != rec.token.as_ref());
        if request.is_some() {
            rec.token = request.clone();
        }
        if alive {
            if hang {
                self.run
                    .log_event(name, "hang", "the watchdog reports the guest hung");
                if machine.restart != Restart::No {
                    self.hung.insert(name.to_owned(), true);
                    if let Some(p) = &rec.process {
                        p.signal_group(Signal::SIGKILL);
                    }
                }
            }
            if rec.state == MachineState::Booting && mconsole::answers(&self.run, lab, name) {
                rec.state = MachineState::Running;
                self.run.log_event(name, "running", "its mconsole answers");
            }
            if rec.state == MachineState::Running
                && rec.failures > 0
                && rec
                    .process
                    .as_ref()
                    .is_some_and(|p| p.uptime() > HEALTHY_AFTER)
            {
                rec.failures = 0;
            }
        } else if let Some(process) = rec.process.take() {
            self.ended(lab, machine, &mut rec, &process, exit);
        } else if wanted.is_none() && rec.state == MachineState::Restarting {
            // Stopped while it waited out its backoff.
            rec.state = MachineState::Stopped;
            self.run.log_event(name, "stopped", "before its restart");
        }
        let may_start = rec.process.is_none()
            && wanted.is_some()
            && match rec.state {
                MachineState::Restarting => now() >= rec.next_start || new_request,
                MachineState::Stopped | MachineState::Exited | MachineState::Failed => new_request,
                MachineState::Booting | MachineState::Running => true,
            };
        let networks_ready = machine
            .interfaces
            .iter()
            .all(|i| ready.contains(&i.network));
        if may_start && !networks_ready {
            // Not acted on yet: the request stays new until a later tick starts it.
            rec.token.clone_from(&before.token);
        } else if may_start {
            if rec.state == MachineState::Restarting && !new_request {
                rec.restarts += 1;
            }
            if new_request {
                rec.failures = 0;
            }
            self.start(lab, machine, &mut rec);
        }
        if rec != before {
            let _ = write_json(&path, &rec);
        }
    }

    fn start(&mut self, lab: &Lab, machine: &Machine, rec: &mut MachineRecord) {
        let name = machine.name.as_str();
        // A UML killed hard leaves its instance directory; the kernel refuses to reuse it.
        let _ = std::fs::remove_dir_all(self.run.uml_dir().join(RunDir::umid(&lab.name, name)));
        match launch::start_machine(lab, &self.run, machine) {
            Ok((child, record)) => {
                self.run
                    .log_event(name, "started", &format!("pid {}", record.pid));
                rec.process = Some(record);
                rec.state = MachineState::Booting;
                rec.error = None;
                self.machines.insert(name.to_owned(), child);
            }
            Err(e) => {
                self.run.log_event(name, "start-failed", &e.to_string());
                rec.state = MachineState::Failed;
                rec.error = Some(e.to_string());
            }
        }
    }

    fn ended(
        &mut self,
        lab: &Lab,
        machine: &Machine,
        rec: &mut MachineRecord,
        process: &ProcessRecord,
        exit: Option<std::process::ExitStatus>,
    ) {
        let name = machine.name.as_str();
        // Helpers of a kernel that was killed outright keep its group alive.
        end_group_members(process.pid, &process.mark, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(self.run.uml_dir().join(RunDir::umid(&lab.name, name)));
        let hung = self.hung.remove(name).unwrap_or(false);
        let (how, failed) = match exit {
            _ if hung => ("killed after a watchdog hang".to_owned(), true),
            Some(status) => (status.to_string(), !status.success()),
            None => (
                "ended (started by an earlier supervisor: status unknown)".to_owned(),
                true,
            ),
        };
        rec.last_exit = Some(how.clone());
        if !self.run.is_wanted(name) {
            rec.state = MachineState::Stopped;
            self.run.log_event(name, "stopped", &how);
            return;
        }
        let restart = match machine.restart {
            Restart::No => false,
            Restart::OnFailure => failed,
            Restart::Always => true,
        };
        if restart {
            rec.failures += 1;
            let delay = backoff(rec.failures);
            rec.next_start = now() + delay;
            rec.state = MachineState::Restarting;
            self.run.log_event(
                name,
                "exited",
                &format!(
                    "{how}; restart = \"{}\": restarting in {delay} s",
                    machine.restart.word()
                ),
            );
        } else {
            rec.state = MachineState::Exited;
            self.run.log_event(
                name,
                "exited",
                &format!(
                    "{how}; restart = \"{}\": not restarted",
                    machine.restart.word()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let delays: Vec<u64> = (1..=8).map(backoff).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0), 1);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
