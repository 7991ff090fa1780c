//! Partition reassignment (issue 15, KIP-455) with real processes: a
//! partition moves from broker 1 to broker 3 under an acks=all producer —
//! broker 3 is added, catches up, joins the ISR, and broker 1 is dropped
//! and empties its copy — with nothing lost and the new replicas
//! byte-identical; then `sluice topic reassign --drain-broker` empties a
//! broker and a partition moves back onto it (a new broker taking a share).

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest,
    ListPartitionReassignmentsRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use support::cluster::{
    Cluster, broker_binary, check_acked, compare_replicas, read_replica, wait_for,
};

#[derive(Clone, Default)]
struct Acks {
    acked: Arc<Mutex<Vec<(i64, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        match result {
            Ok(m) => self
                .acked
                .lock()
                .expect("acked")
                .push((m.offset(), format!("value-{id:08}"))),
            Err((e, _)) => self.failed.lock().expect("failed").push(e.to_string()),
        }
    }
}

fn create_assigned(cluster: &Cluster, topic: &str, assignment: &[&[i32]]) {
    let mut t = CreatableTopic::default();
    t.name = sluice_client::topic_name(topic);
    t.num_partitions = -1;
    t.replication_factor = -1;
    t.assignments = assignment
        .iter()
        .enumerate()
        .map(|(p, rs)| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = p as i32;
            a.broker_ids = rs.iter().copied().map(BrokerId).collect();
            a
        })
        .collect();
    let mut c = CreatableTopicConfig::default();
    c.name = StrBytes::from_static_str("min.insync.replicas");
    c.value = Some(StrBytes::from_static_str("2"));
    t.configs = vec![c];
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let resp = cluster
        .conn(1)
        .expect("conn")
        .call(5, &req)
        .expect("CreateTopics");
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
    for p in 0..assignment.len() as i32 {
        cluster.wait_agreed(topic, p, Duration::from_secs(10));
    }
}

fn alter(cluster: &Cluster, topic: &str, p: i32, replicas: Option<&[i32]>) -> i16 {
    let mut rp = ReassignablePartition::default();
    rp.partition_index = p;
    rp.replicas = replicas.map(|rs| rs.iter().copied().map(BrokerId).collect());
    let mut t = ReassignableTopic::default();
    t.name = sluice_client::topic_name(topic);
    t.partitions = vec![rp];
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let resp = cluster
        .conn(2)
        .expect("conn")
        .call(0, &req)
        .expect("AlterPartitionReassignments");
    assert_eq!(resp.error_code, 0);
    resp.responses[0].partitions[0].error_code
}

