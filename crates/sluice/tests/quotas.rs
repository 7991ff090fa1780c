//! Client quotas on a real broker (issue 17): AlterClientQuotas over the
//! wire, Produce and Fetch answered with `throttle_time_ms` once a client
//! is over its byte rate, the connection muted for that long (KIP-219),
//! other clients unaffected, nothing lost, and the quotas kept across a
//! restart.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, DescribeClientQuotasRequest, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{Client, Server, fetch_req, fetched, produce_req};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A client whose requests carry `client_id`.
struct Named {
    c: Client,
    client_id: &'static str,
}

impl Named {
    fn call<R: kafka_protocol::protocol::Request>(&mut self, version: i16, req: &R) -> R::Response {
        use std::io::Write;
        let frame = sluice_client::wire::encode_request(req, version, 1, Some(s(self.client_id)))
            .expect("encode");
        self.c.stream.write_all(&frame).expect("write");
        let body = self.c.read_frame().expect("response");
        sluice_client::wire::decode_response::<R>(Bytes::from(body), version, 1).expect("decode")
    }
}

fn set_quota(c: &mut Client, client_id: &str, key: &str, value: Option<f64>) {
    let mut entity = EntityData::default();
    entity.entity_type = s("client-id");
    entity.entity_name = Some(s(client_id));
    let mut op = OpData::default();
    op.key = s(key);
    op.value = value.unwrap_or(0.0);
    op.remove = value.is_none();
    let mut entry = EntryData::default();
    entry.entity = vec![entity];
    entry.ops = vec![op];
    let mut req = AlterClientQuotasRequest::default();
    req.entries = vec![entry];
    let resp = c.call(1, &req);
    assert_eq!(
        resp.entries[0].error_code, 0,
        "{:?}",
        resp.entries[0].error_message
    );
}

fn described(c: &mut Client, client_id: &str) -> Vec<(String, f64)> {
    let mut comp = ComponentData::default();
    comp.entity_type = s("client-id");
    comp.match_type = 0;
    comp._match = Some(s(client_id));
    let mut req = DescribeClientQuotasRequest::default();
    req.components = vec![comp];
    let resp = c.call(1, &req);
    let mut values: Vec<(String, f64)> = resp
        .entries
        .unwrap_or_default()
        .iter()
        .flat_map(|e| e.values.iter().map(|v| (v.key.to_string(), v.value)))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    values
}

/// One batch of `n` records of `size` bytes each.
fn batch(n: usize, size: usize) -> Bytes {
    let records: Vec<_> = (0..n)
        .map(|i| sluice_client::plain_record(i as i64, 0, None, Bytes::from(vec![b'q'; size])))
        .collect();
    sluice_client::encode_batch(&records, Compression::None).expect("encode batch")
}

fn produce(c: &mut Named, topic: &str, records: Bytes) -> (i16, i32) {
    let req: ProduceRequest = produce_req(topic, 0, records, -1);
    let resp = c.call(9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, resp.throttle_time_ms)
}

#[test]
fn over_its_byte_rate_a_client_is_throttled_and_muted_and_loses_nothing() {
    let mut server = Server::start(&[]);
    let mut admin = Client::connect(server.addr);
    support::create_topic(&mut admin, "q", 1);
    // 50 KB/s in and out for "slow"; "fast" has no quota. Kafka measures
    // a rate over at least ten 1 s windows, so 600 KB at once is 60 KB/s.
    set_quota(&mut admin, "slow", "producer_byte_rate", Some(50_000.0));
    set_quota(&mut admin, "slow", "consumer_byte_rate", Some(50_000.0));
    assert_eq!(
        described(&mut admin, "slow"),
        [
            ("consumer_byte_rate".to_string(), 50_000.0),
            ("producer_byte_rate".to_string(), 50_000.0)
        ]
    );

    // Six 100 KB produces at once: past 50 KB/s, so answers carry a
    // throttle…
    let mut slow = Named {
        c: Client::connect(server.addr),
        client_id: "slow",
    };
    let mut throttles: Vec<i32> = Vec::new();
    // (the previous answer's throttle, how long this request took)
    let mut waits = Vec::new();
    for i in 0..7 {
        let sent = Instant::now();
        let (code, throttle) = produce(&mut slow, "q", batch(100, 1000));
        assert_eq!(code, 0, "produce {i} refused");
        if let Some(&prev) = throttles.last() {
            waits.push((prev, sent.elapsed()));
        }
        throttles.push(throttle);
    }
    assert!(
        throttles.iter().any(|&t| t > 0),
        "never throttled: {throttles:?}"
    );
    // …and the connection is muted for each answer's throttle: the next
    // request is not read before it has passed.
    for (throttle, took) in &waits {
        let throttle = Duration::from_millis(u64::try_from(*throttle).unwrap_or(0));
        assert!(
            *took + Duration::from_millis(20) >= throttle,
            "throttled {throttle:?} but answered the next request after {took:?} ({throttles:?})"
        );
    }

    // Another client id is not throttled by slow's quota.
    let mut fast = Named {
        c: Client::connect(server.addr),
        client_id: "fast",
    };
    let (code, throttle) = produce(&mut fast, "q", batch(100, 1000));
    assert_eq!((code, throttle), (0, 0));

    // A throttled Fetch is answered without records (KIP-219); the records
    // come once the client is back under its rate.
    let mut reader = Named {
        c: Client::connect(server.addr),
        client_id: "slow",
    };
    let mut offset = 0i64;
    let mut saw_throttled_empty = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while offset < 800 && Instant::now() < deadline {
        let req = fetch_req("q", 0, offset, 100, 1);
        let resp = reader.call(11, &req);
        let (code, _, records) = fetched(&resp);
        assert_eq!(code, 0);
        if resp.throttle_time_ms > 0 {
            assert!(records.is_empty(), "a throttled fetch carried records");
            saw_throttled_empty = true;
            continue;
        }
        // The cap may end the response mid-batch: whole batches only.
        let mut b = records.slice(..sluice_client::whole_len(&records));
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut b)
            .expect("records decode");
        for set in decoded {
            for r in set.records {
                assert_eq!(r.offset, offset, "a record is missing or repeated");
                offset += 1;
            }
        }
    }
    assert_eq!(offset, 800, "all eight batches came back");
    assert!(saw_throttled_empty, "800 KB at 50 KB/s was never throttled");

    // The quotas survive a restart; removing one lifts it.
    drop((slow, fast, reader, admin));
    let dir = server.take_dir().expect("dir");
    server.stop();
    let data = server.data_dir.clone();
    let server = Server::start_in(&data, &[]);
    let mut admin = Client::connect(server.addr);
    assert_eq!(described(&mut admin, "slow").len(), 2);
    set_quota(&mut admin, "slow", "producer_byte_rate", None);
    let mut slow = Named {
        c: Client::connect(server.addr),
        client_id: "slow",
    };
    for _ in 0..5 {
        assert_eq!(produce(&mut slow, "q", batch(100, 1000)), (0, 0));
    }
    drop(dir);
}
