//! This broker's copy of the cluster state: one watch on the whole prefix
//! keeps it current, and every change is published on a
//! `tokio::sync::watch` channel.
//!
//! [`ClusterSnapshot`] is what the rest of the broker reads; the internal
//! `View` adds what the controller needs to fence its writes (each key's
//! `mod_revision`) and the pending ISR requests.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::{EventType, KeyValue};
use tokio::sync::watch;

use super::Shared;
use super::etcd::{Key, Keys};
use super::model::{
    BrokerInfo, ElectRequest, IsrRequest, PartitionState, ReassignRequest, TopicInfo,
};
use super::stats::ClusterMetrics;

/// The cluster as this broker last saw it in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub cluster_id: String,
    /// The controller's broker id, if one is elected.
    pub controller: Option<i32>,
    /// The controller's epoch (the create revision of its election key; 0
    /// while there is none).
    pub controller_epoch: i64,
    /// The live brokers (registered under a live lease).
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    /// Leader and ISR of each partition, by (topic, partition).
    pub partitions: BTreeMap<(String, i32), PartitionState>,
    /// The etcd revision that wrote each partition's state (its key's
    /// `mod_revision`): a broker registered after it must not act on a
    /// leadership that state gives it (the controller has not yet seen the
    /// restart).
    pub partition_revisions: BTreeMap<(String, i32), i64>,
    /// Brokers in controlled shutdown: still registered, no longer to lead
    /// or be in an ISR.
    pub shutting_down: std::collections::BTreeSet<i32>,
    /// Partitions with an ElectLeaders request the controller has not
    /// handled yet.
    pub elect_pending: std::collections::BTreeSet<(String, i32)>,
    /// Partition reassignments in progress.
    pub reassignments: BTreeMap<(String, i32), ReassignRequest>,
    /// Shared security metadata, by store (`scram-credentials`, `acls`,
    /// `client-quotas`): identity → line. Each store's map is shared, so a
    /// snapshot copies it only when it changes and a reader can tell a
    /// change by the pointer.
    pub security: BTreeMap<String, Arc<BTreeMap<String, String>>>,
    /// The etcd revision this snapshot reflects.
    pub revision: i64,
}

impl ClusterSnapshot {
    /// The state of one partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.partitions.get(&(topic.to_string(), partition))
    }

    /// The broker is registered (its lease is alive).
    pub fn is_alive(&self, broker: i32) -> bool {
        self.brokers.contains_key(&broker)
    }

    /// The replicas of one partition, in assignment order.
    pub fn replicas(&self, topic: &str, partition: i32) -> Option<&[i32]> {
        let index = usize::try_from(partition).ok()?;
        self.topics
            .get(topic)?
            .replicas
            .get(index)
            .map(Vec::as_slice)
    }
}

/// The snapshot plus the revisions the controller fences on.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) snap: Arc<ClusterSnapshot>,
    /// `mod_revision` of `brokers/<id>` (= the broker's incarnation).
    pub(crate) broker_revs: BTreeMap<i32, i64>,
    /// `mod_revision` of `topics/<t>`.
    pub(crate) topic_revs: BTreeMap<String, i64>,
    /// `mod_revision` of `partitions/<t>/<p>`.
    pub(crate) partition_revs: BTreeMap<(String, i32), i64>,
    /// Pending ISR requests and their `mod_revision`.
    pub(crate) isr_requests: BTreeMap<(String, i32), (IsrRequest, i64)>,
    /// Pending ElectLeaders requests and their `mod_revision`.
    pub(crate) elect_requests: BTreeMap<(String, i32), (ElectRequest, i64)>,
    /// `mod_revision` of each `reassignments/<t>/<p>`.
    pub(crate) reassignment_revs: BTreeMap<(String, i32), i64>,
    /// Controller candidates: election key → (create revision, broker id).
    pub(crate) candidates: BTreeMap<Vec<u8>, (i64, Option<i32>)>,
    /// The election key of the elected controller.
    pub(crate) controller_key: Option<Vec<u8>>,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(kv.value()) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                "ignoring {}: not a valid value ({e})",
                String::from_utf8_lossy(kv.key())
            );
            None
        }
    }
}

