//! Everything `sluice serve` can tell the broker.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use sluice_io::DataPath;
use sluice_log::{CleanerConfig, LogConfig};

use crate::security::Principal;

/// Everything `sluice serve` can be told.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where clients connect, each with its security protocol (Kafka's
    /// `listeners`); never empty. The first is the one `--listen` names.
    pub listeners: Vec<ListenerConfig>,
    /// The listener other brokers connect to (`inter.broker.listener.name`);
    /// its advertised address is the one registered in the cluster.
    pub inter_broker_listener: String,
    /// TLS, SASL and authentication settings shared by the listeners.
    pub security: SecurityConfig,
    /// This broker's id (`node.id`); kept in `meta.properties`.
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Create a topic when a client first names it (Metadata or Produce).
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// How Fetch responses' records reach the socket.
    pub data_path: DataPath,
    pub log: LogConfig,
    /// How long a group that was empty waits for more members before its
    /// first rebalance completes (group.initial.rebalance.delay.ms).
    pub group_initial_rebalance_delay: std::time::Duration,
    /// How long an empty group's committed offsets are kept
    /// (offsets.retention.minutes).
    pub offsets_retention: std::time::Duration,
    /// Partitions of `__consumer_offsets` (offsets.topic.num.partitions);
    /// fixed once the topic exists, as groups hash onto them.
    pub offsets_topic_num_partitions: u32,
    /// Replicas of `__consumer_offsets` in a cluster
    /// (offsets.topic.replication.factor); the topic waits until this many
    /// brokers are alive, as Kafka's does.
    pub offsets_topic_replication_factor: i16,
    /// How long an OffsetCommit waits for its records to reach the ISR of
    /// the offsets partition (offsets.commit.timeout.ms).
    pub offsets_commit_timeout: std::time::Duration,
    /// The longest `transaction.timeout.ms` a producer may ask for
    /// (transaction.max.timeout.ms).
    pub transaction_max_timeout_ms: i32,
    /// Partitions of `__transaction_state`
    /// (transaction.state.log.num.partitions); fixed once it exists.
    pub transaction_state_log_num_partitions: u32,
    /// Replicas of `__transaction_state` in a cluster
    /// (transaction.state.log.replication.factor).
    pub transaction_state_log_replication_factor: i16,
    /// How often the coordinator looks for transactions open past their
    /// timeout (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    pub transaction_abort_interval: std::time::Duration,
    /// Gather Fetch responses on the blocking pool and read regions that are
    /// not in the page cache in before sending them, so a consumer reading
    /// old data never stalls an async worker on the disk. Off: the zero-copy
    /// send meets the disk on the worker, as Kafka's network threads do
    /// (KAFKA-7504); kept switchable to measure what isolation saves.
    pub fetch_isolation: bool,
    /// Connections beyond this are accepted and closed at once, with a log
    /// line (Kafka's `max.connections`).
    pub max_connections: usize,
    /// Connections one source address may hold (Kafka's
    /// `max.connections.per.ip`): below `max_connections` by default, so one
    /// source cannot lock every other client out.
    pub max_connections_per_ip: usize,
    /// Per-address exceptions (`max.connections.per.ip.overrides`).
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    /// Request bytes all connections together may hold between reading a
    /// frame's size and answering it (Kafka's `queued.max.request.bytes`):
    /// readers wait for room, so a flood of large frames cannot exhaust
    /// memory. Each connection handles one request at a time, as Kafka's
    /// do, so a connection holds at most one frame.
    pub max_buffered_request_bytes: usize,
    /// Partitions one Fetch is served for; the rest of a larger Fetch are
    /// answered without records (as when its byte budget runs out).
    pub max_partitions_per_fetch: usize,
    /// A connection with no request for this long is closed
    /// (`connections.max.idle.ms`).
    pub idle_timeout: std::time::Duration,
    /// A frame whose first byte has arrived must be complete within this, or
    /// the connection is closed (a client trickling bytes holds nothing).
    pub frame_read_timeout: std::time::Duration,
    /// Longest metadata string an OffsetCommit may carry
    /// (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// The log cleaner of compacted topics (`log.cleaner.enable`); None runs
    /// no cleaner (compacted topics then grow without bound).
    pub cleaner: Option<CleanerConfig>,
    /// Cluster mode (`--cluster etcd://…`); None is the single-node broker,
    /// which leads every partition and needs no etcd.
    pub cluster: Option<ClusterConfig>,
    /// Authorize with ACLs (`--authorizer acl`, Kafka's StandardAuthorizer),
    /// kept in `acls` in the data directory; off: no authorizer, and the
    /// ACL APIs answer SECURITY_DISABLED.
    pub authorizer_acl: bool,
    /// Principals allowed everything whatever the ACLs say (`super.users`).
    pub super_users: Vec<Principal>,
    /// A resource no ACL applies to is open to everyone
    /// (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

