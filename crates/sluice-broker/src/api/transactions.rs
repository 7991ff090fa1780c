//! The transaction coordinator (KIP-98, Kafka's `TransactionCoordinator`):
//! InitProducerId for a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, TxnOffsetCommit (on the group's coordinator),
//! DescribeTransactions and ListTransactions; the markers that end a
//! transaction; the abort of transactions open past their timeout; and the
//! leader's KIP-890 check that a partition was added before it takes
//! transactional data.
//!
//! Each step for a transactional id holds that id's lock, computes the next
//! metadata with the pure state machine (`coordinator::transactions`),
//! writes it to `__transaction_state` and waits until it is durable (the
//! ISR has it, in a cluster) before answering. Ending a transaction is
//! Kafka's two phases: PrepareCommit/PrepareAbort written (from then on the
//! outcome is decided and survives any crash: a coordinator that loads a
//! Prepare state finishes it), markers written to every partition (by
//! WriteTxnMarkers to their leaders in a cluster), then
//! CompleteCommit/CompleteAbort.
//!
//! Unlike Kafka, EndTxn is answered once the markers are written (up to a
//! bound), not right after the Prepare record: the producer's next
//! transaction then starts at once instead of retrying on
//! CONCURRENT_TRANSACTIONS with back-off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
};

use super::coordination::{self, Internal, Owned};
use super::errors;
use super::str_bytes;
use super::txn_markers::write_marker;
use crate::coordinator::offsets::{self, CommitEntry, Committed, OFFSETS_TOPIC};
use crate::coordinator::transactions::{
    self as txn, EndOutcome, InitOutcome, TRANSACTION_TOPIC, TopicPartition, TxnMetadata, TxnState,
};
use crate::state::BrokerState;

const PRODUCER_FENCED: i16 = E::ProducerFenced.code();
const INVALID_TXN_STATE: i16 = E::InvalidTxnState.code();
const CONCURRENT_TRANSACTIONS: i16 = E::ConcurrentTransactions.code();
const OPERATION_NOT_ATTEMPTED: i16 = E::OperationNotAttempted.code();
const INVALID_PRODUCER_ID_MAPPING: i16 = E::InvalidProducerIdMapping.code();

/// How long EndTxn (and the abort before a new InitProducerId) waits for
/// the markers before answering; the coordinator goes on writing them
/// after that, and the outcome is already decided.
const END_WAIT: Duration = Duration::from_secs(10);

/// PRODUCER_FENCED for clients that know it (KIP-588: from these
/// versions on), INVALID_PRODUCER_EPOCH for older ones, as Kafka answers.
fn fenced_code(version: i16, since: i16) -> i16 {
    if version >= since {
        PRODUCER_FENCED
    } else {
        errors::INVALID_PRODUCER_EPOCH
    }
}

fn with_fenced(code: i16, version: i16, since: i16) -> i16 {
    if code == PRODUCER_FENCED {
        fenced_code(version, since)
    } else {
        code
    }
}

/// Writes one id's metadata to its partition and, once durable, makes it
/// the metadata served here.
///
/// Durable as the data it governs: the ISR has it in a cluster; on one
/// node it is written as an `acks=all` produce is, under the partition's
/// flush policy (Kafka does not sync `__transaction_state` either). A
/// synced record behind every state change was measured: its fsync, queued
/// behind the data's writeback in the file system's journal, put the commit
/// p99 at ~100 ms (docs/BENCHMARKS.md, issue 16) — and under the default
/// `os` policy a power cut could lose the transaction's data anyway.
async fn write(state: &Arc<BrokerState>, owned: &Owned, m: TxnMetadata) -> Result<(), i16> {
    let record = (
        txn::log_key(&m.transactional_id)?,
        Some(txn::log_value(&m)?),
    );
    let batch = offsets::encode_batch(&[record], sluice_log::now_ms()).map_err(|e| {
        tracing::error!("encoding transaction state: {e}");
        E::UnknownServerError.code()
    })?;
    coordination::append_batch(state, owned, batch, false)
        .await
        .map_err(|code| {
            if code == E::InvalidCommitOffsetSize.code() {
                E::UnknownServerError.code()
            } else {
                code
            }
        })?;
    state.txns.put(owned.partition, owned.epoch, m);
    Ok(())
}

