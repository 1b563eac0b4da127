//! `tuntap up [GATE]`: a new tap for the caller's guest, configured on the host side.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use uml_host::tun::{CLONE_DEVICE, Tun, TunError, TunFlags};

use crate::answer::Report;
use crate::error::NetError;
use crate::policy::Permissions;
use crate::rtnl::Rtnl;
use crate::sysctl;

/// A tap made for the kernel: it lives as long as someone holds `file`.
#[derive(Debug)]
pub struct Tap {
    /// The attached clone device, handed to the kernel.
    pub file: File,
    /// The name the host kernel chose (`tapN`).
    pub name: String,
}

/// Checks that the caller may use `gate`, before anything is made.
pub fn authorize(gate: Option<Ipv4Addr>, perms: &Permissions) -> Result<(), NetError> {
    match gate {
        Some(gate) => perms
            .check_address(gate, "a tap's host address")
            .map_err(NetError::Denied),
        // A bare tap owned by the caller changes nothing anyone else uses.
        None => Ok(()),
    }
}

/// Makes a non-persistent tap owned by the caller, gives it `gate`/32 and
/// brings it up, then switches on forwarding when the policy allows.
pub fn up(
    gate: Option<Ipv4Addr>,
    perms: &Permissions,
    report: &mut Report,
) -> Result<Tap, NetError> {
    let tun = Tun::attach(
        Path::new(CLONE_DEVICE),
        "",
        TunFlags::TAP | TunFlags::NO_PI,
        false,
    )
    .map_err(|e| {
        match &e {
            TunError::Open { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                // Only a file-capability install runs as the caller here.
                NetError::Device(format!(
                    "{e}: uml_net with file capabilities opens it as uid {}, so it must be \
                     mode 0666; or install uml_net setuid root",
                    perms.caller.uid
                ))
            }
            _ => NetError::Tun(e),
        }
    })?;
    // Owned by the caller so that later `add`/`del` requests recognise it; not
    // persistent, so it goes away with the guest.
    tun.set_owner(perms.caller.uid)?;
    report.step(&format!(
        "ip tuntap add {} mode tap user {} (gone when the guest closes it)",
        tun.name, perms.caller.uid
    ));
    let ifindex = nix::net::if_::if_nametoindex(tun.name.as_str())
        .map_err(|e| NetError::Device(format!("{} vanished after it was made: {e}", tun.name)))?;
    let mut rtnl = Rtnl::open()?;
    if let Some(gate) = gate {
        let what = format!("ip address add {gate}/32 dev {}", tun.name);
        rtnl.add_host_address(ifindex, gate, &what)?;
        report.step(&what);
    }
    let what = format!("ip link set {} up", tun.name);
    rtnl.set_up(ifindex, &what)?;
    report.step(&what);
    if gate.is_some() {
        forwarding(perms, report)?;
    }
    Ok(Tap {
        file: tun.file,
        name: tun.name,
    })
}

/// Switches on IPv4 forwarding, as the C helper always did, when the policy allows.
fn forwarding(perms: &Permissions, report: &mut Report) -> Result<(), NetError> {
    if sysctl::is_on(sysctl::IP_FORWARD)? {
        return Ok(());
    }
    if perms.rights.forward {
        sysctl::set(sysctl::IP_FORWARD, true)?;
        report.step("sysctl -w net.ipv4.ip_forward=1");
    } else {
        report.note(&format!(
            "IPv4 forwarding stays off: {}",
            perms.refusal("switch on forwarding")
        ));
    }
    Ok(())
}
