//! `sluice bench produce` and `sluice bench consume`: a Kafka load generator
//! on the project's own client (`sluice_client`), usable against any
//! Kafka-compatible broker. Produce sends pre-encoded RecordBatch v2 batches
//! (built once, so the generator is not the bottleneck) and records each
//! request's latency in an HDR histogram; consume reads partitions from the
//! start and counts bytes and records from batch headers, without decoding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::records::{Compression, Record};
use serde::Serialize;
use sluice_client::security::ClientSecurity;
use sluice_client::{
    Client, ClientError, batches, encode_batch, error_name, plain_record, whole_len,
};

/// What `sluice bench produce` runs.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub broker: String,
    pub topic: String,
    pub partitions: u32,
    pub connections: u32,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub acks: i16,
    pub compression: Compression,
    pub duration: Duration,
    pub warmup: Duration,
    /// Records per second across all connections; None: as fast as it goes.
    pub target_rate: Option<u64>,
    /// Produce requests in flight per connection (pipelining).
    pub in_flight: usize,
    /// Ends the measured window early when set (another part of a scenario
    /// has finished); `duration` is then the longest it may last.
    pub until: Option<Arc<AtomicBool>>,
    /// Show a progress line on a terminal.
    pub progress: bool,
    /// How to connect (TLS, SASL); plaintext by default. Over TLS a
    /// connection cannot be split into a writer and a reader, so each
    /// waits for its answer before the next request (as `in_flight` 1).
    pub security: ClientSecurity,
}

/// What `sluice bench consume` runs.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    pub broker: String,
    pub topic: String,
    pub partitions: u32,
    pub connections: u32,
    pub duration: Duration,
    pub fetch_bytes: i32,
    /// Stop each connection at the end of its partition instead of reading
    /// it again from the start (a consumer catching up once).
    pub once: bool,
    /// Show a progress line on a terminal.
    pub progress: bool,
    /// How to connect (TLS, SASL); plaintext by default.
    pub security: ClientSecurity,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub kind: &'static str,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Produce: per-request latency; consume: per-fetch latency.
    pub latency: Latency,
    pub requests: u64,
    /// Requests the broker refused in the measured window.
    pub errors: u64,
    /// The same, by what the broker answered (Kafka's name for the error
    /// code, `MESSAGE_TOO_LARGE`), so a run that wrote nothing says why.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Broker CPU seconds (user + system) per GB of record bytes in the
    /// measured window, when the broker runs on this machine and bytes were
    /// written (per GB of nothing is no figure).
    pub broker_cpu_s_per_gb: Option<f64>,
    /// Paced produce runs: how late each request was fully written, after
    /// the time it was due — the load generator's own delay (a writer thread
    /// waiting for a core, or a full in-flight window), which the request
    /// latencies include.
    pub send_delay: Option<Latency>,
}

pub(crate) fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

impl LoadReport {
    /// A report of `records` records (`bytes` bytes) over `seconds`, with the
    /// rates derived; the optional measurements start empty.
    fn new(
        kind: &'static str,
        (records, bytes, requests, errors): (u64, u64, u64, u64),
        seconds: f64,
        hist: &Histogram<u64>,
    ) -> LoadReport {
        LoadReport {
            kind,
            records,
            bytes,
            seconds,
            records_per_s: records as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
            latency: latency(hist),
            requests,
            errors,
            errors_by_kind: BTreeMap::new(),
            broker_cpu_s_per_gb: None,
            send_delay: None,
        }
    }

    /// Sets the broker CPU per GB from the seconds it used in the window;
    /// none when no bytes were moved.
    fn with_broker_cpu(mut self, cpu_seconds: Option<f64>) -> LoadReport {
        self.broker_cpu_s_per_gb = cpu_seconds
            .filter(|_| self.bytes > 0)
            .map(|c| c / (self.bytes as f64 / 1e9));
        self
    }
}

/// What one load thread returns: three counts and its latency histogram.
type ThreadCounts = (u64, u64, u64, Histogram<u64>);

