//! `tuntap up [GATE]`: a new tap for the caller's guest, configured on the host side.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use uml_host::tun::{CLONE_DEVICE, Tun, TunError, TunFlags};

use crate::answer::Report;
use crate::error::NetError;
use crate::policy::{Network, Permissions};
use crate::rtnl::{Link, Route, Rtnl};
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

/// How many taps made by uml_net one user may have at a time, persistent ones
/// included (root has no limit).
pub const TAPS_PER_USER: usize = 32;

/// The alias a tap gets from uml_net, naming the user it was made for. Only a
/// holder of CAP_NET_ADMIN can change an alias; the tap's fd cannot.
pub fn label(uid: u32) -> String {
    format!("uml_net uid {uid}")
}

/// The user a device was made for by uml_net, read from its alias.
pub fn made_for(alias: Option<&str>) -> Option<u32> {
    alias?.strip_prefix("uml_net uid ")?.parse().ok()
}

/// Why `link` is not the caller's tap, if it is not: it must be a TUN/TAP
/// device the caller owns by the kernel's rule, and if uml_net made it, it
/// must have been made for the caller (its owner can be changed through the
/// fd, its label cannot).
pub fn not_callers_tap(perms: &Permissions, link: &Link) -> Option<String> {
    let name = &link.name;
    let Some(device) = uml_host::devices::device(name) else {
        return Some(format!(
            "'{name}' is not a TUN/TAP device; uml_net only routes through guests' taps"
        ));
    };
    // sysfs must describe the device netlink named.
    if uml_host::devices::ifindex(name) != Some(link.index) {
        return Some(format!(
            "/sys/class/net does not match this network namespace for '{name}'"
        ));
    }
    if perms.caller.is_root() {
        return None;
    }
    if !perms.owns(device.owner, device.group) {
        let owner = match (device.owner, device.group) {
            (Some(uid), _) => format!("uid {uid}"),
            (None, Some(gid)) => format!("group {gid}"),
            (None, None) => "nobody in particular".to_owned(),
        };
        return Some(format!(
            "'{name}' belongs to {owner}, not to uid {}",
            perms.caller.uid
        ));
    }
    match made_for(link.alias.as_deref()) {
        Some(uid) if uid != perms.caller.uid => Some(format!(
            "'{name}' was made by uml_net for uid {uid}, not for uid {}",
            perms.caller.uid
        )),
        _ => None,
    }
}

/// Whether device `ifindex` is the caller's tap.
pub fn is_callers_tap(rtnl: &mut Rtnl, perms: &Permissions, ifindex: u32) -> bool {
    rtnl.link(ifindex)
        .is_ok_and(|link| not_callers_tap(perms, &link).is_none())
}

/// How many live devices uml_net made for `uid`.
fn taps_made_for(rtnl: &mut Rtnl, uid: u32) -> Result<usize, NetError> {
    Ok(rtnl
        .links()?
        .iter()
        .filter(|link| made_for(link.alias.as_deref()) == Some(uid))
        .count())
}

/// Refuses another tap to a user who has [`TAPS_PER_USER`] already.
fn check_tap_count(
    rtnl: &mut Rtnl,
    perms: &Permissions,
    counting_new: bool,
) -> Result<(), NetError> {
    if perms.caller.is_root() {
        return Ok(());
    }
    let limit = TAPS_PER_USER + usize::from(counting_new);
    let uid = perms.caller.uid;
    if taps_made_for(rtnl, uid)? >= limit {
        return Err(NetError::Denied(format!(
            "uid {uid} already has {TAPS_PER_USER} taps made by uml_net (persistent ones \
             included); stop a guest, or have root delete the leftovers (tunctl -d TAP)"
        )));
    }
    Ok(())
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
/// own LAN address as every tap's host end. A GATE reached only through the
/// default route is judged by the policy
/// ([`Permissions::check_beyond_default_route`]).
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
            // A gateway's network is elsewhere, whichever device leads there.
            Some(index) if route.on_link && is_callers_tap(rtnl, perms, index) => {}
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
    if longest.is_none() {
        perms
            .check_beyond_default_route(gate, "a tap's host address")
            .map_err(NetError::Denied)?;
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
    check_tap_count(&mut rtnl, perms, false)?;
    if let Some(gate) = gate {
        check_gate_unused(&mut rtnl, gate, perms, report)?;
    }
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
    // Whoever holds the fd can make the tap persistent or give it to another
    // user; the label keeps it counted against, and routable by, its maker.
    let what = format!(
        "ip link set {} alias '{}'",
        tun.name,
        label(perms.caller.uid)
    );
    rtnl.set_alias(ifindex, &label(perms.caller.uid), &what)?;
    report.step(&what);
    // Counted again with this one, against a race of the user's own helpers.
    check_tap_count(&mut rtnl, perms, true)?;
    if let Some(gate) = gate {
        let what = format!("ip address add {gate}/32 dev {}", tun.name);
        rtnl.add_host_address(ifindex, gate, &what)?;
        report.step(&what);
    }
    // Before the link is up: a guest's first frame could be an advertisement,
    // or an IPv6 packet with any source at all.
    refuse_ipv6(&tun.name, ifindex, report)?;
    // Strict reverse-path filtering: the host takes from the guest only
    // packets whose source it routes back through the tap, so a guest cannot
    // pose as the host's router (an ICMP redirect the kernel would otherwise
    // accept while the host does not forward) or as any other host. Redirects
    // are refused outright too (the kernel heeds that while forwarding).
    let what = format!(
        "sysctl -w net.ipv4.conf.{name}.rp_filter=1 net.ipv4.conf.{name}.accept_redirects=0",
        name = tun.name
    );
    rtnl.set_inet_conf(
        ifindex,
        &[
            (crate::rtnl::IPV4_DEVCONF_RP_FILTER, 1),
            (crate::rtnl::IPV4_DEVCONF_ACCEPT_REDIRECTS, 0),
        ],
        &what,
    )?;
    report.step(&what);
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

/// Switches IPv6 off on the tap, and with it router advertisements, redirects
/// and address autoconfiguration arriving there. Neither helper configures
/// IPv6 for a guest, and the host filters no IPv6 source on the tap: with
/// IPv6 on, a guest (a bare tap's holder included) could send packets from
/// any address, and a host that forwards IPv6 would pass them on.
fn refuse_ipv6(name: &str, ifindex: u32, report: &mut Report) -> Result<(), NetError> {
    let dir = sysctl::ipv6_dir(name);
    if !Path::new(&dir).is_dir() {
        // No IPv6 on this host (or this device): nothing to accept.
        return Ok(());
    }
    // The switches stay off too, should someone switch IPv6 back on.
    for switch in sysctl::IPV6_FROM_LINK {
        sysctl::set(&format!("{dir}/{switch}"), false)?;
    }
    sysctl::set(&format!("{dir}/{}", sysctl::IPV6_DISABLE), true)?;
    // The switches are reached by name. Only a holder of CAP_NET_ADMIN could
    // rename the tap meanwhile, and the helper holds its only fd; still, check.
    if nix::net::if_::if_nametoindex(name).ok() != Some(ifindex) {
        return Err(NetError::Device(format!(
            "{name} changed while it was being set up"
        )));
    }
    let mut settings: Vec<String> = sysctl::IPV6_FROM_LINK
        .iter()
        .map(|switch| format!("net.ipv6.conf.{name}.{switch}=0"))
        .collect();
    settings.push(format!("net.ipv6.conf.{name}.{}=1", sysctl::IPV6_DISABLE));
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
