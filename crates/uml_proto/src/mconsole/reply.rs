//! Kernel-to-client reply datagrams and the joining of multi-datagram replies.

use zerocopy::byteorder::{NativeEndian, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{MAX_DATA, MAX_TEXT};
use crate::c_string::until_nul;

/// Byte layout of a reply datagram. Only the first `12 + len` bytes travel on the wire.
#[repr(C)]
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ReplyWire {
    /// 0 for success; usually 1 on error, sometimes a negative errno stored as u32.
    pub err: U32<NativeEndian>,
    /// 1 when more datagrams of the same reply follow.
    pub more: U32<NativeEndian>,
    /// Bytes of `data` in use, counting the terminating NUL (1..=512).
    pub len: U32<NativeEndian>,
    /// Text chunk and its NUL.
    pub data: [u8; MAX_DATA],
}

const _: () = assert!(size_of::<ReplyWire>() == 524);
const HEADER_LEN: usize = 12;

/// Why a reply datagram could not be decoded or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Neither a well-formed reply chunk nor the kernel's raw-text rejection.
    #[error("malformed mconsole reply datagram ({len} bytes)")]
    Malformed {
        /// Length of the datagram.
        len: usize,
    },
    /// A chunk's text is longer than one datagram holds.
    #[error("reply chunk text is {len} bytes; one datagram holds at most {MAX_TEXT}")]
    ChunkTooLong {
        /// Length of the offending text.
        len: usize,
    },
}

/// One datagram's worth of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyChunk<'a> {
    /// Error code carried by this datagram (only the first datagram of a reply sets it).
    pub err: u32,
    /// Whether more datagrams of this reply follow.
    pub more: bool,
    /// The text, up to (not including) its first NUL, as the C client reads it.
    pub text: &'a [u8],
}

impl ReplyChunk<'_> {
    /// Encodes the chunk as the kernel sends it: `12 + len` bytes, `len` counting the NUL.
    pub fn encode(&self) -> Result<Vec<u8>, ReplyError> {
        if self.text.len() > MAX_TEXT {
            return Err(ReplyError::ChunkTooLong {
                len: self.text.len(),
            });
        }
        let len = self.text.len() + 1;
        let mut wire = ReplyWire {
            err: U32::new(self.err),
            more: U32::new(u32::from(self.more)),
            len: U32::new(u32::try_from(len).map_err(|_| ReplyError::ChunkTooLong { len })?),
            data: [0; MAX_DATA],
        };
        wire.data[..self.text.len()].copy_from_slice(self.text);
        Ok(wire.as_bytes()[..HEADER_LEN + len].to_vec())
    }

    /// Splits `text` into the datagrams the kernel would send for it: chunks of at
    /// most 511 bytes, `err` on the first only, `more` set on all but the last,
    /// which carries the caller's `more`.
    pub fn split(err: u32, text: &[u8], more: bool) -> Vec<ReplyChunk<'_>> {
        let mut chunks: Vec<ReplyChunk<'_>> = text
            .chunks(MAX_TEXT)
            .map(|text| ReplyChunk {
                err: 0,
                more: true,
                text,
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(ReplyChunk {
                err: 0,
                more: true,
                text: &[],
            });
        }
        chunks[0].err = err;
        if let Some(last) = chunks.last_mut() {
            last.more = more;
        }
        chunks
    }
}

/// What a datagram from the mconsole socket turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyDatagram<'a> {
    /// A normal reply chunk.
    Chunk(ReplyChunk<'a>),
    /// The header-less text the kernel sends to requests without the magic.
    RawText(&'a [u8]),
}

impl ReplyDatagram<'_> {
    /// Decodes one datagram received from the kernel.
    pub fn parse(datagram: &[u8]) -> Result<ReplyDatagram<'_>, ReplyError> {
        if let Some(chunk) = parse_chunk(datagram) {
            return Ok(ReplyDatagram::Chunk(chunk));
        }
        if datagram.starts_with(b"ERR ") {
            return Ok(ReplyDatagram::RawText(datagram));
        }
        Err(ReplyError::Malformed {
            len: datagram.len(),
        })
    }
}

fn parse_chunk(datagram: &[u8]) -> Option<ReplyChunk<'_>> {
    let data = datagram.get(HEADER_LEN..)?;
    let mut buf = [0u8; size_of::<ReplyWire>()];
    let take = datagram.len().min(buf.len());
    buf[..take].copy_from_slice(&datagram[..take]);
    let wire = ReplyWire::ref_from_bytes(&buf[..]).ok()?;
    let (err, more, len) = (wire.err.get(), wire.more.get(), wire.len.get() as usize);
    if len > MAX_DATA || len > data.len() || more > 1 {
        return None;
    }
    // `len` counts the terminating NUL, so at most `len - 1` bytes are text.
    let declared = &data[..len.saturating_sub(1)];
    Some(ReplyChunk {
        err,
        more: more == 1,
        text: until_nul(declared),
    })
}

