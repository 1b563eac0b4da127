//! Waiting for a condition with a deadline, the one way every test waits.

use std::thread;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` until it yields a value; `None` once `deadline` passes.
pub fn try_wait_until<T>(deadline: Instant, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Polls `condition` until it holds; panics naming `what` when `deadline` passes.
pub fn wait_until(deadline: Instant, what: &str, mut condition: impl FnMut() -> bool) {
    if try_wait_until(deadline, || condition().then_some(())).is_none() {
        panic!("timed out waiting for {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            try_wait_until(deadline, || {
                calls += 1;
                (calls == 3).then_some(calls)
            }),
            Some(3)
        );
        assert_eq!(try_wait_until(Instant::now(), || None::<()>), None);
    }

    #[test]
    #[should_panic(expected = "timed out waiting for the impossible")]
    fn wait_until_names_what_never_happened() {
        wait_until(Instant::now(), "the impossible", || false);
    }
}
