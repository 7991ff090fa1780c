//! The zero-copy Fetch response encoder.
//!
//! The `kafka-protocol` crate encodes a FetchResponse with its records as
//! in-memory `Bytes`; Sluice's records stay in segment files. This writer lays
//! the response out as a list of parts — encoded byte runs and file regions —
//! whose lengths are all known before the first byte is sent (the frame's
//! `INT32 size` counts everything after it), for the non-flexible layout
//! (v4–v11) and the flexible one (v12: compact arrays, unsigned varints,
//! tagged-field bytes).

use std::sync::Arc;

use bytes::Bytes;
use sluice_log::Segment;

/// The records of one partition in a response: a region of a segment file.
#[derive(Debug, Clone)]
pub struct RecordsRegion {
    pub segment: Arc<Segment>,
    pub position: u64,
    pub len: u64,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone)]
pub struct PartitionData {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// None: an empty record set (a null records field for errors).
    pub records: Option<RecordsRegion>,
    /// (epoch, end offset) when a follower's log diverged from the leader's
    /// (v12+, KIP-595): it truncates there before fetching again.
    pub diverging_epoch: Option<(i32, i64)>,
    /// (producer id, first offset) of each aborted transaction the records
    /// overlap, for a read_committed consumer to drop (v4+).
    pub aborted_transactions: Vec<(i64, i64)>,
}

/// One topic of a Fetch response.
#[derive(Debug, Clone)]
pub struct TopicData {
    pub name: String,
    pub partitions: Vec<PartitionData>,
}

/// A piece of an encoded response.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    File(RecordsRegion),
}

/// Encodes a Fetch response (v4–v12) for `correlation_id`, size prefix
/// included. Byte runs between file regions are coalesced.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    throttle_ms: i32,
    error_code: i16,
    session_id: i32,
    topics: &[TopicData],
) -> Vec<Part> {
    let flexible = version >= 12;
    let mut w = Writer::default();
    // Response header: v0 below 12, v1 (with a tag buffer) from 12.
    w.i32(correlation_id);
    if flexible {
        w.u8(0);
    }
    w.i32(throttle_ms);
    if version >= 7 {
        w.i16(error_code);
        w.i32(session_id);
    }
    w.array_len(topics.len(), flexible);
    for topic in topics {
        w.string(&topic.name, flexible);
        w.array_len(topic.partitions.len(), flexible);
        for p in &topic.partitions {
            w.i32(p.partition);
            w.i16(p.error_code);
            w.i64(p.high_watermark);
            w.i64(p.last_stable_offset);
            if version >= 5 {
                w.i64(p.log_start_offset);
            }
            w.array_len(p.aborted_transactions.len(), flexible);
            for (producer_id, first_offset) in &p.aborted_transactions {
                w.i64(*producer_id);
                w.i64(*first_offset);
                if flexible {
                    w.u8(0); // no tagged fields
                }
            }
            if version >= 11 {
                w.i32(-1); // preferred_read_replica
            }
            match &p.records {
                Some(region) => {
                    if flexible {
                        w.uvarint(region.len + 1);
                    } else {
                        w.i32(region.len as i32);
                    }
                    w.file(region.clone());
                }
                None => {
                    if flexible {
                        w.uvarint(1); // empty, not null: clients expect bytes
                    } else {
                        w.i32(0);
                    }
                }
            }
            if flexible {
                // Partition tagged fields: DivergingEpoch is tag 0.
                match p.diverging_epoch {
                    Some((epoch, end_offset)) => {
                        w.uvarint(1); // one tagged field
                        w.uvarint(0); // tag
                        w.uvarint(13); // its size: i32 + i64 + no tags
                        w.i32(epoch);
                        w.i64(end_offset);
                        w.u8(0);
                    }
                    None => w.u8(0),
                }
            }
        }
        if flexible {
            w.u8(0); // topic tagged fields
        }
    }
    if flexible {
        w.u8(0); // body tagged fields
    }
    w.finish()
}

