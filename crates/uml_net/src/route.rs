//! `add|del DEV ADDR [NETMASK]`: the host route to a guest address through the
//! guest's tap, proxy ARP on the tap, and the address published by proxy ARP on
//! the host interfaces whose networks contain it.

use std::net::Ipv4Addr;

use nix::errno::Errno;

use crate::answer::Report;
use crate::error::NetError;
use crate::policy::{Network, Permissions};
use crate::request::Change;
use crate::rtnl::{Route, Rtnl};
use crate::tap::{self, name_of};

/// A checked `add` or `del`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// Add or delete.
    pub change: Change,
    /// The caller's tap.
    pub dev: String,
    /// Its interface index.
    pub ifindex: u32,
    /// The guest's address.
    pub addr: Ipv4Addr,
}

/// Checks everything before anything changes: DEV is a TUN/TAP device the
/// caller owns, and (for `add`) the policy lets the caller use ADDR.
pub fn authorize(
    change: Change,
    dev: &str,
    addr: Ipv4Addr,
    perms: &Permissions,
) -> Result<RouteChange, NetError> {
    let ifindex = nix::net::if_::if_nametoindex(dev)
        .map_err(|_| NetError::Device(format!("no network device '{dev}'")))?;
    let link = Rtnl::open()?.link(ifindex)?;
    if link.name != dev {
        return Err(NetError::Device(format!(
            "'{dev}' changed while it was being checked"
        )));
    }
    if let Some(why) = tap::not_callers_tap(perms, &link) {
        return Err(NetError::Denied(why));
    }
    if change == Change::Add {
        perms
            .check_address(addr, "a guest address")
            .map_err(NetError::Denied)?;
    }
    Ok(RouteChange {
        change,
        dev: dev.to_owned(),
        ifindex,
        addr,
    })
}

