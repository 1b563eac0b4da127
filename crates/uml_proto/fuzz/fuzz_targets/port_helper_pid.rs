//! port-helper's PID payload: never panics; a 4-byte payload round-trips, any other size is -1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::port_helper::HelperPid;

fuzz_target!(|data: &[u8]| {
    let pid = HelperPid::pid_of(data);
    if data.len() == 4 {
        assert_eq!(&pid.to_ne_bytes()[..], data);
    } else {
        assert_eq!(pid, -1);
    }
});
