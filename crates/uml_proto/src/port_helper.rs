//! The one datagram `port-helper` sends the kernel for a `port:` or `xterm`
//! console channel: the terminal's fd as `SCM_RIGHTS`, with the helper's PID
//! as the payload, so the kernel can kill the helper when it closes the channel.
//!
//! The kernel takes the PID only from a payload of exactly the size of an
//! `int`; any other size leaves it at -1 (no helper to kill).

use zerocopy::byteorder::{I32, NativeEndian};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte layout of the payload: the helper's PID, host-endian.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct HelperPid {
    /// The sending helper's process id.
    pub pid: I32<NativeEndian>,
}

const _: () = assert!(size_of::<HelperPid>() == 4);

impl HelperPid {
    /// The payload for `pid`.
    pub fn new(pid: i32) -> Self {
        Self { pid: I32::new(pid) }
    }

    /// The PID the kernel takes from a payload: -1 unless it is exactly 4 bytes.
    pub fn pid_of(payload: &[u8]) -> i32 {
        Self::ref_from_bytes(payload).map_or(-1, |p| p.pid.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn payload_is_the_host_endian_pid() {
        assert_eq!(
            HelperPid::new(0x0102_0304).as_bytes(),
            &0x0102_0304i32.to_ne_bytes()
        );
        assert_eq!(HelperPid::pid_of(&1234i32.to_ne_bytes()), 1234);
    }

    #[test]
    fn other_sizes_carry_no_pid() {
        assert_eq!(HelperPid::pid_of(&[]), -1);
        assert_eq!(HelperPid::pid_of(&[1, 0, 0]), -1);
        assert_eq!(HelperPid::pid_of(&[1, 0, 0, 0, 0]), -1);
    }

    proptest! {
        #[test]
        fn pid_round_trips(pid in any::<i32>()) {
            prop_assert_eq!(HelperPid::pid_of(HelperPid::new(pid).as_bytes()), pid);
        }
    }
}
