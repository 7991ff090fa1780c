//! Cluster mode (issue 14) with real processes: an etcd and three `sluice
//! serve --cluster etcd://…` brokers per test (`support::cluster`), each on
//! a fixed loopback port with its own data directory, killed (SIGKILL),
//! stopped (SIGSTOP) and resumed the way machines fail.
//!
//! - `kill_loop`: an idempotent acks=all producer keeps writing while
//!   brokers, half the time the leader, are killed and restarted ≥ 20 times
//!   (`SLUICE_CLUSTER_KILLS`): every acknowledged record is in the log
//!   exactly once at its acknowledged offset, and the three replicas' `.log`
//!   files are byte-identical up to the high watermark.
//! - `paused_leader`: a leader stopped past its lease loses leadership; a
//!   Produce queued to it while stopped is never acknowledged, and after it
//!   rejoins as a follower its diverged tail is gone everywhere.
//! - `follower_lag`: stopped followers leave the ISR; below
//!   min.insync.replicas acks=all is refused (NOT_ENOUGH_REPLICAS) and
//!   nothing is acknowledged; resumed, they rejoin and acks=all works again.
//! - `etcd_outage`: with etcd killed, produce and fetch keep working on the
//!   existing leaders, leadership does not move, the brokers report etcd
//!   disconnected; after etcd returns, topics can be created again.
//! - `interop`: kcat, kafka-python and confluent-kafka each bootstrap from a
//!   single broker and produce to and consume from a replicated topic.
//!
//! The tests run one at a time (a lock): three brokers and an etcd per test
//! on a 2-core machine are enough, and the timing claims (a 2 s lease, a 2 s
//! lag limit) should not depend on what another test is doing. Set
//! `SLUICE_CLUSTER_KEEP=1` to keep every cluster's directory (logs, data);
//! a failing test keeps its own and prints where, with every log's tail.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use support::cluster::{
    Cluster, Conn, Etcd, LAG_MS, LEASE_MS, PRODUCE_VERSION, Rec, Replica, check_acked, code,
    compare_replicas, err, next_random, produce_answer, produce_request, read_replica, wait_for,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// One cluster test at a time (a failed one does not block the rest).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A size knob from the environment, or its default (the issue's minimum).
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn lease() -> Duration {
    Duration::from_millis(LEASE_MS)
}

/// After every broker is stopped: each replica of `topic`-`partition` holds
/// exactly the records below `hw` that `expected` lists (when given), has
/// nothing past `hw` when `exact_end`, holds every acknowledged record at
/// its offset, and all replicas' batches below `hw` are byte-identical.
fn check_replicas(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    hw: i64,
    expected: Option<&[Rec]>,
    acked: &[(i64, String)],
    exact_end: bool,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = cluster
        .nodes()
        .into_iter()
        .map(|n| cluster.replica(n, topic, partition))
        .collect();
    for r in &replicas {
        let records = r.records();
        if let Some(expected) = expected {
            let below: Vec<&Rec> = records.iter().filter(|x| x.offset < hw).collect();
            if let Some(i) = (0..below.len().max(expected.len()))
                .find(|&i| below.get(i).copied() != expected.get(i))
            {
                panic!(
                    "{} differs from what consumers read below the high watermark {hw}: \
                     record #{i} is {} in the replica and {} as consumed{}",
                    r.who(),
                    below.get(i).map_or("missing".into(), |x| x.to_string()),
                    expected.get(i).map_or("missing".into(), |x| x.to_string()),
                    r.problem
                        .as_ref()
                        .map_or_else(String::new, |p| format!(" (reading stopped: {p})"))
                );
            }
        }
        if exact_end {
            assert_eq!(
                r.end_offset(),
                hw,
                "{} ends at offset {}, not at the high watermark {hw}: {}",
                r.who(),
                r.end_offset(),
                if r.end_offset() > hw {
                    "a tail past the high watermark survived on a replica that was in the ISR"
                } else {
                    "a replica in the ISR is missing committed records"
                }
            );
        }
        if let Err(e) = check_acked(&records, acked, &r.who()) {
            panic!("{e}");
        }
    }
    for other in &replicas[1..] {
        if let Err(e) = compare_replicas(&replicas[0], other, hw) {
            panic!("replicas of {topic}-{partition} are not byte-identical: {e}");
        }
    }
    replicas
}

// ---------------------------------------------------------------------------
// The harness itself (passes without cluster mode)

#[test]
fn etcd_harness_starts_stops_restarts_pauses_and_resumes() {
    let _serial = serial();
    let mut etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    assert!(etcd.healthy(), "etcd on {endpoint} healthy after start");
    etcd.put("/sluice-harness/k", "v1").expect("put");
    assert_eq!(
        etcd.get_prefix("/sluice-harness/").expect("range"),
        vec![("/sluice-harness/k".to_string(), "v1".to_string())]
    );

    etcd.pause();
    let t = Instant::now();
    assert!(!etcd.healthy(), "a stopped etcd does not answer /health");
    assert!(t.elapsed() < Duration::from_secs(3), "the probe times out");
    etcd.resume();
    assert!(
        etcd.wait_healthy(Duration::from_secs(10)),
        "healthy again after SIGCONT"
    );

    let pid = etcd.pid().expect("pid");
    etcd.stop();
    assert!(!etcd.healthy(), "killed etcd does not answer");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} is gone after stop"
    );
    assert!(
        std::net::TcpStream::connect(&endpoint).is_err(),
        "nothing listens on {endpoint} after stop"
    );
    etcd.restart();
    assert_eq!(etcd.endpoint(), endpoint, "restarted on the same port");
    assert!(etcd.healthy(), "healthy after restart");
    assert_eq!(
        etcd.get_prefix("/sluice-harness/").expect("range"),
        vec![("/sluice-harness/k".to_string(), "v1".to_string())],
        "the same data directory: the key survived the crash"
    );
    let pid = etcd.pid().expect("pid");
    drop(etcd);
    assert!(
        wait_for(Duration::from_secs(5), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "etcd {pid} is killed on drop"
    );
}

