//! Kafka's transaction index, `<base>.txnindex`: one 34-byte entry per
//! aborted transaction whose ABORT marker lies in the segment (Kafka's
//! `TransactionIndex` and `AbortedTxn`, byte for byte; docs/FORMAT.md).
//!
//! A read_committed Fetch needs the aborted transactions overlapping what it
//! returns ([`TxnIndex::collect`], Kafka's `collectAbortedTxns`). Entries are
//! few (one per abort), so each segment keeps them in memory as well; the
//! file is created with the first entry, appended to under the partition's
//! appender lock, and fsynced with its segment.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::segment::file_stem;

/// Bytes of an entry: version i16, producerId i64, firstOffset i64,
/// lastOffset i64, lastStableOffset i64.
pub const ENTRY_LEN: usize = 34;
/// The only entry version Kafka defines.
const VERSION: i16 = 0;

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The transaction's first offset in this partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The last stable offset right after the marker: the first offset of
    /// the earliest transaction of another producer still open, else the
    /// marker's offset + 1 (Kafka's `lastStableOffset(completedTxn)`).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    /// The entry as Kafka writes it.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut e = [0u8; ENTRY_LEN];
        e[0..2].copy_from_slice(&VERSION.to_be_bytes());
        e[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        e[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        e[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        e[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        e
    }

    /// An entry's fields; None unless its version is 0.
    pub fn decode(e: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(e.get(at..at + 8)?.try_into().ok()?))
        };
        if e.len() != ENTRY_LEN || i16::from_be_bytes([e[0], e[1]]) != VERSION {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<AbortedTxn>,
    /// Open once the file exists (it is created with the first entry).
    file: Option<File>,
    /// Written since the last fsync.
    dirty: bool,
    /// False when the file on disk did not read back as whole, ordered
    /// entries (the partition then rebuilds it).
    intact: bool,
}

/// A segment's transaction index.
#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    inner: RwLock<Inner>,
}

impl TxnIndex {
    /// `DIR/<base>.txnindex`.
    pub fn path_for(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.txnindex", file_stem(base)))
    }

    /// Opens the index of the segment at `base`, reading its entries if the
    /// file exists. A file that is not whole version-0 entries keeps the
    /// whole entries before the damage and fails
    /// [`is_sane`](Self::is_sane).
    pub fn open(dir: &Path, base: i64) -> io::Result<TxnIndex> {
        let path = Self::path_for(dir, base);
        let mut inner = Inner {
            intact: true,
            ..Inner::default()
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                inner.intact = bytes.len().is_multiple_of(ENTRY_LEN);
                for chunk in bytes.chunks_exact(ENTRY_LEN) {
                    match AbortedTxn::decode(chunk) {
                        Some(e) => inner.entries.push(e),
                        None => {
                            inner.intact = false;
                            break;
                        }
                    }
                }
                inner.file = Some(OpenOptions::new().append(true).open(&path)?);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(TxnIndex {
            path,
            inner: RwLock::new(inner),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file read back whole and every entry belongs to a
    /// segment holding offsets `[base, next_offset)`: markers inside it,
    /// in increasing order, none before its transaction's first offset.
    pub fn is_sane(&self, base: i64, next_offset: i64) -> bool {
        let inner = self.read();
        inner.intact
            && inner
                .entries
                .windows(2)
                .all(|w| w[0].last_offset < w[1].last_offset)
            && inner.entries.iter().all(|e| {
                (base..next_offset).contains(&e.last_offset) && e.first_offset <= e.last_offset
            })
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Vec<AbortedTxn> {
        self.read().entries.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.read().entries.is_empty()
    }

    /// Appends an entry, creating the file (and making its name durable)
    /// with the first one. Markers only move forward, so entries come in
    /// increasing `last_offset` order; anything else is refused.
    pub fn append(&self, e: AbortedTxn) -> io::Result<()> {
        let mut inner = self.write();
        if inner
            .entries
            .last()
            .is_some_and(|prev| prev.last_offset >= e.last_offset)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: aborted transaction at {} does not follow the last entry",
                    self.path.display(),
                    e.last_offset
                ),
            ));
        }
        if inner.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            file.set_len(0)?;
            // The first abort of a segment: rare enough to pay for its name
            // being durable now, so no later sync has to think of it.
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            inner.file = Some(file);
        }
        let file = inner
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no file"))?;
        file.write_all(&e.encode())?;
        inner.entries.push(e);
        inner.dirty = true;
        Ok(())
    }

    /// Kafka's `collectAbortedTxns`: adds to `out` every entry whose
    /// transaction overlaps `[from, upto)` (its marker at or after `from`,
    /// its first offset before `upto`). True when the search is complete:
    /// an entry's last stable offset reached `upto`, so no later segment
    /// can hold an abort overlapping the range.
    pub fn collect(&self, from: i64, upto: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for e in &self.read().entries {
            if e.last_offset >= from && e.first_offset < upto {
                out.push(*e);
            }
            if e.last_stable_offset >= upto {
                return true;
            }
        }
        false
    }

    /// Drops the entries whose marker is at or after `offset` (a truncation
    /// of the log to end before it), in the file too.
    pub fn truncate_from(&self, offset: i64) -> io::Result<()> {
        let mut inner = self.write();
        let keep = inner.entries.partition_point(|e| e.last_offset < offset);
        if keep == inner.entries.len() && inner.intact {
            return Ok(());
        }
        inner.entries.truncate(keep);
        if let Some(file) = inner.file.as_ref() {
            file.set_len((keep * ENTRY_LEN) as u64)?;
            inner.dirty = true;
        }
        inner.intact = true;
        Ok(())
    }

    /// Forgets every entry and removes the file (recovery rebuilds it).
    pub fn reset(&self) -> io::Result<()> {
        let mut inner = self.write();
        inner.entries.clear();
        inner.file = None;
        inner.dirty = false;
        inner.intact = true;
        remove_if_present(&self.path)
    }

    /// Forces the entries to disk, if any were written since the last time.
    pub fn sync(&self) -> io::Result<()> {
        let mut inner = self.write();
        if inner.dirty {
            if let Some(f) = inner.file.as_ref() {
                f.sync_all()?;
            }
            inner.dirty = false;
        }
        Ok(())
    }

    /// Removes the file (the segment is deleted); readers keep the entries
    /// they already hold.
    pub fn delete(&self) -> io::Result<()> {
        remove_if_present(&self.path)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `entries` as a complete index file at `path` and fsyncs it (the
/// log cleaner's `.txnindex.cleaned`).
pub(crate) fn write_file(path: &Path, entries: &[AbortedTxn]) -> io::Result<u64> {
    let mut f = File::create(path)?;
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        bytes.extend_from_slice(&e.encode());
    }
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_are_kafkas_34_bytes() {
        let e = txn(0x0102030405060708, 10, 20, 21);
        let b = e.encode();
        assert_eq!(
            b,
            [
                0, 0, // version
                1, 2, 3, 4, 5, 6, 7, 8, // producerId
                0, 0, 0, 0, 0, 0, 0, 10, // firstOffset
                0, 0, 0, 0, 0, 0, 0, 20, // lastOffset
                0, 0, 0, 0, 0, 0, 0, 21, // lastStableOffset
            ]
        );
        assert_eq!(AbortedTxn::decode(&b), Some(e));
        let mut v1 = b;
        v1[1] = 1;
        assert_eq!(AbortedTxn::decode(&v1), None);
    }

    #[test]
    fn collect_follows_kafkas_overlap_and_stop_rules() {
        let dir = tempfile::tempdir().expect("dir");
        let idx = TxnIndex::open(dir.path(), 0).expect("open");
        assert!(!idx.path().exists(), "created with the first entry only");
        idx.append(txn(1, 0, 10, 5)).expect("append");
        idx.append(txn(2, 5, 20, 21)).expect("append");
        idx.append(txn(3, 30, 40, 41)).expect("append");
        assert!(idx.append(txn(4, 1, 40, 41)).is_err(), "not after the last");
        let mut out = Vec::new();
        // [11, 25): the first ended before 11; the second overlaps, and
        // its LSO (21) is below 25, so the search goes on; the third starts
        // after 25 but its LSO ends the search.
        assert!(idx.collect(11, 25, &mut out));
        assert_eq!(out.iter().map(|e| e.producer_id).collect::<Vec<_>>(), [2]);
        out.clear();
        assert!(!idx.collect(0, 100, &mut out), "no LSO reaches 100");
        assert_eq!(out.len(), 3);
        assert_eq!(
            std::fs::read(idx.path()).expect("file").len(),
            3 * ENTRY_LEN
        );
        idx.sync().expect("sync");
        // Reopened: the same entries.
        let again = TxnIndex::open(dir.path(), 0).expect("reopen");
        assert_eq!(again.entries(), idx.entries());
        assert!(again.is_sane(0, 41));
        assert!(!again.is_sane(0, 40), "a marker past the segment's end");
        // Truncation drops markers at or after the point.
        again.truncate_from(20).expect("truncate");
        assert_eq!(again.entries(), vec![txn(1, 0, 10, 5)]);
        assert_eq!(std::fs::read(again.path()).expect("file").len(), ENTRY_LEN);
        again
            .append(txn(9, 12, 13, 14))
            .expect("append after a cut");
        assert_eq!(
            TxnIndex::open(dir.path(), 0)
                .expect("reopen")
                .entries()
                .len(),
            2
        );
        // A torn entry: the whole ones before it, not intact.
        let mut bytes = std::fs::read(again.path()).expect("file");
        bytes.truncate(ENTRY_LEN + 7);
        std::fs::write(again.path(), &bytes).expect("write");
        let torn = TxnIndex::open(dir.path(), 0).expect("reopen");
        assert_eq!(torn.entries().len(), 1);
        assert!(!torn.is_sane(0, 100));
        torn.reset().expect("reset");
        assert!(!torn.path().exists());
        assert!(torn.is_empty());
    }
}
