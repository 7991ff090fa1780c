//! The group and offset APIs: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups, DeleteGroups, OffsetDelete — decoding each into the
//! coordinator's calls and its answers back into responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};

use super::errors::{self, KAFKA_STORAGE_ERROR};
use super::producer_ids::{TRANSACTIONS_REFUSED, TRANSACTIONS_REFUSED_WHY};
use super::{Blocking, off_runtime, str_bytes as s};
use crate::coordinator::groups::{JoinRequest, JoinResult, Reply, SyncResult, code};
use crate::coordinator::offsets::{CommitEntry, Committed, MAX_STRING_BYTES};
use crate::state::BrokerState;
use kafka_protocol::protocol::StrBytes;

/// The broker coordinating a group: this one on a single node; in a
/// cluster, one chosen by a hash of the key over the registered brokers,
/// so every member finds the same one from whichever broker it asks.
fn coordinator_for(state: &BrokerState, key: &str) -> (BrokerId, StrBytes, i32) {
    if let Some(c) = state.cluster() {
        let snapshot = c.cluster.snapshot();
        let brokers: Vec<_> = snapshot.brokers.values().collect();
        if !brokers.is_empty() {
            let b = brokers[crc32c::crc32c(key.as_bytes()) as usize % brokers.len()];
            return (BrokerId(b.id), s(&b.host), i32::from(b.port));
        }
    }
    (
        BrokerId(state.meta.node_id),
        s(&state.advertised.host),
        i32::from(state.advertised.port),
    )
}

pub(crate) fn find_coordinator(
    state: &BrokerState,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut out = FindCoordinatorResponse::default();
    if version >= 4 {
        out.coordinators = r
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (node, host, port) = coordinator_for(state, &key);
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = node;
                c.host = host;
                c.port = port;
                c
            })
            .collect();
    } else {
        let (node, host, port) = coordinator_for(state, &r.key);
        out.node_id = node;
        out.host = host;
        out.port = port;
    }
    // Key type 1 is a transactional id: refused in a way clients treat as
    // fatal (api/producer_ids.rs says why).
    if r.key_type == 1 {
        if version < 4 {
            out.error_code = TRANSACTIONS_REFUSED;
            // v0 has no message field.
            out.error_message = (version >= 1).then(|| s(TRANSACTIONS_REFUSED_WHY));
        }
        for c in &mut out.coordinators {
            c.error_code = TRANSACTIONS_REFUSED;
            c.error_message = Some(s(TRANSACTIONS_REFUSED_WHY));
        }
    }
    out
}

async fn wait<T: Default>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(v) => v,
        // A dropped sender means the member was removed meanwhile.
        Reply::Later(rx) => rx.await.unwrap_or_default(),
    }
}

pub(crate) async fn join_group(
    state: &BrokerState,
    r: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let session = Duration::from_millis(u64::try_from(r.session_timeout_ms).unwrap_or(0));
    let rebalance = if version >= 1 {
        Duration::from_millis(u64::try_from(r.rebalance_timeout_ms).unwrap_or(0))
    } else {
        session
    };
    let req = JoinRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.group_instance_id.map(|i| i.to_string()),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result: JoinResult = wait(state.groups.join(req)).await;
    let mut out = JoinGroupResponse::default();
    out.error_code = result.error;
    out.generation_id = result.generation;
    out.protocol_type = result.protocol_type.map(|p| s(&p));
    out.protocol_name = Some(s(&result.protocol_name.unwrap_or_default()));
    out.leader = s(&result.leader);
    out.member_id = s(&result.member_id);
    out.members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.group_instance_id = instance.map(|i| s(&i));
            m.metadata = metadata;
            m
        })
        .collect();
    out
}

pub(crate) async fn sync_group(state: &BrokerState, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments: Vec<(String, Bytes)> = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let result: SyncResult = wait(state.groups.sync(
        r.group_id.0.as_str(),
        r.generation_id,
        r.member_id.as_str(),
        assignments,
    ))
    .await;
    let mut out = SyncGroupResponse::default();
    out.error_code = result.error;
    out.protocol_type = result.protocol_type.map(|p| s(&p));
    out.protocol_name = result.protocol_name.map(|p| s(&p));
    out.assignment = result.assignment;
    out
}

pub(crate) fn heartbeat(state: &BrokerState, r: HeartbeatRequest) -> HeartbeatResponse {
    let mut out = HeartbeatResponse::default();
    out.error_code =
        state
            .groups
            .heartbeat(r.group_id.0.as_str(), r.generation_id, r.member_id.as_str());
    out
}

