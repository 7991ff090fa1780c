//! Topic config overrides: stored with the topic, surviving restarts, and in
//! force — retention by policy, LogAppendTime stamping, timestamp bounds,
//! live changes.

mod common;

use std::time::Duration;

use common::batch;
use sluice_log::{AppendError, Log, LogConfig, TopicError, TopicOverrides};

fn ov(pairs: &[(&str, &str)]) -> TopicOverrides {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn now() -> i64 {
    sluice_log::now_ms()
}

/// Small segments, so retention has whole sealed segments to consider.
fn base() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn overrides_survive_a_restart_and_unknown_ones_create_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let log = Log::open(dir.path(), base()).expect("open");
        log.create_topic_with(
            "schemas",
            1,
            &ov(&[("cleanup.policy", "compact"), ("min.insync.replicas", "2")]),
        )
        .expect("create");
        let err = log
            .create_topic_with("bad", 1, &ov(&[("retention.mss", "5")]))
            .expect_err("unknown config");
        assert!(matches!(err, TopicError::InvalidConfig(ref e) if e.name == "retention.mss"));
        assert!(log.partition_count("bad").is_none());
        assert!(!dir.path().join("bad-0").exists(), "nothing half-made");
        log.close().expect("close");
    }
    let log = Log::open(dir.path(), base()).expect("reopen");
    assert_eq!(
        log.topic_overrides("schemas"),
        Some(ov(&[
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "2")
        ]))
    );
    let p = log.partition("schemas", 0).expect("partition");
    assert!(p.config().cleanup_policy.compact && !p.config().cleanup_policy.delete);
    assert_eq!(log.topic_overrides("nope"), None);
}

#[test]
fn a_compacted_topic_is_never_deleted_by_time_and_a_live_change_applies() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), base()).expect("open");
    log.create_topic_with(
        "compacted",
        1,
        &ov(&[("cleanup.policy", "compact"), ("retention.ms", "1")]),
    )
    .expect("create");
    log.create_topic_with("plain", 1, &ov(&[("retention.ms", "1")]))
        .expect("create");
    let old = now() - 60_000;
    for topic in ["compacted", "plain"] {
        let p = log.partition(topic, 0).expect("p");
        for i in 0..20u64 {
            // Keyed: a compacted topic refuses a record without a key.
            let key = i.to_be_bytes();
            let rec = sluice_log::cleaner::RecordSpec {
                key: Some(&key),
                value: Some(&[7u8; 100]),
                timestamp_delta: 0,
            };
            let b = sluice_log::cleaner::build_batch(old, &[rec; 4], 0);
            p.append(&b, 0).expect("append");
        }
    }
    std::thread::sleep(Duration::from_millis(5));
    let plain = log.partition("plain", 0).expect("p");
    let compacted = log.partition("compacted", 0).expect("p");
    assert!(plain.apply_retention().expect("retention") > 0);
    assert_eq!(compacted.apply_retention().expect("retention"), 0);
    assert_eq!(compacted.log_start(), 0);
    // compact,delete: retention applies again, without a restart.
    log.alter_topic_config(
        "compacted",
        &ov(&[("cleanup.policy", "compact,delete"), ("retention.ms", "1")]),
    )
    .expect("alter");
    assert!(compacted.apply_retention().expect("retention") > 0);
    assert!(compacted.log_start() > 0);
    // A refused change changes nothing.
    assert!(
        log.alter_topic_config("compacted", &ov(&[("segment.ms", "0")]))
            .is_err()
    );
    assert_eq!(
        log.topic_overrides("compacted"),
        Some(ov(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "1")
        ]))
    );
}

#[test]
fn log_append_time_stamps_batches_with_the_brokers_clock() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), base()).expect("open");
    log.create_topic_with(
        "stamped",
        1,
        &ov(&[("message.timestamp.type", "LogAppendTime")]),
    )
    .expect("create");
    let p = log.partition("stamped", 0).expect("p");
    let before = now();
    let info = p.append(&batch(1, 3, 10, 1000), 0).expect("append");
    let after = now();
    let stamped = info.log_append_time.expect("stamped");
    assert!((before..=after).contains(&stamped));
    let slice = p.read(0, 1 << 20).expect("read").slice.expect("slice");
    let mut bytes = vec![0u8; slice.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(slice.segment.file(), &mut bytes, slice.position)
        .expect("bytes");
    let h = sluice_log::batch::validate(&bytes).expect("the CRC still holds");
    assert_eq!(h.max_timestamp, stamped);
    assert_ne!(h.attributes & sluice_log::batch::TIMESTAMP_TYPE_BIT, 0);
    // CreateTime topics keep the producer's timestamps.
    log.create_topic("kept", 1).expect("create");
    let q = log.partition("kept", 0).expect("p");
    let info = q.append(&batch(1, 3, 10, now() - 1000), 0).expect("append");
    assert_eq!(info.log_append_time, None);
}

#[test]
fn create_time_batches_outside_the_bounds_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), base()).expect("open");
    log.create_topic_with(
        "bounded",
        1,
        &ov(&[
            ("message.timestamp.before.max.ms", "60000"),
            ("message.timestamp.after.max.ms", "60000"),
        ]),
    )
    .expect("create");
    let p = log.partition("bounded", 0).expect("p");
    assert!(matches!(
        p.append(&batch(1, 1, 10, now() - 3_600_000), 0),
        Err(AppendError::InvalidTimestamp { .. })
    ));
    assert!(matches!(
        p.append(&batch(1, 1, 10, now() + 3_600_000), 0),
        Err(AppendError::InvalidTimestamp { .. })
    ));
    p.append(&batch(1, 1, 10, now()), 0).expect("within bounds");
    assert_eq!(p.log_end(), 1);
    // The broker default (Kafka 4): at most an hour ahead.
    log.create_topic("default", 1).expect("create");
    let d = log.partition("default", 0).expect("p");
    assert!(
        d.append(&batch(1, 1, 10, now() + 2 * 3_600_000), 0)
            .is_err()
    );
    d.append(&batch(1, 1, 10, 0), 0)
        .expect("old is fine by default");
}

#[test]
fn deleting_a_topic_forgets_its_overrides() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), base()).expect("open");
    log.create_topic_with("gone", 2, &ov(&[("retention.ms", "5000")]))
        .expect("create");
    log.delete_topic("gone").expect("delete");
    log.create_topic("gone", 1).expect("again");
    assert_eq!(log.topic_overrides("gone"), Some(TopicOverrides::new()));
    drop(log);
    let log = Log::open(dir.path(), base()).expect("reopen");
    assert_eq!(log.topic_overrides("gone"), Some(TopicOverrides::new()));
}
