//! Exactly-once consume-transform-produce under SIGKILL (issue 16).
//!
//! An input topic of N numbered records (value "<i>", written first by an
//! idempotent acks=all producer) is processed by `scripts/eos_processor.py`
//! (confluent-kafka, its own process): a read_committed member of a group
//! that writes "out-<i>" to an output topic and commits its input offsets
//! with `send_offsets_to_transaction` in the same transaction. The test
//! SIGKILLs the processor `SLUICE_EOS_PROCESSOR_KILLS` times (default 20)
//! and a broker `SLUICE_EOS_BROKER_KILLS` times (default 10), interleaved at
//! random moments (seed `SLUICE_EOS_SEED`, printed), restarting each; then
//! lets the processor finish and reads the output topic with a
//! read_committed librdkafka consumer: every "out-<i>" exactly once, and
//! the group's committed offsets are the input's ends.
//!
//! Once on one broker (restarted on the same port and data directory) and
//! once on a three-broker cluster (RF3 topics, min.insync.replicas 2; one
//! broker killed at a time, and back in every ISR before the next).
//! `SLUICE_EOS_RECORDS` sets N (default 20,000 on one broker, 10,000 on
//! the cluster).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use support::Server;
use support::cluster::{Cluster, Conn, err, fixed_port, next_random, tail, wait_for};

const IN: &str = "eos-in";
const OUT: &str = "eos-out";
const GROUP: &str = "eos-group";
const TXN_ID: &str = "eos-processor";
const PARTITIONS: i32 = 3;
/// An incarnation that neither gets ready nor commits for this long, with
/// work left, has stalled (it commits every ~100 ms; a broker restart
/// costs it a few seconds).
const STALL: Duration = Duration::from_secs(30);

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

// ---------------------------------------------------------------------------
// The brokers under the processor

trait Brokers {
    fn bootstrap(&self) -> String;
    /// The leader of `topic`-`partition` now (waiting for one).
    fn leader(&self, topic: &str, partition: i32) -> SocketAddr;
    fn create_topic(&self, topic: &str, partitions: i32);
    /// SIGKILLs a broker, waits `down`, starts it again and waits until it
    /// serves; returns which broker it was.
    fn kill_and_restart(&mut self, rng: &mut u64, down: Duration) -> String;
    /// For failure messages.
    fn describe(&self) -> String;
}

/// One broker on a fixed port, restarted on the same data directory; its
/// log (stderr, appended across restarts) beside it.
struct Single {
    server: Option<Server>,
    dir: PathBuf,
    listen: String,
    args: Vec<String>,
    log: PathBuf,
    _temp: Files,
}

impl Single {
    fn start(args: &[&str]) -> Single {
        let temp = Files::new("sluice-eos-broker-");
        let dir = temp.path().join("data");
        let log = temp.path().join("broker.log");
        let listen = format!("127.0.0.1:{}", fixed_port());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut s = Single {
            server: None,
            dir,
            listen,
            args,
            log,
            _temp: temp,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let script = format!("exec \"$@\" 2>>'{}'", self.log.display());
        self.server = Some(Server::start_wrapped(
            &["sh", "-c", &script, "sh"],
            &self.dir,
            &self.listen,
            &args,
            &[],
        ));
    }

    fn addr(&self) -> SocketAddr {
        self.listen.parse().expect("listen address")
    }
}

impl Brokers for Single {
    fn bootstrap(&self) -> String {
        self.listen.clone()
    }

    fn leader(&self, _: &str, _: i32) -> SocketAddr {
        self.addr()
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        let mut c = support::Client::connect(self.addr());
        assert_eq!(
            support::create_topic(&mut c, topic, partitions),
            0,
            "create {topic}"
        );
    }

    fn kill_and_restart(&mut self, _: &mut u64, down: Duration) -> String {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
        std::thread::sleep(down);
        self.launch();
        "the broker".to_string()
    }

