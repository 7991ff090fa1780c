//! Cluster mode under test: a real etcd (`/usr/bin/etcd`, Debian's
//! etcd-server) and N real `sluice serve --cluster etcd://…` processes on
//! fixed loopback ports, each with its own data directory kept across
//! restarts; a raw-socket Kafka client that does not hang on a stopped
//! broker; and readers of a stopped broker's partition files, to compare
//! replicas record by record and byte by byte.
//!
//! Brokers are named by node id (1..=N) everywhere, as Metadata names them.
//! Each broker's stderr goes to `<cluster dir>/broker-N.log` (appended
//! across restarts), etcd's to `etcd.log`; when a test panics the cluster
//! prints the tail of every log and keeps its directory for a post-mortem.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use sluice_bench::process::{BrokerLaunch, BrokerProcess};
use sluice_client::{error_name, wire};
use sluice_log::batch::{self, BatchHeader, HEADER_LEN};

/// `--cluster-lease-ms` of every test broker.
pub const LEASE_MS: u64 = 2000;
/// `--replica-lag-time-max-ms` of every test broker.
pub const LAG_MS: u64 = 2000;

/// Kafka error codes the cluster tests name.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const REPLICA_NOT_AVAILABLE: i16 = 9;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
}

/// `NAME (n)` for an error code, for messages.
pub fn err(c: i16) -> String {
    format!("{} ({c})", error_name(c))
}

// ---------------------------------------------------------------------------
// Ports, signals, small HTTP

/// Ports handed out in this process, so two calls never return the same one.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port below the kernel's ephemeral range, so that no
/// outgoing connection can be given it as its local port while the broker
/// that owns it is down between a kill and a restart.
pub fn fixed_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut state = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    if low > 11_000 {
        for _ in 0..500 {
            let port = (10_000 + next_random(&mut state) % u64::from(low - 10_000)) as u16;
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return port;
            }
        }
    }
    // Fall back on the kernel's choice.
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// A cheap pseudo-random stream (no extra crate): xorshift64*.
pub fn next_random(state: &mut u64) -> u64 {
    if *state == 0 {
        *state = 0x2545_f491_4f6c_dd1d;
    }
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Sends `sig` to a child process of ours.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of a child this process started and has
    // not reaped (callers hold its `Child`/`BrokerProcess`, which reaps only
    // in wait), so the pid cannot name another process.
    unsafe { libc::kill(pid as i32, sig) };
}

/// True once every thread of process `pid` is in the stopped state (`T` in
/// `/proc/PID/task/*/stat`).
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue; // a thread that just exited
        };
        // "pid (comm) S …": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state != Some("T") {
            return false;
        }
        any = true;
    }
    any
}

/// SIGSTOP, then wait until every thread has stopped: kill(2) returns once
/// the signal is queued, and a thread running on another CPU may go on for
/// a moment, long enough to answer one more request.
fn stop_process(pid: u32, what: &str) {
    signal(pid, libc::SIGSTOP);
    assert!(
        wait_for(Duration::from_secs(5), || all_threads_stopped(pid)),
        "{what} (pid {pid}): SIGSTOP sent, but not every thread stopped within 5 s"
    );
}

/// One HTTP/1.1 exchange (`Connection: close`): (status, body), or why not.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let sock: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: bad status line in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unbase64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = B64.iter().position(|&b| b == c) else {
            continue; // '=' and anything else
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The last `n` lines of a file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// etcd

/// The etcd binary: `$SLUICE_ETCD`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("SLUICE_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.exists(),
        "{} is missing: the cluster tests need etcd 3.4+ (Debian's etcd-server: \
         `apt-get install etcd-server`, which scripts/test.sh installs), or set \
         SLUICE_ETCD to an etcd binary",
        path.display()
    );
    path
}

/// A one-member etcd on free loopback ports, with its own data directory;
/// SIGKILLed when dropped.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    paused: bool,
    _temp: Option<tempfile::TempDir>,
}

impl Etcd {
    /// Starts etcd in a temp directory of its own and waits until healthy.
    pub fn start() -> Etcd {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut e = Etcd::start_in(temp.path());
        e._temp = Some(temp);
        e
    }

