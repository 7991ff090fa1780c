//! `sluice bench transfer`: the article's table, measured.
//!
//! Every data path sends regions of one file over loopback TCP (and a Unix
//! socket) to a receiver process that reads and discards. Paths interleave
//! within each cell (A B C D E, then the next cell, then the next repeat), so
//! drift on a noisy machine lands on all of them alike; each cell reports
//! medians and min–max over the repeats.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_io::{Chunk, Counters, DataPath, FileRegion, Message, Model, Sender, cache};

use crate::receiver::{REPLY_LEN, Reply};
use crate::stats::Stat;
use crate::usage::{CoreTime, Usage};

const MIB: f64 = 1024.0 * 1024.0;
const GB: f64 = 1e9;
/// The byte run sent before each region on the gather path: the size of a
/// Fetch response's headers for one partition, roughly.
const GATHER_HEADER_LEN: usize = 64;

/// A row of the benchmark: a data path, plus the gather variant of sendfile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchPath {
    pub data_path: DataPath,
    /// Send a header byte run in front of every region (the broker's shape).
    pub gather: bool,
}

impl BenchPath {
    pub const ALL: [BenchPath; 6] = [
        BenchPath::plain(DataPath::ReadWrite),
        BenchPath::plain(DataPath::MmapWrite),
        BenchPath::plain(DataPath::Sendfile),
        BenchPath::plain(DataPath::Splice),
        BenchPath::plain(DataPath::IoUring),
        BenchPath {
            data_path: DataPath::Sendfile,
            gather: true,
        },
    ];

    const fn plain(data_path: DataPath) -> BenchPath {
        BenchPath {
            data_path,
            gather: false,
        }
    }

