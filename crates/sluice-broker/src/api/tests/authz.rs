//! Authorization (`authz`) through `dispatch`, per principal: Kafka's rule
//! for each API, what a refusal answers, and that a refused write changes
//! nothing. `User:admin` is the super user; the ACLs are put in the store
//! directly (the ACL APIs are tested in `acls`).

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Fixture, call_as, fixture, name, records};
use crate::api::authz::{self, Authz, Gate, Rule, rule_for};
use crate::api::versions::SUPPORTED;
use crate::api::{ApiError, ListenerInfo, Session, dispatch, errors};
use crate::config::BrokerConfig;
use crate::security::Principal;
use crate::security::acl::{
    AclBinding, AclOperation as Op, PatternType, PermissionType, ResourceType as Rt,
};

const TOPIC_DENIED: i16 = errors::TOPIC_AUTHORIZATION_FAILED;
const GROUP_DENIED: i16 = errors::GROUP_AUTHORIZATION_FAILED;
const CLUSTER_DENIED: i16 = errors::CLUSTER_AUTHORIZATION_FAILED;
const TXN_DENIED: i16 = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn admin() -> Option<Principal> {
    Some(Principal::user("admin"))
}

fn alice() -> Option<Principal> {
    Some(Principal::user("alice"))
}

fn authz_on(everyone: bool) -> Fixture {
    fixture(BrokerConfig {
        authorizer_acl: true,
        super_users: vec![Principal::user("admin")],
        allow_everyone_if_no_acl_found: everyone,
        auto_create_topics: true,
        ..BrokerConfig::default()
    })
}

fn acl(rt: Rt, pt: PatternType, name: &str, who: &str, op: Op, perm: PermissionType) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.into(),
        pattern_type: pt,
        principal: who.into(),
        host: "*".into(),
        operation: op,
        permission: perm,
    }
}

/// `User:alice` may `op` on the literal `name`.
fn allow(rt: Rt, name: &str, op: Op) -> AclBinding {
    acl(
        rt,
        PatternType::Literal,
        name,
        "User:alice",
        op,
        PermissionType::Allow,
    )
}

fn add(f: &Fixture, acls: &[AclBinding]) {
    let store = f.state.authorizer.as_ref().expect("authorizer").store();
    for r in store.create(acls).expect("stored") {
        r.expect("valid");
    }
}

async fn create_as(f: &Fixture, who: Option<Principal>, topic: &str) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics.push(t);
    call_as(f, who, 7, req).await.topics[0].error_code
}

fn log_end(f: &Fixture, topic: &str) -> Option<i64> {
    f.state.log.partition(topic, 0).map(|p| p.log_end())
}

fn produce_request(topics: &[&str], batch: &[u8]) -> ProduceRequest {
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 1000;
    for t in topics {
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(Bytes::copy_from_slice(batch));
        let mut td = TopicProduceData::default();
        td.name = name(t);
        td.partition_data.push(pd);
        req.topic_data.push(td);
    }
    req
}

/// (topic, error) per topic of a Produce answer, in its order.
fn produced(resp: &ProduceResponse) -> Vec<(String, i16)> {
    resp.responses
        .iter()
        .map(|t| (t.name.0.to_string(), t.partition_responses[0].error_code))
        .collect()
}

