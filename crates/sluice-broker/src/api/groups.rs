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

use super::coordination;
use super::errors;
use super::str_bytes as s;
use crate::coordinator::groups::{JoinRequest, JoinResult, Reply, SyncResult, code};
use crate::coordinator::offsets::{self, CommitEntry, Committed, MAX_STRING_BYTES};
use crate::state::BrokerState;

/// FindCoordinator: a group's coordinator is the leader of its
/// `__consumer_offsets` partition (`coordination`); while it has none, or
/// the topic is being created, COORDINATOR_NOT_AVAILABLE and the client
/// asks again. v4+ batches keys, each answered on its own.
pub(crate) async fn find_coordinator(
    state: &Arc<BrokerState>,
    r: FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let mut out = FindCoordinatorResponse::default();
    // Key type 1 is a transactional id: the leader of its
    // `__transaction_state` partition.
    let key_type = r.key_type;
    let lookup = |key: String| async move {
        let found = match key_type {
            0 => coordination::find_group_coordinator(state, &key).await,
            1 => {
                coordination::find_coordinator(state, coordination::Internal::Transactions, &key)
                    .await
            }
            // Share groups (2) and anything newer: not a coordinator this
            // broker has, as Kafka answers a key type it does not know.
            _ => Err(errors::INVALID_REQUEST),
        };
        // The coordinator's address on the listener the client came in on.
        let (node, _, _) = found?;
        state
            .endpoint(node, listener)
            .map(|(host, port)| (node, host, port))
            .ok_or(kafka_protocol::ResponseError::CoordinatorNotAvailable.code())
    };
    if version >= 4 {
        for key in r.coordinator_keys {
            let mut c = Coordinator::default();
            match lookup(key.to_string()).await {
                Ok((node, host, port)) => {
                    c.node_id = BrokerId(node);
                    c.host = s(&host);
                    c.port = i32::from(port);
                }
                Err(code) => {
                    c.node_id = BrokerId(-1);
                    c.host = s("");
                    c.port = -1;
                    c.error_code = code;
                    c.error_message = Some(s(coordinator_error_message(code)));
                }
            }
            c.key = key;
            out.coordinators.push(c);
        }
    } else {
        match lookup(r.key.to_string()).await {
            Ok((node, host, port)) => {
                out.node_id = BrokerId(node);
                out.host = s(&host);
                out.port = i32::from(port);
            }
            Err(code) => {
                out.node_id = BrokerId(-1);
                out.host = s("");
                out.port = -1;
                out.error_code = code;
                // v0 has no message field.
                out.error_message = (version >= 1).then(|| s(coordinator_error_message(code)));
            }
        }
    }
    out
}

const UNSTABLE_OFFSET_COMMIT: i16 = kafka_protocol::ResponseError::UnstableOffsetCommit.code();

fn coordinator_error_message(code: i16) -> &'static str {
    match code {
        errors::INVALID_REQUEST => "unknown coordinator key type",
        _ => "the coordinator is not available yet",
    }
}

async fn wait<T: Default>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(v) => v,
        // A dropped sender means the member was removed meanwhile.
        Reply::Later(rx) => rx.await.unwrap_or_default(),
    }
}