/// A complete reply, joined from all its datagrams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The error code of the first datagram: the status the kernel meant.
    pub err: u32,
    /// The error code of the last datagram, which the C client uses as its exit status.
    pub last_err: u32,
    /// All chunk texts concatenated.
    pub text: Vec<u8>,
}

impl Reply {
    /// Whether the kernel reported success.
    pub fn is_ok(&self) -> bool {
        self.err == 0
    }
}

/// Joins reply chunks until one arrives without `more`.
#[derive(Debug, Default)]
pub struct ReplyAssembler {
    partial: Option<Reply>,
}

impl ReplyAssembler {
    /// An assembler waiting for the first chunk of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk; returns the whole reply once its last chunk has arrived.
    pub fn push(&mut self, chunk: &ReplyChunk<'_>) -> Option<Reply> {
        let reply = self.partial.get_or_insert_with(|| Reply {
            err: chunk.err,
            ..Reply::default()
        });
        reply.last_err = chunk.err;
        reply.text.extend_from_slice(chunk.text);
        if chunk.more {
            None
        } else {
            self.partial.take()
        }
    }

    /// Whether part of a reply has been received.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// What has arrived of a reply whose last datagram never came.
    pub fn into_partial(self) -> Option<Reply> {
        self.partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mconsole::VERSION0_REJECTION;
    use proptest::prelude::*;

    #[test]
    fn empty_ok_reply_is_thirteen_bytes() {
        let bytes = ReplyChunk {
            err: 0,
            more: false,
            text: b"",
        }
        .encode()
        .unwrap();
        assert_eq!(bytes.len(), 13);
        assert_eq!(&bytes[8..12], &1u32.to_ne_bytes());
    }

    #[test]
    fn help_sized_reply_splits_like_the_kernel() {
        let text = vec![b'h'; 720];
        let chunks = ReplyChunk::split(0, &text, false);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.encode().unwrap().len()).collect();
        assert_eq!(sizes, [524, 12 + 210]);
        assert!(chunks[0].more && !chunks[1].more);
    }

    #[test]
    fn negative_errno_survives_as_u32() {
        let bytes = ReplyChunk {
            err: u32::from_ne_bytes((-16i32).to_ne_bytes()),
            more: false,
            text: b"Device is currently open",
        }
        .encode()
        .unwrap();
        match ReplyDatagram::parse(&bytes).unwrap() {
            ReplyDatagram::Chunk(c) => assert_eq!(c.err & 0xff, 240),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_never_runs_into_the_nul_slot() {
        let mut d = vec![0u8; 12 + 512];
        d[8..12].copy_from_slice(&512u32.to_ne_bytes());
        d[12..].fill(b'x');
        let ReplyDatagram::Chunk(chunk) = ReplyDatagram::parse(&d).unwrap() else {
            panic!("not a chunk");
        };
        assert_eq!(chunk.text.len(), MAX_TEXT);
        assert!(chunk.encode().is_ok());
    }

    #[test]
    fn raw_version0_rejection_is_recognised() {
        assert_eq!(
            ReplyDatagram::parse(VERSION0_REJECTION).unwrap(),
            ReplyDatagram::RawText(VERSION0_REJECTION)
        );
        assert!(ReplyDatagram::parse(b"garbage").is_err());
    }

    #[test]
    fn assembler_keeps_first_and_last_err() {
        let mut asm = ReplyAssembler::new();
        let text = vec![b'e'; 600];
        let mut out = None;
        for chunk in ReplyChunk::split(1, &text, false) {
            assert!(out.is_none());
            out = asm.push(&chunk);
        }
        let reply = out.unwrap();
        assert_eq!((reply.err, reply.last_err), (1, 0));
        assert_eq!(reply.text, text);
        assert!(!asm.in_progress());
    }

    proptest! {
        #[test]
        fn split_encode_parse_join_round_trips(
            text in proptest::collection::vec(1u8..=255, 0..3000),
            err in any::<u32>(),
        ) {
            let mut asm = ReplyAssembler::new();
            let mut done = None;
            for chunk in ReplyChunk::split(err, &text, false) {
                let bytes = chunk.encode().unwrap();
                let ReplyDatagram::Chunk(parsed) = ReplyDatagram::parse(&bytes).unwrap() else {
                    panic!("not a chunk");
                };
                prop_assert_eq!(&parsed, &chunk);
                done = asm.push(&parsed);
            }
            let reply = done.unwrap();
            prop_assert_eq!(reply.text, text);
            prop_assert_eq!(reply.err, err);
        }

        #[test]
        fn reply_parse_never_panics(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ReplyDatagram::parse(&d);
        }
    }
}
