//! uml_mkcow: ours against the C tool, and the kernel booting on what we make.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use uml_proto::cow::{CowHeader, CowLayout, DirtyRuns};
use uml_testbed::{UmlBuilder, host_md5, host_program, index, our_tool, run_in};

#[test]
fn c_tool_uml_mkcow_output_equals_ours() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("base.img"), vec![3u8; (8 << 20) + 777]).unwrap();
    let c = host_program("uml_mkcow", "uml-utilities");
    let ours = our_tool("uml_mkcow");
    assert!(
        run_in(&c, dir.path(), &["c.cow", "base.img"])
            .status
            .success()
    );
    let out = run_in(&ours, dir.path(), &["ours.cow", "base.img"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let c_bytes = fs::read(dir.path().join("c.cow")).unwrap();
    let our_bytes = fs::read(dir.path().join("ours.cow")).unwrap();
    assert_eq!(c_bytes.len(), our_bytes.len());
    let header = CowHeader::parse(&our_bytes).unwrap();
    assert_eq!(CowHeader::parse(&c_bytes).unwrap(), header);
    // Equal everywhere but the path padding, which only we guarantee to be zero.
    let path_end = 32 + header.backing_file.len();
    assert_eq!(c_bytes[..path_end], our_bytes[..path_end]);
    assert_eq!(c_bytes[4128..], our_bytes[4128..]);
    assert!(our_bytes[path_end..4128].iter().all(|&b| b == 0));
    let meta = fs::metadata(dir.path().join("ours.cow")).unwrap();
    assert_eq!(
        meta.mode() & 0o777,
        fs::metadata(dir.path().join("c.cow")).unwrap().mode() & 0o777
    );
}

#[test]
fn c_tool_uml_mkcow_exit_codes_match_ours() {
    let c = host_program("uml_mkcow", "uml-utilities");
    let ours = our_tool("uml_mkcow");
    let (c_dir, our_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&c_dir, &our_dir] {
        fs::write(dir.path().join("base.img"), vec![0u8; 4096]).unwrap();
    }
    // The same sequence in each directory: usage errors, create, refuse, force, bad backing.
    for args in [
        &[][..],
        &["only-one"][..],
        &["x.cow", "base.img"][..],
        &["x.cow", "base.img"][..],
        &["-f", "x.cow", "base.img"][..],
        &["y.cow", "missing.img"][..],
    ] {
        let c_out = run_in(&c, c_dir.path(), args);
        let our_out = run_in(&ours, our_dir.path(), args);
        assert_eq!(
            our_out.status.code(),
            c_out.status.code(),
            "exit code for {args:?}: {our_out:?}"
        );
    }
    assert!(
        c_dir.path().join("y.cow").exists(),
        "the C tool leaves a 0-byte COW"
    );
    assert!(
        !our_dir.path().join("y.cow").exists(),
        "a failed run left a COW"
    );
    let help = run_in(&ours, our_dir.path(), &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("-f, --force"));
}

#[test]
fn real_kernel_boots_on_our_uml_mkcow_output() {
    let builder = UmlBuilder::new(
        "md5sum /dev/ubdb\n\
         dd if=/dev/zero of=/dev/ubdb bs=4096 seek=2 count=2 conv=fsync 2>/dev/null\n\
         echo MKCOW-GUEST-DONE",
    );
    let dir = builder.workdir().to_path_buf();
    let original: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    fs::write(dir.join("base.img"), &original).unwrap();
    let out = run_in(&our_tool("uml_mkcow"), &dir, &["disk.cow", "base.img"]);
    assert!(out.status.success(), "{out:?}");

    let mut uml = builder
        .arg(format!("ubd1={}", dir.join("disk.cow").display()))
        .start();
    uml.wait_exit(Duration::from_secs(90));
    let console = uml.console();
    assert!(console.contains("MKCOW-GUEST-DONE"), "{console}");
    let md5 = host_md5(&dir.join("base.img"));
    assert!(console.contains(&format!("{md5}  /dev/ubdb")), "{console}");

    let bytes = fs::read(dir.join("disk.cow")).unwrap();
    let header = CowHeader::parse(&bytes).unwrap();
    let layout = CowLayout::of(&header).unwrap();
    let bitmap = &bytes[index(layout.bitmap_offset)..][..index(layout.bitmap_len)];
    assert_eq!(
        DirtyRuns::new(bitmap, layout.sectors).collect::<Vec<_>>(),
        vec![16..32]
    );
    assert_eq!(
        fs::read(dir.join("base.img")).unwrap(),
        original,
        "backing changed"
    );
}
