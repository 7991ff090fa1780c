//! Hostile clients over raw sockets. Every case sends what a broken or
//! malicious peer might and checks the documented answer: a closed
//! connection (with a logged reason) or a Kafka error code. Throughout, a
//! healthy client on its own connection keeps producing and consuming, the
//! broker process stays up, and its memory stays bounded.
//!
//! The table of answers is in docs/design-notes.md, "Hostile input".

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::Decodable;
use sluice_log::batch;
use support::{Client, Server, create_topic, fetch_req, fetched, produce, produce_req, stored};

/// Broker RSS ceiling for these tests: nothing a peer sends may make the
/// broker allocate by what it claims.
const RSS_LIMIT_KIB: u64 = 256 * 1024;

/// A healthy client that produces one batch and reads it back each round.
struct Healthy {
    client: Client,
    next: i64,
    batch: Vec<u8>,
}

impl Healthy {
    fn new(server: &Server) -> Healthy {
        let mut client = Client::connect(server.addr);
        assert_eq!(create_topic(&mut client, "healthy", 1), 0);
        Healthy {
            client,
            next: 0,
            batch: batch::build_batch(0, &[b"still here"]),
        }
    }

    /// Produces one batch, fetches it back byte for byte.
    fn round_trip(&mut self) {
        let (err, base) = produce(&mut self.client, 9, "healthy", 0, &self.batch);
        assert_eq!((err, base), (0, self.next), "healthy produce");
        let resp = self.client.call(12, &fetch_req("healthy", 0, base, 0, 1));
        assert_eq!(
            fetched(&resp).2.as_ref(),
            stored(&self.batch, base).as_slice(),
            "healthy fetch"
        );
        self.next += 1;
    }
}

fn rss_kib(server: &Server) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("broker status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn assert_alive_and_bounded(server: &mut Server, case: &str) {
    assert!(
        server.try_wait().expect("try_wait").is_none(),
        "{case}: the broker process died"
    );
    let rss = rss_kib(server);
    assert!(rss < RSS_LIMIT_KIB, "{case}: broker RSS {rss} KiB");
}

// ---- raw request building ----

/// A request header v1 (api key, version, correlation id, client id).
fn header(key: i16, version: i16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&7i32.to_be_bytes());
    h.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    h
}

