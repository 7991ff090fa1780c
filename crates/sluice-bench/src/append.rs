//! `sluice bench append`: the log's two append paths side by side — a
//! pre-allocated, mapped segment with one memcpy per batch (RocketMQ's
//! MappedFile) against `pwrite` — with RecordBatch v2 batches of a given
//! size, flush left to the OS. Paths interleave within each repeat.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_log::{AppendPath, FlushPolicy, LogConfig, Partition};

use crate::stats::Stat;
use crate::transfer::human_bytes;
use crate::usage::Usage;

#[derive(Clone, Debug)]
pub struct AppendOptions {
    pub paths: Vec<AppendPath>,
    pub record_sizes: Vec<usize>,
    pub batch_bytes: usize,
    pub segment_bytes: u64,
    pub run_time: Duration,
    pub repeats: usize,
    pub dir: PathBuf,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            paths: vec![AppendPath::Mmap, AppendPath::Pwrite],
            record_sizes: vec![100, 1024],
            batch_bytes: 16 * 1024,
            segment_bytes: 1 << 30,
            run_time: Duration::from_secs(1),
            repeats: 5,
            dir: PathBuf::from("sluice-bench-data"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AppendRow {
    pub path: String,
    pub record_bytes: usize,
    pub records_per_batch: usize,
    pub batch_bytes: usize,
    pub gb_per_s: Stat,
    pub records_per_s: f64,
    pub cpu_s_per_gb: f64,
    pub minor_faults_per_mib: f64,
    /// Median of per-repeat throughput ratios to `pwrite` (runs side by side).
    pub vs_pwrite: Option<f64>,
    pub segments_rolled: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AppendReport {
    pub date_utc: String,
    pub cores: usize,
    pub kernel: String,
    pub run_ms: u128,
    pub repeats: usize,
    pub segment_bytes: u64,
    pub rows: Vec<AppendRow>,
}

#[derive(Clone, Copy, Debug, Default)]
struct AppendRun {
    bytes: u64,
    records: u64,
    elapsed_s: f64,
    usage: Usage,
    segments: usize,
}

/// A batch of `record_bytes`-byte records filling about `batch_bytes`.
fn make_batch(record_bytes: usize, batch_bytes: usize) -> (Vec<u8>, usize) {
    let per_record = record_bytes + 8; // varint framing and fields
    let n = (batch_bytes.saturating_sub(sluice_log::batch::HEADER_LEN) / per_record).max(1);
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 7 + 3) as u8).collect();
    let values: Vec<&[u8]> = (0..n).map(|_| value.as_slice()).collect();
    (
        sluice_log::batch::build_batch(1_700_000_000_000, &values),
        n,
    )
}

fn run_once(
    opts: &AppendOptions,
    path: AppendPath,
    record_bytes: usize,
) -> std::io::Result<AppendRun> {
    let dir = opts
        .dir
        .join(format!("append-{}-{}", path, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = LogConfig {
        segment_bytes: opts.segment_bytes,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 4096,
        flush: FlushPolicy::Os,
        append_path: path,
        // Whatever else the log grows takes its default.
        ..LogConfig::default()
    };
    let p = Partition::open(&dir.join("bench-0"), config, false)?;
    let (batch, per_batch) = make_batch(record_bytes, opts.batch_bytes);
    let u0 = Usage::process();
    let t0 = Instant::now();
    let deadline = t0 + opts.run_time;
    let mut run = AppendRun::default();
    // The same buffer is appended again and again: the log writes baseOffset
    // and the leader epoch itself and never modifies the caller's bytes.
    while Instant::now() < deadline {
        p.append(&batch, 0)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        run.bytes += batch.len() as u64;
        run.records += per_batch as u64;
    }
    run.elapsed_s = t0.elapsed().as_secs_f64();
    run.usage = Usage::process().since(&u0);
    run.segments = p.segments().len();
    p.close()?;
    drop(p);
    std::fs::remove_dir_all(&dir)?;
    Ok(run)
}

pub fn run(opts: &AppendOptions) -> std::io::Result<AppendReport> {
    std::fs::create_dir_all(&opts.dir)?;
    let mut runs: Vec<Vec<Vec<AppendRun>>> =
        vec![vec![Vec::new(); opts.paths.len()]; opts.record_sizes.len()];
    for _ in 0..opts.repeats {
        for (si, &size) in opts.record_sizes.iter().enumerate() {
            for (pi, &path) in opts.paths.iter().enumerate() {
                runs[si][pi].push(run_once(opts, path, size)?);
            }
        }
    }
    let baseline = opts.paths.iter().position(|p| *p == AppendPath::Pwrite);
    let mut rows = Vec::new();
    for (si, &size) in opts.record_sizes.iter().enumerate() {
        let (batch, per_batch) = make_batch(size, opts.batch_bytes);
        for (pi, path) in opts.paths.iter().enumerate() {
            let rs = &runs[si][pi];
            let gbs = |r: &AppendRun| r.bytes as f64 / 1e9;
            let per = |f: &dyn Fn(&AppendRun) -> f64| Stat::of(rs.iter().map(f).collect());
            let vs_pwrite = baseline.map(|b| {
                Stat::of(
                    rs.iter()
                        .zip(&runs[si][b])
                        .map(|(r, base)| (gbs(r) / r.elapsed_s) / (gbs(base) / base.elapsed_s))
                        .collect(),
                )
                .median
            });
            rows.push(AppendRow {
                path: path.to_string(),
                record_bytes: size,
                records_per_batch: per_batch,
                batch_bytes: batch.len(),
                gb_per_s: per(&|r| gbs(r) / r.elapsed_s),
                records_per_s: per(&|r| r.records as f64 / r.elapsed_s).median,
                cpu_s_per_gb: per(&|r| (r.usage.user_s + r.usage.system_s) / gbs(r)).median,
                minor_faults_per_mib: per(&|r| {
                    r.usage.minor_faults as f64 / (r.bytes as f64 / 1048576.0)
                })
                .median,
                vs_pwrite,
                segments_rolled: per(&|r| r.segments.saturating_sub(1) as f64).median,
            });
        }
    }
    Ok(AppendReport {
        date_utc: crate::transfer::utc_now(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        run_ms: opts.run_time.as_millis(),
        repeats: opts.repeats,
        segment_bytes: opts.segment_bytes,
        rows,
    })
}

pub fn table(r: &AppendReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench append — {} — {} cores, kernel {}; {} ms runs x {} repeats, {} segments, flush=os",
        r.date_utc,
        r.cores,
        r.kernel,
        r.run_ms,
        r.repeats,
        human_bytes(r.segment_bytes)
    );
    let _ = writeln!(
        out,
        "{:<7} {:>7} {:>9} {:>22} {:>12} {:>9} {:>10} {:>8} {:>6}",
        "path",
        "record",
        "batch",
        "GB/s [min–max]",
        "records/s",
        "CPU s/GB",
        "flt/MiB",
        "xpwrite",
        "rolls"
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "{:<7} {:>7} {:>9} {:>6.2} [{:>5.2}–{:>5.2}] {:>12.0} {:>9.3} {:>10.1} {:>8} {:>6.0}",
            row.path,
            human_bytes(row.record_bytes as u64),
            format!(
                "{}x{}",
                row.records_per_batch,
                human_bytes(row.batch_bytes as u64)
            ),
            row.gb_per_s.median,
            row.gb_per_s.min,
            row.gb_per_s.max,
            row.records_per_s,
            row.cpu_s_per_gb,
            row.minor_faults_per_mib,
            row.vs_pwrite
                .map(|x| format!("{x:.2}"))
                .unwrap_or("-".into()),
            row.segments_rolled,
        );
    }
    out
}
