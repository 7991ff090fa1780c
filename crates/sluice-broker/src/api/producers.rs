//! DescribeProducers (v0, KIP-664): the producers a partition's leader
//! keeps state for — epoch, last sequence, last marker's coordinator
//! epoch and the start of an open transaction — to find what holds a
//! partition's last stable offset back (a hanging transaction).

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{errors, topics};
use crate::state::BrokerState;

pub fn describe_producers(
    state: &BrokerState,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut out = DescribeProducersResponse::default();
    for t in r.topics {
        let mut rt = TopicResponse::default();
        for p in t.partition_indexes {
            let mut rp = PartitionResponse::default();
            rp.partition_index = p;
            let log = match state.cluster() {
                Some(c) => c
                    .replicas
                    .leader_replica(t.name.0.as_str(), p, -1)
                    .map(|(r, _)| r.log.clone()),
                None => topics::partition(state, t.name.0.as_str(), p)
                    .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
            };
            match log {
                Ok(log) => {
                    rp.active_producers = log
                        .producers()
                        .into_iter()
                        .map(|v| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(v.producer_id);
                            s.producer_epoch = i32::from(v.epoch);
                            s.last_sequence = v.last_sequence;
                            // Batch timestamps are not kept per producer.
                            s.last_timestamp = -1;
                            s.coordinator_epoch = v.coordinator_epoch;
                            s.current_txn_start_offset = v.txn_start_offset;
                            s
                        })
                        .collect();
                }
                Err(code) => rp.error_code = code,
            }
            rt.partitions.push(rp);
        }
        rt.name = t.name;
        out.topics.push(rt);
    }
    out
}
