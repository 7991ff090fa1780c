//! The broker over real sockets: a `sluice serve` process per test, driven by
//! a raw Kafka client (requests encoded by the `kafka-protocol` crate).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use sluice_log::batch;
use support::{
    Client, Server, create_topic, fetch_req, fetched, name, produce, produce_req, stored,
};

#[test]
fn api_versions_answers_in_a_v0_header_and_says_error_35_to_unknown_versions() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    for v in 0..=3 {
        let resp = c.call(v, &ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0);
        let fetch = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == 1)
            .expect("fetch listed");
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
        assert!(
            resp.supported_features.is_empty(),
            "no optional tagged fields"
        );
    }
    // A version from the future: error 35 in a v0 body listing our ranges.
    let mut raw = Vec::new();
    raw.extend_from_slice(&18i16.to_be_bytes());
    raw.extend_from_slice(&99i16.to_be_bytes());
    raw.extend_from_slice(&7i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    c.send_raw_frame(&raw);
    let frame = c.read_frame().expect("answer");
    assert_eq!(
        i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
        7
    );
    assert_eq!(i16::from_be_bytes([frame[4], frame[5]]), 35);
    let n = i32::from_be_bytes([frame[6], frame[7], frame[8], frame[9]]);
    assert_eq!(
        n as usize,
        sluice_broker::api::versions::SUPPORTED.len(),
        "every API served is listed"
    );
}

#[test]
fn produce_then_fetch_returns_the_batches_byte_exact_in_every_fetch_layout() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topic(&mut c, "orders", 3), 0);
    let batches: Vec<Vec<u8>> = (0..5u8)
        .map(|i| batch::build_batch(1_700_000_000_000 + i as i64, &[&[i; 100], b"second record"]))
        .collect();
    let mut expected = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let version = [3, 7, 9, 11, 12][i];
        let (err, base) = produce(&mut c, version, "orders", 2, b);
        assert_eq!((err, base), (0, 2 * i as i64), "produce v{version}");
        expected.extend_from_slice(&stored(b, base));
    }
    for version in [4, 5, 7, 11, 12] {
        let resp = c.call(version, &fetch_req("orders", 2, 0, 0, 1));
        let (err, hw, records) = fetched(&resp);
        assert_eq!((err, hw), (0, 10), "fetch v{version}");
        assert_eq!(
            records.as_ref(),
            expected.as_slice(),
            "fetch v{version}: records byte-exact"
        );
    }
    // From the middle of a batch: that batch is returned whole.
    let resp = c.call(12, &fetch_req("orders", 2, 5, 0, 1));
    let (_, _, records) = fetched(&resp);
    let from = batches[0].len() * 2;
    assert_eq!(records.as_ref(), &expected[from..]);
    // Empty partitions answer with no records and their high watermark.
    let resp = c.call(12, &fetch_req("orders", 0, 0, 0, 0));
    assert_eq!(fetched(&resp), (0, 0, Bytes::new()));
}

#[test]
fn fetch_out_of_range_and_unknown_partitions_get_their_codes() {
    let server = Server::start(&["--auto-create-topics", "false"]);
    let mut c = Client::connect(server.addr);
    create_topic(&mut c, "t", 1);
    produce(&mut c, 9, "t", 0, &batch::build_batch(0, &[b"x"]));
    let resp = c.call(12, &fetch_req("t", 0, 5, 0, 1));
    assert_eq!(fetched(&resp).0, 1, "OFFSET_OUT_OF_RANGE past the end");
    let resp = c.call(12, &fetch_req("t", 0, -3, 0, 1));
    assert_eq!(fetched(&resp).0, 1, "OFFSET_OUT_OF_RANGE below the start");
    let resp = c.call(12, &fetch_req("t", -1, 0, 0, 1));
    assert_eq!(
        fetched(&resp).0,
        3,
        "negative partition: UNKNOWN_TOPIC_OR_PARTITION"
    );
    let resp = c.call(12, &fetch_req("nope", 0, 0, 0, 1));
    assert_eq!(fetched(&resp).0, 3);
    let (err, _) = produce(&mut c, 9, "nope", 0, &batch::build_batch(0, &[b"x"]));
    assert_eq!(err, 3, "no auto-creation when it is off");
}

