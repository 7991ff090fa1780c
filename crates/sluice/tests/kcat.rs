//! Interop with kcat (librdkafka, as Debian ships it): metadata, produce and
//! consume of 10,000 keyed messages across 3 partitions, and every
//! compression codec passed through untouched. `scripts/test.sh` installs kcat.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

use support::Server;

fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run scripts/test.sh, which installs it");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to kcat");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("kcat ran");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// (partition, offset, key, value) of every message in `topic`.
fn consume_all(broker: &str, topic: &str) -> Vec<(u32, i64, String, String)> {
    let out = kcat(
        &[
            "-b",
            broker,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p\t%o\t%k\t%s\n",
        ],
        None,
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            (
                f[0].parse().expect("partition"),
                f[1].parse().expect("offset"),
                f[2].to_string(),
                f[3].to_string(),
            )
        })
        .collect()
}

#[test]
fn kcat_lists_produces_and_consumes_ten_thousand_messages_over_three_partitions() {
    let server = Server::start(&["--default-partitions", "3"]);
    let broker = server.addr.to_string();
    let meta = kcat(&["-b", &broker, "-L"], None);
    assert!(meta.contains("1 brokers"), "{meta}");
    assert!(meta.contains(&format!("broker 0 at {broker}")), "{meta}");

    let input: String = (0..10_000)
        .map(|i| format!("key-{i}:value-{i}\n"))
        .collect();
    kcat(
        &["-b", &broker, "-P", "-t", "interop", "-K", ":"],
        Some(&input),
    );
    let got = consume_all(&broker, "interop");
    assert_eq!(got.len(), 10_000);
    let mut per_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (p, o, k, v) in &got {
        per_partition.entry(*p).or_default().push(*o);
        let i: u32 = k
            .strip_prefix("key-")
            .and_then(|n| n.parse().ok())
            .expect("key");
        assert_eq!(v, &format!("value-{i}"));
        assert!(seen.insert(i), "message {i} delivered twice");
    }
    assert_eq!(per_partition.len(), 3, "keys spread over the 3 partitions");
    for offsets in per_partition.values() {
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, &want,
            "each partition numbered from 0 without gaps"
        );
    }
    let meta = kcat(&["-b", &broker, "-L", "-t", "interop"], None);
    assert!(meta.contains("3 partitions"), "{meta}");
}

#[test]
fn compressed_batches_pass_through_for_every_codec() {
    let server = Server::start(&[]);
    let broker = server.addr.to_string();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("z-{codec}");
        let input: String = (0..1000)
            .map(|i| format!("{codec}-{i} {}\n", "x".repeat(i % 200)))
            .collect();
        kcat(
            &["-b", &broker, "-P", "-t", &topic, "-z", codec],
            Some(&input),
        );
        let got = consume_all(&broker, &topic);
        let values: Vec<String> = got.into_iter().map(|(_, _, _, v)| v).collect();
        let want: Vec<String> = input.lines().map(str::to_string).collect();
        assert_eq!(values, want, "{codec}");
    }
}

#[test]
fn kcat_balanced_consumer_mode_commits_and_resumes() {
    let server = Server::start(&[
        "--default-partitions",
        "3",
        "--group-initial-rebalance-delay-ms",
        "100",
    ]);
    let broker = server.addr.to_string();
    let first: String = (0..30).map(|i| format!("k{i}:first-{i}\n")).collect();
    kcat(&["-b", &broker, "-P", "-t", "kg", "-K", ":"], Some(&first));
    let group_read = || {
        kcat(
            &[
                "-b",
                &broker,
                "-G",
                "kcat-group",
                "-X",
                "auto.offset.reset=earliest",
                "-e",
                "-q",
                "-f",
                "%s\n",
                "kg",
            ],
            None,
        )
    };
    let got = group_read();
    assert_eq!(got.lines().count(), 30, "{got}");
    let second: String = (0..10).map(|i| format!("k{i}:second-{i}\n")).collect();
    kcat(&["-b", &broker, "-P", "-t", "kg", "-K", ":"], Some(&second));
    let got = group_read();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines.len(),
        10,
        "the group resumes after its commits: {got}"
    );
    assert!(lines.iter().all(|l| l.starts_with("second-")));
}
