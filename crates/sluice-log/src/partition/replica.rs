//! What replication needs of a partition's log (Kafka's follower-fetch
//! protocol, KIP-101/KIP-279): the leader epoch history, appends of a
//! leader's batches as they are, truncation to a divergence point, and the
//! high watermark.
//!
//! - Epochs: [`Partition::append`] records a new leader epoch's first offset
//!   and [`Partition::append_replicated`] every new epoch found in the
//!   batches, in `leader-epoch-checkpoint` (`crate::epoch`) — written, once
//!   per new entry, before the batches are. A missing or damaged file is
//!   rebuilt from the batch headers when the partition opens; opening also
//!   cuts the entries to the log (a crash can leave entries past its end).
//! - Truncation ([`Partition::truncate_to`],
//!   [`Partition::truncate_fully_and_start_at`]) happens under the appender
//!   lock, cuts files only after the recovery point has moved back before
//!   them, and syncs what it cut before it returns: a crash at any point
//!   reopens as a whole prefix of the old log (or, for a full truncation, the
//!   old log or the new empty one), never a mix.
//! - High watermark: unmanaged (it is the log end, which is what a
//!   single-node broker serves with [`Partition::read`]) until
//!   [`Partition::set_high_watermark`] is first called; from then on it is
//!   the value set, kept within the log, lowered by truncation, and
//!   [`Partition::read_upto`] serves consumers below it.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{
    AppendError, AppendInfo, Appender, PRODUCER_SNAPSHOT, Partition, load_producer_state, sync_dir,
    write_producer_snapshot,
};
use crate::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use crate::cleaner::Checkpoint;
use crate::epoch::LeaderEpochCache;
use crate::index::{parse_offset_entry, parse_time_entry};
use crate::producer::ProducerTable;
use crate::segment::{Segment, SegmentWriter, file_stem};

/// The file `partition/log_start.rs` keeps DeleteRecords' log start in
/// (written here when a full truncation moves the start, in its format).
const LOG_START: &str = "log-start-offset";

impl Partition {
    fn lock_epochs(&self) -> MutexGuard<'_, LeaderEpochCache> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch history as queries see it: entries before the log start
    /// cut off (Kafka truncates its cache when the start moves; DeleteRecords
    /// and retention do not touch this one, so it is done here).
    fn epochs_view(&self) -> LeaderEpochCache {
        let mut view = self.lock_epochs().clone();
        view.truncate_from_start(self.log_start());
        view
    }

