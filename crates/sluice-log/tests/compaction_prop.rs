//! Compaction, model-based: random sequences of produce (keys from a small
//! set, tombstones, every codec, an idempotent producer), cleaner passes
//! (a roomy offset map, one that fills, the chooser), restarts clean and
//! unclean, and a clock moving past `delete.retention.ms`. After each step:
//!
//! - every batch passes its CRC (and kafka_protocol's own decoder), offsets
//!   only grow, and every record served is the one the model appended there;
//! - every key's latest value is readable at its offset; a tombstone younger
//!   than `delete.retention.ms` is too;
//! - after a pass whose map held the whole dirty section, below the cleaned
//!   offset only each key's latest record is left;
//! - reading from any offset gives the first record the log holds at or
//!   after it;
//! - the idempotent producer's state survives (a sequence gap is refused);
//! - a settle step (seal, clean, wait out the retention, clean) leaves no
//!   trace of a deleted key.
//!
//! The cases default to 64 (seconds); `PROPTEST_CASES` overrides.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;
use sluice_log::batch::{self, BatchHeader};
use sluice_log::{
    AppendError, AppendPath, CleanerConfig, CleanupPolicy, FlushPolicy, Log, LogConfig, Partition,
};

/// The clock the test runs by (2020-09-13).
const T0: i64 = 1_600_000_000_000;
const RETENTION_MS: i64 = 1000;
const PID: i64 = 9;
const FILLER: u8 = b'F';

#[derive(Debug, Clone)]
enum Op {
    Produce {
        /// (key 0..6, value length or None for a tombstone)
        records: Vec<(u8, Option<usize>)>,
        codec: u8,
        idempotent: bool,
    },
    Clean {
        small_map: bool,
    },
    CleanOnce,
    Advance {
        ms: i64,
    },
    ReopenClean,
    ReopenUnclean,
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (0u8..6, prop::option::weighted(0.8, 0usize..40));
    prop_oneof![
        10 => (prop::collection::vec(record, 1..5), 0u8..5, prop::bool::weighted(0.2))
            .prop_map(|(records, codec, idempotent)| Op::Produce { records, codec, idempotent }),
        3 => any::<bool>().prop_map(|small_map| Op::Clean { small_map }),
        1 => Just(Op::CleanOnce),
        2 => (0i64..1500).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenUnclean),
        1 => Just(Op::Settle),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 100,
        flush: FlushPolicy::Os,
        append_path: AppendPath::Pwrite,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        delete_retention: Duration::from_millis(RETENTION_MS as u64),
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn cleaner(small_map: bool) -> CleanerConfig {
    CleanerConfig {
        // 7 slots (6 keys) or plenty.
        dedupe_buffer_bytes: if small_map { 8 * 24 } else { 1 << 20 },
        io_buffer_bytes: 256,
        ..CleanerConfig::default()
    }
}

/// One record the model appended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MRec {
    offset: i64,
    key: u8,
    value: Option<Vec<u8>>,
    produced_at: i64,
}

#[derive(Debug, Default)]
struct Model {
    all: Vec<MRec>,
    next: i64,
    seq: i32,
}

impl Model {
    fn at(&self, offset: i64) -> Option<&MRec> {
        self.all
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()
            .map(|i| &self.all[i])
    }

    fn latest_below(&self, end: i64) -> BTreeMap<u8, &MRec> {
        let mut m = BTreeMap::new();
        for r in self.all.iter().filter(|r| r.offset < end) {
            m.insert(r.key, r);
        }
        m
    }
}

fn value_of(key: u8, offset_hint: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| key.wrapping_mul(31).wrapping_add((offset_hint + i) as u8))
        .collect()
}

/// Encodes with kafka_protocol's encoder (independent of the cleaner's).
fn encode(
    records: &[(u8, Option<Vec<u8>>)],
    ts: i64,
    codec: u8,
    producer: Option<(i64, i32)>,
) -> Vec<u8> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Offset − sequence constant keeps the records in one batch.
            sequence: producer.map_or(i as i32 - 1, |p| p.1 + i as i32),
            timestamp: ts + i as i64,
            key: Some(Bytes::from(vec![*k])),
            value: v.clone().map(Bytes::from),
            headers: IndexMap::new(),
        })
        .collect();
    let compression = match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.to_vec()
}

/// A record as read back: (offset, key, value).
type Got = (i64, Vec<u8>, Option<Vec<u8>>);

