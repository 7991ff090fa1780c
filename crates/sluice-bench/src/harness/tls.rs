//! `sluice bench broker tls`: what TLS costs. One broker with a PLAINTEXT
//! and an SSL listener on the same data; consume and produce through each,
//! interleaved in every round (the order turning per round), with the
//! broker's CPU seconds per GB. Under user-space TLS a Fetch's records are
//! read into memory and encrypted by rustls; on PLAINTEXT they go file →
//! socket by sendfile. Where the kernel has kTLS the metrics say so.
//!
//! The certificate is made with the `openssl` CLI in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_client::security::ClientSecurity;

use super::{Machine, fill, start_broker};
use crate::load::{self, ConsumeOptions, ProduceOptions};
use crate::stats::median;

/// What `sluice bench broker tls` measures.
#[derive(Debug, Clone)]
pub struct TlsScenario {
    pub exe: PathBuf,
    pub dir: PathBuf,
    pub fill_bytes: u64,
    pub partitions: u32,
    pub repeats: usize,
    pub run: Duration,
    pub fetch_bytes: i32,
    /// Producer connections (each one request at a time: a TLS stream is
    /// not split into a writer and a reader).
    pub producers: u32,
    pub batch_bytes: usize,
}

/// One measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsRun {
    pub round: usize,
    /// `consume` or `produce`.
    pub kind: String,
    /// `PLAINTEXT` or `SSL`.
    pub listener: String,
    pub mb_per_s: f64,
    pub broker_cpu_s_per_gb: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsReport {
    pub machine: Machine,
    pub fill_bytes: u64,
    pub run_ms: u128,
    pub repeats: usize,
    pub kernel_tls: bool,
    pub runs: Vec<TlsRun>,
    /// Per (kind, listener): median MB/s and broker CPU s/GB.
    pub medians: BTreeMap<String, (f64, f64)>,
    /// SSL over PLAINTEXT per round, medians: (consume MB/s, consume CPU
    /// per GB, produce MB/s, produce CPU per GB).
    pub ratios: (f64, f64, f64, f64),
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let script = r#"
set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=sluice bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
"#;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running openssl (needed for the certificate): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

pub fn tls(s: &TlsScenario) -> Result<TlsReport, String> {
    let data = s.dir.join("broker-tls");
    let _ = std::fs::remove_dir_all(&data);
    let (ca, cert, key) = certificate(&s.dir.join("tls-pki"))?;
    let args: Vec<String> = [
        "--default-partitions",
        &s.partitions.to_string(),
        "--listener",
        "SSL://127.0.0.1:0",
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut broker = start_broker(&s.exe, &data, &args, None)?;
    let plain = broker.addr;
    let ssl = *broker
        .listeners
        .get("SSL")
        .ok_or("the broker printed no SSL listener")?;
    eprintln!(
        "filling {} MB over {} partitions…",
        s.fill_bytes / 1_000_000,
        s.partitions
    );
    fill(plain, "bench", s.fill_bytes)?;
    let kernel_tls = broker
        .metrics()
        .ok()
        .and_then(|m| m.get("sluice_kernel_tls_available").copied())
        .is_some_and(|v| v > 0.0);
    let tls_client = ClientSecurity::from_properties([
        ("security.protocol", "SSL".to_string()),
        ("ssl.ca.location", ca.display().to_string()),
    ])
    .map_err(|e| e.to_string())?
    .0;
    let modes = [
        ("PLAINTEXT", plain, ClientSecurity::default()),
        ("SSL", ssl, tls_client),
    ];
    let mut runs = Vec::new();
    for round in 0..s.repeats {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for kind in ["consume", "produce"] {
            for &i in &order {
                let (listener, addr, security) = &modes[i];
                eprintln!("round {} {kind} over {listener}", round + 1);
                let cpu0 = broker.cpu_seconds();
                let report = if kind == "consume" {
                    load::consume(&ConsumeOptions {
                        broker: addr.to_string(),
                        topic: "bench".into(),
                        partitions: s.partitions,
                        connections: 1,
                        duration: s.run,
                        fetch_bytes: s.fetch_bytes,
                        once: false,
                        progress: false,
                        security: security.clone(),
                    })
                } else {
                    load::produce(&ProduceOptions {
                        broker: addr.to_string(),
                        topic: "produced".into(),
                        partitions: s.partitions,
                        connections: s.producers,
                        record_bytes: 100,
                        batch_bytes: s.batch_bytes,
                        acks: 1,
                        compression: kafka_protocol::records::Compression::None,
                        duration: s.run,
                        warmup: Duration::from_millis(200),
                        target_rate: None,
                        in_flight: 1,
                        until: None,
                        progress: false,
                        security: security.clone(),
                    })
                }
                .map_err(|e| format!("{kind} over {listener}: {e}"))?;
                let cpu = broker.cpu_seconds() - cpu0;
                let gb = report.bytes as f64 / 1e9;
                runs.push(TlsRun {
                    round,
                    kind: kind.to_string(),
                    listener: listener.to_string(),
                    mb_per_s: report.mb_per_s,
                    broker_cpu_s_per_gb: cpu / gb.max(1e-9),
                });
            }
        }
    }
    broker.stop();
    let mut medians = BTreeMap::new();
    for kind in ["consume", "produce"] {
        for (listener, _, _) in &modes {
            let cell: Vec<&TlsRun> = runs
                .iter()
                .filter(|r| r.kind == kind && r.listener == *listener)
                .collect();
            medians.insert(
                format!("{kind} {listener}"),
                (
                    median(cell.iter().map(|r| r.mb_per_s).collect()).unwrap_or(0.0),
                    median(cell.iter().map(|r| r.broker_cpu_s_per_gb).collect()).unwrap_or(0.0),
                ),
            );
        }
    }
    let ratio = |kind: &str, f: &dyn Fn(&TlsRun) -> f64| {
        let per_round: Vec<f64> = (0..s.repeats)
            .filter_map(|round| {
                let get = |l: &str| {
                    runs.iter()
                        .find(|r| r.round == round && r.kind == kind && r.listener == l)
                        .map(f)
                };
                Some(get("SSL")? / get("PLAINTEXT")?.max(1e-9))
            })
            .collect();
        median(per_round).unwrap_or(0.0)
    };
    let ratios = (
        ratio("consume", &|r| r.mb_per_s),
        ratio("consume", &|r| r.broker_cpu_s_per_gb),
        ratio("produce", &|r| r.mb_per_s),
        ratio("produce", &|r| r.broker_cpu_s_per_gb),
    );
    Ok(TlsReport {
        machine: Machine::here(),
        fill_bytes: s.fill_bytes,
        run_ms: s.run.as_millis(),
        repeats: s.repeats,
        kernel_tls,
        runs,
        medians,
        ratios,
    })
}

pub fn tls_table(r: &TlsReport) -> String {
    let mut out = format!(
        "TLS vs PLAINTEXT, {} rounds of {} ms (kernel TLS available: {})\n",
        r.repeats, r.run_ms, r.kernel_tls
    );
    out.push_str("kind     listener   MB/s (median)  broker CPU s/GB\n");
    for (cell, (mbs, cpu)) in &r.medians {
        let (kind, listener) = cell.split_once(' ').unwrap_or((cell, ""));
        out.push_str(&format!(
            "{kind:<8} {listener:<10} {mbs:>13.1}  {cpu:>15.3}\n"
        ));
    }
    let (c, ccpu, p, pcpu) = r.ratios;
    out.push_str(&format!(
        "SSL/PLAINTEXT (median of per-round ratios): consume {c:.3}x throughput, \
         {ccpu:.2}x CPU/GB; produce {p:.3}x throughput, {pcpu:.2}x CPU/GB\n"
    ));
    out
}
