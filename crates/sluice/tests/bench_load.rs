//! `sluice bench produce` and `sluice bench consume` against a real broker:
//! what they report is what the broker holds and serves.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{Client, Server};

fn bench(args: &[&str], json: &std::path::Path) -> Value {
    bench_with_output(args, json).0
}

/// The JSON report and what was printed.
fn bench_with_output(args: &[&str], json: &std::path::Path) -> (Value, String) {
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
    let report =
        serde_json::from_str(&std::fs::read_to_string(json).expect("json")).expect("valid json");
    (report, String::from_utf8_lossy(&out.stdout).into_owned())
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
            "--svg",
            dir.path().join("p.svg").to_str().expect("utf-8"),
        ],
        &dir.path().join("p.json"),
    );
    let svg = std::fs::read_to_string(dir.path().join("p.svg")).expect("svg written");
    assert!(
        svg.contains("<svg") && svg.contains("p99.9"),
        "latency chart"
    );
    // The broker runs here: its CPU per GB is measured.
    assert!(
        produced["broker_cpu_s_per_gb"]
            .as_f64()
            .expect("broker cpu")
            > 0.0
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

/// Batches over the broker's message.max.bytes (1 MiB) are refused: the
/// report names the refusal with its count, in the table and the JSON, and
/// gives no broker CPU per GB for the nothing that was written.
#[test]
fn refused_batches_are_named_and_nothing_written_has_no_per_gb_figure() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let (report, table) = bench_with_output(
        &[
            "produce",
            "-b",
            &server.addr.to_string(),
            "-t",
            "big",
            "--partitions",
            "1",
            "--connections",
            "1",
            "--record-size",
            "1000",
            "--batch-size",
            "2m",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ],
        &dir.path().join("p.json"),
    );
    assert_eq!(report["records"], 0, "{report}");
    let refused = report["errors"].as_u64().expect("errors");
    assert!(refused > 0, "{report}");
    assert_eq!(
        report["errors_by_kind"]["MESSAGE_TOO_LARGE"].as_u64(),
        Some(refused),
        "{report}"
    );
    assert!(report["broker_cpu_s_per_gb"].is_null(), "{report}");
    assert!(
        table.contains(&format!("errors: MESSAGE_TOO_LARGE × {refused}")),
        "{table}"
    );
    // The CPU column of the row is a dash, not seconds per GB of nothing.
    let row = table
        .lines()
        .find(|l| l.starts_with("produce"))
        .expect("a produce row");
    assert!(row.trim_end().ends_with(" -"), "{row}");
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

/// `sluice bench broker consume` starts its own brokers: every cell it asked
/// for is measured, the zero-copy paths move no record byte through user
/// space, io_uring takes one io_uring_enter per fetch, and the bare sendfile
/// baseline runs in the same round.
#[test]
fn the_broker_consume_harness_measures_every_path_it_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let report = bench(
        &[
            "broker",
            "consume",
            "--dir",
            dir.path().join("data").to_str().expect("utf-8"),
            "--fill",
            "16m",
            "--partitions",
            "2",
            "--paths",
            "read_write,sendfile,io_uring",
            "--consumers",
            "1,2",
            "--repeats",
            "1",
            "--run-ms",
            "300",
            "--svg",
            dir.path().join("c.svg").to_str().expect("utf-8"),
        ],
        &dir.path().join("c.json"),
    );
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6, "3 paths x 2 consumer counts");
    for row in rows {
        let path = row["path"].as_str().expect("path");
        assert!(row["gb_per_s"].as_f64().expect("gb/s") > 0.0, "{row}");
        assert!(
            row["broker_cpu_s_per_gb"].as_f64().expect("cpu") > 0.0,
            "{row}"
        );
        let user = row["record_bytes_through_user_space_per_gb"]
            .as_f64()
            .expect("user bytes");
        let calls = &row["syscalls_per_fetch"];
        match path {
            "read_write" => {
                // Records are read into user space and sent from it: 2 per byte.
                assert!((user / 2e9 - 1.0).abs() < 0.01, "{row}");
                assert!(calls["pread"].as_f64().expect("pread") >= 1.0, "{row}");
            }
            "sendfile" => {
                assert_eq!(user, 0.0, "{row}");
                // Fetches at the end of a partition carry no region.
                assert!(calls["sendfile"].as_f64().expect("sendfile") > 0.5, "{row}");
                assert!(calls.get("pread").is_none(), "{row}");
            }
            "io_uring" => {
                assert_eq!(user, 0.0, "{row}");
                assert_eq!(calls["io_uring_enter"].as_f64(), Some(1.0), "{row}");
                assert_eq!(calls.as_object().expect("calls").len(), 1, "{row}");
            }
            other => panic!("unexpected path {other}"),
        }
    }
    assert!(report["baseline"][0]["gb_per_s"].as_f64().expect("bare") > 0.0);
    assert!(report["broker_over_bare_median"].as_f64().expect("ratio") > 0.0);
    let svg = std::fs::read_to_string(dir.path().join("c.svg")).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("io_uring"));
}

/// `sluice bench broker isolation`: with isolation on, the catching-up
/// consumer's cold regions are warmed off the workers; off, none are.
#[test]
fn the_isolation_harness_runs_both_modes() {
    let dir = tempfile::tempdir().expect("dir");
    let report = bench(
        &[
            "broker",
            "isolation",
            "--dir",
            dir.path().join("data").to_str().expect("utf-8"),
            "--backlog",
            "32m",
            "--rate",
            "20000",
            "--repeats",
            "1",
            "--svg",
            dir.path().join("i.svg").to_str().expect("utf-8"),
        ],
        &dir.path().join("i.json"),
    );
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        let on = run["isolation"].as_bool().expect("isolation");
        let warmed = run["cold_regions_warmed"].as_f64().expect("warmed");
        assert!(run["with_consumer_p99_ms"].as_f64().expect("p99") > 0.0);
        assert!(run["alone_p99_ms"].as_f64().expect("p99") > 0.0);
        // 32 MB read back at 1 MiB a fetch.
        assert!(
            run["catch_up_gb_per_s"].as_f64().expect("gb/s") > 0.0,
            "{run}"
        );
        if on {
            assert!(warmed >= 1.0, "evicted backlog is warmed first: {run}");
        } else {
            assert_eq!(warmed, 0.0, "{run}");
        }
    }
}
