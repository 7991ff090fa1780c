//! Topic admin: CreateTopics, DeleteTopics, CreatePartitions, and the
//! lookup (with auto-creation) that Produce and Metadata share.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use sluice_log::{Partition, TopicError};

use super::errors::{self, topic_error_code};
use super::{Blocking, configs, str_bytes};
use crate::cluster::ClusterError;
use crate::coordinator::is_internal_topic;
use crate::coordinator::offsets::OFFSETS_TOPIC;
use crate::coordinator::transactions::TRANSACTION_TOPIC;
use crate::state::{BrokerState, InCluster};
use kafka_protocol::ResponseError;

/// Why `__consumer_offsets` cannot be deleted or grown: groups hash onto
/// its partitions, and their committed offsets live there.
const INTERNAL_TOPIC_WHY: &str = "__consumer_offsets is internal: it holds every group's committed offsets, hashed onto its partitions";

/// A partition of a topic, if both exist.
pub fn partition(state: &BrokerState, topic: &str, index: i32) -> Option<Arc<Partition>> {
    u32::try_from(index)
        .ok()
        .and_then(|i| state.log.partition(topic, i))
}

/// Looks a topic up, creating it on first use when allowed. Returns the
/// partition count, or a Kafka error code.
pub fn ensure_topic(
    state: &BrokerState,
    name: &str,
    create: bool,
    _: &Blocking,
) -> Result<u32, i16> {
    if let Some(n) = state.log.partition_count(name) {
        return Ok(n);
    }
    if let Err(e) = sluice_log::validate_topic_name(name) {
        return Err(topic_error_code(&e));
    }
    if !create {
        return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if name == OFFSETS_TOPIC || name == TRANSACTION_TOPIC {
        // Made by its coordinator with its own partition count and
        // configs; a client naming it first gets it made that way.
        let kind = if name == OFFSETS_TOPIC {
            super::coordination::Internal::Offsets
        } else {
            super::coordination::Internal::Transactions
        };
        super::coordination::ensure_local_topic(state, kind)
            .map_err(|_| errors::UNKNOWN_TOPIC_OR_PARTITION)?;
        return state
            .log
            .partition_count(name)
            .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let partitions = state.config.default_partitions.max(1);
    match state.log.create_topic(name, partitions) {
        Ok(()) => {
            tracing::info!(topic = name, "auto-created topic");
            Ok(partitions)
        }
        // Another connection created it first.
        Err(TopicError::Exists(_)) => state
            .log
            .partition_count(name)
            .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
        Err(e) => Err(topic_error_code(&e)),
    }
}

/// CreateTopics v2–7: partitions, replication factor 1 (one broker), and
/// config overrides checked before anything is made (INVALID_CONFIG naming
/// the config). v5+ answers with the configs the topic runs with.
pub fn create_topics(
    state: &BrokerState,
    r: CreateTopicsRequest,
    version: i16,
    _: &Blocking,
) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = topic.name.clone();
        let partitions = if topic.num_partitions == -1 {
            state.config.default_partitions as i32
        } else {
            topic.num_partitions
        };
        res.num_partitions = partitions;
        res.replication_factor = 1;
        let outcome = if partitions <= 0 {
            Err((
                errors::INVALID_PARTITIONS,
                "partition count must be positive".to_string(),
            ))
        } else if topic.replication_factor > 1 {
            Err((
                errors::INVALID_REPLICATION_FACTOR,
                "one broker: replication factor must be 1".to_string(),
            ))
        } else if let Err(e) = sluice_log::validate_topic_name(&name) {
            Err((topic_error_code(&e), e.to_string()))
        } else {
            configs::create_topic_overrides(&topic.configs).and_then(|overrides| {
                if r.validate_only {
                    if state.log.partition_count(&name).is_some() {
                        return Err((
                            errors::TOPIC_ALREADY_EXISTS,
                            format!("topic {name:?} already exists"),
                        ));
                    }
                    sluice_log::topic_config::resolve(&state.log.config(), &overrides)
                        .map(|_| ())
                        .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))
                } else {
                    state
                        .log
                        .create_topic_with(&name, partitions as u32, &overrides)
                        .map_err(|e| (topic_error_code(&e), e.to_string()))
                }
            })
        };
        match outcome {
            Err((code, message)) => {
                res.error_code = code;
                res.error_message = Some(str_bytes(&message));
            }
            Ok(()) if version >= 5 && !r.validate_only => {
                res.configs = Some(configs::created_topic_configs(state, &name));
            }
            Ok(()) => {}
        }
        out.topics.push(res);
    }
    out
}

