//! Security on the wire (issue 17): SSL, SASL_PLAINTEXT and SASL_SSL
//! listeners with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and client
//! certificates, against real clients (kcat, confluent-kafka, kafka-python)
//! and hostile raw connections; KIP-368 re-authentication; certificates
//! reloaded on SIGHUP.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use sluice_broker::security::scram::{Mechanism, ScramClient};
use support::pki::{Pki, add_user, kcat_secured as kcat};
use support::{Client, Server, python};

const PASSWORD: &str = "correct horse battery staple";

/// A broker with every kind of listener, users alice (SCRAM-SHA-256) and
/// bob (SCRAM-SHA-512), client certificates requested.
fn secured_broker(pki: &Pki, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    add_user(&data, "alice", "SCRAM-SHA-256", PASSWORD);
    add_user(&data, "bob", "SCRAM-SHA-512", PASSWORD);
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let mut args = vec![
        "--listener",
        "SSL://127.0.0.1:0",
        "--listener",
        "SASL_PLAINTEXT://127.0.0.1:0",
        "--listener",
        "SASL_SSL://127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "requested",
    ];
    args.extend_from_slice(extra);
    let server = Server::start_in(&data, &args);
    (temp, server)
}

/// librdkafka settings for one way in: (listener, `-X` settings).
fn ways_in(pki: &Pki) -> Vec<(&'static str, Vec<String>)> {
    let ca = format!("ssl.ca.location={}", pki.path("ca.pem"));
    let sasl = |proto: &str, mech: &str, user: &str| {
        let mut v = vec![
            format!("security.protocol={proto}"),
            format!("sasl.mechanism={mech}"),
            format!("sasl.username={user}"),
            format!("sasl.password={PASSWORD}"),
        ];
        if proto == "SASL_SSL" {
            v.push(ca.clone());
        }
        v
    };
    vec![
        ("SSL", vec!["security.protocol=SSL".into(), ca.clone()]),
        (
            "SSL",
            vec![
                "security.protocol=SSL".into(),
                ca.clone(),
                format!("ssl.certificate.location={}", pki.path("client.pem")),
                format!("ssl.key.location={}", pki.path("client.key")),
            ],
        ),
        ("SASL_PLAINTEXT", sasl("SASL_PLAINTEXT", "PLAIN", "alice")),
        (
            "SASL_PLAINTEXT",
            sasl("SASL_PLAINTEXT", "SCRAM-SHA-256", "alice"),
        ),
        (
            "SASL_PLAINTEXT",
            sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", "bob"),
        ),
        ("SASL_SSL", sasl("SASL_SSL", "PLAIN", "bob")),
        ("SASL_SSL", sasl("SASL_SSL", "SCRAM-SHA-256", "alice")),
        ("SASL_SSL", sasl("SASL_SSL", "SCRAM-SHA-512", "bob")),
    ]
}

#[test]
fn kcat_produces_and_consumes_byte_exact_over_every_secured_listener_and_mechanism() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &[]);
    let sasl_ways = ways_in(&pki)
        .iter()
        .filter(|(l, _)| l.starts_with("SASL"))
        .count() as u64;
    for (n, (listener, settings)) in ways_in(&pki).into_iter().enumerate() {
        let addr = server.listener(listener);
        let topic = format!("kcat-{n}");
        // Every byte value but the delimiter, in lines of varied length.
        let mut input = Vec::new();
        for i in 0..300u32 {
            let len = 1 + (i * 7) % 200;
            input.extend((0..len).map(|j| ((i + j) % 255) as u8 + u8::from((i + j) % 255 >= 10)));
            input.push(b'\n');
        }
        kcat(
            addr,
            &settings,
            &["-P", "-t", &topic, "-X", "acks=all"],
            Some(&input),
        );
        let out = kcat(addr, &settings, &["-C", "-t", &topic, "-e", "-q"], None);
        assert_eq!(
            out, input,
            "{listener} {settings:?}: what came back differs from what was produced"
        );
    }
    // Each SASL way in authenticated (kcat connects twice, at least).
    let ok = server.metric("sluice_authentications_total{result=\"success\"}");
    assert!(ok >= 2 * sasl_ways, "{ok} authentications");
    assert_eq!(
        server.metric("sluice_authentications_total{result=\"failure\"}"),
        0
    );
    // TLS bytes went through rustls (this kernel has no kTLS, or it is not
    // used: either way the user-space path must have carried them here).
    assert!(server.metric("sluice_tls_bytes_sent_total{mode=\"user\"}") > 0);
    assert!(server.metric("sluice_tls_handshakes_total") >= 4);
}

