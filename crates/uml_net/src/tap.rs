//! `tuntap up [GATE]`: a new tap for the caller's guest, configured on the host side.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use tunctl::tun::{CLONE_DEVICE, IFF_NO_PI, IFF_TAP, Tun, TunError};

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
    let tun =
        Tun::attach(Path::new(CLONE_DEVICE), "", IFF_TAP | IFF_NO_PI, false).map_err(|e| {
            match &e {
                TunError::Open { source, .. }
                    if source.kind() == io::ErrorKind::PermissionDenied =>
                {
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
    // Before the link is up: a guest's first frame could be an advertisement.
    ignore_ipv6_configuration(&tun.name, ifindex, report)?;
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

/// Makes the host ignore router advertisements, redirects and address
/// autoconfiguration arriving on the tap: its other end is a guest, which must
/// not choose the host's routes or addresses.
fn ignore_ipv6_configuration(
    name: &str,
    ifindex: u32,
    report: &mut Report,
) -> Result<(), NetError> {
    let dir = sysctl::ipv6_dir(name);
    if !Path::new(&dir).is_dir() {
        // No IPv6 on this host (or this device): nothing to accept.
        return Ok(());
    }
    for switch in sysctl::IPV6_FROM_LINK {
        sysctl::set(&format!("{dir}/{switch}"), false)?;
    }
    // The switches are reached by name. Only a holder of CAP_NET_ADMIN could
    // rename the tap meanwhile, and the helper holds its only fd; still, check.
    if nix::net::if_::if_nametoindex(name).ok() != Some(ifindex) {
        return Err(NetError::Device(format!(
            "{name} changed while it was being set up"
        )));
    }
    let settings: Vec<String> = sysctl::IPV6_FROM_LINK
        .iter()
        .map(|switch| format!("net.ipv6.conf.{name}.{switch}=0"))
        .collect();
    report.step(&format!("sysctl -w {}", settings.join(" ")));
    Ok(())
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
