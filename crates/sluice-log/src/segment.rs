//! One segment: `<base>.log` (RecordBatch v2 bytes as on the wire) with its
//! `.index` and `.timeindex`, named by the 20-digit base offset.
//!
//! Readers see a segment through its file descriptor (for `sendfile` and
//! `pread`) up to `size`, an atomic the appender bumps after the bytes and
//! index entries are in place. The appender alone writes, through the
//! [`SegmentWriter`] it owns.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use memmap2::MmapRaw;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::config::{AppendPath, LogConfig};
use crate::index::{
    OffsetIndex, TimeIndex, offset_entry, parse_offset_entry, parse_time_entry, time_entry,
};
use crate::txn_index::TxnIndex;

/// `00000000000000000042` for base offset 42.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// A segment as readers see it.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    dir: PathBuf,
    file: File,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Aborted transactions whose markers are in this segment.
    txn_index: TxnIndex,
    /// Bytes of whole batches visible to readers.
    size: AtomicU64,
    /// One past the last offset in the segment (== base when empty).
    next_offset: AtomicI64,
    /// Largest batch maxTimestamp seen (−1 when empty).
    max_timestamp: AtomicI64,
    /// Wall-clock ms when the segment was created (or opened, for old ones).
    created_ms: i64,
    deleted: AtomicBool,
}

/// What a scan of a segment's bytes found.
#[derive(Debug, Clone, Copy)]
pub struct ScanResult {
    /// Bytes of valid batches from the start.
    pub valid_len: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub batches: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<&'static str>,
}