/// The other interfaces with a directly attached network that holds `addr`:
/// where hosts expect to find it, so where the host should answer ARP for it.
fn publishing_interfaces(routes: &[Route], tap: u32, addr: Ipv4Addr) -> Vec<u32> {
    let mut found: Vec<u32> = routes
        .iter()
        .filter(|r| r.on_link && r.prefix > 0 && r.oif != Some(tap))
        .filter(|r| {
            Network {
                addr: r.dst,
                prefix: r.prefix,
            }
            .contains(addr)
        })
        .filter_map(|r| r.oif)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Refuses, for a non-root caller, a guest address that the host already
/// sends somewhere: the host route `add` makes is more specific than any
/// network route, so it would divert to the guest everything the host and
/// its other users send to that address.
///
/// The address's most specific route (a default route aside) must go through
/// one of the caller's taps, or be a LAN's directly attached network on which
/// no host is known to have the address (the proxy ARP case: the guest joins
/// the LAN); a gateway's network, an address routed to a device, or another
/// guest's tap are someone else's. An address the host publishes by proxy
/// ARP is someone else's too. An address reached only through the default
/// route is judged by the policy ([`Permissions::check_beyond_default_route`]).
fn check_guest_unused(
    rtnl: &mut Rtnl,
    addr: Ipv4Addr,
    perms: &Permissions,
) -> Result<(), NetError> {
    if perms.caller.is_root() {
        return Ok(());
    }
    let denied = |why: String| NetError::Denied(format!("{addr} {why}"));
    let routes = rtnl.routes()?;
    let matching: Vec<&Route> = routes
        .iter()
        .filter(|r| {
            r.prefix > 0
                && Network {
                    addr: r.dst,
                    prefix: r.prefix,
                }
                .contains(addr)
        })
        .collect();
    let longest = matching.iter().map(|r| r.prefix).max();
    let mut lans = Vec::new();
    for route in matching.iter().filter(|r| Some(r.prefix) == longest) {
        let network = format!("{}/{}", route.dst, route.prefix);
        match route.oif {
            // A gateway's network is elsewhere, whichever device leads there.
            Some(index) if route.on_link && tap::is_callers_tap(rtnl, perms, index) => {}
            Some(index)
                if route.on_link
                    && route.prefix < 32
                    && uml_host::devices::device(&name_of(index)).is_none() =>
            {
                lans.push((index, network));
            }
            Some(index) if route.on_link => {
                return Err(denied(format!(
                    "is already routed through {}",
                    name_of(index)
                )));
            }
            _ => {
                return Err(denied(format!(
                    "is routed through a gateway ({network}): it belongs to a network elsewhere"
                )));
            }
        }
    }
    if !lans.is_empty() {
        let neighbours = rtnl.neighbours()?;
        for (index, network) in lans {
            if neighbours
                .iter()
                .any(|&(a, on, live)| a == addr && on == index && live)
            {
                return Err(denied(format!(
                    "is on the network of {} ({network}), and a host on {} has it",
                    name_of(index),
                    name_of(index)
                )));
            }
        }
    }
    if let Some((_, index)) = rtnl.proxies()?.into_iter().find(|(a, _)| *a == addr) {
        return Err(denied(format!(
            "is already published by proxy ARP on {}",
            name_of(index)
        )));
    }
    if longest.is_none() {
        perms
            .check_beyond_default_route(addr, "a guest address")
            .map_err(NetError::Denied)?;
    }
    Ok(())
}

/// A change already made, to be undone if a later step fails.
enum Undo {
    Route,
    ProxyArpSwitch,
    Proxy(u32),
}

/// Applies an authorised change.
pub fn apply(
    request: &RouteChange,
    perms: &Permissions,
    report: &mut Report,
) -> Result<(), NetError> {
    let mut rtnl = Rtnl::open()?;
    match request.change {
        Change::Add => add(&mut rtnl, request, perms, report),
        Change::Del => del(&mut rtnl, request, perms, report),
    }
}

fn add(
    rtnl: &mut Rtnl,
    request: &RouteChange,
    perms: &Permissions,
    report: &mut Report,
) -> Result<(), NetError> {
    let mut done = Vec::new();
    let result = add_steps(rtnl, request, perms, report, &mut done);
    if result.is_err() {
        undo(rtnl, request, done, report);
    }
    result
}

fn add_steps(
    rtnl: &mut Rtnl,
    request: &RouteChange,
    perms: &Permissions,
    report: &mut Report,
    done: &mut Vec<Undo>,
) -> Result<(), NetError> {
    let RouteChange {
        dev, ifindex, addr, ..
    } = request;
    // The host's own address would shadow the route: the guest could never be reached.
    if let Some((_, index)) = rtnl.addresses()?.into_iter().find(|(a, _)| a == addr) {
        return Err(NetError::Denied(format!(
            "{addr} is an address of this host (on {}); a guest cannot have it",
            name_of(index)
        )));
    }
    check_guest_unused(rtnl, *addr, perms)?;
    let what = format!("ip route add {addr}/32 dev {dev}");
    match rtnl.add_host_route(*ifindex, *addr, &what) {
        Ok(()) => {
            report.step(&what);
            done.push(Undo::Route);
        }
        Err(e) if e.errno() == Some(Errno::EEXIST) => {
            // The kernel says EEXIST for the same destination through any device.
            let through = rtnl
                .routes()?
                .iter()
                .find(|r| r.dst == *addr && r.prefix == 32)
                .and_then(|r| r.oif);
            if through != Some(*ifindex) {
                let elsewhere = through.map_or_else(|| "a gateway".to_owned(), name_of);
                return Err(NetError::Denied(format!(
                    "{addr} is already routed through {elsewhere}"
                )));
            }
            report.note(&format!("{what}: already there"));
        }
        Err(e) => return Err(e.into()),
    }
    if rtnl.link(*ifindex)?.proxy_arp != Some(true) {
        let what = format!("sysctl -w net.ipv4.conf.{dev}.proxy_arp=1");
        rtnl.set_proxy_arp(*ifindex, true, &what)?;
        report.step(&what);
        done.push(Undo::ProxyArpSwitch);
    }
    let interfaces = publishing_interfaces(&rtnl.routes()?, *ifindex, *addr);
    if interfaces.is_empty() {
        return Ok(());
    }
    if !perms.rights.proxy_arp {
        let names: Vec<String> = interfaces.into_iter().map(name_of).collect();
        report.note(&format!(
            "{addr} is not published on {}: {}",
            names.join(", "),
            perms.refusal("publish addresses by proxy ARP")
        ));
        return Ok(());
    }
    for other in interfaces {
        let what = format!("ip neigh add proxy {addr} dev {}", name_of(other));
        rtnl.add_proxy(other, *addr, &what)?;
        report.step(&what);
        done.push(Undo::Proxy(other));
    }
    Ok(())
}

fn undo(rtnl: &mut Rtnl, request: &RouteChange, done: Vec<Undo>, report: &mut Report) {
    let RouteChange {
        dev, ifindex, addr, ..
    } = request;
    for step in done.into_iter().rev() {
        let (what, result) = match step {
            Undo::Route => {
                let what = format!("ip route del {addr}/32 dev {dev}");
                let result = rtnl
                    .del_host_route(*ifindex, *addr, &what)
                    .map_err(NetError::from);
                (what, result)
            }
            Undo::ProxyArpSwitch => {
                let what = format!("sysctl -w net.ipv4.conf.{dev}.proxy_arp=0");
                let result = rtnl
                    .set_proxy_arp(*ifindex, false, &what)
                    .map_err(NetError::from);
                (what, result)
            }
            Undo::Proxy(other) => {
                let what = format!("ip neigh del proxy {addr} dev {}", name_of(other));
                let result = rtnl.del_proxy(other, *addr, &what).map_err(NetError::from);
                (what, result)
            }
        };
        match result {
            Ok(()) => report.step(&format!("{what} (undoing)")),
            Err(e) => report.note(&format!("could not undo: {e}")),
        }
    }
}

fn del(
    rtnl: &mut Rtnl,
    request: &RouteChange,
    perms: &Permissions,
    report: &mut Report,
) -> Result<(), NetError> {
    let RouteChange {
        dev, ifindex, addr, ..
    } = request;
    let what = format!("ip route del {addr}/32 dev {dev}");
    // What add made for this tap hangs on the route through it: without that
    // route, any route or proxy entry for the address is someone else's.
    let through_tap = |routes: &[Route]| {
        routes
            .iter()
            .any(|r| r.dst == *addr && r.prefix == 32 && r.oif == Some(*ifindex))
    };
    if !through_tap(&rtnl.routes()?) {
        report.note(&format!(
            "{what}: not there; nothing else is {dev}'s to remove"
        ));
        return Ok(());
    }
    match rtnl.del_host_route(*ifindex, *addr, &what) {
        Ok(()) => report.step(&what),
        Err(e) if e.errno() == Some(Errno::ESRCH) => {
            report.note(&format!("{what}: not there"));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let routes = rtnl.routes()?;
    // The address was this tap's guest's, so its publication was too, if the
    // caller could have made it.
    if perms.rights.proxy_arp && perms.rights.allows(*addr) {
        for other in publishing_interfaces(&routes, *ifindex, *addr) {
            let what = format!("ip neigh del proxy {addr} dev {}", name_of(other));
            match rtnl.del_proxy(other, *addr, &what) {
                Ok(()) => report.step(&what),
                Err(e) if e.errno() == Some(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // The tap's proxy ARP serves its other addresses while any route uses it.
    let still_routed = routes
        .iter()
        .any(|r| r.oif == Some(*ifindex) && r.prefix == 32);
    if !still_routed && rtnl.link(*ifindex)?.proxy_arp == Some(true) {
        let what = format!("sysctl -w net.ipv4.conf.{dev}.proxy_arp=0");
        rtnl.set_proxy_arp(*ifindex, false, &what)?;
        report.step(&what);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], prefix: u8, oif: u32, on_link: bool) -> Route {
        Route {
            dst: Ipv4Addr::from(dst),
            prefix,
            oif: Some(oif),
            on_link,
        }
    }

    #[test]
    fn published_where_the_address_belongs() {
        let routes = [
            route([0, 0, 0, 0], 0, 2, false),    // default route: never
            route([10, 99, 7, 0], 24, 3, true),  // the LAN holding the guest
            route([10, 99, 0, 0], 16, 4, true),  // a wider LAN, also holding it
            route([10, 99, 8, 0], 24, 5, true),  // another LAN
            route([10, 99, 7, 0], 24, 6, false), // reached through a gateway
            route([10, 99, 7, 2], 32, 9, true),  // the tap itself
            route([10, 99, 7, 0], 24, 3, true),  // a duplicate
        ];
        assert_eq!(
            publishing_interfaces(&routes, 9, Ipv4Addr::new(10, 99, 7, 2)),
            vec![3, 4]
        );
        assert!(publishing_interfaces(&routes, 9, Ipv4Addr::new(192, 0, 2, 1)).is_empty());
    }
}
