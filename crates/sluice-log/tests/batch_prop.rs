//! Property tests of the two decoders that take bytes from outside: record
//! batch validation (a Produce request's records) and log recovery (a
//! segment after a crash). The fuzz targets (fuzz/) run the same code on
//! arbitrary bytes; these run in `cargo test`.

mod common;

use common::{as_stored, read_all, small_config};
use proptest::prelude::*;
use sluice_log::batch::{self, BatchError};
use sluice_log::{AppendPath, Partition};

fn values() -> impl Strategy<Value = Vec<(i64, Vec<u8>)>> {
    proptest::collection::vec(
        (0i64..10_000, proptest::collection::vec(any::<u8>(), 0..200)),
        1..20,
    )
}

fn build(records: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(i64, &[u8])> = records.iter().map(|(d, v)| (*d, v.as_slice())).collect();
    batch::build_batch_with_deltas(1_700_000_000_000, &refs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Built batches validate, alone and concatenated, and say what was built.
    #[test]
    fn built_batches_round_trip_through_validation(
        batches in proptest::collection::vec(values(), 1..5)
    ) {
        let built: Vec<Vec<u8>> = batches.iter().map(|b| build(b)).collect();
        let all = built.concat();
        let split = batch::split_batches(&all).expect("valid batches");
        prop_assert_eq!(split.len(), batches.len());
        let mut at = 0;
        for ((start, header), records) in split.iter().zip(&batches) {
            prop_assert_eq!(*start, at);
            prop_assert_eq!(header.record_count as usize, records.len());
            let max_delta = records.iter().map(|(d, _)| *d).max().unwrap_or(0);
            prop_assert_eq!(header.max_timestamp, 1_700_000_000_000 + max_delta);
            at += header.total_len().expect("length");
        }
    }

    /// Any single changed byte under the CRC is caught (CRC or structure).
    #[test]
    fn a_changed_byte_under_the_crc_is_refused(
        records in values(),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut b = build(&records);
        let at = 21 + pick.index(b.len() - 21);
        b[at] ^= flip;
        prop_assert!(batch::validate(&b).is_err(), "byte {} changed", at);
    }

    /// A header that lies about its records is refused even with its CRC fixed.
    #[test]
    fn a_record_count_that_lies_is_refused_even_with_a_good_crc(
        records in values(),
        claimed in 1i32..100,
    ) {
        prop_assume!(claimed as usize != records.len());
        let mut b = build(&records);
        b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
        b[57..61].copy_from_slice(&claimed.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let refused = matches!(batch::validate(&b), Err(BatchError::BadRecord { .. }));
        prop_assert!(refused);
    }

    /// A segment torn at any byte, or followed by any garbage, recovers to
    /// exactly the whole batches before the damage, and appends go on
    /// right after them.
    #[test]
    fn recovery_keeps_exactly_the_whole_batches_before_the_damage(
        batches in proptest::collection::vec(values(), 1..8),
        cut in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("t-0");
        let config = small_config(AppendPath::Pwrite);
        let mut stored = Vec::new();
        {
            let p = Partition::open(&pdir, config.clone(), false).expect("open");
            for b in &batches {
                let built = build(b);
                let info = p.append(&built, 0).expect("append");
                stored.push((info.base_offset, as_stored(built, info.base_offset, 0)));
            }
            // Dropped without close: an unclean shutdown.
        }
        let segments: Vec<_> = std::fs::read_dir(&pdir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        let last = segments.into_iter().max().expect("a segment");
        let bytes = std::fs::read(&last).expect("segment");
        let keep = cut.index(bytes.len() + 1);
        let mut damaged = bytes[..keep].to_vec();
        damaged.extend_from_slice(&garbage);
        std::fs::write(&last, &damaged).expect("damage");
        // Which of the stored batches lie wholly before the damage?
        let first_in_last: i64 = last
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base offset");
        // A batch of the last segment survives when its bytes are still
        // all there: wholly before the cut — or after it, when the garbage
        // happens to repeat the bytes it replaced (runs of zeros do), in
        // which case nothing was damaged and recovery rightly keeps it.
        let mut within = 0usize;
        let mut intact = true;
        let expected: Vec<&(i64, Vec<u8>)> = stored
            .iter()
            .filter(|(base, b)| {
                if *base < first_in_last {
                    return true;
                }
                let (start, end) = (within, within + b.len());
                within = end;
                intact = intact && damaged.get(start..end) == bytes.get(start..end);
                intact
            })
            .collect();
        let p = Partition::open(&pdir, config, false).expect("recover");
        let got = read_all(&p);
        prop_assert_eq!(got.len(), expected.len());
        for ((_, bytes), (_, want)) in got.iter().zip(&expected) {
            prop_assert_eq!(bytes, want);
        }
        let end = p.log_end();
        let next = build(&[(0, b"after".to_vec())]);
        prop_assert_eq!(p.append(&next, 0).expect("append after recovery").base_offset, end);
    }
}

/// The case the property test found (a CI run): the cut falls in a run of
/// zeros at a batch's end and the garbage is zeros again, so the segment is
/// byte for byte what it was and recovery keeps every batch.
#[test]
fn a_cut_the_garbage_repeats_damages_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let pdir = dir.path().join("t-0");
    let config = small_config(AppendPath::Pwrite);
    {
        let p = Partition::open(&pdir, config.clone(), false).expect("open");
        for i in 0..3u8 {
            p.append(&build(&[(i64::from(i), vec![0u8; 64])]), 0)
                .expect("append");
        }
    }
    let seg = pdir.join("00000000000000000000.log");
    let bytes = std::fs::read(&seg).expect("segment");
    let tail = bytes.iter().rev().take_while(|b| **b == 0).count();
    assert!(tail >= 8, "the last batch ends in zeros");
    let mut damaged = bytes[..bytes.len() - 8].to_vec();
    damaged.extend_from_slice(&[0u8; 8]);
    assert_eq!(damaged, bytes);
    std::fs::write(&seg, &damaged).expect("damage");
    let p = Partition::open(&pdir, config, false).expect("recover");
    assert_eq!(read_all(&p).len(), 3);
}
