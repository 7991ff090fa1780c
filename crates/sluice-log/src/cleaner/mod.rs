//! # The log cleaner: compaction of `cleanup.policy=compact` topics
//!
//! Kafka's design (`LogCleaner`, `LogCleanerManager`), over Sluice's
//! segments. A pass over one partition ([`Partition::clean`]):
//!
//! 1. **Range.** The dirty section runs from the partition's checkpoint
//!    (`cleaner-offset-checkpoint`: the first offset not yet cleaned) to the
//!    first uncleanable offset: the active segment's base, or the base of
//!    the first dirty segment holding a record younger than
//!    `min.compaction.lag.ms`. Only sealed segments are ever cleaned.
//! 2. **Offset map.** Every keyed record of the dirty section goes into a
//!    fixed-memory map of key hash → latest offset ([`CleanerConfig::
//!    dedupe_buffer_bytes`], Kafka's `log.cleaner.dedupe.buffer.size`). When
//!    the map fills, the pass cleans only up to the last offset it mapped;
//!    the next pass starts there.
//! 3. **Copy.** The segments from the first up to that offset, in groups that
//!    fit one segment (`segment.bytes`), are each rewritten into one new
//!    segment named by the group's first base offset, keeping a record when
//!    it lies past the map, or its offset is at least the map's offset for
//!    its key (the latest, or a key the dirty section never mentions).
//!    Keyless records go (they cannot be compacted; Kafka drops them too).
//!    Offsets are never rewritten. Each batch that keeps records stays one
//!    batch with its baseOffset, lastOffsetDelta, producer fields and
//!    attributes, its records copied byte for byte (recompressed with the
//!    batch's own codec) and a new CRC; a batch that keeps all its records
//!    is copied unchanged. A batch left empty is dropped, except a
//!    producer's last batch (its sequence must survive, as in Kafka) and the
//!    group's last batch (so the new segment ends where the group did),
//!    which stay as header-only batches.
//! 4. **Tombstones** (null values) live on for `delete.retention.ms` after
//!    the pass that first copies them: that pass stamps the batch's delete
//!    horizon (KIP-534: attribute bit 6, baseTimestamp = now +
//!    `delete.retention.ms`, record timestamp deltas rebased so every record
//!    keeps its timestamp), and a pass after the horizon drops them. The
//!    earliest horizon kept is checkpointed, and makes the partition due by
//!    itself once it passes, so a quiet topic loses its tombstones on time.
//! 5. **Transactions** (Kafka's `CleanedTransactionMetadata`). The dirty
//!    section ends before the segment holding the last stable offset: an
//!    open transaction's records are never judged. Records of aborted
//!    transactions (the `.txnindex` entries) never enter the offset map and
//!    are removed; a COMMIT or ABORT marker stays while a batch of its
//!    transaction is left before it (an ABORT with its index entry, copied
//!    into the cleaned segment's `.txnindex`), then gets a delete horizon
//!    like a tombstone and goes once it passes — unless it is its
//!    producer's last batch with that epoch, which stays, emptied.
//! 6. **Swap**, crash-safe at every step (`files.rs`): the new segment is
//!    written as `.cleaned` files and fsynced; then, under the partition's
//!    appender lock (so no append, roll or retention interleaves), renamed
//!    to `.swap`, the old segments' files renamed to `.deleted`, the
//!    `.swap` files to their final names, and the new segment list
//!    published at once (`ArcSwap`); the `.deleted` files are removed after.
//!    A reader holding an old segment keeps reading it through its open
//!    descriptor. A partition's open completes or undoes whatever a crash
//!    interrupted.
//!
//! The chooser ([`Log::clean_once`]) picks, among compacted partitions that
//! are due — dirty ratio ≥ `min.cleanable.dirty.ratio`, or a dirty record
//! older than `max.compaction.lag.ms`, or kept tombstones past their
//! horizon — the one with the highest dirty ratio. [`Log::start_cleaner`]
//! runs it on background threads. Every pass returns [`CleanStats`] and is
//! throttled by [`CleanerConfig::io_max_bytes_per_second`].

mod files;
mod map;
mod records;
mod throttle;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

pub use files::Checkpoint;
pub use map::BYTES_PER_ENTRY;
pub use records::{RecordSpec, build_batch, codec_name};
pub use throttle::Throttle;

