//! The `uml_switch` daemon protocol: control requests on a SOCK_STREAM socket,
//! a 110-byte `sockaddr_un` reply, and raw Ethernet frames on a shared SOCK_DGRAM socket.

mod addr;
mod request;

pub use addr::{AddrError, KernelAbstractName, PeerAddr, SOCKADDR_UN_LEN, SUN_PATH_LEN};
pub use request::{
    ControlRequest, ControlRequestError, ProtocolVersion, RequestV0, RequestV1, RequestV3,
};

/// Magic at the start of v1, v2 and v3 control requests (host-endian).
pub const SWITCH_MAGIC: u32 = 0xFEED_FACE;
/// `REQ_NEW_CONTROL`: the only request type uml_switch serves.
pub const REQ_NEW_CONTROL: u32 = 0;
/// The number of bytes the kernel writes for a v3 request: 122 bytes of fields plus 2 of padding.
pub const KERNEL_REQUEST_LEN: usize = 124;
