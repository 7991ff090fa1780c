//! Interop with Python clients: kafka-python (a pure-Python protocol
//! implementation) and confluent-kafka (librdkafka), each producing and
//! consuming 10,000 messages over 3 partitions (scripts/interop_clients.py).
//! `scripts/test.sh` creates the venv with both clients.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::Server;

fn python() -> PathBuf {
    std::env::var_os("SLUICE_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python")
        })
}

fn run_client(client: &str) {
    let server = Server::start(&["--default-partitions", "3"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/interop_clients.py");
    let python = python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh, which creates the interop venv",
        python.display()
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(server.addr.to_string())
        .arg(client)
        .arg(format!("py-{client}"))
        .output()
        .expect("run the interop script");
    assert!(
        out.status.success(),
        "{client} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("10000 messages over 3 partitions checked"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_produces_and_consumes_ten_thousand_messages() {
    run_client("kafka-python");
}

#[test]
fn confluent_kafka_produces_and_consumes_ten_thousand_messages() {
    run_client("confluent-kafka");
}
