//! One client connection: the TLS handshake where the listener has TLS,
//! then frames in and replies out, with the session's authentication rules.
//!
//! Replies leave through one of two paths. On a plain socket (PLAINTEXT,
//! SASL_PLAINTEXT) the `sluice_io::Sender` writes them, Fetch's records
//! going file → socket without a copy into user space; so it does under
//! kernel TLS, where the kernel took the session's keys after the handshake
//! (`net/ktls.rs`) and encrypts what the sender writes. Under user-space
//! TLS the records must pass through the encryption, so file regions are
//! read into a buffer and written through rustls.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use sluice_io::{Chunk, Counters, FileRegion, Message, Sender};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Net;
use super::frame::read_frame;
use super::ktls::{self, Cork, KernelTlsStream, Offloaded, TlsConn};
use super::tls::principal_of;
use crate::api::{self, ApiError, ListenerInfo, Part, Reply, Session};
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
    /// The TLS handshake failed or did not finish in time.
    Handshake(String),
    /// A request the session may not send (before authentication, after
    /// its session expired), or a failed authentication.
    Unauthenticated(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::PeerGone => f.write_str("peer closed the connection"),
            Close::Idle(after) => write!(f, "idle for {after:?}"),
            Close::Slow(why) => write!(f, "frame too slow: {why}"),
            Close::Protocol(why) => write!(f, "protocol error: {why}"),
            Close::Io(why) => write!(f, "I/O error: {why}"),
            Close::Handshake(why) => write!(f, "TLS handshake failed: {why}"),
            Close::Unauthenticated(why) => write!(f, "{why}"),
        }
    }
}

/// The socket, as replies are written to it.
enum Transport {
    Plain {
        stream: TcpStream,
        sender: Box<Sender>,
    },
    Tls {
        stream: Box<TlsConn>,
        /// Reused for file regions on their way into rustls.
        staging: Vec<u8>,
    },
    /// TLS whose records the kernel seals and opens: written like Plain.
    KernelTls {
        stream: KernelTlsStream,
        sender: Box<Sender>,
        /// Records the kernel may still send under this key (an upper
        /// bound is counted down per reply).
        records_left: u64,
    },
}

pub(super) async fn serve(
    state: &Arc<BrokerState>,
    net: &Net,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerInfo>,
) -> Result<(), Close> {
    let _ = stream.set_nodelay(true);
    let (mut transport, session) = if listener.protocol.tls() {
        let Some(tls) = &net.tls else {
            return Err(Close::Handshake("no TLS configured".into()));
        };
        let acceptor = tls.acceptor();
        // Where the keys may go to the kernel, the handshake is read a
        // record at a time so nothing after it is read by rustls.
        let offload = net.kernel_offload.load(Ordering::Relaxed);
        let handshake = acceptor.accept(Cork::new(stream, offload));
        let accepted = tokio::time::timeout(net.limits.frame_read_timeout, handshake)
            .await
            .map_err(|_| {
                Close::Handshake(format!(
                    "not finished within {:?}",
                    net.limits.frame_read_timeout
                ))
            })
            .and_then(|r| r.map_err(|e| Close::Handshake(e.to_string())));
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                net.tls_stats
                    .handshakes_failed
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        net.tls_stats.handshakes.fetch_add(1, Ordering::Relaxed);
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(principal_of);
        let session = Session::new(listener, peer, principal);
        let stream = Box::new(stream);
        let transport = if offload {
            after_handshake(state, net, stream)?
        } else {
            Transport::Tls {
                stream,
                staging: Vec::new(),
            }
        };
        (transport, session)
    } else {
        let sender = Sender::new(stream.as_fd(), state.config.data_path)
            .map_err(|e| Close::Io(e.to_string()))?;
        (
            Transport::Plain {
                stream,
                sender: Box::new(sender),
            },
            Session::new(listener, peer, None),
        )
    };
    tracing::debug!(%peer, principal = %session.principal, "connection opened");
    let closed = run(state, net, &mut transport, session).await;
    if matches!(
        closed,
        Err(Close::Idle(_) | Close::Slow(_) | Close::Protocol(_) | Close::Unauthenticated(_))
    ) {
        close_notify(&mut transport).await;
    }
    closed
}

