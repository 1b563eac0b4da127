//! Many datagrams and their senders' unix addresses in one `recvmmsg`.
//!
//! The kernel reads each header's `msg_namelen` as the room the name buffer
//! has, writes back the name's length, and leaves both untouched for a sender
//! without a name. A header reused with the length an unbound sender left
//! there (0) gets the next sender's name cut to nothing while the reported
//! length says whole: the buffer still holds an earlier sender's name, and a
//! frame would be taken for that sender's. nix's `recvmmsg` (0.30, 0.31)
//! reuses its headers that way, so this one resets every header before each
//! call, and clears every name when the senders' names are asked for.
#![expect(
    unsafe_code,
    reason = "recvmmsg with headers that point into buffers this type owns; it says why that is sound"
)]

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd};

use libc::{c_uint, iovec, mmsghdr, sockaddr_un, socklen_t};

/// Bytes before `sun_path` in a `sockaddr_un`.
const NAME_OFFSET: usize = offset_of!(sockaddr_un, sun_path);

/// Receive buffers, their senders' names and the kernel's headers, allocated
/// once. Not `Clone`: a copy's iovecs would point at this one's buffers.
pub struct UnixRecvBatch {
    bufs: Vec<Vec<u8>>,
    names: Vec<sockaddr_un>,
    iovecs: Vec<iovec>,
    headers: Vec<mmsghdr>,
    received: usize,
}

/// An all-zero `sockaddr_un`.
fn empty_name() -> sockaddr_un {
    // SAFETY: sockaddr_un is plain old data (an integer and a byte array);
    // all zeros is a valid value of it.
    unsafe { std::mem::zeroed() }
}

/// An all-zero `mmsghdr`, its pointers null.
fn empty_header() -> mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all
    // zeros is a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

impl UnixRecvBatch {
    /// Room for `count` datagrams of up to `size` bytes each.
    pub fn new(count: usize, size: usize) -> Self {
        let mut bufs: Vec<Vec<u8>> = (0..count).map(|_| vec![0u8; size]).collect();
        // Built once: each points at its buffer's heap block, which never
        // moves (the buffers are never resized).
        let iovecs = bufs
            .iter_mut()
            .map(|buf| iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            })
            .collect();
        Self {
            bufs,
            names: (0..count).map(|_| empty_name()).collect(),
            iovecs,
            headers: (0..count).map(|_| empty_header()).collect(),
            received: 0,
        }
    }

    /// Takes the datagrams waiting on `socket` without blocking and returns
    /// how many came; `EAGAIN` when there were none. Without `senders` the
    /// kernel is not asked for the senders' names (a connected socket's
    /// datagrams all come from its peer).
    pub fn receive(&mut self, socket: impl AsFd, senders: bool) -> io::Result<usize> {
        self.received = 0;
        let room = socklen_t::try_from(size_of::<sockaddr_un>()).unwrap_or(socklen_t::MAX);
        for ((header, name), iov) in self
            .headers
            .iter_mut()
            .zip(&mut self.names)
            .zip(&mut self.iovecs)
        {
            *header = empty_header();
            // Names are cleared only where they are asked for: without
            // `senders` none is read back (see `sender`).
            if senders {
                *name = empty_name();
                header.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
                header.msg_hdr.msg_namelen = room;
            }
            header.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
        }
        let count = c_uint::try_from(self.headers.len()).unwrap_or(c_uint::MAX);
        // SAFETY: every header points at an iovec of this batch (and, with
        // `senders`, at a name of it), and each iovec at a buffer of this
        // batch: set up in `new`, never resized, so their heap blocks never
        // move, and not touched until the call returns. `count` is at most
        // the number of headers; the kernel writes at most `msg_namelen`
        // name bytes (0 without a name) and `iov_len` data bytes.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_fd().as_raw_fd(),
                self.headers.as_mut_ptr(),
                count,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = usize::try_from(got).unwrap_or(0).min(self.headers.len());
        Ok(self.received)
    }

    /// Takes one datagram waiting on `socket` without blocking, into slot
    /// 0, with a plain `recv`: for a connected socket whose datagrams come
    /// one at a time, it spares the headers `recvmmsg` copies in and out and
    /// its second, empty, try. `EAGAIN` when there was none.
    pub fn receive_one(&mut self, socket: impl AsFd) -> io::Result<usize> {
        self.received = 0;
        let (Some(buf), Some(header)) = (self.bufs.first_mut(), self.headers.first_mut()) else {
            return Ok(0);
        };
        let got = nix::sys::socket::recv(
            socket.as_fd().as_raw_fd(),
            buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        // What `data` and `sender` read for slot 0: its length, no name.
        *header = empty_header();
        header.msg_len = c_uint::try_from(got).unwrap_or(c_uint::MAX);
        self.received = 1;
        Ok(1)
    }

    /// The datagram in `slot` of the last receive (cut to the buffer's size).
    pub fn data(&self, slot: usize) -> &[u8] {
        match (self.headers.get(slot), self.bufs.get(slot)) {
            (Some(header), Some(buf)) if slot < self.received => {
                let len = usize::try_from(header.msg_len).unwrap_or(usize::MAX);
                &buf[..len.min(buf.len())]
            }
            _ => &[],
        }
    }

    /// The `sun_path` bytes of the sender of the datagram in `slot`, as long
    /// as the kernel reported them: empty for an unbound sender, a leading
    /// NUL for an abstract name.
    pub fn sender(&self, slot: usize) -> &[u8] {
        match (self.headers.get(slot), self.names.get(slot)) {
            (Some(header), Some(name)) if slot < self.received => {
                let len = usize::try_from(header.msg_hdr.msg_namelen).unwrap_or(0);
                let path_len = len.saturating_sub(NAME_OFFSET).min(name.sun_path.len());
                let path = &name.sun_path[..path_len];
                // SAFETY: c_char and u8 have the same size and alignment, and
                // every bit pattern is a valid u8; the slice borrows `name`.
                unsafe { std::slice::from_raw_parts(path.as_ptr().cast::<u8>(), path.len()) }
            }
            _ => &[],
        }
    }
}

