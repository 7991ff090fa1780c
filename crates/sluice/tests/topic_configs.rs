//! Topic configs through real admin clients (confluent-kafka, kafka-python,
//! librdkafka): set at creation, described truthfully, altered live, in
//! force, refused by name when wrong, and kept across a restart; dynamic
//! broker configs likewise.

mod support;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Timestamp;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{Server, py};

const DESCRIBE: &str = "
from confluent_kafka.admin import AdminClient, ConfigResource
def describe(a, kind, name, keys):
    r = ConfigResource(kind, name)
    entries = a.describe_configs([r])[r].result(10)
    return ' '.join(f'{k}={entries[k].value}/{entries[k].source}' for k in keys)
";

#[test]
fn confluent_kafka_sets_describes_alters_and_is_refused_by_name() {
    let mut server = Server::start(&[]);
    let out = py(
        server.addr,
        &format!(
            "{DESCRIBE}
from confluent_kafka.admin import NewTopic, ConfigEntry, AlterConfigOpType
from confluent_kafka import KafkaException
a = AdminClient({{'bootstrap.servers': BROKER}})
a.create_topics([NewTopic('schemas', 1, 1, config={{'cleanup.policy': 'compact', 'max.message.bytes': '5000'}})])['schemas'].result(10)
print(describe(a, 'topic', 'schemas', ['cleanup.policy', 'max.message.bytes', 'retention.ms']))
try:
    a.create_topics([NewTopic('bad', 1, 1, config={{'retention.mss': '1'}})])['bad'].result(10)
except KafkaException as e:
    print(e.args[0].name(), 'retention.mss' in e.args[0].str())
try:
    a.create_topics([NewTopic('bad2', 1, 1, config={{'compression.type': 'gzip'}})])['bad2'].result(10)
except KafkaException as e:
    print(e.args[0].name())
r = ConfigResource('topic', 'schemas', incremental_configs=[
    ConfigEntry('max.message.bytes', '100000', incremental_operation=AlterConfigOpType.SET),
    ConfigEntry('cleanup.policy', 'delete', incremental_operation=AlterConfigOpType.APPEND),
])
a.incremental_alter_configs([r])[r].result(10)
print(describe(a, 'topic', 'schemas', ['cleanup.policy', 'max.message.bytes']))
print(sorted(t for t in a.list_topics(timeout=10).topics if t.startswith('bad')))
# validate_only changes nothing; the legacy AlterConfigs replaces the whole set.
r = ConfigResource('topic', 'schemas', incremental_configs=[
    ConfigEntry('segment.ms', '1000', incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([r], validate_only=True)[r].result(10)
print(describe(a, 'topic', 'schemas', ['segment.ms']))
r = ConfigResource('topic', 'schemas', set_config={{'cleanup.policy': 'compact,delete', 'max.message.bytes': '100000'}})
a.alter_configs([r])[r].result(10)
"
        ),
    );
    assert_eq!(
        out,
        "cleanup.policy=compact/1 max.message.bytes=5000/1 retention.ms=604800000/5\n\
         INVALID_CONFIG True\n\
         INVALID_CONFIG\n\
         cleanup.policy=compact,delete/1 max.message.bytes=100000/1\n\
         []\n\
         segment.ms=604800000/5",
        "{out}"
    );
    // Kept across a restart.
    let dir = server.take_dir().expect("dir");
    server.stop();
    let again = Server::start_in(&dir.path().join("data"), &[]);
    let out = py(
        again.addr,
        &format!(
            "{DESCRIBE}
a = AdminClient({{'bootstrap.servers': BROKER}})
print(describe(a, 'topic', 'schemas', ['cleanup.policy', 'max.message.bytes']))"
        ),
    );
    assert_eq!(
        out,
        "cleanup.policy=compact,delete/1 max.message.bytes=100000/1"
    );
}

#[test]
fn a_lowered_max_message_bytes_applies_without_a_restart() {
    let server = Server::start(&[]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let send = |size: usize| {
        producer
            .send(BaseRecord::<(), [u8]>::to("limits").payload(&vec![b'x'; size][..]))
            .expect("queue");
        producer.flush(Duration::from_secs(10))
    };
    send(10_000).expect("10 KB under the default");
    py(
        server.addr,
        "from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType
a = AdminClient({'bootstrap.servers': BROKER})
r = ConfigResource('topic', 'limits', incremental_configs=[
    ConfigEntry('max.message.bytes', '2000', incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([r])[r].result(10)",
    );
    // A second producer (its batch size learned afresh) sends 10 KB again.
    let watcher: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("message.timeout.ms", "5000")
        .set("retries", "0")
        .create()
        .expect("producer");
    watcher
        .send(BaseRecord::<(), [u8]>::to("limits").payload(&vec![b'x'; 10_000][..]))
        .expect("queue");
    watcher.flush(Duration::from_secs(10)).ok();
    // The log's end tells whether the second message was stored.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("group.id", "limits-check")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks("limits", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(
        high, 1,
        "the 10 KB batch over the new 2,000-byte limit was refused"
    );
}

#[test]
fn log_append_time_topics_are_stamped_by_the_broker() {
    let server = Server::start(&[]);
    py(
        server.addr,
        "from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': BROKER})
a.create_topics([NewTopic('stamped', 1, 1, config={'message.timestamp.type': 'LogAppendTime'})])['stamped'].result(10)",
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::<(), str>::to("stamped")
                .payload("old clock")
                .timestamp(1_000),
        )
        .expect("queue");
    producer.flush(Duration::from_secs(10)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("group.id", "stamped-reader")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("stamped", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "no message");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            match m.timestamp() {
                Timestamp::LogAppendTime(ts) => {
                    let now = sluice_log::now_ms();
                    assert!((now - 60_000..=now).contains(&ts), "{ts}");
                }
                other => panic!("expected LogAppendTime, got {other:?}"),
            }
            break;
        }
    }
}

#[test]
fn kafka_python_creates_describes_and_alters_topic_configs() {
    let server = Server::start(&[]);
    let out = py(
        server.addr,
        "from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
a = KafkaAdminClient(bootstrap_servers=BROKER)
a.create_topics([NewTopic('kp', 2, 1, topic_configs={'retention.ms': '3600000'})])
def show():
    # kafka-python 3 lists the entries that are not Kafka's defaults.
    entries = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp')])['topic']['kp']
    return [(k, e['value'], e['config_source']) for k, e in sorted(entries.items())]
print(*show())
# IncrementalAlterConfigs (kafka-python's default): the rest stays.
a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp', configs={'cleanup.policy': 'compact'})])
print(*show())
# AlterConfigs: kafka-python sends the other overrides along (the legacy API
# replaces the whole set).
a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp', configs={'segment.ms': '60000'})], incremental=False)
print(*show())
a.close()",
    );
    assert_eq!(
        out,
        "('retention.ms', '3600000', 'DYNAMIC_TOPIC_CONFIG')\n\
         ('cleanup.policy', 'compact', 'DYNAMIC_TOPIC_CONFIG') ('retention.ms', '3600000', 'DYNAMIC_TOPIC_CONFIG')\n\
         ('cleanup.policy', 'compact', 'DYNAMIC_TOPIC_CONFIG') ('retention.ms', '3600000', 'DYNAMIC_TOPIC_CONFIG') ('segment.ms', '60000', 'DYNAMIC_TOPIC_CONFIG')",
        "{out}"
    );
}

#[test]
fn dynamic_broker_configs_change_the_defaults_and_survive_a_restart() {
    let mut server = Server::start(&["--retention-ms", "86400000"]);
    let out = py(
        server.addr,
        &format!(
            "{DESCRIBE}
from confluent_kafka.admin import ConfigEntry, AlterConfigOpType, NewTopic
a = AdminClient({{'bootstrap.servers': BROKER}})
a.create_topics([NewTopic('inherits', 1, 1)])['inherits'].result(10)
print(describe(a, 'broker', '0', ['log.retention.ms', 'log.dirs']))
r = ConfigResource('broker', '0', incremental_configs=[
    ConfigEntry('log.retention.ms', '3600000', incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([r])[r].result(10)
print(describe(a, 'broker', '0', ['log.retention.ms']))
print(describe(a, 'topic', 'inherits', ['retention.ms']))
r = ConfigResource('broker', '0', incremental_configs=[
    ConfigEntry('log.dirs', '/elsewhere', incremental_operation=AlterConfigOpType.SET)])
try:
    a.incremental_alter_configs([r])[r].result(10)
except Exception as e:
    print(e.args[0].name())
"
        ),
    );
    assert_eq!(
        out,
        "log.retention.ms=86400000/4 log.dirs=".to_string()
            + &server.data_dir.display().to_string()
            + "/4\nlog.retention.ms=3600000/2\nretention.ms=3600000/2\nINVALID_REQUEST",
        "{out}"
    );
    let dir = server.take_dir().expect("dir");
    server.stop();
    let again = Server::start_in(&dir.path().join("data"), &["--retention-ms", "86400000"]);
    let out = py(
        again.addr,
        &format!(
            "{DESCRIBE}
a = AdminClient({{'bootstrap.servers': BROKER}})
print(describe(a, 'topic', 'inherits', ['retention.ms']))"
        ),
    );
    assert_eq!(out, "retention.ms=3600000/2");
}