/// Before the broker closes a TLS connection it can still write to, it
/// says so (`close_notify`, RFC 8446 §6.1), so the client sees an orderly
/// end rather than a possible truncation. Best effort, and never waits
/// long on a client that reads nothing.
async fn close_notify(transport: &mut Transport) {
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
    match transport {
        Transport::Plain { .. } => {}
        Transport::Tls { stream, .. } => {
            use tokio::io::AsyncWriteExt;
            // Sends close_notify, flushes, then shuts the TCP write side.
            let _ = tokio::time::timeout(WITHIN, stream.shutdown()).await;
        }
        Transport::KernelTls { stream, .. } => {
            if let Err(e) = sluice_io::ktls::send_close_notify(stream.tcp().as_fd()) {
                tracing::debug!("close_notify not sent under kernel TLS: {e}");
            }
        }
    }
}

/// Hands the session to the kernel, or keeps it in rustls with the reason
/// counted.
fn after_handshake(
    state: &BrokerState,
    net: &Net,
    stream: Box<TlsConn>,
) -> Result<Transport, Close> {
    match ktls::offload(stream) {
        Ok(Offloaded::Kernel {
            stream,
            records_left,
        }) => {
            let sender = Sender::new(stream.tcp().as_fd(), state.config.data_path)
                .map_err(|e| Close::Io(e.to_string()))?;
            net.tls_stats
                .kernel_offloads
                .fetch_add(1, Ordering::Relaxed);
            Ok(Transport::KernelTls {
                stream,
                sender: Box::new(sender),
                records_left,
            })
        }
        Ok(Offloaded::UserSpace { stream, why }) => {
            net.kernel_offload_fell_back(&why);
            Ok(Transport::Tls {
                stream,
                staging: Vec::new(),
            })
        }
        Err(why) => {
            // The kernel has the ULP but refused these keys: later
            // sessions would fare no better, and this one is gone.
            if net.kernel_offload.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    "kernel TLS refused a session's keys ({why}); TLS connections \
                     encrypt in user space from now on"
                );
            }
            net.tls_stats
                .kernel_offload_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            Err(Close::Io(format!("kernel TLS offload failed: {why}")))
        }
    }
}

async fn run(
    state: &Arc<BrokerState>,
    net: &Net,
    transport: &mut Transport,
    mut session: Session,
) -> Result<(), Close> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let unauthenticated_max = state
        .config
        .security
        .max_unauthenticated_frame
        .min(net.limits.max_frame_bytes);
    loop {
        let max = if session.authenticated() {
            net.limits.max_frame_bytes
        } else {
            unauthenticated_max
        };
        // The permit keeps the frame's bytes counted until it is answered.
        let (frame, _room) = match transport {
            Transport::Plain { stream, .. } => read_frame(net, stream, &mut buf, max).await?,
            Transport::Tls { stream, .. } => {
                read_frame(net, stream.as_mut(), &mut buf, max).await?
            }
            Transport::KernelTls { stream, .. } => read_frame(net, stream, &mut buf, max).await?,
        };
        let received = std::time::Instant::now();
        if session.expects_raw_token() {
            // After a v0 SaslHandshake: a bare token, answered bare.
            match api::sasl::raw_token(state, &mut session, &frame).await {
                Ok(reply) => send_parts(state, net, transport, vec![Part::Bytes(reply)]).await?,
                Err(reason) => return Err(Close::Unauthenticated(reason)),
            }
            continue;
        }
        let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
        match api::handle(state, frame, &mut session).await {
            Ok(Reply::Respond(parts)) => send_parts(state, net, transport, parts).await?,
            Ok(Reply::NoResponse) => {}
            Ok(Reply::RespondThenClose(parts, reason)) => {
                send_parts(state, net, transport, parts).await?;
                return Err(Close::Unauthenticated(reason));
            }
            Err(ApiError::Unauthenticated(why)) => return Err(Close::Unauthenticated(why)),
            Err(e) => return Err(Close::Protocol(e.to_string())),
        }
        if let Some(key) = api_key {
            state.latencies.observe_request(key, received.elapsed());
        }
        // Over a quota: nothing more is read from this client until its
        // throttle has passed (KIP-219), whether or not it waits itself.
        if !session.mute_for.is_zero() {
            tokio::time::sleep(session.mute_for).await;
        }
    }
}

