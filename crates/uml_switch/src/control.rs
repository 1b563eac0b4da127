//! The control plane: connections on the control and BESS listeners, the
//! requests that make them ports, and the ports' lifetime.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use uml_host::fd::accept;
use uml_proto::switch::{ControlRequest, ControlRequestError, ProtocolVersion};
use zerocopy::IntoBytes;

use crate::event_loop::Token;
use crate::log::log_line;
use crate::ports::{Link, PortId, peer_key, send_addr};
use crate::switch::Switch;

/// A request longer than this without decoding is refused.
const MAX_REQUEST: usize = 256;

/// A control connection whose request has not fully arrived.
#[derive(Debug)]
pub(crate) struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// Control connections waiting for their request, by number.
#[derive(Debug, Default)]
pub(crate) struct PendingRequests {
    waiting: HashMap<u32, Pending>,
    next: u32,
}

impl Switch {
    /// Accepts every waiting control connection; each waits for its request.
    pub(crate) fn accept_control(&mut self) {
        loop {
            match accept(&self.control.fd, true) {
                Ok(fd) => {
                    let stream = UnixStream::from(fd);
                    let id = self.pending.next;
                    self.pending.next = self.pending.next.wrapping_add(1);
                    let token = Token::Pending(id);
                    if self
                        .epoll
                        .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token.into()))
                        .is_ok()
                    {
                        self.pending.waiting.insert(
                            id,
                            Pending {
                                stream,
                                buf: Vec::new(),
                            },
                        );
                    }
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Accepts every waiting BESS connection; each is a port at once.
    pub(crate) fn accept_bess(&mut self) {
        loop {
            let Some(listener) = &self.bess else { return };
            match accept(&listener.fd, true) {
                Ok(fd) => {
                    let id = self.add_port(Link::Bess(fd));
                    log_line(&format!("New BESS connection, port {id}"));
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Reads a pending control connection's request and makes it a port.
    pub(crate) fn pending_ready(&mut self, id: u32) {
        let Some(pending) = self.pending.waiting.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; MAX_REQUEST];
        let outcome = match pending.stream.read(&mut chunk) {
            Ok(0) => Err("EOF from new port".to_owned()),
            Ok(n) => {
                pending.buf.extend_from_slice(&chunk[..n]);
                match ControlRequest::decode(&pending.buf) {
                    Ok(request) => Ok(Some(request)),
                    // Wait for the rest of a request split across writes.
                    Err(ControlRequestError::Short { .. }) if pending.buf.len() < MAX_REQUEST => {
                        Ok(None)
                    }
                    Err(ControlRequestError::UnsupportedVersion(v)) => Err(format!(
                        "Request for a version {v} port, which this uml_switch doesn't support"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(_) => Err("Reading request".to_owned()),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(request)) => {
                if let Some(pending) = self.pending.waiting.remove(&id) {
                    self.register(pending.stream, &request);
                }
            }
            Err(message) => {
                log_line(&message);
                if let Some(pending) = self.pending.waiting.remove(&id) {
                    let _ = self.epoll.delete(&pending.stream);
                }
            }
        }
    }

    /// Answers a decoded request and makes its connection a daemon port.
    fn register(&mut self, mut stream: UnixStream, request: &ControlRequest) {
        let _ = self.epoll.delete(&stream);
        if request.version == ProtocolVersion::V0 && self.cfg.compat_v0_data.is_none() {
            log_line("Bad request: a version 0 client needs -compat-v0");
            return;
        }
        let Some(addr) = send_addr(&request.addr) else {
            log_line("Bad request: unusable data socket address");
            return;
        };
        let key = peer_key(&request.addr);
        // Two ports at one address would divert the first one's frames.
        if self.ports.by_source(&key).is_some() {
            log_line("Bad request: that data socket address is already a port's");
            return;
        }
        if request.version != ProtocolVersion::V0 {
            // Exactly the 110 bytes of our data address, as the kernel reads them.
            if stream.write_all(self.data.addr.as_bytes()).is_err() {
                log_line("Sending data socket name");
                return;
            }
        }
        self.add_port(Link::Daemon {
            addr,
            key,
            control: stream,
        });
        log_line("New connection");
    }

    /// Makes `link` a port and watches its descriptor.
    pub(crate) fn add_port(&mut self, link: Link) -> PortId {
        let id = self.ports.insert(link);
        if let Some(port) = self.ports.get(id) {
            let _ = self.epoll.add(
                port.link.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, Token::Port(id).into()),
            );
        }
        id
    }

    /// Closes a port: unwatched, forgotten by the learning table, logged.
    pub(crate) fn close_port(&mut self, id: PortId, message: &str) {
        let Some(port) = self.ports.remove(id) else {
            return;
        };
        let _ = self.epoll.delete(port.link.fd());
        self.table.forget_port(id);
        log_line(message);
    }
}
