//! `tuntap up [GATE]`: a new tap for the caller's guest, configured on the host side.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use tunctl::tun::{CLONE_DEVICE, IFF_NO_PI, IFF_TAP, Tun, TunError};

use crate::answer::Report;
use crate::error::NetError;
use crate::policy::{Network, Permissions};
use crate::rtnl::{Route, Rtnl};
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

/// Whether device `ifindex` is a TUN/TAP device the caller owns.
pub fn is_callers_tap(perms: &Permissions, ifindex: u32) -> bool {
    let Ok(name) = nix::net::if_::if_indextoname(ifindex) else {
        return false;
    };
    let name = name.to_string_lossy();
    tunctl::device(&name).is_some_and(|device| {
        tunctl::sysfs_ifindex(&name) == Some(ifindex) && perms.owns(device.owner, device.group)
    })
}

/// The name of device `ifindex`, for messages.
pub fn name_of(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("if{ifindex}"))
}

/// Refuses a GATE that something else on the host already uses: an address
/// routed through a device that is not the caller's tap (another guest's, a
/// LAN's or a remote network's, which a local address would capture), or one
/// published by proxy ARP. An address the host already has is no such thing:
/// it is delivered locally already, and the HOWTO's way is to reuse the host's
/// own LAN address as every tap's host end.
pub fn check_gate_unused(
    rtnl: &mut Rtnl,
    gate: Ipv4Addr,
    perms: &Permissions,
    report: &mut Report,
) -> Result<(), NetError> {
    if perms.caller.is_root() {
        return Ok(());
    }
    if let Some((_, index)) = rtnl.addresses()?.into_iter().find(|(a, _)| *a == gate) {
        report.note(&format!(
            "{gate} is already an address of this host (on {}); the tap shares it",
            name_of(index)
        ));
        return Ok(());
    }
    let in_use = |why: String| NetError::Denied(format!("GATE {gate} is in use: {why}"));
    let routes = rtnl.routes()?;
    let matching: Vec<&Route> = routes
        .iter()
        .filter(|r| {
            r.prefix > 0
                && Network {
                    addr: r.dst,
                    prefix: r.prefix,
                }
                .contains(gate)
        })
        .collect();
    let longest = matching.iter().map(|r| r.prefix).max();
    for route in matching.iter().filter(|r| Some(r.prefix) == longest) {
        match route.oif {
            Some(index) if is_callers_tap(perms, index) => {}
            Some(index) if route.on_link && route.prefix < 32 => {
                return Err(in_use(format!(
                    "it is on the network of {} ({}/{}), where a host may have it",
                    name_of(index),
                    route.dst,
                    route.prefix
                )));
            }
            Some(index) => {
                return Err(in_use(format!("it is routed through {}", name_of(index))));
            }
            None => return Err(in_use("it is routed through a gateway".to_owned())),
        }
    }
    if let Some((_, index)) = rtnl.proxies()?.into_iter().find(|(a, _)| *a == gate) {
        return Err(in_use(format!(
            "it is published by proxy ARP on {}",
            name_of(index)
        )));
    }
    Ok(())
}

/// Makes a non-persistent tap owned by the caller, gives it `gate`/32 and
/// brings it up, then switches on forwarding when the policy allows.
pub fn up(
    gate: Option<Ipv4Addr>,
    perms: &Permissions,
    report: &mut Report,
) -> Result<Tap, NetError> {
    let mut rtnl = Rtnl::open()?;
    if let Some(gate) = gate {
        check_gate_unused(&mut rtnl, gate, perms, report)?;
    }
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
