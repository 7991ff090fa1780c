//! Authorization (issue 17): every request checked against the ACLs with
//! Kafka's per-API rules (`KafkaApis`, and `ControllerApis` for the topic
//! administration a KRaft controller does; the documentation's "Operations
//! and Resources on Protocols" table), when the broker has an authorizer
//! (`--authorizer acl`). Without one `dispatch` never calls in here and
//! nothing changes.
//!
//! `dispatch` hands each decoded request to [`gate`] before it is served.
//! Every API has an explicit [`Rule`] ([`rule_for`]); an API without one is
//! never served — the connection is closed — so an API added to the
//! broker is refused until its rule is written (a test walks every API
//! `versions::SUPPORTED` advertises and checks that each has a rule and an
//! arm in [`gate`]). Then:
//!
//! - a request refused as a whole (JoinGroup without Read on its group,
//!   a follower Fetch without ClusterAction, …) is [`Gate::Answer`]ed with
//!   the error response Kafka sends, and its handler never runs: nothing
//!   is appended, created, deleted or changed;
//! - a batch (Produce's topics, CreateTopics' topics, DescribeGroups'
//!   groups, …) loses the items refused: the handler serves the rest, and
//!   the [`Fixup`] puts the refused items back into the answer where they
//!   were asked, each with its error (TOPIC_AUTHORIZATION_FAILED, …);
//! - answers that list what exists (Metadata for every topic, ListGroups,
//!   ListTransactions, an OffsetFetch for every partition) are filtered by
//!   the [`Fixup`], so a principal never learns of a resource it may not
//!   Describe; a named topic it may not Describe is answered
//!   TOPIC_AUTHORIZATION_FAILED whether or not it exists.
//!
//! The checks of one request share one snapshot of the ACLs (a
//! [`Checker`]): no lock, and the principal's super-user status looked up
//! once. A [`Checker`] is only held within a synchronous step, never across
//! an `await` (a long-poll Fetch holds none while it waits).
//!
//! Inter-broker requests (follower Fetch, WriteTxnMarkers, AddPartitionsToTxn
//! v4+) need ClusterAction on the cluster, which a deployment gives the
//! brokers' principal by making it a super user (docs/design-notes.md).

use std::collections::HashSet;
use std::net::IpAddr;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse as ProducersPartition, TopicResponse as ProducersTopic,
};
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
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
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::errors::{
    self, CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};
use super::fetch_writer::{PartitionData, TopicData};
use super::{Session, metadata, str_bytes, transactions};
use crate::coordinator::is_internal_topic;
use crate::security::Principal;
use crate::security::acl::{
    AclOperation as Op, Authorizer, CLUSTER_NAME, Checker, ResourceType as Rt,
};
use crate::state::BrokerState;

/// Kafka's messages for the authorization errors (`Errors.*.message()`).
const TOPIC_DENIED: &str = "Topic authorization failed.";
const GROUP_DENIED: &str = "Group authorization failed.";
const CLUSTER_DENIED: &str = "Cluster authorization failed.";
const TXN_DENIED: &str = "Transactional Id authorization failed.";

/// The config resource types (Kafka's `ConfigResource.Type`).
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;
const CONFIG_CLIENT_METRICS: i8 = 16;
const CONFIG_GROUP: i8 = 32;

/// Who is asking, for the authorizer: made per request, only when the
/// broker has one.
#[derive(Clone, Copy)]
pub struct Authz<'a> {
    authorizer: &'a Authorizer,
    principal: &'a Principal,
    host: IpAddr,
}

impl<'a> Authz<'a> {
    /// None without an authorizer: then nothing is ever checked.
    pub fn new(state: &'a BrokerState, principal: &'a Principal, host: IpAddr) -> Option<Self> {
        state.authorizer.as_deref().map(|authorizer| Authz {
            authorizer,
            principal,
            host,
        })
    }

    /// The checks of this request, over the ACLs as they are now.
    pub fn checker(&self) -> Checker<'a> {
        self.authorizer.checker(self.principal, self.host)
    }
}

/// Whether `session` may do `op` to `resource_type`/`name`: always without
/// an authorizer.
pub fn allowed(
    state: &BrokerState,
    session: &Session,
    op: Op,
    resource_type: Rt,
    name: &str,
) -> bool {
    Authz::new(state, &session.principal, session.peer.ip())
        .is_none_or(|a| a.checker().authorize(op, resource_type, name))
}

fn cluster(c: &Checker, op: Op) -> bool {
    c.authorize(op, Rt::Cluster, CLUSTER_NAME)
}

/// The operations `resource_type` supports (Kafka's
/// `AclEntry.supportedOperations`).
fn supported(resource_type: Rt) -> &'static [Op] {
    match resource_type {
        Rt::Topic => &[
            Op::Read,
            Op::Write,
            Op::Create,
            Op::Describe,
            Op::Delete,
            Op::Alter,
            Op::DescribeConfigs,
            Op::AlterConfigs,
        ],
        Rt::Group => &[
            Op::Read,
            Op::Describe,
            Op::Delete,
            Op::DescribeConfigs,
            Op::AlterConfigs,
        ],
        Rt::Cluster => &[
            Op::Create,
            Op::ClusterAction,
            Op::DescribeConfigs,
            Op::AlterConfigs,
            Op::IdempotentWrite,
            Op::Alter,
            Op::Describe,
        ],
        Rt::TransactionalId => &[Op::Describe, Op::Write],
        Rt::DelegationToken => &[Op::Describe],
        Rt::User => &[Op::CreateTokens, Op::DescribeTokens],
        Rt::Any => &[],
    }
}

/// An authorized-operations field: a bit per operation code the principal
/// may do to the resource (Kafka's `AuthHelper.authorizedOperations`).
pub fn authorized_operations(c: &Checker, resource_type: Rt, name: &str) -> i32 {
    supported(resource_type)
        .iter()
        .filter(|op| c.authorize(**op, resource_type, name))
        .fold(0, |bits, op| bits | (1 << op.code()))
}

/// Kafka's authorization rule for an API: the documentation's "Operations
/// and Resources on Protocols" table, as `KafkaApis` (and `ControllerApis`)
/// apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Served to every principal: ApiVersions is part of the handshake,
    /// before authentication, and SaslHandshake and SaslAuthenticate are
    /// authentication itself (`handle` serves those two before `dispatch`).
    Open,
    /// [`gate`]'s arm for the API checks these operations on these
    /// resources (some only for some requests: a follower's Fetch, a
    /// transactional Produce, an auto-created topic) and refuses — or
    /// leaves out of a listing — what the principal may not do.
    Acl(&'static [(Op, Rt)]),
}

