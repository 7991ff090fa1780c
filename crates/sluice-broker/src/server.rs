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
    totals: Mutex<Counters>,
}

impl DataPathStats {
    pub fn add(&self, c: &Counters) {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner()) += *c;
    }

    pub fn snapshot(&self) -> Counters {
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
    pub fn open(config: BrokerConfig, advertised: SocketAddr) -> io::Result<Broker> {
        let log = Arc::new(Log::open(&config.data_dir, config.log.clone())?);
        let upkeep = log.start_upkeep(std::time::Duration::from_secs(60))?;
        Ok(Broker {
            inner: Arc::new(Inner {
                config,
                log,
                advertised,
                appended: Notify::new(),
                stats: DataPathStats::default(),
                _upkeep: upkeep,
            }),
        })
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

    /// Clean shutdown of the log: flush, seal, marker.
    pub fn close(&self) -> io::Result<()> {
        self.inner.log.close()
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
        match handlers::handle(inner, frame).await? {
            Outcome::Respond(parts) => send_parts(inner, &mut sender, &stream, parts).await?,
            Outcome::NoResponse => {}
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
    let mut msg = Message::new(chunks);
    let result = sender.send_async(stream, &mut msg).await;
    inner.stats.add(msg.counters());
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_peer_closed() => Err(Close::PeerGone),
        Err(e) => Err(Close::Io(e.to_string())),
    }
}
