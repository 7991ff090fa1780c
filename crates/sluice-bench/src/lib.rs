//! # sluice-bench: measuring the data paths, the log and the broker
//!
//! What the `sluice bench …` commands run; the binary only parses arguments.
//!
//! - [`transfer`] (`bench transfer`): the source article's table, measured —
//!   every data path of `sluice-io` over loopback TCP and Unix sockets to a
//!   [`receiver`] process, the article's model printed beside what was
//!   counted; [`report`] draws its table, chart and JSON.
//! - [`append`] (`bench append`): the log's append paths (a mapped segment
//!   against `pwrite`) side by side.
//! - [`load`] (`bench produce | consume | e2e`): a Kafka load generator on
//!   `sluice-client`, usable against any Kafka-compatible broker, with
//!   latency histograms, refusals by Kafka error name, and the broker's CPU
//!   per GB when it runs on this machine ([`local`] finds it).
//! - [`harness`] (`bench broker consume | isolation`): scenarios on
//!   `sluice serve` processes it starts itself through [`process`] — which
//!   the binary's integration tests use to run their brokers too.
//! - [`txn`] (`bench produce --transactional`): a transactional producer
//!   beside an idempotent one in interleaved windows (records/s, commit
//!   latency), and read_committed consumers beside read_uncommitted ones
//!   over the same transactional data.
//! - [`compaction`] (`bench compaction`): the log cleaner's throughput and
//!   memory, and what it costs a live producer's p99.
//! - [`chart`] (shared SVG pieces), [`stats`] (the one median), and
//!   `getrusage` snapshots and CPU pinning ([`Usage`], [`pin_to_cpu`]).

pub mod append;
pub mod chart;
pub mod cluster;
pub mod compaction;
pub mod harness;
pub mod load;
pub mod local;
pub mod process;
pub mod receiver;
pub mod report;
pub mod stats;
pub mod transfer;
pub mod txn;
mod usage;

pub use usage::{CoreTime, Usage, pin_to_cpu};
