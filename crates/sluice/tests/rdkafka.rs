//! Interop with librdkafka through the `rdkafka` crate: produce with acks
//! 0, 1 and all and with every compression codec, consume in assign mode from
//! the beginning, the end and a given offset, across a broker restart — and
//! compare every key, value, header and timestamp.

mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use support::Server;

/// What a test message carries, and what must come back.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: String,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn message(i: usize) -> Sent {
    Sent {
        key: format!("key-{i}"),
        value: format!("value-{i}-{}", "v".repeat(i % 300)).into_bytes(),
        headers: vec![
            ("trace".to_string(), Some(format!("t{i}").into_bytes())),
            ("empty".to_string(), None),
        ],
        timestamp: 1_700_000_000_000 + i as i64,
    }
}

async fn produce(broker: &str, topic: &str, acks: &str, codec: &str, msgs: &[Sent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", acks)
        .set("compression.type", codec)
        .set("linger.ms", "5")
        // Idempotence wants acks=all; the other ack levels run without it.
        .set(
            "enable.idempotence",
            if acks == "all" { "true" } else { "false" },
        )
        .create()
        .expect("producer");
    let sends = msgs.iter().map(|m| {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        producer.send(
            FutureRecord::to(topic)
                .partition(0)
                .key(&m.key)
                .payload(&m.value)
                .headers(headers)
                .timestamp(m.timestamp),
            Duration::from_secs(10),
        )
    });
    for result in futures_join(sends).await {
        let delivery = result.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
        if acks != "0" {
            assert!(delivery.offset >= 0, "acked with an offset");
        }
    }
}

/// Awaits futures in order (they were all started by `send` already queuing).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futs.collect::<Vec<_>>() {
        out.push(f.await);
    }
    out
}

/// Reads `count` messages of partition 0 from `start`, in assign mode.
fn consume(broker: &str, topic: &str, start: Offset, count: usize) -> Vec<(i64, Sent)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        // librdkafka wants a group id even in assign mode; nothing is committed.
        .set("group.id", "sluice-assign-test")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, start).expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result.expect("consume");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("expected a create time, got {other:?}"),
        };
        out.push((
            m.offset(),
            Sent {
                key: String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8"),
                value: m.payload().expect("payload").to_vec(),
                headers,
                timestamp,
            },
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_round_trips_every_ack_level_and_codec_and_survives_a_restart() {
    let mut server = Server::start(&["--flush", "always"]);
    let broker = server.addr.to_string();
    let msgs: Vec<Sent> = (0..400).map(message).collect();
    let cases = [
        ("0", "none"),
        ("1", "gzip"),
        ("all", "snappy"),
        ("all", "lz4"),
        ("1", "zstd"),
    ];
    for (acks, codec) in cases {
        let topic = format!("rd-{acks}-{codec}");
        produce(&broker, &topic, acks, codec, &msgs).await;
        let got = consume(&broker, &topic, Offset::Beginning, msgs.len());
        assert_eq!(got.len(), msgs.len(), "acks={acks} {codec}");
        for (i, (offset, m)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(m, &msgs[i], "acks={acks} {codec}: message {i}");
        }
    }

    // From a given offset.
    let got = consume(&broker, "rd-1-gzip", Offset::Offset(250), 150);
    assert_eq!(
        got.first().map(|(o, m)| (*o, m.clone())),
        Some((250, msgs[250].clone()))
    );
    assert_eq!(got.len(), 150);

    // From the end: only what is produced after assignment arrives.
    let broker2 = broker.clone();
    let tail = std::thread::spawn(move || consume(&broker2, "rd-all-lz4", Offset::End, 1));
    std::thread::sleep(Duration::from_secs(2));
    let late = vec![message(1000)];
    produce(&broker, "rd-all-lz4", "all", "lz4", &late).await;
    let got = tail.join().expect("tail consumer");
    assert_eq!(got, vec![(400, late[0].clone())]);

    // Across a restart.
    let dir = server.take_dir();
    let data_dir = server.data_dir.clone();
    server.stop();
    let server = Server::start_in(&data_dir, &["--flush", "always"]);
    let broker = server.addr.to_string();
    let got = consume(&broker, "rd-all-snappy", Offset::Beginning, msgs.len());
    let values: Vec<Sent> = got.into_iter().map(|(_, m)| m).collect();
    assert_eq!(values, msgs, "everything is back after a restart");
    drop(dir);
}
