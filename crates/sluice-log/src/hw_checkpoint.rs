//! Kafka's `replication-offset-checkpoint`: the high watermark of every
//! partition of a data directory whose high watermark is managed
//! (replicated partitions; see [`Partition::set_high_watermark`]), in the
//! directory's root.
//!
//! The text is Kafka's: a version line (`0`), a line with the entry count,
//! then one `<topic> <partition> <offset>` line per partition, each line
//! ending in `\n`. It is written atomically: a temp file
//! (`replication-offset-checkpoint.<pid>.<n>.tmp`), fsynced, renamed over
//! the file, and the directory fsynced. [`crate::Log::open`] sets each
//! listed partition's high watermark to the recorded value (at most its log
//! end); a file that does not parse stops the open.
//!
//! [`Partition::set_high_watermark`]: crate::Partition::set_high_watermark

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file's name in the data directory (Kafka's).
pub const HW_CHECKPOINT: &str = "replication-offset-checkpoint";

const VERSION: &str = "0";

/// One partition's recorded high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwEntry {
    pub topic: String,
    pub partition: u32,
    pub high_watermark: i64,
}

/// The file's text for `entries`.
pub fn encode(entries: &[HwEntry]) -> String {
    let mut out = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        out.push_str(&format!(
            "{} {} {}\n",
            e.topic, e.partition, e.high_watermark
        ));
    }
    out
}

/// Parses the file's text: version 0, a count, exactly that many
/// `<topic> <partition> <offset>` lines (then nothing but blank lines).
pub fn parse(text: &str) -> Option<Vec<HwEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out = Vec::with_capacity(count.min(65_536));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let topic = fields.next()?.to_string();
        let partition = fields.next()?.parse().ok()?;
        let high_watermark = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        out.push(HwEntry {
            topic,
            partition,
            high_watermark,
        });
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(out)
}

/// Reads `dir/replication-offset-checkpoint`: Ok(None) if there is none;
/// an error of kind `InvalidData` naming the file if it does not parse.
pub fn read(dir: &Path) -> io::Result<Option<Vec<HwEntry>>> {
    let path = dir.join(HW_CHECKPOINT);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(e),
    };
    parse(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a replication offset checkpoint; it holds the partitions' high \
                 watermarks, so it is not ignored: restore it, or delete it to start every \
                 high watermark at its log end",
                path.display()
            ),
        )
    })
}

/// Writes `dir/replication-offset-checkpoint` atomically and durably.
pub fn write(dir: &Path, entries: &[HwEntry]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{HW_CHECKPOINT}.{}.{seq}.tmp", std::process::id()));
    let result = (|| {
        std::fs::write(&tmp, encode(entries))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(HW_CHECKPOINT))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    crate::partition::sync_dir(dir)
}

/// True for a temporary file a crash left behind mid-write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name.starts_with(&format!("{HW_CHECKPOINT}.")) && name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str, partition: u32, hw: i64) -> HwEntry {
        HwEntry {
            topic: topic.to_string(),
            partition,
            high_watermark: hw,
        }
    }

    #[test]
    fn the_file_is_kafkas_text_and_round_trips() {
        let entries = vec![
            entry("orders", 0, 1234),
            entry("orders", 1, 0),
            entry("a.b_c-d", 7, 99),
        ];
        let text = encode(&entries);
        assert_eq!(text, "0\n3\norders 0 1234\norders 1 0\na.b_c-d 7 99\n");
        assert_eq!(parse(&text), Some(entries.clone()));
        assert_eq!(encode(&[]), "0\n0\n");
        assert_eq!(parse("0\n0\n"), Some(vec![]));
        for bad in [
            "",
            "1\n0\n",
            "0\n1\n",
            "0\n1\nt 0\n",
            "0\n1\nt x 5\n",
            "0\n1\nt -1 5\n",
            "0\n1\nt 0 5 6\n",
            "0\n1\nt 0 5\nu 0 6\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), &entries).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(entries));
        write(dir.path(), &[]).expect("write empty");
        assert_eq!(read(dir.path()).expect("read"), Some(vec![]));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![HW_CHECKPOINT.to_string()]);
        std::fs::write(dir.path().join(HW_CHECKPOINT), "0\n2\nt 0 5\n").expect("damage");
        let err = read(dir.path()).expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(HW_CHECKPOINT), "{err}");
        assert!(is_temp_file("replication-offset-checkpoint.1.2.tmp"));
        assert!(!is_temp_file(HW_CHECKPOINT));
    }
}