#[test]
fn python_clients_round_trip_over_ssl_sasl_and_mtls() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &[]);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/security_clients.py");
    let ways = ways_in(&pki);
    for client in ["confluent-kafka", "kafka-python"] {
        for (n, (listener, settings)) in ways.iter().enumerate() {
            let topic = format!("py-{client}-{n}");
            let out = Command::new(python())
                .arg(&script)
                .args(["roundtrip", client])
                .arg(server.listener(listener).to_string())
                .args([topic.as_str(), "40"])
                .args(settings)
                .output()
                .expect("python");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.trim() == "ok 40",
                "{client} over {listener} {settings:?}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn required_client_certificates_refuse_clients_without_one() {
    let pki = Pki::new();
    let temp = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let server = Server::start_in(
        &temp.path().join("data"),
        &[
            "--listener",
            "SSL://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let addr = server.listener("SSL");
    let with_cert = vec![
        "security.protocol=SSL".to_string(),
        format!("ssl.ca.location={ca}"),
        format!("ssl.certificate.location={}", pki.path("client.pem")),
        format!("ssl.key.location={}", pki.path("client.key")),
    ];
    kcat(
        addr,
        &with_cert,
        &["-P", "-t", "m"],
        Some(b"with a certificate\n"),
    );
    let out = kcat(addr, &with_cert, &["-C", "-t", "m", "-e", "-q"], None);
    assert_eq!(out, b"with a certificate\n");
    // Without a certificate the handshake fails and nothing is served.
    let refused = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-b", &addr.to_string(), "-L", "-m", "3"])
        .args(["-X", "security.protocol=SSL", "-X"])
        .arg(format!("ssl.ca.location={ca}"))
        .output()
        .expect("kcat");
    assert!(
        !refused.status.success(),
        "served without a client certificate"
    );
    assert!(server.metric("sluice_tls_handshakes_failed_total") >= 1);
}

fn handshake(c: &mut Client, mechanism: &str, version: i16) -> i16 {
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_string(mechanism.to_string());
    c.call(version, &r).error_code
}

fn authenticate(
    c: &mut Client,
    token: &[u8],
) -> kafka_protocol::messages::SaslAuthenticateResponse {
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = Bytes::copy_from_slice(token);
    c.call(2, &r)
}

/// A whole SCRAM exchange on a raw connection; the final response.
fn scram_login(
    c: &mut Client,
    m: Mechanism,
    user: &str,
    password: &str,
) -> kafka_protocol::messages::SaslAuthenticateResponse {
    assert_eq!(handshake(c, m.name(), 1), 0);
    let (mut scram, first) = ScramClient::start(m, user, password.as_bytes()).expect("start");
    let challenge = authenticate(c, first.as_bytes());
    assert_eq!(challenge.error_code, 0, "{:?}", challenge.error_message);
    let proof = scram.respond(&challenge.auth_bytes).expect("proof");
    let done = authenticate(c, proof.as_bytes());
    if done.error_code == 0 {
        scram
            .verify(&done.auth_bytes)
            .expect("the broker proves it knows the credential");
    }
    done
}

fn metadata_works(c: &mut Client) -> bool {
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![]);
    c.try_call(9, &r).is_some()
}

#[test]
fn hostile_clients_are_closed_slowed_and_counted_and_others_are_served() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(
        &pki,
        &[
            "--connection-failed-authentication-delay-ms",
            "300",
            "--frame-read-timeout-ms",
            "1000",
        ],
    );
    let sasl = server.listener("SASL_PLAINTEXT");

    // ApiVersions is answered before authentication (clients ask first)…
    let mut c = Client::connect(sasl);
    let versions = c.call(3, &ApiVersionsRequest::default());
    assert!(versions.api_keys.iter().any(|k| k.api_key == 36));
    // …but Metadata is not: the connection is closed.
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![]);
    c.send(9, &r);
    assert!(
        c.closed_by_broker(),
        "Metadata served before authentication"
    );

    // A SaslAuthenticate before any handshake: closed.
    let mut c = Client::connect(sasl);
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = Bytes::from_static(b"\0alice\0x");
    c.send(2, &r);
    assert!(c.closed_by_broker());
    assert!(server.metric("sluice_connections_closed_unauthenticated_total") >= 2);

    // A frame larger than sasl.server.max.receive.size before
    // authenticating: closed on its size alone.
    let mut c = Client::connect(sasl);
    c.stream
        .write_all(&(1_000_000i32).to_be_bytes())
        .expect("write size");
    assert!(c.closed_by_broker());

    // An oversized PLAIN token: refused as a failed authentication.
    let mut c = Client::connect(sasl);
    assert_eq!(handshake(&mut c, "PLAIN", 1), 0);
    let mut token = b"\0alice\0".to_vec();
    token.extend(std::iter::repeat_n(b'p', 10_000));
    let r = authenticate(&mut c, &token);
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(c.closed_by_broker());

    // Wrong passwords: each failure is answered SASL_AUTHENTICATION_FAILED
    // and the connection closed; the next attempt from this address waits
    // longer (300 ms, then doubling).
    let failed_before = server.metric("sluice_authentications_total{result=\"failure\"}");
    let mut waits = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(sasl);
        let started = Instant::now();
        let r = scram_login(&mut c, Mechanism::Sha256, "alice", "guess");
        waits.push(started.elapsed());
        assert_eq!(r.error_code, 58);
        let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
        assert!(message.contains("invalid credentials"), "{message}");
        assert!(c.closed_by_broker());
    }
    assert!(
        waits[2] >= Duration::from_millis(500),
        "the third wrong password was answered after {:?}",
        waits[2]
    );
    assert_eq!(
        server.metric("sluice_authentications_total{result=\"failure\"}"),
        failed_before + 3,
        "three wrong passwords"
    );
    // The right password still works (after its wait), and resets it.
    let mut c = Client::connect(sasl);
    assert_eq!(
        scram_login(&mut c, Mechanism::Sha256, "alice", PASSWORD).error_code,
        0
    );
    assert!(metadata_works(&mut c));

    // Garbage instead of a TLS ClientHello: closed, counted.
    let tls = server.listener("SASL_SSL");
    let failed_tls = server.metric("sluice_tls_handshakes_failed_total");
    let mut s = TcpStream::connect(tls).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .expect("garbage");
    let mut b = [0u8; 64];
    let closed = loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break true,
            Ok(_) => continue, // a TLS alert, then the close
        }
    };
    assert!(closed);

    // A client that stops mid-handshake is closed after the frame read
    // timeout, and others are served meanwhile.
    let mut stalled = TcpStream::connect(tls).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("half a hello");
    let mut c = Client::connect(server.addr);
    assert!(
        metadata_works(&mut c),
        "PLAINTEXT served while a handshake stalls"
    );
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut b = [0u8; 16];
    assert!(matches!(stalled.read(&mut b), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        server.metric("sluice_tls_handshakes_failed_total") >= failed_tls + 2,
        "garbage and the stalled handshake are counted"
    );

    // The broker is healthy: a SASL_SSL client still round-trips.
    let ways = ways_in(&pki);
    let (listener, settings) = ways.last().expect("a way in");
    let addr = server.listener(listener);
    kcat(
        addr,
        settings,
        &["-P", "-t", "after"],
        Some(b"still here\n"),
    );
    assert_eq!(
        kcat(addr, settings, &["-C", "-t", "after", "-e", "-q"], None),
        b"still here\n"
    );
}

