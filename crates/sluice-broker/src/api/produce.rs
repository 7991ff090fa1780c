//! Produce: validate and append each partition's batches.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_log::{AppendError, AppendInfo, FlushPolicy, Partition};

use super::errors::{self, append_error_code};
use super::{off_runtime, topics};
use crate::coordinator::is_internal_topic;
use crate::state::{BrokerState, InCluster};

/// Validates and appends each partition's batches, on the blocking pool;
/// acks=-1 returns once they are durable under the flush policy
/// (`always`: synced by the append; an interval: flushed now; `os`: left to
/// the OS). acks=0 gets no response at all. `max.message.bytes` is checked
/// per batch by the log, as Kafka checks it.
pub async fn produce(state: &Arc<BrokerState>, r: ProduceRequest) -> Option<ProduceResponse> {
    if let Some(c) = state.cluster() {
        return cluster_produce(state, c, r).await;
    }
    let acks = r.acks;
    let transactional_id = r.transactional_id.as_ref().map(|t| t.0.to_string());
    let mut out = ProduceResponse::default();
    let mut appended_any = false;
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        // Known topics are a map lookup; creating one touches the disk.
        let found = match state.log.partition_count(&name) {
            // Only the group coordinator appends to the offsets topic.
            _ if is_internal_topic(&name) => Err(errors::INVALID_TOPIC_EXCEPTION),
            Some(n) => Ok(n),
            None => {
                let create = state.config.auto_create_topics;
                let lookup = name.clone();
                off_runtime(state, move |s, b| {
                    topics::ensure_topic(s, &lookup, create, b)
                })
                .await
                .unwrap_or(Err(errors::KAFKA_STORAGE_ERROR))
            }
        };
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        for pd in topic.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = pd.index;
            p.base_offset = -1;
            p.log_append_time_ms = -1;
            p.log_start_offset = -1;
            let part = match &found {
                Ok(_) => topics::partition(state, &name, pd.index)
                    .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
                Err(code) => Err(*code),
            };
            let records = pd.records.unwrap_or_default();
            let result = match part {
                Err(code) => Err(code),
                Ok(part) => {
                    // One broker: the log's own latest epoch (0 unless the
                    // directory once belonged to a cluster).
                    let epoch = part.latest_epoch().unwrap_or(0).max(0);
                    let appended = match verify_transaction(
                        state,
                        &part,
                        &records,
                        transactional_id.as_deref(),
                        &name,
                        pd.index,
                    )
                    .await
                    {
                        Ok(()) => {
                            append_partition(state, &part, records, acks, epoch, &name, pd.index)
                                .await
                        }
                        Err(code) => Err(code),
                    };
                    if appended.is_ok() {
                        appended_any = true;
                    }
                    appended.map(|info| (info, part.log_start()))
                }
            };
            match result {
                Ok((info, log_start)) => {
                    p.base_offset = info.base_offset;
                    p.log_start_offset = log_start;
                    // LogAppendTime topics: the time stamped into the batch.
                    p.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                }
                Err(code) => p.error_code = code,
            }
            t.partition_responses.push(p);
        }
        out.responses.push(t);
    }
    if appended_any {
        state.appended.notify_waiters();
    }
    (acks != 0).then_some(out)
}

/// KIP-890 part 1: a transactional batch that would open its producer's
/// transaction in this partition is taken only if the transaction
/// coordinator has the partition in that transaction — so a late or
/// stray write cannot leave a transaction open here that no coordinator
/// will ever end (a "hanging" transaction holding the last stable offset
/// back forever).
async fn verify_transaction(
    state: &Arc<BrokerState>,
    part: &Arc<Partition>,
    records: &[u8],
    transactional_id: Option<&str>,
    topic: &str,
    index: i32,
) -> Result<(), i16> {
    let Ok(h) = sluice_log::batch::BatchHeader::parse(records) else {
        // The append refuses it with the right error.
        return Ok(());
    };
    if !h.is_transactional() || h.is_control() || h.producer_id < 0 {
        return Ok(());
    }
    if super::transactions::has_open_transaction(part, h.producer_id).await {
        return Ok(());
    }
    super::transactions::verify_partition(
        state,
        transactional_id,
        h.producer_id,
        h.producer_epoch,
        topic,
        index,
    )
    .await
}

