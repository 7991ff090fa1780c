//! Security metadata is the cluster's, not a broker's (issue 17): three
//! brokers with `--authorizer acl`, clients on SASL_PLAINTEXT. Only broker
//! 1's data directory has users before the cluster exists (`sluice user add
//! --data-dir`); it imports them into etcd, and every broker lets them in.
//! A user added with `sluice user add -b` through broker 2, ACLs created
//! through broker 3 and a quota set through broker 1 hold on every broker;
//! ACLs created through two brokers at once are all kept; a user deleted
//! through one broker is refused by all, and stays deleted when the broker
//! whose file still has it restarts.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, CreateAclsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use support::Client;
use support::cluster::{Cluster, wait_for};
use support::pki::add_user;

const ADMIN_PASSWORD: &str = "admin secret";
const ALICE_PASSWORD: &str = "alice secret";
const TOPIC_DENIED: i16 = 29;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A PLAIN login on a SASL_PLAINTEXT listener: the connection, or the
/// broker's error code.
fn try_login(addr: SocketAddr, user: &str, password: &str) -> Result<Client, i16> {
    let mut c = Client::connect(addr);
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = s("PLAIN");
    assert_eq!(c.call(1, &hs).error_code, 0);
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = Bytes::from(format!("\0{user}\0{password}"));
    let r = c.call(2, &auth);
    if r.error_code == 0 {
        Ok(c)
    } else {
        Err(r.error_code)
    }
}

fn login(addr: SocketAddr, user: &str, password: &str) -> Client {
    try_login(addr, user, password).unwrap_or_else(|code| panic!("{user} at {addr}: {code}"))
}

fn acl(name: &str, principal: &str, operation: i8) -> AclCreation {
    let mut a = AclCreation::default();
    a.resource_type = 2; // Topic
    a.resource_pattern_type = 3; // LITERAL
    a.resource_name = s(name);
    a.principal = s(principal);
    a.host = s("*");
    a.operation = operation;
    a.permission_type = 3; // ALLOW
    a
}

fn create_acls(c: &mut Client, acls: Vec<AclCreation>) {
    let mut req = CreateAclsRequest::default();
    req.creations = acls;
    for r in c.call(3, &req).results {
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    }
}

/// The topics' names in every ACL a broker holds.
fn acl_names(c: &mut Client) -> Vec<String> {
    let mut req = DescribeAclsRequest::default();
    req.resource_type_filter = 1; // ANY
    req.resource_name_filter = None;
    req.pattern_type_filter = 1; // ANY
    req.principal_filter = None;
    req.host_filter = None;
    req.operation = 1;
    req.permission_type = 1;
    let r = c.call(3, &req);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let mut names: Vec<String> = r
        .resources
        .iter()
        .map(|res| res.resource_name.to_string())
        .collect();
    names.sort();
    names
}