/// The rule for `api`; None: [`gate`] never serves it. Every API in
/// `versions::SUPPORTED` has one.
pub fn rule_for(api: ApiKey) -> Option<Rule> {
    use ApiKey as K;
    use Op::{
        Alter, AlterConfigs, ClusterAction, Create, Delete, Describe, DescribeConfigs,
        IdempotentWrite, Read, Write,
    };
    use Rt::{Cluster, Group, Topic, TransactionalId};
    let acl: &'static [(Op, Rt)] = match api {
        K::ApiVersions | K::SaslHandshake | K::SaslAuthenticate => return Some(Rule::Open),
        // Idempotent batches need nothing more since KIP-679.
        K::Produce => &[(Write, Topic), (Write, TransactionalId)],
        K::Fetch => &[(Read, Topic), (ClusterAction, Cluster)],
        K::ListOffsets => &[(Describe, Topic)],
        K::OffsetForLeaderEpoch => &[(Describe, Topic), (ClusterAction, Cluster)],
        K::Metadata => &[(Describe, Topic), (Create, Cluster), (Create, Topic)],
        K::DescribeTopicPartitions => &[(Describe, Topic)],
        K::CreateTopics => &[(Create, Cluster), (Create, Topic), (DescribeConfigs, Topic)],
        K::DeleteTopics => &[(Delete, Cluster), (Delete, Topic), (Describe, Topic)],
        K::CreatePartitions => &[(Alter, Topic)],
        K::DeleteRecords => &[(Delete, Topic)],
        K::DescribeConfigs => &[
            (DescribeConfigs, Cluster),
            (DescribeConfigs, Topic),
            (DescribeConfigs, Group),
        ],
        K::AlterConfigs => &[(AlterConfigs, Cluster), (AlterConfigs, Topic)],
        K::IncrementalAlterConfigs => &[
            (AlterConfigs, Cluster),
            (AlterConfigs, Topic),
            (AlterConfigs, Group),
        ],
        K::FindCoordinator => &[(Describe, Group), (Describe, TransactionalId)],
        K::JoinGroup | K::SyncGroup | K::Heartbeat | K::LeaveGroup => &[(Read, Group)],
        K::OffsetCommit => &[(Read, Group), (Read, Topic)],
        K::OffsetFetch => &[(Describe, Group), (Describe, Topic)],
        K::OffsetDelete => &[(Delete, Group), (Read, Topic)],
        K::DescribeGroups => &[(Describe, Group)],
        K::ListGroups => &[(Describe, Cluster), (Describe, Group)],
        K::DeleteGroups => &[(Delete, Group)],
        // Write on any topic will do instead of IdempotentWrite (KIP-679).
        K::InitProducerId => &[
            (Write, TransactionalId),
            (IdempotentWrite, Cluster),
            (Write, Topic),
        ],
        // v4+ is inter-broker: ClusterAction.
        K::AddPartitionsToTxn => &[
            (Write, TransactionalId),
            (Write, Topic),
            (ClusterAction, Cluster),
        ],
        K::AddOffsetsToTxn => &[(Write, TransactionalId), (Read, Group)],
        K::EndTxn => &[(Write, TransactionalId)],
        K::TxnOffsetCommit => &[(Write, TransactionalId), (Read, Group), (Read, Topic)],
        // Alter for an admin's abort (KIP-664), else ClusterAction.
        K::WriteTxnMarkers => &[(Alter, Cluster), (ClusterAction, Cluster)],
        K::DescribeTransactions | K::ListTransactions => &[(Describe, TransactionalId)],
        K::DescribeProducers => &[(Read, Topic)],
        // Describe only decides the authorized-operations field.
        K::DescribeCluster => &[(Describe, Cluster)],
        K::DescribeLogDirs | K::ListPartitionReassignments => &[(Describe, Cluster)],
        K::ElectLeaders | K::AlterPartitionReassignments => &[(Alter, Cluster)],
        K::DescribeClientQuotas => &[(DescribeConfigs, Cluster)],
        K::AlterClientQuotas => &[(AlterConfigs, Cluster)],
        K::DescribeAcls | K::DescribeUserScramCredentials => &[(Describe, Cluster)],
        K::CreateAcls | K::DeleteAcls | K::AlterUserScramCredentials => &[(Alter, Cluster)],
        // Everything else: not served, whatever the ACLs say.
        _ => return None,
    };
    Some(Rule::Acl(acl))
}

/// What [`gate`] decided.
pub enum Gate {
    /// Serve this (what is left of the request), then apply the fixup to
    /// the answer.
    Serve(RequestKind, Fixup),
    /// Answer this: the request is refused, or every item in it is.
    Answer(ResponseKind),
    /// Send nothing: an acks=0 Produce refused.
    Silent,
    /// Close the connection, for the reason given: an API without a rule.
    Refuse(String),
}

/// Items refused, to be put back into the answer at the position (in the
/// request) they were asked at, each already holding its error.
type Refused<T> = Vec<(usize, T)>;

/// What to do to the answer of a request [`gate`] let through.
pub enum Fixup {
    None,
    Produce(Refused<TopicProduceResponse>),
    Fetch(Refused<TopicData>),
    ListOffsets(Refused<ListOffsetsTopicResponse>),
    Metadata {
        refused: Vec<MetadataResponseTopic>,
        /// The named topics let through; None: every topic was asked for,
        /// and the answer keeps those the principal may Describe.
        only: Option<HashSet<String>>,
        topic_operations: bool,
        cluster_operations: bool,
    },
    OffsetCommit(Refused<OffsetCommitResponseTopic>),
    /// v8+: the refused groups, and per group let through (in order) its
    /// topics' fix.
    OffsetFetchGroups(
        Refused<OffsetFetchResponseGroup>,
        Vec<Topics<OffsetFetchResponseTopics>>,
    ),
    /// v1–7: the one group's topics' fix.
    OffsetFetch(Topics<OffsetFetchResponseTopic>),
    DescribeGroups(Refused<DescribedGroup>, bool),
    ListGroups,
    DeleteGroups(Refused<DeletableGroupResult>),
    OffsetDelete(Refused<OffsetDeleteResponseTopic>),
    FindCoordinator(Refused<Coordinator>),
    CreateTopics(Refused<CreatableTopicResult>, HashSet<String>),
    DeleteTopics(Refused<DeletableTopicResult>),
    CreatePartitions(Refused<CreatePartitionsTopicResult>),
    DescribeConfigs(Refused<DescribeConfigsResult>),
    AlterConfigs(Refused<alter_configs_response::AlterConfigsResourceResponse>),
    IncrementalAlterConfigs(
        Refused<incremental_alter_configs_response::AlterConfigsResourceResponse>,
    ),
    DeleteRecords(Refused<DeleteRecordsTopicResult>),
    TxnOffsetCommit(Refused<TxnOffsetCommitResponseTopic>),
    DescribeTransactions(Refused<TransactionState>),
    ListTransactions,
    DescribeProducers(Refused<ProducersTopic>),
    OffsetForLeaderEpoch(Refused<OffsetForLeaderTopicResult>),
    DescribeCluster(i32),
    DescribeTopicPartitions,
}

/// An OffsetFetch group's topics: every committed one (the answer keeps
/// those the principal may Describe), or those named, some refused.
pub enum Topics<T> {
    All,
    Named(Refused<T>),
}

impl Fixup {
    /// The refused topics of a Fetch, for `fetch` to answer with.
    pub fn take_fetch(&mut self) -> Refused<TopicData> {
        match self {
            Fixup::Fetch(refused) => std::mem::take(refused),
            _ => Vec::new(),
        }
    }
}

/// Splits `items` into those `refuse` lets through and, with their
/// positions, the answers for those it refuses.
fn split<T, R>(mut items: Vec<T>, mut refuse: impl FnMut(&T) -> Option<R>) -> (Vec<T>, Refused<R>) {
    // In place: a request with nothing refused costs no allocation.
    let mut refused = Vec::new();
    let mut i = 0;
    items.retain(|item| {
        let kept = match refuse(item) {
            Some(r) => {
                refused.push((i, r));
                false
            }
            None => true,
        };
        i += 1;
        kept
    });
    (items, refused)
}

/// Puts refused items back where they were asked (the handler answers
/// the items it was given in order; past its end they are appended).
pub fn reinsert<T>(answers: &mut Vec<T>, refused: Refused<T>) {
    for (i, item) in refused {
        let at = i.min(answers.len());
        answers.insert(at, item);
    }
}

fn msg(s: &str) -> Option<StrBytes> {
    Some(str_bytes(s))
}