impl View {
    pub(crate) fn revision(&self) -> i64 {
        self.snap.revision
    }

    /// A view of a full listing.
    pub(crate) fn from_kvs(keys: &Keys, kvs: &[KeyValue], revision: i64) -> View {
        let mut view = View::default();
        for kv in kvs {
            view.put(keys, kv);
        }
        view.elect();
        Arc::make_mut(&mut view.snap).revision = revision;
        view
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        let rev = kv.mod_revision();
        match keys.parse(kv.key()) {
            Key::ClusterId => {
                Arc::make_mut(&mut self.snap).cluster_id =
                    String::from_utf8_lossy(kv.value()).into_owned();
            }
            Key::Broker(id) => match decode::<BrokerInfo>(kv) {
                Some(mut info) => {
                    info.id = id;
                    info.incarnation = rev;
                    Arc::make_mut(&mut self.snap).brokers.insert(id, info);
                    self.broker_revs.insert(id, rev);
                }
                None => self.remove(keys, kv.key()),
            },
            Key::Topic(name) => match decode::<TopicInfo>(kv) {
                Some(mut info) => {
                    info.name.clone_from(&name);
                    self.topic_revs.insert(name.clone(), rev);
                    Arc::make_mut(&mut self.snap).topics.insert(name, info);
                }
                None => self.remove(keys, kv.key()),
            },
            Key::Partition(topic, p) => match decode::<PartitionState>(kv) {
                Some(state) => {
                    self.partition_revs.insert((topic.clone(), p), rev);
                    let snap = Arc::make_mut(&mut self.snap);
                    snap.partition_revisions.insert((topic.clone(), p), rev);
                    snap.partitions.insert((topic, p), state);
                }
                None => self.remove(keys, kv.key()),
            },
            Key::ElectRequest(topic, p) => match decode::<ElectRequest>(kv) {
                Some(request) => {
                    Arc::make_mut(&mut self.snap)
                        .elect_pending
                        .insert((topic.clone(), p));
                    self.elect_requests.insert((topic, p), (request, rev));
                }
                None => self.remove(keys, kv.key()),
            },
            Key::Shutdown(id) => {
                Arc::make_mut(&mut self.snap).shutting_down.insert(id);
            }
            Key::Reassignment(topic, p) => match decode::<ReassignRequest>(kv) {
                Some(request) => {
                    self.reassignment_revs.insert((topic.clone(), p), rev);
                    Arc::make_mut(&mut self.snap)
                        .reassignments
                        .insert((topic, p), request);
                }
                None => self.remove(keys, kv.key()),
            },
            Key::IsrRequest(topic, p) => match decode::<IsrRequest>(kv) {
                Some(request) => {
                    self.isr_requests.insert((topic, p), (request, rev));
                }
                None => self.remove(keys, kv.key()),
            },
            Key::Security(store, identity) => {
                let line = String::from_utf8_lossy(kv.value()).into_owned();
                let lines = Arc::make_mut(&mut self.snap)
                    .security
                    .entry(store)
                    .or_default();
                Arc::make_mut(lines).insert(identity, line);
            }
            Key::Candidate => {
                let broker = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                self.candidates
                    .insert(kv.key().to_vec(), (kv.create_revision(), broker));
            }
            Key::Unknown => {}
        }
    }

