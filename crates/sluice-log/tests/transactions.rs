//! The log side of Kafka transactions (KIP-98): transactional batches open
//! and join a producer's transaction, markers (`append_control`) end it,
//! the last stable offset, `<base>.txnindex` byte for byte and
//! `aborted_transactions` across rolls, and the same state after a crash,
//! on a follower fed the leader's bytes, after truncation and retention —
//! on both append paths.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{PATHS, batch, small_config};
use sluice_log::batch::{self as b, BatchError, BatchHeader};
use sluice_log::producer::SequenceError;
use sluice_log::{AbortedTxn, AppendError, AppendPath, LogConfig, Partition};

fn open_with(dir: &Path, config: LogConfig) -> Partition {
    Partition::open(dir, config, false).expect("open")
}

fn open(dir: &Path, path: AppendPath) -> Partition {
    open_with(dir, small_config(path))
}

/// A transactional batch of `records` records from `pid`.
fn txn_batch(seed: u64, pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    let mut bytes = batch(seed, records, 300, 0);
    b::set_transactional(&mut bytes, pid, epoch, seq);
    bytes
}

/// An idempotent, non-transactional batch.
fn idem_batch(seed: u64, pid: i64, seq: i32, records: usize) -> Vec<u8> {
    let mut bytes = batch(seed, records, 300, 0);
    b::set_producer(&mut bytes, pid, 0, seq);
    bytes
}

/// The `.txnindex` files of a partition directory with any entry, by name.
fn txn_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .filter(|(_, bytes)| !bytes.is_empty())
        .collect()
}

/// What a partition says about its transactions.
#[derive(Debug, PartialEq)]
struct TxnState {
    log_end: i64,
    lso: i64,
    open: Vec<(i64, i64)>,
    /// Per segment (by base), its aborted transactions.
    segments: Vec<(i64, Vec<AbortedTxn>)>,
}

fn state(p: &Partition) -> TxnState {
    TxnState {
        log_end: p.log_end(),
        lso: p.last_stable_offset(),
        open: p.open_transactions(),
        segments: p
            .segments()
            .iter()
            .map(|s| (s.base_offset(), s.txn_index().entries()))
            .collect(),
    }
}

/// One step of a generated workload.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A transactional batch of producer `pid`.
    Txn {
        pid: i64,
        records: usize,
    },
    /// A batch of a producer outside transactions.
    Plain {
        records: usize,
    },
    Commit {
        pid: i64,
    },
    Abort {
        pid: i64,
    },
}

/// A deterministic mix of three transactional producers (interleaved,
/// with commits and aborts, some left open at the end) and a plain one.
fn workload(n: usize, seed: u64) -> Vec<Op> {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    let mut open = [false; 3];
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = (next() % 3) as i64 + 1;
        let op = match next() % 10 {
            0..=4 => Op::Txn {
                pid,
                records: 1 + next() % 3,
            },
            5 => Op::Plain {
                records: 1 + next() % 2,
            },
            6 | 7 => Op::Commit { pid },
            _ => Op::Abort { pid },
        };
        if let Op::Txn { pid, .. } = op {
            open[pid as usize - 1] = true;
        }
        if let Op::Commit { pid } | Op::Abort { pid } = op {
            open[pid as usize - 1] = false;
        }
        ops.push(op);
    }
    // Producer 3 leaves a transaction open at the end.
    ops.push(Op::Txn { pid: 3, records: 2 });
    ops
}

/// Kafka's rules, computed independently: the aborted transactions (with
/// the LSO after each abort) and the transactions left open.
#[derive(Debug, Default)]
struct Model {
    open: BTreeMap<i64, i64>,
    first_of: HashMap<i64, i64>,
    aborted: Vec<AbortedTxn>,
}

impl Model {
    fn data(&mut self, pid: i64, base: i64) {
        if let std::collections::hash_map::Entry::Vacant(v) = self.first_of.entry(pid) {
            v.insert(base);
            self.open.insert(base, pid);
        }
    }

