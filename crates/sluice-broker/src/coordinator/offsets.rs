//! Committed offsets as Kafka keeps them: records in the internal,
//! compacted topic `__consumer_offsets`, keyed by (group, topic, partition)
//! so compaction keeps the latest commit of each and a tombstone (a null
//! value) deletes one. A group's offsets all live in one partition of that
//! topic, chosen by Kafka's hash of the group id, and the broker leading
//! that partition is the group's coordinator.
//!
//! This module holds the record formats (Kafka's `OffsetCommitKey` v1,
//! `OffsetCommitValue` v3, `GroupMetadataKey` v2 tombstones; v0–v3 values
//! are read) and the in-memory view of the partitions this broker
//! coordinates: each is loaded from its log when the broker becomes its
//! leader, and every later commit is applied once it is durable. Appending
//! and replicating are the caller's (`api::coordination`).

use std::collections::BTreeMap;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_log::Partition;

/// The internal topic holding every group's committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The longest group id, topic name or metadata string a record can hold
/// (Kafka's strings have an int16 length). Longer ones are refused, never
/// cut: the handlers answer with a Kafka error before they get here.
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// One offset of a commit request.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `Utils.abs(groupId.hashCode) % partitions`, with Java's `String.hashCode`
/// over UTF-16 code units, so a Kafka tool finds the same partition.
pub fn partition_for(group: &str, partitions: u32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    ((h & 0x7fff_ffff) as u32 % partitions.max(1)) as i32
}

// ---- record formats -------------------------------------------------------

const KEY_OFFSET_COMMIT: i16 = 1;
const KEY_GROUP_METADATA: i16 = 2;
const VALUE_OFFSET_COMMIT: i16 = 3;

fn put_str(out: &mut BytesMut, s: &str) -> io::Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {}-byte string is over {MAX_STRING_BYTES} bytes", s.len()),
        )
    })?;
    out.put_i16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// `OffsetCommitKey` v1: group, topic, partition.
pub fn commit_key(group: &str, topic: &str, partition: i32) -> io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(10 + group.len() + topic.len());
    out.put_i16(KEY_OFFSET_COMMIT);
    put_str(&mut out, group)?;
    put_str(&mut out, topic)?;
    out.put_i32(partition);
    Ok(out.freeze())
}

/// `OffsetCommitValue` v3: offset, leader epoch, metadata, commit time.
pub fn commit_value(c: &Committed) -> io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(26 + c.metadata.len());
    out.put_i16(VALUE_OFFSET_COMMIT);
    out.put_i64(c.offset);
    out.put_i32(c.leader_epoch);
    put_str(&mut out, &c.metadata)?;
    out.put_i64(c.commit_ms);
    Ok(out.freeze())
}

/// `GroupMetadataKey` v2: the group (its tombstone ends a deleted group).
pub fn group_key(group: &str) -> io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(4 + group.len());
    out.put_i16(KEY_GROUP_METADATA);
    put_str(&mut out, group)?;
    Ok(out.freeze())
}

/// A group's membership as the coordinator stores it once a rebalance
/// completes (Kafka's `GroupMetadataValue`), so a new coordinator resumes
/// the group where it was, generation and assignments included, and the
/// members carry on without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_ms: i64,
    pub members: Vec<MemberSnapshot>,
}

/// One member of a [`GroupSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

const VALUE_GROUP_METADATA: i16 = 3;

fn put_nullable_str(out: &mut BytesMut, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => put_str(out, s),
        None => {
            out.put_i16(-1);
            Ok(())
        }
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) -> io::Result<()> {
    let len = i32::try_from(b.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bytes too long"))?;
    out.put_i32(len);
    out.put_slice(b);
    Ok(())
}

/// `GroupMetadataValue` v3.
pub fn group_value(g: &GroupSnapshot) -> io::Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_GROUP_METADATA);
    put_str(&mut out, &g.protocol_type)?;
    out.put_i32(g.generation);
    put_nullable_str(&mut out, g.protocol.as_deref())?;
    put_nullable_str(&mut out, g.leader.as_deref())?;
    out.put_i64(g.state_ms);
    out.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut out, &m.member_id)?;
        put_nullable_str(&mut out, m.instance_id.as_deref())?;
        put_str(&mut out, &m.client_id)?;
        put_str(&mut out, &m.client_host)?;
        out.put_i32(m.rebalance_timeout_ms);
        out.put_i32(m.session_timeout_ms);
        put_bytes(&mut out, &m.subscription)?;
        put_bytes(&mut out, &m.assignment)?;
    }
    Ok(out.freeze())
}

