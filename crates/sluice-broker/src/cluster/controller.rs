//! The controller: one broker, elected through etcd, decides every
//! partition's leader and ISR.
//!
//! `decide` is a pure function from the cluster state (as a `View`) to
//! the writes it calls for, so a new controller after a failover, a
//! controller after a lost watch and a controller reacting to one event all
//! run the same reconciliation. `controller_loop` campaigns, and while
//! elected applies the decisions, each as one etcd transaction fenced on the
//! controller's election key (its create revision is the controller epoch)
//! and on the `mod_revision` of every key the decision read, as ZooKeeper's
//! versions fenced Kafka's controller.
//!
//! Also here: Kafka's replica placement (`AdminUtils.assignReplicasToBrokers`)
//! and the checks of a manual assignment.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, LeaderKey, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use super::etcd::EtcdError;
use super::lease::LeaseState;
use super::model::{ElectRequest, IsrRequest, PartitionState, ReassignRequest, TopicInfo};
use super::view::View;
use super::{Backoff, ClusterError, Shared};

// ---------------------------------------------------------------------------
// Replica placement

/// Places `partitions` partitions of `replication_factor` replicas on
/// `brokers` (id, rack) as Kafka does: the first replica of partition `p`
/// on broker `(p + start_index) % n`, the followers shifted so that leaders
/// and followers spread evenly; with racks on every broker, the broker list
/// alternates racks and each partition's replicas go to distinct racks
/// first. `start_partition` numbers the first new partition (for
/// CreatePartitions). Kafka picks `start_index` and `replica_shift` at
/// random; tests fix them.
pub fn assign_replicas(
    brokers: &[(i32, Option<String>)],
    partitions: i32,
    replication_factor: i16,
    start_index: usize,
    replica_shift: usize,
    start_partition: i32,
) -> Result<Vec<Vec<i32>>, ClusterError> {
    if partitions <= 0 {
        return Err(ClusterError::InvalidPartitions(
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if replication_factor <= 0 {
        return Err(ClusterError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf > brokers.len() {
        return Err(ClusterError::InvalidReplicationFactor(format!(
            "Replication factor: {replication_factor} larger than available brokers: {}.",
            brokers.len()
        )));
    }
    let mut sorted: Vec<(i32, Option<String>)> = brokers.to_vec();
    sorted.sort_by_key(|(id, _)| *id);
    sorted.dedup_by_key(|(id, _)| *id);
    let start_partition = usize::try_from(start_partition.max(0)).unwrap_or(0);
    let count = usize::try_from(partitions).unwrap_or(0);
    if sorted.iter().all(|(_, rack)| rack.is_some()) {
        let racks: BTreeMap<i32, String> = sorted
            .iter()
            .filter_map(|(id, rack)| rack.clone().map(|r| (*id, r)))
            .collect();
        Ok(assign_rack_aware(
            &racks,
            count,
            rf,
            start_index,
            replica_shift,
            start_partition,
        ))
    } else {
        let ids: Vec<i32> = sorted.iter().map(|(id, _)| *id).collect();
        Ok(assign_rack_unaware(
            &ids,
            count,
            rf,
            start_index,
            replica_shift,
            start_partition,
        ))
    }
}

/// The follower index: `1 + (shift + j) % (n - 1)` places after the first.
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    let step = 1 + (shift + j) % (n - 1);
    (first + step) % n
}

fn assign_rack_unaware(
    ids: &[i32],
    partitions: usize,
    rf: usize,
    start_index: usize,
    replica_shift: usize,
    start_partition: usize,
) -> Vec<Vec<i32>> {
    let n = ids.len();
    let start_index = start_index % n;
    let mut shift = replica_shift % n;
    let mut out = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let pid = start_partition + i;
        if pid > 0 && pid.is_multiple_of(n) {
            shift += 1;
        }
        let first = (pid + start_index) % n;
        let mut replicas = vec![ids[first]];
        for j in 0..rf - 1 {
            replicas.push(ids[replica_index(first, shift, j, n)]);
        }
        out.push(replicas);
    }
    out
}

/// Brokers ordered rack by rack in turn (racks sorted, brokers in a rack
/// by id): `a1 b1 c1 a2 b2 …`.
fn rack_alternated(racks: &BTreeMap<i32, String>) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (id, rack) in racks {
        by_rack.entry(rack.as_str()).or_default().push(*id);
    }
    let mut queues: Vec<std::vec::IntoIter<i32>> =
        by_rack.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(racks.len());
    while out.len() < racks.len() {
        for queue in &mut queues {
            if let Some(id) = queue.next() {
                out.push(id);
            }
        }
    }
    out
}

fn assign_rack_aware(
    racks: &BTreeMap<i32, String>,
    partitions: usize,
    rf: usize,
    start_index: usize,
    replica_shift: usize,
    start_partition: usize,
) -> Vec<Vec<i32>> {
    let brokers = rack_alternated(racks);
    let n = brokers.len();
    let rack_count = racks.values().collect::<BTreeSet<_>>().len();
    let start_index = start_index % n;
    let mut shift = replica_shift % n;
    let mut out = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let pid = start_partition + i;
        if pid > 0 && pid.is_multiple_of(n) {
            shift += 1;
        }
        let first = (pid + start_index) % n;
        let leader = brokers[first];
        let mut replicas = vec![leader];
        let mut used_racks: BTreeSet<&str> = BTreeSet::from([racks[&leader].as_str()]);
        let mut used: BTreeSet<i32> = BTreeSet::from([leader]);
        let mut k = 0;
        for _ in 0..rf - 1 {
            // Terminates: every broker but the first comes round within
            // n − 1 steps, and the conditions relax once racks or brokers
            // run out. The bound is a guard, not a limit ever reached.
            let bound = k + n * n + 1;
            while k < bound {
                let broker = brokers[replica_index(first, shift * rack_count, k, n)];
                let rack = racks[&broker].as_str();
                k += 1;
                if (!used_racks.contains(rack) || used_racks.len() == rack_count)
                    && (!used.contains(&broker) || used.len() == n)
                {
                    replicas.push(broker);
                    used_racks.insert(rack);
                    used.insert(broker);
                    break;
                }
            }
        }
        out.push(replicas);
    }
    out
}

/// Checks a manual assignment: at least one partition, every partition the
/// same number of replicas (`replication_factor` if given), no broker twice
/// in a partition, every broker registered.
pub fn validate_assignment(
    assignment: &[Vec<i32>],
    live: &BTreeSet<i32>,
    replication_factor: Option<usize>,
) -> Result<(), ClusterError> {
    let invalid = |m: String| Err(ClusterError::InvalidReplicaAssignment(m));
    let Some(first) = assignment.first() else {
        return invalid("The replica assignment names no partition.".into());
    };
    let rf = replication_factor.unwrap_or(first.len());
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return invalid(format!("Partition {p} has no replicas."));
        }
        if replicas.len() != rf {
            return invalid(format!(
                "Inconsistent replication factor between partitions: partition {p} has {} \
                 replicas, expected {rf}.",
                replicas.len()
            ));
        }
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return invalid(format!(
                "Duplicate brokers not allowed in replica assignment: {replicas:?} for \
                 partition id {p}."
            ));
        }
        let unknown: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|b| !live.contains(b))
            .collect();
        if !unknown.is_empty() {
            return invalid(format!(
                "Unknown broker(s) in replica assignment: {unknown:?}."
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decisions

/// One write the controller calls for: a partition's new state, the
/// removal of an ISR request, or both, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The state to write (`None`: keep the current one).
    pub(crate) state: Option<PartitionState>,
    /// Delete the pending ISR request (handled, accepted or not).
    pub(crate) delete_request: bool,
    /// Delete the pending ElectLeaders request (handled).
    pub(crate) delete_elect: bool,
    /// The topic's new replica assignment (a reassignment completing).
    pub(crate) topic_update: Option<TopicInfo>,
    /// Delete the reassignment (completed, or its partition is gone).
    pub(crate) delete_reassign: bool,
    /// The ISR request was accepted (its ISR is in `state`, or it changed
    /// nothing).
    pub(crate) accepted: bool,
    pub(crate) why: String,
}

/// Everything the controller should write for the cluster to match its
/// rules, given the state in `view` and the controller's epoch.
pub(crate) fn decide(view: &View, controller_epoch: i64) -> Vec<Decision> {
    let snap = &view.snap;
    let live = |b: i32| snap.brokers.contains_key(&b);
    // Brokers in controlled shutdown give up leaderships and ISR places.
    let leaving = |b: i32| snap.shutting_down.contains(&b);
    let staying = |b: i32| live(b) && !leaving(b);
    let mut out = Vec::new();
    for (name, topic) in &snap.topics {
        let unclean = topic.unclean_leader_election();
        for (index, replicas) in topic.replicas.iter().enumerate() {
            let Ok(p) = i32::try_from(index) else { break };
            let at = (name.clone(), p);
            let current = snap.partitions.get(&at);
            let written_at = view.partition_revs.get(&at).copied().unwrap_or(0);
            // Registered again since this state was written: it died and
            // came back, so it may have lost what it had not flushed.
            let bounced = |b: i32| view.broker_revs.get(&b).is_some_and(|r| *r > written_at);
            let reconciled = reconcile(replicas, current, &live, &bounced, &leaving, unclean);
            let request = view.isr_requests.get(&at).map(|(r, _)| r);
            let decision = match (reconciled, request, current) {
                (Some((mut state, why)), request, _) => {
                    state.controller_epoch = controller_epoch;
                    Decision {
                        topic: name.clone(),
                        partition: p,
                        state: Some(state),
                        delete_request: request.is_some(),
                        delete_elect: false,
                        topic_update: None,
                        delete_reassign: false,
                        accepted: false,
                        why: if request.is_some() {
                            format!("{why}; the pending ISR request is stale")
                        } else {
                            why
                        },
                    }
                }
                (None, Some(request), Some(current)) => {
                    match check_isr_request(request, current, replicas, &staying) {
                        Ok(()) if request.isr == current.isr => Decision {
                            topic: name.clone(),
                            partition: p,
                            state: None,
                            delete_request: true,
                            delete_elect: false,
                            topic_update: None,
                            delete_reassign: false,
                            accepted: true,
                            why: "the requested ISR is the current one".into(),
                        },
                        Ok(()) => Decision {
                            topic: name.clone(),
                            partition: p,
                            state: Some(PartitionState {
                                isr: request.isr.clone(),
                                partition_epoch: current.partition_epoch + 1,
                                controller_epoch,
                                ..current.clone()
                            }),
                            delete_request: true,
                            delete_elect: false,
                            topic_update: None,
                            delete_reassign: false,
                            accepted: true,
                            why: format!("ISR change requested by leader {}", request.broker),
                        },
                        Err(why) => Decision {
                            topic: name.clone(),
                            partition: p,
                            state: None,
                            delete_request: true,
                            delete_elect: false,
                            topic_update: None,
                            delete_reassign: false,
                            accepted: false,
                            why: format!(
                                "ISR request from broker {} refused: {why}",
                                request.broker
                            ),
                        },
                    }
                }
                (None, None, Some(current))
                    if !view.elect_requests.contains_key(&at)
                        && snap.reassignments.contains_key(&at) =>
                {
                    let request = &snap.reassignments[&at];
                    match complete_reassignment(request, current, &staying, controller_epoch) {
                        Some((state, why)) => {
                            let mut info = topic.clone();
                            info.replicas[index] = request.target.clone();
                            Decision {
                                topic: name.clone(),
                                partition: p,
                                state: Some(state),
                                delete_request: false,
                                delete_elect: false,
                                topic_update: Some(info),
                                delete_reassign: true,
                                accepted: true,
                                why,
                            }
                        }
                        None => continue,
                    }
                }
                (None, None, Some(current)) => match view.elect_requests.get(&at) {
                    Some((request, _)) => {
                        let (state, why) = elect(
                            request,
                            replicas,
                            current,
                            &live,
                            &staying,
                            controller_epoch,
                        );
                        Decision {
                            topic: name.clone(),
                            partition: p,
                            accepted: state.is_some(),
                            state,
                            delete_request: false,
                            delete_elect: true,
                            topic_update: None,
                            delete_reassign: false,
                            why,
                        }
                    }
                    None => continue,
                },
                _ => continue,
            };
            out.push(decision);
        }
    }
    // Reassignments of partitions that do not exist (any more).
    for (topic, p) in snap.reassignments.keys() {
        let known = snap
            .topics
            .get(topic)
            .is_some_and(|t| usize::try_from(*p).is_ok_and(|i| i < t.replicas.len()));
        if !known {
            out.push(Decision {
                topic: topic.clone(),
                partition: *p,
                state: None,
                delete_request: false,
                delete_elect: false,
                topic_update: None,
                delete_reassign: true,
                accepted: false,
                why: "reassignment of an unknown partition dropped".into(),
            });
        }
    }
    // Requests for partitions that do not exist.
    for ((topic, p), (request, _)) in &view.isr_requests {
        let known = snap
            .topics
            .get(topic)
            .is_some_and(|t| usize::try_from(*p).is_ok_and(|i| i < t.replicas.len()));
        if !known {
            out.push(Decision {
                topic: topic.clone(),
                partition: *p,
                state: None,
                delete_request: true,
                delete_elect: false,
                topic_update: None,
                delete_reassign: false,
                accepted: false,
                why: format!(
                    "ISR request from broker {} refused: unknown partition",
                    request.broker
                ),
            });
        }
    }
    out
}

/// The state one partition should have, if not its current one: created
/// with the live replicas; leader and ISR moved off brokers that are gone
/// (unregistered, or registered again since the state was written).
fn reconcile(
    replicas: &[i32],
    current: Option<&PartitionState>,
    live: &dyn Fn(i32) -> bool,
    bounced: &dyn Fn(i32) -> bool,
    leaving: &dyn Fn(i32) -> bool,
    unclean: bool,
) -> Option<(PartitionState, String)> {
    let live_replicas: Vec<i32> = replicas.iter().copied().filter(|b| live(*b)).collect();
    let Some(current) = current else {
        // A new partition: the first live replica leads, the live replicas
        // are the ISR. With none alive it waits, leaderless, for one.
        let leader = live_replicas.first().copied().unwrap_or(-1);
        let why = if leader < 0 {
            "new partition, no replica alive".to_string()
        } else {
            "new partition".to_string()
        };
        return Some((
            PartitionState {
                leader,
                leader_epoch: 0,
                isr: live_replicas,
                partition_epoch: 0,
                controller_epoch: 0,
            },
            why,
        ));
    };
    if current.isr.is_empty() {
        // Never had a leader (no replica was alive at creation): nothing
        // was written, so any live replica is in sync.
        let leader = *live_replicas.first()?;
        return Some((
            PartitionState {
                leader,
                leader_epoch: current.leader_epoch + 1,
                isr: live_replicas,
                partition_epoch: current.partition_epoch + 1,
                controller_epoch: 0,
            },
            "first live replica of a new partition".into(),
        ));
    }
    let gone = |b: i32| !live(b) || bounced(b);
    let remaining: Vec<i32> = current.isr.iter().copied().filter(|b| !gone(*b)).collect();
    // Kafka's controlled shutdown: a broker about to stop leaves the ISR
    // and its leaderships go to the other members, when there are any (a
    // last member keeps both).
    let staying: Vec<i32> = remaining.iter().copied().filter(|b| !leaving(*b)).collect();
    let remaining = if staying.is_empty() {
        remaining
    } else {
        staying
    };
    let leader_stays =
        current.leader >= 0 && !gone(current.leader) && remaining.contains(&current.leader);
    let (leader, isr, why) = if leader_stays {
        let isr = if remaining.is_empty() {
            current.isr.clone()
        } else {
            remaining
        };
        (current.leader, isr, "followers left the ISR".to_string())
    } else if let Some(&leader) = replicas.iter().find(|b| remaining.contains(b)) {
        (
            leader,
            remaining,
            "leader gone, elected from the ISR".into(),
        )
    } else if let Some(&leader) = replicas
        .iter()
        .find(|b| current.isr.contains(b) && live(**b))
    {
        // Only ISR members that died and came back are alive: the first
        // leads again, alone in the ISR.
        (leader, vec![leader], "an ISR member came back".into())
    } else if let Some(&leader) = live_replicas.first().filter(|_| unclean) {
        (
            leader,
            vec![leader],
            "unclean leader election: no ISR member alive".into(),
        )
    } else {
        // No live ISR member: no leader, and the ISR stays as it was so that
        // its members can lead again when they return.
        (-1, current.isr.clone(), "no ISR member alive".into())
    };
    // A new leader, or none where there was one (no change if the partition
    // was and stays leaderless).
    let stays_leaderless = current.leader < 0 && leader < 0;
    let leader_changed = !(leader_stays || stays_leaderless);
    if !leader_changed && isr == current.isr {
        return None;
    }
    Some((
        PartitionState {
            leader,
            leader_epoch: current.leader_epoch + i32::from(leader_changed),
            isr,
            partition_epoch: current.partition_epoch + 1,
            controller_epoch: 0,
        },
        why,
    ))
}

/// A reassignment's last step (KIP-455), once every target replica is in
/// the ISR: the ISR keeps only target replicas, and a leader that is not
/// one hands over to the first target replica in the ISR that is staying
/// (a new leader epoch). The caller writes the replicas as `target`.
fn complete_reassignment(
    request: &ReassignRequest,
    current: &PartitionState,
    staying: &dyn Fn(i32) -> bool,
    controller_epoch: i64,
) -> Option<(PartitionState, String)> {
    if request.target.is_empty() || !request.target.iter().all(|b| current.isr.contains(b)) {
        return None;
    }
    let isr: Vec<i32> = current
        .isr
        .iter()
        .copied()
        .filter(|b| request.target.contains(b))
        .collect();
    let leader = if request.target.contains(&current.leader) {
        current.leader
    } else {
        request
            .target
            .iter()
            .copied()
            .find(|b| staying(*b))
            .or_else(|| request.target.first().copied())?
    };
    let leader_changed = leader != current.leader;
    Some((
        PartitionState {
            leader,
            leader_epoch: current.leader_epoch + i32::from(leader_changed),
            isr,
            partition_epoch: current.partition_epoch + 1,
            controller_epoch,
        },
        format!(
            "reassignment {:?} → {:?} complete",
            request.original, request.target
        ),
    ))
}

/// Kafka's automatic leader rebalance: for each broker whose share of
/// the partitions it is the preferred replica of (first in the assignment)
/// but does not lead is above 10 % (`leader.imbalance.per.broker.percentage`),
/// a preferred election for each of them whose preferred replica is live,
/// in the ISR and not shutting down.
pub(crate) fn rebalance(view: &View, controller_epoch: i64) -> Vec<Decision> {
    let snap = &view.snap;
    let staying = |b: i32| snap.brokers.contains_key(&b) && !snap.shutting_down.contains(&b);
    let live = |b: i32| snap.brokers.contains_key(&b);
    // preferred broker -> (partitions, those it does not lead)
    let mut share: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for (name, topic) in &snap.topics {
        for (index, replicas) in topic.replicas.iter().enumerate() {
            let (Some(&preferred), Ok(p)) = (replicas.first(), i32::try_from(index)) else {
                continue;
            };
            let entry = share.entry(preferred).or_default();
            entry.0 += 1;
            if snap
                .partitions
                .get(&(name.clone(), p))
                .is_some_and(|s| s.leader != preferred)
            {
                entry.1.push((name.clone(), p));
            }
        }
    }
    let mut out = Vec::new();
    for (preferred, (total, off)) in share {
        if off.is_empty() || off.len() * 10 <= total {
            continue;
        }
        for (topic, p) in off {
            let (Some(replicas), Some(current)) = (
                snap.replicas(&topic, p),
                snap.partitions.get(&(topic.clone(), p)),
            ) else {
                continue;
            };
            let request = ElectRequest { election_type: 0 };
            if let (Some(state), why) = elect(
                &request,
                replicas,
                current,
                &live,
                &staying,
                controller_epoch,
            ) {
                out.push(Decision {
                    topic,
                    partition: p,
                    state: Some(state),
                    delete_request: false,
                    delete_elect: false,
                    topic_update: None,
                    delete_reassign: false,
                    accepted: true,
                    why: format!("{why} (broker {preferred} leads too few of its partitions)"),
                });
            }
        }
    }
    out
}

/// An ElectLeaders request (Kafka's ElectLeaders v1+): the preferred
/// replica (first in the assignment) takes the leadership when it is live,
/// in the ISR and not shutting down; an unclean election gives a partition
/// with no live leader to the first live replica, alone in the ISR.
fn elect(
    request: &ElectRequest,
    replicas: &[i32],
    current: &PartitionState,
    live: &dyn Fn(i32) -> bool,
    staying: &dyn Fn(i32) -> bool,
    controller_epoch: i64,
) -> (Option<PartitionState>, String) {
    let next = |leader: i32, isr: Vec<i32>| PartitionState {
        leader,
        leader_epoch: current.leader_epoch + 1,
        isr,
        partition_epoch: current.partition_epoch + 1,
        controller_epoch,
    };
    match request.election_type {
        0 => match replicas.first().copied() {
            Some(preferred) if preferred == current.leader => {
                (None, "preferred replica already leads".into())
            }
            Some(preferred) if staying(preferred) && current.isr.contains(&preferred) => (
                Some(next(preferred, current.isr.clone())),
                "preferred leader election".into(),
            ),
            _ => (None, "preferred replica not available".into()),
        },
        _ if current.leader >= 0 && live(current.leader) => {
            (None, "unclean election not needed: it has a leader".into())
        }
        _ => match replicas.iter().copied().find(|&r| staying(r)) {
            Some(r) => (
                Some(next(r, vec![r])),
                "unclean leader election requested".into(),
            ),
            None => (None, "no live replica to elect".into()),
        },
    }
}

/// Kafka's AlterPartition checks: the request is from the current leader,
/// at the current epochs, and names live replicas including the leader.
fn check_isr_request(
    request: &IsrRequest,
    current: &PartitionState,
    replicas: &[i32],
    live: &dyn Fn(i32) -> bool,
) -> Result<(), String> {
    if request.leader_epoch != current.leader_epoch {
        return Err(format!(
            "leader epoch {} is not the current {}",
            request.leader_epoch, current.leader_epoch
        ));
    }
    if request.partition_epoch != current.partition_epoch {
        return Err(format!(
            "partition epoch {} is not the current {}",
            request.partition_epoch, current.partition_epoch
        ));
    }
    if request.broker != current.leader || current.leader < 0 {
        return Err(format!("the leader is {}", current.leader));
    }
    if request.isr.is_empty() {
        return Err("the ISR would be empty".into());
    }
    let distinct: BTreeSet<i32> = request.isr.iter().copied().collect();
    if distinct.len() != request.isr.len() {
        return Err(format!("{:?} names a broker twice", request.isr));
    }
    if let Some(b) = request.isr.iter().find(|b| !replicas.contains(b)) {
        return Err(format!("broker {b} is not a replica"));
    }
    if let Some(b) = request.isr.iter().find(|b| !live(**b)) {
        return Err(format!("broker {b} is not alive"));
    }
    if !request.isr.contains(&current.leader) {
        return Err("the leader is not in the ISR".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The loop

/// How one term as controller ended.
enum Term {
    Stopped,
    Deposed(&'static str),
}

async fn lease_replaced(rx: &mut watch::Receiver<LeaseState>, generation: u64) {
    if rx
        .wait_for(|s| s.generation != generation || s.lost)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// Campaigns for the controller with this broker's lease for as long as the
/// cluster runs; while elected, reconciles.
pub(crate) async fn controller_loop(shared: Arc<Shared>) {
    let stats = shared.etcd.stats();
    let mut lease_rx = shared.lease.subscribe();
    let mut backoff = Backoff::new();
    loop {
        let lease = lease_rx.borrow_and_update().clone();
        if lease.lost {
            tokio::select! {
                () = lease_replaced(&mut lease_rx, lease.generation) => continue,
                () = shared.stopped() => return,
            }
        }
        let campaign = shared.etcd.campaign(shared.node_id.to_string(), lease.id);
        let result = tokio::select! {
            r = campaign => r,
            () = lease_replaced(&mut lease_rx, lease.generation) => continue,
            () = shared.stopped() => return,
        };
        let (leader, _) = match result {
            Ok(won) => won,
            Err(e) => {
                tracing::debug!("campaign for controller failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next()) => {}
                    () = lease_replaced(&mut lease_rx, lease.generation) => {}
                    () = shared.stopped() => return,
                }
                continue;
            }
        };
        *shared.leader_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader.clone());
        stats
            .controller_elections_won
            .fetch_add(1, Ordering::Relaxed);
        stats.is_controller.store(true, Ordering::Relaxed);
        tracing::info!(
            "broker {} is the controller (epoch {})",
            shared.node_id,
            leader.rev()
        );
        let term = tokio::select! {
            t = lead(&shared, &leader) => t,
            () = lease_replaced(&mut lease_rx, lease.generation) => Term::Deposed("its lease is gone"),
        };
        stats.is_controller.store(false, Ordering::Relaxed);
        match term {
            Term::Stopped => return,
            Term::Deposed(why) => {
                *shared.leader_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(
                    "broker {} is no longer the controller (epoch {}): {why}",
                    shared.node_id,
                    leader.rev()
                );
                if !shared.sleep(backoff.next()).await {
                    return;
                }
            }
        }
    }
}

/// What became of one fenced write.
pub(crate) enum Applied {
    Written(i64),
    /// A compared key changed: the view was stale.
    Conflict,
    /// The election key is not ours any more.
    Fenced,
    Failed(EtcdError),
}

/// One term: decide, apply, wait for the view to show the writes, repeat.
async fn lead(shared: &Shared, leader: &LeaderKey) -> Term {
    let stats = shared.etcd.stats();
    let epoch = leader.rev();
    let key = leader.key().to_vec();
    let mut views = shared.store.subscribe_views();
    // The view must first show this broker elected (our key, and the
    // deletion of the keys we waited for). Not the campaign's header
    // revision: with other clusters in the same etcd that can run ahead of
    // every event under our prefix.
    let shown = wait_view(shared, &mut views, |v| {
        v.controller_key.as_deref() == Some(key.as_slice())
    })
    .await;
    match shown {
        Waited::Stopped => return Term::Stopped,
        Waited::Shown => {}
        Waited::TimedOut => {
            relist(shared).await;
            if shared.store.current().controller_key.as_deref() != Some(key.as_slice()) {
                return Term::Deposed("this broker's view does not show it elected");
            }
        }
    }
    let mut wait_until = 0;
    let mut backoff = Backoff::new();
    let mut conflicts = 0u32;
    // The first imbalance check a whole interval into the term.
    let mut rebalance_due = shared
        .cfg
        .leader_rebalance_interval
        .map(|every| tokio::time::Instant::now() + every);
    loop {
        // The view must show our last writes.
        match wait_view(shared, &mut views, |v| v.revision() >= wait_until).await {
            Waited::Stopped => return Term::Stopped,
            Waited::Shown => {}
            Waited::TimedOut => {
                relist(shared).await;
                wait_until = 0;
                continue;
            }
        }
        let view = views.borrow_and_update().clone();
        if view.controller_key.as_deref() != Some(key.as_slice()) {
            return Term::Deposed("another election key leads");
        }
        let mut decisions = decide(&view, epoch);
        if decisions.is_empty() && rebalance_due.is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            decisions = rebalance(&view, epoch);
            rebalance_due = shared
                .cfg
                .leader_rebalance_interval
                .map(|every| tokio::time::Instant::now() + every);
        }
        if decisions.is_empty() {
            let due = rebalance_due;
            tokio::select! {
                r = views.changed() => if r.is_err() { return Term::Stopped },
                () = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = shared.stopped() => return Term::Stopped,
            }
            continue;
        }
        let mut last = view.revision();
        let mut stale = false;
        for decision in &decisions {
            if *shared.stop.borrow() {
                return Term::Stopped;
            }
            match apply(shared, &view, decision, &key, epoch).await {
                Applied::Written(revision) => {
                    last = last.max(revision);
                    backoff.reset();
                    conflicts = 0;
                }
                Applied::Conflict => {
                    stats
                        .controller_txn_conflicts
                        .fetch_add(1, Ordering::Relaxed);
                    // A conflict again right after a re-read: pause, so a
                    // key that keeps changing cannot make this spin.
                    conflicts += 1;
                    if conflicts > 1 && !shared.sleep(backoff.next()).await {
                        return Term::Stopped;
                    }
                    stale = true;
                    break;
                }
                Applied::Fenced => {
                    stats
                        .controller_txn_conflicts
                        .fetch_add(1, Ordering::Relaxed);
                    return Term::Deposed("a write was fenced by a newer controller epoch");
                }
                Applied::Failed(e) => {
                    tracing::debug!("controller write failed: {e}");
                    if !shared.sleep(backoff.next()).await {
                        return Term::Stopped;
                    }
                    stale = true;
                    break;
                }
            }
        }
        if stale {
            relist(shared).await;
            wait_until = 0;
        } else {
            wait_until = last;
        }
    }
}

/// How waiting for the view ended.
enum Waited {
    Shown,
    TimedOut,
    Stopped,
}

/// Waits (up to 2 s) until the published view satisfies `ok`.
async fn wait_view(
    shared: &Shared,
    views: &mut watch::Receiver<Arc<View>>,
    ok: impl Fn(&View) -> bool,
) -> Waited {
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        if ok(&views.borrow_and_update()) {
            return Waited::Shown;
        }
        tokio::select! {
            r = views.changed() => if r.is_err() { return Waited::Stopped },
            () = &mut deadline => return Waited::TimedOut,
            () = shared.stopped() => return Waited::Stopped,
        }
    }
}

/// Re-reads the whole cluster state into the view.
async fn relist(shared: &Shared) {
    let etcd = &shared.etcd;
    match etcd.list().await {
        Ok((kvs, revision)) => {
            etcd.stats().relists.fetch_add(1, Ordering::Relaxed);
            shared.store.replace(&kvs, revision, etcd.stats());
        }
        Err(e) => tracing::debug!("controller could not re-read the cluster state: {e}"),
    }
}

/// Writes one decision in a transaction that holds only if this controller
/// is still elected and every key the decision read is as it was read.
pub(crate) async fn apply(
    shared: &Shared,
    view: &View,
    decision: &Decision,
    leader_key: &[u8],
    epoch: i64,
) -> Applied {
    let keys = &shared.etcd.keys;
    let stats = shared.etcd.stats();
    let (topic, p) = (&decision.topic, decision.partition);
    let at = (topic.clone(), p);
    let rev = |r: Option<&i64>| r.copied().unwrap_or(0);
    let mut compares = vec![
        Compare::create_revision(leader_key.to_vec(), CompareOp::Equal, epoch),
        Compare::mod_revision(
            keys.topic(topic),
            CompareOp::Equal,
            rev(view.topic_revs.get(topic)),
        ),
        Compare::mod_revision(
            keys.partition(topic, p),
            CompareOp::Equal,
            rev(view.partition_revs.get(&at)),
        ),
    ];
    // Every broker whose liveness or incarnation the decision read.
    let mut brokers: BTreeSet<i32> = BTreeSet::new();
    if let Some(replicas) = view.snap.replicas(topic, p) {
        brokers.extend(replicas);
    }
    for state in [view.snap.partitions.get(&at), decision.state.as_ref()]
        .into_iter()
        .flatten()
    {
        brokers.extend(&state.isr);
        brokers.insert(state.leader);
    }
    brokers.remove(&-1);
    for b in brokers {
        compares.push(Compare::mod_revision(
            keys.broker(b),
            CompareOp::Equal,
            rev(view.broker_revs.get(&b)),
        ));
    }
    let mut ops = Vec::new();
    let mut bytes = 0;
    if let Some(state) = &decision.state {
        let value = match serde_json::to_vec(state) {
            Ok(v) => v,
            Err(e) => return Applied::Failed(EtcdError::Other(e.to_string())),
        };
        bytes += value.len();
        ops.push(TxnOp::put(keys.partition(topic, p), value, None));
    }
    if let Some(info) = &decision.topic_update {
        let value = match serde_json::to_vec(info) {
            Ok(v) => v,
            Err(e) => return Applied::Failed(EtcdError::Other(e.to_string())),
        };
        bytes += value.len();
        ops.push(TxnOp::put(keys.topic(topic), value, None));
    }
    if decision.delete_reassign {
        let key = keys.reassignment(topic, p);
        compares.push(Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            rev(view.reassignment_revs.get(&at)),
        ));
        ops.push(TxnOp::delete(key, None));
    }
    if decision.delete_elect {
        let request_key = keys.elect_request(topic, p);
        compares.push(Compare::mod_revision(
            request_key.clone(),
            CompareOp::Equal,
            rev(view.elect_requests.get(&at).map(|(_, r)| r)),
        ));
        ops.push(TxnOp::delete(request_key, None));
    }
    if decision.delete_request {
        let request_key = keys.isr_request(topic, p);
        compares.push(Compare::mod_revision(
            request_key.clone(),
            CompareOp::Equal,
            rev(view.isr_requests.get(&at).map(|(_, r)| r)),
        ));
        ops.push(TxnOp::delete(request_key, None));
    }
    bytes += compares.len() * 48;
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(vec![TxnOp::get(leader_key.to_vec(), None)]);
    let resp = match shared.etcd.txn(txn, bytes).await {
        Ok(resp) => resp,
        Err(e) => return Applied::Failed(e),
    };
    if !resp.succeeded() {
        let ours = resp.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().iter().any(|kv| kv.create_revision() == epoch),
            _ => false,
        });
        return if ours {
            Applied::Conflict
        } else {
            Applied::Fenced
        };
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    if let Some(state) = &decision.state {
        stats.partition_state_writes.fetch_add(1, Ordering::Relaxed);
        let old = view.snap.partitions.get(&at);
        tracing::info!(
            "{topic}-{p}: leader {} → {} (leader epoch {}), ISR {:?} → {:?}: {}",
            old.map_or(-1, |s| s.leader),
            state.leader,
            state.leader_epoch,
            old.map(|s| s.isr.clone()).unwrap_or_default(),
            state.isr,
            decision.why
        );
    } else {
        tracing::debug!("{topic}-{p}: {}", decision.why);
    }
    if decision.delete_request {
        if decision.accepted {
            stats.isr_requests_accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.isr_requests_refused.fetch_add(1, Ordering::Relaxed);
            if decision.state.is_none() {
                tracing::info!("{topic}-{p}: {}", decision.why);
            }
        }
    }
    Applied::Written(revision)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::model::{BrokerInfo, TopicInfo, UNCLEAN_LEADER_ELECTION};

    fn unaware(n: i32) -> Vec<(i32, Option<String>)> {
        (0..n).map(|id| (id, None)).collect()
    }

    #[test]
    fn rack_unaware_matches_kafka() {
        // Kafka's AdminRackAwareTest/AdminUtilsTest expectation for 5
        // brokers, 10 partitions, rf 3, start index 0, shift 0.
        let got = assign_replicas(&unaware(5), 10, 3, 0, 0, 0).unwrap();
        let expected: Vec<Vec<i32>> = vec![
            vec![0, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 0],
            vec![4, 0, 1],
            vec![0, 2, 3],
            vec![1, 3, 4],
            vec![2, 4, 0],
            vec![3, 0, 1],
            vec![4, 1, 2],
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn rack_unaware_spreads_leaders_and_replicas() {
        let got = assign_replicas(&unaware(3), 6, 3, 1, 2, 0).unwrap();
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for partition in &got {
            assert_eq!(partition.len(), 3);
            let distinct: BTreeSet<_> = partition.iter().collect();
            assert_eq!(distinct.len(), 3, "{partition:?}");
            *leaders.entry(partition[0]).or_insert(0) += 1;
            for b in partition {
                *replicas.entry(*b).or_insert(0) += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(
            replicas.values().copied().collect::<Vec<_>>(),
            vec![6, 6, 6]
        );
    }

    #[test]
    fn broker_ids_need_not_be_dense() {
        let brokers = vec![(7, None), (3, None), (11, None)];
        let got = assign_replicas(&brokers, 3, 2, 0, 0, 0).unwrap();
        assert_eq!(got, vec![vec![3, 7], vec![7, 11], vec![11, 3]]);
    }

    #[test]
    fn assignment_refuses_impossible_requests() {
        assert!(matches!(
            assign_replicas(&unaware(2), 1, 3, 0, 0, 0),
            Err(ClusterError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            assign_replicas(&unaware(2), 1, 0, 0, 0, 0),
            Err(ClusterError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            assign_replicas(&unaware(2), 0, 1, 0, 0, 0),
            Err(ClusterError::InvalidPartitions(_))
        ));
    }

    #[test]
    fn rack_aware_matches_kafka() {
        // Kafka's AdminRackAwareTest
        // "testGetRackAlternatedBrokerListAndAssignReplicasToBrokers".
        let racks = ["rack1", "rack3", "rack3", "rack2", "rack2", "rack1"];
        let brokers: Vec<(i32, Option<String>)> = (0..6)
            .map(|i| (i, Some(racks[i as usize].to_string())))
            .collect();
        let map = |bs: &[(i32, Option<String>)]| -> BTreeMap<i32, String> {
            bs.iter().map(|(id, r)| (*id, r.clone().unwrap())).collect()
        };
        assert_eq!(rack_alternated(&map(&brokers)), vec![0, 3, 1, 5, 4, 2]);
        assert_eq!(rack_alternated(&map(&brokers[..5])), vec![0, 3, 1, 4, 2]);
        let got = assign_replicas(&brokers, 7, 3, 0, 0, 0).unwrap();
        let expected: Vec<Vec<i32>> = vec![
            vec![0, 3, 1],
            vec![3, 1, 5],
            vec![1, 5, 4],
            vec![5, 4, 2],
            vec![4, 2, 0],
            vec![2, 0, 3],
            vec![0, 4, 2],
        ];
        assert_eq!(got, expected);
        for partition in &got {
            let used: BTreeSet<&str> = partition.iter().map(|b| racks[*b as usize]).collect();
            assert_eq!(used.len(), 3, "one replica per rack: {partition:?}");
        }
    }

    #[test]
    fn rack_aware_with_more_replicas_than_racks() {
        let brokers: Vec<(i32, Option<String>)> = (0..4)
            .map(|i| (i, Some(if i < 2 { "a" } else { "b" }.to_string())))
            .collect();
        let got = assign_replicas(&brokers, 8, 3, 0, 1, 0).unwrap();
        for partition in &got {
            let distinct: BTreeSet<_> = partition.iter().collect();
            assert_eq!(distinct.len(), 3);
            let racks: BTreeSet<bool> = partition.iter().map(|b| *b < 2).collect();
            assert_eq!(racks.len(), 2, "both racks hold a replica: {partition:?}");
        }
    }

    #[test]
    fn manual_assignment_checks() {
        let live: BTreeSet<i32> = [1, 2, 3].into();
        assert!(validate_assignment(&[vec![1, 2], vec![2, 3]], &live, None).is_ok());
        for bad in [
            vec![],
            vec![vec![1, 2], vec![3]],
            vec![vec![1, 1]],
            vec![vec![1, 9]],
            vec![vec![]],
        ] {
            assert!(
                matches!(
                    validate_assignment(&bad, &live, None),
                    Err(ClusterError::InvalidReplicaAssignment(_))
                ),
                "{bad:?}"
            );
        }
        assert!(validate_assignment(&[vec![1, 2]], &live, Some(3)).is_err());
    }

    // --- decisions over a hand-built view ---

    struct Build {
        view: View,
        rev: i64,
    }

    impl Build {
        fn new() -> Build {
            Build {
                view: View::default(),
                rev: 10,
            }
        }

        fn next(&mut self) -> i64 {
            self.rev += 1;
            self.rev
        }

        fn broker(mut self, id: i32) -> Build {
            let rev = self.next();
            let snap = Arc::make_mut(&mut self.view.snap);
            snap.brokers.insert(
                id,
                BrokerInfo {
                    id,
                    host: "h".into(),
                    port: 9092,
                    rack: None,
                    incarnation: rev,
                    listeners: Vec::new(),
                },
            );
            self.view.broker_revs.insert(id, rev);
            self
        }

        fn topic(mut self, name: &str, replicas: Vec<Vec<i32>>, unclean: bool) -> Build {
            let rev = self.next();
            let mut configs = BTreeMap::new();
            if unclean {
                configs.insert(UNCLEAN_LEADER_ELECTION.to_string(), "true".to_string());
            }
            Arc::make_mut(&mut self.view.snap).topics.insert(
                name.into(),
                TopicInfo {
                    name: name.into(),
                    id: uuid::Uuid::nil(),
                    replicas,
                    configs,
                },
            );
            self.view.topic_revs.insert(name.into(), rev);
            self
        }

        fn state(
            mut self,
            topic: &str,
            p: i32,
            leader: i32,
            le: i32,
            isr: &[i32],
            pe: i32,
        ) -> Build {
            let rev = self.next();
            Arc::make_mut(&mut self.view.snap).partitions.insert(
                (topic.into(), p),
                PartitionState {
                    leader,
                    leader_epoch: le,
                    isr: isr.to_vec(),
                    partition_epoch: pe,
                    controller_epoch: 1,
                },
            );
            self.view.partition_revs.insert((topic.into(), p), rev);
            self
        }

        fn request(
            mut self,
            topic: &str,
            p: i32,
            broker: i32,
            le: i32,
            pe: i32,
            isr: &[i32],
        ) -> Build {
            let rev = self.next();
            self.view.isr_requests.insert(
                (topic.into(), p),
                (
                    IsrRequest {
                        broker,
                        leader_epoch: le,
                        partition_epoch: pe,
                        isr: isr.to_vec(),
                    },
                    rev,
                ),
            );
            self
        }

        fn decide(&self) -> Vec<Decision> {
            decide(&self.view, 99)
        }
    }

    fn only(decisions: &[Decision]) -> &Decision {
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        &decisions[0]
    }

    fn state(leader: i32, le: i32, isr: &[i32], pe: i32) -> PartitionState {
        PartitionState {
            leader,
            leader_epoch: le,
            isr: isr.to_vec(),
            partition_epoch: pe,
            controller_epoch: 99,
        }
    }

    #[test]
    fn new_partitions_get_the_live_replicas() {
        let b =
            Build::new()
                .broker(1)
                .broker(2)
                .topic("t", vec![vec![3, 2, 1], vec![1, 2, 3]], false);
        let d = b.decide();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].state, Some(state(2, 0, &[2, 1], 0)));
        assert_eq!(d[1].state, Some(state(1, 0, &[1, 2], 0)));
        assert!(!d[0].delete_request);
    }

    #[test]
    fn new_partition_without_live_replicas_waits_then_elects() {
        let b = Build::new().topic("t", vec![vec![1, 2]], false);
        assert_eq!(only(&b.decide()).state, Some(state(-1, 0, &[], 0)));
        let b = b.state("t", 0, -1, 0, &[], 0);
        assert!(b.decide().is_empty());
        let b = b.broker(2);
        assert_eq!(only(&b.decide()).state, Some(state(2, 1, &[2], 1)));
    }

    #[test]
    fn steady_state_decides_nothing() {
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7);
        assert!(b.decide().is_empty());
    }

    #[test]
    fn dead_leader_is_replaced_from_the_isr_in_assignment_order() {
        let b = Build::new()
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 3, 2]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7);
        let d = only(&b.decide()).clone();
        assert_eq!(d.state, Some(state(3, 5, &[2, 3], 8)));
    }

    fn reassign(mut b: Build, topic: &str, p: i32, target: &[i32], original: &[i32]) -> Build {
        let rev = b.next();
        let at = (topic.to_string(), p);
        b.view.reassignment_revs.insert(at.clone(), rev);
        Arc::make_mut(&mut b.view.snap).reassignments.insert(
            at,
            ReassignRequest {
                target: target.to_vec(),
                original: original.to_vec(),
            },
        );
        b
    }

    #[test]
    fn a_reassignment_waits_for_its_target_in_the_isr_then_drops_the_rest() {
        // [1, 2] → [3, 2]: while running the replicas are [3, 2, 1].
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![3, 2, 1]], false)
            .state("t", 0, 1, 4, &[1, 2], 7);
        let b = reassign(b, "t", 0, &[3, 2], &[1, 2]);
        assert!(b.decide().is_empty(), "3 is not in the ISR yet");
        // 3 caught up: the leader, 1, is not a target replica: 3 leads
        // (the first target staying), in a new epoch, and 1 leaves the ISR.
        let b = b.state("t", 0, 1, 4, &[1, 2, 3], 8);
        let d = only(&b.decide()).clone();
        assert_eq!(d.state, Some(state(3, 5, &[2, 3], 9)));
        assert_eq!(d.topic_update.map(|t| t.replicas), Some(vec![vec![3, 2]]));
        assert!(d.delete_reassign && d.accepted);
        // A leader that stays keeps its epoch.
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![2, 3, 1]], false)
            .state("t", 0, 2, 4, &[1, 2, 3], 8);
        let b = reassign(b, "t", 0, &[2, 3], &[1, 2]);
        assert_eq!(only(&b.decide()).state, Some(state(2, 4, &[2, 3], 9)));
    }

    #[test]
    fn a_reassignment_of_a_deleted_partition_is_dropped() {
        let b = Build::new().broker(1).topic("t", vec![vec![1]], false);
        let b = b.state("t", 0, 1, 0, &[1], 0);
        let b = reassign(b, "t", 3, &[1], &[1]);
        let d = only(&b.decide()).clone();
        assert_eq!((d.partition, d.delete_reassign, d.state), (3, true, None));
    }

    fn elect_request(mut b: Build, topic: &str, p: i32, election_type: i8) -> Build {
        let rev = b.next();
        b.view
            .elect_requests
            .insert((topic.into(), p), (ElectRequest { election_type }, rev));
        b
    }

    #[test]
    fn an_automatic_rebalance_returns_leaderships_to_an_underused_preferred_replica() {
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic(
                "t",
                vec![vec![1, 2, 3], vec![1, 3, 2], vec![2, 3, 1]],
                false,
            )
            .state("t", 0, 2, 4, &[1, 2, 3], 7)
            .state("t", 1, 3, 4, &[1, 2, 3], 7)
            .state("t", 2, 2, 4, &[1, 2, 3], 7);
        let mut moved: Vec<(i32, Option<PartitionState>)> = rebalance(&b.view, 99)
            .into_iter()
            .map(|d| (d.partition, d.state))
            .collect();
        moved.sort_by_key(|m| m.0);
        assert_eq!(
            moved,
            vec![
                (0, Some(state(1, 5, &[1, 2, 3], 8))),
                (1, Some(state(1, 5, &[1, 2, 3], 8)))
            ]
        );
    }

    #[test]
    fn no_rebalance_within_the_imbalance_allowance_or_out_of_the_isr() {
        // Broker 1 leads 10 of its 11 partitions: 9 % off, under 10 %.
        let mut b = Build::new()
            .broker(1)
            .broker(2)
            .topic("t", vec![vec![1, 2]; 11], false);
        for p in 0..10 {
            b = b.state("t", p, 1, 4, &[1, 2], 7);
        }
        b = b.state("t", 10, 2, 4, &[1, 2], 7);
        assert!(rebalance(&b.view, 99).is_empty());
        // Off for half its partitions, but out of their ISRs: nothing.
        let b = Build::new()
            .broker(1)
            .broker(2)
            .topic("u", vec![vec![1, 2], vec![1, 2]], false)
            .state("u", 0, 2, 4, &[2], 7)
            .state("u", 1, 1, 4, &[1, 2], 7);
        assert!(rebalance(&b.view, 99).is_empty());
    }

    #[test]
    fn a_preferred_election_moves_the_leadership_to_the_first_replica() {
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 2, 4, &[1, 2, 3], 7);
        let d = only(&elect_request(b, "t", 0, 0).decide()).clone();
        assert!(d.delete_elect && d.accepted);
        assert_eq!(d.state, Some(state(1, 5, &[1, 2, 3], 8)));
    }

    #[test]
    fn a_preferred_replica_out_of_the_isr_is_not_elected() {
        let b = Build::new()
            .broker(1)
            .broker(2)
            .topic("t", vec![vec![1, 2]], false)
            .state("t", 0, 2, 4, &[2], 7);
        let d = only(&elect_request(b, "t", 0, 0).decide()).clone();
        assert!(d.delete_elect && !d.accepted && d.state.is_none());
    }

    #[test]
    fn an_unclean_election_gives_a_leaderless_partition_to_a_live_replica() {
        let b = Build::new()
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, -1, 4, &[1], 7);
        let d = only(&elect_request(b, "t", 0, 1).decide()).clone();
        assert!(d.delete_elect && d.accepted);
        assert_eq!(d.state, Some(state(3, 5, &[3], 8)));
    }

    #[test]
    fn a_leader_in_controlled_shutdown_hands_over_to_the_isr() {
        let mut b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7);
        Arc::make_mut(&mut b.view.snap).shutting_down.insert(1);
        // Leadership to the next ISR member in assignment order, a new
        // epoch, and broker 1 out of the ISR.
        assert_eq!(only(&b.decide()).state, Some(state(2, 5, &[2, 3], 8)));
    }

    #[test]
    fn a_last_isr_member_in_controlled_shutdown_keeps_the_partition() {
        let mut b = Build::new()
            .broker(1)
            .broker(2)
            .topic("t", vec![vec![1, 2]], false)
            .state("t", 0, 1, 4, &[1], 7);
        Arc::make_mut(&mut b.view.snap).shutting_down.insert(1);
        assert!(b.decide().is_empty(), "no other in-sync replica to take it");
    }

    #[test]
    fn a_follower_in_controlled_shutdown_leaves_the_isr() {
        let mut b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7);
        Arc::make_mut(&mut b.view.snap).shutting_down.insert(3);
        assert_eq!(only(&b.decide()).state, Some(state(1, 4, &[1, 2], 8)));
    }

    #[test]
    fn dead_follower_leaves_the_isr_without_a_leader_change() {
        let b = Build::new()
            .broker(1)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7);
        assert_eq!(only(&b.decide()).state, Some(state(1, 4, &[1, 3], 8)));
    }

    #[test]
    fn follower_outside_the_isr_dying_changes_nothing() {
        let b = Build::new()
            .broker(1)
            .topic("t", vec![vec![1, 2]], false)
            .state("t", 0, 1, 4, &[1], 7);
        assert!(b.decide().is_empty());
    }

    #[test]
    fn last_isr_member_dying_leaves_no_leader_and_keeps_the_isr() {
        let b = Build::new()
            .broker(2)
            .topic("t", vec![vec![1, 2]], false)
            .state("t", 0, 1, 4, &[1], 7);
        assert_eq!(only(&b.decide()).state, Some(state(-1, 5, &[1], 8)));
        // Then the leaderless state is stable while 1 is away…
        let b = b.state("t", 0, -1, 5, &[1], 8);
        assert!(b.decide().is_empty());
        // …and 1 leads again when it returns.
        let b = b.broker(1);
        assert_eq!(only(&b.decide()).state, Some(state(1, 6, &[1], 9)));
    }

    #[test]
    fn unclean_election_takes_a_live_replica_outside_the_isr() {
        let b = Build::new()
            .broker(2)
            .topic("t", vec![vec![1, 2]], true)
            .state("t", 0, 1, 4, &[1], 7);
        assert_eq!(only(&b.decide()).state, Some(state(2, 5, &[2], 8)));
        // And a leaderless partition elects as soon as unclean is enabled.
        let b = Build::new()
            .broker(2)
            .topic("t", vec![vec![1, 2]], true)
            .state("t", 0, -1, 5, &[1], 8);
        assert_eq!(only(&b.decide()).state, Some(state(2, 6, &[2], 9)));
    }

    #[test]
    fn a_bounced_leader_is_treated_as_dead_and_back() {
        // Broker 1 registered again after the state was written.
        let b = Build::new()
            .broker(2)
            .topic("t", vec![vec![1, 2], vec![2, 1]], false)
            .state("t", 0, 1, 4, &[1, 2], 7)
            .state("t", 1, 2, 3, &[2, 1], 5)
            .broker(1);
        let d = b.decide();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].state, Some(state(2, 5, &[2], 8)), "leader moves off 1");
        assert_eq!(d[1].state, Some(state(2, 3, &[2], 6)), "1 leaves the ISR");
    }

    #[test]
    fn a_bounced_sole_replica_leads_again_with_a_new_epoch() {
        let b = Build::new()
            .topic("t", vec![vec![1]], false)
            .state("t", 0, 1, 4, &[1], 7)
            .broker(1);
        assert_eq!(only(&b.decide()).state, Some(state(1, 5, &[1], 8)));
    }

    #[test]
    fn isr_request_accepted() {
        let b = Build::new()
            .broker(1)
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7)
            .request("t", 0, 1, 4, 7, &[1, 3]);
        let d = only(&b.decide()).clone();
        assert!(d.accepted && d.delete_request);
        assert_eq!(d.state, Some(state(1, 4, &[1, 3], 8)));
    }

    #[test]
    fn isr_request_refusals() {
        let base = || {
            Build::new()
                .broker(1)
                .broker(2)
                .broker(4)
                .topic("t", vec![vec![1, 2, 3]], false)
                .state("t", 0, 1, 4, &[1, 2], 7)
        };
        for (broker, le, pe, isr, what) in [
            (1, 3, 7, vec![1], "stale leader epoch"),
            (1, 4, 6, vec![1], "stale partition epoch"),
            (2, 4, 7, vec![2], "not the leader"),
            (1, 4, 7, vec![1, 4], "not a replica"),
            (1, 4, 7, vec![1, 3], "not alive"),
            (1, 4, 7, vec![2], "leader not in the ISR"),
            (1, 4, 7, vec![], "empty"),
            (1, 4, 7, vec![1, 1], "duplicate"),
        ] {
            let b = base().request("t", 0, broker, le, pe, &isr);
            let d = only(&b.decide()).clone();
            assert!(d.delete_request && !d.accepted, "{what}: {d:?}");
            assert_eq!(d.state, None, "{what}");
        }
        let b = base().request("gone", 0, 1, 0, 0, &[1]);
        let d = only(&b.decide()).clone();
        assert!(d.delete_request && !d.accepted && d.state.is_none());
    }

    #[test]
    fn isr_request_superseded_by_a_leader_change() {
        let b = Build::new()
            .broker(2)
            .broker(3)
            .topic("t", vec![vec![1, 2, 3]], false)
            .state("t", 0, 1, 4, &[1, 2, 3], 7)
            .request("t", 0, 1, 4, 7, &[1, 2]);
        let d = only(&b.decide()).clone();
        assert!(d.delete_request && !d.accepted);
        assert_eq!(d.state, Some(state(2, 5, &[2, 3], 8)));
    }
}
