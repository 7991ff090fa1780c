//! Consumer groups in a cluster (issue 15): committed offsets live in the
//! replicated `__consumer_offsets` topic, the coordinator of a group is the
//! leader of its partition, and killing that broker moves the group to the
//! new leader without losing a committed offset.
//!
//! - `coordinator_kills`: three librdkafka consumers in one group, with
//!   manual synchronous commits, read a six-partition topic that an
//!   idempotent producer keeps writing, while the group's coordinator is
//!   SIGKILLed ≥ 10 times (`SLUICE_GROUP_KILLS`). No consumer is ever handed
//!   a record below an offset whose commit was acknowledged (a committed
//!   offset lost or gone backwards would do that), every acknowledged
//!   record is processed, duplicates fall only above the last acknowledged
//!   commit, and the final committed offsets are the partitions' ends. It
//!   prints how long the group took to commit again after each kill.
//! - `python_handoff`: a kafka-python and a confluent-kafka group each
//!   consume half a topic, the coordinator is killed, and they finish it
//!   from the committed offsets on the new coordinator.
//! - `rolling_restart`: every broker restarted with SIGTERM under an acks=all
//!   producer and a consuming group: no delivery fails, no consumer error,
//!   every record is consumed.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use support::cluster::{Cluster, wait_for};

const OFFSETS: &str = "__consumer_offsets";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kafka's partition of a group in `__consumer_offsets` (50 partitions):
/// Java's String.hashCode, masked.
fn offsets_partition(group: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % 50
}

/// The group's coordinator as the live brokers answer FindCoordinator.
fn coordinator(cluster: &Cluster, group: &str) -> Option<i32> {
    for node in cluster.live() {
        let Ok(mut conn) = cluster.conn(node) else {
            continue;
        };
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(group.to_string());
        if let Ok(r) = conn.call(3, &req)
            && r.error_code == 0
        {
            return Some(r.node_id.0);
        }
    }
    None
}

fn wait_coordinator(cluster: &Cluster, group: &str) -> i32 {
    let mut found = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            found = coordinator(cluster, group);
            found.is_some()
        }),
        "no coordinator for {group} within 30 s"
    );
    found.expect("found")
}

// ---------------------------------------------------------------------------
// The producer

#[derive(Clone, Default)]
struct Deliveries {
    /// (partition, offset) of every acknowledged record.
    acked: Arc<Mutex<BTreeSet<(i32, i64)>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.acked
                    .lock()
                    .expect("acked")
                    .insert((m.partition(), m.offset()));
            }
            Err((e, _)) => self.failed.lock().expect("failed").push(e.to_string()),
        }
    }
}

fn producer(cluster: &Cluster, d: &Deliveries) -> Arc<BaseProducer<Deliveries>> {
    Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "600000")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "200")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create_with_context(d.clone())
            .expect("producer"),
    )
}

/// Writes keyed records across the topic's partitions (about 1,000 a
/// second) until `stop`.
fn spawn_writer(
    topic: &'static str,
    p: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("k{id}");
            let value = format!("v{id:08}");
            match p.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => id += 1,
                Err(_) => {
                    p.poll(Duration::from_millis(10));
                }
            }
            p.poll(Duration::ZERO);
            if id.is_multiple_of(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        id
    })
}

// ---------------------------------------------------------------------------
// The consumers

/// What the group did, shared by its consumers and checked by the test.
#[derive(Default)]
struct GroupLog {
    /// Per partition, the highest offset whose commit was acknowledged.
    acked: HashMap<i32, i64>,
    /// When each acknowledged commit returned.
    commits: Vec<Instant>,
    /// Every (partition, offset) processed, with how many times.
    processed: BTreeMap<(i32, i64), u32>,
    /// Records handed to a consumer below an acknowledged commit.
    violations: Vec<String>,
    failed_commits: u64,
    consumer_errors: Vec<String>,
}

