//! uml_net answers: never panics; a decoded answer re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::net_helper::{TapAnswer, TextFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = TapAnswer::parse(data) {
        if let Ok(again) = answer.encode() {
            assert_eq!(TapAnswer::parse(&again), Ok(answer.clone()));
        }
    }
    if let Ok((frame, used)) = TextFrame::parse(data) {
        assert!(used <= data.len());
        // A frame filling the page without a NUL has no room for the one encoding adds.
        if let Ok(again) = frame.encode() {
            assert_eq!(TextFrame::parse(&again).map(|(f, _)| f), Ok(frame.clone()));
        }
    }
});