/// How a broker joins a cluster coordinated by etcd.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client endpoints, `http://host:port` each.
    pub endpoints: Vec<String>,
    /// The key prefix every cluster key lives under (`/sluice`): several
    /// clusters can share one etcd.
    pub prefix: String,
    /// The rack this broker is in (`broker.rack`), for replica placement.
    pub rack: Option<String>,
    /// The TTL of the lease this broker's registration is held under: a
    /// broker silent this long is dead to the controller.
    pub lease_ttl: std::time::Duration,
    /// Replicas of a topic created without a replication factor
    /// (`default.replication.factor`).
    pub default_replication_factor: i16,
    /// A follower that has not caught up for this long leaves the ISR
    /// (`replica.lag.time.max.ms`).
    pub replica_lag_time_max: std::time::Duration,
    /// How long a follower's fetch waits at the leader for new records
    /// (`replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max: std::time::Duration,
    /// Move leaderships back to preferred replicas when a broker's share
    /// is off (`auto.leader.rebalance.enable`), checked this often
    /// (`leader.imbalance.check.interval.seconds`); None: never.
    pub leader_rebalance_interval: Option<std::time::Duration>,
    /// How this broker connects to the others' inter-broker listener
    /// (replication, transaction markers): its protocol, TLS trust and
    /// SASL credentials.
    pub inter_broker_client: sluice_client::security::ClientSecurity,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/sluice".into(),
            rack: None,
            lease_ttl: std::time::Duration::from_secs(6),
            default_replication_factor: 1,
            replica_lag_time_max: std::time::Duration::from_secs(30),
            replica_fetch_wait_max: std::time::Duration::from_millis(500),
            leader_rebalance_interval: Some(std::time::Duration::from_secs(300)),
            inter_broker_client: sluice_client::security::ClientSecurity::default(),
        }
    }
}

impl ClusterConfig {
    /// Parses `etcd://host:port[,host:port…]` into endpoints.
    pub fn parse_endpoints(url: &str) -> Result<Vec<String>, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: a cluster is named etcd://HOST:PORT[,HOST:PORT…]"))?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{e}"))
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{url:?} names no etcd endpoint"));
        }
        Ok(endpoints)
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listeners: vec![ListenerConfig::plaintext(SocketAddr::from((
                [127, 0, 0, 1],
                9092,
            )))],
            inter_broker_listener: "PLAINTEXT".into(),
            security: SecurityConfig::default(),
            node_id: 0,
            data_dir: PathBuf::from("sluice-data"),
            auto_create_topics: true,
            default_partitions: 1,
            max_frame_bytes: 100 * 1024 * 1024,
            data_path: DataPath::Sendfile,
            log: LogConfig::default(),
            group_initial_rebalance_delay: std::time::Duration::from_secs(3),
            offsets_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout: std::time::Duration::from_secs(5),
            transaction_max_timeout_ms: 900_000,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
            transaction_abort_interval: std::time::Duration::from_secs(10),
            fetch_isolation: true,
            max_connections: 1000,
            max_connections_per_ip: 500,
            max_connections_per_ip_overrides: HashMap::new(),
            max_buffered_request_bytes: 512 * 1024 * 1024,
            max_partitions_per_fetch: 10_000,
            idle_timeout: std::time::Duration::from_secs(600),
            frame_read_timeout: std::time::Duration::from_secs(30),
            offset_metadata_max_bytes: 4096,
            cleaner: Some(CleanerConfig::default()),
            cluster: None,
            authorizer_acl: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
        }
    }
}

