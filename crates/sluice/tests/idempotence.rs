//! Idempotence under wire duplicates: a librdkafka producer with
//! `enable.idempotence=true` sends 100,000 messages through a proxy that sends
//! every third Produce request to the broker twice (a raw resend of the same
//! request, its response swallowed). The log must hold each message exactly
//! once, in order.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::{Client, Server};

const MESSAGES: usize = 100_000;

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut frame).ok()?;
    Some(frame)
}

fn write_frame(s: &mut TcpStream, frame: &[u8]) -> bool {
    s.write_all(&(frame.len() as i32).to_be_bytes()).is_ok() && s.write_all(frame).is_ok()
}

/// Forwards Kafka frames both ways, duplicating every third Produce request.
fn start_proxy(listener: TcpListener, broker: SocketAddr, duplicated: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(broker) else {
                continue;
            };
            let swallow: Arc<Mutex<HashSet<i32>>> = Arc::default();
            let (mut c_in, mut c_out) = (client.try_clone().expect("clone"), client);
            let (mut b_in, mut b_out) = (upstream.try_clone().expect("clone"), upstream);
            let (swallow_up, duplicated) = (swallow.clone(), duplicated.clone());
            std::thread::spawn(move || {
                let mut produces = 0u64;
                while let Some(frame) = read_frame(&mut c_in) {
                    if !write_frame(&mut b_out, &frame) {
                        return;
                    }
                    let is_produce = frame.len() >= 8 && frame[0..2] == [0, 0];
                    if is_produce {
                        produces += 1;
                        if produces.is_multiple_of(3) {
                            // The same request again, under a correlation id
                            // whose response the client never sees.
                            let mut dup = frame.clone();
                            let id =
                                i32::from_be_bytes([dup[4], dup[5], dup[6], dup[7]]) ^ 0x4000_0000;
                            dup[4..8].copy_from_slice(&id.to_be_bytes());
                            swallow_up.lock().expect("lock").insert(id);
                            if !write_frame(&mut b_out, &dup) {
                                return;
                            }
                            duplicated.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let _ = b_out.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                while let Some(frame) = read_frame(&mut b_in) {
                    let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                    if swallow.lock().expect("lock").remove(&id) {
                        continue;
                    }
                    if !write_frame(&mut c_out, &frame) {
                        return;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

#[test]
fn duplicated_produce_requests_are_appended_once() {
    let proxy = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let server = Server::start(&["--advertised-listener", &proxy_addr.to_string()]);
    let duplicated = Arc::new(AtomicU64::new(0));
    start_proxy(proxy, server.addr, duplicated.clone());

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", proxy_addr.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "500")
        .create()
        .expect("producer");
    for i in 0..MESSAGES {
        let value = format!("m{i}");
        let mut record = BaseRecord::<(), String>::to("idem")
            .partition(0)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    drop(producer);
    assert!(
        duplicated.load(Ordering::Relaxed) > 0,
        "the proxy injected duplicates"
    );

    // Read the partition back straight from the broker.
    let mut c = Client::connect(server.addr);
    let mut offset = 0i64;
    let mut values = Vec::with_capacity(MESSAGES);
    while values.len() < MESSAGES {
        let frame = fetch_raw(&mut c, offset);
        if frame.is_empty() {
            break;
        }
        for (o, v) in frame {
            assert_eq!(o, offset, "offsets without gaps");
            offset += 1;
            values.push(v);
        }
    }
    assert_eq!(values.len(), MESSAGES, "every message, none twice");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v, &format!("m{i}"), "in order");
    }
    let hw = fetch_hw(&mut c);
    assert_eq!(hw, MESSAGES as i64, "nothing appended twice");
}

fn fetch_request(offset: i64) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic = kafka_protocol::messages::TopicName(
        kafka_protocol::protocol::StrBytes::from_static_str("idem"),
    );
    ft.partitions = vec![fp];
    let mut r = kafka_protocol::messages::FetchRequest::default();
    r.replica_id = (-1).into();
    r.max_bytes = 1 << 20;
    r.min_bytes = 1;
    r.topics = vec![ft];
    r
}

/// (offset, value) of every record from `offset` in one fetch.
fn fetch_raw(c: &mut Client, offset: i64) -> Vec<(i64, String)> {
    let resp = c.call(12, &fetch_request(offset));
    let mut records = resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    // Cut a partial trailing batch.
    records.truncate(sluice_client::whole_len(&records));
    let sets =
        kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).expect("decode");
    sets.into_iter()
        .flat_map(|s| s.records)
        .filter(|r| r.offset >= offset)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap_or_default().to_vec()).expect("utf-8"),
            )
        })
        .collect()
}

fn fetch_hw(c: &mut Client) -> i64 {
    c.call(12, &fetch_request(0)).responses[0].partitions[0].high_watermark
}
