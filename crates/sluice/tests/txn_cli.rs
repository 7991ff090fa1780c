//! `sluice txn list | describe | producers` against a real broker, with a
//! transaction driven by `sluice_client::TxnProducer` (FindCoordinator,
//! InitProducerId, AddPartitionsToTxn, transactional produce, EndTxn), and
//! what a read_committed fetch then shows of a committed and an aborted
//! transaction; and in a three-broker cluster, `txn list` from one broker
//! finds the transactions every broker coordinates.

mod support;

use std::process::Command;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice_client::txn::{READ_COMMITTED, READ_UNCOMMITTED, ReadCommitted};
use sluice_client::{Client, TxnProducer, batches, encode_batch, plain_record};
use support::Server;
use support::cluster::Cluster;

/// Runs `sluice args…`; (success, stdout, stderr).
fn sluice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = sluice(args);
    assert!(success, "sluice {args:?} failed: {stderr}\n{stdout}");
    stdout
}

fn template(records: i64) -> Bytes {
    let rs: Vec<_> = (0..records)
        .map(|i| plain_record(i, 1_700_000_000_000, None, Bytes::from(format!("v{i}"))))
        .collect();
    encode_batch(&rs, Compression::None).expect("encode")
}

/// Sends one transactional batch of `records` records to `tx-partition`.
fn produce(client: &mut Client, producer: &mut TxnProducer, partition: i32, records: i64) {
    let batch = producer.batch("tx", partition, &template(records));
    let req = producer.produce_request("tx", partition, batch);
    let corr = client.send(9, &req).expect("send produce");
    client.produce_result(corr).expect("transactional produce");
}

/// Records a consumer at `isolation` gets from `tx-partition`, from 0.
fn visible(client: &mut Client, partition: i32, isolation: i8) -> u64 {
    let f = client
        .fetch_isolated("tx", partition, 0, 0, 1 << 20, isolation)
        .expect("fetch");
    assert_eq!(f.error_code, 0);
    let mut filter = ReadCommitted::default();
    filter.add_aborted(&f.aborted);
    batches(&f.records)
        .filter(|b| {
            if isolation == READ_COMMITTED {
                filter.keep(&b.header)
            } else {
                !b.header.is_control()
            }
        })
        .map(|b| b.header.record_count as u64)
        .sum()
}

