//! One cleaner pass over a partition (Kafka's `Cleaner.doClean`): the range,
//! the offset map, the copy of each segment group into a `.cleaned`
//! segment, and the swap under the appender lock. The design is in
//! `crate::cleaner`'s documentation; the file states in docs/FORMAT.md.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Appender, Partition};
use crate::batch::{
    self, BatchHeader, CONTROL_BIT, HEADER_LEN, TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, TxnMarker,
};
use crate::cleaner::{
    CLEANED, Checkpoint, CleanStats, Cleanable, CleanerConfig, CleanerStatus, DELETE_HORIZON_BIT,
    FileOp, OffsetMap, Throttle, discard_cleaned, parse_records, put_record, records_section,
    removal_ops, segment_file, swap_ops, write_batch,
};
use crate::config::LogConfig;
use crate::index::{offset_entry, time_entry};
use crate::segment::Segment;
use crate::txn_index::{self, AbortedTxn};

/// Kafka's `CleanedTransactionMetadata`: reading the log in offset order,
/// which transactional batches belong to aborted transactions (their
/// records go, and they never enter the offset map) and which markers may
/// go (after `delete.retention.ms`): an ABORT once no batch of its
/// transaction is left before it, a COMMIT once none of its transaction's
/// batches is.
struct TxnTracker {
    /// Aborted transactions (from the `.txnindex` files) not yet reached,
    /// by first offset.
    aborted: VecDeque<AbortedTxn>,
    /// Producers inside an aborted transaction: its entry, and whether a
    /// batch of it was met.
    ongoing_aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers whose batches of a (not aborted) transaction were met
    /// since their last marker.
    ongoing_committed: HashSet<i64>,
}

impl TxnTracker {
    fn new(mut aborted: Vec<AbortedTxn>) -> TxnTracker {
        aborted.sort_by_key(|t| (t.first_offset, t.last_offset));
        aborted.dedup();
        TxnTracker {
            aborted: aborted.into(),
            ongoing_aborted: HashMap::new(),
            ongoing_committed: HashSet::new(),
        }
    }

    fn consume_upto(&mut self, offset: i64) {
        while let Some(t) = self.aborted.front().filter(|t| t.first_offset <= offset) {
            let t = *t;
            self.aborted.pop_front();
            self.ongoing_aborted
                .entry(t.producer_id)
                .or_insert((t, false));
        }
    }

    /// A data batch: true when it belongs to an aborted transaction.
    fn on_data(&mut self, h: &BatchHeader) -> bool {
        self.consume_upto(h.last_offset());
        if !h.is_transactional() || h.producer_id < 0 {
            return false;
        }
        if let Some((_, seen)) = self.ongoing_aborted.get_mut(&h.producer_id) {
            *seen = true;
            return true;
        }
        self.ongoing_committed.insert(h.producer_id);
        false
    }

    /// A control batch (`marker` None: emptied already, or unreadable):
    /// whether it may go once its delete horizon passes, and, for an ABORT
    /// that must stay, its transaction index entry.
    fn on_control(
        &mut self,
        h: &BatchHeader,
        marker: Option<TxnMarker>,
    ) -> (bool, Option<AbortedTxn>) {
        self.consume_upto(h.last_offset());
        match marker {
            None => (true, None),
            Some(m) if !m.commit => match self.ongoing_aborted.remove(&h.producer_id) {
                Some((t, true)) => (false, Some(t)),
                _ => (true, None),
            },
            Some(_) => (!self.ongoing_committed.remove(&h.producer_id), None),
        }
    }
}

/// The marker of a whole control batch, if it reads as one.
fn marker_of(bytes: &[u8], h: &BatchHeader) -> Option<TxnMarker> {
    batch::parse_marker(bytes, h).ok().flatten()
}

/// Every aborted transaction in the partition's `.txnindex` files whose
/// marker is at or after `from`.
fn aborted_from(segs: &[Arc<Segment>], from: i64) -> Vec<AbortedTxn> {
    segs.iter()
        .filter(|s| s.next_offset() > from)
        .flat_map(|s| s.txn_index().entries())
        .filter(|t| t.last_offset >= from)
        .collect()
}

/// Everything a pass needs while copying.
struct Pass<'a> {
    partition: &'a Partition,
    cfg: &'a CleanerConfig,
    config: &'a LogConfig,
    now: i64,
    map: OffsetMap,
    /// Each producer's last data offset (if any) and epoch (Kafka's
    /// `lastRecordsOfActiveProducers`).
    producer_last: HashMap<i64, (Option<i64>, i16)>,
    /// Aborted transactions and removable markers, over the copy.
    txns: TxnTracker,
    /// Entries of the ABORT markers kept since the writer last took them.
    kept_aborts: Vec<AbortedTxn>,
    throttle: &'a Throttle,
    stop: &'a dyn Fn() -> bool,
    stats: CleanStats,
}