/// Kafka's security protocols: what a listener speaks before requests
/// (the same type the client side uses).
pub use sluice_client::security::SecurityProtocol;

/// One listener: a name (`PLAINTEXT`, `SASL_SSL`, or a name of the
/// operator's mapped to a protocol), its security protocol, the address it
/// binds and the one clients are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// HOST:PORT clients are given for this listener; None: the bound
    /// address (which must not be a wildcard).
    pub advertised: Option<(String, u16)>,
}

impl ListenerConfig {
    pub fn plaintext(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            bind,
            advertised: None,
        }
    }
}

/// Parses Kafka's listener form `NAME://HOST:PORT` (`[::1]` for IPv6) into
/// the name, host and port. An empty host is the wildcard, as in Kafka.
pub fn parse_listener_url(s: &str) -> Result<(String, String, u16), String> {
    let (name, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?} is not NAME://HOST:PORT (e.g. SASL_SSL://127.0.0.1:9094)"))?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(format!("{s:?}: {name:?} is not a listener name"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} has no port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    Ok((name.to_ascii_uppercase(), host.to_string(), port))
}

/// How a TLS listener asks for client certificates (`ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for; a client without one connects as `User:ANONYMOUS`.
    Requested,
    /// A connection without a certificate the CA signed is refused.
    Required,
}

/// TLS material for the SSL and SASL_SSL listeners (PEM files, re-read on
/// SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates client certificates are checked against.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether TLS connections hand their keys to the kernel after the
/// handshake (kTLS), so Fetch keeps sending from the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelTlsOffload {
    /// Where the kernel has `CONFIG_TLS` (probed at start).
    #[default]
    Auto,
    /// On every TLS connection, whatever the probe says; where the kernel
    /// lacks the ULP each connection falls back (counted). Puts real
    /// clients through the hand-over on kernels without kTLS (tests).
    On,
    /// Always encrypt in user space (rustls).
    Off,
}

impl std::str::FromStr for KernelTlsOffload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KernelTlsOffload::Auto),
            "on" => Ok(KernelTlsOffload::On),
            "off" => Ok(KernelTlsOffload::Off),
            other => Err(format!("{other:?}: auto, on or off")),
        }
    }
}

/// Authentication and authorization settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub tls: Option<TlsFiles>,
    /// `--tls-kernel-offload`.
    pub tls_kernel_offload: KernelTlsOffload,
    /// SASL mechanisms offered (`sasl.enabled.mechanisms`).
    pub sasl_mechanisms: Vec<String>,
    /// An authenticated session lasts this long; a client re-authenticates
    /// on the open connection before then (KIP-368,
    /// `connections.max.reauth.ms`). None: sessions never expire.
    pub max_reauth: Option<std::time::Duration>,
    /// After a failed authentication the next attempt from the same address
    /// waits this long, doubling per further failure up to 32 times it
    /// (`connection.failed.authentication.delay.ms`, grown into a per-address
    /// back-off so passwords cannot be guessed quickly).
    pub failed_auth_delay: std::time::Duration,
    /// Largest frame a connection may send before it authenticates
    /// (`sasl.server.max.receive.size`).
    pub max_unauthenticated_frame: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            tls_kernel_offload: KernelTlsOffload::Auto,
            sasl_mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            max_reauth: None,
            failed_auth_delay: std::time::Duration::from_millis(100),
            max_unauthenticated_frame: 512 * 1024,
        }
    }
}
