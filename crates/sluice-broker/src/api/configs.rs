//! Configs: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for
//! topics (their overrides, `sluice_log::topic_config`) and for the broker
//! (its static settings, read-only, and the dynamic log defaults Kafka lets
//! an operator change at run time, `crate::broker_configs`), and the config
//! part of CreateTopics.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_log::topic_config::{self, ConfigType, TOPIC_CONFIGS, TopicConfigDef};
use sluice_log::{LogConfig, TopicError, TopicOverrides};

use super::errors::{self, topic_error_code};
use super::{Blocking, str_bytes};
use crate::broker_configs::{BrokerOverrides, Scope, topic_config_for};
use crate::state::BrokerState;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// DescribeConfigs sources.
const TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// A resource's refusal: (error code, message).
type Refusal = (i16, String);

/// One described config before it is put into a response.
struct Entry {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    kind: ConfigType,
    doc: &'static str,
    synonyms: Vec<(String, String, i8)>,
}

fn empty() -> TopicOverrides {
    TopicOverrides::new()
}

/// The value a topic config has with no override at all, and where that
/// comes from: a dynamic broker config, a broker flag, or Kafka's default.
fn inherited(state: &BrokerState, def: &TopicConfigDef) -> (String, i8, Vec<(String, String, i8)>) {
    let mut synonyms = Vec::new();
    let default =
        topic_config::value_of(&LogConfig::default(), &empty(), def.name).unwrap_or_default();
    let static_value =
        topic_config::value_of(&state.config.log, &empty(), def.name).unwrap_or_default();
    if let Some((scope, value)) = state.dynamic.source_of(def.broker_synonym) {
        let source = match scope {
            Scope::Broker => DYNAMIC_BROKER_CONFIG,
            Scope::ClusterDefault => DYNAMIC_DEFAULT_BROKER_CONFIG,
        };
        synonyms.push((def.broker_synonym.to_string(), value, source));
    }
    if static_value != default {
        synonyms.push((
            def.broker_synonym.to_string(),
            static_value,
            STATIC_BROKER_CONFIG,
        ));
    }
    synonyms.push((def.broker_synonym.to_string(), default, DEFAULT_CONFIG));
    let effective =
        topic_config::value_of(&state.log.config(), &empty(), def.name).unwrap_or_default();
    let source = synonyms.first().map_or(DEFAULT_CONFIG, |s| s.2);
    (effective, source, synonyms)
}

/// A topic's overrides: in a cluster from etcd (a broker need not hold a
/// replica of every topic), else from the data directory. None: no topic.
fn topic_overrides(state: &BrokerState, topic: &str) -> Option<TopicOverrides> {
    match state.cluster() {
        Some(c) => c
            .cluster
            .snapshot()
            .topics
            .get(topic)
            .map(|t| t.configs.clone()),
        None => state.log.topic_overrides(topic),
    }
}

fn topic_entries(state: &BrokerState, topic: &str) -> Option<Vec<Entry>> {
    let overrides = topic_overrides(state, topic)?;
    let config = match state.cluster() {
        Some(_) => topic_config::resolve(&state.log.config(), &overrides).ok()?,
        None => state.log.partition(topic, 0)?.config().as_ref().clone(),
    };
    Some(
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let (_, inherited_source, mut synonyms) = inherited(state, def);
                let source = if let Some(v) = overrides.get(def.name) {
                    synonyms.insert(0, (def.name.to_string(), v.clone(), TOPIC_CONFIG));
                    TOPIC_CONFIG
                } else {
                    inherited_source
                };
                Entry {
                    name: def.name.to_string(),
                    value: topic_config::value_of(&config, &overrides, def.name),
                    source,
                    read_only: false,
                    kind: def.kind,
                    doc: def.doc,
                    synonyms,
                }
            })
            .collect(),
    )
}

