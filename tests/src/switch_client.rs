//! A daemon-transport client of a switch, as the kernel's `daemon` driver is
//! one: an abstract data socket bound with the full 110-byte address, a v3
//! request on the control socket, the switch's data address in reply.
//! The switch tests and `cargo xtask bench switch` share it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;

use uml_proto::switch::{KERNEL_REQUEST_LEN, PeerAddr, RequestV3, SOCKADDR_UN_LEN};
use zerocopy::IntoBytes;

/// Length of an abstract name that fills `sun_path` after its leading NUL.
const FULL_ABSTRACT_NAME: usize = 107;

/// A registered daemon port.
#[derive(Debug)]
pub struct SwitchClient {
    /// Our data socket: frames are sent from it and arrive on it.
    pub data: UnixDatagram,
    /// The control connection; the port lives as long as it is open.
    pub control: UnixStream,
    /// Where to send frames: the address the switch answered with.
    pub switch: SocketAddr,
    /// Our own data address.
    pub own: SocketAddr,
}

/// A BESS port: a SOCK_SEQPACKET connection to the switch's BESS socket at
/// `path`, one frame per message, as the kernel's `vec` driver makes one.
pub fn connect_bess(path: &Path) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// A full-length abstract name starting with `label`, NUL-padded as the kernel pads.
pub fn full_abstract_name(label: &str) -> io::Result<[u8; FULL_ABSTRACT_NAME]> {
    let mut name = [0u8; FULL_ABSTRACT_NAME];
    let bytes = label.as_bytes();
    if bytes.len() > name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "label too long",
        ));
    }
    name[..bytes.len()].copy_from_slice(bytes);
    Ok(name)
}

/// A data socket bound to the full-length abstract name that starts with `label`.
pub fn bind_data_socket(
    label: &str,
) -> io::Result<(UnixDatagram, SocketAddr, [u8; FULL_ABSTRACT_NAME])> {
    let name = full_abstract_name(label)?;
    let own = SocketAddr::from_abstract_name(name)?;
    let data = UnixDatagram::bind_addr(&own)?;
    Ok((data, own, name))
}

/// The kernel's v3 request for the data address `name`, with its C tail padding (124 bytes).
pub fn kernel_request(name: &[u8]) -> io::Result<Vec<u8>> {
    let addr = PeerAddr::from_abstract_name(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut request = RequestV3::new(addr).as_bytes().to_vec();
    request.resize(KERNEL_REQUEST_LEN, 0);
    Ok(request)
}

/// The socket address a switch's 110-byte reply names.
pub fn reply_address(reply: &[u8]) -> io::Result<SocketAddr> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let addr = PeerAddr::from_prefix(reply).map_err(|e| invalid(&e.to_string()))?;
    match (addr.abstract_name(), addr.filesystem_path()) {
        (Some(name), _) => SocketAddr::from_abstract_name(name),
        (None, Some(path)) => SocketAddr::from_pathname(path),
        (None, None) => Err(invalid("the switch answered with an empty address")),
    }
}

impl SwitchClient {
    /// Registers a new port on the switch whose control socket is `ctl`; the
    /// data socket's name starts with `label` (unique per client).
    pub fn connect(ctl: &Path, label: &str) -> io::Result<Self> {
        let (data, own, name) = bind_data_socket(label)?;
        let mut control = UnixStream::connect(ctl)?;
        control.write_all(&kernel_request(&name)?)?;
        let mut reply = [0u8; SOCKADDR_UN_LEN];
        control.read_exact(&mut reply)?;
        let switch = reply_address(&reply)?;
        Ok(Self {
            data,
            control,
            switch,
            own,
        })
    }

    /// Sends one frame to the switch.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.data.send_to_addr(frame, &self.switch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_kernels_124_bytes_and_names_fill_sun_path() {
        assert_eq!(
            kernel_request(&full_abstract_name("x").unwrap())
                .unwrap()
                .len(),
            124
        );
        assert_eq!(full_abstract_name("abc").unwrap()[..4], *b"abc\0");
        assert!(full_abstract_name(&"y".repeat(108)).is_err());
    }
}
