//! Transactions on the partition side (issue 16): transactional batches
//! hold back the last stable offset until their COMMIT or ABORT marker
//! (WriteTxnMarkers, as a transaction coordinator sends it) lands; a
//! read_committed Fetch stops at the last stable offset and lists the
//! aborted transactions it covers, so clients drop their records — here
//! checked over the wire and with librdkafka (kcat-free: the rdkafka
//! crate) reading read_committed and read_uncommitted; ListOffsets'
//! latest for read_committed is the last stable offset; DescribeProducers
//! shows the open transaction; all of it survives a SIGKILL of the broker.

mod support;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    FetchRequest, ListOffsetsRequest, ProduceRequest, ProducerId, TopicName, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use sluice_log::batch;
use support::{Client, Server};

const TOPIC: &str = "txn";

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// A producer id for transactional id `id` from the transaction
/// coordinator, with partition 0 added to its transaction (KIP-890: the
/// partition takes its transactional data only then). The transaction
/// stays open at the coordinator; the test writes its markers itself.
fn begin(c: &mut Client, id: &str) -> i64 {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, InitProducerIdRequest, TransactionalId,
    };
    let tid = TransactionalId(StrBytes::from_string(id.to_string()));
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(tid.clone());
    init.transaction_timeout_ms = 900_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let resp = c.call(4, &init);
    assert_eq!((resp.error_code, resp.producer_epoch), (0, 0), "init");
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = name();
    t.partitions = vec![0];
    let mut add = AddPartitionsToTxnRequest::default();
    add.v3_and_below_transactional_id = tid;
    add.v3_and_below_producer_id = resp.producer_id;
    add.v3_and_below_producer_epoch = 0;
    add.v3_and_below_topics = vec![t];
    let added = c.call(3, &add);
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0,
        "added to the transaction"
    );
    resp.producer_id.0
}

/// A transactional batch of `values` from `producer_id` (epoch 0) starting
/// at sequence `seq`.
fn txn_batch(producer_id: i64, seq: i32, values: &[&str]) -> Bytes {
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let mut b = batch::build_batch(sluice_log::now_ms(), &refs);
    // Attributes bit 4: transactional (inside the CRC, which set_producer
    // computes again).
    let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x10;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch::set_producer(&mut b, producer_id, 0, seq);
    Bytes::from(b)
}

fn produce(c: &mut Client, records: Bytes, transactional_id: Option<&str>) -> i64 {
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(records);
    let mut td = TopicProduceData::default();
    td.name = name();
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.transactional_id = transactional_id
        .map(|t| kafka_protocol::messages::TransactionalId(StrBytes::from_string(t.to_string())));
    req.topic_data = vec![td];
    let resp = c.call(9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "produce");
    p.base_offset
}

fn marker(c: &mut Client, producer_id: i64, commit: bool) {
    let mut t = WritableTxnMarkerTopic::default();
    t.name = name();
    t.partition_indexes = vec![0];
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(producer_id);
    m.producer_epoch = 0;
    m.transaction_result = commit;
    m.coordinator_epoch = 0;
    m.topics = vec![t];
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![m];
    let resp = c.call(1, &req);
    assert_eq!(
        resp.markers[0].topics[0].partitions[0].error_code, 0,
        "marker written"
    );
}

/// (high watermark, last stable offset, aborted (producer, first offset),
/// record values) of a Fetch from offset 0 at `isolation`.
fn fetch(c: &mut Client, isolation: i8) -> (i64, i64, Vec<(i64, i64)>, Vec<String>) {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = name();
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 1 << 20;
    req.isolation_level = isolation;
    req.topics = vec![ft];
    let resp = c.call(11, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p
        .aborted_transactions
        .as_ref()
        .map(|a| {
            a.iter()
                .map(|t| (t.producer_id.0, t.first_offset))
                .collect()
        })
        .unwrap_or_default();
    let mut values = Vec::new();
    let mut records = p.records.clone().unwrap_or_default();
    if !records.is_empty() {
        let sets =
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).expect("decodes");
        for set in sets {
            for r in set.records {
                if !r.control {
                    values.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned());
                }
            }
        }
    }
    (p.high_watermark, p.last_stable_offset, aborted, values)
}

