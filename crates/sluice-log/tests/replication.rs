//! The log layer of replication: a follower copying a leader's batches
//! verbatim (`append_replicated`), leader epochs and OffsetForLeaderEpoch,
//! truncation to a divergence point (within a segment, at a boundary, below
//! the log start; reopened clean and unclean), idempotent producer state
//! across truncation, the high watermark and `read_upto`, and the
//! high-watermark checkpoint — on both append paths.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{PATHS, batch, read_all, small_config};
use sluice_log::batch::{self as b, BatchError, BatchHeader};
use sluice_log::{AppendError, AppendPath, Log, Partition, ReadError};

fn open(dir: &Path, path: AppendPath) -> Partition {
    Partition::open(dir, small_config(path), false).expect("open")
}

/// What a Fetch at `offset` would carry: the leader's bytes from the batch
/// holding `offset`, up to `max` (the last batch may be cut).
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

/// Fetches from the follower's end until it has everything the leader has.
fn replicate(leader: &Partition, follower: &Partition, max: u64) {
    while follower.log_end() < leader.log_end() {
        let bytes = fetch(leader, follower.log_end(), max);
        let before = follower.log_end();
        let info = follower.append_replicated(&bytes).expect("replicate");
        assert!(info.batches > 0, "no whole batch in a fetch at {before}");
        assert_eq!(info.base_offset, before);
        assert_eq!(follower.log_end(), info.last_offset + 1);
    }
}

/// The `.log` files of a partition directory, by name.
fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read log"))
        })
        .collect()
}

fn headers(p: &Partition) -> Vec<BatchHeader> {
    read_all(p).into_iter().map(|(h, _)| h).collect()
}

/// A leader with batches of leader epochs 0, 0, 1, 1, 3 (each run several
/// batches of varied sizes, enough for a few segments).
fn leader_with_epochs(dir: &Path, path: AppendPath) -> Partition {
    let leader = open(dir, path);
    let mut seed = 0u64;
    for epoch in [0, 0, 1, 1, 3] {
        for _ in 0..8 {
            seed += 1;
            let records = 1 + (seed % 4) as usize;
            leader
                .append(
                    &batch(seed, records, 200 + (seed as usize * 37) % 900, 0),
                    epoch,
                )
                .expect("leader append");
        }
    }
    leader
}

#[test]
fn a_follower_copies_the_leader_byte_for_byte_with_its_epochs() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = leader_with_epochs(&dir.path().join("leader"), path);
        assert!(leader.segments().len() >= 3, "{path}: several segments");
        let entries = leader.epoch_entries();
        assert_eq!(
            entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        assert_eq!(entries[0], (0, 0));
        assert_eq!(leader.latest_epoch(), Some(3));
        let follower = open(&dir.path().join("follower"), path);
        assert_eq!(follower.latest_epoch(), None);
        // Fetch sizes that cut batches.
        replicate(&leader, &follower, 3001);
        assert_eq!(follower.log_end(), leader.log_end());
        assert_eq!(follower.epoch_entries(), entries);
        assert_eq!(headers(&follower), headers(&leader));
        // OffsetForLeaderEpoch answers alike.
        for epoch in -1..5 {
            assert_eq!(
                follower.end_offset_for_epoch(epoch),
                leader.end_offset_for_epoch(epoch),
                "{path} epoch {epoch}"
            );
        }
        assert_eq!(leader.end_offset_for_epoch(0), (0, entries[1].1));
        assert_eq!(leader.end_offset_for_epoch(2), (1, entries[2].1));
        assert_eq!(leader.end_offset_for_epoch(3), (3, leader.log_end()));
        assert_eq!(leader.end_offset_for_epoch(4), (-1, -1));
        leader.close().expect("close");
        follower.close().expect("close");
        let (l, f) = (
            log_files(&dir.path().join("leader")),
            log_files(&dir.path().join("follower")),
        );
        assert!(l.len() >= 3);
        assert_eq!(l, f, "{path}: segments differ");
        // The checkpoint is Kafka's text, and survives a reopen.
        let text = std::fs::read_to_string(dir.path().join("follower/leader-epoch-checkpoint"))
            .expect("checkpoint");
        let mut want = format!("0\n{}\n", entries.len());
        for (e, s) in &entries {
            want.push_str(&format!("{e} {s}\n"));
        }
        assert_eq!(text, want);
        let again = Partition::open(&dir.path().join("follower"), small_config(path), true)
            .expect("reopen");
        assert_eq!(again.epoch_entries(), entries);
    }
}

