//! The log start offset that DeleteRecords moves (KIP-107), kept in the
//! partition's `log-start-offset` file (docs/FORMAT.md).
//!
//! A partition's log start is the larger of its first segment's base offset
//! and the offset DeleteRecords last set. Records below it are gone to every
//! reader at once — Fetch answers OFFSET_OUT_OF_RANGE, ListOffsets earliest
//! and the metrics report it — while the bytes stay in their segment until
//! retention deletes the segments wholly below it, as in Kafka. The offset is
//! on disk before a DeleteRecords is answered (Kafka checkpoints it once a
//! minute): a deletion a client was told about survives any crash.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{PRODUCER_SNAPSHOT, Partition, ReadError, sync_dir};
use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::segment::Segment;

/// File in the partition directory holding the log start DeleteRecords set.
const LOG_START: &str = "log-start-offset";

impl Partition {
    /// DeleteRecords: moves the log start offset forward to `offset`, which
    /// must lie in `0..=log_end` (the high watermark, on one node); a larger
    /// or negative one is `ReadError::OffsetOutOfRange`, and the log is
    /// unchanged. An offset at or below the current start changes nothing
    /// (Kafka's `maybeIncrementLogStartOffset`). The new start is written
    /// durably (`log-start-offset`) before it is published. Returns the log
    /// start after the call (Kafka's low watermark).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, ReadError> {
        // One mover at a time; retention, which also moves the start, and
        // appends wait for the few milliseconds the write takes.
        let _app = self.lock();
        let (log_start, log_end) = (self.log_start(), self.log_end());
        if offset < 0 || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        write_log_start(&self.dir, offset).map_err(|e| self.read_error(e))?;
        self.log_start.fetch_max(offset, Ordering::AcqRel);
        tracing::info!(partition = %self.name, offset, "DeleteRecords: log start offset moved");
        Ok(self.log_start())
    }

    /// The whole first batch at or after offset `from` holding a record with
    /// a timestamp ≥ `timestamp` (its maxTimestamp is ≥ it). Batches wholly
    /// below `from` are skipped; one straddling it is returned whole, and the
    /// caller skips its records below `from`.
    pub fn batch_for_timestamp_from(
        &self,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let segs = self.segments.load_full();
        for seg in segs.iter() {
            if seg.max_timestamp() < timestamp || seg.next_offset() <= from {
                continue;
            }
            let found =
                find_timestamp_from(seg, timestamp, from).map_err(|e| self.read_error(e))?;
            if let Some((pos, h)) = found {
                return self.read_batch(seg, pos, &h).map(Some);
            }
        }
        Ok(None)
    }
}

/// The first batch in `seg` ending at or after `from` whose maxTimestamp is
/// ≥ `timestamp`, as (position, header).
fn find_timestamp_from(
    seg: &Segment,
    timestamp: i64,
    from: i64,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let size = seg.size();
    // The time index finds the first batch by time; only when that one lies
    // wholly below `from` is the segment walked from `from` instead.
    let found = seg.find_timestamp(timestamp, size)?;
    if found.as_ref().is_none_or(|(_, h)| h.last_offset() >= from) {
        return Ok(found);
    }
    let Some((mut pos, _)) = seg.find_batch(from, size)? else {
        return Ok(None);
    };
    while let Some(h) = seg.header_at(pos, size)? {
        let Some(len) = h.total_len() else {
            return Ok(None);
        };
        if h.max_timestamp >= timestamp {
            return Ok(Some((pos, h)));
        }
        pos += len as u64;
    }
    Ok(None)
}

/// True for a temporary file a crash left behind mid-write.
pub(super) fn is_temp_file(name: &str) -> bool {
    name.starts_with(&format!("{LOG_START}.")) && name.ends_with(".tmp")
}

/// The log start of a partition being opened, after recovery: the larger of
/// the first segment's base and the recorded start. A recorded start past
/// the recovered end (a power loss took back records DeleteRecords had
/// already deleted past) empties the log and restarts it at the recorded
/// start, as Kafka's log loader does: deleted offsets are never handed out
/// again. A file that exists but does not parse stops the open: ignoring it
/// would bring deleted records back.
pub(super) fn load(
    dir: &Path,
    name: &str,
    segments: &mut Vec<Arc<Segment>>,
    config: &LogConfig,
) -> io::Result<i64> {
    let first = segments.first().map_or(0, |s| s.base_offset());
    let Some(recorded) = read_log_start(dir)? else {
        return Ok(first);
    };
    let log_end = segments.last().map_or(first, |s| s.next_offset());
    if recorded > log_end {
        tracing::warn!(
            partition = %name,
            recorded,
            log_end,
            "the log ends before its recorded start offset; deleting its segments and starting it empty there"
        );
        for seg in segments.drain(..) {
            seg.delete()?;
        }
        match std::fs::remove_file(dir.join(PRODUCER_SNAPSHOT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        segments.push(Arc::new(Segment::create(dir, recorded, config)?));
        sync_dir(dir)?;
    }
    Ok(recorded.max(first))
}

/// The recorded log start, if the file exists.
fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    let path = dir.join(LOG_START);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a log start offset (decimal digits and a newline); \
                 it records where DeleteRecords moved the log start, so it is not ignored: \
                 restore it, or delete it to make the deleted records readable again",
                path.display()
            ),
        )
    })
}

/// `<digits>\n`, the value a non-negative `i64`.
fn parse(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_suffix(b"\n")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Writes the log start atomically and durably: temp file, fsync, rename,
/// fsync the directory.
fn write_log_start(dir: &Path, offset: i64) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{LOG_START}.{}.{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{offset}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(LOG_START))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_digits_and_a_newline() {
        assert_eq!(parse(b"52113\n"), Some(52113));
        assert_eq!(parse(b"0\n"), Some(0));
        for bad in [
            &b""[..],
            b"\n",
            b"12",
            b"-1\n",
            b"+1\n",
            b" 1\n",
            b"1\n\n",
            b"99999999999999999999\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(is_temp_file("log-start-offset.123.0.tmp"));
        assert!(!is_temp_file("log-start-offset"));
        assert!(!is_temp_file("recovery-point.1.0.tmp"));
    }

    #[test]
    fn a_damaged_file_stops_the_open_and_names_itself() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(LOG_START), b"12x\n").expect("write");
        let err = read_log_start(dir.path()).expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("log-start-offset"), "{err}");
        write_log_start(dir.path(), 77).expect("write");
        assert_eq!(read_log_start(dir.path()).expect("read"), Some(77));
        assert_eq!(
            std::fs::read(dir.path().join(LOG_START)).expect("bytes"),
            b"77\n"
        );
    }
}