/// The replica reader and comparer on a single-node broker's files: what
/// was produced is read back at its offsets; a copy compares equal; a
/// flipped byte and a cut tail are found and located.
#[test]
fn replica_reader_reads_a_stopped_brokers_log_and_locates_differences() {
    let _serial = serial();
    let mut server = support::Server::start(&["--segment-bytes", "4k"]);
    let mut c = support::Client::connect(server.addr);
    assert_eq!(support::create_topic(&mut c, "r", 1), 0, "create r");
    let mut expected = Vec::new();
    for i in 0..100 {
        let (key, value) = (format!("k{i}"), format!("value-{i:04}-{}", "x".repeat(40)));
        let resp = c.call(
            PRODUCE_VERSION,
            &produce_request("r", 0, &key, &value, -1, 5000),
        );
        let (code, offset) = produce_answer(&resp).expect("answer");
        assert_eq!((code, offset), (0, i), "produce #{i}");
        expected.push(Rec {
            offset,
            key: Some(key.into_bytes()),
            value: Some(value.into_bytes()),
        });
    }
    drop(c);
    server.stop();

    let a = read_replica(&server.data_dir, "r", 0);
    assert_eq!(
        a.problem, None,
        "a cleanly stopped broker's log reads whole"
    );
    assert!(
        a.batches
            .iter()
            .map(|b| &b.segment)
            .collect::<HashSet<_>>()
            .len()
            > 1,
        "4 KiB segments: the log spans several files"
    );
    assert_eq!(a.records(), expected, "every record at its offset");
    assert_eq!(a.end_offset(), 100);
    let acked: Vec<(i64, String)> = expected.iter().map(|r| (r.offset, r.value_str())).collect();
    check_acked(&a.records(), &acked, "original").expect("all acknowledged");

    // A copy compares equal; then flip a byte in a record of batch 57.
    let copy_root = tempfile::tempdir().expect("tempdir");
    let copy_dir = copy_root.path().join("r-0");
    std::fs::create_dir_all(&copy_dir).expect("mkdir");
    for e in std::fs::read_dir(a.dir.clone()).expect("ls").flatten() {
        std::fs::copy(e.path(), copy_dir.join(e.file_name())).expect("copy");
    }
    let b = read_replica(copy_root.path(), "r", 0);
    compare_replicas(&a, &b, 100).expect("a copy is identical");

    let victim = &b.batches[57];
    let mut bytes = std::fs::read(&victim.segment).expect("read");
    bytes[victim.position + 70] ^= 0x01;
    std::fs::write(&victim.segment, &bytes).expect("write");
    let b = read_replica(copy_root.path(), "r", 0);
    let problem = b.problem.clone().expect("a CRC mismatch is reported");
    assert!(problem.contains("offset 57"), "{problem}");
    assert_eq!(b.end_offset(), 57, "reading stops at the corrupt batch");
    let e = compare_replicas(&a, &b, 100).expect_err("a shorter replica differs");
    assert!(e.contains("ends at offset 57"), "{e}");
    compare_replicas(&a, &b, 57).expect("identical below the corruption");
    let e = check_acked(&b.records(), &acked, "copy").expect_err("records missing");
    assert!(e.contains("43 of 100"), "{e}");

    // Same length, different bytes: fix the CRC so the batch reads, and the
    // comparison names the field.
    let mut bytes = std::fs::read(&victim.segment).expect("read");
    let at = victim.position;
    bytes[at + 12..at + 16].copy_from_slice(&7i32.to_be_bytes()); // leader epoch
    bytes[at + 70] ^= 0x01; // back as it was
    std::fs::write(&victim.segment, &bytes).expect("write");
    let b = read_replica(copy_root.path(), "r", 0);
    assert_eq!(
        b.problem, None,
        "the leader epoch is outside the CRC: still valid"
    );
    let e = compare_replicas(&a, &b, 100).expect_err("epochs differ");
    assert!(
        e.contains("batch #57") && e.contains("partitionLeaderEpoch"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// 1. kill_loop

/// Delivery reports of the idempotent producer: (message id, offset) of
/// every acknowledged message in report order, and every failure.
#[derive(Default, Clone)]
struct Reports {
    acked: Arc<Mutex<Vec<(u64, i64)>>>,
    failed: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Reports {
    fn acked_len(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        match result {
            Ok(m) => {
                assert_eq!(m.partition(), 0);
                self.acked.lock().expect("acked").push((*id, m.offset()));
            }
            Err((e, _)) => self
                .failed
                .lock()
                .expect("failed")
                .push((*id, e.to_string())),
        }
    }
}

fn message_value(id: u64) -> String {
    format!("message-{id:08}")
}

/// The confluent-kafka consumer that reads the partition back: every
/// record from the beginning to the high watermark, `offset<TAB>key<TAB>value`
/// lines into OUT; prints `low high count`.
const CONSUME_ALL: &str = r#"
import sys, time
from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'cluster-verify',
              'enable.auto.commit': False, 'enable.partition.eof': True,
              'check.crcs': True})
low, high = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=30)
c.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
last, n = low - 1, 0
deadline = time.time() + 180
with open(OUT, 'w') as f:
    while last + 1 < high:
        if time.time() > deadline:
            sys.exit(f'read up to offset {last} of high watermark {high} in 180 s')
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            sys.exit(f'consumer error at offset {last + 1}: {m.error()}')
        f.write(f'{m.offset()}\t{m.key().decode()}\t{m.value().decode()}\n')
        last, n = m.offset(), n + 1
c.close()
print(low, high, n)
"#;

/// An idempotent librdkafka producer with acks=all that retries for as long
/// as a test runs: nothing it is given may fail.
fn idempotent_producer(cluster: &Cluster, reports: &Reports) -> Arc<BaseProducer<Reports>> {
    Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.size", "65536")
            .set("message.timeout.ms", "600000")
            .set("request.timeout.ms", "10000")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "200")
            .set("retry.backoff.ms", "50")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create_with_context(reports.clone())
            .expect("producer"),
    )
}

/// Sends numbered messages to partition 0 of `topic` (about 2,000 a
/// second) until `stop`; returns how many it sent.
fn spawn_writer(
    topic: &'static str,
    producer: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let value = message_value(id);
            let record = BaseRecord::with_opaque_to(topic, Box::new(id))
                .partition(0)
                .key(&value)
                .payload(&value);
            match producer.send(record) {
                Ok(()) => id += 1,
                // Queue full while there is no leader: wait.
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
            producer.poll(Duration::ZERO);
            // Enough to cross segment rolls, little enough for a 2-core
            // machine running 3 brokers.
            if id.is_multiple_of(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        id
    })
}

