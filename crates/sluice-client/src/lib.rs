//! # sluice-client: what is not the broker
//!
//! Everything the command-line tools, the load generator and the tests need
//! to talk to a Kafka-compatible broker, without depending on the broker:
//!
//! - [`Client`]: a small blocking client (Produce, pipelined or not; Fetch,
//!   ListOffsets, Metadata, CreateTopics, DeleteTopics; the admin calls
//!   DescribeCluster, DescribeConfigs, IncrementalAlterConfigs and
//!   DeleteRecords) and [`wire`], its request framing, for callers that need
//!   raw frames.
//! - [`ClientError`] and [`error_name`]: Kafka error codes by Kafka's names,
//!   from `kafka_protocol`'s `ResponseError`.
//! - [`encode_batch`] and [`plain_record`] build RecordBatch v2 batches;
//!   [`batches`] walks the whole batches of a records field (a fetch may end
//!   mid-batch) and [`whole_len`] says where the whole ones end.
//! - [`murmur2`] and [`partition_for_key`]: Kafka's key partitioner.
//! - [`parse_size`]: `64k`, `1MiB`, `1g`.
//! - [`scram`]: SCRAM-SHA-256/512, both sides (the broker's server side
//!   uses it too), and [`security`]: TLS and SASL for a connection
//!   ([`Client::connect_secure`], [`ClientSecurity`]), configured as
//!   librdkafka's properties say; SCRAM users over the protocol
//!   (AlterUserScramCredentials, DescribeUserScramCredentials: [`ScramUser`]).
//! - [`txn`]: transactions — FindCoordinator, InitProducerId,
//!   AddPartitionsToTxn, EndTxn, DescribeTransactions, ListTransactions,
//!   DescribeProducers, read_committed fetches — and [`TxnProducer`], a
//!   transactional producer's state machine.

mod admin;
mod batch;
mod client;
mod error;
mod partition;
pub mod scram;
pub mod security;
mod size;
pub mod txn;
mod users;
pub mod wire;

pub use admin::{
    BrokerInfo, ClusterInfo, ConfigChange, ConfigEntry, ConfigOp, RESOURCE_BROKER, RESOURCE_TOPIC,
    config_source,
};
pub use batch::{Batch, Batches, batches, encode_batch, plain_record, whole_len};
pub use client::{Client, Fetched, PartitionReplicas, TopicInfo, produce_request, topic_name};
pub use error::{ClientError, SecurityConfigError, TlsError, error_name};
pub use partition::{murmur2, partition_for_key};
pub use security::{ClientSecurity, SaslConfig, SaslMechanism, SecurityProtocol};
pub use size::parse_size;
pub use txn::{ProducerIdentity, TxnProducer};
pub use users::ScramUser;