/// The broker's settings: every dynamic log default (by its broker name)
/// and the static settings Sluice has, read-only.
fn broker_entries(state: &BrokerState) -> Vec<Entry> {
    let mut out: Vec<Entry> = TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source, synonyms) = inherited(state, def);
            Entry {
                name: def.broker_synonym.to_string(),
                value: Some(value),
                source,
                read_only: false,
                kind: def.kind,
                doc: def.doc,
                synonyms,
            }
        })
        .collect();
    let c = &state.config;
    let fixed = [
        (
            "broker.id",
            state.meta.node_id.to_string(),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "node.id",
            state.meta.node_id.to_string(),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            ConfigType::String,
            "The data directory.",
        ),
        (
            "advertised.listeners",
            state
                .endpoints
                .iter()
                .map(|e| {
                    let host = if e.host.contains(':') {
                        format!("[{}]", e.host)
                    } else {
                        e.host.clone()
                    };
                    format!("{}://{host}:{}", e.name, e.port)
                })
                .collect::<Vec<_>>()
                .join(","),
            ConfigType::String,
            "The addresses clients are given, per listener (--advertised-listener).",
        ),
        (
            "listeners",
            c.listeners
                .iter()
                .map(|l| format!("{}://{}", l.name, l.bind))
                .collect::<Vec<_>>()
                .join(","),
            ConfigType::String,
            "The addresses the broker listens on (--listener, --listen).",
        ),
        (
            "inter.broker.listener.name",
            c.inter_broker_listener.clone(),
            ConfigType::String,
            "The listener other brokers connect to.",
        ),
        (
            "listener.security.protocol.map",
            c.listeners
                .iter()
                .map(|l| format!("{}:{}", l.name, l.protocol))
                .collect::<Vec<_>>()
                .join(","),
            ConfigType::String,
            "Each listener's security protocol.",
        ),
        (
            "num.partitions",
            c.default_partitions.to_string(),
            ConfigType::Int,
            "Partitions of an auto-created topic.",
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Whether naming a topic creates it.",
        ),
        (
            "default.replication.factor",
            "1".into(),
            ConfigType::Int,
            "One broker: every topic has one replica.",
        ),
        (
            "socket.request.max.bytes",
            c.max_frame_bytes.to_string(),
            ConfigType::Int,
            "The largest request frame accepted.",
        ),
        (
            "queued.max.request.bytes",
            c.max_buffered_request_bytes.to_string(),
            ConfigType::Long,
            "Request bytes all connections may hold at once.",
        ),
        (
            "max.connections",
            c.max_connections.to_string(),
            ConfigType::Int,
            "Most client connections at once.",
        ),
        (
            "max.connections.per.ip",
            c.max_connections_per_ip.to_string(),
            ConfigType::Int,
            "Most connections from one address.",
        ),
        (
            "connections.max.idle.ms",
            c.idle_timeout.as_millis().to_string(),
            ConfigType::Long,
            "Idle connections are closed after this.",
        ),
        (
            "offset.metadata.max.bytes",
            c.offset_metadata_max_bytes.to_string(),
            ConfigType::Int,
            "Longest OffsetCommit metadata string.",
        ),
        (
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay.as_millis().to_string(),
            ConfigType::Int,
            "How long a new group waits for members before its first rebalance.",
        ),
        (
            "offsets.retention.minutes",
            (c.offsets_retention.as_secs() / 60).to_string(),
            ConfigType::Int,
            "How long an empty group's committed offsets are kept.",
        ),
        (
            "offsets.topic.num.partitions",
            c.offsets_topic_num_partitions.to_string(),
            ConfigType::Int,
            "Partitions of __consumer_offsets.",
        ),
        (
            "offsets.topic.replication.factor",
            c.offsets_topic_replication_factor.to_string(),
            ConfigType::Int,
            "Replicas of __consumer_offsets in a cluster.",
        ),
        (
            "offsets.commit.timeout.ms",
            c.offsets_commit_timeout.as_millis().to_string(),
            ConfigType::Int,
            "How long an offset commit waits for the offsets partition's ISR.",
        ),
        (
            "transaction.max.timeout.ms",
            c.transaction_max_timeout_ms.to_string(),
            ConfigType::Int,
            "The longest transaction timeout a producer may ask for.",
        ),
        (
            "transaction.state.log.num.partitions",
            c.transaction_state_log_num_partitions.to_string(),
            ConfigType::Int,
            "Partitions of __transaction_state.",
        ),
        (
            "transaction.state.log.replication.factor",
            c.transaction_state_log_replication_factor.to_string(),
            ConfigType::Int,
            "Replicas of __transaction_state in a cluster.",
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            c.transaction_abort_interval.as_millis().to_string(),
            ConfigType::Int,
            "How often transactions open past their timeout are aborted.",
        ),
    ];
    let cleaner = c.cleaner.clone();
    let cleaner_entries = [
        (
            "log.cleaner.enable",
            cleaner.is_some().to_string(),
            ConfigType::Boolean,
            "Whether the log cleaner compacts topics with cleanup.policy=compact.",
        ),
        (
            "log.cleaner.threads",
            cleaner.as_ref().map_or(0, |c| c.threads).to_string(),
            ConfigType::Int,
            "Cleaner threads.",
        ),
        (
            "log.cleaner.dedupe.buffer.size",
            cleaner
                .as_ref()
                .map_or(0, |c| c.dedupe_buffer_bytes)
                .to_string(),
            ConfigType::Long,
            "Memory for the cleaner's key → offset map, all threads together.",
        ),
        (
            "log.cleaner.io.max.bytes.per.second",
            cleaner
                .as_ref()
                .and_then(|c| c.io_max_bytes_per_second)
                .map_or("1.7976931348623157E308".into(), |b| b.to_string()),
            ConfigType::Double,
            "Bytes per second the cleaner may read and write.",
        ),
        (
            "log.cleaner.backoff.ms",
            cleaner
                .as_ref()
                .map_or(0, |c| c.backoff.as_millis() as u64)
                .to_string(),
            ConfigType::Long,
            "How long a cleaner thread sleeps when no log is due.",
        ),
    ];
    out.extend(
        fixed
            .into_iter()
            .chain(cleaner_entries)
            .map(|(name, value, kind, doc)| Entry {
                name: name.to_string(),
                value: Some(value.clone()),
                source: STATIC_BROKER_CONFIG,
                read_only: true,
                kind,
                doc,
                synonyms: vec![(name.to_string(), value, STATIC_BROKER_CONFIG)],
            }),
    );
    out
}