async fn send_parts(
    state: &BrokerState,
    net: &Net,
    transport: &mut Transport,
    parts: Vec<Part>,
) -> Result<(), Close> {
    let (mut record_bytes, mut encoded_bytes) = (0, 0);
    for p in &parts {
        match p {
            Part::Bytes(b) => encoded_bytes += b.len() as u64,
            Part::File(r) => record_bytes += r.len,
        }
    }
    match transport {
        Transport::Plain { stream, sender } => {
            send_zero_copy(state, stream, sender, &parts, record_bytes, encoded_bytes)
                .await
                .map(|_| ())
        }
        Transport::KernelTls {
            stream,
            sender,
            records_left,
        } => {
            let sent = send_zero_copy(
                state,
                stream.tcp(),
                sender,
                &parts,
                record_bytes,
                encoded_bytes,
            )
            .await?;
            net.tls_stats
                .kernel_bytes
                .fetch_add(sent.bytes_sent, Ordering::Relaxed);
            // A record ends at most once per syscall and holds at most
            // 16 KiB: an upper bound on what the reply used of the key.
            let records = sent.total_calls() + sent.bytes_sent / (16 << 10) + 1;
            *records_left = records_left.saturating_sub(records);
            if *records_left == 0 {
                return Err(Close::Io(
                    "kernel TLS: the key's record limit is near and the kernel cannot \
                     update it; closing so the client reconnects"
                        .into(),
                ));
            }
            Ok(())
        }
        Transport::Tls { stream, staging } => {
            let written = send_tls(stream, staging, &parts).await;
            net.tls_stats
                .user_space_bytes
                .fetch_add(encoded_bytes + record_bytes, Ordering::Relaxed);
            written.map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof => Close::PeerGone,
                _ => Close::Io(e.to_string()),
            })
        }
    }
}

/// Writes a reply through the sender: byte runs gathered, file regions by
/// the configured data path (sendfile by default).
async fn send_zero_copy(
    state: &BrokerState,
    stream: &TcpStream,
    sender: &mut Sender,
    parts: &[Part],
    record_bytes: u64,
    encoded_bytes: u64,
) -> Result<Counters, Close> {
    let chunks: Vec<Chunk<'_>> = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => Chunk::Bytes(b),
            Part::File(r) => Chunk::File(FileRegion::new(r.segment.file(), r.position, r.len)),
        })
        .collect();
    let mut msg = Message::new(chunks);
    let result = sender.send_async(stream, &mut msg).await;
    state.stats.add(msg.counters(), record_bytes, encoded_bytes);
    match result {
        Ok(counters) => Ok(counters),
        Err(e) if e.is_peer_closed() => Err(Close::PeerGone),
        Err(e) => Err(Close::Io(e.to_string())),
    }
}

/// Bytes as they are; file regions read (from the page cache, where Fetch
/// put them) into `staging` a slice at a time, then encrypted by rustls.
async fn send_tls(
    stream: &mut TlsConn,
    staging: &mut Vec<u8>,
    parts: &[Part],
) -> std::io::Result<()> {
    const SLICE: usize = 256 * 1024;
    for p in parts {
        match p {
            Part::Bytes(b) => stream.write_all(b).await?,
            Part::File(r) => {
                let file = r.segment.file();
                let mut at = r.position;
                let end = r.position + r.len;
                while at < end {
                    let n = ((end - at) as usize).min(SLICE);
                    staging.resize(n, 0);
                    file.read_exact_at(&mut staging[..n], at)?;
                    stream.write_all(&staging[..n]).await?;
                    at += n as u64;
                }
            }
        }
    }
    stream.flush().await?;
    // A large staging buffer is not kept by an idle connection.
    if staging.capacity() > SLICE {
        staging.truncate(0);
        staging.shrink_to(SLICE);
    }
    Ok(())
}
