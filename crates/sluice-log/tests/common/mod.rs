//! Helpers shared by the log tests: deterministic batches and a reader that
//! walks a partition the way the broker's Fetch will (file regions, then bytes).
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::time::Duration;

use sluice_log::batch::{self, BatchHeader};
use sluice_log::{AppendPath, FlushPolicy, LogConfig, Partition};

/// A valid batch whose values are derived from `seed` (so a test can rebuild
/// the expected bytes), with `records` records of `value_len` bytes.
pub fn batch(seed: u64, records: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|r| {
            (0..value_len)
                .map(|i| (seed as usize * 31 + r * 7 + i) as u8)
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    batch::build_batch(timestamp, &refs)
}

/// Small segments and a tight index so tests cross every boundary.
pub fn small_config(path: AppendPath) -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 512,
        flush: FlushPolicy::Os,
        append_path: path,
        ..LogConfig::default()
    }
}

pub const PATHS: [AppendPath; 2] = [AppendPath::Mmap, AppendPath::Pwrite];

/// Every batch in the partition from log start to log end, read through
/// `Partition::read` regions, each checked for a valid CRC.
pub fn read_all(p: &Partition) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = p.log_start();
    let end = p.log_end();
    while offset < end {
        let r = p.read(offset, 5000).expect("read");
        let Some(slice) = r.slice else { break };
        let mut bytes = vec![0u8; slice.len as usize];
        slice
            .segment
            .file()
            .read_exact_at(&mut bytes, slice.position)
            .expect("pread region");
        let mut pos = 0;
        let mut progressed = false;
        while pos + batch::HEADER_LEN <= bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            let len = h.total_len().expect("length");
            if pos + len > bytes.len() {
                break; // a partial trailing batch: read again from it
            }
            let b = &bytes[pos..pos + len];
            let h = batch::validate(b).unwrap_or_else(|e| panic!("corrupt batch served: {e}"));
            if h.last_offset() >= offset {
                out.push((h, b.to_vec()));
                offset = h.last_offset() + 1;
                progressed = true;
            }
            pos += len;
        }
        assert!(progressed, "read at {offset} made no progress");
    }
    out
}

/// Bytes of `b` with baseOffset and leader epoch as the log writes them.
pub fn as_stored(mut b: Vec<u8>, base_offset: i64, epoch: i32) -> Vec<u8> {
    batch::set_base_offset(&mut b, base_offset);
    batch::set_leader_epoch(&mut b, epoch);
    b
}

pub const SHORT: Duration = Duration::from_millis(1);