#[tokio::test]
async fn produce_needs_write_per_topic_and_a_refused_topic_gets_nothing() {
    let f = authz_on(false);
    for t in ["a", "b", "c"] {
        assert_eq!(create_as(&f, admin(), t).await, 0);
    }
    add(
        &f,
        &[
            allow(Rt::Topic, "a", Op::Write),
            allow(Rt::Topic, "c", Op::Write),
        ],
    );
    let batch = records(1000, &[(0, 10)]);
    let resp = call_as(&f, alice(), 9, produce_request(&["a", "b", "c"], &batch)).await;
    assert_eq!(
        produced(&resp),
        [("a".into(), 0), ("b".into(), TOPIC_DENIED), ("c".into(), 0)]
    );
    let refused = &resp.responses[1].partition_responses[0];
    assert_eq!(
        (refused.base_offset, refused.log_start_offset),
        (-1, -1),
        "as Kafka answers a refused partition"
    );
    assert_eq!(log_end(&f, "a"), Some(1));
    assert_eq!(log_end(&f, "b"), Some(0), "nothing appended to b");
    // Nobody else, not even anonymous, may write; the super user may.
    let resp = call_as(&f, None, 9, produce_request(&["a"], &batch)).await;
    assert_eq!(produced(&resp), [("a".into(), TOPIC_DENIED)]);
    let resp = call_as(&f, admin(), 9, produce_request(&["b"], &batch)).await;
    assert_eq!(produced(&resp), [("b".into(), 0)]);
    // A topic that does not exist: refused the same, and not created.
    let resp = call_as(&f, alice(), 9, produce_request(&["nope"], &batch)).await;
    assert_eq!(produced(&resp), [("nope".into(), TOPIC_DENIED)]);
    assert_eq!(f.state.log.partition_count("nope"), None);
}

#[tokio::test]
async fn transactional_batches_need_write_on_the_transactional_id() {
    let f = authz_on(false);
    assert_eq!(create_as(&f, admin(), "t").await, 0);
    add(&f, &[allow(Rt::Topic, "t", Op::Write)]);
    let mut batch = records(1000, &[(0, 10)]);
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | 0x10;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    sluice_log::batch::set_producer(&mut batch, 7, 0, 0);
    let mut req = produce_request(&["t"], &batch);
    req.transactional_id = Some(TransactionalId(s("tx")));
    let resp = call_as(&f, alice(), 9, req.clone()).await;
    assert_eq!(produced(&resp), [("t".into(), TXN_DENIED)]);
    // Without a transactional id at all: refused the same.
    req.transactional_id = None;
    let resp = call_as(&f, alice(), 9, req).await;
    assert_eq!(produced(&resp), [("t".into(), TXN_DENIED)]);
    assert_eq!(log_end(&f, "t"), Some(0));
}

fn fetch_request(topics: &[&str], replica: i32) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(replica);
    req.max_wait_ms = 5_000;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    for t in topics {
        let mut p = FetchPartition::default();
        p.partition = 0;
        p.partition_max_bytes = 1 << 20;
        let mut ft = FetchTopic::default();
        ft.topic = name(t);
        ft.partitions.push(p);
        req.topics.push(ft);
    }
    req
}

fn fetched(resp: &FetchResponse) -> Vec<(String, i16, bool)> {
    resp.responses
        .iter()
        .map(|t| {
            let p = &t.partitions[0];
            (
                t.topic.0.to_string(),
                p.error_code,
                p.records.as_ref().is_some_and(|r| !r.is_empty()),
            )
        })
        .collect()
}

#[tokio::test]
async fn fetch_needs_read_and_a_follower_fetch_needs_cluster_action() {
    let f = authz_on(false);
    for t in ["a", "b"] {
        assert_eq!(create_as(&f, admin(), t).await, 0);
        let resp = call_as(
            &f,
            admin(),
            9,
            produce_request(&[t], &records(1000, &[(0, 10)])),
        )
        .await;
        assert_eq!(produced(&resp)[0].1, 0);
    }
    add(&f, &[allow(Rt::Topic, "b", Op::Read)]);
    let resp = call_as(&f, alice(), 11, fetch_request(&["a", "b"], -1)).await;
    assert_eq!(
        fetched(&resp),
        [("a".into(), TOPIC_DENIED, false), ("b".into(), 0, true)]
    );
    // Every topic refused: answered at once, not after max_wait_ms.
    let started = std::time::Instant::now();
    let resp = call_as(&f, alice(), 11, fetch_request(&["a"], -1)).await;
    assert_eq!(fetched(&resp), [("a".into(), TOPIC_DENIED, false)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // A replica id is a follower: ClusterAction, which alice lacks even
    // for the topic she may read.
    let resp = call_as(&f, alice(), 11, fetch_request(&["b"], 1)).await;
    assert_eq!(fetched(&resp), [("b".into(), TOPIC_DENIED, false)]);
    add(
        &f,
        &[allow(Rt::Cluster, "kafka-cluster", Op::ClusterAction)],
    );
    let resp = call_as(&f, alice(), 11, fetch_request(&["a", "b"], 1)).await;
    assert_eq!(
        fetched(&resp),
        [("a".into(), 0, true), ("b".into(), 0, true)]
    );
}

fn metadata_request(topics: Option<&[&str]>) -> MetadataRequest {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut mt = MetadataRequestTopic::default();
                mt.name = Some(name(t));
                mt
            })
            .collect()
    });
    req.allow_auto_topic_creation = true;
    req
}

