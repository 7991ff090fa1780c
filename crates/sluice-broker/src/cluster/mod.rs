//! The metadata plane of a Sluice cluster, coordinated by etcd as Kafka's
//! was by ZooKeeper.
//!
//! Every key lives under the configured prefix (`/sluice`):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `cluster_id` | 22-char base64 of a UUID | the first broker, create-if-absent |
//! | `brokers/<id>` | [`BrokerInfo`] JSON, under the broker's lease | the broker |
//! | `controller/<lease>` | the candidate's broker id | etcd's election API |
//! | `topics/<t>` | [`TopicInfo`] JSON | any broker (CreateTopics & co.) |
//! | `partitions/<t>/<p>` | [`PartitionState`] JSON | the controller only |
//! | `isr-requests/<t>/<p>` | [`model::IsrRequest`] JSON, under the leader's lease | a partition leader |
//!
//! A broker is alive while its registration exists: its lease is kept alive
//! every TTL/3, and a broker that finds its lease gone registers again under
//! a new one (a new incarnation, which the controller treats as a death and
//! a return). One controller is elected with etcd's election API; the
//! create revision of its election key is the controller epoch, and every
//! controller write is a transaction conditioned on that key and on the
//! `mod_revision` of everything the decision read ([`controller`]). Every
//! broker watches the whole prefix with one watch and publishes a
//! [`ClusterSnapshot`] on each change ([`view`]).
//!
//! Imports only `crate::config` and `crate::metrics` from the broker.

pub mod controller;
mod etcd;
mod lease;
pub mod model;
pub mod peers;
mod stats;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use etcd_client::{Compare, CompareOp, DeleteOptions, LeaderKey, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use controller::{assign_replicas, validate_assignment};
pub use model::{
    BrokerInfo, ListenerAddress, PartitionState, ReassignRequest, TopicInfo,
    UNCLEAN_LEADER_ELECTION,
};
pub use stats::ClusterMetrics;
pub use view::ClusterSnapshot;

use crate::config::ClusterConfig;

/// The most keys one security metadata transaction writes (etcd refuses
/// more than 128 operations in a transaction by default).
pub const SECURITY_TXN_OPS: usize = 100;
use etcd::{Etcd, EtcdError};
use lease::LeaseState;
use model::IsrRequest;
use view::{View, ViewStore};

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("the topic already exists")]
    TopicExists,
    #[error("the topic does not exist")]
    UnknownTopic,
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidPartitions(String),
    /// The topic name is not a legal Kafka topic name.
    #[error("{0}")]
    InvalidTopic(String),
    /// This broker's lease expired (or was revoked): it was dead to the
    /// controller, whatever it led may have moved.
    #[error("this broker's etcd lease is gone")]
    LeaseLost,
    /// A newer controller epoch exists.
    #[error("fenced by a newer controller")]
    Fenced,
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("timed out waiting for the cluster")]
    Timeout,
}

impl From<EtcdError> for ClusterError {
    fn from(e: EtcdError) -> ClusterError {
        match e {
            EtcdError::LeaseNotFound => ClusterError::LeaseLost,
            EtcdError::Timeout => ClusterError::Timeout,
            EtcdError::Unreachable(m) | EtcdError::Other(m) => ClusterError::Etcd(m),
        }
    }
}

/// How long `start` keeps trying to reach etcd.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `create_topic` and `create_partitions` wait for the controller
/// to create the new partitions' states (they succeed either way).
const PARTITIONS_WAIT: Duration = Duration::from_secs(5);
/// Attempts of a read-modify-write of a topic before giving up.
const TOPIC_UPDATE_ATTEMPTS: usize = 8;

/// Exponential backoff, 50 ms to 1 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// What the background tasks share.
pub(crate) struct Shared {
    pub(crate) node_id: i32,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) listeners: Vec<ListenerAddress>,
    pub(crate) cfg: ClusterConfig,
    pub(crate) etcd: Etcd,
    pub(crate) store: ViewStore,
    pub(crate) lease: watch::Sender<LeaseState>,
    /// Asks the keepalive task for a keepalive now.
    pub(crate) kick: Notify,
    pub(crate) stop: watch::Sender<bool>,
    /// The election key while this broker is the controller.
    pub(crate) leader_key: Mutex<Option<LeaderKey>>,
    pub(crate) cluster_id: String,
}

impl Shared {
    /// Resolves once the cluster is shutting down.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps; `false` if the cluster stopped meanwhile.
    pub(crate) async fn sleep(&self, pause: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = self.stopped() => false,
        }
    }
}

/// This broker's membership in the cluster: registration, the view of the
/// cluster, the controller when elected, and the admin operations.
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// When `confirm_lease` last warned that etcd is unreachable.
    warned: Mutex<Option<Instant>>,
    /// The producer ids this broker reserved and has not handed out yet:
    /// [next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

