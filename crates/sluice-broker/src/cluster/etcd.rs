//! The etcd client as the cluster uses it: the key layout under the prefix,
//! every call bounded in time, counted, and classified (etcd unreachable,
//! lease gone, anything else), and the connected flag kept current.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaderKey, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, PutResponse, ResignOptions, Txn, TxnResponse, WatchOptions, WatchStream,
};

use super::stats::ClusterMetrics;

/// How long a unary call may take before it counts as failed.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The keys of one cluster: everything lives under `<prefix>/`, so several
/// clusters can share an etcd.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    ClusterId,
    Broker(i32),
    Topic(String),
    Partition(String, i32),
    IsrRequest(String, i32),
    /// An ElectLeaders request (`elect-requests/<t>/<p>`).
    ElectRequest(String, i32),
    /// A partition reassignment in progress (`reassignments/<t>/<p>`).
    Reassignment(String, i32),
    /// A broker in controlled shutdown (`shutdown/<id>`, under its lease).
    Shutdown(i32),
    /// A controller candidate's election key (`controller/<lease>`).
    Candidate,
    /// A line of shared security metadata (`security/<store>/<identity>`:
    /// SCRAM credentials, ACLs, client quotas), the identity decoded.
    Security(String, String),
    Unknown,
}

/// Bytes a key segment keeps as they are; every other byte (`/`, `%`,
/// spaces, tabs, non-ASCII) is written `%XX`, so an identity is one
/// segment and `etcdctl get --prefix` output stays readable.
fn plain_in_key(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-=:@,*+".contains(&b)
}

pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if plain_in_key(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    /// `<prefix>/`: the range every key of this cluster is in.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn cluster_id(&self) -> String {
        format!("{}cluster_id", self.root)
    }

    pub(crate) fn broker(&self, id: i32) -> String {
        format!("{}brokers/{id}", self.root)
    }

    pub(crate) fn topic(&self, topic: &str) -> String {
        format!("{}topics/{topic}", self.root)
    }

    pub(crate) fn elect_request(&self, topic: &str, partition: i32) -> String {
        format!("{}elect-requests/{topic}/{partition}", self.root)
    }

    pub(crate) fn reassignment(&self, topic: &str, partition: i32) -> String {
        format!("{}reassignments/{topic}/{partition}", self.root)
    }

    /// The prefix of a topic's reassignments.
    pub(crate) fn reassignments_of(&self, topic: &str) -> String {
        format!("{}reassignments/{topic}/", self.root)
    }

    /// A broker asking to have its leaderships moved before it stops.
    pub(crate) fn shutdown(&self, id: i32) -> String {
        format!("{}shutdown/{id}", self.root)
    }

    /// The first producer id no broker has reserved yet.
    pub(crate) fn producer_id_block(&self) -> String {
        format!("{}producer-id-block", self.root)
    }

    pub(crate) fn partition(&self, topic: &str, partition: i32) -> String {
        format!("{}partitions/{topic}/{partition}", self.root)
    }

    /// The prefix of a topic's partition states (with the trailing `/`, so
    /// topic `a` does not cover topic `ab`).
    pub(crate) fn partitions_of(&self, topic: &str) -> String {
        format!("{}partitions/{topic}/", self.root)
    }

    pub(crate) fn isr_request(&self, topic: &str, partition: i32) -> String {
        format!("{}isr-requests/{topic}/{partition}", self.root)
    }

    pub(crate) fn isr_requests_of(&self, topic: &str) -> String {
        format!("{}isr-requests/{topic}/", self.root)
    }

    /// A line of shared security metadata.
    pub(crate) fn security(&self, store: &str, identity: &str) -> String {
        format!(
            "{}security/{}/{}",
            self.root,
            encode_segment(store),
            encode_segment(identity)
        )
    }

    /// The prefix of every line of shared security metadata (with the
    /// trailing `/`, so it does not cover `security-bootstrapped`).
    pub(crate) fn security_all(&self) -> String {
        format!("{}security/", self.root)
    }

    /// Present once some broker has begun importing its files into a new
    /// cluster's security metadata: `importing <id>` under that broker's
    /// lease while it imports, then `<id>` for good. No broker imports
    /// after that.
    pub(crate) fn security_bootstrapped(&self) -> String {
        format!("{}security-bootstrapped", self.root)
    }

    /// The election name: candidates' keys are `<prefix>/controller/<lease>`.
    pub(crate) fn election(&self) -> String {
        format!("{}controller", self.root)
    }

    pub(crate) fn parse(&self, key: &[u8]) -> Key {
        let Some(rest) = key.strip_prefix(self.root.as_bytes()) else {
            return Key::Unknown;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return Key::Unknown;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["cluster_id"] => Key::ClusterId,
            ["brokers", id] => id.parse().map_or(Key::Unknown, Key::Broker),
            ["shutdown", id] => id.parse().map_or(Key::Unknown, Key::Shutdown),
            ["elect-requests", topic, p] if !topic.is_empty() => p
                .parse()
                .map_or(Key::Unknown, |p| Key::ElectRequest((*topic).to_string(), p)),
            ["reassignments", topic, p] if !topic.is_empty() => p
                .parse()
                .map_or(Key::Unknown, |p| Key::Reassignment((*topic).to_string(), p)),
            ["topics", topic] if !topic.is_empty() => Key::Topic((*topic).to_string()),
            ["partitions", topic, p] if !topic.is_empty() => p
                .parse()
                .map_or(Key::Unknown, |p| Key::Partition((*topic).to_string(), p)),
            ["isr-requests", topic, p] if !topic.is_empty() => p
                .parse()
                .map_or(Key::Unknown, |p| Key::IsrRequest((*topic).to_string(), p)),
            ["controller", candidate] if !candidate.is_empty() => Key::Candidate,
            ["security", store, identity] if !store.is_empty() => {
                match (decode_segment(store), decode_segment(identity)) {
                    (Some(store), Some(identity)) => Key::Security(store, identity),
                    _ => Key::Unknown,
                }
            }
            _ => Key::Unknown,
        }
    }
}

