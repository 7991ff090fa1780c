//! DescribeCluster, DescribeLogDirs, DescribeTopicPartitions and
//! DeleteRecords through `dispatch`.

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use sluice_log::{CleanupPolicy, LogConfig};

use super::{call, create, errors, fixture, name, produce, records};
use crate::config::BrokerConfig;

#[tokio::test]
async fn describe_cluster_names_this_node_as_broker_and_controller() {
    let f = fixture(BrokerConfig::default());
    for version in 0..=1 {
        let mut req = DescribeClusterRequest::default();
        req.include_cluster_authorized_operations = version == 1;
        let resp = call(&f, version, req).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.cluster_id.as_str(), f.state.meta.cluster_id);
        assert_eq!(resp.controller_id.0, f.state.meta.node_id);
        assert_eq!(resp.brokers.len(), 1);
        let b = &resp.brokers[0];
        assert_eq!(b.broker_id.0, f.state.meta.node_id);
        assert_eq!((b.host.as_str(), b.port), ("kafka.example", 19092));
        assert_eq!(b.rack, None);
        if version == 1 {
            assert_eq!(resp.endpoint_type, 1);
            // No authorizer: every cluster operation Kafka knows, as its bit.
            let ops = resp.cluster_authorized_operations;
            for code in [5, 7, 8, 9, 10, 11, 12] {
                assert_ne!(ops & (1 << code), 0, "operation {code}");
            }
            assert_eq!(ops & 0b111, 0, "UNKNOWN, ANY, ALL are not operations");
        } else {
            assert_eq!(resp.cluster_authorized_operations, i32::MIN);
        }
    }
    // Controllers are asked of a controller endpoint, not a broker's.
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 2;
    let resp = call(&f, 1, req).await;
    assert_eq!(resp.error_code, 114, "MISMATCHED_ENDPOINT_TYPE");
    assert!(resp.brokers.is_empty());
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 9;
    assert_eq!(
        call(&f, 1, req).await.error_code,
        115,
        "UNSUPPORTED_ENDPOINT_TYPE"
    );
}

#[tokio::test]
async fn describe_log_dirs_reports_each_partitions_bytes_and_the_volume() {
    let f = fixture(BrokerConfig::default());
    create(&f, "a", 2).await;
    create(&f, "b", 1).await;
    produce(&f, "a", 1, records(1000, &[(0, 300), (1, 200)])).await;
    produce(&f, "b", 0, records(1000, &[(0, 50)])).await;
    let size = |t: &str, p: u32| f.state.log.partition(t, p).expect("p").size_bytes() as i64;
    assert!(size("a", 1) > 500);
    for version in 1..=4 {
        // Null topics: every partition (an empty list asks for none).
        let mut req = DescribeLogDirsRequest::default();
        req.topics = None;
        let resp = call(&f, version, req).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.results.len(), 1);
        let dir = &resp.results[0];
        assert_eq!(dir.error_code, 0);
        assert_eq!(
            dir.log_dir.as_str(),
            std::path::absolute(&f.state.config.data_dir)
                .expect("abs")
                .display()
                .to_string()
        );
        let mut got: Vec<(String, i32, i64, i64)> = dir
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        p.partition_size,
                        p.offset_lag,
                    )
                })
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 0, 0),
                ("a".into(), 1, size("a", 1), 0),
                ("b".into(), 0, size("b", 0), 0),
            ]
        );
        if version == 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
            assert!(dir.usable_bytes <= dir.total_bytes);
        } else {
            assert_eq!((dir.total_bytes, dir.usable_bytes), (-1, -1), "v4 only");
        }
    }
    // Named partitions only; ones that do not exist, and topics left with
    // none, are left out.
    let ask = |topic: &str, partitions: Vec<i32>| {
        let mut t = DescribableLogDirTopic::default();
        t.topic = name(topic);
        t.partitions = partitions;
        t
    };
    let mut req = DescribeLogDirsRequest::default();
    req.topics = Some(vec![]);
    assert!(call(&f, 4, req.clone()).await.results[0].topics.is_empty());
    req.topics = Some(vec![
        ask("a", vec![1, 7]),
        ask("nope", vec![0]),
        ask("b", vec![]),
    ]);
    let resp = call(&f, 4, req).await;
    let topics = &resp.results[0].topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].name.0.as_str(), "a");
    assert_eq!(topics[0].partitions.len(), 1);
    assert_eq!(topics[0].partitions[0].partition_index, 1);
}