    /// Starts etcd with its data and log under `dir` and waits until healthy.
    pub fn start_in(dir: &Path) -> Etcd {
        std::fs::create_dir_all(dir).expect("etcd dir");
        let mut e = Etcd {
            child: None,
            client_port: fixed_port(),
            peer_port: fixed_port(),
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            paused: false,
            _temp: None,
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let exe = etcd_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&exe)
            .arg("--name")
            .arg("n0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("n0={peer}"))
            .args(["--heartbeat-interval", "50", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        self.child = Some(child);
        self.paused = false;
        if !self.wait_healthy(Duration::from_secs(20)) {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "etcd on {} not healthy within 20 s (exit status: {status:?}); etcd.log:\n{}",
                self.endpoint(),
                tail(&self.log, 30)
            );
        }
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, as `sluice serve --cluster` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL (an etcd crash) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Starts it again on the same ports and data directory (stopping it
    /// first if it runs) and waits until healthy.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP (returning once every thread has stopped): etcd hangs,
    /// connections stay open.
    pub fn pause(&mut self) {
        let pid = self.pid().expect("etcd is not running");
        stop_process(pid, "etcd");
        self.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        let pid = self.pid().expect("etcd is not running");
        signal(pid, libc::SIGCONT);
        self.paused = false;
    }

    /// GET /health answered `{"health":"true"}` within a second.
    pub fn healthy(&self) -> bool {
        matches!(
            http(&self.endpoint(), "GET", "/health", None, Duration::from_secs(1)),
            Ok((200, body)) if body.contains("\"health\":\"true\"")
        )
    }

    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        wait_for(timeout, || self.healthy())
    }

    /// Puts a key through etcd's JSON gateway.
    pub fn put(&self, key: &str, value: &str) -> Result<(), String> {
        let body =
            serde_json::json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())});
        match http(
            &self.endpoint(),
            "POST",
            "/v3/kv/put",
            Some(&body.to_string()),
            Duration::from_secs(5),
        )? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("put {key}: HTTP {status}: {body}")),
        }
    }

    /// Every key under `prefix` with its value (lossy UTF-8), in key order.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        let mut end = prefix.as_bytes().to_vec();
        match end.last_mut() {
            Some(b) if *b < 0xff => *b += 1,
            _ => end.push(0),
        }
        let body = serde_json::json!({"key": base64(prefix.as_bytes()), "range_end": base64(&end)});
        let (status, text) = http(
            &self.endpoint(),
            "POST",
            "/v3/kv/range",
            Some(&body.to_string()),
            Duration::from_secs(5),
        )?;
        if status != 200 {
            return Err(format!("range {prefix}: HTTP {status}: {text}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("range {prefix}: {e}: {text}"))?;
        let mut out: Vec<(String, String)> = v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        let field = |f: &str| {
                            String::from_utf8_lossy(&unbase64(kv[f].as_str().unwrap_or("")))
                                .into_owned()
                        };
                        (field("key"), field("value"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// A raw Kafka connection that fails instead of hanging

/// One Kafka connection with timeouts; every failure is an `Err` with the
/// broker's address in it (brokers come and go in these tests).
pub struct Conn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    correlation: i32,
}

impl Conn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout.max(Duration::from_secs(1))))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            addr,
            correlation: 0,
        })
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set read timeout");
    }

    /// Writes a request; returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> Result<i32, String> {
        self.correlation += 1;
        let frame = wire::encode_request(
            req,
            version,
            self.correlation,
            Some(StrBytes::from_static_str("sluice-cluster-test")),
        )
        .map_err(|e| e.to_string())?;
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("write to {}: {e}", self.addr))?;
        Ok(self.correlation)
    }

    /// Reads the response to request `correlation` (the next one).
    pub fn recv<R: Request>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> Result<R::Response, String> {
        let frame =
            wire::read_frame(&mut self.stream, wire::MAX_RESPONSE_BYTES).map_err(|e| match &e {
                sluice_client::ClientError::Io(io)
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    format!(
                        "no response from {} within {:?}",
                        self.addr,
                        self.stream
                            .read_timeout()
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    )
                }
                _ => format!("read from {}: {e}", self.addr),
            })?;
        wire::decode_response::<R>(frame, version, correlation)
            .map_err(|e| format!("decode from {}: {e}", self.addr))
    }

    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response, String> {
        let c = self.send(version, req)?;
        self.recv::<R>(version, c)
    }
}

/// The Produce version the tests send (v9: flexible, names topics).
pub const PRODUCE_VERSION: i16 = 9;
/// The Fetch version the tests send (v12: the last that names topics).
pub const FETCH_VERSION: i16 = 12;
/// The Metadata version the tests send.
pub const METADATA_VERSION: i16 = 9;

/// One record as one batch, as a plain (non-idempotent) producer writes it.
pub fn one_record(key: &str, value: &str) -> Bytes {
    let now = sluice_log::now_ms();
    sluice_client::encode_batch(
        &[sluice_client::plain_record(
            0,
            now,
            Some(Bytes::copy_from_slice(key.as_bytes())),
            Bytes::copy_from_slice(value.as_bytes()),
        )],
        Compression::None,
    )
    .expect("encode a record")
}

/// A one-record Produce to one partition.
pub fn produce_request(
    topic: &str,
    partition: i32,
    key: &str,
    value: &str,
    acks: i16,
    timeout_ms: i32,
) -> ProduceRequest {
    let mut r = sluice_client::produce_request(topic, partition, one_record(key, value), acks);
    r.timeout_ms = timeout_ms;
    r
}

/// (error code, base offset) of a one-partition Produce response.
pub fn produce_answer(
    resp: &kafka_protocol::messages::ProduceResponse,
) -> Result<(i16, i64), String> {
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or("empty Produce response")?;
    Ok((p.error_code, p.base_offset))
}

/// A record as the tests compare them: offset, key and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Rec {
    pub fn value_str(&self) -> String {
        self.value
            .as_deref()
            .map_or("<null>".into(), |v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map_or("<null>".into(), |v| String::from_utf8_lossy(v).into_owned())
    }
}

impl std::fmt::Display for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offset {} key {:?} value {:?}",
            self.offset,
            self.key_str(),
            self.value_str()
        )
    }
}

/// The records of whole batches (a partial trailing batch is cut), control
/// records left out.
pub fn decode_records(records: &[u8]) -> Result<Vec<Rec>, String> {
    let mut whole = Bytes::copy_from_slice(&records[..sluice_client::whole_len(records)]);
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut whole)
        .map_err(|e| format!("decoding record batches: {e}"))?;
    Ok(sets
        .into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control)
        .map(|r| Rec {
            offset: r.offset,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Metadata views

/// One partition as one broker's Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub error: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    /// Sorted.
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

impl std::fmt::Display for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "leader {} epoch {} replicas {:?} isr {:?}",
            self.leader, self.leader_epoch, self.replicas, self.isr
        )?;
        if !self.offline.is_empty() {
            write!(f, " offline {:?}", self.offline)?;
        }
        if self.error != 0 {
            write!(f, " error {}", err(self.error))?;
        }
        Ok(())
    }
}

pub fn metadata_request(topics: Option<&[&str]>) -> MetadataRequest {
    let mut r = MetadataRequest::default();
    r.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut m = MetadataRequestTopic::default();
                m.name = Some(sluice_client::topic_name(t));
                m
            })
            .collect()
    });
    r.allow_auto_topic_creation = false;
    r
}

/// The state of `topic`-`partition` in a Metadata response.
pub fn partition_in(
    resp: &MetadataResponse,
    topic: &str,
    partition: i32,
) -> Result<PartitionState, String> {
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| format!("topic {topic} not in the Metadata response"))?;
    if t.error_code != 0 {
        return Err(format!("topic {topic}: {}", err(t.error_code)));
    }
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| {
            format!(
                "{topic} has no partition {partition} ({} partitions)",
                t.partitions.len()
            )
        })?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    Ok(PartitionState {
        error: p.error_code,
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
        isr,
        offline: p.offline_replicas.iter().map(|b| b.0).collect(),
    })
}

