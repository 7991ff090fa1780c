//! `sluice bench …`: the benchmark commands' arguments and what each runs;
//! the measuring itself is `sluice_bench`'s.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_bench::append::{self, AppendOptions};
use sluice_bench::report;
use sluice_bench::transfer::{self, BenchPath, CacheState, SocketChoice, TransferOptions};
use sluice_client::parse_size;
use sluice_log::AppendPath;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The source article's table, measured: every file-to-socket data path
    /// over loopback TCP and a Unix socket, hot and cold page cache.
    Transfer(Box<TransferArgs>),
    /// The log's append paths side by side: a mapped, pre-allocated segment
    /// (one memcpy per batch) against pwrite, with RecordBatch v2 batches.
    Append(AppendArgs),
    /// Load generator: produce pre-encoded batches to a Kafka-compatible broker
    /// (--transactional: transactions beside the idempotent producer).
    Produce(LoadProduceArgs),
    /// Load generator: consume partitions from the start, counting records.
    Consume(LoadConsumeArgs),
    /// Produce-to-consume latency at a fixed rate (one partition).
    E2e(LoadE2eArgs),
    /// Scenarios on a `sluice serve` process this command starts itself.
    #[command(subcommand)]
    Broker(BrokerBench),
    /// The log cleaner: MB/s of dirty log and its memory, and a live
    /// producer's p99 while it compacts, against a broker without it.
    Compaction(CompactionArgs),
    /// Cluster mode on an etcd and three brokers this command starts:
    /// replicated produce (RF 3 acks=all beside RF 1), failover time after
    /// SIGKILLing a leader, etcd's traffic idle and under load, a group's
    /// commits across SIGKILLs of its coordinator, and controlled shutdown
    /// times (--sections picks some).
    Cluster(ClusterArgs),
    /// Authorization's cost per check: `Authorizer::authorize` over ACL
    /// sets of each size, on one thread and on several at once.
    Authz(crate::bench_authz::AuthzArgs),
    /// The receiver process the transfer benchmark starts (reads and discards).
    #[command(hide = true)]
    TransferReceiver {
        /// Unix socket path to listen on.
        unix_path: PathBuf,
        /// Run the receiving threads on this CPU only.
        #[arg(long)]
        cpu: Option<usize>,
    },
}

#[derive(Args)]
pub struct CompactionArgs {
    /// Directory for the logs (on a disk).
    #[arg(long, default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Keyed updates written before cleaning.
    #[arg(long, value_parser = parse_size, default_value = "1g")]
    dirty: u64,
    /// Distinct keys the updates cycle through.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// The cleaner's offset map memory (log.cleaner.dedupe.buffer.size).
    #[arg(long, value_parser = parse_size, default_value = "128m")]
    dedupe_buffer: u64,
    /// The live producer's records per second.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Seconds each live-producer window lasts.
    #[arg(long, default_value_t = 10)]
    run_s: u64,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ClusterArgs {
    /// A fresh directory for etcd's and the brokers' data and logs is made
    /// under this one (deleted at the end; --keep keeps the logs).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Keep the brokers' and etcd's logs afterwards (also kept on failure).
    #[arg(long)]
    keep: bool,
    /// The etcd binary (3.4 or later).
    #[arg(long, env = "SLUICE_ETCD", default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// --cluster-lease-ms of every broker.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// --replica-lag-time-max-ms of every broker.
    #[arg(long, default_value_t = 3000)]
    replica_lag_ms: u64,
    #[arg(long, value_parser = parse_size, default_value = "100")]
    record_size: u64,
    #[arg(long, value_parser = parse_size, default_value = "16k")]
    batch_size: u64,
    /// Producer connections, one thread each.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Seconds of each produce window (unpaced windows write up to ~300 MB/s
    /// to the disk; each window's topic is deleted after it).
    #[arg(long, default_value_t = 3)]
    run_s: u64,
    #[arg(long, default_value_t = 1)]
    warmup_s: u64,
    /// Rounds of the three produce configurations (interleaved).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Each round also paces every configuration at this many records/s
    /// (latency below saturation); 0: unpaced windows only.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Failover rounds (SIGKILL the leader, time the first acks=all
    /// acknowledgement, restart it, wait for it back in the ISR).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Seconds of each etcd traffic window (idle, then under load).
    #[arg(long, default_value_t = 10)]
    etcd_window_s: u64,
    /// The producer's records/s in the loaded etcd window (RF 3, acks=all);
    /// 0: as fast as it goes.
    #[arg(long, default_value_t = 200_000)]
    etcd_rate: u64,
    /// Group coordinator failover rounds (SIGKILL the coordinator of a
    /// committing group member, time its first acknowledged commit with the
    /// same membership, check no acknowledged commit was lost, restart it).
    #[arg(long, default_value_t = 10)]
    group_kills: usize,
    /// The sections to run, comma-separated (they run in this order
    /// whatever the order given; a section not run is absent from the
    /// report): produce, failover, etcd, security (a quota set through
    /// one broker, the time until the others show it), groups (group
    /// coordinator failover), shutdown (controlled shutdown time of each
    /// broker).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = sluice_bench::cluster::Section::parse,
        default_value = "produce,failover,etcd,security,groups,shutdown"
    )]
    sections: Vec<sluice_bench::cluster::Section>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum BrokerBench {
    /// The article's table inside the broker: consume with each data path
    /// (broker CPU per GB, syscalls per fetch, bytes through user space), the
    /// bare io-layer sendfile of the same bytes in the same rounds, and
    /// scaling over consumer counts.
    Consume(BrokerConsumeArgs),
    /// Produce p99 at a fixed rate while one consumer catches up on evicted
    /// data, against the producer alone; cold-read isolation on and off.
    Isolation(BrokerIsolationArgs),
    /// What TLS costs: consume and produce through a PLAINTEXT and an SSL
    /// listener of one broker, interleaved, with broker CPU per GB.
    Tls(BrokerTlsArgs),
}

