//! KIP-368 from the client's side: `sluice_client::Client` keeps a SASL
//! connection alive across the broker's session lifetime
//! (`--connections-max-reauth-ms`) by re-authenticating on it, over
//! SASL_PLAINTEXT (SCRAM-SHA-512) and SASL_SSL (PLAIN), and never between a
//! pipelined request and its response.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice_client::{
    Client, ClientSecurity, SaslConfig, SaslMechanism, SecurityProtocol, encode_batch,
    plain_record, scram,
};
use support::pki::{Pki, add_user};
use support::{Server, stored};

const PASSWORD: &str = "reauth secret";
/// The broker's session lifetime; clients re-authenticate after 85–95 % of it.
const LIFETIME_MS: u64 = 1500;

const REAUTHENTICATED: &str = "sluice_authentications_total{result=\"reauthenticated\"}";
const LOGINS: &str = "sluice_authentications_total{result=\"success\"}";
const CLOSED_UNAUTHENTICATED: &str = "sluice_connections_closed_unauthenticated_total";

fn broker(pki: &Pki) -> (tempfile::TempDir, Server) {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    add_user(&data, "alice", "SCRAM-SHA-512", PASSWORD);
    add_user(&data, "bob", "SCRAM-SHA-256", PASSWORD);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let lifetime = LIFETIME_MS.to_string();
    let server = Server::start_in(
        &data,
        &[
            "--listener",
            "SASL_PLAINTEXT://127.0.0.1:0",
            "--listener",
            "SASL_SSL://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--connections-max-reauth-ms",
            &lifetime,
        ],
    );
    (temp, server)
}

fn security(
    protocol: SecurityProtocol,
    mechanism: SaslMechanism,
    user: &str,
    pki: &Pki,
) -> ClientSecurity {
    ClientSecurity {
        protocol,
        ca: protocol.tls().then(|| pki.path("ca.pem").into()),
        sasl: Some(SaslConfig {
            mechanism,
            username: user.into(),
            password: PASSWORD.into(),
        }),
        ..ClientSecurity::plaintext()
    }
}

/// A one-record batch, the same bytes each time for `i`.
fn record(i: u64) -> Bytes {
    let r = plain_record(0, 1_700_000_000_000, None, Bytes::from(format!("v{i}")));
    encode_batch(&[r], Compression::None).expect("batch")
}

/// Produces (pipelined, three at a time) and fetches back on the one
/// connection of `c` for `run`; every call must succeed. Returns how many
/// records it wrote.
fn produce_and_fetch_for(c: &mut Client, topic: &str, run: Duration) -> u64 {
    let deadline = Instant::now() + run;
    let mut written = 0u64;
    while Instant::now() < deadline {
        let sent: Vec<i32> = (0..3)
            .map(|k| {
                c.send_produce(topic, 0, record(written + k), -1)
                    .unwrap_or_else(|e| panic!("{topic}: produce after {written}: {e}"))
            })
            .collect();
        for (k, corr) in sent.into_iter().enumerate() {
            let offset = c
                .produce_result(corr)
                .unwrap_or_else(|e| panic!("{topic}: produce result after {written}: {e}"));
            assert_eq!(offset, written as i64 + k as i64, "{topic}");
        }
        let fetched = c
            .fetch(topic, 0, written as i64, 100, 1 << 20)
            .unwrap_or_else(|e| panic!("{topic}: fetch at {written}: {e}"));
        assert_eq!(fetched.error_code, 0, "{topic}");
        let want: Vec<u8> = (written..written + 3)
            .flat_map(|i| stored(&record(i), i as i64))
            .collect();
        assert_eq!(fetched.records.as_ref(), want, "{topic}: fetched back");
        written += 3;
        std::thread::sleep(Duration::from_millis(50));
    }
    written
}