    pub fn name(&self) -> &'static str {
        if self.gather {
            "sendfile_gather"
        } else {
            self.data_path.name()
        }
    }

    pub fn parse(s: &str) -> Result<BenchPath, String> {
        match s {
            "sendfile_gather" | "gather" => Ok(BenchPath::ALL[5]),
            other => other.parse().map(BenchPath::plain),
        }
    }

    pub fn model(&self) -> Model {
        Model::of(self.data_path, self.gather)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketChoice {
    Tcp,
    Unix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheState {
    Hot,
    Cold,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct TransferOptions {
    pub paths: Vec<BenchPath>,
    pub sockets: Vec<SocketChoice>,
    pub region_sizes: Vec<u64>,
    pub receivers: Vec<usize>,
    pub caches: Vec<CacheState>,
    pub repeats: usize,
    /// How long each run keeps sending.
    pub run_time: Duration,
    pub file_size: u64,
    /// Where the source file lives (must be a disk, not tmpfs, for cold runs).
    pub dir: PathBuf,
    /// The command that starts a receiver process (`sluice bench transfer-receiver`).
    pub receiver_cmd: Vec<OsString>,
    pub progress: bool,
    /// Pin the senders to one CPU and the receiver process to another, so each
    /// side's CPU time is its own and placement noise is gone. `None` leaves
    /// scheduling to the kernel.
    pub pin: Option<(usize, usize)>,
}

impl TransferOptions {
    /// The full matrix of the issue.
    pub fn full(receiver_cmd: Vec<OsString>, dir: PathBuf) -> TransferOptions {
        TransferOptions {
            // io_uring only where it runs (old kernels, io_uring_disabled).
            paths: BenchPath::ALL
                .into_iter()
                .filter(|p| p.data_path.is_available())
                .collect(),
            sockets: vec![SocketChoice::Tcp, SocketChoice::Unix],
            region_sizes: vec![4 << 10, 64 << 10, 1 << 20, 16 << 20],
            receivers: vec![1, 8],
            caches: vec![CacheState::Hot, CacheState::Cold],
            repeats: 5,
            run_time: Duration::from_millis(400),
            file_size: 512 << 20,
            dir,
            receiver_cmd,
            progress: true,
            pin: default_pinning(),
        }
    }

    /// Under a minute: TCP, 64 KiB and 1 MiB regions, 1 and 8 receivers, hot
    /// and cold, three repeats of short runs. Always includes the cells the
    /// issue's expectations name (1 MiB, 1 receiver, hot, TCP).
    pub fn quick(receiver_cmd: Vec<OsString>, dir: PathBuf) -> TransferOptions {
        TransferOptions {
            sockets: vec![SocketChoice::Tcp],
            region_sizes: vec![64 << 10, 1 << 20],
            repeats: 3,
            run_time: Duration::from_millis(150),
            file_size: 256 << 20,
            ..TransferOptions::full(receiver_cmd, dir)
        }
    }

    fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &cache in &self.caches {
            for &socket in &self.sockets {
                for &region in &self.region_sizes {
                    for &receivers in &self.receivers {
                        cells.push(Cell {
                            socket,
                            region,
                            receivers,
                            cache,
                        });
                    }
                }
            }
        }
        cells
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cell {
    socket: SocketChoice,
    region: u64,
    receivers: usize,
    cache: CacheState,
}

/// One measured run of one path in one cell.
#[derive(Clone, Debug, Default)]
struct Run {
    bytes: u64,
    transfers: u64,
    elapsed_s: f64,
    usage: Usage,
    counters: Counters,
    receiver_cpu_s: f64,
    resident: f64,
    /// The sender's pinned core, all of it (None when not pinned).
    core: Option<CoreTime>,
}

/// The article's model columns for a row.
#[derive(Clone, Debug, Serialize)]
pub struct ModelColumns {
    pub syscalls_per_transfer: u32,
    pub mode_switches: u32,
    pub cpu_copies: u32,
    pub dma_copies: u32,
    pub note: &'static str,
}

/// One cell of the table: medians at the top level (for scripts), ranges below.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub path: &'static str,
    pub socket: SocketChoice,
    pub region_bytes: u64,
    pub receivers: usize,
    pub cache: CacheState,
    pub gb_per_s: f64,
    pub sender_cpu_s_per_gb: f64,
    pub sender_user_s_per_gb: f64,
    pub sender_sys_s_per_gb: f64,
    pub syscalls_per_mib: f64,
    pub syscalls_per_transfer: f64,
    pub voluntary_csw_per_mib: f64,
    pub involuntary_csw_per_mib: f64,
    pub minor_faults_per_mib: f64,
    pub major_faults_per_mib: f64,
    pub user_space_bytes_per_byte: f64,
    pub eagain_per_mib: f64,
    pub receiver_cpu_s_per_gb: f64,
    /// Everything the sender's pinned core did per GB (its softirq work for
    /// the loopback receive path included); null when not pinned.
    pub sender_core_s_per_gb: Option<f64>,
    /// The softirq part of that.
    pub sender_core_softirq_s_per_gb: Option<f64>,
    /// Median of per-repeat ratios to `read_write` in the same cell and
    /// repeat (runs made side by side): sender process CPU per GB.
    pub sender_cpu_vs_read_write: Option<f64>,
    /// The sender core's time outside softirq per GB (its own work, without
    /// the loopback receive path), and its paired ratio to `read_write`.
    pub sender_core_net_s_per_gb: Option<f64>,
    pub sender_core_net_vs_read_write: Option<f64>,
    pub resident_fraction: f64,
    pub runs: usize,
    pub range: RowRanges,
    pub model: ModelColumns,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowRanges {
    pub gb_per_s: Stat,
    pub sender_cpu_s_per_gb: Stat,
    pub syscalls_per_mib: Stat,
    pub user_space_bytes_per_byte: Stat,
}

/// Facts about the run and the machine, printed and saved with the rows.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub date_utc: String,
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
    pub file_bytes: u64,
    pub file_dir: String,
    pub file_system: String,
    pub run_ms: u128,
    pub repeats: usize,
    pub read_buffer_bytes: usize,
    pub splice_pipe_bytes: Option<usize>,
    pub gather_header_bytes: usize,
    pub tcp_offload: String,
    pub tcp_zero_cpu_copy_possible: bool,
    /// (sender CPU, receiver CPU), when pinned.
    pub pinned: Option<(usize, usize)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub rows: Vec<Row>,
}

/// The receiver process, ended (stdin closed, then killed) when dropped.
struct ReceiverProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    tcp_port: u16,
    unix_path: PathBuf,
}

impl ReceiverProcess {
    fn start(
        cmd: &[OsString],
        unix_path: &Path,
        cpu: Option<usize>,
    ) -> Result<ReceiverProcess, BenchError> {
        let (program, args) = cmd.split_first().ok_or(BenchError::NoReceiverCommand)?;
        let mut command = Command::new(program);
        command.args(args).arg(unix_path);
        if let Some(cpu) = cpu {
            command.arg("--cpu").arg(cpu.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Receiver(format!("cannot start receiver: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or(BenchError::Receiver("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BenchError::Receiver(format!("receiver did not start: {e}")))?;
        let tcp_port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| {
                BenchError::Receiver(format!("unexpected receiver greeting {line:?}"))
            })?;
        Ok(ReceiverProcess {
            stdin: child.stdin.take(),
            child,
            tcp_port,
            unix_path: unix_path.to_path_buf(),
        })
    }

    fn connect(&self, socket: SocketChoice) -> std::io::Result<Conn> {
        Ok(match socket {
            SocketChoice::Tcp => Conn::Tcp(TcpStream::connect(("127.0.0.1", self.tcp_port))?),
            SocketChoice::Unix => Conn::Unix(UnixStream::connect(&self.unix_path)?),
        })
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }

    /// Ends the stream and waits for the receiver's reply.
    fn finish(&mut self) -> std::io::Result<Reply> {
        let mut reply = [0u8; REPLY_LEN];
        match self {
            Conn::Tcp(s) => {
                s.shutdown(Shutdown::Write)?;
                s.read_exact(&mut reply)?;
            }
            Conn::Unix(s) => {
                s.shutdown(Shutdown::Write)?;
                s.read_exact(&mut reply)?;
            }
        }
        Ok(Reply::decode(&reply))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no receiver command given")]
    NoReceiverCommand,
    #[error("receiver: {0}")]
    Receiver(String),
    #[error("source file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} over {socket:?}: {what}")]
    Run {
        path: &'static str,
        socket: SocketChoice,
        what: String,
    },
}

/// Senders on CPU 0, receivers on CPU 1, when there are two CPUs or more.
fn default_pinning() -> Option<(usize, usize)> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores >= 2).then_some((0, 1))
}

/// Creates (or reuses) the source file: `size` bytes of non-zero data.
fn prepare_file(dir: &Path, size: u64) -> Result<(PathBuf, File), BenchError> {
    let path = dir.join(format!("transfer-{size}.bin"));
    let err = |source| BenchError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let reuse = std::fs::metadata(&path)
        .map(|m| m.len() == size)
        .unwrap_or(false);
    if !reuse {
        let mut f = File::create(&path).map_err(err)?;
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8 | 1;
        }
        let mut written = 0;
        while written < size {
            let n = (size - written).min(block.len() as u64) as usize;
            f.write_all(&block[..n]).map_err(err)?;
            written += n as u64;
        }
        f.sync_all().map_err(err)?;
    }
    let f = File::open(&path).map_err(err)?;
    Ok((path, f))
}

/// Runs the whole matrix and returns the report.
pub fn run(opts: &TransferOptions) -> Result<Report, BenchError> {
    let (file_path, file) = prepare_file(&opts.dir, opts.file_size)?;
    let unix_path = opts
        .dir
        .join(format!("receiver-{}.sock", std::process::id()));
    let receiver = ReceiverProcess::start(&opts.receiver_cmd, &unix_path, opts.pin.map(|p| p.1))?;
    let meta = meta(opts, &file_path, &file, &receiver)?;
    if let Some((sender_cpu, _)) = opts.pin {
        // Sender threads are spawned by this thread and inherit its CPU.
        crate::usage::pin_to_cpu(sender_cpu)
            .map_err(|e| BenchError::Receiver(format!("pinning the sender: {e}")))?;
    }

    let cells = opts.cells();
    let total_runs = (cells.len() * opts.paths.len() * opts.repeats) as u64;
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total_runs)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} runs  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );

    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); opts.paths.len()]; cells.len()];
    for _ in 0..opts.repeats {
        for (ci, cell) in cells.iter().enumerate() {
            for (pi, path) in opts.paths.iter().enumerate() {
                bar.set_message(format!(
                    "{} {:?} {} x{} {:?}",
                    path.name(),
                    cell.socket,
                    human_bytes(cell.region),
                    cell.receivers,
                    cell.cache
                ));
                let run = run_once(opts, cell, *path, &file, &receiver)?;
                runs[ci][pi].push(run);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let baseline = opts
        .paths
        .iter()
        .position(|p| *p == BenchPath::plain(DataPath::ReadWrite));
    let mut rows = Vec::new();
    for (ci, cell) in cells.iter().enumerate() {
        for (pi, path) in opts.paths.iter().enumerate() {
            let base = baseline.map(|b| runs[ci][b].as_slice());
            rows.push(summarize(cell, *path, &runs[ci][pi], base));
        }
    }
    drop(receiver);
    Ok(Report { meta, rows })
}

fn meta(
    opts: &TransferOptions,
    file_path: &Path,
    file: &File,
    receiver: &ReceiverProcess,
) -> Result<Meta, BenchError> {
    // One throwaway connection to ask the kernel about the TCP device and the
    // pipe size a splice sender actually gets.
    let conn = receiver
        .connect(SocketChoice::Tcp)
        .map_err(|e| BenchError::Receiver(format!("connect: {e}")))?;
    let offload = sluice_io::offload::offload_for_socket(conn.fd());
    let splice_pipe_bytes = Sender::new(conn.fd(), DataPath::Splice)
        .ok()
        .and_then(|mut s| s.open_pipe().ok().flatten());
    drop(conn);
    let file_system = rustix::fs::fstatfs(file)
        // f_type's width differs between architectures.
        .map(|s| {
            #[allow(clippy::useless_conversion)]
            describe_fs(i64::from(s.f_type))
        })
        .unwrap_or_else(|_| "unknown".into());
    Ok(Meta {
        date_utc: utc_now(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default(),
        file_bytes: opts.file_size,
        file_dir: file_path
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string(),
        file_system,
        run_ms: opts.run_time.as_millis(),
        repeats: opts.repeats,
        read_buffer_bytes: sluice_io::DEFAULT_READ_BUFFER,
        splice_pipe_bytes,
        gather_header_bytes: GATHER_HEADER_LEN,
        tcp_zero_cpu_copy_possible: offload.zero_cpu_copy_possible(),
        tcp_offload: offload.summary,
        pinned: opts.pin,
    })
}

fn describe_fs(magic: i64) -> String {
    match magic {
        0x0102_1994 => "tmpfs (cold runs cannot evict: pages live in memory)".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("fs magic {other:#x}"),
    }
}

/// Today's date and time in UTC, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Sets the file's cache state for a run and returns its resident fraction.
fn prepare_cache(file: &File, size: u64, cache: CacheState) -> std::io::Result<f64> {
    match cache {
        CacheState::Hot => {
            // DAMON here pages out memory idle for about a minute, so "hot"
            // is made, not assumed.
            if cache::resident_fraction(file, 0, size)? < 0.999 {
                cache::warm(file, 0, size)?;
            }
        }
        CacheState::Cold => cache::evict(file)?,
    }
    cache::resident_fraction(file, 0, size)
}

fn run_once(
    opts: &TransferOptions,
    cell: &Cell,
    path: BenchPath,
    file: &File,
    receiver: &ReceiverProcess,
) -> Result<Run, BenchError> {
    let fail = |what: String| BenchError::Run {
        path: path.name(),
        socket: cell.socket,
        what,
    };
    let resident = prepare_cache(file, opts.file_size, cell.cache)
        .map_err(|e| fail(format!("page cache: {e}")))?;
    let n = cell.receivers;
    let region = cell.region;
    // Each sender owns a slice of the file. Hot senders cycle through theirs
    // until time is up; cold senders read theirs once, front to back (a
    // consumer catching up), and stop early if they reach its end.
    let slice = (opts.file_size / n as u64) / region * region;
    if slice == 0 {
        return Err(fail(format!(
            "file of {} too small for {n} receivers of {} regions",
            opts.file_size, region
        )));
    }
    let barrier = Arc::new(Barrier::new(n + 1));
    let file = Arc::new(file.try_clone().map_err(|e| fail(format!("dup: {e}")))?);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = receiver
            .connect(cell.socket)
            .map_err(|e| fail(format!("connect: {e}")))?;
        let barrier = barrier.clone();
        let file = file.clone();
        let run_time = opts.run_time;
        let cold = cell.cache == CacheState::Cold;
        handles.push(std::thread::spawn(
            move || -> Result<(Counters, u64, Reply), String> {
                let sender = Sender::new(conn.fd(), path.data_path);
                // Wait even on failure, or the main thread would wait forever.
                barrier.wait();
                let mut sender = sender.map_err(|e| e.to_string())?;
                let header = [0x5au8; GATHER_HEADER_LEN];
                let start_off = i as u64 * slice;
                let end_off = start_off + slice;
                let deadline = Instant::now() + run_time;
                let mut offset = start_off;
                let mut counters = Counters::default();
                let mut transfers = 0u64;
                while Instant::now() < deadline {
                    let r = FileRegion::new(&*file, offset, region);
                    let mut msg = if path.gather {
                        Message::new(vec![Chunk::Bytes(&header), Chunk::File(r)])
                    } else {
                        Message::region(r)
                    };
                    counters += sender
                        .send(conn.fd(), &mut msg)
                        .map_err(|e| e.to_string())?;
                    transfers += 1;
                    offset += region;
                    if offset + region > end_off {
                        if cold {
                            break;
                        }
                        offset = start_off;
                    }
                }
                let reply = conn.finish().map_err(|e| format!("receiver reply: {e}"))?;
                Ok((counters, transfers, reply))
            },
        ));
    }
    let sender_cpu = opts.pin.map(|p| p.0);
    barrier.wait();
    let t0 = Instant::now();
    let u0 = Usage::process();
    let c0 = sender_cpu.and_then(CoreTime::read);
    let mut run = Run {
        resident,
        ..Run::default()
    };
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok((counters, transfers, reply))) => {
                if reply.bytes != counters.bytes_sent {
                    failure = Some(format!(
                        "receiver got {} bytes, sender sent {}",
                        reply.bytes, counters.bytes_sent
                    ));
                }
                run.counters += counters;
                run.transfers += transfers;
                run.receiver_cpu_s += reply.cpu_s;
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("sender thread panicked".into()),
        }
    }
    run.usage = Usage::process().since(&u0);
    run.core = match (c0, sender_cpu.and_then(CoreTime::read)) {
        (Some(c0), Some(c1)) => Some(c1.since(&c0)),
        _ => None,
    };
    run.elapsed_s = t0.elapsed().as_secs_f64();
    run.bytes = run.counters.bytes_sent;
    match failure {
        Some(what) => Err(fail(what)),
        None => Ok(run),
    }
}

