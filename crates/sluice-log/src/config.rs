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
        }
    }
}

impl LogConfig {
    /// Index capacity (entries) for a segment: at most one entry per interval.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_bytes / self.index_interval_bytes.max(1)) as usize + 2
    }
}
