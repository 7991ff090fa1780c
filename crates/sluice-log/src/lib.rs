//! # sluice-log: topics, partitions and segments in Kafka's on-disk layout
//!
//! The layer above `sluice-io`. A data directory holds one directory per
//! partition, `<topic>-<partition>/`, of segments named by their 20-digit base
//! offset: `.log` (RecordBatch v2 bytes exactly as produced, offsets assigned
//! in place), `.index` (sparse offset index) and `.timeindex`.
//!
//! - Appends ([`Partition::append`]) validate every batch (header, lengths,
//!   CRC-32C) before touching the log, then write through a pre-allocated
//!   mapping (RocketMQ's MappedFile) or `pwrite`, by configuration.
//! - Reads ([`Partition::read`]) return file regions, never bytes, for the io
//!   layer to send with `sendfile`.
//! - Recovery after a crash scans from the recovery point with CRC checks and
//!   truncates at the first bad batch; a clean shutdown skips the scan.
//! - Topic configs ([`topic_config`]): Kafka's topic settings, checked,
//!   stored with the topic and put in force live.
//! - Retention by age and size, DeleteRecords' log start offset, and log
//!   compaction ([`Log::start_cleaner`], after Kafka's LogCleaner) for topics
//!   whose `cleanup.policy` includes `compact`.
//!
//! - Transactions (KIP-98): transactional batches open and join their
//!   producer's transaction, markers ([`Partition::append_control`]) end
//!   it; [`Partition::last_stable_offset`] bounds read_committed fetches,
//!   and each segment's `.txnindex` (Kafka's) lists the aborted
//!   transactions [`Partition::aborted_transactions`] returns.
//!
//! It knows the RecordBatch header but not the Kafka wire protocol.
//!
//! Every file this crate writes (segments, indexes, `.txnindex`, `recovery-point`,
//! `producer.snapshot`, `.clean-shutdown`, the log cleaner's checkpoint and
//! `.cleaned`/`.swap`/`.deleted` segments) is laid out byte by byte, with how
//! recovery treats a torn or corrupt one, in `docs/FORMAT.md`. Compacted
//! topics are cleaned by [`cleaner`].

