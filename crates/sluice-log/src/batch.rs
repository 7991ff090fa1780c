//! Kafka RecordBatch v2 headers: parsing, validation and the two in-place
//! rewrites the broker makes (baseOffset, partitionLeaderEpoch), both outside
//! the CRC so the batch is never re-encoded.
//!
//! Layout (61 bytes): baseOffset i64 @0 · batchLength i32 @8 (= total − 12) ·
//! partitionLeaderEpoch i32 @12 · magic i8 @16 · crc u32 @17 (CRC-32C of bytes
//! 21..end) · attributes i16 @21 · lastOffsetDelta i32 @23 · baseTimestamp i64 @27
//! · maxTimestamp i64 @35 · producerId i64 @43 · producerEpoch i16 @51 ·
//! baseSequence i32 @53 · recordCount i32 @57.

/// Size of the RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{0} bytes cannot hold a 61-byte RecordBatch header")]
    TooShort(usize),
    #[error("batchLength {declared} does not match the {actual} bytes that follow it")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("magic {0}: only RecordBatch v2 (magic 2) is supported")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("recordCount {0} is not positive")]
    BadRecordCount(i32),
    #[error("lastOffsetDelta {last_offset_delta} does not fit recordCount {record_count}")]
    BadOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("record {index} of {record_count}: {why}")]
    BadRecord {
        index: i32,
        record_count: i32,
        why: &'static str,
    },
    /// A record without a key in a batch for a compacted topic (Kafka's
    /// "Compacted topic cannot accept message without key"; INVALID_RECORD).
    #[error("record {index}: a compacted topic cannot accept a record without a key")]
    MissingKey { index: i32 },
    /// A control batch (transaction marker) in a producer's records: only
    /// the transaction coordinator writes markers
    /// (`Partition::append_control`), as in Kafka's LogValidator.
    #[error("clients may not write control batches")]
    ControlBatchFromClient,
    /// A control batch whose one record is not a transaction marker Sluice
    /// can read (key: version 0 and type 0 or 1; value: version 0 and the
    /// coordinator epoch).
    #[error("control batch is not a version-0 COMMIT or ABORT marker: {0}")]
    BadControlRecord(&'static str),
    /// A non-transactional batch from a producer with an open transaction
    /// (Kafka's INVALID_TXN_STATE).
    #[error("producer {producer_id} has an open transaction: its batches must be transactional")]
    NotTransactional { producer_id: i64 },
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(w)
}