#[test]
fn sasl_handshake_v0_takes_bare_tokens() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &[]);
    let sasl = server.listener("SASL_PLAINTEXT");
    // v0 handshake, then the PLAIN token as a bare size-prefixed frame,
    // answered with a bare (empty) frame; then requests are served.
    let mut c = Client::connect(sasl);
    assert_eq!(handshake(&mut c, "PLAIN", 0), 0);
    c.send_raw_frame(format!("\0alice\0{PASSWORD}").as_bytes());
    assert_eq!(c.read_frame().expect("the bare answer"), Vec::<u8>::new());
    assert!(metadata_works(&mut c));
    // SCRAM over bare tokens.
    let mut c = Client::connect(sasl);
    assert_eq!(handshake(&mut c, "SCRAM-SHA-512", 0), 0);
    let (mut scram, first) =
        ScramClient::start(Mechanism::Sha512, "bob", PASSWORD.as_bytes()).expect("start");
    c.send_raw_frame(first.as_bytes());
    let challenge = c.read_frame().expect("challenge");
    c.send_raw_frame(scram.respond(&challenge).expect("proof").as_bytes());
    scram
        .verify(&c.read_frame().expect("server final"))
        .expect("server signature");
    assert!(metadata_works(&mut c));
    // A wrong bare token: the connection closes without an answer.
    let mut c = Client::connect(sasl);
    assert_eq!(handshake(&mut c, "PLAIN", 0), 0);
    c.send_raw_frame(b"\0alice\0wrong");
    assert!(c.read_frame().is_none());
    // An unknown mechanism is answered with the ones offered.
    let mut c = Client::connect(sasl);
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_static_str("GSSAPI");
    let answer = c.call(1, &r);
    assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let offered: Vec<String> = answer.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
}