fn is_this_broker(state: &BrokerState, name: &str) -> bool {
    name.is_empty() || name == state.meta.node_id.to_string()
}

/// DescribeConfigs v1–4 for topics and the broker.
pub fn describe_configs(
    state: &BrokerState,
    r: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = res.resource_type;
        result.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let entries = match res.resource_type {
            TOPIC => match topic_entries(state, name) {
                Some(e) => e,
                None => {
                    result.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    result.error_message = Some(str_bytes(&format!("no topic {name:?}")));
                    Vec::new()
                }
            },
            BROKER if is_this_broker(state, name) => broker_entries(state),
            BROKER => {
                result.error_code = errors::INVALID_REQUEST;
                result.error_message = Some(str_bytes(&format!("no broker {name:?} here")));
                Vec::new()
            }
            other => {
                result.error_code = errors::INVALID_REQUEST;
                result.error_message = Some(str_bytes(&format!(
                    "resource type {other} is not described by this broker"
                )));
                Vec::new()
            }
        };
        for e in entries {
            // Null (or an empty list) asks for every config.
            if let Some(keys) = &res.configuration_keys
                && !keys.is_empty()
                && !keys.iter().any(|k| k.as_str() == e.name)
            {
                continue;
            }
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(&e.name);
            c.value = e.value.as_deref().map(str_bytes);
            c.read_only = e.read_only;
            c.config_source = e.source;
            c.is_sensitive = false;
            if version >= 1 && r.include_synonyms {
                c.synonyms = e
                    .synonyms
                    .into_iter()
                    .map(|(name, value, source)| {
                        let mut s = DescribeConfigsSynonym::default();
                        s.name = str_bytes(&name);
                        s.value = Some(str_bytes(&value));
                        s.source = source;
                        s
                    })
                    .collect();
            }
            if version >= 3 {
                c.config_type = e.kind as i8;
                if r.include_documentation {
                    c.documentation = Some(str_bytes(e.doc));
                }
            }
            result.configs.push(c);
        }
        out.results.push(result);
    }
    out
}