fn spawn_consumer(
    bootstrap: String,
    topic: &'static str,
    group: &'static str,
    name: usize,
    log: Arc<Mutex<GroupLog>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", group)
            .set("client.id", format!("consumer-{name}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "200")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        let mut since_commit = 0u32;
        let mut last_commit = Instant::now();
        let commit = |c: &BaseConsumer, log: &Mutex<GroupLog>| {
            let Ok(positions) = c.position() else { return };
            let mut list = TopicPartitionList::new();
            let mut offsets = Vec::new();
            for e in positions.elements() {
                if let Offset::Offset(o) = e.offset() {
                    list.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                        .expect("add");
                    offsets.push((e.partition(), o));
                }
            }
            if offsets.is_empty() {
                return;
            }
            let result = c.commit(&list, CommitMode::Sync);
            let mut log = log.lock().expect("log");
            match result {
                Ok(()) => {
                    for (p, o) in offsets {
                        let a = log.acked.entry(p).or_insert(o);
                        *a = (*a).max(o);
                    }
                    log.commits.push(Instant::now());
                }
                Err(_) => log.failed_commits += 1,
            }
        };
        loop {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    let mut log = log.lock().expect("log");
                    if let Some(&a) = log.acked.get(&p)
                        && o < a
                    {
                        log.violations.push(format!(
                            "consumer {name} was handed partition {p} offset {o} below the \
                             acknowledged commit {a}"
                        ));
                    }
                    *log.processed.entry((p, o)).or_insert(0) += 1;
                    since_commit += 1;
                }
                Some(Err(e)) => {
                    let mut log = log.lock().expect("log");
                    if log.consumer_errors.len() < 50 {
                        log.consumer_errors.push(e.to_string());
                    }
                }
                None => {
                    if stop.load(Ordering::Relaxed) {
                        commit(&c, &log);
                        break;
                    }
                }
            }
            if since_commit >= 100 || last_commit.elapsed() > Duration::from_millis(300) {
                commit(&c, &log);
                since_commit = 0;
                last_commit = Instant::now();
            }
        }
        c.unsubscribe();
    })
}

/// Every partition's end (one past its highest acknowledged record), and
/// whether the group's acknowledged commits reached them all within 60 s.
///
/// The group commits its positions every 300 ms while it is stable; the
/// tests wait for commits at every end before the consumers leave.
/// Stopping them earlier races their last commits against the rebalance
/// the first one to leave starts: a member's commit with a generation that
/// rebalance replaced is refused (ILLEGAL_GENERATION), as Kafka refuses it.
fn wait_for_commits_at_the_ends(
    log: &Mutex<GroupLog>,
    acked: &BTreeSet<(i32, i64)>,
    partitions: i32,
) -> (BTreeMap<i32, i64>, bool) {
    let ends: BTreeMap<i32, i64> = (0..partitions)
        .map(|p| {
            (
                p,
                acked
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, o)| o + 1)
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect();
    let all_committed = wait_for(Duration::from_secs(60), || {
        let l = log.lock().expect("log");
        ends.iter()
            .all(|(p, end)| l.acked.get(p).copied().unwrap_or(0) >= *end)
    });
    (ends, all_committed)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The committed offsets of `group` for `partitions` of `topic`, from a
/// consumer outside the group.
fn committed(cluster: &Cluster, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(list, Duration::from_secs(30))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
        })
        .collect()
}

/// An idempotent acks=all producer writing `topic` and a group of
/// consumers reading it, committing as they go; started once the group has
/// committed 10 times.
struct Workload {
    deliveries: Deliveries,
    p: Arc<BaseProducer<Deliveries>>,
    stop_writer: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<u64>,
    log: Arc<Mutex<GroupLog>>,
    stop_consumers: Arc<AtomicBool>,
    consumers: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    fn start(cluster: &Cluster, topic: &'static str, group: &'static str, n: usize) -> Workload {
        let deliveries = Deliveries::default();
        let p = producer(cluster, &deliveries);
        let stop_writer = Arc::new(AtomicBool::new(false));
        let writer = spawn_writer(topic, p.clone(), stop_writer.clone());
        let log = Arc::new(Mutex::new(GroupLog::default()));
        let stop_consumers = Arc::new(AtomicBool::new(false));
        let consumers = (0..n)
            .map(|i| {
                spawn_consumer(
                    cluster.bootstrap(),
                    topic,
                    group,
                    i,
                    log.clone(),
                    stop_consumers.clone(),
                )
            })
            .collect();
        assert!(
            wait_for(Duration::from_secs(60), || log
                .lock()
                .expect("log")
                .commits
                .len()
                >= 10),
            "the group never committed"
        );
        Workload {
            deliveries,
            p,
            stop_writer,
            writer,
            log,
            stop_consumers,
            consumers,
        }
    }
}

