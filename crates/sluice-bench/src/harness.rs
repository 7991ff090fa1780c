//! `sluice bench broker`: measurements of a real `sluice serve` process that
//! this harness starts, fills and restarts itself, so each target of issue #6
//! is one command.
//!
//! - `consume`: the article's table inside the broker (one row per data path:
//!   throughput, broker CPU seconds per GB, syscalls per fetch, record bytes
//!   through user space), the bare io-layer `sendfile` of the same segment
//!   bytes beside it in the same round, and scaling over consumer counts.
//! - `isolation`: produce p99 at a fixed rate while one consumer catches up on
//!   evicted data, against the same producer alone, with cold-read isolation
//!   on and off.
//!
//! Broker CPU comes from `/proc/<pid>/stat` and counters from its metrics
//! page, both read after the broker has finished opening its data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_client::{Client, ClientError};
use sluice_io::{DataPath, FileRegion, Sender};

use crate::load::{self, ConsumeOptions, LoadReport, ProduceOptions};

/// A `sluice serve` child process on loopback ports of its choosing.
pub struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl BrokerProcess {
    /// Starts `exe serve` on `data_dir` with extra flags and waits until it
    /// listens (its data directory is open by then).
    pub fn start(exe: &Path, data_dir: &Path, args: &[String]) -> std::io::Result<BrokerProcess> {
        Self::start_on(exe, data_dir, args, None)
    }

    /// As [`start`](Self::start), with every thread of the broker on one CPU.
    pub fn start_on(
        exe: &Path,
        data_dir: &Path,
        args: &[String],
        cpu: Option<usize>,
    ) -> std::io::Result<BrokerProcess> {
        let mut command = Command::new(exe);
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and
            // only makes one async-signal-safe syscall on a set it owns.
            unsafe {
                command.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || metrics.is_none() {
            let Some(line) = lines.next().transpose()? else {
                let _ = child.wait();
                return Err(std::io::Error::other(
                    "sluice serve exited before listening",
                ));
            };
            let parse = |s: &str| s.parse::<SocketAddr>().map_err(std::io::Error::other);
            if let Some(a) = line.strip_prefix("sluice listening on ") {
                addr = Some(parse(a)?);
            } else if let Some(a) = line.strip_prefix("sluice metrics on ") {
                metrics = Some(parse(a)?);
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(BrokerProcess {
            child,
            addr: addr.unwrap_or_else(|| unreachable!("loop ends with both set")),
            metrics: metrics.unwrap_or_else(|| unreachable!("loop ends with both set")),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds of the whole broker process so far.
    pub fn cpu_seconds(&self) -> f64 {
        crate::local::cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Resident set size in bytes (page cache not included).
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// Every sample on the broker's metrics page, by its full name (labels
    /// included).
    pub fn metrics(&self) -> std::io::Result<BTreeMap<String, f64>> {
        let mut s = TcpStream::connect(self.metrics)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut page = String::new();
        s.read_to_string(&mut page)?;
        Ok(page
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM (a clean shutdown) and wait.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `bytes` of 100-byte records in 64 KiB batches, round-robin over
/// the topic's partitions, pipelined.
pub fn fill(addr: SocketAddr, topic: &str, bytes: u64) -> Result<u64, String> {
    let err = |e: ClientError| format!("filling {topic}: {e}");
    let mut client = Client::connect(addr).map_err(err)?;
    let partitions = client.partitions(topic).map_err(err)?.max(1);
    let (batch, _) = load::encoded_batch(100, 64 << 10, kafka_protocol::records::Compression::None);
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0u64;
    let mut i = 0u32;
    while sent < bytes {
        let corr = client
            .send_produce(topic, (i % partitions) as i32, batch.clone(), 1)
            .map_err(err)?;
        pending.push_back(corr);
        sent += batch.len() as u64;
        i += 1;
        if pending.len() >= 8
            && let Some(corr) = pending.pop_front()
        {
            client.produce_result(corr).map_err(err)?;
        }
    }
    for corr in pending {
        client.produce_result(corr).map_err(err)?;
    }
    Ok(sent)
}

/// The `.log` files of a partition directory, oldest first.
fn segment_files(partition_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    Ok(logs)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Machine facts for a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub date_utc: String,
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn here() -> Machine {
        Machine {
            date_utc: crate::transfer::utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------
// consume: data paths, the bare sendfile baseline, scaling

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
    let broker = BrokerProcess::start(&s.exe, &data, &partitions_arg).map_err(io)?;
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
        let med = |f: &dyn Fn(&ConsumeRun) -> f64| median(cell.iter().map(|r| f(r)).collect());
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
            gb_per_s: median(gbs.clone()),
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
        broker_over_bare_median: median(broker_over_bare.clone()),
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
    let broker = BrokerProcess::start(
        &s.exe,
        data,
        &["--data-path".to_string(), path.name().to_string()],
    )
    .map_err(io)?;
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

// ---------------------------------------------------------------------------
// isolation: produce p99 while a consumer catches up on evicted data

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
    let broker = BrokerProcess::start(&s.exe, &data, &[]).map_err(io)?;
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
    let broker = BrokerProcess::start_on(&s.exe, data, &args, s.pin.map(|(broker, _)| broker))
        .map_err(io)?;
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

// ---------------------------------------------------------------------------
// presenting

/// The terminal table of a consume report.
pub fn consume_table(r: &ConsumeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench broker consume — {} — {} cores, kernel {}; {} MB over {} partitions, {} ms runs x {} rounds, fetch {} KiB (medians)",
        r.machine.date_utc,
        r.machine.cores,
        r.machine.kernel,
        r.fill_bytes / 1_000_000,
        r.partitions,
        r.run_ms,
        r.repeats,
        r.fetch_bytes / 1024
    );
    let _ = writeln!(
        out,
        "{:<11} {:>9} {:>17} {:>9} {:>11} {:>13} {:>8}  syscalls per fetch",
        "path", "consumers", "GB/s [min-max]", "p99 ms", "CPU s/GB", "user B/GB", "RSS MiB"
    );
    for row in &r.rows {
        let calls: Vec<String> = row
            .syscalls_per_fetch
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<11} {:>9} {:>5.2} [{:.2}-{:.2}] {:>9.2} {:>11.3} {:>13.0} {:>8.1}  {}",
            row.path,
            row.consumers,
            row.gb_per_s,
            row.gb_per_s_min,
            row.gb_per_s_max,
            row.fetch_p99_ms,
            row.broker_cpu_s_per_gb,
            row.record_bytes_through_user_space_per_gb,
            row.broker_rss_mib,
            calls.join(", ")
        );
    }
    let bare: Vec<String> = r
        .baseline
        .iter()
        .map(|b| format!("{:.2}", b.gb_per_s))
        .collect();
    let ratios: Vec<String> = r
        .broker_over_bare
        .iter()
        .map(|x| format!("{x:.2}"))
        .collect();
    let _ = writeln!(
        out,
        "bare io-layer sendfile of partition 0's segments: {} GB/s; broker (sendfile, 1 consumer) / bare, per round: {} (median {:.2})",
        bare.join(", "),
        ratios.join(", "),
        r.broker_over_bare_median
    );
    out
}

fn backlog_state(r: &IsolationReport) -> &'static str {
    if r.warm {
        "in the page cache (control)"
    } else {
        "evicted"
    }
}

/// The terminal table of an isolation report.
pub fn isolation_table(r: &IsolationReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench broker isolation — {} — {} cores, kernel {}; producer {} records/s (100 B, 16 KiB batches, acks=1); consumer catches up on {} MB {}; {}",
        r.machine.date_utc,
        r.machine.cores,
        r.machine.kernel,
        r.rate,
        r.backlog_bytes / 1_000_000,
        backlog_state(r),
        match r.pinned {
            Some((b, g)) => format!("broker on CPU {b}, load generator on CPU {g}"),
            None => "nothing pinned".to_string(),
        } + &r
            .data_path
            .as_ref()
            .map(|p| format!("; --data-path {p}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:>5} {:>9} {:>16} {:>16} {:>10} {:>10} {:>13} {:>6}  broker p99 <= ms: produce / append queue / append; tick lateness max; generator send delay p99/max; steal ms total/most in 100 ms",
        "round",
        "isolation",
        "p99 w/ consumer",
        "p99 alone",
        "ratio",
        "p99.9 w/",
        "catch-up GB/s",
        "warmed"
    );
    for run in &r.runs {
        let _ = writeln!(
            out,
            "{:>5} {:>9} {:>13.2} ms {:>13.2} ms {:>9.2}x {:>7.2} ms {:>13.2} {:>6}  {} / {} / {}; {}; {:.2}/{:.2}; {:.0}/{:.0}",
            run.round + 1,
            if run.isolation { "on" } else { "off" },
            run.with_consumer_p99_ms,
            run.alone_p99_ms,
            run.ratio_p99,
            run.with_consumer_p999_ms,
            run.catch_up_gb_per_s,
            run.cold_regions_warmed,
            run.broker_produce_p99_ms,
            run.broker_append_queue_p99_ms,
            run.broker_append_p99_ms,
            run.broker_tick_lateness_max_ms,
            run.generator_send_delay_p99_ms,
            run.generator_send_delay_max_ms,
            run.steal_ms,
            run.steal_max_100ms_ms
        );
    }
    let _ = writeln!(
        out,
        "median p99 ratio (with consumer / alone): isolation on {:.2}x, off {:.2}x (target: on <= 2x)",
        r.ratio_on, r.ratio_off
    );
    out
}

fn svg_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Bars of a few values, one group per label.
fn bar_panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, f64)],
) -> Result<(), String> {
    use plotters::prelude::*;
    let ymax = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..ymax)
        .map_err(svg_err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(svg_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                BLUE.mix(0.6).filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))
        .map_err(svg_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.3}"),
                (SegmentValue::CenterOf(i), *v + ymax * 0.02),
                ("sans-serif", 12),
            )
        }))
        .map_err(svg_err)?;
    Ok(())
}

/// The consume report as an SVG: per data path (1 consumer) throughput and
/// broker CPU per GB with the bare sendfile bar beside them, and scaling.
pub fn write_consume_svg(r: &ConsumeReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "sluice bench broker consume ({}, {} cores, kernel {}), medians of {} rounds",
                r.machine.date_utc, r.machine.cores, r.machine.kernel, r.repeats
            ),
            ("sans-serif", 20),
        )
        .map_err(svg_err)?;
    let panels = body.split_evenly((3, 2));
    let one: Vec<&ConsumeRow> = r.rows.iter().filter(|x| x.consumers == 1).collect();
    let mut gbs: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.gb_per_s))
        .collect();
    gbs.push((
        "bare sendfile".into(),
        median(r.baseline.iter().map(|b| b.gb_per_s).collect()),
    ));
    bar_panel(&panels[0], "1 consumer: GB/s", &gbs)?;
    let cpu: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.broker_cpu_s_per_gb))
        .collect();
    bar_panel(&panels[1], "1 consumer: broker CPU s per GB", &cpu)?;
    let calls: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.syscalls_per_fetch.values().sum()))
        .collect();
    bar_panel(
        &panels[2],
        "1 consumer: transfer syscalls per fetch",
        &calls,
    )?;
    lines_by_consumers(&panels[3], "scaling: GB/s by consumers", r, |x| x.gb_per_s)?;
    lines_by_consumers(&panels[4], "broker RSS (MiB) by consumers", r, |x| {
        x.broker_rss_mib
    })?;
    lines_by_consumers(&panels[5], "fetch p99 (ms) by consumers", r, |x| {
        x.fetch_p99_ms
    })?;
    root.present().map_err(svg_err)
}