/// Appends one partition's batches on the blocking pool (acks=-1 under an
/// interval flush policy also flushes), timing the queue and the append.
async fn append_partition(
    state: &Arc<BrokerState>,
    part: &Arc<Partition>,
    records: bytes::Bytes,
    acks: i16,
    leader_epoch: i32,
    topic: &str,
    index: i32,
) -> Result<AppendInfo, i16> {
    let durable_wait = acks == -1 && matches!(part.config().flush, FlushPolicy::Interval(_));
    let log_part = part.clone();
    let queued = std::time::Instant::now();
    let appended = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let result = log_part.append(&records, leader_epoch).and_then(|info| {
            if durable_wait {
                log_part.flush().map_err(|source| AppendError::Io {
                    partition: log_part.name().to_string(),
                    source,
                })?;
            }
            Ok(info)
        });
        (result, started - queued, started.elapsed())
    })
    .await
    .map(|(result, queue, took)| {
        state.latencies.append_queue.observe(queue);
        state.latencies.append.observe(took);
        result
    });
    match appended {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => {
            tracing::debug!(topic, partition = index, "produce refused: {e}");
            Err(append_error_code(&e))
        }
        Err(e) => {
            tracing::error!("append task failed: {e}");
            Err(errors::KAFKA_STORAGE_ERROR)
        }
    }
}

/// Produce in a cluster: only the partition's leader appends, stamping its
/// leader epoch into the batches. `acks=all` is refused before the append
/// when the ISR is smaller than `min.insync.replicas`, and answered once
/// the high watermark passes the batches (every ISR member has them).
async fn cluster_produce(
    state: &Arc<BrokerState>,
    c: &InCluster,
    r: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = r.acks;
    let transactional_id = r.transactional_id.as_ref().map(|t| t.0.to_string());
    let timeout = std::time::Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0).max(1));
    let mut out = ProduceResponse::default();
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        for pd in topic.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = pd.index;
            p.base_offset = -1;
            p.log_append_time_ms = -1;
            p.log_start_offset = -1;
            let records = pd.records.unwrap_or_default();
            let result = async {
                if is_internal_topic(&name) {
                    // Only the group coordinator appends to it.
                    return Err(errors::INVALID_TOPIC_EXCEPTION);
                }
                let (replica, epoch) = c.replicas.leader_replica(&name, pd.index, -1)?;
                if acks == -1 {
                    c.replicas.check_enough_replicas(&replica)?;
                }
                verify_transaction(
                    state,
                    &replica.log,
                    &records,
                    transactional_id.as_deref(),
                    &name,
                    pd.index,
                )
                .await?;
                let info =
                    append_partition(state, &replica.log, records, acks, epoch, &name, pd.index)
                        .await?;
                c.replicas.leader_appended(&replica);
                // Followers parked in a Fetch here fetch it now.
                state.appended.notify_waiters();
                if acks == -1 {
                    let code = c
                        .replicas
                        .wait_replicated(&replica, epoch, info.last_offset + 1, timeout)
                        .await;
                    if code != errors::NONE {
                        return Err(code);
                    }
                }
                Ok((info, replica.log.log_start()))
            }
            .await;
            match result {
                Ok((info, log_start)) => {
                    p.base_offset = info.base_offset;
                    p.log_start_offset = log_start;
                    p.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                }
                Err(code) => p.error_code = code,
            }
            t.partition_responses.push(p);
        }
        out.responses.push(t);
    }
    (acks != 0).then_some(out)
}