// ---- InitProducerId ----------------------------------------------------------

/// InitProducerId with a transactional id: the id's producer id at a new
/// epoch (fencing any older producer of it), after aborting a transaction
/// it left open.
pub async fn init_producer_id(
    state: &Arc<BrokerState>,
    r: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    let id = r
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    match init(state, &id, &r, version).await {
        Ok((producer_id, epoch)) => {
            out.producer_id = ProducerId(producer_id);
            out.producer_epoch = epoch;
        }
        Err(code) => out.error_code = code,
    }
    out
}

async fn init(
    state: &Arc<BrokerState>,
    id: &str,
    r: &InitProducerIdRequest,
    version: i16,
) -> Result<(i64, i16), i16> {
    if id.len() > offsets::MAX_STRING_BYTES {
        return Err(errors::INVALID_REQUEST);
    }
    let owned = coordination::owned_txn(state, id).await?;
    let _guard = state.txn_locks.lock(id).await;
    // The abort of an open transaction comes first; then the init proper.
    for _ in 0..2 {
        let existing = state.txns.get(id);
        // KIP-360: a producer that names its id and epoch must be the
        // current one (or its retry after the bump it asked for).
        if r.producer_id.0 >= 0
            && let Some(m) = &existing
            && (m.producer_id != r.producer_id.0
                || (m.producer_epoch != r.producer_epoch
                    && m.producer_epoch != r.producer_epoch.saturating_add(1)))
        {
            return Err(fenced_code(version, 4));
        }
        let fresh = if txn::needs_new_producer_id(existing.as_ref()) {
            Some(new_producer_id(state).await?)
        } else {
            None
        };
        let outcome = txn::init_producer_id(
            id,
            existing.as_ref(),
            r.transaction_timeout_ms,
            state.config.transaction_max_timeout_ms,
            sluice_log::now_ms(),
            &mut || fresh.ok_or(E::UnknownServerError.code()),
        )?;
        match outcome {
            InitOutcome::Ready(m) => {
                let answer = (m.producer_id, m.producer_epoch);
                write(state, &owned, m).await?;
                return Ok(answer);
            }
            InitOutcome::AbortFirst(fence) => {
                tracing::info!(
                    transactional_id = id,
                    producer_id = fence.producer_id,
                    epoch = fence.producer_epoch,
                    "a new producer fences the old one: aborting its open transaction"
                );
                write(state, &owned, fence.clone()).await?;
                if !finish(state, &owned, fence, Instant::now() + END_WAIT).await {
                    // Still ending: the producer retries (Kafka's answer).
                    return Err(CONCURRENT_TRANSACTIONS);
                }
            }
        }
    }
    Err(CONCURRENT_TRANSACTIONS)
}

async fn new_producer_id(state: &Arc<BrokerState>) -> Result<i64, i16> {
    match state.cluster() {
        Some(c) => c.cluster.next_producer_id().await.map_err(|e| {
            tracing::error!("allocating a producer id: {e}");
            E::CoordinatorNotAvailable.code()
        }),
        None => super::off_runtime(state, |s, _| s.producer_ids.next())
            .await
            .map_err(|_| errors::KAFKA_STORAGE_ERROR)?
            .map_err(|e| {
                tracing::error!("allocating a producer id: {e}");
                errors::KAFKA_STORAGE_ERROR
            }),
    }
}

// ---- AddPartitionsToTxn / AddOffsetsToTxn --------------------------------------

/// Whether `topic`/`partition` exists (a transaction may only hold real
/// partitions).
pub(super) fn partition_exists(state: &BrokerState, topic: &str, partition: i32) -> bool {
    if partition < 0 {
        return false;
    }
    match state.cluster() {
        Some(c) => c
            .cluster
            .snapshot()
            .partitions
            .contains_key(&(topic.to_string(), partition)),
        None => state
            .log
            .partition_count(topic)
            .is_some_and(|n| (partition as u32) < n),
    }
}