#[test]
fn a_diverged_follower_truncates_to_the_leaders_epoch_end_and_converges() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = open(&dir.path().join("leader"), path);
        let follower = open(&dir.path().join("follower"), path);
        // Epochs 0 and 1, copied to the follower.
        for i in 0..30u64 {
            let epoch = if i < 12 { 0 } else { 1 };
            leader
                .append(&batch(i, 2, 600, 0), epoch)
                .expect("leader append");
        }
        replicate(&leader, &follower, 5000);
        let common = leader.log_end();
        // The follower (the old epoch-1 leader) took batches the leader
        // never got, across a segment boundary.
        let segments_before = follower.segments().len();
        for i in 0..30u64 {
            follower
                .append(&batch(1000 + i, 3, 500, 0), 1)
                .expect("diverged append");
        }
        assert!(follower.segments().len() > segments_before);
        // The leader moved to epoch 2 and appended other batches.
        for i in 0..10u64 {
            leader
                .append(&batch(2000 + i, 1, 700, 0), 2)
                .expect("leader epoch 2");
        }
        // KIP-101: the follower asks for the end of its latest epoch.
        let latest = follower.latest_epoch().expect("latest epoch");
        assert_eq!(latest, 1);
        let (epoch, end) = leader.end_offset_for_epoch(latest);
        assert_eq!((epoch, end), (1, common));
        let new_end = follower
            .truncate_to(end.min(follower.log_end()))
            .expect("truncate");
        assert_eq!(new_end, common);
        assert_eq!(follower.log_end(), common);
        assert_eq!(follower.latest_epoch(), Some(1));
        replicate(&leader, &follower, 4000);
        assert_eq!(headers(&follower), headers(&leader));
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        leader.close().expect("close");
        follower.close().expect("close");
        assert_eq!(
            log_files(&dir.path().join("leader")),
            log_files(&dir.path().join("follower")),
            "{path}"
        );
    }
}

/// 60 batches of 1..=3 records of 500 bytes (small segments: ~15 a segment).
fn filled(dir: &Path, path: AppendPath) -> (Partition, Vec<BatchHeader>) {
    let p = open(dir, path);
    for i in 0..60u64 {
        p.append(&batch(i, 1 + (i % 3) as usize, 500, 1000 + i as i64), 0)
            .expect("append");
    }
    let hs = headers(&p);
    (p, hs)
}