/// Joins load threads; returns their summed counts and merged histogram.
fn join_counts(
    handles: Vec<std::thread::JoinHandle<Result<ThreadCounts, ClientError>>>,
    what: &str,
) -> Result<ThreadCounts, ClientError> {
    let mut hist = histogram();
    let mut sums = (0, 0, 0);
    for h in handles {
        let (a, b, c, part) = h
            .join()
            .map_err(|_| ClientError::Protocol(format!("{what} thread panicked")))??;
        sums = (sums.0 + a, sums.1 + b, sums.2 + c);
        let _ = hist.add(&part);
    }
    Ok((sums.0, sums.1, sums.2, hist))
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}

/// One pre-encoded batch of `record_bytes`-byte records filling ~`batch_bytes`.
pub fn encoded_batch(
    record_bytes: usize,
    batch_bytes: usize,
    compression: Compression,
) -> (Bytes, u64) {
    let per_record = record_bytes + 10;
    let n = (batch_bytes.saturating_sub(sluice_log::batch::HEADER_LEN) / per_record).max(1);
    let value = Bytes::from(
        (0..record_bytes)
            .map(|i| (i * 31 + 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let now = (now_micros() / 1000) as i64;
    let records: Vec<Record> = (0..n)
        .map(|i| plain_record(i as i64, now, None, value.clone()))
        .collect();
    (
        // Encoding plain records in memory does not fail; if a codec ever
        // did, the empty batch is refused by the broker and counted as an error.
        encode_batch(&records, compression).unwrap_or_default(),
        n as u64,
    )
}

/// Runs the produce load and returns its report.
pub fn produce(opts: &ProduceOptions) -> Result<LoadReport, ClientError> {
    let mut admin = Client::connect_secure(opts.broker.as_str(), &opts.security)?;
    let partitions = admin.partitions(&opts.topic)?.max(1);
    let partitions = partitions.min(opts.partitions.max(1));
    let (batch, per_batch) = encoded_batch(opts.record_bytes, opts.batch_bytes, opts.compression);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let rate_per_conn = opts
        .target_rate
        .map(|r| r as f64 / f64::from(opts.connections.max(1)));
    let send_delays = Arc::new(std::sync::Mutex::new(histogram()));
    let refused = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let mut handles = Vec::new();
    for conn in 0..opts.connections.max(1) {
        let (opts, batch, stop, measuring) =
            (opts.clone(), batch.clone(), stop.clone(), measuring.clone());
        let (send_delays, refused) = (send_delays.clone(), refused.clone());
        handles.push(std::thread::spawn(
            move || -> Result<ThreadCounts, ClientError> {
                let mut client = Client::connect_secure(opts.broker.as_str(), &opts.security)?;
                // One stream, one thread: TLS cannot be split.
                let in_line = opts.security.protocol.tls();
                // Responses are read on a thread of their own, so a response
                // is timed when it arrives, not when the sender next looks.
                // The sender takes a credit per request and the reader gives
                // it back per response: at most `in_flight` outstanding.
                let window = opts.in_flight.max(1);
                let (queue, queued) = std::sync::mpsc::channel::<(i32, Instant, bool)>();
                let (credit, credits) = std::sync::mpsc::sync_channel::<()>(window);
                for _ in 0..window {
                    let _ = credit.send(());
                }
                let refused_inline = refused.clone();
                let reader = (opts.acks != 0 && !in_line)
                    .then(|| client.try_clone())
                    .transpose()?
                    .map(|mut responses| {
                        std::thread::spawn(move || -> Result<ThreadCounts, ClientError> {
                            let mut hist = histogram();
                            let (mut records, mut requests, mut errors) = (0u64, 0u64, 0u64);
                            for (corr, sent_at, counted) in queued {
                                let result = responses.produce_result(corr);
                                let _ = credit.send(());
                                if let Err(ClientError::Io(e)) = &result {
                                    return Err(ClientError::Io(std::io::Error::new(
                                        e.kind(),
                                        e.to_string(),
                                    )));
                                }
                                if counted {
                                    match result {
                                        Ok(_) => {
                                            records += per_batch;
                                            requests += 1;
                                            let _ =
                                                hist.record(
                                                    sent_at.elapsed().as_micros().max(1) as u64
                                                );
                                        }
                                        Err(e) => {
                                            errors += 1;
                                            if let Ok(mut kinds) = refused.lock() {
                                                *kinds.entry(error_kind(&e)).or_default() += 1;
                                            }
                                        }
                                    }
                                }
                            }
                            Ok((records, requests, errors, hist))
                        })
                    });
                let (mut records, mut requests) = (0u64, 0u64);
                let (mut inline_hist, mut inline_errors) = (histogram(), 0u64);
                let mut partition = conn % partitions;
                let start = Instant::now();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Paced runs time each request from when it was due, so a
                    // late send (a full window) counts against the broker
                    // instead of vanishing (coordinated omission).
                    let mut t0 = Instant::now();
                    if let Some(rate) = rate_per_conn {
                        let due = start + Duration::from_secs_f64(sent as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        t0 = due;
                    }
                    let measured = measuring.load(Ordering::Relaxed);
                    if opts.acks == 0 {
                        // No responses: nothing to wait for or time.
                        client.produce(&opts.topic, partition as i32, batch.clone(), 0)?;
                        if measured {
                            records += per_batch;
                            requests += 1;
                        }
                    } else if in_line {
                        let result =
                            client.produce(&opts.topic, partition as i32, batch.clone(), opts.acks);
                        if measured {
                            match result {
                                Ok(_) => {
                                    records += per_batch;
                                    requests += 1;
                                    let _ =
                                        inline_hist.record(t0.elapsed().as_micros().max(1) as u64);
                                }
                                Err(ClientError::Io(e)) => return Err(ClientError::Io(e)),
                                Err(e) => {
                                    inline_errors += 1;
                                    if let Ok(mut kinds) = refused_inline.lock() {
                                        *kinds.entry(error_kind(&e)).or_default() += 1;
                                    }
                                }
                            }
                        }
                    } else {
                        if credits.recv().is_err() {
                            break; // the reader stopped: its error says why
                        }
                        let corr = client.send_produce(
                            &opts.topic,
                            partition as i32,
                            batch.clone(),
                            opts.acks,
                        )?;
                        if measured && rate_per_conn.is_some() {
                            let late = t0.elapsed().as_micros().max(1) as u64;
                            if let Ok(mut h) = send_delays.lock() {
                                let _ = h.record(late);
                            }
                        }
                        if queue.send((corr, t0, measured)).is_err() {
                            break; // the reader stopped: its error says why
                        }
                    }
                    sent += per_batch;
                    partition = (partition + opts.connections.max(1)) % partitions;
                }
                drop(queue);
                match reader {
                    Some(reader) => reader
                        .join()
                        .map_err(|_| ClientError::Protocol("response reader panicked".into()))?,
                    None => Ok((records, requests, inline_errors, inline_hist)),
                }
            },
        ));
    }
    std::thread::sleep(opts.warmup);
    let broker_cpu = crate::local::BrokerCpu::start(&opts.broker);
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    wait_window(
        opts.duration,
        opts.until.as_deref(),
        opts.progress,
        "produce",
    );
    measuring.store(false, Ordering::Relaxed);
    let cpu = broker_cpu.and_then(|c| c.seconds());
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (records, requests, errors, hist) = join_counts(handles, "producer")?;
    let bytes = records * opts.record_bytes as u64;
    let send_delay = opts.target_rate.and_then(|_| {
        send_delays
            .lock()
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| latency(&h))
    });
    let mut report = LoadReport::new(
        "produce",
        (records, bytes, requests, errors),
        seconds,
        &hist,
    )
    .with_broker_cpu(cpu);
    report.send_delay = send_delay;
    report.errors_by_kind = refused.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(report)
}

/// What a refused produce is counted as: Kafka's name for the broker's
/// error code, or the client's own description.
pub(crate) fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Kafka(code) => error_name(*code),
        other => other.to_string(),
    }
}