    fn marker(&mut self, pid: i64, offset: i64, commit: bool) {
        let Some(first) = self.first_of.remove(&pid) else {
            return;
        };
        self.open.remove(&first);
        let lso = self.open.keys().next().copied().unwrap_or(offset + 1);
        if !commit {
            self.aborted.push(AbortedTxn {
                producer_id: pid,
                first_offset: first,
                last_offset: offset,
                last_stable_offset: lso,
            });
        }
    }
}

/// Runs `ops` on a leader; returns the model of what it should hold.
fn run(p: &Partition, ops: &[Op], seed: u64) -> Model {
    let mut seqs: HashMap<i64, i32> = HashMap::new();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let s = seed * 1000 + i as u64;
        match *op {
            Op::Txn { pid, records } => {
                let seq = seqs.entry(pid).or_default();
                let info = p
                    .append(&txn_batch(s, pid, 0, *seq, records), 0)
                    .expect("transactional append");
                *seq += records as i32;
                model.data(pid, info.base_offset);
            }
            Op::Plain { records } => {
                let seq = seqs.entry(99).or_default();
                p.append(&idem_batch(s, 99, *seq, records), 0)
                    .expect("plain append");
                *seq += records as i32;
            }
            Op::Commit { pid } | Op::Abort { pid } => {
                let commit = matches!(op, Op::Commit { .. });
                let info = p
                    .append_control(pid, 0, commit, 5, 0)
                    .expect("marker append");
                assert_eq!(info.base_offset, info.last_offset);
                model.marker(pid, info.base_offset, commit);
            }
        }
    }
    model
}

/// What a Fetch at `offset` would carry from `leader`.
fn fetch(leader: &Partition, offset: i64, max: u64) -> Vec<u8> {
    let r = leader.read(offset, max).expect("leader read");
    let Some(s) = r.slice else { return Vec::new() };
    let mut bytes = vec![0u8; s.len as usize];
    s.segment
        .file()
        .read_exact_at(&mut bytes, s.position)
        .expect("pread");
    bytes
}

/// Replicates the leader's whole batches that end before `upto`.
fn replicate_upto(leader: &Partition, follower: &Partition, upto: i64, max: u64) {
    loop {
        let from = follower.log_end();
        if from >= leader.log_end().min(upto) {
            return;
        }
        let bytes = fetch(leader, from, max);
        let mut pos = 0;
        while pos + b::HEADER_LEN <= bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            let len = h.total_len().expect("len");
            if pos + len > bytes.len() || h.last_offset() >= upto {
                break;
            }
            pos += len;
        }
        if pos == 0 {
            return;
        }
        follower
            .append_replicated(&bytes[..pos])
            .expect("replicate");
    }
}

