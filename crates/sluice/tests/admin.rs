//! The admin APIs of issue 13 against a real broker process: a UI's
//! start-up sequence through confluent-kafka's and kafka-python's admin
//! clients, DeleteRecords end to end (consumers, ListOffsets, restarts),
//! DescribeLogDirs against the bytes on disk, and `sluice topic`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use kafka_protocol::messages::DescribeLogDirsRequest;
use serde_json::Value;
use sluice_client::Client;
use support::Server;

/// Runs a Python snippet through the interop venv (`support::py`) and
/// parses the JSON its last line prints.
fn py_json(broker: SocketAddr, code: &str) -> Value {
    let out = support::py(broker, &format!("import json\n{code}"));
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn cluster_id(data_dir: &Path) -> String {
    let meta = std::fs::read_to_string(data_dir.join("meta.properties")).expect("meta");
    meta.lines()
        .find_map(|l| l.strip_prefix("cluster.id="))
        .expect("cluster.id")
        .to_string()
}

/// How many times the broker answered `api` (its latency histogram's count).
fn served(server: &Server, api: &str) -> u64 {
    server.metric(&format!(
        "sluice_request_duration_seconds_count{{api=\"{api}\"}}"
    ))
}

/// Topic `ui` (2 partitions, 10 records in partition 0) and group `ui-group`
/// with offset 5 committed on it, through confluent-kafka.
const SETUP: &str = r#"
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': BROKER})
for f in a.create_topics([NewTopic('ui', 2, 1)]).values():
    f.result()
p = Producer({'bootstrap.servers': BROKER})
for i in range(10):
    p.produce('ui', value=b'v%d' % i, partition=0)
assert p.flush(10) == 0
c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'ui-group', 'enable.auto.commit': False})
c.commit(offsets=[TopicPartition('ui', 0, 5)], asynchronous=False)
c.close()
"#;

#[test]
fn a_uis_start_up_sequence_answers_through_confluent_kafkas_admin_client() {
    let server = Server::start(&[]);
    let code = format!(
        "{SETUP}{}",
        r#"
from confluent_kafka import TopicCollection, ConsumerGroupTopicPartitions
from confluent_kafka.admin import ConfigResource, ResourceType, OffsetSpec
out = {}
cd = a.describe_cluster(request_timeout=10).result()
out['cluster'] = [cd.cluster_id, cd.controller.id, [(n.id, n.host, n.port) for n in cd.nodes]]
fs = a.describe_configs([ConfigResource(ResourceType.BROKER, '0'), ConfigResource(ResourceType.TOPIC, 'ui')])
out['configs'] = {str(r.restype): len(f.result()) for r, f in fs.items()}
out['groups'] = sorted(g.group_id for g in a.list_consumer_groups(request_timeout=10).result().valid)
out['topics'] = sorted(a.list_topics(timeout=10).topics)
specs = {TopicPartition('ui', 0): OffsetSpec.earliest(), TopicPartition('ui', 1): OffsetSpec.latest()}
out['offsets'] = sorted((tp.partition, f.result().offset) for tp, f in a.list_offsets(specs).items())
out['latest'] = [f.result().offset for f in a.list_offsets({TopicPartition('ui', 0): OffsetSpec.latest()}).values()]
out['group'] = [str(f.result().state) for f in a.describe_consumer_groups(['ui-group']).values()]
out['committed'] = [[(tp.topic, tp.partition, tp.offset) for tp in f.result().topic_partitions]
                    for f in a.list_consumer_group_offsets([ConsumerGroupTopicPartitions('ui-group')]).values()]
out['described'] = [len(f.result().partitions) for f in a.describe_topics(TopicCollection(['ui'])).values()]
print(json.dumps(out))
"#
    );
    let out = py_json(server.addr, &code);
    let id = cluster_id(&server.data_dir);
    assert_eq!(
        out["cluster"],
        serde_json::json!([id, 0, [[0, "127.0.0.1", server.addr.port()]]])
    );
    assert!(
        out["configs"]["ResourceType.BROKER"].as_u64() > Some(5),
        "{out}"
    );
    assert!(
        out["configs"]["ResourceType.TOPIC"].as_u64() > Some(5),
        "{out}"
    );
    assert_eq!(out["groups"], serde_json::json!(["ui-group"]));
    // As on Kafka: once a group has committed, the internal offsets topic
    // is there to list too.
    assert_eq!(
        out["topics"],
        serde_json::json!(["__consumer_offsets", "ui"])
    );
    assert_eq!(out["offsets"], serde_json::json!([[0, 0], [1, 0]]));
    assert_eq!(out["latest"], serde_json::json!([10]));
    assert_eq!(
        out["group"],
        serde_json::json!(["ConsumerGroupState.EMPTY"])
    );
    assert_eq!(out["committed"], serde_json::json!([[["ui", 0, 5]]]));
    assert_eq!(out["described"], serde_json::json!([2]));
}

