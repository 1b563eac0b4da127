//! Copying byte ranges between files at disk speed, holes kept as holes.
//!
//! Data segments are found with SEEK_DATA/SEEK_HOLE and moved with
//! `copy_file_range`, which stays in the kernel and clones extents on
//! filesystems that can (XFS, btrfs), so untouched parts cost no writes there.
//! Where either call is unsupported (block devices, some filesystems) the copy
//! falls back to reading and writing 1 MiB at a time.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, copy_file_range, fallocate};
use nix::unistd::{Whence, lseek};

use crate::progress::Progress;

/// Largest single copy request, so that progress moves and signals are seen.
const CHUNK: u64 = 64 << 20;
/// Buffer of the read/write fallback.
const FALLBACK_BUF: usize = 1 << 20;

/// What to do in the destination where the source has a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holes {
    /// Nothing: the destination is a fresh file and reads as zeros there already.
    Skip,
    /// Make the destination read zeros there (punch a hole, or write zeros).
    Zero,
}

/// A copier that remembers which fast paths the files allow and reports progress.
#[derive(Debug)]
pub struct Copier {
    kernel_copy: bool,
    punch: bool,
    progress: Progress,
    /// The last data segment and the last hole found in each source: a dense
    /// file then costs two seeks in all instead of two per run.
    known: Vec<Known>,
    /// The buffer of copies that do not use copy_file_range.
    buf: Vec<u8>,
}

/// A stretch of a source known to be data or hole.
#[derive(Debug)]
struct Known {
    fd: RawFd,
    range: Range<u64>,
    data: bool,
}

/// What the source holds from the position asked about up to (not including) an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extent {
    Data(u64),
    Hole(u64),
}

/// Ranges shorter than this are copied without asking where their holes are
/// (two seeks cost more than copying a short hole's zeros), and through a
/// buffer rather than copy_file_range, which sets up a pipe per call.
const SHORT: u64 = 64 << 10;