    /// The newest leader epoch the log holds records of (or was assigned).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.lock_epochs().latest_epoch()
    }

    /// OffsetForLeaderEpoch: (the largest epoch ≤ `epoch` in this log, the
    /// offset the next epoch starts at — the log end for the latest epoch),
    /// or (−1, −1); Kafka's `endOffsetFor` (see
    /// [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let view = self.epochs_view();
        view.end_offset_for(epoch, self.log_end())
    }

    /// The (epoch, start offset) entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs_view().entries()
    }

    /// Records that `epoch` starts at the current log end, as Kafka's leader
    /// does when it takes over (appends do it anyway with their first batch
    /// of a new epoch; this only makes OffsetForLeaderEpoch see the epoch
    /// before any record of it arrives). True if an entry was added.
    pub fn assign_leader_epoch(&self, epoch: i32) -> Result<bool, AppendError> {
        let mut app = self.lock();
        if app.failed {
            return Err(AppendError::Offline(self.name.clone()));
        }
        let end = self.log_end();
        self.assign_epochs(&mut app, [(epoch, end)])
    }

    /// Adds the epochs of `pairs` (epoch, start offset) that are newer than
    /// the latest, and writes the checkpoint if any was added. Called under
    /// the appender lock before the batches they come from are written.
    pub(super) fn assign_epochs(
        &self,
        app: &mut Appender,
        pairs: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<bool, AppendError> {
        let latest = self.latest_epoch.load(Ordering::Acquire);
        let mut pairs = pairs
            .into_iter()
            .filter(|&(epoch, _)| epoch >= 0 && epoch > latest)
            .peekable();
        if pairs.peek().is_none() {
            return Ok(false);
        }
        let mut epochs = self.lock_epochs();
        let mut added = false;
        for (epoch, start) in pairs {
            added |= epochs.assign(epoch, start);
        }
        if !added {
            return Ok(false);
        }
        if let Err(e) = epochs.write(&self.dir) {
            // The file is as it was; so is the cache after this.
            epochs.truncate_from_end(self.log_end());
            self.latest_epoch
                .store(epochs.latest_epoch().unwrap_or(-1), Ordering::Release);
            drop(epochs);
            return Err(self.write_error(app, e));
        }
        self.latest_epoch
            .store(epochs.latest_epoch().unwrap_or(-1), Ordering::Release);
        Ok(true)
    }

    /// An append that added epoch entries failed: the entries past the log
    /// end go again (on disk too; if that write fails, the next open cuts
    /// them).
    pub(super) fn unassign_epochs_past_end(&self) {
        let mut epochs = self.lock_epochs();
        if epochs.truncate_from_end(self.log_end()) {
            if let Err(e) = epochs.write(&self.dir) {
                tracing::warn!(partition = %self.name, "writing the leader epoch checkpoint: {e}");
            }
            self.latest_epoch
                .store(epochs.latest_epoch().unwrap_or(-1), Ordering::Release);
        }
    }

    /// Cuts the epoch history at `end` and writes it if that changed it.
    fn truncate_epochs(&self, end: i64) -> io::Result<()> {
        let mut epochs = self.lock_epochs();
        if epochs.truncate_from_end(end) {
            epochs.write(&self.dir)?;
        }
        self.latest_epoch
            .store(epochs.latest_epoch().unwrap_or(-1), Ordering::Release);
        Ok(())
    }

    /// A follower's append: `records` are a Fetch response's records for
    /// this partition — whole batches exactly as the leader stores them,
    /// perhaps followed by a cut batch, which is ignored.
    ///
    /// Each whole batch is validated as stored (CRC, counts, lengths;
    /// `batch::validate_stored`) and kept byte for byte: offsets and leader
    /// epochs as the leader assigned them, no sequence, timestamp or size
    /// checks, no LogAppendTime stamping. The first batch must start at or
    /// after the log end (a compacted leader leaves gaps), each later one
    /// after the one before, else [`AppendError::OffsetMismatch`]. One
    /// exception, Kafka's: an empty log whose start lies inside the first
    /// batch (a full truncation to a leader's log start that DeleteRecords
    /// put inside a batch) is restarted at that batch's base offset, the
    /// log start staying where it was. Epochs newer than the latest are
    /// recorded, the producer state is updated as the leader's was, and the
    /// log end becomes one past the last batch's last offset. Rolling,
    /// indexing and flushing are `append`'s.
    ///
    /// Input without a whole batch appends nothing and answers `Ok` with
    /// `batches: 0`, `base_offset` the log end and `last_offset` one below
    /// it. A refused batch (invalid, out of order, larger than a segment)
    /// leaves the log unchanged; an I/O error part way through batches that
    /// span segments may leave the whole batches before it appended (the log
    /// end says how far it got).
    pub fn append_replicated(&self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let config = self.config.load_full();
        let batches = whole_batches(records)?;
        let (Some(&(_, first)), Some(&(_, last))) = (batches.first(), batches.last()) else {
            let end = self.log_end();
            return Ok(AppendInfo {
                base_offset: end,
                last_offset: end - 1,
                batches: 0,
                duplicate: false,
                durable: self.durable_end() >= end,
                log_append_time: None,
            });
        };
        for pair in batches.windows(2) {
            let (prev, next) = (&pair[0].1, &pair[1].1);
            if next.base_offset <= prev.last_offset() {
                return Err(AppendError::OffsetMismatch {
                    expected: prev.last_offset() + 1,
                    got: next.base_offset,
                });
            }
        }
        for (start, h) in &batches {
            let len = h.total_len().unwrap_or(0) as u64;
            if len > config.segment_bytes {
                return Err(AppendError::TooLarge {
                    len,
                    segment_bytes: config.segment_bytes,
                });
            }
            // A marker must read as one (an emptied one, from a compacted
            // leader, is fine): the producer state depends on it.
            if h.is_control() {
                batch::parse_marker(&records[*start..*start + len as usize], h)?;
            }
        }
        let mut app = self.lock();
        if app.failed {
            return Err(AppendError::Offline(self.name.clone()));
        }
        let log_end = self.log_end();
        let mut restarted = None;
        if first.base_offset < log_end {
            let empty = self.log_start() == log_end && self.size_bytes() == 0;
            if !(empty && first.last_offset() >= log_end) {
                return Err(AppendError::OffsetMismatch {
                    expected: log_end,
                    got: first.base_offset,
                });
            }
            let log_start = self.log_start();
            tracing::info!(
                partition = %self.name,
                base = first.base_offset,
                log_start,
                "the first replicated batch starts before the empty log's start; restarting the log at it"
            );
            if let Err(e) = self.truncate_fully_locked(&mut app, first.base_offset, log_start) {
                return Err(self.io_error(&mut app, e));
            }
            restarted = Some(log_start);
        }
        let epochs = batches
            .iter()
            .map(|(_, h)| (h.partition_leader_epoch, h.base_offset));
        let added_epoch = self.assign_epochs(&mut app, epochs)?;
        let mut durable = true;
        let mut i = 0;
        while i < batches.len() {
            // As many batches as the active segment has room for, or, if not
            // even the first fits, as many as a new segment has.
            let room = self.segments.load().last().map_or(0, |active| {
                let by_config = config.segment_bytes.saturating_sub(active.size());
                app.writer
                    .as_ref()
                    .map_or(0, |w| w.room(active))
                    .min(by_config)
            });
            let start = batches[i].0;
            let end_of = |j: usize| {
                let (s, h) = &batches[j];
                s + h.total_len().unwrap_or(0)
            };
            let fits = |limit: u64| {
                let mut j = i;
                while j < batches.len() && (end_of(j) - start) as u64 <= limit {
                    j += 1;
                }
                j
            };
            let mut j = fits(room);
            if j == i {
                j = fits(config.segment_bytes).max(i + 1);
            }
            let chunk: Vec<(usize, BatchHeader)> =
                batches[i..j].iter().map(|&(s, h)| (s - start, h)).collect();
            let bytes = &records[start..end_of(j - 1)];
            match self.write_batches(&mut app, bytes, &chunk, &config) {
                Ok(d) => durable &= d,
                Err(e) => {
                    if added_epoch {
                        self.unassign_epochs_past_end();
                    }
                    if let Some(log_start) = restarted
                        && self.log_end() < log_start
                    {
                        // Nothing reached the restarted log: back to empty
                        // at its start, as before.
                        let _ = self.truncate_fully_locked(&mut app, log_start, log_start);
                    }
                    return Err(e);
                }
            }
            i = j;
        }
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            batches: batches.len(),
            duplicate: false,
            durable,
            log_append_time: None,
        })
    }

    /// Truncates the log to end before `offset` (a follower cutting a
    /// diverged tail): every batch whose last offset is ≥ `offset` goes —
    /// a batch holding `offset` goes whole, as in Kafka's
    /// `LogSegment.truncateTo` — with every later segment. Returns the new
    /// log end (≤ `offset`; below it when a batch straddled it or a
    /// compaction gap precedes it). An `offset` at or past the log end
    /// changes nothing; one below the log start empties the log and starts
    /// it at `offset` ([`truncate_fully_and_start_at`](Self::truncate_fully_and_start_at)),
    /// as does a cut that leaves nothing at or after the log start.
    ///
    /// The producer state is rebuilt for the shorter log, the epoch history,
    /// the durable end and the high watermark are cut to it, and the
    /// recovery point moves back to the segment cut. Readers holding an
    /// older view of the segments are not disturbed beyond short reads of
    /// the cut bytes; reads that start after this returns see nothing past
    /// the new end. After an I/O error the partition is offline (its files
    /// are a whole prefix of the old log, which a restart recovers).
    pub fn truncate_to(&self, offset: i64) -> io::Result<i64> {
        let mut app = self.lock();
        if app.failed {
            return Err(offline(&self.name));
        }
        let log_end = self.log_end();
        if offset >= log_end {
            // No record goes, but an epoch this replica started as leader
            // and never appended in (its entry starts at the log end) does:
            // the new leader's history has no such epoch, and a follower
            // that kept it would keep asking about it (Kafka's truncateTo
            // does the same).
            self.truncate_epochs(log_end)?;
            return Ok(log_end);
        }
        if offset < self.log_start() {
            self.truncate_fully_checked(&mut app, offset, offset)?;
            return Ok(self.log_end());
        }
        let result = self.truncate_tail(&mut app, offset);
        match result {
            Ok(end) if end < self.log_start() => {
                // The log start lay inside the batch that went (or in a gap
                // before it): nothing readable is left; start again at
                // `offset`, as Kafka's log end would be.
                self.truncate_fully_checked(&mut app, offset, offset)?;
                Ok(self.log_end())
            }
            Ok(end) => Ok(end),
            Err(e) => Err(self.fail(&mut app, e)),
        }
    }

    /// Empties the log and starts it again at `offset` (Kafka's
    /// `truncateFullyAndStartAt`: a follower whose log is out of the
    /// leader's range): every segment goes, and the log start, log end,
    /// high watermark and recovery point become `offset`; the epoch history
    /// and producer state are cleared. A crash part way through reopens as
    /// the old log (perhaps starting later, never past `offset`) or the new
    /// empty one; after an I/O error the partition is offline.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> io::Result<()> {
        let mut app = self.lock();
        if app.failed {
            return Err(offline(&self.name));
        }
        self.truncate_fully_checked(&mut app, offset, offset)
    }

    fn truncate_fully_checked(
        &self,
        app: &mut Appender,
        base: i64,
        log_start: i64,
    ) -> io::Result<()> {
        if base < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot start the log at negative offset {base}"),
            ));
        }
        self.truncate_fully_locked(app, base, log_start)
            .map_err(|e| self.fail(app, e))
    }

    /// Takes the partition offline after a failed truncation.
    fn fail(&self, app: &mut Appender, e: io::Error) -> io::Error {
        tracing::error!(partition = %self.name, "truncation failed, partition offline: {e}");
        app.failed = true;
        self.offline.store(true, Ordering::Relaxed);
        e
    }

    /// Waits for the threads syncing sealed segments: they write producer
    /// snapshots and move the recovery point, both of which a truncation
    /// must not see happen behind it.
    fn join_seal_threads(&self, app: &mut Appender) {
        for handle in app.syncing.drain(..) {
            let _ = handle.join();
        }
    }

    /// `truncate_to` for `offset` in `[log_start, log_end)`, under the lock.
    fn truncate_tail(&self, app: &mut Appender, offset: i64) -> io::Result<i64> {
        let config = self.config.load_full();
        self.join_seal_threads(app);
        let segs = self.segments.load_full();
        let i = segs
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let seg = segs[i].clone();
        let base = seg.base_offset();
        let size = seg.size();
        let cut = seg.find_batch(offset, size)?;
        let cut_pos = cut.map_or(size, |(pos, _)| pos);
        tracing::info!(
            partition = %self.name,
            offset,
            segment = base,
            position = cut_pos,
            later_segments = segs.len() - i - 1,
            "truncating the log"
        );
        // A producer snapshot covering anything cut describes a log that is
        // going (snapshots cover up to a log end, a batch boundary, so one
        // past `offset` covers part of a batch that goes). Gone before the
        // files change, and durably with them (the directory sync below).
        let kept_snapshot = remove_snapshot_past(&self.dir, offset)?;
        // Recovery scans the cut segment (and whatever a crash leaves after
        // it) again from here on.
        self.durability.retreat(base)?;
        // Readers: nothing past the cut from here on, whichever segment list
        // they hold.
        seg.publish_size(cut_pos);
        for later in &segs[i + 1..] {
            later.publish_size(0);
        }
        // Unmap before the file shrinks under the mapping.
        app.writer = None;
        for later in segs[i + 1..].iter().rev() {
            later.delete()?;
        }
        if let Some((_, removed)) = cut {
            let rel = u32::try_from(removed.base_offset - base).unwrap_or(u32::MAX);
            zero_index_tails(&self.dir, base, cut_pos, rel)?;
            seg.file().set_len(cut_pos)?;
            // Aborts whose markers went with the cut (Kafka's
            // `TransactionIndex.truncateTo`).
            seg.txn_index().truncate_from(removed.base_offset)?;
        }
        seg.file().sync_all()?;
        seg.txn_index().sync()?;
        sync_dir(&self.dir)?;
        // The cut segment again, with its size, end, largest timestamp and
        // indexes as the shorter file has them (a fresh object: a cleaner
        // pass that read the old one finds it replaced and drops its copy).
        let cut_seg = Arc::new(Segment::open(&self.dir, base, &config, true)?);
        let new_end = cut_seg.next_offset();
        let mut next: Vec<Arc<Segment>> = segs[..i].to_vec();
        next.push(cut_seg.clone());
        self.segments.store(Arc::new(next));
        self.log_end.store(new_end, Ordering::Release);
        app.writer = Some(SegmentWriter::new(&cut_seg, &config)?);
        self.durability
            .durable_end
            .fetch_min(new_end, Ordering::AcqRel);
        self.high_watermark.fetch_min(new_end, Ordering::AcqRel);
        // Producer state: the snapshot at or below the cut, if one is left,
        // and the batches after it (as `open` does); a fresh snapshot then
        // saves the next open that replay.
        app.producers = load_producer_state(&self.dir, &self.name, &self.segments.load(), None)?;
        self.publish_txns(app, true);
        // A snapshot at or below the cut segment's base is kept: a crash
        // rescans that segment (the recovery point is its base) and
        // rebuilds its transaction index from the state at its start, which
        // a snapshot past it cannot give (the whole log would be replayed).
        // Otherwise one at the new end saves the next open a replay.
        if kept_snapshot.is_none_or(|covers| covers > base) {
            write_producer_snapshot(&self.dir, &app.producers, new_end)?;
        }
        self.truncate_epochs(new_end)?;
        // The cleaner's checkpoint must not call the records appended from
        // here on clean. (A pass running now may still write its end over
        // this; that only leaves those records less compacted.)
        if let Some(c) = self.cleaner.checkpoint(&self.dir)
            && c.first_dirty > new_end
        {
            self.cleaner.set_checkpoint(
                &self.dir,
                Checkpoint {
                    first_dirty: new_end,
                    ..c
                },
            )?;
        }
        Ok(new_end)
    }

    /// Replaces the whole log by one empty segment at `base`, the log start
    /// becoming `log_start` (≥ `base`; recorded in `log-start-offset`, as
    /// DeleteRecords records it, so a reopen agrees). Under the lock.
    pub(super) fn truncate_fully_locked(
        &self,
        app: &mut Appender,
        base: i64,
        log_start: i64,
    ) -> io::Result<()> {
        let config = self.config.load_full();
        self.join_seal_threads(app);
        tracing::info!(partition = %self.name, base, log_start, "emptying the log");
        let old_start = self.log_start();
        // A start moving forward is recorded first: a crash from here on
        // reopens with nothing below it readable (a log ending before it is
        // emptied and started there by the open itself).
        if log_start >= old_start {
            write_log_start(&self.dir, log_start)?;
        }
        self.durability.retreat(base)?;
        let segs = self.segments.load_full();
        for seg in segs.iter() {
            seg.publish_size(0);
        }
        app.writer = None;
        for seg in segs.iter().rev() {
            seg.delete()?;
        }
        match std::fs::remove_file(self.dir.join(PRODUCER_SNAPSHOT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        app.producers = ProducerTable::default();
        self.publish_txns(app, true);
        {
            let mut epochs = self.lock_epochs();
            if epochs.clear() {
                epochs.write(&self.dir)?;
            }
            self.latest_epoch.store(-1, Ordering::Release);
        }
        let seg = Arc::new(Segment::create(&self.dir, base, &config)?);
        sync_dir(&self.dir)?;
        if log_start < old_start {
            write_log_start(&self.dir, log_start)?;
        }
        self.segments.store(Arc::new(vec![seg.clone()]));
        self.log_end.store(base, Ordering::Release);
        self.log_start.store(log_start, Ordering::Release);
        self.durability.reset(base)?;
        self.durability.durable_end.store(base, Ordering::Release);
        self.high_watermark.store(log_start, Ordering::Release);
        if self.cleaner.checkpoint(&self.dir).is_some() {
            self.cleaner.set_checkpoint(
                &self.dir,
                Checkpoint {
                    first_dirty: base,
                    tombstone_horizon: -1,
                },
            )?;
        }
        app.writer = Some(SegmentWriter::new(&seg, &config)?);
        Ok(())
    }

    /// The high watermark: the value last set with
    /// [`set_high_watermark`](Self::set_high_watermark) (lowered by
    /// truncation, kept within `[log_start, log_end]`), or, until it is
    /// first set, the log end — a single-node broker never sets it, and its
    /// high watermark is its log end as before.
    pub fn high_watermark(&self) -> i64 {
        let end = self.log_end();
        if !self.hw_managed.load(Ordering::Acquire) {
            return end;
        }
        self.high_watermark
            .load(Ordering::Acquire)
            .max(self.log_start())
            .min(end)
    }

    /// Sets the high watermark, clamped to `[log_start, log_end]` (a
    /// leader moves it forward as followers catch up; a follower takes the
    /// leader's), and makes it managed from now on.
    pub fn set_high_watermark(&self, hw: i64) {
        let clamped = hw.min(self.log_end()).max(self.log_start());
        self.high_watermark.store(clamped, Ordering::Release);
        self.hw_managed.store(true, Ordering::Release);
    }

    /// True once [`set_high_watermark`](Self::set_high_watermark) was called
    /// (or the data directory's `replication-offset-checkpoint` named this
    /// partition when the log opened).
    pub fn is_high_watermark_managed(&self) -> bool {
        self.hw_managed.load(Ordering::Acquire)
    }
}

fn offline(name: &str) -> io::Error {
    io::Error::other(format!("partition {name} is offline"))
}

/// The whole batches at the start of `bytes`, each validated as stored; a
/// trailing cut batch (or cut header) is left out.
fn whole_batches(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= HEADER_LEN {
        let rest = &bytes[pos..];
        let h = BatchHeader::parse(rest)?;
        let Some(len) = h.total_len() else {
            return Err(BatchError::LengthMismatch {
                declared: i64::from(h.batch_length),
                actual: rest.len() - batch::LOG_OVERHEAD,
            });
        };
        if len > rest.len() {
            break;
        }
        out.push((pos, batch::validate_stored(&rest[..len])?));
        pos += len;
    }
    Ok(out)
}

/// Removes the producer snapshot if it covers offsets past `offset` or
/// does not decode. Returns the end a snapshot left in place covers.
fn remove_snapshot_past(dir: &Path, offset: i64) -> io::Result<Option<i64>> {
    let path = dir.join(PRODUCER_SNAPSHOT);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match ProducerTable::decode_snapshot(&bytes) {
        Some((covers_end, _)) if covers_end <= offset => Ok(Some(covers_end)),
        _ => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(None),
        },
    }
}

