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
use crate::state::BrokerState;

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
        if let Err(e) = state.log.delete_topic(name.0.as_str()) {
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
