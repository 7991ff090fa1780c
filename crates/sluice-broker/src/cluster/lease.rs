//! This broker's registration: `brokers/<id>` under a lease kept alive every
//! TTL/3, re-registered under a new lease (a new incarnation) when the old
//! one is found gone, and the lease confirmation `acks=all` relies on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::etcd::EtcdError;
use super::model::BrokerInfo;

/// How long `confirm_lease` waits for a fresh keepalive round trip.
pub(crate) const CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// The lease as the keepalive task last knew it.
#[derive(Debug, Clone)]
pub(crate) struct LeaseState {
    /// The lease the registration is under.
    pub(crate) id: i64,
    /// Its TTL as granted.
    pub(crate) ttl: Duration,
    /// Bumped by every (re-)registration.
    pub(crate) generation: u64,
    /// The revision of the registration's write.
    pub(crate) incarnation: i64,
    /// When the latest keepalive etcd answered with a live lease was sent.
    pub(crate) confirmed: Option<Instant>,
    /// The lease is known gone and a new registration is under way.
    pub(crate) lost: bool,
    /// The latest attempt to reach etcd failed to connect, at this time
    /// (cleared by any answer).
    pub(crate) unreachable: Option<Instant>,
    /// The first failed attempt since etcd last answered: when etcd became
    /// unreachable (cleared by any answer).
    pub(crate) unreachable_since: Option<Instant>,
}