/// Checks that the log holds exactly `want` and serves every offset.
fn check_log(p: &Partition, want: &[BatchHeader], what: &str) {
    let got = headers(p);
    assert_eq!(got, want, "{what}");
    let end = want.last().map_or(p.log_start(), |h| h.last_offset() + 1);
    assert_eq!(p.log_end(), end, "{what}: log end");
    for h in want {
        for o in h.base_offset..=h.last_offset() {
            if o < p.log_start() {
                continue;
            }
            let s = p.read(o, 100).expect("read").slice.expect("slice");
            assert_eq!(s.first_offset, h.base_offset, "{what}: read at {o}");
        }
    }
    assert!(p.read(end, 100).expect("read end").slice.is_none());
    assert!(matches!(
        p.read(end + 1, 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

/// Every non-zero entry of the segment's `.index` and `.timeindex` points
/// below `size` / `end`, in order.
fn assert_index_within(dir: &Path, base: i64, size: u64, end: i64) {
    use sluice_log::index::{parse_offset_entry, parse_time_entry};
    let index = std::fs::read(dir.join(format!("{base:020}.index"))).expect("index");
    let mut prev = 0u32;
    for e in index.chunks_exact(8) {
        let (rel, pos) = parse_offset_entry(e.try_into().expect("entry"));
        if (rel, pos) == (0, 0) {
            prev = u32::MAX;
            continue;
        }
        assert!(prev != u32::MAX, "an entry after a zero one");
        assert!(
            u64::from(pos) < size && pos > prev,
            "entry at {pos} of {size}"
        );
        assert!(base + i64::from(rel) < end);
        prev = pos;
    }
    let time = std::fs::read(dir.join(format!("{base:020}.timeindex"))).expect("timeindex");
    for e in time.chunks_exact(12) {
        let (ts, rel) = parse_time_entry(e.try_into().expect("entry"));
        if (ts, rel) != (0, 0) {
            assert!(base + i64::from(rel) < end, "time entry past the end");
        }
    }
}

#[test]
fn truncation_inside_a_segment_at_a_boundary_and_below_the_start() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("t-0");
        let (p, all) = filled(&pdir, path);
        let segments = p.segments().len();
        assert!(segments >= 4, "{path}");
        // At or past the end: nothing happens.
        assert_eq!(p.truncate_to(p.log_end()).expect("noop"), p.log_end());
        assert_eq!(p.truncate_to(i64::MAX).expect("noop"), p.log_end());
        // Inside a batch of the last segment: the batch goes whole.
        let victim = all[all.len() - 2];
        assert!(victim.last_offset() > victim.base_offset);
        let end = p.truncate_to(victim.base_offset + 1).expect("truncate");
        assert_eq!(end, victim.base_offset, "{path}");
        let mut want: Vec<BatchHeader> = all[..all.len() - 2].to_vec();
        check_log(&p, &want, "inside the last segment");
        // Across segments, inside a batch in the middle of an older one.
        let seg_bases: Vec<i64> = p.segments().iter().map(|s| s.base_offset()).collect();
        let mid = all
            .iter()
            .position(|h| h.base_offset > seg_bases[1] && h.last_offset() < seg_bases[2] - 1)
            .expect("a batch inside segment 1");
        let end = p.truncate_to(all[mid].last_offset()).expect("truncate");
        assert_eq!(end, all[mid].base_offset);
        assert_eq!(p.segments().len(), 2, "{path}: later segments deleted");
        want.truncate(mid);
        check_log(&p, &want, "inside an older segment");
        assert!(!pdir.join(format!("{:020}.log", seg_bases[2])).exists());
        // The cut segment's pre-allocated indexes keep no entry for the cut
        // bytes (a later reopen that trusts them would take them as valid).
        let cut = &p.segments()[1];
        assert_index_within(&pdir, cut.base_offset(), cut.size(), p.log_end());
        // New appends continue the shorter log, and roll normally.
        for i in 0..25u64 {
            let info = p.append(&batch(500 + i, 2, 400, 0), 0).expect("append");
            assert_eq!(
                info.base_offset,
                want.last().map_or(0, |h| h.last_offset() + 1)
            );
            want.push(headers(&p).pop().expect("appended"));
        }
        check_log(&p, &want, "regrown");
        // At a segment boundary: the segment there stays, empty.
        let bases: Vec<i64> = p.segments().iter().map(|s| s.base_offset()).collect();
        let boundary = bases[2];
        assert_eq!(p.truncate_to(boundary).expect("truncate"), boundary);
        assert_eq!(p.segments().len(), 3);
        assert_eq!(p.segments().last().expect("active").size(), 0);
        want.retain(|h| h.last_offset() < boundary);
        check_log(&p, &want, "at a boundary");
        // Unclean and clean reopens give the same log, which takes appends.
        drop(p);
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen unclean");
        check_log(&p, &want, "reopened unclean");
        p.append(&batch(900, 1, 100, 0), 0).expect("append");
        want.push(headers(&p).pop().expect("appended"));
        p.close().expect("close");
        let p = Partition::open(&pdir, small_config(path), true).expect("reopen clean");
        check_log(&p, &want, "reopened clean");
        // Below the log start: the log empties and starts at the offset.
        let start = want[want.len() / 2].base_offset + 1;
        p.delete_records_before(start).expect("delete records");
        p.set_high_watermark(start + 3);
        p.truncate_to(start - 4).expect("truncate below the start");
        assert_eq!(
            (p.log_start(), p.log_end(), p.high_watermark()),
            (start - 4, start - 4, start - 4)
        );
        assert_eq!(p.segments().len(), 1);
        assert_eq!(p.epoch_entries(), vec![]);
        check_log(&p, &[], "emptied");
        let info = p.append(&batch(901, 2, 100, 0), 5).expect("append");
        assert_eq!(info.base_offset, start - 4);
        assert_eq!(p.epoch_entries(), vec![(5, start - 4)]);
        let want = headers(&p);
        drop(p);
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen");
        assert_eq!(p.log_start(), start - 4);
        check_log(&p, &want, "restarted log reopened");
        assert_eq!(p.epoch_entries(), vec![(5, start - 4)]);
        // Fully, forward past the end.
        p.truncate_fully_and_start_at(10_000).expect("start at");
        drop(p);
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen");
        assert_eq!((p.log_start(), p.log_end()), (10_000, 10_000));
    }
}

#[test]
fn a_truncated_and_regrown_log_reopens_whole_after_a_crash() {
    for path in PATHS {
        for clean in [false, true] {
            let dir = tempfile::tempdir().expect("dir");
            let pdir = dir.path().join("t-0");
            let (p, all) = filled(&pdir, path);
            // Cut inside the second segment, then grow with differently
            // sized batches past where the old ones were.
            let seg1 = p.segments()[1].base_offset();
            let cut = all
                .iter()
                .find(|h| h.base_offset > seg1 + 3)
                .expect("a batch")
                .base_offset;
            p.truncate_to(cut).expect("truncate");
            for i in 0..50u64 {
                p.append(&batch(3000 + i, 5, 150, 0), 0).expect("append");
            }
            let want = headers(&p);
            if clean {
                p.close().expect("close");
            }
            drop(p);
            let p = Partition::open(&pdir, small_config(path), clean).expect("reopen");
            check_log(&p, &want, &format!("{path} clean={clean}"));
            // Time lookups agree with the batches.
            for h in &want {
                if let Some((o, _)) = p.offset_for_timestamp(h.max_timestamp).expect("lookup") {
                    assert!(o <= h.last_offset());
                }
            }
        }
    }
}

fn idempotent(seed: u64, seq: i32) -> Vec<u8> {
    let mut v = batch(seed, 2, 200, 0);
    b::set_producer(&mut v, 7, 0, seq);
    v
}

#[test]
fn producer_state_follows_truncation() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("t-0");
        let p = open(&pdir, path);
        // Sequences 0, 2, 4, ... (two records a batch), over a few segments.
        let mut infos = Vec::new();
        for i in 0..40i32 {
            let info = p.append(&idempotent(i as u64, i * 2), 0).expect("append");
            assert!(!info.duplicate);
            infos.push(info);
        }
        assert!(p.segments().len() >= 2);
        // Cut the last three batches (inside the active segment): their
        // sequences are new again, not duplicates.
        p.truncate_to(infos[37].base_offset).expect("truncate");
        let again = p.append(&idempotent(37, 74), 0).expect("re-append");
        assert!(!again.duplicate, "{path}: a cut batch seen as a duplicate");
        assert_eq!(again.base_offset, infos[37].base_offset);
        // Its retry is a duplicate of the new one; a gap is refused.
        let retry = p.append(&idempotent(37, 74), 0).expect("retry");
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, again.base_offset);
        assert!(matches!(
            p.append(&idempotent(99, 80), 0),
            Err(AppendError::Sequence(_))
        ));
        // Across segments (the snapshot from the last roll covers offsets
        // that go): rebuilt from the log.
        let seg_base = p.segments().last().expect("active").base_offset();
        let k = infos
            .iter()
            .position(|i| i.base_offset < seg_base && i.base_offset > 0)
            .expect("a batch in an older segment");
        let k = (k + 3).min(
            infos
                .iter()
                .rposition(|i| i.base_offset < seg_base)
                .expect("older"),
        );
        p.truncate_to(infos[k].base_offset)
            .expect("truncate across segments");
        let next = p
            .append(&idempotent(k as u64, k as i32 * 2), 0)
            .expect("re-append");
        assert!(!next.duplicate);
        assert!(matches!(
            p.append(&idempotent(0, (k as i32 + 5) * 2), 0),
            Err(AppendError::Sequence(_))
        ));
        // The previous batch is still recognised as a duplicate.
        let dup = p
            .append(&idempotent(k as u64 - 1, (k as i32 - 1) * 2), 0)
            .expect("older retry");
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, infos[k - 1].base_offset);
        // And all of it after an unclean reopen.
        drop(p);
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen");
        let n = p
            .append(&idempotent(k as u64 + 1, (k as i32 + 1) * 2), 0)
            .expect("next after reopen");
        assert!(!n.duplicate);
    }
}