#[test]
fn metadata_lists_topics_and_auto_creates_on_first_use() {
    let server = Server::start(&["--default-partitions", "3"]);
    let mut c = Client::connect(server.addr);
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name("fresh"));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    r.allow_auto_topic_creation = true;
    let resp = c.call(12, &r);
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!(resp.brokers[0].port, i32::from(server.addr.port()));
    let topic = &resp.topics[0];
    assert_eq!(topic.error_code, 0);
    assert_eq!(topic.partitions.len(), 3);
    assert!(
        topic
            .partitions
            .iter()
            .all(|p| p.leader_id.0 == 0 && p.leader_epoch == -1)
    );
    // An invalid name is refused with its code.
    let mut bad = MetadataRequestTopic::default();
    bad.name = Some(name("bad/name"));
    r.topics = Some(vec![bad]);
    assert_eq!(c.call(12, &r).topics[0].error_code, 17);
    // Every topic.
    let mut all = MetadataRequest::default();
    all.topics = None;
    assert_eq!(c.call(1, &all).topics.len(), 1, "null list: every topic");
    // In v0 an empty list also means every topic.
    all.topics = Some(vec![]);
    assert_eq!(c.call(0, &all).topics.len(), 1);
    assert!(
        c.call(1, &all).topics.is_empty(),
        "v1+: an empty list is no topics"
    );
    // Delete it.
    let mut d = DeleteTopicsRequest::default();
    d.topic_names = vec![name("fresh")];
    assert_eq!(c.call(4, &d).responses[0].error_code, 0);
    let mut none = MetadataRequest::default();
    none.topics = None;
    assert!(c.call(12, &none).topics.is_empty());
    assert_eq!(create_topic(&mut c, "fresh", 0), 37, "INVALID_PARTITIONS");
}

#[test]
fn list_offsets_finds_earliest_latest_and_by_timestamp() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    for i in 0..4i64 {
        produce(
            &mut c,
            9,
            "ts",
            0,
            &batch::build_batch(1000 * (i + 1), &[b"a", b"b"]),
        );
    }
    let lookup = |c: &mut Client, ts: i64| {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = ts;
        p.current_leader_epoch = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = name("ts");
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = (-1).into();
        r.topics = vec![t];
        let resp = c.call(7, &r);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.offset)
    };
    assert_eq!(lookup(&mut c, -2), (0, 0));
    assert_eq!(lookup(&mut c, -1), (0, 8));
    assert_eq!(lookup(&mut c, 2500), (0, 4));
    assert_eq!(lookup(&mut c, 3000), (0, 4));
    assert_eq!(lookup(&mut c, 99_999), (0, -1));
}

#[test]
fn long_poll_waits_out_max_wait_and_wakes_on_append() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    create_topic(&mut c, "lp", 1);
    let start = Instant::now();
    let resp = c.call(12, &fetch_req("lp", 0, 0, 500, 1));
    let waited = start.elapsed();
    assert_eq!(fetched(&resp).2.len(), 0);
    assert!(
        waited >= Duration::from_millis(450),
        "returned after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(3000),
        "returned after {waited:?}"
    );

    // A fetch parked for up to 20 s returns as soon as another connection produces.
    let sent = c.send(12, &fetch_req("lp", 0, 0, 20_000, 1));
    std::thread::sleep(Duration::from_millis(200));
    let mut producer = Client::connect(server.addr);
    let produced_at = Instant::now();
    produce(
        &mut producer,
        9,
        "lp",
        0,
        &batch::build_batch(0, &[b"wake up"]),
    );
    let frame = c.read_frame().expect("fetch answered");
    let woke_after = produced_at.elapsed();
    assert_eq!(
        i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
        sent
    );
    assert!(
        woke_after < Duration::from_secs(5),
        "woken by the append, not the timeout: {woke_after:?}"
    );
}

#[test]
fn fetch_records_leave_through_the_kernel_only() {
    for path in ["sendfile", "splice", "io_uring"] {
        records_leave_through_the_kernel_only(path);
    }
}