/// Zeroes the entries of the segment's `.index` and `.timeindex` from the
/// first one that points at or past the cut (position `cut_pos`, relative
/// offset `cut_rel`), or breaks the order, to the end of the file. The
/// files are pre-allocated and a reopen takes every non-zero entry before
/// the zero tail as written; entries of the cut bytes left there could pass
/// its sanity check once the log grows again and misdirect reads.
fn zero_index_tails(dir: &Path, base: i64, cut_pos: u64, cut_rel: u32) -> io::Result<()> {
    let stem = file_stem(base);
    zero_tail::<8>(&dir.join(format!("{stem}.index")), |e, prev| {
        let (rel, pos) = parse_offset_entry(e);
        pos == 0
            || u64::from(pos) >= cut_pos
            || rel >= cut_rel
            || prev.is_some_and(|p| {
                let (prel, ppos) = parse_offset_entry(p);
                rel <= prel || pos <= ppos
            })
    })?;
    zero_tail::<12>(&dir.join(format!("{stem}.timeindex")), |e, prev| {
        let (ts, rel) = parse_time_entry(e);
        rel == 0
            || rel >= cut_rel
            || prev.is_some_and(|p| {
                let (pts, prel) = parse_time_entry(p);
                rel <= prel || ts < pts
            })
    })
}