#[test]
fn a_follower_keeps_the_leaders_producer_state() {
    let dir = tempfile::tempdir().expect("dir");
    let leader = open(&dir.path().join("leader"), AppendPath::Pwrite);
    for i in 0..10i32 {
        leader
            .append(&idempotent(i as u64, i * 2), 4)
            .expect("append");
    }
    let follower = open(&dir.path().join("follower"), AppendPath::Mmap);
    replicate(&leader, &follower, 1500);
    // The producer fails over to the follower: a retry of its last batch is
    // a duplicate, the next sequence appends, a gap is refused.
    let dup = follower.append(&idempotent(9, 18), 5).expect("retry");
    assert!(dup.duplicate);
    assert!(
        !follower
            .append(&idempotent(10, 20), 5)
            .expect("next")
            .duplicate
    );
    assert!(matches!(
        follower.append(&idempotent(11, 40), 5),
        Err(AppendError::Sequence(_))
    ));
    assert_eq!(follower.epoch_entries().last().map(|e| e.0), Some(5));
}

#[test]
fn append_replicated_refuses_bad_input_and_leaves_the_log_unchanged() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = open(&dir.path().join("leader"), path);
        for i in 0..6u64 {
            leader.append(&batch(i, 2, 300, 0), 1).expect("append");
        }
        let bytes = fetch(&leader, 0, 1 << 20);
        let hs = headers(&leader);
        let len0 = hs[0].total_len().expect("len");
        let len1 = hs[1].total_len().expect("len");
        let follower = open(&dir.path().join("follower"), path);
        follower
            .append_replicated(&bytes[..len0 + len1])
            .expect("two batches");
        let state = |p: &Partition| (p.log_end(), p.size_bytes(), p.epoch_entries());
        let before = state(&follower);
        let rest = &bytes[len0 + len1..];
        // A flipped byte inside the CRC's range.
        let mut bad = rest.to_vec();
        bad[30] ^= 0x10;
        let err = follower.append_replicated(&bad).expect_err("bad crc");
        assert!(
            matches!(
                err,
                AppendError::InvalidBatch(BatchError::CrcMismatch { .. })
            ),
            "{err}"
        );
        // A good batch then a bad one: neither.
        let mut mixed = rest.to_vec();
        let second = len0 + len1 + hs[2].total_len().expect("len") + 40;
        mixed[second - len0 - len1] ^= 1;
        assert!(follower.append_replicated(&mixed).is_err());
        assert_eq!(state(&follower), before);
        // Going backwards: the first batch again.
        let err = follower
            .append_replicated(&bytes[..len0])
            .expect_err("backwards");
        assert!(
            matches!(err, AppendError::OffsetMismatch { expected, got: 0 } if expected == before.0),
            "{err}"
        );
        // Batches out of order among themselves.
        let l2 = hs[2].total_len().expect("len");
        let l3 = hs[3].total_len().expect("len");
        let mut swapped = rest[l2..l2 + l3].to_vec();
        swapped.extend_from_slice(&rest[..l2]);
        let err = follower
            .append_replicated(&swapped)
            .expect_err("out of order");
        assert!(matches!(err, AppendError::OffsetMismatch { .. }), "{err}");
        assert_eq!(state(&follower), before);
        // Nothing whole: nothing appended, and said so.
        let info = follower.append_replicated(&rest[..40]).expect("partial");
        assert_eq!(
            (info.batches, info.base_offset, info.last_offset),
            (0, before.0, before.0 - 1)
        );
        let info = follower.append_replicated(&[]).expect("empty");
        assert_eq!(info.batches, 0);
        // The rest, with its last batch cut: all but that batch.
        let info = follower
            .append_replicated(&rest[..rest.len() - 10])
            .expect("append");
        assert_eq!(info.batches, 3);
        assert_eq!(follower.log_end(), hs[4].last_offset() + 1);
        assert_eq!(state(&follower).0, hs[4].last_offset() + 1);
    }
}

