//! Idempotent and transactional producers: per partition, the recent
//! sequence numbers of every producer id, so a retried batch is acknowledged
//! without being appended twice, a gap is refused, and a fenced (older)
//! epoch is refused; and each producer's open transaction, which holds the
//! last stable offset back — Kafka's ProducerStateManager, rebuilt on open
//! from the batch headers in the log (and the markers' records).
//!
//! Transactions (KIP-98): a transactional data batch of producer P opens a
//! transaction at its base offset if P has none open; later ones join it.
//! A control batch (COMMIT or ABORT marker) of P ends it. State changes
//! batch by batch, in log order, whoever appends (leader, follower,
//! recovery), so every replica of the same bytes has the same state and
//! the same aborted-transaction entries.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::batch::{BatchHeader, TxnMarker};
use crate::txn_index::AbortedTxn;

/// How many recent batches per producer are remembered for duplicate
/// detection (Kafka's `max.in.flight.requests.per.connection` bound).
const RECENT_BATCHES: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<SeqBatch>,
    /// The coordinator epoch of the producer's last marker (−1: none yet).
    coordinator_epoch: i32,
    /// The first offset of the producer's open transaction.
    txn_first_offset: Option<i64>,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            recent: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }
}

impl ProducerEntry {
    /// A batch of another epoch starts the producer's sequences over.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.recent.clear();
        }
    }
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence appended (−1: none remembered).
    pub last_sequence: i32,
    /// The coordinator epoch of its last marker (−1: none).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction (−1: none).
    pub txn_start_offset: i64,
}

/// A transaction a marker ended (Kafka's `CompletedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
    /// The first offset of the earliest transaction still open (another
    /// producer's) once this one ended, else `last_offset + 1`.
    pub last_stable_offset: i64,
}

impl CompletedTxn {
    /// The transaction index entry of an aborted transaction.
    pub fn aborted_entry(&self) -> Option<AbortedTxn> {
        self.aborted.then_some(AbortedTxn {
            producer_id: self.producer_id,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            last_stable_offset: self.last_stable_offset,
        })
    }
}

/// What the sequence check says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// Already appended at these offsets: acknowledge, do not append.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Why a batch's producer fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: sequence {got} does not follow {last} (epoch {epoch})")]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        last: i32,
        got: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than the current epoch {current}")]
    FencedEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    /// A marker from a transaction coordinator older than one that already
    /// wrote a marker for this producer (Kafka's
    /// TRANSACTION_COORDINATOR_FENCED): a deposed coordinator's late write.
    #[error("producer {producer_id}: marker from coordinator epoch {got}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        current: i32,
        got: i32,
    },
}

/// The last sequence of a batch: Kafka's sequences wrap from i32::MAX to 0.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    let delta = h.last_offset_delta.max(0);
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
/// 2 adds transactions; version 1 snapshots still load (no transaction
/// open, no coordinator epoch).
const SNAPSHOT_VERSION: u16 = 2;

/// A cursor over snapshot bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id (Kafka's
    /// `ongoingTxns`).
    ongoing: BTreeMap<i64, i64>,
    /// Ended transactions the high watermark may not have passed yet:
    /// first offset → (producer id, marker offset) (Kafka's
    /// `unreplicatedTxns`). Until a marker is below the high watermark its
    /// transaction still holds the last stable offset back: a new leader
    /// without the marker would still have it open.
    unreplicated: BTreeMap<i64, (i64, i64)>,
    /// Bumped whenever `ongoing` or `unreplicated` changes.
    txn_changes: u64,
}