/// Decides what of `request` (of `api`, at `version`) the principal may
/// have served, by the API's [`Rule`] (see the module documentation).
pub fn gate(
    az: &Authz,
    state: &BrokerState,
    api: ApiKey,
    version: i16,
    request: RequestKind,
) -> Gate {
    match rule_for(api) {
        None => return Gate::Refuse(format!("{api:?} has no authorization rule: not served")),
        Some(Rule::Open) => return Gate::Serve(request, Fixup::None),
        Some(Rule::Acl(_)) => {}
    }
    let c = az.checker();
    let serve = |r: RequestKind| Gate::Serve(r, Fixup::None);
    match request {
        RequestKind::Produce(r) => produce(&c, r),
        RequestKind::Fetch(r) => fetch(&c, r),
        RequestKind::ListOffsets(mut r) => {
            let (kept, refused) = split(r.topics, |t| {
                (!c.authorize(Op::Describe, Rt::Topic, t.name.0.as_str())).then(|| {
                    let mut out = ListOffsetsTopicResponse::default();
                    out.name = t.name.clone();
                    out.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut rp = ListOffsetsPartitionResponse::default();
                            rp.partition_index = p.partition_index;
                            rp.error_code = TOPIC_AUTHORIZATION_FAILED;
                            rp
                        })
                        .collect();
                    out
                })
            });
            r.topics = kept;
            if r.topics.is_empty() && !refused.is_empty() {
                let mut out = ListOffsetsResponse::default();
                reinsert(&mut out.topics, refused);
                return Gate::Answer(ResponseKind::ListOffsets(out));
            }
            Gate::Serve(RequestKind::ListOffsets(r), Fixup::ListOffsets(refused))
        }
        RequestKind::Metadata(r) => metadata(&c, state, version, r),
        RequestKind::OffsetCommit(r) => offset_commit(&c, r),
        RequestKind::OffsetFetch(r) => offset_fetch(&c, version, r),
        RequestKind::JoinGroup(r) => {
            if c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
                return serve(RequestKind::JoinGroup(r));
            }
            let mut out = JoinGroupResponse::default();
            out.error_code = GROUP_AUTHORIZATION_FAILED;
            out.generation_id = -1;
            out.protocol_name = (version < 7).then(|| str_bytes(""));
            Gate::Answer(ResponseKind::JoinGroup(out))
        }
        RequestKind::SyncGroup(r) => {
            if c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
                return serve(RequestKind::SyncGroup(r));
            }
            let mut out = SyncGroupResponse::default();
            out.error_code = GROUP_AUTHORIZATION_FAILED;
            Gate::Answer(ResponseKind::SyncGroup(out))
        }
        RequestKind::Heartbeat(r) => {
            if c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
                return serve(RequestKind::Heartbeat(r));
            }
            let mut out = HeartbeatResponse::default();
            out.error_code = GROUP_AUTHORIZATION_FAILED;
            Gate::Answer(ResponseKind::Heartbeat(out))
        }
        RequestKind::LeaveGroup(r) => {
            if c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
                return serve(RequestKind::LeaveGroup(r));
            }
            let mut out = LeaveGroupResponse::default();
            out.error_code = GROUP_AUTHORIZATION_FAILED;
            Gate::Answer(ResponseKind::LeaveGroup(out))
        }
        RequestKind::DescribeGroups(mut r) => {
            let (kept, refused) = split(r.groups, |g| {
                (!c.authorize(Op::Describe, Rt::Group, g.0.as_str())).then(|| {
                    let mut d = DescribedGroup::default();
                    d.group_id = g.clone();
                    d.error_code = GROUP_AUTHORIZATION_FAILED;
                    d
                })
            });
            r.groups = kept;
            let operations = version >= 3 && r.include_authorized_operations;
            Gate::Serve(
                RequestKind::DescribeGroups(r),
                Fixup::DescribeGroups(refused, operations),
            )
        }
        RequestKind::ListGroups(r) => {
            // Describe on the cluster lists every group (Kafka keeps it for
            // compatibility); otherwise those the principal may Describe.
            let fixup = if cluster(&c, Op::Describe) {
                Fixup::None
            } else {
                Fixup::ListGroups
            };
            Gate::Serve(RequestKind::ListGroups(r), fixup)
        }
        RequestKind::DeleteGroups(mut r) => {
            let (kept, refused) = split(r.groups_names, |g| {
                (!c.authorize(Op::Delete, Rt::Group, g.0.as_str())).then(|| {
                    let mut d = DeletableGroupResult::default();
                    d.group_id = g.clone();
                    d.error_code = GROUP_AUTHORIZATION_FAILED;
                    d
                })
            });
            r.groups_names = kept;
            Gate::Serve(RequestKind::DeleteGroups(r), Fixup::DeleteGroups(refused))
        }
        RequestKind::OffsetDelete(r) => offset_delete(&c, r),
        RequestKind::FindCoordinator(r) => find_coordinator(&c, version, r),
        RequestKind::CreateTopics(r) => create_topics(&c, r),
        RequestKind::DeleteTopics(r) => delete_topics(&c, state, r),
        RequestKind::CreatePartitions(mut r) => {
            let (kept, refused) = split(r.topics, |t| {
                (!c.authorize(Op::Alter, Rt::Topic, t.name.0.as_str())).then(|| {
                    let mut res = CreatePartitionsTopicResult::default();
                    res.name = t.name.clone();
                    res.error_code = TOPIC_AUTHORIZATION_FAILED;
                    res.error_message = msg("The topic authorization is failed.");
                    res
                })
            });
            r.topics = kept;
            Gate::Serve(
                RequestKind::CreatePartitions(r),
                Fixup::CreatePartitions(refused),
            )
        }
        RequestKind::DescribeConfigs(mut r) => {
            let (kept, refused) = split(r.resources, |res| {
                let (code, message) = config_refusal(
                    &c,
                    Op::DescribeConfigs,
                    res.resource_type,
                    res.resource_name.as_str(),
                    &[CONFIG_BROKER, CONFIG_BROKER_LOGGER, CONFIG_CLIENT_METRICS],
                    true,
                )?;
                let mut out = DescribeConfigsResult::default();
                out.resource_type = res.resource_type;
                out.resource_name = res.resource_name.clone();
                out.error_code = code;
                out.error_message = message;
                Some(out)
            });
            r.resources = kept;
            Gate::Serve(
                RequestKind::DescribeConfigs(r),
                Fixup::DescribeConfigs(refused),
            )
        }
        RequestKind::AlterConfigs(mut r) => {
            let (kept, refused) = split(r.resources, |res| {
                let (code, _) = config_refusal(
                    &c,
                    Op::AlterConfigs,
                    res.resource_type,
                    res.resource_name.as_str(),
                    &[CONFIG_BROKER, CONFIG_CLIENT_METRICS],
                    false,
                )?;
                let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
                out.resource_type = res.resource_type;
                out.resource_name = res.resource_name.clone();
                out.error_code = code;
                out.error_message = None;
                Some(out)
            });
            r.resources = kept;
            Gate::Serve(RequestKind::AlterConfigs(r), Fixup::AlterConfigs(refused))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let (kept, refused) = split(r.resources, |res| {
                let (code, _) = config_refusal(
                    &c,
                    Op::AlterConfigs,
                    res.resource_type,
                    res.resource_name.as_str(),
                    &[CONFIG_BROKER, CONFIG_BROKER_LOGGER, CONFIG_CLIENT_METRICS],
                    true,
                )?;
                let mut out =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                out.resource_type = res.resource_type;
                out.resource_name = res.resource_name.clone();
                out.error_code = code;
                out.error_message = None;
                Some(out)
            });
            r.resources = kept;
            Gate::Serve(
                RequestKind::IncrementalAlterConfigs(r),
                Fixup::IncrementalAlterConfigs(refused),
            )
        }
        RequestKind::DeleteRecords(mut r) => {
            let (kept, refused) = split(r.topics, |t| {
                (!c.authorize(Op::Delete, Rt::Topic, t.name.0.as_str())).then(|| {
                    let mut out = DeleteRecordsTopicResult::default();
                    out.name = t.name.clone();
                    out.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut rp = DeleteRecordsPartitionResult::default();
                            rp.partition_index = p.partition_index;
                            rp.low_watermark = -1;
                            rp.error_code = TOPIC_AUTHORIZATION_FAILED;
                            rp
                        })
                        .collect();
                    out
                })
            });
            r.topics = kept;
            Gate::Serve(RequestKind::DeleteRecords(r), Fixup::DeleteRecords(refused))
        }
        RequestKind::InitProducerId(r) => {
            // Routed as `dispatch` routes it: a non-empty transactional id
            // is a transactional producer.
            let allowed = match r.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
                Some(id) => c.authorize(Op::Write, Rt::TransactionalId, id.0.as_str()),
                // KIP-679: IdempotentWrite on the cluster, or Write on any
                // topic.
                None => {
                    cluster(&c, Op::IdempotentWrite)
                        || c.authorize_any_of_type(Op::Write, Rt::Topic)
                }
            };
            if allowed {
                return serve(RequestKind::InitProducerId(r));
            }
            let mut out = InitProducerIdResponse::default();
            out.error_code = if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            } else {
                CLUSTER_AUTHORIZATION_FAILED
            };
            out.producer_id = ProducerId(-1);
            out.producer_epoch = -1;
            Gate::Answer(ResponseKind::InitProducerId(out))
        }
        RequestKind::AddPartitionsToTxn(r) => add_partitions_to_txn(&c, state, version, r),
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !c.authorize(
                Op::Write,
                Rt::TransactionalId,
                r.transactional_id.0.as_str(),
            ) {
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            } else if !c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
                GROUP_AUTHORIZATION_FAILED
            } else {
                return serve(RequestKind::AddOffsetsToTxn(r));
            };
            let mut out = AddOffsetsToTxnResponse::default();
            out.error_code = code;
            Gate::Answer(ResponseKind::AddOffsetsToTxn(out))
        }
        RequestKind::EndTxn(r) => {
            if c.authorize(
                Op::Write,
                Rt::TransactionalId,
                r.transactional_id.0.as_str(),
            ) {
                return serve(RequestKind::EndTxn(r));
            }
            let mut out = EndTxnResponse::default();
            out.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            out.producer_id = ProducerId(-1);
            out.producer_epoch = -1;
            Gate::Answer(ResponseKind::EndTxn(out))
        }
        RequestKind::TxnOffsetCommit(r) => txn_offset_commit(&c, r),
        RequestKind::WriteTxnMarkers(r) => {
            if cluster(&c, Op::Alter) || cluster(&c, Op::ClusterAction) {
                return serve(RequestKind::WriteTxnMarkers(r));
            }
            let mut out = WriteTxnMarkersResponse::default();
            out.markers = r
                .markers
                .iter()
                .map(|m| {
                    let mut result = WritableTxnMarkerResult::default();
                    result.producer_id = m.producer_id;
                    result.topics = m
                        .topics
                        .iter()
                        .map(|t| {
                            let mut tr = WritableTxnMarkerTopicResult::default();
                            tr.name = t.name.clone();
                            tr.partitions = t
                                .partition_indexes
                                .iter()
                                .map(|p| {
                                    let mut pr = WritableTxnMarkerPartitionResult::default();
                                    pr.partition_index = *p;
                                    pr.error_code = CLUSTER_AUTHORIZATION_FAILED;
                                    pr
                                })
                                .collect();
                            tr
                        })
                        .collect();
                    result
                })
                .collect();
            Gate::Answer(ResponseKind::WriteTxnMarkers(out))
        }
        RequestKind::DescribeTransactions(mut r) => {
            let (kept, refused) = split(r.transactional_ids, |id| {
                (!c.authorize(Op::Describe, Rt::TransactionalId, id.0.as_str())).then(|| {
                    let mut ts = TransactionState::default();
                    ts.transactional_id = id.clone();
                    ts.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                    ts.transaction_state = str_bytes("");
                    ts.producer_id = ProducerId(-1);
                    ts.producer_epoch = -1;
                    ts.transaction_start_time_ms = -1;
                    ts
                })
            });
            r.transactional_ids = kept;
            Gate::Serve(
                RequestKind::DescribeTransactions(r),
                Fixup::DescribeTransactions(refused),
            )
        }
        RequestKind::ListTransactions(r) => {
            Gate::Serve(RequestKind::ListTransactions(r), Fixup::ListTransactions)
        }
        RequestKind::DescribeProducers(mut r) => {
            let (kept, refused) = split(r.topics, |t| {
                let name = t.name.0.as_str();
                // An impossible name is the handler's to refuse, first.
                (sluice_log::validate_topic_name(name).is_ok()
                    && !c.authorize(Op::Read, Rt::Topic, name))
                .then(|| {
                    let mut out = ProducersTopic::default();
                    out.name = t.name.clone();
                    out.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let mut rp = ProducersPartition::default();
                            rp.partition_index = *p;
                            rp.error_code = TOPIC_AUTHORIZATION_FAILED;
                            rp.error_message = msg(TOPIC_DENIED);
                            rp
                        })
                        .collect();
                    out
                })
            });
            r.topics = kept;
            Gate::Serve(
                RequestKind::DescribeProducers(r),
                Fixup::DescribeProducers(refused),
            )
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            // Followers have ClusterAction; consumers validating their
            // position (KIP-320) need Describe on the topic.
            if cluster(&c, Op::ClusterAction) {
                return serve(RequestKind::OffsetForLeaderEpoch(r));
            }
            let (kept, refused) = split(r.topics, |t| {
                (!c.authorize(Op::Describe, Rt::Topic, t.topic.0.as_str())).then(|| {
                    let mut out = OffsetForLeaderTopicResult::default();
                    out.topic = t.topic.clone();
                    out.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut e = EpochEndOffset::default();
                            e.partition = p.partition;
                            e.error_code = TOPIC_AUTHORIZATION_FAILED;
                            e
                        })
                        .collect();
                    out
                })
            });
            r.topics = kept;
            Gate::Serve(
                RequestKind::OffsetForLeaderEpoch(r),
                Fixup::OffsetForLeaderEpoch(refused),
            )
        }
        RequestKind::DescribeCluster(r) => {
            if !r.include_cluster_authorized_operations {
                return serve(RequestKind::DescribeCluster(r));
            }
            let operations = if cluster(&c, Op::Describe) {
                authorized_operations(&c, Rt::Cluster, CLUSTER_NAME)
            } else {
                0
            };
            Gate::Serve(
                RequestKind::DescribeCluster(r),
                Fixup::DescribeCluster(operations),
            )
        }
        RequestKind::DescribeLogDirs(r) => {
            if cluster(&c, Op::Describe) {
                return serve(RequestKind::DescribeLogDirs(r));
            }
            let mut out = DescribeLogDirsResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            Gate::Answer(ResponseKind::DescribeLogDirs(out))
        }
        RequestKind::DescribeTopicPartitions(r) => Gate::Serve(
            RequestKind::DescribeTopicPartitions(r),
            Fixup::DescribeTopicPartitions,
        ),
        RequestKind::ElectLeaders(r) => {
            if cluster(&c, Op::Alter) {
                return serve(RequestKind::ElectLeaders(r));
            }
            let mut out = ElectLeadersResponse::default();
            if version >= 1 {
                out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            }
            out.replica_election_results = r
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    let mut result = ReplicaElectionResult::default();
                    result.topic = t.topic.clone();
                    result.partition_result = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = PartitionResult::default();
                            pr.partition_id = *p;
                            pr.error_code = CLUSTER_AUTHORIZATION_FAILED;
                            pr
                        })
                        .collect();
                    result
                })
                .collect();
            Gate::Answer(ResponseKind::ElectLeaders(out))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            if cluster(&c, Op::Alter) {
                return serve(RequestKind::AlterPartitionReassignments(r));
            }
            use alter_partition_reassignments_response::{
                ReassignablePartitionResponse, ReassignableTopicResponse,
            };
            let mut out = AlterPartitionReassignmentsResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            out.error_message = msg(CLUSTER_DENIED);
            out.allow_replication_factor_change = version < 1 || r.allow_replication_factor_change;
            out.responses = r
                .topics
                .iter()
                .map(|t| {
                    let mut rt = ReassignableTopicResponse::default();
                    rt.name = t.name.clone();
                    rt.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut rp = ReassignablePartitionResponse::default();
                            rp.partition_index = p.partition_index;
                            rp.error_code = CLUSTER_AUTHORIZATION_FAILED;
                            rp.error_message = msg(CLUSTER_DENIED);
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            Gate::Answer(ResponseKind::AlterPartitionReassignments(out))
        }
        RequestKind::ListPartitionReassignments(r) => {
            if cluster(&c, Op::Describe) {
                return serve(RequestKind::ListPartitionReassignments(r));
            }
            let mut out = ListPartitionReassignmentsResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            out.error_message = msg(CLUSTER_DENIED);
            out.topics = r
                .topics
                .iter()
                .flatten()
                .map(|t| {
                    let mut ot = OngoingTopicReassignment::default();
                    ot.name = t.name.clone();
                    ot.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let mut op = OngoingPartitionReassignment::default();
                            op.partition_index = *p;
                            op
                        })
                        .collect();
                    ot
                })
                .collect();
            Gate::Answer(ResponseKind::ListPartitionReassignments(out))
        }
        RequestKind::DescribeClientQuotas(r) => {
            if cluster(&c, Op::DescribeConfigs) {
                return serve(RequestKind::DescribeClientQuotas(r));
            }
            let mut out = DescribeClientQuotasResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            out.error_message = msg(CLUSTER_DENIED);
            out.entries = None;
            Gate::Answer(ResponseKind::DescribeClientQuotas(out))
        }
        RequestKind::AlterClientQuotas(r) => {
            if cluster(&c, Op::AlterConfigs) {
                return serve(RequestKind::AlterClientQuotas(r));
            }
            use alter_client_quotas_response::{EntityData, EntryData};
            let mut out = AlterClientQuotasResponse::default();
            out.entries = r
                .entries
                .iter()
                .map(|e| {
                    let mut entry = EntryData::default();
                    entry.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    entry.error_message = msg(CLUSTER_DENIED);
                    entry.entity = e
                        .entity
                        .iter()
                        .map(|en| {
                            let mut d = EntityData::default();
                            d.entity_type = en.entity_type.clone();
                            d.entity_name = en.entity_name.clone();
                            d
                        })
                        .collect();
                    entry
                })
                .collect();
            Gate::Answer(ResponseKind::AlterClientQuotas(out))
        }
        RequestKind::CreateAcls(r) => {
            if cluster(&c, Op::Alter) {
                return serve(RequestKind::CreateAcls(r));
            }
            let mut out = CreateAclsResponse::default();
            out.results = r
                .creations
                .iter()
                .map(|_| {
                    let mut res = create_acls_response::AclCreationResult::default();
                    res.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    res.error_message = msg(CLUSTER_DENIED);
                    res
                })
                .collect();
            Gate::Answer(ResponseKind::CreateAcls(out))
        }
        RequestKind::DescribeAcls(r) => {
            if cluster(&c, Op::Describe) {
                return serve(RequestKind::DescribeAcls(r));
            }
            let mut out = DescribeAclsResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            out.error_message = msg(CLUSTER_DENIED);
            Gate::Answer(ResponseKind::DescribeAcls(out))
        }
        RequestKind::DeleteAcls(r) => {
            if cluster(&c, Op::Alter) {
                return serve(RequestKind::DeleteAcls(r));
            }
            let mut out = DeleteAclsResponse::default();
            out.filter_results = r
                .filters
                .iter()
                .map(|_| {
                    let mut f = delete_acls_response::DeleteAclsFilterResult::default();
                    f.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    f.error_message = msg(CLUSTER_DENIED);
                    f
                })
                .collect();
            Gate::Answer(ResponseKind::DeleteAcls(out))
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            if cluster(&c, Op::Describe) {
                return serve(RequestKind::DescribeUserScramCredentials(r));
            }
            let mut out = DescribeUserScramCredentialsResponse::default();
            out.error_code = CLUSTER_AUTHORIZATION_FAILED;
            out.error_message = msg(CLUSTER_DENIED);
            Gate::Answer(ResponseKind::DescribeUserScramCredentials(out))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            if cluster(&c, Op::Alter) {
                return serve(RequestKind::AlterUserScramCredentials(r));
            }
            // One result per user named, as Kafka answers.
            let mut users: Vec<StrBytes> = Vec::new();
            for name in r
                .deletions
                .iter()
                .map(|d| &d.name)
                .chain(r.upsertions.iter().map(|u| &u.name))
            {
                if !users.contains(name) {
                    users.push(name.clone());
                }
            }
            let mut out = AlterUserScramCredentialsResponse::default();
            out.results = users
                .into_iter()
                .map(|user| {
                    let mut res =
                        alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
                    res.user = user;
                    res.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    res.error_message = msg(CLUSTER_DENIED);
                    res
                })
                .collect();
            Gate::Answer(ResponseKind::AlterUserScramCredentials(out))
        }
        // An API whose rule has no arm here is refused, never served
        // unchecked (the test that walks every supported API finds it).
        _ => Gate::Refuse(format!(
            "{api:?} has an authorization rule but no check: not served"
        )),
    }
}

