//! The log layer end to end, on both append paths: appends and reads back,
//! rolls, indexes, retention, topics, flush policies, bad input, reopen.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use common::{PATHS, as_stored, batch, read_all, small_config};
use sluice_log::{AppendError, FlushPolicy, Log, LogConfig, Partition, ReadError, TopicError};

#[test]
fn appended_batches_come_back_at_their_offsets_across_segments() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open");
        let mut expected = Vec::new();
        for i in 0..200u64 {
            let records = 1 + (i % 5) as usize;
            let b = batch(i, records, 10 + (i % 300) as usize, 1000 + i as i64);
            let info = p.append(&b, 3).expect("append");
            assert_eq!(info.last_offset - info.base_offset + 1, records as i64);
            expected.push((info.base_offset, as_stored(b, info.base_offset, 3)));
        }
        assert!(p.segments().len() > 3, "{path}: small segments rolled");
        // Segment files carry Kafka's names.
        let first = p.segments()[1].log_path();
        assert_eq!(
            first.file_name().map(|n| n.len()),
            Some(24),
            "{}",
            first.display()
        );
        let got = read_all(&p);
        assert_eq!(got.len(), expected.len(), "{path}");
        for ((h, bytes), (base, want)) in got.iter().zip(&expected) {
            assert_eq!(h.base_offset, *base);
            assert_eq!(bytes, want, "{path}: batch at {base} differs");
        }
        // Every offset, not just batch starts, finds the batch holding it.
        for (base, want) in &expected {
            let h = sluice_log::batch::BatchHeader::parse(want).expect("header");
            for off in *base..=h.last_offset() {
                let r = p.read(off, 1).expect("read");
                let s = r.slice.expect("slice");
                assert_eq!(s.first_offset, *base, "{path}: offset {off}");
                assert_eq!(
                    s.len as usize,
                    want.len(),
                    "first batch whole, even past max_bytes"
                );
            }
        }
        // At the end: empty; past it: out of range.
        assert!(p.read(p.log_end(), 100).expect("end").slice.is_none());
        assert!(matches!(
            p.read(p.log_end() + 1, 100),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
    }
}

#[test]
fn reads_stop_at_max_bytes_after_the_first_batch_and_never_cross_a_segment() {
    let dir = tempfile::tempdir().expect("dir");
    let p = Partition::open(
        &dir.path().join("t-0"),
        small_config(sluice_log::AppendPath::Mmap),
        false,
    )
    .expect("open");
    for i in 0..40 {
        p.append(&batch(i, 2, 200, 0), 0).expect("append");
    }
    let r = p.read(0, 1000).expect("read").slice.expect("slice");
    assert_eq!(r.position, 0);
    assert_eq!(
        r.len, 1000,
        "cut at max_bytes; a partial trailing batch is allowed"
    );
    let seg = &p.segments()[0];
    let whole = p.read(0, u64::MAX).expect("read").slice.expect("slice");
    assert_eq!(whole.len, seg.size(), "one segment at most");
}

#[test]
fn timestamps_find_the_first_batch_at_or_after_them() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open");
        let mut firsts = Vec::new();
        for i in 0..300i64 {
            let info = p
                .append(&batch(i as u64, 1, 64, 10_000 + i * 10), 0)
                .expect("append");
            firsts.push((10_000 + i * 10, info.base_offset));
        }
        for (ts, offset) in &firsts {
            // The found record's timestamp comes back, not the one asked.
            assert_eq!(
                p.offset_for_timestamp(*ts).expect("lookup"),
                Some((*offset, *ts))
            );
            assert_eq!(
                p.offset_for_timestamp(ts - 5).expect("lookup"),
                Some((*offset, *ts))
            );
        }
        assert_eq!(
            p.offset_for_timestamp(0).expect("lookup"),
            Some((0, 10_000))
        );
        assert_eq!(p.batch_with_max_timestamp().expect("max"), {
            let (_, last) = firsts[firsts.len() - 1];
            let slice = p.read(last, 1).expect("read").slice.expect("slice");
            let mut bytes = vec![0u8; slice.len as usize];
            std::os::unix::fs::FileExt::read_exact_at(
                slice.segment.file(),
                &mut bytes,
                slice.position,
            )
            .expect("read batch");
            Some(bytes)
        });
        // Inside a batch, the record with the timestamp is found.
        let b = sluice_log::batch::build_batch_with_deltas(
            1 << 40,
            &[
                (0, b"a".as_slice()),
                (100, b"b".as_slice()),
                (200, b"c".as_slice()),
            ],
        );
        let info = p.append(&b.clone(), 0).expect("append");
        assert_eq!(
            p.offset_for_timestamp((1 << 40) + 50).expect("lookup"),
            Some((info.base_offset + 1, (1 << 40) + 100))
        );
        assert_eq!(p.offset_for_timestamp(1 << 50).expect("lookup"), None);
        // The batch holding the largest timestamp, even with later batches
        // of smaller timestamps after it.
        p.append(&batch(7, 1, 64, 5), 0).expect("append");
        let max = p.batch_with_max_timestamp().expect("max").expect("a batch");
        // Past the offset and leader epoch the append writes in.
        assert_eq!(max[16..], b[16..]);
    }
}

