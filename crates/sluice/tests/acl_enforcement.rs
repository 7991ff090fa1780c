//! ACLs enforced on the wire (issue 17): a real `sluice serve --authorizer
//! acl --super-user User:admin` with a SASL_PLAINTEXT listener and SCRAM
//! users alice, bob and admin. A principal allowed to Read one topic
//! consumes it with confluent-kafka (and sees nothing else, with kcat too);
//! a refused write changes nothing; prefixed ACLs, DENY over ALLOW, group
//! and transactional-id ACLs; ACLs added at run time apply to connections
//! already open; the super user may do anything; anonymous PLAINTEXT
//! connections get nothing. Then `--allow-everyone-if-no-acl-found`, and a
//! two-broker cluster whose brokers replicate and write transaction markers
//! only when their principal (User:ANONYMOUS on the inter-broker
//! listener) is a super user.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateTopicsRequest, DescribeAclsRequest, DescribeLogDirsRequest,
    FetchRequest, InitProducerIdRequest, JoinGroupRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use support::pki::add_user;
use support::{Client, Server, fetch_req, name, produce_req, python};

const PASSWORD: &str = "correct horse battery staple";
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const TXN_DENIED: i16 = 53;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A raw connection to a SASL_PLAINTEXT listener, authenticated as `user`
/// with PLAIN.
fn login(addr: SocketAddr, user: &str) -> Client {
    let mut c = Client::connect(addr);
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = s("PLAIN");
    assert_eq!(c.call(1, &hs).error_code, 0);
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = Bytes::from(format!("\0{user}\0{PASSWORD}"));
    let r = c.call(2, &auth);
    assert_eq!(r.error_code, 0, "{user}: {:?}", r.error_message);
    c
}

/// An ACL for CreateAcls: (resource type, pattern type) codes, name,
/// principal, operation and permission codes.
fn acl(rt: i8, pt: i8, name: &str, principal: &str, op: i8, perm: i8) -> AclCreation {
    let mut a = AclCreation::default();
    a.resource_type = rt;
    a.resource_pattern_type = pt;
    a.resource_name = s(name);
    a.principal = s(principal);
    a.host = s("*");
    a.operation = op;
    a.permission_type = perm;
    a
}

// Kafka's codes.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const TXN_ID: i8 = 5;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn create_acls(admin: &mut Client, acls: Vec<AclCreation>) {
    let mut req = CreateAclsRequest::default();
    req.creations = acls;
    for r in admin.call(3, &req).results {
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    }
}

fn create_topic(c: &mut Client, topic: &str, partitions: i32) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = -1;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 10_000;
    c.call(7, &r).topics[0].error_code
}

fn batch(value: &str) -> Bytes {
    sluice_client::encode_batch(
        &[sluice_client::plain_record(
            0,
            sluice_log::now_ms(),
            None,
            Bytes::copy_from_slice(value.as_bytes()),
        )],
        kafka_protocol::records::Compression::None,
    )
    .expect("batch")
}

fn produce(c: &mut Client, topic: &str, value: &str) -> i16 {
    produce_to(c, produce_req(topic, 0, batch(value), -1))
}

fn produce_to(c: &mut Client, req: ProduceRequest) -> i16 {
    c.call(9, &req).responses[0].partition_responses[0].error_code
}

