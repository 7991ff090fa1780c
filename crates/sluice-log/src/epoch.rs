//! Leader epochs (KIP-101, KIP-279): Kafka's `LeaderEpochFileCache`, the
//! `(epoch, start offset)` pairs a partition's log was written under, kept in
//! the partition directory as `leader-epoch-checkpoint`.
//!
//! The file is Kafka's byte for byte: a version line (`0`), a line with the
//! entry count, then one `<epoch> <startOffset>` line per entry, oldest first,
//! each line ending in `\n`. It is written atomically: a temp file
//! (`leader-epoch-checkpoint.<pid>.<n>.tmp`), fsynced, renamed over the
//! file, and the directory fsynced.
//!
//! The cache itself ([`LeaderEpochCache`]) is plain memory: its changes say
//! whether they changed anything, and the partition decides when to write it
//! ([`LeaderEpochCache::write`]) — once per new entry, before the records that
//! made it reach the log (as Kafka does), so that a crash can only leave
//! entries past the log's end, which opening the partition cuts off.
//!
//! Entries are strictly increasing in epoch and non-decreasing in start
//! offset. [`LeaderEpochCache::assign`] keeps them so in the way the brief for
//! this log asks, which differs from Kafka's `assign` only for calls the log
//! never makes (the cache is always truncated with the log, so an epoch is
//! never assigned again at an earlier offset): an epoch not newer than the
//! latest, or an offset before the latest entry's, is ignored.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The checkpoint file's name in the partition directory (Kafka's).
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The checkpoint format version Kafka writes.
const VERSION: &str = "0";

/// The `(leader epoch, start offset)` history of one partition's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Oldest first; epochs strictly increasing, offsets non-decreasing.
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// An empty cache.
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// A cache holding `entries` as [`assign`](Self::assign) leaves them
    /// (entries breaking the order are dropped).
    pub fn from_entries(entries: impl IntoIterator<Item = (i32, i64)>) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for (epoch, start) in entries {
            cache.assign(epoch, start);
        }
        cache
    }

    /// Records that `epoch` starts at `start_offset`. Ignored (false) when the
    /// epoch or offset is negative, when `epoch` is not newer than the latest
    /// epoch, or when `start_offset` lies before the latest entry's start.
    /// Otherwise trailing entries starting at or after `start_offset` (an
    /// epoch that never got a record) are removed and the entry is added
    /// (true): entries stay monotonic in both epoch and offset.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(&(latest, latest_start)) = self.entries.last()
            && (epoch <= latest || start_offset < latest_start)
        {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|&(_, start)| start >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// The newest entry, if any.
    pub fn latest_entry(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// OffsetForLeaderEpoch (Kafka's `endOffsetFor`): the largest epoch ≤
    /// `requested_epoch` this log has, and the offset where the next epoch
    /// after `requested_epoch` starts — one past the last record written in
    /// `requested_epoch` or before it.
    ///
    /// - `requested_epoch` −1: (−1, −1).
    /// - the latest epoch: (it, `log_end`).
    /// - otherwise, with `higher` the first entry with a larger epoch: none →
    ///   (−1, −1); else with `floor` the last entry with epoch ≤ requested:
    ///   none → (`requested_epoch`, `higher.start`), else (`floor.epoch`,
    ///   `higher.start`).
    pub fn end_offset_for(&self, requested_epoch: i32, log_end: i64) -> (i32, i64) {
        if requested_epoch == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end);
        }
        let Some(&(_, higher_start)) = self.entries.iter().find(|&&(e, _)| e > requested_epoch)
        else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match self
            .entries
            .iter()
            .rev()
            .find(|&&(e, _)| e <= requested_epoch)
        {
            None => (requested_epoch, higher_start),
            Some(&(floor, _)) => (floor, higher_start),
        }
    }

    /// Removes the entries starting at or after `end_offset` (the log was cut
    /// there). A negative offset changes nothing. True if anything went.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self.entries.partition_point(|&(_, s)| s < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: entries wholly before it go, and
    /// the last entry starting at or before it is kept, moved to start at
    /// `start_offset` (Kafka's `truncateFromStart`). A negative offset
    /// changes nothing. True if anything changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        if start_offset < 0 {
            return false;
        }
        let at_or_before = self.entries.partition_point(|&(_, s)| s <= start_offset);
        if at_or_before == 0 {
            return false;
        }
        let (epoch, start) = self.entries[at_or_before - 1];
        if at_or_before == 1 && start == start_offset {
            return false;
        }
        self.entries.drain(..at_or_before - 1);
        self.entries[0] = (epoch, start_offset);
        true
    }

    /// Removes every entry (Kafka's `clearAndFlush`, without the flush).
    /// True if there were any.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> Vec<(i32, i64)> {
        self.entries.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut out = format!("{VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            out.push_str(&format!("{epoch} {start}\n"));
        }
        out
    }

    /// Parses checkpoint text: version 0, a count, exactly that many
    /// `<epoch> <offset>` lines (then nothing but blank lines). None if the
    /// text is not that. Entries are taken through [`assign`](Self::assign),
    /// as Kafka loads them.
    pub fn parse(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()?.trim() != VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start: i64 = fields.next()?.parse().ok()?;
            if fields.next().is_some() {
                return None;
            }
            entries.push((epoch, start));
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(LeaderEpochCache::from_entries(entries))
    }

    /// Reads `dir/leader-epoch-checkpoint`: Ok(None) if there is none, an
    /// error of kind `InvalidData` if it does not parse.
    pub fn read(dir: &Path) -> io::Result<Option<LeaderEpochCache>> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        LeaderEpochCache::parse(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a leader epoch checkpoint", path.display()),
            )
        })
    }

    /// Writes `dir/leader-epoch-checkpoint` atomically and durably: temp
    /// file, fsync, rename, fsync the directory.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            "{LEADER_EPOCH_CHECKPOINT}.{}.{seq}.tmp",
            std::process::id()
        ));
        let result = (|| {
            std::fs::write(&tmp, self.encode())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, dir.join(LEADER_EPOCH_CHECKPOINT))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        crate::partition::sync_dir(dir)
    }
}