impl Pass<'_> {
    fn cancelled(&self) -> bool {
        (self.stop)() || self.partition.cleaner.is_aborted()
    }

    fn check_cancelled(&self) -> io::Result<()> {
        if self.cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "cleaning aborted: the partition is closing or the cleaner stopping",
            ));
        }
        Ok(())
    }

    fn io(&mut self, read: u64, written: u64) {
        self.stats.bytes_read += read;
        self.stats.bytes_written += written;
        let stop = self.stop;
        let p = self.partition;
        let cancelled = move || stop() || p.cleaner.is_aborted();
        self.stats.throttled +=
            self.throttle
                .throttle(self.cfg.io_max_bytes_per_second, read + written, &cancelled);
    }
}

/// Whole batches of one segment, read in chunks of the I/O buffer size.
struct BatchReader<'s> {
    seg: &'s Segment,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`, and how much of `buf` is valid.
    buf_at: u64,
    buf_len: usize,
    chunk: usize,
}

impl<'s> BatchReader<'s> {
    fn new(seg: &'s Segment, pos: u64, chunk: usize) -> Self {
        BatchReader {
            seg,
            size: seg.size(),
            pos,
            buf: Vec::new(),
            buf_at: 0,
            buf_len: 0,
            chunk: chunk.max(HEADER_LEN),
        }
    }

    fn bad(&self, pos: u64, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} at byte {pos}: {why}; not cleaning a damaged segment",
                self.seg.log_path().display()
            ),
        )
    }

    /// Makes `[pos, pos + len)` readable from `buf`; returns bytes read.
    fn fill(&mut self, pos: u64, len: usize) -> io::Result<u64> {
        if pos >= self.buf_at && pos + len as u64 <= self.buf_at + self.buf_len as u64 {
            return Ok(0);
        }
        let want = (len.max(self.chunk) as u64).min(self.size - pos) as usize;
        if want < len {
            return Err(self.bad(pos, "a batch runs past the segment's end"));
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.seg.file().read_exact_at(&mut self.buf[..want], pos)?;
        self.buf_at = pos;
        self.buf_len = want;
        Ok(want as u64)
    }

    /// The next batch: (position, header, its bytes' range in `buf`), and
    /// the bytes read from the file to get it. Every batch is validated
    /// (CRC included): the cleaner never launders a damaged batch into one
    /// with a fresh CRC.
    #[allow(clippy::type_complexity)]
    fn next(&mut self) -> io::Result<(Option<(u64, BatchHeader, std::ops::Range<usize>)>, u64)> {
        let pos = self.pos;
        if pos >= self.size {
            return Ok((None, 0));
        }
        if pos + HEADER_LEN as u64 > self.size {
            return Err(self.bad(pos, "a partial batch header"));
        }
        let mut read = self.fill(pos, HEADER_LEN)?;
        let at = (pos - self.buf_at) as usize;
        let h = BatchHeader::parse(&self.buf[at..]).map_err(|e| self.bad(pos, &e.to_string()))?;
        let len = h
            .total_len()
            .ok_or_else(|| self.bad(pos, "batchLength too small"))?;
        read += self.fill(pos, len)?;
        let at = (pos - self.buf_at) as usize;
        let range = at..at + len;
        batch::validate_stored(&self.buf[range.clone()])
            .map_err(|e| self.bad(pos, &e.to_string()))?;
        self.pos = pos + len as u64;
        Ok((Some((pos, h, range)), read))
    }
}

/// What became of one batch.
enum BatchOut {
    /// Copied as it was.
    Same,
    /// Rewritten (into the pass's output buffer).
    Rewritten,
    /// Nothing of it is kept.
    Dropped,
}

/// The new segment of one group, in `.cleaned` files.
struct CleanedGroup {
    base: i64,
}

/// Writes the `.cleaned` files of a group's new segment.
struct CleanedWriter {
    base: i64,
    file: std::fs::File,
    out: Vec<u8>,
    /// Bytes of the log written so far (flushed + in `out`).
    pos: u64,
    index: Vec<u8>,
    time_index: Vec<u8>,
    /// The aborted transactions whose ABORT markers the new segment keeps.
    txn_entries: Vec<AbortedTxn>,
    since_index: u64,
    max_ts_before: i64,
    interval: u64,
}

impl CleanedWriter {
    fn create(dir: &Path, base: i64, config: &LogConfig) -> io::Result<CleanedWriter> {
        discard_cleaned(dir, base);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(segment_file(dir, base, "log", CLEANED))?;
        Ok(CleanedWriter {
            base,
            file,
            out: Vec::new(),
            pos: 0,
            index: Vec::new(),
            time_index: Vec::new(),
            txn_entries: Vec::new(),
            since_index: 0,
            max_ts_before: -1,
            interval: config.index_interval_bytes,
        })
    }

