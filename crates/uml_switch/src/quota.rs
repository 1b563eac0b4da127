//! How many ports, and connections still to send their request, each user
//! may hold: without a limit one local user could take every descriptor the
//! switch has, and every other user's guests would find it full.
//!
//! Root and the user the switch runs as are not limited (they can stop the
//! switch anyway); everyone else is, by `--max-ports-per-user` for ports and
//! by [`PENDING_PER_USER`] for connections that have not sent a request.

use std::time::{Duration, Instant};

/// Connections one user may have waiting to send their request (a guest
/// sends its request at once; more than a few waiting is someone holding
/// descriptors).
pub const PENDING_PER_USER: usize = 8;

/// Refusals are logged at most this often, so a flood cannot fill the log.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What a refusal was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A daemon port beyond `--max-ports-per-user`.
    Port,
    /// A BESS port beyond it.
    BessPort,
    /// A connection beyond [`PENDING_PER_USER`] waiting ones.
    Waiting,
}

/// The limits, and who is exempt from them.
#[derive(Debug)]
pub struct Quota {
    /// Ports per user; `None`: no limit.
    max_ports: Option<usize>,
    /// The user the switch runs as.
    own_uid: u32,
    /// When a refusal of each kind was last logged.
    last_logged: [Option<Instant>; 3],
}

impl Quota {
    /// `max_ports` ports per user (0: no limit) for a switch running as `own_uid`.
    pub fn new(max_ports: usize, own_uid: u32) -> Self {
        Self {
            max_ports: (max_ports > 0).then_some(max_ports),
            own_uid,
            last_logged: [None; 3],
        }
    }

    /// Whether `uid` is held to the limits; an unknown user is.
    fn limited(&self, uid: Option<u32>) -> bool {
        uid.is_none_or(|uid| uid != 0 && uid != self.own_uid)
    }

    /// Whether `uid`, which has `open` ports, may have one more.
    pub fn may_open(&self, uid: Option<u32>, open: usize) -> bool {
        !self.limited(uid) || self.max_ports.is_none_or(|max| open < max)
    }

    /// Whether `uid`, with `waiting` connections yet to send a request, may
    /// have one more.
    pub fn may_wait(&self, uid: Option<u32>, waiting: usize) -> bool {
        !self.limited(uid) || waiting < PENDING_PER_USER
    }

    /// The port limit, for messages.
    pub fn max_ports(&self) -> Option<usize> {
        self.max_ports
    }

    /// Whether a refusal of `kind` seen `now` is to be logged (at most one
    /// of each kind a second).
    pub fn log_refusal(&mut self, kind: Refusal, now: Instant) -> bool {
        let last = &mut self.last_logged[kind as usize];
        let due = last.is_none_or(|last| now.saturating_duration_since(last) >= LOG_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_users_are_limited_root_and_the_switch_s_own_user_are_not() {
        let quota = Quota::new(2, 1000);
        for exempt in [Some(0), Some(1000)] {
            assert!(quota.may_open(exempt, 500));
            assert!(quota.may_wait(exempt, 500));
        }
        for limited in [Some(1001), None] {
            assert!(quota.may_open(limited, 1));
            assert!(!quota.may_open(limited, 2));
            assert!(quota.may_wait(limited, PENDING_PER_USER - 1));
            assert!(!quota.may_wait(limited, PENDING_PER_USER));
        }
    }

    #[test]
    fn zero_ports_means_no_port_limit_but_waiting_is_still_limited() {
        let quota = Quota::new(0, 0);
        assert!(quota.may_open(Some(1001), 100_000));
        assert!(!quota.may_wait(Some(1001), PENDING_PER_USER));
        assert_eq!(quota.max_ports(), None);
    }

    #[test]
    fn refusals_of_each_kind_are_logged_once_a_second() {
        let mut quota = Quota::new(1, 0);
        let t = Instant::now();
        assert!(quota.log_refusal(Refusal::Port, t));
        assert!(!quota.log_refusal(Refusal::Port, t + Duration::from_millis(999)));
        // The other kind is logged on its own clock.
        assert!(quota.log_refusal(Refusal::Waiting, t + Duration::from_millis(999)));
        assert!(quota.log_refusal(Refusal::Port, t + Duration::from_secs(1)));
    }
}