#[derive(Args)]
pub struct BrokerTlsArgs {
    /// Directory for the broker's data and the throwaway certificate.
    #[arg(long, default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Bytes to produce before the consume windows.
    #[arg(long, value_parser = parse_size, default_value = "1g")]
    fill: u64,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Milliseconds each window measures.
    #[arg(long, default_value_t = 3000)]
    run_ms: u64,
    #[arg(long, value_parser = parse_size, default_value = "1m")]
    fetch_size: u64,
    /// Producer connections (each one request at a time).
    #[arg(long, default_value_t = 4)]
    producers: u32,
    #[arg(long, value_parser = parse_size, default_value = "256k")]
    batch_size: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct BrokerConsumeArgs {
    /// Directory for the broker's data (on a disk).
    #[arg(long, default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Bytes to produce before measuring.
    #[arg(long, value_parser = parse_size, default_value = "1g")]
    fill: u64,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Data paths (default: every one available here).
    #[arg(long, value_delimiter = ',')]
    paths: Option<Vec<sluice_io::DataPath>>,
    /// Consumer counts (e.g. 1,4,16,64).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    consumers: Vec<u32>,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Milliseconds each run consumes.
    #[arg(long, default_value_t = 3000)]
    run_ms: u64,
    /// Bytes per fetch (fetch.max.bytes and the partition maximum).
    #[arg(long, value_parser = parse_size, default_value = "1m")]
    fetch_size: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "bench-out/broker-consume.svg")]
    svg: PathBuf,
    /// Measure nothing: print and draw a report saved earlier with --json.
    #[arg(long, value_name = "JSON")]
    redraw: Option<PathBuf>,
    /// Run the brokers from this `sluice` binary instead of this one (an
    /// earlier build, for a before/after comparison with the same load).
    #[arg(long, value_name = "PATH")]
    broker_bin: Option<PathBuf>,
    /// `SSL`: measure consume (and produce) through an SSL listener beside
    /// a PLAINTEXT one of the same broker, interleaved, with broker CPU per
    /// GB — `bench broker tls` with these --dir, --fill, --partitions,
    /// --repeats, --run-ms, --fetch-size and --json. `PLAINTEXT` (the
    /// default) is the data-path comparison.
    #[arg(long, value_name = "PROTOCOL", default_value = "PLAINTEXT")]
    listener_security: String,
}