    /// Indexes a batch about to be appended at `self.pos` (the rules of
    /// `Segment::rebuild_indexes`).
    fn note_batch(&mut self, base_offset: i64, max_timestamp: i64, len: usize) {
        if self.since_index >= self.interval && self.pos > 0 {
            let rel = (base_offset - self.base) as u32;
            self.index
                .extend_from_slice(&offset_entry(rel, self.pos as u32));
            self.time_index
                .extend_from_slice(&time_entry(self.max_ts_before, rel));
            self.since_index = 0;
        }
        self.since_index += len as u64;
        self.max_ts_before = self.max_ts_before.max(max_timestamp);
        self.pos += len as u64;
    }

    fn append(&mut self, bytes: &[u8], h: &BatchHeader) {
        self.note_batch(h.base_offset, h.max_timestamp, bytes.len());
        self.out.extend_from_slice(bytes);
    }

    /// Copies the first `len` bytes of `seg` — the batches `batches` (base
    /// offset, max timestamp, length), kept unchanged — into the new
    /// segment, which must still be empty. Returns the bytes copied.
    fn copy_prefix(
        &mut self,
        seg: &Segment,
        len: u64,
        batches: &[(i64, i64, usize)],
    ) -> io::Result<u64> {
        for &(base_offset, max_timestamp, n) in batches {
            self.note_batch(base_offset, max_timestamp, n);
        }
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            seg.file().read_exact_at(&mut buf[..n], at)?;
            self.file.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(len)
    }

    /// Writes out what is buffered once it reaches `threshold`; returns the
    /// bytes written.
    fn drain(&mut self, threshold: usize) -> io::Result<u64> {
        if self.out.is_empty() || self.out.len() < threshold {
            return Ok(0);
        }
        self.file.write_all(&self.out)?;
        let n = self.out.len() as u64;
        self.out.clear();
        Ok(n)
    }

    /// Flushes and fsyncs the log (its mtime set to `modified`) and writes
    /// and fsyncs both indexes, trimmed to their entries.
    fn finish(
        mut self,
        dir: &Path,
        modified: Option<std::time::SystemTime>,
    ) -> io::Result<(CleanedGroup, u64)> {
        let mut written = self.drain(0)?;
        if let Some(m) = modified {
            let _ = self.file.set_modified(m);
        }
        self.file.sync_all()?;
        for (ext, bytes) in [("index", &self.index), ("timeindex", &self.time_index)] {
            let path = segment_file(dir, self.base, ext, CLEANED);
            let mut f = std::fs::File::create(&path)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            written += bytes.len() as u64;
        }
        if !self.txn_entries.is_empty() {
            let path = segment_file(dir, self.base, "txnindex", CLEANED);
            written += txn_index::write_file(&path, &self.txn_entries)?;
        }
        crate::partition::sync_dir(dir)?;
        Ok((CleanedGroup { base: self.base }, written))
    }
}

impl Partition {
    /// What the cleaner sees in this partition by the clock `now` (ms): the
    /// dirty section, the dirty ratio, and whether the chooser would clean it.
    pub fn cleanable(&self, now: i64) -> Cleanable {
        let config = self.config.load_full();
        let segs = self.segments.load_full();
        self.cleanable_in(&segs, &config, now)
    }

