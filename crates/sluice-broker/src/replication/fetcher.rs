//! Follower fetchers: one thread per leader broker, fetching every
//! partition this broker follows from that leader in one Fetch request
//! (Kafka's `ReplicaFetcherThread`).
//!
//! A thread, not a task: appending fetched batches and truncating write to
//! disk, and a leader that stops answering (paused, unreachable) only holds
//! up its own thread, never the partitions that moved to another leader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use sluice_client::security::ClientSecurity;
use sluice_client::{Client, topic_name};

use super::{Replica, Replicas, Role, TopicPartition};

/// Fetch version followers speak: replica id in the request, the last
/// fetched epoch per partition and DivergingEpoch in the answer (KIP-595).
const FETCH_VERSION: i16 = 12;
/// Bytes one fetch may bring per partition and in all.
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const MAX_BYTES: i32 = 16 * 1024 * 1024;

/// A partition a fetcher thread replicates.
struct Following {
    replica: Arc<Replica>,
    epoch: i32,
    /// Not fetched before this (after an error the metadata will fix).
    delay_until: Option<Instant>,
}

struct FetcherThread {
    leader: i32,
    addr: Mutex<Option<String>>,
    parts: Mutex<HashMap<TopicPartition, Following>>,
    /// Bumped when a partition is added: a long-poll in flight without it
    /// is abandoned, so a new leadership is replicated at once rather than
    /// after `replica.fetch.wait.max.ms` (an `acks=all` write or a group's
    /// commit waits on it).
    added: AtomicU64,
    stop: AtomicBool,
}

/// The follower fetchers, by leader broker id.
pub struct Fetchers {
    node_id: i32,
    wait: Duration,
    /// How this broker connects to leaders (the inter-broker listener's
    /// protocol and credentials).
    security: Arc<ClientSecurity>,
    threads: Mutex<HashMap<i32, Arc<FetcherThread>>>,
}

impl Fetchers {
    pub fn new(node_id: i32, wait: Duration, security: ClientSecurity) -> Fetchers {
        Fetchers {
            node_id,
            wait,
            security: Arc::new(security),
            threads: Mutex::new(HashMap::new()),
        }
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<FetcherThread>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replicates `replica` from `leader` at `epoch` from now on.
    pub fn follow(
        &self,
        replicas: Arc<Replicas>,
        replica: Arc<Replica>,
        leader: i32,
        addr: Option<String>,
        epoch: i32,
    ) {
        let tp = (replica.topic.clone(), replica.index);
        self.remove(&tp);
        let mut threads = self.threads();
        let thread = threads
            .entry(leader)
            .or_insert_with(|| {
                let t = Arc::new(FetcherThread {
                    leader,
                    addr: Mutex::new(None),
                    parts: Mutex::new(HashMap::new()),
                    added: AtomicU64::new(0),
                    stop: AtomicBool::new(false),
                });
                let run = t.clone();
                let weak = Arc::downgrade(&replicas);
                let (node_id, wait) = (self.node_id, self.wait);
                let security = self.security.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name(format!("sluice-fetch-{leader}"))
                    .spawn(move || run.run(weak, node_id, wait, &security))
                {
                    tracing::error!(leader, "starting a fetcher thread: {e}");
                }
                t
            })
            .clone();
        drop(threads);
        if let Some(a) = addr {
            *thread.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
        }
        thread
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                tp,
                Following {
                    replica,
                    epoch,
                    delay_until: None,
                },
            );
        thread.added.fetch_add(1, Ordering::Release);
    }

    /// Stops replicating a partition (it is led here now, or gone).
    pub fn remove(&self, tp: &TopicPartition) {
        for t in self.threads().values() {
            t.parts.lock().unwrap_or_else(|e| e.into_inner()).remove(tp);
        }
    }

    pub fn update_address(&self, leader: i32, addr: String) {
        if let Some(t) = self.threads().get(&leader) {
            let mut a = t.addr.lock().unwrap_or_else(|e| e.into_inner());
            if a.as_deref() != Some(addr.as_str()) {
                *a = Some(addr);
            }
        }
    }