#[derive(Args)]
pub struct BrokerIsolationArgs {
    #[arg(long, default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Backlog the consumer catches up on, evicted from the page cache first.
    #[arg(long, value_parser = parse_size, default_value = "2g")]
    backlog: u64,
    /// Producer records per second.
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Longest a catch-up may take, in seconds.
    #[arg(long, default_value_t = 60)]
    max_run_s: u64,
    /// Run the broker on CPU 0 and the load generator on CPU 1.
    #[arg(long)]
    pin: bool,
    /// The brokers' data path (default: serve's default).
    #[arg(long)]
    data_path: Option<sluice_io::DataPath>,
    /// A control: leave the backlog in the page cache (no disk reads), to
    /// see what serving the consumer costs the producer by itself.
    #[arg(long)]
    warm: bool,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "bench-out/broker-isolation.svg")]
    svg: PathBuf,
}

#[derive(Args)]
pub struct TransferArgs {
    /// A short run (under a minute): TCP, 64 KiB and 1 MiB regions, 1 and 8
    /// receivers, hot and cold, 3 repeats.
    #[arg(long)]
    quick: bool,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Where to write the SVG chart.
    #[arg(long, value_name = "PATH", default_value = "bench-out/transfer.svg")]
    svg: PathBuf,
    /// Directory for the source file; must be on a disk (not tmpfs) for cold runs.
    #[arg(long, value_name = "DIR", default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Paths to run (read_write, mmap_write, sendfile, splice, io_uring,
    /// sendfile_gather).
    #[arg(long, value_delimiter = ',', value_parser = BenchPath::parse)]
    paths: Option<Vec<BenchPath>>,
    /// Region sizes (e.g. 4k,64k,1m,16m).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Option<Vec<u64>>,
    /// Concurrent receivers per cell (e.g. 1,8).
    #[arg(long, value_delimiter = ',')]
    receivers: Option<Vec<usize>>,
    /// Sockets: tcp, unix.
    #[arg(long, value_delimiter = ',', value_parser = parse_socket)]
    sockets: Option<Vec<SocketChoice>>,
    /// Cache states: hot, cold.
    #[arg(long, value_delimiter = ',', value_parser = parse_cache)]
    cache: Option<Vec<CacheState>>,
    /// Repeats of every cell.
    #[arg(long)]
    repeats: Option<usize>,
    /// Milliseconds each run keeps sending.
    #[arg(long, value_name = "MS")]
    run_ms: Option<u64>,
    /// Let the kernel place senders and receivers instead of pinning the
    /// senders to CPU 0 and the receiver process to CPU 1.
    #[arg(long)]
    no_pin: bool,
    /// Size of the source file (e.g. 512m).
    #[arg(long, value_parser = parse_size)]
    file_size: Option<u64>,
}