/// Producer ids a broker reserves at a time (Kafka's
/// `AllocateProducerIds` hands out blocks of 1000).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Retries while etcd is unreachable or slow, until `deadline`.
async fn retry<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EtcdError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e @ (EtcdError::Unreachable(_) | EtcdError::Timeout)) => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tracing::debug!("waiting for etcd: {e}");
                tokio::time::sleep(backoff.next()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the cluster id, creating it if this is the first broker.
async fn ensure_cluster_id(etcd: &Etcd) -> Result<String, EtcdError> {
    let key = etcd.keys.cluster_id();
    let candidate =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(key.clone(), candidate.clone(), None)])
        .or_else(vec![TxnOp::get(key.clone(), None)]);
    let resp = etcd.txn(txn, key.len() + candidate.len()).await?;
    if resp.succeeded() {
        tracing::info!("created cluster id {candidate} under {}", etcd.keys.root());
        return Ok(candidate);
    }
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op
            && let Some(kv) = get.kvs().first()
        {
            return Ok(String::from_utf8_lossy(kv.value()).into_owned());
        }
    }
    Err(EtcdError::Other("the cluster id vanished".into()))
}

/// Kafka's topic name rules.
fn validate_topic_name(name: &str) -> Result<(), ClusterError> {
    let invalid = |m: String| Err(ClusterError::InvalidTopic(m));
    if name.is_empty() {
        return invalid("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return invalid("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A random (start index, replica shift) for replica placement.
fn random_start(brokers: usize) -> (usize, usize) {
    let r = uuid::Uuid::new_v4().as_u128();
    let n = brokers.max(1) as u128;
    ((r % n) as usize, ((r >> 64) % n) as usize)
}

impl Cluster {
    /// Joins the cluster: connects to etcd (retrying for a while if it is
    /// not up yet), creates the cluster id if this is the first broker,
    /// registers this broker under a new lease, reads the cluster state and
    /// starts the keepalive, the watch and the controller campaign.
    pub async fn start(
        node_id: i32,
        host: String,
        port: u16,
        listeners: Vec<ListenerAddress>,
        cfg: &ClusterConfig,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let stats = Arc::new(ClusterMetrics::default());
        let etcd = Etcd::connect(&cfg.endpoints, &cfg.prefix, stats).await?;
        let deadline = Instant::now() + START_TIMEOUT;
        let cluster_id = retry(deadline, || ensure_cluster_id(&etcd)).await?;
        let keys = etcd.keys.clone();
        let placeholder = LeaseState {
            id: 0,
            ttl: cfg.lease_ttl,
            generation: 0,
            incarnation: 0,
            confirmed: None,
            lost: false,
            unreachable: None,
            unreachable_since: None,
        };
        let shared = Arc::new(Shared {
            node_id,
            host,
            port,
            listeners,
            cfg: cfg.clone(),
            etcd,
            store: ViewStore::new(keys, View::default()),
            lease: watch::channel(placeholder).0,
            kick: Notify::new(),
            stop: watch::channel(false).0,
            leader_key: Mutex::new(None),
            cluster_id,
        });
        let registered = retry(deadline, || lease::register(&shared, 1)).await?;
        shared.lease.send_replace(registered);
        let listed = retry(deadline, || shared.etcd.list()).await;
        let (kvs, revision) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                let id = shared.lease.borrow().id;
                let _ = shared.etcd.revoke(id).await;
                return Err(e.into());
            }
        };
        shared.etcd.stats().relists.fetch_add(1, Ordering::Relaxed);
        shared.store.replace(&kvs, revision, shared.etcd.stats());
        let tasks = vec![
            tokio::spawn(lease::keepalive_loop(shared.clone())),
            tokio::spawn(view::watch_loop(shared.clone(), revision)),
            tokio::spawn(controller::controller_loop(shared.clone())),
        ];
        Ok(Arc::new(Cluster {
            shared,
            tasks: Mutex::new(tasks),
            warned: Mutex::new(None),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }))
    }

    pub fn node_id(&self) -> i32 {
        self.shared.node_id
    }

    pub fn cluster_id(&self) -> String {
        self.shared.cluster_id.clone()
    }

    /// The cluster as this broker sees it now.
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.shared.store.snapshot()
    }

    /// Every new snapshot, as it is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterSnapshot>> {
        self.shared.store.subscribe()
    }

    /// Is etcd reachable right now (the last call, keepalive or watch
    /// message succeeded)?
    pub fn etcd_connected(&self) -> bool {
        self.shared
            .etcd
            .stats()
            .etcd_connected
            .load(Ordering::Acquire)
    }

    /// This broker is the controller now.
    pub fn is_controller(&self) -> bool {
        self.shared
            .etcd
            .stats()
            .is_controller
            .load(Ordering::Relaxed)
    }

    /// The counters for the metrics page.
    pub fn metrics(&self) -> &ClusterMetrics {
        self.shared.etcd.stats()
    }

    /// The lease this broker's registration is under now.
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.borrow().id
    }

    /// This broker's current incarnation (the revision of its registration;
    /// it changes when the broker registers again after losing its lease).
    pub fn incarnation(&self) -> i64 {
        self.shared.lease.borrow().incarnation
    }

    /// Leadership safety for `acks=all`: `Ok` when this broker's lease was
    /// confirmed alive by etcd within the last lease TTL, counted from when
    /// the confirming keepalive was sent (monotonic clock) — at once if a
    /// recent keepalive did, otherwise after a fresh keepalive round trip
    /// (waiting up to about a second). `LeaseLost` if etcd says the lease
    /// is gone (e.g. this process was stopped longer than the TTL), or it
    /// was replaced while waiting. `Ok` with a warning if etcd cannot be
    /// connected to: then no leadership can be changing either (Kafka keeps
    /// serving while ZooKeeper is down). `Timeout` if etcd is connected but
    /// does not answer in time.
    pub async fn confirm_lease(&self) -> Result<(), ClusterError> {
        self.confirm(None).await
    }

    /// [`confirm_lease`](Self::confirm_lease) for one incarnation:
    /// `LeaseLost` also when this broker has registered again since
    /// `incarnation` (a leader that took leadership under an older
    /// incarnation must not acknowledge under a newer one).
    pub async fn confirm_incarnation(&self, incarnation: i64) -> Result<(), ClusterError> {
        self.confirm(Some(incarnation)).await
    }

    async fn confirm(&self, incarnation: Option<i64>) -> Result<(), ClusterError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + lease::CONFIRM_WAIT;
        let mut rx = self.shared.lease.subscribe();
        let first = rx.borrow_and_update().clone();
        if incarnation.is_some_and(|i| i != first.incarnation) || first.lost {
            return Err(ClusterError::LeaseLost);
        }
        if *self.shared.stop.borrow() {
            return Err(ClusterError::LeaseLost);
        }
        let mut kicked = false;
        loop {
            let state = rx.borrow_and_update().clone();
            if state.generation != first.generation || state.lost {
                return Err(ClusterError::LeaseLost);
            }
            if state
                .confirmed
                .is_some_and(|sent| Instant::now() < sent + state.ttl)
            {
                return Ok(());
            }
            // etcd unreachable: acknowledge only if the lease was confirmed
            // alive up to when etcd went away (then no leadership can have
            // changed since). A leader that was paused past its lease and
            // wakes into an etcd hiccup has no such confirmation.
            let alive_when_lost = |s: &lease::LeaseState| {
                matches!((s.confirmed, s.unreachable_since),
                    (Some(sent), Some(since)) if sent + s.ttl > since)
            };
            if state.unreachable.is_some_and(|at| at >= started) && alive_when_lost(&state) {
                self.warn_unreachable();
                return Ok(());
            }
            if !kicked {
                self.shared.kick.notify_one();
                kicked = true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClusterError::LeaseLost),
                Err(_)
                    if (state.unreachable.is_some() || !self.etcd_connected())
                        && alive_when_lost(&rx.borrow()) =>
                {
                    self.warn_unreachable();
                    return Ok(());
                }
                Err(_) => return Err(ClusterError::Timeout),
            }
        }
    }

    fn warn_unreachable(&self) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            *warned = Some(Instant::now());
            tracing::warn!(
                "broker {}: etcd is unreachable, so this broker's lease cannot be confirmed; \
                 serving on (no leadership can change while etcd is down)",
                self.shared.node_id
            );
        }
    }

    fn live_brokers(view: &View) -> Vec<(i32, Option<String>)> {
        view.snap
            .brokers
            .values()
            .map(|b| (b.id, b.rack.clone()))
            .collect()
    }

    /// CreateTopics, on any broker: checks the request against the live
    /// brokers, places the replicas (Kafka's placement, rack-aware when
    /// every live broker has a rack) unless `assignment` gives them, and
    /// writes `topics/<name>` if it does not exist. The controller then
    /// creates the partitions' states; this waits (up to 5 s) until they
    /// show in this broker's view. `replication_factor` −1 is the
    /// configured default; with an `assignment`, `partitions` and
    /// `replication_factor` are −1 or agree with it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, ClusterError> {
        validate_topic_name(name)?;
        let view = self.shared.store.current();
        if view.snap.topics.contains_key(name) {
            return Err(ClusterError::TopicExists);
        }
        let brokers = Self::live_brokers(&view);
        let replicas = match assignment {
            Some(assignment) => {
                let live: BTreeSet<i32> = brokers.iter().map(|(id, _)| *id).collect();
                validate_assignment(&assignment, &live, None)?;
                let rf = assignment[0].len();
                if partitions != -1 && usize::try_from(partitions).ok() != Some(assignment.len()) {
                    return Err(ClusterError::InvalidReplicaAssignment(format!(
                        "{partitions} partitions requested but the assignment has {}",
                        assignment.len()
                    )));
                }
                if replication_factor != -1 && usize::try_from(replication_factor).ok() != Some(rf)
                {
                    return Err(ClusterError::InvalidReplicaAssignment(format!(
                        "replication factor {replication_factor} requested but the assignment \
                         has {rf} replicas per partition"
                    )));
                }
                assignment
            }
            None => {
                let rf = if replication_factor == -1 {
                    self.shared.cfg.default_replication_factor
                } else {
                    replication_factor
                };
                let (start, shift) = random_start(brokers.len());
                assign_replicas(&brokers, partitions, rf, start, shift, 0)?
            }
        };
        let info = TopicInfo {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            replicas,
            configs,
        };
        if validate_only {
            return Ok(info);
        }
        let key = self.shared.etcd.keys.topic(name);
        let value = serde_json::to_vec(&info).map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let bytes = key.len() + value.len();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key, value, None)]);
        let resp = self.shared.etcd.txn(txn, bytes).await?;
        if !resp.succeeded() {
            return Err(ClusterError::TopicExists);
        }
        tracing::info!(
            "created topic {name} ({} partitions, replicas {:?})",
            info.replicas.len(),
            info.replicas
        );
        self.wait_for_partitions(name, info.id, info.replicas.len())
            .await;
        Ok(info)
    }

    /// Waits (bounded) until this broker's view has states for the first
    /// `count` partitions of topic `id`.
    async fn wait_for_partitions(&self, name: &str, id: uuid::Uuid, count: usize) {
        let mut rx = self.shared.store.subscribe();
        let done = |snap: &ClusterSnapshot| {
            snap.topics.get(name).is_none_or(|t| t.id != id)
                || (0..count).all(|p| {
                    i32::try_from(p)
                        .is_ok_and(|p| snap.partitions.contains_key(&(name.to_string(), p)))
                })
        };
        let _ = tokio::time::timeout(PARTITIONS_WAIT, rx.wait_for(|s| done(s))).await;
    }

    /// DeleteTopics: removes the topic, its partition states and pending ISR
    /// requests in one transaction (any broker may).
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClusterError> {
        let keys = &self.shared.etcd.keys;
        let key = keys.topic(name);
        let txn = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Greater, 0)])
            .and_then(vec![
                TxnOp::delete(key.clone(), None),
                TxnOp::delete(
                    keys.partitions_of(name),
                    Some(DeleteOptions::new().with_prefix()),
                ),
                TxnOp::delete(
                    keys.isr_requests_of(name),
                    Some(DeleteOptions::new().with_prefix()),
                ),
                TxnOp::delete(
                    keys.reassignments_of(name),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        let resp = self.shared.etcd.txn(txn, key.len() * 3).await?;
        if !resp.succeeded() {
            return Err(ClusterError::UnknownTopic);
        }
        tracing::info!("deleted topic {name}");
        Ok(())
    }

    /// Reads a topic straight from etcd, with its `mod_revision`.
    async fn read_topic(&self, name: &str) -> Result<(TopicInfo, i64), ClusterError> {
        let (kv, _) = self
            .shared
            .etcd
            .get(&self.shared.etcd.keys.topic(name))
            .await?;
        let kv = kv.ok_or(ClusterError::UnknownTopic)?;
        let mut topic: TopicInfo = serde_json::from_slice(kv.value())
            .map_err(|e| ClusterError::Etcd(format!("topic {name}: {e}")))?;
        topic.name = name.to_string();
        Ok((topic, kv.mod_revision()))
    }

    /// Writes a topic if it has not changed since `mod_revision`: `false`
    /// if it has.
    async fn write_topic(
        &self,
        topic: &TopicInfo,
        mod_revision: i64,
    ) -> Result<bool, ClusterError> {
        let key = self.shared.etcd.keys.topic(&topic.name);
        let value = serde_json::to_vec(topic).map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let bytes = key.len() + value.len();
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![TxnOp::put(key, value, None)]);
        Ok(self.shared.etcd.txn(txn, bytes).await?.succeeded())
    }

    /// CreatePartitions: grows the topic to `total` partitions, placing the
    /// new ones as Kafka does (continuing from the existing assignment)
    /// unless `assignment` gives them (one entry per new partition). The
    /// controller creates their states; this waits (up to 5 s) for them.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ClusterError> {
        for _ in 0..TOPIC_UPDATE_ATTEMPTS {
            let (mut topic, revision) = self.read_topic(name).await?;
            let existing = topic.replicas.len();
            let wanted = usize::try_from(total).unwrap_or(0);
            if wanted < existing {
                return Err(ClusterError::InvalidPartitions(format!(
                    "Topic currently has {existing} partitions, which is higher than the \
                     requested {total}."
                )));
            }
            if wanted == existing {
                return Err(ClusterError::InvalidPartitions(format!(
                    "Topic already has {existing} partitions."
                )));
            }
            let added = wanted - existing;
            let rf = topic.replicas.first().map_or(1, Vec::len);
            let view = self.shared.store.current();
            let brokers = Self::live_brokers(&view);
            let new = match &assignment {
                Some(assignment) => {
                    if assignment.len() != added {
                        return Err(ClusterError::InvalidReplicaAssignment(format!(
                            "Increasing the number of partitions by {added} but {} assignments \
                             provided.",
                            assignment.len()
                        )));
                    }
                    let live: BTreeSet<i32> = brokers.iter().map(|(id, _)| *id).collect();
                    validate_assignment(assignment, &live, Some(rf))?;
                    assignment.clone()
                }
                None => {
                    // Kafka continues from the broker that holds partition
                    // 0's first replica.
                    let first = topic
                        .replicas
                        .first()
                        .and_then(|r| r.first())
                        .copied()
                        .unwrap_or(0);
                    let mut ids: Vec<i32> = brokers.iter().map(|(id, _)| *id).collect();
                    ids.sort_unstable();
                    let start = ids.iter().position(|id| *id >= first).unwrap_or(0);
                    let rf = i16::try_from(rf).unwrap_or(i16::MAX);
                    let added = i32::try_from(added).unwrap_or(i32::MAX);
                    let from = i32::try_from(existing).unwrap_or(i32::MAX);
                    assign_replicas(&brokers, added, rf, start, start, from)?
                }
            };
            if validate_only {
                return Ok(());
            }
            topic.replicas.extend(new);
            if self.write_topic(&topic, revision).await? {
                tracing::info!("topic {name} now has {total} partitions");
                self.wait_for_partitions(name, topic.id, wanted).await;
                return Ok(());
            }
        }
        Err(ClusterError::Timeout)
    }

    /// ElectLeaders for one partition (0: preferred, 1: unclean): asks the
    /// controller through `elect-requests/<t>/<p>` and waits (up to
    /// `timeout`) until it has handled the request. Returns the Kafka error
    /// code ElectLeaders answers with: NONE (a new leader), ELECTION_NOT_NEEDED,
    /// PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
    /// UNKNOWN_TOPIC_OR_PARTITION, or REQUEST_TIMED_OUT.
    pub async fn elect_leader(
        &self,
        topic: &str,
        partition: i32,
        election_type: i8,
        timeout: Duration,
    ) -> Result<i16, ClusterError> {
        use kafka_protocol::ResponseError as E;
        let at = (topic.to_string(), partition);
        let snapshot = self.snapshot();
        let (Some(replicas), Some(before)) = (
            snapshot.replicas(topic, partition),
            snapshot.partitions.get(&at).cloned(),
        ) else {
            return Ok(E::UnknownTopicOrPartition.code());
        };
        let preferred = replicas.first().copied().unwrap_or(-1);
        let needed = match election_type {
            0 => before.leader != preferred,
            _ => before.leader < 0 || !snapshot.is_alive(before.leader),
        };
        if !needed {
            return Ok(E::ElectionNotNeeded.code());
        }
        let key = self.shared.etcd.keys.elect_request(topic, partition);
        let value = serde_json::to_vec(&model::ElectRequest { election_type })
            .map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let bytes = key.len() + value.len();
        let txn = Txn::new().and_then(vec![TxnOp::put(key, value, None)]);
        let written = self.shared.etcd.txn(txn, bytes).await?;
        let revision = written.header().map_or(0, |h| h.revision());
        let mut rx = self.subscribe();
        let handled = tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.revision >= revision && !s.elect_pending.contains(&at) {
                        return s.partitions.get(&at).cloned();
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let after = match handled {
            Ok(Some(state)) => state,
            Ok(None) => return Ok(E::UnknownTopicOrPartition.code()),
            Err(_) => return Ok(E::RequestTimedOut.code()),
        };
        let elected = after.leader_epoch > before.leader_epoch && after.leader >= 0;
        Ok(match election_type {
            0 if after.leader == preferred => 0,
            0 => E::PreferredLeaderNotAvailable.code(),
            _ if elected => 0,
            _ => E::EligibleLeadersNotAvailable.code(),
        })
    }

    /// AlterPartitionReassignments for one partition (KIP-455), on any
    /// broker: `target` becomes the partition's replicas — they are added
    /// to the assignment now, catch up as followers, and once all are in
    /// the ISR the controller drops the others (moving the leadership if
    /// it must). `None` cancels a reassignment in progress: the partition
    /// goes back to its original replicas the same way. A new target
    /// replaces one in progress (its original replicas stay the original).
    /// Returns a Kafka error code for the partition (0: accepted).
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<i16, ClusterError> {
        use kafka_protocol::ResponseError as E;
        // The topic or its reassignment may change between reading and
        // writing (a controller completing another partition's): read again.
        for _ in 0..10 {
            if let Some(code) = self
                .try_reassign_partition(topic, partition, target.clone())
                .await?
            {
                return Ok(code);
            }
        }
        Ok(E::RequestTimedOut.code())
    }

    /// One attempt of [`Cluster::reassign_partition`]; None: a concurrent
    /// change, try again.
    async fn try_reassign_partition(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<Option<i16>, ClusterError> {
        use kafka_protocol::ResponseError as E;
        let (mut info, topic_rev) = match self.read_topic(topic).await {
            Ok(t) => t,
            Err(ClusterError::UnknownTopic) => return Ok(Some(E::UnknownTopicOrPartition.code())),
            Err(e) => return Err(e),
        };
        let Some(index) = usize::try_from(partition)
            .ok()
            .filter(|i| *i < info.replicas.len())
        else {
            return Ok(Some(E::UnknownTopicOrPartition.code()));
        };
        let keys = &self.shared.etcd.keys;
        let key = keys.reassignment(topic, partition);
        let (existing, reassign_rev) = match self.shared.etcd.get(&key).await? {
            (Some(kv), _) => (
                serde_json::from_slice::<model::ReassignRequest>(kv.value()).ok(),
                kv.mod_revision(),
            ),
            (None, _) => (None, 0),
        };
        let original = existing
            .as_ref()
            .map_or_else(|| info.replicas[index].clone(), |r| r.original.clone());
        let target = match target {
            Some(target) => {
                let live: BTreeSet<i32> = self.snapshot().brokers.keys().copied().collect();
                if let Err(ClusterError::InvalidReplicaAssignment(why)) =
                    validate_assignment(std::slice::from_ref(&target), &live, None)
                {
                    tracing::info!(topic, partition, "reassignment refused: {why}");
                    return Ok(Some(E::InvalidReplicaAssignment.code()));
                }
                target
            }
            None if existing.is_some() => original.clone(),
            None => return Ok(Some(E::NoReassignmentInProgress.code())),
        };
        let request = model::ReassignRequest { target, original };
        info.replicas[index] = request.replicas();
        let topic_value =
            serde_json::to_vec(&info).map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let value = serde_json::to_vec(&request).map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let bytes = key.len() + value.len() + topic_value.len();
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(keys.topic(topic), CompareOp::Equal, topic_rev),
                Compare::mod_revision(key.clone(), CompareOp::Equal, reassign_rev),
            ])
            .and_then(vec![
                TxnOp::put(keys.topic(topic), topic_value, None),
                TxnOp::put(key, value, None),
            ]);
        if !self.shared.etcd.txn(txn, bytes).await?.succeeded() {
            return Ok(None);
        }
        tracing::info!(
            topic,
            partition,
            original = ?request.original,
            target = ?request.target,
            "reassignment started"
        );
        Ok(Some(0))
    }

    /// Kafka's controlled shutdown: asks the controller (through
    /// `shutdown/<id>`, under this broker's lease) to move this broker's
    /// leaderships and ISR places to the other in-sync replicas, and waits
    /// until no partition still needs it — it leads none and is in no ISR
    /// with another member — or `timeout` passes. The broker keeps serving
    /// meanwhile, so clients see NOT_LEADER_OR_FOLLOWER and a metadata
    /// refresh, not a dead connection. Returns the partitions it still
    /// holds (those with no other in-sync replica).
    pub async fn controlled_shutdown(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let me = self.shared.node_id;
        let key = self.shared.etcd.keys.shutdown(me);
        let lease = self.lease_id();
        let bytes = key.len();
        let txn = Txn::new().and_then(vec![TxnOp::put(
            key,
            Vec::new(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )]);
        self.shared.etcd.txn(txn, bytes).await?;
        let held = |s: &ClusterSnapshot| {
            s.partitions
                .values()
                .filter(|p| (p.leader == me || p.isr.contains(&me)) && p.isr.len() > 1)
                .count()
        };
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = held(&rx.borrow_and_update());
            if left == 0 {
                return Ok(0);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(held(&self.snapshot())),
            }
        }
    }

    /// Reserves `count` producer ids for this broker, unique in the cluster
    /// (Kafka's AllocateProducerIds, KIP-730): a compare-and-swap moving
    /// `producer-id-block` past them. Returns the first.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64, ClusterError> {
        let key = self.shared.etcd.keys.producer_id_block();
        for _ in 0..TOPIC_UPDATE_ATTEMPTS {
            let (kv, _) = self.shared.etcd.get(&key).await?;
            let (start, unchanged) = match &kv {
                None => (
                    0,
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                ),
                Some(kv) => {
                    let start = std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|v| v.trim().parse::<i64>().ok())
                        .ok_or_else(|| ClusterError::Etcd(format!("{key}: not a producer id")))?;
                    (
                        start,
                        Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                    )
                }
            };
            let end = start
                .checked_add(count)
                .ok_or_else(|| ClusterError::Etcd("producer ids exhausted".into()))?;
            let value = end.to_string();
            let bytes = key.len() + value.len();
            let txn = Txn::new().when(vec![unchanged]).and_then(vec![TxnOp::put(
                key.clone(),
                value,
                None,
            )]);
            if self.shared.etcd.txn(txn, bytes).await?.succeeded() {
                return Ok(start);
            }
        }
        Err(ClusterError::Timeout)
    }

    /// The next producer id for InitProducerId, from this broker's block
    /// (a new block from etcd when it runs out; a restart abandons the rest
    /// of one, as Kafka's brokers do).
    pub async fn next_producer_id(&self) -> Result<i64, ClusterError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let start = self.allocate_producer_ids(PRODUCER_ID_BLOCK).await?;
            *ids = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Replaces the topic's configs with `configs` (the whole set, as
    /// AlterConfigs does; merging for IncrementalAlterConfigs is the
    /// caller's).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        for _ in 0..TOPIC_UPDATE_ATTEMPTS {
            let (mut topic, revision) = self.read_topic(name).await?;
            topic.configs.clone_from(&configs);
            if self.write_topic(&topic, revision).await? {
                return Ok(());
            }
        }
        Err(ClusterError::Timeout)
    }

    /// Writes lines of shared security metadata (SCRAM credentials, ACLs,
    /// client quotas) of one store: `puts` as (identity, line), `deletes`
    /// by identity. Each line is its own key, so changes made through
    /// different brokers at once do not overwrite each other. The revision
    /// of the last write; a write of more than [`SECURITY_TXN_OPS`] keys is
    /// several transactions.
    pub async fn write_security(
        &self,
        store: &str,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<i64, ClusterError> {
        let keys = &self.shared.etcd.keys;
        let mut ops: Vec<(TxnOp, usize)> = Vec::with_capacity(puts.len() + deletes.len());
        for (identity, line) in puts {
            let key = keys.security(store, &identity);
            let bytes = key.len() + line.len();
            ops.push((TxnOp::put(key, line, None), bytes));
        }
        for identity in deletes {
            let key = keys.security(store, &identity);
            let bytes = key.len();
            ops.push((TxnOp::delete(key, None), bytes));
        }
        self.txn_in_chunks(ops).await
    }

    /// Imports a broker's own security files into a new cluster (Kafka's
    /// `kafka-storage format --add-scram`: the first user must exist before
    /// any broker serves). Only the first broker ever to finish this
    /// imports, so a broker restarted later with an old file cannot bring
    /// back a user or ACL deleted since. `lines` are (store, identity,
    /// line). The revision written, or None if another broker imported.
    ///
    /// An import larger than one etcd transaction is made all-or-nothing
    /// by a claim: the marker first reads `importing <id>` under this
    /// broker's lease (wiping whatever a crashed import left), then the
    /// lines go in, then the marker is made permanent. A broker that dies
    /// mid-import loses its lease and with it the claim, and the next
    /// broker to start imports from scratch. Brokers finding a claim wait
    /// for it to end, so none serves a partial import.
    pub async fn bootstrap_security(
        &self,
        lines: Vec<(String, String, String)>,
    ) -> Result<Option<i64>, ClusterError> {
        let etcd = &self.shared.etcd;
        let marker = etcd.keys.security_bootstrapped();
        let me = self.shared.node_id;
        let claim = format!("importing {me}");
        let mut waiting_logged = false;
        loop {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    marker.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![
                    TxnOp::put(
                        marker.clone(),
                        claim.clone(),
                        Some(etcd_client::PutOptions::new().with_lease(self.lease_id())),
                    ),
                    TxnOp::delete(
                        etcd.keys.security_all(),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                ])
                .or_else(vec![TxnOp::get(marker.clone(), None)]);
            let resp = etcd.txn(txn, marker.len() + claim.len()).await?;
            if resp.succeeded() {
                break;
            }
            let holder = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                })
                .unwrap_or_default();
            match String::from_utf8_lossy(&holder).strip_prefix("importing ") {
                // Imported for good (or the claim vanished between the
                // compare and the get: try again).
                None if !holder.is_empty() => return Ok(None),
                None => {}
                Some(importer) => {
                    if !waiting_logged {
                        tracing::info!(
                            "broker {importer} is importing its security files into the \
                             cluster; waiting for it to finish"
                        );
                        waiting_logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let puts = lines
            .into_iter()
            .map(|(store, identity, line)| {
                let key = etcd.keys.security(&store, &identity);
                let bytes = key.len() + line.len();
                (TxnOp::put(key, line, None), bytes)
            })
            .collect();
        let mut revision = self.txn_in_chunks(puts).await?;
        // Permanent only if the claim is still this broker's: a lease lost
        // mid-import let another broker start over.
        let txn = Txn::new()
            .when(vec![Compare::value(
                marker.clone(),
                CompareOp::Equal,
                claim.clone(),
            )])
            .and_then(vec![TxnOp::put(marker.clone(), me.to_string(), None)]);
        let resp = etcd.txn(txn, marker.len()).await?;
        if !resp.succeeded() {
            return Err(ClusterError::LeaseLost);
        }
        revision = resp.header().map_or(revision, |h| h.revision());
        Ok(Some(revision))
    }

    /// Runs `ops` (each with the bytes it sends), [`SECURITY_TXN_OPS`] to a
    /// transaction; the revision of the last.
    async fn txn_in_chunks(&self, ops: Vec<(TxnOp, usize)>) -> Result<i64, ClusterError> {
        let mut revision = 0;
        for chunk in ops.chunks(SECURITY_TXN_OPS) {
            let bytes = chunk.iter().map(|(_, b)| b).sum();
            let txn =
                Txn::new().and_then(chunk.iter().map(|(op, _)| op.clone()).collect::<Vec<_>>());
            let resp = self.shared.etcd.txn(txn, bytes).await?;
            revision = resp.header().map_or(revision, |h| h.revision());
        }
        Ok(revision)
    }

    /// Kafka's AlterPartition: the leader asks the controller for a new
    /// ISR, at the leader and partition epochs it knows. Resolves with the
    /// partition's state once the controller has handled the request: the
    /// new state if it accepted, the state it kept if it refused (stale
    /// epochs, not the leader, a broker that is not a live replica).
    /// A request already stale in this broker's view resolves at once with
    /// the current state. `Timeout` after 5 s or two lease TTLs.
    pub async fn alter_isr(
        &self,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    ) -> Result<PartitionState, ClusterError> {
        let shared = &self.shared;
        shared
            .etcd
            .stats()
            .isr_change_requests
            .fetch_add(1, Ordering::Relaxed);
        let at = (topic.to_string(), partition);
        let view = shared.store.current();
        if !view.snap.topics.contains_key(topic) {
            return Err(ClusterError::UnknownTopic);
        }
        if let Some(current) = view.snap.partitions.get(&at)
            && (current.leader_epoch > leader_epoch || current.partition_epoch > partition_epoch)
        {
            return Ok(current.clone());
        }
        let lease = shared.lease.borrow().clone();
        if lease.lost {
            return Err(ClusterError::LeaseLost);
        }
        let request = IsrRequest {
            broker: shared.node_id,
            leader_epoch,
            partition_epoch,
            isr: new_isr,
        };
        let value = serde_json::to_vec(&request).map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let mut views = shared.store.subscribe_views();
        let resp = shared
            .etcd
            .put(
                &shared.etcd.keys.isr_request(topic, partition),
                value,
                lease.id,
            )
            .await?;
        let written = resp.header().map_or(0, |h| h.revision());
        let wait = Duration::from_secs(5).max(shared.cfg.lease_ttl * 2);
        let outcome = tokio::time::timeout(wait, async {
            loop {
                {
                    let view = views.borrow_and_update();
                    if view.revision() >= written {
                        if !view.snap.topics.contains_key(topic) {
                            return Err(ClusterError::UnknownTopic);
                        }
                        let pending = view
                            .isr_requests
                            .get(&at)
                            .is_some_and(|(_, rev)| *rev == written);
                        match view.snap.partitions.get(&at) {
                            Some(state) if !pending || state.partition_epoch > partition_epoch => {
                                return Ok(state.clone());
                            }
                            None if !pending => return Err(ClusterError::UnknownTopic),
                            _ => {}
                        }
                    }
                }
                if views.changed().await.is_err() {
                    return Err(ClusterError::Etcd("the cluster stopped".into()));
                }
            }
        })
        .await;
        outcome.unwrap_or(Err(ClusterError::Timeout))
    }

    /// The election key this broker holds while it is the controller.
    #[doc(hidden)]
    pub fn election_key(&self) -> Option<String> {
        self.shared
            .leader_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|k| String::from_utf8_lossy(k.key()).into_owned())
    }

    /// Test hook: writes `state` for a partition exactly as a controller
    /// holding `election_key` at `epoch` would (fenced on the election key
    /// and on the revisions in this broker's view). `Fenced` if that
    /// controller is not the elected one; `Etcd` if a compared key changed.
    #[doc(hidden)]
    pub async fn write_partition_as_controller(
        &self,
        election_key: &str,
        epoch: i64,
        topic: &str,
        partition: i32,
        state: PartitionState,
    ) -> Result<i64, ClusterError> {
        let view = self.shared.store.current();
        let decision = controller::Decision {
            topic: topic.to_string(),
            partition,
            state: Some(state),
            delete_request: false,
            delete_elect: false,
            topic_update: None,
            delete_reassign: false,
            accepted: false,
            why: "test write".into(),
        };
        match controller::apply(
            &self.shared,
            &view,
            &decision,
            election_key.as_bytes(),
            epoch,
        )
        .await
        {
            controller::Applied::Written(revision) => Ok(revision),
            controller::Applied::Fenced => Err(ClusterError::Fenced),
            controller::Applied::Conflict => {
                Err(ClusterError::Etcd("a compared key changed".into()))
            }
            controller::Applied::Failed(e) => Err(e.into()),
        }
    }

    /// Leaves the cluster: stops the tasks, resigns the controllership,
    /// revokes the lease (so the registration goes at once and the
    /// controller moves this broker's leaderships now rather than after the
    /// TTL). Controlled shutdown (moving leaders first) is not done here.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        if shared.stop.send_replace(true) {
            return;
        }
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let leader = shared
            .leader_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(leader) = leader
            && let Err(e) = shared.etcd.resign(leader).await
        {
            tracing::debug!("resigning the controllership failed: {e}");
        }
        shared
            .etcd
            .stats()
            .is_controller
            .store(false, Ordering::Relaxed);
        let id = shared.lease.borrow().id;
        if id != 0
            && let Err(e) = shared.etcd.revoke(id).await
        {
            tracing::warn!("revoking lease {id:x} failed (it expires on its own): {e}");
        }
        tracing::info!("broker {} left the cluster", shared.node_id);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(ClusterError::InvalidTopic(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::new();
        let seen: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(seen, vec![50, 100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(50));
    }

    #[test]
    fn lease_ttl_in_whole_seconds() {
        assert_eq!(lease::ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(lease::ttl_secs(Duration::from_secs(6)), 6);
        assert_eq!(lease::ttl_secs(Duration::ZERO), 1);
    }
}
