//! uml_moo: ours against the C tool on every header layout, and merges of COW
//! files a real kernel wrote.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::fs;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use uml_proto::cow::{CowHeader, CowLayout, CowVersion, set_bit};
use uml_testbed::cow::{TestCow, backing_bytes};
use uml_testbed::{UmlBuilder, host_program, index, our_tool, run_in};

const EXIT_DEADLINE: Duration = Duration::from_secs(90);

fn c_moo() -> PathBuf {
    host_program("uml_moo", "uml-utilities")
}

/// `d/base.img` of `len` bytes and a V3 `d/x.cow` over it with `dirty`
/// sectors; returns the image a merge must give.
fn v3_cow_over_base(d: &Path, len: usize, dirty: &[(u64, u8)]) -> Vec<u8> {
    fs::write(d.join("base.img"), backing_bytes(len)).unwrap();
    TestCow::build(
        &d.join("x.cow"),
        &d.join("base.img"),
        CowVersion::V3,
        true,
        dirty,
    )
    .expected
}

/// Copies a backing file keeping its mtime, so a COW's header still matches the copy.
fn copy_keeping_mtime(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap();
    let mtime = fs::metadata(from).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn c_tool_uml_moo_output_equals_ours_on_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Zero sectors (which the C tool skips) next to data, runs across bitmap bytes.
    let dirty: Vec<(u64, u8)> = [0u64, 1, 7, 8, 9, 100, 1000, 1001, 2047]
        .iter()
        .map(|&s| (s, if s == 9 { 0 } else { s.to_le_bytes()[0] | 1 }))
        .collect();
    fs::write(d.join("base.img"), backing_bytes(1 << 20)).unwrap();
    for (version, big_endian) in [
        (CowVersion::V1, false),
        (CowVersion::V1, true),
        (CowVersion::V2, true),
        (CowVersion::V3, true),
        (CowVersion::V3, false),
        (CowVersion::V3Broken, true),
    ] {
        let case = format!("{version:?}-{big_endian}");
        let expected = TestCow::build(
            &d.join("x.cow"),
            &d.join("base.img"),
            version,
            big_endian,
            &dirty,
        )
        .expected;
        let c_out = run_in(&c_moo(), d, &["x.cow", "c.img"]);
        assert!(c_out.status.success(), "{case}: C uml_moo: {c_out:?}");
        let our_out = run_in(&our_tool("uml_moo"), d, &["x.cow", "ours.img"]);
        assert!(our_out.status.success(), "{case}: ours: {our_out:?}");
        assert_eq!(our_out.stdout, c_out.stdout, "{case}: stdout");
        let ours = fs::read(d.join("ours.img")).unwrap();
        assert!(
            ours == fs::read(d.join("c.img")).unwrap(),
            "{case}: images differ"
        );
        assert!(ours == expected, "{case}: image is not the expected merge");

        // In place, each tool on its own copy of the backing file.
        for (tool, copy) in [
            (c_moo(), "c-base.img"),
            (our_tool("uml_moo"), "our-base.img"),
        ] {
            copy_keeping_mtime(&d.join("base.img"), &d.join(copy));
            let out = run_in(&tool, d, &["-d", "-b", copy, "x.cow"]);
            assert!(out.status.success(), "{case}: -d with {tool:?}: {out:?}");
        }
        let ours = fs::read(d.join("our-base.img")).unwrap();
        assert!(
            ours == fs::read(d.join("c-base.img")).unwrap(),
            "{case}: -d images differ"
        );
        assert!(
            ours == expected,
            "{case}: -d image is not the expected merge"
        );
        for f in ["c.img", "ours.img", "c-base.img", "our-base.img"] {
            fs::remove_file(d.join(f)).unwrap();
        }
    }
}

