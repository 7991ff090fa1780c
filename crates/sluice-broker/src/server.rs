//! The listener, connections and framing.
//!
//! A connection reads length-prefixed frames, answers each in order, and
//! writes every response through its `sluice_io::Sender`. A frame it cannot
//! make sense of (a size out of range, a truncated header, an unknown API key,
//! an unsupported version, an undecodable body) closes that connection with a
//! logged reason; other connections carry on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use sluice_io::{Chunk, Counters, FileRegion, Message, Sender};
use sluice_log::{Log, Upkeep};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::BrokerConfig;
use crate::fetch_writer::Part;
use crate::handlers::{self, Outcome};

/// Running totals of what the connections' data paths did.
#[derive(Debug, Default)]
pub struct DataPathStats {
    totals: Mutex<StatsSnapshot>,
}

/// A copy of the totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatsSnapshot {
    /// The io layer's own counters, summed over every response sent.
    pub io: Counters,
    /// Bytes of file regions (record data) in responses sent.
    pub record_bytes: u64,
    /// Bytes encoded in memory (headers and fields) in responses sent.
    pub encoded_bytes: u64,
    pub responses: u64,
    /// Fetch regions that were not in the page cache and were read in on the
    /// blocking pool before sending, and their bytes.
    pub cold_regions: u64,
    pub cold_bytes: u64,
    /// Fetch gathers handed to the blocking pool because something they
    /// needed was not in the page cache (the rest ran on the async worker).
    pub fetch_gathers_offloaded: u64,
}

impl StatsSnapshot {
    /// Record bytes that crossed into user space on their way out: zero on the
    /// sendfile and splice paths, 2× the records for read+write, 1× for mmap.
    pub fn record_bytes_through_user_space(&self) -> u64 {
        self.io.user_space_bytes.saturating_sub(self.encoded_bytes)
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        };
        metric("sluice_responses_total", "Responses sent.", self.responses);
        metric(
            "sluice_response_record_bytes_total",
            "Record bytes (file regions) in responses.",
            self.record_bytes,
        );
        metric(
            "sluice_response_encoded_bytes_total",
            "Encoded header and field bytes in responses.",
            self.encoded_bytes,
        );
        metric(
            "sluice_io_kernel_bytes_total",
            "Bytes sent without passing through user space.",
            self.io.kernel_bytes,
        );
        metric(
            "sluice_io_user_space_bytes_total",
            "Bytes passed through user space by the data path.",
            self.io.user_space_bytes,
        );
        metric(
            "sluice_record_bytes_through_user_space_total",
            "Record bytes that entered user space on the way out.",
            self.record_bytes_through_user_space(),
        );
        metric(
            "sluice_io_eagain_total",
            "Sends that found the socket full.",
            self.io.eagain,
        );
        metric(
            "sluice_fetch_cold_regions_total",
            "Fetch regions read into the page cache off the async workers.",
            self.cold_regions,
        );
        metric(
            "sluice_fetch_cold_bytes_total",
            "Bytes of those regions.",
            self.cold_bytes,
        );
        metric(
            "sluice_fetch_gathers_offloaded_total",
            "Fetch gathers run on the blocking pool because a page they needed was not cached.",
            self.fetch_gathers_offloaded,
        );
        for call in sluice_io::Syscall::ALL {
            out.push_str(&format!(
                "sluice_io_syscalls_total{{call=\"{}\"}} {}\n",
                call.name(),
                self.io.calls(call)
            ));
        }
        out
    }
}

impl DataPathStats {
    pub fn add(&self, io: &Counters, record_bytes: u64, encoded_bytes: u64) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.io += *io;
        t.record_bytes += record_bytes;
        t.encoded_bytes += encoded_bytes;
        t.responses += 1;
    }

    /// One fetch gather ran on the blocking pool and warmed `regions` cold
    /// regions of `bytes` in all.
    pub fn add_offloaded(&self, regions: u64, bytes: u64) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.fetch_gathers_offloaded += 1;
        t.cold_regions += regions;
        t.cold_bytes += bytes;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Inner {
    pub config: BrokerConfig,
    pub log: Arc<Log>,
    /// Host and port clients are told to connect to.
    pub advertised: SocketAddr,
    /// Woken after every append, so parked fetches re-check their partitions.
    pub appended: Notify,
    pub stats: DataPathStats,
    pub latencies: crate::latency::Latencies,
    pub producer_ids: crate::producer_ids::ProducerIds,
    pub groups: crate::groups::Groups,
    pub offsets: Arc<crate::offsets::OffsetStore>,
    /// One permit per request byte held between reading a frame's size and
    /// answering it, shared by every connection.
    pub request_memory: tokio::sync::Semaphore,
    pub connections: ConnectionCounts,
    _upkeep: Upkeep,
}