/// True for a temporary file a crash left behind mid-write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name.starts_with(&format!("{LEADER_EPOCH_CHECKPOINT}.")) && name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_entries(entries.iter().copied())
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_monotonic() {
        let mut c = LeaderEpochCache::new();
        assert!(c.assign(2, 6));
        // The same epoch again, later or earlier: ignored.
        assert!(!c.assign(2, 7));
        assert!(!c.assign(2, 5));
        // An older epoch: ignored.
        assert!(!c.assign(1, 10));
        // A newer epoch at an earlier offset: ignored.
        assert!(!c.assign(3, 5));
        assert_eq!(c.entries(), vec![(2, 6)]);
        assert!(c.assign(3, 8));
        // A newer epoch at the same offset replaces the one that never got
        // a record.
        assert!(c.assign(4, 8));
        assert_eq!(c.entries(), vec![(2, 6), (4, 8)]);
        // Negative values are not entries.
        assert!(!c.assign(-1, 9));
        assert!(!c.assign(5, -1));
        assert_eq!(c.latest_epoch(), Some(4));
        assert_eq!(c.latest_entry(), Some((4, 8)));
        assert_eq!(LeaderEpochCache::new().latest_epoch(), None);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let log_end = 20;
        // Undefined epoch, and an empty cache.
        assert_eq!(cache(&[(2, 6)]).end_offset_for(-1, log_end), (-1, -1));
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, log_end), (-1, -1));
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(-1, log_end),
            (-1, -1)
        );
        // The latest epoch ends at the log end (also when it is not 0).
        let c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert_eq!(c.end_offset_for(4, log_end), (4, log_end));
        assert_eq!(cache(&[(2, 6)]).end_offset_for(2, log_end), (2, log_end));
        // Older epochs end where the next one starts.
        assert_eq!(c.end_offset_for(2, log_end), (2, 8));
        assert_eq!(c.end_offset_for(3, log_end), (3, 11));
        // An epoch newer than any: undefined.
        assert_eq!(c.end_offset_for(5, log_end), (-1, -1));
        assert_eq!(cache(&[(2, 100)]).end_offset_for(3, log_end), (-1, -1));
        // Older than the first: the requested epoch, ending at the first start.
        let c = cache(&[(5, 11), (6, 12), (7, 13)]);
        assert_eq!(c.end_offset_for(4, log_end), (4, 11));
        // Between epochs: the floor epoch, ending where the next starts.
        let c = cache(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(c.end_offset_for(1, log_end), (0, 13));
        assert_eq!(c.end_offset_for(2, log_end), (2, 17));
        assert_eq!(c.end_offset_for(3, log_end), (2, 17));
        // Kafka's shouldGetFirstOffsetOfSubsequentEpochWhenOffsetRequestedForPreviousEpoch.
        let c = cache(&[(1, 5), (1, 6), (1, 7), (2, 8), (2, 9)]);
        assert_eq!(c.entries(), vec![(1, 5), (2, 8)]);
        assert_eq!(c.end_offset_for(1, log_end), (1, 8));
    }

    #[test]
    fn truncate_from_end_drops_entries_at_or_past_the_cut() {
        let base = cache(&[(2, 6), (3, 8), (4, 11)]);
        let mut c = base.clone();
        assert!(c.truncate_from_end(9));
        assert_eq!(c.entries(), vec![(2, 6), (3, 8)]);
        let mut c = base.clone();
        assert!(c.truncate_from_end(8));
        assert_eq!(c.entries(), vec![(2, 6)]);
        let mut c = base.clone();
        assert!(!c.truncate_from_end(12));
        assert!(!c.truncate_from_end(-1));
        assert_eq!(c, base);
        assert!(c.truncate_from_end(0));
        assert!(c.is_empty());
    }

    #[test]
    fn truncate_from_start_moves_the_first_kept_entry() {
        let base = cache(&[(2, 6), (3, 8), (4, 11)]);
        for (start, want) in [
            (9, vec![(3, 9), (4, 11)]),
            (8, vec![(3, 8), (4, 11)]),
            (7, vec![(2, 7), (3, 8), (4, 11)]),
            (6, vec![(2, 6), (3, 8), (4, 11)]),
            (5, vec![(2, 6), (3, 8), (4, 11)]),
            (11, vec![(4, 11)]),
            (15, vec![(4, 15)]),
            (-1, vec![(2, 6), (3, 8), (4, 11)]),
        ] {
            let mut c = base.clone();
            let changed = c.truncate_from_start(start);
            assert_eq!(c.entries(), want, "start {start}");
            assert_eq!(changed, c != base, "start {start}");
        }
        let mut c = base.clone();
        assert!(c.clear());
        assert!(!c.clear());
        assert!(!c.truncate_from_start(3));
    }

    #[test]
    fn the_checkpoint_is_kafkas_text_and_round_trips() {
        let c = cache(&[(0, 0), (1, 40), (3, 95)]);
        assert_eq!(c.encode(), "0\n3\n0 0\n1 40\n3 95\n");
        assert_eq!(LeaderEpochCache::parse(&c.encode()), Some(c.clone()));
        assert_eq!(LeaderEpochCache::new().encode(), "0\n0\n");
        assert_eq!(
            LeaderEpochCache::parse("0\n0\n"),
            Some(LeaderEpochCache::new())
        );
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n1\nx 0\n",
            "0\nx\n",
        ] {
            assert_eq!(LeaderEpochCache::parse(bad), None, "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(LeaderEpochCache::read(dir.path()).expect("read"), None);
        c.write(dir.path()).expect("write");
        assert_eq!(LeaderEpochCache::read(dir.path()).expect("read"), Some(c));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).expect("text"),
            "0\n3\n0 0\n1 40\n3 95\n"
        );
        std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT), "0\n5\n").expect("damage");
        let err = LeaderEpochCache::read(dir.path()).expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![LEADER_EPOCH_CHECKPOINT.to_string()]);
        assert!(is_temp_file("leader-epoch-checkpoint.12.0.tmp"));
        assert!(!is_temp_file("leader-epoch-checkpoint"));
    }
}
