//! `sluice bench broker consume`: the article's table inside the broker —
//! consume with each data path (throughput, broker CPU per GB, syscalls per
//! fetch, record bytes through user space) — the bare io-layer `sendfile`
//! of the same segment bytes in the same rounds, and scaling over consumer
//! counts.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_io::{DataPath, FileRegion, Sender};

use super::{Machine, fill, segment_files, start_broker};
use crate::load::{self, ConsumeOptions};
use crate::stats::median;

/// What `sluice bench broker consume` runs.
#[derive(Clone, Debug)]
pub struct ConsumeScenario {
    /// The `sluice` binary to start (`serve`).
    pub exe: PathBuf,
    /// Where the broker's data directory goes (a disk, not tmpfs).
    pub dir: PathBuf,
    pub fill_bytes: u64,
    pub partitions: u32,
    pub paths: Vec<DataPath>,
    pub consumers: Vec<u32>,
    pub repeats: usize,
    pub run: Duration,
    pub fetch_bytes: i32,
}

/// One broker run: one data path, one consumer count, one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsumeRun {
    pub round: usize,
    pub path: String,
    pub consumers: u32,
    pub gb_per_s: f64,
    pub fetch_p99_ms: f64,
    pub broker_cpu_s_per_gb: f64,
    pub fetches: f64,
    /// Transfer syscalls per fetch response, by name.
    pub syscalls_per_fetch: BTreeMap<String, f64>,
    pub record_bytes_through_user_space_per_gb: f64,
    pub broker_rss_mib: f64,
}

/// The bare io-layer transfer of the same segment bytes, in the same round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineRun {
    pub round: usize,
    pub gb_per_s: f64,
}

/// Medians over the rounds of one (path, consumers) cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsumeRow {
    pub path: String,
    pub consumers: u32,
    pub gb_per_s: f64,
    pub gb_per_s_min: f64,
    pub gb_per_s_max: f64,
    pub fetch_p99_ms: f64,
    pub broker_cpu_s_per_gb: f64,
    pub syscalls_per_fetch: BTreeMap<String, f64>,
    pub record_bytes_through_user_space_per_gb: f64,
    pub broker_rss_mib: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsumeReport {
    pub machine: Machine,
    pub fill_bytes: u64,
    pub partitions: u32,
    pub run_ms: u128,
    pub repeats: usize,
    pub fetch_bytes: i32,
    pub rows: Vec<ConsumeRow>,
    pub runs: Vec<ConsumeRun>,
    pub baseline: Vec<BaselineRun>,
    /// Broker (sendfile, 1 consumer) over bare sendfile, per round, and the
    /// median of those paired ratios.
    pub broker_over_bare: Vec<f64>,
    pub broker_over_bare_median: f64,
}

const TRANSFER_CALLS: [&str; 8] = [
    "pread",
    "send",
    "sendmsg",
    "sendfile",
    "splice",
    "mmap",
    "setsockopt",
    "io_uring_enter",
];

/// Runs the consume scenario.
pub fn consume(s: &ConsumeScenario) -> Result<ConsumeReport, String> {
    let data = s.dir.join("broker-consume");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&s.dir).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    let partitions_arg = vec!["--default-partitions".to_string(), s.partitions.to_string()];
    eprintln!(
        "filling {} MB over {} partitions…",
        s.fill_bytes / 1_000_000,
        s.partitions
    );
    let mut broker = start_broker(&s.exe, &data, &partitions_arg, None)?;
    fill(broker.addr, "bench", s.fill_bytes)?;
    broker.stop();
    // From the page cache: read every segment in once.
    let partition0 = data.join("bench-0");
    let mut all_files = Vec::new();
    for p in 0..s.partitions {
        all_files.extend(segment_files(&data.join(format!("bench-{p}"))).map_err(io)?);
    }
    for f in &all_files {
        let file = std::fs::File::open(f).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        sluice_io::cache::warm(&file, 0, len).map_err(io)?;
    }
    let cells: Vec<(DataPath, u32)> = s
        .paths
        .iter()
        .flat_map(|&p| s.consumers.iter().map(move |&c| (p, c)))
        .collect();
    let total = s.repeats * (cells.len() + 1);
    let mut step = 0;
    let mut runs = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..s.repeats {
        // The bare transfer first, then every broker cell; the order of the
        // cells turns each round so no path always runs first.
        step += 1;
        eprintln!("[{step}/{total}] round {} bare sendfile", round + 1);
        let bare = bare_sendfile(
            &segment_files(&partition0).map_err(io)?,
            s.run,
            s.fetch_bytes,
        )
        .map_err(io)?;
        baseline.push(BaselineRun {
            round,
            gb_per_s: bare,
        });
        let turn = round % cells.len().max(1);
        for &(path, consumers) in cells[turn..].iter().chain(&cells[..turn]) {
            step += 1;
            eprintln!(
                "[{step}/{total}] round {} {path} {consumers} consumer(s)",
                round + 1
            );
            runs.push(consume_run(s, &data, round, path, consumers)?);
        }
    }
    let mut rows = Vec::new();
    for &(path, consumers) in &cells {
        let cell: Vec<&ConsumeRun> = runs
            .iter()
            .filter(|r| r.path == path.name() && r.consumers == consumers)
            .collect();
        let med = |f: &dyn Fn(&ConsumeRun) -> f64| {
            median(cell.iter().map(|r| f(r)).collect()).unwrap_or(0.0)
        };
        let mut syscalls = BTreeMap::new();
        for call in TRANSFER_CALLS {
            let v = med(&|r| r.syscalls_per_fetch.get(call).copied().unwrap_or(0.0));
            if v > 0.0 {
                syscalls.insert(call.to_string(), v);
            }
        }
        let gbs: Vec<f64> = cell.iter().map(|r| r.gb_per_s).collect();
        rows.push(ConsumeRow {
            path: path.name().to_string(),
            consumers,
            gb_per_s: median(gbs.clone()).unwrap_or(0.0),
            gb_per_s_min: gbs.iter().copied().fold(f64::MAX, f64::min),
            gb_per_s_max: gbs.iter().copied().fold(0.0, f64::max),
            fetch_p99_ms: med(&|r| r.fetch_p99_ms),
            broker_cpu_s_per_gb: med(&|r| r.broker_cpu_s_per_gb),
            syscalls_per_fetch: syscalls,
            record_bytes_through_user_space_per_gb: med(&|r| {
                r.record_bytes_through_user_space_per_gb
            }),
            broker_rss_mib: med(&|r| r.broker_rss_mib),
        });
    }
    let broker_over_bare: Vec<f64> = baseline
        .iter()
        .filter_map(|b| {
            runs.iter()
                .find(|r| r.round == b.round && r.path == "sendfile" && r.consumers == 1)
                .map(|r| r.gb_per_s / b.gb_per_s)
        })
        .collect();
    Ok(ConsumeReport {
        machine: Machine::here(),
        fill_bytes: s.fill_bytes,
        partitions: s.partitions,
        run_ms: s.run.as_millis(),
        repeats: s.repeats,
        fetch_bytes: s.fetch_bytes,
        rows,
        runs,
        baseline,
        broker_over_bare_median: median(broker_over_bare.clone()).unwrap_or(0.0),
        broker_over_bare,
    })
}