#[test]
fn bad_batches_get_typed_errors_and_leave_the_log_unchanged() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open");
        p.append(&batch(1, 3, 50, 0), 0).expect("good append");
        let (end, size) = (p.log_end(), p.size_bytes());
        let good = batch(2, 2, 40, 0);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut magic = good.clone();
        magic[16] = 1;
        cases.push(("wrong magic", magic));
        let mut lying = good.clone();
        lying[8..12].copy_from_slice(&100_000i32.to_be_bytes());
        cases.push(("lying batchLength", lying));
        let mut short = good.clone();
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        cases.push(("batchLength below a header", short));
        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        cases.push(("bad CRC", crc));
        let mut negative = good.clone();
        negative[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        cases.push(("negative recordCount", negative));
        cases.push(("truncated", good[..good.len() - 3].to_vec()));
        cases.push(("header only", good[..30].to_vec()));
        // A good batch followed by a bad one: nothing of either is written.
        let mut mixed = good.clone();
        let mut bad = good.clone();
        bad[20] ^= 0xff;
        mixed.extend_from_slice(&bad);
        cases.push(("good then bad", mixed));
        for (what, bytes) in cases {
            let err = p.append(&bytes, 0).expect_err(what);
            assert!(matches!(err, AppendError::InvalidBatch(_)), "{what}: {err}");
            assert_eq!(
                (p.log_end(), p.size_bytes()),
                (end, size),
                "{path} {what}: log changed"
            );
        }
        assert!(matches!(p.append(&[], 0), Err(AppendError::Empty)));
        // Still appends and reads fine.
        p.append(&good.clone(), 0).expect("append after bad input");
        assert_eq!(read_all(&p).len(), 2);
    }
}

#[test]
fn a_batch_larger_than_a_segment_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let p = Partition::open(
        &dir.path().join("t-0"),
        small_config(sluice_log::AppendPath::Mmap),
        false,
    )
    .expect("open");
    let err = p.append(&batch(1, 1, 20_000, 0), 0).expect_err("too large");
    assert!(matches!(err, AppendError::TooLarge { .. }), "{err}");
    assert_eq!(p.log_end(), 0);
}

