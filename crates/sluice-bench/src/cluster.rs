//! `sluice bench cluster`: cluster mode measured on one machine — an etcd
//! and three `sluice serve --cluster` brokers this command starts itself
//! (a fresh directory, fixed loopback ports so a restarted broker keeps its
//! address, every process killed by its pid at the end).
//!
//! - **Replicated produce**: the load generator ([`crate::load`]) against a
//!   partition's leader, three configurations in interleaved rounds (RF 3
//!   acks=all with `min.insync.replicas=2`, RF 1 acks=1, RF 1 acks=all), each
//!   round the same record size, batch size, connections and window, both
//!   as fast as the producer goes and paced (latency below saturation).
//!   Every window writes to a fresh one-partition topic placed on broker 1
//!   first (a manual assignment), so the same broker leads all three and
//!   every window starts on an empty log; the topic is deleted after it, so
//!   the disk holds one window's records at a time. Around the RF 3 windows the leader's metrics
//!   page gives the record bytes followers fetched and the record bytes that
//!   went through user space on their way out (0 when followers are served
//!   by sendfile, as consumers are).
//! - **Failover**: `kills` rounds of: find the leader of an RF 3 partition,
//!   SIGKILL it, and from that instant produce one record with acks=all,
//!   asking every live broker's Metadata in turn and producing to the leader
//!   it names (to every live broker while none names one), until one is
//!   acknowledged; then restart the killed broker and wait until it is back
//!   in the ISR. Also timed: when a live broker first named a new leader,
//!   and how long the restarted broker took to rejoin the ISR.
//! - **etcd traffic**: etcd's own gRPC byte counters (received + sent, every
//!   client) over a window with the cluster idle and a window under paced
//!   produce load (RF 3, acks=all), and what that is per produced record.
//!
//! The brokers log at info to files in the run's directory; their WARN and
//! ERROR lines are counted by message in the report.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use serde::Serialize;
use sluice_client::{Client, ClientError, error_name, produce_request, topic_name};

use crate::harness::Machine;
use crate::load::{self, ProduceOptions};
use crate::process::{BrokerLaunch, BrokerProcess};
use crate::stats::{Stat, median};

/// What `sluice bench cluster` runs.
#[derive(Clone, Debug)]
pub struct ClusterScenario {
    /// The `sluice` binary the brokers run from.
    pub exe: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
    /// A fresh directory is made under this one for the run.
    pub dir: PathBuf,
    /// `--cluster-lease-ms` of every broker.
    pub lease_ms: u64,
    /// `--replica-lag-time-max-ms` of every broker.
    pub lag_ms: u64,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub connections: u32,
    pub in_flight: usize,
    /// Each produce window (after its warm-up).
    pub run: Duration,
    pub warmup: Duration,
    /// Rounds of the three produce configurations.
    pub repeats: usize,
    /// Each round also runs every configuration paced at this many
    /// records/s (latency below saturation); None: as fast as it goes only.
    pub paced_rate: Option<u64>,
    /// Failover rounds.
    pub kills: usize,
    /// Each etcd traffic window (idle, then under load).
    pub etcd_window: Duration,
    /// The producer's records/s in the loaded etcd window (None: as fast as
    /// it goes).
    pub etcd_rate: Option<u64>,
    /// Keep the run's logs instead of deleting them (the data directories
    /// are deleted either way).
    pub keep: bool,
}

/// One produce configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    label: &'static str,
    topic: &'static str,
    replicas: &'static [i32],
    acks: i16,
    min_insync: Option<&'static str>,
}

const CONFIGS: [Config; 3] = [
    Config {
        label: "RF1 acks=1",
        topic: "bench-rf1-acks1",
        replicas: &[1],
        acks: 1,
        min_insync: None,
    },
    Config {
        label: "RF1 acks=all",
        topic: "bench-rf1-acksall",
        replicas: &[1],
        acks: -1,
        min_insync: None,
    },
    Config {
        label: "RF3 acks=all",
        topic: "bench-rf3-acksall",
        replicas: &[1, 2, 3],
        acks: -1,
        min_insync: Some("2"),
    },
];

const FAILOVER_TOPIC: &str = "bench-failover";
const ETCD_TOPIC: &str = "bench-etcd";