/// The record storing a group's membership.
pub fn group_records(group: &str, g: &GroupSnapshot) -> io::Result<Vec<(Bytes, Option<Bytes>)>> {
    Ok(vec![(group_key(group)?, Some(group_value(g)?))])
}

fn decode_group_value(value: &[u8]) -> Option<GroupSnapshot> {
    let mut v = Reader(value);
    let version = v.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = v.str()?;
    let generation = v.i32()?;
    let protocol = v.nullable_str()?;
    let leader = v.nullable_str()?;
    let state_ms = if version >= 2 { v.i64()? } else { -1 };
    let n = v.i32()?;
    let mut members = Vec::new();
    for _ in 0..n.max(0) {
        let member_id = v.str()?;
        let instance_id = if version >= 3 {
            v.nullable_str()?
        } else {
            None
        };
        let client_id = v.str()?;
        let client_host = v.str()?;
        let session_first = version == 0;
        let (rebalance_timeout_ms, session_timeout_ms) = if session_first {
            let s = v.i32()?;
            (s, s)
        } else {
            let r = v.i32()?;
            (r, v.i32()?)
        };
        let subscription = Bytes::copy_from_slice(v.bytes()?);
        let assignment = Bytes::copy_from_slice(v.bytes()?);
        members.push(MemberSnapshot {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(GroupSnapshot {
        protocol_type,
        generation,
        protocol,
        leader,
        state_ms,
        members,
    })
}

/// A record of `__consumer_offsets`, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        committed: Committed,
    },
    /// A tombstone: the offset was deleted (DeleteGroups, OffsetDelete,
    /// expiry).
    Delete {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A group's membership (None: the group was deleted).
    Group {
        group: String,
        snapshot: Option<GroupSnapshot>,
    },
}

/// Reads one record; None for a key this broker does not know (skipped, as
/// a newer Kafka record type would be) or bytes that do not parse.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<Change> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | 1 => {
            let group = k.str()?;
            let topic = k.str()?;
            let partition = k.i32()?;
            let Some(value) = value else {
                return Some(Change::Delete {
                    group,
                    topic,
                    partition,
                });
            };
            let mut v = Reader(value);
            let version = v.i16()?;
            let offset = v.i64()?;
            let leader_epoch = if version >= 3 { v.i32()? } else { -1 };
            let metadata = v.str()?;
            let commit_ms = v.i64()?;
            Some(Change::Commit {
                group,
                topic,
                partition,
                committed: Committed {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_ms,
                },
            })
        }
        2 => {
            let group = k.str()?;
            let snapshot = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(Change::Group { group, snapshot })
        }
        _ => None,
    }
}

/// One uncompressed RecordBatch v2 of `(key, value)` records, as a
/// non-idempotent producer writes it; the log assigns offsets and the
/// leader epoch.
pub fn encode_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> io::Result<Bytes> {
    encode_batch_as(records, now_ms, None)
}

/// A TxnOffsetCommit's records: one transactional batch of the producer
/// (`producer_id`, `producer_epoch`), with no sequence (as Kafka's
/// coordinator writes it), so that they count only once its transaction
/// commits.
pub fn encode_txn_batch(
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> io::Result<Bytes> {
    encode_batch_as(records, now_ms, Some((producer_id, producer_epoch)))
}

fn encode_batch_as(
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> io::Result<Bytes> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset − 1 keeps every record in one batch with base
            // sequence −1 (see sluice-client's `plain_record`).
            sequence: (i as i32).wrapping_sub(1),
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| io::Error::other(format!("encoding an offsets batch: {e}")))?;
    Ok(buf.freeze())
}

/// The records of an OffsetCommit, in request order.
pub fn commit_records(
    group: &str,
    entries: &[CommitEntry],
) -> io::Result<Vec<(Bytes, Option<Bytes>)>> {
    entries
        .iter()
        .map(|e| {
            Ok((
                commit_key(group, &e.topic, e.partition)?,
                Some(commit_value(&e.committed)?),
            ))
        })
        .collect()
}

/// Tombstones for some of a group's offsets, and with `whole_group` for
/// the group itself.
pub fn delete_records(
    group: &str,
    keys: &[(String, i32)],
    whole_group: bool,
) -> io::Result<Vec<(Bytes, Option<Bytes>)>> {
    let mut out: Vec<(Bytes, Option<Bytes>)> = keys
        .iter()
        .map(|(t, p)| Ok((commit_key(group, t, *p)?, None)))
        .collect::<io::Result<_>>()?;
    if whole_group {
        out.push((group_key(group)?, None));
    }
    Ok(out)
}

