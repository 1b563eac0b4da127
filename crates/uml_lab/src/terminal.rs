//! Attaching our terminal to a guest's pts console, as `screen` would:
//! both ends raw, bytes copied both ways, Ctrl-] to detach.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

/// The byte that detaches (Ctrl-]), as with telnet.
const DETACH: u8 = 0x1d;

/// Restores the terminal's settings when dropped.
struct Restore(Option<Termios>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn make_raw(fd: impl AsFd) -> Option<Termios> {
    let saved = tcgetattr(&fd).ok()?;
    let mut raw = saved.clone();
    cfmakeraw(&mut raw);
    tcsetattr(&fd, SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

/// Copies between our terminal and `device` until Ctrl-] or the guest
/// closes its side.
pub fn attach(device: &Path, name: &str) -> io::Result<()> {
    let pts = File::options().read(true).write(true).open(device)?;
    // The guest's line discipline does echo and editing; the host side must not.
    let _ = make_raw(&pts);
    eprintln!(
        "attached to {name}'s console ({}); Ctrl-] detaches",
        device.display()
    );
    let _restore = Restore(make_raw(io::stdin()));
    let mut from_guest = pts.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut to_guest = pts;
    let mut buf = [0u8; 1024];
    let mut input = io::stdin();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let chunk = &buf[..n];
        if let Some(at) = chunk.iter().position(|&b| b == DETACH) {
            to_guest.write_all(&chunk[..at])?;
            eprint!("\r\ndetached from {name}\r\n");
            return Ok(());
        }
        to_guest.write_all(chunk)?;
    }
}
