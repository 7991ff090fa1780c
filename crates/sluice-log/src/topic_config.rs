//! Topic configs: the settings a topic may override, by Kafka's names, with
//! Kafka's types, defaults and broker synonyms; how an override is checked
//! and put into a [`LogConfig`]; and how a topic's overrides are stored.
//!
//! Kafka keeps a topic's overrides in its metadata (ZooKeeper, later the
//! KRaft log); Sluice keeps them beside the partitions, one Java-properties
//! file per topic in `<data-dir>/topic-configs/`, written before the topic's
//! partition directories exist and read before they are opened, so a topic
//! never runs, not even for a moment after a crash, with its broker's
//! defaults in place of its own settings (a compacted topic deleted by time
//! retention would lose data).
//!
//! Every name Kafka defines for a topic is accepted, so tools that set them
//! (Connect, Streams, schema registries) work; the ones Sluice does not act
//! on yet are stored and described, and their docs say so. A name Kafka does
//! not define, a value of the wrong type or out of range, or a setting Sluice
//! cannot honour (a recompressing `compression.type`, tiered storage) is
//! refused, naming the config.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{FlushPolicy, LogConfig};

/// A topic's overrides: Kafka name → value as given.
pub type TopicOverrides = BTreeMap<String, String>;

/// Where topic configs live inside a data directory.
pub const DIR: &str = "topic-configs";

/// Kafka's config types, with the codes DescribeConfigs v3+ reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// What Sluice does with a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Acted upon: changing it changes the log's behaviour.
    Applied,
    /// Accepted, stored and described; nothing acts on it yet.
    Stored,
}

/// One topic config.
#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The broker setting that gives its default (Kafka's synonym).
    pub broker_synonym: &'static str,
    pub effect: Effect,
    pub doc: &'static str,
    /// The default when the log layer has no field for it.
    default: &'static str,
}

macro_rules! def {
    ($name:literal, $kind:ident, $syn:literal, $effect:ident, $default:literal, $doc:literal) => {
        TopicConfigDef {
            name: $name,
            kind: ConfigType::$kind,
            broker_synonym: $syn,
            effect: Effect::$effect,
            default: $default,
            doc: $doc,
        }
    };
}

