//! Frames captured to pcapng: into files (with rotation), FIFOs, standard
//! output or a management client's connection.
//!
//! Each capture ("sink") serialises the frames it takes into a bounded
//! in-memory queue, which the event loop writes out without blocking
//! whenever it comes round. A consumer that reads too slowly, or not at all,
//! costs the frames that do not fit the queue (counted), never a wait. Each
//! port is one pcapng interface, described when the port's first frame is
//! captured, so that its name can carry the MAC address learned by then.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use serde::Serialize;

use crate::forward::MAX_FRAME;
use crate::ports::PortId;

/// Bytes a capture may hold back for a slow consumer before it drops frames.
pub const QUEUE_LIMIT: usize = 8 << 20;
/// How often a FIFO without a reader is tried again.
const FIFO_RETRY: Duration = Duration::from_millis(200);
/// `epb_flags` direction bits (pcapng, section 4.3.1).
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

/// Why a capture could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The output could not be opened.
    #[error("capture file '{}': {source}", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Writing failed for good.
    #[error("writing the capture: {0}")]
    Write(io::Error),
    /// The pcapng writer refused a block.
    #[error("pcapng: {0}")]
    Pcap(String),
}

/// Size limit and file count of a rotating capture file (tcpdump's `-C`, `-W`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rotate {
    /// A file is closed and the next begun before it grows beyond this many bytes.
    pub size: u64,
    /// How many files are kept: after the last, the first is overwritten.
    pub count: Option<u32>,
}

impl Rotate {
    /// Parses `SIZE[,COUNT]`; SIZE in bytes, or with k, M or G (powers of 1024).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (size, count) = match text.split_once(',') {
            Some((s, c)) => (s, Some(c)),
            None => (text, None),
        };
        let (digits, unit) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => size.split_at(i),
            None => (size, ""),
        };
        let scale: u64 = match unit {
            "" => 1,
            "k" | "K" => 1 << 10,
            "m" | "M" => 1 << 20,
            "g" | "G" => 1 << 30,
            _ => return Err(format!("'{size}': a size is a number with k, M or G")),
        };
        let size = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|&n| n >= 4096)
            .ok_or_else(|| format!("'{size}': a size of at least 4096 bytes"))?;
        let count = count
            .map(|c| c.parse::<u32>().ok().filter(|&n| n >= 1))
            .map(|c| c.ok_or_else(|| format!("'{text}': COUNT is a number from 1")))
            .transpose()?;
        Ok(Self { size, count })
    }

    /// The name of file number `index`: the path itself, then PATH.1, PATH.2...
    pub fn file_name(path: &Path, index: u32) -> PathBuf {
        if index == 0 {
            return path.to_path_buf();
        }
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }
}

/// Where a capture goes.
#[derive(Debug)]
pub enum Target {
    /// A file (truncated or, with `new_only`, created and never replaced) or a FIFO.
    Path {
        /// Where.
        path: PathBuf,
        /// Size limit and file count.
        rotate: Option<Rotate>,
        /// Refuse an existing file (captures asked for over the management socket).
        new_only: bool,
    },
    /// Standard output (logs then go to standard error).
    Stdout,
    /// A connected stream (a management client).
    Stream(OwnedFd),
}

/// What a capture takes.
#[derive(Debug)]
pub struct Spec {
    /// Only the frames of this port, or every port's.
    pub port: Option<PortId>,
    /// Also the copies the switch sends (on the egress port's interface).
    pub outbound: bool,
    /// Where they go.
    pub target: Target,
}

/// A capture as the management socket shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Its number.
    pub id: u32,
    /// The one port captured, if not all.
    pub port: Option<PortId>,
    /// Whether sent copies are captured too.
    pub outbound: bool,
    /// A file's path, "stdout", or "stream".
    pub target: String,
    /// Frames written to its queue.
    pub captured: u64,
    /// Frames it could not take: its queue was full or no reader was there.
    pub dropped: u64,
    /// Bytes waiting in its queue.
    pub queued: usize,
}