/// Batches with their records.
type Batches = Vec<(BatchHeader, Vec<Got>)>;

/// Decodes whole batches in `bytes`, validating each; returns the records
/// and where the whole batches end.
fn decode_region(bytes: &[u8]) -> Result<(Batches, usize), TestCaseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + batch::HEADER_LEN <= bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).expect("header");
        let len = h.total_len().expect("length");
        if pos + len > bytes.len() {
            break;
        }
        let b = &bytes[pos..pos + len];
        batch::validate_stored(b).map_err(|e| TestCaseError::fail(format!("bad batch: {e}")))?;
        let mut recs = Vec::new();
        if h.record_count > 0 {
            let mut buf = Bytes::copy_from_slice(b);
            let set = RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("kafka_protocol refuses a batch: {e}")))?;
            for r in set.records {
                recs.push((
                    r.offset,
                    r.key.map(|k| k.to_vec()).unwrap_or_default(),
                    r.value.map(|v| v.to_vec()),
                ));
            }
        }
        out.push((h, recs));
        pos += len;
    }
    Ok((out, pos))
}

/// Reads the whole partition as a consumer does, from the log start.
fn read_log(p: &Partition) -> Result<Vec<Got>, TestCaseError> {
    let mut out: Vec<Got> = Vec::new();
    let mut offset = p.log_start();
    let end = p.log_end();
    while offset < end {
        let r = p.read(offset, 2000).expect("read");
        let Some(s) = r.slice else { break };
        let mut bytes = vec![0u8; s.len as usize];
        s.segment
            .file()
            .read_exact_at(&mut bytes, s.position)
            .expect("pread");
        let (batches, _) = decode_region(&bytes)?;
        prop_assert!(
            !batches.is_empty(),
            "a read at {} returned no whole batch",
            offset
        );
        for (h, recs) in batches {
            if h.last_offset() < offset {
                continue;
            }
            for r in recs {
                if r.0 >= offset {
                    if let Some(last) = out.last() {
                        prop_assert!(r.0 > last.0, "offsets go back: {} after {}", r.0, last.0);
                    }
                    out.push(r);
                }
            }
            offset = h.last_offset() + 1;
        }
    }
    Ok(out)
}

/// The first record at or after `from`, as a consumer starting there gets it.
fn first_from(p: &Partition, from: i64) -> Result<Option<Got>, TestCaseError> {
    let mut offset = from;
    while offset < p.log_end() {
        let r = p.read(offset, 2000).expect("read");
        let Some(s) = r.slice else { return Ok(None) };
        let mut bytes = vec![0u8; s.len as usize];
        s.segment
            .file()
            .read_exact_at(&mut bytes, s.position)
            .expect("pread");
        let (batches, _) = decode_region(&bytes)?;
        for (h, recs) in batches {
            if let Some(r) = recs.into_iter().find(|r| r.0 >= from) {
                return Ok(Some(r));
            }
            offset = offset.max(h.last_offset() + 1);
        }
    }
    Ok(None)
}

struct World {
    dir: tempfile::TempDir,
    log: Log,
    model: Model,
    now: i64,
}

impl World {
    fn p(&self) -> std::sync::Arc<Partition> {
        self.log.partition("c", 0).expect("partition")
    }

    fn produce(
        &mut self,
        records: &[(u8, Option<usize>)],
        codec: u8,
        idempotent: bool,
    ) -> Result<(), TestCaseError> {
        let p = self.p();
        let base = self.model.next;
        let recs: Vec<(u8, Option<Vec<u8>>)> = records
            .iter()
            .enumerate()
            .map(|(i, (k, len))| (*k, len.map(|n| value_of(*k, base as usize + i, n))))
            .collect();
        let producer = idempotent.then_some((PID, self.model.seq));
        if idempotent && self.model.seq > 0 {
            // The producer's state is known: a gap is refused.
            let gap = encode(&recs, self.now, codec, Some((PID, self.model.seq + 3)));
            prop_assert!(
                matches!(p.append(&gap, 0), Err(AppendError::Sequence(_))),
                "a sequence gap was accepted: the producer state was lost"
            );
        }
        let info = p
            .append(&encode(&recs, self.now, codec, producer), 0)
            .expect("append");
        prop_assert_eq!(info.base_offset, base);
        for (i, (k, v)) in recs.into_iter().enumerate() {
            self.model.all.push(MRec {
                offset: base + i as i64,
                key: k,
                value: v,
                produced_at: self.now,
            });
        }
        self.model.next = base + records.len() as i64;
        if idempotent {
            self.model.seq += records.len() as i32;
        }
        Ok(())
    }
}