#[derive(Args)]
pub struct AppendArgs {
    /// Append paths to compare (mmap, pwrite).
    #[arg(long, value_delimiter = ',', default_value = "mmap,pwrite")]
    paths: Vec<AppendPath>,
    /// Record value sizes (e.g. 100,1k).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "100,1k")]
    record_sizes: Vec<u64>,
    /// Target batch size.
    #[arg(long, value_parser = parse_size, default_value = "16k")]
    batch_bytes: u64,
    /// Segment size (segment.bytes).
    #[arg(long, value_parser = parse_size, default_value = "1g")]
    segment_bytes: u64,
    /// Milliseconds each run keeps appending.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    run_ms: u64,
    /// Repeats of every cell.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Directory for the partitions (on a disk, not tmpfs).
    #[arg(long, value_name = "DIR", default_value = "sluice-bench-data")]
    dir: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoadProduceArgs {
    /// Broker address (any Kafka-compatible broker).
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    broker: String,
    #[arg(short, long, default_value = "bench")]
    topic: String,
    /// Partitions to spread over (at most the topic's).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Connections, one thread each.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    #[arg(long, value_parser = parse_size, default_value = "100")]
    record_size: u64,
    #[arg(long, value_parser = parse_size, default_value = "16k")]
    batch_size: u64,
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = crate::tools::parse_compression)]
    compression: kafka_protocol::records::Compression,
    /// Records per second in total; as fast as possible if unset.
    #[arg(long)]
    rate: Option<u64>,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the latency percentiles as an SVG chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Transactions against the idempotent producer, in interleaved
    /// rounds on fresh topics (named after --topic): records/s of each,
    /// their ratio and the commit (EndTxn) latency; then read_committed
    /// consumers beside read_uncommitted ones over the last transactional
    /// topic. acks=all; --duration-s and --warmup-s are per window.
    #[arg(long)]
    transactional: bool,
    /// Records per transaction (with --transactional; batches are made
    /// smaller if it is less than a batch holds).
    #[arg(long, requires = "transactional")]
    txn_records: Option<u64>,
    /// Milliseconds a transaction lasts (with --transactional; the default
    /// when neither this nor --txn-records is given: 100).
    #[arg(long, requires = "transactional")]
    txn_ms: Option<u64>,
    /// Produce rounds: one idempotent and one transactional window each.
    #[arg(long, default_value_t = 3, requires = "transactional")]
    rounds: usize,
    /// Consume rounds: one read_uncommitted and one read_committed window
    /// each (default: as many as --rounds).
    #[arg(long, requires = "transactional")]
    consume_rounds: Option<usize>,
    /// Abort every K-th transaction of each producer instead of committing
    /// it, so read_committed consumers have aborted data to drop.
    #[arg(long, value_name = "K", requires = "transactional")]
    txn_abort_every: Option<u64>,
    /// Seconds of each consume window (with --transactional).
    #[arg(long, default_value_t = 3, requires = "transactional")]
    consume_s: u64,
    /// transaction.timeout.ms of the transactional producers.
    #[arg(long, default_value_t = 60_000, requires = "transactional")]
    txn_timeout_ms: i32,
    /// Bytes per partition per fetch of the consume windows.
    #[arg(long, value_parser = parse_size, default_value = "1m", requires = "transactional")]
    fetch_size: u64,
}

#[derive(Args)]
pub struct LoadE2eArgs {
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    broker: String,
    #[arg(short, long, default_value = "e2e")]
    topic: String,
    /// Records per second.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    #[arg(long, value_parser = parse_size, default_value = "100")]
    record_size: u64,
    /// Milliseconds between batches (the producer's linger).
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the latency percentiles as an SVG chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoadConsumeArgs {
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    broker: String,
    #[arg(short, long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value_t = 4)]
    connections: u32,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Bytes per partition per fetch.
    #[arg(long, value_parser = parse_size, default_value = "1m")]
    fetch_size: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the latency percentiles as an SVG chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn parse_socket(s: &str) -> Result<SocketChoice, String> {
    match s {
        "tcp" => Ok(SocketChoice::Tcp),
        "unix" => Ok(SocketChoice::Unix),
        _ => Err(format!("unknown socket {s:?} (tcp or unix)")),
    }
}

fn parse_cache(s: &str) -> Result<CacheState, String> {
    match s {
        "hot" => Ok(CacheState::Hot),
        "cold" => Ok(CacheState::Cold),
        _ => Err(format!("unknown cache state {s:?} (hot or cold)")),
    }
}

/// Runs one `sluice bench …` command.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Transfer(args) => bench_transfer(*args),
        BenchCommand::Append(args) => bench_append(args),
        BenchCommand::Produce(args) => bench_produce(args),
        BenchCommand::Consume(args) => bench_consume(args),
        BenchCommand::E2e(args) => bench_e2e(args),
        BenchCommand::Compaction(args) => bench_compaction(args),
        BenchCommand::Cluster(args) => bench_cluster(args),
        BenchCommand::Authz(args) => crate::bench_authz::run(args),
        BenchCommand::Broker(BrokerBench::Consume(args)) => bench_broker_consume(args),
        BenchCommand::Broker(BrokerBench::Tls(args)) => bench_broker_tls(args),
        BenchCommand::Broker(BrokerBench::Isolation(args)) => bench_broker_isolation(args),
        BenchCommand::TransferReceiver { unix_path, cpu } => {
            sluice_bench::receiver::run_receiver(&unix_path, cpu).context("receiver")
        }
    }
}

