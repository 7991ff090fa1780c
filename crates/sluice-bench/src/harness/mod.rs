//! `sluice bench broker`: measurements of a real `sluice serve` process that
//! this harness starts, fills and restarts itself, so each target of issue #6
//! is one command.
//!
//! - `consume`: the article's table inside the broker (one row per data path:
//!   throughput, broker CPU seconds per GB, syscalls per fetch, record bytes
//!   through user space), the bare io-layer `sendfile` of the same segment
//!   bytes beside it in the same round, and scaling over consumer counts.
//! - `isolation`: produce p99 at a fixed rate while one consumer catches up on
//!   evicted data, against the same producer alone, with cold-read isolation
//!   on and off.
//!
//! Broker CPU comes from `/proc/<pid>/stat` and counters from its metrics
//! page, both read after the broker has finished opening its data directory.
//!
//! One file per scenario ([`consume`](mod@consume), [`isolation`](mod@isolation)),
//! their tables and charts in [`present`]; the broker processes are
//! [`crate::process`]'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_client::{Client, ClientError};

use crate::load;
use crate::process::{BrokerLaunch, BrokerProcess};

pub mod consume;
pub mod isolation;
pub mod present;
pub mod tls;

pub use consume::{
    BaselineRun, ConsumeReport, ConsumeRow, ConsumeRun, ConsumeScenario, bare_sendfile, consume,
};
pub use isolation::{IsolationReport, IsolationRun, IsolationScenario, isolation};
pub use present::{consume_table, isolation_table, write_consume_svg, write_isolation_svg};
pub use tls::{TlsReport, TlsScenario, tls, tls_table};

/// Starts a broker for a scenario: `exe serve` on `data_dir` with `args`,
/// quiet below warnings, optionally on one CPU.
fn start_broker(
    exe: &Path,
    data_dir: &Path,
    args: &[String],
    cpu: Option<usize>,
) -> Result<BrokerProcess, String> {
    BrokerLaunch::new(exe, data_dir)
        .args(["--log-level", "warn"])
        .args(args)
        .cpu(cpu)
        .start()
        .map_err(|e| format!("starting {}: {e}", exe.display()))
}

/// Produces `bytes` of 100-byte records in 64 KiB batches, round-robin over
/// the topic's partitions, pipelined.
pub fn fill(addr: SocketAddr, topic: &str, bytes: u64) -> Result<u64, String> {
    let err = |e: ClientError| format!("filling {topic}: {e}");
    let mut client = Client::connect(addr).map_err(err)?;
    let partitions = client.partitions(topic).map_err(err)?.max(1);
    let (batch, _) = load::encoded_batch(100, 64 << 10, kafka_protocol::records::Compression::None);
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0u64;
    let mut i = 0u32;
    while sent < bytes {
        let corr = client
            .send_produce(topic, (i % partitions) as i32, batch.clone(), 1)
            .map_err(err)?;
        pending.push_back(corr);
        sent += batch.len() as u64;
        i += 1;
        if pending.len() >= 8
            && let Some(corr) = pending.pop_front()
        {
            client.produce_result(corr).map_err(err)?;
        }
    }
    for corr in pending {
        client.produce_result(corr).map_err(err)?;
    }
    Ok(sent)
}

/// The `.log` files of a partition directory, oldest first.
pub(crate) fn segment_files(partition_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    Ok(logs)
}

/// Machine facts for a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub date_utc: String,
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn here() -> Machine {
        Machine {
            date_utc: crate::transfer::utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}
