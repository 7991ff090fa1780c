//! The classic consumer-group protocol: JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup, one coordinator (this broker) for every group.
//!
//! A group moves Empty → PreparingRebalance (members (re)join; JoinGroup
//! requests park) → CompletingRebalance (the leader computes the assignment;
//! SyncGroup requests park) → Stable. Parked requests hold a oneshot sender;
//! the state lives under one mutex that is never held across an await. A
//! ticker completes rebalances whose time is up and removes members whose
//! session expired.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::offsets::{GroupSnapshot, MemberSnapshot};

/// Kafka error codes of the group protocol.
pub mod code {
    use kafka_protocol::ResponseError as E;
    pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = E::InconsistentGroupProtocol.code();
    pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
    pub const INVALID_SESSION_TIMEOUT: i16 = E::InvalidSessionTimeout.code();
    pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
    pub const GROUP_ID_NOT_FOUND: i16 = E::GroupIdNotFound.code();
    pub const NON_EMPTY_GROUP: i16 = E::NonEmptyGroup.code();
    pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = E::GroupSubscribedToTopic.code();
    pub const FENCED_INSTANCE_ID: i16 = E::FencedInstanceId.code();
    pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
}

/// Where the coordinator reads the time: the system's monotonic clock in
/// the broker, a hand-moved one in tests, so rebalance, expiry and
/// static-member rules are tested without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
}

