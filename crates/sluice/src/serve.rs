//! `sluice serve`: the broker process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;

use sluice_broker::api::ListenerInfo;
use sluice_broker::cluster::ListenerAddress;
use sluice_broker::config::{
    ClientAuth, ListenerConfig, SecurityConfig, SecurityProtocol, TlsFiles, parse_listener_url,
};
use sluice_broker::net::BoundListener;
use sluice_broker::security::Principal;
use sluice_broker::{
    Advertised, AppendPath, Broker, BrokerConfig, ClusterConfig, DataPath, FlushPolicy, LogConfig,
};
use sluice_client::parse_size;
use sluice_log::CleanerConfig;

/// Every setting can come from a flag, from the environment variable named
/// beside it, or from the TOML file given with `--config` (keys as the flag
/// names: `listen = "127.0.0.1:9092"`, `flush = "always"`, …), in that order
/// of precedence.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings (keys are the flag names without dashes' prefix).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// A PLAINTEXT listener's address (127.0.0.1:0 picks a free port); the
    /// shorthand for `--listener PLAINTEXT://ADDR`. Default 127.0.0.1:9092
    /// when no --listener is given.
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A listener, as Kafka's `listeners` names them: PROTOCOL://HOST:PORT
    /// with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, or NAME://HOST:PORT
    /// with NAME mapped by --listener-security-protocol-map. Repeatable.
    #[arg(long = "listener", env = "SLUICE_LISTENERS", value_delimiter = ',')]
    pub listeners: Vec<String>,
    /// NAME:PROTOCOL pairs for listeners not named after their protocol
    /// (listener.security.protocol.map), e.g. INTERNAL:SASL_SSL.
    #[arg(
        long,
        env = "SLUICE_LISTENER_SECURITY_PROTOCOL_MAP",
        value_delimiter = ','
    )]
    pub listener_security_protocol_map: Vec<String>,
    /// The address clients are given for a listener (Kafka's
    /// advertised.listeners): NAME://HOST:PORT, or HOST:PORT for the first
    /// listener. Defaults to the bound address; required for a wildcard
    /// (0.0.0.0 or ::). Repeatable.
    #[arg(
        long = "advertised-listener",
        env = "SLUICE_ADVERTISED_LISTENER",
        value_delimiter = ','
    )]
    pub advertised_listeners: Vec<String>,
    /// The listener other brokers connect to (inter.broker.listener.name);
    /// default PLAINTEXT if there is one, else the first listener.
    #[arg(long, env = "SLUICE_INTER_BROKER_LISTENER_NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// How this broker connects to the others' inter-broker listener, as
    /// librdkafka-style properties (security.protocol, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location, sasl.mechanism,
    /// sasl.username, sasl.password); needed when that listener is not
    /// PLAINTEXT. The principal it authenticates as must be a super user
    /// when --authorizer acl is on.
    #[arg(long, env = "SLUICE_INTER_BROKER_CLIENT_CONFIG")]
    pub inter_broker_client_config: Option<PathBuf>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners (re-read on SIGHUP).
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (re-read on SIGHUP).
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to (mTLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificates (ssl.client.auth): none, requested or required.
    /// Default: required when --tls-client-ca is given, else none.
    #[arg(long, env = "SLUICE_TLS_CLIENT_AUTH")]
    pub tls_client_auth: Option<String>,
    /// Kernel TLS: auto hands each TLS session's keys to the kernel after
    /// the handshake where it has CONFIG_TLS, so Fetch stays zero-copy
    /// (sendfile); on tries it even where the probe says no (each
    /// connection falls back; for tests); off always encrypts in user space.
    #[arg(long, env = "SLUICE_TLS_KERNEL_OFFLOAD", default_value = "auto")]
    pub tls_kernel_offload: String,
    /// SASL mechanisms offered (sasl.enabled.mechanisms).
    #[arg(
        long,
        env = "SLUICE_SASL_ENABLED_MECHANISMS",
        value_delimiter = ',',
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: Vec<String>,
    /// A SASL session's lifetime; the client re-authenticates on its open
    /// connection before it ends (connections.max.reauth.ms, KIP-368). 0: never.
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_REAUTH_MS", default_value_t = 0)]
    pub connections_max_reauth_ms: u64,
    /// After a failed authentication, the next attempt from that address
    /// waits this long, doubling per further failure up to 32 times
    /// (connection.failed.authentication.delay.ms).
    #[arg(
        long,
        env = "SLUICE_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS",
        default_value_t = 100
    )]
    pub connection_failed_authentication_delay_ms: u64,
    /// Data directory (created if missing).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    pub data_dir: PathBuf,
    /// When appends reach the disk: `always` (fsync before acking), a number
    /// of milliseconds (background flush; acks=-1 flushes first), or `os`.
    #[arg(long, env = "SLUICE_FLUSH", default_value = "os", value_parser = parse_flush)]
    pub flush: FlushPolicy,
    /// How batches get into the active segment: `pwrite` (measured faster) or
    /// `mmap` (a pre-allocated mapped segment).
    #[arg(long, env = "SLUICE_APPEND", default_value = "pwrite", value_parser = parse_append)]
    pub append: AppendPath,
    /// How Fetch responses' records reach the socket: sendfile, splice,
    /// io_uring (falls back to sendfile where unavailable), read_write or
    /// mmap_write.
    #[arg(long, env = "SLUICE_DATA_PATH", default_value = "sendfile")]
    pub data_path: DataPath,
    /// Create topics on first use (Metadata or Produce naming them).
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: u32,
    /// Largest request frame accepted (socket.request.max.bytes).
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES", default_value = "100m", value_parser = parse_size)]
    pub max_frame_bytes: u64,
    /// Segment size (segment.bytes), at most 2 GiB.
    #[arg(long, env = "SLUICE_SEGMENT_BYTES", default_value = "1g", value_parser = parse_size)]
    pub segment_bytes: u64,
    /// Delete segments whose newest record is older than this many ms (retention.ms).
    #[arg(long, env = "SLUICE_RETENTION_MS", default_value_t = 7 * 24 * 3600 * 1000)]
    pub retention_ms: u64,
    /// Keep at most this many bytes per partition (retention.bytes); unlimited if unset.
    #[arg(long, env = "SLUICE_RETENTION_BYTES", value_parser = parse_size)]
    pub retention_bytes: Option<u64>,
    /// How long a new group waits for more members before its first
    /// rebalance completes (group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Keep an empty group's committed offsets this long (offsets.retention.minutes).
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MINUTES", default_value_t = 7 * 24 * 60)]
    pub offsets_retention_minutes: u64,
    /// Partitions of the internal `__consumer_offsets` topic
    /// (offsets.topic.num.partitions); fixed once the topic exists.
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_NUM_PARTITIONS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub offsets_topic_num_partitions: u32,
    /// Replicas of `__consumer_offsets` in a cluster
    /// (offsets.topic.replication.factor); groups wait until this many
    /// brokers are alive.
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_REPLICATION_FACTOR", default_value_t = 3, value_parser = clap::value_parser!(i16).range(1..))]
    pub offsets_topic_replication_factor: i16,
    /// How long an OffsetCommit waits for the offsets partition's ISR
    /// (offsets.commit.timeout.ms).
    #[arg(long, env = "SLUICE_OFFSETS_COMMIT_TIMEOUT_MS", default_value_t = 5000)]
    pub offsets_commit_timeout_ms: u64,
    /// The longest transaction.timeout.ms a transactional producer may ask
    /// for (transaction.max.timeout.ms).
    #[arg(long, env = "SLUICE_TRANSACTION_MAX_TIMEOUT_MS", default_value_t = 900_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub transaction_max_timeout_ms: i32,
    /// Partitions of the internal `__transaction_state` topic
    /// (transaction.state.log.num.partitions); fixed once the topic exists.
    #[arg(long, env = "SLUICE_TRANSACTION_STATE_LOG_NUM_PARTITIONS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub transaction_state_log_num_partitions: u32,
    /// Replicas of `__transaction_state` in a cluster
    /// (transaction.state.log.replication.factor); transactional producers
    /// wait until this many brokers are alive.
    #[arg(long, env = "SLUICE_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", default_value_t = 3, value_parser = clap::value_parser!(i16).range(1..))]
    pub transaction_state_log_replication_factor: i16,
    /// How often transactions open past their timeout are looked for and
    /// aborted (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    #[arg(long, env = "SLUICE_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// Gather Fetch responses off the async workers and read cold regions into
    /// the page cache before the zero-copy send (`false`: send straight from
    /// the worker, as Kafka does; for measuring what isolation saves).
    #[arg(long, env = "SLUICE_FETCH_ISOLATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub fetch_isolation: bool,
    /// Most client connections at once; more are closed on accept, logged.
    /// Default: 1000, or less if the process's open-file limit (raised to
    /// its hard limit at start) leaves less room beside the log's files.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one source address (max.connections.per.ip);
    /// default half of --max-connections, so one source cannot lock the
    /// others out.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Per-address exceptions, `IP:N[,IP:N…]` (max.connections.per.ip.overrides).
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_IP_OVERRIDES", value_parser = parse_ip_overrides)]
    pub max_connections_per_ip_overrides: Option<IpOverrides>,
    /// Request bytes all connections may hold at once before readers wait
    /// (queued.max.request.bytes); at least --max-frame-bytes.
    #[arg(long, env = "SLUICE_MAX_BUFFERED_REQUEST_BYTES", default_value = "512m", value_parser = parse_size)]
    pub max_buffered_request_bytes: u64,
    /// Partitions one Fetch request may name; more closes the connection.
    #[arg(
        long,
        env = "SLUICE_MAX_PARTITIONS_PER_FETCH",
        default_value_t = 10_000
    )]
    pub max_partitions_per_fetch: usize,
    /// Close a connection that sends no request for this long (connections.max.idle.ms).
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_MS", default_value_t = 600_000)]
    pub idle_timeout_ms: u64,
    /// Close a connection whose started frame is not complete within this.
    #[arg(long, env = "SLUICE_FRAME_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub frame_read_timeout_ms: u64,
    /// Run the log cleaner that compacts topics with cleanup.policy=compact
    /// (log.cleaner.enable).
    #[arg(long, env = "SLUICE_LOG_CLEANER_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_cleaner_enable: bool,
    /// Cleaner threads (log.cleaner.threads).
    #[arg(long, env = "SLUICE_LOG_CLEANER_THREADS", default_value_t = 1)]
    pub log_cleaner_threads: usize,
    /// Memory for the cleaner's key → offset map, shared by its threads
    /// (log.cleaner.dedupe.buffer.size).
    #[arg(long, env = "SLUICE_LOG_CLEANER_DEDUPE_BUFFER_SIZE", default_value = "128m", value_parser = parse_size)]
    pub log_cleaner_dedupe_buffer_size: u64,
    /// Bytes per second the cleaner may read and write, all threads
    /// together (log.cleaner.io.max.bytes.per.second); unlimited if unset.
    #[arg(long, env = "SLUICE_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND", value_parser = parse_size)]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// How long a cleaner thread sleeps when no partition is due
    /// (log.cleaner.backoff.ms).
    #[arg(long, env = "SLUICE_LOG_CLEANER_BACKOFF_MS", default_value_t = 15_000)]
    pub log_cleaner_backoff_ms: u64,
    /// Longest metadata string an OffsetCommit may store (offset.metadata.max.bytes).
    #[arg(long, env = "SLUICE_OFFSET_METADATA_MAX_BYTES", default_value_t = 4096)]
    pub offset_metadata_max_bytes: usize,
    /// Serve Prometheus text metrics (data-path counters) on this address; off if unset.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,
    /// This broker's id (node.id); unique in a cluster.
    #[arg(long, env = "SLUICE_NODE_ID", default_value_t = 0)]
    pub node_id: i32,
    /// Join a cluster coordinated by etcd: etcd://HOST:PORT[,HOST:PORT…].
    /// Without it the broker runs alone and leads every partition.
    #[arg(long, env = "SLUICE_CLUSTER")]
    pub cluster: Option<String>,
    /// The etcd key prefix the cluster lives under (several clusters can share one etcd).
    #[arg(long, env = "SLUICE_CLUSTER_PREFIX", default_value = "/sluice")]
    pub cluster_prefix: String,
    /// This broker's rack (broker.rack), for spreading replicas.
    #[arg(long, env = "SLUICE_RACK")]
    pub rack: Option<String>,
    /// TTL of the etcd lease a broker's registration is held under: a broker silent this long is dead.
    #[arg(long, env = "SLUICE_CLUSTER_LEASE_MS", default_value_t = 6000)]
    pub cluster_lease_ms: u64,
    /// Replicas of a topic created without a replication factor (default.replication.factor).
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: i16,
    /// A follower not caught up for this long leaves the ISR (replica.lag.time.max.ms).
    #[arg(long, env = "SLUICE_REPLICA_LAG_TIME_MAX_MS", default_value_t = 30_000)]
    pub replica_lag_time_max_ms: u64,
    /// How long a follower's fetch waits at the leader for records (replica.fetch.wait.max.ms).
    #[arg(long, env = "SLUICE_REPLICA_FETCH_WAIT_MAX_MS", default_value_t = 500)]
    pub replica_fetch_wait_max_ms: u64,
    /// Move leaderships back to preferred replicas when a broker leads too few of its own (auto.leader.rebalance.enable).
    #[arg(long, env = "SLUICE_AUTO_LEADER_REBALANCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_leader_rebalance: bool,
    /// How often the controller checks leader imbalance (leader.imbalance.check.interval.seconds, in ms).
    #[arg(
        long,
        env = "SLUICE_LEADER_IMBALANCE_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub leader_imbalance_check_interval_ms: u64,
    /// Authorize with ACLs kept in the data directory (`acl`, Kafka's
    /// StandardAuthorizer; managed with `sluice acl`), or not at all (`none`:
    /// the ACL APIs answer SECURITY_DISABLED).
    #[arg(long, env = "SLUICE_AUTHORIZER", default_value = "none", value_parser = ["acl", "none"])]
    pub authorizer: String,
    /// A principal allowed everything whatever the ACLs say (super.users),
    /// `User:NAME`; repeatable, or `;`-separated as Kafka writes them.
    #[arg(
        long = "super-user",
        env = "SLUICE_SUPER_USER",
        value_delimiter = ';',
        value_name = "PRINCIPAL"
    )]
    pub super_users: Vec<Principal>,
    /// With --authorizer acl, a resource no ACL applies to is open to
    /// everyone (allow.everyone.if.no.acl.found).
    #[arg(long, env = "SLUICE_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    pub allow_everyone_if_no_acl_found: bool,
}