pub mod batch;
pub mod cleaner;
mod config;
pub mod epoch;
pub mod hw_checkpoint;
pub mod index;
mod partition;
pub mod producer;
pub mod segment;
pub mod topic_config;
pub mod txn_index;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use batch::BatchError;
pub use cleaner::{CleanStats, Cleanable, Cleaner, CleanerConfig, CleanerStatus, CleanerTotals};
pub use config::{AppendPath, CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use epoch::LeaderEpochCache;
pub use partition::{AppendError, AppendInfo, FileSlice, Partition, ReadError, ReadResult};
pub use segment::{Segment, now_ms};
pub use topic_config::TopicOverrides;
pub use txn_index::AbortedTxn;

/// Marker file a clean shutdown leaves in the data directory.
const CLEAN_SHUTDOWN: &str = ".clean-shutdown";

/// Errors of topic administration.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("topic {0:?} already exists")]
    Exists(String),
    #[error("topic {0:?} does not exist")]
    NotFound(String),
    #[error("partition count must be at least 1")]
    InvalidPartitions,
    #[error("I/O error on topic {topic:?}: {source}")]
    Io { topic: String, source: io::Error },
    /// A config override Kafka does not define, or a value it refuses.
    #[error(transparent)]
    InvalidConfig(#[from] topic_config::ConfigError),
}

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |why| Err(TopicError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// All topics of one data directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// The settings topics inherit where they have no override (the
    /// broker's; dynamic broker configs change them at run time).
    defaults: RwLock<LogConfig>,
    topics: RwLock<BTreeMap<String, Vec<Arc<Partition>>>>,
    /// Each topic's config overrides (topics without any are absent).
    overrides: RwLock<BTreeMap<String, TopicOverrides>>,
    /// Held while topics are created or grown: their files are made on disk
    /// under it, and the topic map's lock is taken only to publish them, so
    /// lookups (every produce and fetch) never wait for a disk.
    changing: std::sync::Mutex<()>,
    /// Whether the previous run shut down cleanly.
    recovered_clean: bool,
    /// The log cleaner's shared throttle and totals (`cleaner`).
    cleaner: cleaner::LogCleaner,
    /// One `replication-offset-checkpoint` write at a time, so the last
    /// one started is the one left.
    hw_checkpoint: Mutex<()>,
}

impl Log {
    /// Opens the data directory, recovering every partition in it.
    pub fn open(dir: &Path, config: LogConfig) -> io::Result<Log> {
        std::fs::create_dir_all(dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        if clean {
            // From here on a crash must be recovered from: the marker goes.
            std::fs::remove_file(&marker)?;
            partition::sync_dir(dir)?;
        } else {
            tracing::info!(dir = %dir.display(), "no clean-shutdown marker: recovering partitions");
        }
        let mut found: BTreeMap<String, BTreeMap<u32, PathBuf>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                if hw_checkpoint::is_temp_file(&entry.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((topic, p)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(p) = p.parse::<u32>() else { continue };
            if validate_topic_name(topic).is_err() {
                continue;
            }
            found
                .entry(topic.to_string())
                .or_default()
                .insert(p, entry.path());
        }
        // Overrides first: a partition opens with its topic's settings.
        let mut overrides = topic_config::load_all(dir)?;
        overrides.retain(|topic, _| {
            let live = found.contains_key(topic);
            if !live {
                // A topic created or deleted across a crash: its overrides
                // outlived (or preceded) its partitions.
                let _ = topic_config::remove(dir, topic);
            }
            live
        });
        let mut topics = BTreeMap::new();
        for (topic, parts) in found {
            let topic_config = match overrides.get(&topic) {
                Some(o) => topic_config::resolve(&config, o).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("topic {topic:?}: stored config refused: {e}"),
                    )
                })?,
                None => config.clone(),
            };
            // Partitions are numbered 0..n; a gap means a half-created topic.
            if parts.keys().copied().ne(0..parts.len() as u32) {
                tracing::warn!(%topic, "partition directories are not 0..n; skipping topic");
                continue;
            }
            let mut list = Vec::with_capacity(parts.len());
            for path in parts.values() {
                list.push(Arc::new(Partition::open(
                    path,
                    topic_config.clone(),
                    clean,
                )?));
            }
            topics.insert(topic, list);
        }
        // Replicated partitions' high watermarks, at most their log ends
        // (a crash may have taken back what they covered).
        for e in hw_checkpoint::read(dir)?.unwrap_or_default() {
            if let Some(p) = topics
                .get(&e.topic)
                .and_then(|ps| ps.get(e.partition as usize))
            {
                p.set_high_watermark(e.high_watermark.min(p.log_end()));
            }
        }
        Ok(Log {
            dir: dir.to_path_buf(),
            defaults: RwLock::new(config),
            topics: RwLock::new(topics),
            overrides: RwLock::new(overrides),
            changing: std::sync::Mutex::new(()),
            recovered_clean: clean,
            cleaner: Default::default(),
            hw_checkpoint: Mutex::new(()),
        })
    }

    /// Writes `replication-offset-checkpoint` (Kafka's high watermark
    /// checkpoint, `hw_checkpoint`): the high watermark of every partition
    /// whose high watermark is managed
    /// ([`Partition::is_high_watermark_managed`]), atomically and durably.
    /// The next [`Log::open`] gives each of them back its high watermark
    /// (at most its log end). Kafka writes it every
    /// `replica.high.watermark.checkpoint.interval.ms` (5 s) and at shutdown.
    pub fn write_hw_checkpoint(&self) -> io::Result<()> {
        let _one = self.hw_checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = Vec::new();
        for (topic, parts) in self.read_topics().iter() {
            for (i, p) in parts.iter().enumerate() {
                if p.is_high_watermark_managed() {
                    entries.push(hw_checkpoint::HwEntry {
                        topic: topic.clone(),
                        partition: i as u32,
                        high_watermark: p.high_watermark(),
                    });
                }
            }
        }
        hw_checkpoint::write(&self.dir, &entries)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings topics inherit where they have no override.
    pub fn config(&self) -> LogConfig {
        self.defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the inherited settings (Kafka's dynamic broker configs): every
    /// topic runs with `defaults` and its own overrides from its next append,
    /// roll, flush and retention pass.
    pub fn set_defaults(&self, defaults: LogConfig) -> Result<(), TopicError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut resolved = Vec::new();
        for (topic, partitions) in self.read_topics().iter() {
            let config = match self.read_overrides().get(topic) {
                Some(o) => topic_config::resolve(&defaults, o)?,
                None => defaults.clone(),
            };
            resolved.push((partitions.clone(), config));
        }
        *self.defaults.write().unwrap_or_else(|e| e.into_inner()) = defaults;
        for (partitions, config) in resolved {
            for p in partitions {
                p.set_config(config.clone());
            }
        }
        Ok(())
    }

    /// True when the previous run left a clean-shutdown marker.
    pub fn recovered_clean(&self) -> bool {
        self.recovered_clean
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Vec<Arc<Partition>>>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_topics(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Vec<Arc<Partition>>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a topic with `partitions` partitions and the broker's settings.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), TopicError> {
        self.create_topic_with(name, partitions, &TopicOverrides::new())
    }

    /// Creates a topic with `partitions` partitions and config `overrides`
    /// (checked first: nothing is made if one is refused). The overrides are
    /// on disk before any partition is.
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        overrides: &TopicOverrides,
    ) -> Result<(), TopicError> {
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(TopicError::InvalidPartitions);
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let config = topic_config::resolve(&self.config(), overrides)?;
        if self.read_topics().contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let io = |source| TopicError::Io {
            topic: name.to_string(),
            source,
        };
        topic_config::store(&self.dir, name, overrides).map_err(io)?;
        let mut list = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let dir = self.dir.join(format!("{name}-{p}"));
            list.push(Arc::new(
                Partition::open(&dir, config.clone(), false).map_err(io)?,
            ));
        }
        partition::sync_dir(&self.dir).map_err(io)?;
        if !overrides.is_empty() {
            self.write_overrides()
                .insert(name.to_string(), overrides.clone());
        }
        self.write_topics().insert(name.to_string(), list);
        Ok(())
    }

    /// A topic's config overrides (empty: it runs with the broker's settings);
    /// None if there is no such topic.
    pub fn topic_overrides(&self, name: &str) -> Option<TopicOverrides> {
        self.partition_count(name)?;
        Some(self.read_overrides().get(name).cloned().unwrap_or_default())
    }

    /// Replaces a topic's overrides with `overrides`, checked first, stored
    /// durably, then put in force on every partition at once (retention,
    /// rolls, appends and flushes use them from their next run).
    pub fn alter_topic_config(
        &self,
        name: &str,
        overrides: &TopicOverrides,
    ) -> Result<(), TopicError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let config = topic_config::resolve(&self.config(), overrides)?;
        let partitions = self
            .read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        topic_config::store(&self.dir, name, overrides).map_err(|source| TopicError::Io {
            topic: name.to_string(),
            source,
        })?;
        {
            let mut all = self.write_overrides();
            if overrides.is_empty() {
                all.remove(name);
            } else {
                all.insert(name.to_string(), overrides.clone());
            }
        }
        for p in partitions {
            p.set_config(config.clone());
        }
        Ok(())
    }

    /// The settings a topic runs with (the broker's, with its overrides).
    fn topic_log_config(&self, name: &str) -> Result<LogConfig, TopicError> {
        match self.read_overrides().get(name) {
            Some(o) => Ok(topic_config::resolve(&self.config(), o)?),
            None => Ok(self.config()),
        }
    }

    fn read_overrides(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TopicOverrides>> {
        self.overrides.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_overrides(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, TopicOverrides>> {
        self.overrides.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks one).
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<(), TopicError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let have = self
            .partition_count(name)
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        if count <= have {
            return Err(TopicError::InvalidPartitions);
        }
        let io = |source| TopicError::Io {
            topic: name.to_string(),
            source,
        };
        let config = self.topic_log_config(name)?;
        let mut added = Vec::with_capacity((count - have) as usize);
        for p in have..count {
            let dir = self.dir.join(format!("{name}-{p}"));
            added.push(Arc::new(
                Partition::open(&dir, config.clone(), false).map_err(io)?,
            ));
        }
        partition::sync_dir(&self.dir).map_err(io)?;
        match self.write_topics().get_mut(name) {
            Some(list) => list.extend(added),
            // Deleted meanwhile: the new partitions go with it.
            None => return Err(TopicError::NotFound(name.to_string())),
        }
        Ok(())
    }

    /// How many partitions a topic has, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.read_topics().get(topic).map(|ps| ps.len() as u32)
    }

    /// Deletes a topic and its files. Readers holding its segments keep
    /// reading until they let go.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let list = self
            .write_topics()
            .remove(name)
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        for p in list {
            let _ = p.close();
            std::fs::remove_dir_all(p.dir()).map_err(|source| TopicError::Io {
                topic: name.to_string(),
                source,
            })?;
        }
        let io = |source| TopicError::Io {
            topic: name.to_string(),
            source,
        };
        partition::sync_dir(&self.dir).map_err(io)?;
        // After the partitions: a crash between leaves overrides without a
        // topic, which the next open removes.
        self.write_overrides().remove(name);
        topic_config::remove(&self.dir, name).map_err(io)
    }

    /// A partition, if the topic and partition exist.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<Arc<Partition>> {
        self.read_topics()
            .get(topic)
            .and_then(|ps| ps.get(partition as usize).cloned())
    }

    /// Every topic with its partition count.
    pub fn topics(&self) -> Vec<(String, u32)> {
        self.read_topics()
            .iter()
            .map(|(t, ps)| (t.clone(), ps.len() as u32))
            .collect()
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read_topics().values().flatten().cloned().collect()
    }

    /// Flushes the partitions whose interval flush is due.
    pub fn flush_due(&self) -> io::Result<()> {
        for p in self.all_partitions() {
            p.flush_if_due()?;
        }
        Ok(())
    }

    /// Applies retention to every partition; returns segments deleted.
    pub fn apply_retention(&self) -> io::Result<usize> {
        let mut n = 0;
        for p in self.all_partitions() {
            n += p.apply_retention()?;
        }
        Ok(n)
    }

    /// Clean shutdown: closes every partition, then leaves the marker.
    pub fn close(&self) -> io::Result<()> {
        for p in self.all_partitions() {
            p.close()?;
        }
        let marker = self.dir.join(CLEAN_SHUTDOWN);
        std::fs::write(&marker, b"")?;
        std::fs::File::open(&marker)?.sync_all()?;
        partition::sync_dir(&self.dir)
    }
}

