//! `sluice bench produce --transactional`: what transactions cost, measured
//! beside what they are compared with, in the same run.
//!
//! - Produce: rounds of two windows, an idempotent producer and a
//!   transactional one, interleaved (the order alternates round by round,
//!   so drift in the machine favours neither). Both send the same
//!   pre-encoded batches, stamped with their producer id, epoch and
//!   sequences, with acks=all and the same requests in flight per
//!   connection; each connection is one producer. The transactional one
//!   runs Kafka's client loop: AddPartitionsToTxn for its partitions,
//!   batches until the transaction has `txn_records` records or has lasted
//!   `txn_time`, waits for every batch's acknowledgement (the client's
//!   flush), then EndTxn(commit), timed (commit latency). Its records count
//!   when their commit returns inside the measured window; the idempotent
//!   producer's when their acknowledgement does.
//! - Consume: the last transactional window's topic (committed data and
//!   COMMIT markers) read from the start by read_uncommitted and
//!   read_committed consumers in interleaved windows, counting the records
//!   each hands to the application (markers are dropped by both, and
//!   aborted transactions by read_committed, as Kafka's consumers do).
//!
//! Every window writes to a fresh topic, deleted after it (the consumed one
//! after the consume windows). Produce and fetch requests go to the broker
//! given: one broker, as `bench produce` measures (in a cluster it would
//! have to lead every partition); the transactional producers find their
//! coordinators themselves.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::Compression;
use serde::Serialize;
use sluice_client::txn::{
    READ_COMMITTED, READ_UNCOMMITTED, ReadCommitted, producer_batch, txn_produce_request,
};
use sluice_client::{Client, ClientError, TxnProducer, batches, error_name};

use crate::load::{Latency, encoded_batch, histogram, latency, wait_window};
use crate::stats::median;

/// What `sluice bench produce --transactional` runs.
#[derive(Clone, Debug)]
pub struct TxnBenchOptions {
    pub broker: String,
    /// Topic names start with this; each window makes its own topic.
    pub topic: String,
    pub partitions: u32,
    /// Producers (one connection and thread each), and consumers.
    pub connections: u32,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub compression: Compression,
    /// Produce requests in flight per connection.
    pub in_flight: usize,
    /// Each produce window's measured length, after `warmup`.
    pub duration: Duration,
    pub warmup: Duration,
    /// Produce rounds (one idempotent and one transactional window each).
    pub rounds: usize,
    /// Consume rounds (one window per isolation level each).
    pub consume_rounds: usize,
    /// A transaction ends after this many records …
    pub txn_records: Option<u64>,
    /// … or after lasting this long, whichever comes first.
    pub txn_time: Option<Duration>,
    pub txn_timeout_ms: i32,
    /// Abort every n-th transaction of each producer instead of committing
    /// it (None: commit all), so read_committed consumers have aborted
    /// data to drop.
    pub abort_every: Option<u64>,
    /// Each consume window's length.
    pub consume_duration: Duration,
    pub fetch_bytes: i32,
    pub progress: bool,
}

/// The two producers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProducerMode {
    Idempotent,
    Transactional,
}

impl ProducerMode {
    pub fn name(self) -> &'static str {
        match self {
            ProducerMode::Idempotent => "idempotent",
            ProducerMode::Transactional => "transactional",
        }
    }
}

/// One produce window.
#[derive(Clone, Debug, Serialize)]
pub struct ProduceWindow {
    pub mode: ProducerMode,
    pub round: usize,
    pub topic: String,
    /// Records acknowledged (idempotent) or committed (transactional) in
    /// the window.
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Produce requests acknowledged in the window, and their latency.
    pub requests: u64,
    pub produce_latency: Latency,
    /// Transactions committed in the window (transactional only).
    pub commits: u64,
    /// EndTxn(commit) round trips (transactional only).
    pub commit_latency: Option<Latency>,
    /// AddPartitionsToTxn round trips, retries included.
    pub add_partitions_latency: Option<Latency>,
    /// AddPartitionsToTxn retries (CONCURRENT_TRANSACTIONS and the like).
    pub add_partitions_retries: u64,
    /// Mean records per committed transaction, and mean duration (first
    /// AddPartitionsToTxn to EndTxn returned).
    pub records_per_txn: Option<f64>,
    pub txn_ms: Option<f64>,
    pub broker_cpu_s_per_gb: Option<f64>,
    /// Every record acknowledged (idempotent) or committed (transactional)
    /// on the topic, warm-up and wind-down included: what a reader of the
    /// whole topic must find.
    pub records_total: u64,
    /// Transactions aborted in the window (`abort_every`), and every record
    /// of the topic's aborted transactions.
    pub aborts: u64,
    pub aborted_records_total: u64,
}

