//! How many ports, and connections still to send their request, other users
//! may hold: without a limit one local user could take every descriptor the
//! switch has, and every other user's guests would find it full.
//!
//! Root and the user the switch runs as are not limited (they can stop the
//! switch anyway). Everyone else is, each user by `--max-ports-per-user`
//! for ports and by [`PENDING_PER_USER`] for connections that have not sent
//! a request, and all of them together by the switch's descriptor limit
//! less [`RESERVED_FDS`], which stay for root, the switch's own user and the
//! switch itself: a user who can run processes under many uids (subordinate
//! uids in a user namespace) still cannot take them all.

use std::time::Instant;

use crate::log::LineLimit;

/// Connections one user may have waiting to send their request (a guest
/// sends its request at once; more than a few waiting is someone holding
/// descriptors).
pub const PENDING_PER_USER: usize = 8;

/// Descriptors other users can never take: for root's and the switch's own
/// user's ports, and for the switch's own sockets and files (a quarter of
/// the limit when that is less).
pub const RESERVED_FDS: usize = 128;

/// Refusals of one kind are logged at most this many a second, so that
/// refusals cannot fill the log.
const LOG_PER_SECOND: u32 = 1;

/// What a refusal was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A daemon port.
    Port,
    /// A BESS port.
    BessPort,
    /// A connection that is yet to send its request.
    Waiting,
}

/// Which limit a request is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The user's own: it holds this many (ports, or waiting connections).
    User(usize),
    /// All other users': together they hold `held` of the `budget`
    /// descriptors they may.
    All {
        /// Descriptors other users' ports and connections hold.
        held: usize,
        /// What they may hold together.
        budget: usize,
    },
}

/// The limits, and who is exempt from them.
#[derive(Debug)]
pub struct Quota {
    /// Ports per user; `None`: no limit.
    max_ports: Option<usize>,
    /// The user the switch runs as.
    own_uid: u32,
    /// Descriptors all limited users' ports and connections may hold.
    budget: usize,
    /// The refusals of each kind logged this second.
    logged: [LineLimit; 3],
}

impl Quota {
    /// `max_ports` ports per user (0: no limit), for a switch running as
    /// `own_uid` that may open `fd_limit` descriptors.
    pub fn new(max_ports: usize, own_uid: u32, fd_limit: usize) -> Self {
        Self {
            max_ports: (max_ports > 0).then_some(max_ports),
            own_uid,
            budget: fd_limit.saturating_sub(RESERVED_FDS.min(fd_limit / 4)),
            logged: std::array::from_fn(|_| LineLimit::new(LOG_PER_SECOND)),
        }
    }

    /// Whether `uid` is held to the limits.
    pub fn limited(&self, uid: u32) -> bool {
        uid != 0 && uid != self.own_uid
    }

    /// The user the switch runs as, for messages.
    pub fn own_uid(&self) -> u32 {
        self.own_uid
    }

    /// Whether `uid`, which has `open` ports, may have one more that takes
    /// `cost` descriptors, while limited users hold `held` descriptors.
    pub fn may_open(&self, uid: u32, open: usize, held: usize, cost: usize) -> Result<(), Over> {
        if !self.limited(uid) {
            return Ok(());
        }
        if self.max_ports.is_some_and(|max| open >= max) {
            return Err(Over::User(open));
        }
        self.within_budget(held, cost)
    }

    /// Whether `uid`, with `waiting` connections yet to send a request, may
    /// have one more, while limited users hold `held` descriptors.
    pub fn may_wait(&self, uid: u32, waiting: usize, held: usize) -> Result<(), Over> {
        if !self.limited(uid) {
            return Ok(());
        }
        if waiting >= PENDING_PER_USER {
            return Err(Over::User(waiting));
        }
        self.within_budget(held, 1)
    }

    fn within_budget(&self, held: usize, cost: usize) -> Result<(), Over> {
        if held.saturating_add(cost) > self.budget {
            return Err(Over::All {
                held,
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// Whether a refusal of `kind` seen `now` is to be logged (at most one
    /// of each kind a second).
    pub fn log_refusal(&mut self, kind: Refusal, now: Instant) -> bool {
        self.logged[kind as usize].allow(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn other_users_are_limited_root_and_the_switch_s_own_user_are_not() {
        let quota = Quota::new(2, 1000, 1024);
        for exempt in [0, 1000] {
            assert_eq!(quota.may_open(exempt, 500, 5000, 2), Ok(()));
            assert_eq!(quota.may_wait(exempt, 500, 5000), Ok(()));
        }
        assert_eq!(quota.may_open(1001, 1, 0, 2), Ok(()));
        assert_eq!(quota.may_open(1001, 2, 0, 2), Err(Over::User(2)));
        assert_eq!(quota.may_wait(1001, PENDING_PER_USER - 1, 0), Ok(()));
        assert_eq!(
            quota.may_wait(1001, PENDING_PER_USER, 0),
            Err(Over::User(PENDING_PER_USER))
        );
    }

    #[test]
    fn all_other_users_together_leave_the_reserve_alone() {
        // 1000 descriptors: 872 for other users, 128 kept.
        let quota = Quota::new(64, 1000, 1000);
        assert_eq!(quota.may_open(1001, 0, 870, 2), Ok(()));
        let over = Err(Over::All {
            held: 871,
            budget: 872,
        });
        assert_eq!(quota.may_open(1002, 0, 871, 2), over);
        assert_eq!(quota.may_wait(1003, 0, 871), Ok(()));
        assert!(quota.may_wait(1003, 0, 872).is_err());
        // The reserve is for the exempt.
        assert_eq!(quota.may_open(0, 0, 872, 2), Ok(()));
        // A small limit keeps a quarter.
        let small = Quota::new(64, 1000, 64);
        assert_eq!(small.may_wait(1001, 0, 47), Ok(()));
        assert!(small.may_wait(1001, 0, 48).is_err());
    }

    #[test]
    fn zero_ports_means_no_port_limit_but_waiting_is_still_limited() {
        let quota = Quota::new(0, 0, 1 << 20);
        assert_eq!(quota.may_open(1001, 100_000, 0, 2), Ok(()));
        assert!(quota.may_wait(1001, PENDING_PER_USER, 0).is_err());
    }

    #[test]
    fn refusals_of_each_kind_are_logged_once_a_second() {
        let mut quota = Quota::new(1, 0, 1024);
        let t = Instant::now();
        assert!(quota.log_refusal(Refusal::Port, t));
        assert!(!quota.log_refusal(Refusal::Port, t + Duration::from_millis(999)));
        // The other kinds are logged on their own clocks.
        assert!(quota.log_refusal(Refusal::Waiting, t + Duration::from_millis(999)));
        assert!(quota.log_refusal(Refusal::Port, t + Duration::from_secs(1)));
    }
}
