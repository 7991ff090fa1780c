//! `dispatch` in process, against a temporary data directory: each API's
//! answer without a socket or a broker process (the real-process tests in
//! `crates/sluice/tests` cover the same ground over the wire).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use sluice_log::batch::build_batch_with_deltas;

use super::{ListenerInfo, Part, Reply, Session, dispatch, errors};
use crate::config::BrokerConfig;
use crate::state::{Advertised, BrokerState};

mod acls;
mod admin;
mod authz;
mod client_quotas;
mod scram_credentials;

struct Fixture {
    state: Arc<BrokerState>,
    _dir: tempfile::TempDir,
}

fn fixture(config: BrokerConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..config
    };
    let advertised = Advertised {
        host: "kafka.example".into(),
        port: 19092,
    };
    let state = Arc::new(BrokerState::open(config, advertised).expect("open"));
    Fixture { state, _dir: dir }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

/// Sends `req` at `version` through `dispatch` and decodes the answer; file
/// regions (Fetch) are read back from their segments.
async fn call<R: Request + Into<RequestKind>>(f: &Fixture, version: i16, req: R) -> R::Response {
    call_as(f, None, version, req).await
}

/// `call` from a connection of `principal` (None: `User:ANONYMOUS`).
async fn call_as<R: Request + Into<RequestKind>>(
    f: &Fixture,
    principal: Option<crate::security::Principal>,
    version: i16,
    req: R,
) -> R::Response {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 7;
    let mut session = Session::new(
        Arc::new(ListenerInfo {
            name: "PLAINTEXT".into(),
            protocol: crate::config::SecurityProtocol::Plaintext,
        }),
        "127.0.0.1:5555".parse().expect("addr"),
        principal,
    );
    let reply = dispatch(&f.state, header, req.into(), &mut session)
        .await
        .expect("answered");
    let Reply::Respond(parts) = reply else {
        panic!("no response")
    };
    let mut frame = BytesMut::new();
    for part in parts {
        match part {
            Part::Bytes(b) => frame.extend_from_slice(&b),
            Part::File(r) => {
                let mut buf = vec![0u8; r.len as usize];
                r.segment
                    .file()
                    .read_exact_at(&mut buf, r.position)
                    .expect("region");
                frame.extend_from_slice(&buf);
            }
        }
    }
    let mut frame: Bytes = frame.freeze();
    let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    assert_eq!(size as usize, frame.len() - 4, "size prefix");
    let _ = frame.split_to(4);
    let api = ApiKey::try_from(R::KEY).expect("key");
    let h = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("h");
    assert_eq!(h.correlation_id, 7);
    R::Response::decode(&mut frame, version).expect("decode response")
}

async fn create(f: &Fixture, topic: &str, partitions: i32) {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics.push(t);
    let resp = call(f, 7, req).await;
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

async fn produce(f: &Fixture, topic: &str, partition: i32, records: Vec<u8>) -> (i16, i64) {
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(records));
    let mut td = TopicProduceData::default();
    td.name = name(topic);
    td.partition_data.push(pd);
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 1000;
    req.topic_data.push(td);
    let resp = call(f, 9, req).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn records(base_ts: i64, deltas_and_sizes: &[(i64, usize)]) -> Vec<u8> {
    let values: Vec<Vec<u8>> = deltas_and_sizes
        .iter()
        .map(|(_, n)| vec![b'v'; *n])
        .collect();
    let recs: Vec<(i64, &[u8])> = deltas_and_sizes
        .iter()
        .zip(&values)
        .map(|((d, _), v)| (*d, v.as_slice()))
        .collect();
    build_batch_with_deltas(base_ts, &recs)
}

#[tokio::test]
async fn metadata_names_the_advertised_host_and_this_directorys_cluster_id() {
    let f = fixture(BrokerConfig::default());
    create(&f, "orders", 3).await;
    let mut req = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name("orders"));
    req.topics = Some(vec![t]);
    let resp = call(&f, 12, req).await;
    assert_eq!(resp.brokers[0].host.as_str(), "kafka.example");
    assert_eq!(resp.brokers[0].port, 19092);
    let cluster = resp.cluster_id.expect("cluster id").to_string();
    assert_eq!(cluster, f.state.meta.cluster_id);
    assert_eq!(cluster.len(), 22);
    assert_ne!(cluster, "sluice");
    assert_eq!(resp.topics[0].partitions.len(), 3);
}