pub(crate) async fn join_group(
    state: &Arc<BrokerState>,
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
    let result: JoinResult = match coordination::owned(state, &req.group).await {
        Ok(_) => wait(state.groups.join(req)).await,
        Err(code) => JoinResult {
            error: code,
            generation: -1,
            member_id: req.member_id,
            ..JoinResult::default()
        },
    };
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

pub(crate) async fn sync_group(state: &Arc<BrokerState>, r: SyncGroupRequest) -> SyncGroupResponse {
    if let Err(code) = coordination::owned(state, r.group_id.0.as_str()).await {
        let mut out = SyncGroupResponse::default();
        out.error_code = code;
        return out;
    }
    let assignments: Vec<(String, Bytes)> = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let group = r.group_id.0.to_string();
    let leading = !assignments.is_empty();
    let result: SyncResult = wait(state.groups.sync(
        &group,
        r.generation_id,
        r.member_id.as_str(),
        assignments,
    ))
    .await;
    let mut out = SyncGroupResponse::default();
    out.error_code = result.error;
    // The leader's SyncGroup completed the rebalance: the membership is
    // stored before the leader hears so, and a new coordinator resumes the
    // group from it. A failed store sends the leader to rejoin.
    if result.error == 0
        && leading
        && let Some(snapshot) = state.groups.snapshot(&group, r.generation_id)
    {
        let stored = match (
            coordination::owned(state, &group).await,
            offsets::group_records(&group, &snapshot),
        ) {
            (Ok(owned), Ok(records)) => coordination::append(state, &owned, records).await,
            (Err(code), _) => Err(code),
            (_, Err(_)) => Err(errors::INVALID_REQUEST),
        };
        if let Err(code) = stored {
            tracing::warn!(group = %group, code, "storing the group's membership failed");
            out.error_code = code;
        }
    }
    out.protocol_type = result.protocol_type.map(|p| s(&p));
    out.protocol_name = result.protocol_name.map(|p| s(&p));
    out.assignment = result.assignment;
    out
}

pub(crate) async fn heartbeat(state: &Arc<BrokerState>, r: HeartbeatRequest) -> HeartbeatResponse {
    let mut out = HeartbeatResponse::default();
    if let Err(code) = coordination::owned(state, r.group_id.0.as_str()).await {
        out.error_code = code;
        return out;
    }
    out.error_code =
        state
            .groups
            .heartbeat(r.group_id.0.as_str(), r.generation_id, r.member_id.as_str());
    out
}

pub(crate) async fn leave_group(
    state: &Arc<BrokerState>,
    r: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if let Err(code) = coordination::owned(state, r.group_id.0.as_str()).await {
        let mut out = LeaveGroupResponse::default();
        out.error_code = code;
        return out;
    }
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
    let owned = if group.len() > MAX_STRING_BYTES {
        Err(errors::INVALID_GROUP_ID)
    } else {
        coordination::owned(state, &group).await
    };
    let check = match &owned {
        Err(code) => *code,
        Ok(_) => state.groups.check_commit(
            &group,
            r.generation_id_or_member_epoch,
            r.member_id.as_str(),
        ),
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
    let error = match &owned {
        _ if check != 0 => check,
        _ if entries.is_empty() => 0,
        Err(code) => *code,
        Ok(owned) => match offsets::commit_records(&group, &entries) {
            Ok(records) => match coordination::append(state, owned, records).await {
                Ok(()) => 0,
                Err(code) => code,
            },
            Err(e) => {
                tracing::warn!(group = %group, "encoding offsets: {e}");
                errors::INVALID_REQUEST
            }
        },
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

pub(crate) async fn offset_fetch(
    state: &Arc<BrokerState>,
    r: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut out = OffsetFetchResponse::default();
    // KIP-447: a consumer that asks for stable offsets is told to retry
    // while a transaction holds an offset it has not committed yet.
    let require_stable = r.require_stable;
    let unstable = |group: &str, topic: &str, p: i32| {
        require_stable && state.offsets.has_pending(group, topic, p)
    };
    if version >= 8 {
        let mut refusals = Vec::with_capacity(r.groups.len());
        for g in &r.groups {
            refusals.push(
                coordination::owned(state, g.group_id.0.as_str())
                    .await
                    .err(),
            );
        }
        out.groups = r
            .groups
            .into_iter()
            .zip(refusals)
            .map(|(g, refused)| {
                if let Some(code) = refused {
                    let mut rg = OffsetFetchResponseGroup::default();
                    rg.group_id = g.group_id;
                    rg.error_code = code;
                    return rg;
                }
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let mut rg = OffsetFetchResponseGroup::default();
                let group = g.group_id.0.to_string();
                rg.topics = committed_for(state, &group, wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        let mut rt = OffsetFetchResponseTopics::default();
                        rt.name = TopicName(s(&t));
                        rt.partitions = parts
                            .into_iter()
                            .map(|(p, c)| {
                                let mut rp = OffsetFetchResponsePartitions::default();
                                rp.partition_index = p;
                                if unstable(&group, &t, p) {
                                    rp.error_code = UNSTABLE_OFFSET_COMMIT;
                                    rp.committed_offset = -1;
                                    rp.committed_leader_epoch = -1;
                                    return rp;
                                }
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
    if let Err(code) = coordination::owned(state, r.group_id.0.as_str()).await {
        out.error_code = code;
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
                    if unstable(r.group_id.0.as_str(), &t, p) {
                        rp.error_code = UNSTABLE_OFFSET_COMMIT;
                        rp.committed_offset = -1;
                        rp.committed_leader_epoch = -1;
                        return rp;
                    }
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

pub(crate) async fn describe_groups(
    state: &Arc<BrokerState>,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    let mut refusals = Vec::with_capacity(r.groups.len());
    for g in &r.groups {
        refusals.push(coordination::owned(state, g.0.as_str()).await.err());
    }
    out.groups = r
        .groups
        .into_iter()
        .zip(refusals)
        .map(|(g, refused)| {
            let mut d = DescribedGroup::default();
            if let Some(code) = refused {
                d.error_code = code;
                d.group_state = s("");
                d.group_id = g;
                return d;
            }
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

pub(crate) async fn delete_groups(
    state: &Arc<BrokerState>,
    r: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut out = DeleteGroupsResponse::default();
    for g in r.groups_names {
        let mut res = DeletableGroupResult::default();
        res.error_code = match coordination::owned(state, g.0.as_str()).await {
            Err(code) => code,
            Ok(owned) => delete_group(state, &owned, g.0.as_str()).await,
        };
        res.group_id = g;
        out.results.push(res);
    }
    out
}

/// DeleteGroups for one group this broker coordinates: refused while it
/// has members; else a tombstone for each offset and for the group.
async fn delete_group(state: &Arc<BrokerState>, owned: &coordination::Owned, group: &str) -> i16 {
    let known = state.groups.describe(group).is_some() || state.offsets.has_group(group);
    if !known {
        return code::GROUP_ID_NOT_FOUND;
    }
    match state.groups.delete(group) {
        0 => {}
        code => return code,
    }
    let keys: Vec<(String, i32)> = state
        .offsets
        .group_offsets(group)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    match offsets::delete_records(group, &keys, true) {
        Ok(records) => match coordination::append(state, owned, records).await {
            Ok(()) => 0,
            Err(code) => code,
        },
        Err(_) => errors::INVALID_GROUP_ID,
    }
}

/// OffsetDelete: forgets a group's offsets for some partitions. Refused for a
/// group with members (Sluice does not parse subscriptions, so it cannot tell
/// which topics they read).
pub(crate) async fn offset_delete(
    state: &Arc<BrokerState>,
    r: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = r.group_id.0.to_string();
    let mut out = OffsetDeleteResponse::default();
    let owned = match coordination::owned(state, &group).await {
        Ok(owned) => owned,
        Err(code) => {
            out.error_code = code;
            return out;
        }
    };
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
            .filter(|(t, p)| state.offsets.get(&group, t, *p).is_some())
            .collect();
        let appended = match offsets::delete_records(&group, &keys, false) {
            Ok(records) => coordination::append(state, &owned, records).await,
            Err(_) => Err(errors::INVALID_REQUEST),
        };
        if let Err(code) = appended {
            out.error_code = code;
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