/// One line per data path of a row metric against the consumer count (log
/// scale), when more than one count was run.
fn lines_by_consumers<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    r: &ConsumeReport,
    metric: fn(&ConsumeRow) -> f64,
) -> Result<(), String> {
    use plotters::prelude::*;
    let mut counts: Vec<u32> = r.rows.iter().map(|x| x.consumers).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() < 2 {
        return Ok(());
    }
    let ymax = r.rows.iter().map(metric).fold(0.0, f64::max) * 1.2;
    let xs = |c: u32| f64::from(c).log2();
    let xmax = xs(*counts.last().unwrap_or(&1)) + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..xmax, 0.0..ymax.max(1e-9))
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("consumers (log scale)")
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
                format!("{}", 2f64.powf(v.round()) as u64)
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(svg_err)?;
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    let mut paths: Vec<&str> = r.rows.iter().map(|x| x.path.as_str()).collect();
    paths.dedup();
    for (i, p) in paths.iter().enumerate() {
        let color = colors[i % colors.len()];
        let pts: Vec<(f64, f64)> = r
            .rows
            .iter()
            .filter(|x| x.path == *p)
            .map(|x| (xs(x.consumers), metric(x)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(svg_err)?
            .label(*p)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(svg_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(svg_err)?;
    Ok(())
}

/// The isolation report as an SVG: produce p99 alone and with the catching-up
/// consumer, isolation on and off (medians).
pub fn write_isolation_svg(r: &IsolationReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "produce p99 at {} records/s while a consumer catches up on {} MB {} ({})",
                r.rate,
                r.backlog_bytes / 1_000_000,
                backlog_state(r),
                r.machine.date_utc
            ),
            ("sans-serif", 18),
        )
        .map_err(svg_err)?;
    let med = |on: bool, f: fn(&IsolationRun) -> f64| {
        median(r.runs.iter().filter(|x| x.isolation == on).map(f).collect())
    };
    let bars = vec![
        ("on: alone".to_string(), med(true, |x| x.alone_p99_ms)),
        (
            "on: with consumer".to_string(),
            med(true, |x| x.with_consumer_p99_ms),
        ),
        ("off: alone".to_string(), med(false, |x| x.alone_p99_ms)),
        (
            "off: with consumer".to_string(),
            med(false, |x| x.with_consumer_p99_ms),
        ),
    ];
    bar_panel(
        &body,
        "produce p99 (ms), cold-read isolation on / off",
        &bars,
    )?;
    root.present().map_err(svg_err)
}

/// A load generator report as an SVG: latency percentiles as bars, with
/// throughput (and the local broker's CPU per GB) in the title.
pub fn write_load_svg(r: &crate::load::LoadReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    let cpu = r
        .broker_cpu_s_per_gb
        .map(|c| format!(", broker {c:.3} CPU s/GB"))
        .unwrap_or_default();
    title
        .titled(
            &format!(
                "sluice bench {}: {:.0} records/s, {:.1} MB/s over {:.1} s{cpu} ({})",
                r.kind,
                r.records_per_s,
                r.mb_per_s,
                r.seconds,
                crate::transfer::utc_now()
            ),
            ("sans-serif", 18),
        )
        .map_err(svg_err)?;
    let bars = vec![
        ("p50".to_string(), r.latency.p50_ms),
        ("p99".to_string(), r.latency.p99_ms),
        ("p99.9".to_string(), r.latency.p999_ms),
        ("max".to_string(), r.latency.max_ms),
    ];
    let what = if r.kind == "e2e" {
        "produce-to-consume latency (ms)"
    } else {
        "request latency (ms)"
    };
    bar_panel(&body, what, &bars)?;
    root.present().map_err(svg_err)
}