/// `max.connections.per.ip.overrides`: address → limit.
#[derive(Debug, Clone, Default)]
pub struct IpOverrides(pub HashMap<IpAddr, usize>);

fn parse_ip_overrides(s: &str) -> Result<IpOverrides, String> {
    let mut map = HashMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (ip, n) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} is not IP:N"))?;
        let ip: IpAddr = ip
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let n: usize = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
        map.insert(ip, n);
    }
    Ok(IpOverrides(map))
}

/// Raises the open-file soft limit to the hard limit and returns it: every
/// connection and every segment file is a descriptor.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// The default --max-connections: 1000, within three quarters of the file
/// limit (the rest is for segments, indexes and the process itself).
fn default_max_connections(file_limit: u64) -> usize {
    (file_limit.saturating_mul(3) / 4).clamp(16, 1000) as usize
}

fn parse_flush(s: &str) -> Result<FlushPolicy, String> {
    s.parse()
}

fn parse_append(s: &str) -> Result<AppendPath, String> {
    s.parse()
}

pub fn serve(args: ServeArgs) -> Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    // A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills
    // the process; ignored, the write fails with EFBIG and only the partition
    // it was for goes offline.
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread
    // that could depend on it starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    anyhow::ensure!(
        args.segment_bytes <= 2 << 30,
        "--segment-bytes is at most 2 GiB"
    );
    let listeners = listeners_of(&args)?;
    let inter_broker_listener = match &args.inter_broker_listener_name {
        Some(name) => {
            let name = name.to_ascii_uppercase();
            anyhow::ensure!(
                listeners.iter().any(|l| l.name == name),
                "--inter-broker-listener-name {name}: no such listener"
            );
            name
        }
        None => listeners
            .iter()
            .find(|l| l.name == "PLAINTEXT")
            .unwrap_or(&listeners[0])
            .name
            .clone(),
    };
    let security = security_of(&args)?;
    let inter_broker_client = inter_broker_client_of(&args, &listeners, &inter_broker_listener)?;
    let cluster = match &args.cluster {
        None => None,
        Some(_) if args.node_id < 0 => {
            anyhow::bail!(
                "--node-id {}: a cluster broker's id is 0 or more",
                args.node_id
            )
        }
        Some(url) => Some(ClusterConfig {
            endpoints: ClusterConfig::parse_endpoints(url).map_err(anyhow::Error::msg)?,
            prefix: args.cluster_prefix.trim_end_matches('/').to_string(),
            rack: args.rack.clone(),
            lease_ttl: Duration::from_millis(args.cluster_lease_ms.max(1000)),
            default_replication_factor: args.default_replication_factor.max(1),
            replica_lag_time_max: Duration::from_millis(args.replica_lag_time_max_ms.max(100)),
            replica_fetch_wait_max: Duration::from_millis(args.replica_fetch_wait_max_ms),
            leader_rebalance_interval: args
                .auto_leader_rebalance
                .then(|| Duration::from_millis(args.leader_imbalance_check_interval_ms.max(100))),
            inter_broker_client,
        }),
    };
    let file_limit = raise_file_limit();
    let max_connections = args
        .max_connections
        .unwrap_or_else(|| default_max_connections(file_limit))
        .max(1);
    let config = BrokerConfig {
        listeners,
        inter_broker_listener,
        security,
        data_dir: args.data_dir,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions.max(1),
        max_frame_bytes: args.max_frame_bytes as usize,
        data_path: args.data_path,
        log: LogConfig {
            segment_bytes: args.segment_bytes,
            retention_bytes: args.retention_bytes,
            retention_age: Some(Duration::from_millis(args.retention_ms)),
            flush: args.flush,
            append_path: args.append,
            ..LogConfig::default()
        },
        group_initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
        offsets_retention: Duration::from_secs(args.offsets_retention_minutes * 60),
        offsets_topic_num_partitions: args.offsets_topic_num_partitions,
        offsets_topic_replication_factor: args.offsets_topic_replication_factor,
        offsets_commit_timeout: Duration::from_millis(args.offsets_commit_timeout_ms.max(1)),
        transaction_max_timeout_ms: args.transaction_max_timeout_ms,
        transaction_state_log_num_partitions: args.transaction_state_log_num_partitions,
        transaction_state_log_replication_factor: args.transaction_state_log_replication_factor,
        transaction_abort_interval: Duration::from_millis(
            args.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        ),
        fetch_isolation: args.fetch_isolation,
        node_id: args.node_id,
        cluster,
        max_connections,
        max_connections_per_ip: args
            .max_connections_per_ip
            .unwrap_or(max_connections / 2)
            .max(1),
        max_connections_per_ip_overrides: args
            .max_connections_per_ip_overrides
            .unwrap_or_default()
            .0,
        offset_metadata_max_bytes: args.offset_metadata_max_bytes,
        cleaner: args.log_cleaner_enable.then(|| CleanerConfig {
            threads: args.log_cleaner_threads.max(1),
            dedupe_buffer_bytes: args.log_cleaner_dedupe_buffer_size as usize,
            io_max_bytes_per_second: args.log_cleaner_io_max_bytes_per_second,
            backoff: Duration::from_millis(args.log_cleaner_backoff_ms.max(1)),
            ..CleanerConfig::default()
        }),
        max_buffered_request_bytes: (args.max_buffered_request_bytes as usize)
            .max(args.max_frame_bytes as usize),
        max_partitions_per_fetch: args.max_partitions_per_fetch.max(1),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms.max(1)),
        frame_read_timeout: Duration::from_millis(args.frame_read_timeout_ms.max(1)),
        authorizer_acl: args.authorizer == "acl",
        super_users: args.super_users,
        allow_everyone_if_no_acl_found: args.allow_everyone_if_no_acl_found,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking-pool threads live on between bursts instead of being
        // created and retired (tokio's default keeps them 10 s): each
        // creation and exit maps or unmaps a stack under the process's
        // mmap_lock. Measured: no more whole-broker stalls while a consumer
        // catches up on cold data (docs/BENCHMARKS.md, target 4).
        .thread_keep_alive(Duration::from_secs(300))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let metrics_listen = args.metrics_listen;
    runtime.block_on(async move {
        let mut bound_listeners = Vec::new();
        let mut endpoints = Vec::new();
        for l in &config.listeners {
            let tcp = tokio::net::TcpListener::bind(l.bind)
                .await
                .with_context(|| format!("listening on {} ({})", l.bind, l.name))?;
            let bound = tcp.local_addr()?;
            let (host, port) = l
                .advertised
                .clone()
                .unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
            endpoints.push(ListenerAddress {
                name: l.name.clone(),
                host,
                port,
            });
            bound_listeners.push(BoundListener {
                info: Arc::new(ListenerInfo {
                    name: l.name.clone(),
                    protocol: l.protocol,
                }),
                tcp,
            });
        }
        let bound = bound_listeners[0].tcp.local_addr()?;
        let advertised = endpoints
            .iter()
            .map(|e| format!("{}://{}:{}", e.name, e.host, e.port))
            .collect::<Vec<_>>()
            .join(",");
        let broker = Broker::open(config.clone(), endpoints)
            .with_context(|| format!("opening {}", config.data_dir.display()))?;
        broker.join_cluster().await.context("joining the cluster")?;
        tracing::info!(
            listen = %bound,
            %advertised,
            cluster_id = broker.cluster_id(),
            max_connections = config.max_connections,
            data_dir = %config.data_dir.display(),
            data_path = %broker.data_path(),
            flush = %config.log.flush,
            append = %config.log.append_path,
            "sluice is serving"
        );
        // Lines for scripts and tests that start the broker on port 0: the
        // first listener's address, then every listener's.
        println!("sluice listening on {bound}");
        for l in &bound_listeners {
            println!("sluice listener {} on {}", l.info.name, l.tcp.local_addr()?);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = metrics_listen {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener on {addr}"))?;
            println!("sluice metrics on {}", metrics.local_addr()?);
            let broker = broker.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                broker
                    .serve_metrics(metrics, async move {
                        let _ = stop.changed().await;
                    })
                    .await;
            });
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // On SIGINT/SIGTERM a cluster broker first hands its leaderships
        // over (still serving), then stops.
        let handing_over = broker.clone();
        // SIGHUP re-reads the TLS certificate and key.
        let reloading = broker.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: TLS files will not be reloaded");
                return;
            };
            while hup.recv().await.is_some() {
                match reloading.reload_tls() {
                    Ok(true) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Ok(false) => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
                    Err(e) => {
                        tracing::error!("SIGHUP: TLS files not reloaded, keeping the old ones: {e}")
                    }
                }
            }
        });
        broker
            .serve(bound_listeners, async move {
                shutdown_signal().await;
                handing_over.controlled_shutdown().await;
            })
            .await;
        let _ = stop_tx.send(true);
        broker.leave_cluster().await;
        tracing::info!("shutting down: flushing and marking a clean shutdown");
        broker.close().context("closing the log")?;
        Ok(())
    })
}