/// (bytes, records) of the whole batches of a fetch response's records.
fn count_records(records: &[u8]) -> (u64, u64) {
    batches(records).fold((0, 0), |(bytes, n), b| {
        (
            bytes + b.bytes.len() as u64,
            n + b.header.record_count.max(0) as u64,
        )
    })
}

/// Runs the consume load: each connection reads its partitions from the start
/// (wrapping to the start again at the end) for the duration.
pub fn consume(opts: &ConsumeOptions) -> Result<LoadReport, ClientError> {
    let mut admin = Client::connect_secure(opts.broker.as_str(), &opts.security)?;
    let partitions = admin
        .partitions(&opts.topic)?
        .max(1)
        .min(opts.partitions.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let total_bytes = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for conn in 0..opts.connections.max(1) {
        let (opts, stop, total_bytes) = (opts.clone(), stop.clone(), total_bytes.clone());
        handles.push(std::thread::spawn(
            move || -> Result<ThreadCounts, ClientError> {
                let mut client = Client::connect_secure(opts.broker.as_str(), &opts.security)?;
                let mut hist = histogram();
                let partition = (conn % partitions) as i32;
                let start_offset = client.list_offset(&opts.topic, partition, -2)?;
                let mut offset = start_offset;
                let (mut records, mut requests, mut bytes) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    // No long-poll wait: at the end of the partition the
                    // consumer starts over (or stops) at once, so the run
                    // measures transfer, not waiting for data.
                    let f = client.fetch(&opts.topic, partition, offset, 0, opts.fetch_bytes)?;
                    let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                    requests += 1;
                    let (whole, n) = count_records(&f.records);
                    bytes += f.records.len() as u64;
                    total_bytes.fetch_add(f.records.len() as u64, Ordering::Relaxed);
                    records += n;
                    if n == 0 || whole == 0 {
                        if opts.once {
                            break;
                        }
                        offset = start_offset; // at the end: read it all again
                        continue;
                    }
                    // Next offset: after the last whole batch.
                    let last = batches(&f.records)
                        .last()
                        .map_or(offset, |b| b.header.last_offset());
                    offset = last + 1;
                }
                Ok((records, requests, bytes, hist))
            },
        ));
    }
    let t0 = Instant::now();
    let broker_cpu = crate::local::BrokerCpu::start(&opts.broker);
    // With `once`, every connection may reach its end before the duration.
    let deadline = t0 + opts.duration;
    let bar = progress_bar(opts.duration, opts.progress, "consume");
    while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        bar.set_position(t0.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{:.0} MB/s",
            total_bytes.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64() / 1e6
        ));
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = broker_cpu.and_then(|c| c.seconds());
    let (records, requests, bytes, hist) = join_counts(handles, "consumer")?;
    Ok(
        LoadReport::new("consume", (records, bytes, requests, 0), seconds, &hist)
            .with_broker_cpu(cpu),
    )
}

