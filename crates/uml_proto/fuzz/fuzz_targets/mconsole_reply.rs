//! Reply datagrams: decoding never panics, and a decoded chunk re-encodes to a datagram that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::mconsole::{ReplyAssembler, ReplyDatagram};

fuzz_target!(|data: &[u8]| {
    if let Ok(ReplyDatagram::Chunk(chunk)) = ReplyDatagram::parse(data) {
        let again = chunk.encode().expect("a decoded chunk fits a datagram");
        assert_eq!(
            ReplyDatagram::parse(&again),
            Ok(ReplyDatagram::Chunk(chunk.clone()))
        );
        let mut assembler = ReplyAssembler::new();
        if let Some(reply) = assembler.push(&chunk) {
            assert_eq!(reply.text, chunk.text);
        }
    }
});
