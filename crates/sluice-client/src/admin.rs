//! Admin calls beside topic creation and deletion: DescribeCluster,
//! DescribeConfigs, IncrementalAlterConfigs and DeleteRecords, at versions
//! every Kafka since 2.x and Sluice answer.

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{Client, topic_name};
use crate::error::ClientError;

/// A config resource's type, as the protocol numbers it.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Where a described config's value comes from (Kafka's `ConfigSource`).
pub mod config_source {
    /// A topic's own override.
    pub const TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// The cluster as DescribeCluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: String,
    /// −1 when the cluster has none it can name.
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One config of a described resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// None for a sensitive config (or one without a value).
    pub value: Option<String>,
    /// A [`config_source`] code.
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// What an IncrementalAlterConfigs change does to one config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set,
    /// Back to the inherited value.
    Delete,
    /// Add to a list-valued config.
    Append,
    /// Remove from a list-valued config.
    Subtract,
}

impl ConfigOp {
    fn code(self) -> i8 {
        match self {
            ConfigOp::Set => 0,
            ConfigOp::Delete => 1,
            ConfigOp::Append => 2,
            ConfigOp::Subtract => 3,
        }
    }
}

/// One change of an IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub name: String,
    pub op: ConfigOp,
    /// The value to set, append or subtract; None for `Delete`.
    pub value: Option<String>,
}

fn refused(code: i16, message: Option<&StrBytes>) -> ClientError {
    match message {
        Some(m) if !m.is_empty() => ClientError::Refused {
            code,
            message: m.to_string(),
        },
        _ => ClientError::Kafka(code),
    }
}

impl Client {
    /// DescribeCluster (v0, KIP-700: Kafka 2.8 and later).
    pub fn describe_cluster(&mut self) -> Result<ClusterInfo, ClientError> {
        let resp = self.call(0, &DescribeClusterRequest::default())?;
        if resp.error_code != 0 {
            return Err(refused(resp.error_code, resp.error_message.as_ref()));
        }
        Ok(ClusterInfo {
            cluster_id: resp.cluster_id.to_string(),
            controller_id: resp.controller_id.0,
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
        })
    }

    /// DescribeConfigs (v1) of one resource: every config (`keys` None) or
    /// the named ones.
    pub fn describe_configs(
        &mut self,
        resource_type: i8,
        name: &str,
        keys: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = resource_type;
        res.resource_name = StrBytes::from_string(name.to_string());
        res.configuration_keys =
            keys.map(|k| k.iter().map(|k| StrBytes::from_string(k.clone())).collect());
        let mut r = DescribeConfigsRequest::default();
        r.resources = vec![res];
        let resp = self.call(1, &r)?;
        let result = resp
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol("empty DescribeConfigs response".into()))?;
        if result.error_code != 0 {
            return Err(refused(result.error_code, result.error_message.as_ref()));
        }
        Ok(result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// A topic's own overrides (configs whose source is the topic), by name.
    pub fn topic_overrides(&mut self, topic: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        let mut entries = self.describe_configs(RESOURCE_TOPIC, topic, None)?;
        entries.retain(|c| c.source == config_source::TOPIC_CONFIG);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// IncrementalAlterConfigs (v0, KIP-339: Kafka 2.3 and later) of one
    /// resource: all of `changes` or none; `validate_only` checks them
    /// without applying.
    pub fn incremental_alter_configs(
        &mut self,
        resource_type: i8,
        name: &str,
        changes: &[ConfigChange],
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let mut res = AlterConfigsResource::default();
        res.resource_type = resource_type;
        res.resource_name = StrBytes::from_string(name.to_string());
        res.configs = changes
            .iter()
            .map(|c| {
                let mut a = AlterableConfig::default();
                a.name = StrBytes::from_string(c.name.clone());
                a.config_operation = c.op.code();
                a.value = c.value.clone().map(StrBytes::from_string);
                a
            })
            .collect();
        let mut r = IncrementalAlterConfigsRequest::default();
        r.resources = vec![res];
        r.validate_only = validate_only;
        let resp = self.call(0, &r)?;
        let result = resp.responses.first().ok_or_else(|| {
            ClientError::Protocol("empty IncrementalAlterConfigs response".into())
        })?;
        if result.error_code != 0 {
            return Err(refused(result.error_code, result.error_message.as_ref()));
        }
        Ok(())
    }

    /// DeleteRecords (v1, KIP-107): deletes a partition's records below
    /// `offset` (−1: all of them, up to the high watermark); returns the
    /// partition's low watermark (log start offset) after it.
    pub fn delete_records(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, ClientError> {
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = partition;
        p.offset = offset;
        let mut t = DeleteRecordsTopic::default();
        t.name = topic_name(topic);
        t.partitions = vec![p];
        let mut r = DeleteRecordsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 30_000;
        let resp = self.call(1, &r)?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty DeleteRecords response".into()))?;
        if p.error_code != 0 {
            return Err(ClientError::Kafka(p.error_code));
        }
        Ok(p.low_watermark)
    }
}
