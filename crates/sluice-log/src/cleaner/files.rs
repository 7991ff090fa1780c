//! The cleaner's files: its checkpoint, and the crash-safe swap of cleaned
//! segments for the ones they replace (Kafka's `.cleaned` → `.swap` →
//! final names, old files through `.deleted`), with the recovery that a
//! partition's open runs first. docs/FORMAT.md has the bytes and states.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::config::LogConfig;
use crate::segment::{Segment, file_stem};

/// The cleaner's per-partition checkpoint: where the dirty section starts,
/// and the earliest delete horizon of the tombstones its last pass kept.
pub(crate) const CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// A segment's files, by suffix (`txnindex` only once it has an entry).
pub(crate) const SEGMENT_FILES: [&str; 4] = ["log", "index", "timeindex", "txnindex"];
/// Suffix of a segment file the cleaner is still writing.
pub(crate) const CLEANED: &str = ".cleaned";
/// Suffix of a complete cleaned segment file waiting to replace others.
pub(crate) const SWAP: &str = ".swap";
/// Suffix of a replaced segment file waiting to be removed.
pub(crate) const DELETED: &str = ".deleted";

/// `DIR/<base>.<ext><suffix>`.
pub(crate) fn segment_file(dir: &Path, base: i64, ext: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{ext}{suffix}", file_stem(base)))
}

/// What the checkpoint records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first offset not yet cleaned: the dirty section starts here.
    pub first_dirty: i64,
    /// The earliest delete horizon among the tombstones the last pass kept
    /// (−1: none): once the clock passes it, a pass has tombstones to drop
    /// even if nothing is dirty.
    pub tombstone_horizon: i64,
}

/// `<first_dirty> <tombstone_horizon>\n`; None when missing or unreadable
/// (the cleaner then starts from the log start, as Kafka does).
pub(crate) fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT)).ok()?;
    let line = text.strip_suffix('\n')?;
    let (a, b) = line.split_once(' ')?;
    let first_dirty: i64 = a.parse().ok()?;
    let tombstone_horizon: i64 = b.parse().ok()?;
    (first_dirty >= 0 && tombstone_horizon >= -1).then_some(Checkpoint {
        first_dirty,
        tombstone_horizon,
    })
}

/// Writes the checkpoint atomically and durably: temp file, fsync, rename,
/// fsync the directory.
pub(crate) fn write_checkpoint(dir: &Path, c: Checkpoint) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{CHECKPOINT}.{}.{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{} {}\n", c.first_dirty, c.tombstone_horizon))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One step of a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileOp {
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl FileOp {
    pub fn run(&self) -> io::Result<()> {
        match self {
            FileOp::Rename(from, to) => std::fs::rename(from, to),
            FileOp::Remove(path) => remove_if_present(path),
        }
    }
}

/// The swap of one cleaned segment (`new_base`) for the segments it
/// replaces (`old_bases`, the first of which is `new_base`), as the file
/// operations that carry it out, in order. A crash after any prefix of them
/// is recovered by [`recover`]:
///
/// 1. the cleaned indexes, then the cleaned log, `.cleaned` → `.swap` (the
///    log's rename is the commit point: from it on, recovery completes the
///    swap instead of undoing it);
/// 2. every old file → `.deleted`;
/// 3. the indexes, then the log, `.swap` → final names.
///
/// Then (after the new list is published) [`removal_ops`] delete the
/// `.deleted` files. A transaction index exists only for segments with an
/// aborted transaction: its operations are listed when its file is there
/// now (the caller holds the appender lock, so none appears meanwhile).
pub(crate) fn swap_ops(dir: &Path, new_base: i64, old_bases: &[i64]) -> Vec<FileOp> {
    let mut ops = Vec::new();
    let cleaned_txn = segment_file(dir, new_base, "txnindex", CLEANED).exists();
    let new_exts: &[&str] = if cleaned_txn {
        &["index", "timeindex", "txnindex", "log"]
    } else {
        &["index", "timeindex", "log"]
    };
    for ext in new_exts {
        ops.push(FileOp::Rename(
            segment_file(dir, new_base, ext, CLEANED),
            segment_file(dir, new_base, ext, SWAP),
        ));
    }
    for &base in old_bases {
        // The transaction index before the log: once an old `.log` is
        // `.deleted`, a plain `.txnindex` of its base can only be the new
        // one (`recover` keeps it; it cannot be rebuilt from the segment).
        for ext in ["txnindex", "log", "index", "timeindex"] {
            let from = segment_file(dir, base, ext, "");
            if ext == "txnindex" && !from.exists() {
                continue;
            }
            ops.push(FileOp::Rename(from, segment_file(dir, base, ext, DELETED)));
        }
    }
    for ext in new_exts {
        ops.push(FileOp::Rename(
            segment_file(dir, new_base, ext, SWAP),
            segment_file(dir, new_base, ext, ""),
        ));
    }
    ops
}

/// Removing the replaced segments' `.deleted` files.
pub(crate) fn removal_ops(dir: &Path, old_bases: &[i64]) -> Vec<FileOp> {
    old_bases
        .iter()
        .flat_map(|&base| {
            SEGMENT_FILES
                .iter()
                .map(move |ext| FileOp::Remove(segment_file(dir, base, ext, DELETED)))
        })
        .collect()
}

/// Removes a pass's unfinished `.cleaned` files for `base`.
pub(crate) fn discard_cleaned(dir: &Path, base: i64) {
    for ext in SEGMENT_FILES {
        let _ = remove_if_present(&segment_file(dir, base, ext, CLEANED));
    }
}

/// The base offset of a segment file name (`<20 digits>.<ext>[suffix]`).
fn base_of(name: &str) -> Option<i64> {
    let (stem, _) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One past the last offset of the batches in the log file at `path`, read
/// from their headers; an error if the file is not whole batches.
fn end_of_log_file(path: &Path, base: i64) -> io::Result<i64> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = 0u64;
    let mut end = base;
    let mut header = [0u8; HEADER_LEN];
    while pos < len {
        let torn = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not whole record batches at byte {pos}; a cleaned segment is \
                     synced before it is renamed to .swap, so this one is damaged",
                    path.display()
                ),
            )
        };
        if pos + HEADER_LEN as u64 > len {
            return Err(torn());
        }
        file.read_exact_at(&mut header, pos)?;
        let h = BatchHeader::parse(&header).map_err(|_| torn())?;
        let total = h.total_len().ok_or_else(torn)? as u64;
        if h.magic != 2 || pos + total > len {
            return Err(torn());
        }
        end = end.max(h.last_offset() + 1);
        pos += total;
    }
    Ok(end)
}