pub async fn add_partitions_to_txn(
    state: &Arc<BrokerState>,
    r: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let mut out = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        let mut t = AddPartitionsToTxnTransaction::default();
        t.transactional_id = r.v3_and_below_transactional_id;
        t.producer_id = r.v3_and_below_producer_id;
        t.producer_epoch = r.v3_and_below_producer_epoch;
        t.topics = r.v3_and_below_topics;
        out.results_by_topic_v3_and_below = add_one(state, t, version).await;
        return out;
    }
    // v4+: a batch of transactions (brokers verifying, KIP-890).
    for t in r.transactions {
        let mut result = AddPartitionsToTxnResult::default();
        result.transactional_id = t.transactional_id.clone();
        result.topic_results = add_one(state, t, version).await;
        out.results_by_transaction.push(result);
    }
    out
}

fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    code_for: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            tr.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = code_for(t.name.0.as_str(), *p);
                    pr
                })
                .collect();
            tr
        })
        .collect()
}

async fn add_one(
    state: &Arc<BrokerState>,
    t: AddPartitionsToTxnTransaction,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let id = t.transactional_id.0.to_string();
    let wanted: Vec<TopicPartition> = t
        .topics
        .iter()
        .flat_map(|tp| {
            tp.partitions
                .iter()
                .map(move |p| (tp.name.0.to_string(), *p))
        })
        .collect();
    if t.verify_only {
        let codes = verify(state, &id, t.producer_id.0, t.producer_epoch, &wanted).await;
        return topic_results(&t.topics, |topic, p| {
            codes
                .get(&(topic.to_string(), p))
                .copied()
                .unwrap_or(INVALID_TXN_STATE)
        });
    }
    // Unknown partitions (and internal topics) fail the request; the rest
    // are not attempted, as Kafka answers.
    let bad: BTreeSet<TopicPartition> = wanted
        .iter()
        .filter(|(topic, p)| {
            topic == OFFSETS_TOPIC
                || topic == TRANSACTION_TOPIC
                || !partition_exists(state, topic, *p)
        })
        .cloned()
        .collect();
    if !bad.is_empty() {
        return topic_results(&t.topics, |topic, p| {
            if bad.contains(&(topic.to_string(), p)) {
                if topic == OFFSETS_TOPIC || topic == TRANSACTION_TOPIC {
                    E::TopicAuthorizationFailed.code()
                } else {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                }
            } else {
                OPERATION_NOT_ATTEMPTED
            }
        });
    }
    let code = match add(state, &id, t.producer_id.0, t.producer_epoch, &wanted).await {
        Ok(()) => errors::NONE,
        Err(code) => with_fenced(code, version, 2),
    };
    topic_results(&t.topics, |_, _| code)
}

/// Adds partitions to the id's transaction (starting it if none is open).
async fn add(
    state: &Arc<BrokerState>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
) -> Result<(), i16> {
    let owned = coordination::owned_txn(state, id).await?;
    let _guard = state.txn_locks.lock(id).await;
    let existing = state.txns.get(id);
    match txn::add_partitions(
        existing.as_ref(),
        producer_id,
        producer_epoch,
        partitions,
        sluice_log::now_ms(),
        PRODUCER_FENCED,
    )? {
        None => Ok(()),
        Some(m) => write(state, &owned, m).await,
    }
}

pub async fn add_offsets_to_txn(
    state: &Arc<BrokerState>,
    r: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let mut out = AddOffsetsToTxnResponse::default();
    let group = r.group_id.0.to_string();
    let id = r.transactional_id.0.to_string();
    // The group's offsets partition joins the transaction: its commit
    // marker is what makes the offsets count.
    let result = async {
        if group.is_empty() || group.len() > offsets::MAX_STRING_BYTES {
            return Err(errors::INVALID_GROUP_ID);
        }
        // The offsets topic must exist for its partition to get a marker.
        coordination::find_coordinator(state, Internal::Offsets, &group).await?;
        let p = state.offsets.partition_for(&group);
        add(
            state,
            &id,
            r.producer_id.0,
            r.producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), p)],
        )
        .await
    }
    .await;
    if let Err(code) = result {
        out.error_code = with_fenced(code, version, 2);
    }
    out
}