pub fn delete_topics(
    state: &BrokerState,
    r: DeleteTopicsRequest,
    _: &Blocking,
) -> DeleteTopicsResponse {
    let mut names: Vec<TopicName> = r.topic_names;
    names.extend(r.topics.into_iter().filter_map(|t| t.name));
    let mut out = DeleteTopicsResponse::default();
    for name in names {
        let mut res = DeletableTopicResult::default();
        if is_internal_topic(name.0.as_str()) {
            res.error_code = errors::INVALID_REQUEST;
            res.error_message = Some(str_bytes(INTERNAL_TOPIC_WHY));
        } else if let Err(e) = state.log.delete_topic(name.0.as_str()) {
            res.error_code = topic_error_code(&e);
            res.error_message = Some(str_bytes(&e.to_string()));
        }
        res.name = Some(name);
        out.responses.push(res);
    }
    out
}

pub fn create_partitions(
    state: &BrokerState,
    r: CreatePartitionsRequest,
    _: &Blocking,
) -> CreatePartitionsResponse {
    let mut out = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default();
        let name = t.name.0.to_string();
        res.name = t.name;
        let outcome = match state.log.partition_count(&name) {
            _ if is_internal_topic(&name) => {
                Err((errors::INVALID_REQUEST, INTERNAL_TOPIC_WHY.to_string()))
            }
            None => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic {name:?}"),
            )),
            Some(n) if t.count <= n as i32 => Err((
                errors::INVALID_PARTITIONS,
                format!("topic {name:?} has {n} partitions; the count can only grow"),
            )),
            Some(_) if r.validate_only => Ok(()),
            Some(_) => state
                .log
                .add_partitions(&name, t.count as u32)
                .map_err(|e| (topic_error_code(&e), e.to_string())),
        };
        if let Err((code, message)) = outcome {
            res.error_code = code;
            res.error_message = Some(str_bytes(&message));
        }
        out.results.push(res);
    }
    out
}

/// A cluster refusal as the (code, message) admin responses carry.
pub(super) fn cluster_refusal(e: ClusterError) -> (i16, String) {
    let code = match &e {
        ClusterError::TopicExists => errors::TOPIC_ALREADY_EXISTS,
        ClusterError::UnknownTopic => errors::UNKNOWN_TOPIC_OR_PARTITION,
        ClusterError::InvalidReplicationFactor(_) => errors::INVALID_REPLICATION_FACTOR,
        ClusterError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment.code(),
        ClusterError::InvalidPartitions(_) => errors::INVALID_PARTITIONS,
        _ => ResponseError::RequestTimedOut.code(),
    };
    (code, e.to_string())
}

