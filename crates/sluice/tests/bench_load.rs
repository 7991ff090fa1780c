//! `sluice bench produce` and `sluice bench consume` against a real broker:
//! what they report is what the broker holds and serves.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{Client, Server};

fn bench(args: &[&str], json: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("run sluice bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).expect("json")).expect("valid json")
}

#[test]
fn the_load_generator_produces_and_consumes_what_it_reports() {
    let server = Server::start(&["--default-partitions", "2"]);
    let b = server.addr.to_string();
    let dir = tempfile::tempdir().expect("dir");
    let produced = bench(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            "load",
            "--partitions",
            "2",
            "--connections",
            "2",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ],
        &dir.path().join("p.json"),
    );
    let records = produced["records"].as_u64().expect("records");
    assert!(records > 0);
    assert_eq!(produced["errors"], 0);
    assert!(produced["latency"]["p99_ms"].as_f64().expect("p99") > 0.0);
    // The broker holds at least what was counted (warm-up and the last
    // in-flight batches may add more, never less).
    let mut c = Client::connect(server.addr);
    let mut held = 0;
    for p in 0..2 {
        let mut lo =
            kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
        lo.partition_index = p;
        lo.timestamp = -1;
        let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
        t.name = kafka_protocol::messages::TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str("load"),
        );
        t.partitions = vec![lo];
        let mut r = kafka_protocol::messages::ListOffsetsRequest::default();
        r.replica_id = (-1).into();
        r.topics = vec![t];
        held += c.call(5, &r).topics[0].partitions[0].offset as u64;
    }
    assert!(
        held >= records,
        "broker holds {held}, generator counted {records}"
    );
    let consumed = bench(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            "load",
            "--partitions",
            "2",
            "--connections",
            "2",
            "--duration-s",
            "1",
        ],
        &dir.path().join("c.json"),
    );
    assert!(consumed["records"].as_u64().expect("records") >= held.min(1));
    assert!(consumed["mb_per_s"].as_f64().expect("mb/s") > 0.0);
}

#[test]
fn end_to_end_latency_is_measured_on_every_record() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let report = bench(
        &[
            "e2e",
            "-b",
            &server.addr.to_string(),
            "--rate",
            "5000",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ],
        &dir.path().join("e.json"),
    );
    let records = report["records"].as_u64().expect("records");
    // About a second of 5,000 records/s arrived and was timed.
    assert!(
        (2_000..=6_000).contains(&records),
        "{records} records timed"
    );
    let p50 = report["latency"]["p50_ms"].as_f64().expect("p50");
    let max = report["latency"]["max_ms"].as_f64().expect("max");
    assert!(p50 > 0.0 && p50 <= max);
}