/// Every topic config Kafka defines, in Kafka's order of its docs.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def!(
        "cleanup.policy",
        List,
        "log.cleanup.policy",
        Applied,
        "",
        "delete: old segments go by retention.ms/retention.bytes; compact: the log keeps the latest record of every key (the cleaner that removes older ones is not built yet, so a compact-only topic keeps everything); compact,delete: both."
    ),
    def!(
        "compression.type",
        String,
        "compression.type",
        Applied,
        "producer",
        "producer: batches are stored as the producer compressed them. Recompressing to another codec on append is not implemented, so other values are refused."
    ),
    def!(
        "compression.gzip.level",
        Int,
        "compression.gzip.level",
        Stored,
        "-1",
        "Level for gzip recompression; stored (recompression is not implemented)."
    ),
    def!(
        "compression.lz4.level",
        Int,
        "compression.lz4.level",
        Stored,
        "9",
        "Level for lz4 recompression; stored (recompression is not implemented)."
    ),
    def!(
        "compression.zstd.level",
        Int,
        "compression.zstd.level",
        Stored,
        "3",
        "Level for zstd recompression; stored (recompression is not implemented)."
    ),
    def!(
        "delete.retention.ms",
        Long,
        "log.cleaner.delete.retention.ms",
        Applied,
        "",
        "How long a compacted log keeps a tombstone after cleaning it."
    ),
    def!(
        "file.delete.delay.ms",
        Long,
        "log.segment.delete.delay.ms",
        Stored,
        "60000",
        "Delay before a deleted segment's files go; Sluice removes them at once (readers holding a region keep it)."
    ),
    def!(
        "flush.messages",
        Long,
        "log.flush.interval.messages",
        Applied,
        "9223372036854775807",
        "1 syncs every append before it is acknowledged (as --flush always); other values are stored, flush.ms decides."
    ),
    def!(
        "flush.ms",
        Long,
        "log.flush.interval.ms",
        Applied,
        "",
        "Sync the log at least this often (a background flush; acks=-1 waits for one); 9223372036854775807 leaves it to the OS."
    ),
    def!(
        "follower.replication.throttled.replicas",
        List,
        "follower.replication.throttled.replicas",
        Stored,
        "",
        "Replicas to throttle on the follower side; stored (replication is not built yet)."
    ),
    def!(
        "index.interval.bytes",
        Int,
        "log.index.interval.bytes",
        Applied,
        "",
        "Bytes between offset-index entries."
    ),
    def!(
        "leader.replication.throttled.replicas",
        List,
        "leader.replication.throttled.replicas",
        Stored,
        "",
        "Replicas to throttle on the leader side; stored (replication is not built yet)."
    ),
    def!(
        "local.retention.bytes",
        Long,
        "log.local.retention.bytes",
        Stored,
        "-2",
        "Tiered storage: local retention; stored (tiered storage is not supported)."
    ),
    def!(
        "local.retention.ms",
        Long,
        "log.local.retention.ms",
        Stored,
        "-2",
        "Tiered storage: local retention; stored (tiered storage is not supported)."
    ),
    def!(
        "max.compaction.lag.ms",
        Long,
        "log.cleaner.max.compaction.lag.ms",
        Applied,
        "",
        "A record older than this is compacted even when the log is below min.cleanable.dirty.ratio."
    ),
    def!(
        "max.message.bytes",
        Int,
        "message.max.bytes",
        Applied,
        "",
        "The largest record batch a produce may append (each batch on its own)."
    ),
    def!(
        "message.timestamp.after.max.ms",
        Long,
        "log.message.timestamp.after.max.ms",
        Applied,
        "",
        "A CreateTime batch further than this after the broker's clock is refused with INVALID_TIMESTAMP."
    ),
    def!(
        "message.timestamp.before.max.ms",
        Long,
        "log.message.timestamp.before.max.ms",
        Applied,
        "",
        "A CreateTime batch further than this before the broker's clock is refused with INVALID_TIMESTAMP."
    ),
    def!(
        "message.timestamp.difference.max.ms",
        Long,
        "log.message.timestamp.difference.max.ms",
        Applied,
        "9223372036854775807",
        "Deprecated by Kafka: when set, bounds both directions unless the before/after settings are set too."
    ),
    def!(
        "message.timestamp.type",
        String,
        "log.message.timestamp.type",
        Applied,
        "",
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps every batch with the broker's clock."
    ),
    def!(
        "min.cleanable.dirty.ratio",
        Double,
        "log.cleaner.min.cleanable.ratio",
        Applied,
        "",
        "The share of the log not yet cleaned above which the cleaner cleans it."
    ),
    def!(
        "min.compaction.lag.ms",
        Long,
        "log.cleaner.min.compaction.lag.ms",
        Applied,
        "",
        "Records younger than this stay uncompacted."
    ),
    def!(
        "min.insync.replicas",
        Int,
        "min.insync.replicas",
        Stored,
        "1",
        "Replicas that must have a record before acks=all succeeds; stored (one broker holds every replica until replication is built)."
    ),
    def!(
        "preallocate",
        Boolean,
        "log.preallocate",
        Stored,
        "false",
        "Kafka's preallocation flag; Sluice preallocates mapped segments (--append mmap) whatever it says."
    ),
    def!(
        "remote.storage.enable",
        Boolean,
        "remote.log.storage.system.enable",
        Applied,
        "false",
        "Tiered storage; not supported, so only false is accepted."
    ),
    def!(
        "retention.bytes",
        Long,
        "log.retention.bytes",
        Applied,
        "",
        "Per partition: the oldest segments go once the log is larger (delete policy); -1 is no limit."
    ),
    def!(
        "retention.ms",
        Long,
        "log.retention.ms",
        Applied,
        "",
        "Segments whose newest record is older than this go (delete policy); -1 is no limit."
    ),
    def!(
        "segment.bytes",
        Int,
        "log.segment.bytes",
        Applied,
        "",
        "Roll to a new segment when the active one would pass this size."
    ),
    def!(
        "segment.index.bytes",
        Int,
        "log.index.size.max.bytes",
        Stored,
        "10485760",
        "Kafka's index file size; Sluice sizes indexes from segment.bytes and index.interval.bytes."
    ),
    def!(
        "segment.jitter.ms",
        Long,
        "log.roll.jitter.ms",
        Stored,
        "0",
        "Random jitter subtracted from segment.ms; stored."
    ),
    def!(
        "segment.ms",
        Long,
        "log.roll.ms",
        Applied,
        "",
        "Roll a non-empty segment at least this often."
    ),
    def!(
        "unclean.leader.election.enable",
        Boolean,
        "unclean.leader.election.enable",
        Stored,
        "false",
        "Whether a replica outside the ISR may lead; stored (replication is not built yet)."
    ),
];

