//! `status`: what runs, read from the state records and checked against the
//! processes themselves, as a table or as JSON.

use std::time::Duration;

use serde::Serialize;

use crate::lab::{Console, Lab, Machine};
use crate::mconsole;
use crate::rundir::{
    Event, MachineRecord, MachineState, NetworkRecord, ProcessRecord, RunDir, read_json,
};
use crate::supervise;

/// The whole lab's state.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The lab's name.
    pub lab: String,
    /// Its run directory.
    pub run_dir: String,
    /// The supervisor.
    pub supervisor: SupervisorStatus,
    /// Every machine, in the lab's order.
    pub machines: Vec<MachineStatus>,
    /// Every network.
    pub networks: Vec<NetworkStatus>,
    /// The latest events, oldest first.
    pub events: Vec<Event>,
    /// In a lab spanning hosts, the host this part runs on (the report
    /// shows only its machines and networks).
    pub host: Option<String>,
}

/// The supervisor's state.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStatus {
    /// Whether it runs (holds the lab's lock).
    pub running: bool,
    /// Its PID, when it runs.
    pub pid: Option<i32>,
}

/// One console.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleStatus {
    /// `con0`, `con1`, ...
    pub name: String,
    /// pts, port:N, xterm, null or log.
    pub kind: String,
    /// Where to reach it: the pts device, the TCP port, the log file.
    #[serde(rename = "where")]
    pub location: Option<String>,
}

/// One interface.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    /// The guest's name for it.
    pub name: String,
    /// The network it joins.
    pub network: String,
    /// Its MAC address.
    pub mac: String,
    /// The address the lab gives it.
    pub address: Option<String>,
    /// Its port's VLAN setting (`vlan=10`, `trunk=10:20`), if any.
    pub vlan: Option<String>,
    /// Its emulated link (`delay=100ms,loss=1%`), if any.
    pub link: Option<String>,
}

/// One machine.
#[derive(Debug, Clone, Serialize)]
pub struct MachineStatus {
    /// Its name.
    pub name: String,
    /// booting, running, restarting, exited, stopped, failed, or gone (the
    /// record says it runs, but its process is not there).
    pub state: String,
    /// The kernel's PID, while it runs.
    pub pid: Option<i32>,
    /// Its umid.
    pub umid: String,
    /// Seconds since its (re)start, while it runs.
    pub uptime_s: Option<u64>,
    /// Its `mem=`.
    pub memory: String,
    /// Its restart policy.
    pub restart: String,
    /// Restarts by the supervisor.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Why it could not start.
    pub error: Option<String>,
    /// Its consoles.
    pub consoles: Vec<ConsoleStatus>,
    /// Its interfaces.
    pub interfaces: Vec<InterfaceStatus>,
}

/// One network.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    /// Its name.
    pub name: String,
    /// running or down.
    pub state: String,
    /// The switch's PID.
    pub pid: Option<i32>,
    /// daemon or bess.
    pub transport: String,
    /// switch or hub.
    pub mode: String,
    /// The switch's control socket.
    pub control: String,
    /// Its BESS socket, for the bess transport.
    pub bess: Option<String>,
    /// The host tap.
    pub tap: Option<String>,
    /// The machine interfaces plugged into it (`machine.eth0`).
    pub ports: Vec<String>,
    /// The switch's VXLAN uplink (its `--vxlan` setting), in a lab spanning hosts.
    pub uplink: Option<String>,
    /// The switch's management socket.
    pub mgmt: String,
    /// Its counters, per port and in total, read from the management
    /// socket (`null` while the switch is down or does not answer).
    pub counters: Option<crate::switch_mgmt::Counters>,
    /// Why the switch could not start.
    pub error: Option<String>,
}

/// How many events `status` shows.
pub(crate) const EVENTS_SHOWN: usize = 12;

fn console_status(
    run: &RunDir,
    lab: &Lab,
    machine: &Machine,
    running: bool,
    index: usize,
    console: Console,
) -> ConsoleStatus {
    let name = format!("con{index}");
    let location = match console {
        Console::Pts if running => mconsole::request(
            run,
            lab,
            &machine.name,
            &format!("config {name}"),
            Duration::from_secs(1),
        )
        .ok()
        .filter(|a| a.ok)
        .map(|a| a.text.trim().trim_start_matches("pts:").to_owned()),
        Console::Port(port) => Some(format!("telnet localhost {port}")),
        Console::Log => Some(run.kernel_log(&machine.name).display().to_string()),
        _ => None,
    };
    ConsoleStatus {
        name,
        kind: console.describe(),
        location,
    }
}

