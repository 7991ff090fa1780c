//! Crash safety through the whole broker: `sluice serve --flush always` is
//! killed with SIGKILL at random moments, 30 times, and restarted on the same
//! port and directory while one librdkafka idempotent producer (acks=all)
//! keeps writing and a librdkafka consumer (CRC checks on) keeps reading.
//! Afterwards every acknowledged message is in the log exactly once, at the
//! offset it was acknowledged with, in the order it was sent, and no
//! consumer ever saw a corrupt batch.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use support::Server;

const KILLS: usize = 30;
const TOPIC: &str = "crash";

/// Delivery reports: (message id, offset) of every acknowledged message.
#[derive(Default, Clone)]
struct Reports {
    acked: Arc<Mutex<Vec<(u64, i64)>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        match result {
            Ok(m) => self.acked.lock().expect("acked").push((*id, m.offset())),
            Err((e, _)) => self.failed.lock().expect("failed").push(e.to_string()),
        }
    }
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A cheap pseudo-random stream (no extra crate): xorshift64*.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// True for errors that mean bad data, not a broker that went away.
fn is_corruption(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::BadCompression
        )
    )
}

#[test]
fn sigkill_thirty_times_loses_and_duplicates_no_acknowledged_message() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let listen = free_port();
    let args = [
        "--flush",
        "always",
        "--segment-bytes",
        "256k",
        "--log-level",
        "warn",
    ];
    let mut server = Server::start_at(&dir, &listen, &args, &[]);

    let reports = Reports::default();
    let producer: Arc<BaseProducer<Reports>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &listen)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Batches well under the 256 KiB segments, so rolls are frequent.
            .set("batch.size", "65536")
            .set("message.timeout.ms", "120000")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "100")
            .create_with_context(reports.clone())
            .expect("producer"),
    );

    // A consumer reading all along, CRC checks on: it may see the broker go
    // away, never a corrupt batch.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (listen, stop) = (listen.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &listen)
                .set("group.id", "crash-reader")
                .set("enable.auto.commit", "false")
                .set("check.crcs", "true")
                .set("reconnect.backoff.ms", "10")
                .set("reconnect.backoff.max.ms", "100")
                .create()
                .map_err(|e| e.to_string())?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
                .map_err(|e| e.to_string())?;
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(_)) => seen += 1,
                    Some(Err(e)) if is_corruption(&e) => {
                        return Err(format!("consumer saw a corrupt batch: {e}"));
                    }
                    _ => {}
                }
            }
            Ok(seen)
        })
    };

    // The producer: one message after another, ids in its value and key.
    let writer = {
        let (producer, stop) = (producer.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("message-{id:08}");
                let record = BaseRecord::with_opaque_to(TOPIC, Box::new(id))
                    .partition(0)
                    .key(&value)
                    .payload(&value);
                match producer.send(record) {
                    Ok(()) => id += 1,
                    Err((_, _)) => {
                        // Queue full while the broker is down: wait.
                        producer.poll(Duration::from_millis(10));
                    }
                }
                producer.poll(Duration::ZERO);
                if id.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            id
        })
    };

    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(60 + next_random(&mut random) % 240));
        server.kill();
        server = Server::start_at(&dir, &listen, &args, &[]);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    producer
        .flush(Duration::from_secs(120))
        .expect("every message delivered or failed");
    let seen_live = reader.join().expect("reader").expect("live consumer");

    let acked = reports.acked.lock().expect("acked").clone();
    let failed = reports.failed.lock().expect("failed").clone();
    // With a 2-minute delivery timeout nothing may fail: the producer
    // retries across every crash and the broker's idempotence state makes
    // the retries land once.
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for f in &failed {
        *reasons.entry(f.as_str()).or_default() += 1;
    }
    assert!(reasons.is_empty(), "failed deliveries: {reasons:?}");
    assert_eq!(
        acked.len() as u64,
        sent,
        "every message sent was acknowledged"
    );
    assert!(sent > 1000, "{sent} messages over {KILLS} crashes");
    assert!(seen_live > 0, "the live consumer read along");

    // Read the whole partition back with CRC checks.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &listen)
        .set("group.id", "crash-verify")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut log: Vec<(i64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.last().is_none_or(|(o, _)| o + 1 < high) {
        assert!(
            Instant::now() < deadline,
            "read back {} of {high}",
            log.len()
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let value = std::str::from_utf8(m.payload().expect("payload")).expect("utf-8");
                let id: u64 = value
                    .strip_prefix("message-")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected value {value:?}"));
                assert_eq!(m.key(), m.payload(), "key matches value");
                log.push((m.offset(), id));
            }
            Some(Err(e)) => panic!("reading back: {e}"),
            None => {}
        }
    }

    // In order, exactly once: ids strictly increase along the log.
    for pair in log.windows(2) {
        assert!(
            pair[1].1 > pair[0].1,
            "id {} at offset {} follows id {} at offset {}: reordered or duplicated",
            pair[1].1,
            pair[1].0,
            pair[0].1,
            pair[0].0
        );
    }
    // Every acknowledged message is there, at its acknowledged offset.
    let by_offset: HashMap<i64, u64> = log.iter().copied().collect();
    for (id, offset) in &acked {
        assert_eq!(
            by_offset.get(offset),
            Some(id),
            "acknowledged message {id} at offset {offset}"
        );
    }
    eprintln!(
        "{KILLS} kills: {sent} sent, {} acknowledged, {} failed, {} in the log, {seen_live} read live",
        acked.len(),
        failed.len(),
        log.len()
    );
}
