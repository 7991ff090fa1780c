//! A partition: a directory `<topic>-<partition>/` of segments, one appender,
//! lock-free readers.
//!
//! Readers take a snapshot of the segment list (`ArcSwap`), the committed end
//! (an atomic), and read file regions below it. The appender (behind a mutex:
//! one at a time) validates, assigns offsets in place, writes, indexes, and
//! then publishes the new end.

mod compact;
mod log_start;
mod replica;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::batch::{self, BatchError, BatchHeader, TxnMarker};
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::epoch::LeaderEpochCache;
use crate::producer::{CompletedTxn, ProducerTable, SeqCheck, SequenceError};
use crate::segment::{Segment, SegmentWriter, now_ms};
use crate::txn_index::AbortedTxn;

/// File in the partition directory naming the base offset of the first
/// segment that may hold bytes not yet forced to disk: recovery scans from it.
const RECOVERY_POINT: &str = "recovery-point";
/// The idempotent-producer state as of a segment roll or a clean shutdown.
const PRODUCER_SNAPSHOT: &str = "producer.snapshot";

/// Why an append was refused. The log is unchanged after any of these.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("no batches to append")]
    Empty,
    #[error("idempotent producer: {0}")]
    Sequence(#[from] SequenceError),
    #[error("{len} bytes of batches exceed the segment size {segment_bytes}")]
    TooLarge { len: u64, segment_bytes: u64 },
    #[error("a {len}-byte batch exceeds max.message.bytes {max}")]
    BatchTooLarge { len: u64, max: u64 },
    /// A CreateTime batch outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's clock.
    #[error("timestamp {timestamp} is {why}")]
    InvalidTimestamp { timestamp: i64, why: String },
    #[error("partition {0} is offline after an I/O error")]
    Offline(String),
    /// [`Partition::append_replicated`]: a batch does not start after the
    /// log's end (the first one) or after the batch before it. Nothing was
    /// appended.
    #[error("replicated batch at offset {got}, expected one at or after {expected}")]
    OffsetMismatch { expected: i64, got: i64 },
    /// A leader's append stamped with an epoch older than the newest this
    /// log holds: the broker lost the leadership (its log already has a
    /// later leader's batches) between checking its role and appending.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    #[error("I/O error appending to {partition}: {source}")]
    Io {
        partition: String,
        source: io::Error,
    },
    /// The disk (or quota) is full: nothing was appended, the partition stays
    /// online, and appends succeed again once there is room.
    #[error("no space appending to {partition}: {source}")]
    NoSpace {
        partition: String,
        source: io::Error,
    },
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("I/O error reading {partition}: {source}")]
    Io {
        partition: String,
        source: io::Error,
    },
}

impl ReadError {
    /// True for a [`Partition::read_cached`] that needed a page not in the
    /// page cache.
    pub fn is_would_block(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub batches: usize,
    /// True when the batch was a retry of one already in the log: nothing was
    /// appended, and the offsets are the original ones.
    pub duplicate: bool,
    /// True when the bytes were forced to disk before this returned
    /// (`FlushPolicy::Always`); otherwise see [`Partition::durable_end`].
    pub durable: bool,
    /// The broker time stamped into the batches (`LogAppendTime` topics).
    pub log_append_time: Option<i64>,
}

/// A run of whole batches in one segment, for the io layer to send.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// Holding the segment keeps its file open even if retention deletes it.
    pub segment: Arc<Segment>,
    pub position: u64,
    pub len: u64,
    /// Offset of the first batch in the slice.
    pub first_offset: i64,
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// None when there is nothing at or after the offset yet.
    pub slice: Option<FileSlice>,
    pub log_start: i64,
    /// One past the last committed offset (Kafka's high watermark on one node).
    pub log_end: i64,
    /// The bound the read applied: `upto` (at most the log end) for
    /// [`Partition::read_upto`]; [`Partition::high_watermark`] for the other
    /// reads, which do not bound by it.
    pub high_watermark: i64,
}

#[derive(Debug)]
struct Appender {
    writer: Option<SegmentWriter>,
    /// Set after an I/O error: the partition takes no more appends.
    failed: bool,
    last_flush_ms: i64,
    /// Background syncs of sealed segments still running.
    syncing: Vec<std::thread::JoinHandle<()>>,
    /// Idempotent producers' recent sequences and open transactions.
    producers: ProducerTable,
    /// `producers.txn_changes()` when `Partition::txn_view` was last
    /// published.
    txn_published: u64,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    name: String,
    dir: PathBuf,
    /// Swapped whole when the topic's configs change; each operation loads
    /// it once, so it sees one consistent set.
    config: ArcSwap<LogConfig>,
    segments: ArcSwap<Vec<Arc<Segment>>>,
    log_start: AtomicI64,
    log_end: AtomicI64,
    /// Shared with the threads that sync sealed segments in the background.
    durability: Arc<Durability>,
    appender: Mutex<Appender>,
    /// Mirrors `Appender::failed` for readers that must not wait for an
    /// append in progress (metrics).
    offline: AtomicBool,
    /// The log cleaner's state (compacted topics; `partition/compact.rs`).
    pub(crate) cleaner: crate::cleaner::PartitionCleaner,
    /// The leader epoch history (`leader-epoch-checkpoint`). Changed only
    /// under the appender lock (taken first when both are held); readers
    /// take only this one.
    epochs: Mutex<LeaderEpochCache>,
    /// The latest epoch in `epochs` (−1: none), so the append path sees
    /// without a lock that it adds no entry.
    latest_epoch: AtomicI32,
    /// The high watermark last set (`partition/replica.rs`); meaningful once
    /// `hw_managed` is set, until then the high watermark is the log end.
    high_watermark: AtomicI64,
    hw_managed: AtomicBool,
    /// What holds the last stable offset back, for readers without the
    /// appender lock: (first offset, marker offset or `i64::MAX` while open)
    /// per open or not-yet-replicated transaction, by first offset
    /// (`ProducerTable::unstable_txns`). Republished by the appender when
    /// transactions open or end, before the log end moves past them.
    txn_view: ArcSwap<Vec<(i64, i64)>>,
}

