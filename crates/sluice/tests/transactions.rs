//! Kafka transactions end to end (issue 16), with real clients against real
//! brokers: the transaction coordinator (InitProducerId with a
//! transactional id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn), its markers, and what consumers see.
//!
//! - librdkafka (the rdkafka crate): a committed transaction's records are
//!   visible to read_committed consumers, an aborted one's only to
//!   read_uncommitted ones, and an open one holds the last stable offset;
//!   offsets sent with `send_offsets_to_transaction` become the group's
//!   committed offsets only when the transaction commits (OffsetFetch with
//!   require_stable answers UNSTABLE_OFFSET_COMMIT meanwhile).
//! - Zombie fencing: a Python producer (confluent-kafka, then kafka-python)
//!   with a transaction open, in its own process, is fenced by a second
//!   producer with the same transactional id; its commit fails, fenced, and
//!   none of its records become visible.
//! - Timeouts: a transaction left open past its transaction.timeout.ms is
//!   aborted by the coordinator (epoch bumped), the last stable offset moves
//!   on; a timeout above --transaction-max-timeout-ms is refused.
//! - confluent-kafka and kafka-python transactional producers
//!   (scripts/txn_clients.py, driven step by step): the same checks.
//! - A three-broker cluster: commits and aborts over an RF3 topic's
//!   partitions, with the group's coordinator on another broker than the
//!   transaction's; FindCoordinator for a transactional id answers
//!   COORDINATOR_NOT_AVAILABLE while fewer brokers are alive than
//!   `__transaction_state`'s replication factor; a one-broker cluster runs
//!   transactions with `--transaction-state-log-replication-factor 1`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, InitProducerIdRequest, ListOffsetsRequest,
    OffsetFetchRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use support::cluster::{Cluster, Conn, err, wait_for};
use support::{Client, Server};

const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
/// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
/// CONCURRENT_TRANSACTIONS: ask again.
const COORDINATOR_RETRIABLE: [i16; 4] = [14, 15, 16, 51];

const T: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// librdkafka clients

/// Delivery failures of a producer (a transactional producer's records are
/// acknowledged before the transaction ends; a failure aborts it).
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<Vec<String>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0
                .lock()
                .expect("failures")
                .push(format!("{}-{}: {e}", m.topic(), m.partition()));
        }
    }
}

struct TxnProducer {
    p: BaseProducer<Failures>,
    failures: Failures,
}

impl TxnProducer {
    /// A transactional librdkafka producer, initialised (InitProducerId).
    fn new(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
        let p = TxnProducer::create(bootstrap, id, extra);
        p.p.init_transactions(T)
            .unwrap_or_else(|e| panic!("init_transactions for {id}: {e}"));
        p
    }

    fn create(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
        let failures = Failures::default();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", id)
            .set("linger.ms", "5")
            .set("reconnect.backoff.ms", "20")
            .set("reconnect.backoff.max.ms", "500");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        let p = config
            .create_with_context(failures.clone())
            .expect("transactional producer");
        TxnProducer { p, failures }
    }

    fn begin(&self) {
        self.p.begin_transaction().expect("begin_transaction");
    }

    /// Queues one record for `partition` (waiting while the queue is full).
    fn send(&self, topic: &str, partition: i32, key: &str, value: &str) {
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        loop {
            match self.p.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send {value:?} to {topic}-{partition}: {e}"),
            }
        }
    }

    /// Waits until every queued record is acknowledged, and asserts none
    /// failed.
    fn flush(&self) {
        self.p.flush(T).expect("flush");
        let failures = self.failures.0.lock().expect("failures");
        assert!(failures.is_empty(), "deliveries failed: {failures:?}");
    }

    fn commit(&self) {
        self.p.commit_transaction(T).expect("commit_transaction");
        self.flush();
    }

    fn abort(&self) {
        self.p.abort_transaction(T).expect("abort_transaction");
    }
}

/// Values of `topic`'s partitions 0..`partitions`, per partition in offset
/// order, as a librdkafka consumer at `isolation` reads them from the
/// beginning up to the end librdkafka reports for each partition (for
/// read_committed: the last stable offset; control records are never
/// handed out, aborted records are dropped by the client).
fn read_all(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<Vec<String>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "txn-test-reader")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = vec![Vec::new(); partitions as usize];
    let mut eof = vec![false; partitions as usize];
    let deadline = Instant::now() + T;
    while eof.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "{topic} ({isolation}): not every partition reached its end within {T:?}; \
             ends reached {eof:?}, read so far {out:?}"
        );
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                eof[p] = false;
                out[p].push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
            Some(Err(e)) => panic!("{topic} ({isolation}): consumer error {e}"),
        }
    }
    out
}