/// Every broker in turn stopped with SIGTERM (a controlled shutdown: its
/// leaderships move first) and started again, under an idempotent
/// acks=all producer: no delivery fails, and every acknowledged record is
/// in the partition exactly once, at its offset.
#[test]
fn a_rolling_restart_with_sigterm_fails_no_delivery_and_loses_nothing() {
    let _serial = serial();
    const TOPIC: &str = "roll";
    let mut cluster = Cluster::new(3, &[]);
    let all = cluster.nodes();
    cluster.create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    let reports = Reports::default();
    let producer = idempotent_producer(&cluster, &reports);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(TOPIC, producer.clone(), stop.clone());
    for round in 0..2 {
        for &node in &all {
            let before = reports.acked_len();
            assert!(
                wait_for(Duration::from_secs(30), || reports.acked_len()
                    >= before + 20),
                "round {round}, before stopping broker {node}: no progress\n{}",
                cluster.describe(TOPIC, 0)
            );
            let led = cluster.metadata_leader(TOPIC, 0) == Some(node);
            let handovers = |cluster: &Cluster| {
                std::fs::read_to_string(cluster.log_path(node))
                    .unwrap_or_default()
                    .matches("controlled shutdown: leaderships moved")
                    .count()
            };
            let handed_over = handovers(&cluster);
            assert!(
                cluster.stop(node),
                "broker {node} (leader: {led}) did not exit within 30 s of SIGTERM"
            );
            // It handed its leadership (and ISR place) over before exiting.
            assert_eq!(
                handovers(&cluster),
                handed_over + 1,
                "broker {node} (leader: {led}) stopped without a controlled shutdown:\n{}",
                cluster.describe(TOPIC, 0)
            );
            std::thread::sleep(Duration::from_millis(300));
            cluster.start(node);
            assert!(
                wait_for(Duration::from_secs(45), || cluster
                    .isr_everywhere(TOPIC, 0, &all)),
                "round {round}: broker {node} restarted but not back in the ISR\n{}",
                cluster.describe(TOPIC, 0)
            );
            if let Some((code, why)) = producer.client().fatal_error() {
                panic!("after restarting broker {node}: fatal producer error {code:?}: {why}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    producer
        .flush(Duration::from_secs(60))
        .expect("every message delivered");
    let failed = reports.failed.lock().expect("failed").clone();
    assert!(
        failed.is_empty(),
        "{} of {sent} deliveries failed across a rolling restart; first: {:?}",
        failed.len(),
        failed.first()
    );
    let acked: Vec<(i64, String)> = reports
        .acked
        .lock()
        .expect("acked")
        .iter()
        .map(|&(id, offset)| (offset, message_value(id)))
        .collect();
    assert_eq!(
        acked.len() as u64,
        sent,
        "every message sent was acknowledged"
    );
    let (hw, records) = cluster.fetch_all(TOPIC, 0, Duration::from_secs(30));
    assert_eq!(hw, sent as i64, "one record per message, no duplicates");
    if let Err(e) = check_acked(&records, &acked, "the partition after a rolling restart") {
        panic!("{e}");
    }
}

#[test]
fn kill_loop_loses_and_duplicates_no_acknowledged_record() {
    let _serial = serial();
    kill_loop(3, knob("SLUICE_CLUSTER_KILLS", 20));
}

/// The kill loop on `brokers` brokers (replication factor `brokers`,
/// min.insync.replicas 2 or fewer).
fn kill_loop(brokers: usize, kills: u64) {
    const TOPIC: &str = "t";
    let all: Vec<i32> = (1..=brokers as i32).collect();
    let min_isr = brokers.min(2).to_string();
    // 1 MiB segments: replication and truncation cross segment rolls.
    let mut cluster = Cluster::new(brokers, &["--segment-bytes", "1m"]);
    cluster.create_topic(
        TOPIC,
        1,
        brokers as i16,
        &[("min.insync.replicas", &min_isr)],
    );

    let reports = Reports::default();
    let producer = idempotent_producer(&cluster, &reports);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(TOPIC, producer.clone(), stop.clone());
    let fatal = |when: &str| {
        if let Some((code, why)) = producer.client().fatal_error() {
            panic!("{when}: the idempotent producer hit a fatal error: {code:?}: {why}");
        }
    };

    let started = Instant::now();
    let mut random = 0x5eed_c105_7e12u64;
    let mut leader_kills = 0u64;
    for k in 1..=kills {
        std::thread::sleep(Duration::from_millis(200 + next_random(&mut random) % 500));
        cluster.assert_running();
        let leader = cluster.metadata_leader(TOPIC, 0).unwrap_or_else(|| {
            panic!(
                "kill #{k}: no live broker names a leader of {TOPIC}-0\n{}",
                cluster.describe(TOPIC, 0)
            )
        });
        // Every other kill is the leader's; the rest a random broker's.
        let victim = if k % 2 == 1 {
            leader
        } else {
            1 + (next_random(&mut random) % brokers as u64) as i32
        };
        let was_leader = victim == leader;
        leader_kills += u64::from(was_leader);
        let what = format!(
            "kill #{k}/{kills} (broker {victim}{}, {:.0?} in)",
            if was_leader { ", the leader" } else { "" },
            started.elapsed()
        );
        cluster.kill(victim);
        // Down for less than the lease half the time (the restarted broker
        // meets its own registration still alive), longer the other half.
        let down = if k % 4 < 2 {
            300 + next_random(&mut random) % 500
        } else {
            LEASE_MS + 500 + next_random(&mut random) % 1000
        };
        std::thread::sleep(Duration::from_millis(down));
        cluster.start(victim);
        if !wait_for(Duration::from_secs(45), || {
            cluster.isr_everywhere(TOPIC, 0, &all)
        }) {
            panic!(
                "{what}: down {down} ms, restarted, but not back in the ISR of {TOPIC}-0 \
                 within 45 s\n{}",
                cluster.describe(TOPIC, 0)
            );
        }
        fatal(&what);
        // The producer gets through again before the next kill.
        let before = reports.acked_len();
        if !wait_for(Duration::from_secs(30), || {
            reports.acked_len() >= before + 20
        }) {
            fatal(&what);
            panic!(
                "{what}: no progress: {} acknowledgements in the 30 s after the ISR was whole \
                 again ({} failed deliveries so far: {:?})\n{}",
                reports.acked_len() - before,
                reports.failed.lock().expect("failed").len(),
                reports
                    .failed
                    .lock()
                    .expect("failed")
                    .iter()
                    .take(5)
                    .collect::<Vec<_>>(),
                cluster.describe(TOPIC, 0)
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    if let Err(e) = producer.flush(Duration::from_secs(120)) {
        panic!(
            "{} of {sent} messages still undelivered 120 s after the last kill: {e}\n{}",
            sent as usize - reports.acked_len() - reports.failed.lock().expect("f").len(),
            cluster.describe(TOPIC, 0)
        );
    }
    fatal("after the kills");
    let acked = reports.acked.lock().expect("acked").clone();
    let failed = reports.failed.lock().expect("failed").clone();
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for (_, why) in &failed {
        *reasons.entry(why.as_str()).or_default() += 1;
    }
    assert!(
        failed.is_empty(),
        "{} deliveries failed (a 10-minute delivery timeout: the producer should retry \
         through every failover); reasons: {reasons:?}; first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        acked.len() as u64,
        sent,
        "every message sent was acknowledged"
    );
    assert!(
        leader_kills >= kills.div_ceil(2),
        "{leader_kills} of {kills} kills hit the leader"
    );
    assert!(sent > 1000, "{sent} messages over {kills} kills");

    // Acknowledgement order is offset order (one partition, one producer).
    for (i, pair) in acked.windows(2).enumerate() {
        assert!(
            pair[1].1 > pair[0].1,
            "delivery report #{} acknowledged {} at offset {} after #{i} acknowledged {} at \
             offset {}: acknowledgements out of offset order",
            i + 1,
            message_value(pair[1].0),
            pair[1].1,
            message_value(pair[0].0),
            pair[0].1
        );
    }

    // Read everything back through a real consumer once the ISR is whole.
    cluster.wait_isr(TOPIC, 0, &all, Duration::from_secs(60));
    let out = cluster.root().join("consumed.tsv");
    let summary = cluster.py(
        &cluster.bootstrap(),
        &format!(
            "TOPIC = '{TOPIC}'\nOUT = r'{}'\n{CONSUME_ALL}",
            out.display()
        ),
    );
    let nums: Vec<i64> = summary
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [low, high, count] = nums[..] else {
        panic!("consumer summary {summary:?}");
    };
    assert_eq!(low, 0, "nothing was deleted");
    let consumed: Vec<Rec> = std::fs::read_to_string(&out)
        .expect("consumed file")
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let offset = f.next().and_then(|o| o.parse().ok()).expect("offset");
            let key = f.next().expect("key").as_bytes().to_vec();
            let value = f.next().expect("value").as_bytes().to_vec();
            Rec {
                offset,
                key: Some(key),
                value: Some(value),
            }
        })
        .collect();
    assert_eq!(consumed.len() as i64, count);

    // Idle, followers long-poll their leaders (replica.fetch.wait.max.ms,
    // 500 ms): a handful of Fetches a second per broker, never a tight loop
    // (a follower that kept an epoch its leader never had once asked
    // thousands of times a second).
    let fetches = |n: i32| {
        cluster
            .metric(n, "sluice_request_duration_seconds_count{api=\"Fetch\"}")
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let before: Vec<f64> = all.iter().map(|&n| fetches(n)).collect();
    std::thread::sleep(Duration::from_secs(2));
    for (i, &n) in all.iter().enumerate() {
        let served = fetches(n) - before[i];
        assert!(
            served < 100.0,
            "broker {n} served {served} Fetches in 2 s of an idle cluster: a follower is not \
             long-polling"
        );
    }

    // No gaps (nothing is compacted, no transactions), no duplicates.
    for (i, r) in consumed.iter().enumerate() {
        assert_eq!(
            r.offset, i as i64,
            "offsets run without gaps from 0: record #{i} is at offset {}",
            r.offset
        );
        assert_eq!(r.key, r.value, "{r}: key and value match");
    }
    assert_eq!(high, consumed.len() as i64, "read up to the high watermark");
    let mut seen: HashMap<&[u8], i64> = HashMap::new();
    for r in &consumed {
        let v = r.value.as_deref().unwrap_or_default();
        if let Some(first) = seen.insert(v, r.offset) {
            panic!(
                "{:?} is in the log twice: at offsets {first} and {}",
                r.value_str(),
                r.offset
            );
        }
    }
    // Every acknowledged message, exactly at its acknowledged offset; in
    // the order it was sent.
    let acked_values: Vec<(i64, String)> = acked
        .iter()
        .map(|&(id, offset)| (offset, message_value(id)))
        .collect();
    if let Err(e) = check_acked(&consumed, &acked_values, "the consumed partition") {
        panic!("{e}");
    }
    let mut by_offset = acked.clone();
    by_offset.sort_by_key(|&(_, o)| o);
    for pair in by_offset.windows(2) {
        assert!(
            pair[1].0 > pair[0].0,
            "{} at offset {} follows {} at offset {}: out of send order",
            message_value(pair[1].0),
            pair[1].1,
            message_value(pair[0].0),
            pair[0].1
        );
    }
    for r in &consumed {
        let id: Option<u64> = r
            .value_str()
            .strip_prefix("message-")
            .and_then(|v| v.parse().ok());
        assert!(
            id.is_some_and(|id| id < sent),
            "{r}: not a message this test sent"
        );
    }

    // Each replica holds the same records, and the same bytes.
    cluster.stop_all();
    let replicas = check_replicas(
        &cluster,
        TOPIC,
        0,
        high,
        Some(&consumed),
        &acked_values,
        true,
    );
    eprintln!(
        "{kills} kills ({leader_kills} of the leader) in {:.0?}: {sent} sent and acknowledged, \
         high watermark {high}, {} batches per replica",
        started.elapsed(),
        replicas[0].batches.len()
    );
}

// ---------------------------------------------------------------------------
// 2. paused_leader

#[test]
fn a_paused_leader_loses_leadership_and_acknowledges_nothing_after() {
    let _serial = serial();
    const TOPIC: &str = "p";
    let mut cluster = Cluster::new(3, &[]);
    cluster.create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    let before = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    let old = before.leader;

    let mut acked: Vec<(i64, String)> = Vec::new();
    for i in 0..10 {
        let v = format!("before-{i}");
        let o = cluster.produce_acked(TOPIC, 0, &v, &v, Duration::from_secs(20));
        acked.push((o, v));
    }

    // A connection to the leader made while it runs; the requests are
    // written once it is stopped, so they wait in its socket buffer.
    let mut stale = Conn::connect(cluster.addr(old), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the leader: {e}"));
    cluster.pause(old);
    let paused_at = Instant::now();
    let stale_all = stale
        .send(
            PRODUCE_VERSION,
            &produce_request(TOPIC, 0, "stale-all", "stale-all", -1, 5000),
        )
        .expect("queue a produce to the stopped leader");
    let stale_one = stale
        .send(
            PRODUCE_VERSION,
            &produce_request(TOPIC, 0, "stale-one", "stale-one", 1, 5000),
        )
        .expect("queue a produce to the stopped leader");

    // A new leader, with a higher epoch, on every live broker.
    let mut new = None;
    if !wait_for(Duration::from_secs(10 * LEASE_MS / 1000 + 10), || {
        // (Metadata may show leader epoch -1, as the single broker does.)
        new = cluster.agreed(TOPIC, 0).filter(|s| {
            s.leader != old
                && (s.leader_epoch < 0
                    || before.leader_epoch < 0
                    || s.leader_epoch > before.leader_epoch)
        });
        new.is_some()
    }) {
        panic!(
            "broker {old}, the leader ({before}), stopped for {:.1?}: the live brokers do \
             not agree on a new leader (with a higher epoch)\n{}",
            paused_at.elapsed(),
            cluster.describe(TOPIC, 0)
        );
    }
    let new = new.expect("set by wait_for");
    for i in 0..10 {
        let v = format!("after-{i}");
        let o = cluster.produce_acked(TOPIC, 0, &v, &v, Duration::from_secs(20));
        acked.push((o, v));
    }
    // Stopped for longer than twice the lease in all.
    let min_pause = 2 * lease();
    if paused_at.elapsed() < min_pause {
        std::thread::sleep(min_pause - paused_at.elapsed());
    }
    let paused_for = paused_at.elapsed();
    cluster.resume(old);

    // The old leader wakes with both requests waiting: the acks=all one
    // must not be acknowledged.
    stale.set_read_timeout(Duration::from_secs(30));
    let answer_all =
        stale.recv::<kafka_protocol::messages::ProduceRequest>(PRODUCE_VERSION, stale_all);
    let answer_all = match answer_all {
        Ok(resp) => {
            let (code, offset) = produce_answer(&resp).expect("a partition answer");
            assert_ne!(
                code,
                code::NONE,
                "broker {old}, stopped for {paused_for:.1?} while broker {} took over ({new}), \
                 acknowledged an acks=all produce at offset {offset} after losing leadership",
                new.leader
            );
            err(code)
        }
        Err(e) => format!("no answer ({e})"),
    };
    let answer_one = if answer_all.starts_with("no answer") {
        "not read".to_string()
    } else {
        match stale.recv::<kafka_protocol::messages::ProduceRequest>(PRODUCE_VERSION, stale_one) {
            Ok(resp) => {
                produce_answer(&resp).map_or_else(|e| e, |(c, o)| format!("{} at {o}", err(c)))
            }
            Err(e) => format!("no answer ({e})"),
        }
    };
    drop(stale);
    eprintln!(
        "old leader {old} answered the queued acks=all produce: {answer_all}; acks=1: {answer_one}"
    );

    // It rejoins as a follower; the cluster keeps taking writes.
    cluster.wait_isr(TOPIC, 0, &[1, 2, 3], Duration::from_secs(45));
    for i in 0..5 {
        let v = format!("rejoined-{i}");
        let o = cluster.produce_acked(TOPIC, 0, &v, &v, Duration::from_secs(20));
        acked.push((o, v));
    }
    cluster.wait_isr(TOPIC, 0, &[1, 2, 3], Duration::from_secs(45));
    let (hw, records) = cluster.fetch_all(TOPIC, 0, Duration::from_secs(20));
    if let Err(e) = check_acked(&records, &acked, "the leader, read as a consumer") {
        panic!("{e}\n{}", cluster.describe(TOPIC, 0));
    }
    let stale_values = ["stale-all", "stale-one"];
    for r in &records {
        assert!(
            !stale_values.contains(&r.value_str().as_str()),
            "{r}: written to the stopped old leader {old} after it lost leadership (it \
             answered {answer_all}), yet consumers read it"
        );
    }

    // Every replica: all acknowledged records, no stale record anywhere
    // (not even past the high watermark), byte-identical below it.
    cluster.stop_all();
    let replicas = check_replicas(&cluster, TOPIC, 0, hw, Some(&records), &acked, true);
    for r in &replicas {
        for rec in r.records() {
            assert!(
                !stale_values.contains(&rec.value_str().as_str()),
                "{}: {rec} survived: the old leader {old}'s diverged tail was not truncated \
                 (the acks=all request was answered {answer_all})",
                r.who()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 3. follower_lag

#[test]
fn lagging_followers_leave_the_isr_and_below_min_isr_nothing_is_acknowledged() {
    let _serial = serial();
    const TOPIC: &str = "f";
    // A lease much longer than replica.lag.time.max.ms: a stopped follower
    // must leave the ISR because it lags, well before it is dead to etcd.
    const LONG_LEASE_MS: u64 = 10_000;
    let mut cluster = Cluster::new(3, &["--cluster-lease-ms", &LONG_LEASE_MS.to_string()]);
    cluster.create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    let leader = cluster
        .wait_agreed(TOPIC, 0, Duration::from_secs(10))
        .leader;
    // The first follower stopped is not the controller (if a follower is),
    // so the ISR change does not wait for a controller failover.
    let controller = cluster.controller();
    let mut followers: Vec<i32> = cluster
        .nodes()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    followers.sort_by_key(|&n| Some(n) == controller);
    let (f1, f2) = (followers[0], followers[1]);
    // The first writes retry: Metadata may name the leader a moment before
    // that broker acts as one (clients retry NOT_LEADER_OR_FOLLOWER).
    let mut acked: Vec<(i64, String)> = Vec::new();
    for i in 0..5 {
        let v = format!("f-first-{i}");
        let o = cluster.produce_acked(TOPIC, 0, &v, &v, Duration::from_secs(20));
        acked.push((o, v));
    }
    let mut seq = 0u32;
    let mut produce = |cluster: &Cluster, acks: i16, timeout_ms: i32| {
        seq += 1;
        let v = format!("f-{seq:05}");
        (
            v.clone(),
            cluster.produce_to(leader, TOPIC, 0, &v, &v, acks, timeout_ms),
        )
    };
    for _ in 0..5 {
        let (v, r) = produce(&cluster, -1, 5000);
        match r {
            Ok((0, o)) => acked.push((o, v)),
            other => panic!(
                "acks=all to the leader {leader} with a full ISR: {other:?}\n{}",
                cluster.describe(TOPIC, 0)
            ),
        }
    }

    // One follower stopped: records keep coming, so it falls behind and
    // leaves the ISR after replica.lag.time.max.ms.
    cluster.pause(f1);
    let paused_at = Instant::now();
    let limit = Duration::from_millis(LONG_LEASE_MS - 2000);
    loop {
        let (v, r) = produce(&cluster, -1, 10_000);
        if let Ok((0, o)) = r {
            acked.push((o, v));
        }
        if cluster.isr_everywhere(TOPIC, 0, &[leader, f2]) {
            break;
        }
        assert!(
            paused_at.elapsed() < limit,
            "follower {f1} stopped for {:.1?} (replica.lag.time.max.ms {LAG_MS}, lease \
             {LONG_LEASE_MS} ms, controller {controller:?}): still in the ISR\n{}",
            paused_at.elapsed(),
            cluster.describe(TOPIC, 0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shrunk_after = paused_at.elapsed();
    let s = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    assert_eq!(s.leader, leader, "the leader stayed: {s}");
    // The operator's view: `sluice cluster status` from the leader names
    // every broker (the stopped one's lease has not run out) and the
    // partition as under-replicated.
    let status = std::process::Command::new(support::cluster::broker_binary())
        .args(["cluster", "status", "-b", &cluster.addr(leader).to_string()])
        .output()
        .expect("sluice cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("brokers 3"), "{text}");
    assert!(
        text.contains("partitions 1  under-replicated 1  offline 0"),
        "{text}"
    );
    assert!(
        text.contains(&format!("under-replicated {TOPIC}-0  leader {leader}")),
        "{text}"
    );
    // Two in the ISR ≥ min.insync.replicas: acks=all works, promptly.
    for _ in 0..10 {
        let t = Instant::now();
        let (v, r) = produce(&cluster, -1, 5000);
        match r {
            Ok((0, o)) => acked.push((o, v)),
            other => panic!(
                "ISR {{{leader}, {f2}}} with min.insync.replicas=2: acks=all answered \
                 {other:?} after {:.1?}\n{}",
                t.elapsed(),
                cluster.describe(TOPIC, 0)
            ),
        }
    }

    // The second follower stopped: from now on nothing is acknowledged;
    // once it has left the ISR too, acks=all is refused with
    // NOT_ENOUGH_REPLICAS (the record not appended).
    // (f2 may be the controller: its ISR change may wait for the lease.)
    cluster.pause(f2);
    let paused2_at = Instant::now();
    let limit = Duration::from_millis(LONG_LEASE_MS + LAG_MS) + Duration::from_secs(15);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused: Vec<String> = Vec::new();
    let mut in_a_row = 0;
    while in_a_row < 3 {
        let (v, r) = produce(&cluster, -1, 5000);
        let c = match r {
            Ok((c, o)) => {
                assert_ne!(
                    c,
                    code::NONE,
                    "{v:?} acknowledged (acks=all) at offset {o} while both followers {f1} and \
                     {f2} were stopped ({:.1?} after the second; every thread of both was \
                     seen stopped before the produce was sent)\n{}",
                    paused2_at.elapsed(),
                    cluster.describe(TOPIC, 0)
                );
                c
            }
            Err(e) => panic!("the leader {leader} did not answer a produce: {e}"),
        };
        assert!(
            [
                code::NOT_ENOUGH_REPLICAS,
                code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                code::REQUEST_TIMED_OUT
            ]
            .contains(&c),
            "acks=all with both followers stopped answered {} (expected \
             NOT_ENOUGH_REPLICAS, or NOT_ENOUGH_REPLICAS_AFTER_APPEND / REQUEST_TIMED_OUT \
             while the ISR shrinks)",
            err(c)
        );
        *answers.entry(err(c)).or_default() += 1;
        if c == code::NOT_ENOUGH_REPLICAS {
            refused.push(v);
        }
        if c == code::NOT_ENOUGH_REPLICAS && cluster.isr_everywhere(TOPIC, 0, &[leader]) {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(
            paused2_at.elapsed() < limit,
            "both followers stopped for {:.1?}: no steady NOT_ENOUGH_REPLICAS with an ISR \
             of {{{leader}}} (answers so far: {answers:?})\n{}",
            paused2_at.elapsed(),
            cluster.describe(TOPIC, 0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // acks=1 still works: only the ISR minimum for acks=all applies.
    let (v, r) = produce(&cluster, 1, 5000);
    assert!(
        matches!(r, Ok((0, _))),
        "acks=1 with an ISR of one: {v:?} answered {r:?}"
    );

    // Both back: they catch up and rejoin; acks=all works again.
    cluster.resume(f1);
    cluster.resume(f2);
    cluster.wait_isr(TOPIC, 0, &[1, 2, 3], Duration::from_secs(45));
    let (v, r) = (0..100)
        .map(|_| {
            let x = produce(&cluster, -1, 5000);
            if !matches!(x.1, Ok((0, _))) {
                std::thread::sleep(Duration::from_millis(200));
            }
            x
        })
        .find(|(_, r)| matches!(r, Ok((0, _))))
        .unwrap_or_else(|| {
            panic!(
                "acks=all not acknowledged in 100 tries after the ISR was whole again\n{}",
                cluster.describe(TOPIC, 0)
            )
        });
    acked.push((r.expect("ok").1, v));
    for _ in 0..5 {
        let (v, r) = produce(&cluster, -1, 5000);
        match r {
            Ok((0, o)) => acked.push((o, v)),
            other => panic!("acks=all after the ISR was whole again: {other:?}"),
        }
    }
    cluster.wait_isr(TOPIC, 0, &[1, 2, 3], Duration::from_secs(45));
    let (hw, records) = cluster.fetch_all(TOPIC, 0, Duration::from_secs(20));
    eprintln!(
        "first follower left the ISR {shrunk_after:.1?} after it stopped; with both stopped \
         the leader answered {answers:?}; high watermark {hw}"
    );
    cluster.stop_all();
    let replicas = check_replicas(&cluster, TOPIC, 0, hw, Some(&records), &acked, true);
    // NOT_ENOUGH_REPLICAS means refused before the append: those records
    // are nowhere.
    for r in &replicas {
        for rec in r.records() {
            assert!(
                !refused.contains(&rec.value_str()),
                "{}: {rec} is in the log, but its produce was answered NOT_ENOUGH_REPLICAS \
                 (which tells the client nothing was written: a retry would duplicate it)",
                r.who()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. etcd_outage

const ETCD_GAUGE: &str = "sluice_cluster_etcd_connected";

fn gauge_everywhere(cluster: &Cluster, want: f64) -> bool {
    cluster
        .live()
        .into_iter()
        .all(|n| cluster.metric(n, ETCD_GAUGE).is_ok_and(|v| v == Some(want)))
}

fn gauges(cluster: &Cluster) -> String {
    cluster
        .live()
        .into_iter()
        .map(|n| format!("broker {n}: {:?}", cluster.metric(n, ETCD_GAUGE)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn brokers_keep_serving_through_an_etcd_outage() {
    let _serial = serial();
    const TOPIC: &str = "e";
    const PARTITIONS: i32 = 3;
    let mut cluster = Cluster::new(3, &[]);
    cluster.create_topic(TOPIC, PARTITIONS, 3, &[]);
    let before: Vec<_> = (0..PARTITIONS)
        .map(|p| cluster.wait_agreed(TOPIC, p, Duration::from_secs(10)))
        .collect();
    let mut acked: Vec<Vec<(i64, String)>> = vec![Vec::new(); PARTITIONS as usize];
    for p in 0..PARTITIONS {
        let v = format!("up-{p}");
        let o = cluster.produce_acked(TOPIC, p, &v, &v, Duration::from_secs(20));
        acked[p as usize].push((o, v));
        let (_, records) = cluster.fetch_all(TOPIC, p, Duration::from_secs(10));
        check_acked(&records, &acked[p as usize], "before the outage").expect("read back");
    }
    if !wait_for(Duration::from_secs(10), || gauge_everywhere(&cluster, 1.0)) {
        panic!(
            "with etcd up, {ETCD_GAUGE} is not 1 on every broker: {}\nbroker 1's page:\n{}",
            gauges(&cluster),
            cluster.metrics_page(1)
        );
    }

    cluster.etcd.stop();
    let down_at = Instant::now();
    let outage = Duration::from_millis(knob("SLUICE_CLUSTER_ETCD_OUTAGE_MS", 5000));
    let mut rounds = 0;
    while down_at.elapsed() < outage {
        rounds += 1;
        for p in 0..PARTITIONS {
            let leader = before[p as usize].leader;
            let v = format!("outage-{rounds}-{p}");
            let at = down_at.elapsed();
            match cluster.produce_to(leader, TOPIC, p, &v, &v, -1, 5000) {
                Ok((0, o)) => acked[p as usize].push((o, v)),
                other => panic!(
                    "{at:.1?} into the etcd outage, the leader {leader} of {TOPIC}-{p} answered \
                     an acks=all produce with {other:?}\n{}",
                    cluster.describe(TOPIC, p)
                ),
            }
            let (hw, records) = cluster
                .fetch_all_from(leader, TOPIC, p)
                .unwrap_or_else(|e| panic!("{at:.1?} into the etcd outage, fetch: {e}"));
            if let Err(e) = check_acked(&records, &acked[p as usize], &format!("broker {leader}")) {
                panic!("{at:.1?} into the etcd outage (high watermark {hw}): {e}");
            }
            for (n, view) in cluster.views(TOPIC, p) {
                match view {
                    Ok(s)
                        if s.leader == before[p as usize].leader
                            && s.leader_epoch == before[p as usize].leader_epoch => {}
                    other => panic!(
                        "{at:.1?} into the etcd outage, broker {n} shows {TOPIC}-{p} as {other:?}, \
                         was {}: leadership must not move without etcd",
                        before[p as usize]
                    ),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !wait_for(Duration::from_secs(15), || gauge_everywhere(&cluster, 0.0)) {
        panic!(
            "etcd down for {:.1?}: {ETCD_GAUGE} is not 0 on every broker: {}",
            down_at.elapsed(),
            gauges(&cluster)
        );
    }
    // Still serving after the gauge dropped.
    for p in 0..PARTITIONS {
        let leader = before[p as usize].leader;
        let v = format!("outage-late-{p}");
        match cluster.produce_to(leader, TOPIC, p, &v, &v, -1, 5000) {
            Ok((0, o)) => acked[p as usize].push((o, v)),
            other => panic!(
                "{:.1?} into the etcd outage, after reporting etcd disconnected, the leader \
                 {leader} of {TOPIC}-{p} answered acks=all with {other:?}",
                down_at.elapsed()
            ),
        }
    }
    let outage_took = down_at.elapsed();

    cluster.etcd.restart();
    if !wait_for(Duration::from_secs(30), || gauge_everywhere(&cluster, 1.0)) {
        panic!(
            "etcd back for 30 s: {ETCD_GAUGE} is not 1 on every broker: {}",
            gauges(&cluster)
        );
    }
    for p in 0..PARTITIONS {
        let v = format!("back-{p}");
        let o = cluster.produce_acked(TOPIC, p, &v, &v, Duration::from_secs(30));
        acked[p as usize].push((o, v));
    }
    // Cluster metadata can change again: a new topic.
    cluster.create_topic("e2", 1, 3, &[]);
    let o = cluster.produce_acked("e2", 0, "new", "new", Duration::from_secs(20));
    let (_, records) = cluster.fetch_all("e2", 0, Duration::from_secs(10));
    check_acked(&records, &[(o, "new".to_string())], "e2").expect("e2 read back");
    for p in 0..PARTITIONS {
        let (_, records) = cluster.fetch_all(TOPIC, p, Duration::from_secs(20));
        if let Err(e) = check_acked(&records, &acked[p as usize], &format!("{TOPIC}-{p}")) {
            panic!("after etcd came back: {e}");
        }
    }
    eprintln!(
        "etcd down {outage_took:.1?}: {rounds} rounds of produce+fetch on every partition, \
         leaders unchanged"
    );
}

// ---------------------------------------------------------------------------
// 5. interop

/// kcat, with its output; panics with stderr if it fails.
fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run scripts/test.sh, which installs it");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write to kcat");
        }
    }
    let out = child.wait_with_output().expect("kcat ran");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const INTEROP_N: usize = 3000;

const KAFKA_PYTHON: &str = r#"
import time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
if CREATE:
    admin = KafkaAdminClient(bootstrap_servers=BROKER, request_timeout_ms=30000)
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])
    admin.close()
    print('created')
    raise SystemExit(0)
p = KafkaProducer(bootstrap_servers=BROKER, acks='all', retries=20, linger_ms=5)
futures = [p.send(TOPIC, key=f'k{i}'.encode(), value=f'{TOPIC}-{i}'.encode()) for i in range(N)]
p.flush(60)
placed = {}
for i, f in enumerate(futures):
    md = f.get(timeout=60)
    placed[f'k{i}'] = md.partition
p.close()
c = KafkaConsumer(bootstrap_servers=BROKER, enable_auto_commit=False)
tps = [TopicPartition(TOPIC, i) for i in range(3)]
c.assign(tps)
c.seek_to_beginning(*tps)
got = {}
deadline = time.time() + 60
while len(got) < N and time.time() < deadline:
    for tp, msgs in c.poll(timeout_ms=500).items():
        for m in msgs:
            k = m.key.decode()
            assert k not in got, f'{k} read twice (partition {m.partition} offset {m.offset})'
            got[k] = (m.partition, m.value.decode())
c.close()
missing = [f'k{i}' for i in range(N) if f'k{i}' not in got]
assert not missing, f'{len(missing)} of {N} not read back, e.g. {missing[:5]}'
for k, (part, v) in got.items():
    assert v == f'{TOPIC}-{k[1:]}', f'{k}: value {v}'
    assert part == placed[k], f'{k}: acknowledged in partition {placed[k]}, read from {part}'
print(N, sorted(set(placed.values())))
"#;

const CONFLUENT_KAFKA: &str = r#"
import time
from confluent_kafka import Producer, Consumer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic
if CREATE:
    admin = AdminClient({'bootstrap.servers': BROKER})
    for t, f in admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)]).items():
        f.result(30)
    print('created')
    raise SystemExit(0)
placed, errors = {}, []
def report(e, m):
    if e is not None:
        errors.append(str(e))
    else:
        placed[m.key().decode()] = m.partition()
p = Producer({'bootstrap.servers': BROKER, 'acks': 'all', 'linger.ms': 5,
              'enable.idempotence': True})
for i in range(N):
    p.produce(TOPIC, key=f'k{i}', value=f'{TOPIC}-{i}', on_delivery=report)
    p.poll(0)
left = p.flush(60)
assert left == 0 and not errors, f'{left} undelivered, errors {errors[:5]}'
c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'interop-verify',
              'enable.auto.commit': False})
c.assign([TopicPartition(TOPIC, i, OFFSET_BEGINNING) for i in range(3)])
got = {}
deadline = time.time() + 60
while len(got) < N and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    assert not m.error(), str(m.error())
    k = m.key().decode()
    assert k not in got, f'{k} read twice (partition {m.partition()} offset {m.offset()})'
    got[k] = (m.partition(), m.value().decode())
c.close()
missing = [f'k{i}' for i in range(N) if f'k{i}' not in got]
assert not missing, f'{len(missing)} of {N} not read back, e.g. {missing[:5]}'
for k, (part, v) in got.items():
    assert v == f'{TOPIC}-{k[1:]}', f'{k}: value {v}'
    assert part == placed[k], f'{k}: acknowledged in partition {placed[k]}, read from {part}'
print(N, sorted(set(placed.values())))
"#;

#[test]
fn kcat_kafka_python_and_confluent_kafka_each_bootstrap_from_one_broker() {
    let _serial = serial();
    let cluster = Cluster::new(3, &[]);
    let (b1, b2, b3) = (
        cluster.addr(1).to_string(),
        cluster.addr(2).to_string(),
        cluster.addr(3).to_string(),
    );
    let script = |client: &str, topic: &str, create: bool| {
        format!(
            "TOPIC = '{topic}'\nN = {INTEROP_N}\nCREATE = {}\n{client}",
            if create { "True" } else { "False" }
        )
    };
    // Three ways to create a replicated topic: the harness's CreateTopics,
    // kafka-python's admin client, confluent-kafka's.
    cluster.create_topic("i-kcat", 3, 3, &[]);
    cluster.py(&b2, &script(KAFKA_PYTHON, "i-kafka-python", true));
    cluster.py(&b3, &script(CONFLUENT_KAFKA, "i-confluent", true));
    for topic in ["i-kcat", "i-kafka-python", "i-confluent"] {
        for p in 0..3 {
            cluster.wait_isr(topic, p, &[1, 2, 3], Duration::from_secs(30));
        }
    }

    // kcat through broker 1 only: it sees all three brokers.
    let meta = kcat(&["-b", &b1, "-L"], None);
    assert!(meta.contains(" 3 brokers:"), "kcat -L:\n{meta}");
    for node in 1..=3 {
        assert!(
            meta.contains(&format!("broker {node} at {}", cluster.addr(node))),
            "kcat -L names broker {node} at {}:\n{meta}",
            cluster.addr(node)
        );
    }
    let lines: String = (0..INTEROP_N)
        .map(|i| format!("k{i}:i-kcat-{i}\n"))
        .collect();
    kcat(
        &["-b", &b1, "-P", "-t", "i-kcat", "-K", ":", "-X", "acks=all"],
        Some(&lines),
    );
    let out = kcat(
        &[
            "-b",
            &b1,
            "-C",
            "-t",
            "i-kcat",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p\t%k\t%s\n",
        ],
        None,
    );
    let mut got: HashMap<String, (String, String)> = HashMap::new();
    for line in out.lines() {
        let mut f = line.splitn(3, '\t');
        let (p, k, v) = (
            f.next().unwrap_or_default(),
            f.next().unwrap_or_default(),
            f.next().unwrap_or_default(),
        );
        if let Some(old) = got.insert(k.to_string(), (p.to_string(), v.to_string())) {
            panic!("kcat read {k} twice: {old:?} and ({p}, {v})");
        }
    }
    let missing: Vec<String> = (0..INTEROP_N)
        .map(|i| format!("k{i}"))
        .filter(|k| !got.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "kcat: {} of {INTEROP_N} records not read back, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (k, (_, v)) in &got {
        assert_eq!(v, &format!("i-kcat-{}", &k[1..]), "kcat: {k}");
    }
    let parts: HashSet<&str> = got.values().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        parts.len(),
        3,
        "kcat's records spread over 3 partitions: {parts:?}"
    );

    // kafka-python through broker 2 only, confluent-kafka through broker 3.
    let out = cluster.py(&b2, &script(KAFKA_PYTHON, "i-kafka-python", false));
    assert_eq!(out, format!("{INTEROP_N} [0, 1, 2]"), "kafka-python");
    let out = cluster.py(&b3, &script(CONFLUENT_KAFKA, "i-confluent", false));
    assert_eq!(out, format!("{INTEROP_N} [0, 1, 2]"), "confluent-kafka");

    // Every partition of every topic is replicated three times, whole.
    for topic in ["i-kcat", "i-kafka-python", "i-confluent"] {
        for p in 0..3 {
            for (n, v) in cluster.views(topic, p) {
                let s = v.unwrap_or_else(|e| panic!("{topic}-{p} from broker {n}: {e}"));
                let mut replicas = s.replicas.clone();
                replicas.sort_unstable();
                assert_eq!(
                    (replicas, s.isr.clone()),
                    (vec![1, 2, 3], vec![1, 2, 3]),
                    "{topic}-{p} as broker {n} shows it: {s}"
                );
            }
        }
    }
}

/// ElectLeaders through confluent-kafka's AdminClient: after its preferred
/// replica stopped (SIGTERM) and came back, a partition is led by another
/// broker; a preferred election gives it back, and a second one is not
/// needed.
#[test]
fn a_preferred_leader_election_gives_the_leadership_back() {
    let _serial = serial();
    const TOPIC: &str = "pref";
    let mut cluster = Cluster::new(3, &[]);
    let all = cluster.nodes();
    cluster.create_topic(TOPIC, 1, 3, &[]);
    let first = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    let preferred = first.replicas[0];
    assert_eq!(
        first.leader, preferred,
        "a new partition is led by its first replica"
    );
    assert!(
        cluster.stop(preferred),
        "broker {preferred} stops on SIGTERM"
    );
    cluster.start(preferred);
    assert!(
        wait_for(Duration::from_secs(45), || cluster
            .isr_everywhere(TOPIC, 0, &all)),
        "broker {preferred} back in the ISR\n{}",
        cluster.describe(TOPIC, 0)
    );
    let moved = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    assert_ne!(
        moved.leader, preferred,
        "the leadership moved away: {moved}"
    );
    let elect = format!(
        r#"
from confluent_kafka import TopicPartition, ElectionType
from confluent_kafka.admin import AdminClient
a = AdminClient({{'bootstrap.servers': BROKER}})
def elect():
    f = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition('{TOPIC}', 0)])
    try:
        r = f.result(timeout=30)
        e = r[TopicPartition('{TOPIC}', 0)]
        return 'ok' if e is None else e.name()
    except Exception as e:
        return 'failed: %r' % (e,)
print(elect(), elect())
"#
    );
    let answers = cluster.py(&cluster.bootstrap(), &elect);
    assert!(
        answers.starts_with("ok ") && answers.contains("ELECTION_NOT_NEEDED"),
        "first a new leader, then not needed: {answers}\n{}",
        cluster.describe(TOPIC, 0)
    );
    assert!(
        wait_for(Duration::from_secs(10), || cluster
            .agreed(TOPIC, 0)
            .is_some_and(
                |s| s.leader == preferred && s.leader_epoch > moved.leader_epoch
            )),
        "broker {preferred} leads again, at a new epoch\n{}",
        cluster.describe(TOPIC, 0)
    );
    // It takes writes as the leader.
    let v = "after-election";
    cluster.produce_acked(TOPIC, 0, v, v, Duration::from_secs(20));
}

/// Kafka's automatic leader rebalance: with the imbalance checked every
/// second, a preferred replica that stopped (SIGTERM) and came back leads
/// its partition again without anyone asking.
#[test]
fn leaderships_return_to_preferred_replicas_on_their_own() {
    let _serial = serial();
    const TOPIC: &str = "auto";
    let mut cluster = Cluster::new(3, &["--leader-imbalance-check-interval-ms", "1000"]);
    let all = cluster.nodes();
    cluster.create_topic(TOPIC, 1, 3, &[]);
    let first = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    let preferred = first.replicas[0];
    assert!(
        cluster.stop(preferred),
        "broker {preferred} stops on SIGTERM"
    );
    let moved = cluster.wait_agreed(TOPIC, 0, Duration::from_secs(10));
    assert_ne!(
        moved.leader, preferred,
        "the leadership moved away: {moved}"
    );
    cluster.start(preferred);
    assert!(
        wait_for(Duration::from_secs(45), || cluster
            .isr_everywhere(TOPIC, 0, &all)),
        "broker {preferred} back in the ISR\n{}",
        cluster.describe(TOPIC, 0)
    );
    assert!(
        wait_for(Duration::from_secs(20), || cluster
            .agreed(TOPIC, 0)
            .is_some_and(|s| s.leader == preferred)),
        "broker {preferred} does not lead its partition again\n{}",
        cluster.describe(TOPIC, 0)
    );
    let v = "after-rebalance";
    cluster.produce_acked(TOPIC, 0, v, v, Duration::from_secs(20));
}
