//! Fixed-width, memory-mapped index files: the sparse offset index (`.index`,
//! 8-byte entries: relative offset u32 BE, file position u32 BE) and the time
//! index (`.timeindex`, 12-byte entries: timestamp i64 BE, relative offset u32
//! BE), as Kafka lays them out. What an entry points at differs a little
//! from Kafka's (a batch's first offset; the time index's timestamp is the
//! largest before that batch), and so do pre-allocation and trimming:
//! `docs/FORMAT.md` has the bytes and the differences.
//!
//! One appender pushes entries; any number of readers look them up without a
//! lock: an entry is written to the mapping first and published by a release
//! store of the entry count, and readers read only below the count they
//! acquired. Both sides go through raw pointers, never references, so the
//! concurrent access to different bytes of the mapping is sound.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::MmapRaw;

/// A memory-mapped file of `N`-byte entries.
#[derive(Debug)]
pub struct IndexFile<const N: usize> {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    capacity: usize,
    entries: AtomicUsize,
}

/// The offset index: `[relative offset u32][position u32]`.
pub type OffsetIndex = IndexFile<8>;
/// The time index: `[timestamp i64][relative offset u32]`.
pub type TimeIndex = IndexFile<12>;

impl<const N: usize> IndexFile<N> {
    /// Opens (creating if needed) an index file with room for `capacity`
    /// entries. `entries` entries already in the file are taken as valid; the
    /// caller decides that (after a sanity check or a rebuild).
    pub fn open(path: &Path, capacity: usize, entries: usize) -> io::Result<IndexFile<N>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let capacity = capacity.max(entries).max(1);
        let bytes = (capacity * N) as u64;
        if file.metadata()?.len() < bytes {
            file.set_len(bytes)?;
        }
        let map = memmap2::MmapOptions::new()
            .len(capacity * N)
            .map_raw(&file)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            map,
            capacity,
            entries: AtomicUsize::new(entries.min(capacity)),
        })
    }

    /// How many entries the file held on disk before it was opened (its
    /// length / N), for a file trimmed at a clean shutdown.
    pub fn entries_on_disk(path: &Path) -> usize {
        std::fs::metadata(path)
            .map(|m| m.len() as usize / N)
            .unwrap_or(0)
    }

    /// The index's file (for reserving its blocks).
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry. Only the partition's single appender calls this.
    pub fn push(&self, entry: [u8; N]) -> bool {
        let n = self.entries.load(Ordering::Relaxed);
        if n >= self.capacity {
            return false;
        }
        // SAFETY: `n < capacity`, so the N bytes at `n * N` lie inside the
        // mapping; no reader reads them until the count below publishes them,
        // and there is one appender.
        unsafe {
            std::ptr::copy_nonoverlapping(entry.as_ptr(), self.map.as_mut_ptr().add(n * N), N);
        }
        self.entries.store(n + 1, Ordering::Release);
        true
    }

    /// Entry `i`; `i` must be below a count returned by [`len`](Self::len).
    pub fn get(&self, i: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if i < self.capacity {
            // SAFETY: `i < capacity` keeps the read inside the mapping; entries
            // below the published count are never written again.
            unsafe {
                std::ptr::copy_nonoverlapping(self.map.as_ptr().add(i * N), out.as_mut_ptr(), N);
            }
        }
        out
    }

    /// Forgets a tail of all-zero entries (the unused, pre-allocated part of
    /// a file that was not trimmed). Entries are written in order, so the
    /// zeros are a suffix: a binary search finds where they start.
    pub fn drop_zero_tail(&self) {
        let is_zero = |i: usize| self.get(i).iter().all(|&b| b == 0);
        let (mut lo, mut hi) = (0usize, self.len());
        // Invariant: entries below lo are non-zero; entries at hi and above are zero.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if is_zero(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.truncate_entries(lo);
    }

    /// Forgets every entry from `keep` on (after a truncation of the log).
    pub fn truncate_entries(&self, keep: usize) {
        let n = self.entries.load(Ordering::Relaxed);
        self.entries.store(keep.min(n), Ordering::Release);
    }

    /// Cuts the file to its used entries (a clean shutdown), so the next open
    /// knows the count from the length.
    pub fn trim(&self) -> io::Result<()> {
        self.map.flush()?;
        self.file.set_len((self.len() * N) as u64)
    }

    /// Index lookup: the last entry whose key (by `key`) is ≤ `target`, as
    /// (entry number, entry). Entries are sorted by key.
    pub fn floor(&self, target: i64, key: impl Fn(&[u8; N]) -> i64) -> Option<(usize, [u8; N])> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        // Invariant: entries below lo have key <= target; entries at hi and above > target.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(&self.get(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo > 0).then(|| (lo - 1, self.get(lo - 1)))
    }
}

/// An offset index entry.
pub fn offset_entry(relative_offset: u32, position: u32) -> [u8; 8] {
    let mut e = [0u8; 8];
    e[..4].copy_from_slice(&relative_offset.to_be_bytes());
    e[4..].copy_from_slice(&position.to_be_bytes());
    e
}

/// (relative offset, position) of an offset index entry.
pub fn parse_offset_entry(e: &[u8; 8]) -> (u32, u32) {
    (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
    )
}

/// A time index entry.
pub fn time_entry(timestamp: i64, relative_offset: u32) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[..8].copy_from_slice(&timestamp.to_be_bytes());
    e[8..].copy_from_slice(&relative_offset.to_be_bytes());
    e
}

/// (timestamp, relative offset) of a time index entry.
pub fn parse_time_entry(e: &[u8; 12]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&e[..8]);
    (
        i64::from_be_bytes(ts),
        u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_the_last_entry_at_or_below() {
        let dir = tempfile::tempdir().expect("dir");
        let idx = OffsetIndex::open(&dir.path().join("x.index"), 16, 0).expect("open");
        for (rel, pos) in [(3u32, 100u32), (7, 200), (12, 300)] {
            assert!(idx.push(offset_entry(rel, pos)));
        }
        let key = |e: &[u8; 8]| i64::from(parse_offset_entry(e).0);
        assert_eq!(idx.floor(2, key), None);
        assert_eq!(idx.floor(3, key).map(|(i, _)| i), Some(0));
        assert_eq!(
            idx.floor(11, key).map(|(_, e)| parse_offset_entry(&e)),
            Some((7, 200))
        );
        assert_eq!(idx.floor(99, key).map(|(i, _)| i), Some(2));
        idx.trim().expect("trim");
        assert_eq!(OffsetIndex::entries_on_disk(idx.path()), 3);
    }
}