    fn cleanable_in(&self, segs: &[Arc<Segment>], config: &LogConfig, now: i64) -> Cleanable {
        let checkpoint = self.cleaner.checkpoint(&self.dir);
        let (log_start, log_end) = (self.log_start(), self.log_end());
        // A checkpoint outside the log (DeleteRecords or retention moved the
        // start past it; a crash took back its end) restarts at the start.
        let first_dirty = match checkpoint {
            Some(c) if (log_start..=log_end).contains(&c.first_dirty) => c.first_dirty,
            _ => log_start,
        };
        let sealed = &segs[..segs.len().saturating_sub(1)];
        let active_base = segs.last().map_or(log_end, |s| s.base_offset());
        let min_lag = config.min_compaction_lag.as_millis() as i64;
        let young = sealed
            .iter()
            .filter(|s| s.next_offset() > first_dirty)
            .find(|s| min_lag > 0 && s.max_timestamp() > now.saturating_sub(min_lag))
            .map(|s| s.base_offset());
        // Nothing at or past the last stable offset is cleaned (Kafka's
        // rule): whether an open transaction's records stay is not known
        // yet. Whole segments only: the one holding it is not cleaned.
        let lso = self.last_stable_offset();
        let lso_segment = segs
            .iter()
            .rev()
            .find(|s| s.base_offset() <= lso)
            .map_or(log_start, |s| s.base_offset());
        let first_uncleanable = young
            .unwrap_or(active_base)
            .min(active_base)
            .min(lso_segment)
            .max(first_dirty);
        let mut clean_bytes = 0;
        let mut dirty_bytes = 0;
        for s in sealed {
            if s.next_offset() <= first_dirty {
                clean_bytes += s.size();
            } else if s.base_offset() < first_uncleanable {
                dirty_bytes += s.size();
            }
        }
        let total = clean_bytes + dirty_bytes;
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        // max.compaction.lag.ms: the earliest first-batch timestamp of the
        // dirty sealed segments (Kafka's rule, ignoring timestamps ≤ 0).
        let past_max_lag = config.max_compaction_lag.is_some_and(|lag| {
            let until = now.saturating_sub(lag.as_millis() as i64);
            sealed
                .iter()
                .filter(|s| s.next_offset() > first_dirty)
                .filter_map(|s| s.header_at(0, s.size()).ok().flatten())
                .any(|h| h.base_timestamp > 0 && h.base_timestamp < until)
        });
        let tombstones_due =
            checkpoint.is_some_and(|c| c.tombstone_horizon >= 0 && now >= c.tombstone_horizon);
        let compact = config.cleanup_policy.compact;
        let due = compact
            && ((dirty_bytes > 0
                && (dirty_ratio >= config.min_cleanable_dirty_ratio || past_max_lag))
                || tombstones_due);
        Cleanable {
            compact,
            first_dirty,
            first_uncleanable,
            clean_bytes,
            dirty_bytes,
            dirty_ratio,
            past_max_lag,
            tombstones_due,
            due,
        }
    }

    /// The cleaner's record of this partition: its checkpoint, last pass and
    /// last failure.
    pub fn cleaner_status(&self) -> CleanerStatus {
        self.cleaner.public_status(&self.dir)
    }

    /// Cleans this partition now, by the clock `now` (ms), if it is compacted
    /// and has anything to clean (the dirty ratio is the chooser's business,
    /// not this call's). Ok(None): nothing to do, a pass already running, or
    /// the partition closed. A pass interrupted by the partition's close is
    /// an error of kind `Interrupted`; the log is whole either way.
    pub fn clean(&self, cfg: &CleanerConfig, now: i64) -> io::Result<Option<CleanStats>> {
        self.clean_with(cfg, now, &Throttle::default(), &|| false)
    }

