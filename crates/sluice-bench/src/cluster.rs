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
//! - **Security metadata**: a client quota set through each broker in turn
//!   (AlterClientQuotas: written to etcd, answered once the broker's own
//!   watch has it), and the time until the other two describe it.
//! - **Group coordinator failover**: one group member built from raw
//!   protocol requests (FindCoordinator, JoinGroup, SyncGroup) commits a
//!   steadily increasing offset every 20 ms and heartbeats every second;
//!   `group_kills` rounds of: SIGKILL its coordinator (the leader of the
//!   group's `__consumer_offsets` partition) right after an acknowledged
//!   commit, then ask live brokers FindCoordinator and, at the coordinator
//!   named, OffsetFetch (the committed offset must not have gone back) and
//!   OffsetCommit with the same member id and generation until one is
//!   acknowledged (rejoining only if the old membership is refused); then
//!   restart the killed broker and wait until the group's topic and its
//!   offsets partition have three in-sync replicas again.
//! - **Controlled shutdown**: each broker in turn, after a preferred-leader
//!   election so that it leads its share: SIGTERM, the time until the
//!   process exits and the time its log says moving its leaderships took;
//!   then a restart and every partition back to a full ISR.
//!
//! `sections` picks which of these run (in this order, on one cluster);
//! a section not run leaves its part of the report empty.
//!
//! The brokers log at info to files in the run's directory; their WARN and
//! ERROR lines are counted by message in the report.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, BrokerId, CreateTopicsRequest, DescribeClientQuotasRequest,
    ElectLeadersRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use serde::Serialize;
use sluice_client::{Client, ClientError, error_name, produce_request, topic_name};

use crate::harness::Machine;
use crate::load::{self, ProduceOptions};
use crate::process::{BrokerLaunch, BrokerProcess};
use crate::stats::{Stat, median};

/// One part of `sluice bench cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Produce,
    Failover,
    Etcd,
    Security,
    Groups,
    Shutdown,
}

impl Section {
    /// Every section, in the order they run.
    pub const ALL: [Section; 6] = [
        Section::Produce,
        Section::Failover,
        Section::Etcd,
        Section::Security,
        Section::Groups,
        Section::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Produce => "produce",
            Section::Failover => "failover",
            Section::Etcd => "etcd",
            Section::Security => "security",
            Section::Groups => "groups",
            Section::Shutdown => "shutdown",
        }
    }

    /// `produce`, `failover`, `etcd`, `security`, `groups` or `shutdown`.
    pub fn parse(s: &str) -> Result<Section, String> {
        Section::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown section {s:?} (one of {})",
                    Section::ALL.map(Section::name).join(", ")
                )
            })
    }
}

