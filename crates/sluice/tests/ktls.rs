//! Kernel TLS offload (issue 17) with real clients. `--tls-kernel-offload
//! on` tries the hand-over on every TLS connection whatever the kernel's
//! probe says: each handshake is read through the cork, the keys offered
//! to the kernel, and where it lacks `CONFIG_TLS` (the machines this was
//! built on) the connection falls back to rustls. Either way the clients'
//! records must cross byte for byte and the metrics must say which way
//! they went.

mod support;

use support::pki::{Pki, add_user, kcat_secured as kcat};
use support::{Server, py};

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn clients_cross_the_kernel_tls_hand_over_byte_exact_and_the_metrics_say_how() {
    let pki = Pki::new();
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    add_user(&data, "alice", "SCRAM-SHA-256", PASSWORD);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = Server::start_in(
        &data,
        &[
            "--listener",
            "SSL://127.0.0.1:0",
            "--listener",
            "SASL_SSL://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-kernel-offload",
            "on",
        ],
    );
    let kernel = server.metric("sluice_kernel_tls_available") == 1;
    let ca = format!("ssl.ca.location={}", pki.path("ca.pem"));
    let ways = [
        ("SSL", vec!["security.protocol=SSL".to_string(), ca.clone()]),
        (
            "SASL_SSL",
            vec![
                "security.protocol=SASL_SSL".to_string(),
                ca.clone(),
                "sasl.mechanism=SCRAM-SHA-256".to_string(),
                "sasl.username=alice".to_string(),
                format!("sasl.password={PASSWORD}"),
            ],
        ),
    ];
    // Messages of many sizes, some larger than one TLS record (16 KiB).
    let lines: Vec<String> = (0..200)
        .map(|i| format!("{i:05}-{}", "kTLS".repeat((i * 97) % 9000)))
        .collect();
    let input = lines.join("\n") + "\n";
    for (listener, settings) in &ways {
        let addr = server.listener(listener);
        let topic = format!("ktls-{}", listener.to_lowercase());
        kcat(
            addr,
            settings,
            &["-P", "-t", &topic],
            Some(input.as_bytes()),
        );
        let out = kcat(
            addr,
            settings,
            &["-C", "-t", &topic, "-o", "beginning", "-e", "-c", "200"],
            None,
        );
        assert!(out == input.as_bytes(), "{listener}: consumed bytes differ");
    }

    // TLS 1.2 as well: kafka-python with its context held to 1.2.
    let out = py(
        server.listener("SSL"),
        &format!(
            r#"
import ssl
from kafka import KafkaProducer, KafkaConsumer
ctx = ssl.create_default_context(cafile={ca:?})
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
values = [bytes([i % 251]) * (i * 331 % 40000) for i in range(60)]
p = KafkaProducer(bootstrap_servers=BROKER, security_protocol="SSL", ssl_context=ctx)
for v in values:
    p.send("ktls-tls12", v)
p.flush(); p.close()
c = KafkaConsumer("ktls-tls12", bootstrap_servers=BROKER, security_protocol="SSL",
                  ssl_context=ctx, auto_offset_reset="earliest", consumer_timeout_ms=10000)
got = []
for m in c:
    got.append(m.value)
    if len(got) == len(values):
        break
c.close()
print("ok" if got == values else "differ %d" % len(got))
"#,
            ca = pki.path("ca.pem")
        ),
    );
    assert_eq!(out, "ok");

    let handshakes = server.metric("sluice_tls_handshakes_total");
    let kernel_conns = server.metric("sluice_tls_kernel_offload_total{outcome=\"kernel\"}");
    let fallbacks = server.metric("sluice_tls_kernel_offload_total{outcome=\"fallback\"}");
    let kernel_bytes = server.metric("sluice_tls_bytes_sent_total{mode=\"kernel\"}");
    let user_bytes = server.metric("sluice_tls_bytes_sent_total{mode=\"user\"}");
    assert!(handshakes >= 6, "{handshakes} handshakes");
    // Every handshake went one way or the other.
    assert_eq!(kernel_conns + fallbacks, handshakes);
    if kernel {
        assert_eq!(
            fallbacks, 0,
            "the kernel has kTLS but connections fell back"
        );
        assert!(kernel_bytes > 0 && user_bytes == 0);
    } else {
        assert_eq!(kernel_conns, 0);
        assert!(user_bytes > 0 && kernel_bytes == 0);
    }
}
