//! What the `uml_net` helper writes back to the kernel on its fd 1.
//!
//! Two framings, chosen by the subcommand:
//! - `tuntap up`: one datagram holding a 16-byte interface name, then the
//!   output text and its NUL; the tap's fd rides along as `SCM_RIGHTS`. On
//!   failure the datagram is only the text and its NUL, and carries no fd.
//! - `add`, `del`, `slip` and `ethertap`: a host-endian `int` length, then that
//!   many bytes of text, NUL included.
//!
//! The kernel reads either into one page, so an answer never exceeds 4096 bytes.

use zerocopy::byteorder::{I32, NativeEndian};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::c_string::until_nul;

/// Bytes of an interface name field, NUL padding included (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;
/// The kernel's receive buffer for either answer: one page.
pub const MAX_ANSWER: usize = 4096;

/// Byte layout of the head of a successful `tuntap up` datagram; the text follows.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TapAnswerHead {
    /// The tap's name, NUL-padded (`ifr_name`).
    pub ifname: [u8; IFNAMSIZ],
}

/// Byte layout of the head of a length-framed text answer; the text follows.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TextFrameHead {
    /// Bytes of text that follow, counting its NUL.
    pub len: I32<NativeEndian>,
}

/// Why an answer could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetHelperError {
    /// The interface name is empty, too long for `IFNAMSIZ`, or holds a NUL.
    #[error("interface name of {len} bytes does not fit a {IFNAMSIZ}-byte field")]
    BadName {
        /// Length of the offending name.
        len: usize,
    },
    /// The text holds a NUL, which would cut it short for the kernel.
    #[error("answer text holds a NUL byte")]
    NulInText,
    /// The answer would not fit the kernel's one-page buffer.
    #[error("answer of {len} bytes exceeds the kernel's {MAX_ANSWER}-byte buffer")]
    TooLong {
        /// Length of the answer.
        len: usize,
    },
    /// Too short for its head, or a length that disagrees with the bytes present.
    #[error("malformed uml_net answer ({len} bytes)")]
    Malformed {
        /// Length of the input.
        len: usize,
    },
}

fn checked_text(text: &[u8], head: usize) -> Result<(), NetHelperError> {
    if text.contains(&0) {
        return Err(NetHelperError::NulInText);
    }
    let len = head + text.len() + 1;
    if len > MAX_ANSWER {
        return Err(NetHelperError::TooLong { len });
    }
    Ok(())
}

/// A successful `tuntap up` answer: the tap's name and the helper's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapAnswer<'a> {
    /// The interface name, without padding (1 to 15 bytes).
    pub ifname: &'a [u8],
    /// The output text the kernel prints, without its NUL.
    pub text: &'a [u8],
}

impl TapAnswer<'_> {
    /// The datagram's bytes: the padded name, the text and its NUL.
    pub fn encode(&self) -> Result<Vec<u8>, NetHelperError> {
        if self.ifname.is_empty() || self.ifname.len() >= IFNAMSIZ || self.ifname.contains(&0) {
            return Err(NetHelperError::BadName {
                len: self.ifname.len(),
            });
        }
        checked_text(self.text, IFNAMSIZ)?;
        let mut head = TapAnswerHead {
            ifname: [0; IFNAMSIZ],
        };
        head.ifname[..self.ifname.len()].copy_from_slice(self.ifname);
        let mut out = head.as_bytes().to_vec();
        out.extend_from_slice(self.text);
        out.push(0);
        Ok(out)
    }

    /// Reads a datagram as the kernel does: the name from the first 16 bytes,
    /// the text up to its first NUL (or the end).
    pub fn parse(datagram: &[u8]) -> Result<TapAnswer<'_>, NetHelperError> {
        let (head, text) =
            TapAnswerHead::ref_from_prefix(datagram).map_err(|_| NetHelperError::Malformed {
                len: datagram.len(),
            })?;
        let ifname = until_nul(&head.ifname);
        if ifname.is_empty() {
            return Err(NetHelperError::BadName { len: 0 });
        }
        Ok(TapAnswer {
            ifname,
            text: until_nul(text),
        })
    }

    /// The datagram of a failed `tuntap up`: only the text and its NUL, so the
    /// kernel, which prints the whole buffer when no fd came, shows it whole.
    pub fn failure(text: &[u8]) -> Result<Vec<u8>, NetHelperError> {
        checked_text(text, 0)?;
        let mut out = text.to_vec();
        out.push(0);
        Ok(out)
    }
}

