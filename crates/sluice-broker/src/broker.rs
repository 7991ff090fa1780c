//! `Broker`: the layers put together — state opened, connections served,
//! the coordinator's clock ticking, the metrics page assembled.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_log::Log;
use tokio::net::TcpListener;

use crate::cluster::ListenerAddress;
use crate::config::BrokerConfig;
use crate::metrics::{DataPathStats, Page};
use crate::net::{self, BoundListener, Net};
use crate::state::BrokerState;

/// A running broker.
#[derive(Clone)]
pub struct Broker {
    state: Arc<BrokerState>,
    net: Arc<Net>,
}

impl Broker {
    /// Opens the data directory (recovering it if the last run did not shut
    /// down cleanly) and starts the log's upkeep. `endpoints` are the
    /// addresses Metadata hands to clients, one per listener.
    pub fn open(mut config: BrokerConfig, endpoints: Vec<ListenerAddress>) -> io::Result<Broker> {
        if let Some(reason) = config.data_path.unavailable_reason() {
            tracing::warn!(
                requested = %config.data_path,
                using = %sluice_io::DataPath::Sendfile,
                reason,
                "data path unavailable here; falling back"
            );
            config.data_path = sluice_io::DataPath::Sendfile;
        }
        let net = Arc::new(Net::new(&config).map_err(io::Error::other)?);
        let offload = net.kernel_offload.load(Ordering::Relaxed);
        if net.tls.is_some() && !net.kernel_tls {
            tracing::info!(
                offload_attempted = offload,
                "kernel TLS (CONFIG_TLS) is not available: TLS listeners encrypt in user space \
                 and read Fetch records into memory first"
            );
        } else if net.tls.is_some() && !offload {
            tracing::info!(
                "kernel TLS is available but --tls-kernel-offload is off: TLS listeners \
                 encrypt in user space"
            );
        } else if net.tls.is_some() {
            tracing::info!(
                "kernel TLS offload on: TLS sessions hand their keys to the kernel after the \
                 handshake and Fetch stays zero-copy"
            );
        }
        let state = Arc::new(BrokerState::open_with_listeners(config, endpoints)?);
        Ok(Broker { state, net })
    }

    /// The data path Fetch responses use (the configured one, or `sendfile`
    /// where that is unavailable).
    pub fn data_path(&self) -> sluice_io::DataPath {
        self.state.config.data_path
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.state.log
    }

    pub fn stats(&self) -> &DataPathStats {
        &self.state.stats
    }

    /// The cluster id clients are told: etcd's in a cluster, this data
    /// directory's (`meta.properties`) otherwise.
    pub fn cluster_id(&self) -> String {
        self.state.cluster_id()
    }

    /// Re-reads the TLS certificate and key (SIGHUP); false when no
    /// listener has TLS.
    pub fn reload_tls(&self) -> Result<bool, String> {
        self.net.reload_tls()
    }

