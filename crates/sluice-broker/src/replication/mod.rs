//! The data plane of a cluster: which partitions this broker leads or
//! follows, and Kafka's replication protocol between them.
//!
//! The metadata plane (`cluster`, etcd) says who leads each partition at
//! which leader epoch and who is in its ISR. This module acts on it:
//! - a leader tracks each follower's log end offset from its fetches,
//!   advances the high watermark to the smallest log end in the ISR, wakes
//!   `acks=all` producers and parked consumers when it moves, and asks the
//!   controller to shrink the ISR (a follower silent or behind for
//!   `replica.lag.time.max.ms`) or to grow it (a follower caught up);
//! - a follower fetches from its leader (`fetcher`) with the Fetch API and
//!   its broker id, appends the batches verbatim, truncates a diverged tail
//!   to the leader's epoch boundary (KIP-101/KIP-279, via the DivergingEpoch
//!   a Fetch answer carries, KIP-595), and takes its high watermark from the
//!   leader's answers.
//!
//! Record data, offsets and high watermarks never go to etcd.

mod fetcher;
mod leader;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use sluice_log::{Log, Partition};
use tokio::sync::{Notify, watch};

use crate::cluster::{Cluster, ClusterSnapshot, PartitionState, TopicInfo};
use crate::config::ClusterConfig;
pub use fetcher::Fetchers;
pub use leader::LeaderState;

/// Kafka error codes this module answers with.
const NONE: i16 = 0;

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A topic and partition index.
pub type TopicPartition = (String, i32);

/// What this broker is for one partition.
#[derive(Debug)]
pub enum Role {
    /// Leads it at `LeaderState::epoch`.
    Leader(LeaderState),
    /// Follows `leader` at `epoch`.
    Follower { leader: i32, epoch: i32 },
    /// Holds a replica but nobody leads it (`leader` -1), or the state
    /// names a leader epoch this broker cannot act on yet.
    Offline { epoch: i32 },
}

/// One local replica of a partition.
pub struct Replica {
    pub topic: String,
    pub index: i32,
    pub log: Arc<Partition>,
    role: Mutex<Role>,
    /// Held across a change of role and across a follower's append or
    /// truncation, so the log never changes under a role that no longer
    /// allows it; the role mutex itself is only ever held briefly (async
    /// workers take it).
    transition: Mutex<()>,
    /// The high watermark as last published; `acks=all` producers wait on
    /// it. Also sent (with the same value) when the role changes, so a
    /// waiter re-checks its leadership.
    hw: watch::Sender<i64>,
}

impl Replica {
    fn new(topic: &str, index: i32, log: Arc<Partition>) -> Replica {
        let (hw, _) = watch::channel(log.high_watermark());
        Replica {
            topic: topic.to_string(),
            index,
            log,
            role: Mutex::new(Role::Offline { epoch: -1 }),
            transition: Mutex::new(()),
            hw,
        }
    }

    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn transition(&self) -> std::sync::MutexGuard<'_, ()> {
        self.transition.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leader epoch this broker leads at, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.role() {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }

    /// The epoch of the current partition state this replica acts on.
    pub fn known_epoch(&self) -> i32 {
        match &*self.role() {
            Role::Leader(l) => l.epoch,
            Role::Follower { epoch, .. } | Role::Offline { epoch } => *epoch,
        }
    }

    /// Leader and ISR as this replica acts on them (Metadata answers from
    /// the etcd state instead; this is for metrics and tests).
    pub fn isr(&self) -> Option<Vec<i32>> {
        match &*self.role() {
            Role::Leader(l) => Some(l.isr.clone()),
            _ => None,
        }
    }

    fn wake(&self) {
        self.hw.send_modify(|_| {});
    }

    /// Publishes a new high watermark (already set on the log) to waiters.
    fn publish_hw(&self) {
        let hw = self.log.high_watermark();
        self.hw.send_if_modified(|v| {
            if *v != hw {
                *v = hw;
                true
            } else {
                false
            }
        });
    }
}

/// Replication's counters, shown on the metrics page.
#[derive(Default)]
pub struct ReplicationStats {
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// Record bytes followers fetched from this broker as leader.
    pub follower_fetch_bytes: AtomicU64,
    /// Record bytes this broker fetched as a follower.
    pub replica_fetched_bytes: AtomicU64,
    pub truncations: AtomicU64,
    pub leader_elections_seen: AtomicU64,
}