/// A length-framed text answer (`add`, `del`, `slip`, `ethertap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFrame<'a> {
    /// The text, without its NUL.
    pub text: &'a [u8],
}

impl TextFrame<'_> {
    /// The frame's bytes: the length (text plus NUL), the text, the NUL.
    pub fn encode(&self) -> Result<Vec<u8>, NetHelperError> {
        let head_len = size_of::<TextFrameHead>();
        checked_text(self.text, head_len)?;
        let len = i32::try_from(self.text.len() + 1).map_err(|_| NetHelperError::Malformed {
            len: self.text.len(),
        })?;
        let mut out = TextFrameHead { len: I32::new(len) }.as_bytes().to_vec();
        out.extend_from_slice(self.text);
        out.push(0);
        Ok(out)
    }

    /// Reads one frame from the start of `bytes`; returns it and the bytes it used.
    pub fn parse(bytes: &[u8]) -> Result<(TextFrame<'_>, usize), NetHelperError> {
        let malformed = NetHelperError::Malformed { len: bytes.len() };
        let (head, rest) = TextFrameHead::ref_from_prefix(bytes).map_err(|_| malformed.clone())?;
        let len = usize::try_from(head.len.get()).map_err(|_| malformed.clone())?;
        if len > rest.len() || len + size_of::<TextFrameHead>() > MAX_ANSWER {
            return Err(malformed);
        }
        Ok((
            TextFrame {
                text: until_nul(&rest[..len]),
            },
            size_of::<TextFrameHead>() + len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_answer_layout_matches_the_c_helper() {
        let bytes = TapAnswer {
            ifname: b"tap0",
            text: b"* ip link set tap0 up\n",
        }
        .encode()
        .expect("fits");
        assert_eq!(&bytes[..4], b"tap0");
        assert_eq!(&bytes[4..16], &[0; 12]);
        assert_eq!(&bytes[16..], b"* ip link set tap0 up\n\0");
        let parsed = TapAnswer::parse(&bytes).expect("parses");
        assert_eq!(parsed.ifname, b"tap0");
        assert_eq!(parsed.text, b"* ip link set tap0 up\n");
    }

    #[test]
    fn tap_answer_refuses_what_the_kernel_would_misread() {
        let name = |ifname: &'static [u8]| TapAnswer { ifname, text: b"" }.encode();
        assert!(matches!(name(b""), Err(NetHelperError::BadName { .. })));
        assert!(matches!(
            name(b"0123456789abcdef"),
            Err(NetHelperError::BadName { .. })
        ));
        assert!(name(b"0123456789abcde").is_ok());
        assert_eq!(
            TapAnswer {
                ifname: b"tap0",
                text: b"a\0b"
            }
            .encode(),
            Err(NetHelperError::NulInText)
        );
        let long = vec![b'x'; MAX_ANSWER - IFNAMSIZ];
        assert!(matches!(
            TapAnswer {
                ifname: b"tap0",
                text: &long
            }
            .encode(),
            Err(NetHelperError::TooLong { .. })
        ));
        assert!(TapAnswer::parse(&[0; 15]).is_err());
        assert_eq!(TapAnswer::failure(b"no").expect("fits"), b"no\0".to_vec());
    }

    #[test]
    fn text_frame_round_trip() {
        let bytes = TextFrame { text: b"* done\n" }.encode().expect("fits");
        assert_eq!(&bytes[..4], &8i32.to_ne_bytes());
        assert_eq!(&bytes[4..], b"* done\n\0");
        let (frame, used) = TextFrame::parse(&bytes).expect("parses");
        assert_eq!(frame.text, b"* done\n");
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn text_frame_rejects_bad_lengths() {
        assert!(TextFrame::parse(&[1, 0]).is_err());
        assert!(TextFrame::parse(&(-1i32).to_ne_bytes()).is_err());
        let mut short = 10i32.to_ne_bytes().to_vec();
        short.extend_from_slice(b"abc");
        assert!(TextFrame::parse(&short).is_err());
        let mut huge = 5000i32.to_ne_bytes().to_vec();
        huge.resize(5004, b'a');
        assert!(TextFrame::parse(&huge).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = TapAnswer::parse(&bytes);
            if let Ok((frame, used)) = TextFrame::parse(&bytes) {
                proptest::prop_assert!(used <= bytes.len());
                let again = TextFrame { text: frame.text }.encode();
                proptest::prop_assert!(again.is_ok());
            }
        }
    }
}
