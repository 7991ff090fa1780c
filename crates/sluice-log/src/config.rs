//! Log settings, with Kafka's names and defaults where Kafka has them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When appended bytes are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `fdatasync` before an append is acknowledged: acknowledged means durable.
    Always,
    /// A background flush every interval; an append is durable once a flush
    /// has covered it (see `Partition::durable_end`).
    Interval(Duration),
    /// Left to the OS's writeback; segments are still synced when they roll.
    Os,
}

impl FromStr for FlushPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            ms => ms
                .trim_end_matches("ms")
                .parse::<u64>()
                .map(|ms| FlushPolicy::Interval(Duration::from_millis(ms.max(1))))
                .map_err(|_| format!("flush policy {s:?}: expected always, os or milliseconds")),
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Os => f.write_str("os"),
            FlushPolicy::Interval(d) => write!(f, "{}", d.as_millis()),
        }
    }
}

/// How batches get into the active segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendPath {
    /// RocketMQ's MappedFile: a pre-allocated segment, mapped; one memcpy per batch.
    Mmap,
    /// `pwrite(2)` at the segment's end.
    Pwrite,
}

impl FromStr for AppendPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmap" => Ok(AppendPath::Mmap),
            "pwrite" => Ok(AppendPath::Pwrite),
            _ => Err(format!("append path {s:?}: expected mmap or pwrite")),
        }
    }
}

impl fmt::Display for AppendPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppendPath::Mmap => "mmap",
            AppendPath::Pwrite => "pwrite",
        })
    }
}

/// `cleanup.policy`: what happens to old segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: segments past `retention.ms` / `retention.bytes` go.
    pub delete: bool,
    /// `compact`: the log keeps at least the latest record of every key.
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
}

impl FromStr for CleanupPolicy {
    type Err = String;
    /// Kafka's list: `delete`, `compact`, `compact,delete` (any order); an
    /// empty list is neither (Kafka 4.x: infinite retention, no cleaning).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                other => return Err(format!("{other:?} is not delete or compact")),
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            (false, true) => "delete",
            (false, false) => "",
        })
    }
}

/// `message.timestamp.type`: whose clock a batch's timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps, kept as sent (within the before/after bounds).
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

impl FromStr for TimestampType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "CreateTime" => Ok(TimestampType::CreateTime),
            "LogAppendTime" => Ok(TimestampType::LogAppendTime),
            _ => Err(format!("{s:?} is not CreateTime or LogAppendTime")),
        }
    }
}

impl fmt::Display for TimestampType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        })
    }
}

/// Per-log settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would pass this (max 2 GiB:
    /// index positions are u32).
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty segment older than this.
    pub segment_age: Option<Duration>,
    /// `retention.bytes` per partition: delete oldest segments beyond it.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: delete segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// `index.interval.bytes`: an index entry per this many bytes appended.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest record batch an append takes (each
    /// batch on its own, as Kafka checks it; several batches in one request
    /// may add up to more).
    pub max_batch_bytes: u64,
    pub flush: FlushPolicy,
    pub append_path: AppendPath,
    /// `cleanup.policy`. Without `delete`, retention never removes a segment.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long a compacted log keeps tombstones.
    pub delete_retention: Duration,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag: Duration,
    /// `max.compaction.lag.ms`: a record older than this is compacted even
    /// below the dirty ratio (None: no limit).
    pub max_compaction_lag: Option<Duration>,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: a CreateTime batch older than now
    /// minus this is refused (None: no limit).
    pub timestamp_before_max: Option<Duration>,
    /// `message.timestamp.after.max.ms`: a CreateTime batch further than this
    /// in the future is refused (None: no limit).
    pub timestamp_after_max: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            // Kafka's default: 1 MiB plus the 12-byte log overhead.
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::Os,
            append_path: AppendPath::Pwrite,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention: Duration::from_secs(24 * 3600),
            min_compaction_lag: Duration::ZERO,
            max_compaction_lag: None,
            min_cleanable_dirty_ratio: 0.5,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max: None,
            // Kafka 4's default: an hour into the future at most.
            timestamp_after_max: Some(Duration::from_secs(3600)),
        }
    }
}

impl LogConfig {
    /// Index capacity (entries) for a segment: at most one entry per interval.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_bytes / self.index_interval_bytes.max(1)) as usize + 2
    }
}