fn listed(resp: &MetadataResponse) -> Vec<(String, i16)> {
    let mut out: Vec<(String, i16)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn metadata_shows_only_what_the_principal_may_describe_and_creates_only_with_create() {
    let f = authz_on(false);
    for t in ["orders", "payments", "secret"] {
        assert_eq!(create_as(&f, admin(), t).await, 0);
    }
    add(
        &f,
        &[
            allow(Rt::Topic, "orders", Op::Read),
            acl(
                Rt::Topic,
                PatternType::Prefixed,
                "pay",
                "User:alice",
                Op::Describe,
                PermissionType::Allow,
            ),
            acl(
                Rt::Topic,
                PatternType::Prefixed,
                "auto-",
                "User:alice",
                Op::All,
                PermissionType::Allow,
            ),
        ],
    );
    // Every topic: those she may Describe (Read implies it), no others.
    let resp = call_as(&f, alice(), 12, metadata_request(None)).await;
    assert_eq!(
        listed(&resp),
        [("orders".into(), 0), ("payments".into(), 0)]
    );
    // Named: one she may not Describe is refused whether it exists or not
    // (and not created), without telling which.
    let resp = call_as(
        &f,
        alice(),
        12,
        metadata_request(Some(&["secret", "ghost", "orders"])),
    )
    .await;
    assert_eq!(
        listed(&resp),
        [
            ("ghost".into(), TOPIC_DENIED),
            ("orders".into(), 0),
            ("secret".into(), TOPIC_DENIED)
        ]
    );
    assert_eq!(f.state.log.partition_count("ghost"), None);
    // Describe but not Create: refused, not created. With Create (All on
    // the prefix): created.
    let resp = call_as(&f, alice(), 12, metadata_request(Some(&["pay-new"]))).await;
    assert_eq!(listed(&resp), [("pay-new".into(), TOPIC_DENIED)]);
    assert_eq!(f.state.log.partition_count("pay-new"), None);
    let resp = call_as(&f, alice(), 12, metadata_request(Some(&["auto-1"]))).await;
    assert_eq!(listed(&resp), [("auto-1".into(), 0)]);
    assert!(f.state.log.partition_count("auto-1").is_some());
    // v8+: the operations she may do, per topic; the cluster's (v8–10)
    // are none without Describe on it.
    let mut req = metadata_request(Some(&["orders"]));
    req.include_topic_authorized_operations = true;
    req.include_cluster_authorized_operations = true;
    let resp = call_as(&f, alice(), 10, req).await;
    let ops = resp.topics[0].topic_authorized_operations;
    assert_eq!(
        ops,
        (1 << Op::Read.code()) | (1 << Op::Describe.code()),
        "{ops:b}"
    );
    assert_eq!(resp.cluster_authorized_operations, 0);
    // Deny beats allow: a DENY for Describe on "orders" hides it.
    add(
        &f,
        &[acl(
            Rt::Topic,
            PatternType::Literal,
            "orders",
            "User:alice",
            Op::Describe,
            PermissionType::Deny,
        )],
    );
    let resp = call_as(&f, alice(), 12, metadata_request(None)).await;
    assert_eq!(
        listed(&resp),
        [("auto-1".into(), 0), ("payments".into(), 0)]
    );
}

#[tokio::test]
async fn list_offsets_needs_describe() {
    let f = authz_on(false);
    assert_eq!(create_as(&f, admin(), "a").await, 0);
    let mut p = ListOffsetsPartition::default();
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = name("a");
    t.partitions.push(p);
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics.push(t);
    let resp = call_as(&f, alice(), 7, req.clone()).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (TOPIC_DENIED, -1));
    add(&f, &[allow(Rt::Topic, "a", Op::Describe)]);
    let resp = call_as(&f, alice(), 7, req).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, 0));
}

