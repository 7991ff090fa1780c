//! The cleaner's unit tests: what a pass keeps, the lag rules, tombstone
//! horizons, a full offset map, producer state, and recovery from a crash
//! at every step of a swap.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::*;
use crate::batch::{self, BatchHeader};
use crate::{AppendPath, CleanupPolicy, FlushPolicy, LogConfig, Partition};

/// The clock tests run by (2020-09-13): record timestamps near it.
const T0: i64 = 1_600_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 128,
        flush: FlushPolicy::Os,
        append_path: AppendPath::Pwrite,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        delete_retention: Duration::from_millis(1000),
        min_cleanable_dirty_ratio: 0.5,
        ..LogConfig::default()
    }
}

fn big_map() -> CleanerConfig {
    CleanerConfig {
        dedupe_buffer_bytes: 1 << 20,
        ..CleanerConfig::default()
    }
}

/// A record as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// Every batch of every segment, validated, with its records decoded by
/// kafka_protocol's own decoder (an independent parser).
fn scan(p: &Partition) -> (Vec<BatchHeader>, Vec<Rec>) {
    let mut headers = Vec::new();
    let mut recs = Vec::new();
    for seg in p.segments().iter() {
        let mut bytes = vec![0u8; seg.size() as usize];
        std::os::unix::fs::FileExt::read_exact_at(seg.file(), &mut bytes, 0).expect("read");
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            let len = h.total_len().expect("len");
            let b = &bytes[pos..pos + len];
            batch::validate_stored(b).unwrap_or_else(|e| panic!("bad batch at {pos}: {e}"));
            if h.record_count > 0 {
                let mut buf = Bytes::copy_from_slice(b);
                let set = RecordBatchDecoder::decode(&mut buf).expect("kafka_protocol decodes it");
                for r in set.records {
                    recs.push(Rec {
                        offset: r.offset,
                        key: r.key.map(|k| k.to_vec()),
                        value: r.value.map(|v| v.to_vec()),
                        timestamp: r.timestamp,
                    });
                }
            }
            headers.push(h);
            pos += len;
        }
    }
    (headers, recs)
}

fn keyed(key: &str, value: Option<&str>, ts: i64, codec: u8) -> Vec<u8> {
    build_batch(
        ts,
        &[RecordSpec {
            key: Some(key.as_bytes()),
            value: value.map(str::as_bytes),
            timestamp_delta: 0,
        }],
        codec,
    )
}

fn open(dir: &Path, config: LogConfig) -> Partition {
    Partition::open(&dir.join("t-0"), config, false).expect("open")
}

/// The latest record of every key, from a record list.
fn latest(recs: &[Rec]) -> BTreeMap<Vec<u8>, Rec> {
    let mut m = BTreeMap::new();
    for r in recs {
        if let Some(k) = &r.key {
            m.insert(k.clone(), r.clone());
        }
    }
    m
}

/// True when below `end` each key has one record: its latest below `end`.
fn compacted_below(recs: &[Rec], before: &[Rec], end: i64) -> bool {
    let below: Vec<Rec> = before.iter().filter(|r| r.offset < end).cloned().collect();
    let want: Vec<i64> = latest(&below).values().map(|r| r.offset).collect();
    let mut got: Vec<i64> = recs
        .iter()
        .filter(|r| r.offset < end)
        .map(|r| r.offset)
        .collect();
    got.sort_unstable();
    let mut want = want;
    want.sort_unstable();
    got == want
}

fn segment_count(p: &Partition) -> usize {
    p.segments().len()
}

/// Appends `rounds` versions of keys k0..k{keys}, 40-byte values.
fn fill(p: &Partition, keys: usize, rounds: usize, codec: u8) -> Vec<Rec> {
    for round in 0..rounds {
        for k in 0..keys {
            let v = format!("{k}-{round}-{}", "x".repeat(30));
            let b = keyed(&format!("k{k}"), Some(&v), T0 + round as i64, codec);
            p.append(&b, 0).expect("append");
        }
    }
    scan(p).1
}

#[test]
fn a_pass_keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let before = fill(&p, 5, 20, records::NONE);
    assert!(segment_count(&p) > 4);
    let end = p.log_end();
    let active = p.segments().last().expect("active").base_offset();
    let stats = p.clean(&big_map(), T0).expect("clean").expect("a pass");
    assert_eq!(stats.cleaned_to, active, "dirty up to the active segment");
    assert!(!stats.map_full);
    assert_eq!(stats.map_entries, 5);
    assert!(stats.records_removed > 50, "{stats:?}");
    assert!(stats.bytes_written > 0 && stats.bytes_read > stats.bytes_written);
    assert_eq!(p.log_end(), end, "offsets are never rewritten");
    let (_, after) = scan(&p);
    // Every key's latest value is where it was.
    assert_eq!(latest(&after), latest(&before));
    // Below the active segment only the latest value of each key there is
    // left (a newer one in the active segment is not in the map: the older
    // stays, as in Kafka); the active segment is untouched.
    for r in &after {
        let was = before
            .iter()
            .find(|b| b.offset == r.offset)
            .expect("no new records");
        assert_eq!(r, was);
    }
    assert!(compacted_below(&after, &before, active));
    assert_eq!(
        after.iter().filter(|r| r.offset >= active).count(),
        before.iter().filter(|r| r.offset >= active).count()
    );
    // Reads from every offset land on the first record at or after it.
    for off in 0..end {
        let r = p.read(off, 1).expect("read");
        let s = r
            .slice
            .expect("a batch at or after every offset below the end");
        assert!(s.first_offset <= off.max(s.first_offset));
        let h = s
            .segment
            .header_at(s.position, s.segment.size())
            .expect("io")
            .expect("h");
        assert!(h.last_offset() >= off);
    }
    let cp = p.cleaner_status().checkpoint.expect("checkpoint");
    assert_eq!(cp.first_dirty, active);
    // A second pass over a clean log finds nothing dirty.
    assert!(p.clean(&big_map(), T0).expect("clean").is_none());
    // And survives a restart, clean or not.
    drop(p);
    let p = open(dir.path(), config());
    assert_eq!(scan(&p).1, after);
    assert_eq!(p.log_end(), end);
    p.close().expect("close");
    drop(p);
    let p = Partition::open(&dir.path().join("t-0"), config(), true).expect("reopen");
    assert_eq!(scan(&p).1, after);
}