    fn remove(&mut self, keys: &Keys, key: &[u8]) {
        match keys.parse(key) {
            Key::ClusterId => Arc::make_mut(&mut self.snap).cluster_id.clear(),
            Key::Broker(id) => {
                if self.broker_revs.remove(&id).is_some() {
                    Arc::make_mut(&mut self.snap).brokers.remove(&id);
                }
            }
            Key::Topic(name) => {
                if self.topic_revs.remove(&name).is_some() {
                    Arc::make_mut(&mut self.snap).topics.remove(&name);
                }
            }
            Key::Partition(topic, p) => {
                let at = (topic, p);
                if self.partition_revs.remove(&at).is_some() {
                    let snap = Arc::make_mut(&mut self.snap);
                    snap.partitions.remove(&at);
                    snap.partition_revisions.remove(&at);
                }
            }
            Key::IsrRequest(topic, p) => {
                self.isr_requests.remove(&(topic, p));
            }
            Key::Shutdown(id) => {
                Arc::make_mut(&mut self.snap).shutting_down.remove(&id);
            }
            Key::Reassignment(topic, p) => {
                let at = (topic, p);
                if self.reassignment_revs.remove(&at).is_some() {
                    Arc::make_mut(&mut self.snap).reassignments.remove(&at);
                }
            }
            Key::ElectRequest(topic, p) => {
                let at = (topic, p);
                self.elect_requests.remove(&at);
                Arc::make_mut(&mut self.snap).elect_pending.remove(&at);
            }
            Key::Security(store, identity) => {
                if self
                    .snap
                    .security
                    .get(&store)
                    .is_some_and(|lines| lines.contains_key(&identity))
                {
                    let snap = Arc::make_mut(&mut self.snap);
                    if let Some(lines) = snap.security.get_mut(&store) {
                        Arc::make_mut(lines).remove(&identity);
                    }
                }
            }
            Key::Candidate => {
                self.candidates.remove(key);
            }
            Key::Unknown => {}
        }
    }

    /// The candidate with the oldest election key is the controller (etcd's
    /// election: the lowest create revision under the name wins).
    fn elect(&mut self) {
        let winner = self
            .candidates
            .iter()
            .min_by_key(|(_, (create, _))| *create)
            .map(|(key, (create, broker))| (key.clone(), *create, *broker));
        let (key, epoch, broker) = match winner {
            Some((key, create, broker)) => (Some(key), create, broker),
            None => (None, 0, None),
        };
        self.controller_key = key;
        if self.snap.controller != broker || self.snap.controller_epoch != epoch {
            let snap = Arc::make_mut(&mut self.snap);
            snap.controller = broker;
            snap.controller_epoch = epoch;
        }
    }
}

/// The master copy of the view and the channels it is published on.
pub(crate) struct ViewStore {
    keys: Keys,
    master: Mutex<View>,
    views: watch::Sender<Arc<View>>,
    snapshots: watch::Sender<Arc<ClusterSnapshot>>,
}

impl ViewStore {
    pub(crate) fn new(keys: Keys, view: View) -> ViewStore {
        let (views, _) = watch::channel(Arc::new(view.clone()));
        let (snapshots, _) = watch::channel(view.snap.clone());
        ViewStore {
            keys,
            master: Mutex::new(view),
            views,
            snapshots,
        }
    }

    pub(crate) fn current(&self) -> Arc<View> {
        self.views.borrow().clone()
    }