/// Sender process CPU per GB of a run.
fn cpu_per_gb(r: &Run) -> f64 {
    (r.usage.user_s + r.usage.system_s) / (r.bytes as f64 / GB)
}

/// The pinned sender core's time outside softirq per GB: the sender's own
/// work, without the receiving half of loopback TCP that runs on its core.
fn core_net_per_gb(r: &Run) -> Option<f64> {
    r.core
        .map(|c| (c.busy_s - c.softirq_s).max(0.0) / (r.bytes as f64 / GB))
}

/// The median over repeats of `metric(run) / metric(read_write run of the
/// same repeat)`: ratios of runs made side by side, so drift cancels.
fn paired_ratio(runs: &[Run], base: &[Run], metric: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let ratios: Option<Vec<f64>> = runs
        .iter()
        .zip(base)
        .map(|(r, b)| Some(metric(r)? / metric(b)?))
        .collect();
    ratios.filter(|v| !v.is_empty()).map(|v| Stat::of(v).median)
}

fn summarize(cell: &Cell, path: BenchPath, runs: &[Run], base: Option<&[Run]>) -> Row {
    let per = |f: &dyn Fn(&Run) -> f64| Stat::of(runs.iter().map(f).collect());
    let gbs = |r: &Run| r.bytes as f64 / GB;
    let mibs = |r: &Run| (r.bytes as f64 / MIB).max(f64::MIN_POSITIVE);
    let gb_per_s = per(&|r| gbs(r) / r.elapsed_s);
    let cpu = per(&cpu_per_gb);
    let syscalls = per(&|r| r.counters.total_calls() as f64 / mibs(r));
    let user_bytes = per(&|r| r.counters.user_space_bytes as f64 / r.bytes.max(1) as f64);
    let model = path.model();
    Row {
        path: path.name(),
        socket: cell.socket,
        region_bytes: cell.region,
        receivers: cell.receivers,
        cache: cell.cache,
        gb_per_s: gb_per_s.median,
        sender_cpu_s_per_gb: cpu.median,
        sender_user_s_per_gb: per(&|r| r.usage.user_s / gbs(r)).median,
        sender_sys_s_per_gb: per(&|r| r.usage.system_s / gbs(r)).median,
        syscalls_per_mib: syscalls.median,
        syscalls_per_transfer: per(&|r| {
            r.counters.total_calls() as f64 / r.transfers.max(1) as f64
        })
        .median,
        voluntary_csw_per_mib: per(&|r| r.usage.voluntary_csw as f64 / mibs(r)).median,
        involuntary_csw_per_mib: per(&|r| r.usage.involuntary_csw as f64 / mibs(r)).median,
        minor_faults_per_mib: per(&|r| r.usage.minor_faults as f64 / mibs(r)).median,
        major_faults_per_mib: per(&|r| r.usage.major_faults as f64 / mibs(r)).median,
        user_space_bytes_per_byte: user_bytes.median,
        eagain_per_mib: per(&|r| r.counters.eagain as f64 / mibs(r)).median,
        receiver_cpu_s_per_gb: per(&|r| r.receiver_cpu_s / gbs(r)).median,
        sender_core_s_per_gb: runs
            .iter()
            .all(|r| r.core.is_some())
            .then(|| per(&|r| r.core.map_or(0.0, |c| c.busy_s) / gbs(r)).median),
        sender_core_softirq_s_per_gb: runs
            .iter()
            .all(|r| r.core.is_some())
            .then(|| per(&|r| r.core.map_or(0.0, |c| c.softirq_s) / gbs(r)).median),
        sender_cpu_vs_read_write: base.and_then(|b| paired_ratio(runs, b, |r| Some(cpu_per_gb(r)))),
        sender_core_net_s_per_gb: runs
            .iter()
            .all(|r| r.core.is_some())
            .then(|| per(&|r| core_net_per_gb(r).unwrap_or(0.0)).median),
        sender_core_net_vs_read_write: base.and_then(|b| paired_ratio(runs, b, core_net_per_gb)),
        resident_fraction: per(&|r| r.resident).median,
        runs: runs.len(),
        range: RowRanges {
            gb_per_s,
            sender_cpu_s_per_gb: cpu,
            syscalls_per_mib: syscalls,
            user_space_bytes_per_byte: user_bytes,
        },
        model: ModelColumns {
            syscalls_per_transfer: model.syscalls,
            mode_switches: model.mode_switches,
            cpu_copies: model.cpu_copies,
            dma_copies: model.dma_copies,
            note: model.note,
        },
    }
}

/// `4 KiB`, `16 MiB`…
pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bench_path_name_parses_back() {
        for p in BenchPath::ALL {
            assert_eq!(BenchPath::parse(p.name()), Ok(p));
        }
    }
}