pub(crate) use files::{
    CLEANED, FileOp, discard_cleaned, read_checkpoint, removal_ops, segment_file, swap_ops,
    write_checkpoint,
};
pub(crate) use map::OffsetMap;
pub(crate) use records::{
    DELETE_HORIZON_BIT, parse_records, put_record, records_section, require_keys, write_batch,
};

use crate::{Log, Partition, now_ms};

/// The cleaner's settings (Kafka's `log.cleaner.*` broker configs; the
/// per-topic ones — `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
/// `max.compaction.lag.ms`, `delete.retention.ms` — are in `LogConfig`).
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory for the offset map of a pass
    /// (24 bytes a key; 128 MiB ≈ 5 million keys at the load factor). Split
    /// evenly among the threads of [`Log::start_cleaner`].
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.buffer.load.factor`: how full the map may get.
    pub dedupe_load_factor: f64,
    /// `log.cleaner.io.buffer.size`: bytes read (and written) per I/O.
    pub io_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read plus written bytes per
    /// second, for all the cleaner's threads together (None: unlimited).
    pub io_max_bytes_per_second: Option<u64>,
    /// `log.cleaner.threads`.
    pub threads: usize,
    /// `log.cleaner.backoff.ms`: how long a cleaner thread sleeps when no
    /// partition is due.
    pub backoff: Duration,
    /// How long a partition whose pass failed is left alone (Kafka marks it
    /// uncleanable until the log directory is reloaded).
    pub error_backoff: Duration,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 128 << 20,
            dedupe_load_factor: 0.9,
            io_buffer_bytes: 512 << 10,
            io_max_bytes_per_second: None,
            threads: 1,
            backoff: Duration::from_secs(15),
            error_backoff: Duration::from_secs(60),
        }
    }
}

/// What one pass did (for metrics: Kafka's cleaner exports the same).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// `<topic>-<partition>`.
    pub partition: String,
    /// The clock the pass ran by (ms since the epoch).
    pub now_ms: i64,
    /// Dirty bytes / (clean + dirty bytes) when the pass started.
    pub dirty_ratio: f64,
    /// Where the dirty section started and where it had to stop.
    pub first_dirty: i64,
    pub first_uncleanable: i64,
    /// The new checkpoint: every offset below it is now clean.
    pub cleaned_to: i64,
    /// True when the offset map filled before the dirty section's end.
    pub map_full: bool,
    /// Keys in the map, its slots, and entries / slots.
    pub map_entries: u64,
    pub map_slots: u64,
    pub map_fill: f64,
    pub map_memory_bytes: u64,
    /// Bytes read (map and copy) and written.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Records the copy read, kept and removed (removed ⊇ tombstones and
    /// keyless records removed).
    pub records_read: u64,
    pub records_kept: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub keyless_removed: u64,
    /// Records of aborted transactions removed, and transaction markers
    /// removed (past their delete horizon, nothing of their transaction
    /// left).
    pub aborted_records_removed: u64,
    pub markers_removed: u64,
    /// Batches read by the copy, written, and kept empty (producer state or
    /// a segment's last offset).
    pub batches_read: u64,
    pub batches_written: u64,
    pub empty_batches: u64,
    /// Old segments replaced, and new segments written for them.
    pub segments_replaced: u64,
    pub segments_written: u64,
    /// Earliest delete horizon of the tombstones kept (−1: none).
    pub tombstone_horizon: i64,
    pub map_duration: Duration,
    pub throttled: Duration,
    pub duration: Duration,
}

/// What the cleaner sees in a partition now ([`Partition::cleanable`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// True when `cleanup.policy` includes `compact`.
    pub compact: bool,
    pub first_dirty: i64,
    pub first_uncleanable: i64,
    /// Bytes of sealed segments wholly below the dirty section.
    pub clean_bytes: u64,
    /// Bytes of sealed segments in `[first_dirty, first_uncleanable)`.
    pub dirty_bytes: u64,
    /// dirty / (clean + dirty); 0 for an empty log.
    pub dirty_ratio: f64,
    /// A dirty record is older than `max.compaction.lag.ms`.
    pub past_max_lag: bool,
    /// Tombstones kept by the last pass are past their delete horizon.
    pub tombstones_due: bool,
    /// The chooser would clean it now.
    pub due: bool,
}

/// The cleaner's record of one partition ([`Partition::cleaner_status`]).
#[derive(Debug, Clone, Default)]
pub struct CleanerStatus {
    pub checkpoint: Option<Checkpoint>,
    /// The last pass that completed.
    pub last: Option<CleanStats>,
    /// The last failure, with the clock it happened at.
    pub last_error: Option<(i64, String)>,
    /// Until then (ms since the epoch) the chooser leaves the partition alone.
    pub retry_after_ms: i64,
    pub passes: u64,
}

/// Totals over every pass of a log, for counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerTotals {
    pub passes: u64,
    pub failures: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

/// The cleaner's state inside a partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionCleaner {
    /// Held for the whole of a pass.
    running: Mutex<()>,
    /// Set for good when the partition closes: passes stop at their next
    /// batch, and no new one starts.
    aborted: AtomicBool,
    status: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    /// The checkpoint as last read or written (loaded on first use).
    checkpoint: Option<Option<Checkpoint>>,
    public: CleanerStatus,
}

impl PartitionCleaner {
    /// The pass's guard, unless a pass is running or the partition closed.
    pub(crate) fn try_begin(&self) -> Option<MutexGuard<'_, ()>> {
        if self.is_aborted() {
            return None;
        }
        match self.running.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.running.try_lock(), Err(TryLockError::WouldBlock))
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Stops any pass (it gives up at its next batch, undoing its unfinished
    /// segment) and waits for it; no pass starts after this.
    pub(crate) fn abort_and_wait(&self) {
        self.aborted.store(true, Ordering::Release);
        drop(self.running.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn status(&self) -> MutexGuard<'_, StatusInner> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The checkpoint (read from `dir` the first time).
    pub(crate) fn checkpoint(&self, dir: &Path) -> Option<Checkpoint> {
        let mut s = self.status();
        *s.checkpoint.get_or_insert_with(|| read_checkpoint(dir))
    }

    pub(crate) fn set_checkpoint(&self, dir: &Path, c: Checkpoint) -> io::Result<()> {
        write_checkpoint(dir, c)?;
        self.status().checkpoint = Some(Some(c));
        Ok(())
    }

    pub(crate) fn record_pass(&self, stats: &CleanStats) {
        let mut s = self.status();
        s.public.last = Some(stats.clone());
        s.public.passes += 1;
    }

    fn record_error(&self, now: i64, retry_after_ms: i64, e: &io::Error) {
        let mut s = self.status();
        s.public.last_error = Some((now, e.to_string()));
        s.public.retry_after_ms = retry_after_ms;
    }

    fn retry_after_ms(&self) -> i64 {
        self.status().public.retry_after_ms
    }

    pub(crate) fn public_status(&self, dir: &Path) -> CleanerStatus {
        let checkpoint = self.checkpoint(dir);
        CleanerStatus {
            checkpoint,
            ..self.status().public.clone()
        }
    }
}

/// The cleaner's state inside a [`Log`]: the throttle all its passes share,
/// and totals.
#[derive(Debug, Default)]
pub(crate) struct LogCleaner {
    throttle: Throttle,
    passes: AtomicU64,
    failures: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    records_removed: AtomicU64,
}

#[cfg(test)]
thread_local! {
    /// Tests: a pass on this thread stops before its first swap, leaving
    /// its `.cleaned` files (to build every crash state from them).
    pub(crate) static STOP_BEFORE_SWAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Brings a partition directory back to whole segments after a crash in a
/// cleaner pass; run by `Partition::open` before it lists segments.
pub(crate) fn recover_dir(dir: &Path, config: &crate::LogConfig) -> io::Result<()> {
    files::recover(dir, config).map(|_| ())
}

impl Log {
    /// One cleaner round: picks the dirtiest due compacted partition and
    /// cleans it. None when nothing is due, or the pass failed (logged, and
    /// in the partition's [`Partition::cleaner_status`]; the partition is
    /// then left alone for [`CleanerConfig::error_backoff`]).
    pub fn clean_once(&self, cfg: &CleanerConfig) -> Option<CleanStats> {
        self.clean_once_at(cfg, now_ms())
    }

    /// As [`clean_once`](Self::clean_once), by the clock `now_ms` (tests and
    /// simulations: the lag rules and delete horizons follow it).
    pub fn clean_once_at(&self, cfg: &CleanerConfig, now_ms: i64) -> Option<CleanStats> {
        self.clean_once_with(cfg, now_ms, &|| false)
    }

    fn clean_once_with(
        &self,
        cfg: &CleanerConfig,
        now: i64,
        stop: &dyn Fn() -> bool,
    ) -> Option<CleanStats> {
        let mut best: Option<(f64, Arc<Partition>)> = None;
        for p in self.all_partitions() {
            if !p.config().cleanup_policy.compact
                || p.cleaner.is_busy()
                || p.cleaner.is_aborted()
                || p.cleaner.retry_after_ms() > now
            {
                continue;
            }
            let c = p.cleanable(now);
            if c.due && best.as_ref().is_none_or(|(r, _)| c.dirty_ratio > *r) {
                best = Some((c.dirty_ratio, p));
            }
        }
        let (_, p) = best?;
        let totals = &self.cleaner;
        match p.clean_with(cfg, now, &totals.throttle, stop) {
            Ok(Some(stats)) => {
                totals.passes.fetch_add(1, Ordering::Relaxed);
                totals
                    .bytes_read
                    .fetch_add(stats.bytes_read, Ordering::Relaxed);
                totals
                    .bytes_written
                    .fetch_add(stats.bytes_written, Ordering::Relaxed);
                totals
                    .records_removed
                    .fetch_add(stats.records_removed, Ordering::Relaxed);
                Some(stats)
            }
            Ok(None) => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                tracing::error!(partition = %p.name(), "log cleaner pass failed: {e}");
                totals.failures.fetch_add(1, Ordering::Relaxed);
                let retry = now.saturating_add(cfg.error_backoff.as_millis() as i64);
                p.cleaner.record_error(now, retry, &e);
                None
            }
        }
    }

    /// Totals over every pass the chooser ran.
    pub fn cleaner_totals(&self) -> CleanerTotals {
        let c = &self.cleaner;
        CleanerTotals {
            passes: c.passes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            records_removed: c.records_removed.load(Ordering::Relaxed),
        }
    }

    /// Starts `cfg.threads` cleaner threads, each running
    /// [`clean_once`](Self::clean_once) with `dedupe_buffer_bytes / threads`
    /// of map, and sleeping `cfg.backoff` when nothing is due. They stop
    /// (a pass in progress gives up at its next batch) when the handle is
    /// dropped.
    pub fn start_cleaner(self: &Arc<Self>, cfg: CleanerConfig) -> io::Result<Cleaner> {
        let threads = cfg.threads.max(1);
        let per_thread = CleanerConfig {
            dedupe_buffer_bytes: cfg.dedupe_buffer_bytes / threads,
            ..cfg
        };
        // Built first, so that a failed spawn stops the threads already
        // started (the handle's drop).
        let mut cleaner = Cleaner {
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let (log, stop, stopping, cfg) = (
                self.clone(),
                cleaner.stop.clone(),
                cleaner.stopping.clone(),
                per_thread.clone(),
            );
            cleaner.threads.push(
                std::thread::Builder::new()
                    .name(format!("sluice-cleaner-{i}"))
                    .spawn(move || {
                        let stopped = || stopping.load(Ordering::Acquire);
                        while !stopped() {
                            // A pass that panics (a bug, never input: stored
                            // bytes are checked) is logged and the thread
                            // goes on, rather than compaction stopping
                            // silently for every topic.
                            let pass =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    log.clean_once_with(&cfg, now_ms(), &stopped)
                                }));
                            match pass {
                                Ok(Some(_)) => continue,
                                Ok(None) => {}
                                Err(_) => {
                                    tracing::error!("a log cleaner pass panicked; backing off");
                                    log.cleaner.failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            let (lock, cvar) = &*stop;
                            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                            if *guard {
                                return;
                            }
                            let _ = cvar
                                .wait_timeout(guard, cfg.backoff)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    })?,
            );
        }
        Ok(cleaner)
    }
}

/// The cleaner threads of [`Log::start_cleaner`]; dropping it stops them.
#[derive(Debug)]
pub struct Cleaner {
    stop: Arc<(Mutex<bool>, Condvar)>,
    stopping: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