#[tokio::test]
async fn create_and_delete_topics_follow_kafkas_controller() {
    let f = authz_on(false);
    // Create on the topic (prefixed) or on the cluster.
    add(
        &f,
        &[acl(
            Rt::Topic,
            PatternType::Prefixed,
            "team-",
            "User:alice",
            Op::Create,
            PermissionType::Allow,
        )],
    );
    assert_eq!(create_as(&f, alice(), "other").await, TOPIC_DENIED);
    assert_eq!(f.state.log.partition_count("other"), None, "not created");
    // Created, but without DescribeConfigs its configs are not shown.
    let mut t = CreatableTopic::default();
    t.name = name("team-1");
    t.num_partitions = 2;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics.push(t);
    let resp = call_as(&f, alice(), 7, req).await;
    let r = &resp.topics[0];
    assert_eq!((r.error_code, r.num_partitions), (0, 2));
    assert_eq!(r.topic_config_error_code, TOPIC_DENIED);
    assert_eq!(r.configs.as_deref().map(<[_]>::len), Some(0));
    add(&f, &[allow(Rt::Cluster, "kafka-cluster", Op::Create)]);
    assert_eq!(create_as(&f, alice(), "other").await, 0);
    assert_eq!(create_as(&f, admin(), "kept").await, 0);

    let delete = |names: &[&str]| {
        let mut req = DeleteTopicsRequest::default();
        req.topics = names
            .iter()
            .map(|n| {
                let mut t = DeleteTopicState::default();
                t.name = Some(name(n));
                t
            })
            .collect();
        req
    };
    let codes = |resp: DeleteTopicsResponse| -> Vec<(String, i16)> {
        resp.responses
            .iter()
            .map(|r| {
                (
                    r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    r.error_code,
                )
            })
            .collect()
    };
    // No Describe: refused whether it exists or not. Describe only: a
    // missing topic is unknown, an existing one refused (and kept).
    let resp = call_as(&f, alice(), 6, delete(&["kept", "ghost"])).await;
    assert_eq!(
        codes(resp),
        [
            ("kept".into(), TOPIC_DENIED),
            ("ghost".into(), TOPIC_DENIED)
        ]
    );
    add(
        &f,
        &[
            allow(Rt::Topic, "kept", Op::Describe),
            allow(Rt::Topic, "ghost", Op::Describe),
            allow(Rt::Topic, "team-1", Op::Delete),
        ],
    );
    let resp = call_as(&f, alice(), 6, delete(&["kept", "ghost", "team-1"])).await;
    assert_eq!(
        codes(resp),
        [
            ("kept".into(), TOPIC_DENIED),
            ("ghost".into(), errors::UNKNOWN_TOPIC_OR_PARTITION),
            ("team-1".into(), 0)
        ]
    );
    assert!(f.state.log.partition_count("kept").is_some());
    assert_eq!(f.state.log.partition_count("team-1"), None);
}

fn join_request(group: &str) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(group));
    req.session_timeout_ms = 10_000;
    req.rebalance_timeout_ms = 10_000;
    req.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    req.protocols.push(p);
    req
}