    pub fn stop_all(&self) {
        for t in self.threads().values() {
            t.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl FetcherThread {
    fn run(
        self: Arc<Self>,
        replicas: Weak<Replicas>,
        node_id: i32,
        wait: Duration,
        security: &ClientSecurity,
    ) {
        let mut client: Option<(String, Client)> = None;
        let mut last_error_log: Option<Instant> = None;
        let mut rotation = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(replicas) = replicas.upgrade() else {
                return;
            };
            let now = Instant::now();
            let (mut ready, next_due): (Vec<(TopicPartition, Arc<Replica>, i32)>, _) = {
                let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
                (
                    parts
                        .iter()
                        .filter(|(_, f)| f.delay_until.is_none_or(|d| d <= now))
                        .map(|(tp, f)| (tp.clone(), f.replica.clone(), f.epoch))
                        .collect(),
                    parts
                        .values()
                        .filter_map(|f| f.delay_until)
                        .filter(|d| *d > now)
                        .min(),
                )
            };
            // A partition held back (its last fetch was refused, say by a
            // new leader that had not taken over yet) rejoins when its delay
            // ends, not after a long-poll of the others: the leader answers
            // this request by then.
            let wait_now =
                next_due.map_or(wait, |d| wait.min(d - now).max(Duration::from_millis(1)));
            // Each request starts at the next partition, so under a full
            // byte budget none is left at the end of every answer (Kafka
            // moves fetched partitions to the back).
            ready.sort_by(|a, b| a.0.cmp(&b.0));
            if !ready.is_empty() {
                let by = rotation % ready.len();
                ready.rotate_left(by);
                rotation = rotation.wrapping_add(1);
            }
            if ready.is_empty() {
                drop(replicas);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let addr = self
                .addr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .or_else(|| replicas.broker_address(self.leader));
            let Some(addr) = addr else {
                drop(replicas);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            if client.as_ref().is_some_and(|(a, _)| *a != addr) {
                client = None;
            }
            if client.is_none() {
                match connect(&addr, wait, security) {
                    Ok(c) => client = Some((addr.clone(), c)),
                    Err(e) => {
                        log_rarely(
                            &mut last_error_log,
                            || tracing::warn!(leader = self.leader, %addr, "connecting to the leader: {e}"),
                        );
                        drop(replicas);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
            let request = fetch_request(node_id, wait_now, &ready);
            let Some((_, c)) = client.as_mut() else {
                continue;
            };
            let added = self.added.load(Ordering::Acquire);
            let answered = c.send(FETCH_VERSION, &request).and_then(|correlation| {
                // Parked at the leader: look up every 20 ms for a partition
                // added meanwhile (then drop this poll and ask again with it).
                loop {
                    if c.readable_within(Duration::from_millis(20))? {
                        return c
                            .read_response::<FetchRequest>(FETCH_VERSION, correlation)
                            .map(Some);
                    }
                    if self.added.load(Ordering::Acquire) != added
                        || self.stop.load(Ordering::Relaxed)
                    {
                        return Ok(None);
                    }
                }
            });
            let response = match answered {
                Ok(Some(r)) => r,
                Ok(None) => {
                    client = None;
                    continue;
                }
                Err(e) => {
                    log_rarely(&mut last_error_log, || {
                        tracing::warn!(leader = self.leader, "fetching from the leader: {e}")
                    });
                    client = None;
                    drop(replicas);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if response.error_code != 0 {
                tracing::warn!(
                    leader = self.leader,
                    code = response.error_code,
                    "fetch refused"
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            for topic in response.responses {
                let name = topic.topic.0.to_string();
                for p in topic.partitions {
                    let tp = (name.clone(), p.partition_index);
                    let Some((_, replica, epoch)) = ready.iter().find(|(t, _, _)| *t == tp) else {
                        continue;
                    };
                    let delay = self.handle(&replicas, replica, *epoch, p);
                    if let Some(d) = delay
                        && let Some(f) = self
                            .parts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_mut(&tp)
                    {
                        f.delay_until = Some(Instant::now() + d);
                    }
                }
            }
        }
    }

    /// Applies one partition's answer: appends its batches, truncates a
    /// diverged tail, takes the leader's high watermark. Returns how long
    /// to wait before fetching it again after an error.
    fn handle(
        &self,
        replicas: &Replicas,
        replica: &Replica,
        epoch: i32,
        p: kafka_protocol::messages::fetch_response::PartitionData,
    ) -> Option<Duration> {
        // The log changes only while this broker still follows this leader
        // at this epoch: the transition lock is held across the change, so
        // the replica cannot become a leader (and take appends) half-way.
        let transition = replica.transition();
        match &*replica.role() {
            Role::Follower { leader, epoch: e } if *leader == self.leader && *e == epoch => {}
            _ => return None,
        }
        let log = &replica.log;
        let code = p.error_code;
        if code == ResponseError::OffsetOutOfRange.code() {
            // Behind the leader's log start: start over there. Ahead of
            // its end (an unclean election): cut back to it.
            let result = if log.log_end() < p.log_start_offset {
                log.truncate_fully_and_start_at(p.log_start_offset)
                    .map(|()| p.log_start_offset)
            } else {
                log.truncate_to(p.high_watermark.max(0))
            };
            match result {
                Ok(end) => {
                    replicas.stats.truncations.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %replica.topic, partition = replica.index, end,
                        "out of range at the leader; log reset");
                }
                Err(e) => {
                    tracing::error!(topic = %replica.topic, partition = replica.index,
                        "resetting the log: {e}");
                    return Some(Duration::from_secs(1));
                }
            }
            return None;
        }
        if code != 0 {
            // Not (or no longer) the leader, or an epoch the leader does not
            // know yet: the cluster state will tell us where to go.
            return Some(Duration::from_millis(
                if code == ResponseError::UnknownLeaderEpoch.code() {
                    50
                } else {
                    200
                },
            ));
        }
        let diverging = p.diverging_epoch.epoch >= 0 || p.diverging_epoch.end_offset >= 0;
        if diverging {
            let target =
                truncation_offset(log, p.diverging_epoch.epoch, p.diverging_epoch.end_offset);
            let before = (log.log_end(), log.latest_epoch());
            match log.truncate_to(target) {
                Ok(end) if (end, log.latest_epoch()) == before => {
                    // Nothing moved: fetching again at once would get the
                    // same answer. Wait, and say so.
                    tracing::warn!(topic = %replica.topic, partition = replica.index,
                        diverging_epoch = p.diverging_epoch.epoch,
                        leader_end = p.diverging_epoch.end_offset, end,
                        latest_epoch = ?before.1,
                        "the leader reports a diverged log, but truncating changes nothing");
                    return Some(Duration::from_secs(1));
                }
                Ok(end) => {
                    replicas.stats.truncations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(topic = %replica.topic, partition = replica.index,
                        diverging_epoch = p.diverging_epoch.epoch,
                        leader_end = p.diverging_epoch.end_offset, end,
                        "truncated a diverged tail");
                }
                Err(e) => {
                    tracing::error!(topic = %replica.topic, partition = replica.index,
                        "truncating: {e}");
                    return Some(Duration::from_secs(1));
                }
            }
            return None;
        }
        if let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) {
            match log.append_replicated(records) {
                Ok(info) => {
                    if info.batches > 0 {
                        replicas
                            .stats
                            .replica_fetched_bytes
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %replica.topic, partition = replica.index,
                        "appending fetched batches: {e}");
                    return Some(Duration::from_secs(1));
                }
            }
        }
        let hw = p.high_watermark.min(log.log_end());
        if hw > log.high_watermark() || hw < log.high_watermark() && hw >= 0 {
            log.set_high_watermark(hw);
            drop(transition);
            replica.publish_hw();
        }
        None
    }
}

/// Where a follower cuts its log given the leader's DivergingEpoch (Kafka's
/// `getOffsetTruncationState`): to the leader's end of that epoch, or, when
/// this replica has not seen that epoch, to the end of the largest epoch it
/// has below it (the next fetch then narrows it further).
fn truncation_offset(log: &sluice_log::Partition, leader_epoch: i32, leader_end: i64) -> i64 {
    let end = log.log_end();
    if leader_epoch < 0 {
        // The leader knows no such epoch: nothing past what it made visible.
        return log.high_watermark().min(end);
    }
    let (epoch, own_end) = log.end_offset_for_epoch(leader_epoch);
    if epoch < 0 {
        return leader_end.min(end);
    }
    if epoch != leader_epoch {
        return own_end.min(end);
    }
    own_end.min(leader_end).min(end)
}

fn fetch_request(
    node_id: i32,
    wait: Duration,
    ready: &[(TopicPartition, Arc<Replica>, i32)],
) -> FetchRequest {
    let mut by_topic: Vec<FetchTopic> = Vec::new();
    for ((topic, index), replica, epoch) in ready {
        let mut fp = FetchPartition::default();
        fp.partition = *index;
        fp.current_leader_epoch = *epoch;
        fp.fetch_offset = replica.log.log_end();
        fp.last_fetched_epoch = replica.log.latest_epoch().unwrap_or(-1);
        fp.log_start_offset = replica.log.log_start();
        fp.partition_max_bytes = PARTITION_MAX_BYTES;
        match by_topic.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(fp),
            None => {
                let mut t = FetchTopic::default();
                t.topic = topic_name(topic);
                t.partitions.push(fp);
                by_topic.push(t);
            }
        }
    }
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(node_id);
    r.max_wait_ms = wait.as_millis() as i32;
    r.min_bytes = 1;
    r.max_bytes = MAX_BYTES;
    r.isolation_level = 0;
    r.session_id = 0;
    r.session_epoch = -1;
    r.topics = by_topic;
    r
}

/// A connection to a leader whose reads give up a little after the longest
/// a fetch may wait there (a paused leader must not hold the thread long).
fn connect(
    addr: &str,
    wait: Duration,
    security: &ClientSecurity,
) -> Result<Client, sluice_client::ClientError> {
    let c = Client::connect_secure(addr, security)?;
    c.set_read_timeout(wait + Duration::from_secs(3))?;
    Ok(c)
}

fn log_rarely(last: &mut Option<Instant>, f: impl FnOnce()) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
        *last = Some(Instant::now());
        f();
    }
}