    /// Accepts connections on every listener until `shutdown` resolves.
    pub async fn serve(&self, listeners: Vec<BoundListener>, shutdown: impl Future<Output = ()>) {
        // The runtime's pulse: a task that asks to wake every millisecond
        // and records how late it was.
        let pulse = {
            let state = self.state.clone();
            tokio::spawn(async move {
                const TICK: Duration = Duration::from_millis(1);
                loop {
                    let asked = std::time::Instant::now();
                    tokio::time::sleep(TICK).await;
                    let late = asked.elapsed().saturating_sub(TICK);
                    state.latencies.tick_lateness.observe(late);
                }
            })
        };
        // The group coordinator's clock: due rebalances and expired sessions.
        let ticker = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                let mut ticks = 0u64;
                loop {
                    every.tick().await;
                    state.groups.tick();
                    ticks += 1;
                    // Once a minute: expire empty groups' old offsets.
                    if ticks.is_multiple_of(600) {
                        crate::api::coordination::expire_offsets(&state).await;
                    }
                }
            })
        };
        // In a cluster: the coordinated `__consumer_offsets` and
        // `__transaction_state` partitions follow leadership (loaded when
        // gained, forgotten when lost).
        let sweeper = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(200));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    crate::api::coordination::sweep(&state).await;
                }
            })
        };
        // Transactions open past their timeout are aborted (on their own
        // task: writing markers may wait for a leader).
        let aborter = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(state.config.transaction_abort_interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    crate::api::transactions::abort_timed_out(&state).await;
                }
            })
        };
        let _stop_sweeper = AbortOnDrop(sweeper);
        let _stop_aborter = AbortOnDrop(aborter);
        let _stop_ticker = AbortOnDrop(ticker);
        let _stop_pulse = AbortOnDrop(pulse);
        net::accept_loops(&self.state, &self.net, listeners, shutdown).await;
    }

    /// Serves the metrics page as Prometheus text on `listener` until
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
                            Duration::from_secs(2),
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
        let state = &self.state;
        let mut body = String::new();
        let mut page = Page(&mut body);
        state.stats.snapshot().prometheus(&mut page);
        state.latencies.prometheus(&mut page);
        page.family(
            "sluice_data_path_info",
            "The data path Fetch responses use.",
            "gauge",
            &[(format!("{{path=\"{}\"}}", state.config.data_path), 1)],
        );
        let c = &self.net.counts;
        page.one(
            "sluice_connections",
            "Open client connections.",
            "gauge",
            c.open.load(Ordering::Relaxed) as u64,
        );
        page.one(
            "sluice_connections_refused_total",
            "Connections closed on accept for being over --max-connections.",
            "counter",
            c.refused.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_connections_refused_per_ip_total",
            "Connections closed on accept for being over their address's --max-connections-per-ip.",
            "counter",
            c.refused_per_ip.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_connections_closed_idle_total",
            "Connections closed after --idle-timeout-ms without a request.",
            "counter",
            c.closed_idle.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_connections_closed_slow_total",
            "Connections closed for not completing a frame within --frame-read-timeout-ms.",
            "counter",
            c.closed_slow.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_request_bytes_held",
            "Request bytes read or being read and not yet answered, all connections.",
            "gauge",
            self.net.request_bytes_held() as u64,
        );
        let auth = &state.auth_stats;
        page.family(
            "sluice_authentications_total",
            "SASL authentications, by result (reauthenticated: KIP-368 renewals).",
            "counter",
            &[
                (
                    "{result=\"success\"}".to_string(),
                    auth.succeeded.load(Ordering::Relaxed),
                ),
                (
                    "{result=\"failure\"}".to_string(),
                    auth.failed.load(Ordering::Relaxed),
                ),
                (
                    "{result=\"reauthenticated\"}".to_string(),
                    auth.reauthenticated.load(Ordering::Relaxed),
                ),
            ],
        );
        page.one(
            "sluice_connections_closed_unauthenticated_total",
            "Connections closed for a request sent before authenticating or after the session expired.",
            "counter",
            auth.refused_unauthenticated.load(Ordering::Relaxed),
        );
        let tls = &self.net.tls_stats;
        page.one(
            "sluice_tls_handshakes_total",
            "TLS handshakes completed.",
            "counter",
            tls.handshakes.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_tls_handshakes_failed_total",
            "TLS handshakes that failed or timed out.",
            "counter",
            tls.handshakes_failed.load(Ordering::Relaxed),
        );
        page.family(
            "sluice_tls_bytes_sent_total",
            "Response bytes sent over TLS, by who encrypted them: kernel (kTLS, zero-copy) or user space (rustls).",
            "counter",
            &[
                (
                    "{mode=\"kernel\"}".to_string(),
                    tls.kernel_bytes.load(Ordering::Relaxed),
                ),
                (
                    "{mode=\"user\"}".to_string(),
                    tls.user_space_bytes.load(Ordering::Relaxed),
                ),
            ],
        );
        page.family(
            "sluice_tls_kernel_offload_total",
            "TLS connections after the handshake: keys handed to the kernel (kernel), or kept in user space though the offload was tried (fallback).",
            "counter",
            &[
                (
                    "{outcome=\"kernel\"}".to_string(),
                    tls.kernel_offloads.load(Ordering::Relaxed),
                ),
                (
                    "{outcome=\"fallback\"}".to_string(),
                    tls.kernel_offload_fallbacks.load(Ordering::Relaxed),
                ),
            ],
        );
        page.one(
            "sluice_kernel_tls_available",
            "1 if this kernel can encrypt TLS records (CONFIG_TLS).",
            "gauge",
            u64::from(self.net.kernel_tls),
        );
        let txns = &state.txns.counters;
        page.family(
            "sluice_transactions_ended_total",
            "Transactions this broker's coordinator ended, by outcome.",
            "counter",
            &[
                (
                    "{result=\"commit\"}".to_string(),
                    txns.committed.load(Ordering::Relaxed),
                ),
                (
                    "{result=\"abort\"}".to_string(),
                    txns.aborted.load(Ordering::Relaxed),
                ),
            ],
        );
        page.one(
            "sluice_transactions_timed_out_total",
            "Transactions the coordinator aborted for running past transaction.timeout.ms.",
            "counter",
            txns.timed_out.load(Ordering::Relaxed),
        );
        page.one(
            "sluice_transactions_open",
            "Transactions open (Ongoing) in the transactional ids coordinated here.",
            "gauge",
            state.txns.open_count() as u64,
        );
        let totals = state.log.cleaner_totals();
        for (name, help, value) in [
            (
                "sluice_log_cleaner_passes_total",
                "Log cleaner passes completed.",
                totals.passes,
            ),
            (
                "sluice_log_cleaner_failures_total",
                "Log cleaner passes that failed.",
                totals.failures,
            ),
            (
                "sluice_log_cleaner_bytes_read_total",
                "Bytes the log cleaner read.",
                totals.bytes_read,
            ),
            (
                "sluice_log_cleaner_bytes_written_total",
                "Bytes the log cleaner wrote.",
                totals.bytes_written,
            ),
            (
                "sluice_log_cleaner_records_removed_total",
                "Records compaction removed.",
                totals.records_removed,
            ),
        ] {
            page.one(name, help, "counter", value);
        }
        let mut offline = 0u64;
        let mut dirty = Vec::new();
        let mut last_run = Vec::new();
        let mut last_duration = Vec::new();
        let mut last_read = Vec::new();
        let mut last_written = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut sizes = Vec::new();
        for (topic, count) in state.log.topics() {
            for p in 0..count {
                let Some(part) = state.log.partition(&topic, p) else {
                    continue;
                };
                offline += u64::from(part.is_offline());
                let labels = format!("{{topic=\"{topic}\",partition=\"{p}\"}}");
                if part.config().cleanup_policy.compact {
                    // Per mille: the page's samples are integers.
                    let c = part.cleanable(sluice_log::now_ms());
                    dirty.push((labels.clone(), (c.dirty_ratio * 1000.0).round() as u64));
                    if let Some(last) = part.cleaner_status().last {
                        last_run.push((labels.clone(), (last.now_ms / 1000).max(0) as u64));
                        last_duration.push((labels.clone(), last.duration.as_millis() as u64));
                        last_read.push((labels.clone(), last.bytes_read));
                        last_written.push((labels.clone(), last.bytes_written));
                    }
                }
                starts.push((labels.clone(), part.log_start().max(0) as u64));
                ends.push((labels.clone(), part.log_end().max(0) as u64));
                sizes.push((labels, part.size_bytes()));
            }
        }
        page.one(
            "sluice_partitions_offline",
            "Partitions taking no appends after a write failed (not for lack of space).",
            "gauge",
            offline,
        );
        page.family(
            "sluice_log_cleaner_dirty_permille",
            "Compacted partitions: dirty bytes per thousand of the cleanable log.",
            "gauge",
            &dirty,
        );
        page.family(
            "sluice_log_cleaner_last_pass_seconds",
            "Compacted partitions: when the last cleaner pass ran (Unix seconds).",
            "gauge",
            &last_run,
        );
        page.family(
            "sluice_log_cleaner_last_pass_duration_ms",
            "Compacted partitions: how long the last cleaner pass took.",
            "gauge",
            &last_duration,
        );
        page.family(
            "sluice_log_cleaner_last_pass_bytes_read",
            "Compacted partitions: bytes the last cleaner pass read.",
            "gauge",
            &last_read,
        );
        page.family(
            "sluice_log_cleaner_last_pass_bytes_written",
            "Compacted partitions: bytes the last cleaner pass wrote (over bytes read: its ratio).",
            "gauge",
            &last_written,
        );
        page.family(
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            "gauge",
            &starts,
        );
        page.family(
            "sluice_partition_log_end_offset",
            "Offset the next appended record gets.",
            "gauge",
            &ends,
        );
        page.family(
            "sluice_partition_size_bytes",
            "Bytes of the partition's segments.",
            "gauge",
            &sizes,
        );
        let mut by_state = std::collections::BTreeMap::new();
        for (_, _, group_state) in state.groups.list() {
            *by_state.entry(group_state.name()).or_insert(0u64) += 1;
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
        page.family(
            "sluice_groups",
            "Consumer groups by state.",
            "gauge",
            &groups,
        );
        if let Some(c) = state.cluster() {
            cluster_metrics(c, state.config.data_path, &mut page);
        }
        body
    }

    /// Joins the cluster named in the config (nothing for a single-node
    /// broker): registers in etcd, takes up partition roles, and keeps the
    /// high watermarks checkpointed (`replication-offset-checkpoint`).
    pub async fn join_cluster(&self) -> io::Result<()> {
        self.state.join_cluster().await?;
        if self.state.cluster().is_some() {
            let log = self.state.log.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let log = log.clone();
                    match tokio::task::spawn_blocking(move || log.write_hw_checkpoint()).await {
                        Ok(Err(e)) => tracing::warn!("writing the high-watermark checkpoint: {e}"),
                        Err(_) => return,
                        Ok(Ok(())) => {}
                    }
                }
            });
        }
        Ok(())
    }

    /// Kafka's controlled shutdown, before the listener closes: the
    /// controller moves this broker's leaderships and ISR places to other
    /// in-sync replicas while it still answers (clients get
    /// NOT_LEADER_OR_FOLLOWER and refresh metadata). Waits up to 30 s; a
    /// partition with no other in-sync replica keeps its leader.
    pub async fn controlled_shutdown(&self) {
        let Some(c) = self.state.cluster() else {
            return;
        };
        let started = std::time::Instant::now();
        match c.cluster.controlled_shutdown(Duration::from_secs(30)).await {
            Ok(0) => tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships moved"
            ),
            Ok(left) => tracing::warn!(
                left,
                "controlled shutdown: partitions still led or needed here after 30 s"
            ),
            Err(e) => tracing::warn!("controlled shutdown: {e}; leaving without it"),
        }
    }

    /// Leaves the cluster: fetchers stop, the registration's lease is
    /// revoked (the controller moves leadership at once instead of after
    /// the lease runs out).
    pub async fn leave_cluster(&self) {
        if let Some(c) = self.state.cluster() {
            c.replicas.stop();
            c.cluster.shutdown().await;
        }
    }

    /// Clean shutdown of the log: flush, seal, marker.
    pub fn close(&self) -> io::Result<()> {
        // The cleaner first: no pass then races the partitions' close.
        self.state.stop_cleaner();
        if self.state.cluster().is_some() {
            self.state.log.write_hw_checkpoint()?;
        }
        self.state.log.close()
    }
}