#[test]
fn replicated_batches_keep_a_compacted_leaders_gaps() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("f-0");
        let follower = open(&pdir, path);
        // Batches as a cleaned leader may hold them: offsets with holes.
        let mut next = 0i64;
        let mut want = Vec::new();
        for i in 0..40u64 {
            let mut v = batch(i, 2, 700, 0);
            b::set_base_offset(&mut v, next);
            b::set_leader_epoch(&mut v, (i / 10) as i32);
            let info = follower.append_replicated(&v).expect("append");
            assert_eq!(info.base_offset, next);
            want.push(BatchHeader::parse(&v).expect("header"));
            next += 2 + (i as i64 % 4) * 5;
        }
        assert!(follower.segments().len() > 1);
        assert_eq!(
            follower.epoch_entries(),
            vec![
                (0, 0),
                (1, want[10].base_offset),
                (2, want[20].base_offset),
                (3, want[30].base_offset)
            ]
        );
        let got = headers(&follower);
        assert_eq!(got, want);
        // A cut in a gap: the log ends after the batch before it.
        let gap = want[25].last_offset() + 2;
        assert!(gap < want[26].base_offset);
        assert_eq!(
            follower.truncate_to(gap).expect("truncate"),
            want[25].last_offset() + 1
        );
        assert_eq!(
            follower.epoch_entries(),
            vec![(0, 0), (1, want[10].base_offset), (2, want[20].base_offset)]
        );
        drop(follower);
        let follower = Partition::open(&pdir, small_config(path), false).expect("reopen");
        assert_eq!(headers(&follower), want[..26].to_vec());
        assert_eq!(follower.log_end(), want[25].last_offset() + 1);
    }
}