#[test]
fn each_codec_is_recompressed_with_its_own_and_headers_are_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(
        dir.path(),
        LogConfig {
            segment_bytes: 4096,
            ..config()
        },
    );
    let codecs = [
        records::NONE,
        records::GZIP,
        records::SNAPPY,
        records::LZ4,
        records::ZSTD,
    ];
    for round in 0..4 {
        for (i, &codec) in codecs.iter().enumerate() {
            // Three records a batch: a key of its own per codec, one shared.
            let own = format!("own{i}");
            let v = format!("v{round}{}", "z".repeat(50));
            let specs = [
                RecordSpec {
                    key: Some(own.as_bytes()),
                    value: Some(v.as_bytes()),
                    timestamp_delta: 0,
                },
                RecordSpec {
                    key: Some(b"shared"),
                    value: Some(v.as_bytes()),
                    timestamp_delta: 1,
                },
                RecordSpec {
                    key: Some(b"only-once"),
                    value: None,
                    timestamp_delta: 2,
                }
                .with_key_for(round, i),
            ];
            p.append(&build_batch(T0, &specs, codec), 0)
                .expect("append");
        }
    }
    // Roll so everything is sealed.
    while segment_count(&p) < 2
        || p.segments().last().expect("s").size() > 0 && p.segments().len() < 3
    {
        p.append(&keyed("filler", Some(&"f".repeat(500)), T0, 0), 0)
            .expect("filler");
    }
    let (hdr_before, before) = scan(&p);
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    let (hdr_after, after) = scan(&p);
    assert_eq!(latest(&after), latest(&before));
    for h in &hdr_after {
        let was = hdr_before
            .iter()
            .find(|b| b.base_offset == h.base_offset)
            .expect("every batch kept is an old batch");
        assert_eq!(h.last_offset_delta, was.last_offset_delta);
        assert_eq!(h.producer_id, was.producer_id);
        if h.record_count > 0 {
            assert_eq!(h.compression(), was.compression(), "its own codec");
        }
    }
}

trait KeyFor {
    fn with_key_for(self, round: usize, i: usize) -> Self;
}

impl KeyFor for RecordSpec<'static> {
    /// A distinct tombstone key per batch (leaked: a test's few bytes).
    fn with_key_for(self, round: usize, i: usize) -> Self {
        let k: &'static str = Box::leak(format!("gone-{round}-{i}").into_boxed_str());
        RecordSpec {
            key: Some(k.as_bytes()),
            ..self
        }
    }
}

/// Appends filler until the segment that holds `offset` is sealed.
fn seal_past(p: &Partition, offset: i64) {
    while p.segments().last().expect("active").base_offset() <= offset {
        p.append(&keyed("filler", Some(&"f".repeat(200)), T0, 0), 0)
            .expect("filler");
    }
}

#[test]
fn tombstones_stay_for_delete_retention_after_their_first_cleaning() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    p.append(&keyed("a", Some("1"), T0, 0), 0).expect("a");
    p.append(&keyed("b", Some("1"), T0, 0), 0).expect("b");
    let tomb = p
        .append(&keyed("a", None, T0 + 5, 0), 0)
        .expect("tombstone")
        .base_offset;
    seal_past(&p, tomb);
    // First cleaning at T0 + 100: a's value goes, its tombstone stays with a
    // horizon of T0 + 100 + 1000 in its batch.
    let s = p.clean(&big_map(), T0 + 100).expect("clean").expect("pass");
    assert_eq!(s.tombstone_horizon, T0 + 1100);
    let (hdrs, recs) = scan(&p);
    let a: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"a"))
        .collect();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].offset, a[0].value.as_ref(), a[0].timestamp),
        (tomb, None, T0 + 5)
    );
    let h = hdrs.iter().find(|h| h.base_offset == tomb).expect("batch");
    assert_ne!(h.attributes & DELETE_HORIZON_BIT, 0);
    assert_eq!(h.base_timestamp, T0 + 1100);
    assert_eq!(h.max_timestamp, T0 + 5, "the record keeps its timestamp");
    let cp = p.cleaner_status().checkpoint.expect("cp");
    assert_eq!(cp.tombstone_horizon, T0 + 1100);
    // Nothing dirty: before the horizon, not due; the tombstone stays.
    assert!(!p.cleanable(T0 + 1099).due);
    p.clean(&big_map(), T0 + 1099).expect("clean");
    assert!(scan(&p).1.iter().any(|r| r.offset == tomb));
    // At the horizon the partition is due by itself, and the pass drops it.
    let c = p.cleanable(T0 + 1100);
    assert!(c.due && c.tombstones_due && c.dirty_bytes == 0, "{c:?}");
    let s = p
        .clean(&big_map(), T0 + 1100)
        .expect("clean")
        .expect("pass");
    assert_eq!(s.tombstones_removed, 1);
    assert_eq!(s.tombstone_horizon, -1);
    let recs = scan(&p).1;
    assert!(
        recs.iter().all(|r| r.key.as_deref() != Some(b"a")),
        "a is gone"
    );
    assert!(recs.iter().any(|r| r.key.as_deref() == Some(b"b")));
    assert!(!p.cleanable(T0 + 5000).tombstones_due);
}