// ---- EndTxn and the markers ------------------------------------------------------

pub async fn end_txn(state: &Arc<BrokerState>, r: EndTxnRequest, version: i16) -> EndTxnResponse {
    let mut out = EndTxnResponse::default();
    out.producer_id = r.producer_id;
    out.producer_epoch = r.producer_epoch;
    let id = r.transactional_id.0.to_string();
    if let Err(code) = end(state, &id, r.producer_id.0, r.producer_epoch, r.committed).await {
        out.error_code = with_fenced(code, version, 2);
    }
    out
}

async fn end(
    state: &Arc<BrokerState>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), i16> {
    let owned = coordination::owned_txn(state, id).await?;
    let _guard = state.txn_locks.lock(id).await;
    let existing = state.txns.get(id);
    let outcome = txn::end_txn(
        existing.as_ref(),
        producer_id,
        producer_epoch,
        commit,
        sluice_log::now_ms(),
        PRODUCER_FENCED,
    )?;
    let EndOutcome::Prepare(prepared) = outcome else {
        return Ok(());
    };
    write(state, &owned, prepared.clone()).await?;
    // Decided: whatever happens now, the transaction ends this way.
    if !finish(state, &owned, prepared.clone(), Instant::now() + END_WAIT).await {
        tracing::warn!(
            transactional_id = id,
            "markers not all written in time; the coordinator goes on"
        );
        resume_ending(state, prepared);
    }
    Ok(())
}

/// Writes the markers of a Prepare state and then its Complete state;
/// false if the deadline passed (or the coordinator moved) first. The
/// caller holds the id's lock.
async fn finish(
    state: &Arc<BrokerState>,
    owned: &Owned,
    prepared: TxnMetadata,
    deadline: Instant,
) -> bool {
    let commit = prepared.state == TxnState::PrepareCommit;
    let started = Instant::now();
    if !send_markers(state, owned, &prepared, commit, deadline).await {
        return false;
    }
    let done = txn::complete(&prepared, sluice_log::now_ms());
    match write(state, owned, done).await {
        Ok(()) => {
            let counter = if commit {
                &state.txns.counters.committed
            } else {
                &state.txns.counters.aborted
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                transactional_id = prepared.transactional_id,
                commit,
                partitions = prepared.partitions.len(),
                took_us = started.elapsed().as_micros() as u64,
                "transaction ended"
            );
            true
        }
        Err(code) => {
            tracing::warn!(
                transactional_id = prepared.transactional_id,
                code,
                "writing a transaction's completion"
            );
            false
        }
    }
}