fn records_leave_through_the_kernel_only(path: &str) {
    let server = Server::start(&["--data-path", path]);
    assert_eq!(
        server.metric(&format!("sluice_data_path_info{{path=\"{path}\"}}")),
        1
    );
    let mut c = Client::connect(server.addr);
    let mut total = 0u64;
    for i in 0..20u8 {
        let b = batch::build_batch(0, &[&[i; 4000], &[i; 3000]]);
        produce(&mut c, 9, "zc", 0, &b);
        total += b.len() as u64;
    }
    let before_kernel = server.metric("sluice_io_kernel_bytes_total");
    let mut fetched_bytes = 0u64;
    for _ in 0..3 {
        let resp = c.call(12, &fetch_req("zc", 0, 0, 0, 1));
        fetched_bytes += fetched(&resp).2.len() as u64;
    }
    assert_eq!(fetched_bytes, 3 * total);
    // The broker counts a response just after the client has it.
    server.metric_eventually("sluice_response_record_bytes_total", fetched_bytes);
    assert_eq!(
        server.metric("sluice_io_kernel_bytes_total") - before_kernel,
        fetched_bytes
    );
    assert_eq!(
        server.metric("sluice_record_bytes_through_user_space_total"),
        0
    );
    assert_eq!(
        server.metric("sluice_response_record_bytes_total"),
        fetched_bytes
    );
}

#[test]
fn io_uring_fetches_take_one_enter_per_response() {
    let server = Server::start(&["--data-path", "io_uring"]);
    let mut c = Client::connect(server.addr);
    for p in 0..3 {
        create_topic(&mut c, &format!("ring{p}"), 1);
    }
    let b = batch::build_batch(0, &[&[3u8; 20_000], &[4u8; 30_000]]);
    for p in 0..3 {
        for _ in 0..10 {
            produce(&mut c, 9, &format!("ring{p}"), 0, &b);
        }
    }
    let enters = "sluice_io_syscalls_total{call=\"io_uring_enter\"}";
    // 3 CreateTopics and 30 Produce responses so far, once the last is counted.
    let responses_before = server.metric_eventually("sluice_responses_total", 33);
    assert_eq!(responses_before, 33);
    let enters_before = server.metric(enters);
    let fetches = 20;
    for i in 0..fetches {
        let resp = c.call(12, &fetch_req(&format!("ring{}", i % 3), 0, 0, 0, 1));
        assert_eq!(fetched(&resp).2.len(), 10 * b.len());
    }
    // Every response sent counts; the fetches' responses are among them.
    let responses = server.metric_eventually("sluice_responses_total", responses_before + fetches)
        - responses_before;
    assert_eq!(responses, fetches);
    let used = server.metric(enters) - enters_before;
    assert_eq!(used, fetches, "one io_uring_enter per response");
    for call in ["sendfile", "splice", "send", "sendmsg"] {
        assert_eq!(
            server.metric(&format!("sluice_io_syscalls_total{{call=\"{call}\"}}")),
            0,
            "{call}: the io_uring path makes no other transfer syscall"
        );
    }
}

#[test]
fn io_uring_falls_back_to_sendfile_where_unavailable() {
    let server = Server::start_env(
        &["--data-path", "io_uring"],
        &[("SLUICE_DISABLE_IO_URING", "1")],
    );
    assert_eq!(server.metric("sluice_data_path_info{path=\"sendfile\"}"), 1);
    let mut c = Client::connect(server.addr);
    let b = batch::build_batch(0, &[&[9u8; 5_000]]);
    produce(&mut c, 9, "fb", 0, &b);
    let resp = c.call(12, &fetch_req("fb", 0, 0, 0, 1));
    assert_eq!(fetched(&resp).2.as_ref(), stored(&b, 0).as_slice());
    assert!(server.metric_eventually("sluice_io_syscalls_total{call=\"sendfile\"}", 1) >= 1);
    assert_eq!(
        server.metric("sluice_io_syscalls_total{call=\"io_uring_enter\"}"),
        0
    );
}

