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