#[test]
fn min_compaction_lag_holds_young_segments_back_and_max_lag_makes_a_partition_due() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    // Old records, then young ones, each in segments of their own.
    for i in 0..30 {
        p.append(
            &keyed("k", Some(&format!("old{i}{}", "o".repeat(100))), T0, 0),
            0,
        )
        .expect("old");
    }
    let young_from = p.log_end();
    for i in 0..30 {
        p.append(
            &keyed(
                "k",
                Some(&format!("new{i}{}", "n".repeat(100))),
                T0 + 50_000,
                0,
            ),
            0,
        )
        .expect("young");
    }
    p.append(&keyed("k", Some("last"), T0 + 50_000, 0), 0)
        .expect("young");
    let first_young_segment = p
        .segments()
        .iter()
        .find(|s| s.next_offset() > young_from)
        .expect("segment")
        .base_offset();
    p.set_config(LogConfig {
        min_compaction_lag: Duration::from_secs(10),
        ..config()
    });
    // At T0 + 55 s the young records are 5 s old: their segments wait.
    let c = p.cleanable(T0 + 55_000);
    assert_eq!(c.first_uncleanable, first_young_segment);
    let s = p
        .clean(&big_map(), T0 + 55_000)
        .expect("clean")
        .expect("pass");
    assert_eq!(s.cleaned_to, first_young_segment);
    let recs = scan(&p).1;
    assert_eq!(
        recs.iter()
            .filter(|r| r.offset < first_young_segment)
            .count(),
        1,
        "the old section keeps one record for k"
    );
    assert!(
        recs.iter().filter(|r| r.offset >= young_from).count() >= 30,
        "young untouched"
    );
    // Later, the lag has passed.
    assert_eq!(
        p.cleanable(T0 + 61_000).first_uncleanable,
        p.segments().last().expect("a").base_offset()
    );

    // max.compaction.lag.ms: below the dirty ratio, not due; past the lag, due.
    let dir = tempfile::tempdir().expect("dir");
    let p = open(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.99,
            ..config()
        },
    );
    for i in 0..40 {
        p.append(&keyed(&format!("u{i}"), Some(&"v".repeat(100)), T0, 0), 0)
            .expect("unique");
    }
    p.clean(&big_map(), T0).expect("first clean").expect("pass");
    for i in 0..12 {
        p.append(
            &keyed(&format!("w{i}"), Some(&"v".repeat(100)), T0 + 1000, 0),
            0,
        )
        .expect("more");
    }
    let c = p.cleanable(T0 + 2000);
    assert!(c.dirty_bytes > 0 && c.dirty_ratio < 0.99 && !c.due, "{c:?}");
    p.set_config(LogConfig {
        min_cleanable_dirty_ratio: 0.99,
        max_compaction_lag: Some(Duration::from_secs(60)),
        ..config()
    });
    assert!(!p.cleanable(T0 + 30_000).due, "within the max lag");
    let c = p.cleanable(T0 + 62_000);
    assert!(c.due && c.past_max_lag, "{c:?}");
}

#[test]
fn a_full_offset_map_cleans_up_to_where_it_filled_and_the_next_pass_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let before = fill(&p, 20, 3, records::NONE);
    let active = p.segments().last().expect("a").base_offset();
    // 7 slots, 6 keys a pass.
    let small = CleanerConfig {
        dedupe_buffer_bytes: 10 * BYTES_PER_ENTRY,
        ..CleanerConfig::default()
    };
    let first = p.clean(&small, T0).expect("clean").expect("pass");
    assert!(first.map_full, "{first:?}");
    assert_eq!(first.map_entries, 6);
    assert!(first.cleaned_to > 0 && first.cleaned_to < active);
    assert_eq!(
        p.cleaner_status().checkpoint.map(|c| c.first_dirty),
        Some(first.cleaned_to)
    );
    // Records past the map were kept, superseded or not.
    let recs = scan(&p).1;
    assert_eq!(
        recs.iter().filter(|r| r.offset >= first.cleaned_to).count(),
        before
            .iter()
            .filter(|r| r.offset >= first.cleaned_to)
            .count()
    );
    let mut passes = 1;
    let mut from = first.cleaned_to;
    while let Some(s) = p.clean(&small, T0).expect("clean") {
        assert_eq!(s.first_dirty, from);
        assert!(s.cleaned_to > from, "each pass makes progress");
        from = s.cleaned_to;
        passes += 1;
        assert!(passes < 100);
    }
    assert_eq!(from, active);
    // Compacted as a big map would: twenty keys, their latest values.
    let recs = scan(&p).1;
    assert_eq!(latest(&recs), latest(&before));
    assert!(compacted_below(&recs, &before, active));
}

