//! Persistent TUN/TAP devices: created for a user, deleted, listed.

pub mod cli;
pub mod owner;

use std::path::{Path, PathBuf};

use serde::Serialize;
use uml_host::devices::{self, Device, Kind};
use uml_host::tun::{Tun, TunError, TunFlags};

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
    let mut flags = TunFlags::NO_PI
        | if request.tun {
            TunFlags::TUN
        } else {
            TunFlags::TAP
        };
    if request.multi_queue {
        flags |= TunFlags::MULTI_QUEUE;
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
    let existed = devices::exists(name);
    let existing = devices::flags(name);
    let kind = match existing.map(Kind::of) {
        Some(Kind::Tun) => TunFlags::TUN,
        Some(Kind::Tap) => TunFlags::TAP,
        None if tun => TunFlags::TUN,
        None => TunFlags::TAP,
    };
    let mut flags = TunFlags::NO_PI | kind;
    if existing.is_some_and(|f| f.contains(TunFlags::MULTI_QUEUE)) {
        flags |= TunFlags::MULTI_QUEUE;
    }
    let device = Tun::attach(clone, name, flags, false)?;
    device.set_persist(false)?;
    Ok(existed)
}

/// One line of `--list`, and its JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// `tun` or `tap`.
    pub kind: &'static str,
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
    pub flags: i32,
}

impl From<&Device> for Listed {
    fn from(device: &Device) -> Self {
        let has = |flag| device.flags.contains(flag);
        Self {
            name: device.name.clone(),
            kind: device.kind().name(),
            persistent: device.persistent(),
            owner: device.owner,
            group: device.group,
            multi_queue: has(TunFlags::MULTI_QUEUE),
            no_pi: has(TunFlags::NO_PI),
            vnet_hdr: has(TunFlags::VNET_HDR),
            flags: device.flags.bits(),
        }
    }
}

/// Every TUN/TAP device of this network namespace, by name.
pub fn list() -> Vec<Listed> {
    devices::list().iter().map(Listed::from).collect()
}

impl std::fmt::Display for Listed {
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
            self.kind,
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
