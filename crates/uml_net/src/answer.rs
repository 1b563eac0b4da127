//! Writing the helper's answer to the kernel on fd 1, in the framing the
//! subcommand calls for (see `uml_proto::net_helper`).

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use uml_proto::net_helper::{IFNAMSIZ, MAX_ANSWER, NetHelperError, TapAnswer, TextFrame};

use crate::request::Framing;

/// The output text the kernel prints: one `* step` line per change made, then
/// notes and any error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    text: String,
}

impl Report {
    /// Records a change made to the host, in `ip` syntax.
    pub fn step(&mut self, what: &str) {
        self.text.push_str("* ");
        self.text.push_str(what);
        self.text.push('\n');
    }

    /// Records a remark or an error.
    pub fn note(&mut self, what: &str) {
        self.text.push_str(what);
        self.text.push('\n');
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The text cut to `room` bytes (at a character boundary, marked), with no NUL
/// left to cut it shorter for the kernel.
fn fitted(text: &str, room: usize) -> Vec<u8> {
    let clean = text.replace('\0', " ");
    if clean.len() <= room {
        return clean.into_bytes();
    }
    const MARK: &str = "...\n";
    let mut end = room.saturating_sub(MARK.len());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = clean.as_bytes()[..end].to_vec();
    out.extend_from_slice(MARK.as_bytes());
    out
}

fn proto_err(e: NetHelperError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// Where the answer goes: the helper's fd 1, as the kernel set it up.
pub struct Answer<'fd> {
    out: BorrowedFd<'fd>,
}

impl<'fd> Answer<'fd> {
    /// Answers on `out` (the helper's fd 1).
    pub fn new(out: BorrowedFd<'fd>) -> Self {
        Self { out }
    }

    /// A successful `tuntap up`: the tap's name and the text in one datagram,
    /// the tap's fd attached.
    pub fn tap(&self, ifname: &str, text: &str, tap: BorrowedFd<'_>) -> io::Result<()> {
        let text = fitted(text, MAX_ANSWER - IFNAMSIZ - 1);
        let bytes = TapAnswer {
            ifname: ifname.as_bytes(),
            text: &text,
        }
        .encode()
        .map_err(proto_err)?;
        let fds = [tap.as_raw_fd()];
        sendmsg::<()>(
            self.out.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    /// A failure in the framing the request calls for.
    pub fn failure(&self, framing: Framing, text: &str) -> io::Result<()> {
        match framing {
            Framing::TapDatagram => {
                let bytes = TapAnswer::failure(&fitted(text, MAX_ANSWER - 1)).map_err(proto_err)?;
                sendmsg::<()>(
                    self.out.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &[],
                    MsgFlags::empty(),
                    None,
                )?;
                Ok(())
            }
            Framing::Length => self.framed(None, text),
            Framing::StatusThenLength => self.framed(Some(0), text),
        }
    }

    /// A length-framed text, after a status byte for ethertap.
    pub fn framed(&self, status: Option<u8>, text: &str) -> io::Result<()> {
        let text = fitted(text, MAX_ANSWER - size_of::<i32>() - 1);
        let mut bytes: Vec<u8> = status.into_iter().collect();
        bytes.extend(TextFrame { text: &text }.encode().map_err(proto_err)?);
        let mut out = std::fs::File::from(self.out.try_clone_to_owned()?);
        out.write_all(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    #[test]
    fn reports_read_like_the_c_helpers() {
        let mut report = Report::default();
        report.step("ip link set tap0 up");
        report.note("uml_net: done");
        assert_eq!(report.text(), "* ip link set tap0 up\numl_net: done\n");
    }

    #[test]
    fn long_texts_are_cut_to_fit_the_kernels_page() {
        assert_eq!(fitted("abc", 10), b"abc");
        assert_eq!(fitted("a\0b", 10), b"a b");
        let cut = fitted(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with(b"...\n"));
        assert!(std::str::from_utf8(&cut).is_ok());
    }

    #[test]
    fn tap_answers_carry_the_fd_and_failures_do_not() {
        let (ours, kernel) = UnixDatagram::pair().expect("socketpair");
        let tap = std::fs::File::open("/dev/null").expect("open");
        let answer = Answer::new(ours.as_fd());
        answer.tap("tap7", "* ok\n", tap.as_fd()).expect("send");
        let mut buf = vec![0u8; MAX_ANSWER];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            kernel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        let fds: Vec<_> = msg
            .cmsgs()
            .expect("cmsgs")
            .filter_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => Some(fds),
                _ => None,
            })
            .flatten()
            .collect();
        let len = msg.bytes;
        assert_eq!(fds.len(), 1);
        let parsed = TapAnswer::parse(&buf[..len]).expect("parses");
        assert_eq!(parsed.ifname, b"tap7");
        assert_eq!(parsed.text, b"* ok\n");

        answer.failure(Framing::TapDatagram, "no\n").expect("send");
        let n = kernel.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"no\n\0");
    }

    #[test]
    fn framed_answers_as_the_kernel_reads_them() {
        let (ours, mut kernel) = UnixStream::pair().expect("socketpair");
        let answer = Answer::new(ours.as_fd());
        answer
            .failure(Framing::StatusThenLength, "gone\n")
            .expect("write");
        answer.framed(None, "* x\n").expect("write");
        drop(ours);
        let mut bytes = Vec::new();
        kernel.read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes[0], 0, "ethertap status byte: failure");
        let (first, used) = TextFrame::parse(&bytes[1..]).expect("frame");
        assert_eq!(first.text, b"gone\n");
        let (second, _) = TextFrame::parse(&bytes[1 + used..]).expect("frame");
        assert_eq!(second.text, b"* x\n");
    }
}