/// A config resource refused `op`: (error, message) for a broker-wide
/// type (`cluster_types`: the cluster's `op`), a topic or (when
/// `groups`) a group without `op` on it; None if allowed, or for a type
/// the handler refuses on its own.
fn config_refusal(
    c: &Checker,
    op: Op,
    resource_type: i8,
    name: &str,
    cluster_types: &[i8],
    groups: bool,
) -> Option<(i16, Option<StrBytes>)> {
    let (allowed, code, message) = match resource_type {
        t if cluster_types.contains(&t) => {
            (cluster(c, op), CLUSTER_AUTHORIZATION_FAILED, CLUSTER_DENIED)
        }
        CONFIG_TOPIC => (
            c.authorize(op, Rt::Topic, name),
            TOPIC_AUTHORIZATION_FAILED,
            TOPIC_DENIED,
        ),
        CONFIG_GROUP if groups => (
            c.authorize(op, Rt::Group, name),
            GROUP_AUTHORIZATION_FAILED,
            GROUP_DENIED,
        ),
        _ => return None,
    };
    (!allowed).then(|| (code, msg(message)))
}

/// Whether any batch of a Produce is transactional (Kafka's
/// `RequestUtils.hasTransactionalRecords`); a malformed records field
/// counts as far as it parses (the append refuses it anyway).
fn has_transactional_records(r: &ProduceRequest) -> bool {
    use sluice_log::batch::BatchHeader;
    r.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_deref())
        .any(|mut records| {
            while let Ok(h) = BatchHeader::parse(records) {
                if h.is_transactional() {
                    return true;
                }
                match h.total_len().and_then(|len| records.get(len..)) {
                    Some(rest) => records = rest,
                    None => break,
                }
            }
            false
        })
}

