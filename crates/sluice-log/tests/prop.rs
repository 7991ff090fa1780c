//! Property tests: random sequences of appends, rolls (small segments),
//! retention and reopens (clean and unclean) give back exactly the batches
//! appended, at the offsets assigned, through every lookup.

mod common;

use common::{as_stored, batch, read_all, small_config};
use proptest::prelude::*;
use sluice_log::{AppendPath, Log, LogConfig};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Retain { keep_bytes: u64 },
    ReopenClean,
    ReopenUnclean,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..900).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        1 => (20_000u64..80_000).prop_map(|keep_bytes| Op::Retain { keep_bytes }),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenUnclean),
    ]
}

fn run(path: AppendPath, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("dir");
    let config = small_config(path);
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    log.create_topic("p", 1).expect("create");
    // The model: (base offset, stored bytes, timestamp) of every batch still in the log.
    let mut model: Vec<(i64, Vec<u8>, i64)> = Vec::new();
    let mut next = 0i64;
    let mut seed = 0u64;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                seed += 1;
                let ts = 1_000 + seed as i64 * 3;
                let b = batch(seed, records, value_len, ts);
                let p = log.partition("p", 0).expect("partition");
                let info = p.append(&b, 5).expect("append");
                prop_assert_eq!(info.base_offset, next);
                model.push((next, as_stored(b, next, 5), ts));
                next += records as i64;
            }
            Op::Retain { keep_bytes } => {
                drop(log);
                log = Log::open(
                    dir.path(),
                    LogConfig {
                        retention_bytes: Some(keep_bytes),
                        ..config.clone()
                    },
                )
                .expect("reopen with retention");
                log.apply_retention().expect("retention");
                let start = log.partition("p", 0).expect("p").log_start();
                model.retain(|(base, _, _)| *base >= start);
            }
            Op::ReopenClean => {
                log.close().expect("close");
                drop(log);
                log = Log::open(dir.path(), config.clone()).expect("reopen");
                prop_assert!(log.recovered_clean());
            }
            Op::ReopenUnclean => {
                drop(log);
                log = Log::open(dir.path(), config.clone()).expect("reopen");
            }
        }
        let p = log.partition("p", 0).expect("partition");
        prop_assert_eq!(p.log_end(), next);
        let got = read_all(&p);
        prop_assert_eq!(got.len(), model.len());
        for ((h, bytes), (base, want, _)) in got.iter().zip(&model) {
            prop_assert_eq!(h.base_offset, *base);
            prop_assert_eq!(bytes, want);
        }
        // Every offset in the log resolves to the batch that holds it, and
        // every batch's timestamp resolves to its first offset.
        for (i, (base, want, ts)) in model.iter().enumerate() {
            let records = i64::from(
                sluice_log::batch::BatchHeader::parse(want)
                    .expect("h")
                    .record_count,
            );
            for off in *base..base + records {
                let s = p.read(off, 1).expect("read").slice.expect("slice");
                prop_assert_eq!(s.first_offset, *base);
            }
            if i == 0 || model[i - 1].2 < *ts {
                prop_assert_eq!(
                    p.offset_for_timestamp(*ts).expect("ts").map(|(o, _)| o),
                    Some(*base)
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mmap_log_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(AppendPath::Mmap, ops)?;
    }

    #[test]
    fn pwrite_log_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(AppendPath::Pwrite, ops)?;
    }
}