/// The output a sink writes to.
enum Output {
    /// A regular file, possibly rotating.
    File {
        file: File,
        path: PathBuf,
        rotate: Option<Rotate>,
        index: u32,
        /// Bytes written to the current file.
        written: u64,
    },
    /// A pipe, FIFO or socket: non-blocking, may go away.
    Stream {
        fd: Option<File>,
        /// A FIFO reopened when a reader comes back.
        fifo: Option<PathBuf>,
        last_try: Instant,
        label: String,
    },
}

struct Sink {
    id: u32,
    port: Option<PortId>,
    outbound: bool,
    output: Output,
    /// The serialised blocks not yet written out.
    writer: PcapNgWriter<Vec<u8>>,
    /// Interface number of each port in the current section.
    ifaces: HashMap<PortId, u32>,
    captured: u64,
    dropped: u64,
}

/// A port's pcapng interface: its name and description.
#[derive(Debug, Clone)]
pub struct IfaceName {
    /// `daemon:3`, `bess:/tmp/sw.bess#2`, `tap:tap0`.
    pub name: String,
    /// Peer and learned MAC addresses.
    pub description: String,
}

/// Every running capture.
#[derive(Default)]
pub struct Captures {
    sinks: Vec<Sink>,
    next: u32,
    /// Frames dropped by captures since stopped.
    dropped_before: u64,
}

/// A capture that ended on its own (its reader went away, a write failed).
#[derive(Debug)]
pub struct Ended {
    /// Its number.
    pub id: u32,
    /// Why.
    pub why: String,
}

fn new_writer() -> Result<PcapNgWriter<Vec<u8>>, CaptureError> {
    let section = SectionHeaderBlock {
        // The library's default is big-endian; readers expect the writer's own order.
        endianness: pcap_file::Endianness::native(),
        options: vec![SectionHeaderOption::UserApplication(
            concat!("uml_switch ", env!("CARGO_PKG_VERSION")).into(),
        )],
        ..SectionHeaderBlock::default()
    };
    PcapNgWriter::with_section_header(Vec::with_capacity(64 << 10), section)
        .map_err(|e| CaptureError::Pcap(e.to_string()))
}

fn nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Opens a FIFO for writing without waiting for a reader: None while there is none.
fn open_fifo(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_file(path: &Path, new_only: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o640);
    if new_only {
        // Asked for over the socket by a client: never through a symlink,
        // never over an existing file.
        options.create_new(true).custom_flags(nix::libc::O_NOFOLLOW);
    } else {
        options.create(true).truncate(true);
    }
    options.open(path)
}

impl Output {
    fn open(target: Target) -> Result<Self, CaptureError> {
        let stream = |fd: File, label: &str| -> Result<Self, CaptureError> {
            nonblocking(&fd).map_err(CaptureError::Write)?;
            Ok(Output::Stream {
                fd: Some(fd),
                fifo: None,
                last_try: Instant::now(),
                label: label.to_owned(),
            })
        };
        match target {
            Target::Stdout => {
                let fd = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(CaptureError::Write)?;
                stream(File::from(fd), "stdout")
            }
            Target::Stream(fd) => stream(File::from(fd), "stream"),
            Target::Path {
                path,
                rotate,
                new_only,
            } => {
                let err = |source| CaptureError::Open {
                    path: path.clone(),
                    source,
                };
                let fifo = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
                if fifo {
                    let fd = open_fifo(&path).map_err(err)?;
                    return Ok(Output::Stream {
                        fd,
                        label: path.display().to_string(),
                        fifo: Some(path),
                        last_try: Instant::now(),
                    });
                }
                let file = open_file(&path, new_only).map_err(err)?;
                Ok(Output::File {
                    file,
                    path,
                    rotate,
                    index: 0,
                    written: 0,
                })
            }
        }
    }

    fn label(&self) -> String {
        match self {
            Output::File { path, .. } => path.display().to_string(),
            Output::Stream { label, .. } => label.clone(),
        }
    }
}

impl Sink {
    /// Whether this capture takes a frame of `port` in that direction.
    #[inline]
    fn wants(&self, port: PortId, outbound: bool) -> bool {
        (!outbound || self.outbound) && self.port.is_none_or(|p| p == port)
    }