#[test]
fn c_tool_uml_moo_drops_a_partial_last_sector_that_we_keep() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = (64 << 10) + 300;
    let expected = v3_cow_over_base(d, size, &[(3, 0x33), (128, 0x44)]);
    assert!(run_in(&c_moo(), d, &["x.cow", "c.img"]).status.success());
    assert!(
        run_in(&our_tool("uml_moo"), d, &["x.cow", "ours.img"])
            .status
            .success()
    );
    let (c, ours) = (
        fs::read(d.join("c.img")).unwrap(),
        fs::read(d.join("ours.img")).unwrap(),
    );
    assert_eq!(c.len(), 64 << 10, "the C tool rounds down to whole sectors");
    assert_eq!(ours.len(), size);
    assert!(ours[..c.len()] == c[..]);
    assert!(ours == expected);
    assert!(ours[64 << 10..].iter().all(|&b| b == 0x44));
}

#[test]
fn c_tool_uml_moo_exit_codes_match_ours() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("junk.cow"), b"no magic here, nothing to see").unwrap();
    v3_cow_over_base(d, 8192, &[]);
    fs::write(d.join("short.img"), backing_bytes(4096)).unwrap();
    for args in [
        &[][..],
        &["x.cow"][..],
        &["missing.cow", "out.img"][..],
        &["junk.cow", "out.img"][..],
        &["-b", "short.img", "x.cow", "out.img"][..],
        &["-b", "missing.img", "x.cow", "out.img"][..],
    ] {
        let c_out = run_in(&c_moo(), d, args);
        let our_out = run_in(&our_tool("uml_moo"), d, args);
        assert_eq!(
            our_out.status.code(),
            c_out.status.code(),
            "{args:?}: {our_out:?}"
        );
        assert_eq!(our_out.status.code(), Some(1), "{args:?}");
        assert!(!our_out.stderr.is_empty(), "{args:?}: no message");
    }
    let out = run_in(
        &our_tool("uml_moo"),
        d,
        &["-b", "short.img", "x.cow", "out.img"],
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("Size mismatch (8192 vs 4096)") && msg.contains("short.img"),
        "{msg}"
    );
    // Options in any order, which the C tool refuses.
    copy_keeping_mtime(&d.join("base.img"), &d.join("copy.img"));
    let out = run_in(&our_tool("uml_moo"), d, &["x.cow", "-b", "copy.img", "-d"]);
    assert!(out.status.success(), "{out:?}");
}

/// An ext2 data disk holding one file.
fn data_disk(dir: &Path, name: &str) -> PathBuf {
    let staging = dir.join("staging");
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("before.txt"), "written on the host\n").unwrap();
    let image = dir.join(name);
    let status = Command::new(host_program("mkfs.ext2", "e2fsprogs"))
        .args(["-q", "-F", "-d"])
        .arg(&staging)
        .arg(&image)
        .arg("8M")
        .status()
        .unwrap();
    assert!(status.success());
    image
}

fn debugfs_cat(image: &Path, file: &str) -> String {
    let out = Command::new(host_program("debugfs", "e2fsprogs"))
        .args(["-R", &format!("cat /{file}")])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const GUEST_WRITES: &str = "mount -t ext2 /dev/ubdb /mnt && \
     echo 'written by the guest' > /mnt/guest.txt && \
     dd if=/dev/urandom of=/mnt/blob bs=1k count=300 2>/dev/null && \
     md5sum /mnt/blob && umount /mnt && echo GUEST-WROTE";

/// Checks a kernel-written COW: both merges by us equal the C tool's, hold the guest's files.
fn check_kernel_cow(dir: &Path, cow: &Path, backing: &Path, console: &str) {
    let c_img = dir.join("c.img");
    let our_img = dir.join("ours.img");
    let (cow_s, c_s, our_s) = (
        cow.to_str().unwrap(),
        c_img.to_str().unwrap(),
        our_img.to_str().unwrap(),
    );
    assert!(run_in(&c_moo(), dir, &[cow_s, c_s]).status.success());
    let out = run_in(&our_tool("uml_moo"), dir, &[cow_s, our_s]);
    assert!(out.status.success(), "{out:?}");
    let ours = fs::read(&our_img).unwrap();
    assert!(
        ours == fs::read(&c_img).unwrap(),
        "our merge differs from the C tool's"
    );
    assert_eq!(debugfs_cat(&our_img, "guest.txt"), "written by the guest\n");
    assert_eq!(debugfs_cat(&our_img, "before.txt"), "written on the host\n");
    let blob_md5 = {
        fs::write(dir.join("blob"), debugfs_cat(&our_img, "blob").as_bytes()).unwrap();
        let out = Command::new("debugfs")
            .args(["-R", &format!("dump /blob {}", dir.join("blob").display())])
            .arg(&our_img)
            .output()
            .unwrap();
        assert!(out.status.success());
        uml_testbed::host_md5(&dir.join("blob"))
    };
    assert!(
        console.contains(&format!("{blob_md5}  /mnt/blob")),
        "blob md5 {blob_md5}:\n{console}"
    );
    let fsck = Command::new(host_program("e2fsck", "e2fsprogs"))
        .arg("-fn")
        .arg(&our_img)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "e2fsck: {fsck:?}");

    // In place: the backing file becomes the same image.
    let out = run_in(&our_tool("uml_moo"), dir, &["-d", cow_s]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        fs::read(backing).unwrap() == ours,
        "-d result differs from the new-file merge"
    );
}