#[test]
fn a_copying_data_path_shows_up_in_the_same_counters() {
    let server = Server::start(&["--data-path", "read_write"]);
    let mut c = Client::connect(server.addr);
    let b = batch::build_batch(0, &[&[7u8; 10_000]]);
    produce(&mut c, 9, "rw", 0, &b);
    let resp = c.call(12, &fetch_req("rw", 0, 0, 0, 1));
    assert_eq!(fetched(&resp).2.as_ref(), stored(&b, 0).as_slice());
    assert_eq!(
        server.metric_eventually(
            "sluice_record_bytes_through_user_space_total",
            2 * b.len() as u64
        ),
        2 * b.len() as u64,
        "read+write copies records in and out of user space"
    );
}

#[test]
fn bad_input_gets_its_answer_and_a_healthy_client_carries_on() {
    let server = Server::start(&[]);
    let mut healthy = Client::connect(server.addr);
    create_topic(&mut healthy, "ok", 1);
    let good = batch::build_batch(0, &[b"healthy"]);
    let mut next = 0;
    let mut check_healthy = |healthy: &mut Client| {
        let (err, base) = produce(healthy, 9, "ok", 0, &good);
        assert_eq!((err, base), (0, next));
        next += 1;
        let resp = healthy.call(12, &fetch_req("ok", 0, base, 0, 1));
        assert_eq!(fetched(&resp).2.as_ref(), stored(&good, base).as_slice());
    };

    // A frame claiming 2 GiB: closed before any allocation of that size.
    let mut c = Client::connect(server.addr);
    std::io::Write::write_all(&mut c.stream, &i32::MAX.to_be_bytes()).expect("write");
    assert!(c.closed_by_broker(), "2 GiB frame closes the connection");
    check_healthy(&mut healthy);

    // A negative size.
    let mut c = Client::connect(server.addr);
    std::io::Write::write_all(&mut c.stream, &(-5i32).to_be_bytes()).expect("write");
    assert!(c.closed_by_broker());

    // A truncated header (3 bytes).
    let mut c = Client::connect(server.addr);
    c.send_raw_frame(&[0, 3, 0]);
    assert!(
        c.closed_by_broker(),
        "truncated header closes the connection"
    );
    check_healthy(&mut healthy);

    // An unknown API key.
    let mut c = Client::connect(server.addr);
    let mut raw = Vec::new();
    raw.extend_from_slice(&999i16.to_be_bytes());
    raw.extend_from_slice(&0i16.to_be_bytes());
    raw.extend_from_slice(&1i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    c.send_raw_frame(&raw);
    assert!(
        c.closed_by_broker(),
        "unknown API key closes the connection"
    );
    check_healthy(&mut healthy);

    // An unsupported version of Produce.
    let mut c = Client::connect(server.addr);
    let mut raw = Vec::new();
    raw.extend_from_slice(&0i16.to_be_bytes());
    raw.extend_from_slice(&99i16.to_be_bytes());
    raw.extend_from_slice(&1i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    c.send_raw_frame(&raw);
    assert!(
        c.closed_by_broker(),
        "unsupported Produce version closes the connection"
    );
    check_healthy(&mut healthy);

    // A body that does not decode (Metadata v1 with a lying array count).
    let mut c = Client::connect(server.addr);
    let mut raw = Vec::new();
    raw.extend_from_slice(&3i16.to_be_bytes());
    raw.extend_from_slice(&1i16.to_be_bytes());
    raw.extend_from_slice(&1i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    raw.extend_from_slice(&1_000_000i32.to_be_bytes());
    c.send_raw_frame(&raw);
    assert!(
        c.closed_by_broker(),
        "undecodable body closes the connection"
    );

    // A Produce whose batch has a corrupted CRC: CORRUPT_MESSAGE, nothing appended.
    let mut c = Client::connect(server.addr);
    let mut bad = batch::build_batch(0, &[b"corrupt me"]);
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(produce(&mut c, 9, "ok", 0, &bad).0, 2);
    // A lying batchLength: INVALID_RECORD.
    let mut lying = batch::build_batch(0, &[b"lies"]);
    lying[8..12].copy_from_slice(&10_000i32.to_be_bytes());
    assert_eq!(produce(&mut c, 9, "ok", 0, &lying).0, 87);
    // Magic 1: unsupported format.
    let mut old = batch::build_batch(0, &[b"old"]);
    old[16] = 1;
    assert_eq!(produce(&mut c, 9, "ok", 0, &old).0, 43);
    // An invalid topic name.
    assert_eq!(produce(&mut c, 9, "no spaces", 0, &good).0, 17);
    // A batch over max.message.bytes (1 MiB): MESSAGE_TOO_LARGE.
    let huge = batch::build_batch(0, &[&vec![1u8; 1_100_000]]);
    assert_eq!(produce(&mut c, 9, "ok", 0, &huge).0, 10);
    // The same connection is still usable after refused produces.
    check_healthy(&mut c);
    check_healthy(&mut healthy);
}

#[test]
fn data_survives_a_clean_restart_and_a_crash() {
    let mut server = Server::start(&["--flush", "always"]);
    let dir = server.take_dir().expect("dir");
    let data_dir = server.data_dir.clone();
    let mut c = Client::connect(server.addr);
    let mut expected = Vec::new();
    for i in 0..10u8 {
        let b = batch::build_batch(i as i64, &[&[i; 500]]);
        let (_, base) = produce(&mut c, 9, "keep", 0, &b);
        expected.extend_from_slice(&stored(&b, base));
    }
    server.stop();
    let mut server = Server::start_in(&data_dir, &["--flush", "always"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        fetched(&c.call(12, &fetch_req("keep", 0, 0, 0, 1)))
            .2
            .as_ref(),
        expected.as_slice()
    );
    let b = batch::build_batch(99, &[b"after restart"]);
    let (_, base) = produce(&mut c, 9, "keep", 0, &b);
    assert_eq!(base, 10);
    expected.extend_from_slice(&stored(&b, base));
    server.kill();
    let server = Server::start_in(&data_dir, &["--flush", "always"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        fetched(&c.call(12, &fetch_req("keep", 0, 0, 0, 1)))
            .2
            .as_ref(),
        expected.as_slice()
    );
    drop(dir);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    create_topic(&mut c, "pipe", 1);
    let b = batch::build_batch(0, &[b"p"]);
    let ids: Vec<i32> = (0..20)
        .map(|_| c.send(9, &produce_req("pipe", 0, Bytes::copy_from_slice(&b), 1)))
        .collect();
    for id in ids {
        let frame = c.read_frame().expect("response");
        assert_eq!(
            i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
            id
        );
    }
    // acks=0 gets no response: the next response is for the next request.
    c.send(9, &produce_req("pipe", 0, Bytes::copy_from_slice(&b), 0));
    let id = c.send(12, &fetch_req("pipe", 0, 0, 0, 1));
    let frame = c.read_frame().expect("fetch response");
    assert_eq!(
        i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
        id
    );
}

#[test]
fn a_toml_config_file_sets_defaults_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "default_partitions = 2\nflush = \"always\"\nauto-create-topics = true\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let partitions = |server: &Server| {
        let mut c = Client::connect(server.addr);
        let mut t = MetadataRequestTopic::default();
        t.name = Some(name("cfg"));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        r.allow_auto_topic_creation = true;
        c.call(12, &r).topics[0].partitions.len()
    };
    let from_file = Server::start(&["--config", config]);
    assert_eq!(partitions(&from_file), 2, "the file's setting applies");
    let overridden = Server::start(&["--config", config, "--default-partitions", "3"]);
    assert_eq!(partitions(&overridden), 3, "a flag beats the file");
    std::fs::write(dir.path().join("bad.toml"), "no_such_setting = 1\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"no_such_setting\""));
}

#[test]
fn describe_configs_and_create_partitions_answer_admin_tools() {
    let server = Server::start(&["--segment-bytes", "64m", "--auto-create-topics", "false"]);
    let mut c = Client::connect(server.addr);
    create_topic(&mut c, "admin", 2);
    let describe = |c: &mut Client, kind: i8, name: &str, keys: Option<Vec<&str>>| {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = kind;
        res.resource_name = StrBytes::from_string(name.to_string());
        res.configuration_keys = keys.map(|k| {
            k.into_iter()
                .map(|k| StrBytes::from_string(k.to_string()))
                .collect()
        });
        let mut r = DescribeConfigsRequest::default();
        r.resources = vec![res];
        c.call(4, &r).results.remove(0)
    };
    let topic = describe(&mut c, 2, "admin", None);
    assert_eq!(topic.error_code, 0);
    let value =
        |res: &kafka_protocol::messages::describe_configs_response::DescribeConfigsResult,
         k: &str| {
            res.configs
                .iter()
                .find(|c| c.name.as_str() == k)
                .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
        };
    assert_eq!(value(&topic, "segment.bytes").as_deref(), Some("67108864"));
    assert_eq!(value(&topic, "cleanup.policy").as_deref(), Some("delete"));
    let only = describe(&mut c, 2, "admin", Some(vec!["retention.ms"]));
    assert_eq!(only.configs.len(), 1);
    let broker = describe(&mut c, 4, "0", None);
    assert_eq!(
        value(&broker, "auto.create.topics.enable").as_deref(),
        Some("false")
    );
    assert_eq!(describe(&mut c, 2, "missing", None).error_code, 3);

    let grow = |c: &mut Client, count: i32| {
        let mut t = CreatePartitionsTopic::default();
        t.name = name("admin");
        t.count = count;
        let mut r = CreatePartitionsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 5000;
        c.call(1, &r).results[0].error_code
    };
    assert_eq!(grow(&mut c, 5), 0);
    assert_eq!(grow(&mut c, 3), 37, "partition counts only grow");
    let (err, base) = produce(
        &mut c,
        9,
        "admin",
        4,
        &batch::build_batch(0, &[b"new partition"]),
    );
    assert_eq!((err, base), (0, 0));
    let mut all = MetadataRequest::default();
    all.topics = None;
    assert_eq!(c.call(12, &all).topics[0].partitions.len(), 5);
}

#[test]
fn idempotent_produce_appends_a_retried_batch_once_even_across_a_restart() {
    let mut server = Server::start(&["--flush", "always"]);
    let dir = server.take_dir();
    let data_dir = server.data_dir.clone();
    let mut c = Client::connect(server.addr);
    let init = |c: &mut Client| {
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = None;
        r.producer_id = (-1).into();
        r.producer_epoch = -1;
        r.transaction_timeout_ms = 60_000;
        let resp = c.call(4, &r);
        assert_eq!(resp.error_code, 0);
        (resp.producer_id.0, resp.producer_epoch)
    };
    let (pid, epoch) = init(&mut c);
    let (pid2, _) = init(&mut c);
    assert_ne!(pid, pid2, "every producer gets its own id");
    let with = |seq: i32, epoch: i16, n: usize| {
        let values: Vec<Vec<u8>> = (0..n).map(|i| format!("m{seq}-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let mut b = batch::build_batch(0, &refs);
        batch::set_producer(&mut b, pid, epoch, seq);
        b
    };
    assert_eq!(produce(&mut c, 9, "idem", 0, &with(0, epoch, 3)), (0, 0));
    assert_eq!(
        produce(&mut c, 9, "idem", 0, &with(0, epoch, 3)),
        (0, 0),
        "retry: same offset"
    );
    assert_eq!(produce(&mut c, 9, "idem", 0, &with(3, epoch, 2)), (0, 3));
    assert_eq!(
        produce(&mut c, 9, "idem", 0, &with(9, epoch, 1)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    server.stop();

    let server = Server::start_in(&data_dir, &["--flush", "always"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        produce(&mut c, 9, "idem", 0, &with(3, epoch, 2)),
        (0, 3),
        "retry after restart"
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, &with(5, epoch - 1, 1)).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (err, hw, records) = fetched(&c.call(12, &fetch_req("idem", 0, 0, 0, 1)));
    assert_eq!((err, hw), (0, 5), "each batch once");
    assert_eq!(
        records.len(),
        with(0, epoch, 3).len() + with(3, epoch, 2).len()
    );
    let (pid3, _) = init(&mut c);
    assert!(pid3 > pid2, "ids are not reused after a restart");
    // A transactional id gets a fresh id from the same counter, at epoch 0
    // (the transaction coordinator's side is tests/transactions.rs).
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = Some(StrBytes::from_static_str("tx").into());
    r.transaction_timeout_ms = 60_000;
    r.producer_id = (-1).into();
    r.producer_epoch = -1;
    let answer = c.call(4, &r);
    assert_eq!((answer.error_code, answer.producer_epoch), (0, 0));
    assert!(answer.producer_id.0 > pid3, "not an id handed out before");
    drop(dir);
}

#[test]
fn cold_fetch_regions_are_read_in_before_sending() {
    cold_fetch(&[], true);
}

#[test]
fn without_fetch_isolation_cold_regions_are_sent_as_they_are() {
    cold_fetch(&["--fetch-isolation", "false"], false);
}

fn cold_fetch(args: &[&str], isolated: bool) {
    let server = Server::start(args);
    let mut c = Client::connect(server.addr);
    let mut expected = Vec::new();
    for i in 0..40u8 {
        let b = batch::build_batch(0, &[&[i; 50_000]]);
        let (_, base) = produce(&mut c, 9, "cold", 0, &b);
        expected.extend_from_slice(&stored(&b, base));
    }
    // Drop the segment's pages from the page cache, as a minute of idleness would.
    let segment = server
        .data_dir
        .join("cold-0")
        .join("00000000000000000000.log");
    let file = std::fs::File::open(&segment).expect("segment");
    sluice_io::cache::evict(&file).expect("evict");
    assert!(!sluice_io::cache::is_resident(&file, 0, expected.len() as u64).expect("cachestat"));
    // Every batch has the same length: read whole batches until all are in.
    let batch_len = expected.len() / 40;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let resp = c.call(
            12,
            &fetch_req("cold", 0, (got.len() / batch_len) as i64, 0, 1),
        );
        let records = fetched(&resp).2;
        let whole = records.len() / batch_len * batch_len;
        assert!(whole > 0, "progress");
        got.extend_from_slice(&records[..whole]);
    }
    assert_eq!(got, expected, "cold data served intact");
    if !isolated {
        assert_eq!(
            server.metric("sluice_fetch_cold_regions_total"),
            0,
            "isolation off: nothing is warmed first"
        );
        return;
    }
    assert!(
        server.metric("sluice_fetch_cold_regions_total") >= 1,
        "the region was warmed first"
    );
    assert!(server.metric("sluice_fetch_gathers_offloaded_total") >= 1);
    // Once warm, fetches are gathered on the async worker: no hand-off.
    let offloaded = server.metric("sluice_fetch_gathers_offloaded_total");
    for _ in 0..5 {
        c.call(12, &fetch_req("cold", 0, 0, 0, 1));
    }
    assert_eq!(
        server.metric("sluice_fetch_gathers_offloaded_total"),
        offloaded,
        "hot fetches stay on the worker"
    );
    let warmed = server.metric("sluice_fetch_cold_regions_total");
    c.call(12, &fetch_req("cold", 0, 0, 0, 1));
    assert_eq!(
        server.metric("sluice_fetch_cold_regions_total"),
        warmed,
        "hot data needs no warming"
    );
}

#[test]
fn request_and_append_latencies_are_histograms_on_the_metrics_page() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    let b = batch::build_batch(0, &[b"timed"]);
    for _ in 0..7 {
        produce(&mut c, 9, "lat", 0, &b);
    }
    for _ in 0..3 {
        c.call(12, &fetch_req("lat", 0, 0, 0, 1));
    }
    let produce_count = "sluice_request_duration_seconds_count{api=\"Produce\"}";
    assert_eq!(server.metric_eventually(produce_count, 7), 7);
    assert_eq!(
        server.metric_eventually("sluice_request_duration_seconds_count{api=\"Fetch\"}", 3),
        3
    );
    // Every request is in the +Inf bucket, and buckets are cumulative.
    assert_eq!(
        server.metric("sluice_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"}"),
        7
    );
    assert!(
        server.metric("sluice_request_duration_seconds_bucket{api=\"Produce\",le=\"10\"}")
            >= server
                .metric("sluice_request_duration_seconds_bucket{api=\"Produce\",le=\"0.001\"}")
    );
    assert_eq!(server.metric("sluice_append_duration_seconds_count"), 7);
    assert_eq!(server.metric("sluice_append_queue_seconds_count"), 7);
    // The runtime's 1 ms pulse has been ticking all along.
    assert!(server.metric("sluice_runtime_tick_lateness_seconds_count") > 0);
}