/// The definition of a topic config, if Kafka has one by that name.
pub fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why an override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid value {value} for configuration {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

fn refuse(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn long(name: &str, value: &str, min: i64) -> Result<i64, ConfigError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| refuse(name, value, "not a number of type LONG"))?;
    if v < min {
        return Err(refuse(name, value, format!("value must be at least {min}")));
    }
    Ok(v)
}

fn int(name: &str, value: &str, min: i64) -> Result<i64, ConfigError> {
    let v = value
        .trim()
        .parse::<i32>()
        .map_err(|_| refuse(name, value, "not a number of type INT"))?;
    if i64::from(v) < min {
        return Err(refuse(name, value, format!("value must be at least {min}")));
    }
    Ok(i64::from(v))
}

/// A duration in ms, where a negative value or `i64::MAX` means no limit.
fn limit(ms: i64) -> Option<Duration> {
    (ms >= 0 && ms != i64::MAX).then(|| Duration::from_millis(ms as u64))
}

fn ms_of(d: Option<Duration>) -> String {
    d.map_or(i64::MAX.to_string(), |d| d.as_millis().to_string())
}

/// Checks one override and puts it into `config`. Settings without a field
/// in [`LogConfig`] are only checked.
pub fn apply(config: &mut LogConfig, name: &str, value: &str) -> Result<(), ConfigError> {
    let def = definition(name).ok_or_else(|| ConfigError {
        name: name.to_string(),
        value: value.to_string(),
        reason: "unknown topic config".into(),
    })?;
    let v = value.trim();
    match def.name {
        "cleanup.policy" => {
            config.cleanup_policy = v.parse().map_err(|e: String| refuse(name, value, e))?
        }
        "compression.type" => match v {
            "producer" => {}
            "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => {
                return Err(refuse(
                    name,
                    value,
                    "recompressing batches on append is not implemented; only producer (batches kept as the producer compressed them)",
                ));
            }
            _ => {
                return Err(refuse(
                    name,
                    value,
                    "not one of uncompressed, zstd, lz4, snappy, gzip, producer",
                ));
            }
        },
        "delete.retention.ms" => {
            config.delete_retention = Duration::from_millis(long(name, v, 0)? as u64)
        }
        "flush.messages" => {
            if long(name, v, 1)? == 1 {
                config.flush = FlushPolicy::Always;
            }
        }
        "flush.ms" => {
            let ms = long(name, v, 0)?;
            if config.flush != FlushPolicy::Always {
                config.flush = match limit(ms) {
                    Some(d) => FlushPolicy::Interval(d.max(Duration::from_millis(1))),
                    None => FlushPolicy::Os,
                };
            }
        }
        "index.interval.bytes" => config.index_interval_bytes = int(name, v, 0)? as u64,
        "max.compaction.lag.ms" => config.max_compaction_lag = limit(long(name, v, 1)?),
        "max.message.bytes" => config.max_batch_bytes = int(name, v, 0)? as u64,
        "message.timestamp.after.max.ms" => config.timestamp_after_max = limit(long(name, v, 0)?),
        "message.timestamp.before.max.ms" => config.timestamp_before_max = limit(long(name, v, 0)?),
        "message.timestamp.difference.max.ms" => {
            let bound = limit(long(name, v, 0)?);
            config.timestamp_after_max = bound;
            config.timestamp_before_max = bound;
        }
        "message.timestamp.type" => {
            config.timestamp_type = v.parse().map_err(|e: String| refuse(name, value, e))?
        }
        "min.cleanable.dirty.ratio" => {
            let ratio: f64 = v
                .parse()
                .map_err(|_| refuse(name, value, "not a number of type DOUBLE"))?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(refuse(name, value, "value must be between 0 and 1"));
            }
            config.min_cleanable_dirty_ratio = ratio;
        }
        "min.compaction.lag.ms" => {
            config.min_compaction_lag = Duration::from_millis(long(name, v, 0)? as u64)
        }
        "remote.storage.enable" => match v {
            "false" => {}
            "true" => return Err(refuse(name, value, "tiered storage is not supported")),
            _ => return Err(refuse(name, value, "expected true or false")),
        },
        "retention.bytes" => {
            let b = long(name, v, -1)?;
            config.retention_bytes = (b >= 0).then_some(b as u64);
        }
        "retention.ms" => config.retention_age = limit(long(name, v, -1)?),
        "segment.bytes" => config.segment_bytes = int(name, v, 14)? as u64,
        "segment.ms" => config.segment_age = limit(long(name, v, 1)?),
        _ => check_stored(def, value)?,
    }
    Ok(())
}

