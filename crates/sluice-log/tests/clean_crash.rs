//! The cleaner's crash safety: a real writer process that appends keyed
//! batches and cleans its compacted topic in throttled passes is killed with
//! SIGKILL at pseudo-random moments — most of them inside a pass: mapping,
//! copying, syncing or swapping — 30 times by default
//! (`SLUICE_CLEAN_CRASH_KILLS` sets the count). After each kill the log is
//! reopened (unclean) and must have no `.cleaned`, `.swap` or `.deleted`
//! file left, serve only valid batches (CRC, and kafka_protocol's decoder),
//! hold every key's latest acknowledged record (or a newer one), hold no
//! record that was never written, and clean on.
//!
//! SIGKILL kills the process, not the machine: the page cache survives, so
//! this tests the file states a crash leaves, not power loss (which the
//! fsyncs before each rename are for).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use sluice_log::batch::{self, BatchHeader};
use sluice_log::{Log, Partition};

#[path = "../src/bin/log_clean_crash_writer.rs"]
#[allow(dead_code)]
mod writer;

fn kills() -> u64 {
    std::env::var("SLUICE_CLEAN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// A record read back: (offset, key, value).
type Got = (i64, Vec<u8>, Option<Vec<u8>>);

/// Every record, read the way a consumer does, each batch validated.
fn read_all(p: &Partition) -> Vec<Got> {
    let mut out: Vec<Got> = Vec::new();
    let mut offset = p.log_start();
    while offset < p.log_end() {
        let s = p
            .read(offset, 256 * 1024)
            .expect("read")
            .slice
            .expect("slice");
        let mut bytes = vec![0u8; s.len as usize];
        s.segment
            .file()
            .read_exact_at(&mut bytes, s.position)
            .expect("pread");
        let mut pos = 0;
        let mut progressed = false;
        while pos + batch::HEADER_LEN <= bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            let len = h.total_len().expect("length");
            if pos + len > bytes.len() {
                break;
            }
            let b = &bytes[pos..pos + len];
            batch::validate_stored(b)
                .unwrap_or_else(|e| panic!("invalid batch at {}: {e}", h.base_offset));
            if h.last_offset() >= offset {
                if h.record_count > 0 {
                    let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b))
                        .expect("kafka_protocol decodes every batch");
                    for r in set.records {
                        assert!(out.last().is_none_or(|l| l.0 < r.offset), "offsets go back");
                        out.push((
                            r.offset,
                            r.key.expect("every record has a key").to_vec(),
                            r.value.map(|v| v.to_vec()),
                        ));
                    }
                }
                offset = h.last_offset() + 1;
                progressed = true;
            }
            pos += len;
        }
        assert!(progressed, "no progress reading at {offset}");
    }
    out
}

/// The cleaner's files in a partition directory.
fn cleaner_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the log against what was acknowledged: `acked` maps offset →
/// (run, n, i) of every acknowledged record.
fn verify(p: &Partition, acked: &HashMap<i64, (u64, u64, u64)>, what: &str) {
    let got = read_all(p);
    // Every record holds what some batch of the writer wrote (the value
    // names its run, batch and index, which give its key).
    for (offset, key, value) in &got {
        if let Some(&(r, n, i)) = acked.get(offset) {
            let (k, v) = writer::crash_record(r, n, i);
            assert_eq!(
                (&k, &v),
                (key, value),
                "{what}: acknowledged record at {offset} changed"
            );
        } else if let Some(v) = value {
            let text = String::from_utf8_lossy(v);
            let f: Vec<u64> = text
                .split(' ')
                .take(3)
                .map(|s| s[1..].parse().expect("r/n/i"))
                .collect();
            let (k, want) = writer::crash_record(f[0], f[1], f[2]);
            assert_eq!(&k, key, "{what}: a value under the wrong key at {offset}");
            assert_eq!(want.as_ref(), Some(v), "{what}: garbage at {offset}");
        }
    }
    // Every key's latest acknowledged record is there, or a newer one.
    let mut latest_acked: HashMap<Vec<u8>, i64> = HashMap::new();
    for (&offset, &(r, n, i)) in acked {
        let (k, _) = writer::crash_record(r, n, i);
        let e = latest_acked.entry(k).or_insert(offset);
        *e = (*e).max(offset);
    }
    let mut latest_in_log: HashMap<&[u8], i64> = HashMap::new();
    for (offset, key, _) in &got {
        latest_in_log.insert(key, *offset);
    }
    for (key, offset) in &latest_acked {
        let have = latest_in_log.get(key.as_slice()).copied();
        assert!(
            have.is_some_and(|h| h >= *offset),
            "{what}: {}'s latest acknowledged record at {offset} is gone (log has {have:?})",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn a_cleaner_killed_anywhere_leaves_a_consistent_log() {
    let dir = tempfile::tempdir().expect("dir");
    let pdir = dir.path().join("cc-0");
    let mut acked: HashMap<i64, (u64, u64, u64)> = HashMap::new();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut interrupted, mut in_swap, mut passes) = (0, 0, 0);
    let total = kills();
    for run in 0..total {
        let mut child = Command::new(env!("CARGO_BIN_EXE_log_clean_crash_writer"))
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start writer");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(60 + rng % 400));
        child.kill().expect("SIGKILL");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read acks");
        child.wait().expect("reap");
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "ACK" => {
                    let base: i64 = f[1].parse().expect("offset");
                    let (r, n): (u64, u64) = (f[2].parse().expect("run"), f[3].parse().expect("n"));
                    for i in 0..writer::RECORDS {
                        acked.insert(base + i as i64, (r, n, i));
                    }
                }
                "PASS" => passes += 1,
                _ => panic!("unexpected writer output {line:?}"),
            }
        }
        let left = cleaner_leftovers(&pdir);
        if !left.is_empty() {
            interrupted += 1;
        }
        if left
            .iter()
            .any(|n| n.ends_with(".swap") || n.ends_with(".deleted"))
        {
            in_swap += 1;
        }
        let log = Log::open(dir.path(), writer::crash_config()).expect("reopen after kill");
        let p = log.partition("cc", 0).expect("partition");
        let after = cleaner_leftovers(&pdir);
        assert!(
            after.is_empty(),
            "run {run}: left after open: {after:?} (before: {left:?})"
        );
        verify(&p, &acked, &format!("run {run} after the kill ({left:?})"));
        // It cleans on from whatever the crash left.
        p.clean(&writer::crash_cleaner_unthrottled(), sluice_log::now_ms())
            .expect("clean after recovery");
        verify(&p, &acked, &format!("run {run} cleaned after recovery"));
        log.close().expect("close");
    }
    eprintln!(
        "{total} kills: {interrupted} left cleaner files behind ({in_swap} of them \
         .swap or .deleted: inside a swap), {passes} passes completed"
    );
    assert!(passes > 0, "the writer completed passes");
    assert!(interrupted > 0, "some kills interrupted a pass");
}