#[test]
fn a_transaction_holds_the_lso_until_its_marker_and_an_abort_is_indexed() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = open(dir.path(), path);
        assert_eq!(p.last_stable_offset(), 0);
        // Producer 7 opens a transaction at offset 0 (two records).
        p.append(&txn_batch(1, 7, 2, 0, 2), 0).expect("append");
        assert_eq!(p.open_transactions(), vec![(0, 7)]);
        assert_eq!(p.log_end(), 2);
        assert_eq!(
            p.last_stable_offset(),
            0,
            "{path}: held at the first offset"
        );
        // Other producers' records do not move it.
        p.append(&batch(2, 3, 100, 0), 0).expect("plain");
        assert_eq!(p.last_stable_offset(), 0);
        // A second batch joins the transaction.
        p.append(&txn_batch(3, 7, 2, 2, 1), 0).expect("append");
        assert_eq!(p.open_transactions(), vec![(0, 7)]);
        // COMMIT: the LSO is the high watermark (the log end) again.
        let info = p.append_control(7, 2, true, 11, 0).expect("commit");
        assert_eq!(
            (info.base_offset, info.last_offset, info.batches),
            (6, 6, 1)
        );
        assert_eq!(p.last_stable_offset(), 7);
        assert!(p.open_transactions().is_empty());
        assert!(
            p.aborted_transactions(0, 100).is_empty(),
            "a commit is not indexed"
        );
        // The marker is Kafka's control batch.
        let bytes = fetch(&p, 6, 1000);
        let h = b::validate(&bytes).expect("the marker batch");
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 2, -1)
        );
        assert_eq!(
            b::parse_marker(&bytes, &h),
            Ok(Some(b::TxnMarker {
                commit: true,
                coordinator_epoch: 11
            }))
        );
        // A second transaction, aborted.
        p.append(&txn_batch(4, 7, 2, 3, 2), 0).expect("append");
        assert_eq!(p.last_stable_offset(), 7);
        p.append_control(7, 2, false, 11, 0).expect("abort");
        assert_eq!(p.last_stable_offset(), 10);
        assert_eq!(p.aborted_transactions(0, 10), vec![(7, 7)]);
        assert_eq!(p.aborted_transactions(7, 8), vec![(7, 7)]);
        assert!(p.aborted_transactions(0, 7).is_empty(), "ends before it");
        assert!(
            p.aborted_transactions(10, 11).is_empty(),
            "starts after its marker"
        );
        // `00000000000000000000.txnindex`: one 34-byte entry, Kafka's
        // layout: version 0, producerId 7, firstOffset 7, lastOffset 9,
        // lastStableOffset 10.
        let file =
            std::fs::read(dir.path().join("00000000000000000000.txnindex")).expect("the txnindex");
        let mut want = vec![0u8, 0];
        for v in [7i64, 7, 9, 10] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(file, want, "{path}");
        // A clean reopen keeps all of it.
        p.close().expect("close");
        drop(p);
        let p = Partition::open(dir.path(), small_config(path), true).expect("reopen");
        assert_eq!(p.aborted_transactions(0, 10), vec![(7, 7)]);
        assert_eq!(p.last_stable_offset(), 10);
    }
}

#[test]
fn the_lso_follows_the_earliest_open_transaction_of_interleaved_producers() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), AppendPath::Pwrite);
    // Replicated: the high watermark moves only when set.
    p.set_high_watermark(0);
    p.append(&txn_batch(1, 1, 0, 0, 1), 0)
        .expect("p1 opens at 0");
    p.append(&txn_batch(2, 2, 0, 0, 2), 0)
        .expect("p2 opens at 1");
    p.append(&txn_batch(3, 1, 0, 1, 1), 0)
        .expect("p1 joins at 3");
    p.append(&txn_batch(4, 3, 0, 0, 1), 0)
        .expect("p3 opens at 4");
    assert_eq!(p.open_transactions(), vec![(0, 1), (1, 2), (4, 3)]);
    assert_eq!(p.last_stable_offset(), 0);
    p.set_high_watermark(5);
    assert_eq!(p.last_stable_offset(), 0);
    // p2 aborts first: the LSO stays at p1's start; the entry's LSO is the
    // earliest transaction still open (p1's, at 0).
    p.append_control(2, 0, false, 0, 0).expect("p2 aborts at 5");
    assert_eq!(p.last_stable_offset(), 0);
    // p1 commits: p3's transaction (at 4) holds it once the high
    // watermark passes p1's marker; until then p1's still does (Kafka's
    // unreplicated transactions: a new leader without the marker would
    // still have it open).
    p.append_control(1, 0, true, 0, 0).expect("p1 commits at 6");
    p.set_high_watermark(6);
    assert_eq!(
        p.last_stable_offset(),
        0,
        "p1's marker (6) is not replicated"
    );
    p.set_high_watermark(7);
    assert_eq!(p.last_stable_offset(), 4);
    // p3 aborts: nothing open; its entry's LSO is its marker + 1.
    p.append_control(3, 0, false, 0, 0).expect("p3 aborts at 7");
    assert_eq!(
        p.last_stable_offset(),
        4,
        "p3's marker (7) is not replicated"
    );
    p.set_high_watermark(8);
    assert_eq!(p.last_stable_offset(), 8);
    let entries = p.segments()[0].txn_index().entries();
    assert_eq!(
        entries,
        vec![
            AbortedTxn {
                producer_id: 2,
                first_offset: 1,
                last_offset: 5,
                last_stable_offset: 0
            },
            AbortedTxn {
                producer_id: 3,
                first_offset: 4,
                last_offset: 7,
                last_stable_offset: 8
            },
        ]
    );
    // Capped by the high watermark.
    p.append(&batch(6, 1, 10, 0), 0).expect("plain at 8");
    assert_eq!(p.last_stable_offset(), 8);
    p.append(&txn_batch(5, 2, 0, 2, 1), 0)
        .expect("p2 opens at 9");
    p.append(&batch(7, 1, 10, 0), 0).expect("plain at 10");
    p.set_high_watermark(11);
    assert_eq!(p.last_stable_offset(), 9);
    // Not below the log start.
    p.delete_records_before(10).expect("delete records");
    assert_eq!(p.last_stable_offset(), 10);
}