impl std::fmt::Debug for UnixRecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixRecvBatch")
            .field("slots", &self.bufs.len())
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    use super::*;

    fn abstract_socket(name: &[u8]) -> UnixDatagram {
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name).expect("name")).expect("bind")
    }

    #[test]
    fn each_datagram_comes_with_its_own_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rx = UnixDatagram::bind(dir.path().join("rx")).expect("bind");
        let named = UnixDatagram::bind(dir.path().join("tx")).expect("bind");
        let unbound = UnixDatagram::unbound().expect("unbound");
        let abstract_name = format!("uml-host-test-{}", std::process::id());
        let hidden = abstract_socket(abstract_name.as_bytes());
        let mut batch = UnixRecvBatch::new(4, 16);

        named.send_to(b"one", dir.path().join("rx")).expect("send");
        unbound
            .send_to(b"two", dir.path().join("rx"))
            .expect("send");
        hidden
            .send_to(b"three", dir.path().join("rx"))
            .expect("send");
        assert_eq!(batch.receive(&rx, true).expect("receive"), 3);
        assert_eq!(batch.data(0), b"one");
        let path = dir.path().join("tx");
        assert_eq!(
            batch.sender(0).split(|&b| b == 0).next(),
            Some(path.as_os_str().as_encoded_bytes())
        );
        assert_eq!(batch.data(1), b"two");
        assert_eq!(batch.sender(1), b"");
        assert_eq!(batch.data(2), b"three");
        assert_eq!(batch.sender(2), [b"\0", abstract_name.as_bytes()].concat());
        assert_eq!(batch.sender(3), b"", "nothing came in slot 3");
    }

    #[test]
    fn a_nameless_sender_leaves_no_name_for_the_next_receive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rx = UnixDatagram::bind(dir.path().join("rx")).expect("bind");
        let a = UnixDatagram::bind(dir.path().join("a")).expect("bind");
        let b = UnixDatagram::bind(dir.path().join("b")).expect("bind");
        let unbound = UnixDatagram::unbound().expect("unbound");
        let mut batch = UnixRecvBatch::new(1, 16);
        for (sender, from) in [
            (&a, "a"),
            (&unbound, ""),
            (&b, "b"),
            (&unbound, ""),
            (&a, "a"),
        ] {
            sender.send_to(b"x", dir.path().join("rx")).expect("send");
            assert_eq!(batch.receive(&rx, true).expect("receive"), 1);
            let want = if from.is_empty() {
                Vec::new()
            } else {
                dir.path().join(from).into_os_string().into_encoded_bytes()
            };
            let got = batch
                .sender(0)
                .split(|&b| b == 0)
                .next()
                .unwrap_or_default();
            assert_eq!(got, want.as_slice(), "sender {from:?}");
        }
    }

    #[test]
    fn without_senders_no_name_is_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rx = UnixDatagram::bind(dir.path().join("rx")).expect("bind");
        let named = UnixDatagram::bind(dir.path().join("tx")).expect("bind");
        let mut batch = UnixRecvBatch::new(2, 16);
        named.send_to(b"one", dir.path().join("rx")).expect("send");
        assert_eq!(batch.receive(&rx, false).expect("receive"), 1);
        assert_eq!((batch.data(0), batch.sender(0)), (&b"one"[..], &b""[..]));
    }

    #[test]
    fn nothing_waiting_is_eagain_and_long_datagrams_are_cut() {
        let (a, b) = UnixDatagram::pair().expect("pair");
        let mut batch = UnixRecvBatch::new(2, 4);
        let err = batch.receive(&b, false).expect_err("nothing waits");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.send(b"0123456789").expect("send");
        assert_eq!(batch.receive(&b, false).expect("receive"), 1);
        assert_eq!(batch.data(0), b"0123");
        assert_eq!(batch.data(1), b"");
    }

    #[test]
    fn one_datagram_alone_reads_like_a_batch_of_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rx = UnixDatagram::bind(dir.path().join("rx")).expect("bind");
        let named = UnixDatagram::bind(dir.path().join("tx")).expect("bind");
        let mut batch = UnixRecvBatch::new(2, 4);
        let err = batch.receive_one(&rx).expect_err("nothing waits");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.data(0), b"", "nothing came");
        // A batch's names and lengths are not left behind for slot 0.
        named.send_to(b"ab", dir.path().join("rx")).expect("send");
        named.send_to(b"cd", dir.path().join("rx")).expect("send");
        assert_eq!(batch.receive(&rx, true).expect("receive"), 2);
        named
            .send_to(b"0123456789", dir.path().join("rx"))
            .expect("send");
        named.send_to(b"xyz", dir.path().join("rx")).expect("send");
        assert_eq!(batch.receive_one(&rx).expect("receive"), 1);
        assert_eq!((batch.data(0), batch.sender(0)), (&b"0123"[..], &b""[..]));
        assert_eq!(batch.data(1), b"", "only one taken");
        assert_eq!(batch.receive_one(&rx).expect("receive"), 1);
        assert_eq!(batch.data(0), b"xyz");
    }
}
