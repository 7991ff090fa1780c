//! Consumer groups with librdkafka: three consumers subscribe with one group
//! to a 6-partition topic and get two partitions each; one leaves and the
//! other two take its partitions; together they read every message exactly
//! once with manual commits; after a broker restart the group resumes from
//! its committed offsets.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use sluice_log::batch;
use support::{Client, Server};

const TOPIC: &str = "grouped";

fn consumer(broker: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "readers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

fn produce_round(c: &mut Client, round: u32, per_partition: u32) {
    for p in 0..6 {
        let values: Vec<Vec<u8>> = (0..per_partition)
            .map(|i| format!("r{round}-p{p}-{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let b = batch::build_batch(0, &refs);
        let mut req = kafka_protocol::messages::ProduceRequest::default();
        let mut pd = kafka_protocol::messages::produce_request::PartitionProduceData::default();
        pd.index = p;
        pd.records = Some(Bytes::from(b));
        let mut td = kafka_protocol::messages::produce_request::TopicProduceData::default();
        td.name = kafka_protocol::messages::TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str(TOPIC),
        );
        td.partition_data = vec![pd];
        req.acks = -1;
        req.timeout_ms = 5000;
        req.topic_data = vec![td];
        let resp = c.call(9, &req);
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
}

fn partitions_of(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer once; returns (consumer index, partition, offset, value) of what arrived,
/// committing each message synchronously before moving on.
fn poll_all(consumers: &[&BaseConsumer], seen: &mut Vec<(usize, i32, i64, String)>) {
    for (i, c) in consumers.iter().enumerate() {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf-8");
            seen.push((i, m.partition(), m.offset(), value));
            c.commit_message(&m, CommitMode::Sync).expect("commit");
        }
    }
}

#[test]
fn a_group_shares_partitions_rebalances_on_leave_and_resumes_after_restart() {
    let args = [
        "--default-partitions",
        "6",
        "--group-initial-rebalance-delay-ms",
        "1000",
    ];
    let mut server = Server::start(&args);
    let dir = server.take_dir();
    let data_dir = server.data_dir.clone();
    let broker = server.addr.to_string();
    let mut client = Client::connect(server.addr);
    produce_round(&mut client, 0, 50);

    let a = consumer(&broker);
    let b = consumer(&broker);
    let c = consumer(&broker);
    let mut seen = Vec::new();
    // All three join one generation: two partitions each.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        poll_all(&[&a, &b, &c], &mut seen);
        let sets = [partitions_of(&a), partitions_of(&b), partitions_of(&c)];
        if sets.iter().all(|s| s.len() == 2) {
            let all: BTreeSet<i32> = sets.iter().flatten().copied().collect();
            assert_eq!(all, (0..6).collect(), "the three split the six partitions");
            break;
        }
        assert!(Instant::now() < deadline, "no 2/2/2 assignment: {sets:?}");
    }
    // Read about half, then one consumer leaves the group.
    while seen.len() < 150 && Instant::now() < deadline {
        poll_all(&[&a, &b, &c], &mut seen);
    }
    drop(c);
    // The other two take its partitions and read the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        poll_all(&[&a, &b], &mut seen);
        let sets = [partitions_of(&a), partitions_of(&b)];
        let all: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sets.iter().all(|s| s.len() == 3) && all.len() == 6 && seen.len() >= 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 3/3 takeover: {sets:?}, {} read",
            seen.len()
        );
    }
    // Exactly once: every message, none twice.
    let unique: HashSet<(i32, i64)> = seen.iter().map(|(_, p, o, _)| (*p, *o)).collect();
    assert_eq!(seen.len(), 300, "no message read twice");
    assert_eq!(unique.len(), 300);
    for (_, p, o, v) in &seen {
        assert_eq!(v, &format!("r0-p{p}-{o}"));
    }
    drop((a, b));

    // New messages, a broker restart, and the group carries on where it committed.
    produce_round(&mut client, 1, 10);
    drop(client);
    server.stop();
    let server = Server::start_in(&data_dir, &args);
    let d = consumer(&server.addr.to_string());
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while after.len() < 60 && Instant::now() < deadline {
        poll_all(&[&d], &mut after);
    }
    let values: BTreeSet<String> = after.iter().map(|(_, _, _, v)| v.clone()).collect();
    assert_eq!(
        after.len(),
        60,
        "only the new messages: {:?}",
        after.first()
    );
    assert!(
        values.iter().all(|v| v.starts_with("r1-")),
        "resumed from the committed offsets"
    );
    drop(dir);
}