/// Every local replica and its role; the follower fetchers.
pub struct Replicas {
    pub node_id: i32,
    pub log: Arc<Log>,
    pub cluster: Arc<Cluster>,
    config: ClusterConfig,
    parts: RwLock<HashMap<TopicPartition, Arc<Replica>>>,
    fetchers: Fetchers,
    /// Woken when records become visible to consumers (a high watermark
    /// moved): parked Fetches re-check. Shared with the broker state.
    visible: Arc<Notify>,
    pub stats: ReplicationStats,
    /// Local topics seen in the cluster's state (deleted here when they
    /// leave it), and strays already warned about.
    seen_topics: Mutex<HashSet<String>>,
    stray_warned: Mutex<HashSet<String>>,
}

/// Why a request cannot be served here, as a Kafka error code.
pub type Refusal = i16;

impl Replicas {
    /// Starts acting on the cluster's state: creates local replicas, takes
    /// up roles, starts fetchers and the ISR upkeep.
    pub fn start(
        log: Arc<Log>,
        cluster: Arc<Cluster>,
        config: ClusterConfig,
        visible: Arc<Notify>,
    ) -> Arc<Replicas> {
        let node_id = cluster.node_id();
        let replicas = Arc::new(Replicas {
            node_id,
            fetchers: Fetchers::new(
                node_id,
                config.replica_fetch_wait_max,
                config.inter_broker_client.clone(),
            ),
            log,
            cluster: cluster.clone(),
            config,
            parts: RwLock::new(HashMap::new()),
            visible,
            stats: ReplicationStats::default(),
            seen_topics: Mutex::new(HashSet::new()),
            stray_warned: Mutex::new(HashSet::new()),
        });
        // Roles follow the watched state.
        let mut rx = cluster.subscribe();
        let weak = Arc::downgrade(&replicas);
        tokio::spawn(async move {
            loop {
                let snapshot = rx.borrow_and_update().clone();
                let Some(r) = weak.upgrade() else { return };
                let sync = r.clone();
                if let Err(e) =
                    tokio::task::spawn_blocking(move || sync.apply_snapshot(&snapshot)).await
                {
                    tracing::error!("applying the cluster state failed: {e}");
                }
                drop(r);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        // The ISR upkeep: followers that fell behind leave it.
        let weak = Arc::downgrade(&replicas);
        let every = (replicas.config.replica_lag_time_max / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                r.shrink_isrs();
            }
        });
        replicas
    }

    /// Stops the fetchers (the broker is shutting down).
    pub fn stop(&self) {
        self.fetchers.stop_all();
    }

    /// The local replica of a partition, if this broker holds one.
    pub fn replica(&self, topic: &str, index: i32) -> Option<Arc<Replica>> {
        self.parts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Every local replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.parts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Partitions this broker leads whose ISR is smaller than their replica
    /// set (Kafka's UnderReplicatedPartitions).
    pub fn under_replicated(&self) -> usize {
        self.all()
            .iter()
            .filter(|r| match &*r.role() {
                Role::Leader(l) => l.isr.len() < l.replicas.len(),
                _ => false,
            })
            .count()
    }

    /// The replica this broker leads for a produce or a consumer fetch, or
    /// the error a client expects: UNKNOWN_TOPIC_OR_PARTITION for a
    /// partition the cluster does not have, NOT_LEADER_OR_FOLLOWER for one
    /// led elsewhere (the client refreshes its metadata and moves on), and
    /// for a request naming a leader epoch (`current_leader_epoch`, -1 for
    /// none) FENCED_LEADER_EPOCH when it is older than ours and
    /// UNKNOWN_LEADER_EPOCH when newer (KIP-320).
    pub fn leader_replica(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<(Arc<Replica>, i32), Refusal> {
        let Some(replica) = self.replica(topic, index) else {
            let known = self
                .cluster
                .snapshot()
                .topics
                .get(topic)
                .is_some_and(|t| index >= 0 && (index as usize) < t.replicas.len());
            return Err(if known {
                code(ResponseError::NotLeaderOrFollower)
            } else {
                code(ResponseError::UnknownTopicOrPartition)
            });
        };
        let role = replica.role();
        let epoch = match &*role {
            Role::Leader(l) => l.epoch,
            Role::Follower { epoch, .. } | Role::Offline { epoch } => {
                if current_leader_epoch >= 0 && current_leader_epoch > *epoch {
                    return Err(code(ResponseError::UnknownLeaderEpoch));
                }
                return Err(code(ResponseError::NotLeaderOrFollower));
            }
        };
        drop(role);
        if current_leader_epoch >= 0 {
            if current_leader_epoch < epoch {
                return Err(code(ResponseError::FencedLeaderEpoch));
            }
            if current_leader_epoch > epoch {
                return Err(code(ResponseError::UnknownLeaderEpoch));
            }
        }
        Ok((replica, epoch))
    }

    /// `min.insync.replicas` of a topic (its override, else the broker's).
    pub fn min_insync(&self, topic: &str) -> usize {
        let overrides = self.log.topic_overrides(topic).unwrap_or_default();
        overrides
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    }

    /// Before a leader appends for `acks=all`: NOT_ENOUGH_REPLICAS when the
    /// ISR is smaller than `min.insync.replicas` (nothing is appended).
    pub fn check_enough_replicas(&self, replica: &Replica) -> Result<(), Refusal> {
        let isr = match &*replica.role() {
            Role::Leader(l) => l.isr.len(),
            _ => return Err(code(ResponseError::NotLeaderOrFollower)),
        };
        if isr < self.min_insync(&replica.topic) {
            return Err(code(ResponseError::NotEnoughReplicas));
        }
        Ok(())
    }

    /// After a leader appended: the high watermark may move (an ISR of one).
    pub fn leader_appended(&self, replica: &Replica) {
        let moved = match &mut *replica.role() {
            Role::Leader(l) => l.advance_hw(&replica.log),
            _ => false,
        };
        if moved {
            replica.publish_hw();
            self.visible.notify_waiters();
        }
    }

    /// `acks=all`: waits (woken by followers' fetches, no polling) until
    /// the high watermark passes `required_end`, while this broker still
    /// leads at `epoch`; then checks the ISR against `min.insync.replicas`
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND) and that this broker's etcd lease
    /// is alive (a leader that was paused past its lease has been replaced
    /// and must not acknowledge: NOT_LEADER_OR_FOLLOWER).
    pub async fn wait_replicated(
        &self,
        replica: &Arc<Replica>,
        epoch: i32,
        required_end: i64,
        timeout: Duration,
    ) -> i16 {
        let mut rx = replica.hw.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (isr, incarnation) = match &*replica.role() {
                Role::Leader(l) if l.epoch == epoch => (l.isr.len(), l.incarnation),
                _ => return code(ResponseError::NotLeaderOrFollower),
            };
            if replica.log.high_watermark() >= required_end {
                if isr < self.min_insync(&replica.topic) {
                    return code(ResponseError::NotEnoughReplicasAfterAppend);
                }
                return match self.cluster.confirm_incarnation(incarnation).await {
                    Ok(()) if replica.leader_epoch() == Some(epoch) => NONE,
                    Ok(()) => code(ResponseError::NotLeaderOrFollower),
                    Err(e) => {
                        tracing::warn!(topic = %replica.topic, partition = replica.index,
                            "not acknowledging: {e}");
                        code(ResponseError::NotLeaderOrFollower)
                    }
                };
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return code(ResponseError::NotLeaderOrFollower);
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return code(ResponseError::RequestTimedOut);
                }
            }
        }
    }