/// Open client connections, and those refused for being over the limit.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    pub open: AtomicUsize,
    pub refused: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_slow: AtomicU64,
}

/// Counts a connection open until dropped.
struct OpenConnection(Arc<Inner>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Opens the data directory (recovering it if the last run did not shut
    /// down cleanly) and starts the log's upkeep. `advertised` is the address
    /// Metadata hands to clients.
    pub fn open(mut config: BrokerConfig, advertised: SocketAddr) -> io::Result<Broker> {
        if let Some(reason) = config.data_path.unavailable_reason() {
            tracing::warn!(
                requested = %config.data_path,
                using = %sluice_io::DataPath::Sendfile,
                reason,
                "data path unavailable here; falling back"
            );
            config.data_path = sluice_io::DataPath::Sendfile;
        }
        let log = Arc::new(Log::open(&config.data_dir, config.log.clone())?);
        let upkeep = log.start_upkeep(std::time::Duration::from_secs(60))?;
        let producer_ids = crate::producer_ids::ProducerIds::open(&config.data_dir)?;
        let offsets = Arc::new(crate::offsets::OffsetStore::open(&config.data_dir)?);
        let groups = crate::groups::Groups::new(config.group_initial_rebalance_delay);
        let request_memory = tokio::sync::Semaphore::new(
            config
                .max_buffered_request_bytes
                .max(config.max_frame_bytes)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        );
        Ok(Broker {
            inner: Arc::new(Inner {
                config,
                log,
                advertised,
                appended: Notify::new(),
                stats: DataPathStats::default(),
                latencies: Default::default(),
                producer_ids,
                groups,
                offsets,
                request_memory,
                connections: ConnectionCounts::default(),
                _upkeep: upkeep,
            }),
        })
    }

    /// The data path Fetch responses use (the configured one, or `sendfile`
    /// where that is unavailable).
    pub fn data_path(&self) -> sluice_io::DataPath {
        self.inner.config.data_path
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    pub fn stats(&self) -> &DataPathStats {
        &self.inner.stats
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // The runtime's pulse: a task that asks to wake every millisecond
        // and records how late it was.
        let pulse = {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                const TICK: std::time::Duration = std::time::Duration::from_millis(1);
                loop {
                    let asked = std::time::Instant::now();
                    tokio::time::sleep(TICK).await;
                    let late = asked.elapsed().saturating_sub(TICK);
                    inner.latencies.tick_lateness.observe(late);
                }
            })
        };
        // The group coordinator's clock: due rebalances and expired sessions.
        let ticker = {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
                let mut ticks = 0u64;
                loop {
                    every.tick().await;
                    inner.groups.tick();
                    ticks += 1;
                    // Once a minute: expire empty groups' old offsets.
                    if ticks.is_multiple_of(600) {
                        let retention = inner.config.offsets_retention.as_millis() as i64;
                        let before = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0)
                            - retention;
                        let active = inner.groups.active();
                        let offsets = inner.offsets.clone();
                        match tokio::task::spawn_blocking(move || offsets.expire(before, &active))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => tracing::info!(
                                expired = n,
                                "expired committed offsets of empty groups"
                            ),
                            Ok(Err(e)) => tracing::error!("expiring committed offsets: {e}"),
                            _ => {}
                        }
                    }
                }
            })
        };
        let _stop_ticker = AbortOnDrop(ticker);
        let _stop_pulse = AbortOnDrop(pulse);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let open = self.inner.connections.open.fetch_add(1, Ordering::Relaxed);
                        let guard = OpenConnection(self.inner.clone());
                        if open >= self.inner.config.max_connections {
                            self.inner.connections.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                %peer,
                                open,
                                "refusing connection: at --max-connections {}",
                                self.inner.config.max_connections
                            );
                            drop((stream, guard));
                            continue;
                        }
                        let inner = self.inner.clone();
                        tokio::spawn(async move {
                            let _open = guard;
                            match connection(&inner, stream, peer).await {
                                Err(Close::PeerGone) | Ok(()) => {
                                    tracing::debug!(%peer, "connection closed by the peer");
                                }
                                Err(Close::Idle(idle)) => {
                                    inner.connections.closed_idle.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!(%peer, "closing connection: no request for {idle:?}");
                                }
                                Err(reason @ Close::Slow(_)) => {
                                    inner.connections.closed_slow.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(%peer, "closing connection: {reason}");
                                }
                                Err(reason) => tracing::warn!(%peer, "closing connection: {reason}"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Serves the data-path counters as Prometheus text on `listener` until
    /// `shutdown` resolves (any HTTP GET gets the same page).
    pub async fn serve_metrics(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    let body = self.metrics_text();
                    tokio::spawn(async move {
                        let mut req = [0u8; 1024];
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(2),
                            stream.read(&mut req),
                        )
                        .await;
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                    });
                }
            }
        }
    }

    /// Everything the metrics endpoint serves, as Prometheus text.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let inner = &self.inner;
        let mut body = inner.stats.snapshot().prometheus();
        body.push_str(&inner.latencies.prometheus());
        let mut gauge = |name: &str, help: &str, kind: &str, samples: &[(String, u64)]| {
            let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(body, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| [(String::new(), v)];
        gauge(
            "sluice_data_path_info",
            "The data path Fetch responses use.",
            "gauge",
            &[(format!("{{path=\"{}\"}}", inner.config.data_path), 1)],
        );
        let c = &inner.connections;
        gauge(
            "sluice_connections",
            "Open client connections.",
            "gauge",
            &one(c.open.load(Ordering::Relaxed) as u64),
        );
        gauge(
            "sluice_connections_refused_total",
            "Connections closed on accept for being over --max-connections.",
            "counter",
            &one(c.refused.load(Ordering::Relaxed)),
        );
        gauge(
            "sluice_connections_closed_idle_total",
            "Connections closed after --idle-timeout-ms without a request.",
            "counter",
            &one(c.closed_idle.load(Ordering::Relaxed)),
        );
        gauge(
            "sluice_connections_closed_slow_total",
            "Connections closed for not completing a frame within --frame-read-timeout-ms.",
            "counter",
            &one(c.closed_slow.load(Ordering::Relaxed)),
        );
        let limit = inner
            .config
            .max_buffered_request_bytes
            .max(inner.config.max_frame_bytes)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        gauge(
            "sluice_request_bytes_held",
            "Request bytes read or being read and not yet answered, all connections.",
            "gauge",
            &one(limit.saturating_sub(inner.request_memory.available_permits()) as u64),
        );
        let mut offline = 0u64;
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut sizes = Vec::new();
        for (topic, count) in inner.log.topics() {
            for p in 0..count {
                let Some(part) = inner.log.partition(&topic, p) else {
                    continue;
                };
                offline += u64::from(part.is_offline());
                let labels = format!("{{topic=\"{topic}\",partition=\"{p}\"}}");
                starts.push((labels.clone(), part.log_start().max(0) as u64));
                ends.push((labels.clone(), part.log_end().max(0) as u64));
                sizes.push((labels, part.size_bytes()));
            }
        }
        gauge(
            "sluice_partitions_offline",
            "Partitions taking no appends after a write failed (not for lack of space).",
            "gauge",
            &one(offline),
        );
        gauge(
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            "gauge",
            &starts,
        );
        gauge(
            "sluice_partition_log_end_offset",
            "Offset the next appended record gets.",
            "gauge",
            &ends,
        );
        gauge(
            "sluice_partition_size_bytes",
            "Bytes of the partition's segments.",
            "gauge",
            &sizes,
        );
        let mut by_state = std::collections::BTreeMap::new();
        for (_, _, state) in inner.groups.list() {
            *by_state.entry(state.name()).or_insert(0u64) += 1;
        }
        let groups: Vec<(String, u64)> = [
            "Empty",
            "PreparingRebalance",
            "CompletingRebalance",
            "Stable",
        ]
        .iter()
        .map(|s| {
            (
                format!("{{state=\"{s}\"}}"),
                by_state.get(s).copied().unwrap_or(0),
            )
        })
        .collect();
        gauge(
            "sluice_groups",
            "Consumer groups by state.",
            "gauge",
            &groups,
        );
        body
    }

    /// Clean shutdown of the log: flush, seal, marker.
    pub fn close(&self) -> io::Result<()> {
        self.inner.log.close()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Close {
    PeerGone,
    /// No request within the idle timeout.
    Idle(std::time::Duration),
    /// A started frame not complete within the frame read timeout.
    Slow(String),
    Protocol(String),
    Io(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::PeerGone => f.write_str("peer closed the connection"),
            Close::Idle(after) => write!(f, "idle for {after:?}"),
            Close::Slow(why) => write!(f, "frame too slow: {why}"),
            Close::Protocol(why) => write!(f, "protocol error: {why}"),
            Close::Io(why) => write!(f, "I/O error: {why}"),
        }
    }
}

async fn connection(inner: &Arc<Inner>, stream: TcpStream, peer: SocketAddr) -> Result<(), Close> {
    let _ = stream.set_nodelay(true);
    let mut sender = Sender::new(stream.as_fd(), inner.config.data_path)
        .map_err(|e| Close::Io(e.to_string()))?;
    tracing::debug!(%peer, "connection opened");
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // The permit keeps the frame's bytes counted until it is answered.
        let (frame, _room) = read_frame(inner, &stream, &mut buf).await?;
        let received = std::time::Instant::now();
        let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
        match handlers::handle(inner, frame, peer).await? {
            Outcome::Respond(parts) => send_parts(inner, &mut sender, &stream, parts).await?,
            Outcome::NoResponse => {}
        }
        if let Some(key) = api_key {
            inner.latencies.observe_request(key, received.elapsed());
        }
    }
}