#[test]
fn coordinator_kills_lose_no_committed_offset() {
    let _serial = serial();
    const TOPIC: &str = "work";
    const GROUP: &str = "workers";
    const PARTITIONS: i32 = 6;
    let kills = knob("SLUICE_GROUP_KILLS", 10);
    let mut cluster = Cluster::new(3, &["--group-initial-rebalance-delay-ms", "500"]);
    let all = cluster.nodes();
    cluster.create_topic(TOPIC, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    let Workload {
        deliveries,
        p,
        stop_writer,
        writer,
        log,
        stop_consumers,
        consumers,
    } = Workload::start(&cluster, TOPIC, GROUP, 3);
    let commits = |log: &Mutex<GroupLog>| log.lock().expect("log").commits.len();
    let mut rejoin = Vec::new();
    let offsets_partition = offsets_partition(GROUP);
    for k in 0..kills {
        let coord = wait_coordinator(&cluster, GROUP);
        let before = commits(&log);
        let killed_at = Instant::now();
        cluster.kill(coord);
        // The group commits again once a new coordinator serves it.
        let mut back = None;
        assert!(
            wait_for(Duration::from_secs(60), || {
                let l = log.lock().expect("log");
                back = l
                    .commits
                    .iter()
                    .skip(before)
                    .find(|t| **t > killed_at)
                    .copied();
                back.is_some()
            }),
            "kill {k} of coordinator {coord}: the group did not commit again within 60 s\n{}",
            cluster.describe(OFFSETS, offsets_partition)
        );
        rejoin.push(back.expect("back") - killed_at);
        cluster.start(coord);
        assert!(
            wait_for(Duration::from_secs(60), || cluster.isr_everywhere(
                OFFSETS,
                offsets_partition,
                &all
            ) && (0..PARTITIONS)
                .all(|p| cluster.isr_everywhere(TOPIC, p, &all))),
            "kill {k}: broker {coord} did not rejoin every ISR\n{}",
            cluster.describe(OFFSETS, offsets_partition)
        );
    }
    stop_writer.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    p.flush(Duration::from_secs(60))
        .expect("every record delivered");
    let acked = deliveries.acked.lock().expect("acked").clone();
    assert!(
        deliveries.failed.lock().expect("failed").is_empty(),
        "deliveries failed: {:?}",
        deliveries.failed.lock().expect("failed").first()
    );
    assert_eq!(acked.len() as u64, sent, "every record acknowledged");
    // Every acknowledged record is processed.
    let all_processed = wait_for(Duration::from_secs(90), || {
        let l = log.lock().expect("log");
        acked.iter().all(|k| l.processed.contains_key(k))
    });
    let (ends, all_committed) = wait_for_commits_at_the_ends(&log, &acked, PARTITIONS);
    stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        c.join().expect("consumer");
    }
    let l = log.lock().expect("log");
    let missing: Vec<_> = acked
        .iter()
        .filter(|k| !l.processed.contains_key(k))
        .take(5)
        .collect();
    assert!(
        all_processed && missing.is_empty(),
        "{} acknowledged records never processed, e.g. {missing:?}",
        acked
            .iter()
            .filter(|k| !l.processed.contains_key(k))
            .count()
    );
    assert!(
        l.violations.is_empty(),
        "{} records handed out below an acknowledged commit: {:?}",
        l.violations.len(),
        &l.violations[..l.violations.len().min(5)]
    );
    // The final commits stand, at every partition's end.
    assert!(
        all_committed,
        "the group's acknowledged commits {:?} never reached the ends {ends:?}",
        l.acked
    );
    let got = committed(&cluster, GROUP, TOPIC, PARTITIONS);
    for (p, acked_commit) in &l.acked {
        assert!(
            got.get(p).copied().unwrap_or(-1) >= *acked_commit,
            "partition {p}: committed {:?} is below the acknowledged commit {acked_commit}",
            got.get(p)
        );
    }
    assert_eq!(got, ends, "the final commits are the partitions' ends");
    let duplicates = l.processed.values().filter(|n| **n > 1).count();
    rejoin.sort();
    println!(
        "coordinator kills: {kills}; records {sent}; duplicates {duplicates}; failed commits {}; \
         group committing again after a kill: p50 {} ms, p99 {} ms, max {} ms",
        l.failed_commits,
        percentile(&rejoin, 0.5).as_millis(),
        percentile(&rejoin, 0.99).as_millis(),
        rejoin.last().expect("kills").as_millis()
    );
}