/// A failed etcd call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EtcdError {
    /// The connection was refused or broke: etcd is down or unreachable.
    Unreachable(String),
    /// The lease is gone (expired or revoked).
    LeaseNotFound,
    /// No answer within the call's time bound.
    Timeout,
    Other(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(e) => write!(f, "etcd unreachable: {e}"),
            EtcdError::LeaseNotFound => write!(f, "lease not found"),
            EtcdError::Timeout => write!(f, "etcd did not answer in time"),
            EtcdError::Other(e) => write!(f, "etcd: {e}"),
        }
    }
}

/// Sorts an etcd client error into what the cluster does about it.
pub(crate) fn classify(e: &etcd_client::Error) -> EtcdError {
    use etcd_client::Error as E;
    // tonic::Code values (the gRPC status codes).
    const CANCELLED: i32 = 1;
    const UNKNOWN: i32 = 2;
    const UNAVAILABLE: i32 = 14;
    match e {
        E::TransportError(_) | E::IoError(_) => EtcdError::Unreachable(e.to_string()),
        E::GRpcStatus(status) => {
            let code = status.code() as i32;
            let message = status.message();
            if message.contains("lease not found") {
                EtcdError::LeaseNotFound
            } else if code == UNAVAILABLE
                || (code == UNKNOWN && (message.contains("h2") || message.contains("transport")))
                || code == CANCELLED
            {
                EtcdError::Unreachable(e.to_string())
            } else {
                EtcdError::Other(e.to_string())
            }
        }
        E::LeaseKeepAliveError(m) if m.contains("not found") => EtcdError::LeaseNotFound,
        E::LeaseKeepAliveError(m) | E::WatchError(m) if m.contains("closed") => {
            EtcdError::Unreachable(e.to_string())
        }
        _ => EtcdError::Other(e.to_string()),
    }
}