/// A request header v2 (flexible): v1 plus an empty tagged-field section.
fn flexible_header(key: i16, version: i16) -> Vec<u8> {
    let mut h = header(key, version);
    h.push(0);
    h
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const METADATA: i16 = 3;
const PRODUCE: i16 = 0;

/// (name, bytes written on a fresh connection): framing, headers and
/// bodies the broker must refuse by closing that connection (and only it),
/// with a logged reason.
fn closing_cases() -> Vec<(&'static str, Vec<u8>)> {
    let i32be = |v: i32| v.to_be_bytes().to_vec();
    let i16be = |v: i16| v.to_be_bytes().to_vec();
    // A Produce v3 body up to the records field of one partition.
    let produce_head = |records_len: i32| {
        cat(&[
            &header(PRODUCE, 3),
            &i16be(-1),   // transactional id: null
            &i16be(1),    // acks
            &i32be(5000), // timeout
            &i32be(1),    // one topic
            &i16be(7),    // name length
            b"healthy",   // name
            &i32be(1),    // one partition
            &i32be(0),    // index
            &i32be(records_len),
        ])
    };
    vec![
        ("frame size i32::MAX", i32be(i32::MAX)),
        ("frame size negative", i32be(-5)),
        ("frame size i32::MIN", i32be(i32::MIN)),
        (
            "frame one byte over --max-frame-bytes",
            i32be((1 << 20) + 1),
        ),
        ("zero-length frame", framed(&[])),
        ("header truncated to 3 bytes", framed(&[0, 3, 0])),
        (
            "header truncated after key and version",
            framed(&cat(&[&i16be(METADATA), &i16be(1)])),
        ),
        (
            "client id length runs past the frame",
            framed(&cat(&[
                &i16be(METADATA),
                &i16be(1),
                &i32be(7),
                &i16be(1000),
                b"abc",
            ])),
        ),
        (
            "client id length negative (not -1)",
            framed(&cat(&[&i16be(METADATA), &i16be(1), &i32be(7), &i16be(-5)])),
        ),
        ("unknown API key 999", framed(&header(999, 0))),
        ("negative API key", framed(&header(-3, 0))),
        (
            "API key known to Kafka, not served (AlterReplicaLogDirs)",
            framed(&header(34, 0)),
        ),
        ("Produce v99", framed(&header(PRODUCE, 99))),
        ("Fetch version -1", framed(&header(1, -1))),
        (
            "Metadata v0 topic count i32::MAX in a 20-byte frame",
            framed(&cat(&[&header(METADATA, 0), &i32be(i32::MAX), &[0, 1]])),
        ),
        (
            "Metadata v1 topic count 1,000,000 with one topic",
            framed(&cat(&[
                &header(METADATA, 1),
                &i32be(1_000_000),
                &i16be(1),
                b"x",
            ])),
        ),
        (
            "Metadata v9 compact topic count 2^31 (varint)",
            framed(&cat(&[
                &flexible_header(METADATA, 9),
                &[0x80, 0x80, 0x80, 0x80, 0x08],
            ])),
        ),
        (
            "varint longer than 5 bytes in a flexible header's tagged fields",
            framed(&cat(&[
                &header(METADATA, 9),
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ])),
        ),
        (
            "topic name length negative",
            framed(&cat(&[&header(METADATA, 1), &i32be(1), &i16be(-7)])),
        ),
        (
            "topic name length past the frame",
            framed(&cat(&[
                &header(METADATA, 1),
                &i32be(1),
                &i16be(300),
                b"short",
            ])),
        ),
        (
            "topic name not UTF-8",
            framed(&cat(&[
                &header(METADATA, 1),
                &i32be(1),
                &i16be(2),
                &[0xc3, 0x28],
            ])),
        ),
        (
            "Produce records length past the frame",
            framed(&cat(&[&produce_head(1 << 20), &[0u8; 16]])),
        ),
        (
            "Produce records length negative (not -1)",
            framed(&produce_head(-9)),
        ),
        (
            "frame ends mid-body (Produce cut after the topic count)",
            framed(&cat(&[
                &header(PRODUCE, 3),
                &i16be(-1),
                &i16be(1),
                &i32be(5000),
                &i32be(1),
            ])),
        ),
        (
            "peer closes halfway through a frame",
            cat(&[&i32be(100), &[1u8; 10]]),
        ),
    ]
}

/// (name, records field, Produce error code): the batch checks. The
/// connection stays open and nothing is appended.
fn produce_cases() -> Vec<(&'static str, Vec<u8>, i16)> {
    let good = batch::build_batch(0, &[b"payload", b"more"]);
    let fix_crc = |mut b: Vec<u8>| {
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    vec![
        (
            "CRC mismatch",
            with(&|b| {
                let last = b.len() - 1;
                b[last] ^= 0x55;
            }),
            2, // CORRUPT_MESSAGE
        ),
        (
            "batchLength larger than the bytes sent",
            with(&|b| b[8..12].copy_from_slice(&10_000i32.to_be_bytes())),
            87, // INVALID_RECORD
        ),
        (
            "batchLength negative",
            with(&|b| b[8..12].copy_from_slice(&(-1i32).to_be_bytes())),
            87,
        ),
        (
            "records field shorter than a batch header",
            good[..20].to_vec(),
            87,
        ),
        (
            "magic 1",
            with(&|b| b[16] = 1),
            43, // UNSUPPORTED_FOR_MESSAGE_FORMAT
        ),
        ("magic 3", with(&|b| b[16] = 3), 43),
        (
            "recordCount 0 (CRC fixed)",
            fix_crc(with(&|b| {
                b[57..61].copy_from_slice(&0i32.to_be_bytes());
            })),
            87,
        ),
        (
            "recordCount 1000 over two records (CRC fixed)",
            fix_crc(with(&|b| {
                b[23..27].copy_from_slice(&999i32.to_be_bytes());
                b[57..61].copy_from_slice(&1000i32.to_be_bytes());
            })),
            87,
        ),
        (
            "record length past the batch (CRC fixed)",
            fix_crc(with(&|b| b[61] = 0x7e)),
            87,
        ),
        (
            "trailing bytes after the last batch",
            cat(&[&good, &[0u8; 7]]),
            87,
        ),
        ("no records at all", Vec::new(), 87),
    ]
}

#[test]
fn malformed_frames_close_only_their_own_connection() {
    let mut server = Server::start(&["--max-frame-bytes", "1m"]);
    let mut healthy = Healthy::new(&server);
    healthy.round_trip();
    let cases = closing_cases();
    assert!(cases.len() >= 25, "{} closing cases", cases.len());
    for (case, bytes) in cases {
        let mut c = Client::connect(server.addr);
        let _ = c.stream.write_all(&bytes);
        if case.starts_with("peer closes") {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        assert!(c.closed_by_broker(), "{case}: connection should be closed");
        assert_alive_and_bounded(&mut server, case);
        healthy.round_trip();
    }
}

#[test]
fn api_versions_at_an_unknown_version_is_answered_with_error_35() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    c.send_raw_frame(&header(18, 99));
    let frame = c.read_frame().expect("an answer, not a close");
    let mut body = Bytes::from(frame[4..].to_vec()); // v0 response header: correlation id
    assert_eq!(&frame[..4], &7i32.to_be_bytes());
    let resp = ApiVersionsResponse::decode(&mut body, 0).expect("ApiVersions v0 body");
    assert_eq!(resp.error_code, 35);
    assert!(!resp.api_keys.is_empty(), "the versions the broker speaks");
}

#[test]
fn invalid_batches_get_their_error_code_and_leave_the_log_untouched() {
    let mut server = Server::start(&[]);
    let mut healthy = Healthy::new(&server);
    let cases = produce_cases();
    for (case, records, want) in cases {
        let resp = healthy
            .client
            .call(9, &produce_req("healthy", 0, Bytes::from(records), -1));
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, want, "{case}");
        assert_alive_and_bounded(&mut server, case);
        // Nothing was appended: the next good batch gets the next offset.
        healthy.round_trip();
    }
    // A partition that does not exist, and a negative one.
    for partition in [7, -1] {
        let good = batch::build_batch(0, &[b"x"]);
        assert_eq!(
            produce(&mut healthy.client, 9, "healthy", partition, &good).0,
            3,
            "partition {partition}: UNKNOWN_TOPIC_OR_PARTITION"
        );
    }
    healthy.round_trip();
}

#[test]
fn a_fetch_naming_too_many_partitions_is_answered_in_part_and_odd_fetch_fields_are_answered() {
    let mut server = Server::start(&["--max-partitions-per-fetch", "100"]);
    let mut healthy = Healthy::new(&server);
    healthy.round_trip();
    // 101 partitions: over the limit. Answered, not closed: the first 100
    // are served (99 unknown), the 101st comes back without records or an
    // error, as when a response's byte budget runs out (KIP-74).
    let mut over = fetch_req("healthy", 0, 0, 0, 1);
    let one = over.topics[0].partitions[0].clone();
    over.topics[0].partitions = (0..101)
        .map(|i| {
            let mut p = one.clone();
            p.partition = i;
            p
        })
        .collect();
    let mut c = Client::connect(server.addr);
    let resp = c.call(12, &over);
    assert_eq!(resp.responses[0].partitions.len(), 101);
    assert_eq!(resp.responses[0].partitions[1].error_code, 3, "served");
    let last = &resp.responses[0].partitions[100];
    assert_eq!(last.error_code, 0, "past the limit: no error");
    assert!(last.records.as_ref().is_none_or(|r| r.is_empty()));
    // 100 partitions: within it, answered (99 unknown).
    over.topics[0].partitions.truncate(100);
    let mut c = Client::connect(server.addr);
    let resp = c.call(12, &over);
    assert_eq!(resp.responses[0].partitions.len(), 100);
    assert_eq!(resp.responses[0].partitions[1].error_code, 3);
    // Negative offset and budgets: answered with OFFSET_OUT_OF_RANGE, no records.
    let mut odd = fetch_req("healthy", 0, -5, 0, 1);
    odd.max_bytes = -1;
    odd.topics[0].partitions[0].partition_max_bytes = -1;
    let resp = c.call(12, &odd);
    assert_eq!(fetched(&resp).0, 1);
    // max_bytes i32::MAX: answered from the file, no buffer of that size.
    let mut huge = fetch_req("healthy", 0, 0, 0, 1);
    huge.max_bytes = i32::MAX;
    huge.topics[0].partitions[0].partition_max_bytes = i32::MAX;
    let resp = c.call(12, &huge);
    assert_eq!(fetched(&resp).0, 0);
    assert_alive_and_bounded(&mut server, "fetch fields");
    healthy.round_trip();
}

#[test]
fn slow_and_idle_connections_are_closed_and_counted() {
    let mut server = Server::start(&[
        "--frame-read-timeout-ms",
        "800",
        "--idle-timeout-ms",
        "1500",
    ]);
    let mut healthy = Healthy::new(&server);
    // Slowloris: a frame's size, then one byte every 200 ms.
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    slow.write_all(&1000i32.to_be_bytes()).expect("size");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        healthy.round_trip();
        if slow.write_all(&[0]).is_err() {
            closed = true;
            break;
        }
        slow.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        if matches!(slow.read(&mut b), Ok(0)) {
            closed = true;
            break;
        }
        slow.set_nonblocking(false).expect("blocking");
    }
    assert!(closed, "a trickled frame is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off near --frame-read-timeout-ms, took {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.metric_eventually("sluice_connections_closed_slow_total", 1),
        1
    );

    // Idle: connected, never a byte (while the healthy client stays busy).
    let addr = server.addr;
    let idle = std::thread::spawn(move || {
        let mut idle = Client::connect(addr);
        let started = Instant::now();
        assert!(idle.closed_by_broker());
        started.elapsed()
    });
    while !idle.is_finished() {
        healthy.round_trip();
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = idle.join().expect("idle client");
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(6),
        "closed after {waited:?}, want about 1.5 s"
    );
    assert_eq!(
        server.metric_eventually("sluice_connections_closed_idle_total", 1),
        1,
        "only the idle connection, not the busy one"
    );
    healthy.round_trip();
    assert_alive_and_bounded(&mut server, "slow and idle");
}