#[test]
fn a_uis_start_up_sequence_answers_through_kafka_pythons_admin_client() {
    let server = Server::start(&[]);
    let code = format!(
        "{SETUP}{}",
        r#"
from kafka import KafkaAdminClient, TopicPartition as KTP
from kafka.admin import ConfigResource, ConfigResourceType, OffsetSpec
k = KafkaAdminClient(bootstrap_servers=BROKER)
out = {}
out['cluster'] = k.describe_cluster()
cfg = k.describe_configs([ConfigResource(ConfigResourceType.BROKER, '0'), ConfigResource(ConfigResourceType.TOPIC, 'ui')],
                         config_filter='all')
out['configs'] = {t: {n: len(c) for n, c in names.items()} for t, names in cfg.items()}
out['log_dirs'] = k.describe_log_dirs()
out['groups'] = [g for g in k.list_groups()]
out['topics'] = sorted(k.list_topics())
out['described'] = [(t['name'], len(t['partitions'])) for t in k.describe_topics(['ui'])]
offs = k.list_partition_offsets({KTP('ui', 0): OffsetSpec.EARLIEST, KTP('ui', 1): OffsetSpec.LATEST})
out['offsets'] = sorted((tp.partition, o.offset) for tp, o in offs.items())
out['group'] = {g: d['group_state'] for g, d in k.describe_groups(['ui-group']).items()}
committed = k.list_group_offsets({'ui-group': None})
out['committed'] = [(tp.topic, tp.partition, o.offset) for tp, o in committed['ui-group'].items()]
out['partitions'] = k.describe_topic_partitions(['ui'])
print(json.dumps(out, default=str))
"#
    );
    let out = py_json(server.addr, &code);
    let id = cluster_id(&server.data_dir);
    assert_eq!(out["cluster"]["cluster_id"], Value::from(id), "{out}");
    assert_eq!(out["cluster"]["controller_id"], Value::from(0));
    assert_eq!(out["cluster"]["brokers"][0]["broker_id"], Value::from(0));
    assert_eq!(
        out["cluster"]["brokers"][0]["port"],
        Value::from(server.addr.port())
    );
    assert!(
        out["configs"].to_string().contains("\"ui\":"),
        "{}",
        out["configs"]
    );
    let dir = &out["log_dirs"][0]["log_dirs"][0];
    assert_eq!(dir["error_code"], Value::from(0), "{dir}");
    assert!(dir["total_bytes"].as_i64() > Some(0), "{dir}");
    let groups = out["groups"].to_string();
    assert!(groups.contains("ui-group"), "{groups}");
    // As on Kafka: once a group has committed, the internal offsets topic
    // is there to list too.
    assert_eq!(
        out["topics"],
        serde_json::json!(["__consumer_offsets", "ui"])
    );
    assert_eq!(out["described"], serde_json::json!([["ui", 2]]));
    assert_eq!(out["offsets"], serde_json::json!([[0, 0], [1, 0]]));
    assert_eq!(out["group"], serde_json::json!({"ui-group": "Empty"}));
    assert_eq!(out["committed"], serde_json::json!([["ui", 0, 5]]));
    let parts = &out["partitions"]["topics"][0];
    assert_eq!(parts["name"], Value::from("ui"), "{parts}");
    assert_eq!(parts["partitions"].as_array().map(Vec::len), Some(2));
    // The APIs of issue 13 were asked, not fallbacks.
    for api in [
        "DescribeCluster",
        "DescribeLogDirs",
        "DescribeTopicPartitions",
        "DescribeConfigs",
    ] {
        assert!(served(&server, api) >= 1, "{api} was not asked");
    }
}

/// (first offset, count) of what a new consumer group reads from the
/// beginning of `topic` partition 0.
const CONSUME_FROM_START: &str = r#"
from confluent_kafka import Consumer
import uuid
c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'g-' + uuid.uuid4().hex,
              'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
c.subscribe([TOPIC])
got = []
while len(got) < WANT:
    m = c.poll(10)
    assert m is not None, got
    assert m.error() is None, m.error()
    got.append(m.offset())
c.close()
print(json.dumps([got[0], len(got)]))
"#;

fn consume_from_start(broker: SocketAddr, topic: &str, want: usize) -> (i64, usize) {
    let out = py_json(
        broker,
        &format!("TOPIC = '{topic}'\nWANT = {want}\n{CONSUME_FROM_START}"),
    );
    (
        out[0].as_i64().expect("offset"),
        out[1].as_u64().expect("count") as usize,
    )
}