#[tokio::test]
async fn group_apis_need_read_describe_or_delete_on_the_group() {
    let f = authz_on(false);
    assert_eq!(create_as(&f, admin(), "t").await, 0);
    assert_eq!(create_as(&f, admin(), "u").await, 0);
    // JoinGroup needs Read on the group.
    let resp = call_as(&f, alice(), 7, join_request("g")).await;
    assert_eq!(resp.error_code, GROUP_DENIED);
    assert_eq!(resp.protocol_name, None, "v7: null, as Kafka");
    // FindCoordinator needs Describe (Read implies it).
    let mut fc = FindCoordinatorRequest::default();
    fc.coordinator_keys = vec![s("g"), s("h")];
    add(&f, &[allow(Rt::Group, "g", Op::Read)]);
    let resp = call_as(&f, alice(), 4, fc).await;
    let found: Vec<(String, i16)> = resp
        .coordinators
        .iter()
        .map(|c| (c.key.to_string(), c.error_code))
        .collect();
    assert_eq!(found, [("g".into(), 0), ("h".into(), GROUP_DENIED)]);
    // OffsetCommit: Read on the group, then Read on each topic.
    let commit = |topics: &[&str]| {
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s("g"));
        req.generation_id_or_member_epoch = -1;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut p = OffsetCommitRequestPartition::default();
                p.committed_offset = 5;
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = name(t);
                rt.partitions.push(p);
                rt
            })
            .collect();
        req
    };
    add(&f, &[allow(Rt::Topic, "u", Op::Read)]);
    let resp = call_as(&f, alice(), 8, commit(&["t", "u"])).await;
    let codes: Vec<i16> = resp
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(codes, [TOPIC_DENIED, 0]);
    assert_eq!(f.state.offsets.get("g", "t", 0), None, "nothing committed");
    assert_eq!(f.state.offsets.get("g", "u", 0).map(|c| c.offset), Some(5));
    // OffsetFetch of every partition: only the topics she may Describe.
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s("g"));
    g.topics = None;
    let mut of = OffsetFetchRequest::default();
    of.groups.push(g);
    call_as(&f, admin(), 8, commit(&["t"])).await;
    let resp = call_as(&f, admin(), 8, of.clone()).await;
    assert_eq!(resp.groups[0].topics.len(), 2, "admin sees both");
    let resp = call_as(&f, alice(), 8, of).await;
    let topics: Vec<String> = resp.groups[0]
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    assert_eq!(topics, ["u"]);
    // Named topics: the refused one answers its partitions with the error
    // and no offset, in both layouts (groups, v8; one group, v2–7).
    let named = |topic: &str| {
        let mut t = OffsetFetchRequestTopics::default();
        t.name = name(topic);
        t.partition_indexes = vec![0, 1];
        t
    };
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s("g"));
    g.topics = Some(vec![named("t"), named("u")]);
    let mut of = OffsetFetchRequest::default();
    of.groups.push(g);
    let resp = call_as(&f, alice(), 8, of).await;
    type Partitions = Vec<(i32, i64, i16)>;
    let got: Vec<(String, Partitions)> = resp.groups[0]
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset, p.error_code))
                .collect();
            (t.name.0.to_string(), parts)
        })
        .collect();
    assert_eq!(
        got[0],
        (
            "t".into(),
            vec![(0, -1, TOPIC_DENIED), (1, -1, TOPIC_DENIED)]
        )
    );
    assert_eq!((got[1].0.as_str(), got[1].1[0].2), ("u", 0));
    let old = |group: &str| {
        let mut t = OffsetFetchRequestTopic::default();
        t.name = name("t");
        t.partition_indexes = vec![0, 1];
        let mut of = OffsetFetchRequest::default();
        of.group_id = GroupId(s(group));
        of.topics = Some(vec![t]);
        of
    };
    let resp = call_as(&f, alice(), 7, old("g")).await;
    let t = &resp.topics[0];
    assert_eq!(
        t.partitions
            .iter()
            .map(|p| (p.partition_index, p.committed_offset, p.error_code))
            .collect::<Vec<_>>(),
        [(0, -1, TOPIC_DENIED), (1, -1, TOPIC_DENIED)]
    );
    // v1 has no group error: a refused group's partitions carry it.
    let resp = call_as(&f, alice(), 1, old("other")).await;
    let t = &resp.topics[0];
    assert_eq!(
        t.partitions
            .iter()
            .map(|p| (p.partition_index, p.committed_offset, p.error_code))
            .collect::<Vec<_>>(),
        [(0, -1, GROUP_DENIED), (1, -1, GROUP_DENIED)]
    );
    // ListGroups: the groups she may Describe (all with Describe on the
    // cluster); DescribeGroups refuses the others.
    call_as(&f, admin(), 8, {
        let mut r = commit(&["t"]);
        r.group_id = GroupId(s("other"));
        r
    })
    .await;
    let resp = call_as(&f, alice(), 4, ListGroupsRequest::default()).await;
    let groups: Vec<String> = resp
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert_eq!(groups, ["g"]);
    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec![GroupId(s("other")), GroupId(s("g"))];
    dg.include_authorized_operations = true;
    let resp = call_as(&f, alice(), 5, dg).await;
    let described: Vec<(String, i16)> = resp
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.error_code))
        .collect();
    assert_eq!(described, [("other".into(), GROUP_DENIED), ("g".into(), 0)]);
    assert_eq!(
        resp.groups[1].authorized_operations,
        (1 << Op::Read.code()) | (1 << Op::Describe.code())
    );
    // DeleteGroups needs Delete.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g"))];
    let resp = call_as(&f, alice(), 2, del).await;
    assert_eq!(resp.results[0].error_code, GROUP_DENIED);
    assert!(f.state.offsets.has_group("g"));
}

