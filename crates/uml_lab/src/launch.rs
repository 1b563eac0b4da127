//! Starting a lab's pieces with our tools: switches (`uml_switch`, taps via
//! `tunctl`), COW disks (`uml_mkcow`) and kernels.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{Console, Interface, Lab, Machine, Network, Transport};
use crate::rundir::{ProcessRecord, RunDir};

/// Why something could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// One of our tools (or a host program) is missing.
    #[error("cannot find `{0}` beside uml_lab or in PATH")]
    Missing(String),
    /// Running a program failed.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The failure.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{program} failed: {detail}")]
    Failed {
        /// The program.
        program: String,
        /// Its status and output.
        detail: String,
    },
    /// A file could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A socket path does not fit `sun_path`.
    #[error("socket path {} is longer than 107 bytes: use a shorter --run-dir", .0.display())]
    PathTooLong(PathBuf),
    /// The switch did not come up.
    #[error("the switch of network '{network}' did not create {} in time; its log: {log}", socket.display())]
    SwitchTimeout {
        /// The network.
        network: String,
        /// The socket it should have made.
        socket: PathBuf,
        /// Its output.
        log: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + '_ {
    move |source| LaunchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One of our tools: beside our own executable first, then in PATH.
pub fn tool(name: &str) -> Result<PathBuf, LaunchError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .filter(|p| p.is_file());
    beside
        .or_else(|| program(name))
        .ok_or_else(|| LaunchError::Missing(name.to_owned()))
}

/// A host program from PATH or the sbin directories.
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs a program to completion; its failure carries its output.
fn run(cmd: &mut Command, program: &str) -> Result<(), LaunchError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LaunchError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LaunchError::Failed {
            program: program.to_owned(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}

const SUN_PATH_MAX: usize = 107;

/// Refuses socket paths the kernel would cut.
pub fn check_socket_path(path: &Path) -> Result<(), LaunchError> {
    if path.as_os_str().len() > SUN_PATH_MAX {
        Err(LaunchError::PathTooLong(path.to_path_buf()))
    } else {
        Ok(())
    }
}

/// Every socket path the lab will use, checked before anything starts.
pub fn check_socket_paths(lab: &Lab, run: &RunDir) -> Result<(), LaunchError> {
    for net in &lab.networks {
        check_socket_path(&run.control_socket(&net.name))?;
        check_socket_path(&run.bess_socket(&net.name))?;
        check_socket_path(&run.mgmt_socket(&net.name))?;
    }
    for m in &lab.machines {
        for (i, iface) in m.interfaces.iter().enumerate() {
            check_socket_path(&interface_socket(lab, run, m, i, iface))?;
        }
        check_socket_path(&run.notify_socket(&m.name))?;
        check_socket_path(&run.mconsole_socket(&lab.name, &m.name))?;
    }
    Ok(())
}

/// Makes the host tap with our `tunctl` (owned by the invoking user), gives
/// it its address and brings it up. Returns whether we created it.
pub fn make_tap(net: &Network) -> Result<bool, LaunchError> {
    let Some(tap) = &net.tap else {
        return Ok(false);
    };
    let created = if uml_host_device_exists(&tap.device) {
        false
    } else {
        run(
            Command::new(tool("tunctl")?).args(["-t", &tap.device]),
            "tunctl",
        )?;
        true
    };
    let ip = program("ip").ok_or_else(|| LaunchError::Missing("ip".into()))?;
    if let Some(address) = &tap.address {
        // An address already there (a second `up`) is not an error.
        let _ = run(
            Command::new(&ip).args(["addr", "replace", address, "dev", &tap.device]),
            "ip addr",
        );
    }
    run(
        Command::new(&ip).args(["link", "set", &tap.device, "up"]),
        "ip link",
    )?;
    Ok(created)
}

fn uml_host_device_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a host tap we created.
pub fn delete_tap(device: &str) -> Result<(), LaunchError> {
    run(
        Command::new(tool("tunctl")?).args(["-d", device]),
        "tunctl -d",
    )
}

/// The socket a machine's interface plugs into: its own endpoint when it has
/// a VLAN or a link setting, else the network's control or BESS socket.
pub fn interface_socket(
    lab: &Lab,
    run: &RunDir,
    machine: &Machine,
    index: usize,
    iface: &Interface,
) -> PathBuf {
    let bess = lab
        .network(&iface.network)
        .is_some_and(|n| n.transport == Transport::Bess);
    if iface.endpoint_options().is_some() {
        run.interface_socket(&iface.network, &machine.name, index)
    } else if bess {
        run.bess_socket(&iface.network)
    } else {
        run.control_socket(&iface.network)
    }
}

/// The switch's `--endpoint` and `--vxlan` arguments for a network, and the
/// sockets it makes for them.
pub fn fabric_args(lab: &Lab, run: &RunDir, net: &Network) -> (Vec<String>, Vec<PathBuf>) {
    let mut args = Vec::new();
    let mut sockets = Vec::new();
    let kind = match net.transport {
        Transport::Daemon => "unix",
        Transport::Bess => "bess",
    };
    for m in &lab.machines {
        for (i, iface) in m.interfaces.iter().enumerate() {
            if iface.network != net.name {
                continue;
            }
            if let Some(options) = iface.endpoint_options() {
                let socket = run.interface_socket(&net.name, &m.name, i);
                args.push("--endpoint".into());
                args.push(format!("{kind}:{},{options}", socket.display()));
                sockets.push(socket);
            }
        }
    }
    if let Some(tap) = &net.tap {
        match net.vlan {
            Some(vlan) => {
                args.push("--endpoint".into());
                args.push(format!("tap:{},vlan={vlan}", tap.device));
            }
            None => args.extend(["-tap".into(), tap.device.clone()]),
        }
    }
    if let Some(uplink) = &net.uplink {
        args.push("--vxlan".into());
        args.push(uplink.clone());
    }
    (args, sockets)
}

/// Whether a socket listens at `path`. The file appears at the switch's
/// bind(), before its listen(): a kernel connecting in between is refused,
/// and its interface stays down. The kernel's table of Unix sockets marks a
/// listening one with `__SO_ACCEPTCON` (flag 0x10000).
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let name = format!(" {}", path.display());
    table.lines().skip(1).any(|line| {
        line.ends_with(&name)
            && line
                .split_whitespace()
                .nth(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & 0x0001_0000 != 0)
    })
}