/// The TTL in whole seconds (etcd's unit), at least 1.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Grants a lease and writes `brokers/<id>` under it, replacing the key of
/// a previous incarnation whose lease has not expired yet.
pub(crate) async fn register(shared: &Shared, generation: u64) -> Result<LeaseState, EtcdError> {
    let etcd = &shared.etcd;
    let sent = Instant::now();
    let (id, granted) = etcd.grant(ttl_secs(shared.cfg.lease_ttl)).await?;
    let info = BrokerInfo {
        id: shared.node_id,
        host: shared.host.clone(),
        port: shared.port,
        rack: shared.cfg.rack.clone(),
        // Readers take the key's mod_revision; this is for humans.
        incarnation: now_ms(),
        listeners: shared.listeners.clone(),
    };
    let value = serde_json::to_vec(&info).map_err(|e| EtcdError::Other(e.to_string()))?;
    let key = etcd.keys.broker(shared.node_id);
    let mut resp = match etcd.put(&key, value, id).await {
        Ok(resp) => resp,
        Err(e) => {
            let _ = etcd.revoke(id).await;
            return Err(e);
        }
    };
    if let Some(prev) = resp.take_prev_key()
        && prev.lease() != id
    {
        tracing::info!(
            "broker {} replaced its previous registration (lease {:x}, revision {})",
            shared.node_id,
            prev.lease(),
            prev.mod_revision()
        );
    }
    let incarnation = resp.header().map_or(0, |h| h.revision());
    etcd.stats().registrations.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        "broker {} registered in etcd (lease {id:x}, ttl {granted} s, incarnation {incarnation})",
        shared.node_id
    );
    Ok(LeaseState {
        id,
        ttl: Duration::from_secs(u64::try_from(granted.max(1)).unwrap_or(1)),
        generation,
        incarnation,
        confirmed: Some(sent),
        lost: false,
        unreachable: None,
        unreachable_since: None,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why one keepalive stream ended.
enum Ended {
    Stopped,
    Lost,
    Broken,
}

/// Keeps the lease alive for as long as the cluster runs; re-registers when
/// it is lost.
pub(crate) async fn keepalive_loop(shared: Arc<Shared>) {
    let mut backoff = super::Backoff::new();
    loop {
        let state = shared.lease.borrow().clone();
        let ended = if state.lost {
            Ended::Lost
        } else {
            let sent = Instant::now();
            let wait = (state.ttl / 3).max(Duration::from_millis(500));
            match shared.etcd.keep_alive(state.id, wait).await {
                Ok((keeper, stream)) => {
                    shared.lease.send_modify(|s| {
                        s.confirmed = Some(s.confirmed.map_or(sent, |c| c.max(sent)));
                        s.unreachable = None;
                        s.unreachable_since = None;
                    });
                    let ended = run_stream(&shared, &state, keeper, stream).await;
                    if sent.elapsed() > Duration::from_secs(1) {
                        backoff.reset();
                    } else if matches!(ended, Ended::Broken) && !shared.sleep(backoff.next()).await
                    {
                        // A stream that breaks at once: do not spin.
                        return;
                    }
                    ended
                }
                Err(EtcdError::LeaseNotFound) => Ended::Lost,
                Err(e) => {
                    tracing::debug!("lease keepalive could not start: {e}");
                    if matches!(e, EtcdError::Unreachable(_)) {
                        shared.lease.send_modify(|s| {
                            let now = Instant::now();
                            s.unreachable = Some(now);
                            s.unreachable_since.get_or_insert(now);
                        });
                    }
                    // Wait, unless a lease confirmation asks for a try now.
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next()) => {}
                        () = shared.kick.notified() => {}
                        () = shared.stopped() => return,
                    }
                    continue;
                }
            }
        };
        match ended {
            Ended::Stopped => return,
            Ended::Broken => continue,
            Ended::Lost => {
                if !state.lost {
                    shared
                        .etcd
                        .stats()
                        .lease_losses
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "broker {}: lease {:x} is gone; registering again",
                        shared.node_id,
                        state.id
                    );
                    shared.lease.send_modify(|s| {
                        s.lost = true;
                        s.confirmed = None;
                    });
                }
                let generation = state.generation + 1;
                match register(&shared, generation).await {
                    Ok(new) => {
                        backoff.reset();
                        shared.lease.send_replace(new);
                    }
                    Err(e) => {
                        tracing::debug!("registering again failed: {e}");
                        if matches!(e, EtcdError::Unreachable(_)) {
                            shared.lease.send_modify(|s| {
                                let now = Instant::now();
                                s.unreachable = Some(now);
                                s.unreachable_since.get_or_insert(now);
                            });
                        }
                        if !shared.sleep(backoff.next()).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Sends a keepalive every TTL/3 (and whenever a confirmation asks) and
/// records, for each live answer, when its request was sent.
async fn run_stream(
    shared: &Shared,
    state: &super::lease::LeaseState,
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
) -> Ended {
    let period = (state.ttl / 3).max(Duration::from_millis(100));
    // An answer slower than this means the stream is dead.
    let patience = period.max(Duration::from_millis(500));
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let overdue = pending
            .front()
            .map(|sent| tokio::time::Instant::from_std(*sent + patience));
        let send = tokio::select! {
            () = tokio::time::sleep_until(next) => true,
            () = shared.kick.notified() => true,
            () = async {
                match overdue {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::debug!("lease keepalive unanswered for {patience:?}; reconnecting");
                return Ended::Broken;
            }
            message = stream.message() => {
                match message {
                    Ok(Some(resp)) if resp.ttl() > 0 => {
                        shared.etcd.mark_up();
                        let sent = pending.pop_front();
                        shared.lease.send_modify(|s| {
                            if let Some(sent) = sent {
                                s.confirmed = Some(s.confirmed.map_or(sent, |c| c.max(sent)));
                            }
                            s.unreachable = None;
                        s.unreachable_since = None;
                        });
                        false
                    }
                    Ok(Some(_)) => return Ended::Lost,
                    Ok(None) => return Ended::Broken,
                    Err(e) => {
                        let e = shared.etcd.stream_error(&e);
                        tracing::debug!("lease keepalive stream failed: {e}");
                        return Ended::Broken;
                    }
                }
            }
            () = shared.stopped() => return Ended::Stopped,
        };
        if send {
            let now = Instant::now();
            if keeper.keep_alive().await.is_err() {
                return Ended::Broken;
            }
            shared
                .etcd
                .stats()
                .etcd_requests
                .fetch_add(1, Ordering::Relaxed);
            pending.push_back(now);
            next = tokio::time::Instant::now() + period;
        }
    }
}
