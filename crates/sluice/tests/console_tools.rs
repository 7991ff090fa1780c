//! `sluice produce` and `sluice consume` against a real broker: keyed lines
//! in, formatted messages out, every partition, compression, offsets, counts.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::Server;

fn sluice(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn produce_and_consume_tools_round_trip_keys_values_and_offsets() {
    let server = Server::start(&["--default-partitions", "3"]);
    let b = server.addr.to_string();
    let input: String = (0..300).map(|i| format!("key{i}:value {i}\n")).collect();
    sluice(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            "tools",
            "-K",
            ":",
            "-z",
            "lz4",
            "--batch-records",
            "50",
        ],
        &input,
    );
    let out = sluice(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            "tools",
            "-e",
            "-f",
            "%p %o %k=%s\\n",
        ],
        "",
    );
    let mut lines: Vec<(u32, i64, String)> = out
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            (
                f.next().and_then(|p| p.parse().ok()).expect("partition"),
                f.next().and_then(|o| o.parse().ok()).expect("offset"),
                f.next().expect("rest").to_string(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 300);
    lines.sort();
    let mut seen: Vec<String> = lines.iter().map(|(_, _, kv)| kv.clone()).collect();
    seen.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("key{i}=value {i}")).collect();
    want.sort();
    assert_eq!(seen, want);
    // The same key always lands on the same partition (murmur2, as Java does).
    let again = sluice(
        &["consume", "-b", &b, "-t", "tools", "-e", "-f", "%k %p\\n"],
        "",
    );
    assert_eq!(again.lines().count(), 300);
    // An explicit partition, an offset and a count.
    sluice(
        &["produce", "-b", &b, "-t", "tools", "-p", "1"],
        "x\ny\nz\n",
    );
    let p1 = sluice(
        &[
            "consume", "-b", &b, "-t", "tools", "-p", "1", "-o", "end", "-e",
        ],
        "",
    );
    assert!(p1.is_empty(), "nothing after the end: {p1:?}");
    let first = lines.iter().filter(|(p, _, _)| *p == 1).count() as i64;
    let tail = sluice(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            "tools",
            "-p",
            "1",
            "-o",
            &first.to_string(),
            "-c",
            "3",
            "-f",
            "%o:%s\\n",
        ],
        "",
    );
    assert_eq!(
        tail,
        format!("{}:x\n{}:y\n{}:z\n", first, first + 1, first + 2)
    );
}

/// Runs `sluice` expecting failure; returns its stderr.
fn sluice_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run sluice");
    assert!(!out.status.success(), "sluice {args:?} should fail");
    String::from_utf8(out.stderr).expect("utf-8")
}

#[test]
fn topic_admin_creates_lists_describes_and_deletes_over_the_kafka_protocol() {
    let server = Server::start(&["--auto-create-topics", "false"]);
    let b = server.addr.to_string();
    let topic = |args: &[&str]| {
        let mut all = vec!["topic", "-b", &b];
        all.extend_from_slice(args);
        sluice(&all, "")
    };
    assert_eq!(topic(&["list"]), "");
    assert_eq!(
        topic(&["create", "orders", "-p", "3", "-c", "retention.ms=60000"]),
        "created topic orders with 3 partition(s)\n"
    );
    topic(&["create", "audit"]);
    let err = sluice_fails(&["topic", "-b", &b, "create", "orders"]);
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");
    assert_eq!(topic(&["list"]), "audit\norders\n");

    sluice(
        &["produce", "-b", &b, "-t", "orders", "-p", "1"],
        "one\ntwo\n",
    );
    let described = topic(&["describe", "orders"]);
    assert_eq!(
        described,
        "topic orders  partitions 3\n\
         \x20 configs retention.ms=60000\n\
         \x20 partition 0  leader 0  epoch -1  replicas [0]  isr [0]  earliest 0  latest 0  messages 0\n\
         \x20 partition 1  leader 0  epoch -1  replicas [0]  isr [0]  earliest 0  latest 2  messages 2\n\
         \x20 partition 2  leader 0  epoch -1  replicas [0]  isr [0]  earliest 0  latest 0  messages 0\n"
    );
    let err = sluice_fails(&["topic", "-b", &b, "describe", "missing"]);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");

    assert_eq!(topic(&["delete", "orders"]), "deleted topic orders\n");
    assert_eq!(topic(&["list"]), "audit\n");
    let err = sluice_fails(&["topic", "-b", &b, "delete", "orders"]);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
}