/// What `sluice bench cluster` runs.
#[derive(Clone, Debug)]
pub struct ClusterScenario {
    /// The sections to run (each at most once, in [`Section::ALL`]'s order
    /// whatever the order here).
    pub sections: Vec<Section>,
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
    /// Group coordinator failover rounds.
    pub group_kills: usize,
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
const GROUP: &str = "bench-group";
/// The topic the group's member commits offsets of (one partition, RF 3).
const GROUP_TOPIC: &str = "bench-group-topic";
/// Six partitions on all three brokers, each broker the preferred leader
/// of two: what a controlled shutdown has to move.
const SHUTDOWN_TOPIC: &str = "bench-shutdown";
const SHUTDOWN_PARTITIONS: i32 = 6;
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `offsets.topic.num.partitions`.
const OFFSETS_PARTITIONS: i32 = 50;

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
pub struct GroupRound {
    pub round: usize,
    /// The coordinator killed (the leader of the group's offsets partition).
    pub killed: i32,
    /// The killed broker was the controller too.
    pub killed_controller: bool,
    /// When a live broker's FindCoordinator first named a live coordinator.
    pub coordinator_ms: Option<f64>,
    /// When the first OffsetCommit after the kill was acknowledged, and by
    /// whom.
    pub commit_ms: Option<f64>,
    pub new_coordinator: Option<i32>,
    /// When the new coordinator first answered the OffsetFetch sent before
    /// committing there (it had loaded the group's partition by then).
    pub fetched_ms: Option<f64>,
    /// How long the acknowledged OffsetCommit itself took (sent to
    /// acknowledged: the offsets partition's ISR had it).
    pub commit_request_ms: Option<f64>,
    /// The new coordinator refused the old member id or generation and the
    /// member joined again (`commit_ms` then counts until the commit after
    /// that).
    pub rejoined: bool,
    /// The last offset acknowledged before the kill.
    pub acked_before_kill: i64,
    /// The committed offset the new coordinator's OffsetFetch gave before
    /// the member committed there (must be ≥ `acked_before_kill`).
    pub fetched_before_commit: Option<i64>,
    /// The offset the first commit after the kill acknowledged, and what an
    /// OffsetFetch gave right after it.
    pub acked_after_kill: Option<i64>,
    pub fetched_after_commit: Option<i64>,
    /// An acknowledged commit was not there any more: a broker bug.
    pub lost: bool,
    /// What the requests between the kill and the acknowledged commit got
    /// (`api: ERROR` → count).
    pub errors: BTreeMap<String, u64>,
    /// Restart of the killed broker until it listens.
    pub restart_ms: f64,
    /// Restart until the group's topic and its offsets partition have three
    /// in-sync replicas again on every broker.
    pub back_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupSummary {
    pub group: String,
    /// The group's `__consumer_offsets` partition.
    pub offsets_partition: i32,
    pub rounds: usize,
    /// Rounds with no acknowledged commit within 60 s.
    pub failed: usize,
    pub rejoined: usize,
    pub lost: usize,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub commit_max_ms: f64,
    pub coordinator_p50_ms: f64,
    pub coordinator_p99_ms: f64,
    pub coordinator_max_ms: f64,
    /// Commits acknowledged over the whole section.
    pub commits: i64,
    /// What the member met outside the measured part of the rounds (while
    /// brokers restarted and rejoined), `api: ERROR` → count, and how many
    /// times it joined again there.
    pub between_rounds_errors: BTreeMap<String, u64>,
    pub between_rounds_rejoins: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShutdownRound {
    pub broker: i32,
    pub controller: bool,
    /// Partitions (every topic, `__consumer_offsets` included) it led when
    /// it got SIGTERM.
    pub partitions_led: usize,
    /// SIGTERM until the process exited; None: not within 60 s (then it was
    /// SIGKILLed).
    pub exit_ms: Option<f64>,
    /// `took_ms` of its log's `controlled shutdown: leaderships moved` line
    /// for this stop; None: no such line.
    pub moved_ms: Option<f64>,
    /// How the process ended (`exit status: 0`, a signal).
    pub exit_status: String,
    /// Its other `controlled shutdown` log lines of this stop (a timeout, a
    /// failure).
    pub notes: Vec<String>,
    pub restart_ms: f64,
    /// Restart until every partition has a full ISR on every broker again.
    pub settled_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShutdownSummary {
    pub rounds: usize,
    /// Rounds without an exit within 60 s or without the log line.
    pub failed: usize,
    pub exit_p50_ms: f64,
    pub exit_max_ms: f64,
    pub moved_p50_ms: f64,
    pub moved_max_ms: f64,
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

/// Security metadata shared through etcd: a client quota set through one
/// broker (AlterClientQuotas, a new value each round, each broker in turn),
/// then described by the other two until they show it. Credentials and
/// ACLs take the same path (one key per line, the same watch).
#[derive(Clone, Debug, Serialize)]
pub struct SecurityPropagation {
    pub rounds: usize,
    /// AlterClientQuotas at the broker that took it: the etcd write and its
    /// own watch bringing it back (answered only then), ms.
    pub alter_ms: Stat,
    pub alter_p99_ms: f64,
    /// From that answer until another broker describes the new value, ms
    /// (both other brokers of every round; the polling itself is one
    /// loopback request, ~0.1 ms).
    pub visible_ms: Stat,
    pub visible_p99_ms: f64,
    /// Rounds in which a broker did not show the value within 10 s.
    pub missed: usize,
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

/// Every part is empty (or None) when its section did not run.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub machine: Machine,
    pub sections: Vec<Section>,
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
    pub rf3_over_rf1_acks1: Option<f64>,
    pub rf3_over_rf1_acksall: Option<f64>,
    /// Median p99 of the paced RF 3 acks=all windows over RF 1 acks=1's.
    pub paced_p99_rf3_over_rf1_acks1: Option<f64>,
    pub paced_rate: Option<u64>,
    /// Over every RF 3 window, at its leader.
    pub follower_fetch_bytes: f64,
    pub follower_fetch_bytes_by_path: BTreeMap<String, f64>,
    pub record_bytes_through_user_space: f64,
    pub failover: Vec<FailoverRound>,
    pub failover_summary: Option<FailoverSummary>,
    pub etcd: Option<EtcdTraffic>,
    pub security: Option<SecurityPropagation>,
    pub groups: Vec<GroupRound>,
    pub groups_summary: Option<GroupSummary>,
    pub shutdown: Vec<ShutdownRound>,
    pub shutdown_summary: Option<ShutdownSummary>,
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
    partition_view(addr, topic, 0)
}

/// (leader, sorted ISR) of `topic`-`partition` as the broker at `addr`
/// sees it.
fn partition_view(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
) -> Result<(i32, Vec<i32>), ClientError> {
    let topics = connect(addr)?.describe_topics(Some(&[topic.to_string()]))?;
    let p = topics
        .first()
        .and_then(|t| t.replicas.iter().find(|p| p.partition == partition))
        .ok_or_else(|| ClientError::Protocol(format!("no partition {partition} of {topic}")))?;
    let mut isr = p.isr.clone();
    isr.sort_unstable();
    Ok((p.leader, isr))
}

/// Every partition of every topic as the broker at `addr` sees it:
/// (topic, partition) → (leader, sorted ISR, replica count).
type FullView = BTreeMap<(String, i32), (i32, Vec<i32>, usize)>;

fn full_view(addr: SocketAddr) -> Result<FullView, ClientError> {
    let mut out = FullView::new();
    for t in connect(addr)?.describe_topics(None)? {
        for p in t.replicas {
            let mut isr = p.isr;
            isr.sort_unstable();
            out.insert(
                (t.name.clone(), p.partition),
                (p.leader, isr, p.replicas.len()),
            );
        }
    }
    Ok(out)
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

    /// SIGTERM broker `id` (a controlled shutdown) and wait up to `timeout`
    /// for it to exit, SIGKILLing it then: the time from the signal to its
    /// exit (None: it had to be killed) and how it ended.
    fn terminate_node(&mut self, id: i32, timeout: Duration) -> (Option<Duration>, String) {
        let Some(mut p) = self.nodes[(id - 1) as usize].process.take() else {
            return (None, "not running".into());
        };
        if let Ok(Some(status)) = p.try_wait() {
            return (None, format!("had exited: {status}"));
        }
        let t0 = Instant::now();
        // SAFETY: kill(2) on our own child, which try_wait just found
        // running and which nothing reaps before the try_wait below, so its
        // pid cannot have been reused by another process.
        unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
        let describe = |s: ExitStatus| s.to_string();
        loop {
            match p.try_wait() {
                Ok(Some(status)) => return (Some(t0.elapsed()), describe(status)),
                Ok(None) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(1)),
                Ok(None) => {
                    p.kill();
                    return (
                        None,
                        format!("still running {timeout:?} after SIGTERM; killed"),
                    );
                }
                Err(e) => return (None, format!("waiting for it: {e}")),
            }
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

    /// Every live broker names the same live leader of
    /// `topic`-`partition` and an ISR of exactly `isr` members: that
    /// leader.
    fn partition_settled(&self, topic: &str, partition: i32, isr: usize) -> Option<i32> {
        let live = self.live();
        let mut leader = None;
        for &id in &live {
            let (l, i) = partition_view(self.addr(id), topic, partition).ok()?;
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
        self.wait_partition_settled(topic, 0, isr, timeout)
    }

    fn wait_partition_settled(
        &self,
        topic: &str,
        partition: i32,
        isr: usize,
        timeout: Duration,
    ) -> Result<i32, String> {
        let mut leader = None;
        if wait_for(timeout, || {
            leader = self.partition_settled(topic, partition, isr);
            leader.is_some()
        }) {
            return leader.ok_or_else(|| "unreachable".into());
        }
        let views: Vec<String> = self
            .live()
            .iter()
            .map(|&id| {
                format!(
                    "broker {id}: {:?}",
                    partition_view(self.addr(id), topic, partition)
                )
            })
            .collect();
        Err(format!(
            "{topic}-{partition}: no agreed leader with {isr} in the ISR within {timeout:?}: {}",
            views.join("; ")
        ))
    }

    /// Every live broker's Metadata agrees on every partition of every
    /// topic, and each has a live leader and all its replicas in the ISR;
    /// else what is not so yet.
    fn all_settled(&self) -> Result<FullView, String> {
        let live = self.live();
        let mut agreed: Option<(i32, FullView)> = None;
        for &id in &live {
            let v = full_view(self.addr(id)).map_err(|e| format!("broker {id}: {e}"))?;
            for ((t, p), (leader, isr, replicas)) in &v {
                if !live.contains(leader) || isr.len() != *replicas {
                    return Err(format!(
                        "broker {id}: {t}-{p} leader {leader}, ISR {isr:?} of {replicas} replicas"
                    ));
                }
            }
            match &agreed {
                Some((first, a)) if *a != v => {
                    let diff = v
                        .iter()
                        .find(|(k, x)| a.get(*k) != Some(*x))
                        .map(|(k, x)| format!("{}-{}: {x:?} vs {:?}", k.0, k.1, a.get(k)))
                        .unwrap_or_else(|| "different topics".into());
                    return Err(format!("brokers {first} and {id} disagree: {diff}"));
                }
                Some(_) => {}
                None => agreed = Some((id, v)),
            }
        }
        agreed
            .map(|(_, v)| v)
            .ok_or_else(|| "no live broker".into())
    }

    fn wait_all_settled(&self, timeout: Duration) -> Result<FullView, String> {
        let mut last = Err(String::new());
        if wait_for(timeout, || {
            last = self.all_settled();
            last.is_ok()
        }) {
            return last;
        }
        Err(format!(
            "not every partition has its whole ISR within {timeout:?}: {}",
            last.err().unwrap_or_default()
        ))
    }

    /// ElectLeaders (preferred replicas, every partition) through the
    /// controller, or any live broker: leaderships back where the
    /// assignment puts them first.
    fn elect_preferred(&self) -> Result<(), String> {
        let mut r = ElectLeadersRequest::default();
        r.election_type = 0;
        r.topic_partitions = None;
        r.timeout_ms = 30_000;
        let mut targets = self.live();
        if let Some(c) = self.controller() {
            targets.retain(|&x| x != c);
            targets.insert(0, c);
        }
        let mut last = String::new();
        for id in targets {
            let answer = connect(self.addr(id)).and_then(|mut c| {
                c.set_read_timeout(Duration::from_secs(120))?;
                c.call(2, &r)
            });
            match answer {
                Ok(resp) if resp.error_code == 0 => return Ok(()),
                Ok(resp) => last = format!("broker {id}: {}", error_name(resp.error_code)),
                Err(e) => last = format!("broker {id}: {e}"),
            }
        }
        Err(format!("ElectLeaders: {last}"))
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
        self.create_topic_assigned(name, &[replicas.to_vec()], configs)?;
        self.wait_settled(name, replicas.len(), Duration::from_secs(30))
    }

    /// CreateTopics with partition `i` on `assignments[i]` (the first
    /// leads), retried on every live broker for 30 s.
    fn create_topic_assigned(
        &self,
        name: &str,
        assignments: &[Vec<i32>],
        configs: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut t = CreatableTopic::default();
        t.name = topic_name(name);
        t.num_partitions = -1;
        t.replication_factor = -1;
        t.assignments = assignments
            .iter()
            .enumerate()
            .map(|(i, replicas)| {
                let mut a = CreatableReplicaAssignment::default();
                a.partition_index = i as i32;
                a.broker_ids = replicas.iter().map(|&b| BrokerId(b)).collect();
                a
            })
            .collect();
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
        Ok(())
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
        security: Default::default(),
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
                security: Default::default(),
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
// 4. Group coordinator failover

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

/// The group's `__consumer_offsets` partition as Kafka computes it: Java's
/// `String.hashCode` (over UTF-16 units), sign bit cleared, modulo the
/// partition count.
fn offsets_partition(group: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % OFFSETS_PARTITIONS
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A Kafka error code as a `Result`.
fn code(c: i16) -> Result<(), ClientError> {
    if c == 0 {
        Ok(())
    } else {
        Err(ClientError::Kafka(c))
    }
}

/// `api: ERROR` for the error counts.
fn failed(api: &str, e: &ClientError) -> String {
    format!("{api}: {}", refusal(e))
}

/// The one member of [`GROUP`], spoken to in raw protocol requests, as a
/// consumer's group client would: FindCoordinator, JoinGroup + SyncGroup,
/// OffsetCommit of `GROUP_TOPIC`-0 and Heartbeat to the coordinator.
struct Member {
    brokers: Vec<(i32, SocketAddr)>,
    /// The broker the bench killed and has not restarted yet: not asked.
    down: Option<i32>,
    member_id: String,
    generation: i32,
    coordinator: Option<i32>,
    /// A connection to `coordinator`.
    conn: Option<Client>,
    /// JoinGroup + SyncGroup before the next commit.
    needs_join: bool,
    next_offset: i64,
    /// The last offset an OffsetCommit acknowledged (−1: none yet).
    acked: i64,
    last_heartbeat: Instant,
    ask: usize,
    /// What the member met between the measured parts of the rounds.
    background: BTreeMap<String, u64>,
    background_rejoins: u64,
}

fn lock(m: &Mutex<Member>) -> MutexGuard<'_, Member> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Member {
    fn new(c: &Cluster) -> Member {
        Member {
            brokers: c.nodes.iter().map(|n| (n.id, n.addr)).collect(),
            down: None,
            member_id: String::new(),
            generation: -1,
            coordinator: None,
            conn: None,
            needs_join: true,
            next_offset: 0,
            acked: -1,
            last_heartbeat: Instant::now(),
            ask: 0,
            background: BTreeMap::new(),
            background_rejoins: 0,
        }
    }

    fn addr(&self, id: i32) -> Option<SocketAddr> {
        self.brokers.iter().find(|b| b.0 == id).map(|b| b.1)
    }

    /// FindCoordinator (key type 0, v3) on a short connection to `at`: the
    /// node it names.
    fn find_coordinator(at: SocketAddr) -> Result<i32, ClientError> {
        let mut r = FindCoordinatorRequest::default();
        r.key = str_bytes(GROUP);
        r.key_type = 0;
        let resp = connect(at)?.call(3, &r)?;
        code(resp.error_code)?;
        Ok(resp.node_id.0)
    }

    /// The next broker to ask FindCoordinator, skipping the one down.
    fn next_broker(&mut self) -> (i32, SocketAddr) {
        loop {
            let b = self.brokers[self.ask % self.brokers.len()];
            self.ask += 1;
            if Some(b.0) != self.down {
                return b;
            }
        }
    }

    fn use_coordinator(&mut self, id: i32) {
        if self.coordinator != Some(id) {
            self.conn = None;
        }
        self.coordinator = Some(id);
    }

    fn forget_coordinator(&mut self) {
        self.coordinator = None;
        self.conn = None;
    }

    /// A request to the coordinator on the member's connection (opened
    /// when missing, dropped after an I/O or protocol error).
    fn call<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let id = self
            .coordinator
            .ok_or_else(|| ClientError::Protocol("no coordinator".into()))?;
        let addr = self
            .addr(id)
            .ok_or_else(|| ClientError::Protocol(format!("no broker {id}")))?;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(connect(addr)?),
        };
        let answer = conn
            .set_read_timeout(timeout)
            .and_then(|()| conn.call(version, req));
        if matches!(answer, Err(ClientError::Io(_) | ClientError::Protocol(_))) {
            self.conn = None;
        }
        answer
    }

    /// JoinGroup (v5; again with the member id on MEMBER_ID_REQUIRED, and
    /// afresh on UNKNOWN_MEMBER_ID) and SyncGroup (v3) as the leader,
    /// assigning itself the partition.
    fn join(&mut self) -> Result<(), ClientError> {
        let mut attempts = 0;
        let joined = loop {
            attempts += 1;
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = str_bytes("range");
            // ConsumerProtocolSubscription v0: the topic, no user data.
            protocol.metadata =
                Bytes::from_static(b"\0\0\0\0\0\x01\0\x11bench-group-topic\xff\xff\xff\xff");
            let mut r = JoinGroupRequest::default();
            r.group_id = GroupId(str_bytes(GROUP));
            r.session_timeout_ms = 30_000;
            r.rebalance_timeout_ms = 60_000;
            r.member_id = str_bytes(&self.member_id);
            r.protocol_type = str_bytes("consumer");
            r.protocols = vec![protocol];
            let resp = self.call(5, &r, Duration::from_secs(70))?;
            match resp.error_code {
                MEMBER_ID_REQUIRED if attempts < 4 => self.member_id = resp.member_id.to_string(),
                UNKNOWN_MEMBER_ID if attempts < 4 => self.member_id.clear(),
                c => {
                    code(c)?;
                    break resp;
                }
            }
        };
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(str_bytes(GROUP));
        r.generation_id = self.generation;
        r.member_id = str_bytes(&self.member_id);
        if joined.leader == joined.member_id {
            r.assignments = joined
                .members
                .iter()
                .map(|m| {
                    let mut a = SyncGroupRequestAssignment::default();
                    a.member_id = m.member_id.clone();
                    // ConsumerProtocolAssignment v0: its partition 0.
                    a.assignment = Bytes::from_static(
                        b"\0\0\0\0\0\x01\0\x11bench-group-topic\0\0\0\x01\0\0\0\0\xff\xff\xff\xff",
                    );
                    a
                })
                .collect();
        }
        let resp = self.call(3, &r, Duration::from_secs(70))?;
        code(resp.error_code)?;
        self.needs_join = false;
        self.last_heartbeat = Instant::now();
        Ok(())
    }

    /// OffsetCommit (v8) of the next offset with the member's id and
    /// generation; acknowledged: it is the new `acked`.
    fn commit(&mut self) -> Result<(), ClientError> {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = self.next_offset;
        p.committed_metadata = Some(str_bytes(""));
        let mut t = OffsetCommitRequestTopic::default();
        t.name = topic_name(GROUP_TOPIC);
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(str_bytes(GROUP));
        r.generation_id_or_member_epoch = self.generation;
        r.member_id = str_bytes(&self.member_id);
        r.topics = vec![t];
        let resp = self.call(8, &r, Duration::from_secs(10))?;
        let c = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.error_code)
            .ok_or_else(|| ClientError::Protocol("empty OffsetCommit response".into()))?;
        code(c)?;
        self.acked = self.next_offset;
        self.next_offset += 1;
        Ok(())
    }

    fn heartbeat(&mut self) -> Result<(), ClientError> {
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(str_bytes(GROUP));
        r.generation_id = self.generation;
        r.member_id = str_bytes(&self.member_id);
        let resp = self.call(4, &r, Duration::from_secs(10))?;
        code(resp.error_code)?;
        self.last_heartbeat = Instant::now();
        Ok(())
    }

    /// OffsetFetch (v8) of `GROUP_TOPIC`-0 at the coordinator: the
    /// committed offset (−1: none).
    fn fetch_committed(&mut self) -> Result<i64, ClientError> {
        let mut t = OffsetFetchRequestTopics::default();
        t.name = topic_name(GROUP_TOPIC);
        t.partition_indexes = vec![0];
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(str_bytes(GROUP));
        g.topics = Some(vec![t]);
        let mut r = OffsetFetchRequest::default();
        r.groups = vec![g];
        let resp = self.call(8, &r, Duration::from_secs(10))?;
        let g = resp
            .groups
            .first()
            .ok_or_else(|| ClientError::Protocol("empty OffsetFetch response".into()))?;
        code(g.error_code)?;
        let p = g
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("OffsetFetch without the partition".into()))?;
        code(p.error_code)?;
        Ok(p.committed_offset)
    }

    /// After `e`: stay (loading), join again (membership refused), or find
    /// the coordinator again (anything else).
    fn react(&mut self, e: &ClientError) {
        match e.kafka_code() {
            Some(COORDINATOR_LOAD_IN_PROGRESS) => {}
            Some(UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS) => {
                self.needs_join = true;
            }
            _ => self.forget_coordinator(),
        }
    }

    /// One step of a consumer's loop: find the coordinator if there is
    /// none, join again if told to, commit, heartbeat when one is due. Ok:
    /// a commit was acknowledged; Err: what failed (`api: ERROR`).
    fn step(&mut self) -> Result<(), String> {
        if self.coordinator.is_none() {
            let (_, at) = self.next_broker();
            match Member::find_coordinator(at) {
                Ok(node) if self.addr(node).is_some() && Some(node) != self.down => {
                    self.use_coordinator(node);
                }
                Ok(node) => return Err(format!("find: names broker {node}")),
                Err(e) => return Err(failed("find", &e)),
            }
        }
        if self.needs_join {
            let first = self.member_id.is_empty() && self.generation < 0;
            if let Err(e) = self.join() {
                self.react(&e);
                return Err(failed("join", &e));
            }
            if !first {
                self.background_rejoins += 1;
            }
        }
        if let Err(e) = self.commit() {
            self.react(&e);
            return Err(failed("commit", &e));
        }
        if self.last_heartbeat.elapsed() >= Duration::from_secs(1)
            && let Err(e) = self.heartbeat()
        {
            self.react(&e);
            return Err(failed("heartbeat", &e));
        }
        Ok(())
    }
}

/// The member's loop on a thread of its own: a step every 20 ms, except
/// while a round holds the member.
struct Background {
    member: Arc<Mutex<Member>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(member: Member) -> Background {
        let member = Arc::new(Mutex::new(member));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, halt) = (member.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                {
                    let mut m = lock(&m);
                    if let Err(e) = m.step() {
                        *m.background.entry(e).or_default() += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Background {
            member,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The member steps until a commit is acknowledged (`timeout` at most).
fn commit_acked(m: &mut Member, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match m.step() {
            Ok(()) => return Ok(()),
            Err(e) => {
                *m.background.entry(e.clone()).or_default() += 1;
                last = e;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{GROUP}: no commit acknowledged within {timeout:?} (last: {last})"
    ))
}

/// The group's topic and offsets partition agreed on with three in-sync
/// replicas by every live broker.
fn wait_group_settled(c: &Cluster, offsets: i32) -> Result<(), String> {
    c.wait_settled(GROUP_TOPIC, 3, Duration::from_secs(60))?;
    c.wait_partition_settled(OFFSETS_TOPIC, offsets, 3, Duration::from_secs(60))?;
    Ok(())
}

/// The group set up and committing in the background.
fn start_group(c: &Cluster) -> Result<Background, String> {
    c.create_topic(GROUP_TOPIC, &[1, 2, 3], &[("min.insync.replicas", "2")])?;
    let mut m = Member::new(c);
    // FindCoordinator creates __consumer_offsets; COORDINATOR_NOT_AVAILABLE
    // until its leaders are known.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while m.coordinator.is_none() {
        if Instant::now() >= deadline {
            return Err(format!("{GROUP}: no coordinator within 60 s: {last}"));
        }
        let (id, at) = m.next_broker();
        match Member::find_coordinator(at) {
            Ok(node) if m.addr(node).is_some() => m.use_coordinator(node),
            Ok(node) => last = format!("broker {id} names broker {node}"),
            Err(e) => last = format!("broker {id}: {e}"),
        }
        if m.coordinator.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let t0 = Instant::now();
    commit_acked(&mut m, Duration::from_secs(90))?;
    eprintln!(
        "groups: {GROUP} joined (member {}, generation {}) and committing, coordinator broker {:?}, after {:.0} ms",
        m.member_id,
        m.generation,
        m.coordinator,
        t0.elapsed().as_secs_f64() * 1e3
    );
    m.background.clear();
    let offsets = offsets_partition(GROUP);
    if let Some(coordinator) = m.coordinator {
        let leader = c
            .wait_partition_settled(OFFSETS_TOPIC, offsets, 3, Duration::from_secs(60))
            .map_err(|e| format!("the group's offsets partition: {e}"))?;
        if leader != coordinator {
            eprintln!(
                "groups: WARNING: the coordinator is broker {coordinator}, the leader of {OFFSETS_TOPIC}-{offsets} is broker {leader}"
            );
        }
    }
    Ok(Background::start(m))
}

fn group_round(
    s: &ClusterScenario,
    c: &mut Cluster,
    bg: &Background,
    round: usize,
    jitter: &mut u64,
) -> Result<GroupRound, String> {
    let offsets = offsets_partition(GROUP);
    wait_group_settled(c, offsets).map_err(|e| format!("group round {round}: {e}"))?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut m = lock(&bg.member);
    // Commit for a varying time (a point of the brokers' keepalive period),
    // and kill right after an acknowledged commit: none is in flight.
    *jitter ^= *jitter << 13;
    *jitter ^= *jitter >> 7;
    *jitter ^= *jitter << 17;
    let until = Instant::now() + Duration::from_millis(100 + *jitter % (s.lease_ms / 3).max(1));
    while Instant::now() < until {
        commit_acked(&mut m, Duration::from_secs(60))
            .map_err(|e| format!("group round {round}: {e}"))?;
        std::thread::sleep(Duration::from_millis(20));
    }
    commit_acked(&mut m, Duration::from_secs(60))
        .map_err(|e| format!("group round {round}: {e}"))?;
    let killed = m
        .coordinator
        .ok_or_else(|| format!("group round {round}: a commit without a coordinator"))?;
    let killed_controller = c.controller() == Some(killed);
    let acked_before_kill = m.acked;
    let t0 = Instant::now();
    c.kill_node(killed);
    m.down = Some(killed);
    m.forget_coordinator();
    let live = c.live();
    let mut errors = BTreeMap::<String, u64>::new();
    let (mut coordinator_ms, mut commit_ms) = (None, None);
    let (mut fetched_ms, mut commit_request_ms) = (None, None);
    let (mut fetched_before, mut acked_after, mut new_coordinator) = (None, None, None);
    let mut rejoined = false;
    let mut ask = 0usize;
    while t0.elapsed() < Duration::from_secs(60) {
        if m.coordinator.is_none() {
            ask += 1;
            let asked = live[ask % live.len()];
            match Member::find_coordinator(c.addr(asked)) {
                Ok(node) if live.contains(&node) => {
                    coordinator_ms.get_or_insert(ms(t0.elapsed()));
                    m.use_coordinator(node);
                }
                Ok(node) => {
                    *errors
                        .entry(format!("find: names broker {node}"))
                        .or_default() += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => {
                    *errors.entry(failed("find", &e)).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        // What the new coordinator has, before anything is committed there.
        let sent = Instant::now();
        let (api, answer) = if fetched_before.is_none() {
            (
                "fetch",
                m.fetch_committed().map(|o| fetched_before = Some(o)),
            )
        } else if m.needs_join {
            ("join", m.join().map(|()| rejoined = true))
        } else {
            ("commit", m.commit())
        };
        match answer {
            Ok(()) if api == "commit" => {
                commit_ms = Some(ms(t0.elapsed()));
                commit_request_ms = Some(ms(sent.elapsed()));
                acked_after = Some(m.acked);
                new_coordinator = m.coordinator;
                break;
            }
            Ok(()) => {
                if api == "fetch" {
                    fetched_ms = Some(ms(t0.elapsed()));
                }
            }
            Err(e) => {
                *errors.entry(failed(api, &e)).or_default() += 1;
                m.react(&e);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // And what it has right after.
    let mut fetched_after = None;
    if commit_ms.is_some() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetched_after.is_none() && Instant::now() < deadline {
            match m.fetch_committed() {
                Ok(o) => fetched_after = Some(o),
                Err(e) => {
                    *errors.entry(failed("fetch after", &e)).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    drop(m);
    let lost = fetched_before.is_some_and(|o| o < acked_before_kill)
        || matches!((fetched_after, acked_after), (Some(f), Some(a)) if f < a);
    let r0 = Instant::now();
    c.start_node(killed)?;
    let restart_ms = ms(r0.elapsed());
    lock(&bg.member).down = None;
    let back_ms = wait_group_settled(c, offsets)
        .ok()
        .map(|()| ms(r0.elapsed()));
    Ok(GroupRound {
        round,
        killed,
        killed_controller,
        coordinator_ms,
        commit_ms,
        new_coordinator,
        fetched_ms,
        commit_request_ms,
        rejoined,
        acked_before_kill,
        fetched_before_commit: fetched_before,
        acked_after_kill: acked_after,
        fetched_after_commit: fetched_after,
        lost,
        errors,
        restart_ms,
        back_ms,
    })
}

fn group_summary(rounds: &[GroupRound], bg: &Background) -> GroupSummary {
    let commit = sorted(rounds.iter().filter_map(|r| r.commit_ms).collect());
    let named = sorted(rounds.iter().filter_map(|r| r.coordinator_ms).collect());
    let m = lock(&bg.member);
    GroupSummary {
        group: GROUP.into(),
        offsets_partition: offsets_partition(GROUP),
        rounds: rounds.len(),
        failed: rounds.iter().filter(|r| r.commit_ms.is_none()).count(),
        rejoined: rounds.iter().filter(|r| r.rejoined).count(),
        lost: rounds.iter().filter(|r| r.lost).count(),
        commit_p50_ms: percentile(&commit, 0.50),
        commit_p99_ms: percentile(&commit, 0.99),
        commit_max_ms: commit.last().copied().unwrap_or(f64::NAN),
        coordinator_p50_ms: percentile(&named, 0.50),
        coordinator_p99_ms: percentile(&named, 0.99),
        coordinator_max_ms: named.last().copied().unwrap_or(f64::NAN),
        commits: m.acked + 1,
        between_rounds_errors: m.background.clone(),
        between_rounds_rejoins: m.background_rejoins,
    }
}

// ---------------------------------------------------------------------------
// 5. Controlled shutdown

/// The `controlled shutdown` lines of a broker's log.
fn shutdown_lines(log: &Path) -> Vec<String> {
    std::fs::read(log)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.contains("controlled shutdown"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `took_ms` of a `controlled shutdown: leaderships moved` line.
fn took_ms(line: &str) -> Option<f64> {
    if !line.contains("controlled shutdown: leaderships moved") {
        return None;
    }
    line.split("took_ms=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn shutdown_round(c: &mut Cluster, id: i32) -> Result<ShutdownRound, String> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Every broker leads its preferred share, and every partition has its
    // whole ISR (so every leadership can move).
    c.elect_preferred()?;
    let view = c.wait_all_settled(Duration::from_secs(60))?;
    let partitions_led = view.values().filter(|v| v.0 == id).count();
    let controller = c.controller() == Some(id);
    let log = c.node(id).log.clone();
    let seen = shutdown_lines(&log).len();
    let (exit, exit_status) = c.terminate_node(id, Duration::from_secs(60));
    let new: Vec<String> = shutdown_lines(&log).into_iter().skip(seen).collect();
    let moved_ms = new.iter().rev().find_map(|l| took_ms(l));
    let notes: Vec<String> = new
        .iter()
        .filter(|l| took_ms(l).is_none())
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    let r0 = Instant::now();
    c.start_node(id)?;
    let restart_ms = ms(r0.elapsed());
    let settled_ms = c
        .wait_all_settled(Duration::from_secs(60))
        .ok()
        .map(|_| ms(r0.elapsed()));
    Ok(ShutdownRound {
        broker: id,
        controller,
        partitions_led,
        exit_ms: exit.map(ms),
        moved_ms,
        exit_status,
        notes,
        restart_ms,
        settled_ms,
    })
}

fn shutdown_summary(rounds: &[ShutdownRound]) -> ShutdownSummary {
    let exit = sorted(rounds.iter().filter_map(|r| r.exit_ms).collect());
    let moved = sorted(rounds.iter().filter_map(|r| r.moved_ms).collect());
    ShutdownSummary {
        rounds: rounds.len(),
        failed: rounds
            .iter()
            .filter(|r| r.exit_ms.is_none() || r.moved_ms.is_none())
            .count(),
        exit_p50_ms: percentile(&exit, 0.50),
        exit_max_ms: exit.last().copied().unwrap_or(f64::NAN),
        moved_p50_ms: percentile(&moved, 0.50),
        moved_max_ms: moved.last().copied().unwrap_or(f64::NAN),
    }
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

    let runs = |x: Section| s.sections.contains(&x);

    // 1. Replicated produce, interleaved.
    // Each window writes to a topic of its own, deleted after it: the
    // brokers' disk holds one window's records at a time, and every window
    // starts on an empty log.
    let mut produce = Vec::new();
    let rounds = if runs(Section::Produce) {
        s.repeats.max(1)
    } else {
        0
    };
    for round in 1..=rounds {
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
        .filter(|_| runs(Section::Produce))
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
    let mut failover = Vec::new();
    let mut jitter = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    if runs(Section::Failover) {
        c.create_topic(FAILOVER_TOPIC, &[1, 2, 3], &[("min.insync.replicas", "2")])?;
    }
    for round in (1..=s.kills).filter(|_| runs(Section::Failover)) {
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
    let failover_summary = runs(Section::Failover).then(|| failover_summary(s, &failover));

    // 3. etcd traffic: idle, then under load.
    let etcd = if runs(Section::Etcd) {
        Some(etcd_traffic(s, &c)?)
    } else {
        None
    };

    // 3b. Security metadata through etcd.
    let security = if runs(Section::Security) {
        Some(security_propagation(&c)?)
    } else {
        None
    };

    // 4. Group coordinator failover.
    let mut groups = Vec::new();
    let mut groups_summary = None;
    if runs(Section::Groups) {
        let bg = start_group(&c)?;
        for round in 1..=s.group_kills {
            let r = group_round(s, &mut c, &bg, round, &mut jitter)?;
            eprintln!(
                "group round {round}: killed coordinator {}{}, new coordinator {:?} named after {:?} ms, fetched from after {:?} ms, commit acknowledged after {:?} ms (its request {:?} ms){}, committed {} before the kill, fetched {:?} there before committing, back {:?} ms after its restart",
                r.killed,
                if r.killed_controller {
                    " (the controller)"
                } else {
                    ""
                },
                r.new_coordinator,
                r.coordinator_ms.map(|v| v.round()),
                r.fetched_ms.map(|v| v.round()),
                r.commit_ms.map(|v| v.round()),
                r.commit_request_ms.map(|v| v.round()),
                if r.rejoined { " (after a rejoin)" } else { "" },
                r.acked_before_kill,
                r.fetched_before_commit,
                r.back_ms.map(|v| v.round())
            );
            if r.lost {
                eprintln!(
                    "!!! group round {round}: AN ACKNOWLEDGED COMMIT WAS LOST: offset {} acknowledged before the kill, the new coordinator had {:?}; {:?} acknowledged after it, then fetched {:?}",
                    r.acked_before_kill,
                    r.fetched_before_commit,
                    r.acked_after_kill,
                    r.fetched_after_commit
                );
            }
            if r.commit_ms.is_none() {
                eprintln!(
                    "!!! group round {round}: no commit acknowledged within 60 s of the kill: {:?}",
                    r.errors
                );
            }
            groups.push(r);
        }
        groups_summary = Some(group_summary(&groups, &bg));
    }

    // 5. Controlled shutdown of each broker in turn.
    let mut shutdown = Vec::new();
    if runs(Section::Shutdown) {
        let assignments: Vec<Vec<i32>> = (0..SHUTDOWN_PARTITIONS)
            .map(|p| (0..3).map(|k| (p + k) % 3 + 1).collect())
            .collect();
        c.create_topic_assigned(
            SHUTDOWN_TOPIC,
            &assignments,
            &[("min.insync.replicas", "2")],
        )?;
        for id in 1..=3 {
            let r = shutdown_round(&mut c, id)?;
            eprintln!(
                "shutdown of broker {id}{}: led {} partitions, exited {:?} ms after SIGTERM ({}), leaderships moved in {:?} ms, settled {:?} ms after its restart{}",
                if r.controller {
                    " (the controller)"
                } else {
                    ""
                },
                r.partitions_led,
                r.exit_ms.map(|v| v.round()),
                r.exit_status,
                r.moved_ms,
                r.settled_ms.map(|v| v.round()),
                if r.notes.is_empty() {
                    String::new()
                } else {
                    format!("; {}", r.notes.join(" | "))
                }
            );
            shutdown.push(r);
        }
    }
    let shutdown_summary = runs(Section::Shutdown).then(|| shutdown_summary(&shutdown));

    let log_findings = log_findings(&c);
    drop(c);
    let produced = runs(Section::Produce);
    Ok(ClusterReport {
        machine: Machine::here(),
        sections: Section::ALL.into_iter().filter(|&x| runs(x)).collect(),
        lease_ms: s.lease_ms,
        lag_ms: s.lag_ms,
        record_bytes: s.record_bytes,
        batch_bytes: s.batch_bytes,
        connections: s.connections,
        in_flight: s.in_flight,
        run_s: s.run.as_secs_f64(),
        warmup_s: s.warmup.as_secs_f64(),
        rf3_over_rf1_acks1: produced.then(|| rf3 / rate("RF1 acks=1")),
        rf3_over_rf1_acksall: produced.then(|| rf3 / rate("RF1 acks=all")),
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
        security,
        groups,
        groups_summary,
        shutdown,
        shutdown_summary,
        log_findings,
        dir: root.display().to_string(),
        kept: s.keep,
    })
}

const SECURITY_ROUNDS: usize = 60;
const SECURITY_USER: &str = "bench-propagation";

/// The producer byte rate broker `addr` describes for [`SECURITY_USER`].
fn described_quota(c: &mut Client) -> Result<Option<f64>, ClientError> {
    let mut component = ComponentData::default();
    component.entity_type = StrBytes::from_static_str("user");
    component.match_type = 0; // exact
    component._match = Some(StrBytes::from_static_str(SECURITY_USER));
    let mut req = DescribeClientQuotasRequest::default();
    req.components = vec![component];
    let r = c.call(1, &req)?;
    Ok(r.entries
        .unwrap_or_default()
        .iter()
        .flat_map(|e| e.values.iter())
        .find(|v| v.key.as_str() == "producer_byte_rate")
        .map(|v| v.value))
}

/// 99th percentile (nearest rank) of `v`; NaN when empty.
fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() * 99).div_ceil(100)).saturating_sub(1)]
}

fn security_propagation(c: &Cluster) -> Result<SecurityPropagation, String> {
    eprintln!(
        "security metadata: {SECURITY_ROUNDS} quota changes, each through one broker, seen by the others"
    );
    let mut clients: Vec<(i32, Client)> = c
        .nodes
        .iter()
        .map(|n| connect(n.addr).map(|cl| (n.id, cl)).map_err(err))
        .collect::<Result<_, _>>()?;
    let (mut alter_ms, mut visible_ms, mut missed) = (Vec::new(), Vec::new(), 0);
    for round in 0..SECURITY_ROUNDS {
        let value = 1_000_000.0 + round as f64;
        let writer = round % clients.len();
        let mut entity = EntityData::default();
        entity.entity_type = StrBytes::from_static_str("user");
        entity.entity_name = Some(StrBytes::from_static_str(SECURITY_USER));
        let mut op = OpData::default();
        op.key = StrBytes::from_static_str("producer_byte_rate");
        op.value = value;
        let mut entry = EntryData::default();
        entry.entity = vec![entity];
        entry.ops = vec![op];
        let mut req = AlterClientQuotasRequest::default();
        req.entries = vec![entry];
        let started = Instant::now();
        let r = clients[writer].1.call(1, &req).map_err(err)?;
        let answered = Instant::now();
        if let Some(e) = r.entries.iter().find(|e| e.error_code != 0) {
            return Err(format!(
                "AlterClientQuotas at broker {}: {} {:?}",
                clients[writer].0,
                error_name(e.error_code),
                e.error_message
            ));
        }
        alter_ms.push((answered - started).as_secs_f64() * 1e3);
        for (i, (_, client)) in clients.iter_mut().enumerate() {
            let shown = described_quota(client).map_err(err)?;
            if i == writer {
                // Read-your-writes at the broker that answered.
                if shown != Some(value) {
                    return Err(format!("the broker that set {value} describes {shown:?}"));
                }
                continue;
            }
            let mut seen = shown == Some(value);
            while !seen && answered.elapsed() < Duration::from_secs(10) {
                seen = described_quota(client).map_err(err)? == Some(value);
            }
            if seen {
                visible_ms.push(answered.elapsed().as_secs_f64() * 1e3);
            } else {
                missed += 1;
            }
        }
    }
    Ok(SecurityPropagation {
        rounds: SECURITY_ROUNDS,
        alter_p99_ms: p99(alter_ms.clone()),
        alter_ms: Stat::of(alter_ms),
        visible_p99_ms: p99(visible_ms.clone()),
        visible_ms: Stat::of(visible_ms),
        missed,
    })
}

/// The etcd traffic windows: idle, then under paced produce load.
fn etcd_traffic(s: &ClusterScenario, c: &Cluster) -> Result<EtcdTraffic, String> {
    let etcd_leader = c.create_topic(ETCD_TOPIC, &[1, 2, 3], &[("min.insync.replicas", "2")])?;
    c.wait_writable(etcd_leader, ETCD_TOPIC, -1)?;
    if s.sections.contains(&Section::Failover) {
        c.wait_settled(FAILOVER_TOPIC, 3, Duration::from_secs(60))?;
    }
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("etcd traffic: idle");
    let idle = etcd_window(s, c, "idle", None)?;
    eprintln!("etcd traffic: under produce load (RF3 acks=all)");
    let loaded = etcd_window(s, c, "produce load", Some(etcd_leader))?;
    c.delete_topic(ETCD_TOPIC)?;
    Ok(EtcdTraffic {
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
    if r.sections.contains(&Section::Produce) {
        produce_table(&mut out, r);
    }
    if let Some(f) = &r.failover_summary {
        failover_table(&mut out, r, f);
    }
    if let Some(e) = &r.etcd {
        etcd_table(&mut out, e);
    }
    if let Some(p) = &r.security {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "\n3b. security metadata through etcd ({} quota changes, each broker in turn)\n\
             AlterClientQuotas answered (etcd write + own watch): median {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             seen by the other brokers after the answer:          median {:.2} ms, p99 {:.2} ms, max {:.2} ms; missed {}",
            p.rounds,
            p.alter_ms.median,
            p.alter_p99_ms,
            p.alter_ms.max,
            p.visible_ms.median,
            p.visible_p99_ms,
            p.visible_ms.max,
            p.missed
        );
    }
    if let Some(g) = &r.groups_summary {
        groups_table(&mut out, &r.groups, g);
    }
    if let Some(x) = &r.shutdown_summary {
        shutdown_table(&mut out, &r.shutdown, x);
    }
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

fn produce_table(out: &mut String, r: &ClusterReport) {
    use std::fmt::Write as _;
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
        r.rf3_over_rf1_acks1.unwrap_or(f64::NAN),
        r.rf3_over_rf1_acksall.unwrap_or(f64::NAN),
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
}

fn failover_table(out: &mut String, r: &ClusterReport, f: &FailoverSummary) {
    use std::fmt::Write as _;
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
}

fn etcd_table(out: &mut String, e: &EtcdTraffic) {
    use std::fmt::Write as _;
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
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn offset(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn groups_table(out: &mut String, rounds: &[GroupRound], g: &GroupSummary) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n4. group coordinator failover: one member of {} commits an increasing offset every 20 ms (coordinator: the leader of {OFFSETS_TOPIC}-{}); SIGKILL the coordinator right after an acknowledged commit, then FindCoordinator at live brokers, OffsetFetch and OffsetCommit (same member id and generation) at the one named until acknowledged",
        g.group, g.offsets_partition
    );
    let _ = writeln!(
        out,
        "round  killed  controller  coordinator ms  fetched ms  commit ms (its request)  new coordinator  rejoined  acked before  fetched before/after commit  lost  restart ms  back ms  errors"
    );
    for x in rounds {
        let _ = writeln!(
            out,
            "{:>5}  {:>6}  {:>10}  {:>14}  {:>10}  {:>23}  {:>15}  {:>8}  {:>12}  {:>26}  {:>4}  {:>10.0}  {:>7}  {}",
            x.round,
            x.killed,
            if x.killed_controller { "yes" } else { "no" },
            opt(x.coordinator_ms),
            opt(x.fetched_ms),
            format!("{} ({})", opt(x.commit_ms), opt(x.commit_request_ms)),
            x.new_coordinator.map_or("-".into(), |l| l.to_string()),
            if x.rejoined { "yes" } else { "no" },
            x.acked_before_kill,
            format!(
                "{}/{}",
                offset(x.fetched_before_commit),
                offset(x.fetched_after_commit)
            ),
            if x.lost { "LOST" } else { "no" },
            x.restart_ms,
            opt(x.back_ms),
            counts(&x.errors)
        );
    }
    let _ = writeln!(
        out,
        "first commit acknowledged after the kill: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} rounds ({} never acknowledged); a live coordinator named: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        g.commit_p50_ms,
        g.commit_p99_ms,
        g.commit_max_ms,
        g.rounds,
        g.failed,
        g.coordinator_p50_ms,
        g.coordinator_p99_ms,
        g.coordinator_max_ms
    );
    let _ = writeln!(
        out,
        "rounds that needed a rejoin: {}; rounds that lost an acknowledged commit: {}{}; {} commits acknowledged in all; between rounds: {} rejoins, {}",
        g.rejoined,
        g.lost,
        if g.lost > 0 { " !!! A BROKER BUG" } else { "" },
        g.commits,
        g.between_rounds_rejoins,
        if g.between_rounds_errors.is_empty() {
            "no errors".to_string()
        } else {
            counts(&g.between_rounds_errors)
        }
    );
}

fn shutdown_table(out: &mut String, rounds: &[ShutdownRound], x: &ShutdownSummary) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n5. controlled shutdown: each broker in turn, after a preferred-leader election, gets SIGTERM; the time until it exits, and what its log says moving its leaderships took; then restarted until every partition has its whole ISR"
    );
    let _ = writeln!(
        out,
        "broker  controller  partitions led  exit ms  moved ms  exit status          restart ms  settled ms  notes"
    );
    for r in rounds {
        let _ = writeln!(
            out,
            "{:>6}  {:>10}  {:>14}  {:>7}  {:>8}  {:<18}  {:>10.0}  {:>10}  {}",
            r.broker,
            if r.controller { "yes" } else { "no" },
            r.partitions_led,
            opt(r.exit_ms),
            opt(r.moved_ms),
            r.exit_status,
            r.restart_ms,
            opt(r.settled_ms),
            r.notes.join(" | ")
        );
    }
    let _ = writeln!(
        out,
        "SIGTERM to exit: p50 {:.0} ms, max {:.0} ms; leaderships moved: p50 {:.0} ms, max {:.0} ms; over {} brokers ({} without an exit in 60 s or the log line)",
        x.exit_p50_ms, x.exit_max_ms, x.moved_p50_ms, x.moved_max_ms, x.rounds, x.failed
    );
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
    fn coordinator_partition_is_javas_string_hash() {
        // "hello".hashCode() == 99162322; "polygenelubricants".hashCode()
        // == Integer.MIN_VALUE, whose sign bit is cleared to 0.
        assert_eq!(offsets_partition("hello"), 99_162_322 % 50);
        assert_eq!(offsets_partition("polygenelubricants"), 0);
        assert_eq!(offsets_partition(""), 0);
    }

    #[test]
    fn controlled_shutdown_took_ms_is_read_off_the_log_line() {
        let line = "2025-01-01T00:00:00.000000Z  INFO sluice_broker::broker: controlled shutdown: leaderships moved took_ms=412";
        assert_eq!(took_ms(line), Some(412.0));
        assert_eq!(
            took_ms("… controlled shutdown: partitions still led or needed here after 30 s left=2"),
            None
        );
    }

    #[test]
    fn sections_parse_by_name() {
        assert_eq!(Section::parse("groups"), Ok(Section::Groups));
        assert_eq!(Section::parse(" shutdown"), Ok(Section::Shutdown));
        assert!(Section::parse("nope").is_err());
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