/// A Python consumer in group `GROUP` reading `TOPIC` until it has
/// processed the whole topic (COUNT records), committing after each record
/// and writing its progress to PROGRESS; prints the offsets it processed.
const PY_CONSUMER: &str = r#"
import sys, time, json
LIB = sys.argv[1]
progress = open(PROGRESS, 'w')
seen = []
deadline = time.time() + 240
if LIB == 'kafka-python':
    from kafka import KafkaConsumer, TopicPartition, OffsetAndMetadata
    c = KafkaConsumer(TOPIC, bootstrap_servers=BROKER.split(','), group_id=GROUP,
                      enable_auto_commit=False, auto_offset_reset='earliest',
                      session_timeout_ms=10000, heartbeat_interval_ms=500,
                      request_timeout_ms=15000, retry_backoff_ms=100,
                      metadata_max_age_ms=2000)
    while len(set(seen)) < COUNT:
        if time.time() > deadline:
            sys.exit(f'kafka-python: {len(set(seen))} of {COUNT} in 240 s')
        for tp, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                seen.append(m.offset)
                while True:
                    try:
                        c.commit({tp: OffsetAndMetadata(m.offset + 1, None, -1)} if 'leader_epoch' in OffsetAndMetadata._fields else {tp: OffsetAndMetadata(m.offset + 1, None)})
                        break
                    except Exception as e:
                        if time.time() > deadline:
                            raise
                        time.sleep(0.2)
                progress.write(f'{m.offset}\n'); progress.flush()
                time.sleep(0.02)
    c.close()
else:
    from confluent_kafka import Consumer, KafkaException
    c = Consumer({'bootstrap.servers': BROKER, 'group.id': GROUP, 'enable.auto.commit': False,
                  'auto.offset.reset': 'earliest', 'session.timeout.ms': 10000,
                  'heartbeat.interval.ms': 500, 'topic.metadata.refresh.interval.ms': 2000})
    c.subscribe([TOPIC])
    while len(set(seen)) < COUNT:
        if time.time() > deadline:
            sys.exit(f'confluent-kafka: {len(set(seen))} of {COUNT} in 240 s')
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        seen.append(m.offset())
        while True:
            try:
                c.commit(message=m, asynchronous=False)
                break
            except KafkaException as e:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        progress.write(f'{m.offset()}\n'); progress.flush()
        time.sleep(0.02)
    c.close()
print(json.dumps(seen))
"#;