/// Type and range checks of a setting Sluice only stores.
fn check_stored(def: &TopicConfigDef, value: &str) -> Result<(), ConfigError> {
    let v = value.trim();
    match def.kind {
        ConfigType::Boolean => {
            if v != "true" && v != "false" {
                return Err(refuse(def.name, value, "expected true or false"));
            }
        }
        ConfigType::Int => {
            let min = match def.name {
                "min.insync.replicas" => 1,
                "segment.index.bytes" => 4,
                _ => i64::from(i32::MIN),
            };
            int(def.name, v, min)?;
        }
        ConfigType::Long => {
            let min = match def.name {
                "local.retention.bytes" | "local.retention.ms" => -2,
                _ => 0,
            };
            long(def.name, v, min)?;
        }
        ConfigType::Double | ConfigType::String | ConfigType::List => {}
    }
    Ok(())
}

/// The configuration a topic runs with: `base` (the broker's settings) with
/// `overrides` applied. The timestamp bounds given by name win over
/// `message.timestamp.difference.max.ms`, as in Kafka.
pub fn resolve(base: &LogConfig, overrides: &TopicOverrides) -> Result<LogConfig, ConfigError> {
    let mut config = base.clone();
    let (difference, rest): (Vec<_>, Vec<_>) = overrides
        .iter()
        .partition(|(k, _)| k.as_str() == "message.timestamp.difference.max.ms");
    for (name, value) in difference.into_iter().chain(rest) {
        apply(&mut config, name, value)?;
    }
    Ok(config)
}

/// The value a setting has in `config`, as Kafka writes it; settings with no
/// field in [`LogConfig`] come from `overrides` or Kafka's default.
pub fn value_of(config: &LogConfig, overrides: &TopicOverrides, name: &str) -> Option<String> {
    let def = definition(name)?;
    Some(match name {
        "cleanup.policy" => config.cleanup_policy.to_string(),
        "delete.retention.ms" => config.delete_retention.as_millis().to_string(),
        "flush.messages" => match config.flush {
            FlushPolicy::Always => "1".into(),
            _ => overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| def.default.into()),
        },
        "flush.ms" => match config.flush {
            FlushPolicy::Always => "0".into(),
            FlushPolicy::Interval(d) => d.as_millis().to_string(),
            FlushPolicy::Os => i64::MAX.to_string(),
        },
        "index.interval.bytes" => config.index_interval_bytes.to_string(),
        "max.compaction.lag.ms" => ms_of(config.max_compaction_lag),
        "max.message.bytes" => config.max_batch_bytes.to_string(),
        "message.timestamp.after.max.ms" => ms_of(config.timestamp_after_max),
        "message.timestamp.before.max.ms" => ms_of(config.timestamp_before_max),
        "message.timestamp.type" => config.timestamp_type.to_string(),
        "min.cleanable.dirty.ratio" => config.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => config.min_compaction_lag.as_millis().to_string(),
        "retention.bytes" => config
            .retention_bytes
            .map_or("-1".into(), |b| b.to_string()),
        "retention.ms" => config
            .retention_age
            .map_or("-1".into(), |d| d.as_millis().to_string()),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.ms" => ms_of(config.segment_age),
        _ => overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| def.default.into()),
    })
}

fn file(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join(DIR).join(format!("{topic}.properties"))
}

/// Reads a properties file of `name=value` lines (`#` comments and blank
/// lines skipped; no Java escapes: config values never need them).
pub fn read_properties(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {line:?} is not key=value", path.display()),
            )
        })?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// Writes a properties file durably: `# header`, then one sorted
/// `name=value` line each, through a temporary file (fsync, rename, fsync of
/// the directory). A name holding `=` or a line break, or a value holding a
/// line break, cannot be stored.
pub fn write_properties(
    path: &Path,
    header: &str,
    map: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut text = format!("# {header}\n");
    for (k, v) in map {
        if k.contains(['=', '\n']) || v.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("config {k:?} cannot be stored"),
            ));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Reads every stored topic's overrides.
