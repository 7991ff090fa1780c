//! # sluice-broker: the Kafka wire protocol over the log
//!
//! Alone, one broker leads every partition; with `--cluster`, brokers
//! coordinated by etcd replicate each partition with Kafka's follower
//! Fetch. The layers, each importing only those below it:
//!
//! - `net`: the listener, connections, framing and per-connection limits —
//!   the only code that sees a socket. A connection's responses all leave
//!   through one `sluice_io::Sender`, so a Fetch response's records go from
//!   the segment file to the socket by the configured data path (`sendfile`
//!   by default) without entering user space.
//! - [`api`]: the version table, request decoding, one `dispatch` from a
//!   decoded request to its reply, a file per API family, and the zero-copy
//!   Fetch writer. It never sees a socket or a connection.
//! - [`state`] and [`coordinator`]: the shared state (log, identity,
//!   advertised address) and the group coordinator, committed-offset store
//!   and producer ids.
//! - [`replication`]: the data plane of a cluster — leader and follower
//!   roles, follower fetchers, high watermarks, ISR changes, `acks=all`.
//! - [`cluster`]: the metadata plane — registration under an etcd lease,
//!   the controller, topic and partition state watched from etcd.
//! - [`security`]: principals, SASL, credentials, ACLs and quotas — pure
//!   parts, files in single-node mode; [`security_sync`] keeps them in etcd
//!   in a cluster.
//! - [`metrics`]: counters, histograms and the Prometheus page.
//! - [`broker_configs`]: the dynamic broker configs (log defaults changed at
//!   run time), stored in the data directory.
//!
//! [`Broker`] puts them together.

pub mod api;
mod broker;
pub mod broker_configs;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod meta_properties;
pub mod metrics;
pub mod net;
pub mod replication;
pub mod security;
pub mod security_sync;
pub mod state;

pub use api::{Decoded, decode_request};
pub use broker::Broker;
pub use config::{BrokerConfig, ClusterConfig};
pub use metrics::{DataPathStats, StatsSnapshot};
pub use sluice_io::DataPath;
pub use sluice_log::{AppendPath, FlushPolicy, LogConfig};
pub use state::Advertised;