#[test]
fn an_idempotent_producers_last_batch_survives_emptied_and_its_state_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let mut last = 0;
    for seq in 0..6 {
        let mut b = keyed("k", Some(&format!("p{seq}")), T0, 0);
        batch::set_producer(&mut b, 77, 3, seq);
        last = p.append(&b, 0).expect("idempotent").base_offset;
    }
    // Others overwrite k, so every record of producer 77 is superseded.
    for i in 0..30 {
        p.append(
            &keyed("k", Some(&format!("later{i}{}", "l".repeat(80))), T0, 0),
            0,
        )
        .expect("later");
    }
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    let (hdrs, recs) = scan(&p);
    let of_77: Vec<&BatchHeader> = hdrs.iter().filter(|h| h.producer_id == 77).collect();
    assert_eq!(of_77.len(), 1, "only its last batch, emptied");
    assert_eq!(
        (
            of_77[0].base_offset,
            of_77[0].record_count,
            of_77[0].base_sequence
        ),
        (last, 0, 5)
    );
    assert!(recs.iter().all(|r| r.offset != last));
    // After an unclean restart without a snapshot, the state is rebuilt from
    // the log: the retried last batch is a duplicate, the next is accepted.
    drop(p);
    let _ = std::fs::remove_file(dir.path().join("t-0").join("producer.snapshot"));
    let p = open(dir.path(), config());
    let mut retry = keyed("k", Some("p5"), T0, 0);
    batch::set_producer(&mut retry, 77, 3, 5);
    let info = p.append(&retry, 0).expect("duplicate");
    assert!(info.duplicate && info.base_offset == last);
    let mut next = keyed("k", Some("p6"), T0, 0);
    batch::set_producer(&mut next, 77, 3, 6);
    assert!(!p.append(&next, 0).expect("next in sequence").duplicate);
    let mut gap = keyed("k", Some("p9"), T0, 0);
    batch::set_producer(&mut gap, 77, 3, 9);
    assert!(p.append(&gap, 0).is_err(), "a gap is still refused");
}

#[test]
fn keyless_records_are_refused_on_a_compacted_topic_only() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let keyless = batch::build_batch(T0, &[b"v"]);
    let err = p.append(&keyless, 0).expect_err("keyless");
    assert!(
        matches!(
            err,
            crate::AppendError::InvalidBatch(batch::BatchError::MissingKey { index: 0 })
        ),
        "{err}"
    );
    let zstd_keyless = build_batch(
        T0,
        &[
            RecordSpec {
                key: Some(b"a"),
                value: Some(b"1"),
                timestamp_delta: 0,
            },
            RecordSpec {
                key: None,
                value: Some(b"2"),
                timestamp_delta: 0,
            },
        ],
        records::ZSTD,
    );
    assert!(matches!(
        p.append(&zstd_keyless, 0),
        Err(crate::AppendError::InvalidBatch(
            batch::BatchError::MissingKey { index: 1 }
        ))
    ));
    assert_eq!(p.log_end(), 0, "nothing appended");
    p.set_config(LogConfig {
        cleanup_policy: CleanupPolicy::DELETE,
        ..config()
    });
    p.append(&keyless, 0)
        .expect("a delete topic takes keyless records");
}

#[test]
fn leftovers_of_an_interrupted_pass_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    fill(&p, 3, 10, records::NONE);
    let base = p.segments()[0].base_offset();
    let pdir = dir.path().join("t-0");
    drop(p);
    for (name, _) in [
        (segment_file(&pdir, base, "log", files::CLEANED), ()),
        (segment_file(&pdir, base, "index", files::SWAP), ()),
        (segment_file(&pdir, 999_999, "log", files::DELETED), ()),
        (pdir.join(format!("{}.7.0.tmp", files::CHECKPOINT)), ()),
    ] {
        std::fs::write(name, b"junk").expect("write");
    }
    let p = open(dir.path(), config());
    let names: Vec<String> = std::fs::read_dir(&pdir)
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".cleaned")
            && !n.ends_with(".swap")
            && !n.ends_with(".deleted")
            && !n.starts_with("cleaner-offset-checkpoint.")),
        "{names:?}"
    );
    assert!(p.log_end() > 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        // A seal thread's temporary files come and go: skip them.
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            continue;
        }
        match std::fs::copy(e.path(), to.join(e.file_name())) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => panic!("copy: {err}"),
            _ => {}
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_swap_leaves_the_old_or_the_new_segments() {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("src");
    let p = open(&src, config());
    let before = fill(&p, 4, 12, records::NONE);
    // Clean with a segment size that takes every sealed segment into one group.
    let sealed: Vec<i64> = p.segments()[..segment_count(&p) - 1]
        .iter()
        .map(|s| s.base_offset())
        .collect();
    assert!(sealed.len() >= 3);
    p.set_config(LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    });
    // The cleaned result, from a copy that finishes its pass.
    copy_dir(&src.join("t-0"), &dir.path().join("done").join("t-0"));
    let done =
        Partition::open(&dir.path().join("done").join("t-0"), config(), false).expect("open");
    done.set_config(LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    });
    done.clean(&big_map(), T0).expect("clean").expect("pass");
    let after = scan(&done).1;
    assert_ne!(after, before);
    drop(done);
    // The pass stopped before its swap leaves its .cleaned files.
    STOP_BEFORE_SWAP.with(|s| s.set(true));
    let err = p.clean(&big_map(), T0).expect_err("stopped");
    STOP_BEFORE_SWAP.with(|s| s.set(false));
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    let pdir = src.join("t-0");
    assert!(segment_file(&pdir, sealed[0], "log", files::CLEANED).exists());
    drop(p);
    let mut ops = swap_ops(&pdir, sealed[0], &sealed);
    ops.extend(removal_ops(&pdir, &sealed));
    // Crash after each prefix of the file operations.
    for k in 0..=ops.len() {
        let case = dir.path().join(format!("case{k}"));
        copy_dir(&pdir, &case.join("t-0"));
        for op in &ops[..k] {
            let op = match op {
                FileOp::Rename(a, b) => FileOp::Rename(
                    case.join("t-0").join(a.file_name().expect("name")),
                    case.join("t-0").join(b.file_name().expect("name")),
                ),
                FileOp::Remove(a) => {
                    FileOp::Remove(case.join("t-0").join(a.file_name().expect("name")))
                }
            };
            op.run().unwrap_or_else(|e| panic!("step {k}: {op:?}: {e}"));
        }
        let p = Partition::open(&case.join("t-0"), config(), false).expect("open after the crash");
        let got = scan(&p).1;
        // The log's rename to .swap (op 3) is the commit point.
        let want = if k >= 3 { &after } else { &before };
        assert_eq!(&got, want, "crash after {k} of {} steps", ops.len());
        assert_eq!(p.log_end(), before.last().expect("r").offset + 1);
        let names: Vec<String> = std::fs::read_dir(case.join("t-0"))
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with(".cleaned")
                && !n.ends_with(".swap")
                && !n.ends_with(".deleted")),
            "step {k}: leftovers {names:?}"
        );
        // And it cleans on from there.
        p.clean(&big_map(), T0).expect("clean after recovery");
        assert_eq!(latest(&scan(&p).1), latest(&before));
    }
}

