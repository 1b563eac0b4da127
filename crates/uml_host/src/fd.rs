//! Descriptors the kernel hands us, made owned at once.
//!
//! `accept4` and `SCM_RIGHTS` return raw numbers; nothing else owns them, so
//! they are wrapped in an [`OwnedFd`] right where they arrive and never travel
//! as raw integers.
#![expect(
    unsafe_code,
    reason = "adopting a descriptor the kernel just handed over is the one unsafe step; it says why it is sound"
)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockFlag, accept4, recvmsg};

/// Takes ownership of a descriptor the kernel just installed for us alone.
fn adopt(raw: RawFd) -> OwnedFd {
    // SAFETY: every caller passes a descriptor the kernel returned to this
    // process a moment ago (accept4, SCM_RIGHTS) and that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Accepts one connection on `listener`, close-on-exec and, if asked,
/// non-blocking. `EAGAIN` means none is waiting.
pub fn accept(listener: impl AsFd, nonblocking: bool) -> nix::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    accept4(listener.as_fd().as_raw_fd(), flags).map(adopt)
}

/// Receives one message into `buf` without waiting, and the first descriptor
/// passed with it (`SCM_RIGHTS`), if any; further descriptors are closed.
pub fn recv_with_fd(socket: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let msg = recvmsg::<()>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    // Truncated control data (more descriptors than the space holds) is an
    // error nix raises before the ones that fitted can be adopted; they are
    // close-on-exec, and the space holds 16, far more than any sender here
    // passes.
    let cmsgs = msg.cmsgs()?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(adopt));
        }
    }
    Ok((len, fds.into_iter().next()))
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    use nix::sys::socket::{ControlMessage, sendmsg};

    use super::*;

    #[test]
    fn a_passed_descriptor_arrives_owned() {
        let (a, b) = UnixDatagram::pair().expect("pair");
        let file = tempfile::tempfile().expect("tempfile");
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"tap0")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let mut buf = [0u8; 16];
        let (len, fd) = recv_with_fd(&b, &mut buf).expect("recv");
        assert_eq!(&buf[..len], b"tap0");
        let fd = fd.expect("an fd came");
        assert_ne!(fd.as_raw_fd(), file.as_raw_fd());

        a.send(b"bare").expect("send");
        let (len, fd) = recv_with_fd(&b, &mut buf).expect("recv");
        assert_eq!((len, fd.is_none()), (4, true));
    }

    #[test]
    fn accepting_with_nobody_waiting_says_eagain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("s")).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        assert_eq!(accept(&listener, true).err(), Some(nix::Error::EAGAIN));
        let _client = UnixStream::connect(dir.path().join("s")).expect("connect");
        assert!(accept(&listener, true).is_ok());
    }
}