/// The fields of a RecordBatch v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header fields from the first 61 bytes; checks nothing.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::TooShort(bytes.len()));
        }
        Ok(BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32_at(bytes, 17),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// Total bytes of the batch on disk (batchLength + 12), if batchLength is sane.
    pub fn total_len(&self) -> Option<usize> {
        (self.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32)
            .then(|| self.batch_length as usize + LOG_OVERHEAD)
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The compression codec id (attributes bits 0–2).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }

    /// Attributes bit 4: part of a transaction (data or marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Attributes bit 5: a control batch (a transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Attribute bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction markers).
pub const CONTROL_BIT: i16 = 1 << 5;

/// A transaction marker: the one record of a control batch (Kafka's
/// `EndTransactionMarker`). Key: version i16 (0), type i16 (0 ABORT, 1
/// COMMIT); value: version i16 (0), coordinatorEpoch i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker in a whole control batch (`bytes`, header `h`). None for a
/// control batch the cleaner emptied (no record: Kafka ignores those too);
/// an error when its record is not a marker this version of the format
/// defines. Control batches are written uncompressed; a compressed one is
/// refused rather than decompressed here.
pub fn parse_marker(bytes: &[u8], h: &BatchHeader) -> Result<Option<TxnMarker>, BatchError> {
    if h.record_count == 0 {
        return Ok(None);
    }
    if h.compression() != 0 {
        return Err(BatchError::BadControlRecord("compressed"));
    }
    let bad = BatchError::BadControlRecord;
    let records = bytes.get(HEADER_LEN..).ok_or(bad("no records"))?;
    let mut pos = 0usize;
    let len = read_varint(records, &mut pos).ok_or(bad("record length"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= records.len())
        .ok_or(bad("record length"))?;
    let rec = &records[pos..end];
    let mut at = 1usize; // attributes
    read_varint(rec, &mut at).ok_or(bad("timestampDelta"))?;
    read_varint(rec, &mut at).ok_or(bad("offsetDelta"))?;
    let mut field = |what: &'static str| -> Result<&[u8], BatchError> {
        let n = read_varint(rec, &mut at).ok_or(bad(what))?;
        let n = usize::try_from(n).map_err(|_| bad(what))?;
        let start = at;
        at = at
            .checked_add(n)
            .filter(|&e| e <= rec.len())
            .ok_or(bad(what))?;
        Ok(&rec[start..at])
    };
    let key = field("key")?;
    let value = field("value")?;
    if key.len() < 4 || i16_at(key, 0) != 0 {
        return Err(bad("key version"));
    }
    let commit = match i16_at(key, 2) {
        0 => false,
        1 => true,
        _ => return Err(bad("control type")),
    };
    // Kafka reads the value's version and epoch and ignores what follows.
    if value.len() < 6 || i16_at(value, 0) != 0 {
        return Err(bad("value version"));
    }
    Ok(Some(TxnMarker {
        commit,
        coordinator_epoch: i32_at(value, 2),
    }))
}

/// A control batch holding one transaction marker, as Kafka's
/// `MemoryRecords.withEndTransactionMarker` lays it out: producer id and
/// epoch set, baseSequence −1, attributes transactional | control, one
/// uncompressed record (timestamp `timestamp`, offset delta 0, the marker's
/// key and value, no headers). baseOffset 0 and leader epoch −1, for the
/// append to assign.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut body = vec![0u8]; // attributes
    put_varint(&mut body, 0); // timestampDelta
    put_varint(&mut body, 0); // offsetDelta
    put_varint(&mut body, key.len() as i64);
    body.extend_from_slice(&key);
    put_varint(&mut body, value.len() as i64);
    body.extend_from_slice(&value);
    put_varint(&mut body, 0); // headers
    let mut records = Vec::with_capacity(body.len() + 1);
    put_varint(&mut records, body.len() as i64);
    records.extend_from_slice(&body);
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&(TRANSACTIONAL_BIT | CONTROL_BIT).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // record count
    b.extend_from_slice(&records);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Kafka's zigzag varint.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Sets the transactional attribute bit and the producer fields (the CRC
/// recomputed): a transactional producer's batch, for tests and tools.
pub fn set_transactional(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | TRANSACTIONAL_BIT;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    set_producer(batch, producer_id, epoch, base_sequence);
}

/// CRC-32C of the batch's bytes from `attributes` to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START.min(batch.len())..])
}

/// Checks one complete batch (exactly `bytes`): length, magic, counts, CRC.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(bytes)?;
    if h.magic != 2 {
        return Err(BatchError::UnsupportedMagic(h.magic));
    }
    if h.total_len() != Some(bytes.len()) {
        return Err(BatchError::LengthMismatch {
            declared: i64::from(h.batch_length),
            actual: bytes.len() - LOG_OVERHEAD,
        });
    }
    if h.record_count <= 0 {
        return Err(BatchError::BadRecordCount(h.record_count));
    }
    // A producer's batch numbers its records 0..count-1.
    if h.last_offset_delta != h.record_count - 1 {
        return Err(BatchError::BadOffsetDelta {
            last_offset_delta: h.last_offset_delta,
            record_count: h.record_count,
        });
    }
    let computed = compute_crc(bytes);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    // Uncompressed records are checked one by one, as Kafka's LogValidator
    // does: a CRC only proves the producer sent these bytes, not that a
    // consumer can parse them. (Compressed batches would have to be
    // decompressed first; their header checks above still apply.)
    if h.compression() == 0 {
        check_records(&bytes[HEADER_LEN..], h.record_count, None)?;
    }
    Ok(h)
}

