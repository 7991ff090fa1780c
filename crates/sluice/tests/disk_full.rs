//! A full disk: the broker's data directory on a small tmpfs the test mounts
//! (it runs as root, as CI does). Produce fills it; the answers, the data
//! acknowledged before, and recovery once space is freed are all asserted.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Client, Server, create_topic, fetch_req, fetched, produce, stored};

const KAFKA_STORAGE_ERROR: i16 = 56;

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("disk");
        std::fs::create_dir(&dir).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "sluice-full-disk",
            ])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: this test needs root (CI runs as root)",
            dir.display()
        );
        SmallDisk { dir, _temp: temp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A batch of one ~60 KB record whose bytes say which one it is.
fn numbered_batch(n: u32) -> Vec<u8> {
    let value: Vec<u8> = (0..60_000u32)
        .map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(2_654_435_761)) as u8)
        .collect();
    sluice_log::batch::build_batch(i64::from(n), &[&value])
}

/// Fetches each acknowledged batch at its offset and compares it byte for byte.
fn assert_all_readable(c: &mut Client, topic: &str, acked: &[(i64, Vec<u8>)]) {
    for (offset, batch) in acked {
        let mut req = fetch_req(topic, 0, *offset, 0, 1);
        req.topics[0].partitions[0].partition_max_bytes = 1; // just the first batch
        let resp = c.call(12, &req);
        let (err, _, records) = fetched(&resp);
        assert_eq!(err, 0, "fetch at {offset}");
        assert_eq!(
            records.as_ref(),
            stored(batch, *offset).as_slice(),
            "batch at offset {offset} intact"
        );
    }
}

fn write_ballast(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0xabu8; bytes]).expect("ballast");
}

#[test]
fn a_full_disk_refuses_produce_keeps_acknowledged_data_and_recovers() {
    fill_the_disk("pwrite");
}

#[test]
fn a_full_disk_fails_the_mapped_append_path_cleanly_too() {
    // The mapped path reserves a whole segment when it rolls: a full disk
    // fails that reservation, never a store into the mapping (SIGBUS).
    fill_the_disk("mmap");
}

fn fill_the_disk(append: &str) {
    let disk = SmallDisk::mount("24m");
    // Room we can give back later.
    write_ballast(&disk.path("ballast"), 4 << 20);
    let data = disk.path("data");
    let args = ["--segment-bytes", "1m", "--append", append];
    let mut server = Server::start_in(&data, &args);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topic(&mut c, "fill", 1), 0);
    assert_eq!(create_topic(&mut c, "other", 1), 0);
    let other = numbered_batch(9999);
    assert_eq!(produce(&mut c, 9, "other", 0, &other), (0, 0));

    // Produce until the disk is full.
    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut refused = 0;
    for n in 0..2000u32 {
        let batch = numbered_batch(n);
        let (err, base) = produce(&mut c, 9, "fill", 0, &batch);
        match err {
            0 => {
                assert_eq!(base, acked.len() as i64, "offsets stay contiguous");
                assert_eq!(refused, 0, "an append succeeded after the disk was full");
                acked.push((base, batch));
            }
            KAFKA_STORAGE_ERROR => {
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("produce {n}: error {other}, want 0 or KAFKA_STORAGE_ERROR"),
        }
    }
    assert_eq!(refused, 5, "the disk filled up and Produce said so");
    assert!(acked.len() > 100, "{} batches fit first", acked.len());

    // The broker is up; everything acknowledged reads back, in both topics;
    // the other topic is refused too (same disk) but still serves reads.
    assert!(server.try_wait().expect("try_wait").is_none());
    assert_all_readable(&mut c, "fill", &acked);
    let mut other_acked = vec![(0, other)];
    assert_all_readable(&mut c, "other", &other_acked);
    // The other partition shares the disk: refused too, unless (mapped
    // path) its active segment's blocks were reserved before the disk filled.
    let more = numbered_batch(5000);
    match produce(&mut c, 9, "other", 0, &more) {
        (KAFKA_STORAGE_ERROR, _) => {}
        (0, 1) if append == "mmap" => other_acked.push((1, more)),
        answer => panic!("produce to the other partition: {answer:?}"),
    }

    // Space returns: appends resume right after the last acknowledged one.
    std::fs::remove_file(disk.path("ballast")).expect("free space");
    for n in 0..10u32 {
        let batch = numbered_batch(10_000 + n);
        let (err, base) = produce(&mut c, 9, "fill", 0, &batch);
        assert_eq!(err, 0, "produce after space was freed");
        assert_eq!(base, acked.len() as i64, "no gap, no garbage in between");
        acked.push((base, batch));
    }
    let more = numbered_batch(5001);
    let (err, base) = produce(&mut c, 9, "other", 0, &more);
    assert_eq!((err, base), (0, other_acked.len() as i64));
    other_acked.push((base, more));
    assert_all_readable(&mut c, "fill", &acked);

    // And all of it survives a restart.
    server.stop();
    let server = Server::start_in(&data, &args);
    let mut c = Client::connect(server.addr);
    assert_all_readable(&mut c, "fill", &acked);
    assert_all_readable(&mut c, "other", &other_acked);
}

#[test]
fn a_partition_whose_file_fails_goes_offline_while_the_others_keep_serving() {
    // Any file past 2 MB fails to grow (EFBIG, RLIMIT_FSIZE): a real write
    // error that is not a full disk, hitting only the partition that grows.
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    let server = Server::start_wrapped(
        &["prlimit", "--fsize=2000000", "--"],
        &data,
        "127.0.0.1:0",
        &["--segment-bytes", "8m"],
        &[],
    );
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topic(&mut c, "big", 1), 0);
    assert_eq!(create_topic(&mut c, "small", 1), 0);
    let mut big_acked = Vec::new();
    let mut failed_at = None;
    for n in 0..100u32 {
        let batch = numbered_batch(n);
        match produce(&mut c, 9, "big", 0, &batch) {
            (0, base) => big_acked.push((base, batch)),
            (KAFKA_STORAGE_ERROR, _) => {
                failed_at = Some(n);
                break;
            }
            answer => panic!("produce {n}: {answer:?}"),
        }
    }
    assert!(failed_at.is_some(), "the 2 MB limit was reached");
    assert_eq!(server.metric("sluice_partitions_offline"), 1);
    // Offline: even a small batch is refused now.
    assert_eq!(
        produce(
            &mut c,
            9,
            "big",
            0,
            &sluice_log::batch::build_batch(0, &[b"tiny"])
        )
        .0,
        KAFKA_STORAGE_ERROR
    );
    // What it acknowledged before still reads back.
    assert_all_readable(&mut c, "big", &big_acked);
    // The other partition carries on.
    let mut small_acked = Vec::new();
    for n in 0..5u32 {
        let batch = sluice_log::batch::build_batch(0, &[format!("small {n}").as_bytes()]);
        let (err, base) = produce(&mut c, 9, "small", 0, &batch);
        assert_eq!((err, base), (0, i64::from(n)));
        small_acked.push((base, batch));
    }
    assert_all_readable(&mut c, "small", &small_acked);
}
