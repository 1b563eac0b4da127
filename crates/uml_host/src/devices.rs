//! TUN/TAP devices as sysfs shows them (`/sys/class/net/NAME/tun_flags`, `owner`, `group`).

use std::path::{Path, PathBuf};

use crate::tun::TunFlags;

/// Where the network devices of this network namespace are listed.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Layer 2 or layer 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Layer 3.
    Tun,
    /// Layer 2.
    Tap,
}

impl Kind {
    /// The kind a device with `flags` has.
    pub fn of(flags: TunFlags) -> Self {
        if flags.contains(TunFlags::TUN) {
            Kind::Tun
        } else {
            Kind::Tap
        }
    }

    /// `tun` or `tap`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tun => "tun",
            Kind::Tap => "tap",
        }
    }
}

/// One TUN/TAP device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// Who may attach (none: anyone with CAP_NET_ADMIN).
    pub owner: Option<u32>,
    /// Which group may attach.
    pub group: Option<u32>,
    /// Its flags.
    pub flags: TunFlags,
}

impl Device {
    /// TUN or TAP.
    pub fn kind(&self) -> Kind {
        Kind::of(self.flags)
    }

    /// Whether it outlives its file descriptors.
    pub fn persistent(&self) -> bool {
        self.flags.contains(TunFlags::PERSIST)
    }
}

fn attribute(name: &str, file: &str) -> PathBuf {
    Path::new(SYS_CLASS_NET).join(name).join(file)
}

/// A numeric id attribute; -1 ("anyone") and anything unreadable are `None`.
fn sysfs_id(name: &str, file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(attribute(name, file)).ok()?;
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
}

/// The flags of TUN/TAP device `name`, or `None` when no such TUN/TAP device exists.
pub fn flags(name: &str) -> Option<TunFlags> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    TunFlags::from_sysfs(&std::fs::read_to_string(attribute(name, "tun_flags")).ok()?)
}

/// Whether any network device called `name` exists.
pub fn exists(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && Path::new(SYS_CLASS_NET).join(name).exists()
}

/// The TUN/TAP device `name` of this network namespace, if there is one.
pub fn device(name: &str) -> Option<Device> {
    let flags = flags(name)?;
    Some(Device {
        owner: sysfs_id(name, "owner"),
        group: sysfs_id(name, "group"),
        flags,
        name: name.to_owned(),
    })
}

/// Every TUN/TAP device of this network namespace, by name.
pub fn list() -> Vec<Device> {
    let Ok(entries) = std::fs::read_dir(SYS_CLASS_NET) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().filter_map(|name| device(name)).collect()
}

/// The interface index sysfs gives `name`.
pub fn ifindex(name: &str) -> Option<u32> {
    sysfs_id(name, "ifindex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_no_tun_device_and_bad_names_find_nothing() {
        assert_eq!(device("lo"), None);
        assert_eq!(flags(".."), None);
        assert_eq!(flags("../lo"), None);
        assert!(!exists(""));
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of(TunFlags::TUN | TunFlags::NO_PI), Kind::Tun);
        assert_eq!(Kind::of(TunFlags::TAP), Kind::Tap);
        assert_eq!(Kind::Tap.name(), "tap");
    }
}
