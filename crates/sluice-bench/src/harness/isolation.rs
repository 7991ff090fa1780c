//! `sluice bench broker isolation`: produce p99 at a fixed rate while one
//! consumer catches up on data evicted from the page cache, against the same
//! producer alone, with cold-read isolation on and off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use sluice_io::DataPath;

use super::{Machine, fill, segment_files, start_broker};
use crate::load::{self, ConsumeOptions, LoadReport, ProduceOptions};
use crate::stats::median;

/// What `sluice bench broker isolation` runs.
#[derive(Clone, Debug)]
pub struct IsolationScenario {
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// Backlog the consumer catches up on (evicted from the page cache).
    pub backlog_bytes: u64,
    /// Records per second of the producer (100-byte records, 16 KiB batches).
    pub rate: u64,
    pub repeats: usize,
    /// Longest a catch-up phase may last.
    pub max_run: Duration,
    /// (broker CPU, load generator CPU): keep the two off each other's core,
    /// so the producer's latency is the broker's and not the generator's
    /// wait for a core.
    pub pin: Option<(usize, usize)>,
    /// The brokers' data path (their default if None).
    pub data_path: Option<DataPath>,
    /// A control: leave the backlog in the page cache, so the consumer reads
    /// no disk at all and what is left is the cost of serving it.
    pub warm: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct IsolationRun {
    pub round: usize,
    pub isolation: bool,
    /// Produce p99 and p99.9 while the consumer catches up.
    pub with_consumer_p99_ms: f64,
    pub with_consumer_p999_ms: f64,
    /// The same producer alone, for as long.
    pub alone_p99_ms: f64,
    pub alone_p999_ms: f64,
    pub ratio_p99: f64,
    pub catch_up_s: f64,
    pub catch_up_gb_per_s: f64,
    pub cold_regions_warmed: f64,
    /// The broker's own view of the window with the consumer, from its
    /// histograms (upper bounds of the p99 bucket, ms): Produce requests
    /// end to end, appends waiting for a pool thread, appends themselves.
    pub broker_produce_p99_ms: f64,
    pub broker_append_queue_p99_ms: f64,
    pub broker_append_p99_ms: f64,
    /// Upper bound (ms) of the latest bucket any 1 ms runtime tick landed in
    /// during the window with the consumer: the longest the broker's async
    /// workers were unable to run a ready task.
    pub broker_tick_lateness_max_ms: f64,
    /// The load generator's own lateness in writing requests in the window
    /// with the consumer (p99 and max, ms).
    pub generator_send_delay_p99_ms: f64,
    pub generator_send_delay_max_ms: f64,
    /// CPU time the hypervisor took from this VM during the window with the
    /// consumer (`steal` in /proc/stat, all CPUs), and the most in any
    /// 100 ms of it: a stall of the whole machine, not of the broker.
    #[serde(default)]
    pub steal_ms: f64,
    #[serde(default)]
    pub steal_max_100ms_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IsolationReport {
    pub machine: Machine,
    pub backlog_bytes: u64,
    pub rate: u64,
    pub pinned: Option<(usize, usize)>,
    pub data_path: Option<String>,
    /// The backlog was left in the page cache (a control run).
    #[serde(default)]
    pub warm: bool,
    pub runs: Vec<IsolationRun>,
    /// Median p99 ratio (with consumer / alone), isolation on and off.
    pub ratio_on: f64,
    pub ratio_off: f64,
}

/// Drops every page of a partition's segments from the page cache. Dirty
/// pages cannot be dropped, so each file is written back first.
fn evict_partition(dir: &Path) -> std::io::Result<()> {
    for f in segment_files(dir)? {
        let file = std::fs::File::open(f)?;
        file.sync_data()?;
        sluice_io::cache::evict(&file)?;
        let len = file.metadata()?.len();
        if sluice_io::cache::resident_fraction(&file, 0, len)? > 0.01 {
            return Err(std::io::Error::other(
                "the backlog stayed in the page cache",
            ));
        }
    }
    Ok(())
}

pub fn isolation(s: &IsolationScenario) -> Result<IsolationReport, String> {
    let io = |e: std::io::Error| e.to_string();
    let data = s.dir.join("broker-isolation");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&s.dir).map_err(io)?;
    eprintln!("filling a {} MB backlog…", s.backlog_bytes / 1_000_000);
    let mut broker = start_broker(&s.exe, &data, &[], None)?;
    fill(broker.addr, "backlog", s.backlog_bytes)?;
    fill(broker.addr, "live", 1 << 20)?;
    broker.stop();
    if let Some((_, generator)) = s.pin {
        crate::pin_to_cpu(generator).map_err(io)?;
    }
    let mut runs = Vec::new();
    let total = s.repeats * 2;
    let mut step = 0;
    for round in 0..s.repeats {
        for isolation in [true, false] {
            step += 1;
            eprintln!(
                "[{step}/{total}] round {} isolation {}",
                round + 1,
                if isolation { "on" } else { "off" }
            );
            runs.push(isolation_run(s, &data, round, isolation)?);
        }
    }
    let ratio = |on: bool| {
        median(
            runs.iter()
                .filter(|r| r.isolation == on)
                .map(|r| r.ratio_p99)
                .collect(),
        )
        .unwrap_or(0.0)
    };
    Ok(IsolationReport {
        machine: Machine::here(),
        backlog_bytes: s.backlog_bytes,
        rate: s.rate,
        pinned: s.pin,
        data_path: s.data_path.map(|p| p.name().to_string()),
        warm: s.warm,
        ratio_on: ratio(true),
        ratio_off: ratio(false),
        runs,
    })
}

fn isolation_run(
    s: &IsolationScenario,
    data: &Path,
    round: usize,
    isolation: bool,
) -> Result<IsolationRun, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut args = vec!["--fetch-isolation".to_string(), isolation.to_string()];
    if let Some(path) = s.data_path {
        args.extend(["--data-path".to_string(), path.name().to_string()]);
    }
    let mut broker = start_broker(&s.exe, data, &args, s.pin.map(|(broker, _)| broker))?;
    let producer = |until: Option<Arc<AtomicBool>>, duration: Duration| ProduceOptions {
        broker: broker.addr.to_string(),
        topic: "live".into(),
        partitions: 1,
        connections: 2,
        record_bytes: 100,
        batch_bytes: 16 << 10,
        acks: 1,
        compression: kafka_protocol::records::Compression::None,
        duration,
        warmup: Duration::from_millis(500),
        target_rate: Some(s.rate),
        in_flight: 4,
        until,
        progress: false,
        security: Default::default(),
    };
    // With the consumer: it starts reading the evicted backlog once the
    // producer's warm-up is over, and the measured window ends when it has
    // read all of it.
    if !s.warm {
        evict_partition(&data.join("backlog-0")).map_err(io)?;
    }
    let before = broker.metrics().map_err(io)?;
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (addr, done) = (broker.addr.to_string(), done.clone());
        let max_run = s.max_run;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let r = load::consume(&ConsumeOptions {
                broker: addr,
                topic: "backlog".into(),
                partitions: 1,
                connections: 1,
                duration: max_run,
                fetch_bytes: 1 << 20,
                once: true,
                progress: false,
                security: Default::default(),
            });
            done.store(true, Ordering::Relaxed);
            r
        })
    };
    let steal = StealSampler::start(done.clone());
    let with = load::produce(&producer(Some(done.clone()), s.max_run))
        .map_err(|e| format!("produce: {e}"))?;
    let caught_up: LoadReport = consumer
        .join()
        .map_err(|_| "consumer panicked".to_string())?
        .map_err(|e| format!("consume: {e}"))?;
    let after = broker.metrics().map_err(io)?;
    let (steal_ms, steal_max_100ms_ms) = steal.finish();
    // Alone, for as long as the catch-up took.
    let window = Duration::from_secs_f64(with.seconds.max(1.0));
    let alone = load::produce(&producer(None, window)).map_err(|e| format!("produce: {e}"))?;
    broker.stop();
    let cold = |m: &BTreeMap<String, f64>| {
        m.get("sluice_fetch_cold_regions_total")
            .copied()
            .unwrap_or(0.0)
    };
    let p99 = |name: &str, labels: &str| histogram_quantile_ms(&before, &after, name, labels, 0.99);
    Ok(IsolationRun {
        round,
        isolation,
        with_consumer_p99_ms: with.latency.p99_ms,
        with_consumer_p999_ms: with.latency.p999_ms,
        alone_p99_ms: alone.latency.p99_ms,
        alone_p999_ms: alone.latency.p999_ms,
        ratio_p99: with.latency.p99_ms / alone.latency.p99_ms.max(1e-6),
        catch_up_s: caught_up.seconds,
        catch_up_gb_per_s: caught_up.mb_per_s / 1000.0,
        cold_regions_warmed: cold(&after) - cold(&before),
        broker_produce_p99_ms: p99("sluice_request_duration_seconds", "api=\"Produce\","),
        broker_append_queue_p99_ms: p99("sluice_append_queue_seconds", ""),
        broker_append_p99_ms: p99("sluice_append_duration_seconds", ""),
        generator_send_delay_p99_ms: with.send_delay.as_ref().map_or(0.0, |d| d.p99_ms),
        generator_send_delay_max_ms: with.send_delay.as_ref().map_or(0.0, |d| d.max_ms),
        steal_ms,
        steal_max_100ms_ms,
        broker_tick_lateness_max_ms: histogram_quantile_ms(
            &before,
            &after,
            "sluice_runtime_tick_lateness_seconds",
            "",
            1.0,
        ),
    })
}

