//! The switch control codec against a real kernel's `daemon` transport.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::io::{ErrorKind, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::time::{Duration, Instant};

use uml_proto::ethernet::{EthernetHeader, MacAddr};
use uml_proto::switch::{ControlRequest, KERNEL_REQUEST_LEN, PeerAddr, ProtocolVersion};
use uml_testbed::{Uml, UmlBuilder, try_wait_until};
use zerocopy::IntoBytes;

fn accept_within(listener: &UnixListener, uml: &mut Uml, timeout: Duration) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let accepted = try_wait_until(Instant::now() + timeout, || match listener.accept() {
        Ok((conn, _)) => Some(conn),
        Err(e) if e.kind() == ErrorKind::WouldBlock && !uml.has_exited() => None,
        Err(e) if e.kind() == ErrorKind::WouldBlock => panic!(
            "the kernel exited without connecting; console:\n{}",
            uml.console()
        ),
        Err(e) => panic!("accept: {e}"),
    });
    let conn = accepted
        .unwrap_or_else(|| panic!("the kernel never connected; console:\n{}", uml.console()));
    conn.set_nonblocking(false).unwrap();
    conn
}

#[test]
fn real_kernel_daemon_request_decodes_and_frames_come_from_its_address() {
    let builder = UmlBuilder::new(
        "ifconfig eth0 10.99.1.2 netmask 255.255.255.0 up\n\
         ping -c 5 -W 1 10.99.1.1\n\
         sleep 3600",
    );
    let ctl = builder.workdir().join("ctl");
    let listener = UnixListener::bind(&ctl).unwrap();
    let mut uml = builder
        .arg(format!("eth0=daemon,,unix,{}", ctl.display()))
        .start();
    let mut conn = accept_within(&listener, &mut uml, Duration::from_secs(60));

    let mut request = [0u8; KERNEL_REQUEST_LEN];
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_exact(&mut request).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut extra = [0u8; 1];
    let more = conn.read(&mut extra);
    assert!(
        matches!(&more, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the kernel wrote more than {KERNEL_REQUEST_LEN} bytes: {more:?}"
    );

    let decoded = ControlRequest::decode(&request).unwrap();
    assert_eq!(decoded.version, ProtocolVersion::V3);
    assert_eq!((decoded.mac, &decoded.description), (None, &None));
    let name = decoded
        .addr
        .kernel_name()
        .expect("kernel-style abstract address");
    assert_eq!(i64::from(name.pid.get()), i64::from(uml.pid()));

    let ours = PeerAddr::kernel_style(i32::try_from(std::process::id()).unwrap(), 4242);
    let data = UnixDatagram::bind_addr(
        &SocketAddr::from_abstract_name(ours.abstract_name().unwrap()).unwrap(),
    )
    .unwrap();
    conn.write_all(ours.as_bytes()).unwrap();

    // Whatever the guest sends first (IPv6 chatter, ARP), every frame must come
    // from the full 110-byte address it announced, garbage bytes included.
    data.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut frame = [0u8; 2048];
    loop {
        let (len, from) = data
            .recv_from(&mut frame)
            .unwrap_or_else(|e| panic!("no frame: {e}; console:\n{}", uml.console()));
        let from = PeerAddr::from_abstract_name(from.as_abstract_name().unwrap()).unwrap();
        assert_eq!(from, decoded.addr, "frame from another address");
        let Some(header) = EthernetHeader::parse(&frame[..len]) else {
            continue;
        };
        if header.ethertype.get() == 0x0806 {
            assert_eq!(len, 42, "an ARP frame without padding or FCS");
            assert_eq!(header.destination, MacAddr::BROADCAST);
            assert_eq!(frame[38..42], [10, 99, 1, 1], "ARP target");
            break;
        }
    }
}
