//! InitProducerId for idempotent producers, and the answers transactional
//! producers get until transactions exist.
//!
//! A producer with a `transactional.id` is refused with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED at its first step (FindCoordinator
//! for its transactional id, or InitProducerId): librdkafka and the Java
//! client treat that error as fatal, so the application learns at once that
//! it cannot use transactions here, instead of retrying
//! COORDINATOR_NOT_AVAILABLE until a timeout a minute later.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnRequest,
    EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::{Blocking, errors};
use crate::state::BrokerState;

/// What a transactional request is refused with.
pub const TRANSACTIONS_REFUSED: i16 = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
/// Said where a response can carry a message.
pub const TRANSACTIONS_REFUSED_WHY: &str =
    "transactions are not supported by this broker yet (idempotent producers are)";

/// A fresh id at epoch 0, or, for a producer that names its id and epoch
/// (KIP-360), the same id one epoch on.
pub fn init_producer_id(
    state: &BrokerState,
    r: InitProducerIdRequest,
    _: &Blocking,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        out.error_code = TRANSACTIONS_REFUSED;
        return out;
    }
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
        out.producer_id = r.producer_id;
        out.producer_epoch = r.producer_epoch + 1;
        return out;
    }
    // In a cluster ids come in blocks reserved through etcd, unique across
    // brokers; alone, from the data directory's own counter.
    let next = match state.cluster() {
        Some(c) => tokio::runtime::Handle::current()
            .block_on(c.cluster.next_producer_id())
            .map_err(|e| e.to_string()),
        None => state.producer_ids.next().map_err(|e| e.to_string()),
    };
    match next {
        Ok(id) => {
            out.producer_id = ProducerId(id);
            out.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!("allocating a producer id: {e}");
            out.error_code = if state.cluster().is_some() {
                // etcd unreachable or contended: the client retries.
                kafka_protocol::ResponseError::CoordinatorNotAvailable.code()
            } else {
                errors::KAFKA_STORAGE_ERROR
            };
        }
    }
    out
}

pub fn add_partitions_to_txn(r: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut out = AddPartitionsToTxnResponse::default();
    out.error_code = TRANSACTIONS_REFUSED;
    out.results_by_topic_v3_and_below = r
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = TRANSACTIONS_REFUSED;
                    pr
                })
                .collect();
            tr.name = t.name;
            tr
        })
        .collect();
    out
}

pub fn add_offsets_to_txn() -> AddOffsetsToTxnResponse {
    let mut out = AddOffsetsToTxnResponse::default();
    out.error_code = TRANSACTIONS_REFUSED;
    out
}

pub fn end_txn(r: EndTxnRequest) -> EndTxnResponse {
    let mut out = EndTxnResponse::default();
    out.error_code = TRANSACTIONS_REFUSED;
    out.producer_id = r.producer_id;
    out.producer_epoch = r.producer_epoch;
    out
}

pub fn txn_offset_commit(r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let mut out = TxnOffsetCommitResponse::default();
    out.topics = r
        .topics
        .into_iter()
        .map(|t| {
            let mut tr = TxnOffsetCommitResponseTopic::default();
            tr.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = TxnOffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = TRANSACTIONS_REFUSED;
                    pr
                })
                .collect();
            tr.name = t.name;
            tr
        })
        .collect();
    out
}