pub(crate) fn leave_group(
    state: &BrokerState,
    r: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let codes = state.groups.leave(r.group_id.0.as_str(), members.clone());
    let mut out = LeaveGroupResponse::default();
    if version >= 3 {
        out.members = members
            .into_iter()
            .zip(&codes)
            .map(|((id, instance), code)| {
                let mut m = MemberResponse::default();
                m.member_id = s(&id);
                m.group_instance_id = instance.map(|i| s(&i));
                m.error_code = *code;
                m
            })
            .collect();
    } else {
        out.error_code = codes.first().copied().unwrap_or(0);
    }
    out
}

/// OffsetCommit: durable (synced) before it is acknowledged. A partition
/// whose metadata is over `offset.metadata.max.bytes` gets
/// OFFSET_METADATA_TOO_LARGE and the others are committed, as in Kafka; a
/// group id too long to store is INVALID_GROUP_ID and a topic name no topic
/// can have is UNKNOWN_TOPIC_OR_PARTITION — nothing is ever cut to fit.
pub(crate) async fn offset_commit(
    state: &Arc<BrokerState>,
    r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let check = if group.len() > MAX_STRING_BYTES {
        errors::INVALID_GROUP_ID
    } else {
        state.groups.check_commit(
            &group,
            r.generation_id_or_member_epoch,
            r.member_id.as_str(),
        )
    };
    let max_metadata = state.config.offset_metadata_max_bytes;
    let mut entries = Vec::new();
    // Per (topic index, partition index): the partition's own refusal.
    let mut refused: HashMap<(usize, usize), i16> = HashMap::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let topic_ok = sluice_log::validate_topic_name(t.name.0.as_str()).is_ok();
        for (pi, p) in t.partitions.iter().enumerate() {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            if !topic_ok {
                refused.insert((ti, pi), errors::UNKNOWN_TOPIC_OR_PARTITION);
                continue;
            }
            if metadata.len() > max_metadata {
                refused.insert((ti, pi), errors::OFFSET_METADATA_TOO_LARGE);
                continue;
            }
            entries.push(CommitEntry {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                committed: Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_ms: sluice_log::now_ms(),
                },
            });
        }
    }
    let error = if check != 0 {
        check
    } else if entries.is_empty() {
        0
    } else {
        let g = group.clone();
        match off_runtime(state, move |s, _| s.offsets.commit(&g, entries)).await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                tracing::error!(group = %group, "committing offsets: {e}");
                KAFKA_STORAGE_ERROR
            }
            Err(_) => KAFKA_STORAGE_ERROR,
        }
    };
    let mut out = OffsetCommitResponse::default();
    out.topics = r
        .topics
        .into_iter()
        .enumerate()
        .map(|(ti, t)| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name;
            rt.partitions = t
                .partitions
                .iter()
                .enumerate()
                .map(|(pi, p)| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = if check != 0 {
                        check
                    } else {
                        refused.get(&(ti, pi)).copied().unwrap_or(error)
                    };
                    rp
                })
                .collect();
            rt
        })
        .collect();
    out
}

/// (topic, partitions) a fetch asks for; None means every committed one.
type Wanted = Option<Vec<(String, Vec<i32>)>>;
/// Per topic, each partition's committed offset (None: nothing committed).
type CommittedByTopic = Vec<(String, Vec<(i32, Option<Committed>)>)>;

fn committed_for(state: &BrokerState, group: &str, wanted: Wanted) -> CommittedByTopic {
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let list = parts
                    .into_iter()
                    .map(|p| (p, state.offsets.get(group, &t, p)))
                    .collect();
                (t, list)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for (t, p, c) in state.offsets.group_offsets(group) {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic.into_iter().collect()
        }
    }
}

pub(crate) fn offset_fetch(
    state: &BrokerState,
    r: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut out = OffsetFetchResponse::default();
    if version >= 8 {
        out.groups = r
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let mut rg = OffsetFetchResponseGroup::default();
                rg.topics = committed_for(state, g.group_id.0.as_str(), wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        let mut rt = OffsetFetchResponseTopics::default();
                        rt.name = TopicName(s(&t));
                        rt.partitions = parts
                            .into_iter()
                            .map(|(p, c)| {
                                let mut rp = OffsetFetchResponsePartitions::default();
                                rp.partition_index = p;
                                rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                                rp.committed_leader_epoch =
                                    c.as_ref().map_or(-1, |c| c.leader_epoch);
                                rp.metadata = Some(s(&c.map(|c| c.metadata).unwrap_or_default()));
                                rp
                            })
                            .collect();
                        rt
                    })
                    .collect();
                rg.group_id = g.group_id;
                rg
            })
            .collect();
        return out;
    }
    let wanted = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    out.topics = committed_for(state, r.group_id.0.as_str(), wanted)
        .into_iter()
        .map(|(t, parts)| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = TopicName(s(&t));
            rt.partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                    rp.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                    rp.metadata = Some(s(&c.map(|c| c.metadata).unwrap_or_default()));
                    rp
                })
                .collect();
            rt
        })
        .collect();
    out
}