fn bench_transfer(args: TransferArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating the sluice binary")?;
    let receiver_cmd: Vec<OsString> = vec![exe.into(), "bench".into(), "transfer-receiver".into()];
    let mut opts = if args.quick {
        TransferOptions::quick(receiver_cmd, args.dir)
    } else {
        TransferOptions::full(receiver_cmd, args.dir)
    };
    if let Some(v) = args.paths {
        opts.paths = v;
    }
    if let Some(v) = args.sizes {
        opts.region_sizes = v;
    }
    if let Some(v) = args.receivers {
        if v.contains(&0) {
            bail!("--receivers must be at least 1");
        }
        opts.receivers = v;
    }
    if let Some(v) = args.sockets {
        opts.sockets = v;
    }
    if let Some(v) = args.cache {
        opts.caches = v;
    }
    if let Some(v) = args.repeats {
        opts.repeats = v.max(1);
    }
    if let Some(ms) = args.run_ms {
        opts.run_time = Duration::from_millis(ms.max(1));
    }
    if let Some(size) = args.file_size {
        opts.file_size = size;
    }
    if args.no_pin {
        opts.pin = None;
    }
    let report = transfer::run(&opts)?;
    print!("{}", report::table(&report));
    if let Some(parent) = args.svg.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    report::write_svg(&report, &args.svg)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.svg.display()))?;
    println!("chart: {}", args.svg.display());
    if let Some(json) = args.json {
        report::write_json(&report, &json)
            .with_context(|| format!("writing {}", json.display()))?;
        println!("json: {}", json.display());
    }
    Ok(())
}

fn bench_append(args: AppendArgs) -> Result<()> {
    let opts = AppendOptions {
        paths: args.paths,
        record_sizes: args.record_sizes.iter().map(|&s| s as usize).collect(),
        batch_bytes: args.batch_bytes as usize,
        segment_bytes: args.segment_bytes,
        run_time: Duration::from_millis(args.run_ms.max(1)),
        repeats: args.repeats.max(1),
        dir: args.dir,
    };
    let report = append::run(&opts).context("append benchmark")?;
    print!("{}", append::table(&report));
    if let Some(json) = args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        println!("json: {}", json.display());
    }
    Ok(())
}

