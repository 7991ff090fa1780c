//! Three brokers whose inter-broker traffic is SASL_SSL (issue 17): the
//! followers fetch from leaders over TLS, authenticated with SCRAM-SHA-512
//! as the `broker` user, re-authenticating on their open connections as
//! sessions end (KIP-368, 2 s sessions); acknowledged records survive the
//! leader's SIGKILL; a broker given the wrong inter-broker password cannot
//! replicate.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::cluster::{Cluster, wait_for};
use support::pki::{Pki, add_user};

const PASSWORD: &str = "inter-broker secret";

fn client_config(pki: &Pki, dir: &std::path::Path, password: &str) -> String {
    let path = dir.join(format!("inter-broker-{}.properties", password.len()));
    std::fs::write(
        &path,
        format!(
            "# How brokers connect to each other\n\
             security.protocol=SASL_SSL\n\
             ssl.ca.location={}\n\
             sasl.mechanism=SCRAM-SHA-512\n\
             sasl.username=broker\n\
             sasl.password={password}\n",
            pki.path("ca.pem")
        ),
    )
    .expect("write client config");
    path.display().to_string()
}

#[test]
fn three_brokers_replicate_over_sasl_ssl_and_keep_every_acknowledged_record() {
    let pki = Pki::new();
    let configs = tempfile::tempdir().expect("tempdir");
    let good = client_config(&pki, configs.path(), PASSWORD);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let extra = [
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
        "--inter-broker-client-config",
        good.as_str(),
        "--connections-max-reauth-ms",
        "2000",
    ];
    let mut cluster = Cluster::with_inter_broker(3, &extra, Some("SASL_SSL"), |dir| {
        add_user(dir, "broker", "SCRAM-SHA-512", PASSWORD)
    });
    cluster.create_topic("secure", 1, 3, &[("min.insync.replicas", "2")]);

    let mut acked = BTreeSet::new();
    for i in 0..200 {
        let value = format!("v{i}");
        cluster.produce_acked(
            "secure",
            0,
            &format!("k{i}"),
            &value,
            Duration::from_secs(30),
        );
        acked.insert(value);
    }
    // Every follower got there over SASL_SSL: each broker authenticated
    // the others and completed TLS handshakes.
    for node in cluster.nodes() {
        let auth = cluster
            .metric(node, "sluice_authentications_total{result=\"success\"}")
            .expect("metrics")
            .unwrap_or(0.0);
        let tls = cluster
            .metric(node, "sluice_tls_handshakes_total")
            .expect("metrics")
            .unwrap_or(0.0);
        let leads = cluster
            .partition_from(node, "secure", 0)
            .is_ok_and(|s| s.leader == node);
        if leads {
            assert!(
                auth >= 2.0 && tls >= 2.0,
                "leader {node}: {auth} logins, {tls} handshakes"
            );
        }
    }

    // SIGKILL the leader under acks=all: nothing acknowledged is lost.
    let leader = cluster
        .partition_from(1, "secure", 0)
        .expect("state")
        .leader;
    cluster.kill(leader);
    for i in 200..300 {
        let value = format!("v{i}");
        cluster.produce_acked(
            "secure",
            0,
            &format!("k{i}"),
            &value,
            Duration::from_secs(60),
        );
        acked.insert(value);
    }
    cluster.start(leader);
    let (_, records) = cluster.fetch_all("secure", 0, Duration::from_secs(30));
    let stored: BTreeSet<String> = records
        .iter()
        .filter_map(|r| {
            r.value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).to_string())
        })
        .collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged records lost: {missing:?}");
    // The restarted broker catches up over SASL_SSL and rejoins the ISR.
    cluster.wait_isr("secure", 0, &[1, 2, 3], Duration::from_secs(60));

    // Meanwhile the followers' connections outlived their 2 s sessions by
    // re-authenticating: the current leader counted renewals, and no broker
    // closed a connection for an expired session.
    let leader = cluster
        .partition_from(1, "secure", 0)
        .expect("state")
        .leader;
    let renewed = wait_for(Duration::from_secs(10), || {
        cluster
            .metric(
                leader,
                "sluice_authentications_total{result=\"reauthenticated\"}",
            )
            .is_ok_and(|v| v.unwrap_or(0.0) >= 1.0)
    });
    assert!(
        renewed,
        "leader {leader}: no inter-broker re-authentication"
    );
    for node in cluster.nodes() {
        let expired = cluster
            .metric(node, "sluice_connections_closed_unauthenticated_total")
            .expect("metrics")
            .unwrap_or(0.0);
        assert_eq!(
            expired, 0.0,
            "broker {node} closed connections for expired sessions"
        );
    }
}

#[test]
fn a_broker_with_the_wrong_inter_broker_password_cannot_replicate() {
    let pki = Pki::new();
    let configs = tempfile::tempdir().expect("tempdir");
    let good = client_config(&pki, configs.path(), PASSWORD);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let extra = [
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
        "--inter-broker-client-config",
        good.as_str(),
    ];
    let mut cluster = Cluster::with_inter_broker(3, &extra, Some("SASL_SSL"), |dir| {
        add_user(dir, "broker", "SCRAM-SHA-512", PASSWORD)
    });
    cluster.create_topic("split", 3, 3, &[]);
    for p in 0..3 {
        cluster.wait_isr("split", p, &[1, 2, 3], Duration::from_secs(30));
    }
    // The credentials are the cluster's (etcd), so a wrong password is the
    // client side's: broker 3 restarts with another one in its
    // inter-broker client config. Its followers cannot log in to the
    // leaders, so it does not get back into any ISR, and the leaders count
    // the failures.
    let failures = |cluster: &Cluster, node: i32| {
        cluster
            .metric(node, "sluice_authentications_total{result=\"failure\"}")
            .expect("metrics")
            .unwrap_or(0.0)
    };
    let before: f64 = [1, 2].iter().map(|&n| failures(&cluster, n)).sum();
    assert!(cluster.stop(3), "broker 3 did not stop cleanly");
    let wrong = client_config(&pki, configs.path(), "something else");
    std::fs::copy(&wrong, &good).expect("swap the client config");
    cluster.start(3);
    let refused = wait_for(Duration::from_secs(30), || {
        [1, 2].iter().map(|&n| failures(&cluster, n)).sum::<f64>() >= before + 2.0
    });
    assert!(refused, "the leaders counted no failed inter-broker login");
    std::thread::sleep(Duration::from_secs(3));
    for p in 0..3 {
        let state = cluster.partition_from(1, "split", p).expect("state");
        assert!(
            !state.isr.contains(&3),
            "partition {p}: broker 3 is in the ISR {:?} without logging in",
            state.isr
        );
    }
    // The right password again: broker 3 catches up and rejoins.
    assert!(cluster.stop(3), "broker 3 did not stop cleanly");
    assert_eq!(client_config(&pki, configs.path(), PASSWORD), good);
    cluster.start(3);
    for p in 0..3 {
        cluster.wait_isr("split", p, &[1, 2, 3], Duration::from_secs(30));
    }
}