#[test]
fn a_reader_holding_a_replaced_segment_keeps_reading_it() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    fill(&p, 2, 20, records::NONE);
    let held = p.read(0, 1 << 20).expect("read").slice.expect("slice");
    let mut before = vec![0u8; held.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(held.segment.file(), &mut before, held.position)
        .expect("pread");
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    assert!(held.segment.is_deleted());
    let mut again = vec![0u8; held.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(held.segment.file(), &mut again, held.position)
        .expect("pread after the swap");
    assert_eq!(before, again);
    let now = p.read(0, 1 << 20).expect("read").slice.expect("slice");
    assert!(!Arc::ptr_eq(&now.segment, &held.segment));
}

#[test]
fn the_chooser_cleans_the_dirtiest_due_partition_first() {
    let dir = tempfile::tempdir().expect("dir");
    let log = crate::Log::open(dir.path(), config()).expect("open");
    log.create_topic("a", 1).expect("a");
    log.create_topic("b", 1).expect("b");
    log.create_topic_with(
        "plain",
        1,
        &[("cleanup.policy".to_string(), "delete".to_string())].into(),
    )
    .expect("plain");
    let (a, b) = (
        log.partition("a", 0).expect("a"),
        log.partition("b", 0).expect("b"),
    );
    // a: 2 keys rewritten many times (very dirty); b: mostly distinct keys.
    fill(&a, 2, 40, records::NONE);
    for i in 0..40 {
        b.append(&keyed(&format!("b{i}"), Some(&"v".repeat(40)), T0, 0), 0)
            .expect("b");
    }
    b.clean(&big_map(), T0).expect("clean b").expect("pass");
    for i in 0..8 {
        b.append(&keyed(&format!("c{i}"), Some(&"v".repeat(40)), T0, 0), 0)
            .expect("b");
    }
    let (ra, rb) = (a.cleanable(T0).dirty_ratio, b.cleanable(T0).dirty_ratio);
    assert!(ra > rb, "{ra} {rb}");
    let first = log.clean_once_at(&big_map(), T0).expect("a pass");
    assert_eq!(first.partition, "a-0");
    assert!(!a.cleanable(T0).due);
    // b is below its ratio: not due, nothing more to do.
    assert!(!b.cleanable(T0).due);
    assert!(log.clean_once_at(&big_map(), T0).is_none());
    let totals = log.cleaner_totals();
    assert_eq!(totals.passes, 1);
    assert_eq!(totals.records_removed, first.records_removed);
    assert_eq!(
        a.cleaner_status().last.expect("last").cleaned_to,
        first.cleaned_to
    );
}

#[test]
fn close_stops_a_pass_and_the_log_stays_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let p = Arc::new(open(dir.path(), config()));
    let before = fill(&p, 3, 60, records::GZIP);
    // 20 KB/s: the pass takes seconds.
    let slow = CleanerConfig {
        io_max_bytes_per_second: Some(20_000),
        io_buffer_bytes: 512,
        ..big_map()
    };
    let cleaning = {
        let p = p.clone();
        std::thread::spawn(move || p.clean(&slow, T0))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    p.close().expect("close");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close waited {:?}",
        started.elapsed()
    );
    let err = cleaning.join().expect("join").expect_err("aborted");
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    drop(p);
    let p = Partition::open(&dir.path().join("t-0"), config(), true).expect("reopen");
    assert_eq!(latest(&scan(&p).1), latest(&before));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("t-0"))
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".cleaned")), "{names:?}");
}

#[test]
fn log_append_time_batches_keep_their_max_timestamp() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(
        dir.path(),
        LogConfig {
            timestamp_type: crate::TimestampType::LogAppendTime,
            ..config()
        },
    );
    let specs = [
        RecordSpec {
            key: Some(b"x"),
            value: Some(b"1"),
            timestamp_delta: 0,
        },
        RecordSpec {
            key: Some(b"y"),
            value: Some(b"1"),
            timestamp_delta: 0,
        },
    ];
    p.append(&build_batch(T0, &specs, 0), 0).expect("append");
    let stamped = scan(&p).0[0].max_timestamp;
    for i in 0..20 {
        p.append(
            &keyed("x", Some(&format!("{i}{}", "q".repeat(60))), T0, 0),
            0,
        )
        .expect("x");
    }
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    let h = scan(&p).0[0];
    assert_eq!(
        (h.base_offset, h.record_count, h.max_timestamp),
        (0, 1, stamped)
    );
}

