//! The helper's privileges. Installed setuid root or with
//! `cap_net_admin+ep`, it keeps only CAP_NET_ADMIN while it works and gives up
//! everything, root identity included, before it writes its answer.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, getgroups, getresgid, getresuid, setresgid, setresuid};

use crate::policy::Caller;

/// A privilege operation the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Reading or changing a capability set failed.
    #[error("cannot restrict capabilities ({what}): {source}")]
    Caps {
        /// Which step.
        what: &'static str,
        /// The failure.
        source: caps::errors::CapsError,
    },
    /// Reading or changing user or group ids failed.
    #[error("cannot {what}: {source}")]
    Ids {
        /// Which step.
        what: &'static str,
        /// The failure.
        source: nix::Error,
    },
}

fn caps_err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> PrivilegeError {
    move |source| PrivilegeError::Caps { what, source }
}

fn ids_err(what: &'static str) -> impl Fn(nix::Error) -> PrivilegeError {
    move |source| PrivilegeError::Ids { what, source }
}

/// The real identity of whoever ran the helper: the one the policy judges.
pub fn caller() -> Result<Caller, PrivilegeError> {
    let uids = getresuid().map_err(ids_err("read the user ids"))?;
    let gids = getresgid().map_err(ids_err("read the group ids"))?;
    let groups = getgroups().map_err(ids_err("read the supplementary groups"))?;
    Ok(Caller {
        uid: uids.real.as_raw(),
        gid: gids.real.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    })
}

/// The group Debian's `uml-net` is called; its members are served without a
/// policy file, as the C package served them.
pub const DEBIAN_GROUP: &str = "uml-net";

/// The groups whose members get the C package's rights when there is no
/// policy file: the group owning the helper's own executable, when its mode
/// lets that group run it and no one else (Debian's `root:uml-net 4754`, so
/// the kernel already kept everyone else out), and the group `uml-net`. The
/// executable is judged through `/proc/self/exe`, the file the kernel ran,
/// whatever path or argv[0] it was started by.
pub fn install_groups() -> Vec<u32> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::{Mode, fstat};

    let mut groups = Vec::new();
    let exe = open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    if let Ok(stat) = exe.and_then(fstat) {
        let mode = stat.st_mode & 0o777;
        if mode & 0o010 != 0 && mode & 0o001 == 0 {
            groups.push(stat.st_gid);
        }
    }
    if let Ok(Some(group)) = nix::unistd::Group::from_name(DEBIAN_GROUP) {
        let gid = group.gid.as_raw();
        if !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

/// Reduces every capability set to CAP_NET_ADMIN (or nothing, if it was not
/// permitted) and forbids gaining privileges again. Returns whether
/// CAP_NET_ADMIN is held.
///
/// A setuid-root helper keeps its effective uid 0 meanwhile: root-owned files
/// it must open (`/dev/net/tun`, the `/proc/sys/net` switches) stay open to it
/// without CAP_DAC_OVERRIDE.
pub fn keep_only_net_admin() -> Result<bool, PrivilegeError> {
    nix::sys::prctl::set_no_new_privs().map_err(ids_err("set no_new_privs"))?;
    // Ambient capabilities are absent on old kernels; nothing to clear there.
    let _ = caps::clear(None, CapSet::Ambient);
    // The bounding set needs CAP_SETPCAP to shrink; a setcap install lacks it
    // and execs nothing, so the bounding set does not matter there.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding"))?;
        for cap in bounding {
            if cap != Capability::CAP_NET_ADMIN {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("shrink bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear inheritable"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("read permitted"))?;
    let keep: CapsHashSet = permitted
        .into_iter()
        .filter(|&cap| cap == Capability::CAP_NET_ADMIN)
        .collect();
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("set permitted"))?;
    Ok(!keep.is_empty())
}

/// Becomes the caller in every id and holds no capability at all. Needs no
/// privilege: a process may always set its ids to its real ones.
pub fn drop_all(caller: &Caller) -> Result<(), PrivilegeError> {
    let gid = Gid::from_raw(caller.gid);
    setresgid(gid, gid, gid).map_err(ids_err("give up the group ids"))?;
    let uid = Uid::from_raw(caller.uid);
    setresuid(uid, uid, uid).map_err(ids_err("give up the user ids"))?;
    // Leaving uid 0 already emptied the sets; a setcap install never had uid 0.
    caps::clear(None, CapSet::Effective).map_err(caps_err("clear effective"))?;
    caps::clear(None, CapSet::Permitted).map_err(caps_err("clear permitted"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_net_admin_survives_and_then_nothing() {
        // Capability sets belong to a thread: this one alone is narrowed.
        let checked = std::thread::spawn(|| {
            let me = caller().expect("ids");
            let was_root =
                caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).expect("read");
            let held = keep_only_net_admin().expect("restrict");
            assert_eq!(held, was_root);
            let only = |set| {
                caps::read(None, set)
                    .expect("read")
                    .into_iter()
                    .all(|cap| cap == Capability::CAP_NET_ADMIN)
            };
            assert!(only(CapSet::Effective) && only(CapSet::Permitted));
            assert!(
                caps::read(None, CapSet::Inheritable)
                    .expect("read")
                    .is_empty()
            );
            if was_root {
                assert!(only(CapSet::Bounding));
            }
            drop_all(&me).expect("drop");
            assert!(
                caps::read(None, CapSet::Effective)
                    .expect("read")
                    .is_empty()
            );
            assert!(
                caps::read(None, CapSet::Permitted)
                    .expect("read")
                    .is_empty()
            );
        })
        .join();
        assert!(checked.is_ok(), "the narrowed thread failed");
    }
}
