//! RecordBatch v2 in and out: building a batch from records, and walking
//! the whole batches of a records field (a fetch may end mid-batch: the
//! broker sends up to its byte limit, so the last batch can be cut short).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_log::batch::{BatchHeader, HEADER_LEN};

use crate::ClientError;

/// A record as a plain (non-idempotent, non-transactional) producer writes
/// it; `offset` is its place in the batch, from 0.
pub fn plain_record(offset: i64, timestamp_ms: i64, key: Option<Bytes>, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // `kafka_protocol`'s encoder starts a new batch wherever
        // offset − sequence changes, and derives the base sequence from the
        // first record: offset − 1 keeps every record in one batch whose
        // base sequence is −1 (none, as for any non-idempotent producer).
        // A constant −1 made one batch per record.
        sequence: (offset as i32).wrapping_sub(1),
        timestamp: timestamp_ms,
        key,
        value: Some(value),
        headers: Default::default(),
    }
}

/// Encodes records as one RecordBatch v2 (offsets relative to the batch;
/// records that differ in producer, epoch or flags would start another).
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes, ClientError> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| ClientError::Protocol(format!("encoding a batch: {e}")))?;
    Ok(buf.freeze())
}

/// One whole batch of a records field.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

/// The whole batches at the start of a records field, in order; see
/// [`batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    records: &'a [u8],
    pos: usize,
}

/// Walks the whole batches of `records` (header and bytes each), stopping
/// at a partial trailing batch or at a header whose length is not sane.
/// Headers are read, not checked: nothing here verifies a CRC.
pub fn batches(records: &[u8]) -> Batches<'_> {
    Batches { records, pos: 0 }
}

impl<'a> Batches<'a> {
    /// Bytes of the whole batches walked so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let rest = &self.records[self.pos..];
        if rest.len() < HEADER_LEN {
            return None;
        }
        let header = BatchHeader::parse(rest).ok()?;
        let len = header.total_len().filter(|&len| len <= rest.len())?;
        self.pos += len;
        Some(Batch {
            header,
            bytes: &rest[..len],
        })
    }
}

/// The length of the whole-batch prefix of `records`: where to cut a
/// partial trailing batch off before decoding.
pub fn whole_len(records: &[u8]) -> usize {
    batches(records).map(|b| b.bytes.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(n: usize) -> Vec<u8> {
        let value = [7u8; 50];
        let values: Vec<&[u8]> = (0..n).map(|_| &value[..]).collect();
        sluice_log::batch::build_batch(1_700_000_000_000, &values)
    }

    #[test]
    fn whole_batches_are_walked_and_a_partial_one_is_left_off() {
        let (a, b) = (batch_of(3), batch_of(5));
        let mut field = [a.as_slice(), b.as_slice()].concat();
        let walked: Vec<(usize, i32)> = batches(&field)
            .map(|x| (x.bytes.len(), x.header.record_count))
            .collect();
        assert_eq!(walked, vec![(a.len(), 3), (b.len(), 5)]);
        assert_eq!(whole_len(&field), a.len() + b.len());
        // Cut into the second batch: header whole, body not; then the header.
        field.truncate(a.len() + b.len() - 1);
        assert_eq!(batches(&field).count(), 1);
        assert_eq!(whole_len(&field), a.len());
        field.truncate(a.len() + HEADER_LEN - 1);
        assert_eq!(whole_len(&field), a.len());
        assert_eq!(whole_len(&[]), 0);
    }

    #[test]
    fn plain_records_encode_as_one_batch_without_a_producer() {
        let records: Vec<Record> = (0..5)
            .map(|i| plain_record(i, 1_700_000_000_000 + i, None, Bytes::from(vec![1u8; 100])))
            .collect();
        for compression in [Compression::None, Compression::Lz4] {
            let field = encode_batch(&records, compression).expect("encode");
            let all: Vec<Batch> = batches(&field).collect();
            assert_eq!(all.len(), 1, "{compression:?}: one batch");
            let h = all[0].header;
            assert_eq!(all[0].bytes.len(), field.len());
            assert_eq!((h.base_offset, h.record_count, h.last_offset()), (0, 5, 4));
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (-1, -1, -1)
            );
            sluice_log::batch::validate(all[0].bytes).expect("a valid batch");
        }
    }

    #[test]
    fn a_header_with_an_impossible_length_ends_the_walk() {
        let mut field = batch_of(2);
        field[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(whole_len(&field), 0);
    }
}
