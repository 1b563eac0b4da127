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
    /// The last data segment found in each source: a dense file then costs two
    /// seeks in all instead of two per run.
    segments: Vec<(RawFd, Range<u64>)>,
}

/// Where a source's data resumes at or after `pos`, `None` when only a hole is left.
/// Past the end of the file counts as a hole: the kernel reads zeros there too.
fn next_data(src: &File, pos: u64) -> io::Result<Option<u64>> {
    match lseek(src, to_off(pos)?, Whence::SeekData) {
        Ok(data) => Ok(Some(data as u64)),
        Err(Errno::ENXIO) => Ok(None),
        // No hole support (block devices, some filesystems): all of it is data.
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(Some(pos)),
        Err(e) => Err(e.into()),
    }
}

/// Where the data segment containing `pos` ends.
fn data_end(src: &File, pos: u64) -> io::Result<u64> {
    match lseek(src, to_off(pos)?, Whence::SeekHole) {
        Ok(hole) => Ok((hole as u64).max(pos)),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(u64::MAX),
        Err(e) => Err(e.into()),
    }
}

fn to_off(pos: u64) -> io::Result<i64> {
    i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Copier {
    /// A copier trying the fast paths first, advancing `progress` as bytes are handled.
    pub fn new(progress: Progress) -> Self {
        Self {
            kernel_copy: true,
            punch: true,
            progress,
            segments: Vec::new(),
        }
    }

    /// The data segment of `src` at or after `pos`, clipped to `end`; `None` if
    /// only a hole is left before `end`.
    fn data_segment(&mut self, src: &File, pos: u64, end: u64) -> io::Result<Option<Range<u64>>> {
        let fd = src.as_raw_fd();
        if let Some((_, known)) = self
            .segments
            .iter()
            .find(|(f, seg)| *f == fd && seg.contains(&pos))
        {
            return Ok(Some(pos..known.end.min(end)));
        }
        let Some(start) = next_data(src, pos)?.filter(|&d| d < end) else {
            return Ok(None);
        };
        let seg = start..data_end(src, start)?;
        self.segments.retain(|(f, _)| *f != fd);
        self.segments.push((fd, seg.clone()));
        Ok(Some(start..seg.end.min(end)))
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
            let data = self.data_segment(src, pos, end)?;
            let hole_end = data.as_ref().map_or(end, |seg| seg.start);
            if hole_end > pos {
                if holes == Holes::Zero {
                    self.zero(dst, to_dst(pos), hole_end - pos)?;
                }
                self.progress.advance(hole_end - pos);
                pos = hole_end;
                continue;
            }
            let Some(seg) = data.filter(|seg| seg.end > pos) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended before the range to copy",
                ));
            };
            self.copy_data(src, pos, dst, to_dst(pos), seg.end - pos)?;
            pos = seg.end;
        }
        Ok(())
    }

    fn copy_data(
        &mut self,
        src: &File,
        mut src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
    ) -> io::Result<()> {
        let end = src_off + len;
        let mut out = to_off(dst_off)?;
        while src_off < end {
            let want = (end - src_off).min(CHUNK) as usize;
            let copied = if self.kernel_copy {
                let mut inp = to_off(src_off)?;
                match copy_file_range(src, Some(&mut inp), dst, Some(&mut out), want) {
                    Ok(n) => n,
                    Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                        self.kernel_copy = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let n = read_write(src, src_off, dst, out as u64, want)?;
                out += n as i64;
                n
            };
            if copied == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended before the range to copy",
                ));
            }
            src_off += copied as u64;
            self.progress.advance(copied as u64);
        }
        Ok(())
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
        let zeros = vec![0u8; FALLBACK_BUF.min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            dst.write_all_at(&zeros[..n], off + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// One buffered step of the fallback copy; returns the bytes moved (0 at EOF).
fn read_write(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    want: usize,
) -> io::Result<usize> {
    let mut buf = vec![0u8; want.min(FALLBACK_BUF)];
    let n = src.read_at(&mut buf, src_off)?;
    dst.write_all_at(&buf[..n], dst_off)?;
    Ok(n)
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
        let mut buf = vec![0; file.metadata().unwrap().len() as usize];
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
    fn fallback_paths_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path(), "src", 3 << 20, &[(1 << 20, vec![5; 100_000])]);
        let dst = sparse_file(dir.path(), "dst", 3 << 20, &[(0, vec![9; 3 << 20])]);
        let mut copier = Copier {
            kernel_copy: false,
            punch: false,
            progress: Progress::hidden(),
            segments: Vec::new(),
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
            let (a, b, n) = (start as usize, (start + shift) as usize, len as usize);
            prop_assert_eq!(&s[a..a + n], &d[b..b + n]);
            prop_assert!(d[..b].iter().all(|&x| x == 0xee));
            prop_assert!(d[b + n..].iter().all(|&x| x == 0xee));
        }
    }
}
