//! Readers racing an appender: a region handed out never holds a batch past
//! the end offset reported with it, so a consumer that moves on to the next
//! offset never asks for one beyond the end (which Fetch answers with
//! OFFSET_OUT_OF_RANGE, and librdkafka answers by re-reading the partition
//! from the start — what a soak run caught).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::small_config;
use sluice_log::batch::{self, BatchHeader};
use sluice_log::{AppendPath, FlushPolicy, LogConfig, Partition};

fn race(path: AppendPath) {
    let dir = tempfile::tempdir().expect("dir");
    // `always`: each append syncs before it publishes, a wide window.
    let config = LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes: 256 * 1024,
        ..small_config(path)
    };
    let p = Arc::new(Partition::open(&dir.path().join("race-0"), config, false).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let mut offset = 0i64;
                let mut checked = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let r = p.read(offset, 1 << 20).unwrap_or_else(|e| {
                        panic!("a reader at {offset}, reached by reading, was refused: {e}")
                    });
                    let Some(slice) = r.slice else { continue };
                    let mut bytes = vec![0u8; slice.len as usize];
                    slice
                        .segment
                        .file()
                        .read_exact_at(&mut bytes, slice.position)
                        .expect("pread");
                    let mut pos = 0;
                    while pos + batch::HEADER_LEN <= bytes.len() {
                        let h = BatchHeader::parse(&bytes[pos..]).expect("header");
                        let len = h.total_len().expect("length");
                        if pos + len > bytes.len() {
                            break;
                        }
                        assert!(
                            h.last_offset() < r.log_end,
                            "served a batch ending at {} with the end reported at {}",
                            h.last_offset(),
                            r.log_end
                        );
                        if h.last_offset() >= offset {
                            offset = h.last_offset() + 1;
                        }
                        checked += 1;
                        pos += len;
                    }
                }
                checked
            })
        })
        .collect();
    for i in 0..1500u32 {
        let b = batch::build_batch(0, &[format!("race {i}").as_bytes(), b"second record"]);
        p.append(&b, 0).expect("append");
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0, "the reader read along");
    }
}

#[test]
fn readers_never_get_bytes_past_the_end_they_are_told_pwrite() {
    race(AppendPath::Pwrite);
}

#[test]
fn readers_never_get_bytes_past_the_end_they_are_told_mmap() {
    race(AppendPath::Mmap);
}
