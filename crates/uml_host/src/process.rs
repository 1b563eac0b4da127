//! Other processes: the members of a process group as `/proc` shows them,
//! and how a program is started.
#![expect(
    unsafe_code,
    reason = "a child's personality is set between fork and exec, which only `pre_exec` (unsafe) reaches, with raw `personality` calls that keep the whole value; each block says why it is sound"
)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// A live process of a process group, with its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Its process ID.
    pub pid: i32,
    /// Its command line, one entry per argument (as `/proc/PID/cmdline` holds it).
    pub args: Vec<Vec<u8>>,
}

impl GroupMember {
    /// Whether any of its arguments contains `needle`.
    pub fn has_arg_containing(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && self
                .args
                .iter()
                .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
    }

    /// Whether its program (the first argument) ends with `suffix`.
    pub fn program_ends_with(&self, suffix: &[u8]) -> bool {
        self.args.first().is_some_and(|p| p.ends_with(suffix))
    }
}

/// The processes of process group `group`: what a killed UML kernel can leave
/// behind (its helpers and its guest's host processes share its group).
/// Processes that end while they are read are left out.
pub fn group_members(group: i32) -> Vec<GroupMember> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| process_group(pid) == Some(group))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            Some(GroupMember { pid, args })
        })
        .collect()
}

/// The process group of `pid`, from `/proc/PID/stat`.
pub fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis (the command may hold one
    // itself): state, ppid, pgrp.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Makes `cmd`'s program start without address-space randomization, as
/// `setarch -R` does (`personality(ADDR_NO_RANDOMIZE)`; the rest of the
/// personality is kept). Best effort: where changing the personality is
/// refused (a seccomp filter, systemd's `LockPersonality=`), the program
/// starts randomized, as it would have without this.
///
/// For UML kernels: the kernel adds the gap that a randomized heap start
/// leaves after its program (up to 1 GiB on x86-64) to its "physical"
/// memory, and the page map and hash tables sized for that take up to
/// 20 MiB of the memory the machine was given, a different amount at every
/// boot. The kernel's own code sits at a fixed address (the program is not
/// position-independent), so little randomization is given up.
pub fn exec_without_address_randomization(cmd: &mut Command) {
    let hook = || {
        // 0xffffffff asks without changing; the whole value is kept (nix's
        // `Persona` would drop the execution domain, `linux32`'s say).
        const QUERY: libc::c_ulong = 0xffff_ffff;
        let flag = libc::c_ulong::try_from(libc::ADDR_NO_RANDOMIZE).unwrap_or(0);
        // SAFETY: `personality` takes and returns plain integers and touches
        // no memory of ours; it is a system call, async-signal-safe.
        let current = unsafe { libc::personality(QUERY) };
        if let Ok(current) = libc::c_ulong::try_from(current) {
            // SAFETY: as above. A refusal leaves the personality as it was,
            // which is what the program would have had anyway.
            unsafe { libc::personality(current | flag) };
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: it makes two `personality` system
    // calls on integers, allocating nothing and taking no lock the parent
    // may have held.
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_child_in_a_group_of_its_own_is_found_with_its_arguments() {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Read once the child has become `sleep` (a CI run once caught it
        // still showing the spawner's command line).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let members = loop {
            let members = group_members(pid);
            let exec_done = members.iter().all(|m| m.program_ends_with(b"sleep"));
            if exec_done || std::time::Instant::now() > deadline {
                break members;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].pid, pid);
        assert!(members[0].program_ends_with(b"sleep"), "{members:?}");
        assert!(members[0].has_arg_containing(b"30"));
        assert!(!members[0].has_arg_containing(b"31"));
        assert!(!members[0].has_arg_containing(b""));
    }

    #[test]
    fn a_program_started_without_randomization_says_so() {
        // `/proc/self/personality` is the personality in hex; 0x0040000 is ADDR_NO_RANDOMIZE.
        let read = |cmd: &mut Command| {
            let out = cmd.args(["/proc/self/personality"]).output().unwrap();
            assert!(out.status.success(), "{out:?}");
            u32::from_str_radix(String::from_utf8(out.stdout).unwrap().trim(), 16).unwrap()
        };
        let flag = u32::try_from(libc::ADDR_NO_RANDOMIZE).unwrap();
        let plain = read(&mut Command::new("cat"));
        assert_eq!(plain & flag, 0, "this test runs randomized");
        let mut cmd = Command::new("cat");
        exec_without_address_randomization(&mut cmd);
        assert_eq!(read(&mut cmd), plain | flag);
        // The parent's own is untouched.
        assert_eq!(read(&mut Command::new("cat")), plain);
    }

    #[test]
    fn our_own_group_is_read_from_stat() {
        let own = nix::unistd::getpgrp().as_raw();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(process_group(me), Some(own));
    }
}