#[tokio::test]
async fn message_max_bytes_limits_each_batch_not_the_request() {
    let f = fixture(BrokerConfig::default());
    create(&f, "big", 1).await;
    // Two 700 KB batches in one records field: 1.4 MB in all.
    let mut two = records(1000, &[(0, 700_000)]);
    two.extend_from_slice(&records(1000, &[(0, 700_000)]));
    assert_eq!(produce(&f, "big", 0, two).await, (0, 0));
    // One 1.1 MB batch.
    let (code, _) = produce(&f, "big", 0, records(1000, &[(0, 1_100_000)])).await;
    assert_eq!(code, errors::MESSAGE_TOO_LARGE);
}

#[tokio::test]
async fn list_offsets_answers_max_timestamp_and_the_found_records_timestamp() {
    let f = fixture(BrokerConfig::default());
    create(&f, "ts", 1).await;
    // Offsets 0..3 at 1000, 1500, 1200; 3..5 at 900, 950.
    produce(&f, "ts", 0, records(1000, &[(0, 10), (500, 10), (200, 10)])).await;
    produce(&f, "ts", 0, records(900, &[(0, 10), (50, 10)])).await;
    let ask = |timestamp: i64| {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = name("ts");
        t.partitions.push(p);
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics.push(t);
        req
    };
    let answer = |r: ListOffsetsResponse| {
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(answer(call(&f, 7, ask(-3)).await), (1, 1500));
    assert_eq!(answer(call(&f, 7, ask(1100)).await), (1, 1500));
    assert_eq!(answer(call(&f, 7, ask(1000)).await), (0, 1000));
    assert_eq!(answer(call(&f, 7, ask(2000)).await), (-1, -1));
    assert_eq!(answer(call(&f, 7, ask(-1)).await), (5, -1));
    assert_eq!(answer(call(&f, 7, ask(-2)).await), (0, -1));
}

fn txn_id(s: &'static str) -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(s))
}

async fn init_txn(f: &Fixture, id: &'static str, version: i16) -> InitProducerIdResponse {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(txn_id(id));
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    call(f, version, req).await
}

async fn add_to_txn(f: &Fixture, version: i16, pid: i64, epoch: i16, topic: &str) -> i16 {
    let mut t =
        kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
    t.name = name(topic);
    t.partitions = vec![0];
    let mut req = AddPartitionsToTxnRequest::default();
    req.v3_and_below_transactional_id = txn_id("txn-1");
    req.v3_and_below_producer_id = ProducerId(pid);
    req.v3_and_below_producer_epoch = epoch;
    req.v3_and_below_topics = vec![t];
    let resp = call(f, version, req).await;
    resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn produce_txn(f: &Fixture, topic: &str, pid: i64, epoch: i16, seq: i32) -> (i16, i64) {
    let mut b = sluice_log::batch::build_batch(sluice_log::now_ms(), &[b"in a transaction"]);
    let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x10;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    sluice_log::batch::set_producer(&mut b, pid, epoch, seq);
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(Bytes::from(b));
    let mut td = TopicProduceData::default();
    td.name = name(topic);
    td.partition_data.push(pd);
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 1000;
    req.transactional_id = Some(txn_id("txn-1"));
    req.topic_data.push(td);
    let resp = call(f, 9, req).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn a_transaction_runs_from_init_to_commit_and_a_new_init_fences_the_old_producer() {
    let f = fixture(BrokerConfig::default());
    create(&f, "t", 1).await;
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 1;
    req.coordinator_keys = vec![StrBytes::from_static_str("txn-1")];
    let resp = call(&f, 4, req).await;
    assert_eq!(
        (
            resp.coordinators[0].error_code,
            resp.coordinators[0].node_id.0
        ),
        (0, f.state.meta.node_id),
        "one node coordinates every transactional id"
    );
    let first = init_txn(&f, "txn-1", 4).await;
    assert_eq!((first.error_code, first.producer_epoch), (0, 0));
    let pid = first.producer_id.0;
    // KIP-890: data for a partition not added to the transaction is refused.
    assert_eq!(
        produce_txn(&f, "t", pid, 0, 0).await.0,
        kafka_protocol::ResponseError::InvalidTxnState.code()
    );
    assert_eq!(add_to_txn(&f, 3, pid, 0, "t").await, 0);
    let (code, offset) = produce_txn(&f, "t", pid, 0, 0).await;
    assert_eq!((code, offset), (0, 0));
    let log = f.state.log.partition("t", 0).expect("partition");
    assert_eq!(log.last_stable_offset(), 0, "the open transaction holds it");
    // A second producer with the same id: the open transaction is aborted
    // and the first producer fenced.
    let second = init_txn(&f, "txn-1", 4).await;
    assert_eq!(
        (
            second.error_code,
            second.producer_id.0,
            second.producer_epoch
        ),
        (0, pid, 2),
        "one epoch for the abort's fence, one for the new producer"
    );
    assert_eq!(
        log.last_stable_offset(),
        log.log_end(),
        "aborted: stable again"
    );
    assert_eq!(log.aborted_transactions(0, log.log_end()), vec![(pid, 0)]);
    assert_eq!(
        add_to_txn(&f, 3, pid, 0, "t").await,
        kafka_protocol::ResponseError::ProducerFenced.code()
    );
    assert_eq!(
        add_to_txn(&f, 1, pid, 0, "t").await,
        errors::INVALID_PRODUCER_EPOCH,
        "clients before KIP-588 are told INVALID_PRODUCER_EPOCH"
    );
    // The new producer commits.
    assert_eq!(add_to_txn(&f, 3, pid, 2, "t").await, 0);
    assert_eq!(produce_txn(&f, "t", pid, 2, 0).await.0, 0);
    let mut end = EndTxnRequest::default();
    end.transactional_id = txn_id("txn-1");
    end.producer_id = ProducerId(pid);
    end.producer_epoch = 2;
    end.committed = true;
    assert_eq!(call(&f, 3, end.clone()).await.error_code, 0);
    assert_eq!(call(&f, 3, end).await.error_code, 0, "a retried commit");
    assert_eq!(log.last_stable_offset(), log.log_end());
    let counters = &f.state.txns.counters;
    assert_eq!(
        (
            counters
                .committed
                .load(std::sync::atomic::Ordering::Relaxed),
            counters.aborted.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (1, 1),
        "the fenced producer's abort and the commit"
    );
    let mut describe = DescribeTransactionsRequest::default();
    describe.transactional_ids = vec![txn_id("txn-1"), txn_id("nobody")];
    let resp = call(&f, 0, describe).await;
    assert_eq!(
        resp.transaction_states[0].transaction_state.as_str(),
        "CompleteCommit"
    );
    assert_eq!(resp.transaction_states[0].producer_epoch, 2);
    assert_eq!(
        resp.transaction_states[1].error_code,
        kafka_protocol::ResponseError::TransactionalIdNotFound.code()
    );
    let resp = call(&f, 1, ListTransactionsRequest::default()).await;
    assert_eq!(resp.transaction_states.len(), 1);
    assert_eq!(resp.transaction_states[0].producer_id.0, pid);
    // Idempotent producers still get ids.
    let mut req = InitProducerIdRequest::default();
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let resp = call(&f, 4, req).await;
    assert_eq!((resp.error_code, resp.producer_epoch), (0, 0));
}

#[tokio::test]
async fn find_coordinator_answers_each_key_by_its_type() {
    let f = fixture(BrokerConfig::default());
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 2;
    req.coordinator_keys = vec![StrBytes::from_static_str("share-group")];
    let resp = call(&f, 4, req).await;
    assert_eq!(
        (
            resp.coordinators[0].error_code,
            resp.coordinators[0].node_id.0
        ),
        (errors::INVALID_REQUEST, -1),
        "a key type this broker has no coordinator for"
    );
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 0;
    req.coordinator_keys = vec![StrBytes::from_static_str("g")];
    let resp = call(&f, 4, req).await;
    assert_eq!(
        (
            resp.coordinators[0].error_code,
            resp.coordinators[0].node_id.0
        ),
        (0, f.state.meta.node_id),
        "one node coordinates every group"
    );
}

#[tokio::test]
async fn offset_commit_refuses_oversized_strings_instead_of_cutting_them() {
    let f = fixture(BrokerConfig::default());
    let commit = |group: String, metadata: Vec<String>| {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = name("t");
        for (i, m) in metadata.into_iter().enumerate() {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = i as i32;
            p.committed_offset = 10 + i as i64;
            p.committed_metadata = Some(StrBytes::from_string(m));
            t.partitions.push(p);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group));
        req.generation_id_or_member_epoch = -1;
        req.topics.push(t);
        req
    };
    let resp = call(
        &f,
        8,
        commit("g".into(), vec!["ok".into(), "x".repeat(5000)]),
    )
    .await;
    let codes: Vec<i16> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, errors::OFFSET_METADATA_TOO_LARGE]);
    assert_eq!(f.state.offsets.get("g", "t", 0).map(|c| c.offset), Some(10));
    assert_eq!(f.state.offsets.get("g", "t", 1), None);
    let resp = call(&f, 8, commit("g".repeat(70_000), vec!["ok".into()])).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        errors::INVALID_GROUP_ID
    );
    assert!(!f.state.offsets.has_group(&"g".repeat(70_000)));
}

