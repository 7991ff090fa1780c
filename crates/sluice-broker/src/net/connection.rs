//! One client connection: frames in, replies out through the data path.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_io::{Chunk, FileRegion, Message, Sender};
use tokio::net::TcpStream;

use super::Net;
use super::frame::read_frame;
use crate::api::{self, Part, Reply};
use crate::state::BrokerState;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Close {
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

pub(super) async fn serve(
    state: &Arc<BrokerState>,
    net: &Net,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(), Close> {
    let _ = stream.set_nodelay(true);
    let mut sender = Sender::new(stream.as_fd(), state.config.data_path)
        .map_err(|e| Close::Io(e.to_string()))?;
    tracing::debug!(%peer, "connection opened");
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // The permit keeps the frame's bytes counted until it is answered.
        let (frame, _room) = read_frame(net, &stream, &mut buf).await?;
        let received = std::time::Instant::now();
        let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
        match api::handle(state, frame, peer).await {
            Ok(Reply::Respond(parts)) => send_parts(state, &mut sender, &stream, parts).await?,
            Ok(Reply::NoResponse) => {}
            Err(e) => return Err(Close::Protocol(e.to_string())),
        }
        if let Some(key) = api_key {
            state.latencies.observe_request(key, received.elapsed());
        }
    }
}

async fn send_parts(
    state: &BrokerState,
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
    state.stats.add(msg.counters(), record_bytes, encoded_bytes);
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_peer_closed() => Err(Close::PeerGone),
        Err(e) => Err(Close::Io(e.to_string())),
    }
}