#[test]
fn real_kernel_writes_our_cow_and_our_merge_equals_c() {
    let builder = UmlBuilder::new(&format!("{GUEST_WRITES}\nsync"));
    let dir = builder.workdir().to_path_buf();
    let backing = data_disk(&dir, "data.img");
    let cow = dir.join("data.cow");
    let created = run_in(
        &our_tool("uml_mkcow"),
        &dir,
        &[cow.to_str().unwrap(), backing.to_str().unwrap()],
    );
    assert!(created.status.success(), "{created:?}");
    let original = fs::read(&backing).unwrap();
    let mtime = fs::metadata(&backing).unwrap().modified().unwrap();
    let mut uml = builder.arg(format!("ubd1={}", cow.display())).start();
    uml.wait_exit(EXIT_DEADLINE);
    let console = uml.console();
    assert!(console.contains("GUEST-WROTE"), "console:\n{console}");
    assert!(
        fs::read(&backing).unwrap() == original,
        "the kernel changed the backing file"
    );
    assert_eq!(fs::metadata(&backing).unwrap().modified().unwrap(), mtime);
    check_kernel_cow(&dir, &cow, &backing, &console);
}

#[test]
fn real_kernel_made_cow_merges_like_c() {
    let builder = UmlBuilder::new(GUEST_WRITES);
    let dir = builder.workdir().to_path_buf();
    let backing = data_disk(&dir, "data.img");
    let cow = dir.join("kernel.cow");
    let mut uml = builder
        .arg(format!("ubd1={},{}", cow.display(), backing.display()))
        .start();
    uml.wait_exit(EXIT_DEADLINE);
    let console = uml.console();
    assert!(console.contains("GUEST-WROTE"), "console:\n{console}");
    check_kernel_cow(&dir, &cow, &backing, &console);
}

#[test]
fn real_kernel_holding_a_cow_keeps_uml_moo_away() {
    let builder = UmlBuilder::new("mount -t ext2 /dev/ubdb /mnt && echo DISK-IN-USE\nsleep 600");
    let dir = builder.workdir().to_path_buf();
    let backing = data_disk(&dir, "data.img");
    let cow = dir.join("data.cow");
    // The kernel opens (and locks) a disk when the guest first uses it.
    let mut uml = builder
        .arg(format!("ubd1={},{}", cow.display(), backing.display()))
        .start();
    uml.wait_for_console("DISK-IN-USE", EXIT_DEADLINE);
    let before = fs::read(&backing).unwrap();
    let pid = format!("by process {}", uml.pid());
    for args in [&["data.cow", "out.img"][..], &["-d", "data.cow"][..]] {
        let out = run_in(&our_tool("uml_moo"), &dir, args);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            msg.contains("in use") && msg.contains(&pid),
            "{args:?}: {msg}"
        );
    }
    assert!(!dir.join("out.img").exists());
    assert!(fs::read(&backing).unwrap() == before);
    // Nor may uml_mkcow -f replace it: the guest would go on writing to the
    // unlinked file and lose everything.
    let inode = fs::metadata(&cow).unwrap().ino();
    let out = run_in(
        &our_tool("uml_mkcow"),
        &dir,
        &["-f", "data.cow", backing.to_str().unwrap()],
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(msg.contains("in use") && msg.contains(&pid), "{msg}");
    assert_eq!(
        fs::metadata(&cow).unwrap().ino(),
        inode,
        "the COW was replaced"
    );
    // Merging into a new file only reads the backing file, which other UMLs share.
    let other = dir.join("other.cow");
    assert!(
        run_in(
            &our_tool("uml_mkcow"),
            &dir,
            &[other.to_str().unwrap(), backing.to_str().unwrap()]
        )
        .status
        .success()
    );
    let out = run_in(&our_tool("uml_moo"), &dir, &["other.cow", "other.img"]);
    assert!(out.status.success(), "{out:?}");
    assert!(fs::read(dir.join("other.img")).unwrap() == before);
}