#[test]
fn markers_are_checked_and_clients_may_not_write_them() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = open(dir.path(), path);
        p.append(&txn_batch(1, 7, 3, 0, 2), 0).expect("append");
        // A marker of an older epoch is fenced; nothing is written.
        let err = p
            .append_control(7, 2, false, 1, 0)
            .expect_err("stale epoch");
        assert!(
            matches!(
                err,
                AppendError::Sequence(SequenceError::FencedEpoch {
                    producer_id: 7,
                    current: 3,
                    got: 2
                })
            ),
            "{err}"
        );
        assert_eq!(p.log_end(), 2);
        assert_eq!(p.open_transactions(), vec![(0, 7)]);
        // A non-transactional batch while the transaction is open.
        let mut plain = batch(2, 1, 100, 0);
        b::set_producer(&mut plain, 7, 3, 2);
        let err = p.append(&plain, 0).expect_err("not transactional");
        assert!(matches!(
            err,
            AppendError::InvalidBatch(BatchError::NotTransactional { producer_id: 7 })
        ));
        // A control batch in a producer's records.
        let forged = b::build_control_batch(
            7,
            3,
            b::TxnMarker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        assert!(matches!(
            p.append(&forged, 0),
            Err(AppendError::InvalidBatch(
                BatchError::ControlBatchFromClient
            ))
        ));
        assert_eq!(p.log_end(), 2);
        // Idempotence holds inside transactions: a retry is a duplicate, a
        // gap is refused.
        let again = p.append(&txn_batch(1, 7, 3, 0, 2), 0).expect("retry");
        assert!(again.duplicate && again.base_offset == 0);
        assert!(matches!(
            p.append(&txn_batch(3, 7, 3, 5, 1), 0),
            Err(AppendError::Sequence(SequenceError::OutOfOrder { .. }))
        ));
        // A marker for a producer with nothing open is written, a no-op.
        let info = p.append_control(8, 0, false, 1, 0).expect("no-op marker");
        assert_eq!(info.base_offset, 2);
        assert_eq!(p.log_end(), 3);
        assert!(p.aborted_transactions(0, 10).is_empty());
        assert_eq!(p.last_stable_offset(), 0);
        // A marker of a newer epoch (the coordinator bumped it) ends the
        // transaction; its data batches must then start over at 0.
        p.append_control(7, 4, false, 1, 0)
            .expect("abort, new epoch");
        assert_eq!(p.last_stable_offset(), 4);
        assert_eq!(p.aborted_transactions(0, 4), vec![(7, 0)]);
        assert!(matches!(
            p.append(&txn_batch(4, 7, 4, 2, 1), 0),
            Err(AppendError::Sequence(SequenceError::OutOfOrder { .. }))
        ));
        p.append(&txn_batch(4, 7, 4, 0, 1), 0)
            .expect("epoch 4 from 0");
        // The marker epoch is checked against the newest.
        assert!(p.append_control(7, 3, true, 1, 0).is_err());
    }
}