#[test]
fn sessions_expire_and_clients_reauthenticate_on_the_open_connection() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &["--connections-max-reauth-ms", "1500"]);
    let sasl = server.listener("SASL_PLAINTEXT");
    // The session lifetime is announced; past it, requests close the
    // connection…
    let mut c = Client::connect(sasl);
    let done = scram_login(&mut c, Mechanism::Sha256, "alice", PASSWORD);
    assert_eq!(done.error_code, 0);
    assert_eq!(done.session_lifetime_ms, 1500);
    assert!(metadata_works(&mut c));
    std::thread::sleep(Duration::from_millis(1700));
    assert!(
        !metadata_works(&mut c),
        "a request after the session expired was served"
    );
    // …unless the client re-authenticates in time, as the same principal.
    let mut c = Client::connect(sasl);
    assert_eq!(
        scram_login(&mut c, Mechanism::Sha256, "alice", PASSWORD).error_code,
        0
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        scram_login(&mut c, Mechanism::Sha256, "alice", PASSWORD).error_code,
        0
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        metadata_works(&mut c),
        "the renewed session was not honoured"
    );
    let mut c = Client::connect(sasl);
    assert_eq!(
        scram_login(&mut c, Mechanism::Sha256, "alice", PASSWORD).error_code,
        0
    );
    let as_bob = scram_login(&mut c, Mechanism::Sha512, "bob", PASSWORD);
    assert_eq!(as_bob.error_code, 58, "a session changed its principal");

    // librdkafka re-authenticates by itself: a consumer reading for 5 s
    // over SASL_SSL (sessions of 1.5 s) gets every record a producer
    // writes meanwhile.
    let ways = ways_in(&pki);
    let (listener, settings) = ways.last().expect("SASL_SSL");
    let addr = server.listener(listener);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/security_clients.py");
    let reauth_before = server.metric("sluice_authentications_total{result=\"reauthenticated\"}");
    let consumer = Command::new(python())
        .arg(&script)
        .args(["consume-for", "confluent-kafka"])
        .arg(addr.to_string())
        .args(["reauth", "5", "200"])
        .args(settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    for i in 0..10 {
        let lines: String = (0..20).map(|j| format!("r{i}-{j}\n")).collect();
        kcat(
            addr,
            settings,
            &["-P", "-t", "reauth"],
            Some(lines.as_bytes()),
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let out = consumer.wait_with_output().expect("consumer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "got 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.metric("sluice_authentications_total{result=\"reauthenticated\"}") > reauth_before,
        "librdkafka never re-authenticated"
    );
}

/// How a TLS connection the broker closes ends, seen by Python's ssl with
/// `suppress_ragged_eofs` off (a bare TCP close is then an error, as a
/// possible truncation): "close_notify" or "truncated". `request` is sent
/// after the handshake.
fn tls_ending(pki: &Pki, addr: SocketAddr, request: &[u8]) -> String {
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10),
                    server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(bytes.fromhex(sys.argv[4]))
try:
    while s.recv(4096):
        pass
    print("close_notify")
except ssl.SSLEOFError as e:
    print("truncated", e)
"#;
    let hex: String = request.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(python())
        .args(["-c", script])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(pki.path("ca.pem"))
        .arg(hex)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The broker says it is closing a TLS connection (close_notify, RFC 8446
/// §6.1) before it does, whatever the reason: a request before
/// authentication on SASL_SSL, a malformed frame on SSL.
#[test]
fn the_broker_ends_the_tls_connections_it_closes_with_close_notify() {
    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &[]);
    // Metadata v0, all topics: not allowed before SASL.
    let metadata = [0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0];
    assert_eq!(
        tls_ending(&pki, server.listener("SASL_SSL"), &metadata),
        "close_notify"
    );
    // A frame too short to hold a request header.
    assert_eq!(
        tls_ending(&pki, server.listener("SSL"), &[0, 0, 0, 2, 0, 3]),
        "close_notify"
    );
}

/// The subject of the certificate a TLS listener presents now.
fn served_subject(addr: SocketAddr) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in {text}"))
        .to_string()
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    add_user(&data, "alice", "SCRAM-SHA-256", PASSWORD);
    // The broker reads its certificate from files the test replaces.
    let live = temp.path();
    std::fs::copy(pki.path("server.pem"), live.join("cert.pem")).expect("copy");
    std::fs::copy(pki.path("server.key"), live.join("key.pem")).expect("copy");
    let (cert, key) = (
        live.join("cert.pem").display().to_string(),
        live.join("key.pem").display().to_string(),
    );
    let server = Server::start_in(
        &data,
        &[
            "--listener",
            "SASL_SSL://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let addr = server.listener("SASL_SSL");
    assert!(
        served_subject(addr).ends_with("CN = server"),
        "{}",
        served_subject(addr)
    );

    // A Python TLS connection opened before the reload is used after it.
    let mut held = Command::new(python())
        .arg("-c")
        .arg(format!(
            r#"
import socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile={ca:?})
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="localhost")
def read(n):
    data = b""
    while len(data) < n:
        more = s.recv(n - len(data))
        if not more:
            sys.exit("closed")
        data += more
    return data
def api_versions(correlation):
    body = struct.pack(">hhih", 18, 0, correlation, -1)
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", read(4))[0]
    return struct.unpack(">i", read(size)[:4])[0]
assert api_versions(1) == 1
print("open", flush=True)
sys.stdin.readline()
assert api_versions(2) == 2
print("still open", flush=True)
"#,
            ca = pki.path("ca.pem"),
            port = addr.port()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let mut held_out = std::io::BufReader::new(held.stdout.take_or_panic());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut held_out, &mut line).expect("read");
    assert_eq!(line.trim(), "open");

    // A broken key: the reload is refused and the old certificate served.
    std::fs::write(live.join("key.pem"), b"not a key").expect("write");
    sighup(server.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert!(served_subject(addr).ends_with("CN = server"));

    // The new pair: served to new connections after SIGHUP.
    std::fs::copy(pki.path("server2.pem"), live.join("cert.pem")).expect("copy");
    std::fs::copy(pki.path("server2.key"), live.join("key.pem")).expect("copy");
    sighup(server.pid());
    let reloaded = support::cluster::wait_for(Duration::from_secs(5), || {
        served_subject(addr).ends_with("CN = server2")
    });
    assert!(reloaded, "still serving {}", served_subject(addr));

    writeln!(held.stdin.take().expect("stdin"), "go").expect("go");
    line.clear();
    std::io::BufRead::read_line(&mut held_out, &mut line).expect("read");
    let status = held.wait().expect("python");
    assert!(status.success() && line.trim() == "still open", "{line}");
}

fn sighup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

trait TakeOrPanic<T> {
    fn take_or_panic(&mut self) -> T;
}

impl<T> TakeOrPanic<T> for Option<T> {
    fn take_or_panic(&mut self) -> T {
        self.take().expect("piped")
    }
}

/// The rdkafka crate (librdkafka built with OpenSSL): produce and consume
/// byte-exact over every secured way in.
#[test]
fn rdkafka_crate_round_trips_over_every_secured_listener_and_mechanism() {
    use rdkafka::Message;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let pki = Pki::new();
    let (_temp, server) = secured_broker(&pki, &[]);
    for (n, (listener, settings)) in ways_in(&pki).into_iter().enumerate() {
        let addr = server.listener(listener).to_string();
        let topic = format!("rdkafka-{n}");
        let config = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &addr);
            for s in &settings {
                let (k, v) = s.split_once('=').expect("key=value");
                c.set(k, v);
            }
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c
        };
        let sent: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
            .map(|i| {
                let key = i.to_be_bytes().to_vec();
                let value: Vec<u8> = (0..(i * 13) % 500).map(|j| (i ^ j) as u8).collect();
                (key, value)
            })
            .collect();
        let producer: ThreadedProducer<DefaultProducerContext> =
            config(&[("acks", "all")]).create().expect("producer");
        for (k, v) in &sent {
            producer
                .send(BaseRecord::to(&topic).key(k).payload(v))
                .map_err(|(e, _)| e)
                .expect("queued");
        }
        producer
            .flush(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{listener} {settings:?}: not acknowledged: {e}"));
        let consumer: BaseConsumer = config(&[
            ("group.id", &format!("g-{topic}")),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ])
        .create()
        .expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < sent.len() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => got.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                )),
                Some(Err(e)) => panic!("{listener} {settings:?}: {e}"),
                None => {}
            }
        }
        assert!(
            got == sent,
            "{listener} {settings:?}: {} of {} came back equal",
            got.iter().zip(&sent).filter(|(a, b)| a == b).count(),
            sent.len()
        );
    }
}