#[test]
fn uml_moo_in_place_killed_at_any_point_is_finished_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 256usize << 20;
    let backing = d.join("base.img");
    let mut expected = backing_bytes(size);
    fs::write(&backing, &expected).unwrap();
    let cow = d.join("big.cow");
    let made = run_in(&our_tool("uml_mkcow"), d, &["big.cow", "base.img"]);
    assert!(made.status.success(), "{made:?}");
    let header = CowHeader::parse(&fs::read(&cow).unwrap()[..CowHeader::MAX_LEN]).unwrap();
    let layout = CowLayout::of(&header).unwrap();
    // Every other MiB dirty, plus a scattered 4 KiB page in each clean MiB.
    let file = fs::File::options().write(true).open(&cow).unwrap();
    let mut bitmap = vec![0; index(layout.bitmap_len)];
    let mut dirty = |start: usize, len: usize, byte: u8| {
        let data = vec![byte; len];
        file.write_all_at(&data, layout.data_offset + start as u64)
            .unwrap();
        expected[start..start + len].copy_from_slice(&data);
        for sector in start / 512..(start + len) / 512 {
            set_bit(&mut bitmap, sector as u64);
        }
    };
    for mib in 0..size >> 20 {
        let start = mib << 20;
        if mib % 2 == 0 {
            dirty(start, 1 << 20, mib.to_le_bytes()[0] | 0x80);
        } else {
            dirty(start + (mib % 7) * 4096 * 9, 4096, mib.to_le_bytes()[0]);
        }
    }
    file.write_all_at(&bitmap, layout.bitmap_offset).unwrap();
    drop(file);

    let marker = d.join("big.cow.uml_moo-in-progress");
    let mut interrupted = 0;
    for delay_ms in [1, 5, 15, 40, 80, 150, 300, 600] {
        let mut child = Command::new(our_tool("uml_moo"))
            .args(["-d", "--quiet", "big.cow"])
            .current_dir(d)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() && marker.exists() {
            interrupted += 1;
        }
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed mid-merge"
    );
    let out = run_in(&our_tool("uml_moo"), d, &["-d", "--quiet", "big.cow"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists());
    assert!(
        fs::read(&backing).unwrap() == expected,
        "the finished merge is wrong"
    );
}

#[test]
fn root_full_disk_leaves_no_output_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v3_cow_over_base(d, 8 << 20, &[(5, 1)]);
    fs::create_dir(d.join("small")).unwrap();
    // A 2 MiB tmpfs in a mount namespace of our own: the host sees nothing of it.
    let script = format!(
        "mount -t tmpfs -o size=2m tmpfs small && {} x.cow small/out.img; echo \"rc=$?\"; ls -A small",
        our_tool("uml_moo").display()
    );
    let out = Command::new(host_program("unshare", "util-linux"))
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "needs root for the mount namespace: {out:?}"
    );
    assert_eq!(
        stdout, "rc=1\n",
        "exit status and leftovers in the full filesystem"
    );
    assert!(
        stderr.contains("small/out.img") && stderr.contains("No space left"),
        "{stderr}"
    );
}