// ---------------------------------------------------------------------------
// The cluster

struct Broker {
    node: i32,
    addr: SocketAddr,
    /// The inter-broker listener's fixed address, when it is not the
    /// PLAINTEXT one (`Cluster::with_inter_broker`).
    inter_broker_addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    pidfile: PathBuf,
    process: Option<BrokerProcess>,
    paused: bool,
    starts: u32,
}

/// The broker binary: this build's `sluice`, or `$SLUICE_CLUSTER_BIN` (to
/// run the cluster tests against a release build or another tree's).
pub fn broker_binary() -> PathBuf {
    std::env::var_os("SLUICE_CLUSTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
}

/// An etcd and N cluster brokers (node ids 1..=N) on fixed loopback ports.
pub struct Cluster {
    brokers: Vec<Broker>,
    pub etcd: Etcd,
    /// The `--cluster-prefix`, unique per cluster.
    pub prefix: String,
    args: Vec<String>,
    root: PathBuf,
    temp: Option<tempfile::TempDir>,
    /// The inter-broker listener's protocol when brokers talk to each other
    /// on a listener of their own (SASL_SSL, …).
    inter_broker: Option<String>,
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// Starts etcd and `n` brokers, each `sluice serve --node-id N --cluster
    /// etcd://… --cluster-prefix <unique> --advertised-listener
    /// 127.0.0.1:PORT --cluster-lease-ms 2000 --replica-lag-time-max-ms 2000
    /// --default-replication-factor min(n, 3)` plus `extra` (which may
    /// override those four defaults), and waits until every one listens.
    pub fn new(n: usize, extra: &[&str]) -> Cluster {
        Cluster::with_inter_broker(n, extra, None, |_| {})
    }

    /// As [`Cluster::new`], with the brokers talking to each other on a
    /// second listener of `protocol` (each on a fixed port of its own,
    /// `--inter-broker-listener-name`); clients keep the PLAINTEXT one.
    /// `prepare` runs on each broker's data directory before its first
    /// start (to add the inter-broker user).
    pub fn with_inter_broker(
        n: usize,
        extra: &[&str],
        protocol: Option<&str>,
        mut prepare: impl FnMut(&Path),
    ) -> Cluster {
        assert!(n >= 1, "a cluster has brokers");
        let temp = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("tempdir");
        let root = temp.path().to_path_buf();
        let etcd = Etcd::start_in(&root.join("etcd"));
        let id = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("/sluice-test-{}-{id}", std::process::id());
        let log_level =
            std::env::var("SLUICE_CLUSTER_LOG_LEVEL").unwrap_or_else(|_| "info".to_string());
        let mut args: Vec<String> = vec![
            "--cluster".into(),
            etcd.url(),
            "--cluster-prefix".into(),
            prefix.clone(),
        ];
        // Defaults a test may override in `extra` (a flag given twice is
        // an error).
        for (flag, value) in [
            ("--cluster-lease-ms", LEASE_MS.to_string()),
            ("--replica-lag-time-max-ms", LAG_MS.to_string()),
            ("--default-replication-factor", n.min(3).to_string()),
            ("--log-level", log_level),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let brokers = (1..=n as i32)
            .map(|node| Broker {
                node,
                addr: SocketAddr::from(([127, 0, 0, 1], fixed_port())),
                inter_broker_addr: SocketAddr::from(([127, 0, 0, 1], fixed_port())),
                data_dir: root.join(format!("broker-{node}")),
                log: root.join(format!("broker-{node}.log")),
                pidfile: root.join(format!("broker-{node}.pid")),
                process: None,
                paused: false,
                starts: 0,
            })
            .collect();
        let mut c = Cluster {
            brokers,
            etcd,
            prefix,
            args,
            root,
            temp: Some(temp),
            inter_broker: protocol.map(str::to_string),
        };
        for node in 1..=n as i32 {
            prepare(&c.data_dir(node));
            c.start(node);
        }
        // Every broker sees every other registered before a test begins (a
        // topic created earlier could find too few brokers for its
        // replication factor).
        let all = n;
        let seen = wait_for(Duration::from_secs(30), || {
            (1..=n as i32).all(|node| {
                c.metadata_from(node, Some(&[]))
                    .is_ok_and(|m| m.brokers.len() == all)
            })
        });
        assert!(
            seen,
            "the {n} brokers do not all see each other within 30 s"
        );
        c
    }

    pub fn nodes(&self) -> Vec<i32> {
        self.brokers.iter().map(|b| b.node).collect()
    }

    fn broker(&self, node: i32) -> &Broker {
        usize::try_from(node - 1)
            .ok()
            .and_then(|i| self.brokers.get(i))
            .unwrap_or_else(|| panic!("no broker {node} in a cluster of {}", self.brokers.len()))
    }

    fn broker_mut(&mut self, node: i32) -> &mut Broker {
        let n = self.brokers.len();
        usize::try_from(node - 1)
            .ok()
            .and_then(|i| self.brokers.get_mut(i))
            .unwrap_or_else(|| panic!("no broker {node} in a cluster of {n}"))
    }

    /// The directory all of this cluster's files are under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,…`
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Broker `node`'s fixed Kafka address.
    pub fn addr(&self, node: i32) -> SocketAddr {
        self.broker(node).addr
    }

    pub fn data_dir(&self, node: i32) -> PathBuf {
        self.broker(node).data_dir.clone()
    }

    /// Broker `node`'s inter-broker listener (with `with_inter_broker`).
    pub fn inter_broker_addr(&self, node: i32) -> SocketAddr {
        self.broker(node).inter_broker_addr
    }

    pub fn log_path(&self, node: i32) -> PathBuf {
        self.broker(node).log.clone()
    }

    pub fn pid(&self, node: i32) -> Option<u32> {
        self.broker(node).process.as_ref().map(BrokerProcess::pid)
    }

    /// Running and not paused.
    pub fn is_live(&self, node: i32) -> bool {
        let b = self.broker(node);
        b.process.is_some() && !b.paused
    }

    pub fn live(&self) -> Vec<i32> {
        self.nodes()
            .into_iter()
            .filter(|&n| self.is_live(n))
            .collect()
    }

    /// Starts broker `node` on its port and data directory (first start or
    /// restart) and waits until it listens.
    pub fn start(&mut self, node: i32) {
        let mut args = vec![
            "--node-id".to_string(),
            node.to_string(),
            "--advertised-listener".to_string(),
            self.addr(node).to_string(),
        ];
        if let Some(protocol) = &self.inter_broker {
            let url = format!("{protocol}://{}", self.broker(node).inter_broker_addr);
            args.extend([
                "--listener".to_string(),
                url.clone(),
                "--advertised-listener".to_string(),
                url,
                "--inter-broker-listener-name".to_string(),
                protocol.clone(),
            ]);
        }
        args.extend(self.args.iter().cloned());
        let b = self.broker_mut(node);
        assert!(
            b.process.is_none(),
            "broker {node} is already running (pid {:?})",
            b.process.as_ref().map(BrokerProcess::pid)
        );
        b.starts += 1;
        let _ = std::fs::remove_file(&b.pidfile);
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&b.log)
        {
            let _ = writeln!(
                log,
                "===== harness: start #{} of broker {node} on {} =====",
                b.starts, b.addr
            );
        }
        // sh writes its pid (which exec makes the broker's) and sends the
        // broker's stderr to its log file.
        let script = format!(
            "echo $$ > '{}'; exec \"$@\" 2>>'{}'",
            b.pidfile.display(),
            b.log.display()
        );
        let launch = BrokerLaunch::new(broker_binary(), &b.data_dir)
            .wrapper(["sh", "-c", &script, "sh"])
            .listen(&b.addr.to_string())
            .args(&args)
            .quiet();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(launch.start());
        });
        let timeout = Duration::from_secs(60);
        match rx.recv_timeout(timeout) {
            Ok(Ok(process)) => {
                b.process = Some(process);
                b.paused = false;
            }
            Ok(Err(e)) => panic!(
                "broker {node} ({}, start #{}) did not start: {e}\n--- {} ---\n{}",
                b.addr,
                b.starts,
                b.log.display(),
                tail(&b.log, 40)
            ),
            Err(_) => {
                if let Some(pid) = std::fs::read_to_string(&b.pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on the broker this function just
                    // started (its pid from its own pid file), which nothing
                    // has reaped: BrokerLaunch::start still holds its Child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                panic!(
                    "broker {node} ({}, start #{}) printed no \"sluice listening on\" within \
                     {timeout:?}; killed\n--- {} ---\n{}",
                    b.addr,
                    b.starts,
                    b.log.display(),
                    tail(&b.log, 40)
                );
            }
        }
    }

    /// SIGKILL broker `node` (a crash) and reap it.
    pub fn kill(&mut self, node: i32) {
        let b = self.broker_mut(node);
        if let Some(mut p) = b.process.take() {
            p.kill();
        }
        b.paused = false;
    }

    /// SIGTERM broker `node` (a clean shutdown) and wait up to 30 s, then
    /// SIGKILL; true if it exited by itself.
    pub fn stop(&mut self, node: i32) -> bool {
        let b = self.broker_mut(node);
        let Some(mut p) = b.process.take() else {
            return true;
        };
        if b.paused {
            signal(p.pid(), libc::SIGCONT);
            b.paused = false;
        }
        if !matches!(p.try_wait(), Ok(None)) {
            return true;
        }
        signal(p.pid(), libc::SIGTERM);
        let clean = wait_for(Duration::from_secs(30), || {
            !matches!(p.try_wait(), Ok(None))
        });
        if !clean {
            eprintln!("broker {node} ignored SIGTERM for 30 s: SIGKILL");
        }
        p.kill();
        clean
    }

    /// Stops every running broker (SIGTERM, one after another).
    pub fn stop_all(&mut self) {
        for node in self.nodes() {
            self.stop(node);
        }
    }

    /// SIGSTOP broker `node` (returning once every thread has stopped): it
    /// hangs with its sockets open.
    pub fn pause(&mut self, node: i32) {
        let b = self.broker_mut(node);
        let pid = b
            .process
            .as_ref()
            .map(BrokerProcess::pid)
            .unwrap_or_else(|| panic!("pause: broker {node} is not running"));
        stop_process(pid, &format!("broker {node}"));
        b.paused = true;
    }

    /// SIGCONT broker `node`.
    pub fn resume(&mut self, node: i32) {
        let b = self.broker_mut(node);
        let pid = b
            .process
            .as_ref()
            .map(BrokerProcess::pid)
            .unwrap_or_else(|| panic!("resume: broker {node} is not running"));
        signal(pid, libc::SIGCONT);
        b.paused = false;
    }

    /// True if broker `node`'s process has exited by itself (a crash the
    /// test did not cause); reaps it.
    pub fn exited(&mut self, node: i32) -> Option<String> {
        let b = self.broker_mut(node);
        let status = b
            .process
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten())?;
        b.process = None;
        b.paused = false;
        Some(format!("broker {node} exited by itself: {status}"))
    }

    /// Panics if any broker the harness believes running has exited.
    pub fn assert_running(&mut self) {
        for node in self.nodes() {
            if let Some(why) = self.exited(node) {
                panic!("{why}\n--- its log ---\n{}", tail(&self.log_path(node), 40));
            }
        }
    }

    /// A connection to broker `node` (2 s timeouts).
    pub fn conn(&self, node: i32) -> Result<Conn, String> {
        Conn::connect(self.addr(node), Duration::from_secs(2))
            .map_err(|e| format!("broker {node}: {e}"))
    }

    /// Broker `node`'s Metadata for `topics` (None: all).
    pub fn metadata_from(
        &self,
        node: i32,
        topics: Option<&[&str]>,
    ) -> Result<MetadataResponse, String> {
        self.conn(node)?
            .call(METADATA_VERSION, &metadata_request(topics))
            .map_err(|e| format!("broker {node}: {e}"))
    }

    /// How broker `node` sees `topic`-`partition`.
    pub fn partition_from(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionState, String> {
        let resp = self.metadata_from(node, Some(&[topic]))?;
        partition_in(&resp, topic, partition).map_err(|e| format!("broker {node}: {e}"))
    }

    /// Every live broker's view of `topic`-`partition`.
    pub fn views(&self, topic: &str, partition: i32) -> Vec<(i32, Result<PartitionState, String>)> {
        self.live()
            .into_iter()
            .map(|n| (n, self.partition_from(n, topic, partition)))
            .collect()
    }

    /// The first live broker's view that names a leader.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionState> {
        self.live().into_iter().find_map(|n| {
            self.partition_from(n, topic, partition)
                .ok()
                .filter(|s| s.leader >= 0)
        })
    }

    /// The controller a live broker names (Metadata's controller id).
    pub fn controller(&self) -> Option<i32> {
        self.live().into_iter().find_map(|n| {
            self.metadata_from(n, Some(&[]))
                .ok()
                .map(|m| m.controller_id.0)
                .filter(|&c| c >= 0)
        })
    }

    /// The leader a live broker names for `topic`-`partition`.
    pub fn metadata_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partition(topic, partition).map(|s| s.leader)
    }

    /// True if every live broker names a leader in `isr` and the ISR is
    /// exactly `isr` (any order).
    pub fn isr_everywhere(&self, topic: &str, partition: i32, isr: &[i32]) -> bool {
        let mut want = isr.to_vec();
        want.sort_unstable();
        let views = self.views(topic, partition);
        !views.is_empty()
            && views.iter().all(|(_, v)| {
                v.as_ref()
                    .is_ok_and(|s| s.leader >= 0 && want.contains(&s.leader) && s.isr == want)
            })
    }

    /// True if every live broker names the same leader (≥ 0) and epoch.
    pub fn agreed(&self, topic: &str, partition: i32) -> Option<PartitionState> {
        let views = self.views(topic, partition);
        let first = views.first()?.1.as_ref().ok()?.clone();
        (first.leader >= 0
            && views.iter().all(|(_, v)| {
                v.as_ref()
                    .is_ok_and(|s| s.leader == first.leader && s.leader_epoch == first.leader_epoch)
            }))
        .then_some(first)
    }

    /// Waits until every live broker names the same leader and epoch;
    /// panics with every view after `timeout`.
    pub fn wait_agreed(&self, topic: &str, partition: i32, timeout: Duration) -> PartitionState {
        let mut agreed = None;
        if !wait_for(timeout, || {
            agreed = self.agreed(topic, partition);
            agreed.is_some()
        }) {
            panic!(
                "{topic}-{partition}: the live brokers do not agree on a leader within \
                 {timeout:?}\n{}",
                self.describe(topic, partition)
            );
        }
        agreed.expect("set by wait_for")
    }

    /// Waits until every live broker shows ISR `isr`; panics with every
    /// view and the cluster's etcd keys if it does not within `timeout`.
    pub fn wait_isr(&self, topic: &str, partition: i32, isr: &[i32], timeout: Duration) {
        if !wait_for(timeout, || self.isr_everywhere(topic, partition, isr)) {
            panic!(
                "{topic}-{partition}: the ISR is not {isr:?} on every live broker within \
                 {timeout:?}\n{}",
                self.describe(topic, partition)
            );
        }
    }

    /// Every live broker's view of a partition, which brokers are down or
    /// paused, and the etcd keys under the cluster prefix: for messages.
    pub fn describe(&self, topic: &str, partition: i32) -> String {
        let mut out = format!("views of {topic}-{partition}:\n");
        for b in &self.brokers {
            let state = match (&b.process, b.paused) {
                (None, _) => "down".to_string(),
                (Some(_), true) => "paused".to_string(),
                (Some(_), false) => match self.partition_from(b.node, topic, partition) {
                    Ok(s) => s.to_string(),
                    Err(e) => e,
                },
            };
            out.push_str(&format!("  broker {} ({}): {state}\n", b.node, b.addr));
        }
        out.push_str(&self.etcd_dump());
        out.push_str(&format!(
            "  (logs under {}, kept if the test fails)\n",
            self.root.display()
        ));
        out
    }

    /// The etcd keys under the cluster prefix (values cut to 300 bytes).
    pub fn etcd_dump(&self) -> String {
        if !self.etcd.is_running() {
            return "  etcd: down\n".to_string();
        }
        match self.etcd.get_prefix(&self.prefix) {
            Ok(kvs) => {
                let mut out = format!("  etcd keys under {}:\n", self.prefix);
                for (k, v) in kvs {
                    let v: String = v.chars().take(300).collect();
                    out.push_str(&format!("    {k} = {v}\n"));
                }
                out
            }
            Err(e) => format!("  etcd: {e}\n"),
        }
    }

    /// Creates a topic with CreateTopics v5 sent to the controller Metadata
    /// names (following NOT_CONTROLLER), then waits until every live broker
    /// shows a leader and a full ISR for every partition.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) {
        let mut t = CreatableTopic::default();
        t.name = sluice_client::topic_name(topic);
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.value = Some(StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "creating {topic} ({partitions} partitions, replication factor \
                 {replication_factor}, {configs:?}) failed for 30 s; last: {last}\n{}",
                self.etcd_dump()
            );
            let live = self.live();
            let target = live
                .iter()
                .find_map(|&n| {
                    self.metadata_from(n, Some(&[]))
                        .ok()
                        .map(|m| m.controller_id.0)
                        .filter(|c| live.contains(c))
                })
                .or_else(|| live.first().copied());
            let Some(target) = target else {
                last = "no live broker".into();
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let answer = self
                .conn(target)
                .and_then(|mut c| c.call(5, &req).map_err(|e| format!("broker {target}: {e}")));
            match answer {
                Ok(resp) => {
                    let Some(r) = resp.topics.first() else {
                        last = format!("broker {target}: empty CreateTopics response");
                        continue;
                    };
                    match r.error_code {
                        0 => break,
                        // A broker that has not yet seen every other one
                        // register counts too few brokers for the
                        // replication factor: ask again (until the
                        // deadline) rather than fail.
                        code::NOT_CONTROLLER
                        | code::REQUEST_TIMED_OUT
                        | code::INVALID_REPLICATION_FACTOR => {
                            last = format!(
                                "broker {target}: {} {:?}",
                                err(r.error_code),
                                r.error_message.as_ref().map(|m| m.as_str())
                            );
                        }
                        c => panic!(
                            "broker {target} refused to create {topic} ({partitions} \
                             partitions, replication factor {replication_factor}, \
                             {configs:?}): {} {:?}",
                            err(c),
                            r.error_message.as_ref().map(|m| m.as_str())
                        ),
                    }
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for p in 0..partitions {
            let ok = wait_for(Duration::from_secs(30), || {
                self.views(topic, p).iter().all(|(_, v)| {
                    v.as_ref().is_ok_and(|s| {
                        s.leader >= 0
                            && s.replicas.len() == replication_factor as usize
                            && s.isr.len() == replication_factor as usize
                    })
                })
            });
            assert!(
                ok,
                "{topic}-{p}: created, but not every live broker shows a leader and \
                 {replication_factor} replicas in the ISR within 30 s\n{}",
                self.describe(topic, p)
            );
        }
    }

    /// One Produce of one record to broker `node`: (error code, base offset),
    /// or Err if the broker could not be reached or did not answer.
    #[allow(clippy::too_many_arguments)]
    pub fn produce_to(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
        key: &str,
        value: &str,
        acks: i16,
        timeout_ms: i32,
    ) -> Result<(i16, i64), String> {
        let mut c = self.conn(node)?;
        c.set_read_timeout(Duration::from_millis(timeout_ms.max(0) as u64 + 5000));
        let resp = c
            .call(
                PRODUCE_VERSION,
                &produce_request(topic, partition, key, value, acks, timeout_ms),
            )
            .map_err(|e| format!("broker {node}: {e}"))?;
        produce_answer(&resp)
    }

    /// Produces one record with acks=all to whichever broker Metadata names
    /// the leader, retrying on retriable errors, until it is acknowledged;
    /// returns its offset. Panics with the last answer and the cluster's
    /// state after `within`. (A retry after a timeout may write the record
    /// twice: check acknowledged records, not counts.)
    pub fn produce_acked(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: &str,
        within: Duration,
    ) -> i64 {
        let deadline = Instant::now() + within;
        let mut last = String::from("no attempt");
        let mut attempt = 0usize;
        while Instant::now() < deadline {
            // Each attempt asks the next live broker, so one broker's stale
            // view does not send every attempt to a former leader.
            attempt += 1;
            let live = self.live();
            let leader = (0..live.len()).find_map(|i| {
                let n = live[(attempt + i) % live.len()];
                self.partition_from(n, topic, partition)
                    .ok()
                    .map(|s| s.leader)
                    .filter(|&l| l >= 0)
            });
            let Some(leader) = leader else {
                last = "no live broker names a leader".into();
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            match self.produce_to(leader, topic, partition, key, value, -1, 5000) {
                Ok((0, offset)) => return offset,
                Ok((c, _))
                    if [
                        code::NOT_LEADER_OR_FOLLOWER,
                        code::LEADER_NOT_AVAILABLE,
                        code::REQUEST_TIMED_OUT,
                        code::NOT_ENOUGH_REPLICAS,
                        code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        code::FENCED_LEADER_EPOCH,
                    ]
                    .contains(&c) =>
                {
                    last = format!("broker {leader}: {}", err(c));
                }
                Ok((c, _)) => panic!(
                    "broker {leader} refused {value:?} to {topic}-{partition}: {}\n{}",
                    err(c),
                    self.describe(topic, partition)
                ),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{value:?} to {topic}-{partition} not acknowledged (acks=all) within {within:?}; \
             last: {last}\n{}",
            self.describe(topic, partition)
        )
    }

    /// Every record of `topic`-`partition` below the high watermark, read
    /// with Fetch from broker `node` as a consumer: (high watermark, records).
    pub fn fetch_all_from(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, Vec<Rec>), String> {
        let mut c = self.conn(node)?;
        c.set_read_timeout(Duration::from_secs(10));
        let mut offset = 0i64;
        let mut out = Vec::new();
        let mut hw;
        let mut empty = 0;
        loop {
            let req: FetchRequest = super::fetch_req(topic, partition, offset, 100, 1);
            let resp = c
                .call(FETCH_VERSION, &req)
                .map_err(|e| format!("broker {node}: {e}"))?;
            let p = resp
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| format!("broker {node}: empty Fetch response"))?;
            if p.error_code != 0 {
                return Err(format!(
                    "broker {node}: Fetch {topic}-{partition} at {offset}: {}",
                    err(p.error_code)
                ));
            }
            hw = p.high_watermark;
            if offset == 0 && p.log_start_offset > 0 {
                offset = p.log_start_offset;
            }
            if offset >= hw {
                return Ok((hw, out));
            }
            let records = decode_records(p.records.as_deref().unwrap_or_default())
                .map_err(|e| format!("broker {node}: {topic}-{partition} at {offset}: {e}"))?;
            let before = offset;
            for r in records {
                if r.offset >= offset && r.offset < hw {
                    offset = r.offset + 1;
                    out.push(r);
                }
            }
            if offset == before {
                empty += 1;
                if empty > 50 {
                    return Err(format!(
                        "broker {node}: {topic}-{partition}: no records at {offset} below \
                         the high watermark {hw} in 50 fetches"
                    ));
                }
            }
        }
    }

    /// As [`Cluster::fetch_all_from`], from the leader Metadata names,
    /// retrying while leadership moves, for up to `within`.
    pub fn fetch_all(&self, topic: &str, partition: i32, within: Duration) -> (i64, Vec<Rec>) {
        let deadline = Instant::now() + within;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(leader) = self.metadata_leader(topic, partition) {
                match self.fetch_all_from(leader, topic, partition) {
                    Ok(r) => return r,
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "could not read {topic}-{partition} from its leader within {within:?}: {last}\n{}",
            self.describe(topic, partition)
        )
    }

    /// One sample from broker `node`'s metrics page, by name (with or
    /// without labels): Ok(None) if the page does not have it.
    pub fn metric(&self, node: i32, name: &str) -> Result<Option<f64>, String> {
        let b = self.broker(node);
        let p = b
            .process
            .as_ref()
            .ok_or_else(|| format!("broker {node} is not running"))?;
        let (status, page) = http(
            &p.metrics.to_string(),
            "GET",
            "/metrics",
            None,
            Duration::from_secs(2),
        )
        .map_err(|e| format!("broker {node} metrics: {e}"))?;
        if status != 200 {
            return Err(format!("broker {node} metrics: HTTP {status}"));
        }
        let with_labels = format!("{name}{{");
        Ok(page
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(k, _)| *k == name || k.starts_with(&with_labels))
            .and_then(|(_, v)| v.trim().parse().ok()))
    }

    /// Broker `node`'s whole metrics page (for messages).
    pub fn metrics_page(&self, node: i32) -> String {
        let b = self.broker(node);
        match &b.process {
            None => "(not running)".into(),
            Some(p) => http(
                &p.metrics.to_string(),
                "GET",
                "/metrics",
                None,
                Duration::from_secs(2),
            )
            .map_or_else(|e| e, |(_, page)| page),
        }
    }

    /// Reads `topic`-`partition` from broker `node`'s data directory; the
    /// broker should be stopped.
    pub fn replica(&self, node: i32, topic: &str, partition: i32) -> Replica {
        let b = self.broker(node);
        assert!(
            b.process.is_none(),
            "replica: stop broker {node} before reading its files"
        );
        let mut r = read_replica(&b.data_dir, topic, partition);
        r.node = node;
        r
    }

    /// Runs Python `code` with the interop clients, `BROKER` set to
    /// `bootstrap` (see [`py_at`]).
    pub fn py(&self, bootstrap: &str, code: &str) -> String {
        py_at(bootstrap, code)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            // Tails while the processes still run (their logs are complete
            // up to now either way).
            let mut out = String::from("\n===== cluster post-mortem =====\n");
            for b in self.brokers.iter().filter(|b| b.starts > 0) {
                out.push_str(&format!(
                    "--- broker {} ({}), started {} times, {}: last lines of {} ---\n{}\n",
                    b.node,
                    b.addr,
                    b.starts,
                    match (&b.process, b.paused) {
                        (None, _) => "down",
                        (Some(_), true) => "paused",
                        _ => "running",
                    },
                    b.log.display(),
                    tail(&b.log, 25)
                ));
            }
            out.push_str(&format!(
                "--- etcd: last lines of {} ---\n{}\n",
                self.etcd.log_path().display(),
                tail(self.etcd.log_path(), 10)
            ));
            eprintln!("{out}");
        }
        for b in &mut self.brokers {
            if let Some(mut p) = b.process.take() {
                p.kill();
            }
        }
        self.etcd.stop();
        if let Some(temp) = self.temp.take()
            && (failed || std::env::var_os("SLUICE_CLUSTER_KEEP").is_some())
        {
            let path = temp.keep();
            eprintln!("cluster files kept in {}", path.display());
        }
    }
}

/// Runs a Python snippet with the interop clients (kafka-python,
/// confluent-kafka), `BROKER` set to `bootstrap` (one `host:port` or a
/// comma-separated list); panics with its output if it fails; returns its
/// trimmed stdout.
pub fn py_at(bootstrap: &str, code: &str) -> String {
    let python = super::python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh, which creates the interop venv",
        python.display()
    );
    let out = Command::new(&python)
        .arg("-c")
        .arg(format!("BROKER = '{bootstrap}'\n{code}"))
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python (BROKER = {bootstrap}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------
// A stopped broker's partition, read from its files

/// One batch as stored in a segment file.
#[derive(Clone, Debug)]
pub struct StoredBatch {
    pub segment: PathBuf,
    pub position: usize,
    pub header: BatchHeader,
    pub bytes: Vec<u8>,
}

impl StoredBatch {
    pub fn describe(&self) -> String {
        let h = &self.header;
        format!(
            "batch {}..={} ({} bytes, leader epoch {}, crc {:#010x}, producer {} epoch {} \
             sequence {}) at {}:{}",
            h.base_offset,
            h.last_offset(),
            self.bytes.len(),
            h.partition_leader_epoch,
            h.crc,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            self.segment
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            self.position
        )
    }
}

/// A partition replica as its `.log` files hold it.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The broker it was read from (0 if not read through a `Cluster`).
    pub node: i32,
    pub dir: PathBuf,
    /// Every valid batch, in file order.
    pub batches: Vec<StoredBatch>,
    /// Why reading stopped before the end of the last file, if it did for
    /// anything but a zero tail (a pre-allocated segment's unused space).
    pub problem: Option<String>,
}

impl Replica {
    /// Every record (control records left out), in offset order.
    pub fn records(&self) -> Vec<Rec> {
        let mut out = Vec::new();
        for b in &self.batches {
            match decode_records(&b.bytes) {
                Ok(rs) => out.extend(rs),
                Err(e) => panic!("{}: {}: {e}", self.who(), b.describe()),
            }
        }
        out
    }

    /// The offset after the last batch (its log end offset), or 0.
    pub fn end_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(0, |b| b.header.last_offset() + 1)
    }

    /// The batches holding offsets below `offset`.
    pub fn batches_below(&self, offset: i64) -> impl Iterator<Item = &StoredBatch> {
        self.batches
            .iter()
            .filter(move |b| b.header.base_offset < offset)
    }

    /// The bytes of every batch holding offsets below `offset`, concatenated
    /// across segments.
    pub fn bytes_below(&self, offset: i64) -> Vec<u8> {
        self.batches_below(offset)
            .flat_map(|b| b.bytes.iter().copied())
            .collect()
    }

    pub fn who(&self) -> String {
        if self.node > 0 {
            format!("broker {}'s replica ({})", self.node, self.dir.display())
        } else {
            format!("replica {}", self.dir.display())
        }
    }
}