#[derive(Clone, Debug, Serialize)]
pub struct ProduceRun {
    pub round: usize,
    pub config: String,
    /// The records/s the producer was paced at; None: as fast as it goes.
    pub paced_rate: Option<u64>,
    pub replication_factor: usize,
    pub acks: i16,
    pub leader: i32,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// CPU seconds of all three brokers over the run (warm-up included)
    /// per second of it: how many of the machine's cores they kept busy.
    pub brokers_cpu_cores: f64,
    /// The leader's counters over the run (warm-up included).
    pub leader_follower_fetch_bytes: f64,
    /// The same by the data path that sent them (the metric's labels).
    pub leader_follower_fetch_bytes_by_path: BTreeMap<String, f64>,
    pub leader_record_bytes_through_user_space: f64,
    pub leader_response_record_bytes: f64,
    pub leader_kernel_bytes: f64,
    /// ISR shrinks and expands written over the run (all brokers).
    pub isr_shrinks: f64,
    pub isr_expands: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProduceSummary {
    pub config: String,
    pub paced_rate: Option<u64>,
    pub records_per_s: Stat,
    pub p50_ms: Stat,
    pub p99_ms: Stat,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailoverRound {
    pub round: usize,
    pub killed: i32,
    /// The killed broker was the controller too.
    pub killed_controller: bool,
    /// When a live broker's Metadata first named a live leader.
    pub named_ms: Option<f64>,
    /// When the first acks=all produce was acknowledged, and by whom.
    pub acked_ms: Option<f64>,
    pub new_leader: Option<i32>,
    pub produce_attempts: u64,
    /// What the attempts before the acknowledged one got.
    pub refusals: BTreeMap<String, u64>,
    /// Restart of the killed broker until it listens.
    pub restart_ms: f64,
    /// Restart until every live broker shows it in the ISR again.
    pub rejoin_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailoverSummary {
    pub rounds: usize,
    pub failed: usize,
    pub lease_ms: u64,
    pub target_p99_ms: u64,
    /// Nearest-rank percentiles of `acked_ms` (with 20 rounds, p99 is the
    /// maximum).
    pub acked_p50_ms: f64,
    pub acked_p99_ms: f64,
    pub acked_max_ms: f64,
    pub acked_min_ms: f64,
    pub named_p50_ms: f64,
    pub named_max_ms: f64,
    /// Rounds where the killed leader was also the controller, and not.
    pub acked_p50_controller_ms: Option<f64>,
    pub acked_p50_not_controller_ms: Option<f64>,
    pub rejoin_p50_ms: f64,
    pub rejoin_max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EtcdWindow {
    pub name: String,
    pub seconds: f64,
    /// etcd_network_client_grpc_received_bytes_total + _sent_bytes_total.
    pub grpc_received_bytes: f64,
    pub grpc_sent_bytes: f64,
    pub bytes_per_s: f64,
    /// Records acknowledged in the window (0 when idle).
    pub records: u64,
    pub records_per_s: f64,
    /// The brokers' own counts over the window, summed.
    pub broker_etcd_requests: f64,
    pub broker_etcd_sent_bytes: f64,
    pub broker_etcd_received_bytes: f64,
    pub isr_shrinks: f64,
    pub isr_expands: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EtcdTraffic {
    pub idle: EtcdWindow,
    pub load: EtcdWindow,
    /// The load window's etcd bytes over its records.
    pub bytes_per_record: f64,
    /// (load bytes/s − idle bytes/s) over records/s: what each record added.
    pub extra_bytes_per_record: f64,
    pub load_over_idle: f64,
}

/// A WARN or ERROR line of a broker's log, digits replaced by `#`, and how
/// many times it was seen.
#[derive(Clone, Debug, Serialize)]
pub struct LogFinding {
    pub level: String,
    pub count: u64,
    pub brokers: Vec<i32>,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub machine: Machine,
    pub lease_ms: u64,
    pub lag_ms: u64,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub connections: u32,
    pub in_flight: usize,
    pub run_s: f64,
    pub warmup_s: f64,
    pub produce: Vec<ProduceRun>,
    pub produce_summary: Vec<ProduceSummary>,
    /// Median records/s of RF 3 acks=all over RF 1 acks=1 and RF 1 acks=all
    /// (unpaced windows).
    pub rf3_over_rf1_acks1: f64,
    pub rf3_over_rf1_acksall: f64,
    /// Median p99 of the paced RF 3 acks=all windows over RF 1 acks=1's.
    pub paced_p99_rf3_over_rf1_acks1: Option<f64>,
    pub paced_rate: Option<u64>,
    /// Over every RF 3 window, at its leader.
    pub follower_fetch_bytes: f64,
    pub follower_fetch_bytes_by_path: BTreeMap<String, f64>,
    pub record_bytes_through_user_space: f64,
    pub failover: Vec<FailoverRound>,
    pub failover_summary: FailoverSummary,
    pub etcd: EtcdTraffic,
    pub log_findings: Vec<LogFinding>,
    /// Where the run's logs are (deleted unless kept).
    pub dir: String,
    pub kept: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// Ports and HTTP

/// A free loopback port below the kernel's ephemeral range, so no outgoing
/// connection can be given it while its broker is down between a kill and
/// a restart.
fn fixed_port(taken: &mut Vec<u16>) -> Result<u16, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let mut state = u64::from(std::process::id()).rotate_left(32)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    if low > 11_000 {
        for _ in 0..1000 {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let port = (10_000 + state % u64::from(low - 10_000)) as u16;
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.push(port);
                return Ok(port);
            }
        }
    }
    Err("no free loopback port below the ephemeral range".into())
}

/// GET `path` over HTTP/1.0: the body.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let sock: SocketAddr = addr.parse().map_err(err)?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(err)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_string()))
}

/// Prometheus text: samples by full name (labels included).
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `name`'s samples summed over their labels (`name{path="sendfile"}` …).
fn metric_sum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    let labelled = format!("{name}{{");
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&labelled))
        .map(|(_, v)| v)
        .sum()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    metric_sum(after, name) - metric_sum(before, name)
}