/// The values `prefix-<i>` for i in 0..count that go to `partition` of
/// `partitions` (i % partitions), in order.
fn values(prefix: &str, count: usize, partitions: i32, partition: i32) -> Vec<String> {
    (0..count)
        .filter(|i| (*i as i32) % partitions == partition)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

/// Per partition, the concatenation of `values` for each prefix.
fn expected(prefixes: &[&str], count: usize, partitions: i32) -> Vec<Vec<String>> {
    (0..partitions)
        .map(|p| {
            prefixes
                .iter()
                .flat_map(|prefix| values(prefix, count, partitions, p))
                .collect()
        })
        .collect()
}

/// Sends `prefix-<i>` (key `k<i>`) for i in 0..count to partition
/// i % partitions.
fn send_values(p: &TxnProducer, topic: &str, prefix: &str, count: usize, partitions: i32) {
    for i in 0..count {
        p.send(
            topic,
            i as i32 % partitions,
            &format!("k{i}"),
            &format!("{prefix}-{i}"),
        );
    }
}

/// The committed offsets of `group` for `topic`'s partitions 0..n, as
/// librdkafka's `committed_offsets` reads them (OffsetFetch; with
/// read_committed it asks for stable offsets and retries while a
/// transaction's are pending). -1: none.
fn rdkafka_committed(bootstrap: &str, group: &str, topic: &str, n: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, T).expect("committed offsets");
    (0..n)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Raw requests (over `support::cluster::Conn`, which fails instead of
// hanging)

fn conn(addr: SocketAddr) -> Conn {
    Conn::connect(addr, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"))
}

/// ListOffsets latest at `isolation` (0: read_uncommitted, the high
/// watermark; 1: read_committed, the last stable offset).
fn latest(c: &mut Conn, topic: &str, partition: i32, isolation: i8) -> Result<i64, String> {
    let mut lp = ListOffsetsPartition::default();
    lp.partition_index = partition;
    lp.timestamp = -1;
    lp.current_leader_epoch = -1;
    let mut lt = ListOffsetsTopic::default();
    lt.name = support::name(topic);
    lt.partitions = vec![lp];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = isolation;
    req.topics = vec![lt];
    let resp = c.call(5, &req)?;
    let p = &resp.topics[0].partitions[0];
    if p.error_code != 0 {
        return Err(format!(
            "ListOffsets {topic}-{partition} isolation {isolation}: {}",
            err(p.error_code)
        ));
    }
    Ok(p.offset)
}

/// (high watermark, last stable offset) of a partition, from its leader.
fn hw_lso(addr: SocketAddr, topic: &str, partition: i32) -> Result<(i64, i64), String> {
    let mut c = Conn::connect(addr, Duration::from_secs(5))?;
    Ok((
        latest(&mut c, topic, partition, 0)?,
        latest(&mut c, topic, partition, 1)?,
    ))
}

/// Waits until the last stable offset of each partition (its leader from
/// `leader`) is its high watermark: every transaction on it has ended and
/// its marker is written. Returns the high watermarks.
fn wait_stable(
    leader: impl Fn(i32) -> SocketAddr,
    topic: &str,
    partitions: i32,
    within: Duration,
) -> Vec<i64> {
    let mut last = Vec::new();
    let stable = wait_for(within, || {
        last = (0..partitions)
            .map(|p| hw_lso(leader(p), topic, p))
            .collect();
        last.iter().all(|r| matches!(r, Ok((hw, lso)) if hw == lso))
    });
    assert!(
        stable,
        "{topic}: the last stable offsets did not reach the high watermarks within \
         {within:?}: (high watermark, last stable offset) per partition: {last:?}"
    );
    last.into_iter().map(|r| r.expect("stable").0).collect()
}

/// OffsetFetch v7 of `group` for `topic`'s partitions 0..n: per partition
/// (error code, committed offset), or the request's error.
fn offset_fetch(
    addr: SocketAddr,
    group: &str,
    topic: &str,
    n: i32,
    require_stable: bool,
) -> Result<Vec<(i16, i64)>, String> {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = support::name(topic);
    t.partition_indexes = (0..n).collect();
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_string()));
    req.topics = Some(vec![t]);
    req.require_stable = require_stable;
    let resp = Conn::connect(addr, Duration::from_secs(5))?.call(7, &req)?;
    if resp.error_code != 0 {
        return Err(format!("OffsetFetch {group}: {}", err(resp.error_code)));
    }
    let mut out = vec![(-1, -1); n as usize];
    for topic in &resp.topics {
        for p in &topic.partitions {
            out[p.partition_index as usize] = (p.error_code, p.committed_offset);
        }
    }
    Ok(out)
}

/// FindCoordinator v3 for `key` (`key_type` 0: group, 1: transactional
/// id), asked of `addr` until it names one: the coordinator's node id.
fn find_coordinator(addr: SocketAddr, key: &str, key_type: i8) -> i32 {
    let mut req = FindCoordinatorRequest::default();
    req.key = StrBytes::from_string(key.to_string());
    req.key_type = key_type;
    let mut last = String::new();
    let found = wait_for(T, || match conn(addr).call(3, &req) {
        Ok(r) if r.error_code == 0 => {
            last = r.node_id.0.to_string();
            true
        }
        Ok(r) => {
            last = err(r.error_code);
            false
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(found, "FindCoordinator {key} (type {key_type}): {last}");
    last.parse().expect("node id")
}

/// DescribeTransactions v0 of one transactional id at its coordinator:
/// (state, producer id, producer epoch).
fn describe_txn(addr: SocketAddr, id: &str) -> (String, i64, i16) {
    let mut req = DescribeTransactionsRequest::default();
    req.transactional_ids = vec![TransactionalId(StrBytes::from_string(id.to_string()))];
    let resp = conn(addr)
        .call(0, &req)
        .unwrap_or_else(|e| panic!("DescribeTransactions {id}: {e}"));
    let s = &resp.transaction_states[0];
    assert_eq!(
        s.error_code,
        0,
        "DescribeTransactions {id}: {}",
        err(s.error_code)
    );
    (
        s.transaction_state.to_string(),
        s.producer_id.0,
        s.producer_epoch,
    )
}

/// InitProducerId v3 for a transactional id with `timeout_ms`, asked again
/// while the coordinator is not ready: the error code.
fn init_producer_id(addr: SocketAddr, id: &str, timeout_ms: i32) -> i16 {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(TransactionalId(StrBytes::from_string(id.to_string())));
    req.transaction_timeout_ms = timeout_ms;
    req.producer_id = (-1).into();
    req.producer_epoch = -1;
    let mut code = -1;
    let answered = wait_for(T, || {
        code = conn(addr).call(3, &req).map_or(-1, |r| r.error_code);
        code != -1 && !COORDINATOR_RETRIABLE.contains(&code)
    });
    assert!(
        answered,
        "InitProducerId {id}: no answer but {} for 30 s",
        err(code)
    );
    code
}

fn create_topic(server: &Server, topic: &str, partitions: i32) {
    let mut c = Client::connect(server.addr);
    assert_eq!(
        support::create_topic(&mut c, topic, partitions),
        0,
        "create {topic}"
    );
}

// ---------------------------------------------------------------------------
// Python clients, step by step

/// scripts/txn_clients.py (or another script) running in the interop venv,
/// its stdout read line by line.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    fn start(args: &[&str]) -> Script {
        let python = support::python();
        assert!(
            python.exists(),
            "{} missing: run scripts/test.sh, which creates the interop venv",
            python.display()
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/txn_clients.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut buf);
            sink.lock().expect("stderr").push_str(&buf);
        });
        Script {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout so far:\n{}\nstderr:\n{}",
            self.seen.join("\n"),
            self.stderr.lock().expect("stderr")
        )
    }

    /// The next line, which must start with `prefix`; returns the rest.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => {
                self.seen.push(line.clone());
                match line.strip_prefix(prefix) {
                    Some(rest) => rest.trim().to_string(),
                    None => panic!(
                        "expected a line {prefix:?}, got {line:?}\n{}",
                        self.output()
                    ),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line {prefix:?} within 60 s\n{}", self.output())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                // The stderr reader finishes once the process is gone.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "the script ended ({status:?}) before a line {prefix:?}\n{}",
                    self.output()
                )
            }
        }
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to the script");
        stdin.flush().expect("flush");
    }

    /// Waits (up to 60 s) for a successful exit.
    fn finish(mut self) {
        self.stdin.take();
        let ok = wait_for(Duration::from_secs(60), || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if !ok {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(200));
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        assert!(
            status.success(),
            "the script failed ({status}{})\n{}",
            if ok { "" } else { ", killed after 60 s" },
            self.output()
        );
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// librdkafka

#[test]
fn librdkafka_commit_shows_records_and_abort_hides_them_from_read_committed() {
    const TOPIC: &str = "rd-txn";
    const P: i32 = 2;
    const N: usize = 100;
    let server = Server::start(&[]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, TOPIC, P);
    let p = TxnProducer::new(&bootstrap, "rd-txn-id", &[]);

    // An open transaction: its records are in the log, acknowledged, but
    // the last stable offset stays where it began.
    p.begin();
    send_values(&p, TOPIC, "c1", N, P);
    p.flush();
    for part in 0..P {
        assert_eq!(
            hw_lso(server.addr, TOPIC, part),
            Ok((N as i64 / 2, 0)),
            "partition {part}: (high watermark, last stable offset) with the transaction open"
        );
    }
    assert_eq!(
        read_all(&bootstrap, TOPIC, P, "read_committed"),
        vec![Vec::<String>::new(); P as usize],
        "read_committed sees nothing of an open transaction"
    );
    p.commit();

    p.begin();
    send_values(&p, TOPIC, "a", N, P);
    p.flush();
    p.abort();

    p.begin();
    send_values(&p, TOPIC, "c2", N, P);
    p.commit();

    // Each transaction: N/2 records and a marker per partition.
    let ends = wait_stable(|_| server.addr, TOPIC, P, Duration::from_secs(10));
    assert_eq!(ends, vec![3 * (N as i64 / 2 + 1); P as usize]);
    assert_eq!(
        read_all(&bootstrap, TOPIC, P, "read_committed"),
        expected(&["c1", "c2"], N, P),
        "read_committed: the committed transactions' records, exactly"
    );
    assert_eq!(
        read_all(&bootstrap, TOPIC, P, "read_uncommitted"),
        expected(&["c1", "a", "c2"], N, P),
        "read_uncommitted: the aborted records too"
    );
}

#[test]
fn librdkafka_offsets_sent_to_a_transaction_commit_only_with_it() {
    const IN: &str = "rd-offsets-in";
    const OUT: &str = "rd-offsets-out";
    const GROUP: &str = "rd-offsets-group";
    let server = Server::start(&[]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, IN, 1);
    create_topic(&server, OUT, 1);
    let p = TxnProducer::new(&bootstrap, "rd-offsets-id", &[]);
    p.begin();
    send_values(&p, IN, "in", 30, 1);
    p.commit();

    // The group's metadata from a consumer that has not joined (no
    // generation): the offsets are committed for the group as a whole.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .create()
        .expect("consumer");
    let meta = consumer.group_metadata().expect("group metadata");
    let offsets = |o: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(IN, 0, Offset::Offset(o))
            .expect("offset");
        tpl
    };
    let fetch = |stable| offset_fetch(server.addr, GROUP, IN, 1, stable).expect("OffsetFetch")[0];

    p.begin();
    p.send(OUT, 0, "o", "out-10");
    p.p.send_offsets_to_transaction(&offsets(10), &meta, T)
        .expect("send_offsets_to_transaction");
    p.flush();
    assert_eq!(
        fetch(false),
        (0, -1),
        "a pending transactional offset is not the group's committed offset"
    );
    assert_eq!(
        fetch(true).0,
        UNSTABLE_OFFSET_COMMIT,
        "OffsetFetch with require_stable while the transaction's offsets are pending"
    );
    p.commit();
    assert!(
        wait_for(Duration::from_secs(10), || fetch(true) == (0, 10)),
        "committed with the transaction: OffsetFetch(require_stable) answers {:?}",
        fetch(true)
    );
    assert_eq!(rdkafka_committed(&bootstrap, GROUP, IN, 1), vec![10]);

    p.begin();
    p.send(OUT, 0, "o", "out-20");
    p.p.send_offsets_to_transaction(&offsets(20), &meta, T)
        .expect("send_offsets_to_transaction");
    p.flush();
    assert_eq!(fetch(false), (0, 10), "still the last committed offset");
    assert_eq!(fetch(true).0, UNSTABLE_OFFSET_COMMIT);
    p.abort();
    assert!(
        wait_for(Duration::from_secs(10), || fetch(true) == (0, 10)),
        "aborted: the offset stays 10, OffsetFetch(require_stable) answers {:?}",
        fetch(true)
    );
    assert_eq!(rdkafka_committed(&bootstrap, GROUP, IN, 1), vec![10]);

    wait_stable(|_| server.addr, OUT, 1, Duration::from_secs(10));
    assert_eq!(
        read_all(&bootstrap, OUT, 1, "read_committed"),
        vec![vec!["out-10".to_string()]]
    );
    assert_eq!(
        read_all(&bootstrap, OUT, 1, "read_uncommitted"),
        vec![vec!["out-10".to_string(), "out-20".to_string()]]
    );
}

// ---------------------------------------------------------------------------
// Fencing

/// A `client` (Python, its own process) producer with a transaction open
/// is fenced by a librdkafka producer with the same transactional id: its
/// commit fails, `fenced` holds for what it reported (the script's result
/// line), and none of its records become visible.
fn zombie(client: &str, fenced: fn(&serde_json::Value) -> bool) {
    let topic = format!("zombie-{client}");
    let id = format!("zombie-id-{client}");
    let server = Server::start(&[]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, &topic, 1);

    // The zombie: a transaction open with 10 records.
    let mut zombie = Script::start(&["zombie", client, &bootstrap, &topic, &id]);
    zombie.expect("produced");
    assert_eq!(hw_lso(server.addr, &topic, 0), Ok((10, 0)));

    // Its successor: InitProducerId bumps the epoch and aborts the
    // zombie's open transaction first.
    let p = TxnProducer::new(&bootstrap, &id, &[]);
    assert_eq!(
        wait_stable(|_| server.addr, &topic, 1, Duration::from_secs(10)),
        vec![11],
        "{client}: the zombie's transaction aborted: its 10 records and an ABORT marker"
    );

    // The zombie goes on: its next produce and its commit are refused.
    zombie.go();
    let result: serde_json::Value =
        serde_json::from_str(&zombie.expect("result ")).expect("result json");
    zombie.finish();
    assert!(
        result["stage"] == "commit" && fenced(&result),
        "{client}: the zombie's commit must fail, fenced; it got {result}"
    );

    p.begin();
    send_values(&p, &topic, "new", 10, 1);
    p.commit();
    wait_stable(|_| server.addr, &topic, 1, Duration::from_secs(10));
    assert_eq!(
        read_all(&bootstrap, &topic, 1, "read_committed"),
        expected(&["new"], 10, 1),
        "{client}: none of the zombie's records are visible"
    );
    // Its first records are in the log, aborted; its later ones were
    // refused and never written.
    assert_eq!(
        read_all(&bootstrap, &topic, 1, "read_uncommitted"),
        expected(&["zombie-1", "new"], 10, 1),
        "{client}"
    );
}

#[test]
fn a_second_producer_fences_a_confluent_kafka_zombie_whose_records_never_show() {
    // librdkafka reports fencing as the fatal _FENCED (from the broker's
    // PRODUCER_FENCED or INVALID_PRODUCER_EPOCH).
    zombie("confluent-kafka", |r| {
        r["fatal"] == true
            && ["_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"]
                .contains(&r["code"].as_str().unwrap_or_default())
    });
}

#[test]
fn a_second_producer_fences_a_kafka_python_zombie_whose_records_never_show() {
    // kafka-python, as Java's client, takes INVALID_PRODUCER_EPOCH on a
    // produce as a reason to bump its epoch (KIP-360), which the
    // coordinator refuses with PRODUCER_FENCED: the commit fails with that
    // or with the bump under way, and the producer ends in the fatal
    // ProducerFencedError state either way.
    zombie("kafka-python", |r| {
        r["code"] == "ProducerFencedError"
            || r["abort_str"]
                .as_str()
                .is_some_and(|s| s.contains("ProducerFencedError"))
    });
}

// ---------------------------------------------------------------------------
// Timeouts

#[test]
fn a_transaction_left_open_past_its_timeout_is_aborted_and_the_lso_moves_on() {
    const TOPIC: &str = "abandoned";
    let server = Server::start(&[
        "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
        "200",
    ]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, TOPIC, 1);

    // A producer that opens a transaction and then hangs (never polls,
    // never ends it).
    let abandoned = TxnProducer::new(
        &bootstrap,
        "abandoned-id",
        &[("transaction.timeout.ms", "1000")],
    );
    abandoned.begin();
    send_values(&abandoned, TOPIC, "abandoned", 10, 1);
    abandoned.flush();
    let opened = Instant::now();
    let (state, producer_id, epoch) = describe_txn(server.addr, "abandoned-id");
    let (hw, lso) = hw_lso(server.addr, TOPIC, 0).expect("offsets");
    let checked = opened.elapsed();
    if checked < Duration::from_millis(800) {
        assert_eq!(state, "Ongoing");
        assert_eq!(
            (hw, lso),
            (10, 0),
            "the open transaction holds the last stable offset"
        );
    }

    // Another producer commits after it on the same partition.
    let later = TxnProducer::new(&bootstrap, "later-id", &[]);
    later.begin();
    send_values(&later, TOPIC, "later", 10, 1);
    later.commit();

    // The coordinator aborts the abandoned one (1 s timeout, checked every
    // 200 ms): the last stable offset reaches the end.
    let ends = wait_stable(|_| server.addr, TOPIC, 1, Duration::from_secs(15));
    let aborted_after = opened.elapsed();
    assert_eq!(
        ends,
        vec![22],
        "10 abandoned, 10 later, one marker for each"
    );
    // The markers are written before the coordinator records the end.
    let mut described = describe_txn(server.addr, "abandoned-id");
    assert!(
        wait_for(Duration::from_secs(10), || {
            described = describe_txn(server.addr, "abandoned-id");
            described.0 == "CompleteAbort"
        }),
        "the abandoned transaction is not CompleteAbort: {described:?}"
    );
    assert_eq!(
        (described.1, described.2),
        (producer_id, epoch + 1),
        "aborted by the coordinator, with the epoch bumped"
    );
    assert_eq!(
        read_all(&bootstrap, TOPIC, 1, "read_committed"),
        expected(&["later"], 10, 1),
        "the abandoned records never show under read_committed"
    );
    assert_eq!(
        read_all(&bootstrap, TOPIC, 1, "read_uncommitted"),
        expected(&["abandoned", "later"], 10, 1)
    );
    // The hung producer wakes up: its transaction is gone.
    let commit = abandoned.p.commit_transaction(T);
    assert!(
        commit.is_err(),
        "the coordinator aborted this transaction, yet its commit succeeded"
    );
    eprintln!(
        "abandoned transaction: aborted within {aborted_after:?} of its last record \
         (timeout 1 s; state checked at {checked:?}); its late commit: {}",
        commit.err().map_or_else(String::new, |e| e.to_string())
    );
}

#[test]
fn a_transaction_timeout_above_the_maximum_is_refused() {
    let server = Server::start(&["--transaction-max-timeout-ms", "60000"]);
    let bootstrap = server.addr.to_string();
    assert_eq!(
        init_producer_id(server.addr, "raw-too-long", 60_001),
        INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        init_producer_id(server.addr, "raw-at-the-max", 60_000),
        0,
        "the maximum itself is allowed"
    );
    let p = TxnProducer::create(
        &bootstrap,
        "rd-too-long",
        &[("transaction.timeout.ms", "120000")],
    );
    match p.p.init_transactions(T) {
        Err(KafkaError::Transaction(e)) => assert_eq!(
            e.code(),
            RDKafkaErrorCode::InvalidTransactionTimeout,
            "librdkafka's init_transactions: {e}"
        ),
        other => panic!("init_transactions with a 120 s timeout (max 60 s): {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Python clients

/// The commit-abort scenario of scripts/txn_clients.py with `client`.
fn python_commit_abort(client: &str) {
    const P: i32 = 3;
    const N: usize = 60;
    let topic = format!("py-txn-{client}");
    let server = Server::start(&[]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, &topic, P);
    let mut script = Script::start(&[
        "commit-abort",
        client,
        &bootstrap,
        &topic,
        &format!("{client}-txn"),
        &P.to_string(),
        &N.to_string(),
    ]);
    script.expect("open");
    for part in 0..P {
        assert_eq!(
            hw_lso(server.addr, &topic, part),
            Ok((N as i64 / 3, 0)),
            "{client}: partition {part} with the first transaction open"
        );
    }
    assert_eq!(
        read_all(&bootstrap, &topic, P, "read_committed"),
        vec![Vec::<String>::new(); P as usize],
        "{client}: read_committed sees nothing of an open transaction"
    );
    script.go();
    script.expect("committed 1");
    script.expect("aborted 2");
    script.expect("committed 3");
    script.finish();
    let ends = wait_stable(|_| server.addr, &topic, P, Duration::from_secs(10));
    assert_eq!(ends, vec![3 * (N as i64 / 3 + 1); P as usize]);
    let tag = |t: &str| format!("{client}-{t}");
    assert_eq!(
        read_all(&bootstrap, &topic, P, "read_committed"),
        expected(&[&tag("c1"), &tag("c2")], N, P),
        "{client}: read_committed"
    );
    assert_eq!(
        read_all(&bootstrap, &topic, P, "read_uncommitted"),
        expected(&[&tag("c1"), &tag("a"), &tag("c2")], N, P),
        "{client}: read_uncommitted"
    );
}

/// The offsets scenario of scripts/txn_clients.py with `client`.
fn python_offsets(client: &str) {
    let (input, out, group) = (
        format!("py-in-{client}"),
        format!("py-out-{client}"),
        format!("py-group-{client}"),
    );
    let server = Server::start(&[]);
    let bootstrap = server.addr.to_string();
    create_topic(&server, &input, 1);
    create_topic(&server, &out, 1);
    let fetch =
        |stable| offset_fetch(server.addr, &group, &input, 1, stable).expect("OffsetFetch")[0];
    let mut script = Script::start(&[
        "offsets",
        client,
        &bootstrap,
        &input,
        &out,
        &group,
        &format!("{client}-offsets"),
    ]);
    script.expect("pending 10");
    assert_eq!(fetch(false), (0, -1), "{client}: pending, not committed");
    assert_eq!(fetch(true).0, UNSTABLE_OFFSET_COMMIT, "{client}");
    script.go();
    script.expect("committed 10");
    assert!(
        wait_for(Duration::from_secs(10), || fetch(true) == (0, 10)),
        "{client}: committed with the transaction, yet OffsetFetch answers {:?}",
        fetch(true)
    );
    assert_eq!(rdkafka_committed(&bootstrap, &group, &input, 1), vec![10]);
    script.go();
    script.expect("pending 20");
    assert_eq!(fetch(false), (0, 10), "{client}");
    assert_eq!(fetch(true).0, UNSTABLE_OFFSET_COMMIT, "{client}");
    script.go();
    script.expect("aborted 20");
    script.finish();
    assert!(
        wait_for(Duration::from_secs(10), || fetch(true) == (0, 10)),
        "{client}: aborted, yet OffsetFetch answers {:?}",
        fetch(true)
    );
    assert_eq!(rdkafka_committed(&bootstrap, &group, &input, 1), vec![10]);
    wait_stable(|_| server.addr, &out, 1, Duration::from_secs(10));
    assert_eq!(
        read_all(&bootstrap, &out, 1, "read_committed"),
        vec![vec![format!("{client}-offsets-10")]]
    );
    assert_eq!(
        read_all(&bootstrap, &out, 1, "read_uncommitted"),
        vec![vec![
            format!("{client}-offsets-10"),
            format!("{client}-offsets-20")
        ]]
    );
}

#[test]
fn confluent_kafka_commit_shows_records_and_abort_hides_them() {
    python_commit_abort("confluent-kafka");
}

#[test]
fn confluent_kafka_offsets_commit_only_with_the_transaction() {
    python_offsets("confluent-kafka");
}

#[test]
fn kafka_python_commit_shows_records_and_abort_hides_them() {
    python_commit_abort("kafka-python");
}

#[test]
fn kafka_python_offsets_commit_only_with_the_transaction() {
    python_offsets("kafka-python");
}

// ---------------------------------------------------------------------------
// A cluster

#[test]
fn three_brokers_commit_and_abort_over_replicated_partitions() {
    const TOPIC: &str = "cl-txn";
    const IN: &str = "cl-in";
    const P: i32 = 4;
    const N: usize = 40;
    const ID: &str = "cl-txn-id";
    let cluster = Cluster::new(3, &[]);
    let bootstrap = cluster.bootstrap();
    cluster.create_topic(TOPIC, P, 3, &[("min.insync.replicas", "2")]);
    cluster.create_topic(IN, 1, 3, &[("min.insync.replicas", "2")]);
    let p = TxnProducer::new(&bootstrap, ID, &[]);

    // A group whose coordinator is not the transaction's: its offsets reach
    // it by TxnOffsetCommit, the markers by WriteTxnMarkers between brokers.
    let txn_coordinator = find_coordinator(cluster.addr(1), ID, 1);
    let group = (0..50)
        .map(|i| format!("cl-group-{i}"))
        .find(|g| find_coordinator(cluster.addr(1), g, 0) != txn_coordinator)
        .expect("a group coordinated elsewhere");
    let group_coordinator = find_coordinator(cluster.addr(1), &group, 0);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let meta = consumer.group_metadata().expect("group metadata");

    // Rounds 0, 2, 4 commit; 1, 3, 5 abort. Each sends the group's offset
    // (round + 1) * 5 for cl-in-0.
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for round in 0..6 {
        let prefix = format!("r{round}");
        p.begin();
        send_values(&p, TOPIC, &prefix, N, P);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(IN, 0, Offset::Offset((round + 1) * 5))
            .expect("offset");
        p.p.send_offsets_to_transaction(&tpl, &meta, T)
            .expect("send_offsets_to_transaction");
        p.flush();
        if round % 2 == 0 {
            p.commit();
            committed.push(prefix.clone());
        } else {
            p.abort();
        }
        all.push(prefix);
    }
    let leader = |part: i32| {
        let node = cluster
            .metadata_leader(TOPIC, part)
            .unwrap_or_else(|| panic!("no leader for {TOPIC}-{part}"));
        cluster.addr(node)
    };
    let ends = wait_stable(leader, TOPIC, P, Duration::from_secs(20));
    assert_eq!(ends, vec![6 * (N as i64 / P as i64 + 1); P as usize]);
    let committed: Vec<&str> = committed.iter().map(String::as_str).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(
        read_all(&bootstrap, TOPIC, P, "read_committed"),
        expected(&committed, N, P),
        "read_committed: exactly the committed rounds"
    );
    assert_eq!(
        read_all(&bootstrap, TOPIC, P, "read_uncommitted"),
        expected(&all, N, P)
    );
    let coordinator = cluster.addr(group_coordinator);
    let mut last = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            last = offset_fetch(coordinator, &group, IN, 1, true).ok();
            last == Some(vec![(0, 25)])
        }),
        "the group's offset must be round 4's, 25 (round 5's 30 was aborted); \
         OffsetFetch(require_stable) at broker {group_coordinator}: {last:?}"
    );
    assert_eq!(rdkafka_committed(&bootstrap, &group, IN, 1), vec![25]);
    let by: BTreeMap<&str, i32> = [("txn", txn_coordinator), ("group", group_coordinator)]
        .into_iter()
        .collect();
    eprintln!("coordinators: {by:?}");
}

/// FindCoordinator v3 for a transactional id, asked of `addr` once: its
/// error code.
fn txn_coordinator_error(addr: SocketAddr, id: &str) -> Result<i16, String> {
    let mut req = FindCoordinatorRequest::default();
    req.key = StrBytes::from_string(id.to_string());
    req.key_type = 1;
    Ok(Conn::connect(addr, Duration::from_secs(5))?
        .call(3, &req)?
        .error_code)
}

#[test]
fn the_transaction_state_topic_waits_for_its_replication_factor() {
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    // Three brokers, one down before any transactional id is used: the
    // replication factor of __transaction_state (3) cannot be met yet.
    let mut cluster = Cluster::new(3, &[]);
    cluster.kill(3);
    assert!(
        wait_for(Duration::from_secs(20), || [1, 2].iter().all(|&n| cluster
            .metadata_from(n, Some(&[]))
            .is_ok_and(|m| m.brokers.len() == 2))),
        "brokers 1 and 2 still list broker 3 after its lease"
    );
    for node in [1, 2] {
        assert_eq!(
            txn_coordinator_error(cluster.addr(node), "waits-id"),
            Ok(COORDINATOR_NOT_AVAILABLE),
            "broker {node}, with 2 of the 3 brokers __transaction_state needs alive"
        );
    }
    cluster.start(3);
    let node = find_coordinator(cluster.addr(1), "waits-id", 1);
    assert!((1..=3).contains(&node), "coordinator {node}");
    let p = TxnProducer::new(&cluster.bootstrap(), "waits-id", &[]);
    cluster.create_topic("waits", 1, 3, &[]);
    p.begin();
    send_values(&p, "waits", "w", 5, 1);
    p.commit();
    let leader = |_| cluster.addr(cluster.metadata_leader("waits", 0).expect("leader"));
    wait_stable(leader, "waits", 1, Duration::from_secs(20));
    assert_eq!(
        read_all(&cluster.bootstrap(), "waits", 1, "read_committed"),
        expected(&["w"], 5, 1)
    );
}

#[test]
fn a_one_broker_cluster_runs_transactions_with_replication_factor_one() {
    let cluster = Cluster::new(1, &["--transaction-state-log-replication-factor", "1"]);
    let bootstrap = cluster.bootstrap();
    cluster.create_topic("one", 2, 1, &[]);
    let p = TxnProducer::new(&bootstrap, "one-id", &[]);
    p.begin();
    send_values(&p, "one", "c", 20, 2);
    p.commit();
    p.begin();
    send_values(&p, "one", "a", 20, 2);
    p.flush();
    p.abort();
    wait_stable(|_| cluster.addr(1), "one", 2, Duration::from_secs(20));
    assert_eq!(
        read_all(&bootstrap, "one", 2, "read_committed"),
        expected(&["c"], 20, 2)
    );
    assert_eq!(
        read_all(&bootstrap, "one", 2, "read_uncommitted"),
        expected(&["c", "a"], 20, 2)
    );
}
