//! `--watch`: instances appearing and vanishing, and the kernel's notifications.
//!
//! Instances are seen through inotify on the uml dirs (a new directory, then
//! its `mconsole` socket), the way libvirt tracked UMLs. Notifications arrive
//! on a socket we bind at the path a UML was booted with (`mconsole=notify:PATH`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::SockType;
use serde::Serialize;
use uml_host::socket_file::{BoundPath, SocketFile, SocketFileError};
use uml_proto::mconsole::{MAX_DATA, Notification, NotifyKind};

use crate::locate::UmlDirs;

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// None of the uml dirs exists.
    #[error("none of the uml dirs exists ({0}); nothing to watch")]
    NoDirs(String),
    /// The notify path is taken by something we must not replace.
    #[error("notify socket '{}': {reason}", path.display())]
    NotifyPath {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The failure.
        source: io::Error,
    },
}

fn sys(what: &'static str) -> impl Fn(nix::Error) -> WatchError {
    move |e| WatchError::Sys {
        what,
        source: e.into(),
    }
}

/// One line of `--watch` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// An instance that was there when watching began.
    Present {
        /// Its umid.
        umid: String,
    },
    /// A UML created its mconsole socket (after boot or a reboot).
    Appeared {
        /// Its umid.
        umid: String,
    },
    /// An instance directory was removed (the UML halted).
    Vanished {
        /// Its umid.
        umid: String,
    },
    /// A message on the notify socket.
    Notify {
        /// socket, panic, hang or user.
        kind: &'static str,
        /// The umid, when the message names it (only `socket` does).
        umid: Option<String>,
        /// The message text.
        text: String,
    },
}

impl Event {
    fn umid(&self) -> Option<&str> {
        match self {
            Self::Present { umid } | Self::Appeared { umid } | Self::Vanished { umid } => {
                Some(umid)
            }
            Self::Notify { umid, .. } => umid.as_deref(),
        }
    }

    /// The event as one human-readable line.
    pub fn line(&self) -> String {
        match self {
            Self::Present { umid } => format!("present {umid}"),
            Self::Appeared { umid } => format!("appeared {umid}"),
            Self::Vanished { umid } => format!("vanished {umid}"),
            Self::Notify { kind, umid, text } => match umid {
                Some(umid) => format!("notify {kind} {umid} {text}"),
                None => format!("notify {kind} {text}"),
            },
        }
    }

    /// Decodes a notification datagram.
    pub fn from_notification(datagram: &[u8]) -> Option<Self> {
        let note = Notification::parse(datagram).ok()?;
        let kind = match note.kind {
            NotifyKind::Socket => "socket",
            NotifyKind::Panic => "panic",
            NotifyKind::Hang => "hang",
            NotifyKind::User => "user",
            NotifyKind::Other(_) => "other",
        };
        // A guest's `echo` ends its message with a newline; the line has its own.
        let text = note.text().trim_end_matches(['\n', '\0']).to_owned();
        // The socket message is the mconsole path: <uml dir>/<umid>/mconsole.
        let umid = (note.kind == NotifyKind::Socket)
            .then(|| Path::new(&text).parent()?.file_name().map(umid_of))
            .flatten();
        Some(Self::Notify { kind, umid, text })
    }
}

/// A directory name as printed: control characters escaped, since anyone
/// who can write a uml dir (such as /tmp/uml) chooses it, and raw escapes
/// would reach the watcher's terminal.
fn umid_of(name: &OsStr) -> String {
    name.to_string_lossy()
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// What to watch and how to print it.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The uml dirs.
    pub dirs: UmlDirs,
    /// Only these umids (all when empty).
    pub machines: Vec<String>,
    /// Where to receive kernel notifications.
    pub notify: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
}

/// What a watch descriptor watches.
enum Watched {
    UmlDir(PathBuf),
    Instance(String),
}

