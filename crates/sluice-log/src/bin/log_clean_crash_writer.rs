//! A writer for the cleaner's crash test: appends keyed batches (some
//! tombstones, every codec) to the compacted topic `cc` and cleans it, over
//! and over, printing `ACK <base offset> <run> <n>` after each append and
//! `PASS <cleaned to>` after each pass. Passes are throttled so that most of
//! the writer's time is spent inside one; the test kills it with SIGKILL.
//!
//! Usage: log_clean_crash_writer DATA_DIR RUN

use std::io::Write;
use std::time::Duration;

use sluice_log::cleaner::{RecordSpec, build_batch};
use sluice_log::{CleanerConfig, CleanupPolicy, FlushPolicy, Log, LogConfig, TopicOverrides};

/// Distinct keys the writer uses.
pub const KEYS: u64 = 40;
/// Records per batch.
pub const RECORDS: u64 = 4;

/// Record `i` of batch `n` of run `run`: its key and value (None: a
/// tombstone). The test rebuilds them from the same numbers.
pub fn crash_record(run: u64, n: u64, i: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = (run * 7919 + n * RECORDS + i) % KEYS;
    let value =
        (!(n + i).is_multiple_of(9)).then(|| format!("r{run} n{n} i{i} ").repeat(12).into_bytes());
    (format!("key{key}").into_bytes(), value)
}

/// Batch `n` of run `run`, compressed with codec `n % 5`.
pub fn crash_batch(run: u64, n: u64) -> Vec<u8> {
    let recs: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        (0..RECORDS).map(|i| crash_record(run, n, i)).collect();
    let specs: Vec<RecordSpec<'_>> = recs
        .iter()
        .map(|(k, v)| RecordSpec {
            key: Some(k),
            value: v.as_deref(),
            timestamp_delta: 0,
        })
        .collect();
    build_batch(sluice_log::now_ms(), &specs, (n % 5) as u8)
}

/// The log settings of the test: small segments, so a pass has many groups.
pub fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 24 * 1024,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 1024,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// The topic's overrides: compacted, always due, tombstones kept a day.
pub fn crash_overrides() -> TopicOverrides {
    [
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "86400000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The cleaner's settings: throttled to a few MB/s.
pub fn crash_cleaner() -> CleanerConfig {
    CleanerConfig {
        dedupe_buffer_bytes: 1 << 20,
        io_buffer_bytes: 16 * 1024,
        io_max_bytes_per_second: Some(1_500_000),
        ..CleanerConfig::default()
    }
}

/// As [`crash_cleaner`], unthrottled (the test's own passes).
pub fn crash_cleaner_unthrottled() -> CleanerConfig {
    CleanerConfig {
        io_max_bytes_per_second: None,
        ..crash_cleaner()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: log_clean_crash_writer DATA_DIR RUN");
        std::process::exit(2);
    }
    let run: u64 = args[2].parse().unwrap_or(0);
    let log = Log::open(std::path::Path::new(&args[1]), crash_config()).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(1)
    });
    if log.partition("cc", 0).is_none() {
        log.create_topic_with("cc", 1, &crash_overrides())
            .unwrap_or_else(|e| {
                eprintln!("create: {e}");
                std::process::exit(1)
            });
    }
    let Some(p) = log.partition("cc", 0) else {
        std::process::exit(1)
    };
    assert!(
        p.config().cleanup_policy
            == CleanupPolicy {
                delete: false,
                compact: true
            }
    );
    let mut out = std::io::stdout().lock();
    let cleaner = crash_cleaner();
    let mut n = 0u64;
    loop {
        for _ in 0..40 {
            match p.append(&crash_batch(run, n), 0) {
                Ok(info) => {
                    // One write per line: a pipe write under PIPE_BUF is atomic.
                    let line = format!("ACK {} {run} {n}\n", info.base_offset);
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("append: {e}");
                    std::process::exit(1);
                }
            }
            n += 1;
        }
        match p.clean(&cleaner, sluice_log::now_ms()) {
            Ok(Some(s)) => {
                let _ = writeln!(out, "PASS {}", s.cleaned_to);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                eprintln!("clean: {e}");
                std::process::exit(1);
            }
        }
    }
}
