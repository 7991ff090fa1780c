//! DescribeConfigs: the settings a topic or the broker runs with, as Kafka
//! names them (read-only until topic configs land).

use std::time::Duration;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_log::FlushPolicy;

use super::{errors, str_bytes};
use crate::state::BrokerState;

/// The configuration a topic or the broker reports, as Kafka names it.
fn config_entries(state: &BrokerState, broker: bool) -> Vec<(&'static str, String)> {
    let log = &state.config.log;
    let ms = |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
    let mut entries = vec![
        ("cleanup.policy", "delete".to_string()),
        ("compression.type", "producer".to_string()),
        ("max.message.bytes", log.max_batch_bytes.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("min.insync.replicas", "1".to_string()),
        (
            "retention.bytes",
            log.retention_bytes
                .map_or("-1".to_string(), |b| b.to_string()),
        ),
        ("retention.ms", ms(log.retention_age)),
        ("segment.bytes", log.segment_bytes.to_string()),
        ("segment.ms", ms(log.segment_age)),
        (
            "segment.index.bytes",
            (log.index_interval_bytes.max(1) * 8).to_string(),
        ),
        ("index.interval.bytes", log.index_interval_bytes.to_string()),
        (
            "flush.messages",
            match log.flush {
                FlushPolicy::Always => "1".to_string(),
                _ => i64::MAX.to_string(),
            },
        ),
        (
            "flush.ms",
            match log.flush {
                FlushPolicy::Interval(d) => d.as_millis().to_string(),
                FlushPolicy::Always => "0".to_string(),
                FlushPolicy::Os => i64::MAX.to_string(),
            },
        ),
    ];
    if broker {
        entries.extend([
            ("broker.id", state.meta.node_id.to_string()),
            ("node.id", state.meta.node_id.to_string()),
            (
                "advertised.listeners",
                format!("PLAINTEXT://{}", state.advertised),
            ),
            ("max.connections", state.config.max_connections.to_string()),
            (
                "max.connections.per.ip",
                state.config.max_connections_per_ip.to_string(),
            ),
            ("log.dirs", state.config.data_dir.display().to_string()),
            (
                "num.partitions",
                state.config.default_partitions.to_string(),
            ),
            (
                "auto.create.topics.enable",
                state.config.auto_create_topics.to_string(),
            ),
            (
                "socket.request.max.bytes",
                state.config.max_frame_bytes.to_string(),
            ),
            ("default.replication.factor", "1".to_string()),
        ]);
    }
    entries
}

/// DescribeConfigs for topics (type 2) and the broker (type 4): read-only
/// values from the broker's settings, enough for common tools.
pub fn describe_configs(state: &BrokerState, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = res.resource_type;
        result.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let entries = match res.resource_type {
            TOPIC if state.log.partition_count(name).is_some() => {
                Some(config_entries(state, false))
            }
            TOPIC => {
                result.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                None
            }
            BROKER if name.is_empty() || name == state.meta.node_id.to_string() => {
                Some(config_entries(state, true))
            }
            _ => {
                result.error_code = errors::INVALID_REQUEST;
                result.error_message = Some(str_bytes("unknown resource"));
                None
            }
        };
        for (key, value) in entries.unwrap_or_default() {
            if let Some(keys) = &res.configuration_keys
                && !keys.iter().any(|k| k.as_str() == key)
            {
                continue;
            }
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(key);
            c.value = Some(str_bytes(&value));
            c.read_only = true;
            c.config_source = if res.resource_type == BROKER { 4 } else { 5 }; // static broker / default
            result.configs.push(c);
        }
        out.results.push(result);
    }
    out
}