    /// A follower's Fetch reached this leader: its log end is `fetch_offset`
    /// (it has everything below). Advances the high watermark and grows the
    /// ISR when it caught up. Returns the high watermark to answer with.
    pub fn follower_fetched(
        self: &Arc<Self>,
        replica: &Arc<Replica>,
        follower: i32,
        fetch_offset: i64,
    ) -> i64 {
        let (moved, expand) = match &mut *replica.role() {
            Role::Leader(l) => {
                let expand = l.record_fetch(&replica.log, follower, fetch_offset);
                (l.advance_hw(&replica.log), expand)
            }
            _ => (false, None),
        };
        if moved {
            replica.publish_hw();
            self.visible.notify_waiters();
        }
        if let Some(proposal) = expand {
            self.propose_isr(replica.clone(), proposal, true);
        }
        replica.log.high_watermark()
    }

    /// Asks the controller for a new ISR, once at a time per partition.
    fn propose_isr(
        self: &Arc<Self>,
        replica: Arc<Replica>,
        proposal: leader::IsrProposal,
        grow: bool,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let result = me
                .cluster
                .alter_isr(
                    &replica.topic,
                    replica.index,
                    proposal.leader_epoch,
                    proposal.partition_epoch,
                    proposal.isr.clone(),
                )
                .await;
            let stat = if grow {
                &me.stats.isr_expands
            } else {
                &me.stats.isr_shrinks
            };
            match result {
                Ok(state) => {
                    if state.isr == proposal.isr {
                        stat.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(topic = %replica.topic, partition = replica.index,
                            isr = ?state.isr, "ISR changed");
                    }
                    me.apply_leader_state(&replica, &state);
                }
                Err(e) => {
                    tracing::warn!(topic = %replica.topic, partition = replica.index,
                        "ISR change {:?} failed: {e}", proposal.isr);
                }
            }
            if let Role::Leader(l) = &mut *replica.role() {
                l.isr_change_pending = false;
                l.pending_isr = None;
            }
        });
    }

    /// Followers out of sync for `replica.lag.time.max.ms` leave the ISR.
    fn shrink_isrs(self: &Arc<Self>) {
        let lag = self.config.replica_lag_time_max;
        let now = Instant::now();
        for replica in self.all() {
            let proposal = match &mut *replica.role() {
                Role::Leader(l) => l.shrink_proposal(now, lag),
                _ => None,
            };
            if let Some(p) = proposal {
                self.propose_isr(replica, p, false);
            }
        }
    }

    /// A newer state for a partition this broker leads (an ISR change
    /// written by the controller).
    fn apply_leader_state(&self, replica: &Replica, state: &PartitionState) {
        let moved = match &mut *replica.role() {
            Role::Leader(l) if l.epoch == state.leader_epoch => {
                l.update(state);
                l.advance_hw(&replica.log)
            }
            _ => false,
        };
        replica.wake();
        if moved {
            replica.publish_hw();
            self.visible.notify_waiters();
        }
    }

    /// Brings local replicas and roles in line with the cluster state.
    fn apply_snapshot(self: &Arc<Self>, snapshot: &ClusterSnapshot) {
        // A topic deleted from the cluster while this broker watched goes
        // from here too. One it never saw in the cluster (a data directory
        // from a single-node broker, or a topic deleted while this broker
        // was down) is left on disk with a warning, as Kafka leaves stray
        // logs: deleting data on a guess is not ours to do.
        if snapshot.revision > 0 {
            let mut seen = self.seen_topics.lock().unwrap_or_else(|e| e.into_inner());
            for (topic, _) in self.log.topics() {
                if snapshot.topics.contains_key(&topic) {
                    seen.insert(topic);
                } else if seen.remove(&topic) {
                    self.drop_topic(&topic);
                } else if self
                    .stray_warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(topic.clone())
                {
                    tracing::warn!(topic = %topic, "a local topic the cluster does not have; left on disk, not served");
                }
            }
        }
        // Replicas this broker no longer holds (a reassignment moved them):
        // stop acting on them and give their disk back.
        let gone: Vec<Arc<Replica>> = self
            .all()
            .into_iter()
            .filter(|r| {
                snapshot
                    .replicas(&r.topic, r.index)
                    .is_some_and(|rs| !rs.contains(&self.node_id))
            })
            .collect();
        for r in gone {
            self.drop_replica(&r);
        }
        for (name, topic) in &snapshot.topics {
            if !topic.replicas.iter().any(|r| r.contains(&self.node_id)) {
                if self.log.partition_count(name).is_some()
                    && self
                        .seen_topics
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(name)
                {
                    // Every replica of it here was moved away.
                    self.drop_topic(name);
                }
                continue;
            }
            if let Err(e) = self.ensure_local(topic) {
                tracing::error!(topic = %name, "creating the local replicas: {e}");
                continue;
            }
            self.seen_topics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone());
            for (index, replicas) in topic.replicas.iter().enumerate() {
                let index = index as i32;
                if !replicas.contains(&self.node_id) {
                    continue;
                }
                let Some(state) = snapshot.partitions.get(&(name.clone(), index)) else {
                    continue;
                };
                let Some(replica) = self.local(name, index) else {
                    continue;
                };
                self.apply_state(snapshot, &replica, replicas, state);
            }
        }
    }

    /// The local replica, created in the map on first use.
    fn local(&self, topic: &str, index: i32) -> Option<Arc<Replica>> {
        if let Some(r) = self.replica(topic, index) {
            return Some(r);
        }
        let log = self.log.partition(topic, u32::try_from(index).ok()?)?;
        // A replica with no checkpointed high watermark (new, or the
        // checkpoint was lost in a crash) starts it at its log start: what
        // it holds is not known to be replicated, and the leader's fetches
        // or its followers' bring it forward.
        if !log.is_high_watermark_managed() {
            log.set_high_watermark(0);
        }
        let mut parts = self.parts.write().unwrap_or_else(|e| e.into_inner());
        Some(
            parts
                .entry((topic.to_string(), index))
                .or_insert_with(|| Arc::new(Replica::new(topic, index, log)))
                .clone(),
        )
    }

    /// Creates the topic's log here (all its partitions, so indexes line
    /// up; those this broker holds no replica of stay empty) with the
    /// topic's configs, or adds partitions it gained, or applies changed
    /// configs.
    fn ensure_local(&self, topic: &TopicInfo) -> Result<(), String> {
        let want = topic.replicas.len() as u32;
        let overrides: sluice_log::TopicOverrides = topic.configs.clone();
        match self.log.partition_count(&topic.name) {
            None => match self.log.create_topic_with(&topic.name, want, &overrides) {
                Ok(()) | Err(sluice_log::TopicError::Exists(_)) => {}
                Err(e) => return Err(e.to_string()),
            },
            Some(have) => {
                if have < want {
                    self.log
                        .add_partitions(&topic.name, want)
                        .map_err(|e| e.to_string())?;
                }
                if self.log.topic_overrides(&topic.name).as_ref() != Some(&overrides) {
                    self.log
                        .alter_topic_config(&topic.name, &overrides)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Stops serving one partition here (a reassignment removed this
    /// broker from it) and empties its log, as Kafka's StopReplica with
    /// deletion does; the directory stays while the topic has partitions
    /// here (the log layer keeps topics whole).
    fn drop_replica(&self, r: &Arc<Replica>) {
        let tp = (r.topic.clone(), r.index);
        self.parts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tp);
        self.fetchers.remove(&tp);
        let _transition = r.transition();
        *r.role() = Role::Offline { epoch: -1 };
        r.wake();
        match r.log.truncate_fully_and_start_at(0) {
            Ok(()) => tracing::info!(topic = %tp.0, partition = tp.1,
                "no longer a replica: stopped, log emptied"),
            Err(e) => tracing::warn!(topic = %tp.0, partition = tp.1,
                "no longer a replica; emptying its log: {e}"),
        }
    }

    fn drop_topic(&self, topic: &str) {
        let gone: Vec<Arc<Replica>> = {
            let mut parts = self.parts.write().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<TopicPartition> =
                parts.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.iter().filter_map(|k| parts.remove(k)).collect()
        };
        for r in &gone {
            self.fetchers.remove(&(r.topic.clone(), r.index));
            let _transition = r.transition();
            *r.role() = Role::Offline { epoch: -1 };
            r.wake();
        }
        match self.log.delete_topic(topic) {
            Ok(()) => tracing::info!(topic, "deleted (gone from the cluster)"),
            Err(e) => tracing::warn!(topic, "deleting a topic gone from the cluster: {e}"),
        }
    }

    /// Takes up the role `state` gives this broker for one partition.
    fn apply_state(
        self: &Arc<Self>,
        snapshot: &ClusterSnapshot,
        replica: &Arc<Replica>,
        replicas: &[i32],
        state: &PartitionState,
    ) {
        let tp = (replica.topic.clone(), replica.index);
        let _transition = replica.transition();
        // A leadership written before this broker's current registration
        // was given to an earlier run of it (the controller has not seen
        // the restart yet, and will move it): leading from it would serve
        // whatever log survived here, and followers would cut their logs to
        // match. Wait for the controller's next word.
        let written = snapshot
            .partition_revisions
            .get(&tp)
            .copied()
            .unwrap_or(i64::MAX);
        if state.leader == self.node_id && written < self.cluster.incarnation() {
            let mut role = replica.role();
            if !matches!(&*role, Role::Offline { .. }) {
                *role = Role::Offline {
                    epoch: state.leader_epoch,
                };
                drop(role);
                self.fetchers.remove(&tp);
                replica.wake();
            }
            return;
        }
        if state.leader == self.node_id {
            let became = {
                let mut role = replica.role();
                match &mut *role {
                    Role::Leader(l) if l.epoch == state.leader_epoch => {
                        if l.replicas != replicas {
                            l.set_replicas(replicas);
                        }
                        if state.partition_epoch > l.partition_epoch {
                            // The ISR changed (a follower's broker died, or
                            // a change this leader asked for): the high
                            // watermark may move now that a member is gone.
                            l.update(state);
                            if l.advance_hw(&replica.log) {
                                drop(role);
                                replica.publish_hw();
                                self.visible.notify_waiters();
                            }
                        }
                        false
                    }
                    Role::Leader(l) if l.epoch > state.leader_epoch => false,
                    _ => true,
                }
            };
            if became {
                // Kafka's makeLeader: the new epoch starts at our log end,
                // recorded before anyone can see us lead (the transition
                // lock keeps the role as it is meanwhile), so a follower
                // asking where its older epoch ends gets the right boundary
                // even before we append.
                if let Err(e) = replica.log.assign_leader_epoch(state.leader_epoch) {
                    tracing::error!(topic = %tp.0, partition = tp.1,
                        "recording the new leader epoch: {e}");
                }
                *replica.role() = Role::Leader(LeaderState::new(
                    state,
                    replicas,
                    &replica.log,
                    self.cluster.incarnation(),
                ));
                self.fetchers.remove(&tp);
                self.stats
                    .leader_elections_seen
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(topic = %tp.0, partition = tp.1, epoch = state.leader_epoch,
                    isr = ?state.isr, "leading");
                self.leader_appended(replica);
            }
            replica.wake();
            return;
        }
        if state.leader < 0 {
            let mut role = replica.role();
            if !matches!(&*role, Role::Offline { epoch } if *epoch == state.leader_epoch) {
                *role = Role::Offline {
                    epoch: state.leader_epoch,
                };
                drop(role);
                self.fetchers.remove(&tp);
                replica.wake();
            }
            return;
        }
        let changed = {
            let mut role = replica.role();
            match &*role {
                Role::Follower { leader, epoch }
                    if *leader == state.leader && *epoch == state.leader_epoch =>
                {
                    false
                }
                Role::Leader(l) if l.epoch > state.leader_epoch => false,
                _ => {
                    *role = Role::Follower {
                        leader: state.leader,
                        epoch: state.leader_epoch,
                    };
                    true
                }
            }
        };
        if changed {
            tracing::info!(topic = %tp.0, partition = tp.1, leader = state.leader,
                epoch = state.leader_epoch, "following");
            replica.wake();
            let addr = snapshot
                .brokers
                .get(&state.leader)
                .map(|b| format!("{}:{}", b.host, b.port));
            self.fetchers.follow(
                self.clone(),
                replica.clone(),
                state.leader,
                addr,
                state.leader_epoch,
            );
        } else if let Some(b) = snapshot.brokers.get(&state.leader) {
            // The leader may have re-registered at a new address.
            self.fetchers
                .update_address(state.leader, format!("{}:{}", b.host, b.port));
        }
    }

    /// Brokers' addresses by id, for the fetchers.
    pub fn broker_address(&self, id: i32) -> Option<String> {
        self.cluster
            .snapshot()
            .brokers
            .get(&id)
            .map(|b| format!("{}:{}", b.host, b.port))
    }

    /// Follower lag per partition this broker leads: (topic, partition,
    /// follower, messages behind, ms since caught up).
    pub fn follower_lag(&self) -> Vec<(String, i32, i32, i64, u64)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for r in self.all() {
            if let Role::Leader(l) = &*r.role() {
                let end = r.log.log_end();
                for (id, p) in &l.followers {
                    out.push((
                        r.topic.clone(),
                        r.index,
                        *id,
                        (end - p.leo.max(0)).max(0),
                        now.saturating_duration_since(p.last_caught_up).as_millis() as u64,
                    ));
                }
            }
        }
        out
    }

    /// Replicas this broker follows, by leader (for tests and metrics).
    pub fn following(&self) -> BTreeMap<i32, HashSet<TopicPartition>> {
        let mut out: BTreeMap<i32, HashSet<TopicPartition>> = BTreeMap::new();
        for r in self.all() {
            if let Role::Follower { leader, .. } = &*r.role() {
                out.entry(*leader)
                    .or_default()
                    .insert((r.topic.clone(), r.index));
            }
        }
        out
    }
}