/// Samples the machine's steal time (/proc/stat) every 10 ms until `done`.
struct StealSampler {
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl StealSampler {
    fn start(done: Arc<AtomicBool>) -> StealSampler {
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(ticks) = steal_ticks() {
                    samples.push(ticks);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples.extend(steal_ticks());
            samples
        });
        StealSampler { thread }
    }

    /// (total ms, most ms in any ten consecutive samples ≈ 100 ms).
    fn finish(self) -> (f64, f64) {
        let samples = self.thread.join().unwrap_or_default();
        let ms_per_tick = 1000.0 / rustix::param::clock_ticks_per_second() as f64;
        let total = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => b.saturating_sub(*a),
            _ => 0,
        };
        let worst = samples
            .windows(11)
            .map(|w| w[10].saturating_sub(w[0]))
            .max()
            .unwrap_or(total);
        (total as f64 * ms_per_tick, worst as f64 * ms_per_tick)
    }
}

/// The summed `steal` column of /proc/stat's `cpu` line, in clock ticks.
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().next()?.split_whitespace().nth(8)?.parse().ok()
}

/// The upper bound (ms) of the bucket holding quantile `q` (1.0: the
/// largest sample) of what a Prometheus histogram gained between two
/// scrapes; `labels` is the label text before `le` (`""`, or
/// `api="Produce",`). 0 when it gained nothing.
fn histogram_quantile_ms(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    name: &str,
    labels: &str,
    q: f64,
) -> f64 {
    let prefix = format!("{name}_bucket{{{labels}le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, v - before.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return 0.0;
    }
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map_or(f64::INFINITY, |(bound, _)| bound * 1000.0)
}
