//! `uml_dgram ADDR HEX`: sends the bytes HEX as one datagram to ADDR (a
//! socket path, or `@name` for an abstract name) from an unbound socket, and
//! prints `sent N` or `refused: ERROR` (exit status 0 or 3).
//!
//! The tests run it as another user, to play a local attacker who forges
//! datagrams to a client.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, hex] = args.as_slice() else {
        eprintln!("usage: uml_dgram ADDR HEX");
        return ExitCode::from(2);
    };
    let Some(bytes) = decode(hex) else {
        eprintln!("uml_dgram: not hex: {hex}");
        return ExitCode::from(2);
    };
    let sent = UnixDatagram::unbound().and_then(|sock| match addr.strip_prefix('@') {
        Some(name) => sock.send_to_addr(&bytes, &SocketAddr::from_abstract_name(name)?),
        None => sock.send_to(&bytes, addr),
    });
    match sent {
        Ok(n) => {
            println!("sent {n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("refused: {e}");
            ExitCode::from(3)
        }
    }
}

fn decode(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
