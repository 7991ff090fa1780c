//! Answers users found wrong (issue 12), each checked against a real broker
//! process — with a real Kafka client wherever one can ask the question.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{Client, Server};

fn producer(broker: SocketAddr, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.to_string());
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("producer")
}

#[test]
fn a_transactional_producer_is_served_at_once() {
    // Issue 12 made a transactional producer fail fast with a fatal error
    // while transactions did not exist; now it initializes and commits
    // (the full behaviour is tests/transactions.rs).
    let server = Server::start(&[]);
    let p = producer(
        server.addr,
        &[
            ("transactional.id", "txn-1"),
            ("transaction.timeout.ms", "60000"),
        ],
    );
    let started = Instant::now();
    p.init_transactions(Duration::from_secs(30))
        .expect("transactions are served");
    p.begin_transaction().expect("begin");
    p.send(BaseRecord::<str, str>::to("answers-txn").payload("v"))
        .expect("queued");
    p.commit_transaction(Duration::from_secs(30))
        .expect("committed");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn each_data_directory_has_its_own_cluster_id_kept_across_restarts() {
    let code = "from confluent_kafka.admin import AdminClient\n\
                print(AdminClient({'bootstrap.servers': BROKER}).list_topics(timeout=10).cluster_id)";
    let mut a = Server::start(&[]);
    let b = Server::start(&[]);
    let id_a = support::py(a.addr, code);
    let id_b = support::py(b.addr, code);
    assert_eq!(id_a.len(), 22, "{id_a}");
    assert_ne!(id_a, id_b);
    let meta = std::fs::read_to_string(a.data_dir.join("meta.properties")).expect("meta");
    assert!(meta.contains(&format!("cluster.id={id_a}")), "{meta}");
    assert!(
        meta.contains("node.id=0") && meta.contains("version=1"),
        "{meta}"
    );
    let dir = a.take_dir().expect("dir");
    a.stop();
    let again = Server::start_in(&dir.path().join("data"), &[]);
    assert_eq!(support::py(again.addr, code), id_a);
}

#[test]
fn a_host_name_can_be_advertised_and_a_wildcard_needs_one() {
    // Clients bootstrap at 127.0.0.1 and are sent to "localhost".
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_at(
        &dir.path().join("data"),
        &format!("127.0.0.1:{port}"),
        &["--advertised-listener", &format!("localhost:{port}")],
        &[],
    );
    let out = support::py(
        server.addr,
        "from confluent_kafka import Producer, Consumer\n\
         from confluent_kafka.admin import AdminClient\n\
         md = AdminClient({'bootstrap.servers': BROKER}).list_topics(timeout=10)\n\
         print([f'{b.host}:{b.port}' for b in md.brokers.values()])\n\
         p = Producer({'bootstrap.servers': BROKER})\n\
         p.produce('named', b'through localhost')\n\
         assert p.flush(10) == 0\n\
         c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'g', 'auto.offset.reset': 'earliest'})\n\
         c.subscribe(['named'])\n\
         m = None\n\
         for _ in range(100):\n\
         \x20   m = c.poll(0.5)\n\
         \x20   if m is not None and m.error() is None: break\n\
         print(m.value().decode())\n\
         c.close()",
    );
    assert_eq!(
        out,
        format!("['localhost:{port}']\nthrough localhost"),
        "{out}"
    );

    // A wildcard listen address without an advertised name is refused
    // before anything is bound.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("wild"))
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--advertised-listener"), "{stderr}");
}

#[test]
fn list_offsets_answers_max_timestamp_and_the_found_records_timestamp() {
    let server = Server::start(&[]);
    // Timestamps 1000, 3000, 5000, 2000 at offsets 0..4: the largest is not
    // the last (confluent-kafka 2.16 asks ListOffsets v7 for the
    // max-timestamp spec, KIP-734).
    let out = support::py(
        server.addr,
        "from confluent_kafka import Producer, TopicPartition\n\
         from confluent_kafka.admin import AdminClient, OffsetSpec\n\
         p = Producer({'bootstrap.servers': BROKER, 'linger.ms': 0})\n\
         for ts in (1000, 3000, 5000, 2000):\n\
         \x20   p.produce('times', b'v', timestamp=ts)\n\
         \x20   p.flush(10)\n\
         a = AdminClient({'bootstrap.servers': BROKER})\n\
         tp = TopicPartition('times', 0)\n\
         for spec in (OffsetSpec.max_timestamp(), OffsetSpec.for_timestamp(2500), OffsetSpec.latest()):\n\
         \x20   r = a.list_offsets({tp: spec})[tp].result()\n\
         \x20   print(r.offset, r.timestamp)",
    );
    assert_eq!(out, "2 5000\n1 3000\n4 -1", "{out}");
}

#[test]
fn every_serve_flag_is_accepted_in_the_config_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sluice.toml");
    let mut f = std::fs::File::create(&config).expect("config");
    writeln!(
        f,
        "max-connections = 50\nmax-connections-per-ip = 2\nmax_buffered_request_bytes = \"64m\"\n\
         max-partitions-per-fetch = 100\nidle-timeout-ms = 60000\nframe-read-timeout-ms = 10000\n\
         offset-metadata-max-bytes = 100"
    )
    .expect("write");
    drop(f);
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    // The per-address cap from the file is in force: a third connection
    // from 127.0.0.1 is closed at once.
    let _a = Client::connect(server.addr);
    let _b = Client::connect(server.addr);
    let mut third = Client::connect(server.addr);
    assert!(third.closed_by_broker());
    assert_eq!(
        server.metric_eventually("sluice_connections_refused_per_ip_total", 1),
        1
    );
}

