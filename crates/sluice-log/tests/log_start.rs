//! DeleteRecords' log start offset: what reads, time lookups and retention
//! make of it, and that it survives a restart (clean or not).

mod common;

use common::{PATHS, batch, read_all, small_config};
use sluice_log::{LogConfig, Partition, ReadError};

/// 100 one-record batches of 1000 bytes (small segments: ~15 per segment),
/// record i stamped 10_000 + i.
fn filled(dir: &std::path::Path, config: LogConfig) -> Partition {
    let p = Partition::open(dir, config, false).expect("open");
    for i in 0..100u64 {
        p.append(&batch(i, 1, 1000, 10_000 + i as i64), 0)
            .expect("append");
    }
    assert!(p.segments().len() > 4, "several segments");
    p
}

fn out_of_range(r: Result<impl std::fmt::Debug, ReadError>) -> bool {
    matches!(r, Err(ReadError::OffsetOutOfRange { .. }))
}

#[test]
fn reads_below_the_start_are_out_of_range_and_the_start_survives_restarts() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let part_dir = dir.path().join("t-0");
        let p = filled(&part_dir, small_config(path));
        assert_eq!(p.delete_records_before(37).expect("delete"), 37);
        assert_eq!(p.log_start(), 37);
        // Below the start: gone; at it: the batch holding it.
        assert!(out_of_range(p.read(0, 100)), "{path}");
        assert!(out_of_range(p.read(36, 100)), "{path}");
        let r = p.read(37, 100).expect("read at the start");
        assert_eq!(r.log_start, 37);
        assert_eq!(r.slice.expect("slice").first_offset, 37);
        assert_eq!(read_all(&p).first().map(|(h, _)| h.base_offset), Some(37));
        // Lower or equal: nothing changes; past the end: refused, unchanged.
        assert_eq!(p.delete_records_before(10).expect("lower"), 37);
        assert_eq!(p.delete_records_before(37).expect("same"), 37);
        assert!(out_of_range(p.delete_records_before(101)));
        assert!(out_of_range(p.delete_records_before(-1)));
        assert_eq!(p.log_start(), 37);
        // Exactly the end: everything is deleted, and appends go on after it.
        assert_eq!(p.delete_records_before(100).expect("to the end"), 100);
        assert!(p.read(100, 100).expect("at end").slice.is_none());
        assert_eq!(
            p.append(&batch(100, 1, 10, 20_000), 0)
                .expect("append")
                .base_offset,
            100
        );
        drop(p);
        // Unclean reopen (no clean-shutdown marker), then a clean one.
        let p = Partition::open(&part_dir, small_config(path), false).expect("reopen");
        assert_eq!((p.log_start(), p.log_end()), (100, 101), "{path}");
        assert!(out_of_range(p.read(99, 100)));
        p.close().expect("close");
        drop(p);
        let p = Partition::open(&part_dir, small_config(path), true).expect("reopen clean");
        assert_eq!((p.log_start(), p.log_end()), (100, 101), "{path}");
        assert_eq!(
            std::fs::read_to_string(part_dir.join("log-start-offset")).expect("file"),
            "100\n"
        );
    }
}

#[test]
fn retention_deletes_the_segments_wholly_below_the_start_and_keeps_it() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let part_dir = dir.path().join("t-0");
        let p = filled(&part_dir, small_config(path));
        let segs = p.segments();
        // An offset inside the third segment, past its first batch.
        let start = segs[2].base_offset() + 3;
        assert!(start < segs[3].base_offset());
        let size_before = p.size_bytes();
        p.delete_records_before(start).expect("delete");
        // Nothing is gone from disk until retention runs (as in Kafka).
        assert_eq!(p.size_bytes(), size_before);
        assert_eq!(p.apply_retention().expect("retention"), 2, "{path}");
        let left = p.segments();
        assert_eq!(left[0].base_offset(), segs[2].base_offset());
        assert!(!segs[0].log_path().exists() && !segs[1].log_path().exists());
        // The start stays inside the kept segment: retention never moves it back.
        assert_eq!(p.log_start(), start, "{path}");
        assert!(out_of_range(p.read(start - 1, 100)));
        assert_eq!(p.apply_retention().expect("again"), 0);
        drop(p);
        let p = Partition::open(&part_dir, small_config(path), false).expect("reopen");
        assert_eq!(p.log_start(), start);
        assert_eq!(p.segments()[0].base_offset(), segs[2].base_offset());
    }
}

