//! Request datagrams as the kernel parses them: never panics; a parsed command rebuilds to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uml_proto::mconsole::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = Request::parse(data) {
        let rebuilt = Request::with_version(parsed.command, parsed.version)
            .expect("a parsed command is short and NUL-free");
        assert_eq!(Request::parse(rebuilt.as_bytes()), Ok(parsed));
    }
});