/// What [`recover`] did, for the log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Swaps completed: (base of the cleaned segment, offsets it covers to).
    pub completed: Vec<(i64, i64)>,
    /// Leftover files removed.
    pub removed: usize,
}

/// Brings a partition directory back to whole segments after a crash at any
/// point of a cleaner pass, before the partition opens (Kafka's LogLoader):
///
/// - a `<base>.log.swap` (a committed swap): every segment file, `.deleted`
///   or not, whose base lies in `[base, end of the swap's batches)` is
///   removed — those are the segments it replaces — and the `.swap` files
///   take their final names; the segment is then opened once with a full
///   scan, which checks it and rebuilds its indexes (one of them may be
///   missing if the crash fell in the middle of the renames);
/// - `.cleaned` files (an unfinished pass), index `.swap` files without their
///   log (a crash before the commit point) and `.deleted` files (already
///   replaced) are removed;
/// - temporary checkpoint files are removed.
pub(crate) fn recover(dir: &Path, config: &LogConfig) -> io::Result<Recovered> {
    let mut done = Recovered::default();
    let names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut swaps: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log.swap").and_then(|_| base_of(n)))
        .collect();
    swaps.sort_unstable();
    for &base in &swaps {
        let swap_log = segment_file(dir, base, "log", SWAP);
        let end = end_of_log_file(&swap_log, base)?.max(base + 1);
        tracing::info!(
            dir = %dir.display(),
            base,
            end,
            "completing a cleaner swap a crash interrupted"
        );
        // The old first segment's log already renamed away: a plain
        // `<base>.txnindex` is the cleaned one (see `swap_ops`).
        let new_txn_index = !segment_file(dir, base, "log", "").exists();
        for name in &names {
            let Some(b) = base_of(name) else { continue };
            if !(base..end).contains(&b) || name.ends_with(SWAP) {
                continue;
            }
            if new_txn_index && *name == format!("{}.txnindex", file_stem(base)) {
                continue;
            }
            let is_segment_file = SEGMENT_FILES.iter().any(|ext| {
                let plain = format!("{}.{ext}", file_stem(b));
                name == &plain || *name == format!("{plain}{DELETED}")
            });
            if is_segment_file {
                remove_if_present(&dir.join(name))?;
                done.removed += 1;
            }
        }
        for ext in ["index", "timeindex", "txnindex", "log"] {
            let from = segment_file(dir, base, ext, SWAP);
            if from.exists() {
                std::fs::rename(&from, segment_file(dir, base, ext, ""))?;
            }
        }
        // A full scan: checks every batch and rebuilds both indexes.
        drop(Segment::open(dir, base, config, false)?);
        done.completed.push((base, end));
    }
    for name in std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        let leftover = (base_of(&name).is_some()
            && (name.ends_with(CLEANED) || name.ends_with(SWAP) || name.ends_with(DELETED)))
            || (name.starts_with(&format!("{CHECKPOINT}.")) && name.ends_with(".tmp"));
        if leftover {
            remove_if_present(&dir.join(&name))?;
            done.removed += 1;
        }
    }
    if done.removed > 0 || !done.completed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(read_checkpoint(dir.path()), None);
        let c = Checkpoint {
            first_dirty: 52113,
            tombstone_horizon: -1,
        };
        write_checkpoint(dir.path(), c).expect("write");
        assert_eq!(read_checkpoint(dir.path()), Some(c));
        assert_eq!(
            std::fs::read(dir.path().join(CHECKPOINT)).expect("bytes"),
            b"52113 -1\n"
        );
        for bad in ["", "12\n", "x 1\n", "1 2", "-5 1\n", "1 -2\n"] {
            std::fs::write(dir.path().join(CHECKPOINT), bad).expect("write");
            assert_eq!(read_checkpoint(dir.path()), None, "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(base_of("00000000000000000042.log.swap"), Some(42));
        assert_eq!(base_of("00000000000000000042.index"), Some(42));
        assert_eq!(base_of("recovery-point"), None);
        assert_eq!(base_of("42.log"), None);
        let ops = swap_ops(Path::new("/d"), 5, &[5, 9]);
        assert_eq!(ops.len(), 3 + 6 + 3);
        assert_eq!(
            ops[2],
            FileOp::Rename(
                "/d/00000000000000000005.log.cleaned".into(),
                "/d/00000000000000000005.log.swap".into()
            )
        );
        assert_eq!(
            ops[11],
            FileOp::Rename(
                "/d/00000000000000000005.log.swap".into(),
                "/d/00000000000000000005.log".into()
            )
        );
    }
}
