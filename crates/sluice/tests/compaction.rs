//! Compacted topics end to end: librdkafka writes updates and tombstones
//! into a `cleanup.policy=compact` topic, the broker's cleaner compacts it,
//! and a librdkafka consumer and a kafka-python consumer reading from the
//! start get exactly the latest record of every key — still after a restart.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{Server, py};

const KEYS: usize = 40;
const ROUNDS: usize = 25;
const FILLER: usize = 600;

/// key → every value read, in order (None: a tombstone).
type Seen = BTreeMap<String, Vec<Option<String>>>;

fn read_all(broker: std::net::SocketAddr) -> Seen {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.to_string())
        .set("group.id", "compaction-reader")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("compacted", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                let value = m.payload().map(|v| String::from_utf8_lossy(v).to_string());
                seen.entry(key).or_default().push(value);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    seen
}

/// The keys where a read differs from what it should be, for a short message.
fn differences(seen: &Seen, want: &Seen) -> Vec<String> {
    let mut keys: Vec<&String> = seen.keys().chain(want.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| seen.get(*k) != want.get(*k))
        .take(8)
        .map(|k| format!("{k}: read {:?}, want {:?}", seen.get(k), want.get(k)))
        .collect()
}

/// What a compacted read must give: each key once, with its latest value.
fn latest() -> Seen {
    let mut want = Seen::new();
    for k in 0..KEYS {
        let v = if k < 5 {
            None
        } else {
            Some(format!("k{k}-v{}", ROUNDS - 1))
        };
        want.insert(format!("key-{k:02}"), vec![v]);
    }
    for f in 0..FILLER {
        want.insert(format!("filler-{f:04}"), vec![Some("f".into())]);
    }
    want
}

#[test]
fn consumers_read_only_the_latest_record_of_every_key() {
    let mut server = Server::start(&["--log-cleaner-backoff-ms", "100"]);
    py(
        server.addr,
        "from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': BROKER})
a.create_topics([NewTopic('compacted', 1, 1, config={
    'cleanup.policy': 'compact', 'segment.bytes': '2048',
    'min.cleanable.dirty.ratio': '0.01', 'delete.retention.ms': '86400000'})])['compacted'].result(10)",
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.addr.to_string())
        .set("linger.ms", "5")
        .set("compression.type", "gzip")
        .create()
        .expect("producer");
    for r in 0..ROUNDS {
        for k in 0..KEYS {
            let key = format!("key-{k:02}");
            let value = format!("k{k}-v{r}");
            let record = BaseRecord::to("compacted").key(&key);
            // Keys 0–4 end as tombstones.
            let record = if k < 5 && r == ROUNDS - 1 {
                record
            } else {
                record.payload(&value)
            };
            producer.send(record).expect("queue");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
    }
    // Unique keys behind the updates: the updates roll into sealed
    // segments, which the cleaner may compact; the active one it never does.
    for f in 0..FILLER {
        producer
            .send(
                BaseRecord::to("compacted")
                    .key(&format!("filler-{f:04}"))
                    .payload("f"),
            )
            .expect("queue");
        // Small batches: one larger than segment.bytes would be refused.
        if f % 20 == 19 {
            producer.flush(Duration::from_secs(10)).expect("flush");
        }
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    // A keyless record is refused by a compacted topic (Kafka's rule): the
    // read below would show it under the empty key.
    let refused = producer.send(BaseRecord::<(), str>::to("compacted").payload("no key"));
    assert!(refused.is_ok(), "queued");
    producer.flush(Duration::from_secs(10)).ok();

    let want = latest();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = read_all(server.addr);
    while seen != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        seen = read_all(server.addr);
    }
    assert!(
        seen == want,
        "librdkafka reads the compacted log: {:?}",
        differences(&seen, &want)
    );
    assert!(server.metric("sluice_log_cleaner_passes_total") >= 1);
    let labels = "{topic=\"compacted\",partition=\"0\"}";
    let read = server.metric(&format!("sluice_log_cleaner_last_pass_bytes_read{labels}"));
    let written = server.metric(&format!(
        "sluice_log_cleaner_last_pass_bytes_written{labels}"
    ));
    assert!(
        read > written,
        "a pass that removed records wrote less than it read"
    );
    assert!(
        server.metric("sluice_log_cleaner_records_removed_total") >= (KEYS * (ROUNDS - 1)) as u64
    );

    // kafka-python sees the same.
    let out = py(
        server.addr,
        "from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=BROKER, enable_auto_commit=False, consumer_timeout_ms=5000)
tp = TopicPartition('compacted', 0)
c.assign([tp]); c.seek_to_beginning(tp)
seen = {}
for m in c:
    seen.setdefault(m.key.decode(), []).append(m.value)
print(len(seen), sum(len(v) for v in seen.values()), seen['key-03'], seen['key-17'])",
    );
    assert_eq!(
        out,
        format!(
            "{} {} [None] [b'k17-v{}']",
            KEYS + FILLER,
            KEYS + FILLER,
            ROUNDS - 1
        )
    );

    // After a restart the compacted log reads the same.
    let dir = server.take_dir().expect("dir");
    server.stop();
    let again = Server::start_in(
        &dir.path().join("data"),
        &["--log-cleaner-backoff-ms", "100"],
    );
    let after = read_all(again.addr);
    assert!(
        after == want,
        "after a restart: {:?}",
        differences(&after, &want)
    );
}