/// One consume window.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumeWindow {
    /// `read_uncommitted` or `read_committed`.
    pub isolation: &'static str,
    pub round: usize,
    /// Records handed to the application.
    pub records: u64,
    /// Bytes of the records fields fetched.
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub fetches: u64,
    pub fetch_latency: Latency,
    /// Control batches (markers) skipped, and data batches of aborted
    /// transactions dropped.
    pub control_batches: u64,
    pub aborted_batches: u64,
    pub broker_cpu_s_per_gb: Option<f64>,
}

/// What was run, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct TxnBenchConfig {
    pub broker: String,
    pub partitions: u32,
    pub connections: u32,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    /// Records per produced batch.
    pub records_per_batch: u64,
    pub compression: String,
    pub in_flight: usize,
    pub acks: i16,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: usize,
    pub consume_rounds: usize,
    pub txn_records: Option<u64>,
    pub txn_ms: Option<u64>,
    pub txn_timeout_ms: i32,
    pub abort_every: Option<u64>,
    pub consume_s: f64,
    pub fetch_bytes: i32,
}

/// The run: every window and the comparisons.
#[derive(Clone, Debug, Serialize)]
pub struct TxnBenchReport {
    pub config: TxnBenchConfig,
    pub produce: Vec<ProduceWindow>,
    pub consume: Vec<ConsumeWindow>,
    /// Medians over the rounds.
    pub idempotent_records_per_s: f64,
    pub transactional_records_per_s: f64,
    /// transactional / idempotent, of the medians (target ≥ 0.8 with
    /// 100 ms transactions).
    pub produce_ratio: f64,
    /// The same ratio round by round, and their median (each round's two
    /// windows are neighbours in time, so this one is less exposed to the
    /// machine's drift over the run).
    pub produce_ratio_by_round: Vec<f64>,
    pub produce_ratio_median_of_rounds: f64,
    /// EndTxn(commit) latency over every transactional window.
    pub commit_latency: Latency,
    pub commits: u64,
    pub read_uncommitted_records_per_s: f64,
    pub read_committed_records_per_s: f64,
    /// read_committed / read_uncommitted, of the medians (target ≥ 0.95).
    pub consume_ratio: f64,
    pub consume_ratio_by_round: Vec<f64>,
    pub consume_ratio_median_of_rounds: f64,
    /// The consumed topic read once through at each isolation level:
    /// both must find every committed record (`records_total` of its
    /// window), the control batches dropped.
    pub check: Option<Check>,
}

/// One pass over the consumed topic at each isolation level.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub topic: String,
    pub committed: u64,
    /// Records of aborted transactions: read_uncommitted finds them too.
    pub aborted: u64,
    pub read_committed: u64,
    pub read_uncommitted: u64,
    pub markers: u64,
    pub ok: bool,
}

/// Reads every partition of `topic` once from the start at `isolation`:
/// (records kept, control batches).
fn read_once(
    opts: &TxnBenchOptions,
    topic: &str,
    isolation: i8,
) -> Result<(u64, u64), ClientError> {
    let mut client = Client::connect(opts.broker.as_str())?;
    let (mut records, mut markers) = (0, 0);
    for partition in 0..opts.partitions as i32 {
        let mut offset = client.list_offset(topic, partition, -2)?;
        let mut filter = ReadCommitted::default();
        loop {
            let f =
                client.fetch_isolated(topic, partition, offset, 0, opts.fetch_bytes, isolation)?;
            if f.error_code != 0 {
                return Err(ClientError::Kafka(f.error_code));
            }
            filter.add_aborted(&f.aborted);
            let mut last = None;
            for b in batches(&f.records) {
                last = Some(b.header.last_offset());
                if b.header.last_offset() < offset {
                    continue;
                }
                if b.header.is_control() {
                    markers += 1;
                }
                let keep = if isolation == READ_COMMITTED {
                    filter.keep(&b.header)
                } else {
                    !b.header.is_control()
                };
                if keep {
                    records += b.header.record_count.max(0) as u64;
                }
            }
            match last {
                Some(last) => offset = last + 1,
                None => break,
            }
        }
    }
    Ok((records, markers))
}