/// Waits out a measured window: `duration`, or less if `until` is set
/// first, with a progress bar on a terminal.
pub(crate) fn wait_window(
    duration: Duration,
    until: Option<&AtomicBool>,
    progress: bool,
    what: &str,
) {
    let t0 = Instant::now();
    let bar = progress_bar(duration, progress, what);
    while t0.elapsed() < duration && !until.is_some_and(|u| u.load(Ordering::Relaxed)) {
        std::thread::sleep(Duration::from_millis(10).min(duration.saturating_sub(t0.elapsed())));
        bar.set_position(t0.elapsed().as_millis() as u64);
    }
    bar.finish_and_clear();
}

/// A progress bar over a time window (drawn only on a terminal).
fn progress_bar(window: Duration, show: bool, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(window.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{elapsed_precise}} [{{bar:40}}] {{percent}}%  {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The terminal table of a load report.
pub fn summary(r: &LoadReport) -> String {
    let cpu = match (r.kind, r.broker_cpu_s_per_gb) {
        ("e2e", _) => "-".to_string(),
        (_, Some(c)) => format!("{c:.3}"),
        // Nothing moved: there is no per-GB figure to give.
        (_, None) if r.bytes == 0 => "-".to_string(),
        (_, None) => "(broker not local)".to_string(),
    };
    let mut table = format!(
        "{:<8} {:>12} {:>9} {:>7} {:>9} {:>7}  {:>8} {:>8} {:>8} {:>8}  {:>14}\n\
         {:<8} {:>12.0} {:>9.1} {:>7.1} {:>9} {:>7}  {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>14}",
        "run",
        "records/s",
        "MB/s",
        "s",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "broker CPU s/GB",
        r.kind,
        r.records_per_s,
        r.mb_per_s,
        r.seconds,
        r.requests,
        r.errors,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.latency.max_ms,
        cpu
    );
    if !r.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} × {n}"))
            .collect();
        table.push_str(&format!("\nerrors: {}", kinds.join(", ")));
        if r.errors_by_kind.contains_key("MESSAGE_TOO_LARGE") {
            table.push_str(
                "\n  (MESSAGE_TOO_LARGE: a batch is larger than the broker's message.max.bytes, \
                 1 MiB by default; use a smaller --batch-size)",
            );
        }
    }
    table
}