/// The error of topic `topic` in a Metadata answer to `c`.
fn topic_error(c: &mut Client, topic: &str) -> i16 {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(support::name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = false;
    let r = c.call(9, &req);
    r.topics.first().map_or(-1, |t| t.error_code)
}

/// alice's producer byte rate as a broker describes it.
fn alice_produce_quota(c: &mut Client) -> Option<f64> {
    let mut component = ComponentData::default();
    component.entity_type = s("user");
    component.match_type = 0; // exact
    component._match = Some(s("alice"));
    let mut req = DescribeClientQuotasRequest::default();
    req.components = vec![component];
    let r = c.call(1, &req);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.entries?
        .iter()
        .flat_map(|e| e.values.iter())
        .find(|v| v.key.as_str() == "producer_byte_rate")
        .map(|v| v.value)
}

/// `sluice user add|delete NAME -b ADDR` as admin over SASL_PLAINTEXT.
fn user_cli(addr: SocketAddr, config: &std::path::Path, action: &str, user: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["user", action, user, "-b", &addr.to_string()])
        .arg("--command-config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args(["--mechanism", "SCRAM-SHA-256"]);
    if action == "add" {
        cmd.arg("--password-stdin");
    }
    let mut child = cmd.spawn().expect("sluice user");
    let mut stdin = child.stdin.take().expect("stdin");
    if action == "add" {
        writeln!(stdin, "{ALICE_PASSWORD}").expect("password");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("sluice user");
    assert!(
        out.status.success(),
        "sluice user {action} {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn credentials_acls_and_quotas_are_the_clusters_not_a_brokers() {
    let configs = tempfile::tempdir().expect("tempdir");
    let admin_config = configs.path().join("admin.properties");
    std::fs::write(
        &admin_config,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.username=admin\nsasl.password={ADMIN_PASSWORD}\n"
        ),
    )
    .expect("write admin config");
    let inter_broker = admin_config.display().to_string();
    let extra = [
        "--authorizer",
        "acl",
        "--super-user",
        "User:admin",
        // The harness manages topics over PLAINTEXT, anonymously.
        "--super-user",
        "User:ANONYMOUS",
        "--inter-broker-client-config",
        inter_broker.as_str(),
    ];
    // Only broker 1 (the first to start) has users: admin, and `legacy`,
    // deleted later.
    let mut prepared = 0;
    let mut cluster = Cluster::with_inter_broker(3, &extra, Some("SASL_PLAINTEXT"), |dir| {
        prepared += 1;
        if prepared == 1 {
            add_user(dir, "admin", "SCRAM-SHA-512", ADMIN_PASSWORD);
            add_user(dir, "legacy", "SCRAM-SHA-256", ALICE_PASSWORD);
        }
    });
    let sasl = |cluster: &Cluster, node: i32| cluster.inter_broker_addr(node);
    // The brokers replicate as admin, so each of them let admin in.
    for node in cluster.nodes() {
        login(sasl(&cluster, node), "admin", ADMIN_PASSWORD);
        login(sasl(&cluster, node), "legacy", ALICE_PASSWORD);
        assert!(
            try_login(sasl(&cluster, node), "alice", ALICE_PASSWORD).is_err(),
            "broker {node} let an unknown user in"
        );
    }

    // A user added through broker 2: at once there, soon everywhere.
    user_cli(sasl(&cluster, 2), &admin_config, "add", "alice");
    login(sasl(&cluster, 2), "alice", ALICE_PASSWORD);
    for node in [1, 3] {
        let known = wait_for(Duration::from_secs(10), || {
            try_login(sasl(&cluster, node), "alice", ALICE_PASSWORD).is_ok()
        });
        assert!(known, "broker {node} does not know alice");
    }

    // ACLs created through broker 3 decide on broker 1 too.
    cluster.create_topic("shared", 1, 3, &[]);
    let mut alice_1 = login(sasl(&cluster, 1), "alice", ALICE_PASSWORD);
    assert_eq!(topic_error(&mut alice_1, "shared"), TOPIC_DENIED);
    let mut admin_3 = login(sasl(&cluster, 3), "admin", ADMIN_PASSWORD);
    create_acls(&mut admin_3, vec![acl("shared", "User:alice", 8)]); // Describe
    let visible = wait_for(Duration::from_secs(10), || {
        topic_error(&mut alice_1, "shared") == 0
    });
    assert!(visible, "broker 1 did not apply an ACL created on broker 3");

    // Three brokers creating ACLs and users at the same moment lose none:
    // a change written through one broker while another's arrives by its
    // watch must not undo the other's.
    const EACH: usize = 15;
    let writers: Vec<_> = cluster
        .nodes()
        .into_iter()
        .map(|node| {
            let addr = sasl(&cluster, node);
            std::thread::spawn(move || {
                let mut admin = login(addr, "admin", ADMIN_PASSWORD);
                for i in 0..EACH {
                    create_acls(
                        &mut admin,
                        vec![acl(&format!("t{node}-{i:02}"), "User:bob", 3)],
                    );
                }
            })
        })
        .collect();
    let user_writers: Vec<_> = cluster
        .nodes()
        .into_iter()
        .map(|node| {
            let addr = sasl(&cluster, node);
            let config = admin_config.clone();
            std::thread::spawn(move || {
                for i in 0..4 {
                    user_cli(addr, &config, "add", &format!("u{node}-{i}"));
                }
            })
        })
        .collect();
    for w in writers.into_iter().chain(user_writers) {
        w.join().expect("ACL or user writer");
    }
    let mut want: Vec<String> = cluster
        .nodes()
        .into_iter()
        .flat_map(|n| (0..EACH).map(move |i| format!("t{n}-{i:02}")))
        .chain(["shared".to_string()])
        .collect();
    want.sort();
    for node in cluster.nodes() {
        let mut admin = login(sasl(&cluster, node), "admin", ADMIN_PASSWORD);
        let all = wait_for(Duration::from_secs(10), || acl_names(&mut admin) == want);
        assert!(
            all,
            "broker {node} holds the ACLs on {:?}",
            acl_names(&mut admin)
        );
        for writer in cluster.nodes() {
            for i in 0..4 {
                let user = format!("u{writer}-{i}");
                let known = wait_for(Duration::from_secs(10), || {
                    try_login(sasl(&cluster, node), &user, ALICE_PASSWORD).is_ok()
                });
                assert!(known, "broker {node} does not let {user} in");
            }
        }
    }

    // A quota set through broker 1 is described by broker 3.
    let mut admin_1 = login(sasl(&cluster, 1), "admin", ADMIN_PASSWORD);
    let mut entity = EntityData::default();
    entity.entity_type = s("user");
    entity.entity_name = Some(s("alice"));
    let mut op = OpData::default();
    op.key = s("producer_byte_rate");
    op.value = 1_048_576.0;
    let mut entry = EntryData::default();
    entry.entity = vec![entity];
    entry.ops = vec![op];
    let mut req = AlterClientQuotasRequest::default();
    req.entries = vec![entry];
    let r = admin_1.call(1, &req);
    assert_eq!(
        r.entries[0].error_code, 0,
        "{:?}",
        r.entries[0].error_message
    );
    assert_eq!(alice_produce_quota(&mut admin_1), Some(1_048_576.0));
    let described = wait_for(Duration::from_secs(10), || {
        alice_produce_quota(&mut admin_3) == Some(1_048_576.0)
    });
    assert!(
        described,
        "broker 3 does not describe a quota set on broker 1"
    );

    // Users deleted through one broker are refused by all.
    user_cli(sasl(&cluster, 1), &admin_config, "delete", "alice");
    user_cli(sasl(&cluster, 3), &admin_config, "delete", "legacy");
    for node in cluster.nodes() {
        let refused = wait_for(Duration::from_secs(10), || {
            try_login(sasl(&cluster, node), "alice", ALICE_PASSWORD).is_err()
                && try_login(sasl(&cluster, node), "legacy", ALICE_PASSWORD).is_err()
        });
        assert!(refused, "broker {node} still lets a deleted user in");
    }
    // Broker 1's file still names `legacy` (a cluster broker leaves its
    // files alone), yet a restart does not bring it back.
    let file = std::fs::read_to_string(cluster.data_dir(1).join("scram-credentials"))
        .expect("broker 1's credentials file");
    assert!(file.contains("\tlegacy\t"), "{file}");
    assert!(
        !file.contains("alice"),
        "a cluster broker wrote its file: {file}"
    );
    // Nor does `sluice user add --data-dir` change what the broker no
    // longer reads: it refuses, and points at -b.
    let mut refused = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["user", "add", "mallory", "--password-stdin", "--data-dir"])
        .arg(cluster.data_dir(1))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice user add");
    writeln!(refused.stdin.take().expect("stdin"), "{ALICE_PASSWORD}").expect("password");
    let refused = refused.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("-b HOST:PORT"),
        "user add --data-dir on a cluster broker: {stderr}"
    );
    let file = std::fs::read_to_string(cluster.data_dir(1).join("scram-credentials"))
        .expect("broker 1's credentials file");
    assert!(!file.contains("mallory"), "{file}");
    assert!(cluster.stop(1), "broker 1 did not stop cleanly");
    cluster.start(1);
    assert_eq!(
        try_login(sasl(&cluster, 1), "legacy", ALICE_PASSWORD).err(),
        Some(58),
        "a restarted broker brought back a deleted user"
    );
    login(sasl(&cluster, 1), "admin", ADMIN_PASSWORD);
    let mut admin_1 = login(sasl(&cluster, 1), "admin", ADMIN_PASSWORD);
    assert_eq!(acl_names(&mut admin_1), want);
}
