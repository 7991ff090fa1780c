//! Where a group is coordinated, and the durable writes of its offsets.
//!
//! A group's coordinator is the leader of its `__consumer_offsets`
//! partition (Kafka's design). On one node that is always this broker; in a
//! cluster it is whoever etcd names leader, and the offsets follow the
//! partition through replication, so a coordinator's death loses no
//! acknowledged commit. The topic is created on first use: on one node
//! here and now, in a cluster through the controller with
//! `offsets.topic.replication.factor` replicas (refused, as Kafka refuses
//! it, while fewer brokers are alive).
//!
//! A broker that becomes leader of one of those partitions reads it whole
//! before serving its groups (requests meanwhile get
//! COORDINATOR_LOAD_IN_PROGRESS); one that stops leading it forgets its
//! offsets and its groups' membership, whose members find the new
//! coordinator and rejoin there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use sluice_log::{AppendError, FlushPolicy, Partition, TopicError};

use crate::coordinator::offsets::{self, LoadState, OFFSETS_TOPIC};
use crate::coordinator::transactions::{self, TRANSACTION_TOPIC, TxnMetadata};
use crate::replication::Replica;
use crate::state::{BrokerState, offsets_topic_configs, transaction_topic_configs};

pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = E::CoordinatorLoadInProgress.code();

/// The internal topics whose partition leaders coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `__consumer_offsets`: consumer groups and their offsets.
    Offsets,
    /// `__transaction_state`: transactional ids.
    Transactions,
}

impl Internal {
    pub fn topic(self) -> &'static str {
        match self {
            Internal::Offsets => OFFSETS_TOPIC,
            Internal::Transactions => TRANSACTION_TOPIC,
        }
    }

    pub fn partitions(self, state: &BrokerState) -> u32 {
        match self {
            Internal::Offsets => state.offsets.partitions(),
            Internal::Transactions => state.txns.partitions(),
        }
    }

    pub fn partition_for(self, state: &BrokerState, key: &str) -> i32 {
        offsets::partition_for(key, self.partitions(state))
    }

    fn replication_factor(self, state: &BrokerState) -> i16 {
        match self {
            Internal::Offsets => state.config.offsets_topic_replication_factor,
            Internal::Transactions => state.config.transaction_state_log_replication_factor,
        }
    }

    fn configs(self, replication_factor: i16) -> std::collections::BTreeMap<String, String> {
        match self {
            Internal::Offsets => offsets_topic_configs(),
            Internal::Transactions => transaction_topic_configs(replication_factor),
        }
    }

    /// One creation of each topic at a time.
    fn creating(self) -> &'static AtomicBool {
        static OFFSETS: AtomicBool = AtomicBool::new(false);
        static TRANSACTIONS: AtomicBool = AtomicBool::new(false);
        match self {
            Internal::Offsets => &OFFSETS,
            Internal::Transactions => &TRANSACTIONS,
        }
    }
}

/// A coordinator partition, led here and loaded.
pub struct Owned {
    pub partition: i32,
    pub epoch: i32,
    log: Arc<Partition>,
    replica: Option<Arc<Replica>>,
}

impl Owned {
    /// The partition's log.
    pub fn log(&self) -> &Arc<Partition> {
        &self.log
    }
}

/// Creates `__consumer_offsets` on this single node if it is missing.
pub fn ensure_local_offsets_topic(state: &BrokerState) -> Result<(), i16> {
    ensure_local_topic(state, Internal::Offsets)
}

/// Creates an internal topic on this single node if it is missing.
pub fn ensure_local_topic(state: &BrokerState, kind: Internal) -> Result<(), i16> {
    let topic = kind.topic();
    if state.log.partition_count(topic).is_some() {
        return Ok(());
    }
    let n = kind.partitions(state);
    match state.log.create_topic_with(topic, n, &kind.configs(1)) {
        Ok(()) => {
            tracing::info!(partitions = n, "created {topic}");
            Ok(())
        }
        Err(TopicError::Exists(_)) => Ok(()),
        Err(e) => {
            tracing::error!("creating {topic}: {e}");
            Err(COORDINATOR_NOT_AVAILABLE)
        }
    }
}

