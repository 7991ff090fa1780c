//! Idempotent producers: per partition, the recent sequence numbers of every
//! producer id, so a retried batch is acknowledged without being appended
//! twice, a gap is refused, and a fenced (older) epoch is refused — Kafka's
//! ProducerStateManager, rebuilt on open from the batch headers in the log.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

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

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<SeqBatch>,
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
const SNAPSHOT_VERSION: u16 = 1;

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
}

impl ProducerTable {
    /// Checks a batch (its header as appended, with offsets assigned).
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, SequenceError> {
        if h.producer_id < 0 || h.base_sequence < 0 {
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

    /// Records an appended batch (with its assigned offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.recent.clear();
        }
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

    /// The table as a snapshot file's bytes: the state after every batch
    /// below `covers_end`, so that opening the partition replays only the
    /// batches from there instead of every batch header in the log (Kafka's
    /// `.snapshot` files). Layout: `SLPS`, version u16, covers_end i64, count
    /// u32, per producer (id i64, epoch i16, n u8, n × (first_seq i32,
    /// last_seq i32, base_offset i64, last_offset i64)), then CRC-32C u32 of
    /// everything before it; all big-endian (`docs/FORMAT.md`,
    /// "producer.snapshot").
    pub fn encode_snapshot(&self, covers_end: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.producers.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&covers_end.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(entry.recent.len() as u8);
            for b in &entry.recent {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`encode_snapshot`](Self::encode_snapshot):
    /// (covers_end, table), or None if the bytes are not a whole, intact
    /// snapshot of this version.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(i64, ProducerTable)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        let covers_end = r.i64()?;
        let count = r.u32()? as usize;
        let mut table = ProducerTable::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.u16()? as i16;
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
            table.producers.insert(id, ProducerEntry { epoch, recent });
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