/// The listeners from `--listen` and `--listener`, with their protocols and
/// advertised addresses.
fn listeners_of(args: &ServeArgs) -> Result<Vec<ListenerConfig>> {
    let mut map: HashMap<String, SecurityProtocol> = SecurityProtocol::ALL
        .iter()
        .map(|p| (p.name().to_string(), *p))
        .collect();
    for pair in &args.listener_security_protocol_map {
        let (name, proto) = pair
            .split_once(':')
            .with_context(|| format!("{pair:?} is not NAME:PROTOCOL"))?;
        let proto = SecurityProtocol::from_name(proto)
            .with_context(|| format!("{pair:?}: {proto:?} is not a security protocol"))?;
        map.insert(name.to_ascii_uppercase(), proto);
    }
    let mut listeners = Vec::new();
    if args.listen.is_some() || args.listeners.is_empty() {
        let addr = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        listeners.push(ListenerConfig::plaintext(addr));
    }
    for url in &args.listeners {
        let (name, host, port) = parse_listener_url(url).map_err(anyhow::Error::msg)?;
        let protocol = *map.get(&name).with_context(|| {
            format!("listener {name}: not a protocol name; map it with --listener-security-protocol-map {name}:PROTOCOL")
        })?;
        let ip: IpAddr = if host.is_empty() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            host.parse().with_context(|| {
                format!("{url:?}: bind to an IP address (host names are for --advertised-listener)")
            })?
        };
        anyhow::ensure!(
            listeners.iter().all(|l: &ListenerConfig| l.name != name),
            "listener {name} is given twice"
        );
        listeners.push(ListenerConfig {
            name,
            protocol,
            bind: SocketAddr::new(ip, port),
            advertised: None,
        });
    }
    for a in &args.advertised_listeners {
        let (name, rest) = match a.split_once("://") {
            Some((name, rest)) => (name.to_ascii_uppercase(), rest),
            None => (listeners[0].name.clone(), a.as_str()),
        };
        let addr: Advertised = rest.parse().map_err(anyhow::Error::msg)?;
        let l = listeners
            .iter_mut()
            .find(|l| l.name == name)
            .with_context(|| format!("--advertised-listener {a}: no listener {name}"))?;
        l.advertised = Some((addr.host, addr.port));
    }
    // Clients cannot connect to a wildcard: refuse to guess which of the
    // machine's names they should be given.
    if let Some(l) = listeners
        .iter()
        .find(|l| l.advertised.is_none() && l.bind.ip().is_unspecified())
    {
        anyhow::bail!(
            "listener {} on {} is a wildcard address: set --advertised-listener {}://HOST:PORT \
             (or SLUICE_ADVERTISED_LISTENER) to the name clients should connect to",
            l.name,
            l.bind,
            l.name
        );
    }
    Ok(listeners)
}