    pub(crate) fn clean_with(
        &self,
        cfg: &CleanerConfig,
        now: i64,
        throttle: &Throttle,
        stop: &dyn Fn() -> bool,
    ) -> io::Result<Option<CleanStats>> {
        let Some(_running) = self.cleaner.try_begin() else {
            return Ok(None);
        };
        let started = Instant::now();
        let config = self.config.load_full();
        if !config.cleanup_policy.compact || self.is_offline() {
            return Ok(None);
        }
        let segs = self.segments.load_full();
        let range = self.cleanable_in(&segs, &config, now);
        if range.first_dirty >= range.first_uncleanable && !range.tombstones_due {
            return Ok(None);
        }
        let sealed: Vec<Arc<Segment>> = segs[..segs.len().saturating_sub(1)].to_vec();
        let producer_last = self.lock().producers.last_records();
        let mut pass = Pass {
            partition: self,
            cfg,
            config: &config,
            now,
            map: OffsetMap::new(cfg.dedupe_buffer_bytes, cfg.dedupe_load_factor),
            producer_last,
            // The copy reads every sealed segment from the first: every
            // aborted transaction the log still indexes.
            txns: TxnTracker::new(aborted_from(&segs, i64::MIN)),
            kept_aborts: Vec::new(),
            throttle,
            stop,
            stats: CleanStats {
                partition: self.name.clone(),
                now_ms: now,
                dirty_ratio: range.dirty_ratio,
                first_dirty: range.first_dirty,
                first_uncleanable: range.first_uncleanable,
                tombstone_horizon: -1,
                ..CleanStats::default()
            },
        };
        pass.map.set_latest(range.first_dirty - 1);
        let dirty_aborts = TxnTracker::new(aborted_from(&segs, range.first_dirty));
        pass.build_map(
            &sealed,
            range.first_dirty,
            range.first_uncleanable,
            dirty_aborts,
        )?;
        let end = pass.map.latest() + 1;
        pass.stats.map_duration = started.elapsed();
        pass.stats.cleaned_to = end;
        pass.stats.map_full = end < range.first_uncleanable;
        pass.stats.map_entries = pass.map.entries() as u64;
        pass.stats.map_slots = pass.map.slots() as u64;
        pass.stats.map_fill = pass.map.entries() as f64 / pass.map.slots() as f64;
        pass.stats.map_memory_bytes = pass.map.memory() as u64;
        if pass.stats.map_full && end <= range.first_dirty {
            return Err(io::Error::other(
                "the cleaner's offset map holds no key: raise the dedupe buffer",
            ));
        }
        // The groups: every sealed segment that starts below the end.
        let in_range: Vec<Arc<Segment>> = sealed
            .iter()
            .filter(|s| s.base_offset() < end)
            .cloned()
            .collect();
        for group in group_segments(&in_range, config.segment_bytes) {
            pass.check_cancelled()?;
            if group.iter().all(|s| s.size() == 0) {
                continue;
            }
            let Some(cleaned) = pass.copy_group(&group)? else {
                continue;
            };
            if self.swap_in(&group, cleaned, &config)? {
                pass.stats.segments_replaced += group.len() as u64;
                pass.stats.segments_written += 1;
            } else {
                pass.check_cancelled()?;
                // The log changed under the pass: retention (or a
                // DeleteRecords it carried out) took this group's oldest
                // segments. The groups after it were planned on the map of a
                // log that still held them; swapping one now could start a
                // tombstone's delete horizon while an older value of its key
                // survives here, and the key would come back once the
                // tombstone goes. Stop; the checkpoint has not moved, so the
                // next pass starts again from the log as it now is.
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the log changed under the cleaner pass; it will be redone",
                ));
            }
        }
        pass.check_cancelled()?;
        self.cleaner.set_checkpoint(
            &self.dir,
            Checkpoint {
                first_dirty: end,
                tombstone_horizon: pass.stats.tombstone_horizon,
            },
        )?;
        pass.stats.duration = started.elapsed();
        tracing::info!(
            partition = %self.name,
            cleaned_to = end,
            read = pass.stats.bytes_read,
            written = pass.stats.bytes_written,
            removed = pass.stats.records_removed,
            ms = pass.stats.duration.as_millis() as u64,
            "log cleaner pass done"
        );
        self.cleaner.record_pass(&pass.stats);
        Ok(Some(pass.stats))
    }

    /// Publishes `cleaned` in place of `group`, under the appender lock: the
    /// files are renamed Kafka's way (`files::swap_ops`), the new segment is
    /// opened, and the segment list replaced at once. False (the cleaned
    /// files removed) when the group is no longer in the log as it was —
    /// retention took part of it — or the partition closed.
    fn swap_in(
        &self,
        group: &[Arc<Segment>],
        cleaned: CleanedGroup,
        config: &LogConfig,
    ) -> io::Result<bool> {
        let base = cleaned.base;
        let old_bases: Vec<i64> = group.iter().map(|s| s.base_offset()).collect();
        #[cfg(test)]
        if crate::cleaner::STOP_BEFORE_SWAP.with(|s| s.get()) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "test: stopped before the swap",
            ));
        }
        let mut app = self.lock();
        let segs = self.segments.load_full();
        let at = segs.iter().position(|s| Arc::ptr_eq(s, &group[0]));
        let intact = at.is_some_and(|i| {
            i + group.len() < segs.len()
                && group.iter().zip(&segs[i..]).all(|(a, b)| Arc::ptr_eq(a, b))
        });
        let (Some(i), true, false, false) = (at, intact, app.failed, self.cleaner.is_aborted())
        else {
            drop(app);
            discard_cleaned(&self.dir, base);
            return Ok(false);
        };
        let ops = swap_ops(&self.dir, base, &old_bases);
        for (done, op) in ops.iter().enumerate() {
            if let Err(e) = op.run() {
                return Err(self.undo_swap(&mut app, &ops[..done], base, e));
            }
        }
        let seg = match Segment::open(&self.dir, base, config, true) {
            Ok(seg) => Arc::new(seg),
            Err(e) => return Err(self.undo_swap(&mut app, &ops, base, e)),
        };
        let mut next: Vec<Arc<Segment>> = Vec::with_capacity(segs.len() + 1 - group.len());
        next.extend_from_slice(&segs[..i]);
        next.push(seg);
        next.extend_from_slice(&segs[i + group.len()..]);
        self.segments.store(Arc::new(next));
        for old in group {
            old.mark_deleted();
        }
        drop(app);
        crate::partition::sync_dir(&self.dir)?;
        for op in removal_ops(&self.dir, &old_bases) {
            op.run()?;
        }
        Ok(true)
    }

    /// A swap step failed: renames back what was renamed, in reverse, so the
    /// files match the segment list still published; if even that fails the
    /// partition goes offline (a restart completes or undoes the swap).
    fn undo_swap(
        &self,
        app: &mut Appender,
        done: &[FileOp],
        base: i64,
        cause: io::Error,
    ) -> io::Error {
        for op in done.iter().rev() {
            if let FileOp::Rename(from, to) = op
                && let Err(e) = std::fs::rename(to, from)
            {
                tracing::error!(
                    partition = %self.name,
                    "undoing a failed cleaner swap ({cause}) failed ({e}); partition offline until restart"
                );
                app.failed = true;
                self.offline.store(true, Ordering::Relaxed);
                return cause;
            }
        }
        discard_cleaned(&self.dir, base);
        cause
    }
}