    /// Whether a stream sink has nobody to write to (a FIFO without reader).
    fn readerless(&self) -> bool {
        matches!(&self.output, Output::Stream { fd: None, .. })
    }

    /// Starts a new file of a rotating capture if `more` bytes would take
    /// the current one past its limit.
    fn rotate_for(&mut self, more: usize) -> Result<(), CaptureError> {
        let Output::File {
            file,
            path,
            rotate: Some(rotate),
            index,
            written,
        } = &mut self.output
        else {
            return Ok(());
        };
        let pending = self.writer.get_ref().len() as u64;
        if *written + pending + more as u64 <= rotate.size || *written + pending == 0 {
            return Ok(());
        }
        file.write_all(self.writer.get_ref())
            .map_err(CaptureError::Write)?;
        let next = match rotate.count {
            Some(count) if *index + 1 >= count => 0,
            _ => *index + 1,
        };
        let name = Rotate::file_name(path, next);
        *file = open_file(&name, false).map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
        *index = next;
        *written = 0;
        self.writer = new_writer()?;
        self.ifaces.clear();
        Ok(())
    }

    /// Serialises one frame; false when it did not fit (or had no reader).
    fn take(
        &mut self,
        port: PortId,
        outbound: bool,
        frame: &[u8],
        ts: Duration,
        name: &dyn Fn(PortId) -> IfaceName,
    ) -> Result<bool, CaptureError> {
        // A block's header, options and padding fit in 64 bytes.
        let size = frame.len() + 64;
        if self.readerless() || self.writer.get_ref().len() + size > QUEUE_LIMIT {
            self.dropped += 1;
            return Ok(false);
        }
        self.rotate_for(size + 256)?;
        let iface = match self.ifaces.get(&port) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.ifaces.len()).unwrap_or(u32::MAX);
                let IfaceName { name, description } = name(port);
                let mut idb = InterfaceDescriptionBlock::new(
                    DataLink::ETHERNET,
                    u32::try_from(MAX_FRAME).unwrap_or(u32::MAX),
                );
                idb.options = vec![
                    InterfaceDescriptionOption::IfName(name.into()),
                    InterfaceDescriptionOption::IfDescription(description.into()),
                    // Timestamps in nanoseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ];
                self.writer
                    .write_pcapng_block(idb)
                    .map_err(|e| CaptureError::Pcap(e.to_string()))?;
                self.ifaces.insert(port, i);
                i
            }
        };
        let epb = EnhancedPacketBlock {
            interface_id: iface,
            timestamp: ts,
            original_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data: frame.into(),
            options: vec![EnhancedPacketOption::Flags(if outbound {
                OUTBOUND
            } else {
                INBOUND
            })],
        };
        self.writer
            .write_pcapng_block(epb)
            .map_err(|e| CaptureError::Pcap(e.to_string()))?;
        self.captured += 1;
        Ok(true)
    }

    /// Writes out what it can without blocking.
    fn flush(&mut self, now: Instant) -> Result<(), CaptureError> {
        match &mut self.output {
            Output::File { file, written, .. } => {
                let queue = self.writer.get_mut();
                if !queue.is_empty() {
                    file.write_all(queue).map_err(CaptureError::Write)?;
                    *written += queue.len() as u64;
                    queue.clear();
                }
                Ok(())
            }
            Output::Stream {
                fd, fifo, last_try, ..
            } => {
                if fd.is_none() {
                    let Some(path) = fifo else {
                        return Ok(());
                    };
                    if now.saturating_duration_since(*last_try) < FIFO_RETRY {
                        return Ok(());
                    }
                    *last_try = now;
                    *fd = open_fifo(path).map_err(CaptureError::Write)?;
                    if fd.is_none() {
                        return Ok(());
                    }
                    // A new reader gets a stream of its own, from the start.
                    self.writer = new_writer()?;
                    self.ifaces.clear();
                }
                let Some(file) = fd.as_mut() else {
                    return Ok(());
                };
                let queue = self.writer.get_mut();
                let mut done = 0;
                while done < queue.len() {
                    match file.write(&queue[done..]) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            queue.clear();
                            if fifo.is_some() {
                                // The reader left: wait for the next one.
                                *fd = None;
                                *last_try = now;
                                return Ok(());
                            }
                            return Err(CaptureError::Write(e));
                        }
                    }
                }
                queue.drain(..done);
                Ok(())
            }
        }
    }

    fn info(&self) -> Info {
        Info {
            id: self.id,
            port: self.port,
            outbound: self.outbound,
            target: self.output.label(),
            captured: self.captured,
            dropped: self.dropped,
            queued: self.writer.get_ref().len(),
        }
    }
}