/// Watches until SIGINT or SIGTERM, printing events to `out` as they happen.
pub fn watch(opts: &WatchOptions, out: &mut impl Write) -> Result<(), WatchError> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // Taken as events, so the notify socket file is removed on the way out.
    signals
        .thread_block()
        .map_err(sys("blocking SIGINT and SIGTERM"))?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC)
        .map_err(sys("creating a signalfd"))?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(sys("creating an inotify instance"))?;
    let (notify, _notify_file) = match opts.notify.as_deref().map(bind_notify).transpose()? {
        Some((sock, file)) => (Some(sock), Some(file)),
        None => (None, None),
    };

    let mut watched: HashMap<WatchDescriptor, Watched> = HashMap::new();
    let mut printer = Printer { out, opts };
    let dir_mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_ONLYDIR;
    for dir in &opts.dirs.0 {
        let Ok(wd) = inotify.add_watch(dir, dir_mask) else {
            continue;
        };
        watched.insert(wd, Watched::UmlDir(dir.clone()));
        let mut present: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        present.sort();
        for instance in present {
            let umid = instance.file_name().map(umid_of).unwrap_or_default();
            watch_instance(&inotify, &instance, &umid, &mut watched);
            if instance.join("mconsole").exists() {
                printer.print(&Event::Present { umid });
            }
        }
    }
    if watched.is_empty() && notify.is_none() {
        let names: Vec<String> = opts
            .dirs
            .0
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        return Err(WatchError::NoDirs(names.join(", ")));
    }

    let mut buf = vec![0u8; 16 + MAX_DATA + 64];
    loop {
        let mut fds = vec![
            PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(sock) = &notify {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("waiting for events")(e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| r.intersects(PollFlags::POLLIN))
        };
        let (signalled, changed, noted) = (ready(0), ready(1), ready(2));
        drop(fds);
        if signalled {
            return Ok(());
        }
        if changed {
            for event in inotify.read_events().unwrap_or_default() {
                let Some(name) = event.name.as_deref() else {
                    continue;
                };
                let is_dir = event.mask.contains(AddWatchFlags::IN_ISDIR);
                let appeared = event
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
                match watched.get(&event.wd) {
                    Some(Watched::UmlDir(dir)) if is_dir => {
                        let umid = umid_of(name);
                        if appeared {
                            let instance = dir.join(name);
                            watch_instance(&inotify, &instance, &umid, &mut watched);
                            // The socket may have come before our watch did.
                            if instance.join("mconsole").exists() {
                                printer.print(&Event::Appeared { umid });
                            }
                        } else {
                            printer.print(&Event::Vanished { umid });
                        }
                    }
                    Some(Watched::Instance(umid)) if appeared && name == "mconsole" => {
                        let umid = umid.clone();
                        printer.print(&Event::Appeared { umid });
                    }
                    _ => {}
                }
            }
        }
        if noted {
            if let Some(sock) = &notify {
                while let Ok(n) = sock.recv(&mut buf) {
                    if let Some(event) = Event::from_notification(&buf[..n]) {
                        printer.print(&event);
                    }
                }
            }
        }
    }
}

fn watch_instance(
    inotify: &Inotify,
    instance: &Path,
    umid: &str,
    watched: &mut HashMap<WatchDescriptor, Watched>,
) {
    if let Ok(wd) = inotify.add_watch(
        instance,
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
    ) {
        watched.insert(wd, Watched::Instance(umid.to_owned()));
    }
}

/// Binds the notify socket, replacing a stale socket file but nothing else;
/// the file is removed when the returned guard is dropped, if still ours.
fn bind_notify(path: &Path) -> Result<(UnixDatagram, SocketFile), WatchError> {
    let bound = BoundPath::bind(path, SockType::Datagram).map_err(|e| {
        let reason = match e {
            SocketFileError::Live { .. } => "another process is listening on it".to_owned(),
            SocketFileError::NotSocket { .. } => {
                "exists and is not a socket; not replacing it".to_owned()
            }
            other => other.to_string(),
        };
        WatchError::NotifyPath {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    let (fd, file) = bound.into_parts();
    Ok((UnixDatagram::from(fd), file))
}

struct Printer<'a, W: Write> {
    out: &'a mut W,
    opts: &'a WatchOptions,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, event: &Event) {
        let wanted = self.opts.machines.is_empty()
            || event
                .umid()
                .is_none_or(|umid| self.opts.machines.iter().any(|m| m == umid));
        if !wanted {
            return;
        }
        let line = if self.opts.json {
            serde_json::to_string(event).unwrap_or_default()
        } else {
            event.line()
        };
        // Flushed per event: a pipe or a file sees each line as it happens.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uml_proto::mconsole::Notification;

    #[test]
    fn socket_notifications_name_the_machine() {
        let datagram = Notification {
            kind: NotifyKind::Socket,
            data: b"/root/.uml/vm7/mconsole\0",
        }
        .encode()
        .unwrap();
        let event = Event::from_notification(&datagram).unwrap();
        assert_eq!(event.umid(), Some("vm7"));
        assert_eq!(event.line(), "notify socket vm7 /root/.uml/vm7/mconsole");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "notify");
        assert_eq!(json["kind"], "socket");
        assert_eq!(json["umid"], "vm7");
    }

    #[test]
    fn user_messages_keep_their_text() {
        let datagram = Notification {
            kind: NotifyKind::User,
            data: b"backup done",
        }
        .encode()
        .unwrap();
        let event = Event::from_notification(&datagram).unwrap();
        assert_eq!(event.line(), "notify user backup done");
        assert_eq!(Event::from_notification(b"junk"), None);
    }

    #[test]
    fn directory_names_reach_the_terminal_without_control_characters() {
        let name = OsStr::new("vm1\u{1b}]0;owned\u{7}\n");
        assert_eq!(umid_of(name), "vm1\\u{1b}]0;owned\\u{7}\\n");
        assert_eq!(umid_of(OsStr::new("plain-vm")), "plain-vm");
    }

    #[test]
    fn a_regular_file_at_the_notify_path_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        std::fs::write(&path, "keep me").unwrap();
        assert!(bind_notify(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_file(&path).unwrap();
        // A stale socket (nobody bound) is replaced.
        drop(UnixDatagram::bind(&path).unwrap());
        let live = bind_notify(&path).unwrap();
        assert!(
            bind_notify(&path).is_err(),
            "a live socket must be left alone"
        );
        drop(live);
    }
}