/// A symlink planted where `uml_moo -d` puts its restart marker is replaced,
/// never written through: its target keeps its bytes, the merge completes.
#[test]
fn uml_moo_in_place_never_writes_through_a_planted_marker_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let expected = v3_cow_over_base(d, 1 << 20, &[(3, 0x33), (700, 0x77)]);
    fs::write(d.join("victim"), "precious").unwrap();
    symlink(d.join("victim"), d.join("x.cow.uml_moo-in-progress")).unwrap();
    let out = run_in(&our_tool("uml_moo"), d, &["-q", "-d", "x.cow"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read_to_string(d.join("victim")).unwrap(), "precious");
    assert!(fs::read(d.join("base.img")).unwrap() == expected);
    assert!(
        fs::symlink_metadata(d.join("x.cow.uml_moo-in-progress")).is_err(),
        "the marker (or the planted link) is still there"
    );
}

/// A marker cut short (no complete record) is not reported as a merge in progress.
#[test]
fn uml_moo_info_reports_only_a_complete_marker_of_our_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v3_cow_over_base(d, 64 << 10, &[(1, 1)]);
    fs::write(d.join("x.cow.uml_moo-in-progress"), "uml_moo in-place me").unwrap();
    let out = run_in(&our_tool("uml_moo"), d, &["--info", "x.cow"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("merge in progress"),
        "{out:?}"
    );
    // A complete marker, but another user's (planted where others may write):
    // it does not count either.
    let marker = d.join("x.cow.uml_moo-in-progress");
    fs::write(
        &marker,
        "uml_moo in-place merge in progress; rerun `uml_moo -d` on the COW file to finish it\n\
         cow 1 2\nbacking 3 4\nsize 65536\nmtime 5\n",
    )
    .unwrap();
    let ours = run_in(&our_tool("uml_moo"), d, &["--info", "x.cow"]);
    assert!(
        String::from_utf8_lossy(&ours.stdout).contains("merge in progress"),
        "{ours:?}"
    );
    std::os::unix::fs::chown(&marker, Some(65534), Some(65534)).unwrap();
    let foreign = run_in(&our_tool("uml_moo"), d, &["--info", "x.cow"]);
    assert!(
        !String::from_utf8_lossy(&foreign.stdout).contains("merge in progress"),
        "{foreign:?}"
    );
}

/// The COW named as its own backing file gets a message that says so, not a
/// report of a lock held by nobody.
#[test]
fn uml_moo_refuses_a_cow_as_its_own_backing_file_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v3_cow_over_base(d, 64 << 10, &[(1, 1)]);
    let before = fs::read(d.join("x.cow")).unwrap();
    for args in [
        &["-d", "-b", "x.cow", "x.cow"][..],
        &["-b", "x.cow", "x.cow", "new.img"][..],
    ] {
        let out = run_in(&our_tool("uml_moo"), d, args);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(msg.contains("its own backing file"), "{args:?}: {msg}");
        assert!(!msg.contains("in use"), "{args:?}: {msg}");
    }
    assert!(fs::read(d.join("x.cow")).unwrap() == before);
    assert!(!d.join("new.img").exists());
}

/// A COW whose header claims a 4 TiB image has a 1 GiB bitmap, all of it a
/// hole: --info must not need the memory the claim implies.
#[test]
fn uml_moo_info_on_a_huge_sparse_cow_needs_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let backing = d.join("huge.img");
    let size = 4u64 << 40;
    fs::File::create(&backing).unwrap().set_len(size).unwrap();
    let header = CowHeader::new_v3(&backing, 0, size);
    let layout = CowLayout::of(&header).unwrap();
    assert!(layout.bitmap_len >= 1 << 30, "the bitmap is not 1 GiB");
    let cow = d.join("huge.cow");
    let file = fs::File::create(&cow).unwrap();
    file.write_all_at(&header.to_bytes().unwrap(), 0).unwrap();
    file.set_len(layout.created_file_len(size).unwrap())
        .unwrap();
    // 256 MiB of address space: far less than the bitmap the header implies.
    let out = Command::new(host_program("prlimit", "util-linux"))
        .args(["--as=268435456", "--"])
        .arg(our_tool("uml_moo"))
        .args(["--info", "--json"])
        .arg(&cow)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text: String = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect();
    assert!(text.contains("\"dirty_sectors\":0,"), "{text}");
}

