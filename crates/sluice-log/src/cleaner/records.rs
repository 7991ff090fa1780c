//! The records inside a batch, for the cleaner: walking them (after
//! decompressing the batch with its own codec), and writing a batch again
//! with some of them left out.
//!
//! The codecs are `kafka_protocol`'s (`kafka_protocol::compression`: gzip,
//! snappy in Kafka's xerial framing, lz4 frames, zstd) — the ones its
//! `RecordBatchEncoder`/`RecordBatchDecoder` use. Those two are not used
//! here whole: the encoder derives baseOffset, lastOffsetDelta and
//! baseTimestamp from the records it is given, cannot write an empty batch
//! or a delete horizon, and its `Record` keeps headers in a map (a record's
//! repeated header keys would be lost) and drops record attributes. A
//! cleaned batch must keep its header fields exactly, so the records are
//! copied byte for byte and only the header is written anew.

use std::borrow::Cow;
use std::io;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{self, BatchError, BatchHeader, HEADER_LEN, LOG_OVERHEAD, read_varint};

/// Attribute bit 6: the batch's baseTimestamp is its delete horizon (KIP-534):
/// tombstones in it may go once the clock passes it.
pub const DELETE_HORIZON_BIT: i16 = 1 << 6;
/// Attribute bit 5: a control batch (transaction markers).
pub const CONTROL_BIT: i16 = crate::batch::CONTROL_BIT;

/// Codec ids of the attributes' low three bits.
pub const NONE: u8 = 0;
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

/// One record of a batch, borrowed from the (decompressed) records bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    pub attributes: u8,
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    /// True for a tombstone (a null value).
    pub null_value: bool,
    /// From the key's length to the end of the record: key, value, headers.
    pub tail: &'a [u8],
    /// The whole record, its length prefix included.
    pub whole: &'a [u8],
}

fn bad(index: i32, record_count: i32, why: &'static str) -> BatchError {
    BatchError::BadRecord {
        index,
        record_count,
        why,
    }
}

/// Reads a varint length and that many bytes (None for length −1).
fn read_bytes<'a>(b: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(b, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
    let out = &b[*pos..end];
    *pos = end;
    Some(Some(out))
}

/// Walks exactly `count` records filling `buf` (the records section of a
/// batch, decompressed).
pub(crate) fn parse_records(buf: &[u8], count: i32) -> Result<Vec<RawRecord<'_>>, BatchError> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(buf.len()));
    let mut pos = 0usize;
    for index in 0..count {
        let start = pos;
        let len = read_varint(buf, &mut pos).ok_or(bad(index, count, "truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad(index, count, "negative length"))?;
        let end = pos.checked_add(len).filter(|&e| e <= buf.len()).ok_or(bad(
            index,
            count,
            "length runs past the batch",
        ))?;
        let rec = &buf[pos..end];
        let attributes = *rec.first().ok_or(bad(index, count, "empty record"))?;
        let mut at = 1usize;
        let timestamp_delta =
            read_varint(rec, &mut at).ok_or(bad(index, count, "bad timestampDelta"))?;
        let offset_delta = read_varint(rec, &mut at).ok_or(bad(index, count, "bad offsetDelta"))?;
        let tail_start = at;
        let key = read_bytes(rec, &mut at).ok_or(bad(index, count, "bad key"))?;
        let value = read_bytes(rec, &mut at).ok_or(bad(index, count, "bad value"))?;
        out.push(RawRecord {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            null_value: value.is_none(),
            tail: &rec[tail_start..],
            whole: &buf[start..end],
        });
        pos = end;
    }
    if pos != buf.len() {
        return Err(bad(count, count, "bytes after the last record"));
    }
    Ok(out)
}

fn codec_error(codec: u8, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("codec {codec} ({}): {e}", codec_name(codec)),
    )
}

/// The name Kafka gives a codec id.
pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        NONE => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// Decompresses a batch's records section with `codec`.
pub(crate) fn decompress(codec: u8, data: &[u8]) -> io::Result<Bytes> {
    let mut src = data;
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        GZIP => Gzip::decompress(&mut src, take),
        SNAPPY => Snappy::decompress(&mut src, take),
        LZ4 => Lz4::decompress(&mut src, take),
        ZSTD => Zstd::decompress(&mut src, take),
        other => return Err(codec_error(other, "not a Kafka compression codec")),
    };
    out.map_err(|e| codec_error(codec, e))
}