/// What is known to be on disk, and the recovery point that follows from it.
#[derive(Debug)]
struct Durability {
    dir: PathBuf,
    durable_end: AtomicI64,
    /// The recovery point last written; only ever moves forward.
    recovery_point: Mutex<i64>,
    /// Rolls so far, and the count of rolls whose new segment's directory
    /// entry is known to be on disk. A roll under `os` or an interval does not
    /// wait for the directory `fsync` (under a busy disk it can take hundreds
    /// of milliseconds, all of it holding up appends); the seal thread or the
    /// next flush does it.
    rolls: std::sync::atomic::AtomicU64,
    rolls_dir_synced: std::sync::atomic::AtomicU64,
}

impl Durability {
    /// Makes the directory entries of every segment rolled so far durable,
    /// unless they already are.
    fn sync_dir_if_needed(&self) -> io::Result<()> {
        let rolls = self.rolls.load(Ordering::Acquire);
        if self.rolls_dir_synced.load(Ordering::Acquire) < rolls {
            sync_dir(&self.dir)?;
            self.rolls_dir_synced.fetch_max(rolls, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Records that everything before `base` is on disk.
    fn advance(&self, base: i64) -> io::Result<()> {
        self.durable_end.fetch_max(base, Ordering::AcqRel);
        let mut current = self
            .recovery_point
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if base > *current {
            write_recovery_point(&self.dir, base)?;
            *current = base;
        }
        Ok(())
    }

    /// Moves the recovery point back to `base` if it is past it (a
    /// truncation is about to rewrite the segment there), durably.
    fn retreat(&self, base: i64) -> io::Result<()> {
        let mut current = self
            .recovery_point
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if base < *current {
            write_recovery_point(&self.dir, base)?;
            *current = base;
        }
        Ok(())
    }

    /// Sets the recovery point to `base` whichever way it moves (the log was
    /// emptied and starts again at `base`), durably.
    fn reset(&self, base: i64) -> io::Result<()> {
        let mut current = self
            .recovery_point
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        write_recovery_point(&self.dir, base)?;
        *current = base;
        Ok(())
    }
}

impl Partition {
    /// Opens (or creates) the partition in `dir`. `clean` says the previous
    /// run shut down cleanly: segments are then trusted to end at their last
    /// batch; otherwise every segment from the recovery point on is scanned
    /// with CRC checks and the log is cut at the first bad batch.
    pub fn open(dir: &Path, config: LogConfig, clean: bool) -> io::Result<Partition> {
        std::fs::create_dir_all(dir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Temp files of recovery-point, snapshot and log-start writes a
        // crash interrupted.
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ((name.starts_with(&format!("{RECOVERY_POINT}."))
                || name.starts_with(&format!("{PRODUCER_SNAPSHOT}.")))
                && name.ends_with(".tmp"))
                || log_start::is_temp_file(&name)
                || crate::epoch::is_temp_file(&name)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // A log cleaner pass a crash interrupted: completed or undone.
        crate::cleaner::recover_dir(dir, &config)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log").and_then(|s| s.parse().ok())
            })
            .collect();
        bases.sort_unstable();
        let recovery_point = read_recovery_point(dir).unwrap_or(i64::MIN);
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        let mut cut = false;
        // The first segment recovery scanned: its transaction index, and
        // those after it, are rebuilt from the log.
        let mut first_scanned: Option<i64> = None;
        for &base in &bases {
            if cut {
                // Everything after a corrupt batch is gone, as in Kafka.
                tracing::warn!(partition = %name, base, "deleting segment after a truncated one");
                let seg = Segment::open(dir, base, &config, true)?;
                seg.delete()?;
                continue;
            }
            let trust = clean || base < recovery_point;
            let seg = Segment::open(dir, base, &config, trust)?;
            if !trust && first_scanned.is_none() {
                first_scanned = Some(base);
            }
            if let Some(prev) = segments.last()
                && seg.base_offset() != prev.next_offset()
            {
                tracing::warn!(
                    partition = %name,
                    base,
                    expected = prev.next_offset(),
                    "segment does not continue the log; deleting it and what follows"
                );
                seg.delete()?;
                cut = true;
                continue;
            }
            let file_len = seg.file().metadata()?.len();
            if seg.size() < file_len {
                cut = true;
            }
            segments.push(Arc::new(seg));
        }
        if segments.is_empty() {
            let base = bases.first().copied().unwrap_or(0);
            segments.push(Arc::new(Segment::create(dir, base, &config)?));
            sync_dir(dir)?;
        }
        // The first segment's base, or where DeleteRecords moved the start.
        let log_start = log_start::load(dir, &name, &mut segments, &config)?;
        let last = segments
            .last()
            .cloned()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let log_end = last.next_offset();
        let writer = SegmentWriter::new(&last, &config)?;
        let rebuild_from = txn_indexes_to_rebuild(&name, &segments, first_scanned)?;
        let mut producers = load_producer_state(dir, &name, &segments, rebuild_from)?;
        // Nothing is pruned yet: the high watermark a replicated partition
        // gets from its checkpoint may lie below ended transactions' markers.
        let txn_view = producers.unstable_txns(i64::MIN);
        let txn_published = producers.txn_changes();
        let epochs = replica::load_epochs(dir, &name, &segments, log_start, log_end)?;
        let partition = Partition {
            name,
            dir: dir.to_path_buf(),
            config: ArcSwap::from_pointee(config),
            segments: ArcSwap::from_pointee(segments),
            log_start: AtomicI64::new(log_start),
            log_end: AtomicI64::new(log_end),
            durability: Arc::new(Durability {
                dir: dir.to_path_buf(),
                durable_end: AtomicI64::new(log_end),
                recovery_point: Mutex::new(last.base_offset()),
                rolls: Default::default(),
                rolls_dir_synced: Default::default(),
            }),
            appender: Mutex::new(Appender {
                writer: Some(writer),
                failed: false,
                last_flush_ms: now_ms(),
                syncing: Vec::new(),
                producers,
                txn_published,
            }),
            offline: AtomicBool::new(false),
            cleaner: Default::default(),
            latest_epoch: AtomicI32::new(epochs.latest_epoch().unwrap_or(-1)),
            epochs: Mutex::new(epochs),
            high_watermark: AtomicI64::new(log_end),
            hw_managed: AtomicBool::new(false),
            txn_view: ArcSwap::from_pointee(txn_view),
        };
        // The new recovery point trusts every segment below the last one on
        // the next open; those this open scanned (a crash left them
        // unsynced) reach the disk first, or a power loss now would leave
        // trusted segments that were never checked.
        if let Some((_, sealed)) = partition.segments.load().split_last() {
            for seg in sealed {
                if !(clean || seg.base_offset() < recovery_point) {
                    seg.sync()?;
                }
            }
        }
        write_recovery_point(dir, last.base_offset())?;
        Ok(partition)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.load_full()
    }

    /// Puts new settings in force (a topic's configs changed): the next
    /// append, roll, flush and retention pass use them; segments already
    /// made keep their size.
    pub fn set_config(&self, config: LogConfig) {
        self.config.store(Arc::new(config));
    }

    /// The first offset still in the log.
    pub fn log_start(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// True once a write failed other than for lack of space: the partition
    /// takes no more appends until the broker restarts (reads go on).
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    /// One past the last committed offset.
    pub fn log_end(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// One past the last offset known to be on disk.
    pub fn durable_end(&self) -> i64 {
        self.durability.durable_end.load(Ordering::Acquire)
    }

    /// The last stable offset (KIP-98): read_committed consumers read below
    /// it. The first offset of the earliest transaction still open — or
    /// ended by a marker the high watermark has not yet passed, as Kafka
    /// counts it (a new leader without that marker would still have it
    /// open) — but at least the log start and at most the
    /// [high watermark](Self::high_watermark); the high watermark when no
    /// transaction is unstable. Lock-free: one atomic load of the view the
    /// appender publishes.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        let view = self.txn_view.load();
        match view.iter().find(|&&(_, end)| end >= hw) {
            Some(&(first, _)) => first.max(self.log_start()).min(hw),
            None => hw,
        }
    }

    /// The aborted transactions a read_committed Fetch of `[from, upto)`
    /// must list, as (producer id, first offset): every one whose range
    /// overlaps it, from the `.txnindex` of the segment holding `from` and
    /// those after it, until an entry's last stable offset reaches `upto`
    /// (Kafka's `collectAbortedTransactions`).
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<(i64, i64)> {
        self.aborted_txns(from, upto)
            .into_iter()
            .map(|t| (t.producer_id, t.first_offset))
            .collect()
    }

    /// As [`aborted_transactions`](Self::aborted_transactions), whole entries.
    pub fn aborted_txns(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        let segs = self.segments.load();
        let first = segs
            .partition_point(|s| s.base_offset() <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        for seg in &segs[first..] {
            if seg.txn_index().collect(from, upto, &mut out) {
                break;
            }
        }
        out
    }

    /// The first offset of `producer_id`'s open transaction here, if any.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.lock().producers.open_txn(producer_id)
    }

    /// The open transactions, as (first offset, producer id), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.lock().producers.open_txns()
    }

    /// Every producer with state here, as DescribeProducers shows them.
    pub fn producers(&self) -> Vec<crate::producer::ProducerView> {
        self.lock().producers.views()
    }

    /// Republishes the view of unstable transactions if the producer state
    /// changed it (or `force`: the table was replaced). Under the appender
    /// lock, before the log end moves.
    fn publish_txns(&self, app: &mut Appender, force: bool) {
        if !force && app.producers.txn_changes() == app.txn_published {
            return;
        }
        let view = app.producers.unstable_txns(self.high_watermark());
        app.txn_published = app.producers.txn_changes();
        self.txn_view.store(Arc::new(view));
    }

    /// A snapshot of the segments, oldest first.
    pub fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments.load_full()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.load().iter().map(|s| s.size()).sum()
    }

    fn lock(&self) -> MutexGuard<'_, Appender> {
        // A panic while appending cannot leave half-published state (the end
        // is published last), so a poisoned lock is still usable.
        self.appender.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io_error(&self, app: &mut Appender, source: io::Error) -> AppendError {
        tracing::error!(partition = %self.name, "append failed, partition offline: {source}");
        app.failed = true;
        self.offline.store(true, Ordering::Relaxed);
        AppendError::Io {
            partition: self.name.clone(),
            source,
        }
    }

    /// A failed write or roll. A full disk or quota leaves nothing published
    /// (the end still points before the attempt, and the next append writes
    /// over whatever part of it reached the file), so the partition stays
    /// online and appends resume once there is room; any other error takes
    /// it offline.
    fn write_error(&self, app: &mut Appender, source: io::Error) -> AppendError {
        use rustix::io::Errno;
        match Errno::from_io_error(&source) {
            Some(Errno::NOSPC | Errno::DQUOT) => {
                tracing::warn!(partition = %self.name, "append refused, disk full: {source}");
                AppendError::NoSpace {
                    partition: self.name.clone(),
                    source,
                }
            }
            _ => self.io_error(app, source),
        }
    }

    /// Appends the batches in `records` (a Produce request's records field):
    /// all are validated first, then written with their assigned baseOffset
    /// and partitionLeaderEpoch (both outside the CRC; `records` itself is not
    /// modified), indexed, and published. On any error the log is unchanged.
    ///
    /// Transactional batches (attributes bit 4) open or join their
    /// producer's transaction; a non-transactional batch from a producer
    /// with a transaction open is refused (`BatchError::NotTransactional`,
    /// Kafka's INVALID_TXN_STATE). Control batches are refused
    /// (`BatchError::ControlBatchFromClient`): markers are written with
    /// [`append_control`](Self::append_control).
    pub fn append(&self, records: &[u8], leader_epoch: i32) -> Result<AppendInfo, AppendError> {
        self.append_inner(records, leader_epoch, false)
    }

    /// Writes a transaction marker for `producer_id` (the transaction
    /// coordinator's WriteTxnMarkers): a control batch as Kafka lays it out
    /// (`batch::build_control_batch`, timestamped now), appended as
    /// [`append`](Self::append) appends. It ends the producer's open
    /// transaction — an ABORT adds an entry to the segment's `.txnindex` —
    /// and the last stable offset moves past it. A producer with no open
    /// transaction still gets the marker written (its epoch and coordinator
    /// epoch are recorded), as in Kafka. A `producer_epoch` older than the
    /// producer's current epoch is refused with
    /// `AppendError::Sequence(SequenceError::FencedEpoch)` (Kafka's
    /// INVALID_PRODUCER_EPOCH), and the log is unchanged.
    pub fn append_control(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        let marker = TxnMarker {
            commit,
            coordinator_epoch,
        };
        let bytes = batch::build_control_batch(producer_id, producer_epoch, marker, now_ms());
        self.append_inner(&bytes, leader_epoch, true)
    }

    fn append_inner(
        &self,
        records: &[u8],
        leader_epoch: i32,
        control: bool,
    ) -> Result<AppendInfo, AppendError> {
        let config = self.config.load_full();
        let mut batches = batch::split_batches(records)?;
        if batches.is_empty() {
            return Err(AppendError::Empty);
        }
        // Each control batch's marker, to check its coordinator epoch under
        // the appender lock.
        let mut markers = Vec::new();
        for (start, h) in &batches {
            if h.is_control() != control {
                return Err(AppendError::InvalidBatch(if control {
                    BatchError::BadControlRecord("not a control batch")
                } else {
                    BatchError::ControlBatchFromClient
                }));
            }
            if control {
                let len = h.total_len().unwrap_or(0);
                match batch::parse_marker(&records[*start..*start + len], h)? {
                    Some(m) => markers.push((h.producer_id, m.coordinator_epoch)),
                    None => return Err(BatchError::BadControlRecord("no record").into()),
                }
            }
            let len = h.total_len().unwrap_or(0) as u64;
            if len > config.max_batch_bytes {
                return Err(AppendError::BatchTooLarge {
                    len,
                    max: config.max_batch_bytes,
                });
            }
            // Kafka's rule for compacted topics: every record has a key.
            if config.cleanup_policy.compact {
                let bytes = &records[*start..*start + len as usize];
                crate::cleaner::require_keys(bytes, h)?;
            }
        }
        let len = records.len() as u64;
        if len > config.segment_bytes {
            return Err(AppendError::TooLarge {
                len,
                segment_bytes: config.segment_bytes,
            });
        }
        let now = now_ms();
        // LogAppendTime: every batch carries the broker's clock (header
        // fields inside the CRC, so the batches are rewritten into a copy);
        // CreateTime: the producer's, within the configured bounds.
        let stamped: Option<Vec<u8>> = match config.timestamp_type {
            TimestampType::LogAppendTime => {
                let mut copy = records.to_vec();
                for (start, h) in batches.iter_mut() {
                    let end = *start + h.total_len().unwrap_or(0);
                    batch::stamp_log_append_time(&mut copy[*start..end], now);
                    h.max_timestamp = now;
                    h.attributes |= batch::TIMESTAMP_TYPE_BIT;
                }
                Some(copy)
            }
            TimestampType::CreateTime => {
                for (_, h) in &batches {
                    check_timestamps(h, now, &config)?;
                }
                None
            }
        };
        let records = stamped.as_deref().unwrap_or(records);
        let mut app = self.lock();
        if app.failed {
            return Err(AppendError::Offline(self.name.clone()));
        }
        // Checked under the appender lock, which a follower's append of a
        // newer leader's batches also holds: a stale leader's append can
        // never land after them.
        let latest = self.latest_epoch.load(Ordering::Acquire);
        if leader_epoch < latest {
            return Err(AppendError::StaleLeaderEpoch {
                epoch: leader_epoch,
                latest,
            });
        }
        let base_offset = self.log_end();
        let mut next = base_offset;
        for (_, h) in batches.iter_mut() {
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            next = h.last_offset() + 1;
        }
        // Idempotence: a retried batch is acknowledged with its original
        // offsets; a gap or a fenced epoch is refused. Several batches in one
        // request are checked against each other too.
        for &(producer_id, got) in &markers {
            if let Some(current) = app.producers.coordinator_epoch(producer_id)
                && current > got
            {
                return Err(AppendError::Sequence(SequenceError::CoordinatorFenced {
                    producer_id,
                    current,
                    got,
                }));
            }
        }
        let mut checked = (batches.len() > 1).then(|| app.producers.clone());
        for (_, h) in &batches {
            let table = checked.as_ref().unwrap_or(&app.producers);
            let seq = table.check(h)?;
            if table.breaks_open_txn(h) {
                return Err(BatchError::NotTransactional {
                    producer_id: h.producer_id,
                }
                .into());
            }
            match seq {
                SeqCheck::Append => {}
                SeqCheck::Duplicate {
                    base_offset,
                    last_offset,
                } if batches.len() == 1 => {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        batches: 1,
                        duplicate: true,
                        durable: self.durable_end() > last_offset,
                        log_append_time: None,
                    });
                }
                SeqCheck::Duplicate { .. } => {
                    return Err(AppendError::Sequence(SequenceError::OutOfOrder {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        last: -1,
                        got: h.base_sequence,
                    }));
                }
            }
            if let Some(t) = checked.as_mut() {
                t.record(h);
            }
        }
        // A new leader epoch's first batch: its entry is on disk before the
        // batch is (once per leader change, not per append).
        let added_epoch = self.assign_epochs(&mut app, [(leader_epoch, base_offset)])?;
        let durable = match self.write_batches(&mut app, records, &batches, &config) {
            Ok(durable) => durable,
            Err(e) => {
                if added_epoch {
                    self.unassign_epochs_past_end();
                }
                return Err(e);
            }
        };
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            batches: batches.len(),
            duplicate: false,
            durable,
            log_append_time: stamped.is_some().then_some(now),
        })
    }

    /// Writes whole, validated batches (`batches`: start in `records` and the
    /// header to store, offsets assigned) at the log's end — rolling first
    /// if they do not fit the active segment — indexes them, records them in
    /// the producer state, and publishes them. `records` must fit one
    /// segment. Returns whether they were forced to disk
    /// (`FlushPolicy::Always`). On an error nothing was published.
    fn write_batches(
        &self,
        app: &mut Appender,
        records: &[u8],
        batches: &[(usize, BatchHeader)],
        config: &LogConfig,
    ) -> Result<bool, AppendError> {
        let Some(next) = batches.last().map(|(_, h)| h.last_offset() + 1) else {
            return Ok(false);
        };
        // Offsets relative to the segment base must fit the indexes (only a
        // replica's batches, with gaps a compacted leader left, come near).
        let span_too_wide = self
            .segments
            .load()
            .last()
            .is_some_and(|active| next - 1 - active.base_offset() > i64::from(i32::MAX));
        if let Err(e) = self.maybe_roll(app, records.len() as u64, span_too_wide, config) {
            return Err(self.write_error(app, e));
        }
        let segs = self.segments.load();
        let Some(active) = segs.last() else {
            return Err(AppendError::Offline(self.name.clone()));
        };
        let Some(writer) = app.writer.as_mut() else {
            return Err(AppendError::Offline(self.name.clone()));
        };
        let new_size = match writer.append(active, records, batches, config) {
            Ok(size) => size,
            // Nothing was published: the end still points before these bytes.
            Err(e) => return Err(self.write_error(app, e)),
        };
        let durable = match config.flush {
            FlushPolicy::Always => {
                if let Err(e) = writer.sync(active) {
                    return Err(self.io_error(app, e));
                }
                true
            }
            _ => false,
        };
        // Producer state and transactions, batch by batch in log order, as a
        // follower and recovery will see them; an ABORT's index entry and
        // the view of open transactions are in place before the end moves
        // past the marker (a reader must never see the end without them).
        for (start, h) in batches {
            let marker = if h.is_control() {
                let len = h.total_len().unwrap_or(0);
                records
                    .get(*start..*start + len)
                    .and_then(|b| batch::parse_marker(b, h).ok().flatten())
            } else {
                None
            };
            if let Some(entry) = app
                .producers
                .apply(h, marker)
                .as_ref()
                .and_then(CompletedTxn::aborted_entry)
                && let Err(e) = active.txn_index().append(entry)
            {
                return Err(self.io_error(app, e));
            }
        }
        self.publish_txns(app, false);
        // The end offset first, then the segment size readers bound regions
        // by: a reader that loads the end and then the size never gets
        // bytes past the end it reports. (The other order handed consumers
        // a batch before its offsets were published; if the appender was
        // then preempted, their next Fetch was answered OFFSET_OUT_OF_RANGE
        // and librdkafka re-read the partition from the start.)
        self.log_end.store(next, Ordering::Release);
        active.publish_size(new_size);
        if durable {
            self.durability.durable_end.store(next, Ordering::Release);
            app.last_flush_ms = now_ms();
        }
        Ok(durable)
    }

    /// Rolls to a new segment when `incoming` bytes do not fit the active one,
    /// when it is too old, when its index is full, or when `force` says so
    /// (a non-empty active segment only).
    fn maybe_roll(
        &self,
        app: &mut Appender,
        incoming: u64,
        force: bool,
        config: &LogConfig,
    ) -> io::Result<()> {
        let segs = self.segments.load_full();
        let Some(active) = segs.last() else {
            return Ok(());
        };
        if active.size() == 0 {
            return Ok(());
        }
        // The segment's own room, or a segment.bytes lowered since it was made.
        let full = app
            .writer
            .as_ref()
            .is_none_or(|w| w.room(active) < incoming)
            || active.size() + incoming > config.segment_bytes;
        let old = config
            .segment_age
            .is_some_and(|age| now_ms() - active.created_ms() >= age.as_millis() as i64);
        if !(full || old || force) {
            return Ok(());
        }
        let base = self.log_end();
        // Seal the old segment: unmap it and cut its zero tail.
        if let Some(writer) = app.writer.take() {
            writer.seal(active)?;
        }
        let seg = Arc::new(Segment::create(&self.dir, base, config)?);
        self.durability.rolls.fetch_add(1, Ordering::AcqRel);
        if config.flush == FlushPolicy::Always {
            // Acknowledged appends into the new segment must survive a power
            // loss: its directory entry first.
            self.durability.sync_dir_if_needed()?;
        }
        // A restart after this replays producer state from here on only.
        let snapshot = app.producers.encode_snapshot(base);
        app.writer = Some(SegmentWriter::new(&seg, config)?);
        let mut next: Vec<Arc<Segment>> = segs.as_ref().clone();
        next.push(seg);
        self.segments.store(Arc::new(next));
        // Recovery may start at the new segment once the old one is on disk.
        // Under `always` it already is; otherwise a background thread syncs it,
        // so the appender never waits for a whole segment's writeback.
        // The seal thread writes the snapshot, makes the new segment's
        // directory entry durable and, outside `always` (which already synced
        // every append), syncs the sealed segment before the recovery point
        // moves past it. None of it holds up appends.
        let always = config.flush == FlushPolicy::Always;
        if always {
            // Every append was synced, but not the abort entries written
            // after its sync: they must be on disk before the recovery
            // point trusts the segment's index.
            active.txn_index().sync()?;
            self.durability.advance(base)?;
        }
        let sealed = active.clone();
        let durability = self.durability.clone();
        let name = self.name.clone();
        let dir = self.dir.clone();
        app.syncing.retain(|h| !h.is_finished());
        let handle = std::thread::Builder::new()
            .name("sluice-seal-sync".into())
            .spawn(move || {
                if !always {
                    let synced = durability
                        .sync_dir_if_needed()
                        .and_then(|()| sealed.sync())
                        .and_then(|()| durability.advance(base));
                    if let Err(e) = synced {
                        tracing::error!(partition = %name, "syncing a sealed segment: {e}");
                    }
                }
                // After the recovery point: a crash between the two leaves
                // the previous snapshot, below the recovery point, and a
                // recovery replays one more segment. The other order would
                // leave a snapshot past the segments recovery rescans, whose
                // transaction indexes are rebuilt from the producer state
                // at their start: a replay of the whole log.
                if let Err(e) = write_snapshot_bytes(&dir, &snapshot) {
                    tracing::warn!(partition = %name, "writing the producer snapshot: {e}");
                }
            })?;
        app.syncing.push(handle);
        tracing::debug!(partition = %self.name, base, "rolled a new segment");
        Ok(())
    }

    /// Forces everything appended so far to disk.
    pub fn flush(&self) -> io::Result<()> {
        let mut app = self.lock();
        let end = self.log_end();
        if self.durable_end() >= end {
            return Ok(());
        }
        let segs = self.segments.load();
        self.durability.sync_dir_if_needed()?;
        if let (Some(writer), Some(active)) = (app.writer.as_ref(), segs.last()) {
            writer.sync(active)?;
        }
        self.durability.durable_end.store(end, Ordering::Release);
        app.last_flush_ms = now_ms();
        Ok(())
    }

    /// Flushes if the interval policy says one is due.
    pub fn flush_if_due(&self) -> io::Result<()> {
        if let FlushPolicy::Interval(every) = self.config.load().flush {
            let due = {
                let app = self.lock();
                now_ms() - app.last_flush_ms >= every.as_millis() as i64
            };
            if due {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Reads from `offset`: the batch holding it, and whole batches after it
    /// up to `max_bytes` (the first batch is returned whole even if larger;
    /// a trailing batch may be cut, which consumers ignore), never past the
    /// committed end, within one segment.
    pub fn read(&self, offset: i64, max_bytes: u64) -> Result<ReadResult, ReadError> {
        self.read_with(offset, max_bytes, false, None)
    }

    /// As [`read`](Self::read), touching only pages already in the page cache:
    /// where a batch header it needs is not cached, an `Io` error of kind
    /// `WouldBlock` instead of a wait for the disk (the caller then reads on a
    /// thread that may block). Index pages are memory-mapped and assumed hot.
    pub fn read_cached(&self, offset: i64, max_bytes: u64) -> Result<ReadResult, ReadError> {
        self.read_with(offset, max_bytes, true, None)
    }

    /// As [`read`](Self::read) (or, with `cached_only`,
    /// [`read_cached`](Self::read_cached)), but never returning any part of
    /// a batch holding an offset at or past `upto` (the high watermark, for
    /// consumers): the region ends before the first such batch, and is
    /// empty when the batch holding `offset` is one. An `offset` in
    /// `[upto, log_end]` is valid and reads nothing; past the log end it is
    /// `OffsetOutOfRange` as for `read`. The result's `high_watermark` is
    /// `upto` (at most the log end).
    pub fn read_upto(
        &self,
        offset: i64,
        max_bytes: u64,
        upto: i64,
        cached_only: bool,
    ) -> Result<ReadResult, ReadError> {
        self.read_with(offset, max_bytes, cached_only, Some(upto))
    }

    fn read_with(
        &self,
        offset: i64,
        max_bytes: u64,
        nowait: bool,
        upto: Option<i64>,
    ) -> Result<ReadResult, ReadError> {
        let log_end = self.log_end();
        let log_start = self.log_start();
        // The end reported is loaded again after the segment size that bounds
        // the region: the appender publishes the end before the size, so every
        // byte under a size already seen belongs to offsets below this end.
        let result = |slice| {
            let log_end = self.log_end();
            ReadResult {
                slice,
                log_start,
                log_end,
                high_watermark: upto.map_or_else(|| self.high_watermark(), |u| u.min(log_end)),
            }
        };
        if offset < log_start || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        if offset == log_end || upto.is_some_and(|u| offset >= u) {
            return Ok(result(None));
        }
        let segs = self.segments.load_full();
        let first = segs
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for seg in &segs[first..] {
            let size = seg.size();
            let found = seg
                .find_batch_with(offset, size, nowait)
                .map_err(|source| ReadError::Io {
                    partition: self.name.clone(),
                    source,
                })?;
            let Some((position, header)) = found else {
                continue;
            };
            let first_len = header.total_len().unwrap_or(0) as u64;
            let mut len = (size - position).min(max_bytes.max(first_len));
            if let Some(upto) = upto {
                if header.last_offset() >= upto {
                    return Ok(result(None));
                }
                // The region stops before the first batch reaching `upto`.
                if seg.next_offset() > upto {
                    let bound = seg.find_batch_with(upto, size, nowait).map_err(|source| {
                        ReadError::Io {
                            partition: self.name.clone(),
                            source,
                        }
                    })?;
                    if let Some((bound, _)) = bound {
                        len = len.min(bound.saturating_sub(position));
                    }
                }
            }
            return Ok(result(Some(FileSlice {
                segment: seg.clone(),
                position,
                len,
                first_offset: header.base_offset,
            })));
        }
        Ok(result(None))
    }

    /// The first offset whose record has a timestamp ≥ `timestamp`, and
    /// that record's timestamp (ListOffsets by time). Uncompressed batches
    /// resolve to the record; a compressed one to its first offset and base
    /// timestamp (records are not decompressed here; the broker does that
    /// with [`Partition::batch_for_timestamp`]).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        let Some(bytes) = self.batch_for_timestamp(timestamp)? else {
            return Ok(None);
        };
        let h = BatchHeader::parse(&bytes).map_err(|e| ReadError::Io {
            partition: self.name.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        let (delta, found_ts) =
            batch::first_record_at_or_after(&bytes, timestamp).unwrap_or((0, h.base_timestamp));
        Ok(Some((
            (h.base_offset + delta).max(self.log_start()),
            found_ts,
        )))
    }

    /// The whole first batch at or after the log start holding a record
    /// with a timestamp ≥ `timestamp` (its maxTimestamp is ≥ it).
    pub fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<Vec<u8>>, ReadError> {
        self.batch_for_timestamp_from(timestamp, self.log_start())
    }

    /// The whole first batch holding the largest timestamp in the log
    /// (ListOffsets −3, KIP-734); None for an empty log.
    pub fn batch_with_max_timestamp(&self) -> Result<Option<Vec<u8>>, ReadError> {
        let segs = self.segments.load_full();
        // The first segment holding the largest timestamp (ties: the oldest).
        let Some(seg) = segs
            .iter()
            .filter(|s| s.max_timestamp() >= 0 && s.size() > 0)
            .reduce(|best, s| {
                if s.max_timestamp() > best.max_timestamp() {
                    s
                } else {
                    best
                }
            })
        else {
            return Ok(None);
        };
        let (size, max) = (seg.size(), seg.max_timestamp());
        let mut pos = 0u64;
        while let Some(h) = seg.header_at(pos, size).map_err(|e| self.read_error(e))? {
            let Some(len) = h.total_len() else { break };
            if h.max_timestamp >= max {
                return self.read_batch(seg, pos, &h).map(Some);
            }
            pos += len as u64;
        }
        Ok(None)
    }

    fn read_batch(&self, seg: &Segment, pos: u64, h: &BatchHeader) -> Result<Vec<u8>, ReadError> {
        let len = h.total_len().unwrap_or(batch::HEADER_LEN);
        let mut bytes = vec![0u8; len];
        seg.file()
            .read_exact_at(&mut bytes, pos)
            .map_err(|source| self.read_error(source))?;
        Ok(bytes)
    }

    fn read_error(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            partition: self.name.clone(),
            source,
        }
    }

    /// Deletes the oldest whole segments beyond the retention limits (never
    /// the active one). Returns how many went.
    pub fn apply_retention(&self) -> io::Result<usize> {
        let config = self.config.load_full();
        // Only `delete` removes data by size or age: a compacted log keeps
        // every key's latest record however old. Segments wholly below the
        // log start go under any policy, as Kafka deletes them.
        let by_retention = config.cleanup_policy.delete;
        let _app = self.lock();
        let segs = self.segments.load_full();
        let now = now_ms();
        let mut total: u64 = segs.iter().map(|s| s.size()).sum();
        let mut drop_count = 0;
        // DeleteRecords may have moved the log start past whole segments.
        let log_start = self.log_start();
        for (i, seg) in segs.iter().enumerate().take(segs.len().saturating_sub(1)) {
            let below_start = segs[i + 1].base_offset() <= log_start;
            let over_size =
                by_retention && config.retention_bytes.is_some_and(|limit| total > limit);
            let newest = if seg.max_timestamp() >= 0 {
                seg.max_timestamp()
            } else {
                seg.created_ms()
            };
            let too_old = by_retention
                && config
                    .retention_age
                    .is_some_and(|age| now - newest > age.as_millis() as i64);
            if !(below_start || over_size || too_old) {
                break;
            }
            total -= seg.size();
            drop_count += 1;
        }
        if drop_count == 0 {
            return Ok(0);
        }
        let keep: Vec<Arc<Segment>> = segs[drop_count..].to_vec();
        let new_start = keep[0].base_offset();
        self.segments.store(Arc::new(keep));
        self.log_start.fetch_max(new_start, Ordering::AcqRel);
        for seg in &segs[..drop_count] {
            tracing::info!(
                partition = %self.name,
                base = seg.base_offset(),
                "retention: deleting segment"
            );
            seg.delete()?;
        }
        Ok(drop_count)
    }

    /// Clean shutdown: flush, seal the active segment (no zero tail), trim the
    /// indexes, and record that recovery can start at the active segment.
    pub fn close(&self) -> io::Result<()> {
        // A cleaner pass stops (undoing its unfinished segment) first.
        self.cleaner.abort_and_wait();
        let mut app = self.lock();
        for handle in app.syncing.drain(..) {
            let _ = handle.join();
        }
        let segs = self.segments.load();
        if let Some(active) = segs.last() {
            if let Some(writer) = app.writer.take() {
                writer.seal(active)?;
            }
            for seg in segs.iter() {
                seg.trim()?;
            }
            write_producer_snapshot(&self.dir, &app.producers, self.log_end())?;
            self.durability.advance(active.base_offset())?;
        }
        app.failed = true;
        self.durability
            .durable_end
            .store(self.log_end(), Ordering::Release);
        Ok(())
    }
}

/// A partition no one holds any more writes nothing after it is gone: its
/// seal threads (segment sync, recovery point, producer snapshot) finish
/// first. Otherwise a late one could write the recovery point or snapshot
/// of a dropped partition into a directory that by then holds another
/// (a topic deleted and created again under the same name, or a test
/// reopening a "crashed" one), which would trust segments it never
/// checked.
impl Drop for Partition {
    fn drop(&mut self) {
        let app = self.appender.get_mut().unwrap_or_else(|e| e.into_inner());
        for handle in app.syncing.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Producer state for a partition being opened: the snapshot, if there is an
/// intact one the log still reaches, plus the batches appended after it; else
/// every batch header in the log (and every marker's record).
///
/// With `rebuild_from`, the transaction indexes of the segments from that
/// base on were emptied (recovery scanned them, or one was damaged) and are
/// filled again by the replay, which then must start at or before it: a
/// snapshot past it is not used.
pub(super) fn load_producer_state(
    dir: &Path,
    name: &str,
    segments: &[Arc<Segment>],
    rebuild_from: Option<i64>,
) -> io::Result<ProducerTable> {
    let log_end = segments.last().map_or(0, |s| s.next_offset());
    let rebuild_from = rebuild_from.unwrap_or(i64::MAX);
    let path = dir.join(PRODUCER_SNAPSHOT);
    let snapshot = match std::fs::read(&path) {
        Ok(bytes) => match ProducerTable::decode_snapshot(&bytes) {
            Some((covers_end, table)) if covers_end <= log_end && covers_end <= rebuild_from => {
                Some((covers_end, table))
            }
            found => {
                // Damaged, from a log that recovery has since cut shorter,
                // or past the transaction indexes to rebuild.
                tracing::warn!(
                    partition = %name,
                    covers_end = found.map(|(end, _)| end),
                    log_end,
                    rebuild_from,
                    "ignoring the producer snapshot; rebuilding producer state from the log"
                );
                std::fs::remove_file(&path)?;
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (from, mut table) = snapshot.unwrap_or((i64::MIN, ProducerTable::default()));
    for seg in segments {
        if seg.next_offset() <= from {
            continue;
        }
        let size = seg.size();
        let mut next = if from > seg.base_offset() {
            seg.find_batch(from, size)?.map(|(pos, _)| pos)
        } else {
            Some(0)
        };
        while let Some(pos) = next {
            let Some(h) = seg.header_at(pos, size)? else {
                break;
            };
            let Some(len) = h.total_len() else { break };
            if h.base_offset >= from {
                let marker = if h.is_control() {
                    read_marker(seg, pos, &h, name)?
                } else {
                    None
                };
                if let Some(entry) = table
                    .apply(&h, marker)
                    .as_ref()
                    .and_then(CompletedTxn::aborted_entry)
                    && h.base_offset >= rebuild_from
                {
                    seg.txn_index().append(entry)?;
                }
            }
            next = Some(pos + len as u64);
        }
    }
    Ok(table)
}

/// The marker of the control batch at `pos` (None for an emptied one, or
/// one that does not read as a marker: logged, and skipped as Kafka skips
/// an empty one).
fn read_marker(
    seg: &Segment,
    pos: u64,
    h: &BatchHeader,
    name: &str,
) -> io::Result<Option<TxnMarker>> {
    let len = h.total_len().unwrap_or(batch::HEADER_LEN);
    // A marker is 78 bytes; anything far larger is not one.
    if len > 64 << 10 {
        tracing::warn!(partition = %name, offset = h.base_offset, len, "oversized control batch");
        return Ok(None);
    }
    let mut bytes = vec![0u8; len];
    seg.file().read_exact_at(&mut bytes, pos)?;
    match batch::parse_marker(&bytes, h) {
        Ok(m) => Ok(m),
        Err(e) => {
            tracing::warn!(partition = %name, offset = h.base_offset, "control batch: {e}");
            Ok(None)
        }
    }
}

/// Which transaction indexes a partition being opened must rebuild: those
/// of the segments recovery scanned (from `first_scanned` on: their
/// entries may be lost or past a cut), and of any trusted segment whose
/// index is damaged or does not fit it, with every later one. They are
/// emptied here; the producer-state replay fills them again. Returns the
/// base to rebuild from.
fn txn_indexes_to_rebuild(
    name: &str,
    segments: &[Arc<Segment>],
    first_scanned: Option<i64>,
) -> io::Result<Option<i64>> {
    let mut from = None;
    for seg in segments {
        let base = seg.base_offset();
        if from.is_none() {
            let scanned = first_scanned.is_some_and(|f| base >= f);
            if !scanned && seg.txn_index().is_sane(base, seg.next_offset()) {
                continue;
            }
            if !scanned {
                tracing::warn!(
                    partition = %name,
                    base,
                    "transaction index damaged; rebuilding it and those after it from the log"
                );
            }
            from = Some(base);
        }
        seg.txn_index().reset()?;
    }
    Ok(from)
}

/// Writes the producer snapshot atomically (temp file, rename). Not synced: a
/// snapshot lost or torn by a power failure fails its CRC and the state is
/// rebuilt from the log.
fn write_producer_snapshot(dir: &Path, table: &ProducerTable, covers_end: i64) -> io::Result<()> {
    write_snapshot_bytes(dir, &table.encode_snapshot(covers_end))
}

fn write_snapshot_bytes(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    // Seal threads of quick successive rolls may write at once: distinct
    // temp files, and whichever rename lands last leaves a valid snapshot.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{PRODUCER_SNAPSHOT}.{}.{seq}.tmp",
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(PRODUCER_SNAPSHOT))
}

/// Refuses a CreateTime batch whose timestamps lie further from `now` than
/// the topic allows. The batch's first and largest timestamps are checked
/// (its records lie between them unless the producer sent them out of
/// order).
fn check_timestamps(h: &BatchHeader, now: i64, config: &LogConfig) -> Result<(), AppendError> {
    if let Some(before) = config.timestamp_before_max {
        let floor = now.saturating_sub(before.as_millis() as i64);
        if h.base_timestamp < floor {
            return Err(AppendError::InvalidTimestamp {
                timestamp: h.base_timestamp,
                why: format!(
                    "more than message.timestamp.before.max.ms ({} ms) before the broker's clock",
                    before.as_millis()
                ),
            });
        }
    }
    if let Some(after) = config.timestamp_after_max {
        let ceiling = now.saturating_add(after.as_millis() as i64);
        if h.max_timestamp > ceiling {
            return Err(AppendError::InvalidTimestamp {
                timestamp: h.max_timestamp,
                why: format!(
                    "more than message.timestamp.after.max.ms ({} ms) after the broker's clock",
                    after.as_millis()
                ),
            });
        }
    }
    Ok(())
}

fn read_recovery_point(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(RECOVERY_POINT))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the recovery point atomically: temp file, fsync, rename, fsync dir.
/// Any recovery point written is safe (every segment before it was synced),
/// so concurrent writers (a background seal sync racing a reopen) only need
/// distinct temp files.
fn write_recovery_point(dir: &Path, base: i64) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{RECOVERY_POINT}.{}.{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{base}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(RECOVERY_POINT))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