/// Scripts rerun the HOWTO's `uml_moo COW new_backing_file`: an existing NEW
/// is replaced (atomically) with the C tool's bytes, said on stderr unless -q;
/// a symlink NEW has its target replaced and stays a link.
#[test]
fn c_tool_uml_moo_replaces_an_existing_output_as_the_c_tool_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let expected = v3_cow_over_base(d, 1 << 20, &[(2, 0x22), (1500, 0x15)]);
    for tool in [c_moo(), our_tool("uml_moo")] {
        fs::write(d.join("out.img"), vec![0xee; 3 << 20]).unwrap();
        let out = run_in(&tool, d, &["x.cow", "out.img"]);
        assert_eq!(out.status.code(), Some(0), "{tool:?}: {out:?}");
        assert!(fs::read(d.join("out.img")).unwrap() == expected, "{tool:?}");
    }
    let out = run_in(&our_tool("uml_moo"), d, &["x.cow", "out.img"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replaced the existing 'out.img'"),
        "{out:?}"
    );
    let quiet = run_in(&our_tool("uml_moo"), d, &["-q", "x.cow", "out.img"]);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
    // Through a symlink: the file it names is replaced; the link stays.
    fs::write(d.join("real.img"), b"old").unwrap();
    symlink(d.join("real.img"), d.join("link.img")).unwrap();
    let out = run_in(&our_tool("uml_moo"), d, &["x.cow", "link.img"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        fs::symlink_metadata(d.join("link.img"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::read(d.join("real.img")).unwrap() == expected);
}

/// A loop device over a file of the test's own, detached when dropped.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn over(file: &Path) -> Self {
        let out = Command::new(host_program("losetup", "mount"))
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self { path }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new(host_program("losetup", "mount"))
            .arg("-d")
            .arg(&self.path)
            .status();
    }
}

/// A block device NEW (restoring a disk onto a volume) is written through, as
/// the C tool does, with the C tool's bytes; one held open exclusively, or
/// smaller than the image, is refused and left as it was.
#[test]
fn root_c_tool_uml_moo_writes_through_a_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let expected = v3_cow_over_base(d, 1 << 20, &[(0, 0x01), (9, 0x09), (2047, 0x7f)]);
    // Old contents everywhere, so a skipped zero or hole would show.
    fs::write(d.join("volume"), vec![0xa5; 2 << 20]).unwrap();
    let volume = LoopDevice::over(&d.join("volume"));
    let device = volume.path.to_str().unwrap().to_owned();
    let mut results = Vec::new();
    for tool in [c_moo(), our_tool("uml_moo")] {
        fs::write(d.join("volume"), vec![0xa5; 2 << 20]).unwrap();
        let out = run_in(&tool, d, &["x.cow", &device]);
        assert!(out.status.success(), "{tool:?}: {out:?}");
        let mut bytes = fs::read(&volume.path).unwrap();
        bytes.truncate(1 << 20);
        results.push(bytes);
    }
    assert!(results[0] == expected, "the C tool's image differs");
    assert!(
        results[1] == expected,
        "our image differs from the C tool's"
    );
    assert!(
        fs::metadata(&volume.path)
            .unwrap()
            .file_type()
            .is_block_device()
    );

    // Held open exclusively (as a mounted filesystem holds it): refused.
    fs::write(d.join("volume"), vec![0xa5; 2 << 20]).unwrap();
    let before = fs::read(&volume.path).unwrap();
    let holder = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&volume.path)
        .unwrap();
    let out = run_in(&our_tool("uml_moo"), d, &["x.cow", &device]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    drop(holder);
    assert!(fs::read(&volume.path).unwrap() == before);

    // Too small for the image: refused, untouched.
    fs::write(d.join("small"), vec![0x5a; 512 << 10]).unwrap();
    let small = LoopDevice::over(&d.join("small"));
    let out = run_in(
        &our_tool("uml_moo"),
        d,
        &["x.cow", small.path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the image needs"),
        "{out:?}"
    );
    assert!(fs::read(&small.path).unwrap() == vec![0x5a; 512 << 10]);
}