/// `Instant::now()`.
#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata): for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// An answer now, or one to wait for.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A JoinGroup request's fields.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member must first ask for an id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join: Option<oneshot::Sender<JoinResult>>,
    sync: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used, with
    /// when they expire (their session timeout), so unused ids cannot pile up.
    pending: HashMap<String, Instant>,
    /// When the current rebalance must complete, joined or not.
    deadline: Option<Instant>,
    /// A group that was empty waits this long for more members to join.
    initial_wait_until: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            deadline: None,
            initial_wait_until: None,
        }
    }

    fn start_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.deadline = Some(now + timeout);
        self.initial_wait_until = was_empty.then(|| now + initial_delay.min(timeout));
        // Members parked in SyncGroup must rejoin.
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(SyncResult {
                    error: code::REBALANCE_IN_PROGRESS,
                    ..SyncResult::default()
                });
            }
        }
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join.is_some())
    }

    /// Ends the join phase: members that did not rejoin are dropped, the
    /// generation advances, a protocol and a leader are chosen, and every
    /// parked JoinGroup is answered.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.join.is_some());
        self.deadline = None;
        self.initial_wait_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
        self.leader = Some(leader.clone());
        self.protocol = protocol.clone();
        self.state = GroupState::CompletingRebalance;
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == protocol.as_ref())
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (id.clone(), m.instance_id.clone(), metadata)
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            if let Some(tx) = m.join.take() {
                let _ = tx.send(JoinResult {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn remove_member(&mut self, id: &str, now: Instant, initial_delay: Duration) {
        if let Some(m) = self.members.remove(id) {
            if let Some(tx) = m.join {
                let _ = tx.send(JoinResult {
                    error: code::UNKNOWN_MEMBER_ID,
                    member_id: id.to_string(),
                    ..JoinResult::default()
                });
            }
            if let Some(tx) = m.sync {
                let _ = tx.send(SyncResult {
                    error: code::UNKNOWN_MEMBER_ID,
                    ..SyncResult::default()
                });
            }
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.leader = None;
            self.protocol = None;
            self.deadline = None;
        } else {
            self.start_rebalance(now, initial_delay);
            if self.all_joined() && self.initial_wait_until.is_none_or(|t| now >= t) {
                self.complete_join();
            }
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// Every group of this broker.
#[derive(Debug)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    clock: Arc<dyn Clock>,
    initial_delay: Duration,
    next_member: AtomicU64,
}

impl Groups {
    pub fn new(initial_delay: Duration, clock: Arc<dyn Clock>) -> Groups {
        Groups {
            groups: Mutex::new(HashMap::new()),
            clock,
            initial_delay,
            next_member: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{client_id}-{n:x}-{nanos:08x}")
    }

    pub fn join(&self, req: JoinRequest) -> Reply<JoinResult> {
        let now = self.clock.now();
        let fail = |error: i16, member_id: &str| {
            Reply::Now(JoinResult {
                error,
                member_id: member_id.to_string(),
                generation: -1,
                ..JoinResult::default()
            })
        };
        if req.session_timeout < Duration::from_millis(1000)
            || req.session_timeout > Duration::from_secs(30 * 60)
        {
            return fail(code::INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        let mut groups = self.lock();
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        if g.state != GroupState::Empty
            && g.protocol_type
                .as_deref()
                .is_some_and(|t| t != req.protocol_type)
        {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            member_id = self.new_member_id(&req.client_id);
            // A static member restarting into a stable group with the same
            // protocols takes its old place without a rebalance (KIP-345).
            if let (Some(instance), GroupState::Stable) = (&req.instance_id, g.state)
                && let Some(old_id) = g
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone())
                && g.members[&old_id]
                    .protocols
                    .iter()
                    .map(|(n, _)| n)
                    .eq(req.protocols.iter().map(|(n, _)| n))
                && let Some(mut m) = g.members.remove(&old_id)
            {
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_seen = now;
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send(SyncResult {
                        error: code::FENCED_INSTANCE_ID,
                        ..SyncResult::default()
                    });
                }
                g.members.insert(member_id.clone(), m);
                if g.leader.as_deref() == Some(old_id.as_str()) {
                    g.leader = Some(member_id.clone());
                }
                return Reply::Now(JoinResult {
                    error: 0,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                });
            }
            if let Some(instance) = &req.instance_id {
                // A static member coming back replaces its previous incarnation.
                let old: Vec<String> = g
                    .members
                    .iter()
                    .filter(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in old {
                    if let Some(tx) = g.members.remove(&id).and_then(|mut m| m.join.take()) {
                        let _ = tx.send(JoinResult {
                            error: code::FENCED_INSTANCE_ID,
                            member_id: id.clone(),
                            ..JoinResult::default()
                        });
                    }
                }
            } else if req.require_known_member_id {
                g.pending
                    .insert(member_id.clone(), now + req.session_timeout);
                return fail(code::MEMBER_ID_REQUIRED, &member_id);
            }
        } else if !g.members.contains_key(&member_id) && !g.pending.contains_key(&member_id) {
            return fail(code::UNKNOWN_MEMBER_ID, &member_id);
        }
        g.pending.remove(&member_id);
        g.protocol_type = Some(req.protocol_type.clone());
        let (tx, rx) = oneshot::channel();
        let member = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join: None,
                sync: None,
            });
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.last_seen = now;
        member.join = Some(tx);
        g.start_rebalance(now, self.initial_delay);
        if g.all_joined() && g.initial_wait_until.is_none_or(|t| now >= t) {
            g.complete_join();
        }
        Reply::Later(rx)
    }

    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        let now = self.clock.now();
        let fail = |error| {
            Reply::Now(SyncResult {
                error,
                ..SyncResult::default()
            })
        };
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        if !g.members.contains_key(member_id) {
            return fail(code::UNKNOWN_MEMBER_ID);
        }
        if generation != g.generation {
            return fail(code::ILLEGAL_GENERATION);
        }
        let result = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        match g.state {
            GroupState::Empty | GroupState::PreparingRebalance => fail(code::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let assignment = g.members[member_id].assignment.clone();
                if let Some(m) = g.members.get_mut(member_id) {
                    m.last_seen = now;
                }
                Reply::Now(result(g, assignment))
            }
            GroupState::CompletingRebalance => {
                if g.leader.as_deref() == Some(member_id) {
                    let assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let snapshot = (g.protocol_type.clone(), g.protocol.clone());
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = assigned.get(id).cloned().unwrap_or_default();
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncResult {
                                error: 0,
                                protocol_type: snapshot.0.clone(),
                                protocol_name: snapshot.1.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                    g.state = GroupState::Stable;
                    let assignment = g.members[member_id].assignment.clone();
                    if let Some(m) = g.members.get_mut(member_id) {
                        m.last_seen = now;
                    }
                    Reply::Now(result(g, assignment))
                } else {
                    let (tx, rx) = oneshot::channel();
                    if let Some(m) = g.members.get_mut(member_id) {
                        m.sync = Some(tx);
                        m.last_seen = now;
                    }
                    Reply::Later(rx)
                }
            }
        }
    }

    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = self.clock.now();
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        0
    }

    /// LeaveGroup for (member id, instance id) pairs; an error code each.
    pub fn leave(&self, group: &str, members: Vec<(String, Option<String>)>) -> Vec<i16> {
        let now = self.clock.now();
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return members.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect();
        };
        members
            .into_iter()
            .map(|(id, instance)| {
                let id = if id.is_empty() {
                    // v3+: a static member may leave by instance id alone.
                    g.members
                        .iter()
                        .find(|(_, m)| m.instance_id.is_some() && m.instance_id == instance)
                        .map(|(id, _)| id.clone())
                        .unwrap_or_default()
                } else {
                    id
                };
                if g.members.contains_key(&id) {
                    g.remove_member(&id, now, self.initial_delay);
                    0
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect()
    }

    /// Completes rebalances that are due and expires silent members.
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut groups = self.lock();
        for (name, g) in groups.iter_mut() {
            g.pending.retain(|_, until| *until > now);
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "session expired; removing member");
                g.remove_member(&id, now, self.initial_delay);
            }
            if g.state == GroupState::PreparingRebalance {
                let waited = g.initial_wait_until.is_none_or(|t| now >= t);
                let timed_out = g.deadline.is_some_and(|d| now >= d);
                if (g.all_joined() && waited) || timed_out {
                    g.complete_join();
                }
            }
        }
        // Empty groups keep nothing worth memory (their offsets live in the
        // offset store), so names joined once cannot pile up.
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty && g.members.is_empty() && g.pending.is_empty())
        });
    }

    /// Checks that a member of `generation` may commit offsets.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let groups = self.lock();
        let Some(g) = groups.get(group) else {
            return if generation < 0 {
                0
            } else {
                code::ILLEGAL_GENERATION
            };
        };
        if generation < 0 {
            // A simple (non-member) commit: only while nobody is in the group.
            return if g.members.is_empty() {
                0
            } else {
                code::ILLEGAL_GENERATION
            };
        }
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        if g.state == GroupState::CompletingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        0
    }

    pub fn describe(&self, group: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group)?;
        Some(GroupView {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// (group, protocol type, state) of every group with state.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.lock()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// Groups that have members now.
    pub fn active(&self) -> HashSet<String> {
        self.lock()
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The membership of `group` if it is Stable at `generation`, to store
    /// (a new coordinator restores it; see [`Groups::restore`]).
    pub fn snapshot(&self, group: &str, generation: i32) -> Option<GroupSnapshot> {
        let groups = self.lock();
        let g = groups.get(group)?;
        if g.state != GroupState::Stable || g.generation != generation {
            return None;
        }
        Some(GroupSnapshot {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation,
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            state_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberSnapshot {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128)
                        as i32,
                    session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Takes over groups stored by an earlier coordinator, as Kafka's does
    /// on loading: each resumes Stable at its stored generation with its
    /// members and assignments, and every member's session starts now, so
    /// members that are alive carry on (heartbeats, commits) without a
    /// rebalance, and those that are gone expire after their session
    /// timeout. A group with no members resumes Empty at its generation.
    pub fn restore(&self, stored: Vec<(String, GroupSnapshot)>) {
        let now = self.clock.now();
        let mut groups = self.lock();
        for (name, snap) in stored {
            let mut g = Group::new();
            g.generation = snap.generation;
            g.protocol_type = Some(snap.protocol_type);
            g.protocol = snap.protocol.clone();
            g.leader = snap.leader;
            for m in snap.members {
                let protocols = snap
                    .protocol
                    .clone()
                    .map(|p| vec![(p, m.subscription)])
                    .unwrap_or_default();
                g.members.insert(
                    m.member_id,
                    Member {
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(
                            u64::try_from(m.session_timeout_ms).unwrap_or(0),
                        ),
                        rebalance_timeout: Duration::from_millis(
                            u64::try_from(m.rebalance_timeout_ms).unwrap_or(0),
                        ),
                        protocols,
                        assignment: m.assignment,
                        last_seen: now,
                        join: None,
                        sync: None,
                    },
                );
            }
            g.state = if g.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            groups.insert(name, g);
        }
    }

    /// Drops every group `moved` names (their coordinator partition left
    /// this broker, or is being loaded afresh): members parked in JoinGroup
    /// or SyncGroup are answered NOT_COORDINATOR, so they find the new
    /// coordinator and rejoin there. Returns how many groups went.
    pub fn unload(&self, moved: impl Fn(&str) -> bool) -> usize {
        let mut groups = self.lock();
        let names: Vec<String> = groups.keys().filter(|g| moved(g)).cloned().collect();
        for name in &names {
            let Some(g) = groups.remove(name) else {
                continue;
            };
            for (id, m) in g.members {
                if let Some(tx) = m.join {
                    let _ = tx.send(JoinResult {
                        error: code::NOT_COORDINATOR,
                        member_id: id,
                        ..JoinResult::default()
                    });
                }
                if let Some(tx) = m.sync {
                    let _ = tx.send(SyncResult {
                        error: code::NOT_COORDINATOR,
                        ..SyncResult::default()
                    });
                }
            }
        }
        names.len()
    }

    /// Drops an empty group's state; NON_EMPTY_GROUP if it has members.
    pub fn delete(&self, group: &str) -> i16 {
        let mut groups = self.lock();
        match groups.get(group) {
            Some(g) if !g.members.is_empty() => code::NON_EMPTY_GROUP,
            _ => {
                groups.remove(group);
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    #[derive(Debug)]
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn setup(initial_delay: Duration) -> (Groups, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        (Groups::new(initial_delay, clock.clone()), clock)
    }

    fn join(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group: "g".into(),
            member_id: member_id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: false,
        }
    }

    fn answered<T>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(v) => v,
            Reply::Later(mut rx) => rx.try_recv().expect("answered by now"),
        }
    }

    fn pending<T>(reply: &mut Reply<T>) -> bool {
        match reply {
            Reply::Now(_) => false,
            Reply::Later(rx) => rx.try_recv().is_err(),
        }
    }

    fn state(groups: &Groups) -> GroupState {
        groups.describe("g").expect("group").state
    }

    #[test]
    fn the_first_rebalance_waits_the_initial_delay_then_completes() {
        let (groups, clock) = setup(Duration::from_secs(3));
        let mut first = groups.join(join("", None));
        assert!(pending(&mut first), "parked for the initial delay");
        clock.advance(Duration::from_millis(2900));
        groups.tick();
        assert!(pending(&mut first));
        clock.advance(Duration::from_millis(200));
        groups.tick();
        let joined = answered(first);
        assert_eq!((joined.error, joined.generation), (0, 1));
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(state(&groups), GroupState::CompletingRebalance);
        let sync = answered(groups.sync(
            "g",
            1,
            &joined.member_id,
            vec![(joined.member_id.clone(), Bytes::from_static(b"a"))],
        ));
        assert_eq!((sync.error, &sync.assignment[..]), (0, &b"a"[..]));
        assert_eq!(state(&groups), GroupState::Stable);
    }

    #[test]
    fn a_silent_member_expires_after_its_session_timeout() {
        let (groups, clock) = setup(Duration::ZERO);
        let joined = answered(groups.join(join("", None)));
        let id = joined.member_id.clone();
        answered(groups.sync("g", joined.generation, &id, vec![]));
        clock.advance(Duration::from_secs(9));
        assert_eq!(groups.heartbeat("g", joined.generation, &id), 0);
        clock.advance(Duration::from_secs(9));
        groups.tick();
        assert_eq!(state(&groups), GroupState::Stable, "the heartbeat kept it");
        clock.advance(Duration::from_millis(10_001));
        groups.tick();
        assert!(
            groups.describe("g").is_none(),
            "expired, and the empty group dropped"
        );
        assert_eq!(
            groups.heartbeat("g", joined.generation, &id),
            code::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn a_rebalance_that_times_out_drops_members_that_did_not_rejoin() {
        let (groups, clock) = setup(Duration::ZERO);
        let a = answered(groups.join(join("", None)));
        answered(groups.sync("g", a.generation, &a.member_id, vec![]));
        // A second member joins: the first must rejoin within 30 s.
        let mut b = groups.join(join("", None));
        assert!(pending(&mut b));
        assert_eq!(state(&groups), GroupState::PreparingRebalance);
        assert_eq!(
            groups.heartbeat("g", a.generation, &a.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        clock.advance(Duration::from_secs(31));
        groups.tick();
        let b = answered(b);
        assert_eq!((b.error, b.generation), (0, 2));
        assert_eq!(b.leader, b.member_id, "the only member left leads");
        assert_eq!(
            groups.heartbeat("g", 2, &a.member_id),
            code::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn a_static_member_restarting_takes_its_place_without_a_rebalance() {
        let (groups, _clock) = setup(Duration::ZERO);
        let first = answered(groups.join(join("", Some("host-1"))));
        answered(groups.sync(
            "g",
            first.generation,
            &first.member_id,
            vec![(first.member_id.clone(), Bytes::from_static(b"p0"))],
        ));
        // Restarted: a new join with the same instance id and no member id.
        let again = answered(groups.join(join("", Some("host-1"))));
        assert_eq!(again.error, 0);
        assert_eq!(again.generation, first.generation, "no new generation");
        assert_ne!(again.member_id, first.member_id);
        assert_eq!(state(&groups), GroupState::Stable);
        let sync = answered(groups.sync("g", again.generation, &again.member_id, vec![]));
        assert_eq!(&sync.assignment[..], b"p0", "its old assignment");
        // The old incarnation is fenced.
        assert_eq!(
            groups.heartbeat("g", first.generation, &first.member_id),
            code::UNKNOWN_MEMBER_ID
        );
    }
}