/// Waits (up to `timeout`) until this broker's view of the cluster
/// satisfies `ready`, so a Metadata right after an admin call sees it.
async fn await_view(
    c: &InCluster,
    timeout: std::time::Duration,
    ready: impl Fn(&crate::cluster::ClusterSnapshot) -> bool,
) {
    let mut rx = c.cluster.subscribe();
    let _ = tokio::time::timeout(timeout, async {
        loop {
            if ready(&rx.borrow_and_update()) || rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// CreateTopics in a cluster: the topic (replica assignment and configs)
/// is written to etcd, where the controller gives its partitions leaders
/// and the replicas' brokers create them. Replication factor −1 takes
/// `--default-replication-factor`; a manual assignment is honoured.
pub async fn cluster_create_topics(
    state: &BrokerState,
    c: &InCluster,
    r: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    let timeout = std::time::Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0));
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = topic.name.clone();
        let assignment: Option<Vec<Vec<i32>>> = (!topic.assignments.is_empty()).then(|| {
            let mut a: Vec<_> = topic
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            a.sort_by_key(|(i, _)| *i);
            a.into_iter().map(|(_, b)| b).collect()
        });
        let partitions = if topic.num_partitions == -1 {
            assignment
                .as_ref()
                .map_or(state.config.default_partitions as i32, |a| a.len() as i32)
        } else {
            topic.num_partitions
        };
        let outcome = async {
            if assignment.is_some()
                && (topic.num_partitions != -1 || topic.replication_factor != -1)
            {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    "both a replica assignment and a partition count or replication factor"
                        .to_string(),
                ));
            }
            if partitions <= 0 {
                return Err((
                    errors::INVALID_PARTITIONS,
                    "partition count must be positive".to_string(),
                ));
            }
            sluice_log::validate_topic_name(&name)
                .map_err(|e| (topic_error_code(&e), e.to_string()))?;
            let overrides = configs::create_topic_overrides(&topic.configs)?;
            sluice_log::topic_config::resolve(&state.log.config(), &overrides)
                .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))?;
            c.cluster
                .create_topic(
                    &name,
                    partitions,
                    topic.replication_factor,
                    assignment.clone(),
                    overrides,
                    r.validate_only,
                )
                .await
                .map_err(cluster_refusal)
        }
        .await;
        match outcome {
            Err((code, message)) => {
                res.error_code = code;
                res.error_message = Some(str_bytes(&message));
            }
            Ok(info) => {
                res.num_partitions = info.replicas.len() as i32;
                res.replication_factor = info.replicas.first().map_or(0, |r| r.len() as i16);
                res.topic_id = info.id;
                if !r.validate_only {
                    await_view(c, timeout, |s| {
                        (0..info.replicas.len() as i32)
                            .all(|p| s.partitions.contains_key(&(name.clone(), p)))
                    })
                    .await;
                    if version >= 5 {
                        res.configs = Some(configs::created_topic_configs(state, &name));
                    }
                }
            }
        }
        out.topics.push(res);
    }
    out
}

/// DeleteTopics in a cluster: removed from etcd; every broker deletes its
/// replicas when it sees it gone.
pub async fn cluster_delete_topics(c: &InCluster, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut names: Vec<TopicName> = r.topic_names;
    names.extend(r.topics.into_iter().filter_map(|t| t.name));
    let timeout = std::time::Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0));
    let mut out = DeleteTopicsResponse::default();
    for name in names {
        let mut res = DeletableTopicResult::default();
        let topic = name.0.to_string();
        if is_internal_topic(&topic) {
            res.error_code = errors::INVALID_REQUEST;
            res.error_message = Some(str_bytes(INTERNAL_TOPIC_WHY));
            res.name = Some(name);
            out.responses.push(res);
            continue;
        }
        match c.cluster.delete_topic(&topic).await {
            Ok(()) => await_view(c, timeout, |s| !s.topics.contains_key(&topic)).await,
            Err(e) => {
                let (code, message) = cluster_refusal(e);
                res.error_code = code;
                res.error_message = Some(str_bytes(&message));
            }
        }
        res.name = Some(name);
        out.responses.push(res);
    }
    out
}

/// CreatePartitions in a cluster: the new partitions' assignment goes to
/// etcd; the controller gives them leaders.
pub async fn cluster_create_partitions(
    c: &InCluster,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut out = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default();
        let name = t.name.0.to_string();
        res.name = t.name;
        let assignment = t.assignments.map(|a| {
            a.into_iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        if is_internal_topic(&name) {
            res.error_code = errors::INVALID_REQUEST;
            res.error_message = Some(str_bytes(INTERNAL_TOPIC_WHY));
        } else if let Err(e) = c
            .cluster
            .create_partitions(&name, t.count, assignment, r.validate_only)
            .await
        {
            let (code, message) = cluster_refusal(e);
            res.error_code = code;
            res.error_message = Some(str_bytes(&message));
        }
        out.results.push(res);
    }
    out
}