#[tokio::test]
async fn create_partitions_grows_a_topic() {
    let f = fixture(BrokerConfig::default());
    create(&f, "grow", 1).await;
    let mut t = CreatePartitionsTopic::default();
    t.name = name("grow");
    t.count = 4;
    let mut req = CreatePartitionsRequest::default();
    req.topics.push(t);
    req.timeout_ms = 1000;
    let resp = call(&f, 3, req).await;
    assert_eq!(resp.results[0].error_code, 0);
    assert_eq!(f.state.log.partition_count("grow"), Some(4));
}

#[tokio::test]
async fn a_fetch_over_the_partition_limit_is_answered_for_every_partition() {
    let f = fixture(BrokerConfig {
        max_partitions_per_fetch: 2,
        ..BrokerConfig::default()
    });
    create(&f, "wide", 4).await;
    for p in 0..4 {
        produce(&f, "wide", p, records(1000, &[(0, 100)])).await;
    }
    let mut t = FetchTopic::default();
    t.topic = name("wide");
    for p in 0..4 {
        let mut fp = FetchPartition::default();
        fp.partition = p;
        fp.fetch_offset = 0;
        fp.partition_max_bytes = 1 << 20;
        t.partitions.push(fp);
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_bytes = 1 << 20;
    req.topics.push(t);
    let resp = call(&f, 12, req).await;
    let parts = &resp.responses[0].partitions;
    assert_eq!(parts.len(), 4);
    for p in parts {
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 1);
    }
    let with_records = parts
        .iter()
        .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
        .count();
    assert_eq!(with_records, 2, "the first two partitions are served");
}