#[test]
fn a_marker_from_a_deposed_coordinator_is_fenced() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = open(dir.path(), path);
        p.append(&txn_batch(1, 7, 3, 0, 2), 0).expect("append");
        assert_eq!(p.open_transaction(7), Some(0));
        assert_eq!(p.open_transaction(8), None);
        p.append_control(7, 3, false, 5, 0)
            .expect("abort at coordinator epoch 5");
        assert_eq!(p.open_transaction(7), None);
        p.append(&txn_batch(3, 7, 3, 2, 1), 0)
            .expect("a new transaction");
        // A coordinator older than one that already wrote for the producer.
        let err = p
            .append_control(7, 3, true, 4, 0)
            .expect_err("stale coordinator");
        assert!(
            matches!(
                err,
                AppendError::Sequence(SequenceError::CoordinatorFenced {
                    producer_id: 7,
                    current: 5,
                    got: 4
                })
            ),
            "{err}"
        );
        assert_eq!(
            p.open_transaction(7),
            Some(3),
            "still open, nothing written"
        );
        assert_eq!(p.log_end(), 4);
        p.append_control(7, 3, true, 6, 0)
            .expect("a newer coordinator");
        assert_eq!(p.open_transaction(7), None);
    }
}

#[test]
fn aborted_transactions_are_found_across_segment_rolls() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = open(dir.path(), path);
        let model = run(&p, &workload(400, 7), 7);
        assert!(p.segments().len() >= 4, "{path}: several segments");
        assert!(model.aborted.len() >= 10, "{path}: a few aborts");
        // The entries are where their markers are, byte for byte as the
        // model (Kafka's rules) says.
        let mut files = BTreeMap::new();
        for seg in p.segments().iter() {
            let end = seg.next_offset();
            let want: Vec<AbortedTxn> = model
                .aborted
                .iter()
                .filter(|t| (seg.base_offset()..end).contains(&t.last_offset))
                .copied()
                .collect();
            assert_eq!(
                seg.txn_index().entries(),
                want,
                "{path} segment {}",
                seg.base_offset()
            );
            if !want.is_empty() {
                let bytes: Vec<u8> = want.iter().flat_map(|t| t.encode()).collect();
                files.insert(format!("{:020}.txnindex", seg.base_offset()), bytes);
            }
        }
        assert_eq!(txn_files(dir.path()), files);
        // Some aborted transactions span a roll (data in one segment, the
        // marker in a later one).
        let bases: Vec<i64> = p.segments().iter().map(|s| s.base_offset()).collect();
        let seg_of = |o: i64| bases.partition_point(|&b| b <= o);
        assert!(
            model
                .aborted
                .iter()
                .any(|t| seg_of(t.first_offset) != seg_of(t.last_offset)),
            "{path}: a transaction spanning segments"
        );
        // Every range: exactly the overlapping aborts (Kafka's stop rule
        // never loses one).
        let end = p.log_end();
        for from in (0..end).step_by(7) {
            for len in [1, 5, 40, 300, end] {
                let upto = (from + len).min(end);
                let want: Vec<(i64, i64)> = model
                    .aborted
                    .iter()
                    .filter(|t| t.last_offset >= from && t.first_offset < upto)
                    .map(|t| (t.producer_id, t.first_offset))
                    .collect();
                assert_eq!(
                    p.aborted_transactions(from, upto),
                    want,
                    "{path} [{from}, {upto})"
                );
            }
        }
        assert_eq!(
            p.open_transactions(),
            model.open.iter().map(|(&f, &p)| (f, p)).collect::<Vec<_>>()
        );
        assert_eq!(
            p.last_stable_offset(),
            model.open.keys().next().copied().unwrap_or(end)
        );
    }
}