/// A topic's overrides after `ops` (name, operation, value) on `current`.
fn incremental(
    state: &BrokerState,
    topic: &str,
    current: &TopicOverrides,
    ops: &[(String, i8, Option<String>)],
) -> Result<TopicOverrides, Refusal> {
    let mut next = current.clone();
    for (name, op, value) in ops {
        let def = topic_config::definition(name).ok_or_else(|| {
            (
                errors::INVALID_CONFIG,
                format!("Unknown topic config name: {name}"),
            )
        })?;
        match *op {
            SET => {
                let v = value.clone().ok_or_else(|| {
                    (
                        errors::INVALID_REQUEST,
                        format!("SET {name} without a value"),
                    )
                })?;
                next.insert(name.clone(), v);
            }
            DELETE => {
                next.remove(name);
            }
            APPEND | SUBTRACT => {
                if def.kind != ConfigType::List {
                    return Err((
                        errors::INVALID_CONFIG,
                        format!("Config value append is not allowed for config key: {name}"),
                    ));
                }
                let have = match next.get(name) {
                    Some(v) => v.clone(),
                    None => {
                        let config = state
                            .log
                            .partition(topic, 0)
                            .map(|p| p.config())
                            .unwrap_or_else(|| std::sync::Arc::new(state.log.config()));
                        topic_config::value_of(&config, &next, name).unwrap_or_default()
                    }
                };
                let mut items: Vec<String> = have
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                let given: Vec<String> = value
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if *op == APPEND {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                next.insert(name.clone(), items.join(","));
            }
            other => {
                return Err((
                    errors::INVALID_REQUEST,
                    format!("unknown config operation {other}"),
                ));
            }
        }
    }
    Ok(next)
}

/// Checks a topic's new overrides and, unless `validate_only`, puts them in
/// force.
fn alter_topic(
    state: &BrokerState,
    topic: &str,
    next: &TopicOverrides,
    validate_only: bool,
) -> Result<(), Refusal> {
    if validate_only || state.cluster().is_some() {
        topic_config::resolve(&state.log.config(), next)
            .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))?;
    }
    if validate_only {
        return Ok(());
    }
    if let Some(c) = state.cluster() {
        // In a cluster the configs live in etcd; every broker holding a
        // replica puts them in force when it sees them change.
        return tokio::runtime::Handle::current()
            .block_on(c.cluster.alter_topic_configs(topic, next.clone()))
            .map_err(super::topics::cluster_refusal);
    }
    state
        .log
        .alter_topic_config(topic, next)
        .map_err(|e| (topic_error_code(&e), e.to_string()))
}

/// Checks the broker's new dynamic set for `scope` and, unless
/// `validate_only`, stores it and puts the new defaults in force.
fn alter_broker(
    state: &BrokerState,
    scope: Scope,
    next: BrokerOverrides,
    validate_only: bool,
) -> Result<(), Refusal> {
    for name in next.keys() {
        if topic_config_for(name).is_none() {
            return Err((
                errors::INVALID_REQUEST,
                format!("Cannot update these configs dynamically: {name}"),
            ));
        }
    }
    let defaults = state
        .dynamic
        .resolve_with(&state.config.log, scope, &next)
        .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))?;
    if validate_only {
        return Ok(());
    }
    state
        .dynamic
        .store(scope, next)
        .map_err(|e| (errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
    state.log.set_defaults(defaults).map_err(|e| match e {
        TopicError::InvalidConfig(e) => (errors::INVALID_CONFIG, e.to_string()),
        e => (topic_error_code(&e), e.to_string()),
    })
}

fn broker_scope(state: &BrokerState, name: &str) -> Result<Scope, Refusal> {
    if name.is_empty() {
        Ok(Scope::ClusterDefault)
    } else if name == state.meta.node_id.to_string() {
        Ok(Scope::Broker)
    } else {
        Err((errors::INVALID_REQUEST, format!("no broker {name:?} here")))
    }
}

/// A resource's answer: no error, or its code and message.
fn error_fields(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, message)) => (code, Some(str_bytes(&message))),
    }
}

fn not_alterable(resource_type: i8) -> Refusal {
    (
        errors::INVALID_REQUEST,
        format!("resource type {resource_type} cannot be altered here"),
    )
}

