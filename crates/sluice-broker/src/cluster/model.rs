//! The values the cluster keeps in etcd, each a JSON document under one key
//! (Kafka kept the same things as JSON in ZooKeeper znodes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The topic config that lets a replica outside the ISR become leader when
/// no ISR member is alive (acknowledged records may be lost).
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// `brokers/<id>`: a live broker, written under the broker's lease (Kafka's
/// ephemeral `/brokers/ids/<id>` znode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Which registration this is: the etcd revision that wrote the key
    /// (the view fills it in from the key's `mod_revision`, so every reader
    /// agrees). A broker that re-registers (a restart, or a lost lease) gets
    /// a larger one, and the controller treats it as having died and come
    /// back (Kafka's broker epoch, KIP-380).
    pub incarnation: i64,
    /// Every listener's advertised address, by listener name; `host` and
    /// `port` are the inter-broker listener's. Empty in registrations
    /// written before listeners had names: then `host:port` serves all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerAddress>,
}

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAddress {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl BrokerInfo {
    /// Where a client that came in on `listener` reaches this broker; None
    /// when it has no such listener (Kafka then leaves the broker out).
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| (l.host.as_str(), l.port))
    }
}

/// `topics/<name>`: a topic's identity, replica assignment and configs
/// (Kafka's `/brokers/topics/<name>` plus `/config/topics/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    #[serde(with = "uuid_text")]
    pub id: uuid::Uuid,
    /// The replicas of each partition, index = partition; the first is the
    /// preferred leader.
    pub replicas: Vec<Vec<i32>>,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    /// `unclean.leader.election.enable` is `true` for this topic.
    pub fn unclean_leader_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

/// `partitions/<topic>/<partition>`: leader and ISR, written only by the
/// controller, each write compared against the key's `mod_revision`
/// (Kafka's `/brokers/topics/<t>/partitions/<p>/state` and its zk version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// −1: no leader (no live ISR member).
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Bumped on every change of this state (KIP-497).
    pub partition_epoch: i32,
    /// The epoch of the controller that wrote this state.
    pub controller_epoch: i64,
}

/// `isr-requests/<topic>/<partition>`: a leader's request to change the ISR
/// (Kafka's AlterPartition), written under the leader's lease and deleted by
/// the controller once handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrRequest {
    pub broker: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// `elect-requests/<topic>/<partition>`: an operator's ElectLeaders
/// request, deleted by the controller once handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectRequest {
    /// 0: the preferred replica (the first in the assignment); 1: unclean
    /// (any live replica, when no in-sync one is).
    pub election_type: i8,
}

/// `reassignments/<topic>/<partition>`: a partition reassignment in
/// progress (KIP-455). While it runs the partition's replicas are
/// `target` followed by the rest of `original`; the controller finishes it
/// once every target replica is in the ISR, leaving the replicas `target`.
/// A cancellation is a reassignment back to `original`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignRequest {
    pub target: Vec<i32>,
    pub original: Vec<i32>,
}

impl ReassignRequest {
    /// The replica set while it runs: `target`, then `original`'s others.
    pub fn replicas(&self) -> Vec<i32> {
        let mut rs = self.target.clone();
        rs.extend(self.original.iter().filter(|b| !self.target.contains(b)));
        rs
    }

    /// Replicas being added (KIP-455's `adding_replicas`).
    pub fn adding(&self) -> Vec<i32> {
        self.target
            .iter()
            .copied()
            .filter(|b| !self.original.contains(b))
            .collect()
    }

    /// Replicas being removed (`removing_replicas`).
    pub fn removing(&self) -> Vec<i32> {
        self.original
            .iter()
            .copied()
            .filter(|b| !self.target.contains(b))
            .collect()
    }
}

/// The topic id as its hyphenated text (no dependence on uuid's serde
/// feature).
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &uuid::Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&id.hyphenated())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<uuid::Uuid, D::Error> {
        let text = String::deserialize(d)?;
        uuid::Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_json_round_trip() {
        let topic = TopicInfo {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            replicas: vec![vec![1, 2], vec![2, 1]],
            configs: BTreeMap::from([(UNCLEAN_LEADER_ELECTION.into(), "TRUE".into())]),
        };
        let json = serde_json::to_string(&topic).unwrap();
        assert!(json.contains(&topic.id.hyphenated().to_string()));
        let back: TopicInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, topic);
        assert!(back.unclean_leader_election());
    }

    #[test]
    fn partition_state_json() {
        let state = PartitionState {
            leader: -1,
            leader_epoch: 3,
            isr: vec![2],
            partition_epoch: 7,
            controller_epoch: 42,
        };
        let back: PartitionState =
            serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }
}