impl Pass<'_> {
    /// Maps every keyed record of `[first_dirty, first_uncleanable)` to its
    /// latest offset, stopping when the map is full (its `latest` then says
    /// how far it got).
    fn build_map(
        &mut self,
        sealed: &[Arc<Segment>],
        first_dirty: i64,
        first_uncleanable: i64,
        mut txns: TxnTracker,
    ) -> io::Result<()> {
        for (i, seg) in sealed.iter().enumerate() {
            if seg.next_offset() <= first_dirty || seg.base_offset() >= first_uncleanable {
                continue;
            }
            let next_start = sealed
                .get(i + 1)
                .map_or(first_uncleanable, |s| s.base_offset())
                .min(first_uncleanable);
            let start = if first_dirty > seg.base_offset() {
                match seg.find_batch(first_dirty, seg.size())? {
                    Some((pos, _)) => pos,
                    None => seg.size(),
                }
            } else {
                0
            };
            let mut reader = BatchReader::new(seg, start, self.cfg.io_buffer_bytes);
            loop {
                self.check_cancelled()?;
                let (next, read) = reader.next()?;
                self.io(read, 0);
                let Some((_, h, range)) = next else { break };
                if h.last_offset() < first_dirty {
                    continue;
                }
                // An aborted transaction's records never shadow a key:
                // they will be removed, and the older value is the one
                // read_committed consumers saw.
                let aborted = if h.is_control() {
                    txns.on_control(&h, marker_of(&reader.buf[range.clone()], &h));
                    true
                } else {
                    txns.on_data(&h)
                };
                if !aborted {
                    let bytes = &reader.buf[range];
                    let section = records_section(bytes, &h)?;
                    let records = parse_records(&section, h.record_count)
                        .map_err(|e| reader.bad(reader.pos, &e.to_string()))?;
                    for r in &records {
                        let offset = h.base_offset.wrapping_add(r.offset_delta);
                        if offset < first_dirty {
                            continue;
                        }
                        if let Some(key) = r.key
                            && !self.map.put(key, offset)
                        {
                            return Ok(());
                        }
                    }
                }
                self.map.cover_to(h.last_offset());
            }
            // Offsets between the last batch and the next segment (none,
            // unless a cleaning left the segment ending early) are covered.
            self.map.cover_to(next_start - 1);
        }
        Ok(())
    }

    /// Copies one group into a `.cleaned` segment. None when the group is a
    /// single segment that would come out byte for byte the same (nothing
    /// to swap).
    fn copy_group(&mut self, group: &[Arc<Segment>]) -> io::Result<Option<CleanedGroup>> {
        let dir = &self.partition.dir;
        let base = group[0].base_offset();
        let mut w = CleanedWriter::create(dir, base, self.config)?;
        let result = self.copy_into(group, &mut w);
        let changed = match result {
            Ok(changed) => changed,
            Err(e) => {
                drop(w);
                discard_cleaned(dir, base);
                return Err(e);
            }
        };
        if !changed {
            drop(w);
            discard_cleaned(dir, base);
            return Ok(None);
        }
        let modified = group
            .last()
            .and_then(|s| std::fs::metadata(s.log_path()).ok())
            .and_then(|m| m.modified().ok());
        match w.finish(dir, modified) {
            Ok((cleaned, written)) => {
                self.io(0, written);
                Ok(Some(cleaned))
            }
            Err(e) => {
                discard_cleaned(dir, base);
                Err(e)
            }
        }
    }

    /// The copy proper; true when the output differs from the group. A
    /// single segment is written out only from its first change on (what
    /// precedes it is then copied over whole): a segment nothing changes in
    /// costs a read, not a write.
    fn copy_into(&mut self, group: &[Arc<Segment>], w: &mut CleanedWriter) -> io::Result<bool> {
        let mut changed = group.len() > 1;
        // While nothing changed: the batches seen, to index once copied.
        let mut unchanged: Vec<(i64, i64, usize)> = Vec::new();
        let mut rewritten = Vec::new();
        for (gi, seg) in group.iter().enumerate() {
            let last_segment = gi + 1 == group.len();
            let mut reader = BatchReader::new(seg, 0, self.cfg.io_buffer_bytes);
            loop {
                self.check_cancelled()?;
                let (next, read) = reader.next()?;
                self.io(read, 0);
                let Some((pos, h, range)) = next else { break };
                let last_of_group = last_segment && reader.pos >= reader.size;
                let bytes = &reader.buf[range];
                rewritten.clear();
                let out = self
                    .filter_batch(bytes, &h, last_of_group, &mut rewritten)
                    .map_err(|e| reader.bad(pos, &e.to_string()))?;
                self.stats.batches_read += 1;
                if !changed && !matches!(out, BatchOut::Same) {
                    changed = true;
                    let copied = w.copy_prefix(seg, pos, &unchanged)?;
                    self.io(copied, copied);
                    self.stats.batches_written += unchanged.len() as u64;
                }
                match out {
                    BatchOut::Same if !changed => {
                        unchanged.push((h.base_offset, h.max_timestamp, bytes.len()));
                    }
                    BatchOut::Same => {
                        w.append(bytes, &h);
                        self.stats.batches_written += 1;
                    }
                    BatchOut::Rewritten => {
                        let nh = BatchHeader::parse(&rewritten).map_err(io::Error::other)?;
                        w.append(&rewritten, &nh);
                        self.stats.batches_written += 1;
                        changed = true;
                    }
                    BatchOut::Dropped => changed = true,
                }
                w.txn_entries.append(&mut self.kept_aborts);
                let written = w.drain(self.cfg.io_buffer_bytes)?;
                self.io(0, written);
            }
        }
        Ok(changed)
    }

    /// Decides one batch: which records stay (Kafka's `shouldRetainRecord`),
    /// and whether the batch is copied, rewritten into `out`, or dropped.
    fn filter_batch(
        &mut self,
        bytes: &[u8],
        h: &BatchHeader,
        last_of_group: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<BatchOut> {
        let has_horizon = h.attributes & DELETE_HORIZON_BIT != 0;
        // Kafka's `checkBatchRetention`: a batch of an aborted transaction
        // loses its records; a marker may go once nothing of its
        // transaction is left and its delete horizon has passed.
        let (can_discard, discard_records) = if h.is_control() {
            let (can_discard, keep_entry) = self.txns.on_control(h, marker_of(bytes, h));
            self.kept_aborts.extend(keep_entry);
            let expired = has_horizon && self.now >= h.base_timestamp;
            (can_discard, can_discard && expired)
        } else {
            let aborted = self.txns.on_data(h);
            (aborted, aborted)
        };
        // The producer's last batch keeps its sequence (a data batch) or its
        // epoch (a marker, when the producer has no data batch in its
        // epoch); the group's last keeps the segment's end offset.
        let last_of_producer = h.producer_id >= 0
            && self
                .producer_last
                .get(&h.producer_id)
                .is_some_and(|&(last_data, epoch)| match last_data {
                    Some(offset) => h.last_offset() == offset,
                    None => h.is_control() && h.producer_epoch == epoch,
                });
        let retain_empty = last_of_group || last_of_producer;
        if discard_records {
            self.stats.records_read += h.record_count.max(0) as u64;
            self.stats.records_removed += h.record_count.max(0) as u64;
            if h.is_control() {
                self.stats.markers_removed += 1;
            } else {
                self.stats.aborted_records_removed += h.record_count.max(0) as u64;
            }
            if !retain_empty {
                return Ok(BatchOut::Dropped);
            }
            return self.write_empty(h, out);
        }
        if h.is_control() {
            self.stats.records_read += h.record_count.max(0) as u64;
            self.stats.records_kept += h.record_count.max(0) as u64;
            // Emptied before: it goes, unless still needed for its header
            // (Kafka's DELETE_EMPTY).
            if h.record_count == 0 {
                return Ok(if retain_empty {
                    BatchOut::Same
                } else {
                    BatchOut::Dropped
                });
            }
            // Past the map (a full map stopped the pass early): as it is.
            if h.last_offset() > self.map.latest() || !can_discard {
                return Ok(BatchOut::Same);
            }
            // Removable: it lives on for delete.retention.ms from now, as a
            // tombstone does (KIP-534's horizon, which Kafka sets on markers
            // of emptied transactions too).
            if has_horizon {
                self.note_horizon(h.base_timestamp);
                return Ok(BatchOut::Same);
            }
            let horizon = self
                .now
                .saturating_add(self.config.delete_retention.as_millis() as i64);
            self.note_horizon(horizon);
            let section = records_section(bytes, h)?;
            let records = parse_records(&section, h.record_count)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let rebase = horizon.wrapping_sub(h.base_timestamp);
            let mut body = Vec::with_capacity(section.len() + 8);
            for r in &records {
                put_record(&mut body, r, rebase);
            }
            let nh = BatchHeader {
                attributes: h.attributes | DELETE_HORIZON_BIT,
                base_timestamp: horizon,
                ..*h
            };
            write_batch(out, &nh, &body)?;
            return Ok(BatchOut::Rewritten);
        }
        let section = records_section(bytes, h)?;
        let records = parse_records(&section, h.record_count)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if records.is_empty() && !retain_empty {
            // Kept empty by an earlier pass, and no longer needed.
            return Ok(BatchOut::Dropped);
        }
        let latest = self.map.latest();
        let mut keep = Vec::with_capacity(records.len());
        let mut kept_tombstone = false;
        for r in &records {
            let offset = h.base_offset.wrapping_add(r.offset_delta);
            let kept = if offset > latest {
                true
            } else {
                match r.key {
                    None => {
                        self.stats.keyless_removed += 1;
                        false
                    }
                    Some(key) => {
                        let latest_for_key = offset >= self.map.get(key);
                        let expired = r.null_value && has_horizon && self.now >= h.base_timestamp;
                        if latest_for_key && expired {
                            self.stats.tombstones_removed += 1;
                        }
                        latest_for_key && !expired
                    }
                }
            };
            kept_tombstone |= kept && r.null_value;
            keep.push(kept);
        }
        let kept = keep.iter().filter(|k| **k).count();
        self.stats.records_read += records.len() as u64;
        self.stats.records_kept += kept as u64;
        self.stats.records_removed += (records.len() - kept) as u64;
        let set_horizon = kept_tombstone && !has_horizon;
        let base_timestamp = if set_horizon {
            self.now
                .saturating_add(self.config.delete_retention.as_millis() as i64)
        } else {
            h.base_timestamp
        };
        if kept_tombstone {
            self.note_horizon(base_timestamp);
        }
        if kept == records.len() && !set_horizon {
            return Ok(BatchOut::Same);
        }
        if kept == 0 {
            if !retain_empty {
                return Ok(BatchOut::Dropped);
            }
            return self.write_empty(h, out);
        }
        let rebase = base_timestamp.wrapping_sub(h.base_timestamp);
        let mut body = Vec::with_capacity(section.len());
        let mut max_ts = i64::MIN;
        for (r, _) in records.iter().zip(&keep).filter(|(_, k)| **k) {
            put_record(&mut body, r, rebase);
            max_ts = max_ts.max(h.base_timestamp.saturating_add(r.timestamp_delta));
        }
        let log_append_time = h.attributes & TIMESTAMP_TYPE_BIT != 0;
        let nh = BatchHeader {
            attributes: if set_horizon {
                h.attributes | DELETE_HORIZON_BIT
            } else {
                h.attributes
            },
            base_timestamp,
            max_timestamp: if log_append_time {
                h.max_timestamp
            } else {
                max_ts
            },
            record_count: kept as i32,
            ..*h
        };
        write_batch(out, &nh, &body)?;
        Ok(BatchOut::Rewritten)
    }
}