/// Compresses `data` with `codec` onto the end of `out`.
pub(crate) fn compress(codec: u8, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(data);
        Ok(())
    };
    let done = match codec {
        NONE => {
            out.extend_from_slice(data);
            Ok(())
        }
        GZIP => Gzip::compress(out, fill),
        SNAPPY => Snappy::compress(out, fill),
        LZ4 => Lz4::compress(out, fill),
        ZSTD => Zstd::compress(out, fill),
        other => return Err(codec_error(other, "not a Kafka compression codec")),
    };
    done.map_err(|e| codec_error(codec, e))
}

/// The records section of a whole batch, decompressed when it is compressed.
pub(crate) fn records_section<'a>(
    batch_bytes: &'a [u8],
    h: &BatchHeader,
) -> io::Result<Cow<'a, [u8]>> {
    let body = batch_bytes.get(HEADER_LEN..).unwrap_or_default();
    match h.compression() {
        NONE => Ok(Cow::Borrowed(body)),
        codec => Ok(Cow::Owned(decompress(codec, body)?.into())),
    }
}

/// Append-side rule of a compacted topic (Kafka's LogValidator): every record
/// of every data batch has a key. Compressed batches are decompressed to
/// check, as Kafka does for compacted topics.
pub(crate) fn require_keys(batch_bytes: &[u8], h: &BatchHeader) -> Result<(), BatchError> {
    if h.attributes & CONTROL_BIT != 0 {
        return Ok(());
    }
    let records = records_section(batch_bytes, h).map_err(|_| {
        bad(
            0,
            h.record_count,
            "the compressed records do not decompress",
        )
    })?;
    for (index, r) in parse_records(&records, h.record_count)?.iter().enumerate() {
        if r.key.is_none() {
            return Err(BatchError::MissingKey {
                index: index as i32,
            });
        }
        // Offsets inside the batch are 0, 1, 2, … (Kafka's validator asks
        // the same): a record claiming an offset past its batch would shadow
        // later writes of its key in the cleaner's map.
        if r.offset_delta != index as i64 {
            return Err(bad(
                index as i32,
                h.record_count,
                "record offset deltas must run 0, 1, 2, … within a batch",
            ));
        }
    }
    Ok(())
}

/// Kafka's zigzag varint/varlong.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
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

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Appends `r` to `out` with its timestamp delta now relative to a base
/// timestamp moved by `rebase` (new delta = old delta − rebase).
pub(crate) fn put_record(out: &mut Vec<u8>, r: &RawRecord<'_>, rebase: i64) {
    if rebase == 0 {
        out.extend_from_slice(r.whole);
        return;
    }
    let ts = r.timestamp_delta.wrapping_sub(rebase);
    let len = 1 + varint_len(ts) + varint_len(r.offset_delta) + r.tail.len();
    put_varint(out, len as i64);
    out.push(r.attributes);
    put_varint(out, ts);
    put_varint(out, r.offset_delta);
    out.extend_from_slice(r.tail);
}