/// What `sluice bench e2e` runs.
#[derive(Clone, Debug)]
pub struct EndToEndOptions {
    pub broker: String,
    pub topic: String,
    /// Records per second, produced to partition 0 in batches every `linger`.
    pub rate: u64,
    pub record_bytes: usize,
    pub linger: Duration,
    pub acks: i16,
    pub duration: Duration,
    pub warmup: Duration,
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A batch of `n` records whose values start with the send time (µs).
fn stamped_batch(n: usize, record_bytes: usize) -> Bytes {
    let mut value = vec![0u8; record_bytes.max(8)];
    value[..8].copy_from_slice(&now_micros().to_be_bytes());
    let value = Bytes::from(value);
    let now = (now_micros() / 1000) as i64;
    let records: Vec<Record> = (0..n)
        .map(|i| plain_record(i as i64, now, None, value.clone()))
        .collect();
    // Uncompressed encoding into memory does not fail.
    encode_batch(&records, Compression::None).unwrap_or_default()
}

/// Produce-to-consume latency at a fixed rate: a producer stamps each batch
/// with its send time, a long-polling consumer on another connection measures
/// when each record arrives.
pub fn end_to_end(opts: &EndToEndOptions) -> Result<LoadReport, ClientError> {
    let mut consumer = Client::connect(opts.broker.as_str())?;
    consumer.partitions(&opts.topic)?;
    let mut offset = consumer.list_offset(&opts.topic, 0, -1)?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (opts, stop) = (opts.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, ClientError> {
            let mut client = Client::connect(opts.broker.as_str())?;
            let per_tick = ((opts.rate as f64) * opts.linger.as_secs_f64())
                .round()
                .max(1.0) as usize;
            let start = Instant::now();
            let mut ticks = 0u64;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + opts.linger * ticks as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                client.produce(
                    &opts.topic,
                    0,
                    stamped_batch(per_tick, opts.record_bytes),
                    opts.acks,
                )?;
                sent += per_tick as u64;
                ticks += 1;
            }
            Ok(sent)
        })
    };
    let mut hist = histogram();
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let (mut records, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        let f = consumer.fetch(&opts.topic, 0, offset, 100, 1 << 20)?;
        let arrived = now_micros();
        requests += 1;
        let mut data = f.records;
        data.truncate(whole_len(&data));
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut data)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let measuring = Instant::now() >= measure_from;
        for r in sets.into_iter().flat_map(|s| s.records) {
            if r.offset < offset {
                continue;
            }
            offset = r.offset + 1;
            let Some(v) = r.value.filter(|v| v.len() >= 8) else {
                continue;
            };
            if measuring {
                let sent = u64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
                let _ = hist.record(arrived.saturating_sub(sent).max(1));
                records += 1;
                bytes += v.len() as u64;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer
        .join()
        .map_err(|_| ClientError::Protocol("producer thread panicked".into()))??;
    let seconds = opts.duration.as_secs_f64();
    // Latency at a fixed rate, not a throughput measurement: no broker CPU.
    Ok(LoadReport::new(
        "e2e",
        (records, bytes, requests, 0),
        seconds,
        &hist,
    ))
}