/// In a cluster: asks the controller for an internal topic in the
/// background (FindCoordinator answers COORDINATOR_NOT_AVAILABLE until its
/// leaders are known, and clients retry).
fn create_cluster_topic(state: &Arc<BrokerState>, kind: Internal) {
    let Some(c) = state.cluster() else { return };
    if kind.creating().swap(true, Ordering::AcqRel) {
        return;
    }
    let cluster = c.cluster.clone();
    let partitions = kind.partitions(state) as i32;
    let rf = kind.replication_factor(state);
    let topic = kind.topic();
    tokio::spawn(async move {
        let live = cluster.snapshot().brokers.len();
        if live < usize::try_from(rf).unwrap_or(usize::MAX) {
            tracing::warn!(
                live,
                replication_factor = rf,
                "{topic} waits for its replication factor of live brokers"
            );
        } else {
            match cluster
                .create_topic(topic, partitions, rf, None, kind.configs(rf), false)
                .await
            {
                Ok(_) => tracing::info!(partitions, replication_factor = rf, "created {topic}"),
                Err(e) => tracing::debug!("creating {topic}: {e}"),
            }
        }
        kind.creating().store(false, Ordering::Release);
    });
}

/// FindCoordinator's answer for a group: the node, host and port of its
/// coordinator, or COORDINATOR_NOT_AVAILABLE while there is none.
pub async fn find_group_coordinator(
    state: &Arc<BrokerState>,
    group: &str,
) -> Result<(i32, String, u16), i16> {
    find_coordinator(state, Internal::Offsets, group).await
}

/// FindCoordinator's answer for a key of an internal topic (a group, a
/// transactional id): the leader of its partition.
pub async fn find_coordinator(
    state: &Arc<BrokerState>,
    kind: Internal,
    key: &str,
) -> Result<(i32, String, u16), i16> {
    let p = kind.partition_for(state, key);
    let Some(c) = state.cluster() else {
        let s = state.clone();
        super::off_runtime(state, move |s2, _| ensure_local_topic(s2, kind))
            .await
            .unwrap_or(Err(COORDINATOR_NOT_AVAILABLE))?;
        return Ok((s.meta.node_id, s.advertised.host.clone(), s.advertised.port));
    };
    let snapshot = c.cluster.snapshot();
    if !snapshot.topics.contains_key(kind.topic()) {
        create_cluster_topic(state, kind);
        return Err(COORDINATOR_NOT_AVAILABLE);
    }
    let leader = snapshot
        .partitions
        .get(&(kind.topic().to_string(), p))
        .map(|s| s.leader)
        .unwrap_or(-1);
    match snapshot.brokers.get(&leader) {
        Some(b) => Ok((b.id, b.host.clone(), b.port)),
        None => Err(COORDINATOR_NOT_AVAILABLE),
    }
}

/// Partition `p` of an internal topic if this broker leads it: its log,
/// its replica (cluster) and the leader epoch (0 on one node, which
/// creates the topic if it is missing).
async fn led_here(
    state: &Arc<BrokerState>,
    kind: Internal,
    p: i32,
) -> Result<(Arc<Partition>, Option<Arc<Replica>>, i32), i16> {
    match state.cluster() {
        None => {
            let log = match state.log.partition(kind.topic(), p as u32) {
                Some(log) => log,
                None => {
                    super::off_runtime(state, move |s, _| ensure_local_topic(s, kind))
                        .await
                        .unwrap_or(Err(COORDINATOR_NOT_AVAILABLE))?;
                    state
                        .log
                        .partition(kind.topic(), p as u32)
                        .ok_or(COORDINATOR_NOT_AVAILABLE)?
                }
            };
            // One node: the partition is always led here; epoch 0 names
            // the one load it ever needs.
            Ok((log, None, 0))
        }
        Some(c) => {
            let (replica, epoch) = c
                .replicas
                .leader_replica(kind.topic(), p, -1)
                .map_err(|_| NOT_COORDINATOR)?;
            Ok((replica.log.clone(), Some(replica), epoch))
        }
    }
}

