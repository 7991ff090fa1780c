//! The admin APIs tools and UIs call beside topic administration:
//! DescribeCluster (KIP-700), DescribeLogDirs (KIP-113), DescribeTopicPartitions
//! (KIP-966) and DeleteRecords (KIP-107) — each answered as Kafka's broker
//! answers it, for a cluster of one node that is also its controller and
//! keeps every partition in one log directory (the data directory).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, ElectLeadersRequest,
    ElectLeadersResponse, TopicName,
};
use sluice_log::ReadError;

use super::topics::partition;
use super::{Blocking, errors, str_bytes};
use crate::state::BrokerState;

/// DescribeCluster's endpoint types (KIP-919): brokers, controllers.
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;

/// The operations an authorized-operations field lists when no authorizer is
/// configured: every operation the resource type supports (Kafka's
/// `AuthHelper.authorizedOperations`, `AclEntry.supportedOperations`), as a
/// bit field of `AclOperation` codes.
const CLUSTER_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]); // CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE
const TOPIC_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]); // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS

const fn ops(codes: &[u8]) -> i32 {
    let mut bits = 0i32;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits
}

/// Kafka's `max.request.partition.size.limit` default: the most partitions
/// one DescribeTopicPartitions answer carries, whatever the client asks.
const MAX_PARTITIONS_PER_DESCRIBE: i32 = 2000;

/// DescribeCluster: this node, as broker and controller. Kafka's broker
/// answers only the brokers endpoint type: controllers (2) get
/// MISMATCHED_ENDPOINT_TYPE, an unknown type UNSUPPORTED_ENDPOINT_TYPE
/// (INVALID_REQUEST at v0, which has neither code).
pub fn describe_cluster(
    state: &BrokerState,
    r: DescribeClusterRequest,
    version: i16,
    listener: &str,
) -> DescribeClusterResponse {
    let mut out = DescribeClusterResponse::default();
    out.endpoint_type = ENDPOINT_BROKERS;
    let refused = match r.endpoint_type {
        ENDPOINT_BROKERS => None,
        ENDPOINT_CONTROLLERS => Some((
            E::MismatchedEndpointType.code(),
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_string(),
        )),
        other => Some((
            E::UnsupportedEndpointType.code(),
            format!("Unsupported endpoint type {other}"),
        )),
    };
    if let Some((code, message)) = refused {
        out.error_code = if version == 0 {
            errors::INVALID_REQUEST
        } else {
            code
        };
        out.error_message = Some(str_bytes(&message));
        return out;
    }
    if let Some(c) = state.cluster() {
        let snapshot = c.cluster.snapshot();
        out.brokers = snapshot
            .brokers
            .values()
            .filter_map(|b| {
                let (host, port) = b.endpoint(listener)?;
                let mut broker = DescribeClusterBroker::default();
                broker.broker_id = BrokerId(b.id);
                broker.host = str_bytes(host);
                broker.port = i32::from(port);
                broker.rack = b.rack.as_deref().map(str_bytes);
                Some(broker)
            })
            .collect();
        out.cluster_id = str_bytes(&snapshot.cluster_id);
        out.controller_id = BrokerId(snapshot.controller.unwrap_or(-1));
    } else {
        let node = BrokerId(state.meta.node_id);
        let mut broker = DescribeClusterBroker::default();
        broker.broker_id = node;
        let (host, port) = state
            .endpoint(node.0, listener)
            .unwrap_or_else(|| (state.advertised.host.clone(), state.advertised.port));
        broker.host = str_bytes(&host);
        broker.port = i32::from(port);
        out.brokers = vec![broker];
        out.cluster_id = str_bytes(&state.meta.cluster_id);
        out.controller_id = node;
    }
    if r.include_cluster_authorized_operations {
        out.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    out
}

/// DescribeLogDirs: the data directory is the one log directory; each
/// partition's size is its segments' bytes (Kafka's `log.size`), its offset
/// lag 0 (the high watermark is the log end on one node). Null topics ask
/// for every partition; partitions asked for that do not exist are left
/// out, and so are topics left with none (as Kafka does). v4 adds the
/// volume's total and usable bytes (`statvfs`: blocks and blocks available
/// to unprivileged users, times the fragment size — Java's
/// `FileStore.getTotalSpace`/`getUsableSpace`).
pub fn describe_log_dirs(
    state: &BrokerState,
    r: DescribeLogDirsRequest,
    _: &Blocking,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeSet<(String, i32)>> = r.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect()
    });
    let mut topics = Vec::new();
    for (name, count) in state.log.topics() {
        let mut t = DescribeLogDirsTopic::default();
        t.name = TopicName(str_bytes(&name));
        for index in 0..count as i32 {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&(name.clone(), index)))
            {
                continue;
            }
            let Some(part) = partition(state, &name, index) else {
                continue; // deleted meanwhile
            };
            let mut p = DescribeLogDirsPartition::default();
            p.partition_index = index;
            p.partition_size = i64::try_from(part.size_bytes()).unwrap_or(i64::MAX);
            p.offset_lag = 0;
            p.is_future_key = false;
            t.partitions.push(p);
        }
        if !t.partitions.is_empty() {
            topics.push(t);
        }
    }
    let dir = &state.config.data_dir;
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(
        &std::path::absolute(dir)
            .unwrap_or_else(|_| dir.clone())
            .display()
            .to_string(),
    );
    match volume_space(dir) {
        Ok((total, usable)) => {
            result.topics = topics;
            result.total_bytes = total;
            result.usable_bytes = usable;
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), "describing the log directory: {e}");
            result.error_code = errors::KAFKA_STORAGE_ERROR;
        }
    }
    let mut out = DescribeLogDirsResponse::default();
    out.results = vec![result];
    out
}

