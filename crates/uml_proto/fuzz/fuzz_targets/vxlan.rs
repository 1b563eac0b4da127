#![no_main]
//! Any bytes as a received VXLAN datagram: parsing never panics, and a
//! header it accepts re-encodes to the same VNI.

use libfuzzer_sys::fuzz_target;
use uml_proto::vxlan::{MAX_VNI, VXLAN_HEADER_LEN, VxlanHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, inner)) = VxlanHeader::parse(data) {
        assert!(header.vni() <= MAX_VNI);
        assert_eq!(inner.len() + VXLAN_HEADER_LEN, data.len());
        assert_eq!(VxlanHeader::new(header.vni()).vni(), header.vni());
    }
});