/// The `__transaction_state` partition of `transactional_id` if this
/// broker coordinates it now (loading it first if it just became its
/// leader), else NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS or
/// COORDINATOR_NOT_AVAILABLE.
pub async fn owned_txn(state: &Arc<BrokerState>, transactional_id: &str) -> Result<Owned, i16> {
    let p = state.txns.partition_for(transactional_id);
    let (log, replica, epoch) = led_here(state, Internal::Transactions, p).await?;
    match state.txns.state(p, epoch) {
        LoadState::Loaded => {}
        LoadState::Loading => return Err(COORDINATOR_LOAD_IN_PROGRESS),
        LoadState::Absent => load_txn(state, p, epoch, log.clone()).await?,
    }
    Ok(Owned {
        partition: p,
        epoch,
        log,
        replica,
    })
}

/// Loads `__transaction_state` partition `p` for leader epoch `epoch`, and
/// finishes the transactions it finds half-ended (markers still to write).
async fn load_txn(
    state: &Arc<BrokerState>,
    p: i32,
    epoch: i32,
    log: Arc<Partition>,
) -> Result<(), i16> {
    if !state.txns.slots().begin_load(p, epoch) {
        return Err(COORDINATOR_LOAD_IN_PROGRESS);
    }
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || transactions::load(&log)).await;
    match loaded {
        Ok(Ok(ids)) => {
            let ending: Vec<TxnMetadata> = ids
                .values()
                .filter(|m| m.state.is_preparing())
                .cloned()
                .collect();
            tracing::info!(
                partition = p,
                epoch,
                transactional_ids = ids.len(),
                ending = ending.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "loaded {TRANSACTION_TOPIC} partition: coordinating its transactions"
            );
            state.txns.slots().finish_load(p, epoch, Some(ids));
            for m in ending {
                super::transactions::resume_ending(state, m);
            }
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(partition = p, "loading {TRANSACTION_TOPIC}: {e}");
            state.txns.slots().finish_load(p, epoch, None);
            Err(COORDINATOR_NOT_AVAILABLE)
        }
        Err(e) => {
            tracing::error!(partition = p, "loading {TRANSACTION_TOPIC}: {e}");
            state.txns.slots().finish_load(p, epoch, None);
            Err(COORDINATOR_NOT_AVAILABLE)
        }
    }
}

/// Whether this broker still coordinates `p` at `epoch` (a long task —
/// writing markers — checks before each step).
pub fn still_owns_txn(state: &BrokerState, p: i32, epoch: i32) -> bool {
    state.txns.state(p, epoch) == LoadState::Loaded
}

/// The coordinator partition of `group` if this broker coordinates it now
/// (loading it first if it just became its leader), else the error a
/// client expects: NOT_COORDINATOR (find it again),
/// COORDINATOR_LOAD_IN_PROGRESS (retry here), COORDINATOR_NOT_AVAILABLE.
pub async fn owned(state: &Arc<BrokerState>, group: &str) -> Result<Owned, i16> {
    let p = state.offsets.partition_for(group);
    let (log, replica, epoch) = led_here(state, Internal::Offsets, p).await?;
    match state.offsets.state(p, epoch) {
        LoadState::Loaded => {}
        LoadState::Loading => return Err(COORDINATOR_LOAD_IN_PROGRESS),
        LoadState::Absent => load(state, p, epoch, log.clone()).await?,
    }
    Ok(Owned {
        partition: p,
        epoch,
        log,
        replica,
    })
}

/// Loads partition `p` for leader epoch `epoch` (unless another request is
/// already), dropping the membership of its groups first: whatever this
/// broker knew of them is from before (members rejoin).
async fn load(
    state: &Arc<BrokerState>,
    p: i32,
    epoch: i32,
    log: Arc<Partition>,
) -> Result<(), i16> {
    if !state.offsets.begin_load(p, epoch) {
        return Err(COORDINATOR_LOAD_IN_PROGRESS);
    }
    let n = state.offsets.partitions();
    state.groups.unload(|g| offsets::partition_for(g, n) == p);
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || offsets::load(&log)).await;
    match loaded {
        Ok(Ok(mut o)) => {
            let groups = o.take_groups();
            let resumed = groups.len();
            state.groups.restore(groups);
            tracing::info!(
                partition = p,
                epoch,
                offsets = o.len(),
                groups = resumed,
                took_ms = started.elapsed().as_millis() as u64,
                "loaded {OFFSETS_TOPIC} partition: coordinating its groups"
            );
            state.offsets.finish_load(p, epoch, Some(o));
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(partition = p, "loading {OFFSETS_TOPIC}: {e}");
            state.offsets.finish_load(p, epoch, None);
            Err(COORDINATOR_NOT_AVAILABLE)
        }
        Err(e) => {
            tracing::error!(partition = p, "loading {OFFSETS_TOPIC}: {e}");
            state.offsets.finish_load(p, epoch, None);
            Err(COORDINATOR_NOT_AVAILABLE)
        }
    }
}