/// The client, the key layout and the counters.
pub(crate) struct Etcd {
    client: Client,
    pub(crate) keys: Keys,
    stats: Arc<ClusterMetrics>,
}

impl Etcd {
    pub(crate) async fn connect(
        endpoints: &[String],
        prefix: &str,
        stats: Arc<ClusterMetrics>,
    ) -> Result<Etcd, EtcdError> {
        // HTTP/2 pings find a dead connection while only watches are open;
        // etcd refuses pings more often than every 5 s (too_many_pings).
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| EtcdError::Other(e.to_string()))?;
        Ok(Etcd {
            client,
            keys: Keys::new(prefix),
            stats,
        })
    }

    pub(crate) fn stats(&self) -> &ClusterMetrics {
        &self.stats
    }

    /// etcd answered: log a recovery once.
    pub(crate) fn mark_up(&self) {
        if !self.stats.etcd_connected.swap(true, Ordering::AcqRel)
            && self.stats.etcd_disconnects.load(Ordering::Relaxed) > 0
        {
            tracing::info!("etcd is reachable again");
        }
    }

    /// etcd could not be reached: log the loss once.
    pub(crate) fn mark_down(&self, why: &str) {
        if self.stats.etcd_connected.swap(false, Ordering::AcqRel) {
            self.stats.etcd_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("etcd is unreachable: {why}");
        }
    }

    /// Classifies a stream's error and updates the connected flag.
    pub(crate) fn stream_error(&self, e: &etcd_client::Error) -> EtcdError {
        let err = classify(e);
        if let EtcdError::Unreachable(why) = &err {
            self.mark_down(why);
        }
        err
    }

    fn count_sent(&self, bytes: usize) {
        self.stats.etcd_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .etcd_sent_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_received(&self, kvs: &[KeyValue]) {
        let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        self.stats
            .etcd_received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Runs one call with the time bound, counting and classifying.
    async fn call<T>(
        &self,
        sent_bytes: usize,
        limit: Option<Duration>,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        self.count_sent(sent_bytes);
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => return Err(EtcdError::Timeout),
            },
            None => fut.await,
        };
        match result {
            Ok(v) => {
                self.mark_up();
                Ok(v)
            }
            Err(e) => {
                let err = classify(&e);
                match &err {
                    EtcdError::Unreachable(why) => self.mark_down(why),
                    // etcd answered, if only to say no.
                    EtcdError::LeaseNotFound | EtcdError::Other(_) => self.mark_up(),
                    EtcdError::Timeout => {}
                }
                Err(err)
            }
        }
    }

    /// Every key of the cluster, and the revision they were read at.
    pub(crate) async fn list(&self) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let mut kv = self.client.kv_client();
        let root = self.keys.root().to_string();
        let mut resp = self
            .call(
                root.len(),
                Some(CALL_TIMEOUT),
                kv.get(root.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp.take_kvs();
        self.count_received(&kvs);
        Ok((kvs, revision))
    }

    /// One key, if it exists.
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let mut kv = self.client.kv_client();
        let mut resp = self
            .call(key.len(), Some(CALL_TIMEOUT), kv.get(key, None))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp.take_kvs();
        self.count_received(&kvs);
        Ok((kvs.into_iter().next(), revision))
    }

    pub(crate) async fn txn(&self, txn: Txn, sent_bytes: usize) -> Result<TxnResponse, EtcdError> {
        let mut kv = self.client.kv_client();
        self.call(sent_bytes, Some(CALL_TIMEOUT), kv.txn(txn)).await
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<PutResponse, EtcdError> {
        let mut kv = self.client.kv_client();
        let bytes = key.len() + value.len();
        let options = PutOptions::new().with_lease(lease).with_prev_key();
        self.call(bytes, Some(CALL_TIMEOUT), kv.put(key, value, Some(options)))
            .await
    }

    /// A new lease: its id and granted TTL in seconds.
    pub(crate) async fn grant(&self, ttl_secs: i64) -> Result<(i64, i64), EtcdError> {
        let mut lease = self.client.lease_client();
        let resp = self
            .call(8, Some(CALL_TIMEOUT), lease.grant(ttl_secs, None))
            .await?;
        Ok((resp.id(), resp.ttl()))
    }

    pub(crate) async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let mut lease = self.client.lease_client();
        match self.call(8, Some(CALL_TIMEOUT), lease.revoke(id)).await {
            Ok(_) | Err(EtcdError::LeaseNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens a keepalive stream; its first round trip is done (a lease
    /// already gone is `LeaseNotFound`).
    pub(crate) async fn keep_alive(
        &self,
        id: i64,
        limit: Duration,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), EtcdError> {
        let mut lease = self.client.lease_client();
        self.call(8, Some(limit), lease.keep_alive(id)).await
    }

    /// Watches the whole prefix from `start_revision`.
    pub(crate) async fn watch(&self, start_revision: i64) -> Result<WatchStream, EtcdError> {
        let mut watch = self.client.watch_client();
        let root = self.keys.root().to_string();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision);
        self.call(
            root.len(),
            Some(CALL_TIMEOUT),
            watch.watch(root, Some(options)),
        )
        .await
    }

    /// Campaigns for the controller with this lease: resolves once elected
    /// (the leader key and the revision it was answered at).
    pub(crate) async fn campaign(
        &self,
        value: String,
        lease: i64,
    ) -> Result<(LeaderKey, i64), EtcdError> {
        let mut election = self.client.election_client();
        let name = self.keys.election();
        let bytes = name.len() + value.len();
        let resp = self
            .call(bytes, None, election.campaign(name, value, lease))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        match resp.leader() {
            Some(leader) => Ok((leader.clone(), revision)),
            None => Err(EtcdError::Other(
                "campaign answered without a leader key".into(),
            )),
        }
    }

    pub(crate) async fn resign(&self, leader: LeaderKey) -> Result<(), EtcdError> {
        let mut election = self.client.election_client();
        let options = ResignOptions::new().with_leader(leader);
        self.call(16, Some(CALL_TIMEOUT), election.resign(Some(options)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let keys = Keys::new("/sluice/");
        assert_eq!(keys.root(), "/sluice/");
        assert_eq!(keys.parse(keys.cluster_id().as_bytes()), Key::ClusterId);
        assert_eq!(keys.parse(keys.broker(7).as_bytes()), Key::Broker(7));
        assert_eq!(
            keys.parse(keys.topic("a.b-c").as_bytes()),
            Key::Topic("a.b-c".into())
        );
        assert_eq!(
            keys.parse(keys.partition("t", 3).as_bytes()),
            Key::Partition("t".into(), 3)
        );
        assert_eq!(
            keys.parse(keys.isr_request("t", 0).as_bytes()),
            Key::IsrRequest("t".into(), 0)
        );
        assert_eq!(
            keys.parse(format!("{}/694d7d1b2a", keys.election()).as_bytes()),
            Key::Candidate
        );
        // Identities hold tabs, spaces, slashes and non-ASCII: one segment.
        let acl = "TOPIC\tPREFIXED\ta/b%c\tUser:CN=x, O=ü\t*\tREAD\tALLOW";
        let key = keys.security("acls", acl);
        assert!(!key["/sluice/security/acls/".len()..].contains(['/', '\t', ' ']));
        assert_eq!(
            keys.parse(key.as_bytes()),
            Key::Security("acls".into(), acl.into())
        );
        assert_eq!(keys.parse(b"/sluice/security/acls/%4"), Key::Unknown);
        assert_eq!(keys.parse(b"/sluice/security/acls/%FF"), Key::Unknown);
        assert_eq!(keys.parse(b"/sluice2/brokers/1"), Key::Unknown);
        assert_eq!(keys.parse(b"/sluice/brokers/x"), Key::Unknown);
        assert!(keys.partition("a", 0).starts_with(&keys.partitions_of("a")));
        assert!(
            !keys
                .partition("ab", 0)
                .starts_with(&keys.partitions_of("a"))
        );
    }
}
