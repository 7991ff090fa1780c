//! Reading length-prefixed request frames, within the broker's limits.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Net;
use super::connection::Close;

/// Reads one length-prefixed frame. The buffer grows with what arrives,
/// never by what the peer claims (at most doubling what it has received),
/// and every byte reserved for the frame is first taken from the broker-wide
/// request memory; the returned permit gives it back once dropped.
///
/// Until the frame's first byte arrives the connection may be idle for
/// `idle_timeout`; from then on the whole frame must arrive within
/// `frame_read_timeout`, so a peer trickling bytes cannot hold a connection
/// (or request memory) for long. `max` is the largest frame accepted now
/// (smaller before a SASL client has authenticated).
pub(super) async fn read_frame<'a, R: AsyncRead + Unpin>(
    net: &'a Net,
    stream: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'a>>), Close> {
    let config = &net.limits;
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
            let room = net
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
        let read = match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(read) => read,
            Err(_) if started => {
                return Err(Close::Slow(format!(
                    "{} of {need} bytes within {:?}",
                    buf.len(),
                    config.frame_read_timeout
                )));
            }
            Err(_) => return Err(Close::Idle(config.idle_timeout)),
        };
        match read {
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
            // rustls: the peer closed without a close_notify (most Kafka
            // clients do) between frames.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                return Err(Close::PeerGone);
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // rustls: the peer's TLS records do not decrypt or parse.
                return Err(Close::Protocol(format!("bad TLS record: {e}")));
            }
            Err(e) => return Err(Close::Io(e.to_string())),
        }
    }
}