#[test]
fn one_source_cannot_take_every_connection() {
    let server = Server::start(&[
        "--max-connections",
        "10",
        "--max-connections-per-ip",
        "3",
        "--max-connections-per-ip-overrides",
        "127.0.0.3:5",
    ]);
    let from = |ip: &str| connect_from(ip, server.addr);
    let mut held: Vec<TcpStream> = (0..3).map(|_| from("127.0.0.1")).collect();
    assert!(
        held.iter_mut().all(answers),
        "three from one address are served"
    );
    assert!(closed(&mut from("127.0.0.1")), "a fourth from one address");
    // Another source still gets in, and gets answers.
    assert!(answers(&mut from("127.0.0.2")));
    // An override lifts one address's cap.
    let mut five: Vec<TcpStream> = (0..5).map(|_| from("127.0.0.3")).collect();
    assert!(five.iter_mut().all(answers));
    assert!(closed(&mut from("127.0.0.3")));
    assert_eq!(
        server.metric_eventually("sluice_connections_refused_per_ip_total", 2),
        2
    );
    drop((held, five));
}

/// True once the broker has closed the connection.
fn closed(stream: &mut TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 1];
    matches!(stream.read(&mut b), Ok(0) | Err(_))
}

/// Sends ApiVersions v0 and reads an answer with its correlation id.
fn answers(stream: &mut TcpStream) -> bool {
    use std::io::Read;
    // size, api key 18, version 0, correlation 42, null client id
    let mut req = Vec::new();
    req.extend_from_slice(&10i32.to_be_bytes());
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&42i32.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut head = [0u8; 8];
    stream.write_all(&req).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && i32::from_be_bytes([head[4], head[5], head[6], head[7]]) == 42
        && {
            let mut rest =
                vec![0u8; i32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize - 4];
            stream.read_exact(&mut rest).is_ok()
        }
}

/// A TCP connection to `to` from the loopback address `ip` (all of
/// 127.0.0.0/8 is local on Linux).
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let from: SocketAddr = format!("{ip}:0").parse().expect("addr");
    let std::net::SocketAddr::V4(from) = from else {
        unreachable!()
    };
    let std::net::SocketAddr::V4(to) = to else {
        panic!("IPv4 broker")
    };
    // SAFETY: a plain socket(2); the descriptor is owned by the TcpStream
    // built from it below and closed with it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket");
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (sockaddr(from), sockaddr(to));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `local` and `remote` are valid sockaddr_in values of `len`
    // bytes that outlive the calls.
    unsafe {
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "bind {ip}"
        );
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect"
        );
    }
    // SAFETY: `fd` is a connected socket nothing else owns.
    unsafe { TcpStream::from_raw_fd(fd) }
}

#[test]
fn a_fetch_over_the_partition_limit_still_reaches_every_partition() {
    let server = Server::start(&[
        "--default-partitions",
        "6",
        "--max-partitions-per-fetch",
        "2",
    ]);
    let p = producer(server.addr, &[("linger.ms", "0")]);
    for i in 0..60 {
        p.send(
            BaseRecord::to("wide")
                .partition(i % 6)
                .key("k")
                .payload(&format!("m{i}")),
        )
        .expect("send");
    }
    p.flush(Duration::from_secs(10)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("group.id", "wide-reader")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for part in 0..6 {
        tpl.add_partition_offset("wide", part, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 60 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    assert_eq!(got.len(), 60, "every message of all six partitions");
}

#[test]
fn a_commit_with_oversized_metadata_is_refused_not_cut() {
    let server = Server::start(&["--default-partitions", "1"]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("group.id", "meta")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("meta-topic", 0, Offset::Offset(5))
        .expect("tpl");
    tpl.find_partition("meta-topic", 0)
        .expect("elem")
        .set_metadata("x".repeat(5000));
    let result = consumer.commit(&tpl, CommitMode::Sync);
    let refused = match result {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OffsetMetadataTooLarge)) => true,
        Ok(()) => {
            // librdkafka reports per-partition errors on the list.
            let committed = consumer
                .committed(Duration::from_secs(10))
                .expect("committed");
            committed
                .find_partition("meta-topic", 0)
                .is_some_and(|e| e.offset() == Offset::Invalid)
        }
        Err(other) => panic!("unexpected {other}"),
    };
    assert!(refused, "the oversized commit was stored");
    // Metadata within the limit commits and comes back whole.
    tpl.find_partition("meta-topic", 0)
        .expect("elem")
        .set_metadata("y".repeat(4000));
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let mut want = TopicPartitionList::new();
    want.add_partition("meta-topic", 0);
    let committed = consumer
        .committed_offsets(want, Duration::from_secs(10))
        .expect("committed");
    let elem = committed.find_partition("meta-topic", 0).expect("elem");
    assert_eq!(elem.offset(), Offset::Offset(5));
    assert_eq!(elem.metadata().len(), 4000);
}

#[test]
fn create_partitions_from_a_real_admin_client() {
    let server = Server::start(&[]);
    let out = support::py(
        server.addr,
        "from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions\n\
         a = AdminClient({'bootstrap.servers': BROKER})\n\
         a.create_topics([NewTopic('grow', 1, 1)])['grow'].result(10)\n\
         a.create_partitions([NewPartitions('grow', 5)])['grow'].result(10)\n\
         try:\n\
         \x20   a.create_partitions([NewPartitions('grow', 3)])['grow'].result(10)\n\
         except Exception as e:\n\
         \x20   print(e.args[0].name())\n\
         print(len(a.list_topics('grow', timeout=10).topics['grow'].partitions))",
    );
    assert_eq!(out, "INVALID_PARTITIONS\n5", "{out}");
}
