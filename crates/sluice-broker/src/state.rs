//! The broker's shared state: what every request handler may read or change.
//!
//! `net` owns sockets, `api` owns the protocol; both hold an
//! `Arc<BrokerState>`. Nothing here knows a connection exists.

use std::io;
use std::sync::Arc;

use sluice_log::{Cleaner, Log, Upkeep};
use tokio::sync::Notify;

use crate::broker_configs::DynamicConfigs;
use crate::cluster::peers::Peers;
use crate::cluster::{Cluster, ListenerAddress};
use crate::config::BrokerConfig;
use crate::coordinator::groups::{Groups, SystemClock};
use crate::coordinator::legacy_offsets;
use crate::coordinator::offsets::{self as offsets_topic, OFFSETS_TOPIC, OffsetStore};
use crate::coordinator::producer_ids::ProducerIds;
use crate::coordinator::transactions::{IdLocks, TRANSACTION_TOPIC, TxnStore};
use crate::meta_properties::MetaProperties;
use crate::metrics::{DataPathStats, Latencies};
use crate::replication::Replicas;
use crate::security::acl::{AclStore, Authorizer};
use crate::security::credentials::CredentialStore;
use crate::security::quotas::{QuotaConfig, Quotas};
use crate::security::sasl::{AuthStats, FailureBackoff};

/// The host and port clients are told to connect to (Kafka's
/// `advertised.listeners`): a host name or an IP, never a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Advertised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Advertised {
    type Err = String;

    /// `HOST:PORT`, `[IPV6]:PORT`, or either behind `PLAINTEXT://`.
    fn from_str(s: &str) -> Result<Advertised, String> {
        let bare = s.strip_prefix("PLAINTEXT://").unwrap_or(s);
        let (host, port) = bare
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        if host.is_empty() || port == 0 {
            return Err(format!("{s:?}: a host and a non-zero port are needed"));
        }
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "{s:?}: clients cannot connect to a wildcard address; advertise a host name or IP they can reach"
            ));
        }
        Ok(Advertised {
            host: host.to_string(),
            port,
        })
    }
}

/// Everything the handlers share.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub log: Arc<Log>,
    /// This data directory's identity (`meta.properties`).
    pub meta: MetaProperties,
    /// The inter-broker listener's advertised address (the one registered
    /// in a cluster, and other brokers connect to).
    pub advertised: Advertised,
    /// Every listener's advertised address, by listener name.
    pub endpoints: Vec<ListenerAddress>,
    /// SCRAM users (single node: the data directory's file).
    pub credentials: Arc<CredentialStore>,
    /// Failed authentications per address, to slow the next ones.
    pub auth_failures: FailureBackoff,
    pub auth_stats: AuthStats,
    /// Woken after every append (and, in a cluster, whenever a high
    /// watermark moves), so parked fetches re-check their partitions.
    pub appended: Arc<Notify>,
    pub stats: DataPathStats,
    pub latencies: Latencies,
    pub producer_ids: ProducerIds,
    pub groups: Groups,
    pub offsets: Arc<OffsetStore>,
    /// The transactional ids of the `__transaction_state` partitions led here.
    pub txns: Arc<TxnStore>,
    pub txn_locks: IdLocks,
    /// Connections to the other brokers (transaction markers).
    pub peers: Arc<Peers>,
    /// Broker configs changed at run time (AlterConfigs on the broker).
    pub dynamic: DynamicConfigs,
    /// Client quotas (`client-quotas` in the data directory).
    pub quotas: Arc<Quotas>,
    /// The ACLs and who may do what (`--authorizer acl`); None: no
    /// authorizer (the ACL APIs answer SECURITY_DISABLED).
    pub authorizer: Option<Arc<Authorizer>>,
    /// The log cleaner's threads (compacted topics), when enabled; taken
    /// and dropped (stopped) before the log closes.
    cleaner: std::sync::Mutex<Option<Cleaner>>,
    /// Set once, before serving, when the broker runs in a cluster.
    cluster: std::sync::OnceLock<InCluster>,
    _upkeep: Upkeep,
}