impl Captures {
    /// Whether any capture runs: the data path's only question when none does.
    #[inline]
    pub fn active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Whether any capture takes sent copies.
    pub fn outbound(&self) -> bool {
        self.sinks.iter().any(|s| s.outbound)
    }

    /// Starts a capture; returns its number.
    pub fn start(&mut self, spec: Spec) -> Result<u32, CaptureError> {
        let output = Output::open(spec.target)?;
        self.next += 1;
        let id = self.next;
        self.sinks.push(Sink {
            id,
            port: spec.port,
            outbound: spec.outbound,
            output,
            writer: new_writer()?,
            ifaces: HashMap::new(),
            captured: 0,
            dropped: 0,
        });
        Ok(id)
    }

    /// Stops capture `id`, writing what it can of its queue; returns its last figures.
    pub fn stop(&mut self, id: u32) -> Option<Info> {
        let at = self.sinks.iter().position(|s| s.id == id)?;
        let mut sink = self.sinks.remove(at);
        let _ = sink.flush(Instant::now());
        self.dropped_before += sink.dropped;
        Some(sink.info())
    }

    /// The running captures.
    pub fn list(&self) -> Vec<Info> {
        self.sinks.iter().map(Sink::info).collect()
    }

    /// Frames every capture, running or stopped, could not take.
    pub fn dropped(&self) -> u64 {
        self.dropped_before + self.sinks.iter().map(|s| s.dropped).sum::<u64>()
    }