#[test]
fn background_threads_clean_due_partitions_and_stop_when_dropped() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Arc::new(crate::Log::open(dir.path(), config()).expect("open"));
    log.create_topic("a", 1).expect("a");
    let a = log.partition("a", 0).expect("a");
    let before = fill(&a, 2, 40, records::LZ4);
    let cleaner = log
        .start_cleaner(CleanerConfig {
            threads: 2,
            backoff: Duration::from_millis(20),
            ..big_map()
        })
        .expect("start");
    let start = std::time::Instant::now();
    while a.cleaner_status().passes == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no pass ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopping = std::time::Instant::now();
    drop(cleaner);
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "threads stop promptly"
    );
    assert!(log.cleaner_totals().passes >= 1);
    assert!(!a.cleanable(crate::now_ms()).due);
    assert_eq!(latest(&scan(&a).1), latest(&before));
}

/// Retention (here a DeleteRecords it carries out) taking the oldest
/// segments while a pass runs must not let a later group's tombstone start
/// its horizon: the pass stops, and a deleted key never comes back.
#[test]
fn retention_under_a_pass_stops_it_and_a_deleted_key_stays_deleted() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = LogConfig {
        segment_age: Some(Duration::from_millis(1)),
        ..config()
    };
    let p = open(dir.path(), cfg);
    let mut n = 0;
    let mut put = |k: &str, v: Option<&str>| {
        // One batch per segment: each append rolls.
        std::thread::sleep(Duration::from_millis(3));
        p.append(&keyed(k, v, T0 + n, 0), 0).expect("append");
        n += 1;
    };
    put("f0", Some("x"));
    put("k", Some("v"));
    for i in 2..20 {
        put(&format!("f{i}"), Some("x"));
    }
    put("k", None);
    for i in 21..26 {
        put(&format!("f{i}"), Some("x"));
    }
    let fired = std::sync::atomic::AtomicBool::new(false);
    let retention_mid_pass = || {
        if !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            p.delete_records_before(1).expect("delete records");
            p.apply_retention().expect("retention");
        }
        false
    };
    let checkpoint_before = p.cleaner_status().checkpoint;
    match p.clean_with(
        &big_map(),
        T0 + 100,
        &Throttle::default(),
        &retention_mid_pass,
    ) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::Interrupted, "{e}"),
        Ok(stats) => panic!("the pass went on after the log changed under it: {stats:?}"),
    }
    assert_eq!(
        p.cleaner_status().checkpoint,
        checkpoint_before,
        "not moved"
    );
    // Later passes, the last one long past every delete horizon.
    for now in [T0 + 5_000, T0 + 10 * 86_400_000, T0 + 20 * 86_400_000] {
        p.clean_with(&big_map(), now, &Throttle::default(), &|| false)
            .expect("pass");
    }
    let (_, records) = scan(&p);
    let k: Vec<_> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"k".as_slice()))
        .collect();
    assert!(
        k.last().is_none_or(|r| r.value.is_none()),
        "deleted key came back: {k:?}"
    );
}

/// A compressed batch whose record claims an offset past its batch is
/// refused on a compacted topic (it would shadow later writes of its key).
#[test]
fn a_record_offset_past_its_batch_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let mut record = vec![0u8]; // attributes
    records::put_varint(&mut record, 0); // timestamp delta
    records::put_varint(&mut record, 1_000_000); // offset delta: a lie
    records::put_varint(&mut record, 1);
    record.extend_from_slice(b"k");
    records::put_varint(&mut record, 4);
    record.extend_from_slice(b"evil");
    records::put_varint(&mut record, 0); // no headers
    let mut body = Vec::new();
    records::put_varint(&mut body, record.len() as i64);
    body.extend_from_slice(&record);
    let h = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: 4, // zstd
        last_offset_delta: 0,
        base_timestamp: T0,
        max_timestamp: T0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: 1,
    };
    let mut bogus = Vec::new();
    records::write_batch(&mut bogus, &h, &body).expect("batch");
    assert!(p.append(&bogus, 0).is_err(), "refused");
    assert_eq!(p.log_end(), 0);
    p.append(&keyed("k", Some("good"), T0, 4), 0)
        .expect("an honest zstd batch");
}

/// A transactional batch of one keyed record.
fn txn(key: &str, value: &str, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = keyed(key, Some(value), T0, 0);
    batch::set_transactional(&mut b, pid, epoch, seq);
    b
}

/// More dirty records, sealed, so a pass has something to do.
fn dirty(p: &Partition, n: usize) {
    for i in 0..n {
        p.append(&keyed(&format!("d{i}"), Some("dirty"), T0, 0), 0)
            .expect("dirty");
    }
    let end = p.log_end();
    seal_past(p, end - 1);
}

fn at(hdrs: &[BatchHeader], offset: i64) -> Option<&BatchHeader> {
    hdrs.iter().find(|h| h.base_offset == offset)
}