/// The change of every labelled sample of `name` (label set → change).
fn labelled_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    name: &str,
) -> BTreeMap<String, f64> {
    let labelled = format!("{name}{{");
    after
        .iter()
        .filter(|(k, _)| k.starts_with(&labelled))
        .map(|(k, v)| {
            (
                k[name.len()..].to_string(),
                v - before.get(k).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

// ---------------------------------------------------------------------------
// etcd

struct Etcd {
    child: Child,
    client: String,
}

impl Etcd {
    fn start(exe: &Path, dir: &Path, taken: &mut Vec<u16>) -> Result<Etcd, String> {
        let (client_port, peer_port) = (fixed_port(taken)?, fixed_port(taken)?);
        let client = format!("127.0.0.1:{client_port}");
        let (client_url, peer_url) = (
            format!("http://{client}"),
            format!("http://127.0.0.1:{peer_port}"),
        );
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(err)?;
        let child = Command::new(exe)
            .args(["--name", "n0", "--data-dir"])
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("n0={peer_url}"))
            .args(["--heartbeat-interval", "50", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let etcd = Etcd { child, client };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(&etcd.client, "/health").is_ok_and(|b| b.contains("\"health\":\"true\"")) {
                return Ok(etcd);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "etcd on {} not healthy within 20 s (see {})",
            etcd.client,
            dir.join("etcd.log").display()
        ))
    }

    /// (gRPC bytes received, sent) from every client so far.
    fn grpc_bytes(&self) -> Result<(f64, f64), String> {
        let m = samples(&http_get(&self.client, "/metrics")?);
        let get = |name: &str| {
            m.get(name)
                .copied()
                .ok_or_else(|| format!("etcd's metrics have no {name}"))
        };
        Ok((
            get("etcd_network_client_grpc_received_bytes_total")?,
            get("etcd_network_client_grpc_sent_bytes_total")?,
        ))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The brokers

struct Node {
    id: i32,
    addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    pidfile: PathBuf,
    process: Option<BrokerProcess>,
}

struct Cluster {
    exe: PathBuf,
    args: Vec<String>,
    nodes: Vec<Node>,
    etcd: Etcd,
}

/// A short connection to a broker (2 s read timeout); loopback connects to
/// a dead broker are refused at once.
fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
    let c = Client::connect(addr)?;
    c.set_read_timeout(Duration::from_secs(2))?;
    Ok(c)
}

/// A one-record acks=`acks` Produce to partition 0: (error code, offset).
fn produce_one(
    addr: SocketAddr,
    topic: &str,
    acks: i16,
    timeout: Duration,
) -> Result<(i16, i64), ClientError> {
    let mut c = Client::connect(addr)?;
    c.set_read_timeout(timeout + Duration::from_secs(2))?;
    let (batch, _) = load::encoded_batch(100, 200, Compression::None);
    let mut r = produce_request(topic, 0, batch, acks);
    r.timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let resp = c.call(9, &r)?;
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or_else(|| ClientError::Protocol("empty produce response".into()))?;
    Ok((p.error_code, p.base_offset))
}

/// What a failed attempt is counted as.
fn refusal(e: &ClientError) -> String {
    match e {
        ClientError::Io(io) => format!("io {:?}", io.kind()),
        ClientError::Kafka(c) | ClientError::Refused { code: c, .. } => error_name(*c),
        ClientError::Protocol(p) => format!("protocol: {p}"),
    }
}

/// (leader, sorted ISR) of partition 0 of `topic` as the broker at `addr`
/// sees it.
fn view(addr: SocketAddr, topic: &str) -> Result<(i32, Vec<i32>), ClientError> {
    let topics = connect(addr)?.describe_topics(Some(&[topic.to_string()]))?;
    let p = topics
        .first()
        .and_then(|t| t.replicas.iter().find(|p| p.partition == 0))
        .ok_or_else(|| ClientError::Protocol(format!("no partition 0 of {topic}")))?;
    let mut isr = p.isr.clone();
    isr.sort_unstable();
    Ok((p.leader, isr))
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Cluster {
    fn start(s: &ClusterScenario, root: &Path) -> Result<Cluster, String> {
        let mut taken = Vec::new();
        let etcd = Etcd::start(&s.etcd, root, &mut taken)?;
        let prefix = format!("/sluice-bench-{}", std::process::id());
        let args: Vec<String> = [
            "--cluster",
            &format!("etcd://{}", etcd.client),
            "--cluster-prefix",
            &prefix,
            "--cluster-lease-ms",
            &s.lease_ms.to_string(),
            "--replica-lag-time-max-ms",
            &s.lag_ms.to_string(),
            "--log-level",
            "info",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut nodes = Vec::new();
        for id in 1..=3 {
            nodes.push(Node {
                id,
                addr: SocketAddr::from(([127, 0, 0, 1], fixed_port(&mut taken)?)),
                data_dir: root.join(format!("broker-{id}")),
                log: root.join(format!("broker-{id}.log")),
                pidfile: root.join(format!("broker-{id}.pid")),
                process: None,
            });
        }
        let mut c = Cluster {
            exe: s.exe.clone(),
            args,
            nodes,
            etcd,
        };
        for id in 1..=3 {
            c.start_node(id)?;
        }
        // Every broker registered and a controller elected.
        let ok = wait_for(Duration::from_secs(30), || {
            c.nodes.iter().all(|n| {
                connect(n.addr)
                    .and_then(|mut cl| cl.describe_cluster())
                    .is_ok_and(|i| i.brokers.len() == 3 && i.controller_id > 0)
            })
        });
        if !ok {
            return Err("the three brokers did not see each other and a controller in 30 s".into());
        }
        Ok(c)
    }

    fn node(&self, id: i32) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn addr(&self, id: i32) -> SocketAddr {
        self.node(id).addr
    }

    fn live(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Starts broker `id` on its port and directory, its stderr appended to
    /// its log; returns once it listens (60 s at most).
    fn start_node(&mut self, id: i32) -> Result<(), String> {
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--advertised-listener".to_string(),
            self.addr(id).to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let n = &mut self.nodes[(id - 1) as usize];
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
        {
            let _ = writeln!(log, "===== bench: start of broker {id} =====");
        }
        let _ = std::fs::remove_file(&n.pidfile);
        // sh writes its pid (the broker's after exec) and sends the
        // broker's stderr to the log.
        let script = format!(
            "echo $$ > '{}'; exec \"$@\" 2>>'{}'",
            n.pidfile.display(),
            n.log.display()
        );
        let launch = BrokerLaunch::new(&self.exe, &n.data_dir)
            .wrapper(["sh", "-c", &script, "sh"])
            .listen(&n.addr.to_string())
            .args(&args)
            .quiet();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(launch.start());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(p)) => {
                n.process = Some(p);
                Ok(())
            }
            Ok(Err(e)) => Err(format!(
                "broker {id} did not start: {e} (see {})",
                n.log.display()
            )),
            Err(_) => {
                if let Some(pid) = std::fs::read_to_string(&n.pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on the broker just started (its pid
                    // from its own pid file), not yet reaped: the launch
                    // thread still holds its Child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Err(format!(
                    "broker {id} did not listen within 60 s; killed (see {})",
                    n.log.display()
                ))
            }
        }
    }

    /// SIGKILL broker `id` and reap it.
    fn kill_node(&mut self, id: i32) {
        if let Some(mut p) = self.nodes[(id - 1) as usize].process.take() {
            p.kill();
        }
    }

    fn metrics(&self, id: i32) -> BTreeMap<String, f64> {
        self.node(id)
            .process
            .as_ref()
            .and_then(|p| p.metrics().ok())
            .unwrap_or_default()
    }

    /// `name` summed over every live broker.
    fn sum_metric(&self, name: &str) -> f64 {
        self.live()
            .iter()
            .map(|&id| metric_sum(&self.metrics(id), name))
            .sum()
    }

    fn cpu_seconds(&self) -> f64 {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref())
            .map(BrokerProcess::cpu_seconds)
            .sum()
    }

    fn controller(&self) -> Option<i32> {
        self.live().into_iter().find_map(|id| {
            connect(self.addr(id))
                .and_then(|mut c| c.describe_cluster())
                .ok()
                .map(|i| i.controller_id)
                .filter(|&c| c > 0)
        })
    }

    /// Every live broker names the same live leader of `topic`-0 and an ISR
    /// of exactly `isr` members: that leader.
    fn settled(&self, topic: &str, isr: usize) -> Option<i32> {
        let live = self.live();
        let mut leader = None;
        for &id in &live {
            let (l, i) = view(self.addr(id), topic).ok()?;
            if !live.contains(&l) || i.len() != isr || leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader
    }

    /// Produces one record to `topic`-0 on broker `leader` until it is
    /// acknowledged (30 s at most): Metadata can name a leader a moment
    /// before its replica has taken the leadership.
    fn wait_writable(&self, leader: i32, topic: &str, acks: i16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = produce_one(self.addr(leader), topic, acks, Duration::from_secs(5));
            match answer {
                Ok((0, _)) => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => {
                    return Err(format!(
                        "broker {leader} does not take acks={acks} records for {topic}-0 \
                         within 30 s: {other:?}"
                    ));
                }
            }
        }
    }

    fn wait_settled(&self, topic: &str, isr: usize, timeout: Duration) -> Result<i32, String> {
        let mut leader = None;
        if wait_for(timeout, || {
            leader = self.settled(topic, isr);
            leader.is_some()
        }) {
            return leader.ok_or_else(|| "unreachable".into());
        }
        let views: Vec<String> = self
            .live()
            .iter()
            .map(|&id| format!("broker {id}: {:?}", view(self.addr(id), topic)))
            .collect();
        Err(format!(
            "{topic}-0: no agreed leader with {isr} in the ISR within {timeout:?}: {}",
            views.join("; ")
        ))
    }

    /// DeleteTopics, retried on every live broker for 30 s; then waits
    /// until no live broker's Metadata has the topic.
    fn delete_topic(&self, name: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        let gone = |id: i32| {
            matches!(
                connect(self.addr(id))
                    .and_then(|mut c| c.describe_topics(Some(&[name.to_string()]))),
                Err(ClientError::Kafka(3))
            )
        };
        while Instant::now() < deadline {
            for id in self.live() {
                let answer = connect(self.addr(id)).and_then(|mut c| {
                    c.set_read_timeout(Duration::from_secs(35))?;
                    c.delete_topic(name)
                });
                match answer {
                    // UNKNOWN_TOPIC_OR_PARTITION: an earlier attempt got through.
                    Ok(()) | Err(ClientError::Kafka(3)) => {
                        if wait_for(Duration::from_secs(30), || {
                            self.live().into_iter().all(gone)
                        }) {
                            return Ok(());
                        }
                        return Err(format!("{name}: deleted, but still listed after 30 s"));
                    }
                    Err(e) => last = format!("broker {id}: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("deleting {name}: {last}"))
    }

    /// CreateTopics with one partition on `replicas` (the first leads),
    /// retried on every live broker for 30 s; then waits until every broker
    /// agrees on a leader and the whole ISR.
    fn create_topic(
        &self,
        name: &str,
        replicas: &[i32],
        configs: &[(&str, &str)],
    ) -> Result<i32, String> {
        let mut t = CreatableTopic::default();
        t.name = topic_name(name);
        t.num_partitions = -1;
        t.replication_factor = -1;
        let mut a = CreatableReplicaAssignment::default();
        a.partition_index = 0;
        a.broker_ids = replicas.iter().map(|&b| BrokerId(b)).collect();
        t.assignments = vec![a];
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.value = Some(StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        let mut created = false;
        'attempts: while Instant::now() < deadline {
            for id in self.live() {
                let answer = connect(self.addr(id)).and_then(|mut c| {
                    c.set_read_timeout(Duration::from_secs(35))?;
                    c.call(5, &req)
                });
                match answer.map(|r| r.topics.first().map(|t| t.error_code)) {
                    // TOPIC_ALREADY_EXISTS: an earlier attempt got through.
                    Ok(Some(0 | 36)) => {
                        created = true;
                        break 'attempts;
                    }
                    Ok(code) => last = format!("broker {id}: {}", error_name(code.unwrap_or(-1))),
                    Err(e) => last = format!("broker {id}: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !created {
            return Err(format!("creating {name}: {last}"));
        }
        self.wait_settled(name, replicas.len(), Duration::from_secs(30))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut p) = n.process.take() {
                p.kill();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Replicated produce

fn produce_run(
    s: &ClusterScenario,
    c: &Cluster,
    cfg: &Config,
    topic: &str,
    round: usize,
    paced_rate: Option<u64>,
) -> Result<ProduceRun, String> {
    let leader = c.wait_settled(topic, cfg.replicas.len(), Duration::from_secs(30))?;
    c.wait_writable(leader, topic, cfg.acks)?;
    let before = c.metrics(leader);
    let (shrinks0, expands0) = (
        c.sum_metric("sluice_cluster_isr_shrinks_total"),
        c.sum_metric("sluice_cluster_isr_expands_total"),
    );
    let cpu0 = c.cpu_seconds();
    let t0 = Instant::now();
    let report = load::produce(&ProduceOptions {
        broker: c.addr(leader).to_string(),
        topic: topic.into(),
        partitions: 1,
        connections: s.connections,
        record_bytes: s.record_bytes,
        batch_bytes: s.batch_bytes,
        acks: cfg.acks,
        compression: Compression::None,
        duration: s.run,
        warmup: s.warmup,
        target_rate: paced_rate,
        in_flight: s.in_flight,
        until: None,
        progress: false,
    })
    .map_err(|e| format!("{}: {e}", cfg.label))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = c.cpu_seconds() - cpu0;
    let after = c.metrics(leader);
    let d = |name: &str| delta(&before, &after, name);
    Ok(ProduceRun {
        round,
        config: cfg.label.into(),
        paced_rate,
        replication_factor: cfg.replicas.len(),
        acks: cfg.acks,
        leader,
        records_per_s: report.records_per_s,
        mb_per_s: report.mb_per_s,
        p50_ms: report.latency.p50_ms,
        p99_ms: report.latency.p99_ms,
        p999_ms: report.latency.p999_ms,
        max_ms: report.latency.max_ms,
        requests: report.requests,
        errors: report.errors,
        errors_by_kind: report.errors_by_kind,
        brokers_cpu_cores: if wall > 0.0 { cpu / wall } else { 0.0 },
        leader_follower_fetch_bytes: d("sluice_cluster_follower_fetch_bytes_total"),
        leader_follower_fetch_bytes_by_path: labelled_deltas(
            &before,
            &after,
            "sluice_cluster_follower_fetch_bytes_total",
        ),
        leader_record_bytes_through_user_space: d("sluice_record_bytes_through_user_space_total"),
        leader_response_record_bytes: d("sluice_response_record_bytes_total"),
        leader_kernel_bytes: d("sluice_io_kernel_bytes_total"),
        isr_shrinks: c.sum_metric("sluice_cluster_isr_shrinks_total") - shrinks0,
        isr_expands: c.sum_metric("sluice_cluster_isr_expands_total") - expands0,
    })
}

// ---------------------------------------------------------------------------
// 2. Failover

fn failover_round(
    s: &ClusterScenario,
    c: &mut Cluster,
    round: usize,
    jitter: &mut u64,
) -> Result<FailoverRound, String> {
    let killed = c.wait_settled(FAILOVER_TOPIC, 3, Duration::from_secs(60))?;
    // The leader is working: one acknowledged record before the kill.
    c.wait_writable(killed, FAILOVER_TOPIC, -1)
        .map_err(|e| format!("round {round}: {e}"))?;
    let killed_controller = c.controller() == Some(killed);
    // Kill at a varying point of the brokers' keepalive period (TTL/3).
    *jitter ^= *jitter << 13;
    *jitter ^= *jitter >> 7;
    *jitter ^= *jitter << 17;
    std::thread::sleep(Duration::from_millis(*jitter % (s.lease_ms / 3).max(1)));
    let t0 = Instant::now();
    c.kill_node(killed);
    let live = c.live();
    let (mut named, mut acked, mut new_leader) = (None, None, None);
    let mut attempts = 0u64;
    let mut refusals = BTreeMap::<String, u64>::new();
    let mut ask = 0usize;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    'probe: while t0.elapsed() < Duration::from_secs(60) {
        ask += 1;
        let asked = live[ask % live.len()];
        let leader = match view(c.addr(asked), FAILOVER_TOPIC) {
            Ok((l, _)) if live.contains(&l) => Some(l),
            Ok(_) => None,
            Err(e) => {
                *refusals
                    .entry(format!("metadata: {}", refusal(&e)))
                    .or_default() += 1;
                None
            }
        };
        if leader.is_some() && named.is_none() {
            named = Some(ms(t0.elapsed()));
        }
        let targets = leader.map_or_else(|| live.clone(), |l| vec![l]);
        for target in targets {
            attempts += 1;
            match produce_one(c.addr(target), FAILOVER_TOPIC, -1, Duration::from_secs(2)) {
                Ok((0, _)) => {
                    acked = Some(ms(t0.elapsed()));
                    new_leader = Some(target);
                    break 'probe;
                }
                Ok((code, _)) => *refusals.entry(error_name(code)).or_default() += 1,
                Err(e) => *refusals.entry(refusal(&e)).or_default() += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r0 = Instant::now();
    c.start_node(killed)?;
    let restart_ms = ms(r0.elapsed());
    let rejoin_ms = c
        .wait_settled(FAILOVER_TOPIC, 3, Duration::from_secs(60))
        .ok()
        .map(|_| ms(r0.elapsed()));
    Ok(FailoverRound {
        round,
        killed,
        killed_controller,
        named_ms: named,
        acked_ms: acked,
        new_leader,
        produce_attempts: attempts,
        refusals,
        restart_ms,
        rejoin_ms,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn failover_summary(s: &ClusterScenario, rounds: &[FailoverRound]) -> FailoverSummary {
    let acked = sorted(rounds.iter().filter_map(|r| r.acked_ms).collect());
    let named = sorted(rounds.iter().filter_map(|r| r.named_ms).collect());
    let rejoin = sorted(rounds.iter().filter_map(|r| r.rejoin_ms).collect());
    let p50_where = |controller: bool| {
        median(
            rounds
                .iter()
                .filter(|r| r.killed_controller == controller)
                .filter_map(|r| r.acked_ms)
                .collect(),
        )
    };
    FailoverSummary {
        rounds: rounds.len(),
        failed: rounds.iter().filter(|r| r.acked_ms.is_none()).count(),
        lease_ms: s.lease_ms,
        target_p99_ms: s.lease_ms + 1000,
        acked_p50_ms: percentile(&acked, 0.50),
        acked_p99_ms: percentile(&acked, 0.99),
        acked_max_ms: acked.last().copied().unwrap_or(f64::NAN),
        acked_min_ms: acked.first().copied().unwrap_or(f64::NAN),
        named_p50_ms: percentile(&named, 0.50),
        named_max_ms: named.last().copied().unwrap_or(f64::NAN),
        acked_p50_controller_ms: p50_where(true),
        acked_p50_not_controller_ms: p50_where(false),
        rejoin_p50_ms: percentile(&rejoin, 0.50),
        rejoin_max_ms: rejoin.last().copied().unwrap_or(f64::NAN),
    }
}

// ---------------------------------------------------------------------------
// 3. etcd traffic

fn etcd_window(
    s: &ClusterScenario,
    c: &Cluster,
    name: &str,
    load_on: Option<i32>,
) -> Result<EtcdWindow, String> {
    let broker_sum = |c: &Cluster| {
        (
            c.sum_metric("sluice_cluster_etcd_requests_total"),
            c.sum_metric("sluice_cluster_etcd_sent_bytes_total"),
            c.sum_metric("sluice_cluster_etcd_received_bytes_total"),
            c.sum_metric("sluice_cluster_isr_shrinks_total"),
            c.sum_metric("sluice_cluster_isr_expands_total"),
        )
    };
    let b0 = broker_sum(c);
    let (r0, s0) = c.etcd.grpc_bytes()?;
    let t0 = Instant::now();
    let records = match load_on {
        None => {
            std::thread::sleep(s.etcd_window);
            0
        }
        Some(leader) => {
            load::produce(&ProduceOptions {
                broker: c.addr(leader).to_string(),
                topic: ETCD_TOPIC.into(),
                partitions: 1,
                connections: s.connections,
                record_bytes: s.record_bytes,
                batch_bytes: s.batch_bytes,
                acks: -1,
                compression: Compression::None,
                duration: s.etcd_window,
                warmup: Duration::ZERO,
                target_rate: s.etcd_rate,
                in_flight: s.in_flight,
                until: None,
                progress: false,
            })
            .map_err(|e| format!("etcd window under load: {e}"))?
            .records
        }
    };
    let (r1, s1) = c.etcd.grpc_bytes()?;
    let seconds = t0.elapsed().as_secs_f64();
    let b1 = broker_sum(c);
    Ok(EtcdWindow {
        name: name.into(),
        seconds,
        grpc_received_bytes: r1 - r0,
        grpc_sent_bytes: s1 - s0,
        bytes_per_s: (r1 - r0 + s1 - s0) / seconds,
        records,
        records_per_s: records as f64 / seconds,
        broker_etcd_requests: b1.0 - b0.0,
        broker_etcd_sent_bytes: b1.1 - b0.1,
        broker_etcd_received_bytes: b1.2 - b0.2,
        isr_shrinks: b1.3 - b0.3,
        isr_expands: b1.4 - b0.4,
    })
}

// ---------------------------------------------------------------------------
// Logs

/// The WARN and ERROR lines of every broker's log, grouped by message (the
/// timestamp cut, digits replaced by `#`), most frequent first.
fn log_findings(c: &Cluster) -> Vec<LogFinding> {
    let mut found: BTreeMap<(String, String), (u64, Vec<i32>)> = BTreeMap::new();
    for n in &c.nodes {
        let Ok(text) = std::fs::read(&n.log) else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let mut words = line.split_whitespace();
            let (Some(_time), Some(level)) = (words.next(), words.next()) else {
                continue;
            };
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            let rest: Vec<&str> = words.collect();
            let message: String = rest
                .join(" ")
                .chars()
                .map(|ch| if ch.is_ascii_digit() { '#' } else { ch })
                .collect();
            let e = found
                .entry((level.to_string(), message))
                .or_insert((0, Vec::new()));
            e.0 += 1;
            if !e.1.contains(&n.id) {
                e.1.push(n.id);
            }
        }
    }
    let mut out: Vec<LogFinding> = found
        .into_iter()
        .map(|((level, message), (count, brokers))| LogFinding {
            level,
            count,
            brokers,
            message,
        })
        .collect();
    out.sort_by_key(|l| std::cmp::Reverse(l.count));
    out
}

// ---------------------------------------------------------------------------
// The scenario

/// Runs the three parts on one cluster.
pub fn cluster(s: &ClusterScenario) -> Result<ClusterReport, String> {
    let root = s.dir.join(format!(
        "sluice-bench-cluster-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    eprintln!("cluster files under {}", root.display());
    let result = run(s, &root);
    if !s.keep && result.is_ok() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        // The logs; the data directories can be large.
        for data in ["broker-1", "broker-2", "broker-3", "etcd-data"] {
            let _ = std::fs::remove_dir_all(root.join(data));
        }
        eprintln!("logs kept in {}", root.display());
    }
    result
}

fn run(s: &ClusterScenario, root: &Path) -> Result<ClusterReport, String> {
    let mut c = Cluster::start(s, root)?;
    eprintln!(
        "etcd on {}, brokers on {}",
        c.etcd.client,
        c.nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 1. Replicated produce, interleaved.
    // Each window writes to a topic of its own, deleted after it: the
    // brokers' disk holds one window's records at a time, and every window
    // starts on an empty log.
    let mut produce = Vec::new();
    for round in 1..=s.repeats.max(1) {
        let modes = std::iter::once(None).chain(s.paced_rate.map(Some));
        for paced in modes {
            for cfg in &CONFIGS {
                eprintln!(
                    "produce round {round}: {}, {}",
                    cfg.label,
                    paced.map_or("as fast as it goes".into(), |r| format!("{r} records/s"))
                );
                let topic = format!(
                    "{}-r{round}-{}",
                    cfg.topic,
                    paced.map_or("max".into(), |r| r.to_string())
                );
                let configs: Vec<(&str, &str)> = cfg
                    .min_insync
                    .map(|m| vec![("min.insync.replicas", m)])
                    .unwrap_or_default();
                c.create_topic(&topic, cfg.replicas, &configs)?;
                produce.push(produce_run(s, &c, cfg, &topic, round, paced)?);
                c.delete_topic(&topic)?;
            }
        }
    }
    let summary: Vec<ProduceSummary> = std::iter::once(None)
        .chain(s.paced_rate.map(Some))
        .flat_map(|paced| CONFIGS.iter().map(move |cfg| (paced, cfg)))
        .map(|(paced, cfg)| {
            let runs: Vec<&ProduceRun> = produce
                .iter()
                .filter(|r| r.config == cfg.label && r.paced_rate == paced)
                .collect();
            ProduceSummary {
                config: cfg.label.into(),
                paced_rate: paced,
                records_per_s: Stat::of(runs.iter().map(|r| r.records_per_s).collect()),
                p50_ms: Stat::of(runs.iter().map(|r| r.p50_ms).collect()),
                p99_ms: Stat::of(runs.iter().map(|r| r.p99_ms).collect()),
                errors: runs.iter().map(|r| r.errors).sum(),
            }
        })
        .collect();
    let find = |label: &str, paced: Option<u64>| {
        summary
            .iter()
            .find(|x| x.config == label && x.paced_rate == paced)
    };
    let rate = |label: &str| find(label, None).map_or(f64::NAN, |x| x.records_per_s.median);
    let rf3 = rate("RF3 acks=all");
    let paced_p99_ratio = s.paced_rate.and_then(|r| {
        let (a, b) = (find("RF3 acks=all", Some(r))?, find("RF1 acks=1", Some(r))?);
        Some(a.p99_ms.median / b.p99_ms.median)
    });
    let mut follower_fetch_bytes_by_path = BTreeMap::<String, f64>::new();
    let (mut follower_fetch_bytes, mut through_user_space) = (0.0, 0.0);
    for r in produce.iter().filter(|r| r.replication_factor == 3) {
        follower_fetch_bytes += r.leader_follower_fetch_bytes;
        through_user_space += r.leader_record_bytes_through_user_space;
        for (path, b) in &r.leader_follower_fetch_bytes_by_path {
            *follower_fetch_bytes_by_path
                .entry(path.clone())
                .or_default() += b;
        }
    }

    // 2. Failover.
    c.create_topic(FAILOVER_TOPIC, &[1, 2, 3], &[("min.insync.replicas", "2")])?;
    let mut failover = Vec::new();
    let mut jitter = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for round in 1..=s.kills {
        let r = failover_round(s, &mut c, round, &mut jitter)?;
        eprintln!(
            "failover round {round}: killed {}{}, new leader {:?}, named after {:?} ms, acknowledged after {:?} ms, back in the ISR {:?} ms after its restart",
            r.killed,
            if r.killed_controller {
                " (the controller)"
            } else {
                ""
            },
            r.new_leader,
            r.named_ms.map(|v| v.round()),
            r.acked_ms.map(|v| v.round()),
            r.rejoin_ms.map(|v| v.round())
        );
        failover.push(r);
    }
    let failover_summary = failover_summary(s, &failover);

    // 3. etcd traffic: idle, then under load.
    let etcd_leader = c.create_topic(ETCD_TOPIC, &[1, 2, 3], &[("min.insync.replicas", "2")])?;
    c.wait_writable(etcd_leader, ETCD_TOPIC, -1)?;
    c.wait_settled(FAILOVER_TOPIC, 3, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("etcd traffic: idle");
    let idle = etcd_window(s, &c, "idle", None)?;
    eprintln!("etcd traffic: under produce load (RF3 acks=all)");
    let loaded = etcd_window(s, &c, "produce load", Some(etcd_leader))?;
    c.delete_topic(ETCD_TOPIC)?;
    let etcd = EtcdTraffic {
        bytes_per_record: if loaded.records > 0 {
            (loaded.grpc_received_bytes + loaded.grpc_sent_bytes) / loaded.records as f64
        } else {
            f64::NAN
        },
        extra_bytes_per_record: if loaded.records_per_s > 0.0 {
            (loaded.bytes_per_s - idle.bytes_per_s) / loaded.records_per_s
        } else {
            f64::NAN
        },
        load_over_idle: if idle.bytes_per_s > 0.0 {
            loaded.bytes_per_s / idle.bytes_per_s
        } else {
            f64::NAN
        },
        idle,
        load: loaded,
    };
    let log_findings = log_findings(&c);
    drop(c);
    Ok(ClusterReport {
        machine: Machine::here(),
        lease_ms: s.lease_ms,
        lag_ms: s.lag_ms,
        record_bytes: s.record_bytes,
        batch_bytes: s.batch_bytes,
        connections: s.connections,
        in_flight: s.in_flight,
        run_s: s.run.as_secs_f64(),
        warmup_s: s.warmup.as_secs_f64(),
        rf3_over_rf1_acks1: rf3 / rate("RF1 acks=1"),
        rf3_over_rf1_acksall: rf3 / rate("RF1 acks=all"),
        paced_p99_rf3_over_rf1_acks1: paced_p99_ratio,
        paced_rate: s.paced_rate,
        produce,
        produce_summary: summary,
        follower_fetch_bytes,
        follower_fetch_bytes_by_path,
        record_bytes_through_user_space: through_user_space,
        failover,
        failover_summary,
        etcd,
        log_findings,
        dir: root.display().to_string(),
        kept: s.keep,
    })
}

// ---------------------------------------------------------------------------
// The terminal table

fn paced(rate: Option<u64>) -> String {
    rate.map_or("-".into(), |r| r.to_string())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

pub fn table(r: &ClusterReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench cluster — {} — {} cores, kernel {}; etcd + 3 brokers, lease {} ms, replica lag max {} ms",
        r.machine.date_utc, r.machine.cores, r.machine.kernel, r.lease_ms, r.lag_ms
    );
    let _ = writeln!(
        out,
        "\n1. produce: {}-byte records in {} KiB batches, {} connections × {} in flight, {:.0} s windows after {:.0} s warm-up, a fresh one-partition topic led by broker 1 per window, configurations interleaved",
        r.record_bytes,
        r.batch_bytes / 1024,
        r.connections,
        r.in_flight,
        r.run_s,
        r.warmup_s
    );
    let _ = writeln!(
        out,
        "round  config          paced at  records/s   MB/s  p50 ms  p99 ms  p99.9 ms  errors  broker cores  follower fetch MB  user-space MB  ISR -/+"
    );
    for p in &r.produce {
        let _ = writeln!(
            out,
            "{:>5}  {:<14}  {:>8}  {:>9.0}  {:>5.1}  {:>6.2}  {:>6.2}  {:>8.2}  {:>6}  {:>12.2}  {:>17.1}  {:>13.1}  {:>3.0}/{:.0}",
            p.round,
            p.config,
            paced(p.paced_rate),
            p.records_per_s,
            p.mb_per_s,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.errors,
            p.brokers_cpu_cores,
            p.leader_follower_fetch_bytes / 1e6,
            p.leader_record_bytes_through_user_space / 1e6,
            p.isr_shrinks,
            p.isr_expands
        );
    }
    let _ = writeln!(
        out,
        "\nmedians (min–max)  paced at  records/s                      p50 ms              p99 ms"
    );
    for s in &r.produce_summary {
        let _ = writeln!(
            out,
            "{:<14}  {:>8}  {:>9.0} ({:.0}–{:.0})  {:>6.2} ({:.2}–{:.2})  {:>6.2} ({:.2}–{:.2})",
            s.config,
            paced(s.paced_rate),
            s.records_per_s.median,
            s.records_per_s.min,
            s.records_per_s.max,
            s.p50_ms.median,
            s.p50_ms.min,
            s.p50_ms.max,
            s.p99_ms.median,
            s.p99_ms.min,
            s.p99_ms.max
        );
    }
    let _ = writeln!(
        out,
        "records/s, RF3 acks=all / RF1 acks=1: {:.2}×; / RF1 acks=all: {:.2}×{}. Followers fetched {:.1} MB from the leader ({}), {:.0} bytes of it through user space (target 0).",
        r.rf3_over_rf1_acks1,
        r.rf3_over_rf1_acksall,
        r.paced_p99_rf3_over_rf1_acks1
            .map_or(String::new(), |x| format!(
                "; paced p99, RF3 acks=all / RF1 acks=1: {x:.2}×"
            )),
        r.follower_fetch_bytes / 1e6,
        r.follower_fetch_bytes_by_path
            .iter()
            .map(|(k, v)| format!("{k} {:.1} MB", v / 1e6))
            .collect::<Vec<_>>()
            .join(", "),
        r.record_bytes_through_user_space
    );
    let _ = writeln!(
        out,
        "\n2. failover: SIGKILL the leader of an RF3 partition (min.insync.replicas=2), then acks=all produce until acknowledged"
    );
    let _ = writeln!(
        out,
        "round  killed  controller  named ms  acked ms  new leader  attempts  restart ms  rejoin ms  refusals"
    );
    for f in &r.failover {
        let refusals: Vec<String> = f.refusals.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        let _ = writeln!(
            out,
            "{:>5}  {:>6}  {:>10}  {:>8}  {:>8}  {:>10}  {:>8}  {:>10.0}  {:>9}  {}",
            f.round,
            f.killed,
            if f.killed_controller { "yes" } else { "no" },
            opt(f.named_ms),
            opt(f.acked_ms),
            f.new_leader.map_or("-".into(), |l| l.to_string()),
            f.produce_attempts,
            f.restart_ms,
            opt(f.rejoin_ms),
            refusals.join(", ")
        );
    }
    let f = &r.failover_summary;
    let _ = writeln!(
        out,
        "first acks=all acknowledgement after the kill: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms over {} rounds ({} never acknowledged); lease {} ms, target p99 < {} ms",
        f.acked_p50_ms,
        f.acked_p99_ms,
        f.acked_max_ms,
        f.acked_min_ms,
        f.rounds,
        f.failed,
        f.lease_ms,
        f.target_p99_ms
    );
    let _ = writeln!(
        out,
        "a new leader named: p50 {:.0} ms, max {:.0} ms; p50 when the controller was killed too {} ms, when not {} ms; back in the ISR after a restart: p50 {:.0} ms, max {:.0} ms",
        f.named_p50_ms,
        f.named_max_ms,
        opt(f.acked_p50_controller_ms),
        opt(f.acked_p50_not_controller_ms),
        f.rejoin_p50_ms,
        f.rejoin_max_ms
    );
    let e = &r.etcd;
    let _ = writeln!(
        out,
        "\n3. etcd client gRPC traffic (received + sent, all clients)"
    );
    let _ = writeln!(
        out,
        "window        seconds  bytes/s   records/s  broker requests  broker KV bytes out/in  ISR -/+"
    );
    for w in [&e.idle, &e.load] {
        let _ = writeln!(
            out,
            "{:<12}  {:>7.1}  {:>7.0}  {:>10.0}  {:>15.0}  {:>11.0}/{:<10.0}  {:.0}/{:.0}",
            w.name,
            w.seconds,
            w.bytes_per_s,
            w.records_per_s,
            w.broker_etcd_requests,
            w.broker_etcd_sent_bytes,
            w.broker_etcd_received_bytes,
            w.isr_shrinks,
            w.isr_expands
        );
    }
    let _ = writeln!(
        out,
        "under load / idle: {:.2}×; {:.4} etcd bytes per produced record ({:.4} more than idle)",
        e.load_over_idle, e.bytes_per_record, e.extra_bytes_per_record
    );
    if !r.log_findings.is_empty() {
        let _ = writeln!(
            out,
            "\nbroker log WARN/ERROR lines (digits as #), most frequent first:"
        );
        for l in r.log_findings.iter().take(15) {
            let msg: String = l.message.chars().take(200).collect();
            let _ = writeln!(
                out,
                "{:>5} × {:<5} brokers {:?}: {msg}",
                l.count, l.level, l.brokers
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 10.0);
        assert_eq!(percentile(&v, 0.99), 20.0);
        assert_eq!(percentile(&[5.0], 0.99), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn labelled_samples_are_summed() {
        let before = samples("# HELP x\nx_total{path=\"sendfile\"} 10\nplain 1\n");
        let after = samples("x_total{path=\"sendfile\"} 30\nx_total{path=\"splice\"} 5\nplain 4\n");
        assert_eq!(delta(&before, &after, "x_total"), 25.0);
        assert_eq!(delta(&before, &after, "plain"), 3.0);
        assert_eq!(delta(&before, &after, "x"), 0.0);
        let by = labelled_deltas(&before, &after, "x_total");
        assert_eq!(by.get("{path=\"sendfile\"}"), Some(&20.0));
        assert_eq!(by.get("{path=\"splice\"}"), Some(&5.0));
    }
}