/// How this broker connects to the others: from
/// --inter-broker-client-config, which must speak the inter-broker
/// listener's protocol.
fn inter_broker_client_of(
    args: &ServeArgs,
    listeners: &[ListenerConfig],
    inter_broker: &str,
) -> Result<sluice_client::ClientSecurity> {
    let protocol = listeners
        .iter()
        .find(|l| l.name == inter_broker)
        .map(|l| l.protocol)
        .unwrap_or(SecurityProtocol::Plaintext);
    let Some(path) = &args.inter_broker_client_config else {
        anyhow::ensure!(
            protocol == SecurityProtocol::Plaintext || args.cluster.is_none(),
            "the inter-broker listener {inter_broker} is {protocol}: give \
             --inter-broker-client-config with the settings brokers connect with"
        );
        return Ok(sluice_client::ClientSecurity::default());
    };
    let (client, ignored) = sluice_client::ClientSecurity::from_file(path)
        .with_context(|| format!("--inter-broker-client-config {}", path.display()))?;
    for key in ignored {
        tracing::warn!("--inter-broker-client-config: {key} is not a setting Sluice uses");
    }
    anyhow::ensure!(
        client.protocol == protocol,
        "--inter-broker-client-config says {} but the inter-broker listener {inter_broker} is {protocol}",
        client.protocol.name()
    );
    Ok(client)
}