#[test]
fn txn_list_describe_and_producers_show_a_transaction_through_its_life() {
    let server = Server::start(&[]);
    let b = server.addr.to_string();
    let mut client = Client::connect(server.addr).expect("connect");
    client.create_topic("tx", 2, &[]).expect("create tx");

    let (success, _, stderr) = sluice(&["txn", "describe", "nobody", "-b", &b]);
    assert!(!success, "an unknown transactional id is an error");
    assert!(
        stderr.contains("TRANSACTIONAL_ID_NOT_FOUND"),
        "names Kafka's error: {stderr}"
    );
    assert!(ok(&["txn", "list", "-b", &b]).contains("no transactions"));

    let mut producer = TxnProducer::init(&b, "cli-txn", 45_000).expect("init");
    let pid = producer.identity().producer_id;
    let epoch = producer.identity().epoch;
    producer
        .add_partitions(&[("tx".to_string(), 0), ("tx".to_string(), 1)])
        .expect("add partitions");
    produce(&mut client, &mut producer, 0, 3);
    produce(&mut client, &mut producer, 1, 2);

    let listed = ok(&["txn", "list", "-b", &b]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("cli-txn "))
        .unwrap_or_else(|| panic!("cli-txn listed: {listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2], pid.to_string(), "{row}");
    assert_eq!(cols[3], "Ongoing", "{row}");
    let ongoing = ok(&["txn", "list", "-b", &b, "--state", "Ongoing"]);
    assert!(ongoing.contains("cli-txn"), "{ongoing}");
    let other = ok(&["txn", "list", "-b", &b, "--state", "CompleteCommit"]);
    assert!(other.contains("no transactions"), "{other}");
    let by_pid = ok(&["txn", "list", "-b", &b, "--producer-id", &pid.to_string()]);
    assert!(by_pid.contains("cli-txn"), "{by_pid}");

    let described = ok(&["txn", "describe", "cli-txn", "-b", &b]);
    for want in [
        "transactional id  cli-txn".to_string(),
        "state             Ongoing".to_string(),
        format!("producer id       {pid}"),
        format!("producer epoch    {epoch}"),
        "timeout ms        45000".to_string(),
        "partitions        tx-0 tx-1".to_string(),
    ] {
        assert!(described.contains(&want), "{want:?} in:\n{described}");
    }
    let start = described
        .lines()
        .find(|l| l.starts_with("start time"))
        .expect("start time");
    assert!(start.contains("Z (") && start.contains("s ago"), "{start}");

    let producers = ok(&["txn", "producers", "tx", "-b", &b, "--partition", "1"]);
    assert!(
        producers.contains(&format!("producer id {pid}"))
            && producers.contains("open transaction from offset 0"),
        "{producers}"
    );
    // Open: nothing for read_committed, everything for read_uncommitted.
    assert_eq!(visible(&mut client, 0, READ_COMMITTED), 0);
    assert_eq!(visible(&mut client, 0, READ_UNCOMMITTED), 3);

    producer.end(true).expect("commit");
    let described = ok(&["txn", "describe", "cli-txn", "-b", &b]);
    assert!(
        described.contains("state             CompleteCommit")
            && described.contains("partitions        -"),
        "{described}"
    );
    let complete = ok(&["txn", "list", "-b", &b, "--state", "CompleteCommit"]);
    assert!(complete.contains("cli-txn"), "{complete}");
    let producers = ok(&["txn", "producers", "tx", "-b", &b]);
    assert!(
        producers.contains("partition 0") && producers.contains("no open transaction"),
        "{producers}"
    );

    // A second transaction, aborted: read_committed drops it.
    producer
        .add_partitions(&[("tx".to_string(), 0)])
        .expect("add partition again");
    produce(&mut client, &mut producer, 0, 4);
    producer.end(false).expect("abort");
    assert_eq!(visible(&mut client, 0, READ_COMMITTED), 3);
    assert_eq!(visible(&mut client, 0, READ_UNCOMMITTED), 7);
    assert_eq!(visible(&mut client, 1, READ_COMMITTED), 2);
    let described = ok(&["txn", "describe", "cli-txn", "-b", &b]);
    assert!(
        described.contains("state             CompleteAbort"),
        "{described}"
    );
}

#[test]
fn txn_list_and_describe_cover_every_coordinator_of_a_cluster() {
    let cluster = Cluster::new(3, &[]);
    cluster.create_topic("ctx", 3, 3, &[]);
    let first = cluster.addr(1).to_string();
    let mut boot = Client::connect(first.as_str()).expect("connect");
    // Enough ids that their `__transaction_state` partitions are led by
    // more than one broker; each opens a transaction (AddPartitionsToTxn).
    let mut producers = Vec::new();
    let mut coordinators = std::collections::BTreeMap::new();
    for i in 0..9 {
        let id = format!("ctx-txn-{i}");
        let mut p = TxnProducer::init(&first, &id, 60_000).expect("init");
        p.add_partitions(&[("ctx".to_string(), i % 3)])
            .expect("add partition");
        let node = boot
            .find_coordinator(&id, sluice_client::txn::KEY_TYPE_TRANSACTION)
            .expect("find coordinator");
        coordinators.insert(id, node.id);
        producers.push(p);
    }
    let distinct: std::collections::BTreeSet<i32> = coordinators.values().copied().collect();
    assert!(distinct.len() > 1, "coordinators {coordinators:?}");

    let listed = ok(&["txn", "list", "-b", &first, "--state", "Ongoing"]);
    for (id, node) in &coordinators {
        let row = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed:\n{listed}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], node.to_string(), "{id}'s coordinator: {row}");
        assert_eq!(cols[3], "Ongoing", "{row}");
    }
    // Described through a broker that is not the coordinator.
    let (id, node) = coordinators.iter().next().expect("an id");
    let other = cluster
        .nodes()
        .into_iter()
        .find(|n| n != node)
        .expect("another broker");
    let described = ok(&[
        "txn",
        "describe",
        id,
        "-b",
        &cluster.addr(other).to_string(),
    ]);
    assert!(
        described.contains(&format!("coordinator       broker {node} at"))
            && described.contains("state             Ongoing")
            && described.contains("partitions        ctx-0"),
        "{described}"
    );
    for p in &mut producers {
        p.end(true).expect("commit");
    }
    let after = ok(&["txn", "list", "-b", &first, "--state", "Ongoing"]);
    assert!(after.contains("no transactions"), "{after}");
}
