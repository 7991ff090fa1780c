//! OffsetForLeaderEpoch (v2–v4): where a leader epoch ends in this
//! leader's log (KIP-101, KIP-279). Followers of other brokers and clients
//! validating their position after a leader change (KIP-320) ask it.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::errors;
use super::topics::partition;
use crate::state::BrokerState;

/// Answers with (epoch, end offset) per partition: the largest epoch at or
/// below the one asked for, and the start offset of the first epoch after
/// it (the log end for the latest epoch); (-1, -1) for an epoch past every
/// one this log knows. Only the leader answers: a request naming an older
/// current leader epoch is FENCED_LEADER_EPOCH, a newer one
/// UNKNOWN_LEADER_EPOCH.
pub fn offset_for_leader_epoch(
    state: &BrokerState,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut out = OffsetForLeaderEpochResponse::default();
    for topic in r.topics {
        let name = topic.topic.0.to_string();
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = topic.topic.clone();
        for asked in topic.partitions {
            let mut p = EpochEndOffset::default();
            p.partition = asked.partition;
            p.leader_epoch = -1;
            p.end_offset = -1;
            let target = match state.cluster() {
                None => partition(state, &name, asked.partition)
                    .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
                Some(c) => c
                    .replicas
                    .leader_replica(&name, asked.partition, asked.current_leader_epoch)
                    .map(|(replica, _)| replica.log.clone()),
            };
            match target {
                Err(code) => p.error_code = code,
                Ok(part) => {
                    let (epoch, end) = part.end_offset_for_epoch(asked.leader_epoch);
                    p.leader_epoch = epoch;
                    p.end_offset = end;
                }
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}