#[test]
fn retention_deletes_oldest_segments_and_held_regions_stay_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let config = LogConfig {
        retention_bytes: Some(40 * 1024),
        ..small_config(sluice_log::AppendPath::Mmap)
    };
    let p = Partition::open(&dir.path().join("t-0"), config, false).expect("open");
    let first = batch(0, 1, 1000, 0);
    p.append(&first.clone(), 0).expect("append");
    let held = p.read(0, 100).expect("read").slice.expect("slice");
    for i in 1..200 {
        p.append(&batch(i, 1, 1000, 0), 0).expect("append");
    }
    let removed = p.apply_retention().expect("retention");
    assert!(removed > 0);
    assert!(
        p.size_bytes() <= 40 * 1024 + 16 * 1024,
        "within one segment of the limit"
    );
    assert!(p.log_start() > 0);
    assert!(matches!(
        p.read(0, 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        p.read(p.log_start(), 100)
            .expect("read")
            .slice
            .map(|s| s.first_offset),
        Some(p.log_start())
    );
    // The first segment's file is gone from the directory...
    assert!(held.segment.is_deleted());
    assert!(!held.segment.log_path().exists());
    // ...but the region taken before retention still reads the same bytes.
    let mut bytes = vec![0u8; first.len()];
    held.segment
        .file()
        .read_exact_at(&mut bytes, 0)
        .expect("read deleted file");
    assert_eq!(bytes, as_stored(first, 0, 0));
    // Retention by age: everything but the active segment is older than 1 ms.
    drop(p);
    let aged = Partition::open(
        &dir.path().join("t-0"),
        LogConfig {
            retention_age: Some(Duration::from_millis(1)),
            ..small_config(sluice_log::AppendPath::Mmap)
        },
        false,
    );
    let aged = aged.expect("reopen");
    std::thread::sleep(Duration::from_millis(5));
    aged.apply_retention().expect("retention by age");
    assert_eq!(aged.segments().len(), 1, "only the active segment is left");
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("dir");
    // An age a loaded machine cannot overrun between two appends (with the
    // other tests' fsyncs alongside, a CI run once took more than 20 ms).
    let config = LogConfig {
        segment_age: Some(Duration::from_millis(1500)),
        ..small_config(sluice_log::AppendPath::Pwrite)
    };
    let p = Partition::open(&dir.path().join("t-0"), config, false).expect("open");
    p.append(&batch(0, 1, 10, 0), 0).expect("append");
    p.append(&batch(1, 1, 10, 0), 0).expect("append");
    assert_eq!(p.segments().len(), 1);
    std::thread::sleep(Duration::from_millis(1600));
    p.append(&batch(2, 1, 10, 0), 0).expect("append");
    assert_eq!(p.segments().len(), 2);
    assert_eq!(p.segments()[1].base_offset(), 2);
}

#[test]
fn flush_policies_say_what_is_durable() {
    let dir = tempfile::tempdir().expect("dir");
    let always = Partition::open(
        &dir.path().join("a-0"),
        LogConfig {
            flush: FlushPolicy::Always,
            ..small_config(sluice_log::AppendPath::Mmap)
        },
        false,
    )
    .expect("open");
    let info = always.append(&batch(0, 2, 10, 0), 0).expect("append");
    assert!(info.durable);
    assert_eq!(always.durable_end(), 2);

    let interval = Partition::open(
        &dir.path().join("i-0"),
        LogConfig {
            flush: FlushPolicy::Interval(Duration::from_millis(10)),
            ..small_config(sluice_log::AppendPath::Pwrite)
        },
        false,
    )
    .expect("open");
    let info = interval.append(&batch(0, 2, 10, 0), 0).expect("append");
    assert!(!info.durable);
    assert_eq!(interval.durable_end(), 0);
    std::thread::sleep(Duration::from_millis(15));
    interval.flush_if_due().expect("flush");
    assert_eq!(interval.durable_end(), 2);
}

#[test]
fn topics_are_created_listed_and_deleted_with_kafka_names() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), small_config(sluice_log::AppendPath::Mmap)).expect("open");
    log.create_topic("orders.v1_x-y", 3).expect("create");
    assert!(matches!(
        log.create_topic("orders.v1_x-y", 1),
        Err(TopicError::Exists(_))
    ));
    for bad in ["", ".", "..", "a/b", "spaces no", &"x".repeat(250)] {
        assert!(
            matches!(log.create_topic(bad, 1), Err(TopicError::InvalidName(..))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        log.create_topic("zero", 0),
        Err(TopicError::InvalidPartitions)
    ));
    assert_eq!(log.topics(), vec![("orders.v1_x-y".to_string(), 3)]);
    for p in 0..3 {
        assert!(dir.path().join(format!("orders.v1_x-y-{p}")).is_dir());
        let part = log.partition("orders.v1_x-y", p).expect("partition");
        part.append(&batch(p.into(), 1, 10, 0), 0).expect("append");
    }
    assert!(log.partition("orders.v1_x-y", 3).is_none());
    log.delete_topic("orders.v1_x-y").expect("delete");
    assert!(log.topics().is_empty());
    assert!(!dir.path().join("orders.v1_x-y-0").exists());
    assert!(matches!(
        log.delete_topic("orders.v1_x-y"),
        Err(TopicError::NotFound(_))
    ));
}