fn describe_partitions(
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsRequest {
    let mut req = DescribeTopicPartitionsRequest::default();
    req.topics = topics
        .iter()
        .map(|t| {
            let mut r = TopicRequest::default();
            r.name = name(t);
            r
        })
        .collect();
    req.response_partition_limit = limit;
    req.cursor = cursor.map(|(t, p)| {
        let mut c = Cursor::default();
        c.topic_name = name(t);
        c.partition_index = p;
        c
    });
    req
}

/// (topic, error, partition indexes) of an answer, and its next cursor.
type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

fn page(resp: DescribeTopicPartitionsResponse) -> Page {
    let topics = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let next = resp
        .next_cursor
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    (topics, next)
}

fn t(name: &str, partitions: &[i32]) -> (String, i16, Vec<i32>) {
    (name.to_string(), 0, partitions.to_vec())
}

#[tokio::test]
async fn describe_topic_partitions_pages_with_its_cursor() {
    let f = fixture(BrokerConfig::default());
    create(&f, "a", 3).await;
    create(&f, "b", 2).await;
    create(&f, "c", 1).await;
    // Everything at once: topics in name order, every field filled in.
    let resp = call(&f, 0, describe_partitions(&[], 2000, None)).await;
    let node = f.state.meta.node_id;
    let p = &resp.topics[1].partitions[1];
    assert_eq!((p.leader_id.0, p.error_code), (node, 0));
    assert_eq!(
        p.replica_nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
        [node]
    );
    assert_eq!(p.isr_nodes.iter().map(|n| n.0).collect::<Vec<_>>(), [node]);
    assert_eq!(p.eligible_leader_replicas, Some(vec![]));
    assert!(p.offline_replicas.is_empty());
    assert!(!resp.topics[0].is_internal);
    assert_ne!(resp.topics[0].topic_authorized_operations, i32::MIN);
    assert_eq!(
        page(resp),
        (
            vec![t("a", &[0, 1, 2]), t("b", &[0, 1]), t("c", &[0])],
            None
        )
    );
    // Two at a time, following the cursor.
    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let c = cursor
            .as_ref()
            .map(|(t, p): &(String, i32)| (t.as_str(), *p));
        let (topics, next) = page(call(&f, 0, describe_partitions(&[], 2, c)).await);
        pages.push(topics);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![
            vec![t("a", &[0, 1])],
            vec![t("a", &[2]), t("b", &[0])],
            vec![t("b", &[1]), t("c", &[0])],
        ]
    );
    // A limit reached exactly at a topic's end points at the next topic.
    assert_eq!(
        page(call(&f, 0, describe_partitions(&[], 3, None)).await),
        (vec![t("a", &[0, 1, 2])], Some(("b".into(), 0)))
    );
    // Named topics: unknown ones answered with an error, not skipped.
    let (topics, next) = page(
        call(
            &f,
            0,
            describe_partitions(&["c", "zz", "a", "bad/name"], 100, None),
        )
        .await,
    );
    assert_eq!(next, None);
    assert_eq!(
        topics,
        vec![
            t("a", &[0, 1, 2]),
            ("bad/name".into(), errors::INVALID_TOPIC_EXCEPTION, vec![]),
            t("c", &[0]),
            ("zz".into(), errors::UNKNOWN_TOPIC_OR_PARTITION, vec![]),
        ]
    );
    // A cursor into a named list starts there; one naming a topic outside
    // the list is refused for every topic.
    assert_eq!(
        page(call(&f, 0, describe_partitions(&["a", "b"], 100, Some(("a", 2)))).await),
        (vec![t("a", &[2]), t("b", &[0, 1])], None)
    );
    let (topics, _) =
        page(call(&f, 0, describe_partitions(&["a", "b"], 100, Some(("c", 0)))).await);
    assert_eq!(
        topics,
        vec![
            ("a".into(), errors::INVALID_REQUEST, vec![]),
            ("b".into(), errors::INVALID_REQUEST, vec![]),
        ]
    );
}

