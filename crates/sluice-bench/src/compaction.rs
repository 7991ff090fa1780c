//! `sluice bench compaction`: what the log cleaner costs.
//!
//! - **Throughput and memory**, in process (no broker, no network): a
//!   compacted partition is filled with `dirty_bytes` of keyed updates,
//!   then cleaned pass after pass until nothing is due; MB/s of dirty log
//!   (the cleanable bytes before each pass over its time), the offset map's
//!   memory, and the process's resident growth.
//! - **A live producer's p99**, against real brokers: a backlog of keyed
//!   updates is written to a compacted topic, then a paced producer writes
//!   to another topic while the cleaner compacts the backlog, against the
//!   same producer on a broker whose cleaner is off; rounds interleave the
//!   two, and the cleaner's bytes read in each window show it was working.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use serde::Serialize;
use sluice_client::{Client, ClientError, encode_batch, plain_record};
use sluice_log::{CleanerConfig, Log, LogConfig, TopicOverrides};

use crate::harness::Machine;
use crate::load::{self, ProduceOptions};
use crate::process::BrokerLaunch;
use crate::stats::median;

/// What `sluice bench compaction` runs.
#[derive(Clone, Debug)]
pub struct CompactionScenario {
    /// The `sluice` binary the brokers run from.
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// Keyed updates written before cleaning.
    pub dirty_bytes: u64,
    /// Distinct keys the updates cycle through.
    pub keys: u64,
    pub value_bytes: usize,
    /// The cleaner's offset map memory (`log.cleaner.dedupe.buffer.size`).
    pub dedupe_buffer_bytes: usize,
    /// The live producer's records per second (100-byte records).
    pub rate: u64,
    /// How long each live-producer window lasts.
    pub run: Duration,
    pub repeats: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CleanerRun {
    pub round: usize,
    pub dirty_mb: f64,
    pub passes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub written_mb: f64,
    pub records_removed: u64,
    pub map_memory_mib: f64,
    pub map_entries: u64,
    pub rss_growth_mib: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyRun {
    pub round: usize,
    pub cleaner: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub records_per_s: f64,
    /// Bytes the cleaner read while the producer was measured.
    pub cleaner_mb_in_window: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompactionReport {
    pub machine: Machine,
    pub dirty_bytes: u64,
    pub keys: u64,
    pub value_bytes: usize,
    pub dedupe_buffer_bytes: usize,
    pub rate: u64,
    pub run_s: f64,
    pub cleaner: Vec<CleanerRun>,
    pub latency: Vec<LatencyRun>,
    pub median_mb_per_s: f64,
    pub median_p99_with_cleaner_ms: f64,
    pub median_p99_without_ms: f64,
    pub p99_ratio: f64,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One batch of about 64 KiB of keyed updates, the keys continuing from
/// `*next`.
fn keyed_batch(next: &mut u64, keys: u64, value_bytes: usize) -> Result<Bytes, String> {
    let per = (64 * 1024 / (value_bytes + 24)).max(1);
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let now = sluice_log::now_ms();
    let records: Vec<_> = (0..per)
        .map(|i| {
            let key = Bytes::from(format!("key-{:012}", *next % keys.max(1)));
            *next += 1;
            plain_record(i as i64, now, Some(key), value.clone())
        })
        .collect();
    encode_batch(&records, Compression::None).map_err(err)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn overrides(pairs: &[(&str, &str)]) -> TopicOverrides {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// In process: fill, then clean until nothing is due.
fn cleaner_run(s: &CompactionScenario, round: usize) -> Result<CleanerRun, String> {
    let dir = s.dir.join(format!("cleaner-{round}"));
    let _ = std::fs::remove_dir_all(&dir);
    let log = Log::open(&dir, LogConfig::default()).map_err(err)?;
    // Enough sealed segments that all but a sixteenth of the log is cleanable.
    let segment = (s.dirty_bytes / 16).clamp(1 << 20, 64 << 20).to_string();
    log.create_topic_with(
        "dirty",
        1,
        &overrides(&[
            ("cleanup.policy", "compact"),
            ("segment.bytes", &segment),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]),
    )
    .map_err(err)?;
    let p = log.partition("dirty", 0).ok_or("no partition")?;
    let mut next = 0u64;
    let mut written = 0u64;
    while written < s.dirty_bytes {
        let batch = keyed_batch(&mut next, s.keys, s.value_bytes)?;
        written += batch.len() as u64;
        p.append(&batch, 0).map_err(err)?;
    }
    p.flush().map_err(err)?;
    let cfg = CleanerConfig {
        dedupe_buffer_bytes: s.dedupe_buffer_bytes,
        ..CleanerConfig::default()
    };
    let rss_before = rss_bytes();
    let (mut dirty, mut seconds, mut passes) = (0u64, 0f64, 0u64);
    let (mut out_bytes, mut removed, mut map_memory, mut map_entries) = (0u64, 0u64, 0u64, 0u64);
    let mut rss_peak = rss_before;
    loop {
        let before = p.cleanable(sluice_log::now_ms());
        let started = Instant::now();
        let Some(stats) = log.clean_once(&cfg) else {
            break;
        };
        seconds += started.elapsed().as_secs_f64();
        rss_peak = rss_peak.max(rss_bytes());
        dirty += before.dirty_bytes;
        passes += 1;
        out_bytes += stats.bytes_written;
        removed += stats.records_removed;
        map_memory = map_memory.max(stats.map_memory_bytes);
        map_entries = map_entries.max(stats.map_entries);
    }
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    let mb = |b: u64| b as f64 / 1e6;
    Ok(CleanerRun {
        round,
        dirty_mb: mb(dirty),
        passes,
        seconds,
        mb_per_s: if seconds > 0.0 {
            mb(dirty) / seconds
        } else {
            0.0
        },
        written_mb: mb(out_bytes),
        records_removed: removed,
        map_memory_mib: map_memory as f64 / (1 << 20) as f64,
        map_entries,
        rss_growth_mib: rss_peak.saturating_sub(rss_before) as f64 / (1 << 20) as f64,
    })
}

/// A broker: backlog on a compacted topic, then the paced producer.
fn latency_run(s: &CompactionScenario, round: usize, cleaner: bool) -> Result<LatencyRun, String> {
    let dir = s.dir.join(format!("broker-{round}-{cleaner}"));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = BrokerLaunch::new(&s.exe, &dir)
        .args(["--log-level", "warn", "--log-cleaner-backoff-ms", "100"])
        .args([
            "--log-cleaner-enable",
            if cleaner { "true" } else { "false" },
            "--log-cleaner-dedupe-buffer-size",
            &s.dedupe_buffer_bytes.to_string(),
        ])
        .start()
        .map_err(err)?;
    let addr = broker.addr;
    let mut admin = Client::connect(addr).map_err(err)?;
    admin
        .create_topic(
            "compacted",
            1,
            &[
                ("cleanup.policy".into(), "compact".into()),
                ("segment.bytes".into(), "16777216".into()),
                ("min.cleanable.dirty.ratio".into(), "0.01".into()),
            ],
        )
        .map_err(err)?;
    admin.create_topic("live", 1, &[]).map_err(err)?;
    // The backlog, pipelined eight requests deep.
    let mut next = 0u64;
    let mut written = 0u64;
    let mut pending = std::collections::VecDeque::new();
    while written < s.dirty_bytes {
        let batch = keyed_batch(&mut next, s.keys, s.value_bytes)?;
        written += batch.len() as u64;
        pending.push_back(admin.send_produce("compacted", 0, batch, 1).map_err(err)?);
        if pending.len() >= 8
            && let Some(c) = pending.pop_front()
        {
            admin.produce_result(c).map_err(|e: ClientError| err(e))?;
        }
    }
    while let Some(c) = pending.pop_front() {
        admin.produce_result(c).map_err(err)?;
    }
    let read_before = broker
        .metrics()
        .map_err(err)?
        .get("sluice_log_cleaner_bytes_read_total")
        .copied()
        .unwrap_or(0.0);
    let report = load::produce(&ProduceOptions {
        broker: addr.to_string(),
        topic: "live".into(),
        partitions: 1,
        connections: 1,
        record_bytes: 100,
        batch_bytes: 16 * 1024,
        acks: 1,
        compression: Compression::None,
        duration: s.run,
        warmup: Duration::ZERO,
        target_rate: Some(s.rate),
        in_flight: 4,
        until: None,
        progress: false,
        security: Default::default(),
    })
    .map_err(err)?;
    let read_after = broker
        .metrics()
        .map_err(err)?
        .get("sluice_log_cleaner_bytes_read_total")
        .copied()
        .unwrap_or(0.0);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(LatencyRun {
        round,
        cleaner,
        p50_ms: report.latency.p50_ms,
        p99_ms: report.latency.p99_ms,
        p999_ms: report.latency.p999_ms,
        records_per_s: report.records_per_s,
        cleaner_mb_in_window: (read_after - read_before) / 1e6,
    })
}

/// Runs the scenario: `repeats` in-process cleaner runs, then `repeats`
/// rounds of the broker pair (cleaner off, cleaner on).
pub fn compaction(s: &CompactionScenario) -> Result<CompactionReport, String> {
    std::fs::create_dir_all(&s.dir).map_err(err)?;
    let mut cleaner = Vec::new();
    let mut latency = Vec::new();
    for round in 1..=s.repeats.max(1) {
        eprintln!("round {round}: cleaner in process");
        cleaner.push(cleaner_run(s, round)?);
        for on in [false, true] {
            eprintln!(
                "round {round}: live producer, cleaner {}",
                if on { "on" } else { "off" }
            );
            latency.push(latency_run(s, round, on)?);
        }
    }
    let p99 = |on: bool| {
        median(
            latency
                .iter()
                .filter(|r| r.cleaner == on)
                .map(|r| r.p99_ms)
                .collect(),
        )
        .unwrap_or(0.0)
    };
    let (with, without) = (p99(true), p99(false));
    Ok(CompactionReport {
        machine: Machine::here(),
        dirty_bytes: s.dirty_bytes,
        keys: s.keys,
        value_bytes: s.value_bytes,
        dedupe_buffer_bytes: s.dedupe_buffer_bytes,
        rate: s.rate,
        run_s: s.run.as_secs_f64(),
        median_mb_per_s: median(cleaner.iter().map(|r| r.mb_per_s).collect()).unwrap_or(0.0),
        median_p99_with_cleaner_ms: with,
        median_p99_without_ms: without,
        p99_ratio: if without > 0.0 { with / without } else { 0.0 },
        cleaner,
        latency,
    })
}

/// The terminal table.
pub fn table(r: &CompactionReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench compaction — {} — {} cores, kernel {}; {} MB of updates over {} keys ({}-byte values), dedupe buffer {} MiB",
        r.machine.date_utc,
        r.machine.cores,
        r.machine.kernel,
        r.dirty_bytes / 1_000_000,
        r.keys,
        r.value_bytes,
        r.dedupe_buffer_bytes >> 20
    );
    let _ = writeln!(
        out,
        "round  dirty MB  passes  seconds   MB/s  written MB  removed  map MiB  map keys  RSS +MiB"
    );
    for c in &r.cleaner {
        let _ = writeln!(
            out,
            "{:>5}  {:>8.0}  {:>6}  {:>7.2}  {:>5.0}  {:>10.1}  {:>7}  {:>7.1}  {:>8}  {:>8.1}",
            c.round,
            c.dirty_mb,
            c.passes,
            c.seconds,
            c.mb_per_s,
            c.written_mb,
            c.records_removed,
            c.map_memory_mib,
            c.map_entries,
            c.rss_growth_mib
        );
    }
    let _ = writeln!(
        out,
        "\nlive producer at {} records/s for {:.0} s, beside a backlog being compacted (or not):",
        r.rate, r.run_s
    );
    let _ = writeln!(
        out,
        "round  cleaner  p50 ms  p99 ms  p99.9 ms  records/s  cleaner MB read in window"
    );
    for l in &r.latency {
        let _ = writeln!(
            out,
            "{:>5}  {:>7}  {:>6.2}  {:>6.2}  {:>8.2}  {:>9.0}  {:>10.0}",
            l.round,
            if l.cleaner { "on" } else { "off" },
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.records_per_s,
            l.cleaner_mb_in_window
        );
    }
    let _ = writeln!(
        out,
        "\nmedian cleaner throughput {:.0} MB/s of dirty log; producer p99 {:.2} ms with the cleaner, {:.2} ms without: {:.2}×",
        r.median_mb_per_s, r.median_p99_with_cleaner_ms, r.median_p99_without_ms, r.p99_ratio
    );
    out
}
