#![no_main]
//! Any bytes as a received frame: the header and tag views never panic.

use libfuzzer_sys::fuzz_target;
use uml_proto::ethernet::{EthernetHeader, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let header = EthernetHeader::parse(data);
    assert_eq!(header.is_some(), data.len() >= HEADER_LEN);
    if let Some(tag) = EthernetHeader::vlan_tag(data) {
        assert!(tag.vid() < 4096);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mac) = text.parse::<uml_proto::ethernet::MacAddr>() {
            assert_eq!(mac.to_string().parse::<uml_proto::ethernet::MacAddr>(), Ok(mac));
        }
    }
});
