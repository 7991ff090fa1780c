//! Any bytes as a partition's segment and offset index after a crash:
//! recovery opens it without panicking, keeps only whole valid batches
//! (everything readable validates, in offset order), and the partition
//! takes the next append right after what it kept.
#![no_main]

use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use sluice_log::{LogConfig, Partition, batch};

fuzz_target!(|data: &[u8]| {
    // First two bytes: how much of the rest is the .log; the remainder is
    // the .index.
    if data.len() < 2 {
        return;
    }
    let split = (usize::from(u16::from_be_bytes([data[0], data[1]]))).min(data.len() - 2);
    let (log, index) = data[2..].split_at(split);
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let dir = base.path().join("fuzz-0");
    std::fs::create_dir(&dir).expect("partition dir");
    std::fs::write(dir.join("00000000000000000000.log"), log).expect("log");
    std::fs::write(dir.join("00000000000000000000.index"), index).expect("index");
    let config = LogConfig {
        segment_bytes: 64 << 10,
        ..LogConfig::default()
    };
    let Ok(partition) = Partition::open(&dir, config, false) else {
        return; // refusing to open is an answer; a panic is not
    };
    // Read everything back: whole, valid batches in offset order.
    let mut offset = partition.log_start();
    let end = partition.log_end();
    while offset < end {
        let read = partition
            .read(offset, 1 << 20)
            .expect("read inside the log");
        let slice = read.slice.expect("data below the log end");
        let mut bytes = vec![0u8; slice.len as usize];
        slice
            .segment
            .file()
            .read_exact_at(&mut bytes, slice.position)
            .expect("read the region");
        let batches = batch::split_batches(&bytes).expect("recovered bytes are whole batches");
        let (_, last) = batches.last().expect("at least one batch");
        assert_eq!(batches[0].1.base_offset, slice.first_offset);
        offset = last.last_offset() + 1;
    }
    assert_eq!(offset, end, "the last batch ends at the log end");
    let next = batch::build_batch(0, &[b"after recovery"]);
    let info = partition.append(&next, 0).expect("appends after recovery");
    assert_eq!(info.base_offset, end);
});