fn produce_refused(t: &produce_request::TopicProduceData, code: i16) -> TopicProduceResponse {
    let mut out = TopicProduceResponse::default();
    out.name = t.name.clone();
    out.partition_responses = t
        .partition_data
        .iter()
        .map(|p| {
            let mut rp = PartitionProduceResponse::default();
            rp.index = p.index;
            rp.error_code = code;
            rp.base_offset = -1;
            rp.log_append_time_ms = -1;
            rp.log_start_offset = -1;
            rp
        })
        .collect();
    out
}

/// Produce: transactional batches need Write on the transactional id
/// (else every partition is refused); each topic needs Write.
fn produce(c: &Checker, mut r: ProduceRequest) -> Gate {
    if has_transactional_records(&r) {
        let allowed = r
            .transactional_id
            .as_ref()
            .is_some_and(|id| c.authorize(Op::Write, Rt::TransactionalId, id.0.as_str()));
        if !allowed {
            if r.acks == 0 {
                return Gate::Silent;
            }
            let mut out = ProduceResponse::default();
            out.responses = r
                .topic_data
                .iter()
                .map(|t| produce_refused(t, TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
                .collect();
            return Gate::Answer(ResponseKind::Produce(out));
        }
    }
    let (kept, refused) = split(r.topic_data, |t| {
        (!c.authorize(Op::Write, Rt::Topic, t.name.0.as_str()))
            .then(|| produce_refused(t, TOPIC_AUTHORIZATION_FAILED))
    });
    r.topic_data = kept;
    if r.topic_data.is_empty() && !refused.is_empty() {
        if r.acks == 0 {
            return Gate::Silent;
        }
        let mut out = ProduceResponse::default();
        reinsert(&mut out.responses, refused);
        return Gate::Answer(ResponseKind::Produce(out));
    }
    Gate::Serve(RequestKind::Produce(r), Fixup::Produce(refused))
}

/// Fetch: a follower (a replica id) needs ClusterAction on the cluster,
/// else every partition is refused; a consumer needs Read on each topic.
fn fetch(c: &Checker, mut r: FetchRequest) -> Gate {
    let follower = r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0;
    let refused_topic = |t: &fetch_request::FetchTopic| TopicData {
        name: t.topic.0.to_string(),
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionData {
                partition: p.partition,
                error_code: TOPIC_AUTHORIZATION_FAILED,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: None,
                diverging_epoch: None,
                aborted_transactions: Vec::new(),
            })
            .collect(),
    };
    let (kept, refused) = if follower {
        if cluster(c, Op::ClusterAction) {
            return Gate::Serve(RequestKind::Fetch(r), Fixup::None);
        }
        split(r.topics, |t| Some(refused_topic(t)))
    } else {
        split(r.topics, |t| {
            (!c.authorize(Op::Read, Rt::Topic, t.topic.0.as_str())).then(|| refused_topic(t))
        })
    };
    r.topics = kept;
    Gate::Serve(RequestKind::Fetch(r), Fixup::Fetch(refused))
}

/// Whether `topic` exists, as this broker sees it.
fn topic_exists(state: &BrokerState, topic: &str) -> bool {
    match state.cluster() {
        Some(c) => c.cluster.snapshot().topics.contains_key(topic),
        None => state.log.partition_count(topic).is_some(),
    }
}

fn metadata_refused(name: &TopicName, is_internal: bool) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(name.clone());
    t.error_code = TOPIC_AUTHORIZATION_FAILED;
    t.is_internal = is_internal;
    t
}