/// Gathers the lab's state.
pub fn report(run: &RunDir, lab: &Lab) -> Report {
    let supervisor_pid = supervise::running(run).map(|r| r.pid);
    let supervisor_running = supervisor_pid.is_some();
    let machines = lab
        .machines
        .iter()
        .map(|m| {
            let rec: MachineRecord = read_json(&run.machine_state(&m.name))
                .ok()
                .flatten()
                .unwrap_or_default();
            let alive = rec.process.as_ref().filter(|p| p.is_alive());
            let state = match (rec.state, alive) {
                // Ended, and the supervisor has not recorded it yet (or is not running).
                (MachineState::Booting | MachineState::Running, None) if rec.process.is_some() => {
                    if run.is_wanted(&m.name) {
                        "gone"
                    } else {
                        "stopped"
                    }
                    .to_owned()
                }
                (state, _) => state.word().to_owned(),
            };
            let running = alive.is_some() && rec.state == MachineState::Running;
            MachineStatus {
                name: m.name.clone(),
                state,
                pid: alive.map(|p| p.pid),
                umid: RunDir::umid(&lab.name, &m.name),
                uptime_s: alive.map(ProcessRecord::uptime),
                memory: m.memory.clone(),
                restart: m.restart.word().to_owned(),
                restarts: rec.restarts,
                last_exit: rec.last_exit.clone(),
                error: rec.error.clone(),
                consoles: m
                    .consoles
                    .iter()
                    .enumerate()
                    .map(|(i, c)| console_status(run, lab, m, running, i, *c))
                    .collect(),
                interfaces: m
                    .interfaces
                    .iter()
                    .enumerate()
                    .map(|(i, iface)| InterfaceStatus {
                        name: Machine::interface_name(
                            i,
                            lab.network(&iface.network)
                                .map_or(crate::lab::Transport::Daemon, |n| n.transport),
                        ),
                        network: iface.network.clone(),
                        mac: iface.mac.clone(),
                        address: iface.address.clone(),
                        vlan: iface.vlan.as_ref().map(crate::lab::PortVlan::options),
                        link: (!iface.link.is_empty()).then(|| iface.link.join(",")),
                    })
                    .collect(),
            }
        })
        .collect();
    let networks = lab
        .networks
        .iter()
        .map(|n| {
            let rec: NetworkRecord = read_json(&run.network_state(&n.name))
                .ok()
                .flatten()
                .unwrap_or_default();
            let alive = rec.switch.as_ref().filter(|p| p.is_alive());
            let mgmt = run.mgmt_socket(&n.name);
            let counters = alive.and_then(|_| crate::switch_mgmt::counters(lab, n, &mgmt).ok());
            let ports = lab
                .machines
                .iter()
                .flat_map(|m| {
                    m.interfaces
                        .iter()
                        .enumerate()
                        .filter(|(_, iface)| iface.network == n.name)
                        .map(|(i, _)| {
                            format!("{}.{}", m.name, Machine::interface_name(i, n.transport))
                        })
                })
                .chain(n.tap.iter().map(|t| format!("host.{}", t.device)))
                .chain(n.uplink.iter().map(|_| "vxlan".to_owned()))
                .collect();
            NetworkStatus {
                name: n.name.clone(),
                state: if alive.is_some() { "running" } else { "down" }.to_owned(),
                pid: alive.map(|p| p.pid),
                transport: match n.transport {
                    crate::lab::Transport::Daemon => "daemon",
                    crate::lab::Transport::Bess => "bess",
                }
                .to_owned(),
                mode: if n.hub { "hub" } else { "switch" }.to_owned(),
                control: run.control_socket(&n.name).display().to_string(),
                bess: (n.transport == crate::lab::Transport::Bess)
                    .then(|| run.bess_socket(&n.name).display().to_string()),
                tap: n.tap.as_ref().map(|t| t.device.clone()),
                ports,
                uplink: n.uplink.clone(),
                mgmt: mgmt.display().to_string(),
                counters,
                error: rec.error,
            }
        })
        .collect();
    let mut events = run.read_events();
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    events.drain(..skip);
    Report {
        lab: lab.name.clone(),
        run_dir: run.path.display().to_string(),
        supervisor: SupervisorStatus {
            running: supervisor_running,
            pid: supervisor_pid,
        },
        machines,
        networks,
        events,
        host: lab.local_host.clone(),
    }
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A switch's totals in a few characters: frames received, sent, dropped.
fn frames(counters: &crate::switch_mgmt::Counters) -> String {
    let stats = &counters.stats;
    let drops: u64 = stats["drops"].as_object().map_or(0, |d| {
        d.values().filter_map(serde_json::Value::as_u64).sum()
    });
    format!(
        "{}/{}/{}",
        stats["rx"]["frames"].as_u64().unwrap_or(0),
        stats["tx"]["frames"].as_u64().unwrap_or(0),
        drops
    )
}

/// The report as tables.
pub fn human(report: &Report) -> String {
    let mut out = format!(
        "lab {} ({}); supervisor {}\n\n",
        report.lab,
        report.run_dir,
        match report.supervisor.pid {
            Some(pid) => format!("pid {pid}"),
            None if report.supervisor.running => "running".into(),
            None => "not running (machines are not watched; `uml_lab up` starts it again)".into(),
        }
    );
    let mut rows = vec![
        [
            "MACHINE",
            "STATE",
            "PID",
            "UPTIME",
            "MEMORY",
            "RESTARTS",
            "CONSOLES",
            "INTERFACES",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let dash = || "-".to_owned();
    for m in &report.machines {
        rows.push(vec![
            m.name.clone(),
            m.state.clone(),
            m.pid.map_or_else(dash, |p| p.to_string()),
            m.uptime_s.map_or_else(dash, uptime),
            m.memory.clone(),
            format!("{} ({})", m.restarts, m.restart),
            m.consoles
                .iter()
                .map(|c| match &c.location {
                    Some(l) if c.kind.starts_with("port:") => format!("{}={}", c.name, c.kind),
                    Some(l) => format!("{}={}:{l}", c.name, c.kind),
                    None => format!("{}={}", c.name, c.kind),
                })
                .collect::<Vec<_>>()
                .join(" "),
            m.interfaces
                .iter()
                .map(|i| {
                    format!(
                        "{}@{}{}",
                        i.name,
                        i.network,
                        i.address
                            .as_ref()
                            .map(|a| format!("={a}"))
                            .unwrap_or_default()
                    ) + &i
                        .vlan
                        .iter()
                        .chain(&i.link)
                        .map(|o| format!("[{o}]"))
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    let mut rows = vec![
        [
            "NETWORK",
            "STATE",
            "PID",
            "TRANSPORT",
            "MODE",
            "FRAMES RX/TX/DROP",
            "PORTS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for n in &report.networks {
        rows.push(vec![
            n.name.clone(),
            n.state.clone(),
            n.pid.map_or_else(dash, |p| p.to_string()),
            n.transport.clone(),
            n.mode.clone(),
            n.counters.as_ref().map_or_else(dash, frames),
            n.ports.join(" "),
        ]);
    }
    out.push_str(&table(&rows));
    let problems: Vec<String> = report
        .machines
        .iter()
        .filter_map(|m| Some(format!("{}: {}", m.name, m.error.as_ref()?)))
        .chain(
            report
                .networks
                .iter()
                .filter_map(|n| Some(format!("{}: {}", n.name, n.error.as_ref()?))),
        )
        .collect();
    if !problems.is_empty() {
        out.push_str("\nerrors:\n");
        for p in problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    if !report.events.is_empty() {
        out.push_str("\nevents (UTC):\n");
        for e in &report.events {
            let t = e.time % 86_400;
            out.push_str(&format!(
                "  {:02}:{:02}:{:02} {} {}: {}\n",
                t / 3600,
                t / 60 % 60,
                t % 60,
                e.subject,
                e.event,
                e.detail
            ));
        }
    }
    out
}