#[test]
fn connections_over_the_limit_are_refused_while_the_others_keep_working() {
    // The per-address cap (half the limit by default) is lifted here: every
    // client of this test comes from 127.0.0.1.
    let mut server = Server::start(&["--max-connections", "4", "--max-connections-per-ip", "4"]);
    let mut healthy = Healthy::new(&server);
    // The healthy client is one; three more fill the limit.
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for c in &mut held {
        let resp = c.call(12, &fetch_req("healthy", 0, 0, 0, 0));
        assert_eq!(fetched(&resp).0, 0);
    }
    let mut refused = Client::connect(server.addr);
    assert!(refused.closed_by_broker(), "the fifth connection is closed");
    assert_eq!(
        server.metric_eventually("sluice_connections_refused_total", 1),
        1
    );
    healthy.round_trip();
    // One leaves; a new one gets in.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(server.addr);
        if let Some(resp) = c.try_call(12, &fetch_req("healthy", 0, 0, 0, 0)) {
            assert_eq!(fetched(&resp).0, 0);
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is reused");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_alive_and_bounded(&mut server, "connection limit");
}

#[test]
fn claims_of_large_frames_and_unread_responses_keep_memory_bounded() {
    let mut server = Server::start(&[
        "--max-frame-bytes",
        "64m",
        "--max-buffered-request-bytes",
        "128m",
        "--frame-read-timeout-ms",
        "20000",
    ]);
    let mut healthy = Healthy::new(&server);
    // 1 MiB of records to fetch again and again.
    let big = batch::build_batch(0, &[&vec![7u8; 900_000]]);
    let (err, _) = produce(&mut healthy.client, 9, "healthy", 0, &big);
    assert_eq!(err, 0);
    healthy.next += 1;

    // Forty connections each claim a 64 MiB frame and send 100 KB of it:
    // 2.5 GiB claimed, a few MiB held.
    let mut claimers = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(&(64i32 << 20).to_be_bytes()).expect("size");
        s.write_all(&vec![0u8; 100_000]).expect("part");
        claimers.push(s);
    }
    // A client that pipelines 300 Fetches of 1 MiB each and never reads.
    let mut deaf = Client::connect(server.addr);
    deaf.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for _ in 0..300 {
        let mut req = fetch_req("healthy", 0, 0, 0, 1);
        req.topics[0].partitions[0].partition_max_bytes = 1 << 20;
        let mut buf = bytes::BytesMut::new();
        use kafka_protocol::protocol::Encodable;
        let mut h = kafka_protocol::messages::RequestHeader::default();
        h.request_api_key = 1;
        h.request_api_version = 12;
        h.correlation_id = 1;
        h.encode(&mut buf, 2).expect("header");
        req.encode(&mut buf, 12).expect("body");
        if deaf.stream.write_all(&framed(&buf)).is_err() {
            break; // its socket is full: the broker stopped reading it
        }
    }
    for _ in 0..5 {
        healthy.round_trip();
    }
    let held = server.metric("sluice_request_bytes_held");
    assert!(
        held < 16 << 20,
        "request bytes held {held} with 2.5 GiB claimed"
    );
    assert_alive_and_bounded(&mut server, "large claims and a deaf client");
    drop(claimers);
    drop(deaf);
    healthy.round_trip();
    assert_alive_and_bounded(&mut server, "after they left");
}