/// Kafka's mapping of a failed offsets append to what a committer is told
/// (GroupMetadataManager): lost leadership → NOT_COORDINATOR; too few
/// replicas or no time → COORDINATOR_NOT_AVAILABLE; too large →
/// INVALID_COMMIT_OFFSET_SIZE.
fn commit_error(code: i16) -> i16 {
    const NOT_LEADER: i16 = E::NotLeaderOrFollower.code();
    const STORAGE: i16 = E::KafkaStorageError.code();
    const FENCED: i16 = E::FencedLeaderEpoch.code();
    const UNKNOWN: i16 = E::UnknownTopicOrPartition.code();
    const FEW: i16 = E::NotEnoughReplicas.code();
    const FEW_AFTER: i16 = E::NotEnoughReplicasAfterAppend.code();
    const TIMED_OUT: i16 = E::RequestTimedOut.code();
    const TOO_LARGE: i16 = E::MessageTooLarge.code();
    const LIST_TOO_LARGE: i16 = E::RecordListTooLarge.code();
    match code {
        NOT_LEADER | STORAGE | FENCED | UNKNOWN => NOT_COORDINATOR,
        FEW | FEW_AFTER | TIMED_OUT => COORDINATOR_NOT_AVAILABLE,
        TOO_LARGE | LIST_TOO_LARGE => E::InvalidCommitOffsetSize.code(),
        _ => E::UnknownServerError.code(),
    }
}

/// Appends records to the group's partition and returns once they are
/// durable (synced on one node; in the whole ISR, at least
/// `min.insync.replicas`, in a cluster), then applies them to the offsets
/// served here. An error means the commit was not acknowledged (it may
/// still surface later, if it reached a replica that becomes leader).
pub async fn append(
    state: &Arc<BrokerState>,
    owned: &Owned,
    records: Vec<(Bytes, Option<Bytes>)>,
) -> Result<(), i16> {
    if records.is_empty() {
        return Ok(());
    }
    let batch = offsets::encode_batch(&records, sluice_log::now_ms()).map_err(|e| {
        tracing::error!("encoding offsets: {e}");
        E::UnknownServerError.code()
    })?;
    let info = append_batch(state, owned, batch, true).await?;
    state
        .offsets
        .apply(owned.partition, owned.epoch, info.base_offset, &records);
    Ok(())
}

