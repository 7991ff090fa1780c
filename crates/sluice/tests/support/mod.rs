//! A real `sluice serve` process for tests, and a minimal Kafka client over a
//! raw socket on `sluice_client`'s framing.
#![allow(dead_code)]

pub mod cluster;
pub mod pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::protocol::{Request, StrBytes};
use sluice_bench::process::{BrokerLaunch, BrokerProcess};
use sluice_client::wire;

/// A broker process on a free port, with its own data directory; started,
/// stopped and killed by `sluice_bench::process`, as the benchmarks do.
pub struct Server {
    process: BrokerProcess,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
    // Dropped after `process`: the broker is gone before its directory.
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("data");
        let mut s = Server::start_in(&dir, args);
        s._temp = Some(temp);
        s
    }

    /// As [`Server::start`], with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("data");
        let mut s = Server::start_in_env(&dir, args, env);
        s._temp = Some(temp);
        s
    }

    /// Starts a broker on an existing data directory (for restarts).
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        Server::start_in_env(dir, args, &[])
    }

    /// Starts a broker with extra environment variables.
    pub fn start_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_at(dir, "127.0.0.1:0", args, env)
    }

    /// Starts a broker listening on `listen` (a fixed port lets clients
    /// reconnect across restarts).
    pub fn start_at(dir: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_wrapped(&[], dir, listen, args, env)
    }

    /// As [`Server::start_at`], run under a wrapper command (`prlimit …`).
    pub fn start_wrapped(
        wrapper: &[&str],
        dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let process = BrokerLaunch::new(env!("CARGO_BIN_EXE_sluice"), dir)
            .wrapper(wrapper)
            .listen(listen)
            .args(args)
            .envs(env.iter().copied())
            .quiet()
            .start()
            .expect("start sluice serve");
        Server {
            addr: process.addr,
            metrics: Some(process.metrics),
            data_dir: dir.to_path_buf(),
            process,
            _temp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The bound address of listener `name` (`SASL_SSL`, …).
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .process
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.process.listeners))
    }

    /// The broker's exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.process.try_wait()
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Takes the temp dir over so a restarted server can reuse it.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }

    /// A metric once it reaches `want` (the broker counts a response just
    /// after the client has it), or its last value after 5 s.
    pub fn metric_eventually(&self, name: &str, want: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name);
            if v == want || std::time::Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One counter from the metrics page.
    pub fn metric(&self, name: &str) -> u64 {
        let page = self.process.metrics_page().expect("read metrics");
        page.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing in\n{page}"))
    }
}

/// A blocking Kafka client for one connection that panics on what a test
/// does not expect, and lets a test write raw frames. The framing is
/// `sluice_client::wire`, the same the tools and the load generator use.
pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            stream,
            correlation: 0,
        }
    }

    /// Sends a request and returns the decoded response.
    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let correlation = self.send(version, req);
        let frame = self.read_frame().expect("response frame");
        wire::decode_response::<R>(Bytes::from(frame), version, correlation)
            .expect("a response to this request, in request order")
    }

    /// As `call`, but None if the broker went away (a killed broker).
    pub fn try_call<R: Request>(&mut self, version: i16, req: &R) -> Option<R::Response> {
        self.correlation += 1;
        let frame = wire::encode_request(req, version, self.correlation, None).ok()?;
        self.stream.write_all(&frame).ok()?;
        let frame = self.read_frame()?;
        wire::decode_response::<R>(Bytes::from(frame), version, self.correlation).ok()
    }

    /// Sends a request without reading a response; returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        self.correlation += 1;
        let client_id = Some(StrBytes::from_static_str("sluice-test"));
        let frame =
            wire::encode_request(req, version, self.correlation, client_id).expect("encode");
        self.stream.write_all(&frame).expect("write frame");
        self.correlation
    }

    pub fn send_raw_frame(&mut self, body: &[u8]) {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        self.stream.write_all(&out).expect("write frame");
    }

    /// Reads one response frame (without its size), or None if the broker
    /// closed the connection.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        wire::read_frame(&mut self.stream, i32::MAX as usize)
            .ok()
            .map(|frame| frame.to_vec())
    }

    /// True if the broker closed this connection.
    pub fn closed_by_broker(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

// Requests the broker tests share.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, FetchResponse, ProduceRequest, TopicName,
};
use sluice_log::batch;

pub fn name(s: &str) -> TopicName {
    sluice_client::topic_name(s)
}

/// A one-partition Produce with a 5 s timeout.
pub fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    let mut r = sluice_client::produce_request(topic, partition, records, acks);
    r.timeout_ms = 5000;
    r
}

pub fn fetch_req(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = partition;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    fp.log_start_offset = -1;
    let mut ft = FetchTopic::default();
    ft.topic = name(topic);
    ft.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.replica_id = (-1).into();
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = min_bytes;
    r.max_bytes = 50 << 20;
    r.session_epoch = -1;
    r.topics = vec![ft];
    r
}

pub fn create_topic(c: &mut Client, topic: &str, partitions: i32) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 5000;
    c.call(5, &r).topics[0].error_code
}

/// (error, base offset) of a one-partition produce.
pub fn produce(
    c: &mut Client,
    version: i16,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> (i16, i64) {
    let resp = c.call(
        version,
        &produce_req(topic, partition, Bytes::copy_from_slice(records), -1),
    );
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetched(resp: &FetchResponse) -> (i16, i64, Bytes) {
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

pub fn stored(b: &[u8], offset: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    batch::set_base_offset(&mut v, offset);
    batch::set_leader_epoch(&mut v, 0);
    v
}

/// The interop venv's Python (kafka-python, confluent-kafka), which
/// `scripts/test.sh` creates.
pub fn python() -> PathBuf {
    std::env::var_os("SLUICE_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python")
        })
}

/// Runs a Python snippet with the interop clients, `BROKER` set to the
/// bootstrap address; panics with its output if it fails; returns its
/// trimmed stdout.
pub fn py(broker: SocketAddr, code: &str) -> String {
    let python = python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh, which creates the interop venv",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(format!("BROKER = '{broker}'\n{code}"))
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