pub fn load_all(data_dir: &Path) -> io::Result<BTreeMap<String, TopicOverrides>> {
    let mut all = BTreeMap::new();
    let entries = match std::fs::read_dir(data_dir.join(DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(all),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        // Temporary files of an interrupted write end in `.tmp`.
        if let Some(topic) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".properties"))
        {
            all.insert(topic.to_string(), read_properties(&path)?);
        }
    }
    Ok(all)
}

/// Writes a topic's overrides durably; none at all removes the file.
pub fn store(data_dir: &Path, topic: &str, overrides: &TopicOverrides) -> io::Result<()> {
    if overrides.is_empty() {
        return remove(data_dir, topic);
    }
    std::fs::create_dir_all(data_dir.join(DIR))?;
    write_properties(
        &file(data_dir, topic),
        "Topic config overrides, written by sluice.",
        overrides,
    )
}

/// Forgets a topic's overrides (the topic was deleted).
pub fn remove(data_dir: &Path, topic: &str) -> io::Result<()> {
    match std::fs::remove_file(file(data_dir, topic)) {
        Ok(()) => std::fs::File::open(data_dir.join(DIR))?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimestampType;

    fn ov(pairs: &[(&str, &str)]) -> TopicOverrides {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_and_read_back_in_kafkas_words() {
        let base = LogConfig::default();
        let c = resolve(
            &base,
            &ov(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "1048576"),
                ("segment.bytes", "1048576"),
                ("message.timestamp.type", "LogAppendTime"),
                ("min.insync.replicas", "2"),
                ("max.message.bytes", "2000000"),
            ]),
        )
        .expect("valid");
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.retention_age, None);
        assert_eq!(c.retention_bytes, Some(1 << 20));
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        let o = ov(&[("min.insync.replicas", "2")]);
        assert_eq!(
            value_of(&c, &o, "cleanup.policy").as_deref(),
            Some("compact,delete")
        );
        assert_eq!(value_of(&c, &o, "retention.ms").as_deref(), Some("-1"));
        assert_eq!(
            value_of(&c, &o, "min.insync.replicas").as_deref(),
            Some("2")
        );
        assert_eq!(
            value_of(&c, &o, "max.message.bytes").as_deref(),
            Some("2000000")
        );
        assert_eq!(
            value_of(&base, &TopicOverrides::new(), "min.insync.replicas").as_deref(),
            Some("1")
        );
        // Every definition has a value.
        for def in TOPIC_CONFIGS {
            assert!(
                value_of(&base, &TopicOverrides::new(), def.name).is_some(),
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn bad_names_and_values_are_refused_by_name() {
        let base = LogConfig::default();
        for (name, value) in [
            ("retention.mss", "1"),
            ("retention.ms", "soon"),
            ("retention.ms", "-2"),
            ("segment.bytes", "3000000000"),
            ("cleanup.policy", "compact,shred"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("message.timestamp.type", "Whenever"),
            ("compression.type", "gzip"),
            ("compression.type", "brotli"),
            ("remote.storage.enable", "true"),
            ("min.insync.replicas", "0"),
            ("preallocate", "maybe"),
        ] {
            let err = resolve(&base, &ov(&[(name, value)])).expect_err(name);
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn named_timestamp_bounds_win_over_the_difference() {
        let base = LogConfig::default();
        let c = resolve(
            &base,
            &ov(&[
                ("message.timestamp.difference.max.ms", "1000"),
                ("message.timestamp.after.max.ms", "5000"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.timestamp_after_max, Some(Duration::from_secs(5)));
        assert_eq!(c.timestamp_before_max, Some(Duration::from_secs(1)));
    }

    #[test]
    fn stored_overrides_survive_a_reread() {
        let dir = tempfile::tempdir().expect("dir");
        let o = ov(&[("cleanup.policy", "compact"), ("retention.ms", "1000")]);
        store(dir.path(), "orders", &o).expect("store");
        store(dir.path(), "other.topic", &ov(&[("segment.ms", "60000")])).expect("store");
        let all = load_all(dir.path()).expect("load");
        assert_eq!(all.get("orders"), Some(&o));
        assert_eq!(all.len(), 2);
        store(dir.path(), "orders", &TopicOverrides::new()).expect("empty removes");
        assert!(!load_all(dir.path()).expect("load").contains_key("orders"));
    }
}