#[test]
fn aborted_records_go_and_markers_follow_kafkas_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let a0 = p
        .append(&keyed("a", Some("v0"), T0, 0), 0)
        .expect("a")
        .base_offset;
    let aborted = p
        .append(&txn("a", "aborted", 10, 0, 0), 0)
        .expect("t")
        .base_offset;
    let committed = p
        .append(&txn("b", "c1", 20, 0, 0), 0)
        .expect("t")
        .base_offset;
    let abort = p
        .append_control(10, 0, false, 0, 0)
        .expect("abort")
        .base_offset;
    let commit = p
        .append_control(20, 0, true, 0, 0)
        .expect("commit")
        .base_offset;
    let b2 = p
        .append(&keyed("b", Some("v2"), T0, 0), 0)
        .expect("b")
        .base_offset;
    let c = p
        .append(&txn("c", "x", 10, 0, 1), 0)
        .expect("t")
        .base_offset;
    let commit10 = p.append_control(10, 0, true, 0, 0).expect("c").base_offset;
    let d = p
        .append(&txn("d", "y", 20, 0, 1), 0)
        .expect("t")
        .base_offset;
    let commit20 = p.append_control(20, 0, true, 0, 0).expect("c").base_offset;
    seal_past(&p, commit20);
    assert_eq!(p.aborted_transactions(0, p.log_end()), vec![(10, aborted)]);
    let end = p.log_end();

    // Pass 1: the aborted record goes, and does not shadow a's older value;
    // the committed b is superseded by a later b; every marker stays (a
    // batch of its transaction was met in this pass), and so does the
    // abort's index entry.
    let s = p.clean(&big_map(), T0 + 100).expect("clean").expect("pass");
    assert_eq!(s.aborted_records_removed, 1, "{s:?}");
    assert_eq!(s.markers_removed, 0);
    let (hdrs, recs) = scan(&p);
    let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    for kept in [a0, b2, c, d] {
        assert!(offsets.contains(&kept), "{kept} kept");
    }
    assert!(!offsets.contains(&aborted) && !offsets.contains(&committed));
    assert!(at(&hdrs, aborted).is_none() && at(&hdrs, committed).is_none());
    for m in [abort, commit, commit10, commit20] {
        let h = at(&hdrs, m).expect("marker kept");
        assert!(h.is_control() && h.record_count == 1);
        assert_eq!(h.attributes & DELETE_HORIZON_BIT, 0, "no horizon yet");
    }
    assert_eq!(p.aborted_transactions(0, end), vec![(10, aborted)]);
    assert_eq!(p.log_end(), end);

    // Pass 2: nothing of the aborted or of 20's first transaction is left
    // before their markers: they get a delete horizon; the other markers
    // still close transactions with records.
    dirty(&p, 4);
    let s = p.clean(&big_map(), T0 + 200).expect("clean").expect("pass");
    assert_eq!(s.tombstone_horizon, T0 + 1200);
    let hdrs = scan(&p).0;
    for m in [abort, commit] {
        let h = at(&hdrs, m).expect("marker kept");
        assert_ne!(h.attributes & DELETE_HORIZON_BIT, 0, "{m}: horizon");
        assert_eq!(h.base_timestamp, T0 + 1200);
        assert_eq!(h.record_count, 1);
    }
    for m in [commit10, commit20] {
        assert_eq!(
            at(&hdrs, m).expect("kept").attributes & DELETE_HORIZON_BIT,
            0
        );
    }
    assert!(
        p.aborted_transactions(0, end).is_empty(),
        "no record of it is left: no entry"
    );
    // The markers still parse (the rebased record keeps its timestamp).
    let marker_bytes = {
        let r = p.read(abort, 1).expect("read").slice.expect("slice");
        let mut b = vec![0u8; r.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(r.segment.file(), &mut b, r.position)
            .expect("pread");
        let h = BatchHeader::parse(&b).expect("h");
        b.truncate(h.total_len().expect("len"));
        b
    };
    let mh = batch::validate_stored(&marker_bytes).expect("valid");
    assert_eq!(
        batch::parse_marker(&marker_bytes, &mh),
        Ok(Some(batch::TxnMarker {
            commit: false,
            coordinator_epoch: 0
        }))
    );

    // Pass 3, at the horizon (due by itself): those two markers go.
    assert!(p.cleanable(T0 + 1200).due);
    let s = p
        .clean(&big_map(), T0 + 1200)
        .expect("clean")
        .expect("pass");
    assert_eq!(s.markers_removed, 2, "{s:?}");
    let hdrs = scan(&p).0;
    assert!(at(&hdrs, abort).is_none() && at(&hdrs, commit).is_none());
    assert!(at(&hdrs, commit10).is_some() && at(&hdrs, commit20).is_some());

    // The compacted log replays to the same producer state: nothing open.
    drop(p);
    let _ = std::fs::remove_file(dir.path().join("t-0").join("producer.snapshot"));
    let _ = std::fs::remove_file(dir.path().join("t-0").join("recovery-point"));
    let p = open(dir.path(), config());
    assert!(p.open_transactions().is_empty());
    assert_eq!(p.last_stable_offset(), p.log_end());
    let mut next = txn("c", "x3", 10, 0, 2);
    batch::set_transactional(&mut next, 10, 0, 2);
    assert!(
        !p.append(&next, 0)
            .expect("10 goes on in sequence")
            .duplicate
    );
}

