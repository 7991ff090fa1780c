//! The listener, connections, framing and per-connection limits: the only
//! code that sees a socket.
//!
//! A connection reads length-prefixed frames, hands each to `api::handle`
//! and writes the reply through its `sluice_io::Sender`, in order, one
//! request at a time (as Kafka's connections do). A frame the API layer
//! cannot answer closes that connection with a logged reason; other
//! connections carry on.

mod connection;
mod frame;
mod ktls;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::ListenerInfo;
use crate::config::{BrokerConfig, KernelTlsOffload};
use crate::metrics::ConnectionCounts;
use crate::state::BrokerState;
use connection::Close;
use tls::Tls;

/// A bound listener, ready to accept.
pub struct BoundListener {
    pub info: Arc<ListenerInfo>,
    pub tcp: TcpListener,
}

/// What TLS connections cost and how their bytes left.
#[derive(Debug, Default)]
pub struct TlsStats {
    pub handshakes: AtomicU64,
    pub handshakes_failed: AtomicU64,
    /// Response bytes encrypted by rustls in user space.
    pub user_space_bytes: AtomicU64,
    /// Response bytes the kernel encrypted (kTLS), sent zero-copy.
    pub kernel_bytes: AtomicU64,
    /// Connections whose keys the kernel took after the handshake.
    pub kernel_offloads: AtomicU64,
    /// Connections the offload was tried on that stayed in user space.
    pub kernel_offload_fallbacks: AtomicU64,
}

/// The limits `net` enforces, from the broker's configuration.
#[derive(Debug, Clone)]
pub struct NetLimits {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    pub idle_timeout: Duration,
    pub frame_read_timeout: Duration,
    /// Bytes of request memory shared by every connection.
    pub request_memory: usize,
}

impl NetLimits {
    fn from_config(config: &BrokerConfig) -> NetLimits {
        NetLimits {
            max_frame_bytes: config.max_frame_bytes,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            max_connections_per_ip_overrides: config.max_connections_per_ip_overrides.clone(),
            idle_timeout: config.idle_timeout,
            frame_read_timeout: config.frame_read_timeout,
            request_memory: config
                .max_buffered_request_bytes
                .max(config.max_frame_bytes)
                .min(Semaphore::MAX_PERMITS),
        }
    }

    fn per_ip_limit(&self, ip: IpAddr) -> usize {
        self.max_connections_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }
}

/// What the connections share: limits, counts and request memory.
pub struct Net {
    pub limits: NetLimits,
    /// One permit per request byte held between reading a frame's size and
    /// answering it, shared by every connection.
    request_memory: Semaphore,
    pub counts: ConnectionCounts,
    /// Open connections per source address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The TLS listeners' acceptor, when any listener has TLS.
    pub tls: Option<Tls>,
    pub tls_stats: TlsStats,
    /// Whether the kernel can take TLS records over (`CONFIG_TLS`).
    pub kernel_tls: bool,
    /// Whether TLS connections try the kernel offload (`kernel_tls` under
    /// `--tls-kernel-offload auto`, always under `on`); turned off for good
    /// if the kernel takes the ULP but refuses a session's keys.
    pub kernel_offload: AtomicBool,
    /// Whether a fallback's reason has been logged (once per process).
    fallback_logged: AtomicBool,
}

impl Net {
    /// The connections' shared state; loads the TLS files when a listener
    /// needs them.
    pub fn new(config: &BrokerConfig) -> Result<Net, String> {
        let limits = NetLimits::from_config(config);
        let needs_tls = config.listeners.iter().any(|l| l.protocol.tls());
        let kernel_tls = needs_tls && sluice_io::ktls::kernel_tls_available();
        let offload = needs_tls
            && match config.security.tls_kernel_offload {
                KernelTlsOffload::Auto => kernel_tls,
                KernelTlsOffload::On => true,
                KernelTlsOffload::Off => false,
            };
        let tls = match (&config.security.tls, needs_tls) {
            (Some(files), true) => Some(Tls::load(files, offload)?),
            (None, true) => {
                return Err(
                    "an SSL or SASL_SSL listener needs --tls-cert and --tls-key".to_string()
                );
            }
            (_, false) => None,
        };
        Ok(Net {
            request_memory: Semaphore::new(limits.request_memory),
            limits,
            counts: ConnectionCounts::default(),
            per_ip: Mutex::new(HashMap::new()),
            tls,
            tls_stats: TlsStats::default(),
            kernel_tls,
            kernel_offload: AtomicBool::new(offload),
            fallback_logged: AtomicBool::new(false),
        })
    }

