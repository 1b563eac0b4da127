//! Notification datagrams: never panics; a decoded notification re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::mconsole::Notification;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Notification::parse(data) {
        let again = n.encode().expect("decoded data fits");
        assert_eq!(Notification::parse(&again), Ok(n.clone()));
        let _ = n.text();
    }
});
