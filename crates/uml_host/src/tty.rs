//! Terminals: giving one up as the controlling terminal.
#![expect(
    unsafe_code,
    reason = "TIOCNOTTY has no safe wrapper in nix or rustix; the one call says why it is sound"
)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Detaches the calling process's session from its controlling terminal,
/// `terminal` (`TIOCNOTTY`). Called by the session leader, it leaves the
/// terminal with no session, so another process may make it its own
/// controlling terminal; the session's foreground group gets SIGHUP and
/// SIGCONT. Fails with `ENOTTY` when `terminal` is not our controlling terminal.
pub fn give_up_controlling_terminal(terminal: impl AsFd) -> io::Result<()> {
    // SAFETY: TIOCNOTTY takes no argument and only reads the descriptor, which
    // the borrow keeps open for the call.
    let ret = unsafe { libc::ioctl(terminal.as_fd().as_raw_fd(), libc::TIOCNOTTY) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_no_terminal_is_refused() {
        let file = tempfile::tempfile().expect("a temporary file");
        let err = give_up_controlling_terminal(&file).expect_err("a file is no terminal");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