impl Segment {
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The segment's log file: hand it to the io layer with a position and length.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Makes appended bytes up to `size` visible to readers. Called by the
    /// partition after it has published the end offset that covers them.
    pub(crate) fn publish_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The segment's transaction index (`<base>.txnindex`).
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.log", file_stem(self.base_offset)))
    }

    fn index_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.index", file_stem(base)))
    }

    fn time_index_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.timeindex", file_stem(base)))
    }

    /// Opens the files of a segment (creating missing ones) with `index_entries`
    /// and `time_entries` trusted entries.
    fn open_files(
        dir: &Path,
        base: i64,
        config: &LogConfig,
        index_entries: usize,
        time_entries: usize,
    ) -> io::Result<Segment> {
        let log_path = dir.join(format!("{}.log", file_stem(base)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)?;
        let capacity = config.index_capacity();
        let index = OffsetIndex::open(&Self::index_path(dir, base), capacity, index_entries)?;
        let time_index =
            TimeIndex::open(&Self::time_index_path(dir, base), capacity, time_entries)?;
        // Read as it is: the partition decides whether to trust or rebuild it.
        let txn_index = TxnIndex::open(dir, base)?;
        Ok(Segment {
            base_offset: base,
            dir: dir.to_path_buf(),
            file,
            index,
            time_index,
            txn_index,
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base),
            max_timestamp: AtomicI64::new(-1),
            created_ms: now_ms(),
            deleted: AtomicBool::new(false),
        })
    }

    /// A new, empty segment.
    pub fn create(dir: &Path, base: i64, config: &LogConfig) -> io::Result<Segment> {
        for path in [
            dir.join(format!("{}.log", file_stem(base))),
            Self::index_path(dir, base),
            Self::time_index_path(dir, base),
            TxnIndex::path_for(dir, base),
        ] {
            // A leftover of a crashed roll: start clean.
            let _ = std::fs::remove_file(path);
        }
        Self::open_files(dir, base, config, 0, 0)
    }

    /// An existing segment. With `trust_tail`, the file is taken to end at its
    /// last whole batch (a clean shutdown trimmed it); the indexes are kept if
    /// they pass a sanity check and rebuilt otherwise. Without it, the segment
    /// is scanned batch by batch with CRC checks and cut at the first bad one.
    pub fn open(
        dir: &Path,
        base: i64,
        config: &LogConfig,
        trust_tail: bool,
    ) -> io::Result<Segment> {
        let idx_n = OffsetIndex::entries_on_disk(&Self::index_path(dir, base));
        let time_n = TimeIndex::entries_on_disk(&Self::time_index_path(dir, base));
        let mut seg = Self::open_files(dir, base, config, idx_n, time_n)?;
        // Index files are pre-allocated and trimmed only at a clean shutdown:
        // after a crash their unused tail is zeros, which no entry can be.
        seg.index.drop_zero_tail();
        seg.time_index.drop_zero_tail();
        let meta = seg.file.metadata()?;
        // Age for roll and retention counts from the last write.
        if let Ok(since) = meta
            .modified()
            .map(|m| m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
        {
            seg.created_ms = since.as_millis() as i64;
        }
        seg.recover(config, meta.len(), trust_tail)
    }

    fn recover(self, config: &LogConfig, file_len: u64, trust_tail: bool) -> io::Result<Segment> {
        if trust_tail && self.recover_from_index(file_len)? {
            return Ok(self);
        }
        let scan = self.scan(file_len, !trust_tail)?;
        if let Some(why) = scan.stopped {
            tracing::warn!(
                segment = %self.log_path().display(),
                valid_bytes = scan.valid_len,
                file_bytes = file_len,
                "log ends early ({why}); truncating the tail"
            );
        }
        if scan.valid_len < file_len {
            self.file.set_len(scan.valid_len)?;
        }
        self.size.store(scan.valid_len, Ordering::Release);
        self.next_offset.store(scan.next_offset, Ordering::Release);
        self.max_timestamp
            .store(scan.max_timestamp, Ordering::Release);
        if !trust_tail || !self.indexes_look_sane(scan.valid_len) {
            if trust_tail {
                tracing::warn!(
                    segment = %self.log_path().display(),
                    "index failed its sanity check; rebuilding it from the log"
                );
            }
            self.rebuild_indexes(config)?;
        }
        Ok(self)
    }

    /// Opens a trusted segment (sealed, or closed cleanly) by reading only
    /// what follows its last index entry: the file ends at its last batch, the
    /// index says where the last few batches start, and the time index holds
    /// the largest timestamp before them. One index interval of headers
    /// instead of every header in the segment, which on a cold page cache is
    /// the difference between milliseconds and a disk read per batch.
    /// Returns false (having changed nothing that the full scan does not
    /// set again) when the indexes do not allow it.
    fn recover_from_index(&self, file_len: u64) -> io::Result<bool> {
        let (start_pos, start_offset, ts_before) = match self.index.len() {
            0 => (0, self.base_offset, -1),
            n => {
                let (rel, pos) = parse_offset_entry(&self.index.get(n - 1));
                if self.time_index.len() != n {
                    return Ok(false);
                }
                let (ts, time_rel) = parse_time_entry(&self.time_index.get(n - 1));
                if time_rel != rel || u64::from(pos) >= file_len {
                    return Ok(false);
                }
                (u64::from(pos), self.base_offset + i64::from(rel), ts)
            }
        };
        let tail = self.scan_from(start_pos, start_offset, file_len, false)?;
        if tail.stopped.is_some() {
            return Ok(false);
        }
        self.size.store(file_len, Ordering::Release);
        self.next_offset.store(tail.next_offset, Ordering::Release);
        self.max_timestamp
            .store(tail.max_timestamp.max(ts_before), Ordering::Release);
        Ok(self.indexes_look_sane(file_len))
    }

    /// Walks the batches from the start. With `check_crc`, every batch is fully
    /// validated; otherwise only lengths and magic (enough to find the end).
    pub fn scan(&self, file_len: u64, check_crc: bool) -> io::Result<ScanResult> {
        self.scan_from(0, self.base_offset, file_len, check_crc)
    }

    /// As [`scan`](Self::scan), from the batch at `pos` whose base offset is
    /// `offset`; `valid_len` is then the end position reached.
    fn scan_from(
        &self,
        pos: u64,
        offset: i64,
        file_len: u64,
        check_crc: bool,
    ) -> io::Result<ScanResult> {
        let mut pos = pos;
        let mut next_offset = offset;
        let mut max_ts = -1i64;
        let mut batches = 0;
        let mut header = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        let stopped = loop {
            if pos == file_len {
                break None;
            }
            if pos + HEADER_LEN as u64 > file_len {
                break Some("a partial batch header at the end");
            }
            self.file.read_exact_at(&mut header, pos)?;
            let Ok(h) = BatchHeader::parse(&header) else {
                break Some("unreadable header");
            };
            if h.batch_length <= 0 {
                break Some("batchLength <= 0 (pre-allocated zero tail)");
            }
            if h.magic != 2 {
                break Some("magic != 2");
            }
            let Some(len) = h.total_len() else {
                break Some("batchLength too small for a header");
            };
            if pos + len as u64 > file_len {
                break Some("a batch runs past the end of the file");
            }
            if h.base_offset < next_offset {
                break Some("offsets go backwards");
            }
            if check_crc {
                body.resize(len, 0);
                self.file.read_exact_at(&mut body, pos)?;
                // Stored batches: compaction leaves gaps inside them.
                if let Err(e) = batch::validate_stored(&body) {
                    tracing::warn!(
                        segment = %self.log_path().display(),
                        position = pos,
                        "bad batch: {e}"
                    );
                    break Some("a batch failed validation (CRC, counts or length)");
                }
            }
            next_offset = h.last_offset() + 1;
            max_ts = max_ts.max(h.max_timestamp);
            batches += 1;
            pos += len as u64;
        };
        Ok(ScanResult {
            valid_len: pos,
            next_offset,
            max_timestamp: max_ts,
            batches,
            stopped,
        })
    }

    /// The indexes must have as many entries each, offset index entries must
    /// have increasing offsets and positions inside the log, and the last one
    /// must point at a batch with that offset.
    fn indexes_look_sane(&self, size: u64) -> bool {
        let n = self.index.len();
        // The two indexes get their entries together.
        if self.time_index.len() != n {
            return false;
        }
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..n {
            let (rel, pos) = parse_offset_entry(&self.index.get(i));
            if pos == 0 || u64::from(pos) >= size {
                return false;
            }
            if let Some((prel, ppos)) = prev
                && (rel <= prel || pos <= ppos)
            {
                return false;
            }
            prev = Some((rel, pos));
        }
        if let Some((rel, pos)) = prev {
            match self.header_at(u64::from(pos), size) {
                Ok(Some(h)) if h.base_offset == self.base_offset + i64::from(rel) => {}
                _ => return false,
            }
        }
        let mut prev_ts = i64::MIN;
        for i in 0..self.time_index.len() {
            let (ts, rel) = parse_time_entry(&self.time_index.get(i));
            if ts < prev_ts || self.base_offset + i64::from(rel) > self.next_offset() {
                return false;
            }
            prev_ts = ts;
        }
        true
    }

    /// Rebuilds both indexes by walking batch headers.
    fn rebuild_indexes(&self, config: &LogConfig) -> io::Result<()> {
        self.index.truncate_entries(0);
        self.time_index.truncate_entries(0);
        let size = self.size();
        let mut pos = 0u64;
        let mut since_entry = 0u64;
        let mut max_ts_before = -1i64;
        while let Some(h) = self.header_at(pos, size)? {
            let Some(len) = h.total_len() else { break };
            if since_entry >= config.index_interval_bytes && pos > 0 {
                let rel = (h.base_offset - self.base_offset) as u32;
                self.index.push(offset_entry(rel, pos as u32));
                self.time_index.push(time_entry(max_ts_before, rel));
                since_entry = 0;
            }
            since_entry += len as u64;
            max_ts_before = max_ts_before.max(h.max_timestamp);
            pos += len as u64;
        }
        Ok(())
    }

    /// The header of the batch at `pos`, if a whole header lies below `size`.
    pub fn header_at(&self, pos: u64, size: u64) -> io::Result<Option<BatchHeader>> {
        self.read_header(pos, size, false)
    }

    /// As [`header_at`](Self::header_at); with `nowait`, only from the page
    /// cache (`preadv2(RWF_NOWAIT)`): an error of kind `WouldBlock` when the
    /// header's page is not there, instead of waiting for the disk.
    fn read_header(&self, pos: u64, size: u64, nowait: bool) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > size {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        if nowait {
            let n = rustix::io::preadv2(
                &self.file,
                &mut [io::IoSliceMut::new(&mut header)],
                pos,
                rustix::io::ReadWriteFlags::NOWAIT,
            )
            .map_err(|e| match e {
                // Not cached, or a file system without RWF_NOWAIT.
                rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP => {
                    io::Error::from(io::ErrorKind::WouldBlock)
                }
                e => io::Error::from(e),
            })?;
            if n < HEADER_LEN {
                // Part of the header is on a page that is not cached.
                return Err(io::ErrorKind::WouldBlock.into());
            }
        } else {
            self.file.read_exact_at(&mut header, pos)?;
        }
        Ok(BatchHeader::parse(&header).ok())
    }

    /// The position and header of the batch that holds `offset`, or of the
    /// first batch after it, below `size`.
    pub fn find_batch(&self, offset: i64, size: u64) -> io::Result<Option<(u64, BatchHeader)>> {
        self.find_batch_with(offset, size, false)
    }

    /// As [`find_batch`](Self::find_batch); `nowait` as in `read_header`.
    pub fn find_batch_with(
        &self,
        offset: i64,
        size: u64,
        nowait: bool,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let mut pos = 0u64;
        if offset > self.base_offset {
            let target = offset - self.base_offset;
            if let Some((_, e)) = self
                .index
                .floor(target, |e| i64::from(parse_offset_entry(e).0))
            {
                pos = u64::from(parse_offset_entry(&e).1);
            }
        }
        while let Some(h) = self.read_header(pos, size, nowait)? {
            let Some(len) = h.total_len() else {
                return Ok(None);
            };
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += len as u64;
        }
        Ok(None)
    }

    /// The first batch whose maxTimestamp is ≥ `timestamp`, as (position, header).
    pub fn find_timestamp(
        &self,
        timestamp: i64,
        size: u64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        // Time entries record the max timestamp of everything before a batch:
        // start from the last entry still below the target.
        let mut start_offset = self.base_offset;
        if let Some((_, e)) = self
            .time_index
            .floor(timestamp - 1, |e| parse_time_entry(e).0)
        {
            start_offset = self.base_offset + i64::from(parse_time_entry(&e).1);
        }
        let Some((mut pos, _)) = self.find_batch(start_offset, size)? else {
            return Ok(None);
        };
        while let Some(h) = self.header_at(pos, size)? {
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

    /// Cuts the segment back to `len` bytes (a truncation of the log's tail).
    pub fn truncate_to(&self, len: u64, next_offset: i64, config: &LogConfig) -> io::Result<()> {
        self.file.set_len(len)?;
        self.size.store(len, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        self.txn_index.truncate_from(next_offset)?;
        self.rebuild_indexes(config)
    }

    /// Trims the files to their used lengths (clean shutdown).
    pub fn trim(&self) -> io::Result<()> {
        self.file.set_len(self.size())?;
        self.file.sync_all()?;
        self.txn_index.sync()?;
        self.index.trim()?;
        self.time_index.trim()
    }

    /// Unlinks the segment's files. Readers that hold the segment keep reading
    /// through their open descriptor until they let go.
    pub fn delete(&self) -> io::Result<()> {
        self.deleted.store(true, Ordering::Release);
        for path in [
            self.log_path(),
            self.index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.txn_index.delete()
    }

    /// Marks the segment's files gone (the cleaner replaced them).
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Forces the segment's data and size, and its transaction index, to
    /// disk (the other indexes are rebuilt if a crash damages them; the
    /// transaction index of a trusted segment is not).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()?;
        self.txn_index.sync()
    }
}

/// The appender's handle on the active segment: where the next batch goes,
/// how (mapped memcpy or `pwrite`), and when the next index entry is due.
#[derive(Debug)]
pub struct SegmentWriter {
    /// The pre-allocated mapping of the whole segment, on the mmap path.
    map: Option<MmapRaw>,
    capacity: u64,
    since_index: u64,
    max_ts_before: i64,
}

impl SegmentWriter {
    /// Prepares `seg` for appends. On the mmap path the file is pre-allocated
    /// to `segment_bytes` with `fallocate` (so a full disk fails here, not as a
    /// SIGBUS on a later store) and mapped.
    pub fn new(seg: &Segment, config: &LogConfig) -> io::Result<SegmentWriter> {
        let size = seg.size();
        // The indexes are written through shared mappings of files sized
        // with `set_len`, i.e. holes: on a full disk the first store into a
        // new page would be a SIGBUS. Their blocks are reserved now, so a
        // full disk fails this call instead.
        for index in [seg.index.file(), seg.time_index.file()] {
            let len = index.metadata()?.len();
            match rustix::fs::fallocate(index, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
                Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let map = match config.append_path {
            AppendPath::Mmap => {
                let capacity = config.segment_bytes.max(size);
                rustix::fs::fallocate(&seg.file, rustix::fs::FallocateFlags::empty(), 0, capacity)?;
                Some(
                    memmap2::MmapOptions::new()
                        .len(capacity as usize)
                        .map_raw(&seg.file)?,
                )
            }
            AppendPath::Pwrite => None,
        };
        Ok(SegmentWriter {
            map,
            capacity: config.segment_bytes.max(size),
            since_index: 0,
            max_ts_before: seg.max_timestamp(),
        })
    }

    /// Room left for batches.
    pub fn room(&self, seg: &Segment) -> u64 {
        self.capacity.saturating_sub(seg.size())
    }

    /// Appends whole, already validated batches, then publishes them to
    /// readers. `batches` lists (start in `bytes`, header) where each header
    /// carries the offset and leader epoch to store: those two fields (outside
    /// the CRC) are written from the header, the rest comes from `bytes`
    /// untouched — so the caller's buffer (a slice of the request frame) is
    /// never copied or modified in user space.
    pub fn append(
        &mut self,
        seg: &Segment,
        bytes: &[u8],
        batches: &[(usize, BatchHeader)],
        config: &LogConfig,
    ) -> io::Result<u64> {
        let pos = seg.size();
        if pos + bytes.len() as u64 > self.capacity {
            return Err(io::Error::other("batches do not fit the segment"));
        }
        match &self.map {
            Some(map) => {
                // SAFETY: [pos, pos + len) lies inside the mapping (capacity
                // is the mapped length, checked above); readers never read past
                // `size`, which is published only after these stores, and only
                // this writer writes.
                unsafe {
                    let dst = map.as_mut_ptr().add(pos as usize);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
                    for (start, h) in batches {
                        let prefix = header_prefix(h);
                        std::ptr::copy_nonoverlapping(
                            prefix.as_ptr(),
                            dst.add(*start),
                            prefix.len(),
                        );
                    }
                }
            }
            None => {
                // One pwritev: per batch, the rewritten 16-byte prefix and the
                // caller's bytes after it.
                let prefixes: Vec<[u8; 16]> =
                    batches.iter().map(|(_, h)| header_prefix(h)).collect();
                let mut slices = Vec::with_capacity(batches.len() * 2);
                for (i, (start, _)) in batches.iter().enumerate() {
                    let end = batches.get(i + 1).map_or(bytes.len(), |(s, _)| *s);
                    slices.push(io::IoSlice::new(&prefixes[i]));
                    slices.push(io::IoSlice::new(&bytes[start + 16..end]));
                }
                pwritev_all(&seg.file, &mut slices, pos)?;
            }
        }
        let mut next = seg.next_offset();
        let mut max_ts = seg.max_timestamp();
        for (i, (start, h)) in batches.iter().enumerate() {
            let len = batches
                .get(i + 1)
                .map_or(bytes.len(), |(next_start, _)| *next_start)
                - start;
            let batch_pos = pos + *start as u64;
            if self.since_index >= config.index_interval_bytes && batch_pos > 0 {
                let rel = (h.base_offset - seg.base_offset) as u32;
                seg.index.push(offset_entry(rel, batch_pos as u32));
                seg.time_index.push(time_entry(self.max_ts_before, rel));
                self.since_index = 0;
            }
            self.since_index += len as u64;
            self.max_ts_before = self.max_ts_before.max(h.max_timestamp);
            max_ts = max_ts.max(h.max_timestamp);
            next = h.last_offset() + 1;
        }
        seg.max_timestamp.store(max_ts, Ordering::Release);
        seg.next_offset.store(next, Ordering::Release);
        // The size is not published here: readers bound what they send by
        // it, so it must not move before the partition's end offset does
        // (see `Partition::append`).
        Ok(pos + bytes.len() as u64)
    }

    /// Forces appended bytes to disk, with any transaction index entries
    /// written since the last time. Both paths end in the page cache, so
    /// `fdatasync` covers the mapped pages too.
    pub fn sync(&self, seg: &Segment) -> io::Result<()> {
        seg.file.sync_data()?;
        seg.txn_index.sync()
    }

    /// Unmaps and cuts the file to its data (when the segment rolls or the log
    /// closes), so sealed segments have no zero tail. Syncing is the caller's.
    pub fn seal(self, seg: &Segment) -> io::Result<()> {
        drop(self.map);
        seg.file.set_len(seg.size())
    }
}

/// baseOffset, batchLength and partitionLeaderEpoch as the log stores them.
fn header_prefix(h: &BatchHeader) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&h.base_offset.to_be_bytes());
    p[8..12].copy_from_slice(&h.batch_length.to_be_bytes());
    p[12..].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    p
}

/// `pwritev` until every slice is written (short writes continue where they
/// stopped; at most IOV_MAX slices per call).
fn pwritev_all(file: &File, mut slices: &mut [io::IoSlice<'_>], mut pos: u64) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    while !slices.is_empty() {
        let take = slices.len().min(IOV_MAX);
        let n = match rustix::io::pwritev(file, &slices[..take], pos) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        pos += n as u64;
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (Kafka's timestamps); 0 if the clock is
/// before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