#[test]
fn a_crash_rebuilds_open_transactions_and_the_txnindex() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = open(dir.path(), path);
        run(&p, &workload(300, 11), 11);
        let before = state(&p);
        let files = txn_files(dir.path());
        assert!(!before.open.is_empty());
        assert!(before.lso < before.log_end);
        // A crash: no clean close.
        drop(p);
        let p = open(dir.path(), path);
        assert_eq!(state(&p), before, "{path}: after a crash");
        assert_eq!(txn_files(dir.path()), files);
        // Without a snapshot or a recovery point: every segment is scanned
        // and every index rebuilt from the log.
        drop(p);
        let _ = std::fs::remove_file(dir.path().join("producer.snapshot"));
        std::fs::remove_file(dir.path().join("recovery-point")).expect("rm recovery point");
        for name in files.keys() {
            std::fs::remove_file(dir.path().join(name)).expect("rm txnindex");
        }
        let p = open(dir.path(), path);
        assert_eq!(state(&p), before, "{path}: rebuilt from scratch");
        assert_eq!(txn_files(dir.path()), files);
        // A torn index of a trusted segment: rebuilt, with those after it.
        p.close().expect("close");
        drop(p);
        let (name, bytes) = files.iter().next().expect("an index");
        std::fs::write(dir.path().join(name), &bytes[..bytes.len() - 5]).expect("tear");
        let p = Partition::open(dir.path(), small_config(path), true).expect("reopen");
        assert_eq!(state(&p), before, "{path}: a torn index");
        assert_eq!(txn_files(dir.path()), files);
        // The state survives a producer.snapshot of the old format too: a
        // clean reopen with the snapshot removed replays the log.
        p.close().expect("close");
        drop(p);
        std::fs::remove_file(dir.path().join("producer.snapshot")).expect("rm snapshot");
        let p = Partition::open(dir.path(), small_config(path), true).expect("reopen");
        assert_eq!(state(&p), before);
    }
}

#[test]
fn a_crash_inside_an_open_transaction_after_rolls_keeps_it_open() {
    // A transaction opened in one segment, the log rolled several times,
    // and its abort marker in the active segment when the broker dies:
    // the rebuilt index entry points back at the first segment.
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path(), AppendPath::Mmap);
    p.append(&txn_batch(1, 5, 0, 0, 1), 0).expect("open");
    let mut seq = 0;
    while p.segments().len() < 4 {
        p.append(&idem_batch(seq as u64, 6, seq, 2), 0)
            .expect("plain");
        seq += 2;
    }
    drop(p);
    let p = open(dir.path(), AppendPath::Mmap);
    assert_eq!(p.open_transactions(), vec![(0, 5)]);
    assert_eq!(p.last_stable_offset(), 0);
    let marker = p
        .append_control(5, 0, false, 0, 0)
        .expect("abort")
        .base_offset;
    let end = p.log_end();
    drop(p);
    let p = open(dir.path(), AppendPath::Mmap);
    assert!(p.open_transactions().is_empty());
    assert_eq!(p.last_stable_offset(), end);
    assert_eq!(p.aborted_transactions(0, 1), vec![(5, 0)]);
    let last = p.segments().last().expect("segment").clone();
    assert_eq!(
        last.txn_index().entries(),
        vec![AbortedTxn {
            producer_id: 5,
            first_offset: 0,
            last_offset: marker,
            last_stable_offset: marker + 1
        }]
    );
}

#[test]
fn a_follower_fed_the_leaders_bytes_has_the_leaders_transactions() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = open(&dir.path().join("leader"), path);
        run(&leader, &workload(300, 3), 3);
        let follower = open(&dir.path().join("follower"), path);
        // Fetch sizes that cut batches and span rolls.
        replicate_upto(&leader, &follower, i64::MAX, 2500);
        assert_eq!(state(&follower), state(&leader), "{path}");
        assert_eq!(
            txn_files(&dir.path().join("follower")),
            txn_files(&dir.path().join("leader"))
        );
        // And after both crash.
        let want = state(&leader);
        drop((leader, follower));
        let follower = open(&dir.path().join("follower"), path);
        assert_eq!(state(&follower), want, "{path}: follower after a crash");
    }
}