impl Pass<'_> {
    /// Kafka's empty header for a batch kept only for what its header
    /// says: no codec, no base timestamp, the old maxTimestamp, producer
    /// fields, offsets and the transactional and control bits as they were.
    fn write_empty(&mut self, h: &BatchHeader, out: &mut Vec<u8>) -> io::Result<BatchOut> {
        let empty = BatchHeader {
            attributes: h.attributes & (TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT),
            base_timestamp: -1,
            record_count: 0,
            ..*h
        };
        if *h == empty {
            // Emptied by an earlier pass already.
            return Ok(BatchOut::Same);
        }
        write_batch(out, &empty, &[])?;
        self.stats.empty_batches += 1;
        Ok(BatchOut::Rewritten)
    }

    /// The earliest delete horizon kept (tombstones and markers): the
    /// partition is due again by itself once it passes.
    fn note_horizon(&mut self, horizon: i64) {
        let hz = &mut self.stats.tombstone_horizon;
        if *hz < 0 || horizon < *hz {
            *hz = horizon;
        }
    }
}

/// Groups consecutive segments whose sizes add up to at most `max_bytes`
/// (and whose offsets fit one segment's 32-bit relative offsets), each to be
/// rewritten into one segment (Kafka's `groupSegmentsBySize`).
fn group_segments(segs: &[Arc<Segment>], max_bytes: u64) -> Vec<Vec<Arc<Segment>>> {
    let mut groups: Vec<Vec<Arc<Segment>>> = Vec::new();
    let mut size = 0u64;
    for s in segs {
        let fits = groups.last().is_some_and(|g| {
            size + s.size() <= max_bytes
                && s.next_offset() - g[0].base_offset() <= i64::from(i32::MAX)
        });
        if fits {
            size += s.size();
            if let Some(g) = groups.last_mut() {
                g.push(s.clone());
            }
        } else {
            size = s.size();
            groups.push(vec![s.clone()]);
        }
    }
    groups
}