/// Metadata: every topic asked for is listed only if the principal may
/// Describe it; a named one it may not is TOPIC_AUTHORIZATION_FAILED
/// (whether or not it exists), and so is one that would be auto-created
/// without Create on the cluster or the topic (it is not created).
fn metadata(c: &Checker, state: &BrokerState, version: i16, mut r: MetadataRequest) -> Gate {
    let topic_operations = version >= 8 && r.include_topic_authorized_operations;
    let cluster_operations = (8..=10).contains(&version) && r.include_cluster_authorized_operations;
    let every =
        r.topics.is_none() || (version == 0 && r.topics.as_ref().is_some_and(|t| t.is_empty()));
    if every {
        return Gate::Serve(
            RequestKind::Metadata(r),
            Fixup::Metadata {
                refused: Vec::new(),
                only: None,
                topic_operations,
                cluster_operations,
            },
        );
    }
    let create = metadata::may_create(state, &r, version);
    let mut cluster_create: Option<bool> = None;
    let mut refused = Vec::new();
    let mut refused_names = HashSet::new();
    let mut only = HashSet::new();
    if let Some(list) = r.topics.as_mut() {
        list.retain(|t| {
            // Asked by id (v10+): the handler answers only names.
            let Some(name) = &t.name else {
                return true;
            };
            let topic = name.0.as_str();
            let refusal = if !c.authorize(Op::Describe, Rt::Topic, topic) {
                Some(false)
            } else if create
                && !topic_exists(state, topic)
                && !*cluster_create.get_or_insert_with(|| cluster(c, Op::Create))
                && !c.authorize(Op::Create, Rt::Topic, topic)
            {
                Some(is_internal_topic(topic))
            } else {
                None
            };
            match refusal {
                Some(internal) => {
                    if refused_names.insert(topic.to_string()) {
                        refused.push(metadata_refused(name, internal));
                    }
                    false
                }
                None => {
                    only.insert(topic.to_string());
                    true
                }
            }
        });
    }
    Gate::Serve(
        RequestKind::Metadata(r),
        Fixup::Metadata {
            refused,
            only: Some(only),
            topic_operations,
            cluster_operations,
        },
    )
}

fn commit_refused(
    t: &offset_commit_request::OffsetCommitRequestTopic,
    code: i16,
) -> OffsetCommitResponseTopic {
    let mut out = OffsetCommitResponseTopic::default();
    out.name = t.name.clone();
    out.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut rp = OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = code;
            rp
        })
        .collect();
    out
}

/// OffsetCommit: Read on the group (else every partition is refused), and
/// Read on each topic. With no topic left, nothing is committed and the
/// group is not asked.
fn offset_commit(c: &Checker, mut r: OffsetCommitRequest) -> Gate {
    if !c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
        let mut out = OffsetCommitResponse::default();
        out.topics = r
            .topics
            .iter()
            .map(|t| commit_refused(t, GROUP_AUTHORIZATION_FAILED))
            .collect();
        return Gate::Answer(ResponseKind::OffsetCommit(out));
    }
    let (kept, refused) = split(r.topics, |t| {
        (!c.authorize(Op::Read, Rt::Topic, t.name.0.as_str()))
            .then(|| commit_refused(t, TOPIC_AUTHORIZATION_FAILED))
    });
    r.topics = kept;
    if r.topics.is_empty() && !refused.is_empty() {
        let mut out = OffsetCommitResponse::default();
        reinsert(&mut out.topics, refused);
        return Gate::Answer(ResponseKind::OffsetCommit(out));
    }
    Gate::Serve(RequestKind::OffsetCommit(r), Fixup::OffsetCommit(refused))
}

/// OffsetFetch's answer for partitions refused with `code`: no offset.
/// Both response layouts (one group, v0–7; groups, v8+) have the same
/// partition fields under different type names.
fn fetch_refused<P: Default + RefusedOffset>(partitions: &[i32], code: i16) -> Vec<P> {
    partitions
        .iter()
        .map(|&p| {
            let mut rp = P::default();
            rp.refuse(p, code);
            rp
        })
        .collect()
}

trait RefusedOffset {
    fn refuse(&mut self, partition: i32, code: i16);
}

impl RefusedOffset for OffsetFetchResponsePartition {
    fn refuse(&mut self, partition: i32, code: i16) {
        self.partition_index = partition;
        self.committed_offset = -1;
        self.error_code = code;
    }
}

impl RefusedOffset for OffsetFetchResponsePartitions {
    fn refuse(&mut self, partition: i32, code: i16) {
        self.partition_index = partition;
        self.committed_offset = -1;
        self.error_code = code;
    }
}

/// OffsetFetch: Describe on each group; of its offsets, only those of
/// topics the principal may Describe (named ones it may not are
/// TOPIC_AUTHORIZATION_FAILED).
fn offset_fetch(c: &Checker, version: i16, mut r: OffsetFetchRequest) -> Gate {
    let describe_topic = |name: &TopicName| c.authorize(Op::Describe, Rt::Topic, name.0.as_str());
    if version >= 8 {
        let (groups, refused) = split(r.groups, |g| {
            (!c.authorize(Op::Describe, Rt::Group, g.group_id.0.as_str())).then(|| {
                let mut rg = OffsetFetchResponseGroup::default();
                rg.group_id = g.group_id.clone();
                rg.error_code = GROUP_AUTHORIZATION_FAILED;
                rg
            })
        });
        let mut fixes = Vec::with_capacity(groups.len());
        r.groups = groups
            .into_iter()
            .map(|mut g| {
                let fix = match g.topics.take() {
                    None => Topics::All,
                    Some(topics) => {
                        let (kept, refused) = split(topics, |t| {
                            (!describe_topic(&t.name)).then(|| {
                                let mut rt = OffsetFetchResponseTopics::default();
                                rt.name = t.name.clone();
                                rt.partitions =
                                    fetch_refused(&t.partition_indexes, TOPIC_AUTHORIZATION_FAILED);
                                rt
                            })
                        });
                        g.topics = Some(kept);
                        Topics::Named(refused)
                    }
                };
                fixes.push(fix);
                g
            })
            .collect();
        return Gate::Serve(
            RequestKind::OffsetFetch(r),
            Fixup::OffsetFetchGroups(refused, fixes),
        );
    }
    if !c.authorize(Op::Describe, Rt::Group, r.group_id.0.as_str()) {
        let mut out = OffsetFetchResponse::default();
        out.error_code = GROUP_AUTHORIZATION_FAILED;
        // v1 has no group error: each partition asked for carries it.
        if version < 2 {
            out.topics = r
                .topics
                .iter()
                .flatten()
                .map(|t| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = t.name.clone();
                    rt.partitions = fetch_refused(&t.partition_indexes, GROUP_AUTHORIZATION_FAILED);
                    rt
                })
                .collect();
        }
        return Gate::Answer(ResponseKind::OffsetFetch(out));
    }
    let fix = match r.topics.take() {
        None => Topics::All,
        Some(topics) => {
            let (kept, refused) = split(topics, |t| {
                (!describe_topic(&t.name)).then(|| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = t.name.clone();
                    rt.partitions = fetch_refused(&t.partition_indexes, TOPIC_AUTHORIZATION_FAILED);
                    rt
                })
            });
            r.topics = Some(kept);
            Topics::Named(refused)
        }
    };
    Gate::Serve(RequestKind::OffsetFetch(r), Fixup::OffsetFetch(fix))
}

/// OffsetDelete: Delete on the group, Read on each topic.
fn offset_delete(c: &Checker, mut r: OffsetDeleteRequest) -> Gate {
    if !c.authorize(Op::Delete, Rt::Group, r.group_id.0.as_str()) {
        let mut out = OffsetDeleteResponse::default();
        out.error_code = GROUP_AUTHORIZATION_FAILED;
        return Gate::Answer(ResponseKind::OffsetDelete(out));
    }
    let (kept, refused) = split(r.topics, |t| {
        (!c.authorize(Op::Read, Rt::Topic, t.name.0.as_str())).then(|| {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = TOPIC_AUTHORIZATION_FAILED;
                    rp
                })
                .collect();
            rt
        })
    });
    r.topics = kept;
    Gate::Serve(RequestKind::OffsetDelete(r), Fixup::OffsetDelete(refused))
}

