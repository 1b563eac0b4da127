//! The COW codec against real bytes: files the kernel writes, files the C
//! `uml_mkcow` writes, and a header we emit that the kernel must boot on.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use uml_proto::cow::{CowHeader, CowLayout, CowVersion, DirtyRuns, bit_is_set};
use uml_testbed::cow::backing_bytes;
use uml_testbed::{UmlBuilder, host_md5, host_program, index};

const EXIT_DEADLINE: Duration = Duration::from_secs(90);

fn mtime_u32(path: &Path) -> u32 {
    u32::try_from(fs::metadata(path).expect("stat backing file").mtime())
        .expect("an mtime a COW header can store")
}

#[test]
fn real_kernel_writes_a_cow_that_parses() {
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let builder = UmlBuilder::new(
        "dd if=/pattern of=/dev/ubdb bs=4096 seek=25 count=1 conv=fsync\necho COW-WRITE-DONE",
    )
    .file("/pattern", &pattern);
    let backing = builder.workdir().join("data.img");
    let cow = builder.workdir().join("data.cow");
    let original = backing_bytes(4 << 20);
    fs::write(&backing, &original).unwrap();
    let mtime_before = fs::metadata(&backing).unwrap().modified().unwrap();

    let mut uml = builder
        .arg(format!("ubd1={},{}", cow.display(), backing.display()))
        .start();
    uml.wait_exit(EXIT_DEADLINE);
    let console = uml.console();
    assert!(console.contains("COW-WRITE-DONE"), "console:\n{console}");

    let bytes = fs::read(&cow).unwrap();
    let header = CowHeader::parse(&bytes).unwrap();
    assert_eq!(header.version, CowVersion::V3);
    assert!(header.magic_big_endian);
    assert_eq!(header.size, 4 << 20);
    assert_eq!((header.sectorsize, header.alignment), (512, 4096));
    assert_eq!(header.cow_format, 0);
    assert_eq!(header.mtime, mtime_u32(&backing));
    assert_eq!(header.backing_path(), fs::canonicalize(&backing).unwrap());

    let layout = CowLayout::of(&header).unwrap();
    assert_eq!(
        bytes.len() as u64,
        layout.created_file_len(header.size).unwrap()
    );
    let bitmap_start = index(layout.bitmap_offset);
    let bitmap = &bytes[bitmap_start..bitmap_start + index(layout.bitmap_len)];
    let runs: Vec<_> = DirtyRuns::new(bitmap, layout.sectors).collect();
    assert_eq!(runs, vec![200..208], "dirty runs of the kernel's COW");
    let data = index(layout.sector_offset(200).unwrap());
    assert_eq!(&bytes[data..data + 4096], &pattern[..]);

    assert_eq!(
        fs::read(&backing).unwrap(),
        original,
        "backing file changed"
    );
    assert_eq!(
        fs::metadata(&backing).unwrap().modified().unwrap(),
        mtime_before
    );
}

#[test]
fn real_kernel_boots_on_a_cow_header_we_emit() {
    let builder = UmlBuilder::new(
        "md5sum /dev/ubdb\n\
         echo -n OURS | dd of=/dev/ubdb bs=512 seek=3 conv=notrunc,fsync 2>/dev/null\n\
         echo OUR-COW-DONE",
    );
    let backing = builder.workdir().join("base.img");
    let cow = builder.workdir().join("ours.cow");
    let original = backing_bytes(1 << 20);
    fs::write(&backing, &original).unwrap();
    let header = CowHeader::new_v3(
        &fs::canonicalize(&backing).unwrap(),
        mtime_u32(&backing),
        original.len() as u64,
    );
    let layout = CowLayout::of(&header).unwrap();
    let file = fs::File::create(&cow).unwrap();
    header.write_to(&mut &file).unwrap();
    file.set_len(layout.created_file_len(header.size).unwrap())
        .unwrap();
    drop(file);

    // One name only: the kernel must find the backing file through our header.
    let mut uml = builder.arg(format!("ubd1={}", cow.display())).start();
    uml.wait_exit(EXIT_DEADLINE);
    let console = uml.console();
    assert!(console.contains("OUR-COW-DONE"), "console:\n{console}");
    let host_md5 = host_md5(&backing);
    assert!(
        console.contains(&format!("{host_md5}  /dev/ubdb")),
        "guest did not read the backing content through our COW (host md5 {host_md5}):\n{console}"
    );

    let bytes = fs::read(&cow).unwrap();
    assert_eq!(CowHeader::parse(&bytes).unwrap(), header);
    let bitmap = &bytes[index(layout.bitmap_offset)..][..index(layout.bitmap_len)];
    assert!(bit_is_set(bitmap, 3));
    // The guest's page cache writes back the whole 4 KiB page around sector 3.
    let runs: Vec<_> = DirtyRuns::new(bitmap, layout.sectors).collect();
    assert_eq!(runs, vec![0..8]);
    let page = index(layout.sector_offset(0).unwrap());
    let mut expected = original[..4096].to_vec();
    expected[3 * 512..3 * 512 + 4].copy_from_slice(b"OURS");
    assert_eq!(&bytes[page..page + 4096], &expected[..]);
    assert_eq!(fs::read(&backing).unwrap(), original);
}

#[test]
fn c_tool_uml_mkcow_header_matches_ours() {
    let dir = tempfile::tempdir().unwrap();
    // An odd size exercises the bitmap and data-offset rounding.
    let size = (16 << 20) + 1000;
    fs::write(dir.path().join("back.img"), backing_bytes(size)).unwrap();
    let status = Command::new(host_program("uml_mkcow", "uml-utilities"))
        .args(["c.cow", "back.img"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "uml_mkcow failed: {status}");
    let backing = fs::canonicalize(dir.path().join("back.img")).unwrap();
    let c_bytes = fs::read(dir.path().join("c.cow")).unwrap();
    let c_header = CowHeader::parse(&c_bytes).unwrap();

    let ours = CowHeader::new_v3(&backing, mtime_u32(&backing), size as u64);
    assert_eq!(c_header, ours, "decoded fields differ");
    let our_bytes = ours.to_bytes().unwrap();
    let path_end = 32 + ours.backing_file.len();
    assert_eq!(
        our_bytes[..path_end],
        c_bytes[..path_end],
        "fields or path differ"
    );
    assert!(
        our_bytes[path_end..].iter().all(|&b| b == 0),
        "our padding is not zero"
    );
    let layout = CowLayout::of(&ours).unwrap();
    assert_eq!(
        c_bytes.len() as u64,
        layout.created_file_len(size as u64).unwrap(),
        "file size differs from our layout"
    );
    assert!(
        c_bytes[our_bytes.len()..].iter().all(|&b| b == 0),
        "a new COW has a clean bitmap and an empty data area"
    );
}