#[test]
fn delete_records_from_confluent_kafka_moves_where_consumers_start_and_survives_restarts() {
    let mut server = Server::start(&[]);
    let out = py_json(
        server.addr,
        r#"
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
a = AdminClient({'bootstrap.servers': BROKER})
for f in a.create_topics([NewTopic('dr', 1, 1)]).values():
    f.result()
p = Producer({'bootstrap.servers': BROKER, 'linger.ms': 0})
for i in range(20):
    p.produce('dr', value=b'v%d' % i, partition=0)
    p.flush(10)
out = {}
out['deleted'] = [f.result().low_watermark for f in a.delete_records([TopicPartition('dr', 0, 7)]).values()]
out['earliest'] = [f.result().offset for f in a.list_offsets({TopicPartition('dr', 0): OffsetSpec.earliest()}).values()]
try:
    [f.result() for f in a.delete_records([TopicPartition('dr', 0, 21)]).values()]
    out['past_end'] = 'accepted'
except Exception as e:
    out['past_end'] = e.args[0].name()
print(json.dumps(out))
"#,
    );
    assert_eq!(out["deleted"], serde_json::json!([7]));
    assert_eq!(out["earliest"], serde_json::json!([7]));
    assert_eq!(out["past_end"], Value::from("OFFSET_OUT_OF_RANGE"));
    assert_eq!(consume_from_start(server.addr, "dr", 13), (7, 13));
    let earliest = |addr: SocketAddr| {
        Client::connect(addr)
            .expect("connect")
            .list_offset("dr", 0, -2)
            .expect("earliest")
    };
    let below_start = |addr: SocketAddr| {
        let f = Client::connect(addr)
            .expect("connect")
            .fetch("dr", 0, 3, 100, 1 << 20)
            .expect("fetch");
        (f.error_code, f.log_start_offset)
    };
    assert_eq!(below_start(server.addr), (1, 7), "OFFSET_OUT_OF_RANGE");

    // A clean restart, then a crash right after a second deletion.
    let temp = server.take_dir().expect("dir");
    let dir = temp.path().join("data");
    server.stop();
    let mut server = Server::start_in(&dir, &[]);
    assert_eq!(earliest(server.addr), 7);
    assert_eq!(below_start(server.addr), (1, 7));
    let low = Client::connect(server.addr)
        .expect("connect")
        .delete_records("dr", 0, 12)
        .expect("delete");
    assert_eq!(low, 12);
    server.kill();
    let server = Server::start_in(&dir, &[]);
    assert_eq!(earliest(server.addr), 12);
    assert_eq!(consume_from_start(server.addr, "dr", 8), (12, 8));
}

/// One batch of one record.
fn one_record(value: bytes::Bytes) -> bytes::Bytes {
    let record = sluice_client::plain_record(0, 1_000, None, value);
    sluice_client::encode_batch(&[record], kafka_protocol::records::Compression::None)
        .expect("batch")
}

/// Sum of the `.log` files of a partition directory.
fn bytes_on_disk(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().expect("metadata").len() as i64)
        .sum()
}

#[test]
fn describe_log_dirs_sizes_match_the_partitions_on_disk() {
    // Small segments, so partitions span several files.
    let mut server = Server::start(&["--segment-bytes", "4096"]);
    let mut client = Client::connect(server.addr).expect("connect");
    client.create_topic("sizes", 3, &[]).expect("create");
    for (partition, batches) in [(0, 40), (1, 3), (2, 0)] {
        for i in 0..batches {
            let value = bytes::Bytes::from(vec![b'x'; 100 + i * 7]);
            let batch = one_record(value);
            client
                .produce("sizes", partition, batch, -1)
                .expect("produce");
        }
    }
    let mut raw = support::Client::connect(server.addr);
    let check = |raw: &mut support::Client, version: i16| {
        let mut req = DescribeLogDirsRequest::default();
        req.topics = None;
        let resp = raw.call(version, &req);
        assert_eq!(resp.results.len(), 1);
        let result = &resp.results[0];
        assert_eq!(result.error_code, 0);
        assert_eq!(
            Path::new(result.log_dir.as_str()),
            std::path::absolute(&server.data_dir).expect("abs")
        );
        let topic = result
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == "sizes")
            .expect("topic");
        let mut sizes: Vec<(i32, i64)> = topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size))
            .collect();
        sizes.sort();
        let on_disk: Vec<(i32, i64)> = (0..3)
            .map(|p| {
                (
                    p,
                    bytes_on_disk(&server.data_dir.join(format!("sizes-{p}"))),
                )
            })
            .collect();
        assert_eq!(sizes, on_disk, "v{version}");
        (result.total_bytes, result.usable_bytes)
    };
    assert_eq!(check(&mut raw, 1), (-1, -1));
    let (total, usable) = check(&mut raw, 4);
    assert!(total > 0 && usable > 0 && usable <= total);
    let segments = std::fs::read_dir(server.data_dir.join("sizes-0"))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    assert!(segments > 1, "partition 0 spans {segments} segment(s)");
    server.stop();
}