fn reopen(w: World, clean: bool) -> World {
    let World {
        dir,
        log,
        model,
        now,
    } = w;
    if clean {
        log.close().expect("close");
    }
    drop(log);
    let log = Log::open(dir.path(), config()).expect("reopen");
    World {
        dir,
        log,
        model,
        now,
    }
}

/// The checks every step ends with. `cleaned_to`: the end of a pass whose
/// map held its whole dirty section.
fn check(w: &World, cleaned_to: Option<i64>) -> Result<(), TestCaseError> {
    let p = w.p();
    prop_assert_eq!(p.log_end(), w.model.next);
    let got = read_log(&p)?;
    let by_offset: BTreeMap<i64, &Got> = got.iter().map(|r| (r.0, r)).collect();
    for r in &got {
        let m = w
            .model
            .at(r.0)
            .ok_or_else(|| TestCaseError::fail(format!("a record at {} never appended", r.0)))?;
        prop_assert_eq!(&r.1, &vec![m.key], "key at {}", r.0);
        prop_assert_eq!(&r.2, &m.value, "value at {}", r.0);
    }
    for (key, m) in w.model.latest_below(i64::MAX) {
        let young = w.now < m.produced_at + RETENTION_MS;
        if m.value.is_some() || young {
            prop_assert!(
                by_offset.contains_key(&m.offset),
                "key {}'s latest record at {} is missing",
                key,
                m.offset
            );
        }
    }
    if let Some(end) = cleaned_to {
        let keep = w.model.latest_below(end);
        for r in got.iter().filter(|r| r.0 < end) {
            prop_assert_eq!(
                keep[&r.1[0]].offset,
                r.0,
                "a superseded record at {} below the cleaned end {}",
                r.0,
                end
            );
        }
    }
    for from in p.log_start()..p.log_end() {
        let want = got.iter().find(|r| r.0 >= from).cloned();
        prop_assert_eq!(first_from(&p, from)?, want, "reading from {}", from);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("dir");
    let log = Log::open(dir.path(), config()).expect("open");
    log.create_topic("c", 1).expect("create");
    let mut w = World {
        dir,
        log,
        model: Model::default(),
        now: T0,
    };
    for op in ops {
        let mut cleaned_to = None;
        match op {
            Op::Produce {
                records,
                codec,
                idempotent,
            } => w.produce(&records, codec, idempotent)?,
            Op::Clean { small_map } => {
                if let Some(s) = w.p().clean(&cleaner(small_map), w.now).expect("clean") {
                    prop_assert!(s.cleaned_to >= s.first_dirty);
                    cleaned_to = (!s.map_full).then_some(s.cleaned_to);
                }
            }
            Op::CleanOnce => {
                if let Some(s) = w.log.clean_once_at(&cleaner(false), w.now) {
                    cleaned_to = (!s.map_full).then_some(s.cleaned_to);
                }
            }
            Op::Advance { ms } => w.now += ms,
            Op::ReopenClean => w = reopen(w, true),
            Op::ReopenUnclean => w = reopen(w, false),
            Op::Settle => {
                // Seal everything appended so far, clean (stamping horizons),
                // wait out the retention, clean until nothing is due.
                let sealed_to = w.model.next;
                while w.p().segments().last().expect("active").base_offset() < sealed_to
                    || w.model.next == 0
                {
                    w.produce(&[(FILLER, Some(120))], 0, false)?;
                }
                w.p().clean(&cleaner(false), w.now).expect("clean");
                w.now += RETENTION_MS + 1;
                for _ in 0..10 {
                    if w.p()
                        .clean(&cleaner(false), w.now)
                        .expect("clean")
                        .is_none()
                    {
                        break;
                    }
                }
                let got = read_log(&w.p())?;
                for (key, m) in w.model.latest_below(sealed_to) {
                    if m.value.is_none() && w.model.latest_below(i64::MAX)[&key].offset == m.offset
                    {
                        prop_assert!(
                            got.iter().all(|r| r.1 != vec![key]),
                            "key {} was deleted at {} but is still in the log",
                            key,
                            m.offset
                        );
                    }
                }
            }
        }
        check(&w, cleaned_to)?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn compaction_matches_the_model(ops in proptest::collection::vec(op(), 1..50)) {
        run(ops)?;
    }
}