#[test]
fn the_cleaner_stops_before_an_open_transaction() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    p.append(&keyed("k", Some("old"), T0, 0), 0).expect("old");
    dirty(&p, 3);
    let open_at = p
        .append(&txn("k", "in-txn", 30, 0, 0), 0)
        .expect("t")
        .base_offset;
    let open_seg = p.segments().last().expect("active").base_offset();
    // Much later, sealed: k overwritten outside the transaction.
    p.append(&keyed("k", Some("new"), T0, 0), 0).expect("new");
    dirty(&p, 20);
    assert_eq!(p.last_stable_offset(), open_at);
    let c = p.cleanable(T0);
    assert_eq!(
        c.first_uncleanable, open_seg,
        "held at the open transaction's segment"
    );
    let s = p.clean(&big_map(), T0).expect("clean").expect("pass");
    assert!(s.cleaned_to <= open_at);
    let recs = scan(&p).1;
    assert!(recs.iter().any(|r| r.offset == open_at), "untouched");
    // Committed: the next pass cleans it like any record.
    p.append_control(30, 0, true, 0, 0).expect("commit");
    dirty(&p, 3);
    assert!(p.cleanable(T0).first_uncleanable > open_at);
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    let recs = scan(&p).1;
    assert!(
        recs.iter().all(|r| r.offset != open_at),
        "superseded by k=new"
    );
    assert_eq!(
        recs.iter()
            .filter(|r| r.key.as_deref() == Some(b"k"))
            .map(|r| r.value.clone())
            .collect::<Vec<_>>(),
        vec![Some(b"new".to_vec())]
    );
}

#[test]
fn a_producers_last_marker_keeps_its_epoch_through_compaction() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), config());
    let data = p
        .append(&txn("e", "x", 40, 0, 0), 0)
        .expect("t")
        .base_offset;
    // The coordinator aborts with a bumped epoch (a timed-out transaction):
    // the producer has no data batch in epoch 1, only this marker.
    let abort = p
        .append_control(40, 1, false, 2, 0)
        .expect("abort")
        .base_offset;
    dirty(&p, 3);
    p.clean(&big_map(), T0).expect("clean").expect("pass");
    dirty(&p, 3);
    p.clean(&big_map(), T0 + 10).expect("clean").expect("pass");
    dirty(&p, 3);
    p.clean(&big_map(), T0 + 5000)
        .expect("clean")
        .expect("pass");
    let hdrs = scan(&p).0;
    assert!(at(&hdrs, data).is_none(), "the aborted batch is gone");
    let h = at(&hdrs, abort).expect("the marker stays");
    assert!(h.is_control() && h.record_count == 0, "emptied: {h:?}");
    assert_eq!((h.producer_id, h.producer_epoch), (40, 1));
    // A replay of the compacted log still fences epoch 0.
    drop(p);
    let _ = std::fs::remove_file(dir.path().join("t-0").join("producer.snapshot"));
    let p = open(dir.path(), config());
    assert!(matches!(
        p.append_control(40, 0, true, 2, 0),
        Err(crate::AppendError::Sequence(
            crate::producer::SequenceError::FencedEpoch { .. }
        ))
    ));
    assert!(p.open_transactions().is_empty());
}

#[test]
fn a_crash_at_any_step_of_a_swap_keeps_the_aborted_transactions() {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("src");
    let p = open(&src, config());
    fill(&p, 3, 4, records::NONE);
    let first = p
        .append(&txn("a", "x", 10, 0, 0), 0)
        .expect("t")
        .base_offset;
    fill(&p, 3, 4, records::NONE);
    p.append(&txn("b", "y", 10, 0, 1), 0).expect("t");
    p.append_control(10, 0, false, 0, 0).expect("abort");
    fill(&p, 3, 8, records::NONE);
    let want = vec![(10, first)];
    assert_eq!(p.aborted_transactions(0, p.log_end()), want);
    let sealed: Vec<i64> = p.segments()[..segment_count(&p) - 1]
        .iter()
        .map(|s| s.base_offset())
        .collect();
    p.set_config(LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    });
    STOP_BEFORE_SWAP.with(|s| s.set(true));
    let err = p.clean(&big_map(), T0).expect_err("stopped");
    STOP_BEFORE_SWAP.with(|s| s.set(false));
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    let pdir = src.join("t-0");
    assert!(segment_file(&pdir, sealed[0], "txnindex", files::CLEANED).exists());
    let end = p.log_end();
    drop(p);
    let mut ops = swap_ops(&pdir, sealed[0], &sealed);
    ops.extend(removal_ops(&pdir, &sealed));
    assert!(
        ops.iter().any(
            |op| matches!(op, FileOp::Rename(a, _) if a.to_string_lossy().ends_with(".txnindex"))
        ),
        "the old index goes to .deleted"
    );
    let commit = ops
        .iter()
        .position(|op| matches!(op, FileOp::Rename(a, _) if a.to_string_lossy().ends_with(".log.cleaned")))
        .expect("the commit point");
    for k in 0..=ops.len() {
        let case = dir.path().join(format!("case{k}"));
        copy_dir(&pdir, &case.join("t-0"));
        for op in &ops[..k] {
            let op = match op {
                FileOp::Rename(a, b) => FileOp::Rename(
                    case.join("t-0").join(a.file_name().expect("name")),
                    case.join("t-0").join(b.file_name().expect("name")),
                ),
                FileOp::Remove(a) => {
                    FileOp::Remove(case.join("t-0").join(a.file_name().expect("name")))
                }
            };
            op.run().unwrap_or_else(|e| panic!("step {k}: {op:?}: {e}"));
        }
        let p = Partition::open(&case.join("t-0"), config(), false).expect("open after the crash");
        assert_eq!(p.log_end(), end, "step {k}");
        assert_eq!(p.aborted_transactions(0, end), want, "step {k}");
        assert!(p.open_transactions().is_empty(), "step {k}");
        // The log's rename to .swap is the commit point.
        let gone = scan(&p).1.iter().all(|r| r.offset != first);
        assert_eq!(gone, k > commit, "step {k}: the aborted record");
        let names: Vec<String> = std::fs::read_dir(case.join("t-0"))
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with(".cleaned")
                && !n.ends_with(".swap")
                && !n.ends_with(".deleted")),
            "step {k}: leftovers {names:?}"
        );
    }
}