#[test]
fn clean_close_and_reopen_keep_everything_and_skip_recovery() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let mut expected = Vec::new();
        {
            let log = Log::open(dir.path(), small_config(path)).expect("open");
            log.create_topic("t", 2).expect("create");
            for i in 0..100 {
                let p = log.partition("t", (i % 2) as u32).expect("partition");
                let b = batch(i, 2, 100, i as i64);
                let info = p.append(&b, 1).expect("append");
                expected.push(((i % 2) as u32, as_stored(b, info.base_offset, 1)));
            }
            log.close().expect("close");
        }
        // No pre-allocated zero tail survives a clean close.
        for seg in std::fs::read_dir(dir.path().join("t-0")).expect("ls") {
            let seg = seg.expect("entry").path();
            if seg.extension().is_some_and(|e| e == "log") {
                let data = std::fs::read(&seg).expect("read");
                assert!(data.len() < 16 * 1024 || data[data.len() - 1] != 0 || data.is_empty());
            }
        }
        let log = Log::open(dir.path(), small_config(path)).expect("reopen");
        assert!(log.recovered_clean(), "marker found");
        for part in 0..2u32 {
            let p = log.partition("t", part).expect("partition");
            let got: Vec<Vec<u8>> = read_all(&p).into_iter().map(|(_, b)| b).collect();
            let want: Vec<Vec<u8>> = expected
                .iter()
                .filter(|(pp, _)| *pp == part)
                .map(|(_, b)| b.clone())
                .collect();
            assert_eq!(got, want, "{path} partition {part}");
            // The reopened log carries on at the right offset.
            let info = p
                .append(&batch(999, 1, 5, 0), 1)
                .expect("append after reopen");
            assert_eq!(info.base_offset, 100);
        }
        drop(log);
        let again = Log::open(dir.path(), small_config(path)).expect("reopen without close");
        assert!(!again.recovered_clean(), "no marker after an unclean stop");
    }
}

#[test]
fn concurrent_readers_never_see_a_partial_batch() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Arc::new(
            Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open"),
        );
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while seen < 2000 {
                        // read_all validates every batch's CRC as it goes.
                        seen = read_all(&p)
                            .iter()
                            .map(|(h, _)| h.record_count as i64)
                            .sum();
                    }
                })
            })
            .collect();
        for i in 0..1000 {
            p.append(&batch(i, 2, (i % 700) as usize, 0), 0)
                .expect("append");
        }
        for r in readers {
            r.join().expect("reader");
        }
    }
}

#[test]
fn upkeep_flushes_on_its_interval_and_applies_retention() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogConfig {
                flush: FlushPolicy::Interval(Duration::from_millis(10)),
                retention_age: Some(Duration::from_millis(50)),
                ..small_config(sluice_log::AppendPath::Pwrite)
            },
        )
        .expect("open"),
    );
    log.create_topic("t", 1).expect("create");
    let p = log.partition("t", 0).expect("p");
    for i in 0..100 {
        p.append(&batch(i, 1, 500, 0), 0).expect("append");
    }
    assert!(p.segments().len() > 2);
    assert!(p.durable_end() < p.log_end());
    let upkeep = log.start_upkeep(Duration::from_millis(20)).expect("upkeep");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (p.durable_end() < p.log_end() || p.segments().len() > 1)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(upkeep);
    assert_eq!(p.durable_end(), p.log_end(), "flushed by the upkeep thread");
    assert_eq!(p.segments().len(), 1, "old segments removed by retention");
    assert_eq!(p.log_start(), p.segments()[0].base_offset());
}

#[test]
fn one_append_of_several_batches_numbers_them_in_order() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open");
        p.append(&batch(0, 2, 10, 0), 0).expect("first");
        let parts = [batch(1, 3, 20, 5), batch(2, 1, 30, 6), batch(3, 4, 40, 7)];
        let records: Vec<u8> = parts.concat();
        let before = records.clone();
        let info = p.append(&records, 9).expect("append three");
        assert_eq!(records, before, "the caller's bytes are not modified");
        assert_eq!(
            (info.base_offset, info.last_offset, info.batches),
            (2, 9, 3)
        );
        let got: Vec<Vec<u8>> = read_all(&p).into_iter().skip(1).map(|(_, b)| b).collect();
        let want = vec![
            as_stored(parts[0].clone(), 2, 9),
            as_stored(parts[1].clone(), 5, 9),
            as_stored(parts[2].clone(), 6, 9),
        ];
        assert_eq!(got, want, "{path}");
    }
}