#[tokio::test]
async fn producer_ids_need_idempotent_write_or_write_on_some_topic_or_the_transactional_id() {
    let f = authz_on(false);
    let init = |id: Option<&str>| {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = id.map(|i| TransactionalId(s(i)));
        req.transaction_timeout_ms = 60_000;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        req
    };
    let resp = call_as(&f, alice(), 4, init(None)).await;
    assert_eq!((resp.error_code, resp.producer_id.0), (CLUSTER_DENIED, -1));
    // KIP-679: Write on any topic is enough (a prefix here).
    add(
        &f,
        &[acl(
            Rt::Topic,
            PatternType::Prefixed,
            "x",
            "User:alice",
            Op::Write,
            PermissionType::Allow,
        )],
    );
    let resp = call_as(&f, alice(), 4, init(None)).await;
    assert_eq!(resp.error_code, 0);
    assert!(resp.producer_id.0 >= 0);
    let resp = call_as(&f, alice(), 4, init(Some("tx"))).await;
    assert_eq!(resp.error_code, TXN_DENIED);
    // FindCoordinator for a transactional id needs Describe on it.
    let mut fc = FindCoordinatorRequest::default();
    fc.key_type = 1;
    fc.key = s("tx");
    let resp = call_as(&f, alice(), 3, fc).await;
    assert_eq!((resp.error_code, resp.node_id.0), (TXN_DENIED, -1));
    add(&f, &[allow(Rt::TransactionalId, "tx", Op::Write)]);
    let resp = call_as(&f, alice(), 4, init(Some("tx"))).await;
    assert_eq!(resp.error_code, 0);
}