#[test]
fn clients_reauthenticate_and_keep_their_one_connection_past_the_session_lifetime() {
    let pki = Pki::new();
    let (_temp, server) = broker(&pki);
    let scram_sec = security(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::Scram(scram::Mechanism::Sha512),
        "alice",
        &pki,
    );
    let plain_sec = security(SecurityProtocol::SaslSsl, SaslMechanism::Plain, "bob", &pki);
    let sasl_plaintext = server.listener("SASL_PLAINTEXT").to_string();
    let sasl_ssl = server.listener("SASL_SSL").to_string();
    let mut scram_client = Client::connect_secure(&sasl_plaintext, &scram_sec).expect("SCRAM");
    let mut plain_client = Client::connect_secure(&sasl_ssl, &plain_sec).expect("PLAIN");
    assert!(plain_client.is_tls() && !scram_client.is_tls());
    scram_client
        .create_topic("reauth-scram", 1, &[])
        .expect("create");
    plain_client
        .create_topic("reauth-plain", 1, &[])
        .expect("create");

    // Five seconds of traffic, over three session lifetimes, on each
    // connection at once.
    let run = Duration::from_secs(5);
    let (scram_client, plain_client) = std::thread::scope(|s| {
        let a = s.spawn(move || {
            produce_and_fetch_for(&mut scram_client, "reauth-scram", run);
            scram_client
        });
        let b = s.spawn(move || {
            produce_and_fetch_for(&mut plain_client, "reauth-plain", run);
            plain_client
        });
        (
            a.join().expect("SCRAM client"),
            b.join().expect("PLAIN client"),
        )
    });
    let mut scram_client = scram_client;
    // Each renewed its session at least three times (every 1.275–1.425 s).
    for (what, c) in [("SCRAM", &scram_client), ("PLAIN", &plain_client)] {
        assert!(
            c.reauthentications() >= 3,
            "{what}: {} re-authentications in {run:?}",
            c.reauthentications()
        );
    }
    // The broker counted each, saw exactly the two first logins (neither
    // client ever connected again), and closed nothing for an expired
    // session.
    let renewals = scram_client.reauthentications() + plain_client.reauthentications();
    assert_eq!(server.metric(REAUTHENTICATED), renewals);
    assert_eq!(server.metric(LOGINS), 2);
    assert_eq!(server.metric(CLOSED_UNAUTHENTICATED), 0);

    // Pipelined requests in flight when the re-authentication falls due
    // are not interrupted: sent right after a renewal, left unread past
    // the session's end, they all complete; the next request renews first.
    let renewed = scram_client.reauthentications();
    let start = Instant::now();
    while scram_client.reauthentications() == renewed {
        assert!(start.elapsed() < Duration::from_secs(5), "no renewal");
        scram_client
            .fetch("reauth-scram", 0, 0, 0, 1024)
            .expect("fetch");
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = scram_client
        .list_offset("reauth-scram", 0, -1)
        .expect("latest offset");
    let renewed = scram_client.reauthentications();
    let in_flight: Vec<i32> = (0..4)
        .map(|k| {
            scram_client
                .send_produce("reauth-scram", 0, record(1000 + k), -1)
                .expect("pipelined produce")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(LIFETIME_MS + 200));
    let offsets: Vec<i64> = in_flight
        .into_iter()
        .map(|corr| scram_client.produce_result(corr).expect("pipelined result"))
        .collect();
    assert_eq!(offsets, (end..end + 4).collect::<Vec<_>>());
    assert_eq!(
        scram_client.reauthentications(),
        renewed,
        "re-authenticated with responses outstanding"
    );
    let fetched = scram_client
        .fetch("reauth-scram", 0, end, 0, 1 << 20)
        .expect("the request after the pipeline");
    assert_eq!(fetched.error_code, 0);
    assert_eq!(fetched.high_watermark, end + 4);
    assert_eq!(scram_client.reauthentications(), renewed + 1);
    assert_eq!(
        server.metric(REAUTHENTICATED),
        scram_client.reauthentications() + plain_client.reauthentications()
    );
    assert_eq!(server.metric(LOGINS), 2);
    assert_eq!(server.metric(CLOSED_UNAUTHENTICATED), 0);
}