fn delete_req(topic: &str, partition: i32, offset: i64) -> DeleteRecordsRequest {
    let mut p = DeleteRecordsPartition::default();
    p.partition_index = partition;
    p.offset = offset;
    let mut t = DeleteRecordsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 1000;
    req
}

/// (error, low watermark) of a one-partition DeleteRecords.
async fn delete(f: &super::Fixture, version: i16, topic: &str, offset: i64) -> (i16, i64) {
    let resp = call(f, version, delete_req(topic, 0, offset)).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

fn list_offsets(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions.push(p);
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics.push(t);
    req
}

fn fetch(topic: &str, offset: i64) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions.push(fp);
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_bytes = 1 << 20;
    req.topics.push(t);
    req
}

#[tokio::test]
async fn delete_records_moves_the_log_start_that_fetch_and_list_offsets_report() {
    let f = fixture(BrokerConfig::default());
    create(&f, "d", 1).await;
    // Offsets 0..4 at times 1000..1003, then 4..6 at 2000, 2001.
    produce(
        &f,
        "d",
        0,
        records(1000, &[(0, 10), (1, 10), (2, 10), (3, 10)]),
    )
    .await;
    produce(&f, "d", 0, records(2000, &[(0, 10), (1, 10)])).await;
    for version in 0..=2 {
        assert_eq!(delete(&f, version, "d", 0).await, (0, 0), "v{version}");
    }
    // Inside the first batch.
    assert_eq!(delete(&f, 2, "d", 2).await, (0, 2));
    // Lower: nothing moves, the answer is the start as it is.
    assert_eq!(delete(&f, 2, "d", 1).await, (0, 2));
    // Past the high watermark, or negative other than −1: refused.
    assert_eq!(
        delete(&f, 2, "d", 7).await,
        (errors::OFFSET_OUT_OF_RANGE, -1)
    );
    assert_eq!(
        delete(&f, 2, "d", -5).await,
        (errors::OFFSET_OUT_OF_RANGE, -1)
    );
    assert_eq!(
        delete(&f, 2, "nope", 0).await,
        (errors::UNKNOWN_TOPIC_OR_PARTITION, -1)
    );
    // Fetch below the start: OFFSET_OUT_OF_RANGE with the start; at it, the
    // batch holding it.
    let resp = call(&f, 12, fetch("d", 1)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.log_start_offset),
        (errors::OFFSET_OUT_OF_RANGE, 2)
    );
    let resp = call(&f, 12, fetch("d", 2)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.log_start_offset, p.high_watermark),
        (0, 2, 6)
    );
    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
    // ListOffsets: earliest is the start; by time, records below it are gone.
    let answer = |r: ListOffsetsResponse| {
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(answer(call(&f, 7, list_offsets("d", -2)).await), (0, 2, -1));
    assert_eq!(
        answer(call(&f, 7, list_offsets("d", 0)).await),
        (0, 2, 1002)
    );
    assert_eq!(
        answer(call(&f, 7, list_offsets("d", 1003)).await),
        (0, 3, 1003)
    );
    // −1: up to the high watermark. Then the time lookup finds nothing.
    assert_eq!(delete(&f, 2, "d", -1).await, (0, 6));
    assert_eq!(answer(call(&f, 7, list_offsets("d", 0)).await), (0, -1, -1));
    assert_eq!(answer(call(&f, 7, list_offsets("d", -2)).await), (0, 6, -1));
}

#[tokio::test]
async fn delete_records_is_refused_where_cleanup_policy_lacks_delete() {
    let f = fixture(BrokerConfig::default());
    create(&f, "compacted", 1).await;
    produce(&f, "compacted", 0, records(1000, &[(0, 10), (1, 10)])).await;
    let part = f.state.log.partition("compacted", 0).expect("p");
    part.set_config(LogConfig {
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..(*part.config()).clone()
    });
    assert_eq!(
        delete(&f, 2, "compacted", 1).await,
        (44, -1),
        "POLICY_VIOLATION"
    );
    assert_eq!(part.log_start(), 0);
}
