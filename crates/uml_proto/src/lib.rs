//! Wire formats shared by the User-Mode Linux utilities (mconsole, COW files,
//! uml_switch framing, Ethernet frames, the uml_net helper's answers and
//! port-helper's fd message, the VXLAN header).
//!
//! Every on-the-wire or on-disk structure has exactly one definition here, as a
//! `#[repr(C)]` struct whose field types spell out their byte order
//! (`U32<NativeEndian>` for the host-endian mconsole fields, `U32<BigEndian>` for
//! COW V3 fields, and so on). Decoders take byte slices and never panic: every
//! malformed input is a typed error.
//!
//! The crate does no I/O of its own beyond the `std::io::Read`/`Write` traits.

#![forbid(unsafe_code)]

mod c_string;
pub mod cow;
pub mod ethernet;
pub mod mconsole;
pub mod net_helper;
pub mod port_helper;
pub mod switch;
pub mod vxlan;