/// (producer id, epoch, last sequence, open transaction's first offset)
/// of every producer partition 0 keeps state for (DescribeProducers).
fn producers(c: &mut Client) -> Vec<(i64, i32, i32, i64)> {
    use kafka_protocol::messages::DescribeProducersRequest;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let mut t = TopicRequest::default();
    t.name = name();
    t.partition_indexes = vec![0];
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    let resp = c.call(0, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.active_producers
        .iter()
        .map(|s| {
            (
                s.producer_id.0,
                s.producer_epoch,
                s.last_sequence,
                s.current_txn_start_offset,
            )
        })
        .collect()
}

fn latest(c: &mut Client, isolation: i8) -> i64 {
    let mut lp = ListOffsetsPartition::default();
    lp.partition_index = 0;
    lp.timestamp = -1;
    let mut lt = ListOffsetsTopic::default();
    lt.name = name();
    lt.partitions = vec![lp];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.isolation_level = isolation;
    req.topics = vec![lt];
    c.call(5, &req).topics[0].partitions[0].offset
}

fn consume_all(addr: &str, isolation: &str, want: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("txn-{isolation}"))
        .set("isolation.level", isolation)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // Nothing more arrives.
    let extra_deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < extra_deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    got
}

#[test]
fn markers_move_the_last_stable_offset_and_read_committed_drops_aborted_records() {
    let mut server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(support::create_topic(&mut c, TOPIC, 1), 0);
    // A plain record, then two open transactions interleaved.
    let plain = batch::build_batch(sluice_log::now_ms(), &[b"plain".as_slice()]);
    assert_eq!(produce(&mut c, Bytes::from(plain), None), 0);
    let (pa, pb, pc) = (
        begin(&mut c, "ta"),
        begin(&mut c, "tb"),
        begin(&mut c, "tc"),
    );
    assert!(pa < pb && pb < pc, "ids in order");
    assert_eq!(
        produce(&mut c, txn_batch(pa, 0, &["a1", "a2"]), Some("ta")),
        1
    );
    assert_eq!(produce(&mut c, txn_batch(pb, 0, &["b1"]), Some("tb")), 3);
    assert_eq!(produce(&mut c, txn_batch(pa, 2, &["a3"]), Some("ta")), 4);
    let (hw, lso, _, committed) = fetch(&mut c, 1);
    assert_eq!(
        (hw, lso),
        (5, 1),
        "the LSO stops at the first open transaction"
    );
    assert_eq!(committed, vec!["plain"], "read_committed sees nothing open");
    assert_eq!(latest(&mut c, 1), 1);
    assert_eq!(latest(&mut c, 0), 5);
    let (_, _, _, uncommitted) = fetch(&mut c, 0);
    assert_eq!(uncommitted, vec!["plain", "a1", "a2", "b1", "a3"]);
    // pa aborts (marker at 5); pb is still open: LSO 3.
    marker(&mut c, pa, false);
    let (hw, lso, aborted, committed) = fetch(&mut c, 1);
    assert_eq!((hw, lso), (6, 3));
    assert_eq!(
        aborted,
        vec![(pa, 1)],
        "the aborted transaction and its first offset"
    );
    assert_eq!(
        committed,
        vec!["plain", "a1", "a2"],
        "the raw batches up to the LSO"
    );
    // pb commits (marker at 6): everything is stable.
    marker(&mut c, pb, true);
    let (hw, lso, aborted, _) = fetch(&mut c, 1);
    assert_eq!((hw, lso), (7, 7));
    assert_eq!(aborted, vec![(pa, 1)]);
    assert_eq!(latest(&mut c, 1), 7);
    // Real clients drop the aborted records themselves.
    let addr = server.addr.to_string();
    assert_eq!(consume_all(&addr, "read_committed", 2), vec!["plain", "b1"]);
    assert_eq!(
        consume_all(&addr, "read_uncommitted", 5),
        vec!["plain", "a1", "a2", "b1", "a3"]
    );
    // An open transaction and the aborted index survive a SIGKILL.
    assert_eq!(produce(&mut c, txn_batch(pc, 0, &["c1"]), Some("tc")), 7);
    let dir = server.data_dir.clone();
    let _keep = server.take_dir();
    server.kill();
    let server = Server::start_in(&dir, &[]);
    let mut c = Client::connect(server.addr);
    let (hw, lso, aborted, _) = fetch(&mut c, 1);
    assert_eq!(
        (hw, lso),
        (8, 7),
        "the open transaction holds the LSO after recovery"
    );
    assert_eq!(aborted, vec![(pa, 1)], "the txnindex survives");
    // DescribeProducers names what holds the LSO back.
    assert_eq!(
        producers(&mut c),
        vec![(pa, 0, 2, -1), (pb, 0, 0, -1), (pc, 0, 0, 7)]
    );
    marker(&mut c, pc, true);
    assert_eq!(fetch(&mut c, 1).1, 9);
    assert_eq!(producers(&mut c)[2], (pc, 0, 0, -1));
}