    /// Whether a stream capture still holds bytes its reader has not taken.
    pub fn backlog(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| !s.writer.get_ref().is_empty() || s.readerless())
    }

    /// Offers a frame of `port` (received, or with `outbound` sent) at `ts`
    /// (since the epoch) to every capture that wants it. Returns false when
    /// one of them had to drop it. `name` describes a port seen for the first
    /// time. Captures that fail are ended and listed in `ended`.
    pub fn frame(
        &mut self,
        port: PortId,
        outbound: bool,
        frame: &[u8],
        ts: Duration,
        name: &dyn Fn(PortId) -> IfaceName,
        ended: &mut Vec<Ended>,
    ) -> bool {
        let mut all = true;
        let mut i = 0;
        while i < self.sinks.len() {
            let sink = &mut self.sinks[i];
            if sink.wants(port, outbound) {
                match sink.take(port, outbound, frame, ts, name) {
                    Ok(taken) => all &= taken,
                    Err(e) => {
                        all = false;
                        let id = sink.id;
                        self.dropped_before += sink.dropped;
                        self.sinks.remove(i);
                        ended.push(Ended {
                            id,
                            why: e.to_string(),
                        });
                        continue;
                    }
                }
            }
            i += 1;
        }
        all
    }

    /// Writes out what each capture can without blocking; captures whose
    /// output failed are ended and returned.
    pub fn flush(&mut self, now: Instant) -> Vec<Ended> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.sinks.len() {
            if let Err(e) = self.sinks[i].flush(now) {
                let sink = self.sinks.remove(i);
                self.dropped_before += sink.dropped;
                ended.push(Ended {
                    id: sink.id,
                    why: e.to_string(),
                });
                continue;
            }
            i += 1;
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_sizes_and_names() {
        assert_eq!(
            Rotate::parse("1M,3"),
            Ok(Rotate {
                size: 1 << 20,
                count: Some(3)
            })
        );
        assert_eq!(
            Rotate::parse("8192"),
            Ok(Rotate {
                size: 8192,
                count: None
            })
        );
        assert!(Rotate::parse("10").is_err());
        assert!(Rotate::parse("1X").is_err());
        assert!(Rotate::parse("1M,0").is_err());
        assert_eq!(
            Rotate::file_name(Path::new("/t/a.pcapng"), 2),
            PathBuf::from("/t/a.pcapng.2")
        );
    }

    fn name(port: PortId) -> IfaceName {
        IfaceName {
            name: format!("test:{port}"),
            description: String::new(),
        }
    }

    #[test]
    fn a_file_capture_reads_back_with_one_interface_per_port() {
        use pcap_file::pcapng::{Block, PcapNgReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcapng");
        let mut captures = Captures::default();
        let id = captures
            .start(Spec {
                port: None,
                outbound: true,
                target: Target::Path {
                    path: path.clone(),
                    rotate: None,
                    new_only: true,
                },
            })
            .unwrap();
        let mut ended = Vec::new();
        let ts = Duration::from_nanos(1_700_000_000_123_456_789);
        assert!(captures.frame(1, false, &[1u8; 60], ts, &name, &mut ended));
        assert!(captures.frame(2, true, &[2u8; 9000], ts, &name, &mut ended));
        assert!(captures.frame(1, false, &[3u8; 61], ts, &name, &mut ended));
        assert!(captures.flush(Instant::now()).is_empty());
        let info = captures.stop(id).unwrap();
        assert_eq!((info.captured, info.dropped), (3, 0));

        let mut reader = PcapNgReader::new(File::open(&path).unwrap()).unwrap();
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                packets.push((epb.interface_id, epb.data.len(), epb.timestamp));
            }
        }
        assert_eq!(packets, vec![(0, 60, ts), (1, 9000, ts), (0, 61, ts)]);
        let names: Vec<String> = reader
            .interfaces()
            .iter()
            .map(|i| format!("{:?}", i.options[0]))
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names[1].contains("test:2"), "{names:?}");
    }

    #[test]
    fn a_stuck_reader_costs_frames_not_time() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut captures = Captures::default();
        captures
            .start(Spec {
                port: Some(7),
                outbound: false,
                target: Target::Stream(ours.into()),
            })
            .unwrap();
        let mut ended = Vec::new();
        let frame = vec![0u8; 60_000];
        let mut dropped = 0;
        let sent = 1000;
        for _ in 0..sent {
            if !captures.frame(7, false, &frame, Duration::ZERO, &name, &mut ended) {
                dropped += 1;
            }
            captures.flush(Instant::now());
        }
        // Frames of another port, or sent copies, are not this capture's.
        assert!(captures.frame(8, false, &frame, Duration::ZERO, &name, &mut ended));
        assert!(captures.frame(7, true, &frame, Duration::ZERO, &name, &mut ended));
        let info = &captures.list()[0];
        assert!(dropped > 0);
        assert_eq!(info.dropped, dropped);
        assert_eq!(info.captured + info.dropped, sent);
        assert!(info.queued <= QUEUE_LIMIT);
    }

    #[test]
    fn a_rotating_capture_keeps_count_files_under_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.pcapng");
        let mut captures = Captures::default();
        captures
            .start(Spec {
                port: None,
                outbound: false,
                target: Target::Path {
                    path: path.clone(),
                    rotate: Some(Rotate {
                        size: 8192,
                        count: Some(3),
                    }),
                    new_only: false,
                },
            })
            .unwrap();
        let mut ended = Vec::new();
        for _ in 0..100 {
            captures.frame(1, false, &[0u8; 1000], Duration::ZERO, &name, &mut ended);
            captures.flush(Instant::now());
        }
        assert!(ended.is_empty());
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["r.pcapng", "r.pcapng.1", "r.pcapng.2"]);
        for f in files {
            let len = std::fs::metadata(dir.path().join(f)).unwrap().len();
            assert!(len <= 8192, "{len}");
        }
    }
}
