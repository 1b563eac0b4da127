//! uml_switch control requests: never panics; a decoded request re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::switch::ControlRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ControlRequest::decode(data) {
        let again = request.encode();
        assert_eq!(
            ControlRequest::decode(&again).expect("re-encoded request decodes"),
            request
        );
    }
});