/// Reads `<data_dir>/<topic>-<partition>/*.log` in base-offset order,
/// walking batch headers as recovery does: a zero length ends a segment
/// (the unused tail of a pre-allocated one); a length past the file, a bad
/// magic, a CRC mismatch or offsets going backwards stops the reading and
/// is reported in [`Replica::problem`].
pub fn read_replica(data_dir: &Path, topic: &str, partition: i32) -> Replica {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let mut replica = Replica {
        node: 0,
        dir: dir.clone(),
        batches: Vec::new(),
        problem: None,
    };
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        let listing: Vec<String> = std::fs::read_dir(data_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "no replica of {topic}-{partition} in {}: {e} (it holds {listing:?})",
            data_dir.display()
        )
    });
    let mut segments: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut next = i64::MIN;
    'files: for seg in &segments {
        let bytes = std::fs::read(seg).unwrap_or_else(|e| panic!("{}: {e}", seg.display()));
        let name = seg
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut pos = 0usize;
        while bytes.len() - pos >= HEADER_LEN {
            let rest = &bytes[pos..];
            let Ok(h) = BatchHeader::parse(rest) else {
                replica.problem = Some(format!("{name}:{pos}: unreadable batch header"));
                break 'files;
            };
            if h.batch_length <= 0 {
                if rest.iter().any(|&b| b != 0) {
                    replica.problem = Some(format!(
                        "{name}:{pos}: batch length {} followed by non-zero bytes",
                        h.batch_length
                    ));
                    break 'files;
                }
                continue 'files;
            }
            let Some(len) = h.total_len().filter(|&l| l <= rest.len()) else {
                replica.problem = Some(format!(
                    "{name}:{pos}: a batch of {} bytes runs past the end of the file ({} bytes)",
                    i64::from(h.batch_length) + 12,
                    bytes.len()
                ));
                break 'files;
            };
            if let Err(e) = batch::validate_stored(&rest[..len]) {
                replica.problem = Some(format!(
                    "{name}:{pos}: batch at offset {}: {e}",
                    h.base_offset
                ));
                break 'files;
            }
            if h.base_offset < next {
                replica.problem = Some(format!(
                    "{name}:{pos}: batch at offset {} after one that ended at {}",
                    h.base_offset,
                    next - 1
                ));
                break 'files;
            }
            next = h.last_offset() + 1;
            replica.batches.push(StoredBatch {
                segment: seg.clone(),
                position: pos,
                header: h,
                bytes: rest[..len].to_vec(),
            });
            pos += len;
        }
        if pos < bytes.len() && bytes[pos..].iter().any(|&b| b != 0) {
            replica.problem = Some(format!(
                "{name}:{pos}: {} trailing bytes that are not a whole batch",
                bytes.len() - pos
            ));
            break;
        }
    }
    replica
}