/// A reassignment in progress: (partition, replicas, adding, removing).
type Ongoing = (i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// The reassignments in progress, as broker 2 lists them.
fn ongoing(cluster: &Cluster) -> Vec<Ongoing> {
    let mut req = ListPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    let resp = cluster
        .conn(2)
        .expect("conn")
        .call(0, &req)
        .expect("ListPartitionReassignments");
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

fn sluice(args: &[&str]) -> String {
    let out = Command::new(broker_binary())
        .args(args)
        .output()
        .expect("sluice");
    assert!(
        out.status.success(),
        "sluice {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_partition_moves_from_broker_1_to_broker_3_under_load_and_a_broker_drains() {
    const TOPIC: &str = "moving";
    let mut cluster = Cluster::new(3, &[]);
    create_assigned(&cluster, TOPIC, &[&[1, 2]]);
    let acks = Acks::default();
    let producer: Arc<BaseProducer<Acks>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "600000")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "200")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create_with_context(acks.clone())
            .expect("producer"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (producer, stop) = (producer.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("value-{id:08}");
                match producer.send(
                    BaseRecord::with_opaque_to(TOPIC, Box::new(id))
                        .partition(0)
                        .key(&value)
                        .payload(&value),
                ) {
                    Ok(()) => id += 1,
                    Err(_) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
                producer.poll(Duration::ZERO);
                if id.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            id
        })
    };
    let acked_len = |a: &Acks| a.acked.lock().expect("acked").len();
    assert!(
        wait_for(Duration::from_secs(30), || acked_len(&acks) >= 3000),
        "the producer makes no progress"
    );
    // The move, with broker 3 stopped at once so it cannot catch up yet:
    // the reassignment is seen in progress.
    assert_eq!(alter(&cluster, TOPIC, 0, Some(&[3, 2])), 0);
    cluster.pause(3);
    assert_eq!(
        ongoing(&cluster),
        vec![(0, vec![3, 2, 1], vec![3], vec![1])],
        "in progress: 3 added, 1 to go"
    );
    assert!(
        sluice(&["topic", "-b", &cluster.addr(1).to_string(), "reassign"])
            .contains("moving-0: replicas [3, 2, 1] adding [3] removing [1]"),
        "the CLI lists it"
    );
    // Cancelling a partition with none in progress is refused.
    cluster.create_topic("other", 1, 1, &[]);
    assert_eq!(
        alter(&cluster, "other", 0, None),
        85,
        "NO_REASSIGNMENT_IN_PROGRESS"
    );
    // An unknown broker in the target is refused.
    assert_eq!(
        alter(&cluster, "other", 0, Some(&[9])),
        39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    std::thread::sleep(Duration::from_millis(500));
    cluster.resume(3);
    assert!(
        wait_for(Duration::from_secs(60), || ongoing(&cluster).is_empty()
            && cluster.isr_everywhere(TOPIC, 0, &[2, 3])),
        "the reassignment did not complete: {:?}\n{}",
        ongoing(&cluster),
        cluster.describe(TOPIC, 0)
    );
    let state = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    assert!(
        [2, 3].contains(&state.leader),
        "a target replica leads: {state:?}"
    );
    let before = acked_len(&acks);
    assert!(
        wait_for(Duration::from_secs(30), || acked_len(&acks)
            >= before + 2000),
        "the producer makes no progress after the move"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    producer
        .flush(Duration::from_secs(60))
        .expect("every record delivered");
    let failed = acks.failed.lock().expect("failed").clone();
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    let acked = acks.acked.lock().expect("acked").clone();
    assert_eq!(acked.len() as u64, sent);
    let (hw, records) = cluster.fetch_all(TOPIC, 0, Duration::from_secs(30));
    assert_eq!(hw, sent as i64, "one record per message");
    if let Err(e) = check_acked(&records, &acked, "after the move") {
        panic!("{e}");
    }
    // Broker 1 no longer holds the topic (its only replica moved away).
    assert!(
        wait_for(Duration::from_secs(10), || !cluster
            .data_dir(1)
            .join(format!("{TOPIC}-0"))
            .exists()),
        "broker 1 still has {TOPIC}-0"
    );

    // Drain broker 2: every replica it holds moves to another broker.
    let out = sluice(&[
        "topic",
        "-b",
        &cluster.addr(1).to_string(),
        "reassign",
        "--drain-broker",
        "2",
        "--wait",
    ]);
    assert!(out.contains("no reassignment in progress"), "{out}");
    let meta = cluster.metadata_from(1, None).expect("metadata");
    for t in &meta.topics {
        for p in &t.partitions {
            let rs: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            assert!(
                !rs.contains(&2),
                "{:?}-{} still on broker 2: {rs:?}",
                t.name,
                p.partition_index
            );
        }
    }
    assert!(
        wait_for(Duration::from_secs(10), || !cluster
            .data_dir(2)
            .join(format!("{TOPIC}-0"))
            .exists()),
        "broker 2 still has {TOPIC}-0 after the drain"
    );
    // And it takes a share again: the partition moves onto it.
    let now: Vec<i32> = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        .map(|t| t.partitions[0].replica_nodes.iter().map(|b| b.0).collect())
        .expect("topic");
    let target = [2, now[0]];
    assert_eq!(alter(&cluster, TOPIC, 0, Some(&target)), 0);
    assert!(
        wait_for(Duration::from_secs(60), || ongoing(&cluster).is_empty()
            && cluster.isr_everywhere(TOPIC, 0, &target)),
        "moving back onto broker 2 did not complete\n{}",
        cluster.describe(TOPIC, 0)
    );
    // Every replica, read from its files once the brokers stop, holds the
    // same bytes up to the high watermark.
    let hw = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    let _ = hw;
    let end = sent as i64;
    cluster.stop_all();
    let replicas: Vec<_> = target
        .iter()
        .map(|&n| read_replica(&cluster.data_dir(n), TOPIC, 0))
        .collect();
    if let Err(e) = compare_replicas(&replicas[0], &replicas[1], end) {
        panic!("{e}");
    }
    let values: BTreeSet<String> = replicas[0]
        .records()
        .iter()
        .map(|r| r.value_str())
        .collect();
    assert_eq!(
        values.len() as u64,
        sent,
        "broker 2's new copy holds every record"
    );
}