fn topic_value(resp: &DescribeConfigsResponse, name: &str) -> Option<(String, i8)> {
    resp.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .map(|c| {
            (
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
            )
        })
}

fn describe_topic(topic: &str) -> DescribeConfigsRequest {
    let mut res =
        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.into());
    let mut req = DescribeConfigsRequest::default();
    req.resources.push(res);
    req.include_synonyms = true;
    req.include_documentation = true;
    req
}

#[tokio::test]
async fn alter_configs_replaces_and_incremental_alter_edits() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::incremental_alter_configs_request as inc;
    let f = fixture(BrokerConfig::default());
    create(&f, "cfg", 1).await;
    let set = |pairs: &[(&str, i8, &str)]| {
        let mut res = inc::AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_static_str("cfg");
        res.configs = pairs
            .iter()
            .map(|(k, op, v)| {
                let mut c = inc::AlterableConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.config_operation = *op;
                c.value = Some(StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources.push(res);
        req
    };
    // SET, then APPEND to a list, then SUBTRACT from it.
    let resp = call(
        &f,
        1,
        set(&[
            ("retention.ms", 0, "5000"),
            ("cleanup.policy", 2, "compact"),
        ]),
    )
    .await;
    assert_eq!(
        resp.responses[0].error_code, 0,
        "{:?}",
        resp.responses[0].error_message
    );
    let d = call(&f, 4, describe_topic("cfg")).await;
    assert_eq!(topic_value(&d, "retention.ms"), Some(("5000".into(), 1)));
    assert_eq!(
        topic_value(&d, "cleanup.policy"),
        Some(("compact,delete".into(), 1))
    );
    let retention = d.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .expect("entry");
    assert_eq!(retention.config_type, 5, "LONG");
    assert!(retention.documentation.is_some());
    let synonyms: Vec<(String, i8)> = retention
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.source))
        .collect();
    assert_eq!(
        synonyms,
        vec![("retention.ms".into(), 1), ("log.retention.ms".into(), 5)]
    );
    call(&f, 1, set(&[("cleanup.policy", 3, "delete")])).await;
    let d = call(&f, 4, describe_topic("cfg")).await;
    assert_eq!(
        topic_value(&d, "cleanup.policy"),
        Some(("compact".into(), 1))
    );
    // APPEND to a non-list and unknown names are refused by name.
    let resp = call(&f, 1, set(&[("retention.ms", 2, "1")])).await;
    assert_eq!(resp.responses[0].error_code, errors::INVALID_CONFIG);
    let resp = call(&f, 1, set(&[("retention.mss", 0, "1")])).await;
    assert_eq!(resp.responses[0].error_code, errors::INVALID_CONFIG);
    assert!(
        resp.responses[0]
            .error_message
            .as_ref()
            .is_some_and(|m| m.contains("retention.mss"))
    );
    // AlterConfigs replaces the whole set.
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("cfg");
    let mut c = AlterableConfig::default();
    c.name = StrBytes::from_static_str("segment.ms");
    c.value = Some(StrBytes::from_static_str("60000"));
    res.configs.push(c);
    let mut req = AlterConfigsRequest::default();
    req.resources.push(res);
    let resp = call(&f, 2, req).await;
    assert_eq!(resp.responses[0].error_code, 0);
    let d = call(&f, 4, describe_topic("cfg")).await;
    assert_eq!(topic_value(&d, "segment.ms"), Some(("60000".into(), 1)));
    assert_eq!(
        topic_value(&d, "retention.ms"),
        Some(("604800000".into(), 5))
    );
    assert_eq!(
        topic_value(&d, "cleanup.policy"),
        Some(("delete".into(), 5))
    );
    // Unknown topics.
    let d = call(&f, 4, describe_topic("nope")).await;
    assert_eq!(d.results[0].error_code, errors::UNKNOWN_TOPIC_OR_PARTITION);
}