fn security_of(args: &ServeArgs) -> Result<SecurityConfig> {
    let client_auth = match args.tls_client_auth.as_deref() {
        None if args.tls_client_ca.is_some() => ClientAuth::Required,
        None | Some("none") => ClientAuth::None,
        Some("requested") => ClientAuth::Requested,
        Some("required") => ClientAuth::Required,
        Some(other) => anyhow::bail!("--tls-client-auth {other}: none, requested or required"),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            client_auth,
        }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    for m in &args.sasl_enabled_mechanisms {
        anyhow::ensure!(
            sluice_broker::security::sasl::SaslMechanism::from_name(m).is_some(),
            "--sasl-enabled-mechanisms: {m} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
        );
    }
    let tls_kernel_offload = args
        .tls_kernel_offload
        .parse()
        .map_err(|e| anyhow::anyhow!("--tls-kernel-offload {e}"))?;
    Ok(SecurityConfig {
        tls,
        tls_kernel_offload,
        sasl_mechanisms: args.sasl_enabled_mechanisms.clone(),
        max_reauth: (args.connections_max_reauth_ms > 0)
            .then(|| Duration::from_millis(args.connections_max_reauth_ms)),
        failed_auth_delay: Duration::from_millis(args.connection_failed_authentication_delay_ms),
        ..SecurityConfig::default()
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The settings a config file may hold: every `serve` flag but `--config`,
/// read off the flag definitions so the two cannot drift apart.
fn file_keys() -> Vec<String> {
    let serve = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| *long != "config")
        .map(String::from)
        .collect()
}

/// Loads `--config FILE` (or `SLUICE_CONFIG`) for `serve`: each setting not
/// given by a flag or already in the environment is put into the environment
/// (`SLUICE_<NAME>`), where clap reads it. Runs before any thread starts.
pub fn apply_config_file(args: &[std::ffi::OsString]) -> Result<()> {
    if args.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(());
    }
    let mut path = std::env::var_os("SLUICE_CONFIG").map(PathBuf::from);
    for (i, a) in args.iter().enumerate() {
        let Some(a) = a.to_str() else { continue };
        if a == "--config" {
            path = args.get(i + 1).map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing config file {}", path.display()))?;
    let keys = file_keys();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if !keys.contains(&name) {
            anyhow::bail!(
                "{}: unknown setting {key:?} (known: {})",
                path.display(),
                keys.join(", ")
            );
        }
        let given_as_flag = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{name}") || a.starts_with(&format!("--{name}=")))
        });
        let env = format!("SLUICE_{}", name.to_uppercase().replace('-', "_"));
        if given_as_flag || std::env::var_os(&env).is_some() {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => anyhow::bail!(
                "{}: setting {key:?} must be a string, number or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        // SAFETY: called at the top of main, before the runtime or any other
        // thread exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var(env, value) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_takes_every_serve_flag() {
        let keys = file_keys();
        for once_refused in [
            "max-connections",
            "max-buffered-request-bytes",
            "max-partitions-per-fetch",
            "idle-timeout-ms",
            "frame-read-timeout-ms",
        ] {
            assert!(keys.iter().any(|k| k == once_refused), "{once_refused}");
        }
        assert!(!keys.iter().any(|k| k == "config"));
    }

    #[test]
    fn the_connection_limit_fits_the_file_limit() {
        assert_eq!(default_max_connections(1_048_576), 1000);
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(8), 16);
    }

    #[test]
    fn per_address_overrides_parse_as_kafka_writes_them() {
        let o = parse_ip_overrides("127.0.0.1:200, [::1]:5").expect("parse");
        assert_eq!(o.0.get(&"127.0.0.1".parse().unwrap()), Some(&200));
        assert_eq!(o.0.get(&"::1".parse().unwrap()), Some(&5));
        assert!(parse_ip_overrides("host:5").is_err());
        assert!(parse_ip_overrides("127.0.0.1").is_err());
    }
}
