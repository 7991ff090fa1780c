//! ListOffsets: the earliest, latest and max-timestamp offsets, and offsets
//! by time — each with the found record's own timestamp, as Kafka answers.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use sluice_log::{Partition, ReadError};

use super::topics::partition;
use super::{Blocking, errors};
use crate::state::BrokerState;

const EARLIEST: i64 = -2;
/// KIP-734: the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;

pub fn list_offsets(
    state: &BrokerState,
    r: ListOffsetsRequest,
    version: i16,
    _: &Blocking,
) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    // v2+: a read_committed consumer's latest is the last stable offset.
    let read_committed = version >= 2 && r.isolation_level == 1;
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for lp in topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = lp.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            p.leader_epoch = -1;
            // In a cluster only the leader answers (clients send
            // ListOffsets to it, with its epoch from v4 on).
            let target = match state.cluster() {
                None => partition(state, &name, lp.partition_index)
                    .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
                Some(c) => c
                    .replicas
                    .leader_replica(&name, lp.partition_index, lp.current_leader_epoch)
                    .map(|(replica, epoch)| {
                        // The field exists from v4.
                        if version >= 4 {
                            p.leader_epoch = epoch;
                        }
                        replica.log.clone()
                    }),
            };
            match target {
                Err(code) => p.error_code = code,
                Ok(part) => match lookup(&part, lp.timestamp, read_committed) {
                    Ok(Some((offset, timestamp))) => {
                        p.offset = offset;
                        p.timestamp = timestamp;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(topic = %name, partition = lp.partition_index, "offset lookup failed: {e}");
                        p.error_code = errors::KAFKA_STORAGE_ERROR;
                    }
                },
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}

/// (offset, timestamp) for one ListOffsets target. Latest and earliest
/// carry timestamp −1, as in Kafka; an unknown negative target is treated
/// as latest; a time no record at or after the log start reaches finds
/// nothing (offset −1).
fn lookup(
    part: &Partition,
    target: i64,
    read_committed: bool,
) -> Result<Option<(i64, i64)>, ReadError> {
    // A record found by time is one consumers can read: below the high
    // watermark (the log end on a single broker), as Kafka answers.
    let visible = |found: Option<(i64, i64)>| found.filter(|(o, _)| *o < part.high_watermark());
    match target {
        EARLIEST => Ok(Some((part.log_start(), -1))),
        MAX_TIMESTAMP => Ok(visible(part.batch_with_max_timestamp()?.and_then(
            |batch| {
                record_where(batch, |records| {
                    let max = records.iter().map(|r| r.1).max()?;
                    records.iter().find(|r| r.1 == max).copied()
                })
            },
        ))),
        ts if ts >= 0 => by_time(part, ts).map(visible),
        // −1 (latest), and any other negative target: the high watermark
        // (the log end on a single broker), what consumers can read to.
        _ if read_committed => Ok(Some((part.last_stable_offset(), -1))),
        _ => Ok(Some((part.high_watermark(), -1))),
    }
}

/// The first record at or after the log start with a timestamp ≥ `ts`
/// (Kafka's `findOffsetByTimestamp(ts, logStartOffset)`). A batch
/// straddling the log start (DeleteRecords moved it inside the batch) may
/// reach the time only below it: the search then goes on after that batch.
fn by_time(part: &Partition, ts: i64) -> Result<Option<(i64, i64)>, ReadError> {
    let mut from = part.log_start();
    while let Some(batch) = part.batch_for_timestamp_from(ts, from)? {
        let Ok(h) = sluice_log::batch::BatchHeader::parse(&batch) else {
            return Ok(None);
        };
        let found = record_where(batch, |records| {
            records.iter().find(|r| r.1 >= ts && r.0 >= from).copied()
        });
        if found.is_some() {
            return Ok(found);
        }
        from = h.last_offset() + 1;
    }
    Ok(None)
}

/// Decodes a stored batch (decompressing it if need be) into its records'
/// (offset, timestamp) pairs and picks one.
fn record_where(
    batch: Vec<u8>,
    pick: impl FnOnce(&[(i64, i64)]) -> Option<(i64, i64)>,
) -> Option<(i64, i64)> {
    let mut bytes = Bytes::from(batch);
    match RecordBatchDecoder::decode(&mut bytes) {
        Ok(set) => {
            let records: Vec<(i64, i64)> = set
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp))
                .collect();
            pick(&records)
        }
        Err(e) => {
            tracing::warn!("decoding a stored batch for an offset lookup: {e:#}");
            None
        }
    }
}
