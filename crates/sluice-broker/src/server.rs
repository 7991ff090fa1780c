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
    _upkeep: Upkeep,
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
                        let inner = self.inner.clone();
                        tokio::spawn(async move {
                            match connection(&inner, stream, peer).await {
                                Err(Close::PeerGone) | Ok(()) => {
                                    tracing::debug!(%peer, "connection closed by the peer");
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
                    let mut body = self.inner.stats.snapshot().prometheus();
                    body.push_str(&self.inner.latencies.prometheus());
                    body.push_str(&format!(
                        "# HELP sluice_data_path_info The data path Fetch responses use.\n# TYPE sluice_data_path_info gauge\nsluice_data_path_info{{path=\"{}\"}} 1\n",
                        self.inner.config.data_path
                    ));
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
    Protocol(String),
    Io(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::PeerGone => f.write_str("peer closed the connection"),
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
        let frame = read_frame(&stream, &mut buf, inner.config.max_frame_bytes).await?;
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

/// Reads one length-prefixed frame.
async fn read_frame(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> Result<Bytes, Close> {
    let mut need = 4usize;
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
                return Ok(buf.split_to(size as usize).freeze());
            }
        }
        // Grow with what arrives, never by what the peer claims.
        buf.reserve((need - buf.len()).clamp(4096, 1 << 20));
        stream
            .readable()
            .await
            .map_err(|e| Close::Io(e.to_string()))?;
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