/// (total, usable) bytes of the volume holding `dir`.
fn volume_space(dir: &Path) -> std::io::Result<(i64, i64)> {
    let st = rustix::fs::statvfs(dir)?;
    let bytes = |blocks: u64| {
        i64::try_from(u128::from(blocks) * u128::from(st.f_frsize)).unwrap_or(i64::MAX)
    };
    Ok((bytes(st.f_blocks), bytes(st.f_bavail)))
}

/// DescribeTopicPartitions (KIP-966), as Kafka's broker pages it: topics in
/// name order from the cursor's topic on (all topics when none are named),
/// the cursor's partition index first within its topic, at most
/// `response_partition_limit` partitions (capped at 2000) per answer, and a
/// next cursor where the answer stopped. Named topics that do not exist are
/// answered UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an
/// impossible name); a cursor naming a topic not in a non-empty list is an
/// INVALID_REQUEST for every topic named. Topics not `describable` (by the
/// principal asking, `authz`) are left out, or, named, answered
/// TOPIC_AUTHORIZATION_FAILED whether they exist or not; they take no room.
pub fn describe_topic_partitions(
    state: &BrokerState,
    r: DescribeTopicPartitionsRequest,
    describable: impl Fn(&str) -> bool,
) -> DescribeTopicPartitionsResponse {
    let mut out = DescribeTopicPartitionsResponse::default();
    let all = r.topics.is_empty();
    let (cursor_topic, cursor_index) = r.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index)
    });
    let names: BTreeSet<String> = if all {
        state.log.topics().into_iter().map(|(t, _)| t).collect()
    } else {
        r.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n.as_str() >= cursor_topic.as_str())
        .collect();
    if !all && r.cursor.is_some() && !names.contains(&cursor_topic) {
        out.topics = r
            .topics
            .iter()
            .map(|t| {
                let mut res = DescribeTopicPartitionsResponseTopic::default();
                res.name = Some(t.name.clone());
                res.error_code = errors::INVALID_REQUEST;
                res
            })
            .collect();
        return out;
    }
    // Kafka pages only the topics the principal may Describe; the named
    // ones it may not follow every page's topics, refused.
    let (names, refused): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| describable(n));
    let node = BrokerId(state.meta.node_id);
    let mut remaining = r.response_partition_limit.min(MAX_PARTITIONS_PER_DESCRIBE);
    for name in names {
        if remaining == 0 {
            // Every partition of the topics before is in: the next answer
            // starts at this topic's first partition.
            out.next_cursor = Some(cursor(&name, 0));
            break;
        }
        if remaining < 0 {
            break;
        }
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(TopicName(str_bytes(&name)));
        t.topic_authorized_operations = TOPIC_OPERATIONS;
        let Some(count) = state.log.partition_count(&name) else {
            if !all {
                t.error_code = match sluice_log::validate_topic_name(&name) {
                    Ok(()) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                    Err(e) => errors::topic_error_code(&e),
                };
                out.topics.push(t);
            }
            continue;
        };
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let start = if name == cursor_topic {
            cursor_index.max(0)
        } else {
            0
        };
        let upper = count.min(start.saturating_add(remaining));
        t.partitions = (start..upper)
            .map(|index| {
                let mut p = DescribeTopicPartitionsResponsePartition::default();
                p.partition_index = index;
                p.leader_id = node;
                // −1, as Metadata answers (no offset-validation round trips).
                p.leader_epoch = -1;
                p.replica_nodes = vec![node];
                p.isr_nodes = vec![node];
                p.eligible_leader_replicas = Some(Vec::new());
                p.last_known_elr = Some(Vec::new());
                p
            })
            .collect();
        let given = upper.saturating_sub(start).max(0);
        out.topics.push(t);
        if upper < count {
            out.next_cursor = Some(cursor(&name, upper));
            break;
        }
        remaining -= given;
    }
    if !all {
        out.topics.extend(refused.into_iter().map(|name| {
            let mut t = DescribeTopicPartitionsResponseTopic::default();
            t.name = Some(TopicName(str_bytes(&name)));
            t.error_code = errors::TOPIC_AUTHORIZATION_FAILED;
            t
        }));
    }
    out
}