// ---- the partitions this broker coordinates --------------------------------

type Key = (String, String, i32);

/// A loaded partition's offsets, each with the log offset of the record
/// that set it (a commit acknowledged late never overwrites a later one).
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    map: BTreeMap<Key, (Committed, i64)>,
    /// Each group's latest membership record (only while loading: handed
    /// to the group coordinator once, by [`PartitionOffsets::take_groups`]).
    groups: BTreeMap<String, (Option<GroupSnapshot>, i64)>,
    /// Offsets committed in a producer's open transaction (TxnOffsetCommit),
    /// with their log offsets: applied when its COMMIT marker lands,
    /// dropped on ABORT (Kafka's `pendingTransactionalOffsetCommits`).
    pending: BTreeMap<i64, Vec<(i64, Change)>>,
}

impl PartitionOffsets {
    /// Ends producer `producer_id`'s transaction in this partition.
    fn complete_txn(&mut self, producer_id: i64, commit: bool) {
        if let Some(changes) = self.pending.remove(&producer_id)
            && commit
        {
            for (at, change) in changes {
                self.apply(at, change);
            }
        }
    }

    /// Whether a transaction holds an uncommitted offset for the key.
    fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending.values().flatten().any(|(_, c)| {
            matches!(c, Change::Commit { group: g, topic: t, partition: p, .. }
                if g == group && t == topic && *p == partition)
        })
    }

    fn apply(&mut self, log_offset: i64, change: Change) {
        match change {
            Change::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                let key = (group, topic, partition);
                match self.map.get(&key) {
                    Some((_, at)) if *at > log_offset => {}
                    _ => {
                        self.map.insert(key, (committed, log_offset));
                    }
                }
            }
            Change::Delete {
                group,
                topic,
                partition,
            } => {
                let key = (group, topic, partition);
                if self.map.get(&key).is_some_and(|(_, at)| *at < log_offset) {
                    self.map.remove(&key);
                }
            }
            Change::Group { group, snapshot } => match self.groups.get(&group) {
                Some((_, at)) if *at > log_offset => {}
                _ => {
                    self.groups.insert(group, (snapshot, log_offset));
                }
            },
        }
    }

    /// The groups whose latest membership record is not a tombstone (the
    /// group coordinator restores them after a load).
    pub fn take_groups(&mut self) -> Vec<(String, GroupSnapshot)> {
        std::mem::take(&mut self.groups)
            .into_iter()
            .filter_map(|(g, (s, _))| s.map(|s| (g, s)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Reads a whole `__consumer_offsets` partition (log start to log end)
/// into its offsets. Batches that do not decode are skipped with a warning:
/// the log's own recovery already cut torn tails, so this is a record type
/// from elsewhere, never a reason to refuse to coordinate.
pub fn load(part: &Partition) -> io::Result<PartitionOffsets> {
    let mut out = PartitionOffsets::default();
    super::records::for_each_record(part, |r| {
        if r.control {
            // A transaction marker: key = version i16, type i16 (0 abort,
            // 1 commit).
            if let Some(key) = &r.key
                && key.len() >= 4
            {
                let commit = i16::from_be_bytes([key[2], key[3]]) == 1;
                out.complete_txn(r.producer_id, commit);
            }
            return;
        }
        if let Some(key) = &r.key
            && let Some(change) = decode(key, r.value.as_deref())
        {
            if r.transactional {
                out.pending
                    .entry(r.producer_id)
                    .or_default()
                    .push((r.offset, change));
            } else {
                out.apply(r.offset, change);
            }
        }
    })?;
    Ok(out)
}

use super::records::Reader;
pub use super::slots::LoadState;
use super::slots::Slots;

/// The committed offsets of the partitions this broker coordinates.
#[derive(Debug)]
pub struct OffsetStore {
    partitions: u32,
    slots: Slots<PartitionOffsets>,
}

impl OffsetStore {
    /// A store for a `__consumer_offsets` of `partitions` partitions
    /// (`offsets.topic.num.partitions`), nothing loaded yet.
    pub fn new(partitions: u32) -> OffsetStore {
        OffsetStore {
            partitions: partitions.max(1),
            slots: Slots::default(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of `group`.
    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.partitions)
    }

    /// Where partition `p` stands for leader epoch `epoch`.
    pub fn state(&self, p: i32, epoch: i32) -> LoadState {
        self.slots.state(p, epoch)
    }

    /// Claims the load of `p` for `epoch` (see [`Slots::begin_load`]).
    pub fn begin_load(&self, p: i32, epoch: i32) -> bool {
        self.slots.begin_load(p, epoch)
    }

    /// Installs a finished load (see [`Slots::finish_load`]).
    pub fn finish_load(&self, p: i32, epoch: i32, offsets: Option<PartitionOffsets>) {
        self.slots.finish_load(p, epoch, offsets);
    }

    /// Forgets partition `p` (this broker no longer leads it).
    pub fn unload(&self, p: i32) -> bool {
        self.slots.unload(p)
    }

    /// Partitions loaded or loading, with their epochs.
    pub fn held(&self) -> Vec<(i32, i32)> {
        self.slots.held()
    }

    /// Applies records appended at `base_offset` (one per record, in order)
    /// once they are durable, if `p` is still loaded for `epoch`.
    pub fn apply(&self, p: i32, epoch: i32, base_offset: i64, records: &[(Bytes, Option<Bytes>)]) {
        self.slots.with_mut_at(p, epoch, |offsets| {
            for (i, (key, value)) in records.iter().enumerate() {
                match decode(key, value.as_deref()) {
                    // Membership lives in the group coordinator once loaded.
                    Some(Change::Group { .. }) | None => {}
                    Some(change) => offsets.apply(base_offset + i as i64, change),
                }
            }
        });
    }

    /// Holds a TxnOffsetCommit's records (appended at `base_offset`, once
    /// durable) until producer `producer_id`'s transaction ends.
    pub fn add_pending(
        &self,
        p: i32,
        epoch: i32,
        producer_id: i64,
        base_offset: i64,
        records: &[(Bytes, Option<Bytes>)],
    ) {
        self.slots.with_mut_at(p, epoch, |offsets| {
            let pending = offsets.pending.entry(producer_id).or_default();
            for (i, (key, value)) in records.iter().enumerate() {
                if let Some(change @ Change::Commit { .. }) = decode(key, value.as_deref()) {
                    pending.push((base_offset + i as i64, change));
                }
            }
        });
    }

    /// A COMMIT or ABORT marker for `producer_id` landed in partition `p`:
    /// its transactional offsets become committed, or are dropped.
    pub fn complete_txn(&self, p: i32, producer_id: i64, commit: bool) {
        self.slots
            .with_mut(p, |offsets| offsets.complete_txn(producer_id, commit));
    }

    /// Whether an open transaction holds an offset of the group's for the
    /// partition (OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.with_group(group, |o| o.has_pending(group, topic, partition))
            .unwrap_or(false)
    }

    fn with_group<T>(&self, group: &str, f: impl FnOnce(&PartitionOffsets) -> T) -> Option<T> {
        self.slots.with(self.partition_for(group), f)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.with_group(group, |o| {
            o.map
                .get(&(group.to_string(), topic.to_string(), partition))
                .map(|(c, _)| c.clone())
        })
        .flatten()
    }

    /// Every (topic, partition, offset) a group has committed.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.with_group(group, |o| {
            o.map
                .range((group.to_string(), String::new(), i32::MIN)..)
                .take_while(|((g, _, _), _)| g == group)
                .map(|((_, t, p), (c, _))| (t.clone(), *p, c.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Whether `group` has any committed offset here.
    pub fn has_group(&self, group: &str) -> bool {
        self.with_group(group, |o| {
            o.map
                .range((group.to_string(), String::new(), i32::MIN)..)
                .next()
                .is_some_and(|((g, _, _), _)| g == group)
        })
        .unwrap_or(false)
    }

    /// Groups with committed offsets in the loaded partitions.
    pub fn groups(&self) -> Vec<String> {
        let mut gs: Vec<String> = Vec::new();
        self.slots
            .for_each_loaded(|o| gs.extend(o.map.keys().map(|(g, _, _)| g.clone())));
        gs.sort();
        gs.dedup();
        gs
    }

    /// Offsets committed before `before_ms` by groups not in `active`
    /// (Kafka's `offsets.retention.minutes` for empty groups), by group.
    pub fn expired(
        &self,
        before_ms: i64,
        active: &std::collections::HashSet<String>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let mut by_group: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        self.slots.for_each_loaded(|o| {
            for ((g, t, p), (c, _)) in &o.map {
                if c.commit_ms < before_ms && !active.contains(g) {
                    by_group.entry(g.clone()).or_default().push((t.clone(), *p));
                }
            }
        });
        by_group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: 4,
            metadata: "m".into(),
            commit_ms: 17,
        }
    }

    #[test]
    fn partition_matches_kafkas_hash() {
        // Java's String.hashCode by hand: "a" = 97, "ab" = 97*31 + 98.
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("ab", 50), (97 * 31 + 98) % 50);
        // A hash that overflows and goes negative is masked, not negated:
        // "my-group".hashCode() is -1906497762 (computed apart from this
        // code), & 0x7fffffff = 240985886, % 50 = 36.
        assert_eq!(partition_for("my-group", 50), 36);
        // Non-ASCII: Java hashes UTF-16 code units.
        assert_eq!(partition_for("é", 100), 0xe9 % 100);
        assert_eq!(
            partition_for("😀", 1_000_000),
            (0xd83d * 31 + 0xde00) % 1_000_000
        );
    }

    #[test]
    fn records_round_trip_in_kafkas_layout() {
        let key = commit_key("g", "t", 3).unwrap();
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let value = commit_value(&committed(42)).unwrap();
        assert_eq!(&value[..2], &[0, 3]);
        assert_eq!(value.len(), 2 + 8 + 4 + 2 + 1 + 8);
        assert_eq!(
            decode(&key, Some(&value)),
            Some(Change::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                committed: committed(42),
            })
        );
        assert_eq!(
            decode(&key, None),
            Some(Change::Delete {
                group: "g".into(),
                topic: "t".into(),
                partition: 3
            })
        );
        assert_eq!(
            decode(&group_key("g").unwrap(), None),
            Some(Change::Group {
                group: "g".into(),
                snapshot: None
            })
        );
        let snapshot = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 9,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_ms: 5,
            members: vec![MemberSnapshot {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 6000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let value = group_value(&snapshot).unwrap();
        assert_eq!(&value[..2], &[0, 3]);
        assert_eq!(
            decode(&group_key("g").unwrap(), Some(&value)),
            Some(Change::Group {
                group: "g".into(),
                snapshot: Some(snapshot)
            })
        );
        assert_eq!(
            decode(&group_key("g").unwrap(), Some(&value[..value.len() - 1])),
            None,
            "a cut value"
        );
        // v1 values (Kafka before 2.1): no leader epoch, an expiry time.
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(9);
        v1.put_i16(0);
        v1.put_i64(5);
        v1.put_i64(6);
        assert!(matches!(
            decode(&key, Some(&v1)),
            Some(Change::Commit {
                committed: Committed {
                    offset: 9,
                    leader_epoch: -1,
                    commit_ms: 5,
                    ..
                },
                ..
            })
        ));
        assert_eq!(decode(&[0, 9, 1, 2], None), None, "unknown key version");
        assert_eq!(decode(&[0, 1, 0, 9], None), None, "a lying length");
        assert!(commit_key(&"g".repeat(MAX_STRING_BYTES + 1), "t", 0).is_err());
    }

    #[test]
    fn a_late_acknowledgement_never_overwrites_a_later_commit() {
        let store = OffsetStore::new(1);
        assert!(store.begin_load(0, 7));
        assert!(!store.begin_load(0, 7), "one loader at a time");
        assert_eq!(store.state(0, 7), LoadState::Loading);
        store.finish_load(0, 7, Some(PartitionOffsets::default()));
        assert_eq!(store.state(0, 7), LoadState::Loaded);
        assert_eq!(store.state(0, 8), LoadState::Absent);
        let at = |o| {
            commit_records(
                "g",
                &[CommitEntry {
                    topic: "t".into(),
                    partition: 0,
                    committed: committed(o),
                }],
            )
            .unwrap()
        };
        store.apply(0, 7, 20, &at(200));
        store.apply(0, 7, 10, &at(100));
        assert_eq!(store.get("g", "t", 0).map(|c| c.offset), Some(200));
        // An older tombstone does not delete a newer commit.
        store.apply(
            0,
            7,
            15,
            &delete_records("g", &[("t".into(), 0)], true).unwrap(),
        );
        assert!(store.has_group("g"));
        store.apply(
            0,
            7,
            21,
            &delete_records("g", &[("t".into(), 0)], true).unwrap(),
        );
        assert!(!store.has_group("g"));
        // A commit for another epoch (from before a move) is not applied.
        store.apply(0, 6, 30, &at(300));
        assert_eq!(store.get("g", "t", 0), None);
        assert!(store.unload(0));
        assert_eq!(store.get("g", "t", 0), None);
    }
}