    fn describe(&self) -> String {
        format!(
            "one broker on {} ({}); the last lines of its log:\n{}",
            self.listen,
            self.dir.display(),
            tail(&self.log, 30)
        )
    }
}

struct Three {
    cluster: Cluster,
    topics: Vec<String>,
}

impl Three {
    /// Every partition of every topic (internal ones too) has a leader and
    /// its full replica set in the ISR, as a live broker sees it.
    fn all_in_sync(&self) -> Result<(), String> {
        let live = self.cluster.live();
        let node = *live.first().ok_or("no live broker")?;
        let m = self.cluster.metadata_from(node, None)?;
        for t in &m.topics {
            let name = t.name.as_ref().map_or("?", |n| n.0.as_str());
            if t.error_code != 0 {
                return Err(format!("{name}: {}", err(t.error_code)));
            }
            for p in &t.partitions {
                if p.leader_id.0 < 0 || p.isr_nodes.len() < p.replica_nodes.len() {
                    return Err(format!(
                        "{name}-{}: leader {} replicas {:?} isr {:?}",
                        p.partition_index,
                        p.leader_id.0,
                        p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Brokers for Three {
    fn bootstrap(&self) -> String {
        self.cluster.bootstrap()
    }

    fn leader(&self, topic: &str, partition: i32) -> SocketAddr {
        let mut leader = None;
        assert!(
            wait_for(Duration::from_secs(30), || {
                leader = self.cluster.metadata_leader(topic, partition);
                leader.is_some()
            }),
            "no leader for {topic}-{partition}\n{}",
            self.cluster.describe(topic, partition)
        );
        self.cluster.addr(leader.expect("leader"))
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster
            .create_topic(topic, partitions, 3, &[("min.insync.replicas", "2")]);
    }

    fn kill_and_restart(&mut self, rng: &mut u64, down: Duration) -> String {
        let nodes = self.cluster.nodes();
        let node = nodes[(next_random(rng) % nodes.len() as u64) as usize];
        self.cluster.kill(node);
        std::thread::sleep(down);
        self.cluster.start(node);
        // Back in every ISR before another broker may go.
        let mut last = String::new();
        let synced = wait_for(Duration::from_secs(90), || match self.all_in_sync() {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        assert!(
            synced,
            "after broker {node} restarted, not every partition was back in sync within \
             90 s: {last}\n{}",
            self.describe()
        );
        format!("broker {node}")
    }

    fn describe(&self) -> String {
        self.topics
            .iter()
            .map(|t| self.cluster.describe(t, 0))
            .collect::<Vec<_>>()
            .join("")
    }
}

// ---------------------------------------------------------------------------
// The processor

#[derive(Default)]
struct ProcLog {
    /// Set by the "ready" line.
    ready: bool,
    /// Commits this incarnation reported.
    commits: u64,
    /// The sum of the committed input offsets after its last commit.
    committed: i64,
    done: bool,
    /// When it started, got ready or last committed.
    progressed: Option<Instant>,
    /// Its last lines.
    lines: Vec<String>,
}

struct Processor {
    child: Child,
    log: Arc<Mutex<ProcLog>>,
}

impl Processor {
    /// Starts an incarnation; its stdout lines go to `files`/processor.log
    /// with the time since `t0`, its stderr to `files`/processor.stderr.
    fn start(bootstrap: &str, n: u64, rate: u64, files: &Path, t0: Instant) -> Processor {
        let python = support::python();
        assert!(
            python.exists(),
            "{} missing: run scripts/test.sh, which creates the interop venv",
            python.display()
        );
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/eos_processor.py");
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(files.join(name))
                .expect("processor log file")
        };
        let errors = open("processor.stderr");
        let mut lines_file = open("processor.log");
        let mut child = Command::new(python)
            .arg(script)
            .args([
                bootstrap,
                IN,
                OUT,
                GROUP,
                TXN_ID,
                &n.to_string(),
                &rate.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(errors)
            .spawn()
            .expect("start the processor");
        let stdout = child.stdout.take().expect("stdout");
        let log = Arc::new(Mutex::new(ProcLog {
            progressed: Some(Instant::now()),
            ..ProcLog::default()
        }));
        let sink = log.clone();
        let pid = child.id();
        let _ = writeln!(
            lines_file,
            "{:>9.3} [{pid}] started",
            t0.elapsed().as_secs_f64()
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(
                    lines_file,
                    "{:>9.3} [{pid}] {line}",
                    t0.elapsed().as_secs_f64()
                );
                let mut l = sink.lock().expect("log");
                if line.starts_with("ready") {
                    l.ready = true;
                    l.progressed = Some(Instant::now());
                } else if let Some(rest) = line.strip_prefix("commit ") {
                    l.commits += 1;
                    l.progressed = Some(Instant::now());
                    if let Some(sum) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                        l.committed = sum;
                    }
                } else if line.starts_with("done") {
                    l.done = true;
                }
                if l.lines.len() >= 20 {
                    l.lines.remove(0);
                }
                l.lines.push(line);
            }
        });
        Processor { child, log }
    }

    fn log(&self) -> MutexGuard<'_, ProcLog> {
        self.log.lock().expect("log")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Running, yet neither ready nor committing for `STALL`.
    fn stalled(&mut self) -> bool {
        self.exited().is_none() && self.log().progressed.is_some_and(|t| t.elapsed() > STALL)
    }

    /// SIGUSR1: the processor writes its threads' stacks to its stderr.
    fn dump_stacks(&mut self) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our child, not yet reaped (try_wait just
            // said it runs), so the pid is still its own.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Reading the topics

fn latest(addr: SocketAddr, topic: &str, partition: i32, isolation: i8) -> Result<i64, String> {
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
    let resp = Conn::connect(addr, Duration::from_secs(5))?.call(5, &req)?;
    let p = &resp.topics[0].partitions[0];
    if p.error_code != 0 {
        return Err(format!(
            "ListOffsets {topic}-{partition}: {}",
            err(p.error_code)
        ));
    }
    Ok(p.offset)
}

/// Waits until every partition of `topic` has its last stable offset at
/// its high watermark (no transaction open on it); returns the ends.
fn wait_stable(brokers: &dyn Brokers, topic: &str) -> Vec<i64> {
    let mut last = Vec::new();
    let stable = wait_for(Duration::from_secs(60), || {
        last = (0..PARTITIONS)
            .map(|p| {
                let leader = brokers.leader(topic, p);
                Ok::<_, String>((latest(leader, topic, p, 0)?, latest(leader, topic, p, 1)?))
            })
            .collect();
        last.iter().all(|r| matches!(r, Ok((hw, lso)) if hw == lso))
    });
    assert!(
        stable,
        "{topic}: (high watermark, last stable offset) per partition did not meet within \
         60 s: {last:?}\n{}",
        brokers.describe()
    );
    last.into_iter().map(|r| r.expect("stable").0).collect()
}

/// Every value of `topic` as a librdkafka consumer at `isolation` reads it
/// from the beginning to the end it reports for each partition.
fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eos-checker")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof = [false; PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(120);
    while eof.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "{topic} ({isolation}): not every partition reached its end within 120 s \
             (ends reached: {eof:?}, {} records read)",
            out.len()
        );
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                eof[m.partition() as usize] = false;
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
            Some(Err(e)) => panic!("{topic} ({isolation}): consumer error {e}"),
        }
    }
    out
}

fn committed_offsets(bootstrap: &str) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(IN, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("committed offsets");
    (0..PARTITIONS)
        .map(|p| match got.find_partition(IN, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

#[derive(Clone, Default)]
struct Failures(Arc<Mutex<Vec<String>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().expect("failures").push(e.to_string());
        }
    }
}

/// Writes "<i>" (key "<i>") to partition i % PARTITIONS of the input, for
/// i in 0..n, idempotent with acks=all.
fn write_input(bootstrap: &str, n: u64) {
    let failures = Failures::default();
    let p: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .create_with_context(failures.clone())
        .expect("producer");
    for i in 0..n {
        let v = i.to_string();
        let mut record = BaseRecord::to(IN)
            .partition((i % PARTITIONS as u64) as i32)
            .key(&v)
            .payload(&v);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send {v}: {e}"),
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush the input");
    let failures = failures.0.lock().expect("failures");
    assert!(failures.is_empty(), "input deliveries failed: {failures:?}");
}

// ---------------------------------------------------------------------------
// The run

/// A temp directory for logs (and the single broker's data), kept if the
/// test fails (or `SLUICE_EOS_KEEP` is set).
struct Files(Option<tempfile::TempDir>);

impl Files {
    fn new(prefix: &str) -> Files {
        Files(Some(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("tempdir"),
        ))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("dir").path()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if (std::thread::panicking() || std::env::var_os("SLUICE_EOS_KEEP").is_some())
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// A line in processor.log from the test itself.
fn note(files: &Files, t0: Instant, what: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.path().join("processor.log"))
    {
        let _ = writeln!(f, "{:>9.3} [test] {what}", t0.elapsed().as_secs_f64());
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    KillProcessor,
    KillBroker,
}

fn pick(rng: &mut u64, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + next_random(rng) % (hi - lo + 1))
}

/// Waits for `cond` on the processor's log, until it exits or stalls; true
/// if `cond` held.
fn wait_proc(p: &mut Processor, cond: impl Fn(&ProcLog) -> bool) -> bool {
    loop {
        if cond(&p.log()) {
            return true;
        }
        if p.exited().is_some() || p.stalled() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A stalled incarnation: its stacks to its stderr, and a description.
fn stall(p: &mut Processor, label: &str, event: usize, t0: Instant) -> String {
    p.dump_stacks();
    let what = format!(
        "{label}: before event {event}, {:.1} s into the run: the processor made no progress \
         for {STALL:?}; its last lines: {:?}",
        t0.elapsed().as_secs_f64(),
        p.log().lines
    );
    eprintln!("{what}");
    what
}

fn run(brokers: &mut dyn Brokers, n: u64, label: &str) {
    let processor_kills = knob("SLUICE_EOS_PROCESSOR_KILLS", 20);
    let broker_kills = knob("SLUICE_EOS_BROKER_KILLS", 10);
    let seed = knob(
        "SLUICE_EOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let mut rng = seed;
    eprintln!(
        "{label}: {n} records, {processor_kills} processor kills, {broker_kills} broker kills, \
         SLUICE_EOS_SEED={seed}"
    );
    let t0 = Instant::now();
    brokers.create_topic(IN, PARTITIONS);
    brokers.create_topic(OUT, PARTITIONS);
    let bootstrap = brokers.bootstrap();
    write_input(&bootstrap, n);
    let ends = wait_stable(brokers, IN);
    assert_eq!(
        ends.iter().sum::<i64>(),
        n as i64,
        "the input's ends {ends:?}"
    );
    eprintln!("{label}: input written in {:?}", t0.elapsed());

    let files = Files::new("sluice-eos-processor-");
    let stderr = files.path().join("processor.stderr");
    let mut events: Vec<Event> = (0..processor_kills)
        .map(|_| Event::KillProcessor)
        .chain((0..broker_kills).map(|_| Event::KillBroker))
        .collect();
    // Fisher-Yates.
    for i in (1..events.len()).rev() {
        let j = (next_random(&mut rng) % (i as u64 + 1)) as usize;
        events.swap(i, j);
    }

    // Paced so that the work outlasts the kills: 0.5 s of it per event
    // (each event costs more than that in waiting and restarting: about
    // half the input is processed while the kills go on).
    let rate = (n * 1000 / (events.len() as u64 * 500).max(1)).max(100);
    eprintln!("{label}: the processor is paced at {rate} records/s");
    let mut unexpected: Vec<String> = Vec::new();
    let mut incarnations = 1u32;
    let mut proc = Processor::start(&bootstrap, n, rate, files.path(), t0);
    let mut progress = Vec::new();
    // The most input the group is known to have committed, and how many
    // processor kills came before it was all done.
    let mut best = 0i64;
    let mut kills_with_work_left = 0u64;
    // Incarnations that stalled (killed and restarted; reported at the end).
    let mut stalls: Vec<String> = Vec::new();
    let t_kills = Instant::now();
    for (k, event) in events.iter().enumerate() {
        if let Some(status) = proc.exited() {
            let l = proc.log();
            if !(status.success() && l.done) {
                unexpected.push(format!(
                    "incarnation {incarnations} exited by itself ({status}); its last lines:\n  {}",
                    l.lines.join("\n  ")
                ));
            }
            drop(l);
            proc = Processor::start(&bootstrap, n, rate, files.path(), t0);
            incarnations += 1;
        }
        match event {
            Event::KillProcessor => {
                // Kill at a random moment: while it starts, while it works,
                // or just after a commit (inside the next transaction).
                match next_random(&mut rng) % 4 {
                    0 => std::thread::sleep(pick(&mut rng, 0, 1500)),
                    1 => {
                        let before = proc.log().commits;
                        if !wait_proc(&mut proc, |l| l.commits > before) && proc.stalled() {
                            stalls.push(stall(&mut proc, label, k, t0));
                        }
                        std::thread::sleep(pick(&mut rng, 0, 60));
                    }
                    _ => {
                        if !wait_proc(&mut proc, |l| l.ready) && proc.stalled() {
                            stalls.push(stall(&mut proc, label, k, t0));
                        }
                        std::thread::sleep(pick(&mut rng, 0, 800));
                    }
                }
                proc.kill();
                note(&files, t0, &format!("event {k}: SIGKILLed the processor"));
                let committed = proc.log().committed;
                best = best.max(committed);
                progress.push(committed);
                if best < n as i64 {
                    kills_with_work_left += 1;
                }
                proc = Processor::start(&bootstrap, n, rate, files.path(), t0);
                incarnations += 1;
            }
            Event::KillBroker => {
                std::thread::sleep(pick(&mut rng, 200, 1500));
                let down = pick(&mut rng, 0, 1000);
                best = best.max(proc.log().committed);
                note(&files, t0, &format!("event {k}: SIGKILL a broker"));
                let which = brokers.kill_and_restart(&mut rng, down);
                note(&files, t0, &format!("event {k}: {which} restarted"));
                eprintln!(
                    "{label}: event {k}: killed {which} (down {down:?}) with {best} of {n} \
                     input records committed"
                );
            }
        }
    }
    let kill_phase = t_kills.elapsed();
    let at_last_kill = best.max(proc.log().committed);
    eprintln!(
        "{label}: {} events in {kill_phase:?}; committed input offsets when each processor \
         incarnation was killed: {progress:?}",
        events.len()
    );

    // Let it finish, unpaced: one more SIGKILL (not counted) and a last
    // incarnation at full speed.
    proc.kill();
    note(
        &files,
        t0,
        "the kills are over: SIGKILLed the processor, unpaced from now on",
    );
    proc = Processor::start(&bootstrap, n, 0, files.path(), t0);
    incarnations += 1;
    let finish = Instant::now();
    loop {
        assert!(
            finish.elapsed() < Duration::from_secs(300),
            "{label}: the processor did not finish within 300 s of the last kill; its last \
             lines:\n  {}\nstderr:\n{}\n{}",
            proc.log().lines.join("\n  "),
            tail(&stderr, 30),
            brokers.describe()
        );
        if let Some(status) = proc.exited() {
            let l = proc.log();
            if status.success() && l.done {
                break;
            }
            unexpected.push(format!(
                "incarnation {incarnations} exited by itself ({status}); its last lines:\n  {}",
                l.lines.join("\n  ")
            ));
            drop(l);
            proc = Processor::start(&bootstrap, n, 0, files.path(), t0);
            incarnations += 1;
        } else if proc.stalled() {
            stalls.push(stall(&mut proc, label, events.len(), t0));
            proc.kill();
            note(&files, t0, "SIGKILLed the stalled processor");
            proc = Processor::start(&bootstrap, n, 0, files.path(), t0);
            incarnations += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{label}: finished {:?} after the kills ({} records were still to do then; {} \
         incarnations, {} stalled)",
        finish.elapsed(),
        n as i64 - at_last_kill,
        incarnations,
        stalls.len()
    );

    // Every transform exactly once.
    let out_ends = wait_stable(brokers, OUT);
    let committed = read_all(&bootstrap, OUT, "read_committed");
    let uncommitted = read_all(&bootstrap, OUT, "read_uncommitted").len();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for v in &committed {
        *counts.entry(v.clone()).or_insert(0) += 1;
    }
    let missing: Vec<u64> = (0..n)
        .filter(|i| !counts.contains_key(&format!("out-{i}")))
        .collect();
    let duplicated: Vec<(&String, &u32)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let strange: Vec<&String> = counts
        .keys()
        .filter(|v| {
            v.strip_prefix("out-")
                .and_then(|i| i.parse::<u64>().ok())
                .is_none_or(|i| i >= n)
        })
        .collect();
    eprintln!(
        "{label}: output: {} records read_committed, {uncommitted} read_uncommitted \
         (aborted transactions' records: {}), ends {out_ends:?}; {} s in all",
        committed.len(),
        uncommitted as i64 - committed.len() as i64,
        t0.elapsed().as_secs()
    );
    assert!(
        missing.is_empty() && duplicated.is_empty() && strange.is_empty(),
        "{label}: not exactly once: {} of {n} missing (first {:?}), {} duplicated (first \
         {:?}), {} unexpected values (first {:?}); {} records read_committed",
        missing.len(),
        &missing[..missing.len().min(10)],
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)],
        strange.len(),
        &strange[..strange.len().min(10)],
        committed.len()
    );
    assert_eq!(
        committed_offsets(&bootstrap),
        ends,
        "{label}: the group's committed offsets are the input's ends"
    );
    assert_eq!(
        kills_with_work_left, processor_kills,
        "{label}: only {kills_with_work_left} of the {processor_kills} processor kills came \
         while input was left to process (raise SLUICE_EOS_RECORDS)"
    );
    assert!(
        stalls.is_empty(),
        "{label}: {} processor incarnations stalled (no progress for {STALL:?} with the \
         brokers up; each was SIGKILLed and restarted, its stacks are in processor.stderr):\n{}",
        stalls.len(),
        stalls.join("\n")
    );
    assert!(
        unexpected.is_empty(),
        "{label}: the processor exited by itself {} times (only SIGKILL should stop it \
         before it is done): {}\nstderr:\n{}",
        unexpected.len(),
        unexpected.join("\n"),
        tail(&stderr, 30)
    );
}

#[test]
fn exactly_once_through_processor_and_broker_kills_on_one_broker() {
    let _serial = serial();
    let n = knob("SLUICE_EOS_RECORDS", 20_000);
    let mut brokers = Single::start(&["--group-initial-rebalance-delay-ms", "0"]);
    run(&mut brokers, n, "one broker");
}

#[test]
fn exactly_once_through_processor_and_broker_kills_on_three_brokers() {
    let _serial = serial();
    let n = knob("SLUICE_EOS_RECORDS", 10_000);
    let cluster = Cluster::new(3, &["--group-initial-rebalance-delay-ms", "0"]);
    let mut brokers = Three {
        cluster,
        topics: vec![IN.to_string(), OUT.to_string()],
    };
    run(&mut brokers, n, "three brokers");
}