/// Appends one batch to a coordinator partition led here and returns once
/// it is durable: in the whole ISR, at least `min.insync.replicas`, in a
/// cluster; on one node, synced if `sync`, else as an `acks=all` produce is
/// under the partition's flush policy (synced by `always`, flushed now
/// under an interval, left to the OS under `os`). Errors are what a
/// coordinator's client is told (see [`commit_error`]).
pub async fn append_batch(
    state: &Arc<BrokerState>,
    owned: &Owned,
    batch: Bytes,
    sync: bool,
) -> Result<sluice_log::AppendInfo, i16> {
    if let (Some(c), Some(replica)) = (state.cluster(), &owned.replica) {
        c.replicas
            .check_enough_replicas(replica)
            .map_err(commit_error)?;
    }
    let log = owned.log.clone();
    let single_node = owned.replica.is_none();
    let epoch = owned.epoch;
    let appended = tokio::task::spawn_blocking(move || {
        let append_epoch = if single_node {
            log.latest_epoch().unwrap_or(0).max(0)
        } else {
            epoch
        };
        let info = log.append(&batch, append_epoch)?;
        let flush_now = sync || matches!(log.config().flush, FlushPolicy::Interval(_));
        if single_node && flush_now {
            log.flush().map_err(|source| AppendError::Io {
                partition: log.name().to_string(),
                source,
            })?;
        }
        Ok::<_, AppendError>(info)
    })
    .await;
    let info = match appended {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            tracing::warn!(
                partition = owned.log.name(),
                "appending to a coordinator partition: {e}"
            );
            return Err(commit_error(super::errors::append_error_code(&e)));
        }
        Err(e) => {
            tracing::error!("coordinator append task failed: {e}");
            return Err(E::UnknownServerError.code());
        }
    };
    if let (Some(c), Some(replica)) = (state.cluster(), &owned.replica) {
        c.replicas.leader_appended(replica);
        state.appended.notify_waiters();
        let code = c
            .replicas
            .wait_replicated(
                replica,
                owned.epoch,
                info.last_offset + 1,
                state.config.offsets_commit_timeout,
            )
            .await;
        if code != 0 {
            return Err(commit_error(code));
        }
    } else {
        state.appended.notify_waiters();
    }
    Ok(info)
}

/// Keeps the coordinated partitions in line with leadership (cluster
/// only): forgets those this broker no longer leads at the epoch it loaded,
/// and loads those it newly leads, so the first request after a failover
/// finds them ready.
pub async fn sweep(state: &Arc<BrokerState>) {
    let Some(c) = state.cluster() else { return };
    let n = state.offsets.partitions();
    for (p, epoch) in state.offsets.held() {
        let led = c
            .replicas
            .replica(OFFSETS_TOPIC, p)
            .and_then(|r| r.leader_epoch());
        if led != Some(epoch) && state.offsets.unload(p) {
            let groups = state.groups.unload(|g| offsets::partition_for(g, n) == p);
            tracing::info!(
                partition = p,
                groups,
                "no longer coordinating {OFFSETS_TOPIC} partition"
            );
        }
    }
    for p in 0..n as i32 {
        let Some(replica) = c.replicas.replica(OFFSETS_TOPIC, p) else {
            continue;
        };
        let Some(epoch) = replica.leader_epoch() else {
            continue;
        };
        if state.offsets.state(p, epoch) == LoadState::Absent {
            let _ = load(state, p, epoch, replica.log.clone()).await;
        }
    }
    for (p, epoch) in state.txns.slots().held() {
        let led = c
            .replicas
            .replica(TRANSACTION_TOPIC, p)
            .and_then(|r| r.leader_epoch());
        if led != Some(epoch) && state.txns.slots().unload(p) {
            tracing::info!(
                partition = p,
                "no longer coordinating {TRANSACTION_TOPIC} partition"
            );
        }
    }
    for p in 0..state.txns.partitions() as i32 {
        let Some(replica) = c.replicas.replica(TRANSACTION_TOPIC, p) else {
            continue;
        };
        let Some(epoch) = replica.leader_epoch() else {
            continue;
        };
        if state.txns.state(p, epoch) == LoadState::Absent {
            let _ = load_txn(state, p, epoch, replica.log.clone()).await;
        }
    }
}

/// Forgets the committed offsets of groups empty for longer than
/// `offsets.retention.minutes` (Kafka's expiry): a tombstone for each, in
/// the partitions this broker coordinates.
pub async fn expire_offsets(state: &Arc<BrokerState>) {
    let retention = state.config.offsets_retention.as_millis() as i64;
    let before = sluice_log::now_ms() - retention;
    let active = state.groups.active();
    let mut expired = 0usize;
    for (group, keys) in state.offsets.expired(before, &active) {
        let Ok(owned) = owned(state, &group).await else {
            continue;
        };
        let Ok(records) = offsets::delete_records(&group, &keys, false) else {
            continue;
        };
        match append(state, &owned, records).await {
            Ok(()) => expired += keys.len(),
            Err(code) => tracing::warn!(group, code, "expiring committed offsets failed"),
        }
    }
    if expired > 0 {
        tracing::info!(expired, "expired committed offsets of empty groups");
    }
}