/// Finishes an ending transaction in the background (after a coordinator
/// takes over a Prepare state, or when EndTxn stopped waiting): retries
/// until it is done or this broker no longer coordinates the id.
pub fn resume_ending(state: &Arc<BrokerState>, prepared: TxnMetadata) {
    let state = state.clone();
    tokio::spawn(async move {
        let id = prepared.transactional_id.clone();
        loop {
            let Ok(owned) = coordination::owned_txn(&state, &id).await else {
                return;
            };
            {
                let _guard = state.txn_locks.lock(&id).await;
                let Some(current) = state.txns.get(&id) else {
                    return;
                };
                if !current.state.is_preparing()
                    || current.producer_id != prepared.producer_id
                    || current.producer_epoch != prepared.producer_epoch
                {
                    return;
                }
                if finish(&state, &owned, current, Instant::now() + END_WAIT).await {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Whether a marker's answer means the partition needs it no more:
/// written, the partition is gone, or a newer epoch of the producer
/// already wrote there (the marker is obsolete).
fn marker_settled(state: &BrokerState, topic: &str, partition: i32, code: i16) -> bool {
    match code {
        errors::NONE => true,
        errors::UNKNOWN_TOPIC_OR_PARTITION => !partition_exists(state, topic, partition),
        errors::INVALID_PRODUCER_EPOCH => {
            tracing::warn!(
                topic,
                partition,
                "marker refused for an older producer epoch"
            );
            true
        }
        // A newer coordinator wrote there: this one is deposed, and the
        // newer one ends the transaction.
        c if c == E::TransactionCoordinatorFenced.code() => true,
        _ => false,
    }
}

/// Writes the markers of a transaction to every partition in it, retrying
/// those that fail (a leader moving, a broker down) until `deadline`.
async fn send_markers(
    state: &Arc<BrokerState>,
    owned: &Owned,
    m: &TxnMetadata,
    commit: bool,
    deadline: Instant,
) -> bool {
    let mut pending: BTreeSet<TopicPartition> = m.partitions.clone();
    let mut backoff = Duration::from_millis(20);
    loop {
        if !coordination::still_owns_txn(state, owned.partition, owned.epoch) {
            return false;
        }
        // Local partitions directly; the others by leader, one request each.
        let mut remote: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        let mut local: Vec<TopicPartition> = Vec::new();
        match state.cluster() {
            None => local.extend(pending.iter().cloned()),
            Some(c) => {
                let snapshot = c.cluster.snapshot();
                let me = c.cluster.node_id();
                for tp in &pending {
                    match snapshot.partitions.get(tp).map(|s| s.leader) {
                        Some(leader) if leader == me => local.push(tp.clone()),
                        Some(leader) if leader >= 0 => {
                            remote.entry(leader).or_default().push(tp.clone())
                        }
                        // No leader now: retried below. A partition gone
                        // from the cluster needs no marker.
                        _ => {
                            if !snapshot.topics.contains_key(&tp.0) {
                                local.push(tp.clone());
                            }
                        }
                    }
                }
            }
        }
        let mut tasks = Vec::new();
        for (topic, partition) in local {
            let state = state.clone();
            let (pid, epoch, ce) = (m.producer_id, m.producer_epoch, owned.epoch);
            tasks.push(tokio::spawn(async move {
                let code = write_marker(&state, &topic, partition, pid, epoch, commit, ce).await;
                let settled = marker_settled(&state, &topic, partition, code);
                vec![((topic, partition), settled)]
            }));
        }
        for (node, tps) in remote {
            let state = state.clone();
            let marker = marker_request(m, commit, owned.epoch, &tps);
            tasks.push(tokio::spawn(async move {
                let Some(c) = state.cluster() else {
                    return Vec::new();
                };
                match state.peers.call(&c.cluster, node, 1, marker).await {
                    Ok(resp) => {
                        let mut out = Vec::new();
                        for result in resp.markers {
                            for t in result.topics {
                                for p in t.partitions {
                                    let topic = t.name.0.to_string();
                                    let settled = marker_settled(
                                        &state,
                                        &topic,
                                        p.partition_index,
                                        p.error_code,
                                    );
                                    out.push(((topic, p.partition_index), settled));
                                }
                            }
                        }
                        out
                    }
                    Err(e) => {
                        tracing::debug!(node, "sending transaction markers: {e}");
                        Vec::new()
                    }
                }
            }));
        }
        for task in tasks {
            if let Ok(results) = task.await {
                for (tp, settled) in results {
                    if settled {
                        pending.remove(&tp);
                    }
                }
            }
        }
        if pending.is_empty() {
            return true;
        }
        if Instant::now() + backoff > deadline {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

fn marker_request(
    m: &TxnMetadata,
    commit: bool,
    coordinator_epoch: i32,
    partitions: &[TopicPartition],
) -> WriteTxnMarkersRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = ProducerId(m.producer_id);
    marker.producer_epoch = m.producer_epoch;
    marker.transaction_result = commit;
    marker.coordinator_epoch = coordinator_epoch;
    marker.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut wt = WritableTxnMarkerTopic::default();
            wt.name = TopicName(str_bytes(t));
            wt.partition_indexes = ps;
            wt
        })
        .collect();
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![marker];
    req
}

// ---- timeouts ----------------------------------------------------------------------

/// Aborts the transactions open past their `transaction.timeout.ms` in
/// the partitions coordinated here, bumping the producer's epoch so that
/// the producer cannot carry on with it (Kafka's
/// `abortTimedOutTransactions`).
pub async fn abort_timed_out(state: &Arc<BrokerState>) {
    let now = sluice_log::now_ms();
    for m in state.txns.all() {
        if txn::expire(&m, now).is_none() {
            continue;
        }
        let id = m.transactional_id.clone();
        let Ok(owned) = coordination::owned_txn(state, &id).await else {
            continue;
        };
        let _guard = state.txn_locks.lock(&id).await;
        let Some(current) = state.txns.get(&id) else {
            continue;
        };
        let Some(fence) = txn::expire(&current, sluice_log::now_ms()) else {
            continue;
        };
        tracing::info!(
            transactional_id = id,
            producer_id = fence.producer_id,
            timeout_ms = fence.timeout_ms,
            "aborting a transaction open past its timeout"
        );
        if let Err(code) = write(state, &owned, fence.clone()).await {
            tracing::warn!(
                transactional_id = id,
                code,
                "aborting a timed-out transaction"
            );
            continue;
        }
        state
            .txns
            .counters
            .timed_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !finish(state, &owned, fence.clone(), Instant::now() + END_WAIT).await {
            resume_ending(state, fence);
        }
    }
}

// ---- KIP-890: a partition takes transactional data only once added ----------------

/// The coordinator's answer for each partition: NONE if the id's open
/// transaction (at this producer id and epoch) holds it.
async fn verify(
    state: &Arc<BrokerState>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
) -> BTreeMap<TopicPartition, i16> {
    let all = |code: i16| partitions.iter().map(|tp| (tp.clone(), code)).collect();
    if let Err(code) = coordination::owned_txn(state, id).await {
        return all(code);
    }
    let Some(m) = state.txns.get(id) else {
        return all(INVALID_PRODUCER_ID_MAPPING);
    };
    if m.producer_id != producer_id {
        return all(INVALID_PRODUCER_ID_MAPPING);
    }
    if m.producer_epoch != producer_epoch {
        return all(errors::INVALID_PRODUCER_EPOCH);
    }
    partitions
        .iter()
        .map(|tp| {
            let ok = m.state == TxnState::Ongoing && m.partitions.contains(tp);
            (
                tp.clone(),
                if ok { errors::NONE } else { INVALID_TXN_STATE },
            )
        })
        .collect()
}

/// Whether `producer_id` has a transaction open in `part`, asked on the
/// blocking pool: the answer takes the partition's appender lock, which an
/// append may hold across a disk write. (A failed task answers false: the
/// caller then asks the coordinator, which is always safe.)
pub async fn has_open_transaction(part: &Arc<sluice_log::Partition>, producer_id: i64) -> bool {
    let part = part.clone();
    tokio::task::spawn_blocking(move || part.open_transaction(producer_id).is_some())
        .await
        .unwrap_or(false)
}

/// A leader's check before appending a transactional batch that would
/// start a transaction in `topic`/`partition`: the coordinator (here, or
/// asked with AddPartitionsToTxn `verify_only`) must have the partition in
/// the producer's open transaction. Coordinator trouble becomes
/// NOT_ENOUGH_REPLICAS, which every client retries (Kafka's choice).
pub async fn verify_partition(
    state: &Arc<BrokerState>,
    transactional_id: Option<&str>,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let Some(id) = transactional_id.filter(|id| !id.is_empty()) else {
        return Err(INVALID_TXN_STATE);
    };
    let tp = (topic.to_string(), partition);
    let coordinator = match state.cluster() {
        None => None,
        Some(c) => {
            let p = state.txns.partition_for(id);
            let leader = c
                .cluster
                .snapshot()
                .partitions
                .get(&(TRANSACTION_TOPIC.to_string(), p))
                .map(|s| s.leader)
                .unwrap_or(-1);
            (leader != c.cluster.node_id()).then_some(leader)
        }
    };
    let code = match coordinator {
        None => verify(
            state,
            id,
            producer_id,
            producer_epoch,
            std::slice::from_ref(&tp),
        )
        .await
        .get(&tp)
        .copied()
        .unwrap_or(INVALID_TXN_STATE),
        Some(node) => {
            let Some(c) = state.cluster() else {
                return Err(INVALID_TXN_STATE);
            };
            let mut t = AddPartitionsToTxnTransaction::default();
            t.transactional_id = TransactionalId(str_bytes(id));
            t.producer_id = ProducerId(producer_id);
            t.producer_epoch = producer_epoch;
            t.verify_only = true;
            let mut topic_entry = AddPartitionsToTxnTopic::default();
            topic_entry.name = TopicName(str_bytes(topic));
            topic_entry.partitions = vec![partition];
            t.topics = vec![topic_entry];
            let mut req = AddPartitionsToTxnRequest::default();
            req.transactions = vec![t];
            match state.peers.call(&c.cluster, node, 4, req).await {
                Ok(resp) if resp.error_code != errors::NONE => resp.error_code,
                Ok(resp) => resp
                    .results_by_transaction
                    .iter()
                    .flat_map(|r| &r.topic_results)
                    .flat_map(|t| &t.results_by_partition)
                    .map(|p| p.partition_error_code)
                    .next()
                    .unwrap_or(INVALID_TXN_STATE),
                Err(e) => {
                    tracing::debug!(node, "verifying a transaction with its coordinator: {e}");
                    E::CoordinatorNotAvailable.code()
                }
            }
        }
    };
    const RETRY: [i16; 5] = [
        E::ConcurrentTransactions.code(),
        E::NetworkException.code(),
        E::CoordinatorLoadInProgress.code(),
        E::CoordinatorNotAvailable.code(),
        E::NotCoordinator.code(),
    ];
    match code {
        errors::NONE => Ok(()),
        c if RETRY.contains(&c) => Err(E::NotEnoughReplicas.code()),
        c => Err(c),
    }
}

// ---- TxnOffsetCommit (the group coordinator's side) ------------------------------

pub async fn txn_offset_commit(
    state: &Arc<BrokerState>,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let code = commit_txn_offsets(state, &group, &r)
        .await
        .err()
        .unwrap_or(0);
    let mut out = TxnOffsetCommitResponse::default();
    out.topics = r
        .topics
        .iter()
        .map(|t| {
            let mut rt = TxnOffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = TxnOffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = code;
                    rp
                })
                .collect();
            rt
        })
        .collect();
    out
}

async fn commit_txn_offsets(
    state: &Arc<BrokerState>,
    group: &str,
    r: &TxnOffsetCommitRequest,
) -> Result<(), i16> {
    if group.is_empty() || group.len() > offsets::MAX_STRING_BYTES {
        return Err(errors::INVALID_GROUP_ID);
    }
    let owned = coordination::owned(state, group).await?;
    // KIP-447: a member's commit is fenced by the group's generation.
    let member = r.member_id.as_str();
    if !(member.is_empty() && r.generation_id < 0) {
        let check = state.groups.check_commit(group, r.generation_id, member);
        if check != 0 {
            return Err(check);
        }
    }
    let max_metadata = state.config.offset_metadata_max_bytes;
    let mut entries = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            if metadata.len() > max_metadata {
                return Err(errors::OFFSET_METADATA_TOO_LARGE);
            }
            entries.push(CommitEntry {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                committed: Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_ms: sluice_log::now_ms(),
                },
            });
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    // KIP-890: the offsets join the producer's transaction only if the
    // coordinator added the group's partition to it (AddOffsetsToTxn).
    if !has_open_transaction(owned.log(), r.producer_id.0).await {
        verify_partition(
            state,
            Some(r.transactional_id.0.as_str()),
            r.producer_id.0,
            r.producer_epoch,
            OFFSETS_TOPIC,
            owned.partition,
        )
        .await
        .map_err(|code| {
            // Produce's retriable stand-in means "retry" here too, in the
            // words TxnOffsetCommit clients retry on.
            if code == E::NotEnoughReplicas.code() {
                E::CoordinatorLoadInProgress.code()
            } else {
                code
            }
        })?;
    }
    let records = offsets::commit_records(group, &entries).map_err(|_| errors::INVALID_REQUEST)?;
    let batch = offsets::encode_txn_batch(
        &records,
        sluice_log::now_ms(),
        r.producer_id.0,
        r.producer_epoch,
    )
    .map_err(|_| E::UnknownServerError.code())?;
    // As durable as the markers that make them count (see `write`).
    let info = coordination::append_batch(state, &owned, batch, false).await?;
    state.offsets.add_pending(
        owned.partition,
        owned.epoch,
        r.producer_id.0,
        info.base_offset,
        &records,
    );
    Ok(())
}

// ---- DescribeTransactions / ListTransactions -----------------------------------------

pub async fn describe_transactions(
    state: &Arc<BrokerState>,
    r: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut out = DescribeTransactionsResponse::default();
    for id in r.transactional_ids {
        let mut ts = TransactionState::default();
        let name = id.0.to_string();
        ts.transactional_id = id;
        ts.transaction_state = str_bytes("");
        ts.producer_id = ProducerId(-1);
        ts.producer_epoch = -1;
        ts.transaction_start_time_ms = -1;
        match coordination::owned_txn(state, &name).await {
            Err(code) => ts.error_code = code,
            Ok(_) => match state.txns.get(&name) {
                None => ts.error_code = E::TransactionalIdNotFound.code(),
                Some(m) => {
                    ts.transaction_state = str_bytes(m.state.name());
                    ts.transaction_timeout_ms = m.timeout_ms;
                    ts.transaction_start_time_ms = m.start_ms;
                    ts.producer_id = ProducerId(m.producer_id);
                    ts.producer_epoch = m.producer_epoch;
                    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (t, p) in &m.partitions {
                        by_topic.entry(t.clone()).or_default().push(*p);
                    }
                    ts.topics = by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut td = TopicData::default();
                            td.topic = TopicName(str_bytes(&t));
                            td.partitions = ps;
                            td
                        })
                        .collect();
                }
            },
        }
        out.transaction_states.push(ts);
    }
    out
}

/// The transactions of the partitions this broker coordinates (a client
/// asks every broker and merges), filtered as Kafka filters: by state
/// name, producer id and (v1+) running longer than `duration_filter` ms.
pub fn list_transactions(
    state: &BrokerState,
    r: ListTransactionsRequest,
) -> ListTransactionsResponse {
    const STATES: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];
    let mut out = ListTransactionsResponse::default();
    let mut wanted_states = BTreeSet::new();
    for s in &r.state_filters {
        match STATES.iter().find(|st| st.name() == s.as_str()) {
            Some(st) => {
                wanted_states.insert(st.name());
            }
            None => out.unknown_state_filters.push(s.clone()),
        }
    }
    let pids: BTreeSet<i64> = r.producer_id_filters.iter().map(|p| p.0).collect();
    let now = sluice_log::now_ms();
    let mut all = state.txns.all();
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    for m in all {
        if !r.state_filters.is_empty() && !wanted_states.contains(m.state.name()) {
            continue;
        }
        if !pids.is_empty() && !pids.contains(&m.producer_id) {
            continue;
        }
        if r.duration_filter >= 0
            && (m.state != TxnState::Ongoing || now - m.start_ms < r.duration_filter)
        {
            continue;
        }
        let mut ls = ListedState::default();
        ls.transactional_id = TransactionalId(str_bytes(&m.transactional_id));
        ls.producer_id = ProducerId(m.producer_id);
        ls.transaction_state = str_bytes(m.state.name());
        out.transaction_states.push(ls);
    }
    out
}
