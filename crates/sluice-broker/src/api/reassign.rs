//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455):
//! moving a partition's replicas between brokers. The work is the
//! cluster's (`Cluster::reassign_partition` starts one, the controller
//! finishes it once the new replicas are in sync, the brokers that lose a
//! replica stop and empty it); these turn requests into those calls.

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{errors, str_bytes};
use crate::state::BrokerState;

fn message(code: i16) -> Option<kafka_protocol::protocol::StrBytes> {
    (code != 0)
        .then(|| E::try_from_code(code).map(|e| str_bytes(&e.to_string())))
        .flatten()
}

pub async fn alter_partition_reassignments(
    state: &BrokerState,
    r: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut out = AlterPartitionReassignmentsResponse::default();
    // v1 (KIP-860): a reassignment may change the replication factor only
    // when the request allows it.
    let allow_rf_change = version < 1 || r.allow_replication_factor_change;
    out.allow_replication_factor_change = allow_rf_change;
    for t in r.topics {
        let topic = t.name.0.to_string();
        let mut rt = ReassignableTopicResponse::default();
        for p in t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.map(|rs| rs.into_iter().map(|b| b.0).collect());
            let code = match state.cluster() {
                Some(c) => {
                    let current_rf = c
                        .cluster
                        .snapshot()
                        .reassignments
                        .get(&(topic.clone(), p.partition_index))
                        .map(|r| r.original.len())
                        .or_else(|| {
                            c.cluster
                                .snapshot()
                                .replicas(&topic, p.partition_index)
                                .map(<[i32]>::len)
                        });
                    match (&target, current_rf) {
                        (Some(t), Some(rf)) if !allow_rf_change && t.len() != rf => {
                            E::InvalidReplicationFactor.code()
                        }
                        _ => c
                            .cluster
                            .reassign_partition(&topic, p.partition_index, target)
                            .await
                            .unwrap_or_else(|e| {
                                tracing::warn!(topic = %topic, partition = p.partition_index,
                                    "AlterPartitionReassignments: {e}");
                                E::RequestTimedOut.code()
                            }),
                    }
                }
                // One broker holds every replica: the only assignment is
                // itself, and nothing is ever in progress.
                None => {
                    let exists = u32::try_from(p.partition_index)
                        .ok()
                        .and_then(|i| state.log.partition(&topic, i))
                        .is_some();
                    match target {
                        _ if !exists => errors::UNKNOWN_TOPIC_OR_PARTITION,
                        None => E::NoReassignmentInProgress.code(),
                        Some(t) if t == [state.meta.node_id] => errors::NONE,
                        Some(_) => E::InvalidReplicaAssignment.code(),
                    }
                }
            };
            let mut rp = ReassignablePartitionResponse::default();
            rp.partition_index = p.partition_index;
            rp.error_code = code;
            rp.error_message = message(code);
            rt.partitions.push(rp);
        }
        rt.name = t.name;
        out.responses.push(rt);
    }
    out
}

pub fn list_partition_reassignments(
    state: &BrokerState,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut out = ListPartitionReassignmentsResponse::default();
    let Some(c) = state.cluster() else {
        return out;
    };
    let snap = c.cluster.snapshot();
    let wanted = |topic: &str, p: i32| match &r.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut by_topic: std::collections::BTreeMap<String, Vec<OngoingPartitionReassignment>> =
        Default::default();
    for ((topic, p), req) in &snap.reassignments {
        if !wanted(topic, *p) {
            continue;
        }
        let mut o = OngoingPartitionReassignment::default();
        o.partition_index = *p;
        o.replicas = ids(snap
            .replicas(topic, *p)
            .map_or_else(|| req.replicas(), <[i32]>::to_vec));
        o.adding_replicas = ids(req.adding());
        o.removing_replicas = ids(req.removing());
        by_topic.entry(topic.clone()).or_default().push(o);
    }
    out.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = OngoingTopicReassignment::default();
            t.name = TopicName(str_bytes(&name));
            t.partitions = partitions;
            t
        })
        .collect();
    out
}