#[tokio::test]
async fn cluster_apis_need_their_cluster_operation() {
    let f = authz_on(false);
    assert_eq!(create_as(&f, admin(), "t").await, 0);
    let resp = call_as(&f, alice(), 4, DescribeLogDirsRequest::default()).await;
    assert_eq!(resp.error_code, CLUSTER_DENIED);
    assert!(resp.results.is_empty());
    let mut el = ElectLeadersRequest::default();
    el.topic_partitions = Some(vec![{
        let mut t = elect_leaders_request::TopicPartitions::default();
        t.topic = name("t");
        t.partitions = vec![0];
        t
    }]);
    let resp = call_as(&f, alice(), 2, el).await;
    assert_eq!(resp.error_code, CLUSTER_DENIED);
    assert_eq!(
        resp.replica_election_results[0].partition_result[0].error_code,
        CLUSTER_DENIED
    );
    // DescribeConfigs: the broker needs DescribeConfigs on the cluster, a
    // topic DescribeConfigs on it.
    let describe = |rt: i8, n: &str| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = rt;
        r.resource_name = s(n);
        r.configuration_keys = None;
        r
    };
    let mut dc = DescribeConfigsRequest::default();
    dc.resources = vec![describe(4, "0"), describe(2, "t")];
    add(&f, &[allow(Rt::Topic, "t", Op::AlterConfigs)]);
    let resp = call_as(&f, alice(), 4, dc).await;
    let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [CLUSTER_DENIED, 0],
        "AlterConfigs implies DescribeConfigs"
    );
    assert!(!resp.results[1].configs.is_empty());
    // The ACL APIs: Describe and Alter on the cluster.
    let resp = call_as(&f, alice(), 3, DescribeAclsRequest::default()).await;
    assert_eq!(resp.error_code, CLUSTER_DENIED);
    let mut ca = CreateAclsRequest::default();
    ca.creations
        .push(create_acls_request::AclCreation::default());
    let resp = call_as(&f, alice(), 3, ca).await;
    assert_eq!(resp.results[0].error_code, CLUSTER_DENIED);
    let resp = call_as(&f, alice(), 1, DescribeClientQuotasRequest::default()).await;
    assert_eq!(resp.error_code, CLUSTER_DENIED);
    // The super user: everything.
    let resp = call_as(&f, admin(), 4, DescribeLogDirsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
    let mut any = DescribeAclsRequest::default();
    any.resource_type_filter = 1;
    any.pattern_type_filter = 1;
    any.operation = 1;
    any.permission_type = 1;
    any.resource_name_filter = None;
    any.principal_filter = None;
    any.host_filter = None;
    let resp = call_as(&f, admin(), 3, any).await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.resources.len(), 1, "alice's ACL on t");
}

#[tokio::test]
async fn allow_everyone_if_no_acl_found_opens_only_resources_without_acls() {
    let f = authz_on(true);
    for t in ["open", "guarded"] {
        assert_eq!(create_as(&f, admin(), t).await, 0);
    }
    // An ACL on "guarded" for someone else: alice is no longer let in.
    add(
        &f,
        &[acl(
            Rt::Topic,
            PatternType::Literal,
            "guarded",
            "User:bob",
            Op::Write,
            PermissionType::Allow,
        )],
    );
    let batch = records(1000, &[(0, 10)]);
    let resp = call_as(
        &f,
        alice(),
        9,
        produce_request(&["open", "guarded"], &batch),
    )
    .await;
    assert_eq!(
        produced(&resp),
        [("open".into(), 0), ("guarded".into(), TOPIC_DENIED)]
    );
    let resp = call_as(&f, alice(), 12, metadata_request(None)).await;
    assert_eq!(listed(&resp), [("open".into(), 0)]);
}