/// FindCoordinator: Describe on the group (key type 0) or the
/// transactional id (1).
fn find_coordinator(c: &Checker, version: i16, mut r: FindCoordinatorRequest) -> Gate {
    let refusal = |key: &str| -> Option<(i16, &'static str)> {
        match r.key_type {
            0 if !c.authorize(Op::Describe, Rt::Group, key) => {
                Some((GROUP_AUTHORIZATION_FAILED, GROUP_DENIED))
            }
            1 if !c.authorize(Op::Describe, Rt::TransactionalId, key) => {
                Some((TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TXN_DENIED))
            }
            _ => None,
        }
    };
    if version >= 4 {
        let (kept, refused) = split(std::mem::take(&mut r.coordinator_keys), |key| {
            refusal(key.as_str()).map(|(code, _)| {
                let mut co = Coordinator::default();
                co.key = key.clone();
                co.node_id = BrokerId(-1);
                co.host = str_bytes("");
                co.port = -1;
                co.error_code = code;
                co
            })
        });
        r.coordinator_keys = kept;
        return Gate::Serve(
            RequestKind::FindCoordinator(r),
            Fixup::FindCoordinator(refused),
        );
    }
    let Some((code, message)) = refusal(r.key.as_str()) else {
        return Gate::Serve(RequestKind::FindCoordinator(r), Fixup::None);
    };
    let mut out = FindCoordinatorResponse::default();
    out.error_code = code;
    out.error_message = (version >= 1).then(|| str_bytes(message));
    out.node_id = BrokerId(-1);
    out.host = str_bytes("");
    out.port = -1;
    Gate::Answer(ResponseKind::FindCoordinator(out))
}

/// CreateTopics (as a KRaft controller answers it): Create on the cluster,
/// or on each topic; a topic created without DescribeConfigs on it is
/// answered without its configs (TOPIC_AUTHORIZATION_FAILED as its config
/// error).
fn create_topics(c: &Checker, mut r: CreateTopicsRequest) -> Gate {
    let cluster_create = cluster(c, Op::Create);
    let (kept, refused) = split(r.topics, |t| {
        let name = t.name.0.as_str();
        (!cluster_create && !c.authorize(Op::Create, Rt::Topic, name)).then(|| {
            let mut res = CreatableTopicResult::default();
            res.name = t.name.clone();
            res.error_code = TOPIC_AUTHORIZATION_FAILED;
            res.error_message = msg("Authorization failed.");
            res.num_partitions = -1;
            res.replication_factor = -1;
            res.configs = Some(Vec::new());
            res
        })
    });
    r.topics = kept;
    let hidden_configs = r
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|name| !c.authorize(Op::DescribeConfigs, Rt::Topic, name))
        .map(str::to_string)
        .collect();
    if r.topics.is_empty() && !refused.is_empty() {
        let mut out = CreateTopicsResponse::default();
        reinsert(&mut out.topics, refused);
        return Gate::Answer(ResponseKind::CreateTopics(out));
    }
    Gate::Serve(
        RequestKind::CreateTopics(r),
        Fixup::CreateTopics(refused, hidden_configs),
    )
}

/// DeleteTopics (as a KRaft controller answers it): Delete on the
/// cluster, or on each topic. A topic that may not be deleted is
/// TOPIC_AUTHORIZATION_FAILED — except one the principal may Describe
/// that does not exist: UNKNOWN_TOPIC_OR_PARTITION. So whether a topic
/// exists is told only to those who may Describe it.
fn delete_topics(c: &Checker, state: &BrokerState, mut r: DeleteTopicsRequest) -> Gate {
    let cluster_delete = cluster(c, Op::Delete);
    let refusal = |name: &TopicName| -> Option<DeletableTopicResult> {
        let topic = name.0.as_str();
        if cluster_delete || c.authorize(Op::Delete, Rt::Topic, topic) {
            return None;
        }
        let mut res = DeletableTopicResult::default();
        res.name = Some(name.clone());
        if c.authorize(Op::Describe, Rt::Topic, topic) && !topic_exists(state, topic) {
            res.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
            res.error_message = msg("This server does not host this topic-partition.");
        } else {
            res.error_code = TOPIC_AUTHORIZATION_FAILED;
            res.error_message = msg(TOPIC_DENIED);
        }
        Some(res)
    };
    // The handler answers `topic_names`, then the named `topics` (v6);
    // the refused ones keep their place in that order.
    let names = r.topic_names.len();
    let (kept, mut refused) = split(std::mem::take(&mut r.topic_names), refusal);
    r.topic_names = kept;
    let (kept, more) = split(std::mem::take(&mut r.topics), |t| {
        t.name.as_ref().and_then(refusal)
    });
    r.topics = kept;
    // Positions among what the handler answers: a `topics` entry without a
    // name (asked by id) is not answered by it.
    refused.extend(more.into_iter().map(|(i, res)| (names + i, res)));
    refused.sort_by_key(|(i, _)| *i);
    if r.topic_names.is_empty() && r.topics.is_empty() && !refused.is_empty() {
        let mut out = DeleteTopicsResponse::default();
        reinsert(&mut out.responses, refused);
        return Gate::Answer(ResponseKind::DeleteTopics(out));
    }
    Gate::Serve(RequestKind::DeleteTopics(r), Fixup::DeleteTopics(refused))
}