/// Background upkeep of a [`Log`]: interval flushes and retention. Stops (and
/// joins its thread) when dropped.
#[derive(Debug)]
pub struct Upkeep {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// Starts the upkeep thread: flushes due under `FlushPolicy::Interval`,
    /// retention every `retention_check`.
    pub fn start_upkeep(self: &Arc<Self>, retention_check: Duration) -> io::Result<Upkeep> {
        // At least once a second, so a topic's own flush.ms is kept to
        // within a second whatever the broker's policy.
        let tick = match self.config().flush {
            FlushPolicy::Interval(every) => every.min(retention_check),
            _ => retention_check.min(Duration::from_secs(1)),
        }
        .max(Duration::from_millis(1));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (log, flag) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("sluice-log-upkeep".into())
            .spawn(move || {
                let mut next_retention = Instant::now() + retention_check;
                let (lock, cvar) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, _) = cvar
                        .wait_timeout(stopped, tick)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if let Err(e) = log.flush_due() {
                        tracing::error!("interval flush failed: {e}");
                    }
                    if Instant::now() >= next_retention {
                        next_retention = Instant::now() + retention_check;
                        if let Err(e) = log.apply_retention() {
                            tracing::error!("retention failed: {e}");
                        }
                    }
                }
            })?;
        Ok(Upkeep {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