/// Writes a whole batch onto `out`: the header from `h` (baseOffset,
/// partitionLeaderEpoch, attributes, lastOffsetDelta, timestamps, producer
/// fields, recordCount as given; batchLength and CRC computed), then
/// `records` (uncompressed, already encoded) compressed with the codec named
/// by `h`'s attributes.
pub(crate) fn write_batch(out: &mut Vec<u8>, h: &BatchHeader, records: &[u8]) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batchLength, below
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.record_count.to_be_bytes());
    if h.record_count > 0 {
        compress(h.compression(), records, out)?;
    }
    let len = out.len() - start;
    let batch_length = i32::try_from(len - LOG_OVERHEAD)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "batch over 2 GiB"))?;
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = batch::compute_crc(&out[start..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// One record to build into a batch with [`build_batch`].
#[derive(Debug, Clone, Copy)]
pub struct RecordSpec<'a> {
    pub key: Option<&'a [u8]>,
    /// None: a tombstone.
    pub value: Option<&'a [u8]>,
    /// The record's timestamp − the batch's base timestamp.
    pub timestamp_delta: i64,
}

/// Builds a valid batch of `records` (keys, values or tombstones) compressed
/// with `codec` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), producer id −1:
/// for tests and tools, as `batch::build_batch` is for keyless records.
pub fn build_batch(base_timestamp: i64, records: &[RecordSpec<'_>], codec: u8) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        put_varint(&mut rec, r.timestamp_delta);
        put_varint(&mut rec, i as i64);
        for field in [r.key, r.value] {
            match field {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let count = records.len() as i32;
    let max_delta = records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
    let h = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: i16::from(codec & 7),
        last_offset_delta: (count - 1).max(0),
        base_timestamp,
        max_timestamp: base_timestamp + max_delta,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: count,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    // Only an unknown codec fails, and `codec & 7` of 5..7 is one: the
    // records then go uncompressed with the codec bits as asked (invalid,
    // which is what a caller asking for it gets).
    if write_batch(&mut out, &h, &body).is_err() {
        out.clear();
        let plain = BatchHeader { attributes: 0, ..h };
        let _ = write_batch(&mut out, &plain, &body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(key: &'a str, value: Option<&'a str>) -> RecordSpec<'a> {
        RecordSpec {
            key: Some(key.as_bytes()),
            value: value.map(str::as_bytes),
            timestamp_delta: 3,
        }
    }

    #[test]
    fn every_codec_round_trips_and_batches_validate() {
        let recs = [spec("a", Some("1")), spec("b", None), spec("a", Some("3"))];
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let b = build_batch(1000, &recs, codec);
            let h = batch::validate(&b).unwrap_or_else(|e| panic!("{codec}: {e}"));
            assert_eq!(h.compression(), codec);
            let section = records_section(&b, &h).expect("decompress");
            let parsed = parse_records(&section, h.record_count).expect("parse");
            assert_eq!(parsed.len(), 3);
            assert_eq!(parsed[1].key, Some(&b"b"[..]));
            assert!(parsed[1].null_value && !parsed[0].null_value);
            assert_eq!(parsed[2].offset_delta, 2);
            assert_eq!(h.max_timestamp, 1003);
            // kafka_protocol's own decoder agrees.
            let mut buf = Bytes::from(b.clone());
            let set =
                kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).expect("decode");
            assert_eq!(set.records.len(), 3);
            assert_eq!(set.records[2].value.as_deref(), Some(&b"3"[..]));
            assert!(set.records[1].value.is_none());
            assert!(require_keys(&b, &h).is_ok());
        }
    }

    #[test]
    fn rebased_records_keep_their_timestamps() {
        let b = build_batch(1000, &[spec("k", Some("v"))], NONE);
        let h = batch::validate(&b).expect("valid");
        let section = records_section(&b, &h).expect("records");
        let recs = parse_records(&section, 1).expect("parse");
        let mut out = Vec::new();
        // A new base of 1000 + 86_400_000: the delta goes negative.
        put_record(&mut out, &recs[0], 86_400_000);
        let again = parse_records(&out, 1).expect("reparse");
        assert_eq!(again[0].timestamp_delta, 3 - 86_400_000);
        assert_eq!(again[0].tail, recs[0].tail);
    }

    #[test]
    fn keyless_records_are_found_in_plain_and_compressed_batches() {
        for codec in [NONE, ZSTD] {
            let b = build_batch(
                0,
                &[
                    spec("a", Some("1")),
                    RecordSpec {
                        key: None,
                        value: Some(b"x"),
                        timestamp_delta: 0,
                    },
                ],
                codec,
            );
            let h = batch::validate(&b).expect("valid");
            assert_eq!(
                require_keys(&b, &h),
                Err(BatchError::MissingKey { index: 1 })
            );
        }
        let plain = batch::build_batch(0, &[b"v"]);
        let h = batch::validate(&plain).expect("valid");
        assert_eq!(
            require_keys(&plain, &h),
            Err(BatchError::MissingKey { index: 0 })
        );
    }
}