#[test]
fn time_lookups_skip_records_below_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let p = filled(&dir.path().join("t-0"), small_config(PATHS[1]));
    p.delete_records_before(50).expect("delete");
    // Record 20's time is below the start: the first record at or after it
    // that is still in the log is 50.
    assert_eq!(
        p.offset_for_timestamp(10_020).expect("lookup"),
        Some((50, 10_050))
    );
    let b = p.batch_for_timestamp(0).expect("lookup").expect("batch");
    assert_eq!(
        sluice_log::batch::BatchHeader::parse(&b)
            .expect("h")
            .base_offset,
        50
    );
    assert_eq!(
        p.offset_for_timestamp(10_070).expect("lookup"),
        Some((70, 10_070))
    );
    // From an offset of the caller's choosing.
    let b = p
        .batch_for_timestamp_from(0, 80)
        .expect("lookup")
        .expect("batch");
    assert_eq!(
        sluice_log::batch::BatchHeader::parse(&b)
            .expect("h")
            .base_offset,
        80
    );
    assert!(
        p.batch_for_timestamp_from(0, 100)
            .expect("lookup")
            .is_none()
    );
}

#[test]
fn a_log_that_ends_before_its_recorded_start_restarts_empty_there() {
    // What a power loss can leave: DeleteRecords moved the start up to
    // records that were never synced, and recovery took them back.
    let dir = tempfile::tempdir().expect("dir");
    let part_dir = dir.path().join("t-0");
    let p = filled(&part_dir, small_config(PATHS[1]));
    drop(p);
    std::fs::write(part_dir.join("log-start-offset"), "250\n").expect("write");
    std::fs::write(part_dir.join("log-start-offset.1.0.tmp"), "2").expect("tmp");
    let p = Partition::open(&part_dir, small_config(PATHS[1]), false).expect("open");
    assert_eq!((p.log_start(), p.log_end()), (250, 250));
    assert_eq!(p.segments().len(), 1);
    assert_eq!(p.segments()[0].base_offset(), 250);
    assert!(
        !part_dir.join("log-start-offset.1.0.tmp").exists(),
        "temp file removed"
    );
    // Deleted offsets are never handed out again.
    assert_eq!(
        p.append(&batch(1, 1, 10, 0), 0)
            .expect("append")
            .base_offset,
        250
    );
    let logs = std::fs::read_dir(&part_dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    assert_eq!(logs, 1, "the old segments are gone");
}

#[test]
fn a_damaged_start_file_refuses_the_open() {
    let dir = tempfile::tempdir().expect("dir");
    let part_dir = dir.path().join("t-0");
    drop(filled(&part_dir, small_config(PATHS[0])));
    std::fs::write(part_dir.join("log-start-offset"), "4x\n").expect("write");
    let err = Partition::open(&part_dir, small_config(PATHS[0]), false).expect_err("refused");
    assert!(err.to_string().contains("log-start-offset"), "{err}");
}

#[test]
fn segments_below_the_start_go_even_once_the_topic_is_compacted() {
    // Kafka deletes log-start-breached segments under any cleanup.policy;
    // only retention by size and age is `delete`'s alone.
    let dir = tempfile::tempdir().expect("dir");
    let config = small_config(PATHS[1]);
    let p = filled(&dir.path().join("t-0"), config.clone());
    let second = p.segments()[1].base_offset();
    p.delete_records_before(second).expect("delete");
    p.set_config(LogConfig {
        cleanup_policy: sluice_log::CleanupPolicy {
            delete: false,
            compact: true,
        },
        retention_age: Some(std::time::Duration::from_millis(1)),
        ..config
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(p.apply_retention().expect("retention"), 1);
    assert_eq!(p.segments()[0].base_offset(), second);
    assert_eq!(p.log_start(), second);
}