/// The partitions connection `conn` writes, in turn: `conn`, then every
/// `connections`-th after it, round the topic's `partitions`.
fn partitions_of(conn: u32, connections: u32, partitions: u32) -> Vec<i32> {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut p = conn % partitions;
    while seen.insert(p) {
        order.push(p as i32);
        p = (p + connections) % partitions;
    }
    order
}

/// What one producer thread counted.
struct ProducerCounts {
    records: u64,
    requests: u64,
    produce: Histogram<u64>,
    commits: u64,
    commit: Histogram<u64>,
    add: Histogram<u64>,
    retries: u64,
    txn_micros: u64,
    total: u64,
    aborts: u64,
    aborted_total: u64,
}

impl ProducerCounts {
    fn new() -> ProducerCounts {
        ProducerCounts {
            records: 0,
            requests: 0,
            produce: histogram(),
            commits: 0,
            commit: histogram(),
            add: histogram(),
            retries: 0,
            txn_micros: 0,
            total: 0,
            aborts: 0,
            aborted_total: 0,
        }
    }

    fn merge(&mut self, o: ProducerCounts) {
        self.records += o.records;
        self.requests += o.requests;
        self.commits += o.commits;
        self.retries += o.retries;
        self.txn_micros += o.txn_micros;
        self.total += o.total;
        self.aborts += o.aborts;
        self.aborted_total += o.aborted_total;
        let _ = self.produce.add(&o.produce);
        let _ = self.commit.add(&o.commit);
        let _ = self.add.add(&o.add);
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().max(1) as u64
}

/// Produce requests in flight on one connection, acknowledged in order.
struct Pipeline {
    client: Client,
    window: usize,
    /// (correlation id, sent at, records, partition).
    in_flight: VecDeque<(i32, Instant, u64, i32)>,
}

impl Pipeline {
    /// Sends a request, first waiting for the oldest acknowledgement if
    /// the window is full.
    fn send(
        &mut self,
        req: &ProduceRequest,
        records: u64,
        partition: i32,
        counts: &mut ProducerCounts,
        measuring: &AtomicBool,
        count_records: bool,
    ) -> Result<(), ClientError> {
        if self.in_flight.len() >= self.window {
            self.ack(counts, measuring, count_records)?;
        }
        let corr = self.client.send(9, req)?;
        self.in_flight
            .push_back((corr, Instant::now(), records, partition));
        Ok(())
    }

