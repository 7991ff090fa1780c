//! Property tests of request decoding (the fuzz target `request_decode`
//! runs the same function on arbitrary bytes): requests a client encodes at
//! any version Sluice serves decode to the same request, which re-encodes to
//! the same bytes; any prefix of such a frame is refused, never a panic.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use proptest::prelude::*;
use sluice_broker::{Decoded, decode_request};

fn topic() -> impl Strategy<Value = TopicName> {
    "[a-zA-Z0-9._-]{1,40}".prop_map(|s| TopicName(StrBytes::from_string(s)))
}

fn frame<R: Request + Encodable>(req: &R, version: i16, correlation: i32) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("key");
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_static_str("prop"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    buf.to_vec()
}

fn reencode(kind: &RequestKind, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    kind.encode(&mut buf, version).expect("re-encode");
    buf.to_vec()
}

/// Decodes `bytes` as a whole frame and checks header and body round-trip.
fn round_trip<R: Request + Encodable>(
    req: &R,
    version: i16,
    correlation: i32,
) -> Result<(), TestCaseError> {
    let bytes = frame(req, version, correlation);
    let Ok(Decoded::Request(header, kind)) = decode_request(Bytes::from(bytes.clone())) else {
        return Err(TestCaseError::fail(format!(
            "{:?} v{version} did not decode",
            R::KEY
        )));
    };
    prop_assert_eq!(header.request_api_key, R::KEY);
    prop_assert_eq!(header.request_api_version, version);
    prop_assert_eq!(header.correlation_id, correlation);
    let mut body = BytesMut::new();
    req.encode(&mut body, version).expect("body");
    prop_assert_eq!(reencode(&kind, version), body.to_vec());
    // Every strict prefix is refused cleanly (a frame cut anywhere).
    for cut in [0, 3, 7, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        if cut < bytes.len() {
            let _ = decode_request(Bytes::copy_from_slice(&bytes[..cut]));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn produce_requests_round_trip(
        version in 3i16..=9,
        acks in prop_oneof![Just(-1i16), Just(0), Just(1)],
        topics in proptest::collection::vec(
            (topic(), proptest::collection::vec((0i32..1000, proptest::collection::vec(any::<u8>(), 0..300)), 1..4)),
            1..4,
        ),
        correlation in any::<i32>(),
    ) {
        let mut r = ProduceRequest::default();
        r.acks = acks;
        r.timeout_ms = 30_000;
        r.topic_data = topics
            .into_iter()
            .map(|(name, parts)| {
                let mut t = TopicProduceData::default();
                t.name = name;
                t.partition_data = parts
                    .into_iter()
                    .map(|(index, records)| {
                        let mut p = PartitionProduceData::default();
                        p.index = index;
                        p.records = Some(Bytes::from(records));
                        p
                    })
                    .collect();
                t
            })
            .collect();
        round_trip(&r, version, correlation)?;
    }

    #[test]
    fn fetch_requests_round_trip(
        version in 4i16..=12,
        max_wait in 0i32..10_000,
        topics in proptest::collection::vec(
            (topic(), proptest::collection::vec((0i32..1000, 0i64..i64::MAX, 1i32..(1 << 24)), 1..4)),
            1..4,
        ),
        correlation in any::<i32>(),
    ) {
        let mut r = FetchRequest::default();
        r.replica_id = (-1).into();
        r.max_wait_ms = max_wait;
        r.min_bytes = 1;
        r.max_bytes = 50 << 20;
        r.topics = topics
            .into_iter()
            .map(|(name, parts)| {
                let mut t = FetchTopic::default();
                t.topic = name;
                t.partitions = parts
                    .into_iter()
                    .map(|(partition, offset, max)| {
                        let mut p = FetchPartition::default();
                        p.partition = partition;
                        p.fetch_offset = offset;
                        p.partition_max_bytes = max;
                        p
                    })
                    .collect();
                t
            })
            .collect();
        round_trip(&r, version, correlation)?;
    }

    #[test]
    fn metadata_requests_round_trip(
        version in 1i16..=12,
        names in proptest::collection::vec(topic(), 0..10),
        correlation in any::<i32>(),
    ) {
        let mut r = MetadataRequest::default();
        r.topics = Some(
            names
                .into_iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(n);
                    t
                })
                .collect(),
        );
        r.allow_auto_topic_creation = true; // the only value below v4
        round_trip(&r, version, correlation)?;
    }
}