/// A cluster broker's two planes: the etcd-backed metadata and the
/// replicas acting on it.
pub struct InCluster {
    pub cluster: Arc<Cluster>,
    pub replicas: Arc<Replicas>,
}

impl BrokerState {
    /// Opens the data directory (recovering it if the last run did not shut
    /// down cleanly), its identity and the coordinators' stores, and starts
    /// the log's upkeep.
    pub fn open(config: BrokerConfig, advertised: Advertised) -> io::Result<BrokerState> {
        let endpoints = vec![ListenerAddress {
            name: config.inter_broker_listener.clone(),
            host: advertised.host,
            port: advertised.port,
        }];
        BrokerState::open_with_listeners(config, endpoints)
    }

    /// Opens the state for a broker advertising `endpoints` (one per
    /// listener, the inter-broker listener's among them).
    pub fn open_with_listeners(
        config: BrokerConfig,
        endpoints: Vec<ListenerAddress>,
    ) -> io::Result<BrokerState> {
        let advertised = endpoints
            .iter()
            .find(|e| e.name == config.inter_broker_listener)
            .or(endpoints.first())
            .map(|e| Advertised {
                host: e.host.clone(),
                port: e.port,
            })
            .ok_or_else(|| io::Error::other("a broker needs a listener"))?;
        // The identity first: a directory refused for a damaged
        // meta.properties is left as it was (opening the log would take its
        // clean-shutdown marker and force a full recovery next time).
        std::fs::create_dir_all(&config.data_dir)?;
        let meta = MetaProperties::load_or_create(&config.data_dir, config.node_id)?;
        // The log opens with the dynamic broker configs already over the
        // static ones: no topic runs with a default it no longer has.
        let dynamic = DynamicConfigs::load(&config.data_dir)?;
        let defaults = dynamic.resolve(&config.log).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored dynamic broker config refused: {e}"),
            )
        })?;
        let quotas = Arc::new(Quotas::open(&config.data_dir, QuotaConfig::default())?);
        // Refused for a damaged `acls` before the log opens, as above.
        let authorizer = if config.authorizer_acl {
            Some(Arc::new(Authorizer::new(
                AclStore::open(&config.data_dir)?,
                config.super_users.clone(),
                config.allow_everyone_if_no_acl_found,
            )))
        } else {
            None
        };
        let log = Arc::new(Log::open(&config.data_dir, defaults)?);
        let upkeep = log.start_upkeep(std::time::Duration::from_secs(60))?;
        let cleaner = match &config.cleaner {
            Some(cleaner) => Some(log.start_cleaner(cleaner.clone())?),
            None => None,
        };
        let producer_ids = ProducerIds::open(&config.data_dir)?;
        // The offsets topic's partition count is fixed once it exists:
        // groups hash onto it.
        let offsets_partitions = log
            .partition_count(OFFSETS_TOPIC)
            .unwrap_or(config.offsets_topic_num_partitions);
        let offsets = Arc::new(OffsetStore::new(offsets_partitions));
        if config.cluster.is_none() {
            migrate_legacy_offsets(&config.data_dir, &log, &offsets)?;
            if crate::security::shared::clear_in_cluster_mark(&config.data_dir)? {
                tracing::info!(
                    "this data directory was a cluster broker's; running single-node, its own \
                     SCRAM credentials, ACLs and client quotas files are used again"
                );
            }
        } else if config.data_dir.join(legacy_offsets::FILE).exists() {
            tracing::warn!(
                "{} holds committed offsets of a single-node broker; a cluster \
                 broker does not migrate them (start it once without --cluster \
                 to move them into {OFFSETS_TOPIC})",
                legacy_offsets::FILE
            );
        }
        let txns = Arc::new(TxnStore::new(
            log.partition_count(TRANSACTION_TOPIC)
                .unwrap_or(config.transaction_state_log_num_partitions),
        ));
        let groups = Groups::new(config.group_initial_rebalance_delay, Arc::new(SystemClock));
        let credentials = Arc::new(CredentialStore::open(&config.data_dir)?);
        let peers = Arc::new(Peers::new(
            config
                .cluster
                .as_ref()
                .map(|c| c.inter_broker_client.clone())
                .unwrap_or_default(),
        ));
        let auth_failures = FailureBackoff::new(config.security.failed_auth_delay);
        Ok(BrokerState {
            config,
            log,
            meta,
            advertised,
            endpoints,
            credentials,
            auth_failures,
            auth_stats: AuthStats::default(),
            appended: Arc::new(Notify::new()),
            stats: DataPathStats::default(),
            latencies: Latencies::default(),
            producer_ids,
            groups,
            offsets,
            txns,
            txn_locks: IdLocks::default(),
            peers,
            dynamic,
            quotas,
            authorizer,
            cleaner: std::sync::Mutex::new(cleaner),
            cluster: std::sync::OnceLock::new(),
            _upkeep: upkeep,
        })
    }

    /// Joins the cluster named in the config (a no-op for a single-node
    /// broker): registers in etcd and starts acting on the cluster state.
    pub async fn join_cluster(&self) -> io::Result<()> {
        let Some(cfg) = &self.config.cluster else {
            return Ok(());
        };
        let cluster = Cluster::start(
            self.config.node_id,
            self.advertised.host.clone(),
            self.advertised.port,
            self.endpoints.clone(),
            cfg,
        )
        .await
        .map_err(|e| io::Error::other(format!("joining the cluster: {e}")))?;
        if cluster.cluster_id() != self.meta.cluster_id {
            tracing::info!(
                etcd = %cluster.cluster_id(),
                data_dir = %self.meta.cluster_id,
                "the cluster's id (from etcd) is the one clients are told"
            );
        }
        crate::security_sync::start(
            cluster.clone(),
            crate::security_sync::Stores {
                credentials: self.credentials.clone(),
                quotas: self.quotas.clone(),
                acls: self.authorizer.clone(),
            },
        )
        .await?;
        crate::security::shared::mark_in_cluster(
            &self.config.data_dir,
            &format!("{} under {}", cfg.endpoints.join(","), cfg.prefix),
        )?;
        let replicas = Replicas::start(
            self.log.clone(),
            cluster.clone(),
            cfg.clone(),
            self.appended.clone(),
        );
        let _ = self.cluster.set(InCluster { cluster, replicas });
        Ok(())
    }

    /// Where a client on `listener` reaches broker `node` (this one, or one
    /// the cluster knows); None if it has no such listener or is unknown.
    pub fn endpoint(&self, node: i32, listener: &str) -> Option<(String, u16)> {
        if node == self.meta.node_id {
            return self
                .endpoints
                .iter()
                .find(|e| e.name == listener)
                .map(|e| (e.host.clone(), e.port));
        }
        let c = self.cluster()?;
        let snapshot = c.cluster.snapshot();
        let b = snapshot.brokers.get(&node)?;
        b.endpoint(listener).map(|(h, p)| (h.to_string(), p))
    }

    /// The cluster this broker is in; None for a single-node broker.
    pub fn cluster(&self) -> Option<&InCluster> {
        self.cluster.get()
    }

    /// The id clients are told: etcd's in a cluster, `meta.properties`'
    /// otherwise.
    pub fn cluster_id(&self) -> String {
        match self.cluster() {
            Some(c) => c.cluster.cluster_id(),
            None => self.meta.cluster_id.clone(),
        }
    }

    /// Stops the cleaner's threads (a pass in progress gives up at its next
    /// batch) and waits for them.
    pub fn stop_cleaner(&self) {
        let cleaner = self
            .cleaner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(cleaner);
    }
}

