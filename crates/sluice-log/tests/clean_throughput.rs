//! Cleaner throughput, by hand: `cargo test --release -p sluice-log --test
//! clean_throughput -- --ignored --nocapture` (SLUICE_TP_MB sets the dirty
//! log's size, 256 by default; SLUICE_TP_CODEC its codec, 0–4; SLUICE_TP_KEYS
//! its distinct keys, 20,000). Prints MB/s
//! of dirty log cleaned and the pass's stats.

use std::time::Instant;

use sluice_log::cleaner::{RecordSpec, build_batch};
use sluice_log::{CleanerConfig, CleanupPolicy, FlushPolicy, LogConfig, Partition};

#[test]
#[ignore]
fn cleaner_throughput() {
    let mb: u64 = std::env::var("SLUICE_TP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let codec: u8 = std::env::var("SLUICE_TP_CODEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir_in(std::env::var("SLUICE_TP_DIR").unwrap_or_else(|_| ".".into()))
        .expect("dir");
    let config = LogConfig {
        segment_bytes: 64 << 20,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        flush: FlushPolicy::Os,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..LogConfig::default()
    };
    let p = Partition::open(&dir.path().join("tp-0"), config, false).expect("open");
    let keys: u64 = std::env::var("SLUICE_TP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // Values of 64 symbols: compressible about as much as real payloads.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut value = || -> Vec<u8> {
        (0..1000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b'0' + (seed % 64) as u8
            })
            .collect()
    };
    let mut n = 0u64;
    let start = Instant::now();
    while p.size_bytes() < mb << 20 {
        let ks: Vec<String> = (0..16)
            .map(|i| format!("key-{:08}", (n * 16 + i) * 7919 % keys))
            .collect();
        let values: Vec<Vec<u8>> = (0..16).map(|_| value()).collect();
        let specs: Vec<RecordSpec<'_>> = ks
            .iter()
            .zip(&values)
            .map(|(k, v)| RecordSpec {
                key: Some(k.as_bytes()),
                value: Some(v),
                timestamp_delta: 0,
            })
            .collect();
        p.append(&build_batch(sluice_log::now_ms(), &specs, codec), 0)
            .expect("append");
        n += 1;
    }
    let dirty = p.cleanable(sluice_log::now_ms()).dirty_bytes;
    eprintln!("wrote {} MB in {:?}", p.size_bytes() >> 20, start.elapsed());
    let start = Instant::now();
    let s = p
        .clean(&CleanerConfig::default(), sluice_log::now_ms())
        .expect("clean")
        .expect("pass");
    let took = start.elapsed();
    eprintln!(
        "cleaned {:.0} MB of dirty log in {:.2} s: {:.0} MB/s (map {:?}, {} keys, read {} MB, wrote {} MB, removed {} of {} records)",
        dirty as f64 / 1e6,
        took.as_secs_f64(),
        dirty as f64 / 1e6 / took.as_secs_f64(),
        s.map_duration,
        s.map_entries,
        s.bytes_read >> 20,
        s.bytes_written >> 20,
        s.records_removed,
        s.records_read
    );
}