#[tokio::test]
async fn without_an_authorizer_nothing_is_checked() {
    let f = fixture(BrokerConfig::default());
    assert_eq!(create_as(&f, alice(), "t").await, 0);
    let batch = records(1000, &[(0, 10)]);
    let resp = call_as(&f, alice(), 9, produce_request(&["t"], &batch)).await;
    assert_eq!(produced(&resp), [("t".into(), 0)]);
    let resp = call_as(&f, alice(), 4, DescribeLogDirsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
    let mut req = metadata_request(Some(&["t"]));
    req.include_topic_authorized_operations = true;
    let resp = call_as(&f, alice(), 12, req).await;
    assert_eq!(
        resp.topics[0].topic_authorized_operations,
        i32::MIN,
        "as before"
    );
}

#[tokio::test]
async fn scram_credentials_need_alter_and_describe_on_the_cluster() {
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    let f = authz_on(false);
    let upsert = || {
        let mut u = ScramCredentialUpsertion::default();
        u.name = s("mallory");
        u.mechanism = 1;
        u.iterations = 4096;
        u.salt = Bytes::from_static(b"0123456789abcdef");
        u.salted_password = Bytes::from(vec![7u8; 32]);
        let mut req = AlterUserScramCredentialsRequest::default();
        req.upsertions = vec![u];
        req
    };
    // Anonymous (no ACL): refused, and no user is written.
    let refused = call_as(&f, None, 0, upsert()).await;
    assert_eq!(refused.results.len(), 1);
    assert_eq!(refused.results[0].user.as_str(), "mallory");
    assert_eq!(
        refused.results[0].error_code,
        errors::CLUSTER_AUTHORIZATION_FAILED
    );
    assert!(f.state.credentials.list().is_empty());
    let described = call_as(
        &f,
        alice(),
        0,
        DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert_eq!(described.error_code, errors::CLUSTER_AUTHORIZATION_FAILED);
    // Alter on the cluster: written.
    add(&f, &[allow(Rt::Cluster, "kafka-cluster", Op::Alter)]);
    let done = call_as(&f, alice(), 0, upsert()).await;
    assert_eq!(done.results[0].error_code, 0);
    assert_eq!(f.state.credentials.list().len(), 1);
    // Alter implies Describe (Kafka's implied operations).
    let described = call_as(
        &f,
        alice(),
        0,
        DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert_eq!(described.error_code, 0);
    // The super user may.
    let described = call_as(
        &f,
        admin(),
        0,
        DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert_eq!(described.error_code, 0);
}

/// A request of `api` as the decoder makes one from filler bytes, at the
/// first version in `lo..=hi` where that decodes: a request of each kind
/// without this file naming the kinds.
fn filler_request(api: ApiKey, lo: i16, hi: i16) -> Option<(i16, RequestKind)> {
    (lo..=hi).find_map(|version| {
        [0u8, 1].into_iter().find_map(|fill| {
            let mut bytes = Bytes::from(vec![fill; 4096]);
            RequestKind::decode(api, &mut bytes, version)
                .ok()
                .map(|r| (version, r))
        })
    })
}

#[tokio::test]
async fn every_advertised_api_has_an_explicit_rule_and_a_check_in_the_gate() {
    let f = authz_on(false);
    let alice = Principal::user("alice");
    let az = Authz::new(&f.state, &alice, "127.0.0.1".parse().expect("ip")).expect("authorizer");
    for &(api, lo, hi) in SUPPORTED {
        // A rule, written down: an API added to SUPPORTED without one
        // fails here (and is refused by the gate).
        let rule = rule_for(api);
        assert!(rule.is_some(), "{api:?} is advertised but has no rule");
        if let Some(Rule::Acl(checks)) = rule {
            assert!(
                !checks.is_empty(),
                "{api:?}: an ACL rule that checks nothing"
            );
            // Operations on resources, not the filters' wildcards.
            for (op, rt) in checks {
                assert!(
                    !matches!(op, Op::Any | Op::All) && *rt != Rt::Any,
                    "{api:?}: {op} on {rt} is not a check"
                );
            }
        }
        // And the gate has an arm that applies it: a request of the kind is
        // decided (served, answered or silenced), not refused for want of one.
        let (version, request) = filler_request(api, lo, hi)
            .unwrap_or_else(|| panic!("no {api:?} request decodes from filler bytes"));
        if let Gate::Refuse(why) = authz::gate(&az, &f.state, api, version, request) {
            panic!("{api:?} v{version}: {why}");
        }
    }
}

#[tokio::test]
async fn an_api_without_a_rule_is_refused_even_to_a_super_user() {
    let f = authz_on(true);
    // Delegation tokens: a real Kafka API that Sluice does not serve.
    let api = ApiKey::CreateDelegationToken;
    assert!(SUPPORTED.iter().all(|(k, _, _)| *k != api));
    assert_eq!(rule_for(api), None);
    let (version, request) = filler_request(api, 0, 3).expect("decodes");
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    let mut session = Session::new(
        std::sync::Arc::new(ListenerInfo {
            name: "PLAINTEXT".into(),
            protocol: crate::config::SecurityProtocol::Plaintext,
        }),
        "127.0.0.1:5555".parse().expect("addr"),
        admin(),
    );
    match dispatch(&f.state, header, request, &mut session).await {
        Err(ApiError::Unauthorized(why)) => assert!(why.contains("no authorization rule"), "{why}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("{api:?} was served"),
    }
}