#[test]
fn an_empty_log_restarts_at_a_batch_straddling_its_start() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = open(&dir.path().join("leader"), path);
        for i in 0..5u64 {
            leader.append(&batch(i, 10, 50, 0), 2).expect("append");
        }
        // DeleteRecords put the leader's start inside batch [20, 29].
        leader.delete_records_before(25).expect("delete records");
        let fdir = dir.path().join("follower");
        let follower = open(&fdir, path);
        follower
            .append(&batch(99, 3, 10, 0), 0)
            .expect("stale data");
        // Out of range: start where the leader starts.
        follower
            .truncate_fully_and_start_at(leader.log_start())
            .expect("start at");
        assert_eq!((follower.log_start(), follower.log_end()), (25, 25));
        let bytes = fetch(&leader, 25, 1 << 20);
        let info = follower
            .append_replicated(&bytes)
            .expect("straddling batch");
        assert_eq!((info.base_offset, info.batches), (20, 3));
        assert_eq!((follower.log_start(), follower.log_end()), (25, 50));
        assert_eq!(follower.segments()[0].base_offset(), 20);
        assert!(matches!(
            follower.read(24, 100),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            follower
                .read(25, 100)
                .expect("read")
                .slice
                .expect("slice")
                .first_offset,
            20
        );
        drop(follower);
        let follower = Partition::open(&fdir, small_config(path), false).expect("reopen");
        assert_eq!((follower.log_start(), follower.log_end()), (25, 50));
        assert_eq!(follower.epoch_entries(), vec![(2, 25)]);
        // A batch straddling the end of a log that holds batches is refused.
        let mut v = batch(7, 4, 10, 0);
        b::set_base_offset(&mut v, 48);
        assert!(matches!(
            follower.append_replicated(&v),
            Err(AppendError::OffsetMismatch {
                expected: 50,
                got: 48
            })
        ));
    }
}

#[test]
fn read_upto_never_serves_a_batch_at_or_past_the_bound() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let (p, all) = filled(&dir.path().join("t-0"), path);
        // Never set: the high watermark is the log end.
        assert!(!p.is_high_watermark_managed());
        assert_eq!(p.high_watermark(), p.log_end());
        assert_eq!(p.read(0, 10).expect("read").high_watermark, p.log_end());
        p.append(&batch(77, 1, 10, 0), 0).expect("append");
        assert_eq!(p.high_watermark(), p.log_end());
        let all: Vec<BatchHeader> = all.into_iter().chain(headers(&p).pop()).collect();
        for upto in [
            all[7].base_offset,
            all[33].base_offset,
            all[33].base_offset + 1,
            all[50].last_offset(),
            p.log_end(),
        ] {
            for offset in 0..=p.log_end() {
                for max in [100u64, 5000, 1 << 20] {
                    let r = p.read_upto(offset, max, upto, false).expect("read_upto");
                    assert_eq!(r.high_watermark, upto.min(p.log_end()));
                    let Some(s) = r.slice else {
                        // Nothing only at or past the bound, or inside the
                        // batch straddling it.
                        let holder = all.iter().find(|h| h.last_offset() >= offset);
                        assert!(
                            offset >= upto || holder.is_none_or(|h| h.last_offset() >= upto),
                            "{path}: nothing at {offset} below {upto}"
                        );
                        continue;
                    };
                    let mut bytes = vec![0u8; s.len as usize];
                    s.segment
                        .file()
                        .read_exact_at(&mut bytes, s.position)
                        .expect("pread");
                    let mut pos = 0;
                    while pos + b::HEADER_LEN <= bytes.len() {
                        let h = BatchHeader::parse(&bytes[pos..]).expect("header");
                        assert!(
                            h.last_offset() < upto,
                            "{path}: batch {}..{} served below {upto}",
                            h.base_offset,
                            h.last_offset()
                        );
                        pos += h.total_len().expect("len");
                    }
                }
            }
        }
        assert!(matches!(
            p.read_upto(p.log_end() + 1, 100, 5, false),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let r = p.read_upto(0, 100, 0, true);
        assert!(
            r.as_ref()
                .map_or_else(|e| e.is_would_block(), |r| r.slice.is_none())
        );
        // Set: clamped to the log, lowered by truncation, managed from then on.
        p.set_high_watermark(i64::MAX);
        assert!(p.is_high_watermark_managed());
        assert_eq!(p.high_watermark(), p.log_end());
        p.set_high_watermark(all[40].base_offset);
        assert_eq!(p.high_watermark(), all[40].base_offset);
        assert_eq!(
            p.read(0, 10).expect("read").high_watermark,
            all[40].base_offset
        );
        p.append(&batch(78, 1, 10, 0), 0).expect("append");
        assert_eq!(p.high_watermark(), all[40].base_offset, "append leaves it");
        p.truncate_to(all[20].base_offset).expect("truncate");
        assert_eq!(p.high_watermark(), all[20].base_offset);
        p.set_high_watermark(-5);
        assert_eq!(p.high_watermark(), p.log_start());
    }
}