/// Duplicate names in one resource are refused, as Kafka refuses them.
fn no_duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err((
                errors::INVALID_REQUEST,
                format!("Error due to duplicate config keys: {n}"),
            ));
        }
    }
    Ok(())
}

/// IncrementalAlterConfigs v0–1 (SET, DELETE, APPEND, SUBTRACT).
pub fn incremental_alter_configs(
    state: &BrokerState,
    r: IncrementalAlterConfigsRequest,
    _: &Blocking,
) -> IncrementalAlterConfigsResponse {
    let mut out = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let name = res.resource_name.to_string();
        let ops: Vec<(String, i8, Option<String>)> = res
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = no_duplicates(ops.iter().map(|o| o.0.as_str())).and_then(|()| {
            match res.resource_type {
                TOPIC => {
                    let current = topic_overrides(state, &name).ok_or_else(|| {
                        (
                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("no topic {name:?}"),
                        )
                    })?;
                    let next = incremental(state, &name, &current, &ops)?;
                    alter_topic(state, &name, &next, r.validate_only)
                }
                BROKER => {
                    let scope = broker_scope(state, &name)?;
                    let mut next = state.dynamic.get(scope);
                    for (key, op, value) in &ops {
                        match (*op, value) {
                            (SET, Some(v)) => {
                                next.insert(key.clone(), v.clone());
                            }
                            (DELETE, _) => {
                                next.remove(key);
                            }
                            _ => {
                                return Err((
                                    errors::INVALID_REQUEST,
                                    format!(
                                        "operation {op} on broker config {key} is not supported"
                                    ),
                                ));
                            }
                        }
                    }
                    alter_broker(state, scope, next, r.validate_only)
                }
                other => Err(not_alterable(other)),
            }
        });
        let mut rr = kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        rr.resource_type = res.resource_type;
        rr.resource_name = res.resource_name;
        (rr.error_code, rr.error_message) = error_fields(outcome);
        out.responses.push(rr);
    }
    out
}

/// AlterConfigs v0–2: the resource's whole set of overrides is replaced
/// (names not given go back to their inherited values).
pub fn alter_configs(
    state: &BrokerState,
    r: AlterConfigsRequest,
    _: &Blocking,
) -> AlterConfigsResponse {
    let mut out = AlterConfigsResponse::default();
    for res in r.resources {
        let name = res.resource_name.to_string();
        let given: BTreeMap<String, Option<String>> = res
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let outcome = no_duplicates(res.configs.iter().map(|c| c.name.as_str())).and_then(|()| {
            // A null value removes the setting, as in Kafka.
            let set: BTreeMap<String, String> = given
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            match res.resource_type {
                TOPIC => {
                    if topic_overrides(state, &name).is_none() {
                        return Err((
                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("no topic {name:?}"),
                        ));
                    }
                    alter_topic(state, &name, &set, r.validate_only)
                }
                BROKER => {
                    let scope = broker_scope(state, &name)?;
                    alter_broker(state, scope, set, r.validate_only)
                }
                other => Err(not_alterable(other)),
            }
        });
        let mut rr =
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            );
        rr.resource_type = res.resource_type;
        rr.resource_name = res.resource_name;
        (rr.error_code, rr.error_message) = error_fields(outcome);
        out.responses.push(rr);
    }
    out
}

/// The configs a CreateTopics request gives one topic, as overrides.
pub fn create_topic_overrides(
    configs: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<TopicOverrides, Refusal> {
    no_duplicates(configs.iter().map(|c| c.name.as_str()))?;
    configs
        .iter()
        .map(|c| match &c.value {
            Some(v) => Ok((c.name.to_string(), v.to_string())),
            None => Err((
                errors::INVALID_CONFIG,
                format!("Null value not supported for topic configs: {}", c.name),
            )),
        })
        .collect()
}

/// The configs a created topic runs with, for CreateTopics v5+.
pub fn created_topic_configs(state: &BrokerState, topic: &str) -> Vec<CreatableTopicConfigs> {
    topic_entries(state, topic)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut c = CreatableTopicConfigs::default();
            c.name = StrBytes::from_string(e.name);
            c.value = e.value.map(StrBytes::from_string);
            c.read_only = e.read_only;
            c.config_source = e.source;
            c.is_sensitive = false;
            c
        })
        .collect()
}