/// The header field at byte `i` of a batch.
pub fn batch_field(i: usize) -> &'static str {
    match i {
        0..8 => "baseOffset",
        8..12 => "batchLength",
        12..16 => "partitionLeaderEpoch",
        16 => "magic",
        17..21 => "crc",
        21..23 => "attributes",
        23..27 => "lastOffsetDelta",
        27..35 => "baseTimestamp",
        35..43 => "maxTimestamp",
        43..51 => "producerId",
        51..53 => "producerEpoch",
        53..57 => "baseSequence",
        57..61 => "recordCount",
        _ => "records",
    }
}

/// Ok if both replicas reach `up_to` and their batches below it are the
/// same bytes (segment boundaries aside); else where they first differ.
pub fn compare_replicas(a: &Replica, b: &Replica, up_to: i64) -> Result<(), String> {
    for r in [a, b] {
        if r.end_offset() < up_to {
            return Err(format!(
                "{} ends at offset {}, below {up_to}{}",
                r.who(),
                r.end_offset(),
                r.problem
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (reading stopped: {p})"))
            ));
        }
    }
    let (xa, xb): (Vec<&StoredBatch>, Vec<&StoredBatch>) = (
        a.batches_below(up_to).collect(),
        b.batches_below(up_to).collect(),
    );
    for (i, (ba, bb)) in xa.iter().zip(&xb).enumerate() {
        if ba.bytes != bb.bytes {
            let at = ba
                .bytes
                .iter()
                .zip(&bb.bytes)
                .position(|(x, y)| x != y)
                .unwrap_or(ba.bytes.len().min(bb.bytes.len()));
            return Err(format!(
                "below offset {up_to}, batch #{i} differs at byte {at} ({}):\n  {}: {}\n  {}: {}",
                batch_field(at),
                a.who(),
                ba.describe(),
                b.who(),
                bb.describe()
            ));
        }
    }
    if xa.len() != xb.len() {
        return Err(format!(
            "below offset {up_to}, {} has {} batches and {} has {}",
            a.who(),
            xa.len(),
            b.who(),
            xb.len()
        ));
    }
    debug_assert_eq!(a.bytes_below(up_to), b.bytes_below(up_to));
    Ok(())
}

/// Ok if every `(offset, value)` is at its offset in `records`; else the
/// first few that are not, and how many.
pub fn check_acked(records: &[Rec], acked: &[(i64, String)], who: &str) -> Result<(), String> {
    let by_offset: BTreeMap<i64, &Rec> = records.iter().map(|r| (r.offset, r)).collect();
    let end = records.last().map_or(0, |r| r.offset + 1);
    let mut bad = Vec::new();
    for (offset, value) in acked {
        match by_offset.get(offset) {
            Some(r) if r.value_str() == *value => {}
            Some(r) => bad.push(format!(
                "{value:?} acknowledged at offset {offset}, which holds {:?}",
                r.value_str()
            )),
            None if *offset >= end => bad.push(format!(
                "{value:?} acknowledged at offset {offset}, past the end ({end})"
            )),
            None => bad.push(format!(
                "{value:?} acknowledged at offset {offset}, which is missing (a gap)"
            )),
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let n = bad.len();
    bad.truncate(10);
    Err(format!(
        "{who}: {n} of {} acknowledged records are not where they were acknowledged:\n  {}",
        acked.len(),
        bad.join("\n  ")
    ))
}