/// Checks one complete batch as the log may hold it once compacted: as
/// [`validate`], except that the cleaner leaves gaps — `recordCount` may be
/// anything from 0 (a batch kept empty for its producer state or its last
/// offset) to `lastOffsetDelta + 1`, and offset deltas need only increase
/// within `0..=lastOffsetDelta`. Recovery scans segments with this; appends
/// use the strict [`validate`].
pub fn validate_stored(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(bytes)?;
    if h.magic != 2 {
        return Err(BatchError::UnsupportedMagic(h.magic));
    }
    if h.total_len() != Some(bytes.len()) {
        return Err(BatchError::LengthMismatch {
            declared: i64::from(h.batch_length),
            actual: bytes.len() - LOG_OVERHEAD,
        });
    }
    if h.record_count < 0 {
        return Err(BatchError::BadRecordCount(h.record_count));
    }
    if h.last_offset_delta < 0 || h.last_offset_delta < h.record_count - 1 {
        return Err(BatchError::BadOffsetDelta {
            last_offset_delta: h.last_offset_delta,
            record_count: h.record_count,
        });
    }
    let computed = compute_crc(bytes);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    if h.compression() == 0 {
        check_records(
            &bytes[HEADER_LEN..],
            h.record_count,
            Some(h.last_offset_delta),
        )?;
    }
    Ok(h)
}

/// Walks `record_count` records that must fill `records` exactly: each a
/// length, attributes, timestampDelta, offsetDelta (0, 1, 2, ...; or, with
/// `stored_last_delta`, increasing up to it: a compacted batch), key, value
/// and headers, with every length inside its record.
fn check_records(
    records: &[u8],
    record_count: i32,
    stored_last_delta: Option<i32>,
) -> Result<(), BatchError> {
    let bad = |index: i32, why: &'static str| BatchError::BadRecord {
        index,
        record_count,
        why,
    };
    let mut pos = 0usize;
    let mut prev_delta = -1i64;
    for index in 0..record_count {
        let len = read_varint(records, &mut pos).ok_or(bad(index, "truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad(index, "negative length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= records.len())
            .ok_or(bad(index, "length runs past the batch"))?;
        let record = &records[pos..end];
        let mut at = 1usize; // attributes (unused in v2)
        if record.is_empty() {
            return Err(bad(index, "empty record"));
        }
        read_varint(record, &mut at).ok_or(bad(index, "bad timestampDelta"))?;
        let delta = read_varint(record, &mut at).ok_or(bad(index, "bad offsetDelta"))?;
        let in_order = match stored_last_delta {
            None => delta == i64::from(index),
            Some(last) => delta > prev_delta && delta <= i64::from(last),
        };
        if !in_order {
            return Err(bad(index, "offsetDelta out of sequence"));
        }
        prev_delta = delta;
        // key and value: length -1 (null) or that many bytes
        for what in ["bad key", "bad value"] {
            skip_bytes(record, &mut at, true).ok_or(bad(index, what))?;
        }
        let headers = read_varint(record, &mut at).ok_or(bad(index, "bad header count"))?;
        if headers < 0 || headers as u64 > record.len() as u64 {
            return Err(bad(index, "bad header count"));
        }
        for _ in 0..headers {
            skip_bytes(record, &mut at, false).ok_or(bad(index, "bad header key"))?;
            skip_bytes(record, &mut at, true).ok_or(bad(index, "bad header value"))?;
        }
        if at != record.len() {
            return Err(bad(index, "fields do not fill the record's length"));
        }
        pos = end;
    }
    if pos != records.len() {
        return Err(bad(record_count, "bytes after the last record"));
    }
    Ok(())
}

/// Skips a varint length and that many bytes; -1 (null) only if `nullable`.
fn skip_bytes(b: &[u8], pos: &mut usize, nullable: bool) -> Option<()> {
    let len = read_varint(b, pos)?;
    if len == -1 && nullable {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    *pos = pos.checked_add(len).filter(|&end| end <= b.len())?;
    Some(())
}

/// Splits a records field into its batches, validating each; the whole input
/// must be whole batches. Returns (start, header) per batch.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let h = BatchHeader::parse(rest)?;
        let len = match h.total_len() {
            Some(len) if len <= rest.len() => len,
            _ => {
                return Err(BatchError::LengthMismatch {
                    declared: i64::from(h.batch_length),
                    actual: rest.len().saturating_sub(LOG_OVERHEAD),
                });
            }
        };
        out.push((pos, validate(&rest[..len])?));
        pos += len;
    }
    Ok(out)
}

/// Attribute bit 3: the batch's timestamps are the broker's (LogAppendTime).
pub const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;