impl ProducerTable {
    /// Checks a batch (its header as appended, with offsets assigned).
    /// A marker (control batch) is checked for its epoch only: an older
    /// epoch than the producer's is fenced (Kafka's INVALID_PRODUCER_EPOCH).
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, SequenceError> {
        if h.producer_id >= 0
            && h.is_control()
            && let Some(entry) = self.producers.get(&h.producer_id)
            && h.producer_epoch < entry.epoch
        {
            return Err(SequenceError::FencedEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_id < 0 || h.base_sequence < 0 || h.is_control() {
            return Ok(SeqCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its batches are gone): accept.
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::FencedEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences over.
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    last: -1,
                    got: h.base_sequence,
                })
            };
        }
        let last_seq = last_sequence(h);
        if let Some(dup) = entry
            .recent
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        let last = entry.recent.back().map_or(-1, |b| b.last_seq);
        if h.base_sequence != next_sequence(last) {
            return Err(SequenceError::OutOfOrder {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                last,
                got: h.base_sequence,
            });
        }
        Ok(SeqCheck::Append)
    }

    /// True when `h` is a data batch that may not be appended because its
    /// producer has a transaction open and `h` is not transactional
    /// (Kafka's INVALID_TXN_STATE).
    pub fn breaks_open_txn(&self, h: &BatchHeader) -> bool {
        h.producer_id >= 0
            && !h.is_control()
            && !h.is_transactional()
            && self.open_txn(h.producer_id).is_some()
    }

    /// Records an appended data batch (with its assigned offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        self.apply(h, None);
    }

    /// Records an appended batch (with its assigned offsets): a data batch's
    /// sequences, and whether it opens a transaction; or, for a control
    /// batch, its `marker`, which ends the producer's open transaction.
    /// Returns the transaction a marker ended.
    ///
    /// A control batch without a marker (None: the cleaner emptied it)
    /// ends nothing, as in Kafka, but its epoch is the producer's: the
    /// cleaner keeps a producer's last marker, emptied, for that epoch, and
    /// Sluice replays the log more often than Kafka (one snapshot), so the
    /// fencing epoch must survive a replay. (Kafka ignores the batch.)
    pub fn apply(&mut self, h: &BatchHeader, marker: Option<TxnMarker>) -> Option<CompletedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        if h.is_control() {
            let Some(marker) = marker else {
                self.producers
                    .entry(h.producer_id)
                    .or_default()
                    .set_epoch(h.producer_epoch);
                return None;
            };
            return self.apply_marker(h, marker);
        }
        if h.base_sequence >= 0 {
            let entry = self.producers.entry(h.producer_id).or_default();
            entry.set_epoch(h.producer_epoch);
            entry.recent.push_back(SeqBatch {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h),
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
            });
            while entry.recent.len() > RECENT_BATCHES {
                entry.recent.pop_front();
            }
        }
        if h.is_transactional() {
            let entry = self.producers.entry(h.producer_id).or_default();
            if entry.txn_first_offset.is_none() {
                entry.txn_first_offset = Some(h.base_offset);
                self.ongoing.insert(h.base_offset, h.producer_id);
                self.txn_changes += 1;
            }
        }
        None
    }

    /// Kafka's `appendEndTxnMarker`: the marker's epoch and coordinator
    /// epoch become the producer's (a new epoch starts its sequences over),
    /// and its open transaction, if any, ends. A marker without an open
    /// transaction changes only that (Kafka writes it all the same).
    fn apply_marker(&mut self, h: &BatchHeader, marker: TxnMarker) -> Option<CompletedTxn> {
        let entry = self.producers.entry(h.producer_id).or_default();
        entry.set_epoch(h.producer_epoch);
        entry.coordinator_epoch = marker.coordinator_epoch;
        let first = entry.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        let last_stable_offset = self
            .ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(h.base_offset + 1);
        self.unreplicated
            .insert(first, (h.producer_id, h.base_offset));
        self.txn_changes += 1;
        Some(CompletedTxn {
            producer_id: h.producer_id,
            first_offset: first,
            last_offset: h.base_offset,
            aborted: !marker.commit,
            last_stable_offset,
        })
    }

    /// The first offset of the producer's open transaction.
    pub fn open_txn(&self, producer_id: i64) -> Option<i64> {
        self.producers.get(&producer_id)?.txn_first_offset
    }

    /// The open transactions, as (first offset, producer id), oldest first.
    pub fn open_txns(&self) -> Vec<(i64, i64)> {
        self.ongoing.iter().map(|(&f, &p)| (f, p)).collect()
    }

    /// The producer's current epoch, if it has state.
    pub fn epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// The coordinator epoch of the producer's last marker (−1: none).
    pub fn coordinator_epoch(&self, producer_id: i64) -> Option<i32> {
        self.producers
            .get(&producer_id)
            .map(|e| e.coordinator_epoch)
    }

    /// A count that changes whenever the open or unreplicated transactions
    /// do (the partition republishes its last-stable-offset view then).
    pub fn txn_changes(&self) -> u64 {
        self.txn_changes
    }

    /// Forgets the ended transactions whose markers are below `hw` (Kafka's
    /// `onHighWatermarkUpdated`), and returns what holds the last stable
    /// offset back: (first offset, marker offset or `i64::MAX` while open),
    /// by first offset. The last stable offset for a high watermark `h` is
    /// the first offset of the first pair whose end is ≥ `h`, else `h`.
    pub fn unstable_txns(&mut self, hw: i64) -> Vec<(i64, i64)> {
        let before = self.unreplicated.len();
        self.unreplicated.retain(|_, &mut (_, last)| last >= hw);
        if self.unreplicated.len() != before {
            self.txn_changes += 1;
        }
        let mut out: Vec<(i64, i64)> = self
            .ongoing
            .keys()
            .map(|&f| (f, i64::MAX))
            .chain(self.unreplicated.iter().map(|(&f, &(_, last))| (f, last)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The table as a snapshot file's bytes: the state after every batch
    /// below `covers_end`, so that opening the partition replays only the
    /// batches from there instead of every batch header in the log (Kafka's
    /// `.snapshot` files). Layout (version 2): `SLPS`, version u16,
    /// covers_end i64, count u32, per producer (id i64, epoch i16,
    /// coordinator_epoch i32, txn_first_offset i64 (−1: none), n u8, n ×
    /// (first_seq i32, last_seq i32, base_offset i64, last_offset i64)),
    /// unreplicated count u32, per ended transaction (producer id i64,
    /// first offset i64, marker offset i64), then CRC-32C u32 of everything
    /// before it; all big-endian (`docs/FORMAT.md`, "producer.snapshot").
    pub fn encode_snapshot(&self, covers_end: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(26 + self.producers.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&covers_end.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.push(entry.recent.len() as u8);
            for b in &entry.recent {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.unreplicated.len() as u32).to_be_bytes());
        for (first, (id, last)) in &self.unreplicated {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&last.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`encode_snapshot`](Self::encode_snapshot)
    /// (version 2, or version 1 from before transactions): (covers_end,
    /// table), or None if the bytes are not a whole, intact snapshot.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(i64, ProducerTable)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC {
            return None;
        }
        let version = r.u16()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return None;
        }
        let covers_end = r.i64()?;
        let count = r.u32()? as usize;
        let mut table = ProducerTable::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.u16()? as i16;
            let (coordinator_epoch, txn_first_offset) = if version >= 2 {
                let c = r.i32()?;
                let first = r.i64()?;
                (c, (first >= 0).then_some(first))
            } else {
                (-1, None)
            };
            let n = r.take(1)?[0] as usize;
            let mut recent = VecDeque::with_capacity(n);
            for _ in 0..n {
                recent.push_back(SeqBatch {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            if let Some(first) = txn_first_offset
                && table.ongoing.insert(first, id).is_some()
            {
                return None;
            }
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    recent,
                    coordinator_epoch,
                    txn_first_offset,
                },
            );
        }
        if version >= 2 {
            let n = r.u32()? as usize;
            for _ in 0..n {
                let (id, first, last) = (r.i64()?, r.i64()?, r.i64()?);
                if table.ongoing.contains_key(&first)
                    || table.unreplicated.insert(first, (id, last)).is_some()
                {
                    return None;
                }
            }
        }
        r.0.is_empty().then_some((covers_end, table))
    }

    /// Each producer's last batch, by its last offset: the batch the log
    /// cleaner keeps (emptied if need be) so the producer's sequence and
    /// epoch survive compaction and a restart that replays the log.
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, e)| e.recent.back().map(|b| (*id, b.last_offset)))
            .collect()
    }

    /// What the log cleaner keeps for each producer (Kafka's
    /// `lastRecordsOfActiveProducers`): the last offset of its last data
    /// batch if it has one in its current epoch, and its epoch (with no
    /// data batch, its markers of that epoch are kept instead, so the
    /// fencing epoch survives compaction).
    pub fn last_records(&self) -> HashMap<i64, (Option<i64>, i16)> {
        self.producers
            .iter()
            .map(|(id, e)| (*id, (e.recent.back().map(|b| b.last_offset), e.epoch)))
            .collect()
    }

    /// Every producer with state (DescribeProducers), by producer id.
    pub fn views(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.recent.back().map_or(-1, |b| b.last_seq),
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|v| v.producer_id);
        out
    }

    /// Number of producers with state.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchHeader, build_batch};

    fn header(pid: i64, epoch: i16, seq: i32, records: usize, base_offset: i64) -> BatchHeader {
        let values: Vec<&[u8]> = (0..records).map(|_| b"v".as_slice()).collect();
        let mut h = BatchHeader::parse(&build_batch(0, &values)).expect("header");
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn sequences_must_follow_and_duplicates_are_recognised() {
        let mut t = ProducerTable::default();
        let a = header(7, 0, 0, 3, 100);
        assert_eq!(t.check(&a), Ok(SeqCheck::Append));
        t.record(&a);
        // The same batch again: a duplicate at its first offsets.
        assert_eq!(
            t.check(&header(7, 0, 0, 3, 500)),
            Ok(SeqCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            })
        );
        // A gap.
        assert!(matches!(
            t.check(&header(7, 0, 5, 1, 500)),
            Err(SequenceError::OutOfOrder {
                last: 2,
                got: 5,
                ..
            })
        ));
        // The next one.
        let b = header(7, 0, 3, 2, 103);
        assert_eq!(t.check(&b), Ok(SeqCheck::Append));
        t.record(&b);
        // An older epoch is fenced; a newer one must restart at 0.
        assert!(matches!(
            t.check(&header(7, -1, 5, 1, 0)),
            Err(SequenceError::FencedEpoch { .. })
        ));
        assert!(matches!(
            t.check(&header(7, 1, 5, 1, 0)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(t.check(&header(7, 1, 0, 1, 0)), Ok(SeqCheck::Append));
        // Non-idempotent batches are not checked.
        assert_eq!(t.check(&header(-1, -1, -1, 1, 0)), Ok(SeqCheck::Append));
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut t = ProducerTable::default();
        for i in 0..8 {
            t.record(&header(3, 0, i, 2, i64::from(i) * 2));
            t.record(&header(9, 4, i, 1, 100 + i64::from(i)));
        }
        let bytes = t.encode_snapshot(1234);
        let (end, back) = ProducerTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(end, 1234);
        assert_eq!(back.len(), 2);
        for probe in [
            header(3, 0, 14, 2, 0),
            header(3, 0, 16, 1, 0),
            header(9, 4, 7, 1, 0),
            header(9, 3, 8, 1, 0),
            header(9, 4, 9, 1, 0),
        ] {
            assert_eq!(back.check(&probe), t.check(&probe), "{probe:?}");
        }
        // Any flipped byte, any cut, and trailing bytes are refused.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                ProducerTable::decode_snapshot(&bad).is_none(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(ProducerTable::decode_snapshot(&bytes[..cut]).is_none());
        }
        let empty = ProducerTable::default().encode_snapshot(0);
        assert_eq!(
            ProducerTable::decode_snapshot(&empty).map(|(e, t)| (e, t.len())),
            Some((0, 0))
        );
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, records: usize, base_offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, seq, records, base_offset);
        h.attributes |= crate::batch::TRANSACTIONAL_BIT;
        h
    }

    fn marker_header(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, -1, 1, offset);
        h.attributes |= crate::batch::TRANSACTIONAL_BIT | crate::batch::CONTROL_BIT;
        h
    }

    fn marker(commit: bool) -> Option<TxnMarker> {
        Some(TxnMarker {
            commit,
            coordinator_epoch: 4,
        })
    }

    #[test]
    fn transactions_open_join_and_end_with_markers() {
        let mut t = ProducerTable::default();
        assert_eq!(t.apply(&txn_header(1, 0, 0, 2, 10), None), None);
        assert_eq!(t.apply(&txn_header(2, 0, 0, 2, 12), None), None);
        // A later batch of producer 1 joins its transaction.
        t.apply(&txn_header(1, 0, 2, 2, 14), None);
        assert_eq!(t.open_txn(1), Some(10));
        assert_eq!(t.open_txns(), vec![(10, 1), (12, 2)]);
        assert!(
            t.breaks_open_txn(&header(1, 0, 4, 1, 16)),
            "not transactional"
        );
        assert!(!t.breaks_open_txn(&txn_header(1, 0, 4, 1, 16)));
        assert!(
            !t.breaks_open_txn(&header(5, 0, 0, 1, 16)),
            "another producer"
        );
        // An abort of producer 1: the earliest other open transaction (12)
        // is the last stable offset after it.
        assert_eq!(
            t.apply(&marker_header(1, 0, 16), marker(false)),
            Some(CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 16,
                aborted: true,
                last_stable_offset: 12,
            })
        );
        assert_eq!(t.coordinator_epoch(1), Some(4));
        let commit = t
            .apply(&marker_header(2, 0, 17), marker(true))
            .expect("ended");
        assert!(!commit.aborted && commit.aborted_entry().is_none());
        assert_eq!(commit.last_stable_offset, 18);
        // A marker for a producer with nothing open: state only.
        assert_eq!(t.apply(&marker_header(3, 2, 18), marker(false)), None);
        assert_eq!(t.epoch(3), Some(2));
        // An emptied control batch (no marker) changes nothing.
        t.apply(&txn_header(3, 2, 0, 1, 19), None);
        assert_eq!(t.apply(&marker_header(3, 2, 20), None), None);
        assert_eq!(t.open_txn(3), Some(19));
        // Ended transactions hold the LSO back until the high watermark
        // passes their markers.
        assert_eq!(t.unstable_txns(0), vec![(10, 16), (12, 17), (19, i64::MAX)]);
        assert_eq!(t.unstable_txns(17), vec![(12, 17), (19, i64::MAX)]);
        // Markers are checked for their epoch only.
        assert!(matches!(
            t.check(&marker_header(3, 1, 21)),
            Err(SequenceError::FencedEpoch {
                current: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(t.check(&marker_header(3, 2, 21)), Ok(SeqCheck::Append));
        assert_eq!(t.check(&marker_header(3, 9, 21)), Ok(SeqCheck::Append));
        // A marker of a newer epoch starts the sequences over.
        t.apply(&marker_header(3, 3, 21), marker(false));
        assert!(matches!(
            t.check(&txn_header(3, 3, 1, 1, 22)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(t.check(&txn_header(3, 3, 0, 1, 22)), Ok(SeqCheck::Append));
    }

    #[test]
    fn snapshots_keep_transactions_and_version_1_still_loads() {
        let mut t = ProducerTable::default();
        t.apply(&txn_header(1, 0, 0, 2, 10), None);
        t.apply(&txn_header(2, 0, 0, 2, 12), None);
        t.apply(&marker_header(2, 0, 14), marker(true));
        let bytes = t.encode_snapshot(15);
        let (end, mut back) = ProducerTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(end, 15);
        assert_eq!(back.open_txns(), vec![(10, 1)]);
        assert_eq!(back.coordinator_epoch(2), Some(4));
        assert_eq!(back.unstable_txns(0), vec![(10, i64::MAX), (12, 14)]);
        // The ABORT of the transaction still open gives the same entry.
        assert_eq!(
            back.apply(&marker_header(1, 0, 16), marker(false)),
            t.apply(&marker_header(1, 0, 16), marker(false))
        );
        // Version 1: `SLPS`, 1, coversEnd, one producer (id 7, epoch 3, one
        // batch), CRC.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"SLPS");
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&40i64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&3i16.to_be_bytes());
        v1.push(1);
        for v in [0i32, 4] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        for v in [30i64, 34] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let (end, old) = ProducerTable::decode_snapshot(&v1).expect("version 1 loads");
        assert_eq!(end, 40);
        assert_eq!(old.epoch(7), Some(3));
        assert_eq!(old.open_txn(7), None);
        assert_eq!(old.coordinator_epoch(7), Some(-1));
        assert_eq!(
            old.check(&header(7, 3, 0, 5, 0)),
            Ok(SeqCheck::Duplicate {
                base_offset: 30,
                last_offset: 34
            })
        );
        // An unknown version is refused.
        let mut v3 = bytes.clone();
        v3[5] = 3;
        let n = v3.len() - 4;
        let crc = crc32c::crc32c(&v3[..n]);
        v3[n..].copy_from_slice(&crc.to_be_bytes());
        assert!(ProducerTable::decode_snapshot(&v3).is_none());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let h = header(1, 0, i32::MAX - 1, 4, 0);
        assert_eq!(last_sequence(&h), 1);
        let mut t = ProducerTable::default();
        t.record(&h);
        assert_eq!(t.check(&header(1, 0, 2, 1, 4)), Ok(SeqCheck::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerTable::default();
        for i in 0..8 {
            t.record(&header(3, 0, i, 1, i64::from(i)));
        }
        assert!(matches!(
            t.check(&header(3, 0, 7, 1, 0)),
            Ok(SeqCheck::Duplicate { base_offset: 7, .. })
        ));
        assert!(matches!(
            t.check(&header(3, 0, 1, 1, 0)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }
}