/// Total bytes of the parts.
pub fn parts_len(parts: &[Part]) -> u64 {
    parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.len,
        })
        .sum()
}

/// Builds the parts: byte runs are encoded into `cur` and closed into a
/// part when a file region comes; `cur` starts with room for the size.
struct Writer {
    parts: Vec<Part>,
    cur: Vec<u8>,
    /// Bytes of every closed part so far.
    closed_len: u64,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            parts: Vec::new(),
            cur: vec![0; 4],
            closed_len: 0,
        }
    }
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.cur.push(v);
    }
    fn i16(&mut self, v: i16) {
        self.cur.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.cur.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.cur.extend_from_slice(&v.to_be_bytes());
    }
    fn uvarint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.cur.push(b);
                return;
            }
            self.cur.push(b | 0x80);
        }
    }
    fn array_len(&mut self, n: usize, flexible: bool) {
        if flexible {
            self.uvarint(n as u64 + 1);
        } else {
            self.i32(n as i32);
        }
    }
    fn string(&mut self, s: &str, flexible: bool) {
        if flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.i16(s.len() as i16);
        }
        self.cur.extend_from_slice(s.as_bytes());
    }
    fn file(&mut self, region: RecordsRegion) {
        if region.len == 0 {
            return;
        }
        self.close_run();
        self.closed_len += region.len;
        self.parts.push(Part::File(region));
    }
    fn close_run(&mut self) {
        if !self.cur.is_empty() {
            self.closed_len += self.cur.len() as u64;
            self.parts
                .push(Part::Bytes(Bytes::from(std::mem::take(&mut self.cur))));
        }
    }
    /// Fills in the size prefix (everything after it) and closes the last
    /// byte run. The first run holds the prefix, so nothing is copied.
    fn finish(mut self) -> Vec<Part> {
        let size = self.closed_len + self.cur.len() as u64 - 4;
        let prefix = (size as i32).to_be_bytes();
        match self.parts.first() {
            // The prefix is still in `cur`: no region was added.
            None => self.cur[..4].copy_from_slice(&prefix),
            Some(_) => {
                if let Some(Part::Bytes(first)) = self.parts.first_mut() {
                    let mut head = Vec::from(std::mem::take(first));
                    head[..4].copy_from_slice(&prefix);
                    *first = Bytes::from(head);
                }
            }
        }
        self.close_run();
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    /// Our encoding, decoded by kafka-protocol: the aborted transactions a
    /// read_committed consumer needs come through in every version.
    #[test]
    fn aborted_transactions_decode_with_kafka_protocol() {
        for version in [4i16, 11, 12] {
            let topics = vec![TopicData {
                name: "t".into(),
                partitions: vec![PartitionData {
                    partition: 3,
                    error_code: 0,
                    high_watermark: 100,
                    last_stable_offset: 90,
                    log_start_offset: 0,
                    records: None,
                    diverging_epoch: None,
                    aborted_transactions: vec![(7, 10), (8, 42)],
                }],
            }];
            let parts = encode_fetch_response(version, 5, 0, 0, 0, &topics);
            let mut bytes = Vec::new();
            for p in parts {
                match p {
                    Part::Bytes(b) => bytes.extend_from_slice(&b),
                    Part::File(_) => panic!("no records here"),
                }
            }
            // Size prefix (4), correlation id (4), header tag buffer (v12).
            let header = if version >= 12 { 9 } else { 8 };
            let mut body = Bytes::from(bytes[header..].to_vec());
            let r = FetchResponse::decode(&mut body, version).expect("decodes");
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.last_stable_offset, 90, "v{version}");
            let aborted: Vec<(i64, i64)> = p
                .aborted_transactions
                .as_ref()
                .expect("a list")
                .iter()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(7, 10), (8, 42)], "v{version}");
        }
    }
}
