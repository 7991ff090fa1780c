//! Metadata: this broker, its cluster id, and every topic asked for (one
//! broker leads every partition).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::topics::ensure_topic;
use super::{Blocking, errors, str_bytes};
use crate::state::BrokerState;

fn may_create(state: &BrokerState, r: &MetadataRequest, version: i16) -> bool {
    state.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation)
}

/// Whether answering would create a topic (and so touch the disk): it
/// names a topic that does not exist and auto-creation is on.
pub fn creates_topics(state: &BrokerState, r: &MetadataRequest, version: i16) -> bool {
    may_create(state, r, version)
        && r.topics.as_ref().is_some_and(|list| {
            list.iter().any(|t| {
                t.name
                    .as_ref()
                    .is_some_and(|n| state.log.partition_count(&n.0).is_none())
            })
        })
}

/// Answers Metadata; topics are created only with a [`Blocking`] token
/// (without one, a missing topic is reported unknown).
pub fn metadata(
    state: &BrokerState,
    r: MetadataRequest,
    version: i16,
    blocking: Option<&Blocking>,
) -> MetadataResponse {
    let create = may_create(state, &r, version);
    // Null asks for every topic; so does an empty list in v0.
    let every =
        r.topics.is_none() || (version == 0 && r.topics.as_ref().is_some_and(|t| t.is_empty()));
    let mut topics: Vec<(String, Result<u32, i16>)> = match &r.topics {
        _ if every => state
            .log
            .topics()
            .into_iter()
            .map(|(t, n)| (t, Ok(n)))
            .collect(),
        None => Vec::new(),
        Some(list) => list
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .map(|name| {
                let found = match blocking {
                    Some(b) => ensure_topic(state, &name, create, b),
                    None => state.log.partition_count(&name).ok_or_else(|| {
                        match sluice_log::validate_topic_name(&name) {
                            Err(e) => errors::topic_error_code(&e),
                            Ok(()) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                        }
                    }),
                };
                (name, found)
            })
            .collect(),
    };
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    let node = BrokerId(state.meta.node_id);
    let mut out = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = node;
    broker.host = str_bytes(&state.advertised.host);
    broker.port = i32::from(state.advertised.port);
    out.brokers = vec![broker];
    out.cluster_id = Some(str_bytes(&state.meta.cluster_id));
    out.controller_id = node;
    out.topics = topics
        .into_iter()
        .map(|(name, found)| {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(TopicName(str_bytes(&name)));
            match found {
                Ok(n) => {
                    t.partitions = (0..n as i32)
                        .map(|i| {
                            let mut p = MetadataResponsePartition::default();
                            p.partition_index = i;
                            p.leader_id = node;
                            // −1 keeps clients from offset-validation round trips.
                            p.leader_epoch = -1;
                            p.replica_nodes = vec![node];
                            p.isr_nodes = vec![node];
                            p
                        })
                        .collect();
                }
                Err(code) => t.error_code = code,
            }
            t
        })
        .collect();
    out
}