#[tokio::test]
async fn a_coordinator_that_finds_a_prepared_commit_finishes_it_after_a_crash() {
    use crate::coordinator::offsets::{OFFSETS_TOPIC, encode_batch};
    use crate::coordinator::transactions::{self as txn, TRANSACTION_TOPIC, TxnState};
    let f = fixture(BrokerConfig::default());
    create(&f, "t", 1).await;
    let pid = init_txn(&f, "txn-1", 4).await.producer_id.0;
    assert_eq!(add_to_txn(&f, 3, pid, 0, "t").await, 0);
    assert_eq!(produce_txn(&f, "t", pid, 0, 0).await, (0, 0));
    // Offsets in the transaction too: group "g" at 5.
    let mut add = AddOffsetsToTxnRequest::default();
    add.transactional_id = txn_id("txn-1");
    add.producer_id = ProducerId(pid);
    add.producer_epoch = 0;
    add.group_id = GroupId(StrBytes::from_static_str("g"));
    assert_eq!(call(&f, 3, add).await.error_code, 0);
    let mut part = kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
    part.partition_index = 0;
    part.committed_offset = 5;
    let mut topic =
        kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
    topic.name = name("t");
    topic.partitions = vec![part];
    let mut commit = TxnOffsetCommitRequest::default();
    commit.transactional_id = txn_id("txn-1");
    commit.group_id = GroupId(StrBytes::from_static_str("g"));
    commit.producer_id = ProducerId(pid);
    commit.producer_epoch = 0;
    commit.generation_id = -1;
    commit.topics = vec![topic];
    let resp = call(&f, 3, commit).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    // The coordinator decided to commit (PrepareCommit written) and died
    // before any marker.
    let mut prepared = f.state.txns.get("txn-1").expect("loaded");
    assert_eq!(prepared.state, TxnState::Ongoing);
    assert_eq!(
        prepared.partitions.len(),
        2,
        "t-0 and the group's partition"
    );
    prepared.state = TxnState::PrepareCommit;
    let record = (
        txn::log_key("txn-1").expect("key"),
        Some(txn::log_value(&prepared).expect("value")),
    );
    let p = f.state.txns.partition_for("txn-1");
    let log = f
        .state
        .log
        .partition(TRANSACTION_TOPIC, p as u32)
        .expect("partition");
    log.append(&encode_batch(&[record], 1).expect("batch"), 0)
        .expect("append");
    let Fixture { state, _dir: dir } = f;
    let config = state.config.clone();
    drop(state);
    // A new broker on the same directory, without a clean shutdown.
    let state = Arc::new(
        BrokerState::open(
            config,
            Advertised {
                host: "kafka.example".into(),
                port: 19092,
            },
        )
        .expect("reopen"),
    );
    let f = Fixture { state, _dir: dir };
    let t = f.state.log.partition("t", 0).expect("t-0");
    assert_eq!(t.last_stable_offset(), 0, "still open after the crash");
    // The first request for the id loads its partition, which finishes the
    // commit: markers, then CompleteCommit.
    let mut describe = DescribeTransactionsRequest::default();
    describe.transactional_ids = vec![txn_id("txn-1")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = call(&f, 0, describe.clone()).await;
        if resp.transaction_states[0].transaction_state.as_str() == "CompleteCommit" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{resp:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(t.last_stable_offset(), t.log_end(), "committed");
    assert!(t.aborted_transactions(0, t.log_end()).is_empty());
    // The group's offset counts now.
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(StrBytes::from_static_str("g"));
    fetch.require_stable = true;
    let mut wanted =
        kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
    wanted.name = name("t");
    wanted.partition_indexes = vec![0];
    fetch.topics = Some(vec![wanted]);
    let resp = call(&f, 7, fetch).await;
    let got: Vec<(i32, i64, i16)> = resp
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.committed_offset, p.error_code))
        .collect();
    assert_eq!(got, vec![(0, 5, 0)]);
    let offsets_log = f
        .state
        .log
        .partition(OFFSETS_TOPIC, f.state.offsets.partition_for("g") as u32)
        .expect("offsets partition");
    assert_eq!(offsets_log.last_stable_offset(), offsets_log.log_end());
}