/// Reads one length-prefixed frame. The buffer grows with what arrives,
/// never by what the peer claims (at most doubling what it has received),
/// and every byte reserved for the frame is first taken from the broker-wide
/// request memory; the returned permit gives it back once dropped.
///
/// Until the frame's first byte arrives the connection may be idle for
/// `idle_timeout`; from then on the whole frame must arrive within
/// `frame_read_timeout`, so a peer trickling bytes cannot hold a connection
/// (or request memory) for long.
async fn read_frame<'a>(
    inner: &'a Inner,
    stream: &TcpStream,
    buf: &mut BytesMut,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'a>>), Close> {
    let config = &inner.config;
    let max = config.max_frame_bytes;
    let mut need = 4usize;
    let mut held: Option<tokio::sync::SemaphorePermit<'a>> = None;
    let mut started = !buf.is_empty();
    let mut deadline = tokio::time::Instant::now()
        + if started {
            config.frame_read_timeout
        } else {
            config.idle_timeout
        };
    loop {
        if buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if size < 0 || size as usize > max {
                return Err(Close::Protocol(format!(
                    "frame size {size} outside 0..={max} (socket.request.max.bytes)"
                )));
            }
            need = 4 + size as usize;
            if buf.len() >= need {
                buf.advance(4);
                return Ok((buf.split_to(size as usize).freeze(), held));
            }
        }
        let missing = need - buf.len();
        if buf.capacity() - buf.len() < missing.min(64 << 10) {
            let grow = missing.clamp(4096, buf.len().max(64 << 10));
            // Waiting for room is the broker's doing, not the peer's: the
            // frame's deadline starts again once there is room.
            let room = inner
                .request_memory
                .acquire_many(grow as u32)
                .await
                .map_err(|e| Close::Io(e.to_string()))?;
            match held.as_mut() {
                Some(h) => h.merge(room),
                None => held = Some(room),
            }
            if started {
                deadline = deadline.max(tokio::time::Instant::now() + config.frame_read_timeout);
            }
            buf.reserve(grow);
        }
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(ready) => ready.map_err(|e| Close::Io(e.to_string()))?,
            Err(_) if started => {
                return Err(Close::Slow(format!(
                    "{} of {need} bytes within {:?}",
                    buf.len(),
                    config.frame_read_timeout
                )));
            }
            Err(_) => return Err(Close::Idle(config.idle_timeout)),
        }
        match stream.try_read_buf(buf) {
            Ok(0) => {
                return if buf.is_empty() {
                    Err(Close::PeerGone)
                } else {
                    Err(Close::Protocol(format!(
                        "peer closed mid-frame ({} of {need} bytes)",
                        buf.len()
                    )))
                };
            }
            Ok(_) if !started => {
                started = true;
                deadline = tokio::time::Instant::now() + config.frame_read_timeout;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Close::Io(e.to_string())),
        }
    }
}

async fn send_parts(
    inner: &Inner,
    sender: &mut Sender,
    stream: &TcpStream,
    parts: Vec<Part>,
) -> Result<(), Close> {
    let chunks: Vec<Chunk<'_>> = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => Chunk::Bytes(b),
            Part::File(r) => Chunk::File(FileRegion::new(r.segment.file(), r.position, r.len)),
        })
        .collect();
    let (mut record_bytes, mut encoded_bytes) = (0, 0);
    for p in &parts {
        match p {
            Part::Bytes(b) => encoded_bytes += b.len() as u64,
            Part::File(r) => record_bytes += r.len,
        }
    }
    let mut msg = Message::new(chunks);
    let result = sender.send_async(stream, &mut msg).await;
    inner.stats.add(msg.counters(), record_bytes, encoded_bytes);
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_peer_closed() => Err(Close::PeerGone),
        Err(e) => Err(Close::Io(e.to_string())),
    }
}