#[test]
fn the_epoch_checkpoint_is_rebuilt_when_missing_or_damaged_and_cut_to_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let pdir = dir.path().join("t-0");
    let p = leader_with_epochs(&pdir, AppendPath::Pwrite);
    let entries = p.epoch_entries();
    let end = p.log_end();
    p.close().expect("close");
    let file = pdir.join("leader-epoch-checkpoint");
    std::fs::remove_file(&file).expect("remove");
    let p = Partition::open(&pdir, small_config(AppendPath::Pwrite), true).expect("reopen");
    assert_eq!(p.epoch_entries(), entries);
    assert!(file.exists(), "rebuilt and written");
    drop(p);
    std::fs::write(&file, "0\n7\n1 2\n").expect("damage");
    let p = Partition::open(&pdir, small_config(AppendPath::Pwrite), false).expect("reopen");
    assert_eq!(p.epoch_entries(), entries);
    drop(p);
    // Entries past the log's end (a crash before the batches landed).
    let mut text = format!("0\n{}\n", entries.len() + 2);
    for (e, s) in &entries {
        text.push_str(&format!("{e} {s}\n"));
    }
    text.push_str(&format!("7 {end}\n9 {}\n", end + 40));
    std::fs::write(&file, text).expect("ahead");
    let p = Partition::open(&pdir, small_config(AppendPath::Pwrite), false).expect("reopen");
    assert_eq!(p.epoch_entries(), entries);
    assert_eq!(p.latest_epoch(), Some(3));
    // A log start past the first entries cuts them (Kafka's truncateFromStart).
    let start = entries[1].1 + 2;
    p.delete_records_before(start).expect("delete records");
    assert_eq!(p.epoch_entries(), vec![(1, start), entries[2]]);
    assert_eq!(p.end_offset_for_epoch(0), (0, start));
    // A new partition writes no checkpoint until it has an epoch.
    let fresh = open(&dir.path().join("u-0"), AppendPath::Mmap);
    assert!(!dir.path().join("u-0/leader-epoch-checkpoint").exists());
    assert!(fresh.assign_leader_epoch(4).expect("assign"));
    assert!(!fresh.assign_leader_epoch(4).expect("again"));
    assert_eq!(fresh.end_offset_for_epoch(3), (3, 0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("u-0/leader-epoch-checkpoint")).expect("text"),
        "0\n1\n4 0\n"
    );
}

#[test]
fn high_watermarks_survive_a_restart_through_the_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let config = small_config(AppendPath::Pwrite);
    let log = Log::open(dir.path(), config.clone()).expect("open");
    log.create_topic("t", 3).expect("create");
    for p in 0..3 {
        let part = log.partition("t", p).expect("partition");
        for i in 0..5u64 {
            part.append(&batch(i, 2, 100, 0), 0).expect("append");
        }
    }
    log.partition("t", 0).expect("p0").set_high_watermark(4);
    log.partition("t", 2).expect("p2").set_high_watermark(10);
    log.write_hw_checkpoint().expect("checkpoint");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("replication-offset-checkpoint")).expect("text"),
        "0\n2\nt 0 4\nt 2 10\n"
    );
    log.close().expect("close");
    let log = Log::open(dir.path(), config.clone()).expect("reopen");
    let p0 = log.partition("t", 0).expect("p0");
    let p1 = log.partition("t", 1).expect("p1");
    let p2 = log.partition("t", 2).expect("p2");
    assert!(p0.is_high_watermark_managed() && p2.is_high_watermark_managed());
    assert!(!p1.is_high_watermark_managed());
    assert_eq!(
        (
            p0.high_watermark(),
            p1.high_watermark(),
            p2.high_watermark()
        ),
        (4, 10, 10)
    );
    // A recorded high watermark past the log end (a crash took records back)
    // is the log end.
    p2.truncate_to(6).expect("truncate");
    std::fs::write(
        dir.path().join("replication-offset-checkpoint"),
        "0\n2\nt 2 10\ngone 0 3\n",
    )
    .expect("write");
    drop((p0, p1, p2));
    drop(log);
    let log = Log::open(dir.path(), config.clone()).expect("reopen");
    let p2 = log.partition("t", 2).expect("p2");
    assert_eq!(p2.high_watermark(), 6);
    assert!(
        !log.partition("t", 0)
            .expect("p0")
            .is_high_watermark_managed()
    );
    drop(p2);
    drop(log);
    std::fs::write(dir.path().join("replication-offset-checkpoint"), "0\n3\n").expect("damage");
    let err = Log::open(dir.path(), config).expect_err("damaged checkpoint");
    assert!(
        err.to_string().contains("replication-offset-checkpoint"),
        "{err}"
    );
}