#[test]
fn truncation_leaves_the_state_of_the_shorter_log() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = open(&dir.path().join("leader"), path);
        run(&leader, &workload(250, 5), 5);
        let end = leader.log_end();
        for (i, cut) in [end - 1, end * 3 / 4, end / 2 + 3, end / 3, 5, 0]
            .into_iter()
            .enumerate()
        {
            // A follower with everything, truncated to `cut`...
            let f = open(&dir.path().join(format!("cut-{i}")), path);
            replicate_upto(&leader, &f, i64::MAX, 4000);
            f.truncate_to(cut).expect("truncate");
            // ...has the state of one that only ever had the batches below.
            let r = open(&dir.path().join(format!("ref-{i}")), path);
            replicate_upto(&leader, &r, cut, 4000);
            assert_eq!(f.log_end(), r.log_end(), "{path} cut {cut}");
            assert_eq!(state(&f), state(&r), "{path} cut {cut}");
            assert_eq!(
                txn_files(&dir.path().join(format!("cut-{i}"))),
                txn_files(&dir.path().join(format!("ref-{i}"))),
                "{path} cut {cut}"
            );
            // Growing again from the leader converges, and a crash after
            // the truncation reopens the same.
            let want_ref = state(&r);
            drop(f);
            let f = open(&dir.path().join(format!("cut-{i}")), path);
            assert_eq!(state(&f), want_ref, "{path} cut {cut}: reopened");
            replicate_upto(&leader, &f, i64::MAX, 4000);
            assert_eq!(state(&f), state(&leader), "{path} cut {cut}: regrown");
        }
        // A full truncation forgets every transaction.
        let f = open(&dir.path().join("full"), path);
        replicate_upto(&leader, &f, i64::MAX, 4000);
        f.truncate_fully_and_start_at(end + 10)
            .expect("full truncation");
        assert!(f.open_transactions().is_empty());
        assert_eq!(f.last_stable_offset(), end + 10);
        assert!(txn_files(&dir.path().join("full")).is_empty());
        assert!(f.aborted_transactions(0, i64::MAX).is_empty());
    }
}

#[test]
fn retention_deletes_txnindex_files_with_their_segments() {
    let dir = tempfile::tempdir().expect("dir");
    let config = LogConfig {
        retention_bytes: Some(40 * 1024),
        ..small_config(AppendPath::Pwrite)
    };
    let p = open_with(dir.path(), config);
    let model = run(&p, &workload(400, 9), 9);
    let before = txn_files(dir.path());
    assert!(before.len() >= 3);
    let deleted = p.apply_retention().expect("retention");
    assert!(deleted > 0);
    let start = p.log_start();
    let after = txn_files(dir.path());
    for name in before.keys() {
        let base: i64 = name[..20].parse().expect("base");
        assert_eq!(after.contains_key(name), base >= start, "{name}");
    }
    // Only the aborts whose markers are still in the log are listed.
    let want: Vec<(i64, i64)> = model
        .aborted
        .iter()
        .filter(|t| t.last_offset >= start)
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    assert_eq!(p.aborted_transactions(start, p.log_end()), want);
    // DeleteRecords moves the start; retention then takes the segments
    // wholly below it, with their indexes.
    let mid = p.segments()[2].base_offset();
    p.delete_records_before(mid).expect("delete records");
    p.apply_retention().expect("retention");
    assert_eq!(p.segments()[0].base_offset(), mid);
    assert!(
        txn_files(dir.path())
            .keys()
            .all(|n| n[..20].parse::<i64>().expect("base") >= mid)
    );
    // The open transactions are the log's still: the LSO never falls
    // below the log start.
    assert!(p.last_stable_offset() >= p.log_start());
}