fn to_off(pos: u64) -> io::Result<i64> {
    i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// An offset `lseek` returned (never negative on success) as a position.
fn from_off(off: i64) -> io::Result<u64> {
    u64::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

impl Copier {
    /// A copier trying the fast paths first, advancing `progress` as bytes are handled.
    pub fn new(progress: Progress) -> Self {
        Self {
            kernel_copy: true,
            punch: true,
            progress,
            known: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Records `bytes` handled outside [`Copier::copy`].
    pub fn advance(&mut self, bytes: u64) {
        self.progress.advance(bytes);
    }

    fn remember(&mut self, fd: RawFd, range: Range<u64>, data: bool) {
        self.known.retain(|k| k.fd != fd || k.data != data);
        self.known.push(Known { fd, range, data });
    }

    /// What `src` holds from `pos` on, clipped to `end`. Past the end of the
    /// file counts as a hole: the kernel reads zeros there too.
    fn extent(&mut self, src: &File, pos: u64, end: u64) -> io::Result<Extent> {
        let fd = src.as_raw_fd();
        if let Some(k) = self
            .known
            .iter()
            .find(|k| k.fd == fd && k.range.contains(&pos))
        {
            let until = k.range.end.min(end);
            return Ok(if k.data {
                Extent::Data(until)
            } else {
                Extent::Hole(until)
            });
        }
        if end - pos < SHORT {
            return Ok(Extent::Data(end));
        }
        match lseek(src, to_off(pos)?, Whence::SeekData).map(from_off) {
            Ok(Ok(data)) if data > pos => {
                self.remember(fd, pos..data, false);
                Ok(Extent::Hole(data.min(end)))
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => {
                let hole = match lseek(src, to_off(pos)?, Whence::SeekHole).map(from_off) {
                    Ok(hole) => hole?.max(pos + 1),
                    Err(Errno::EINVAL | Errno::EOPNOTSUPP) => u64::MAX,
                    Err(e) => return Err(e.into()),
                };
                self.remember(fd, pos..hole, true);
                Ok(Extent::Data(hole.min(end)))
            }
            Err(Errno::ENXIO) => {
                self.remember(fd, pos..u64::MAX, false);
                Ok(Extent::Hole(end))
            }
            // No hole support (block devices, some filesystems): all of it is data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => {
                self.remember(fd, 0..u64::MAX, true);
                Ok(Extent::Data(end))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Clears the progress bar.
    pub fn finish(&self) {
        self.progress.finish();
    }

    /// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`.
    pub fn copy(
        &mut self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
        holes: Holes,
    ) -> io::Result<()> {
        let end = src_off
            .checked_add(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let to_dst = |pos: u64| dst_off + (pos - src_off);
        let mut pos = src_off;
        while pos < end {
            let (data_end, hole_end) = match self.extent(src, pos, end)? {
                Extent::Data(until) => {
                    let copied = self.copy_data(src, pos, dst, to_dst(pos), until - pos)?;
                    // A source that ends early reads as zeros after its end.
                    (pos + copied, until)
                }
                Extent::Hole(until) => (pos, until),
            };
            if hole_end > data_end {
                if holes == Holes::Zero {
                    self.zero(dst, to_dst(data_end), hole_end - data_end)?;
                }
                self.progress.advance(hole_end - data_end);
            }
            pos = hole_end;
        }
        Ok(())
    }

    /// Copies up to `len` bytes; returns fewer only where the source ends.
    fn copy_data(
        &mut self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
    ) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            let want = (len - done).min(CHUNK) as usize;
            let (from, to) = (src_off + done, dst_off + done);
            let copied = if self.kernel_copy && len >= SHORT {
                let (mut inp, mut out) = (to_off(from)?, to_off(to)?);
                match copy_file_range(src, Some(&mut inp), dst, Some(&mut out), want) {
                    Ok(n) => n,
                    Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                        self.kernel_copy = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.read_write(src, from, dst, to, want)?
            };
            if copied == 0 {
                break;
            }
            done += copied as u64;
            self.progress.advance(copied as u64);
        }
        Ok(done)
    }

    /// One buffered step of the fallback copy; returns the bytes moved (0 at EOF).
    fn read_write(
        &mut self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        want: usize,
    ) -> io::Result<usize> {
        self.buf.resize(want.min(FALLBACK_BUF), 0);
        let n = src.read_at(&mut self.buf, src_off)?;
        dst.write_all_at(&self.buf[..n], dst_off)?;
        Ok(n)
    }

    fn zero(&mut self, dst: &File, off: u64, len: u64) -> io::Result<()> {
        if self.punch {
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match fallocate(dst, flags, to_off(off)?, to_off(len)?) {
                Ok(()) => return Ok(()),
                Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL | Errno::ENODEV) => {
                    self.punch = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let zeros = vec![0u8; usize::try_from(len).map_or(FALLBACK_BUF, |l| l.min(FALLBACK_BUF))];
        let mut done = 0;
        while done < len {
            let n = usize::try_from(len - done).map_or(zeros.len(), |l| l.min(zeros.len()));
            dst.write_all_at(&zeros[..n], off + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Fills `buf` from `file` at `off`; what lies past the end of the file reads as zeros.
pub fn read_or_zeros(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Writes `buf` at `off` into a fresh file, leaving all-zero 4 KiB blocks as holes.
pub fn write_skipping_zeros(dst: &File, buf: &[u8], off: u64) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let mut start = None;
    for (i, block) in buf.chunks(BLOCK).enumerate() {
        let zero = block.iter().all(|&b| b == 0);
        match (start, zero) {
            (None, false) => start = Some(i * BLOCK),
            (Some(s), true) => {
                dst.write_all_at(&buf[s..i * BLOCK], off + s as u64)?;
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        dst.write_all_at(&buf[s..], off + s as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(dir: &std::path::Path, name: &str, len: u64, data: &[(u64, Vec<u8>)]) -> File {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap();
        file.set_len(len).unwrap();
        for (off, bytes) in data {
            file.write_all_at(bytes, *off).unwrap();
        }
        file
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut buf = vec![0; usize::try_from(file.metadata().unwrap().len()).unwrap()];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn holes_stay_holes_in_a_fresh_destination() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path(), "src", 64 << 20, &[(40 << 20, vec![7; 8192])]);
        let dst = sparse_file(dir.path(), "dst", 64 << 20, &[]);
        Copier::new(Progress::hidden())
            .copy(&src, 0, &dst, 0, 64 << 20, Holes::Skip)
            .unwrap();
        assert_eq!(contents(&src), contents(&dst));
        // Only the 8 KiB of data were written (tmpfs or ext4 both count 512-byte blocks).
        assert!(dst.metadata().unwrap().blocks() * 512 <= 64 << 10);
    }

    #[test]
    fn zero_mode_clears_what_the_source_leaves_empty() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path(), "src", 1 << 20, &[(4096, vec![1; 512])]);
        let dst = sparse_file(dir.path(), "dst", 1 << 20, &[(0, vec![9; 1 << 20])]);
        Copier::new(Progress::hidden())
            .copy(&src, 0, &dst, 0, 1 << 20, Holes::Zero)
            .unwrap();
        assert_eq!(contents(&src), contents(&dst));
    }

    #[test]
    fn zero_blocks_stay_holes_and_short_files_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = vec![0u8; 5 * 4096 + 100];
        buf[4096..8192].fill(3);
        buf[5 * 4096..].fill(4);
        let dst = sparse_file(dir.path(), "dst", 0, &[]);
        write_skipping_zeros(&dst, &buf, 512).unwrap();
        dst.set_len(512 + buf.len() as u64).unwrap();
        assert_eq!(&contents(&dst)[512..], &buf[..]);
        assert!(dst.metadata().unwrap().blocks() * 512 <= 3 * 4096);
        let mut back = vec![9u8; buf.len() + 1000];
        read_or_zeros(&dst, &mut back, 512).unwrap();
        assert_eq!(&back[..buf.len()], &buf[..]);
        assert!(back[buf.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn fallback_paths_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path(), "src", 3 << 20, &[(1 << 20, vec![5; 100_000])]);
        let dst = sparse_file(dir.path(), "dst", 3 << 20, &[(0, vec![9; 3 << 20])]);
        let mut copier = Copier {
            kernel_copy: false,
            punch: false,
            progress: Progress::hidden(),
            known: Vec::new(),
            buf: Vec::new(),
        };
        copier.copy(&src, 0, &dst, 0, 3 << 20, Holes::Zero).unwrap();
        assert_eq!(contents(&src), contents(&dst));
    }

    #[test]
    fn past_the_source_end_reads_as_zeros_as_in_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path(), "src", 4096, &[(0, vec![1; 4096])]);
        let dst = sparse_file(dir.path(), "dst", 8192, &[(0, vec![9; 8192])]);
        Copier::new(Progress::hidden())
            .copy(&src, 0, &dst, 0, 8192, Holes::Zero)
            .unwrap();
        let mut want = vec![1; 4096];
        want.resize(8192, 0);
        assert_eq!(contents(&dst), want);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_range_copies_exactly(
            chunks in proptest::collection::vec((0u64..(1 << 20), 1usize..20_000, any::<u8>()), 0..8),
            start in 0u64..(1 << 20),
            len in 0u64..(1 << 20),
            shift in 0u64..10_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let data: Vec<_> = chunks.into_iter().map(|(off, n, b)| (off, vec![b; n])).collect();
            let src = sparse_file(dir.path(), "src", 2 << 20, &data);
            let dst = sparse_file(dir.path(), "dst", 3 << 20, &[(0, vec![0xee; 3 << 20])]);
            Copier::new(Progress::hidden())
                .copy(&src, start, &dst, start + shift, len, Holes::Zero)
                .unwrap();
            let (s, d) = (contents(&src), contents(&dst));
            let index = |v: u64| usize::try_from(v).unwrap();
            let (a, b, n) = (index(start), index(start + shift), index(len));
            prop_assert_eq!(&s[a..a + n], &d[b..b + n]);
            prop_assert!(d[..b].iter().all(|&x| x == 0xee));
            prop_assert!(d[b + n..].iter().all(|&x| x == 0xee));
        }
    }
}