    /// Reads the oldest acknowledgement; a refusal ends the run (a
    /// producer's sequences cannot go on past it).
    fn ack(
        &mut self,
        counts: &mut ProducerCounts,
        measuring: &AtomicBool,
        count_records: bool,
    ) -> Result<(), ClientError> {
        let Some((corr, sent, records, partition)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.client.produce_result(corr) {
            Ok(_) if count_records => counts.total += records,
            Ok(_) => {}
            Err(ClientError::Kafka(code)) => {
                return Err(ClientError::Protocol(format!(
                    "produce to partition {partition} refused: {}",
                    error_name(code)
                )));
            }
            Err(e) => return Err(e),
        }
        if measuring.load(Ordering::Relaxed) {
            let _ = counts.produce.record(micros(sent.elapsed()));
            counts.requests += 1;
            if count_records {
                counts.records += records;
            }
        }
        Ok(())
    }

    /// Waits for every acknowledgement (a producer's flush).
    fn flush(
        &mut self,
        counts: &mut ProducerCounts,
        measuring: &AtomicBool,
        count_records: bool,
    ) -> Result<(), ClientError> {
        while !self.in_flight.is_empty() {
            self.ack(counts, measuring, count_records)?;
        }
        Ok(())
    }
}

/// Shared flags of one window's producer threads.
struct Flags {
    stop: AtomicBool,
    measuring: AtomicBool,
    ready: AtomicU32,
}

#[allow(clippy::too_many_arguments)]
fn producer_thread(
    opts: &TxnBenchOptions,
    mode: ProducerMode,
    topic: &str,
    conn: u32,
    partitions: u32,
    template: &Bytes,
    per_batch: u64,
    txn_id: &str,
    flags: &Flags,
) -> Result<ProducerCounts, ClientError> {
    let mine = partitions_of(conn, opts.connections, partitions);
    let mut counts = ProducerCounts::new();
    let mut pipe = Pipeline {
        client: Client::connect(opts.broker.as_str())?,
        window: opts.in_flight.max(1),
        in_flight: VecDeque::new(),
    };
    let mut next = 0usize;
    match mode {
        ProducerMode::Idempotent => {
            let who = pipe.client.init_producer_id(None, opts.txn_timeout_ms)?;
            let mut sequences = vec![0i32; mine.len()];
            flags.ready.fetch_add(1, Ordering::SeqCst);
            while !flags.stop.load(Ordering::Relaxed) {
                let i = next % mine.len();
                next += 1;
                let batch = producer_batch(template, who, sequences[i], false);
                sequences[i] = sequences[i].wrapping_add(per_batch as i32) & i32::MAX;
                let req = txn_produce_request(None, topic, mine[i], batch);
                pipe.send(
                    &req,
                    per_batch,
                    mine[i],
                    &mut counts,
                    &flags.measuring,
                    true,
                )?;
            }
            pipe.flush(&mut counts, &flags.measuring, true)?;
        }
        ProducerMode::Transactional => {
            let mut producer = TxnProducer::init(&opts.broker, txn_id, opts.txn_timeout_ms)?;
            let added: Vec<(String, i32)> = mine.iter().map(|p| (topic.to_string(), *p)).collect();
            flags.ready.fetch_add(1, Ordering::SeqCst);
            let mut txns = 0u64;
            while !flags.stop.load(Ordering::Relaxed) {
                txns += 1;
                let commit = opts
                    .abort_every
                    .is_none_or(|k| !txns.is_multiple_of(k.max(1)));
                let started = Instant::now();
                let retries_before = producer.retries;
                producer.add_partitions(&added)?;
                let add_took = started.elapsed();
                let mut in_txn = 0u64;
                while !flags.stop.load(Ordering::Relaxed)
                    && opts.txn_records.is_none_or(|n| in_txn < n)
                    && opts.txn_time.is_none_or(|t| started.elapsed() < t)
                {
                    let i = next % mine.len();
                    next += 1;
                    let batch = producer.batch(topic, mine[i], template);
                    let req = producer.produce_request(topic, mine[i], batch);
                    pipe.send(
                        &req,
                        per_batch,
                        mine[i],
                        &mut counts,
                        &flags.measuring,
                        false,
                    )?;
                    in_txn += per_batch;
                }
                pipe.flush(&mut counts, &flags.measuring, false)?;
                let t0 = Instant::now();
                producer.end(commit)?;
                let commit_took = t0.elapsed();
                if !commit {
                    counts.aborted_total += in_txn;
                    if flags.measuring.load(Ordering::Relaxed) {
                        counts.aborts += 1;
                    }
                    continue;
                }
                counts.total += in_txn;
                if flags.measuring.load(Ordering::Relaxed) {
                    counts.records += in_txn;
                    counts.commits += 1;
                    counts.retries += producer.retries - retries_before;
                    counts.txn_micros += micros(started.elapsed());
                    let _ = counts.commit.record(micros(commit_took));
                    let _ = counts.add.record(micros(add_took));
                }
            }
        }
    }
    Ok(counts)
}

fn broker_cpu_per_gb(cpu: Option<f64>, bytes: u64) -> Option<f64> {
    cpu.filter(|_| bytes > 0).map(|c| c / (bytes as f64 / 1e9))
}

/// A fresh topic for one window.
fn fresh_topic(admin: &mut Client, name: &str, partitions: u32) -> Result<(), ClientError> {
    match admin.create_topic(name, partitions as i32, &[]) {
        Err(e) if e.kafka_code() == Some(36) => {
            admin.delete_topic(name)?;
            std::thread::sleep(Duration::from_millis(200));
            admin.create_topic(name, partitions as i32, &[])
        }
        other => other,
    }?;
    // Wait for every partition to have a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let led = admin
            .describe_topics(Some(&[name.to_string()]))
            .map(|ts| {
                ts.first().is_some_and(|t| {
                    t.partitions.len() == partitions as usize
                        && t.partitions.iter().all(|(_, l)| *l >= 0)
                })
            })
            .unwrap_or(false);
        if led || Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One produce window of `mode` on a fresh topic `topic`.
fn produce_window(
    opts: &TxnBenchOptions,
    mode: ProducerMode,
    round: usize,
    topic: &str,
    template: &Bytes,
    per_batch: u64,
) -> Result<(ProduceWindow, Histogram<u64>), ClientError> {
    let mut admin = Client::connect(opts.broker.as_str())?;
    fresh_topic(&mut admin, topic, opts.partitions)?;
    let flags = Arc::new(Flags {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        ready: AtomicU32::new(0),
    });
    let mut handles = Vec::new();
    for conn in 0..opts.connections {
        let (opts, flags, topic, template) = (
            opts.clone(),
            flags.clone(),
            topic.to_string(),
            template.clone(),
        );
        let txn_id = format!("{topic}-{conn}");
        handles.push(std::thread::spawn(move || {
            let r = producer_thread(
                &opts,
                mode,
                &topic,
                conn,
                opts.partitions,
                &template,
                per_batch,
                &txn_id,
                &flags,
            );
            if r.is_err() {
                // Let the others stop too.
                flags.stop.store(true, Ordering::Relaxed);
            }
            r
        }));
    }
    // Warm-up starts once every producer has its id (the first
    // transactional window creates `__transaction_state`).
    let deadline = Instant::now() + Duration::from_secs(60);
    while flags.ready.load(Ordering::SeqCst) < opts.connections
        && !flags.stop.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(opts.warmup);
    let cpu = crate::local::BrokerCpu::start(&opts.broker);
    flags.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    wait_window(
        opts.duration,
        Some(&flags.stop),
        opts.progress,
        &format!("{} r{round}", mode.name()),
    );
    flags.measuring.store(false, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu.and_then(|c| c.seconds());
    flags.stop.store(true, Ordering::Relaxed);
    let mut total = ProducerCounts::new();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => total.merge(c),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => {
                failure = failure.or(Some(ClientError::Protocol(
                    "producer thread panicked".into(),
                )))
            }
        }
    }
    if let Some(e) = failure {
        return Err(ClientError::Protocol(format!(
            "{} producer on {topic}: {e}",
            mode.name()
        )));
    }
    let bytes = total.records * opts.record_bytes as u64;
    let txn = mode == ProducerMode::Transactional;
    let per_commit = |v: f64| (txn && total.commits > 0).then(|| v / total.commits as f64);
    let window = ProduceWindow {
        mode,
        round,
        topic: topic.to_string(),
        records: total.records,
        bytes,
        seconds,
        records_per_s: total.records as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        requests: total.requests,
        produce_latency: latency(&total.produce),
        commits: total.commits,
        commit_latency: (txn && total.commits > 0).then(|| latency(&total.commit)),
        add_partitions_latency: (txn && total.commits > 0).then(|| latency(&total.add)),
        add_partitions_retries: total.retries,
        records_per_txn: per_commit(total.records as f64),
        txn_ms: per_commit(total.txn_micros as f64 / 1000.0),
        broker_cpu_s_per_gb: broker_cpu_per_gb(cpu, bytes),
        records_total: total.total,
        aborts: total.aborts,
        aborted_records_total: total.aborted_total,
    };
    Ok((window, total.commit))
}

/// What one consumer thread counted.
struct ConsumerCounts {
    records: u64,
    bytes: u64,
    fetches: u64,
    control: u64,
    aborted: u64,
    hist: Histogram<u64>,
}

/// One consume window: every connection reads its partition from the
/// start, wrapping at the end, for the window's length.
fn consume_window(
    opts: &TxnBenchOptions,
    topic: &str,
    isolation: i8,
    round: usize,
) -> Result<ConsumeWindow, ClientError> {
    let name = if isolation == READ_COMMITTED {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let stop = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for conn in 0..opts.connections {
        let (opts, stop, topic, fetched) = (
            opts.clone(),
            stop.clone(),
            topic.to_string(),
            fetched.clone(),
        );
        handles.push(std::thread::spawn(
            move || -> Result<ConsumerCounts, ClientError> {
                let mut client = Client::connect(opts.broker.as_str())?;
                let partition = (conn % opts.partitions) as i32;
                let start = client.list_offset(&topic, partition, -2)?;
                let mut c = ConsumerCounts {
                    records: 0,
                    bytes: 0,
                    fetches: 0,
                    control: 0,
                    aborted: 0,
                    hist: histogram(),
                };
                let mut offset = start;
                let mut filter = ReadCommitted::default();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let f = client.fetch_isolated(
                        &topic,
                        partition,
                        offset,
                        0,
                        opts.fetch_bytes,
                        isolation,
                    )?;
                    let _ = c.hist.record(micros(t0.elapsed()));
                    if f.error_code != 0 {
                        return Err(ClientError::Protocol(format!(
                            "{name} fetch of {topic}-{partition} at {offset}: {}",
                            error_name(f.error_code)
                        )));
                    }
                    c.fetches += 1;
                    c.bytes += f.records.len() as u64;
                    fetched.fetch_add(f.records.len() as u64, Ordering::Relaxed);
                    filter.add_aborted(&f.aborted);
                    let mut last = None;
                    for b in batches(&f.records) {
                        last = Some(b.header.last_offset());
                        if b.header.last_offset() < offset {
                            continue; // before the offset asked for
                        }
                        let keep = if isolation == READ_COMMITTED {
                            filter.keep(&b.header)
                        } else {
                            !b.header.is_control()
                        };
                        if keep {
                            c.records += b.header.record_count.max(0) as u64;
                        } else if b.header.is_control() {
                            c.control += 1;
                        } else {
                            c.aborted += 1;
                        }
                    }
                    match last {
                        Some(last) => offset = last + 1,
                        None => {
                            // At the end (the high watermark, or the last
                            // stable offset): read it all again.
                            offset = start;
                            filter = ReadCommitted::default();
                        }
                    }
                }
                Ok(c)
            },
        ));
    }
    let t0 = Instant::now();
    let cpu = crate::local::BrokerCpu::start(&opts.broker);
    wait_window(
        opts.consume_duration,
        None,
        opts.progress,
        &format!("{name} r{round}"),
    );
    stop.store(true, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu.and_then(|c| c.seconds());
    let mut hist = histogram();
    let (mut records, mut bytes, mut fetches, mut control, mut aborted) = (0, 0, 0, 0, 0);
    for h in handles {
        let c = h
            .join()
            .map_err(|_| ClientError::Protocol("consumer thread panicked".into()))??;
        records += c.records;
        bytes += c.bytes;
        fetches += c.fetches;
        control += c.control;
        aborted += c.aborted;
        let _ = hist.add(&c.hist);
    }
    Ok(ConsumeWindow {
        isolation: name,
        round,
        records,
        bytes,
        seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        fetches,
        fetch_latency: latency(&hist),
        control_batches: control,
        aborted_batches: aborted,
        broker_cpu_s_per_gb: broker_cpu_per_gb(cpu, bytes),
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Runs the produce rounds, then the consume rounds on the last
/// transactional window's data.
pub fn run(opts: &TxnBenchOptions) -> Result<TxnBenchReport, ClientError> {
    let mut opts = opts.clone();
    opts.partitions = opts.partitions.max(1);
    opts.connections = opts.connections.max(1);
    opts.rounds = opts.rounds.max(1);
    opts.consume_rounds = opts.consume_rounds.max(1);
    if opts.txn_records.is_none() && opts.txn_time.is_none() {
        opts.txn_time = Some(Duration::from_millis(100));
    }
    // A transaction of fewer records than a batch holds gets smaller batches.
    let mut batch_bytes = opts.batch_bytes;
    if let Some(n) = opts.txn_records {
        let n = n.max(1) as usize;
        batch_bytes = batch_bytes.min(sluice_log::batch::HEADER_LEN + n * (opts.record_bytes + 10));
    }
    let (template, per_batch) = encoded_batch(opts.record_bytes, batch_bytes, opts.compression);
    let run_id = std::process::id();
    let mut produce = Vec::new();
    let mut kept: Option<String> = None;
    let mut commit_hist = histogram();
    let mut admin = Client::connect(opts.broker.as_str())?;
    for round in 0..opts.rounds {
        let order = if round % 2 == 0 {
            [ProducerMode::Idempotent, ProducerMode::Transactional]
        } else {
            [ProducerMode::Transactional, ProducerMode::Idempotent]
        };
        for mode in order {
            let topic = format!("{}-{run_id}-r{round}-{}", opts.topic, mode.name());
            let (w, commit) = produce_window(&opts, mode, round, &topic, &template, per_batch)?;
            let _ = commit_hist.add(&commit);
            produce.push(w);
            if mode == ProducerMode::Transactional {
                if let Some(old) = kept.replace(topic) {
                    let _ = admin.delete_topic(&old);
                }
            } else {
                let _ = admin.delete_topic(&topic);
            }
        }
    }
    let mut consume = Vec::new();
    let mut check = None;
    if let Some(topic) = &kept {
        let committed = produce
            .iter()
            .filter(|w| &w.topic == topic)
            .map(|w| w.records_total)
            .sum();
        let aborted = produce
            .iter()
            .filter(|w| &w.topic == topic)
            .map(|w| w.aborted_records_total)
            .sum();
        let (read_committed, markers) = read_once(&opts, topic, READ_COMMITTED)?;
        let (read_uncommitted, _) = read_once(&opts, topic, READ_UNCOMMITTED)?;
        check = Some(Check {
            topic: topic.clone(),
            committed,
            aborted,
            read_committed,
            read_uncommitted,
            markers,
            ok: committed == read_committed && committed + aborted == read_uncommitted,
        });
        for round in 0..opts.consume_rounds {
            let order = if round % 2 == 0 {
                [READ_UNCOMMITTED, READ_COMMITTED]
            } else {
                [READ_COMMITTED, READ_UNCOMMITTED]
            };
            for isolation in order {
                consume.push(consume_window(&opts, topic, isolation, round)?);
            }
        }
        let _ = admin.delete_topic(topic);
    }
    let rate = |mode: ProducerMode| -> Vec<f64> {
        produce
            .iter()
            .filter(|w| w.mode == mode)
            .map(|w| w.records_per_s)
            .collect()
    };
    let (idem, txn) = (
        rate(ProducerMode::Idempotent),
        rate(ProducerMode::Transactional),
    );
    let consumed = |name: &str| -> Vec<f64> {
        consume
            .iter()
            .filter(|w| w.isolation == name)
            .map(|w| w.records_per_s)
            .collect()
    };
    let (ru, rc) = (consumed("read_uncommitted"), consumed("read_committed"));
    let med = |v: &[f64]| median(v.to_vec()).unwrap_or(f64::NAN);
    let commits = produce.iter().map(|w| w.commits).sum();
    let produce_by_round: Vec<f64> = idem.iter().zip(&txn).map(|(i, t)| ratio(*t, *i)).collect();
    let consume_by_round: Vec<f64> = ru.iter().zip(&rc).map(|(u, c)| ratio(*c, *u)).collect();
    let config = TxnBenchConfig {
        broker: opts.broker.clone(),
        partitions: opts.partitions,
        connections: opts.connections,
        record_bytes: opts.record_bytes,
        batch_bytes,
        records_per_batch: per_batch,
        compression: format!("{:?}", opts.compression).to_lowercase(),
        in_flight: opts.in_flight,
        acks: -1,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        rounds: opts.rounds,
        consume_rounds: opts.consume_rounds,
        txn_records: opts.txn_records,
        txn_ms: opts.txn_time.map(|t| t.as_millis() as u64),
        txn_timeout_ms: opts.txn_timeout_ms,
        abort_every: opts.abort_every,
        consume_s: opts.consume_duration.as_secs_f64(),
        fetch_bytes: opts.fetch_bytes,
    };
    Ok(TxnBenchReport {
        config,
        idempotent_records_per_s: med(&idem),
        transactional_records_per_s: med(&txn),
        produce_ratio: ratio(med(&txn), med(&idem)),
        produce_ratio_by_round: produce_by_round.clone(),
        produce_ratio_median_of_rounds: med(&produce_by_round),
        commit_latency: latency(&commit_hist),
        commits,
        read_uncommitted_records_per_s: med(&ru),
        read_committed_records_per_s: med(&rc),
        consume_ratio: ratio(med(&rc), med(&ru)),
        consume_ratio_by_round: consume_by_round.clone(),
        consume_ratio_median_of_rounds: med(&consume_by_round),
        check,
        produce,
        consume,
    })
}

fn ms(l: &Option<Latency>, f: impl Fn(&Latency) -> f64) -> String {
    l.as_ref()
        .map_or("-".to_string(), |l| format!("{:.2}", f(l)))
}

fn cpu(c: Option<f64>) -> String {
    c.map_or("-".to_string(), |c| format!("{c:.2}"))
}

/// The terminal report: every window, then the comparisons.
pub fn table(r: &TxnBenchReport) -> String {
    let c = &r.config;
    let shape = match (c.txn_records, c.txn_ms) {
        (Some(n), Some(t)) => format!("{n} records or {t} ms, whichever first"),
        (Some(n), None) => format!("{n} records"),
        (None, Some(t)) => format!("{t} ms"),
        (None, None) => "-".to_string(),
    };
    let shape = match c.abort_every {
        Some(k) => format!("{shape}, every {k}th aborted"),
        None => shape,
    };
    let mut out = format!(
        "produce: {} producers (one connection each) over {} partitions, {} B records, \
         {} records per batch ({}), {} in flight, acks=all; transactions of {shape}; \
         {} rounds of {:.0} s windows after {:.0} s warm-up, interleaved\n\n",
        c.connections,
        c.partitions,
        c.record_bytes,
        c.records_per_batch,
        c.compression,
        c.in_flight,
        c.rounds,
        c.duration_s,
        c.warmup_s
    );
    out.push_str(&format!(
        "{:<14} {:>5} {:>12} {:>8} {:>9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8} {:>7}\n",
        "producer",
        "round",
        "records/s",
        "MB/s",
        "req p50",
        "req p99",
        "commits",
        "commit p50",
        "commit p99",
        "rec/txn",
        "txn ms",
        "retries",
        "CPU/GB"
    ));
    for w in &r.produce {
        out.push_str(&format!(
            "{:<14} {:>5} {:>12.0} {:>8.1} {:>9.2} {:>9.2} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8} {:>7}\n",
            w.mode.name(),
            w.round,
            w.records_per_s,
            w.mb_per_s,
            w.produce_latency.p50_ms,
            w.produce_latency.p99_ms,
            if w.mode == ProducerMode::Transactional {
                w.commits.to_string()
            } else {
                "-".to_string()
            },
            ms(&w.commit_latency, |l| l.p50_ms),
            ms(&w.commit_latency, |l| l.p99_ms),
            w.records_per_txn
                .map_or("-".to_string(), |n| format!("{n:.0}")),
            w.txn_ms.map_or("-".to_string(), |t| format!("{t:.1}")),
            if w.mode == ProducerMode::Transactional {
                w.add_partitions_retries.to_string()
            } else {
                "-".to_string()
            },
            cpu(w.broker_cpu_s_per_gb),
        ));
    }
    let by_round = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format!(
        "\nmedian records/s: idempotent {:.0}, transactional {:.0}: ratio {:.3} \
         (by round: {}; their median {:.3}; target ≥ 0.8 with 100 ms transactions)\n\
         commit (EndTxn) latency over {} commits: p50 {:.2} ms, p99 {:.2} ms, \
         p99.9 {:.2} ms, max {:.2} ms\n",
        r.idempotent_records_per_s,
        r.transactional_records_per_s,
        r.produce_ratio,
        by_round(&r.produce_ratio_by_round),
        r.produce_ratio_median_of_rounds,
        r.commits,
        r.commit_latency.p50_ms,
        r.commit_latency.p99_ms,
        r.commit_latency.p999_ms,
        r.commit_latency.max_ms,
    ));
    if !r.consume.is_empty() {
        out.push_str(&format!(
            "\nconsume: the last transactional topic from the start, {} consumers, \
             {} rounds of {:.0} s windows, interleaved\n\n",
            c.connections, c.consume_rounds, c.consume_s
        ));
        out.push_str(&format!(
            "{:<17} {:>5} {:>12} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>7}\n",
            "isolation",
            "round",
            "records/s",
            "MB/s",
            "fetches",
            "fetch p50",
            "fetch p99",
            "markers",
            "aborted",
            "CPU/GB"
        ));
        for w in &r.consume {
            out.push_str(&format!(
                "{:<17} {:>5} {:>12.0} {:>8.1} {:>8} {:>9.2} {:>9.2} {:>8} {:>8} {:>7}\n",
                w.isolation,
                w.round,
                w.records_per_s,
                w.mb_per_s,
                w.fetches,
                w.fetch_latency.p50_ms,
                w.fetch_latency.p99_ms,
                w.control_batches,
                w.aborted_batches,
                cpu(w.broker_cpu_s_per_gb),
            ));
        }
        out.push_str(&format!(
            "\nmedian records/s: read_uncommitted {:.0}, read_committed {:.0}: ratio {:.3} \
             (by round: {}; their median {:.3}; target ≥ 0.95)\n",
            r.read_uncommitted_records_per_s,
            r.read_committed_records_per_s,
            r.consume_ratio,
            by_round(&r.consume_ratio_by_round),
            r.consume_ratio_median_of_rounds,
        ));
    }
    if let Some(c) = &r.check {
        out.push_str(&format!(
            "\ncheck: {} records committed and {} aborted on {}; one pass finds {} read_committed, \
             {} read_uncommitted ({} markers dropped): {}\n",
            c.committed,
            c.aborted,
            c.topic,
            c.read_committed,
            c.read_uncommitted,
            c.markers,
            if c.ok { "ok" } else { "MISMATCH" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_cover_every_partition_in_turn() {
        assert_eq!(partitions_of(0, 4, 4), vec![0]);
        assert_eq!(partitions_of(1, 2, 4), vec![1, 3]);
        assert_eq!(partitions_of(5, 8, 4), vec![1]);
        assert_eq!(partitions_of(0, 1, 3), vec![0, 1, 2]);
    }
}