fn write_load_report(
    report: &sluice_bench::load::LoadReport,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> Result<()> {
    println!("{}", sluice_bench::load::summary(report));
    if let Some(json) = json {
        std::fs::write(&json, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", json.display()))?;
        println!("json: {}", json.display());
    }
    if let Some(svg) = svg {
        sluice_bench::chart::write_load_svg(report, &svg)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
        println!("svg: {}", svg.display());
    }
    Ok(())
}

fn bench_produce(a: LoadProduceArgs) -> Result<()> {
    if a.transactional {
        return bench_produce_transactional(a);
    }
    let opts = sluice_bench::load::ProduceOptions {
        broker: a.broker,
        topic: a.topic,
        partitions: a.partitions,
        connections: a.connections,
        record_bytes: a.record_size as usize,
        batch_bytes: a.batch_size as usize,
        acks: a.acks,
        compression: a.compression,
        duration: Duration::from_secs(a.duration_s.max(1)),
        warmup: Duration::from_secs(a.warmup_s),
        target_rate: a.rate,
        in_flight: a.in_flight,
        until: None,
        progress: true,
        security: Default::default(),
    };
    let report = sluice_bench::load::produce(&opts).context("produce load")?;
    write_load_report(&report, a.json, a.svg)
}

fn bench_produce_transactional(a: LoadProduceArgs) -> Result<()> {
    use sluice_bench::txn;
    if a.rate.is_some() {
        bail!(
            "--rate is not supported with --transactional (the producers run as fast as they go)"
        );
    }
    if a.acks != 1 && a.acks != -1 {
        bail!("--transactional produces with acks=all (-1)");
    }
    if a.svg.is_some() {
        bail!("--svg is not supported with --transactional");
    }
    let opts = txn::TxnBenchOptions {
        broker: a.broker,
        topic: a.topic,
        partitions: a.partitions,
        connections: a.connections,
        record_bytes: a.record_size as usize,
        batch_bytes: a.batch_size as usize,
        compression: a.compression,
        in_flight: a.in_flight,
        duration: Duration::from_secs(a.duration_s.max(1)),
        warmup: Duration::from_secs(a.warmup_s),
        rounds: a.rounds.max(1),
        consume_rounds: a.consume_rounds.unwrap_or(a.rounds).max(1),
        txn_records: a.txn_records.map(|n| n.max(1)),
        txn_time: a.txn_ms.map(|ms| Duration::from_millis(ms.max(1))),
        txn_timeout_ms: a.txn_timeout_ms,
        abort_every: a.txn_abort_every.map(|k| k.max(1)),
        consume_duration: Duration::from_secs(a.consume_s.max(1)),
        fetch_bytes: a.fetch_size.min(i32::MAX as u64) as i32,
        progress: true,
    };
    let report = txn::run(&opts).context("transactional produce benchmark")?;
    print!("{}", txn::table(&report));
    if let Some(path) = a.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn bench_consume(a: LoadConsumeArgs) -> Result<()> {
    let opts = sluice_bench::load::ConsumeOptions {
        broker: a.broker,
        topic: a.topic,
        partitions: a.partitions,
        connections: a.connections,
        duration: Duration::from_secs(a.duration_s.max(1)),
        fetch_bytes: a.fetch_size.min(i32::MAX as u64) as i32,
        once: false,
        progress: true,
        security: Default::default(),
    };
    let report = sluice_bench::load::consume(&opts).context("consume load")?;
    write_load_report(&report, a.json, a.svg)
}

fn bench_e2e(a: LoadE2eArgs) -> Result<()> {
    let opts = sluice_bench::load::EndToEndOptions {
        broker: a.broker,
        topic: a.topic,
        rate: a.rate.max(1),
        record_bytes: a.record_size as usize,
        linger: Duration::from_millis(a.linger_ms.max(1)),
        acks: a.acks,
        duration: Duration::from_secs(a.duration_s.max(1)),
        warmup: Duration::from_secs(a.warmup_s),
    };
    let report = sluice_bench::load::end_to_end(&opts).context("end-to-end load")?;
    write_load_report(&report, a.json, a.svg)
}

fn write_json_and_svg<T>(
    report: &T,
    json_text: String,
    json: Option<PathBuf>,
    svg: &std::path::Path,
    draw: impl FnOnce(&T, &std::path::Path) -> Result<(), String>,
) -> Result<()> {
    if let Some(json) = json {
        std::fs::write(&json, json_text).with_context(|| format!("writing {}", json.display()))?;
        println!("json: {}", json.display());
    }
    if let Some(parent) = svg.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    draw(report, svg).map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
    println!("svg: {}", svg.display());
    Ok(())
}

fn bench_broker_consume(a: BrokerConsumeArgs) -> Result<()> {
    use sluice_bench::harness;
    match a.listener_security.to_ascii_uppercase().as_str() {
        "PLAINTEXT" => {}
        "SSL" => {
            return bench_broker_tls(BrokerTlsArgs {
                dir: a.dir,
                fill: a.fill,
                partitions: a.partitions,
                repeats: a.repeats,
                run_ms: a.run_ms,
                fetch_size: a.fetch_size,
                producers: 4,
                batch_size: 256 * 1024,
                json: a.json,
            });
        }
        other => bail!(
            "--listener-security {other}: PLAINTEXT (the data paths) or SSL (TLS beside \
             plaintext); SASL adds only the login to a connection's cost"
        ),
    }
    if let Some(saved) = &a.redraw {
        let text = std::fs::read_to_string(saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        let report: harness::ConsumeReport =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", saved.display()))?;
        print!("{}", harness::consume_table(&report));
        return write_json_and_svg(&report, text, None, &a.svg, harness::write_consume_svg);
    }
    let scenario = harness::ConsumeScenario {
        exe: match a.broker_bin {
            Some(bin) => bin,
            None => std::env::current_exe().context("locating the sluice binary")?,
        },
        dir: a.dir,
        fill_bytes: a.fill,
        partitions: a.partitions.max(1),
        paths: a.paths.unwrap_or_else(|| {
            sluice_io::DataPath::ALL
                .into_iter()
                .filter(|p| p.is_available())
                .collect()
        }),
        consumers: a.consumers,
        repeats: a.repeats.max(1),
        run: Duration::from_millis(a.run_ms.max(100)),
        fetch_bytes: a.fetch_size.min(i32::MAX as u64) as i32,
    };
    let report = harness::consume(&scenario).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", harness::consume_table(&report));
    let text = serde_json::to_string_pretty(&report)?;
    write_json_and_svg(&report, text, a.json, &a.svg, harness::write_consume_svg)
}

fn bench_broker_tls(a: BrokerTlsArgs) -> Result<()> {
    use sluice_bench::harness;
    let scenario = harness::TlsScenario {
        exe: std::env::current_exe().context("locating the sluice binary")?,
        dir: a.dir,
        fill_bytes: a.fill,
        partitions: a.partitions.max(1),
        repeats: a.repeats.max(1),
        run: Duration::from_millis(a.run_ms.max(100)),
        fetch_bytes: a.fetch_size.min(i32::MAX as u64) as i32,
        producers: a.producers.max(1),
        batch_bytes: a.batch_size as usize,
    };
    let report = harness::tls(&scenario).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", harness::tls_table(&report));
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_broker_isolation(a: BrokerIsolationArgs) -> Result<()> {
    use sluice_bench::harness;
    let scenario = harness::IsolationScenario {
        exe: std::env::current_exe().context("locating the sluice binary")?,
        dir: a.dir,
        backlog_bytes: a.backlog,
        rate: a.rate.max(1),
        repeats: a.repeats.max(1),
        max_run: Duration::from_secs(a.max_run_s.max(1)),
        pin: a.pin.then_some((0, 1)),
        data_path: a.data_path,
        warm: a.warm,
    };
    let report = harness::isolation(&scenario).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", harness::isolation_table(&report));
    let text = serde_json::to_string_pretty(&report)?;
    write_json_and_svg(&report, text, a.json, &a.svg, harness::write_isolation_svg)
}

fn bench_compaction(a: CompactionArgs) -> Result<()> {
    use sluice_bench::compaction;
    let scenario = compaction::CompactionScenario {
        exe: std::env::current_exe().context("locating the sluice binary")?,
        dir: a.dir,
        dirty_bytes: a.dirty,
        keys: a.keys.max(1),
        value_bytes: a.value_bytes,
        dedupe_buffer_bytes: a.dedupe_buffer as usize,
        rate: a.rate.max(1),
        run: Duration::from_secs(a.run_s.max(1)),
        repeats: a.repeats.max(1),
    };
    let report = compaction::compaction(&scenario).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", compaction::table(&report));
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn bench_cluster(a: ClusterArgs) -> Result<()> {
    use sluice_bench::cluster;
    if !a.etcd.exists() {
        bail!(
            "{} is missing: install etcd 3.4+ (Debian's etcd-server) or pass --etcd",
            a.etcd.display()
        );
    }
    let scenario = cluster::ClusterScenario {
        sections: cluster::Section::ALL
            .into_iter()
            .filter(|x| a.sections.contains(x))
            .collect(),
        exe: std::env::current_exe().context("locating the sluice binary")?,
        etcd: a.etcd,
        dir: a.dir,
        lease_ms: a.lease_ms.max(1000),
        lag_ms: a.replica_lag_ms.max(100),
        record_bytes: a.record_size.max(1) as usize,
        batch_bytes: a.batch_size.max(1) as usize,
        connections: a.connections.max(1),
        in_flight: a.in_flight.max(1),
        run: Duration::from_secs(a.run_s.max(1)),
        warmup: Duration::from_secs(a.warmup_s),
        repeats: a.repeats.max(1),
        paced_rate: (a.rate > 0).then_some(a.rate),
        kills: a.kills,
        etcd_window: Duration::from_secs(a.etcd_window_s.max(1)),
        etcd_rate: (a.etcd_rate > 0).then_some(a.etcd_rate),
        group_kills: a.group_kills,
        keep: a.keep,
    };
    let report = cluster::cluster(&scenario).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", cluster::table(&report));
    if let Some(path) = a.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}