    pub(crate) fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshots.borrow().clone()
    }

    pub(crate) fn subscribe_views(&self) -> watch::Receiver<Arc<View>> {
        self.views.subscribe()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ClusterSnapshot>> {
        self.snapshots.subscribe()
    }

    /// Replaces the view with a full listing read at `revision`, unless the
    /// view already reflects a later revision.
    pub(crate) fn replace(&self, kvs: &[KeyValue], revision: i64, stats: &ClusterMetrics) {
        let mut master = self.master.lock().unwrap_or_else(PoisonError::into_inner);
        if revision < master.revision() {
            return;
        }
        let before = master.snap.clone();
        *master = View::from_kvs(&self.keys, kvs, revision);
        self.publish(&master, &before, stats);
    }

    /// Applies one watch response's events. Events the view already
    /// reflects (at or below its revision, e.g. after a re-listing) are
    /// skipped. The view's revision becomes the last event's: a watch
    /// response's header revision can run ahead of the events delivered
    /// so far (a watcher catching up gets them in batches).
    pub(crate) fn apply(&self, events: &[etcd_client::Event], stats: &ClusterMetrics) {
        let mut master = self.master.lock().unwrap_or_else(PoisonError::into_inner);
        let before = master.snap.clone();
        let mut applied = 0u64;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() <= master.revision() {
                continue;
            }
            match event.event_type() {
                EventType::Put => master.put(&self.keys, kv),
                EventType::Delete => master.remove(&self.keys, kv.key()),
            }
            applied += 1;
        }
        let latest = events
            .iter()
            .filter_map(|e| e.kv().map(KeyValue::mod_revision))
            .max()
            .unwrap_or(0);
        if applied == 0 && latest <= master.revision() {
            return;
        }
        stats.watch_events.fetch_add(applied, Ordering::Relaxed);
        master.elect();
        if latest > master.revision() {
            Arc::make_mut(&mut master.snap).revision = latest;
        }
        self.publish(&master, &before, stats);
    }

    fn publish(&self, master: &View, before: &ClusterSnapshot, stats: &ClusterMetrics) {
        let snap = &master.snap;
        if snap.controller_epoch != before.controller_epoch || snap.controller != before.controller
        {
            stats
                .controller_epoch
                .store(snap.controller_epoch, Ordering::Relaxed);
            if snap.controller.is_some() {
                stats.controller_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "controller is broker {} (epoch {})",
                    snap.controller.unwrap_or(-1),
                    snap.controller_epoch
                );
            }
        }
        self.views.send_replace(Arc::new(master.clone()));
        self.snapshots.send_replace(snap.clone());
    }
}

/// Keeps the view current: re-lists, watches from the listing's revision,
/// and on a lost or compacted watch starts over, for as long as the cluster
/// runs.
pub(crate) async fn watch_loop(shared: Arc<Shared>, listed_at: i64) {
    let etcd = &shared.etcd;
    let stats = etcd.stats();
    let mut revision = listed_at;
    // The first watch starts from the listing `start` made.
    let mut must_list = false;
    let mut backoff = super::Backoff::new();
    loop {
        if must_list {
            match etcd.list().await {
                Ok((kvs, at)) => {
                    stats.relists.fetch_add(1, Ordering::Relaxed);
                    shared.store.replace(&kvs, at, stats);
                    revision = at;
                }
                Err(e) => {
                    tracing::debug!("listing the cluster state failed: {e}");
                    if !shared.sleep(backoff.next()).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Whatever happens to this watch, the next one starts from a new
        // listing.
        must_list = true;
        let mut stream = match etcd.watch(revision + 1).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("watching the cluster state failed: {e}");
                if !shared.sleep(backoff.next()).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                () = shared.stopped() => return,
            };
            match message {
                Ok(Some(resp)) => {
                    etcd.mark_up();
                    backoff.reset();
                    if resp.compact_revision() > 0 || resp.canceled() {
                        tracing::warn!(
                            "the watch on {} was cancelled (compacted at {}: {}); re-reading",
                            etcd.keys.root(),
                            resp.compact_revision(),
                            resp.cancel_reason()
                        );
                        break;
                    }
                    let kvs: Vec<KeyValue> = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv().cloned())
                        .collect();
                    etcd.count_received(&kvs);
                    shared.store.apply(resp.events(), stats);
                }
                Ok(None) => {
                    tracing::debug!("the watch stream ended");
                    break;
                }
                Err(e) => {
                    let e = etcd.stream_error(&e);
                    tracing::debug!("the watch stream failed: {e}");
                    break;
                }
            }
        }
        if !shared.sleep(backoff.next()).await {
            return;
        }
    }
}
