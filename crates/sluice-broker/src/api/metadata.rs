//! Metadata: the brokers, the cluster id, and every topic asked for — one
//! broker leading every partition, or, in a cluster, what etcd holds.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::topics::ensure_topic;
use super::{Blocking, errors, str_bytes};
use crate::coordinator::is_internal_topic;
use crate::state::{BrokerState, InCluster};
use kafka_protocol::ResponseError;

pub(super) fn may_create(state: &BrokerState, r: &MetadataRequest, version: i16) -> bool {
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
    listener: &str,
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
    let (host, port) = state
        .endpoint(node.0, listener)
        .unwrap_or_else(|| (state.advertised.host.clone(), state.advertised.port));
    broker.host = str_bytes(&host);
    broker.port = i32::from(port);
    out.brokers = vec![broker];
    out.cluster_id = Some(str_bytes(&state.meta.cluster_id));
    out.controller_id = node;
    out.topics = topics
        .into_iter()
        .map(|(name, found)| {
            let mut t = MetadataResponseTopic::default();
            t.is_internal = is_internal_topic(&name);
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

/// Metadata in a cluster: the live brokers, the controller, and each
/// topic's partitions with leader, leader epoch, replicas and ISR as etcd
/// holds them. A topic auto-created here is answered LEADER_NOT_AVAILABLE
/// until its partitions have leaders, as Kafka answers; clients retry.
pub async fn cluster_metadata(
    state: &BrokerState,
    c: &InCluster,
    r: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let create = may_create(state, &r, version);
    let every =
        r.topics.is_none() || (version == 0 && r.topics.as_ref().is_some_and(|t| t.is_empty()));
    let mut snapshot = c.cluster.snapshot();
    let mut names: Vec<String> = match &r.topics {
        _ if every => snapshot.topics.keys().cloned().collect(),
        None => Vec::new(),
        Some(list) => list
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
    };
    names.sort();
    names.dedup();
    let mut created = std::collections::HashSet::new();
    if create {
        for name in &names {
            // The offsets topic is created by the group coordinator, with
            // its own partition count and configs, never by a Metadata.
            if snapshot.topics.contains_key(name)
                || sluice_log::validate_topic_name(name).is_err()
                || is_internal_topic(name)
            {
                continue;
            }
            match c
                .cluster
                .create_topic(
                    name,
                    state.config.default_partitions.max(1) as i32,
                    -1,
                    None,
                    Default::default(),
                    false,
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(topic = %name, "auto-created topic");
                    created.insert(name.clone());
                }
                Err(crate::cluster::ClusterError::TopicExists) => {}
                Err(e) => tracing::warn!(topic = %name, "auto-creating: {e}"),
            }
        }
        if !created.is_empty() {
            // Give the controller a moment to elect leaders, so most
            // clients get a usable answer the first time.
            let mut rx = c.cluster.subscribe();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                loop {
                    let s = rx.borrow_and_update().clone();
                    let ready = created.iter().all(|t| {
                        s.topics.get(t).is_some_and(|info| {
                            (0..info.replicas.len() as i32).all(|p| {
                                s.partitions
                                    .get(&(t.clone(), p))
                                    .is_some_and(|st| st.leader >= 0)
                            })
                        })
                    });
                    if ready || rx.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            snapshot = c.cluster.snapshot();
        }
    }
    let mut out = MetadataResponse::default();
    out.brokers = snapshot
        .brokers
        .values()
        // A broker without the client's listener is left out, as Kafka does.
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            let mut m = MetadataResponseBroker::default();
            m.node_id = BrokerId(b.id);
            m.host = str_bytes(host);
            m.port = i32::from(port);
            m.rack = b.rack.as_deref().map(str_bytes);
            Some(m)
        })
        .collect();
    out.cluster_id = Some(str_bytes(&snapshot.cluster_id));
    out.controller_id = BrokerId(snapshot.controller.unwrap_or(-1));
    out.topics = names
        .into_iter()
        .map(|name| {
            let mut t = MetadataResponseTopic::default();
            t.is_internal = is_internal_topic(&name);
            t.name = Some(TopicName(str_bytes(&name)));
            let Some(info) = snapshot.topics.get(&name) else {
                t.error_code = match sluice_log::validate_topic_name(&name) {
                    Err(e) => errors::topic_error_code(&e),
                    Ok(()) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                };
                return t;
            };
            t.topic_id = info.id;
            t.partitions = info
                .replicas
                .iter()
                .enumerate()
                .map(|(i, replicas)| {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i as i32;
                    p.replica_nodes = replicas.iter().map(|&b| BrokerId(b)).collect();
                    match snapshot.partitions.get(&(name.clone(), i as i32)) {
                        Some(st) => {
                            p.leader_id = BrokerId(st.leader);
                            p.leader_epoch = st.leader_epoch;
                            p.isr_nodes = st.isr.iter().map(|&b| BrokerId(b)).collect();
                            // Replicas whose broker is not registered.
                            p.offline_replicas = replicas
                                .iter()
                                .filter(|b| !snapshot.brokers.contains_key(b))
                                .map(|&b| BrokerId(b))
                                .collect();
                            if st.leader < 0 {
                                p.error_code = ResponseError::LeaderNotAvailable.code();
                            }
                        }
                        None => {
                            p.leader_id = BrokerId(-1);
                            p.leader_epoch = -1;
                            p.error_code = ResponseError::LeaderNotAvailable.code();
                        }
                    }
                    p
                })
                .collect();
            if created.contains(&name) && t.partitions.iter().any(|p| p.error_code != 0) {
                t.error_code = ResponseError::LeaderNotAvailable.code();
            }
            t
        })
        .collect();
    out
}
