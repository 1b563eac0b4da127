//! The mconsole codecs against a live kernel, and the C client as a reference.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use uml_proto::mconsole::{
    Notification, NotifyKind, Reply, ReplyAssembler, ReplyDatagram, Request, VERSION0_REJECTION,
};
use uml_testbed::{UmlBuilder, host_program};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A client socket bound to a fresh abstract name (the kernel only answers bound senders).
fn client() -> UnixDatagram {
    let name = format!(
        "uml-proto-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock
}

/// Receives datagrams until one completes a reply; returns the raw datagrams and the reply.
fn receive_reply(sock: &UnixDatagram) -> (Vec<Vec<u8>>, Reply) {
    let mut assembler = ReplyAssembler::new();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.recv(&mut buf).expect("reply datagram");
        raw.push(buf[..n].to_vec());
        match ReplyDatagram::parse(&buf[..n]).unwrap() {
            ReplyDatagram::Chunk(chunk) => {
                if let Some(reply) = assembler.push(&chunk) {
                    return (raw, reply);
                }
            }
            ReplyDatagram::RawText(text) => panic!("unexpected raw text {text:?}"),
        }
    }
}

fn ask(sock: &UnixDatagram, mconsole: &Path, command: &str) -> (Vec<Vec<u8>>, Reply) {
    let request = Request::new(command.as_bytes()).unwrap();
    sock.send_to(request.as_bytes(), mconsole).unwrap();
    receive_reply(sock)
}

#[test]
fn real_kernel_mconsole_replies_parse() {
    let mut uml = UmlBuilder::new("sleep 3600").boot();
    let path = uml.mconsole_path();
    let sock = client();

    let (raw, version) = ask(&sock, &path, "version");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].len(), 12 + version.text.len() + 1, "short datagram");
    assert!(version.is_ok() && version.text.starts_with(b"Linux "));
    // Differential: the C client prints "OK " and the joined text.
    let c = Command::new(host_program("uml_mconsole", "uml-utilities"))
        .arg(&path)
        .arg("version")
        .output()
        .unwrap();
    let mut expected = b"OK ".to_vec();
    expected.extend_from_slice(&version.text);
    expected.push(b'\n');
    assert_eq!(c.stdout, expected);

    let (raw, help) = ask(&sock, &path, "help");
    assert!(raw.len() >= 2, "help spans datagrams");
    assert_eq!(raw[0].len(), 524);
    let help = String::from_utf8(help.text).unwrap();
    for word in ["version", "halt", "sysrq", "proc", "stack"] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }

    // Without the magic the kernel answers raw text.
    sock.send_to(&[0u8; 524], &path).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(
        ReplyDatagram::parse(&buf[..n]).unwrap(),
        ReplyDatagram::RawText(VERSION0_REJECTION)
    );

    // A wrong version gets an error reply and then the command's own reply.
    let probe = Request::with_version(b"version", 1).unwrap();
    sock.send_to(probe.as_bytes(), &path).unwrap();
    let (_, refusal) = receive_reply(&sock);
    assert_eq!(refusal.err, 1);
    assert_eq!(refusal.text, b"This driver only supports version 2 clients");
    let (_, answer) = receive_reply(&sock);
    assert_eq!(answer.text, version.text);

    // config reports a negative errno in the u32 err field.
    let (_, config) = ask(&sock, &path, "config ubd5=/nonexistent/disk.img");
    assert!(
        i32::from_ne_bytes(config.err.to_ne_bytes()) < 0,
        "err {:#x}",
        config.err
    );
    assert_eq!(config.err & 0xff, 254, "-ENOENT as the C client exits");

    let (_, halt) = ask(&sock, &path, "halt");
    assert!(halt.is_ok() && halt.text.is_empty());
    uml.wait_exit(Duration::from_secs(30));
    assert!(
        !uml.uml_dir().join(uml.umid()).exists(),
        "instance dir left"
    );
}

#[test]
fn real_kernel_notify_messages_parse() {
    let builder =
        UmlBuilder::new("echo -n hello-notify > /proc/mconsole\necho NOTIFIED\nsleep 3600");
    let notify_path = builder.workdir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut uml = builder
        .arg(format!("mconsole=notify:{}", notify_path.display()))
        .start();
    let mut buf = [0u8; 1024];

    let n = notify.recv(&mut buf).unwrap();
    let socket = Notification::parse(&buf[..n]).unwrap();
    assert_eq!(socket.kind, NotifyKind::Socket);
    assert_eq!(socket.data.last(), Some(&0), "socket path carries its NUL");
    assert_eq!(Path::new(&socket.text()), uml.mconsole_path());
    assert_eq!(n, 16 + socket.data.len());

    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no user notification: {e}; console:\n{}", uml.console()));
    let user = Notification::parse(&buf[..n]).unwrap();
    assert_eq!(user.kind, NotifyKind::User);
    assert_eq!(user.data, b"hello-notify");
    uml.wait_for_console("NOTIFIED", Duration::from_secs(30));
}