fn consume_run(
    s: &ConsumeScenario,
    data: &Path,
    round: usize,
    path: DataPath,
    consumers: u32,
) -> Result<ConsumeRun, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut broker = start_broker(
        &s.exe,
        data,
        &["--data-path".to_string(), path.name().to_string()],
        None,
    )?;
    let before = broker.metrics().map_err(io)?;
    let cpu0 = broker.cpu_seconds();
    let report = load::consume(&ConsumeOptions {
        broker: broker.addr.to_string(),
        topic: "bench".into(),
        partitions: s.partitions,
        connections: consumers,
        duration: s.run,
        fetch_bytes: s.fetch_bytes,
        once: false,
        progress: false,
        security: Default::default(),
    })
    .map_err(|e| format!("consume on {path}: {e}"))?;
    let cpu = broker.cpu_seconds() - cpu0;
    let rss = broker.rss_bytes();
    // Responses are counted just after they are sent: let the last ones land.
    std::thread::sleep(Duration::from_millis(100));
    let after = broker.metrics().map_err(io)?;
    broker.stop();
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let fetches = delta("sluice_responses_total").max(1.0);
    let gb = report.bytes as f64 / 1e9;
    let mut syscalls = BTreeMap::new();
    for call in TRANSFER_CALLS {
        let n = delta(&format!("sluice_io_syscalls_total{{call=\"{call}\"}}"));
        if n > 0.0 {
            syscalls.insert(call.to_string(), n / fetches);
        }
    }
    Ok(ConsumeRun {
        round,
        path: path.name().to_string(),
        consumers,
        gb_per_s: report.mb_per_s / 1000.0,
        fetch_p99_ms: report.latency.p99_ms,
        broker_cpu_s_per_gb: cpu / gb.max(1e-9),
        fetches,
        syscalls_per_fetch: syscalls,
        record_bytes_through_user_space_per_gb: delta(
            "sluice_record_bytes_through_user_space_total",
        ) / gb.max(1e-9),
        broker_rss_mib: rss as f64 / (1 << 20) as f64,
    })
}

/// The io layer alone: `sendfile` of the partition's segment files, in
/// `chunk`-sized regions as a broker would send them, over loopback TCP to a
/// reader that reads into a buffer of the same size; GB/s over `run`.
pub fn bare_sendfile(files: &[PathBuf], run: Duration, chunk: i32) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let chunk = u64::try_from(chunk).unwrap_or(1 << 20).max(4096);
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; chunk as usize];
        let mut got = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let opened: Vec<std::fs::File> = files
        .iter()
        .map(std::fs::File::open)
        .collect::<std::io::Result<_>>()?;
    let mut sender = Sender::new(conn.as_fd(), DataPath::Sendfile)?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    'outer: loop {
        for file in &opened {
            let len = file.metadata()?.len();
            let mut pos = 0;
            while pos < len {
                let n = chunk.min(len - pos);
                sender.send_region(conn.as_fd(), FileRegion::new(file, pos, n))?;
                pos += n;
                sent += n;
                if t0.elapsed() >= run {
                    break 'outer;
                }
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    drop(conn);
    let got = reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    debug_assert!(got <= sent);
    Ok(got as f64 / seconds / 1e9)
}