/// The replication and etcd figures of a cluster broker.
fn cluster_metrics(c: &crate::state::InCluster, path: sluice_io::DataPath, page: &mut Page<'_>) {
    let r = &c.replicas;
    // Followers are served by the consumers' Fetch path: the configured
    // data path (its bytes through user space are in the data-path
    // counters above).
    page.family(
        "sluice_cluster_follower_fetch_bytes_total",
        "Record bytes followers fetched from this leader, by the data path that sent them.",
        "counter",
        &[(
            format!("{{path=\"{path}\"}}"),
            r.stats.follower_fetch_bytes.load(Ordering::Relaxed),
        )],
    );
    // etcd, the controller and the registration (cluster/stats.rs).
    c.cluster.metrics().prometheus(page);
    page.one(
        "sluice_cluster_under_replicated_partitions",
        "Partitions this broker leads whose ISR is smaller than their replica set.",
        "gauge",
        r.under_replicated() as u64,
    );
    for (name, help, v) in [
        (
            "sluice_cluster_isr_shrinks_total",
            "ISR shrinks this broker (as leader) had written.",
            &r.stats.isr_shrinks,
        ),
        (
            "sluice_cluster_isr_expands_total",
            "ISR expansions this broker (as leader) had written.",
            &r.stats.isr_expands,
        ),
        (
            "sluice_cluster_replica_fetched_bytes_total",
            "Record bytes this broker fetched as a follower.",
            &r.stats.replica_fetched_bytes,
        ),
        (
            "sluice_cluster_truncations_total",
            "Times a replica here cut a diverged or out-of-range tail.",
            &r.stats.truncations,
        ),
        (
            "sluice_cluster_leader_elections_total",
            "Partitions this broker took the leadership of.",
            &r.stats.leader_elections_seen,
        ),
    ] {
        page.one(name, help, "counter", v.load(Ordering::Relaxed));
    }
    let lag = r.follower_lag();
    let messages: Vec<(String, u64)> = lag
        .iter()
        .map(|(t, p, f, m, _)| {
            (
                format!("{{topic=\"{t}\",partition=\"{p}\",follower=\"{f}\"}}"),
                *m as u64,
            )
        })
        .collect();
    let millis: Vec<(String, u64)> = lag
        .iter()
        .map(|(t, p, f, _, ms)| {
            (
                format!("{{topic=\"{t}\",partition=\"{p}\",follower=\"{f}\"}}"),
                *ms,
            )
        })
        .collect();
    page.family(
        "sluice_cluster_replica_lag_messages",
        "Records a follower is behind this leader's log end.",
        "gauge",
        &messages,
    );
    page.family(
        "sluice_cluster_replica_lag_ms",
        "Milliseconds since a follower last had everything this leader had.",
        "gauge",
        &millis,
    );
    let hws: Vec<(String, u64)> = r
        .all()
        .iter()
        .map(|rep| {
            (
                format!("{{topic=\"{}\",partition=\"{}\"}}", rep.topic, rep.index),
                rep.log.high_watermark().max(0) as u64,
            )
        })
        .collect();
    page.family(
        "sluice_partition_high_watermark",
        "Offset below which records are replicated to the whole ISR (what consumers see).",
        "gauge",
        &hws,
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