/// Zeroes the file of `N`-byte entries from the first entry `stale` says is
/// (given it and the entry before it) to the last non-zero byte.
fn zero_tail<const N: usize>(
    path: &Path,
    stale: impl Fn(&[u8; N], Option<&[u8; N]>) -> bool,
) -> io::Result<()> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let bytes = std::fs::read(path)?;
    let mut prev: Option<[u8; N]> = None;
    let mut from = None;
    for (i, chunk) in bytes.chunks_exact(N).enumerate() {
        let mut e = [0u8; N];
        e.copy_from_slice(chunk);
        if stale(&e, prev.as_ref()) {
            from = Some(i * N);
            break;
        }
        prev = Some(e);
    }
    let Some(from) = from else {
        return Ok(());
    };
    let Some(last_nonzero) = bytes.iter().rposition(|&b| b != 0) else {
        return Ok(());
    };
    if last_nonzero < from {
        return Ok(());
    }
    file.write_all_at(&vec![0u8; last_nonzero + 1 - from], from as u64)
}

/// Writes `log-start-offset` as `partition/log_start.rs` does: `<digits>\n`,
/// temp file, fsync, rename, fsync the directory.
fn write_log_start(dir: &Path, offset: i64) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{LOG_START}.{}.{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{offset}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(LOG_START))?;
    sync_dir(dir)
}