#[test]
fn idempotent_batches_are_appended_once_across_a_reopen() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("t-0");
        let with = |seq: i32, epoch: i16, records: usize| {
            let mut b = batch(seq as u64, records, 20, 0);
            sluice_log::batch::set_producer(&mut b, 42, epoch, seq);
            b
        };
        {
            let p = Partition::open(&pdir, small_config(path), false).expect("open");
            let first = p.append(&with(0, 0, 3), 0).expect("first");
            assert_eq!((first.base_offset, first.duplicate), (0, false));
            let retry = p.append(&with(0, 0, 3), 0).expect("retry");
            assert_eq!(
                (retry.base_offset, retry.last_offset, retry.duplicate),
                (0, 2, true)
            );
            assert_eq!(p.log_end(), 3, "the retry appended nothing");
            let err = p.append(&with(5, 0, 1), 0).expect_err("gap");
            assert!(matches!(err, AppendError::Sequence(_)), "{err}");
            p.append(&with(3, 0, 2), 0).expect("next in sequence");
        }
        // Reopened without a clean close: state rebuilt from batch headers.
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen");
        let retry = p.append(&with(3, 0, 2), 0).expect("retry after reopen");
        assert_eq!((retry.base_offset, retry.duplicate), (3, true));
        let err = p.append(&with(5, -1, 1), 0).expect_err("fenced");
        assert!(matches!(err, AppendError::Sequence(_)), "{err}");
        assert_eq!(read_all(&p).len(), 2, "{path}: each batch once");
    }
}

/// Topics created, grown and deleted from many threads at once: each name is
/// created exactly once, growth is never lost, and lookups see whole topics.
#[test]
fn concurrent_topic_changes_are_each_applied_once() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Arc::new(Log::open(dir.path(), common::small_config(PATHS[1])).expect("open"));
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (log, created) = (log.clone(), created.clone());
            std::thread::spawn(move || {
                for t in 0..5 {
                    let name = format!("t{t}");
                    match log.create_topic(&name, 2) {
                        Ok(()) => {
                            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(TopicError::Exists(_)) => {}
                        Err(e) => panic!("create {name}: {e}"),
                    }
                    // Lookups see a whole topic (2 partitions, or more once grown).
                    let n = log.partition_count(&name).expect("exists after create");
                    assert!(n >= 2, "{name}: {n}");
                    assert!(log.partition(&name, n - 1).is_some());
                    if i == 0 {
                        log.add_partitions(&name, 3).expect("grow");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), 5);
    for t in 0..5 {
        assert_eq!(log.partition_count(&format!("t{t}")), Some(3));
    }
    log.delete_topic("t0").expect("delete");
    assert_eq!(log.partition_count("t0"), None);
    assert!(!dir.path().join("t0-0").exists());
}

#[test]
fn max_message_bytes_applies_to_each_batch_not_the_whole_request() {
    let dir = tempfile::tempdir().expect("dir");
    let config = LogConfig {
        max_batch_bytes: 100_000,
        ..LogConfig::default()
    };
    let p = Partition::open(&dir.path().join("t-0"), config, false).expect("open");
    // Two 60 KB batches in one request: 120 KB in all, each under the limit.
    let mut two = batch(1, 6, 10_000, 1000);
    two.extend_from_slice(&batch(2, 6, 10_000, 1000));
    assert!(two.len() > 100_000);
    let info = p.append(&two, 0).expect("two batches under the limit");
    assert_eq!(info.base_offset, 0);
    // One batch over it is refused, and the log is unchanged.
    let big = batch(3, 11, 10_000, 1000);
    assert!(matches!(
        p.append(&big, 0),
        Err(sluice_log::AppendError::BatchTooLarge { max: 100_000, .. })
    ));
    assert_eq!(p.log_end(), 12);
}