/// Marks a whole, valid batch as LogAppendTime stamped at `now`, as Kafka
/// does: the timestamp-type attribute set, maxTimestamp = `now` (readers give
/// every record of such a batch that time), and the CRC — which covers both
/// fields — computed again.
pub fn stamp_log_append_time(batch: &mut [u8], now: i64) {
    if batch.len() < HEADER_LEN {
        return;
    }
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | TIMESTAMP_TYPE_BIT;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Overwrites baseOffset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets producerId, producerEpoch and baseSequence (inside the CRC, which is
/// recomputed): what an idempotent producer writes, for tests and tools.
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a zigzag varint (Kafka's varint/varlong) at `*pos`.
pub(crate) fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// In an uncompressed batch, the offset delta and timestamp of the first
/// record whose timestamp is ≥ `timestamp`. None for compressed batches (records would
/// have to be decompressed) or when no record qualifies or bytes are malformed.
pub fn first_record_at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
    let h = BatchHeader::parse(batch).ok()?;
    if h.compression() != 0 {
        return None;
    }
    let mut pos = HEADER_LEN;
    for _ in 0..h.record_count {
        let len = read_varint(batch, &mut pos)?;
        let start = pos;
        pos += 1; // attributes
        let ts_delta = read_varint(batch, &mut pos)?;
        let offset_delta = read_varint(batch, &mut pos)?;
        let record_ts = h.base_timestamp.saturating_add(ts_delta);
        if record_ts >= timestamp {
            return Some((offset_delta, record_ts));
        }
        pos = start.checked_add(usize::try_from(len).ok()?)?;
    }
    None
}

/// Builds a valid batch of `count` uncompressed records with the given
/// values: for tests, tools and benchmarks (the broker never builds batches).
pub fn build_batch(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<(i64, &[u8])> = values.iter().map(|v| (0, *v)).collect();
    build_batch_with_deltas(base_timestamp, &records)
}

/// As [`build_batch`], with a timestamp delta per record.
pub fn build_batch_with_deltas(base_timestamp: i64, records_in: &[(i64, &[u8])]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut records = Vec::new();
    for (i, (ts_delta, v)) in records_in.iter().enumerate() {
        let mut body = Vec::with_capacity(v.len() + 16);
        body.push(0); // attributes
        varint(&mut body, *ts_delta); // timestampDelta
        varint(&mut body, i as i64); // offsetDelta
        varint(&mut body, -1); // key: null
        varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
        varint(&mut body, 0); // no headers
        varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let count = records_in.len() as i32;
    let max_ts = base_timestamp + records_in.iter().map(|r| r.0).max().unwrap_or(0);
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites recordCount and lastOffsetDelta and fixes the CRC, so only
    /// the record walk can tell the batch lies.
    fn with_count(mut b: Vec<u8>, count: i32) -> Vec<u8> {
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn records_that_do_not_match_the_header_are_refused_even_with_a_good_crc() {
        let b = build_batch(0, &[b"one", b"two"]);
        assert!(validate(&with_count(b.clone(), 2)).is_ok());
        for count in [1, 3, 1000] {
            assert!(
                matches!(
                    validate(&with_count(b.clone(), count)),
                    Err(BatchError::BadRecord { .. })
                ),
                "recordCount {count} with two records"
            );
        }
        // A record length that runs past the batch.
        let mut long = b.clone();
        long[61] = 0x7e; // zigzag 63
        let crc = compute_crc(&long);
        long[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&long),
            Err(BatchError::BadRecord { index: 0, .. })
        ));
    }

    #[test]
    fn built_batches_validate_and_parse_back() {
        let b = build_batch(1_700_000_000_000, &[b"a", b"bc", b""]);
        let h = validate(&b).expect("valid");
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.max_timestamp, 1_700_000_000_000);
        assert_eq!(h.total_len(), Some(b.len()));
    }

    #[test]
    fn offset_and_epoch_rewrites_keep_the_crc_valid() {
        let mut b = build_batch(5, &[b"x"]);
        set_base_offset(&mut b, 12345);
        set_leader_epoch(&mut b, 7);
        let h = validate(&b).expect("still valid");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (12345, 7));
    }

    #[test]
    fn every_kind_of_bad_batch_is_named() {
        let good = build_batch(0, &[b"hello", b"world"]);
        assert_eq!(validate(&good[..40]), Err(BatchError::TooShort(40)));
        let mut magic = good.clone();
        magic[16] = 1;
        assert_eq!(validate(&magic), Err(BatchError::UnsupportedMagic(1)));
        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 0xff;
        assert!(matches!(
            validate(&crc),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut lying = good.clone();
        lying[8..12].copy_from_slice(&1000i32.to_be_bytes());
        assert!(matches!(
            validate(&lying),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut negative = good.clone();
        negative[57..61].copy_from_slice(&(-3i32).to_be_bytes());
        assert_eq!(validate(&negative), Err(BatchError::BadRecordCount(-3)));
        let mut delta = good.clone();
        delta[23..27].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(
            validate(&delta),
            Err(BatchError::BadOffsetDelta { .. })
        ));
    }

    #[test]
    fn record_timestamps_resolve_inside_an_uncompressed_batch() {
        let b = build_batch_with_deltas(1000, &[(0, b"a"), (5, b"b"), (9, b"c")]);
        assert_eq!(validate(&b).expect("valid").max_timestamp, 1009);
        assert_eq!(first_record_at_or_after(&b, 0), Some((0, 1000)));
        assert_eq!(first_record_at_or_after(&b, 1001), Some((1, 1005)));
        assert_eq!(first_record_at_or_after(&b, 1005), Some((1, 1005)));
        assert_eq!(first_record_at_or_after(&b, 1006), Some((2, 1009)));
        assert_eq!(first_record_at_or_after(&b, 1010), None);
        let mut gz = b.clone();
        gz[22] |= 1; // attributes: gzip
        assert_eq!(first_record_at_or_after(&gz, 1006), None);
        assert_eq!(
            first_record_at_or_after(&b[..70], 1009),
            None,
            "malformed: no panic"
        );
    }

    #[test]
    fn control_batches_match_kafkas_layout_and_parse_back() {
        let b = build_control_batch(
            42,
            3,
            TxnMarker {
                commit: true,
                coordinator_epoch: 7,
            },
            1000,
        );
        let h = validate(&b).expect("a valid batch");
        assert_eq!(b.len(), 78);
        assert_eq!(h.attributes, 0x30);
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 3, -1)
        );
        assert_eq!((h.record_count, h.last_offset_delta), (1, 0));
        assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 1000));
        // 78 bytes, as Kafka's markers. The record: length 16, attributes 0, tsΔ 0, offΔ 0, key of 4
        // bytes (version 0, type 1), value of 6 (version 0, epoch 7), no
        // headers.
        assert_eq!(
            &b[HEADER_LEN..],
            &[0x20, 0, 0, 0, 0x08, 0, 0, 0, 1, 0x0c, 0, 0, 0, 0, 0, 7, 0][..]
        );
        assert_eq!(
            parse_marker(&b, &h),
            Ok(Some(TxnMarker {
                commit: true,
                coordinator_epoch: 7
            }))
        );
        let abort = build_control_batch(
            42,
            3,
            TxnMarker {
                commit: false,
                coordinator_epoch: -1,
            },
            5,
        );
        let ah = validate(&abort).expect("valid");
        assert_eq!(
            parse_marker(&abort, &ah),
            Ok(Some(TxnMarker {
                commit: false,
                coordinator_epoch: -1
            }))
        );
        // kafka_protocol's decoder reads it as a control batch.
        let mut buf = bytes::Bytes::from(b.clone());
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).expect("decode");
        assert!(set.records[0].control && set.records[0].transactional);
        assert_eq!(set.records[0].key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
        // A type Kafka does not define is refused.
        let mut bad = b.clone();
        bad[HEADER_LEN + 8] = 5;
        let crc = compute_crc(&bad);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let bh = validate(&bad).expect("still a valid batch");
        assert!(parse_marker(&bad, &bh).is_err());
    }

    #[test]
    fn split_requires_whole_batches() {
        let mut two = build_batch(0, &[b"a"]);
        two.extend_from_slice(&build_batch(1, &[b"b", b"c"]));
        let parts = split_batches(&two).expect("two batches");
        assert_eq!(parts.len(), 2);
        assert!(split_batches(&two[..two.len() - 1]).is_err());
    }
}
