//! Interop with Python clients: kafka-python (a pure-Python protocol
//! implementation) and confluent-kafka (librdkafka), each producing and
//! consuming 10,000 messages over 3 partitions, and each resuming a consumer
//! group on data the other wrote (scripts/interop_clients.py).
//! `scripts/test.sh` creates the venv with both clients.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::Server;

fn run_script(args: &[&str], expect: &str) {
    let server = Server::start(&[
        "--default-partitions",
        "3",
        "--group-initial-rebalance-delay-ms",
        "300",
    ]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/interop_clients.py");
    let python = support::python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh, which creates the interop venv",
        python.display()
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(server.addr.to_string())
        .args(args)
        .output()
        .expect("run the interop script");
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(expect), "{stdout}");
}

#[test]
fn kafka_python_produces_and_consumes_ten_thousand_messages() {
    run_script(
        &["kafka-python", "py-kafka-python"],
        "10000 messages over 3 partitions checked",
    );
}

#[test]
fn confluent_kafka_produces_and_consumes_ten_thousand_messages() {
    run_script(
        &["confluent-kafka", "py-confluent-kafka"],
        "10000 messages over 3 partitions checked",
    );
}

#[test]
fn a_confluent_kafka_group_resumes_where_it_committed_on_kafka_python_data() {
    run_script(
        &[
            "group-handoff",
            "handoff-a",
            "kafka-python",
            "confluent-kafka",
        ],
        "second run resumed",
    );
}

#[test]
fn a_kafka_python_group_resumes_where_it_committed_on_confluent_kafka_data() {
    run_script(
        &[
            "group-handoff",
            "handoff-b",
            "confluent-kafka",
            "kafka-python",
        ],
        "second run resumed",
    );
}