fn sluice_topic(broker: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topic", "-b", &broker.to_string()])
        .args(args)
        .output()
        .expect("sluice topic");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sluice_topic_delete_records_end_to_end() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.addr).expect("connect");
    client.create_topic("cli", 2, &[]).expect("create");
    for i in 0..10u8 {
        let batch = one_record(bytes::Bytes::from(vec![i]));
        client.produce("cli", 1, batch, -1).expect("produce");
    }
    let (ok, stdout, stderr) = sluice_topic(
        server.addr,
        &["delete-records", "cli", "--partition", "1", "--offset", "4"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "topic cli partition 1: log start offset 4");
    assert_eq!(client.list_offset("cli", 1, -2).expect("earliest"), 4);
    assert_eq!(
        server.metric("sluice_partition_log_start_offset{topic=\"cli\",partition=\"1\"}"),
        4
    );
    let (ok, stdout, _) = sluice_topic(server.addr, &["describe", "cli"]);
    assert!(ok);
    assert!(
        stdout.contains("partition 1  leader 0  epoch -1  replicas [0]  isr [0]  earliest 4  latest 10  messages 6"),
        "{stdout}"
    );
    // −1: everything, up to the high watermark.
    let (ok, stdout, stderr) = sluice_topic(
        server.addr,
        &["delete-records", "cli", "-p", "1", "-o", "-1"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("log start offset 10"), "{stdout}");
    // Past the end, and an unknown partition: refused by name.
    let (ok, _, stderr) = sluice_topic(
        server.addr,
        &["delete-records", "cli", "-p", "1", "-o", "11"],
    );
    assert!(!ok);
    assert!(stderr.contains("OFFSET_OUT_OF_RANGE"), "{stderr}");
    let (ok, _, stderr) = sluice_topic(
        server.addr,
        &["delete-records", "cli", "-p", "7", "-o", "0"],
    );
    assert!(!ok);
    assert!(stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{stderr}");
}

#[test]
fn sluice_topic_alter_sets_and_deletes_overrides_and_describe_shows_them() {
    let server = Server::start(&[]);
    let (ok, _, stderr) = sluice_topic(
        server.addr,
        &["create", "conf", "-c", "retention.ms=3600000"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = sluice_topic(server.addr, &["describe", "conf"]);
    assert!(ok);
    assert!(
        stdout.contains("\n  configs retention.ms=3600000\n"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = sluice_topic(
        server.addr,
        &[
            "alter",
            "conf",
            "--config",
            "segment.bytes=1048576",
            "-c",
            "cleanup.policy=compact",
            "--delete-config",
            "retention.ms",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deleted retention.ms from topic conf"),
        "{stdout}"
    );
    let (_, stdout, _) = sluice_topic(server.addr, &["describe", "conf"]);
    assert!(
        stdout.contains("\n  configs cleanup.policy=compact segment.bytes=1048576\n"),
        "{stdout}"
    );
    // The broker's own view, through the client's DescribeConfigs.
    let mut client = Client::connect(server.addr).expect("connect");
    let overrides: Vec<(String, Option<String>)> = client
        .topic_overrides("conf")
        .expect("describe")
        .into_iter()
        .map(|c| (c.name, c.value))
        .collect();
    assert_eq!(
        overrides,
        vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("segment.bytes".into(), Some("1048576".into())),
        ]
    );
    // A bad value is refused by name, and nothing of the request applies.
    let (ok, _, stderr) = sluice_topic(
        server.addr,
        &[
            "alter",
            "conf",
            "-c",
            "retention.ms=1",
            "-c",
            "segment.bytes=soon",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("INVALID_CONFIG") && stderr.contains("segment.bytes"),
        "{stderr}"
    );
    assert_eq!(client.topic_overrides("conf").expect("describe").len(), 2);
    let (ok, _, stderr) = sluice_topic(server.addr, &["alter", "conf"]);
    assert!(!ok && stderr.contains("nothing to change"), "{stderr}");
    // A compacted topic refuses DeleteRecords, as Kafka does.
    let (ok, _, stderr) = sluice_topic(
        server.addr,
        &["delete-records", "conf", "-p", "0", "-o", "0"],
    );
    assert!(!ok);
    assert!(stderr.contains("POLICY_VIOLATION"), "{stderr}");
}
