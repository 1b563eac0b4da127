//! Persistent TUN/TAP devices: created for a user, deleted, listed.

pub mod owner;
pub mod tun;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::tun::{IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN, Tun, TunError};

/// `IFF_PERSIST` as `tun_flags` in sysfs shows it.
const IFF_PERSIST: u32 = 0x0800;
/// `IFF_VNET_HDR`.
const IFF_VNET_HDR: u32 = 0x4000;

/// What to create.
#[derive(Debug, Clone)]
pub struct Request {
    /// The name (empty or a template such as `tap%d`: the kernel chooses).
    pub name: String,
    /// The clone device.
    pub clone: PathBuf,
    /// A layer 3 (TUN) device instead of a TAP.
    pub tun: bool,
    /// Several queues.
    pub multi_queue: bool,
    /// Who may attach.
    pub owner: Option<u32>,
    /// Which group may attach.
    pub group: Option<u32>,
    /// The MTU to set.
    pub mtu: Option<u32>,
}

/// A device made persistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The name the kernel gave it.
    pub name: String,
    /// The owner set.
    pub owner: Option<u32>,
    /// The group set.
    pub group: Option<u32>,
}

impl Created {
    /// The C tool's line: `Set 'tap0' persistent and owned by uid 1000 gid 100`.
    pub fn line(&self) -> String {
        let mut line = format!("Set '{}' persistent and owned by", self.name);
        if let Some(uid) = self.owner {
            line.push_str(&format!(" uid {uid}"));
        }
        if let Some(gid) = self.group {
            line.push_str(&format!(" gid {gid}"));
        }
        line
    }
}

/// Creates a persistent device, in the Debian tool's order: attach, make
/// persistent, then owner and group (the effective uid when neither is given).
pub fn create(request: &Request) -> Result<Created, TunError> {
    let mut flags = IFF_NO_PI | if request.tun { IFF_TUN } else { IFF_TAP };
    if request.multi_queue {
        flags |= IFF_MULTI_QUEUE;
    }
    let device = Tun::attach(&request.clone, &request.name, flags, false)?;
    device.set_persist(true)?;
    let owner = match (request.owner, request.group) {
        (None, None) => Some(nix::unistd::geteuid().as_raw()),
        (owner, _) => owner,
    };
    if let Some(uid) = owner {
        device.set_owner(uid)?;
    }
    if let Some(gid) = request.group {
        device.set_group(gid)?;
    }
    if let Some(mtu) = request.mtu {
        device.set_mtu(mtu)?;
    }
    Ok(Created {
        name: device.name,
        owner,
        group: request.group,
    })
}

/// Makes a device non-persistent, so it goes away. Returns whether it existed:
/// like the C tool this succeeds for a missing name (attaching creates it and
/// dropping persistence removes it again).
pub fn delete(name: &str, clone: &Path, tun: bool) -> Result<bool, TunError> {
    let existed = Path::new("/sys/class/net").join(name).exists();
    let existing = device_flags(name);
    let kind = match existing.map(kind_of) {
        Some(Kind::Tun) => IFF_TUN,
        Some(Kind::Tap) => IFF_TAP,
        None if tun => IFF_TUN,
        None => IFF_TAP,
    };
    let mut flags = IFF_NO_PI | kind;
    if existing.is_some_and(|f| f & u32::from(IFF_MULTI_QUEUE as u16) != 0) {
        flags |= IFF_MULTI_QUEUE;
    }
    let device = Tun::attach(clone, name, flags, false)?;
    device.set_persist(false)?;
    Ok(existed)
}

/// Layer 2 or layer 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Layer 3.
    Tun,
    /// Layer 2.
    Tap,
}

fn device_flags(name: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("tun_flags")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn kind_of(flags: u32) -> Kind {
    if flags & u32::from(IFF_TUN as u16) != 0 {
        Kind::Tun
    } else {
        Kind::Tap
    }
}

fn sysfs_id(name: &str, file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join(file)).ok()?;
    // -1 means "anyone".
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
}

/// One TUN/TAP device as sysfs shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// TUN or TAP.
    pub kind: Kind,
    /// Whether it outlives its file descriptors.
    pub persistent: bool,
    /// Who may attach (none: anyone with CAP_NET_ADMIN).
    pub owner: Option<u32>,
    /// Which group may attach.
    pub group: Option<u32>,
    /// Several queues.
    pub multi_queue: bool,
    /// No packet-information header.
    pub no_pi: bool,
    /// A virtio-net header before each packet.
    pub vnet_hdr: bool,
    /// The raw flags.
    pub flags: u32,
}

/// Every TUN/TAP device of this network namespace, by name.
pub fn list() -> Vec<Device> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().filter_map(|name| device(name)).collect()
}

/// The TUN/TAP device `name` of this network namespace, if there is one.
pub fn device(name: &str) -> Option<Device> {
    let flags = device_flags(name)?;
    Some(Device {
        kind: kind_of(flags),
        persistent: flags & IFF_PERSIST != 0,
        owner: sysfs_id(name, "owner"),
        group: sysfs_id(name, "group"),
        multi_queue: flags & u32::from(IFF_MULTI_QUEUE as u16) != 0,
        no_pi: flags & u32::from(IFF_NO_PI as u16) != 0,
        vnet_hdr: flags & IFF_VNET_HDR != 0,
        flags,
        name: name.to_owned(),
    })
}

/// The interface index sysfs gives `name`.
pub fn sysfs_ifindex(name: &str) -> Option<u32> {
    sysfs_id(name, "ifindex")
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut extras = Vec::new();
        if self.persistent {
            extras.push("persist");
        }
        if self.multi_queue {
            extras.push("multi_queue");
        }
        if !self.no_pi {
            extras.push("pi");
        }
        if self.vnet_hdr {
            extras.push("vnet_hdr");
        }
        write!(
            f,
            "{:<15} {:<4} {:>6} {:>6}  {}",
            self.name,
            match self.kind {
                Kind::Tun => "tun",
                Kind::Tap => "tap",
            },
            id(self.owner),
            id(self.group),
            extras.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_tools_lines() {
        let c = |owner, group| Created {
            name: "tap0".into(),
            owner,
            group,
        };
        assert_eq!(
            c(Some(1000), None).line(),
            "Set 'tap0' persistent and owned by uid 1000"
        );
        assert_eq!(
            c(Some(1000), Some(100)).line(),
            "Set 'tap0' persistent and owned by uid 1000 gid 100"
        );
        assert_eq!(
            c(None, Some(100)).line(),
            "Set 'tap0' persistent and owned by gid 100"
        );
    }
}