/// The topic configs of `__consumer_offsets` (Kafka's: compacted, 100 MiB
/// segments).
pub fn offsets_topic_configs() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), (100u64 << 20).to_string()),
        ("compression.type".to_string(), "producer".to_string()),
    ])
}

/// The topic configs of `__transaction_state` (Kafka's: compacted, 100 MiB
/// segments, `transaction.state.log.min.isr` 2, or fewer with fewer replicas).
pub fn transaction_topic_configs(
    replication_factor: i16,
) -> std::collections::BTreeMap<String, String> {
    let mut configs = offsets_topic_configs();
    configs.insert(
        "min.insync.replicas".to_string(),
        replication_factor.clamp(1, 2).to_string(),
    );
    configs
}

/// Moves a data directory's committed offsets from the file Sluice kept
/// before `__consumer_offsets` into that topic, once, before serving: each
/// group's offsets become one batch in its partition, synced, and only
/// then is the old file renamed `consumer-offsets.log.migrated` (a crash
/// before the rename migrates again on the next start, writing the same
/// offsets twice, which changes nothing).
fn migrate_legacy_offsets(
    dir: &std::path::Path,
    log: &Log,
    offsets: &OffsetStore,
) -> io::Result<()> {
    let path = dir.join(legacy_offsets::FILE);
    if !path.exists() {
        return Ok(());
    }
    let mut by_group: std::collections::BTreeMap<String, Vec<offsets_topic::CommitEntry>> =
        Default::default();
    for (group, entry) in legacy_offsets::read(dir)? {
        by_group.entry(group).or_default().push(entry);
    }
    if !by_group.is_empty() {
        match log.create_topic_with(
            OFFSETS_TOPIC,
            offsets.partitions(),
            &offsets_topic_configs(),
        ) {
            Ok(()) | Err(sluice_log::TopicError::Exists(_)) => {}
            Err(e) => return Err(io::Error::other(format!("creating {OFFSETS_TOPIC}: {e}"))),
        }
    }
    let mut touched = std::collections::BTreeSet::new();
    let mut count = 0usize;
    for (group, entries) in &by_group {
        let p = offsets.partition_for(group);
        let part = log
            .partition(OFFSETS_TOPIC, p as u32)
            .ok_or_else(|| io::Error::other(format!("{OFFSETS_TOPIC}-{p} is missing")))?;
        let records = offsets_topic::commit_records(group, entries)?;
        let batch = offsets_topic::encode_batch(&records, sluice_log::now_ms())?;
        let epoch = part.latest_epoch().unwrap_or(0).max(0);
        part.append(&batch, epoch)
            .map_err(|e| io::Error::other(format!("migrating offsets of group {group}: {e}")))?;
        count += entries.len();
        touched.insert(p);
    }
    for p in touched {
        if let Some(part) = log.partition(OFFSETS_TOPIC, p as u32) {
            part.flush()?;
        }
    }
    let done = dir.join(format!("{}.migrated", legacy_offsets::FILE));
    std::fs::rename(&path, &done)?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(
        groups = by_group.len(),
        offsets = count,
        "migrated committed offsets from {} into {OFFSETS_TOPIC}",
        legacy_offsets::FILE
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Advertised;

    #[test]
    fn advertised_takes_host_names_and_refuses_wildcards() {
        let a: Advertised = "kafka-1.internal:9092".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("kafka-1.internal", 9092));
        let a: Advertised = "PLAINTEXT://[::1]:19092".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 19092));
        assert_eq!(a.to_string(), "[::1]:19092");
        assert!("0.0.0.0:9092".parse::<Advertised>().is_err());
        assert!("[::]:9092".parse::<Advertised>().is_err());
        assert!("host".parse::<Advertised>().is_err());
        assert!("host:0".parse::<Advertised>().is_err());
        assert!(":9092".parse::<Advertised>().is_err());
    }
}