/// AddPartitionsToTxn: v4+ batches come from brokers verifying (KIP-890)
/// and need ClusterAction; v0–3 come from producers: Write on the
/// transactional id, and Write on every topic — one topic refused fails
/// the request (the others OPERATION_NOT_ATTEMPTED, or
/// UNKNOWN_TOPIC_OR_PARTITION where they do not exist).
fn add_partitions_to_txn(
    c: &Checker,
    state: &BrokerState,
    version: i16,
    r: AddPartitionsToTxnRequest,
) -> Gate {
    if version >= 4 {
        if cluster(c, Op::ClusterAction) {
            return Gate::Serve(RequestKind::AddPartitionsToTxn(r), Fixup::None);
        }
        let mut out = AddPartitionsToTxnResponse::default();
        out.error_code = CLUSTER_AUTHORIZATION_FAILED;
        return Gate::Answer(ResponseKind::AddPartitionsToTxn(out));
    }
    let answer = |code_for: &dyn Fn(&str, i32) -> i16| {
        let mut out = AddPartitionsToTxnResponse::default();
        out.results_by_topic_v3_and_below = r
            .v3_and_below_topics
            .iter()
            .map(|t| {
                let mut tr = AddPartitionsToTxnTopicResult::default();
                tr.name = t.name.clone();
                tr.results_by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut pr = AddPartitionsToTxnPartitionResult::default();
                        pr.partition_index = *p;
                        pr.partition_error_code = code_for(t.name.0.as_str(), *p);
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        Gate::Answer(ResponseKind::AddPartitionsToTxn(out))
    };
    let id = r.v3_and_below_transactional_id.0.as_str();
    if !c.authorize(Op::Write, Rt::TransactionalId, id) {
        return answer(&|_, _| TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    // Internal topics are never authorized for a producer's transaction.
    let refused: HashSet<&str> = r
        .v3_and_below_topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|name| is_internal_topic(name) || !c.authorize(Op::Write, Rt::Topic, name))
        .collect();
    if refused.is_empty() {
        return Gate::Serve(RequestKind::AddPartitionsToTxn(r), Fixup::None);
    }
    answer(&|topic, p| {
        if refused.contains(topic) {
            TOPIC_AUTHORIZATION_FAILED
        } else if !transactions::partition_exists(state, topic, p) {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            kafka_protocol::ResponseError::OperationNotAttempted.code()
        }
    })
}

/// TxnOffsetCommit: Write on the transactional id, Read on the group
/// (else every partition is refused), Read on each topic.
fn txn_offset_commit(c: &Checker, mut r: TxnOffsetCommitRequest) -> Gate {
    let refused_topic = |t: &txn_offset_commit_request::TxnOffsetCommitRequestTopic, code: i16| {
        let mut rt = TxnOffsetCommitResponseTopic::default();
        rt.name = t.name.clone();
        rt.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut rp = TxnOffsetCommitResponsePartition::default();
                rp.partition_index = p.partition_index;
                rp.error_code = code;
                rp
            })
            .collect();
        rt
    };
    let whole = if !c.authorize(
        Op::Write,
        Rt::TransactionalId,
        r.transactional_id.0.as_str(),
    ) {
        Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if !c.authorize(Op::Read, Rt::Group, r.group_id.0.as_str()) {
        Some(GROUP_AUTHORIZATION_FAILED)
    } else {
        None
    };
    if let Some(code) = whole {
        let mut out = TxnOffsetCommitResponse::default();
        out.topics = r.topics.iter().map(|t| refused_topic(t, code)).collect();
        return Gate::Answer(ResponseKind::TxnOffsetCommit(out));
    }
    let (kept, refused) = split(r.topics, |t| {
        (!c.authorize(Op::Read, Rt::Topic, t.name.0.as_str()))
            .then(|| refused_topic(t, TOPIC_AUTHORIZATION_FAILED))
    });
    r.topics = kept;
    if r.topics.is_empty() && !refused.is_empty() {
        let mut out = TxnOffsetCommitResponse::default();
        reinsert(&mut out.topics, refused);
        return Gate::Answer(ResponseKind::TxnOffsetCommit(out));
    }
    Gate::Serve(
        RequestKind::TxnOffsetCommit(r),
        Fixup::TxnOffsetCommit(refused),
    )
}

impl Fixup {
    /// Completes the answer to a request [`gate`] let through: the refused
    /// items put back, listings filtered, authorized-operations fields
    /// filled in. `version` is the request's.
    pub fn apply(self, az: &Authz, version: i16, response: &mut ResponseKind) {
        // The ACLs are loaded only for an answer that needs a check.
        let checker = std::cell::OnceCell::new();
        let c = || checker.get_or_init(|| az.checker());
        let describe_topic = |name: &str| c().authorize(Op::Describe, Rt::Topic, name);
        match (self, response) {
            (Fixup::None, _) => {}
            (Fixup::Produce(refused), ResponseKind::Produce(out)) => {
                reinsert(&mut out.responses, refused)
            }
            (Fixup::ListOffsets(refused), ResponseKind::ListOffsets(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (
                Fixup::Metadata {
                    refused,
                    only,
                    topic_operations,
                    cluster_operations,
                },
                ResponseKind::Metadata(out),
            ) => {
                out.topics.retain(|t| {
                    let Some(name) = &t.name else {
                        return true;
                    };
                    match &only {
                        Some(only) => only.contains(name.0.as_str()),
                        None => describe_topic(name.0.as_str()),
                    }
                });
                if topic_operations {
                    for t in &mut out.topics {
                        if let Some(name) = &t.name {
                            t.topic_authorized_operations =
                                authorized_operations(c(), Rt::Topic, name.0.as_str());
                        }
                    }
                }
                out.topics.extend(refused);
                if cluster_operations {
                    out.cluster_authorized_operations = if cluster(c(), Op::Describe) {
                        authorized_operations(c(), Rt::Cluster, CLUSTER_NAME)
                    } else {
                        0
                    };
                }
            }
            (Fixup::OffsetCommit(refused), ResponseKind::OffsetCommit(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::OffsetFetchGroups(refused, fixes), ResponseKind::OffsetFetch(out)) => {
                for (g, fix) in out.groups.iter_mut().zip(fixes) {
                    if g.error_code != errors::NONE {
                        continue;
                    }
                    match fix {
                        Topics::All => g.topics.retain(|t| describe_topic(t.name.0.as_str())),
                        Topics::Named(refused) => reinsert(&mut g.topics, refused),
                    }
                }
                reinsert(&mut out.groups, refused);
            }
            (Fixup::OffsetFetch(fix), ResponseKind::OffsetFetch(out)) => {
                if out.error_code == errors::NONE {
                    match fix {
                        Topics::All => out.topics.retain(|t| describe_topic(t.name.0.as_str())),
                        Topics::Named(refused) => reinsert(&mut out.topics, refused),
                    }
                }
            }
            (Fixup::DescribeGroups(refused, operations), ResponseKind::DescribeGroups(out)) => {
                if operations {
                    for g in out
                        .groups
                        .iter_mut()
                        .filter(|g| g.error_code == errors::NONE)
                    {
                        g.authorized_operations =
                            authorized_operations(c(), Rt::Group, g.group_id.0.as_str());
                    }
                }
                reinsert(&mut out.groups, refused);
            }
            (Fixup::ListGroups, ResponseKind::ListGroups(out)) => out
                .groups
                .retain(|g| c().authorize(Op::Describe, Rt::Group, g.group_id.0.as_str())),
            (Fixup::DeleteGroups(refused), ResponseKind::DeleteGroups(out)) => {
                reinsert(&mut out.results, refused)
            }
            (Fixup::OffsetDelete(refused), ResponseKind::OffsetDelete(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::FindCoordinator(refused), ResponseKind::FindCoordinator(out)) => {
                reinsert(&mut out.coordinators, refused)
            }
            (Fixup::CreateTopics(refused, hidden), ResponseKind::CreateTopics(out)) => {
                if version >= 5 {
                    for t in out.topics.iter_mut().filter(|t| {
                        t.error_code == errors::NONE && hidden.contains(t.name.0.as_str())
                    }) {
                        t.configs = Some(Vec::new());
                        t.topic_config_error_code = TOPIC_AUTHORIZATION_FAILED;
                    }
                }
                reinsert(&mut out.topics, refused);
            }
            (Fixup::DeleteTopics(refused), ResponseKind::DeleteTopics(out)) => {
                reinsert(&mut out.responses, refused)
            }
            (Fixup::CreatePartitions(refused), ResponseKind::CreatePartitions(out)) => {
                reinsert(&mut out.results, refused)
            }
            (Fixup::DescribeConfigs(refused), ResponseKind::DescribeConfigs(out)) => {
                reinsert(&mut out.results, refused)
            }
            (Fixup::AlterConfigs(refused), ResponseKind::AlterConfigs(out)) => {
                reinsert(&mut out.responses, refused)
            }
            (
                Fixup::IncrementalAlterConfigs(refused),
                ResponseKind::IncrementalAlterConfigs(out),
            ) => reinsert(&mut out.responses, refused),
            (Fixup::DeleteRecords(refused), ResponseKind::DeleteRecords(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::TxnOffsetCommit(refused), ResponseKind::TxnOffsetCommit(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::DescribeTransactions(refused), ResponseKind::DescribeTransactions(out)) => {
                // Only the partitions of topics the principal may Describe.
                for ts in &mut out.transaction_states {
                    ts.topics.retain(|t| describe_topic(t.topic.0.as_str()));
                }
                reinsert(&mut out.transaction_states, refused);
            }
            (Fixup::ListTransactions, ResponseKind::ListTransactions(out)) => {
                out.transaction_states.retain(|t| {
                    c().authorize(
                        Op::Describe,
                        Rt::TransactionalId,
                        t.transactional_id.0.as_str(),
                    )
                })
            }
            (Fixup::DescribeProducers(refused), ResponseKind::DescribeProducers(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::OffsetForLeaderEpoch(refused), ResponseKind::OffsetForLeaderEpoch(out)) => {
                reinsert(&mut out.topics, refused)
            }
            (Fixup::DescribeCluster(operations), ResponseKind::DescribeCluster(out)) => {
                if out.error_code == errors::NONE {
                    out.cluster_authorized_operations = operations;
                }
            }
            (Fixup::DescribeTopicPartitions, ResponseKind::DescribeTopicPartitions(out)) => {
                for t in &mut out.topics {
                    if t.error_code == TOPIC_AUTHORIZATION_FAILED {
                        continue;
                    }
                    if let Some(name) = &t.name {
                        t.topic_authorized_operations =
                            authorized_operations(c(), Rt::Topic, name.0.as_str());
                    }
                }
            }
            _ => {
                // A fixup always goes with its own API's answer; another
                // one is a bug, and the answer is sent as it is.
                tracing::error!("an authorization fixup does not match the answer");
            }
        }
    }
}
