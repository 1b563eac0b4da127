//! A daemon-transport client for tests that need one under another user
//! (through `setpriv`): it binds data sockets and sends requests as told.
//!
//!     switch_port bind LABEL             bind the full-length abstract name LABEL…
//!     switch_port bind-path PATH         bind a datagram socket at PATH
//!     switch_port request CTL LABEL|PATH ask CTL for a port at that address
//!     switch_port register CTL LABEL     bind LABEL and ask for a port there
//!     switch_port hold-port CTL PATH     bind PATH, ask for a port there, keep it
//!     switch_port hold-ports CTL LABEL N ask for N ports (LABEL-1…), keep those given
//!     switch_port hold-idle CTL N        open N connections that send nothing
//!     switch_port hold-bess PATH N       open N BESS (SOCK_SEQPACKET) ports
//!     switch_port churn CTL LABEL N      ask for a port and give it back, N times
//!
//! `bind` and `bind-path` print `BOUND` and hold the socket until standard
//! input ends; `request`, `register` and `hold-port` print `ANSWERED` (the
//! switch sent its data address) or `REFUSED` (it closed the connection);
//! `hold-port` then keeps its port until standard input ends. `hold-ports`
//! prints the N answers on one line; `hold-idle` and `hold-bess` print
//! `OPEN K`, how many of their connections the switch kept open; all three
//! then hold them until standard input ends. `churn` prints `ANSWERED K`,
//! how many of its N requests got a port.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::ExitCode;

use uml_proto::switch::{PeerAddr, RequestV3, SOCKADDR_UN_LEN};
use uml_testbed::switch_client::{
    bind_data_socket, connect_bess, full_abstract_name, kernel_request,
};
use zerocopy::IntoBytes;

fn request_for(target: &str) -> std::io::Result<Vec<u8>> {
    if target.starts_with('/') {
        let addr = PeerAddr::from_path(Path::new(target))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(RequestV3::new(addr).as_bytes().to_vec())
    } else {
        kernel_request(&full_abstract_name(target)?)
    }
}

/// The control connection and what the switch said.
fn connect(ctl: &str, request: &[u8]) -> std::io::Result<(UnixStream, &'static str)> {
    let mut control = UnixStream::connect(ctl)?;
    // A switch that refuses a connection as it accepts it may have closed
    // it before the request is written.
    let mut reply = [0u8; SOCKADDR_UN_LEN];
    let answer = match control
        .write_all(request)
        .and_then(|()| control.read_exact(&mut reply))
    {
        Ok(()) => "ANSWERED",
        Err(_) => "REFUSED",
    };
    Ok((control, answer))
}

fn ask(ctl: &str, request: &[u8]) -> std::io::Result<&'static str> {
    connect(ctl, request).map(|(_, answer)| answer)
}

/// How many of `streams` the other end keeps open, once that has not
/// changed for a second (or 10 s have passed): a closed one reads end-of-file.
fn kept_open(streams: &[UnixStream]) -> std::io::Result<usize> {
    for s in streams {
        s.set_nonblocking(true)?;
    }
    let closed = |s: &UnixStream| matches!((&*s).read(&mut [0u8; 1]), Ok(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut last, mut same) = (usize::MAX, 0);
    loop {
        let open = streams.iter().filter(|s| !closed(s)).count();
        // Settled: the same count for a whole second.
        same = if open == last { same + 1 } else { 0 };
        if same == 10 || std::time::Instant::now() > deadline {
            return Ok(open);
        }
        last = open;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn hold() -> std::io::Result<()> {
    say("BOUND")
}

/// Prints `line` and waits for the end of standard input.
fn say(line: &str) -> std::io::Result<()> {
    println!("{line}");
    std::io::stdout().flush()?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    Ok(())
}

fn run(args: &[String]) -> std::io::Result<()> {
    match args {
        [cmd, label] if cmd == "bind" => {
            let _socket = bind_data_socket(label)?;
            hold()
        }
        [cmd, path] if cmd == "bind-path" => {
            let _socket = UnixDatagram::bind(path)?;
            hold()
        }
        [cmd, ctl, target] if cmd == "request" => {
            println!("{}", ask(ctl, &request_for(target)?)?);
            Ok(())
        }
        [cmd, ctl, path] if cmd == "hold-port" => {
            let _socket = UnixDatagram::bind(path)?;
            let (_control, answer) = connect(ctl, &request_for(path)?)?;
            say(answer)
        }
        [cmd, ctl, label, n] if cmd == "hold-ports" => {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            let mut held = Vec::new();
            let mut answers = Vec::new();
            for i in 1..=n {
                let (data, _, name) = bind_data_socket(&format!("{label}-{i}"))?;
                let (control, answer) = connect(ctl, &kernel_request(&name)?)?;
                answers.push(answer);
                held.push((data, control));
            }
            say(&answers.join(" "))
        }
        [cmd, ctl, n] if cmd == "hold-idle" => {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            let streams = (0..n)
                .map(|_| UnixStream::connect(ctl))
                .collect::<std::io::Result<Vec<_>>>()?;
            say(&format!("OPEN {}", kept_open(&streams)?))
        }
        [cmd, path, n] if cmd == "hold-bess" => {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            let streams = (0..n)
                .map(|_| connect_bess(Path::new(path)).map(UnixStream::from))
                .collect::<std::io::Result<Vec<_>>>()?;
            say(&format!("OPEN {}", kept_open(&streams)?))
        }
        [cmd, ctl, label, n] if cmd == "churn" => {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            let mut answered = 0;
            for i in 1..=n {
                let (_data, _, name) = bind_data_socket(&format!("{label}-{i}"))?;
                // The port is given back as its connection and socket close.
                if ask(ctl, &kernel_request(&name)?)? == "ANSWERED" {
                    answered += 1;
                }
            }
            println!("ANSWERED {answered}");
            Ok(())
        }
        [cmd, ctl, label] if cmd == "register" => {
            let (_data, _, name) = bind_data_socket(label)?;
            println!("{}", ask(ctl, &kernel_request(&name)?)?);
            Ok(())
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "usage: switch_port bind LABEL | bind-path PATH | request CTL LABEL|PATH | register CTL LABEL | hold-port CTL PATH | hold-ports CTL LABEL N | hold-idle CTL N | hold-bess PATH N | churn CTL LABEL N",
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switch_port: {e}");
            ExitCode::FAILURE
        }
    }
}