pub(crate) fn list_groups(state: &BrokerState, r: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups: std::collections::BTreeMap<String, (String, &'static str)> = state
        .groups
        .list()
        .into_iter()
        .map(|(g, t, st)| (g, (t, st.name())))
        .collect();
    for g in state.offsets.groups() {
        groups.entry(g).or_insert((String::new(), "Empty"));
    }
    let mut out = ListGroupsResponse::default();
    out.groups = groups
        .into_iter()
        .filter(|(_, (_, state))| {
            r.states_filter.is_empty() || r.states_filter.iter().any(|f| f.as_str() == *state)
        })
        .map(|(g, (t, state))| {
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(s(&g));
            lg.protocol_type = s(&t);
            lg.group_state = s(state);
            lg.group_type = s("classic");
            lg
        })
        .collect();
    out
}

pub(crate) fn describe_groups(
    state: &BrokerState,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    out.groups = r
        .groups
        .into_iter()
        .map(|g| {
            let mut d = DescribedGroup::default();
            match state.groups.describe(g.0.as_str()) {
                Some(view) => {
                    d.group_state = s(view.state.name());
                    d.protocol_type = s(&view.protocol_type);
                    d.protocol_data = s(&view.protocol);
                    d.members = view
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut dm = DescribedGroupMember::default();
                            dm.member_id = s(&m.member_id);
                            dm.group_instance_id = m.instance_id.map(|i| s(&i));
                            dm.client_id = s(&m.client_id);
                            dm.client_host = s(&m.client_host);
                            dm.member_metadata = m.metadata;
                            dm.member_assignment = m.assignment;
                            dm
                        })
                        .collect();
                }
                // Known only by its committed offsets: an empty group.
                None if state.offsets.has_group(g.0.as_str()) => {
                    d.group_state = s("Empty");
                    d.protocol_type = s("consumer");
                }
                None => d.group_state = s("Dead"),
            }
            d.group_id = g;
            d
        })
        .collect();
    out
}

pub(crate) fn delete_groups(
    state: &BrokerState,
    r: DeleteGroupsRequest,
    _: &Blocking,
) -> DeleteGroupsResponse {
    let mut out = DeleteGroupsResponse::default();
    out.results = r
        .groups_names
        .into_iter()
        .map(|g| {
            let mut res = DeletableGroupResult::default();
            let known = state.groups.describe(g.0.as_str()).is_some()
                || state.offsets.has_group(g.0.as_str());
            res.error_code = if !known {
                code::GROUP_ID_NOT_FOUND
            } else {
                match state.groups.delete(g.0.as_str()) {
                    0 => match state.offsets.delete_group(g.0.as_str()) {
                        Ok(()) => 0,
                        Err(_) => KAFKA_STORAGE_ERROR,
                    },
                    code => code,
                }
            };
            res.group_id = g;
            res
        })
        .collect();
    out
}

/// OffsetDelete: forgets a group's offsets for some partitions. Refused for a
/// group with members (Sluice does not parse subscriptions, so it cannot tell
/// which topics they read).
pub(crate) fn offset_delete(
    state: &BrokerState,
    r: OffsetDeleteRequest,
    _: &Blocking,
) -> OffsetDeleteResponse {
    let group = r.group_id.0.to_string();
    let mut out = OffsetDeleteResponse::default();
    let known = state.groups.describe(&group).is_some() || state.offsets.has_group(&group);
    let busy = state.groups.active().contains(&group);
    let partition_error = if busy {
        code::GROUP_SUBSCRIBED_TO_TOPIC
    } else {
        0
    };
    if !known {
        out.error_code = code::GROUP_ID_NOT_FOUND;
    } else if !busy {
        let keys: Vec<(String, i32)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect();
        if state.offsets.delete_offsets(&group, &keys).is_err() {
            out.error_code = KAFKA_STORAGE_ERROR;
        }
    }
    out.topics = r
        .topics
        .into_iter()
        .map(|t| {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = partition_error;
                    rp
                })
                .collect();
            rt.name = t.name;
            rt
        })
        .collect();
    out
}