#[test]
fn readers_are_not_disturbed_by_truncations_under_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = Arc::new(open(&dir.path().join("t-0"), path));
        for i in 0..40u64 {
            p.append(&batch(i, 2, 400, 0), 0).expect("append");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (p, stop, reads) = (p.clone(), stop.clone(), reads.clone());
                std::thread::spawn(move || {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ r;
                    while !stop.load(Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let (start, end) = (p.log_start(), p.log_end());
                        let offset = start + (x % (end - start + 1) as u64) as i64;
                        let got = if x & 1 == 0 {
                            p.read(offset, 3000)
                        } else {
                            p.read_upto(offset, 3000, p.high_watermark(), false)
                        };
                        // Out of range or a short read of cut bytes is fine;
                        // a panic or a signal is not.
                        if let Ok(r) = got
                            && let Some(s) = r.slice
                        {
                            let mut bytes = vec![0u8; s.len as usize];
                            let _ = s.segment.file().read_exact_at(&mut bytes, s.position);
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut x = 12345u64;
        for round in 0..30u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (start, end) = (p.log_start(), p.log_end());
            let cut = start + (x % (end - start) as u64) as i64;
            let new_end = p.truncate_to(cut).expect("truncate");
            assert!(new_end <= cut);
            // Reads from now on end at the new end.
            for (h, _) in read_all(&p) {
                assert!(h.last_offset() < new_end, "{path}: a batch past the cut");
            }
            for i in 0..(1 + x % 8) {
                p.append(&batch(round * 100 + i, 2, 300 + (x % 500) as usize, 0), 0)
                    .expect("append");
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().expect("reader panicked");
        }
        assert!(reads.load(Ordering::Relaxed) > 0);
        let want = headers(&p);
        drop(p);
        let p =
            Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("reopen");
        assert_eq!(headers(&p), want);
    }
}

/// A replica that became leader (its new epoch starts at its log end) and
/// lost the leadership before appending anything: following the next leader,
/// whose history has no such epoch, the empty epoch goes even though no
/// record does — else its fetches would name an epoch the leader never had,
/// be told they diverged, and truncate nothing, forever.
#[test]
fn an_epoch_led_without_appends_goes_when_the_replica_follows_again() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let p = leader_with_epochs(&dir.path().join("t-0"), path);
        let end = p.log_end();
        let before = p.epoch_entries();
        assert_eq!(p.latest_epoch(), Some(3), "{path}");
        assert!(p.assign_leader_epoch(5).expect("assign"), "{path}");
        assert_eq!(p.latest_epoch(), Some(5), "{path}");
        assert_eq!(p.end_offset_for_epoch(3), (3, end), "{path}");
        // The new leader's answer: epoch 3 ends at our log end.
        assert_eq!(p.truncate_to(end).expect("truncate"), end, "{path}");
        assert_eq!(p.latest_epoch(), Some(3), "{path}: the empty epoch 5 stays");
        assert_eq!(p.epoch_entries(), before, "{path}");
        assert_eq!(p.log_end(), end, "{path}: no record goes");
        // And it stays gone across a restart.
        drop(p);
        let p = open(&dir.path().join("t-0"), path);
        assert_eq!(p.epoch_entries(), before, "{path}: after reopening");
    }
}

/// A leader's append stamped with an epoch older than the newest the log
/// holds (a later leader's batches arrived by replication after this broker
/// checked its role) is refused, and the log is unchanged.
#[test]
fn a_stale_leaders_append_is_refused_after_a_newer_epoch_arrived() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let leader = leader_with_epochs(&dir.path().join("l-0"), path);
        let follower = open(&dir.path().join("f-0"), path);
        replicate(&leader, &follower, 1 << 20);
        assert_eq!(follower.latest_epoch(), Some(3), "{path}");
        let end = follower.log_end();
        match follower.append(&batch(999, 1, 100, 0), 1) {
            Err(AppendError::StaleLeaderEpoch {
                epoch: 1,
                latest: 3,
            }) => {}
            other => panic!("{path}: a stale leader's append gave {other:?}"),
        }
        assert_eq!(follower.log_end(), end, "{path}: nothing appended");
        // The current epoch (and a newer one) still append.
        follower
            .append(&batch(1000, 1, 100, 0), 3)
            .expect("epoch 3");
        follower
            .append(&batch(1001, 1, 100, 0), 4)
            .expect("epoch 4");
        assert_eq!(follower.latest_epoch(), Some(4), "{path}");
    }
}