fn cursor(topic: &str, partition_index: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = TopicName(str_bytes(topic));
    c.partition_index = partition_index;
    c
}

/// DeleteRecords (KIP-107): moves each partition's log start offset up to
/// the offset given, −1 meaning the high watermark; the answer's low
/// watermark is the log start after it. An offset past the high watermark,
/// or negative other than −1, is OFFSET_OUT_OF_RANGE; one at or below the
/// log start changes nothing; a topic whose `cleanup.policy` lacks
/// `delete` is POLICY_VIOLATION. The new start is on disk before the
/// answer. Errors carry low watermark −1, as Kafka's do.
pub fn delete_records(
    state: &BrokerState,
    r: DeleteRecordsRequest,
    _: &Blocking,
) -> DeleteRecordsResponse {
    const HIGH_WATERMARK: i64 = -1;
    let mut out = DeleteRecordsResponse::default();
    // Topics keep the order they were named in; a topic named twice is
    // answered once, with all its partitions.
    let mut by_topic: BTreeMap<String, usize> = BTreeMap::new();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let slot = *by_topic.entry(name.clone()).or_insert_with(|| {
            let mut t = DeleteRecordsTopicResult::default();
            t.name = topic.name.clone();
            out.topics.push(t);
            out.topics.len() - 1
        });
        for dp in topic.partitions {
            let mut p = DeleteRecordsPartitionResult::default();
            p.partition_index = dp.partition_index;
            p.low_watermark = -1;
            let outcome = match partition(state, &name, dp.partition_index) {
                None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
                // Kafka refuses it where cleanup.policy lacks `delete`.
                Some(part) if !part.config().cleanup_policy.delete => {
                    Err(E::PolicyViolation.code())
                }
                Some(part) => {
                    let offset = if dp.offset == HIGH_WATERMARK {
                        part.log_end()
                    } else {
                        dp.offset
                    };
                    part.delete_records_before(offset).map_err(|e| match e {
                        ReadError::OffsetOutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
                        ReadError::Io { .. } => {
                            tracing::error!(topic = %name, partition = dp.partition_index, "DeleteRecords failed: {e}");
                            errors::KAFKA_STORAGE_ERROR
                        }
                    })
                }
            };
            match outcome {
                Ok(low_watermark) => p.low_watermark = low_watermark,
                Err(code) => p.error_code = code,
            }
            out.topics[slot].partitions.push(p);
        }
    }
    out
}

/// ElectLeaders v0–v2 (KIP-183, KIP-460): the preferred replica (0) or,
/// with no live in-sync leader, any live replica (1, unclean) takes the
/// leadership, decided by the controller. Null partitions ask for every
/// partition; the answer then names only those an election was tried for.
/// A single broker leads everything already: ELECTION_NOT_NEEDED.
pub async fn elect_leaders(
    state: &BrokerState,
    r: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let election_type = if version >= 1 { r.election_type } else { 0 };
    let every = r.topic_partitions.is_none();
    let asked: Vec<(String, Vec<i32>)> = match r.topic_partitions {
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => match state.cluster() {
            Some(c) => c
                .cluster
                .snapshot()
                .topics
                .iter()
                .map(|(name, t)| (name.clone(), (0..t.replicas.len() as i32).collect()))
                .collect(),
            None => state
                .log
                .topics()
                .into_iter()
                .map(|(name, n)| (name, (0..n as i32).collect()))
                .collect(),
        },
    };
    let timeout = std::time::Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0).max(1));
    let mut out = ElectLeadersResponse::default();
    for (topic, partitions) in asked {
        let mut result = ReplicaElectionResult::default();
        result.topic = TopicName(str_bytes(&topic));
        for p in partitions {
            let code = match state.cluster() {
                Some(c) => c
                    .cluster
                    .elect_leader(&topic, p, election_type, timeout)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(topic = %topic, partition = p, "ElectLeaders: {e}");
                        E::RequestTimedOut.code()
                    }),
                None if u32::try_from(p)
                    .ok()
                    .and_then(|i| state.log.partition(&topic, i))
                    .is_some() =>
                {
                    E::ElectionNotNeeded.code()
                }
                None => errors::UNKNOWN_TOPIC_OR_PARTITION,
            };
            if every && code == E::ElectionNotNeeded.code() {
                continue;
            }
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            pr.error_code = code;
            if code != errors::NONE {
                pr.error_message = E::try_from_code(code).map(|e| str_bytes(&e.to_string()));
            }
            result.partition_result.push(pr);
        }
        if !(every && result.partition_result.is_empty()) {
            out.replica_election_results.push(result);
        }
    }
    out
}