/// The epoch history of a partition being opened: its checkpoint, or, when
/// that is missing or damaged, every batch header's partitionLeaderEpoch;
/// cut to the recovered log either way, and written back if that changed it.
pub(super) fn load_epochs(
    dir: &Path,
    name: &str,
    segments: &[Arc<Segment>],
    log_start: i64,
    log_end: i64,
) -> io::Result<LeaderEpochCache> {
    let (mut cache, mut dirty) = match LeaderEpochCache::read(dir) {
        Ok(Some(cache)) => (cache, false),
        Ok(None) => epochs_from_headers(segments)?,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(partition = %name, "{e}; rebuilding it from the log");
            epochs_from_headers(segments)?
        }
        Err(e) => return Err(e),
    };
    dirty |= cache.truncate_from_end(log_end);
    dirty |= cache.truncate_from_start(log_start);
    if dirty {
        cache.write(dir)?;
    }
    Ok(cache)
}

/// The epoch history in the batch headers of `segments`, and whether it
/// should be written: an empty log's empty history needs no file (a new
/// partition costs no extra fsyncs); any other is written once.
fn epochs_from_headers(segments: &[Arc<Segment>]) -> io::Result<(LeaderEpochCache, bool)> {
    let mut cache = LeaderEpochCache::new();
    let mut batches = 0u64;
    for seg in segments {
        let size = seg.size();
        let mut pos = 0u64;
        while let Some(h) = seg.header_at(pos, size)? {
            let Some(len) = h.total_len() else { break };
            cache.assign(h.partition_leader_epoch, h.base_offset);
            batches += 1;
            pos += len as u64;
        }
    }
    Ok((cache, batches > 0))
}