    /// Counts a connection the kernel offload was tried on but that stays
    /// in user space; the first reason is logged (at debug: on a kernel
    /// without the ULP every connection would say the same).
    fn kernel_offload_fell_back(&self, why: &str) {
        self.tls_stats
            .kernel_offload_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        if !self.fallback_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "kernel TLS offload not taken, encrypting in user space: {why} \
                 (logged once; sluice_tls_kernel_offload_total{{outcome=\"fallback\"}} counts them)"
            );
        }
    }

    /// Re-reads the TLS files (SIGHUP). New handshakes use them; open
    /// connections keep the keys they have.
    pub fn reload_tls(&self) -> Result<bool, String> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Request bytes held now, by every connection together.
    pub fn request_bytes_held(&self) -> usize {
        self.limits
            .request_memory
            .saturating_sub(self.request_memory.available_permits())
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<OpenConnection, String> {
        let open = self.counts.open.fetch_add(1, Ordering::Relaxed);
        let mut guard = OpenConnection {
            net: self.clone(),
            ip: None,
        };
        if open >= self.limits.max_connections {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "{open} connections open, at --max-connections {}",
                self.limits.max_connections
            ));
        }
        let limit = self.limits.per_ip_limit(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limit {
            self.counts.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "{from_ip} connections open from {ip}, at --max-connections-per-ip {limit}"
            ));
        }
        // Entries exist only while an address has connections open.
        *per_ip.entry(ip).or_insert(0) += 1;
        guard.ip = Some(ip);
        Ok(guard)
    }
}

/// Counts a connection open (overall and for its address) until dropped.
struct OpenConnection {
    net: Arc<Net>,
    ip: Option<IpAddr>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.net.counts.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.net.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Accepts connections on every listener until `shutdown` resolves.
pub async fn accept_loops(
    state: &Arc<BrokerState>,
    net: &Arc<Net>,
    listeners: Vec<BoundListener>,
    shutdown: impl Future<Output = ()>,
) {
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (state, net) = (state.clone(), net.clone());
        loops.spawn(async move { accept_loop(&state, &net, listener).await });
    }
    shutdown.await;
    loops.abort_all();
}

async fn accept_loop(state: &Arc<BrokerState>, net: &Arc<Net>, listener: BoundListener) {
    let BoundListener { info, tcp } = listener;
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = match net.admit(peer.ip()) {
                        Ok(open) => open,
                        Err(why) => {
                            tracing::warn!(%peer, "refusing connection: {why}");
                            continue;
                        }
                    };
                    let (state, net, info) = (state.clone(), net.clone(), info.clone());
                    tokio::spawn(async move {
                        let _open = open;
                        match connection::serve(&state, &net, stream, peer, info.clone()).await {
                            Err(Close::PeerGone) | Ok(()) => {
                                tracing::debug!(%peer, "connection closed by the peer");
                            }
                            Err(Close::Idle(idle)) => {
                                net.counts.closed_idle.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(%peer, "closing connection: no request for {idle:?}");
                            }
                            Err(reason @ Close::Slow(_)) => {
                                net.counts.closed_slow.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%peer, "closing connection: {reason}");
                            }
                            Err(reason @ Close::Unauthenticated(_)) => {
                                tracing::warn!(%peer, listener = %info.name, "closing connection: {reason}");
                            }
                            Err(reason @ Close::Handshake(_)) => {
                                tracing::warn!(%peer, listener = %info.name, "closing connection: {reason}");
                            }
                            Err(reason) => tracing::warn!(%peer, "closing connection: {reason}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