/// The log end offset of partition 0, as the super user reads it.
fn log_end(admin: &mut Client, topic: &str) -> i64 {
    let mut p = ListOffsetsPartition::default();
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions.push(p);
    let mut req = ListOffsetsRequest::default();
    req.replica_id = (-1).into();
    req.topics.push(t);
    let resp = admin.call(7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// (name, error) of each topic a Metadata answer lists, sorted.
fn topics(c: &mut Client, named: Option<&[&str]>) -> Vec<(String, i16)> {
    let mut req = MetadataRequest::default();
    req.topics = named.map(|ns| {
        ns.iter()
            .map(|n| {
                let mut t =
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                t.name = Some(name(n));
                t
            })
            .collect()
    });
    req.allow_auto_topic_creation = true;
    let mut out: Vec<(String, i16)> = c
        .call(12, &req)
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect();
    out.sort();
    out
}

fn fetch_error(c: &mut Client, topic: &str) -> i16 {
    let req: FetchRequest = fetch_req(topic, 0, 0, 100, 1);
    c.call(12, &req).responses[0].partitions[0].error_code
}

fn sasl_settings(user: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_PLAINTEXT".into(),
        "sasl.mechanism=SCRAM-SHA-256".into(),
        format!("sasl.username={user}"),
        format!("sasl.password={PASSWORD}"),
    ]
}

/// Runs a confluent-kafka snippet with `CONF` (bootstrap and SASL
/// settings for `user`) defined; returns its stdout.
fn confluent(broker: SocketAddr, user: &str, code: &str) -> String {
    let conf: Vec<String> = sasl_settings(user)
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            format!("{k:?}: {v:?}")
        })
        .collect();
    let script = format!(
        "import time\nfrom confluent_kafka import Consumer, Producer, KafkaError, KafkaException\n\
         CONF = {{'bootstrap.servers': '{broker}', {}}}\n{code}",
        conf.join(", ")
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python (the interop venv: run scripts/test.sh)");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `kcat -L` (the topics in the cluster's metadata) as `user`.
fn kcat_topics(broker: SocketAddr, user: &str) -> Vec<String> {
    let mut cmd = Command::new("kcat");
    // cargo points test processes' LD_LIBRARY_PATH at the rdkafka crate's
    // own librdkafka; kcat must load Debian's (security.rs does the same).
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.arg("-b").arg(broker.to_string()).arg("-L");
    for kv in sasl_settings(user) {
        cmd.arg("-X").arg(kv);
    }
    let out = cmd
        .output()
        .expect("kcat is not installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("topic \""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

#[test]
fn acls_decide_what_each_principal_may_do() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    for user in ["alice", "bob", "admin"] {
        add_user(&data, user, "SCRAM-SHA-256", PASSWORD);
    }
    let server = Server::start_in(
        &data,
        &[
            "--listener",
            "SASL_PLAINTEXT://127.0.0.1:0",
            "--authorizer",
            "acl",
            "--super-user",
            "User:admin",
        ],
    );
    let sasl = server.listener("SASL_PLAINTEXT");
    let mut admin = login(sasl, "admin");
    let mut alice = login(sasl, "alice");
    let mut bob = login(sasl, "bob");

    // The super user may do anything, with no ACL at all.
    for (t, n) in [("orders", 2), ("secret", 1), ("pay-in", 1), ("pay-out", 1)] {
        assert_eq!(create_topic(&mut admin, t, n), 0, "{t}");
    }
    for i in 0..20 {
        let mut req = produce_req("orders", i % 2, batch(&format!("order-{i}")), -1);
        req.timeout_ms = 5000;
        assert_eq!(produce_to(&mut admin, req), 0);
    }
    assert_eq!(produce(&mut admin, "secret", "classified"), 0);
    assert_eq!(
        admin.call(4, &DescribeLogDirsRequest::default()).error_code,
        0
    );
    assert_eq!(fetch_error(&mut admin, "secret"), 0);

    // Nobody else may do anything yet: not alice, not anonymous PLAINTEXT.
    let mut anonymous = Client::connect(server.addr);
    assert_eq!(topics(&mut anonymous, None), []);
    assert_eq!(produce(&mut anonymous, "orders", "x"), TOPIC_DENIED);
    assert_eq!(topics(&mut alice, None), []);
    assert_eq!(
        anonymous
            .call(4, &DescribeLogDirsRequest::default())
            .error_code,
        31
    );

    // Read on one topic and her consumer group. The connection opened
    // before sees them at once.
    create_acls(
        &mut admin,
        vec![
            acl(TOPIC, LITERAL, "orders", "User:alice", READ, ALLOW),
            acl(GROUP, LITERAL, "g-alice", "User:alice", READ, ALLOW),
        ],
    );
    assert_eq!(topics(&mut alice, None), [("orders".to_string(), 0)]);
    assert_eq!(
        topics(&mut alice, Some(&["secret", "ghost"])),
        [
            ("ghost".to_string(), TOPIC_DENIED),
            ("secret".to_string(), TOPIC_DENIED)
        ],
        "refused whether it exists or not"
    );
    assert_eq!(fetch_error(&mut alice, "orders"), 0);
    assert_eq!(fetch_error(&mut alice, "secret"), TOPIC_DENIED);

    // A real consumer: her topic, all 20 records, through her group (its
    // offsets committed); only her topic in the metadata; the other topic
    // refused.
    let out = confluent(
        sasl,
        "alice",
        r#"
c = Consumer({**CONF, 'group.id': 'g-alice', 'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
print('topics', ','.join(sorted(t for t in c.list_topics(timeout=10).topics)))
c.subscribe(['orders'])
got, deadline = 0, time.time() + 20
while got < 20 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        raise SystemExit(f'consumer error: {m.error()}')
    got += 1
c.commit(asynchronous=False)
c.close()
print('got', got)
c = Consumer({**CONF, 'group.id': 'g-alice', 'auto.offset.reset': 'earliest'})
c.subscribe(['secret'])
err, deadline = None, time.time() + 15
while err is None and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and m.error():
        err = m.error()
c.close()
print('secret', err.name() if err else 'no error')
"#,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "topics orders",
            "got 20",
            "secret TOPIC_AUTHORIZATION_FAILED"
        ],
        "{out}"
    );
    assert_eq!(kcat_topics(sasl, "alice"), ["orders"]);
    let everything = kcat_topics(sasl, "admin");
    assert!(
        ["orders", "pay-in", "pay-out", "secret"]
            .iter()
            .all(|t| everything.iter().any(|e| e == t)),
        "the super user sees every topic: {everything:?}"
    );

    // A group without Read: refused at FindCoordinator and JoinGroup.
    let mut fc = FindCoordinatorRequest::default();
    fc.key = s("g-other");
    assert_eq!(alice.call(3, &fc).error_code, GROUP_DENIED);
    let mut join = JoinGroupRequest::default();
    join.group_id = kafka_protocol::messages::GroupId(s("g-other"));
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    join.protocols.push(p);
    assert_eq!(alice.call(7, &join).error_code, GROUP_DENIED);

    // A refused write changes nothing: no record appended, no topic made.
    let before = (log_end(&mut admin, "secret"), log_end(&mut admin, "orders"));
    assert_eq!(produce(&mut alice, "secret", "leak"), TOPIC_DENIED);
    assert_eq!(
        produce(&mut alice, "orders", "Read is not Write"),
        TOPIC_DENIED
    );
    assert_eq!(produce(&mut alice, "brand-new", "x"), TOPIC_DENIED);
    assert_eq!(create_topic(&mut alice, "made-by-alice", 1), TOPIC_DENIED);
    assert_eq!(
        (log_end(&mut admin, "secret"), log_end(&mut admin, "orders")),
        before
    );
    let all = topics(&mut admin, None);
    assert!(
        !all.iter()
            .any(|(t, _)| t == "brand-new" || t == "made-by-alice"),
        "{all:?}"
    );

    // Prefixed: Write on every pay-* topic, at once on the open
    // connection; a DENY beats it for pay-out.
    create_acls(
        &mut admin,
        vec![acl(TOPIC, PREFIXED, "pay-", "User:alice", WRITE, ALLOW)],
    );
    assert_eq!(produce(&mut alice, "pay-in", "1"), 0);
    assert_eq!(produce(&mut alice, "pay-out", "1"), 0);
    create_acls(
        &mut admin,
        vec![acl(TOPIC, LITERAL, "pay-out", "User:alice", WRITE, DENY)],
    );
    let out_end = log_end(&mut admin, "pay-out");
    assert_eq!(produce(&mut alice, "pay-out", "2"), TOPIC_DENIED);
    assert_eq!(log_end(&mut admin, "pay-out"), out_end);
    assert_eq!(produce(&mut alice, "pay-in", "2"), 0);
    assert_eq!(
        produce(&mut bob, "pay-in", "bob"),
        TOPIC_DENIED,
        "alice's ACL only"
    );

    // A transactional producer needs Write on its transactional id.
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(TransactionalId(s("tx-bob")));
    init.transaction_timeout_ms = 30_000;
    init.producer_id = (-1).into();
    init.producer_epoch = -1;
    assert_eq!(bob.call(4, &init).error_code, TXN_DENIED);
    create_acls(
        &mut admin,
        vec![
            acl(TXN_ID, LITERAL, "tx-bob", "User:bob", WRITE, ALLOW),
            acl(TOPIC, LITERAL, "pay-in", "User:bob", WRITE, ALLOW),
        ],
    );
    let out = confluent(
        sasl,
        "bob",
        r#"
p = Producer({**CONF, 'transactional.id': 'tx-bob'})
p.init_transactions(15)
p.begin_transaction()
for i in range(5):
    p.produce('pay-in', value=b'txn-%d' % i)
p.commit_transaction(15)
print('committed')
p = Producer({**CONF, 'transactional.id': 'tx-not-bobs'})
try:
    p.init_transactions(15)
    print('init allowed')
except KafkaException as e:
    print(e.args[0].name())
"#,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["committed", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"],
        "{out}"
    );
    // 2 of alice's, 5 of bob's and the commit marker.
    assert_eq!(log_end(&mut admin, "pay-in"), 8);

    // All on a topic prefix for anonymous connections too: ACLs are per
    // principal, whatever the listener.
    create_acls(
        &mut admin,
        vec![acl(TOPIC, PREFIXED, "pay-", "User:ANONYMOUS", ALL, ALLOW)],
    );
    assert_eq!(produce(&mut anonymous, "pay-out", "anon"), 0);
    assert_eq!(
        topics(&mut anonymous, None),
        [("pay-in".to_string(), 0), ("pay-out".to_string(), 0)]
    );
    // Create on the cluster lets a Metadata auto-create.
    create_acls(
        &mut admin,
        vec![acl(
            CLUSTER,
            LITERAL,
            "kafka-cluster",
            "User:ANONYMOUS",
            CREATE,
            ALLOW,
        )],
    );
    assert_eq!(
        topics(&mut anonymous, Some(&["pay-new"])),
        [("pay-new".to_string(), 0)]
    );
}

#[test]
fn allow_everyone_if_no_acl_found_opens_only_resources_no_acl_names() {
    let server = Server::start(&["--authorizer", "acl", "--allow-everyone-if-no-acl-found"]);
    let mut c = Client::connect(server.addr);
    // No ACL anywhere: anonymous may create, write and administer.
    assert_eq!(create_topic(&mut c, "open", 1), 0);
    assert_eq!(create_topic(&mut c, "guarded", 1), 0);
    assert_eq!(produce(&mut c, "guarded", "before"), 0);
    // An ACL naming "guarded" (for bob) closes it to everyone else.
    create_acls(
        &mut c,
        vec![acl(TOPIC, LITERAL, "guarded", "User:bob", WRITE, ALLOW)],
    );
    assert_eq!(produce(&mut c, "open", "still"), 0);
    assert_eq!(produce(&mut c, "guarded", "after"), TOPIC_DENIED);
    assert_eq!(topics(&mut c, None), [("open".to_string(), 0)]);
    // The cluster has no ACL either: anonymous may still add ACLs. One on
    // the cluster closes that too.
    create_acls(
        &mut c,
        vec![acl(
            CLUSTER,
            LITERAL,
            "kafka-cluster",
            "User:bob",
            ALL,
            ALLOW,
        )],
    );
    let mut req = CreateAclsRequest::default();
    req.creations = vec![acl(TOPIC, LITERAL, "open", "User:bob", READ, ALLOW)];
    assert_eq!(c.call(3, &req).results[0].error_code, 31);
}

/// Brokers connect to each other unauthenticated on the inter-broker
/// listener: they are User:ANONYMOUS there. Follower fetches,
/// WriteTxnMarkers and the KIP-890 AddPartitionsToTxn need ClusterAction,
/// so a cluster with an authorizer replicates, and ends transactions on
/// partitions led elsewhere, only while that principal may do that: as a
/// super user (docs/design-notes.md), whatever the cluster's ACLs say.
#[test]
fn a_cluster_replicates_only_while_the_inter_broker_principal_may_cluster_action() {
    use support::cluster::{Cluster, read_replica, wait_for};
    let ends = |cluster: &Cluster, topic: &str| -> Vec<i64> {
        cluster
            .nodes()
            .iter()
            .map(|&n| read_replica(&cluster.data_dir(n), topic, 0).end_offset())
            .collect()
    };
    // An ACL on the cluster resource (for someone else): from then on no
    // one is let in on it for want of ACLs (allow.everyone.if.no.acl.found).
    let close_cluster = |cluster: &Cluster| {
        // The ACLs are the cluster's (etcd): created through broker 1, they
        // reach every broker.
        let mut c = Client::connect(cluster.addr(1));
        create_acls(
            &mut c,
            vec![acl(
                CLUSTER,
                LITERAL,
                "kafka-cluster",
                "User:ops",
                ALL,
                ALLOW,
            )],
        );
        // A broker has it once it describes it (to a super user) or
        // refuses an anonymous Describe on the cluster (to anyone else).
        let everywhere = wait_for(Duration::from_secs(10), || {
            cluster.nodes().iter().all(|&n| {
                let mut req = DescribeAclsRequest::default();
                req.resource_type_filter = CLUSTER;
                req.resource_name_filter = None;
                req.pattern_type_filter = LITERAL;
                req.principal_filter = None;
                req.host_filter = None;
                req.operation = 1; // ANY
                req.permission_type = 1; // ANY
                let r = Client::connect(cluster.addr(n)).call(3, &req);
                r.error_code == 31 || r.resources.len() == 1
            })
        });
        assert!(everywhere, "the cluster ACL did not reach every broker");
    };

    // Without the super user: replicated while nothing names the cluster,
    // then not at all.
    let cluster = Cluster::new(
        2,
        &["--authorizer", "acl", "--allow-everyone-if-no-acl-found"],
    );
    let topic = "replicated";
    assert_eq!(
        create_topic(&mut Client::connect(cluster.addr(1)), topic, 1),
        0
    );
    cluster.wait_agreed(topic, 0, Duration::from_secs(20));
    // To the partition's leader, wherever it is now (it may take a moment
    // to lead, or the controller may move it to its preferred replica).
    let produce_acked = |value: &str, acks: i16| {
        let done = wait_for(Duration::from_secs(10), || {
            let Some(leader) = cluster.metadata_leader(topic, 0) else {
                return false;
            };
            let mut req = produce_req(topic, 0, batch(value), acks);
            req.timeout_ms = 2000;
            produce_to(&mut Client::connect(cluster.addr(leader)), req) == 0
        });
        assert!(done, "{value} not acknowledged");
    };
    for i in 0..3 {
        produce_acked(&format!("r{i}"), -1);
    }
    assert!(
        wait_for(Duration::from_secs(10), || ends(&cluster, topic) == [3, 3]),
        "{:?}",
        ends(&cluster, topic)
    );
    close_cluster(&cluster);
    for i in 3..6 {
        // Write on the topic is still open to anyone.
        produce_acked(&format!("r{i}"), 1);
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut got = ends(&cluster, topic);
    got.sort_unstable();
    // A fetch authorized before the ACL came, parked at the log end, may
    // still have carried the first record; none after it was refused.
    assert!(
        got[1] == 6 && got[0] <= 4,
        "the follower, refused ClusterAction, should have stopped: {got:?}"
    );
    drop(cluster);

    // The inter-broker principal a super user: the same closed cluster
    // replicates, and a transaction over partitions led by both brokers
    // commits (markers written by WriteTxnMarkers to the other one).
    let cluster = Cluster::new(
        2,
        &[
            "--authorizer",
            "acl",
            "--allow-everyone-if-no-acl-found",
            "--super-user",
            "User:ANONYMOUS",
            // Two brokers: the internal topics' replicas on both.
            "--transaction-state-log-replication-factor",
            "2",
            "--transaction-state-log-num-partitions",
            "4",
            "--offsets-topic-replication-factor",
            "2",
            "--offsets-topic-num-partitions",
            "4",
        ],
    );
    close_cluster(&cluster);
    let mut c = Client::connect(cluster.addr(1));
    assert_eq!(create_topic(&mut c, topic, 2), 0);
    for p in 0..2 {
        cluster.wait_agreed(topic, p, Duration::from_secs(20));
    }
    let out = support::py(
        cluster.addr(1),
        r#"
import time
from confluent_kafka import Consumer, Producer
p = Producer({'bootstrap.servers': BROKER, 'transactional.id': 'tx', 'acks': 'all'})
p.init_transactions(20)
p.begin_transaction()
for i in range(10):
    p.produce('replicated', value=b'v%d' % i, partition=i % 2)
p.commit_transaction(20)
c = Consumer({'bootstrap.servers': BROKER, 'group.id': 'g', 'auto.offset.reset': 'earliest',
              'isolation.level': 'read_committed'})
c.subscribe(['replicated'])
got, deadline = 0, time.time() + 20
while got < 10 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got += 1
c.close()
print(got)
"#,
    );
    assert_eq!(out, "10");
    // Every replica of both partitions: 5 records and the commit marker.
    let replicated = wait_for(Duration::from_secs(10), || {
        (0..2).all(|p| {
            cluster
                .nodes()
                .iter()
                .all(|&n| read_replica(&cluster.data_dir(n), topic, p).end_offset() == 6)
        })
    });
    assert!(replicated, "the replicas did not all get the transaction");
}