#[test]
fn kafka_python_and_confluent_kafka_groups_hand_off_across_a_coordinator_kill() {
    let _serial = serial();
    const COUNT: i64 = 200;
    let mut cluster = Cluster::new(3, &["--group-initial-rebalance-delay-ms", "0"]);
    let all = cluster.nodes();
    for (lib, topic, group) in [
        ("kafka-python", "handoff-kp", "group-kp"),
        ("confluent-kafka", "handoff-ck", "group-ck"),
    ] {
        cluster.create_topic(topic, 1, 3, &[]);
        for i in 0..COUNT {
            let offset = cluster.produce_acked(
                topic,
                0,
                &format!("key-{i}"),
                &format!("value-{i}"),
                Duration::from_secs(30),
            );
            assert_eq!(offset, i, "{lib}: records written in order");
        }
        let progress = cluster.root().join(format!("{lib}.progress"));
        let code = format!(
            "BROKER = '{}'\nTOPIC = '{topic}'\nGROUP = '{group}'\nCOUNT = {COUNT}\nPROGRESS = '{}'\n{PY_CONSUMER}",
            cluster.bootstrap(),
            progress.display()
        );
        let mut child = Command::new(support::python())
            .arg("-c")
            .arg(code)
            .arg(lib)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        let done = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().count() as i64)
                .unwrap_or(0)
        };
        let mut exited = false;
        let halfway = wait_for(Duration::from_secs(90), || {
            exited = child.try_wait().ok().flatten().is_some();
            exited || done(&progress) >= COUNT / 2
        });
        if !halfway || exited {
            let _ = child.kill();
            let out = child.wait_with_output().expect("python");
            panic!(
                "{lib}: the consumer did not get halfway ({} records):\n{}\n{}",
                done(&progress),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let coord = wait_coordinator(&cluster, group);
        let at = done(&progress);
        cluster.kill(coord);
        let out = child.wait_with_output().expect("python");
        assert!(
            out.status.success(),
            "{lib} consumer failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: Vec<i64> =
            serde_json::from_slice(out.stdout.trim_ascii()).expect("the offsets it processed");
        let distinct: BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(
            distinct,
            (0..COUNT).collect(),
            "{lib}: every record processed"
        );
        // Each record was committed before the next was read: at most the
        // one record in flight at the kill is read twice.
        assert!(
            seen.len() as i64 <= COUNT + 1,
            "{lib}: {} records read twice after the coordinator kill at {at}",
            seen.len() as i64 - COUNT
        );
        let new_coord = wait_coordinator(&cluster, group);
        assert_ne!(new_coord, coord, "{lib}: the group moved");
        let got = committed(&cluster, group, topic, 1);
        assert_eq!(got.get(&0), Some(&COUNT), "{lib}: the final commit stands");
        cluster.start(coord);
        assert!(
            wait_for(Duration::from_secs(60), || cluster.isr_everywhere(
                OFFSETS,
                offsets_partition(group),
                &all
            )),
            "broker {coord} back in the offsets partition's ISR"
        );
    }
}

/// Every broker in turn stopped with SIGTERM and started again, under an
/// idempotent acks=all producer and a group of two librdkafka consumers
/// committing as they go: no delivery fails, no commit fails, no error but
/// the notice of a closed connection reaches a consumer, and every
/// acknowledged record is consumed. Prints
/// how long each controlled shutdown took to move the broker's
/// leaderships (its own log's `took_ms`).
#[test]
fn a_rolling_restart_with_sigterm_under_a_producer_and_a_group_delivers_no_error() {
    let _serial = serial();
    const TOPIC: &str = "rolling";
    const GROUP: &str = "rollers";
    const PARTITIONS: i32 = 3;
    let mut cluster = Cluster::new(3, &["--group-initial-rebalance-delay-ms", "0"]);
    let all = cluster.nodes();
    cluster.create_topic(TOPIC, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    let Workload {
        deliveries,
        p,
        stop_writer,
        writer,
        log,
        stop_consumers,
        consumers,
    } = Workload::start(&cluster, TOPIC, GROUP, 2);
    let commits = |log: &Mutex<GroupLog>| log.lock().expect("log").commits.len();
    let offsets_partition = offsets_partition(GROUP);
    let took = |cluster: &Cluster, node: i32| -> Vec<u64> {
        std::fs::read_to_string(cluster.log_path(node))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("controlled shutdown: leaderships moved"))
            .filter_map(|l| {
                l.split("took_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    };
    for &node in &all {
        let before = commits(&log);
        assert!(
            wait_for(Duration::from_secs(30), || commits(&log) >= before + 5),
            "before stopping broker {node}: the group makes no progress"
        );
        let handed = took(&cluster, node).len();
        assert!(
            cluster.stop(node),
            "broker {node} did not exit within 30 s of SIGTERM"
        );
        assert_eq!(
            took(&cluster, node).len(),
            handed + 1,
            "broker {node} stopped without a controlled shutdown"
        );
        std::thread::sleep(Duration::from_millis(300));
        cluster.start(node);
        assert!(
            wait_for(Duration::from_secs(60), || cluster.isr_everywhere(
                OFFSETS,
                offsets_partition,
                &all
            ) && (0..PARTITIONS)
                .all(|p| cluster.isr_everywhere(TOPIC, p, &all))),
            "broker {node} did not rejoin every ISR"
        );
    }
    stop_writer.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    p.flush(Duration::from_secs(60))
        .expect("every record delivered");
    let failed = deliveries.failed.lock().expect("failed").clone();
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    let acked = deliveries.acked.lock().expect("acked").clone();
    assert_eq!(acked.len() as u64, sent, "every record acknowledged");
    let all_processed = wait_for(Duration::from_secs(60), || {
        let l = log.lock().expect("log");
        acked.iter().all(|k| l.processed.contains_key(k))
    });
    let (ends, all_committed) = wait_for_commits_at_the_ends(&log, &acked, PARTITIONS);
    stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        c.join().expect("consumer");
    }
    let l = log.lock().expect("log");
    assert!(
        all_processed,
        "some acknowledged records were never consumed"
    );
    assert!(
        all_committed,
        "the group's acknowledged commits {:?} never reached the ends {ends:?}",
        l.acked
    );
    // librdkafka tells the application of every broker connection that
    // closes under a request in flight (BrokerTransportFailure), whatever
    // the broker: a stopping Kafka broker closes its connections the same
    // way. Those are informational; any other error is a failure.
    let other: Vec<&String> = l
        .consumer_errors
        .iter()
        .filter(|e| !e.contains("BrokerTransportFailure"))
        .collect();
    assert!(other.is_empty(), "errors reached the consumers: {other:?}");
    assert_eq!(l.failed_commits, 0, "commits failed");
    assert!(l.violations.is_empty(), "{:?}", l.violations);
    let mut times: Vec<u64> = all.iter().flat_map(|&n| took(&cluster, n)).collect();
    times.sort_unstable();
    println!(
        "rolling restart: {sent} records, {} duplicates; controlled shutdowns took {times:?} ms",
        l.processed.values().filter(|n| **n > 1).count()
    );
}
