//! WriteTxnMarkers (v0–1): a transaction coordinator tells a partition's
//! leader that a producer's transaction committed or aborted; the leader
//! appends the COMMIT/ABORT control batch, which ends the transaction in
//! the partition (its last stable offset moves; an abort is indexed for
//! read_committed consumers). In a cluster the marker is acknowledged once
//! the ISR has it, as Kafka appends markers with acks=-1.

use std::sync::Arc;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_log::Partition;

use super::errors::{self, append_error_code};
use super::topics;
use crate::coordinator::offsets::OFFSETS_TOPIC;
use crate::replication::Replica;
use crate::state::BrokerState;

/// How long a marker waits for the ISR.
const MARKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Appends one marker to one partition this broker leads; a Kafka error
/// code.
pub async fn write_marker(
    state: &Arc<BrokerState>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> i16 {
    let (log, replica, epoch): (Arc<Partition>, Option<Arc<Replica>>, i32) = match state.cluster() {
        Some(c) => match c.replicas.leader_replica(topic, partition, -1) {
            Ok((r, epoch)) => (r.log.clone(), Some(r), epoch),
            Err(code) => return code,
        },
        None => match topics::partition(state, topic, partition) {
            Some(p) => {
                let epoch = p.latest_epoch().unwrap_or(0).max(0);
                (p, None, epoch)
            }
            None => return errors::UNKNOWN_TOPIC_OR_PARTITION,
        },
    };
    let appending = log.clone();
    let appended = tokio::task::spawn_blocking(move || {
        appending.append_control(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            epoch,
        )
    })
    .await;
    let info = match appended {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            tracing::warn!(
                topic,
                partition,
                producer_id,
                "writing a transaction marker: {e}"
            );
            return append_error_code(&e);
        }
        Err(e) => {
            tracing::error!("marker append task failed: {e}");
            return E::UnknownServerError.code();
        }
    };
    state.appended.notify_waiters();
    if let (Some(c), Some(replica)) = (state.cluster(), replica) {
        c.replicas.leader_appended(&replica);
        let code = c
            .replicas
            .wait_replicated(&replica, epoch, info.last_offset + 1, MARKER_TIMEOUT)
            .await;
        if code != errors::NONE {
            return code;
        }
    }
    if topic == OFFSETS_TOPIC {
        // The group coordinator's side: offsets sent in the transaction
        // count from now on, or never.
        state.offsets.complete_txn(partition, producer_id, commit);
    }
    errors::NONE
}

pub async fn write_txn_markers(
    state: &Arc<BrokerState>,
    r: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut out = WriteTxnMarkersResponse::default();
    for m in r.markers {
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = m.producer_id;
        for t in m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            for p in t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = write_marker(
                    state,
                    t.name.0.as_str(),
                    p,
                    m.producer_id.0,
                    m.producer_epoch,
                    m.transaction_result,
                    m.coordinator_epoch,
                )
                .await;
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            result.topics.push(tr);
        }
        out.markers.push(result);
    }
    out
}