/// Starts a network's switch and waits until its sockets listen.
pub fn start_switch(
    lab: &Lab,
    run_dir: &RunDir,
    net: &Network,
) -> Result<(Child, ProcessRecord), LaunchError> {
    let dir = run_dir.network_dir(&net.name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ctl = run_dir.control_socket(&net.name);
    let bess = run_dir.bess_socket(&net.name);
    let mgmt = run_dir.mgmt_socket(&net.name);
    check_socket_path(&ctl)?;
    check_socket_path(&mgmt)?;
    let log_path = dir.join("switch.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let log_err = log.try_clone().map_err(io(&log_path))?;
    let mut cmd = Command::new(tool("uml_switch")?);
    cmd.arg("-unix").arg(&ctl);
    if net.transport == Transport::Bess {
        cmd.arg("-bess").arg(&bess);
    }
    if net.hub {
        cmd.arg("-hub");
    }
    cmd.arg("--mgmt").arg(&mgmt);
    if let Some(capture) = &net.capture {
        cmd.args(capture.args());
    }
    let (fabric, endpoints) = fabric_args(lab, run_dir, net);
    cmd.args(fabric);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .current_dir(&dir)
        .process_group(0)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            program: "uml_switch".into(),
            source,
        })?;
    let record = ProcessRecord::of(child.id(), &ctl.to_string_lossy());
    let wanted = if net.transport == Transport::Bess {
        &bess
    } else {
        &ctl
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = child;
    loop {
        if listening(wanted)
            && listening(&ctl)
            && listening(&mgmt)
            && endpoints.iter().all(|e| listening(e))
        {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::SwitchTimeout {
                network: net.name.clone(),
                socket: wanted.clone(),
                log: std::fs::read_to_string(&log_path).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = record.ok_or_else(|| LaunchError::Failed {
        program: "uml_switch".into(),
        detail: "it exited at once".into(),
    })?;
    Ok((child, record))
}

/// The shell lines that name the machine and bring up its interfaces. The
/// image's init runs them to completion before anything else starts (the
/// console shells, whose prompt shows the host name, and the startup script).
pub fn setup_script(lab: &Lab, machine: &Machine) -> String {
    let mut script = String::from("#!/bin/sh\n# written by uml_lab\n");
    script.push_str(&format!("hostname {}\n", machine.name));
    for (i, iface) in machine.interfaces.iter().enumerate() {
        let transport = lab
            .network(&iface.network)
            .map_or(Transport::Daemon, |n| n.transport);
        let ifname = Machine::interface_name(i, transport);
        script.push_str(&format!("ip link set {ifname} up\n"));
        if let Some(address) = &iface.address {
            script.push_str(&format!("ip addr add {address} dev {ifname}\n"));
        }
    }
    script
}

/// The machine's startup script, run in the background once the set-up is
/// done. An image made before the set-up had a file of its own runs only
/// this script: it then does the set-up itself.
pub fn startup_script(machine: &Machine) -> String {
    let mut script = String::from(
        "#!/bin/sh\n# written by uml_lab\n[ -n \"$UML_LAB_SET_UP\" ] || . /lab/setup\n",
    );
    if let Some(startup) = &machine.startup {
        script.push_str(startup);
        script.push('\n');
    }
    script
}

/// The kernel command line of a machine.
pub fn kernel_args(lab: &Lab, run: &RunDir, machine: &Machine) -> Vec<String> {
    let mut args = vec![
        format!("ubd0={}", run.cow(&machine.name).display()),
        "root=/dev/ubda".into(),
        "rw".into(),
        format!("mem={}", machine.memory),
        format!("umid={}", RunDir::umid(&lab.name, &machine.name)),
        format!("uml_dir={}/", run.uml_dir().display()),
        format!(
            "mconsole=notify:{}",
            run.notify_socket(&machine.name).display()
        ),
        format!("hostfs={}", run.share_dir(&machine.name).display()),
        "con=null".into(),
        "ssl=null".into(),
    ];
    for (i, console) in machine.consoles.iter().enumerate() {
        args.push(format!("con{i}={}", console.channel()));
    }
    for (i, iface) in machine.interfaces.iter().enumerate() {
        let Some(net) = lab.network(&iface.network) else {
            continue;
        };
        let socket = interface_socket(lab, run, machine, i, iface);
        args.push(match net.transport {
            Transport::Daemon => format!("eth{i}=daemon,{},unix,{}", iface.mac, socket.display()),
            Transport::Bess => format!(
                "vec{i}:transport=bess,dst={},mac={}",
                socket.display(),
                iface.mac
            ),
        });
    }
    args.extend(machine.kernel_args.iter().cloned());
    args
}

/// Makes a machine's COW disk (if it has none yet) and its shared directory,
/// then starts its kernel in a process group of its own.
pub fn start_machine(
    lab: &Lab,
    run: &RunDir,
    machine: &Machine,
) -> Result<(Child, ProcessRecord), LaunchError> {
    let dir = run.machine_dir(&machine.name);
    let share = run.share_dir(&machine.name);
    std::fs::create_dir_all(&share).map_err(io(&share))?;
    let cow = run.cow(&machine.name);
    if !cow.exists() {
        run_tool("uml_mkcow", |cmd| {
            cmd.arg(&cow).arg(&machine.disk);
        })?;
    }
    // Renamed into place, never written through: the guest can put a
    // symbolic link at /lab/startup, which a plain write would follow.
    for (file, text) in [
        ("setup", setup_script(lab, machine)),
        ("startup", startup_script(machine)),
    ] {
        let path = share.join(file);
        crate::rundir::write_atomic(&path, text.as_bytes()).map_err(|e| LaunchError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let log_path = run.kernel_log(&machine.name);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let log_err = log.try_clone().map_err(io(&log_path))?;
    let mut cmd = Command::new(&machine.kernel);
    cmd.args(kernel_args(lab, run, machine))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .current_dir(&dir)
        // Its own group: a terminal's Ctrl-C never reaches it, and stopping
        // it reaches every helper process it forks.
        .process_group(0);
    // Every boot gets the memory the lab file gives it: with a randomized
    // heap, the kernel takes a random share of it (see uml_host::process).
    uml_host::process::exec_without_address_randomization(&mut cmd);
    if let Some(timeout) = machine.watchdog_timeout {
        cmd.env("UML_WATCHDOG_TIMEOUT", timeout.to_string());
    }
    // A `port:` console runs port-helper as UML_PORT_HELPER says: ours when installed beside us.
    if machine
        .consoles
        .iter()
        .any(|c| matches!(c, Console::Port(_)))
    {
        if let Ok(helper) = tool("port-helper") {
            cmd.env("UML_PORT_HELPER", helper);
        }
    }
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        program: machine.kernel.display().to_string(),
        source,
    })?;
    let umid = RunDir::umid(&lab.name, &machine.name);
    match ProcessRecord::of(child.id(), &format!("umid={umid}")) {
        Some(record) => Ok((child, record)),
        None => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(LaunchError::Failed {
                program: machine.kernel.display().to_string(),
                detail: format!("it exited at once ({status})"),
            })
        }
    }
}

/// Runs one of our tools with arguments set by `args`.
pub fn run_tool(name: &str, args: impl FnOnce(&mut Command)) -> Result<(), LaunchError> {
    let mut cmd = Command::new(tool(name)?);
    args(&mut cmd);
    run(&mut cmd, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_file_is_ready_only_once_something_listens_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl");
        assert!(!listening(&path));
        // A socket file nobody accepts connections on (as between bind and listen).
        let bound = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(path.exists() && !listening(&path));
        drop(bound);
        std::fs::remove_file(&path).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening(&path));
        assert!(!listening(&dir.path().join("ct")));
    }
}
