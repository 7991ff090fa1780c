//! The client side of Kafka's transactions (KIP-98) and the admin calls
//! around them, over the blocking [`Client`]:
//!
//! - the requests one by one: FindCoordinator (key type 1, a transactional
//!   id), InitProducerId (with or without a transactional id),
//!   AddPartitionsToTxn v3, EndTxn v3, DescribeTransactions v0,
//!   ListTransactions v0/v1, DescribeProducers v0, and a Fetch with an
//!   isolation level that returns the last stable offset and the aborted
//!   transactions;
//! - [`producer_batch`]: a pre-encoded RecordBatch v2 stamped with a
//!   producer id, epoch and base sequence (transactional or only
//!   idempotent), its CRC recomputed;
//! - [`TxnProducer`]: a transactional producer's state machine as Kafka's
//!   clients run it — init, add partitions before their first batch in a
//!   transaction, sequences per partition, commit or abort — for the load
//!   generator and tests;
//! - [`ReadCommitted`]: what a read_committed consumer drops (control
//!   batches; batches of aborted transactions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, DescribeProducersRequest, DescribeTransactionsRequest,
    EndTxnRequest, FetchRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListTransactionsRequest, MetadataRequest, ProduceRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::batch::batches;
use crate::client::{Client, produce_request, topic_name};
use crate::error::ClientError;

/// Kafka's error codes a transactional client retries or reports by name.
pub mod codes {
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const PRODUCER_FENCED: i16 = 90;
}

/// FindCoordinator's key types.
pub const KEY_TYPE_GROUP: i8 = 0;
pub const KEY_TYPE_TRANSACTION: i8 = 1;

/// A broker by id and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

impl Node {
    /// `host:port`, to connect to.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A producer id and epoch, as InitProducerId returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// One transaction as DescribeTransactions describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub error_code: i16,
    pub transactional_id: String,
    /// Kafka's state names: Empty, Ongoing, PrepareCommit, PrepareAbort,
    /// CompleteCommit, CompleteAbort, PrepareEpochFence, Dead.
    pub state: String,
    pub timeout_ms: i32,
    /// −1 when no transaction is open.
    pub start_time_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// (topic, partitions), by topic.
    pub partitions: Vec<(String, Vec<i32>)>,
}

/// One transaction as ListTransactions lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// What one broker's ListTransactions returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnList {
    pub transactions: Vec<TxnListing>,
    /// State filters the broker did not know.
    pub unknown_state_filters: Vec<String>,
}

/// One producer of a partition, as DescribeProducers describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// −1 when the producer has no open transaction on the partition.
    pub current_txn_start_offset: i64,
}

/// What a fetch with an isolation level returned for one partition.
#[derive(Debug, Clone)]
pub struct IsolatedFetch {
    pub error_code: i16,
    pub high_watermark: i64,
    /// −1 from a broker that does not report it.
    pub last_stable_offset: i64,
    /// (producer id, first offset) of the aborted transactions in the
    /// returned range (read_committed only).
    pub aborted: Vec<(i64, i64)>,
    pub records: Bytes,
}

/// Fetch isolation levels.
pub const READ_UNCOMMITTED: i8 = 0;
pub const READ_COMMITTED: i8 = 1;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn txn_id(s: &str) -> TransactionalId {
    TransactionalId(str_bytes(s))
}

/// Whether a coordinator error means: ask again shortly (the coordinator
/// is loading, moving, or finishing the previous transaction).
pub fn is_retriable_txn_error(code: i16) -> bool {
    matches!(
        code,
        codes::COORDINATOR_LOAD_IN_PROGRESS
            | codes::COORDINATOR_NOT_AVAILABLE
            | codes::NOT_COORDINATOR
            | codes::CONCURRENT_TRANSACTIONS
    )
}

impl Client {
    /// FindCoordinator (v3) of `key`: a group (key type 0) or a
    /// transactional id (key type 1).
    pub fn find_coordinator(&mut self, key: &str, key_type: i8) -> Result<Node, ClientError> {
        let mut r = FindCoordinatorRequest::default();
        r.key = str_bytes(key);
        r.key_type = key_type;
        let resp = self.call(3, &r)?;
        if resp.error_code != 0 {
            return Err(refused(resp.error_code, resp.error_message.as_ref()));
        }
        Ok(Node {
            id: resp.node_id.0,
            host: resp.host.to_string(),
            port: resp.port,
        })
    }

    /// The brokers of the cluster, from Metadata (v9) without topics.
    pub fn brokers(&mut self) -> Result<Vec<Node>, ClientError> {
        let mut r = MetadataRequest::default();
        r.topics = Some(Vec::new());
        r.allow_auto_topic_creation = false;
        let resp = self.call(9, &r)?;
        let mut nodes: Vec<Node> = resp
            .brokers
            .iter()
            .map(|b| Node {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        Ok(nodes)
    }

    /// InitProducerId (v3): a producer id and epoch for a transactional
    /// producer (`transactional_id` Some, at its coordinator) or an
    /// idempotent one (None, at any broker).
    pub fn init_producer_id(
        &mut self,
        transactional_id: Option<&str>,
        transaction_timeout_ms: i32,
    ) -> Result<ProducerIdentity, ClientError> {
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = transactional_id.map(txn_id);
        r.transaction_timeout_ms = transaction_timeout_ms;
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        let resp = self.call(3, &r)?;
        if resp.error_code != 0 {
            return Err(ClientError::Kafka(resp.error_code));
        }
        Ok(ProducerIdentity {
            producer_id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        })
    }

    /// AddPartitionsToTxn (v3): adds partitions to the producer's
    /// transaction. Returns the partitions the coordinator refused, with
    /// their error codes (empty: all added); a whole-request failure is an
    /// error.
    pub fn add_partitions_to_txn(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdentity,
        partitions: &[(String, i32)],
    ) -> Result<Vec<(String, i32, i16)>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let mut r = AddPartitionsToTxnRequest::default();
        r.v3_and_below_transactional_id = txn_id(transactional_id);
        r.v3_and_below_producer_id = ProducerId(producer.producer_id);
        r.v3_and_below_producer_epoch = producer.epoch;
        r.v3_and_below_topics = by_topic
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = AddPartitionsToTxnTopic::default();
                t.name = topic_name(name);
                t.partitions = partitions;
                t
            })
            .collect();
        let resp = self.call(3, &r)?;
        let mut refused = Vec::new();
        for t in &resp.results_by_topic_v3_and_below {
            for p in &t.results_by_partition {
                if p.partition_error_code != 0 {
                    refused.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.partition_error_code,
                    ));
                }
            }
        }
        Ok(refused)
    }

    /// EndTxn (v3): commits (`commit`) or aborts the producer's transaction.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdentity,
        commit: bool,
    ) -> Result<(), ClientError> {
        let mut r = EndTxnRequest::default();
        r.transactional_id = txn_id(transactional_id);
        r.producer_id = ProducerId(producer.producer_id);
        r.producer_epoch = producer.epoch;
        r.committed = commit;
        let resp = self.call(3, &r)?;
        match resp.error_code {
            0 => Ok(()),
            code => Err(ClientError::Kafka(code)),
        }
    }

    /// DescribeTransactions (v0) of transactional ids, at their
    /// coordinator; each description carries its own error code.
    pub fn describe_transactions(
        &mut self,
        transactional_ids: &[String],
    ) -> Result<Vec<TxnDescription>, ClientError> {
        let mut r = DescribeTransactionsRequest::default();
        r.transactional_ids = transactional_ids.iter().map(|s| txn_id(s)).collect();
        let resp = self.call(0, &r)?;
        Ok(resp
            .transaction_states
            .iter()
            .map(|s| {
                let mut partitions: Vec<(String, Vec<i32>)> = s
                    .topics
                    .iter()
                    .map(|t| {
                        let mut ps = t.partitions.clone();
                        ps.sort_unstable();
                        (t.topic.0.to_string(), ps)
                    })
                    .collect();
                partitions.sort();
                TxnDescription {
                    error_code: s.error_code,
                    transactional_id: s.transactional_id.0.to_string(),
                    state: s.transaction_state.to_string(),
                    timeout_ms: s.transaction_timeout_ms,
                    start_time_ms: s.transaction_start_time_ms,
                    producer_id: s.producer_id.0,
                    producer_epoch: s.producer_epoch,
                    partitions,
                }
            })
            .collect())
    }

    /// ListTransactions at this broker (the transactions it coordinates),
    /// filtered by state and producer id (empty: all); v1 when
    /// `min_duration_ms` is set (transactions open at least that long).
    pub fn list_transactions(
        &mut self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: Option<i64>,
    ) -> Result<TxnList, ClientError> {
        let mut r = ListTransactionsRequest::default();
        r.state_filters = states.iter().map(|s| str_bytes(s)).collect();
        r.producer_id_filters = producer_ids.iter().map(|p| ProducerId(*p)).collect();
        let version = match min_duration_ms {
            Some(ms) => {
                r.duration_filter = ms;
                1
            }
            None => 0,
        };
        let resp = self.call(version, &r)?;
        if resp.error_code != 0 {
            return Err(ClientError::Kafka(resp.error_code));
        }
        let mut transactions: Vec<TxnListing> = resp
            .transaction_states
            .iter()
            .map(|s| TxnListing {
                transactional_id: s.transactional_id.0.to_string(),
                producer_id: s.producer_id.0,
                state: s.transaction_state.to_string(),
            })
            .collect();
        transactions.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(TxnList {
            transactions,
            unknown_state_filters: resp
                .unknown_state_filters
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
    }

    /// DescribeProducers (v0) of partitions of one topic, at their leader:
    /// per partition, its active producers or its error.
    #[allow(clippy::type_complexity)]
    pub fn describe_producers(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Result<Vec<ProducerInfo>, ClientError>)>, ClientError> {
        let mut t = TopicRequest::default();
        t.name = topic_name(topic);
        t.partition_indexes = partitions.to_vec();
        let mut r = DescribeProducersRequest::default();
        r.topics = vec![t];
        let resp = self.call(0, &r)?;
        let mut out = Vec::new();
        for t in &resp.topics {
            for p in &t.partitions {
                let result = if p.error_code != 0 {
                    Err(refused(p.error_code, p.error_message.as_ref()))
                } else {
                    Ok(p.active_producers
                        .iter()
                        .map(|s| ProducerInfo {
                            producer_id: s.producer_id.0,
                            epoch: s.producer_epoch,
                            last_sequence: s.last_sequence,
                            last_timestamp: s.last_timestamp,
                            coordinator_epoch: s.coordinator_epoch,
                            current_txn_start_offset: s.current_txn_start_offset,
                        })
                        .collect())
                };
                out.push((p.partition_index, result));
            }
        }
        out.sort_by_key(|(p, _)| *p);
        Ok(out)
    }

    /// Fetches one partition from `offset` (Fetch v12) with an isolation
    /// level: [`READ_UNCOMMITTED`] or [`READ_COMMITTED`] (up to the last
    /// stable offset, with the aborted transactions).
    pub fn fetch_isolated(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
        isolation_level: i8,
    ) -> Result<IsolatedFetch, ClientError> {
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = max_bytes;
        fp.current_leader_epoch = -1;
        fp.log_start_offset = -1;
        let mut ft = FetchTopic::default();
        ft.topic = topic_name(topic);
        ft.partitions = vec![fp];
        let mut r = FetchRequest::default();
        r.replica_id = (-1).into();
        r.max_wait_ms = max_wait_ms;
        r.min_bytes = 1;
        r.max_bytes = max_bytes;
        r.isolation_level = isolation_level;
        r.session_epoch = -1;
        r.topics = vec![ft];
        let resp = self.call(12, &r)?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty fetch response".into()))?;
        Ok(IsolatedFetch {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            last_stable_offset: p.last_stable_offset,
            aborted: p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect(),
            records: p.records.clone().unwrap_or_default(),
        })
    }
}

fn refused(code: i16, message: Option<&StrBytes>) -> ClientError {
    match message {
        Some(m) if !m.is_empty() => ClientError::Refused {
            code,
            message: m.to_string(),
        },
        _ => ClientError::Kafka(code),
    }
}

/// A Produce request (v3+) of one records field to one partition, carrying
/// the producer's transactional id when its batches are transactional.
pub fn txn_produce_request(
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> ProduceRequest {
    let mut r = produce_request(topic, partition, records, -1);
    r.transactional_id = transactional_id.map(txn_id);
    r
}

/// A copy of `template` (one whole RecordBatch v2, e.g. from
/// [`encode_batch`](crate::encode_batch)) stamped with a producer id,
/// epoch and base sequence, transactional (attribute bit 4) or only
/// idempotent; the CRC is recomputed.
pub fn producer_batch(
    template: &[u8],
    producer: ProducerIdentity,
    base_sequence: i32,
    transactional: bool,
) -> Bytes {
    let mut b = template.to_vec();
    if transactional {
        sluice_log::batch::set_transactional(
            &mut b,
            producer.producer_id,
            producer.epoch,
            base_sequence,
        );
    } else {
        sluice_log::batch::set_producer(
            &mut b,
            producer.producer_id,
            producer.epoch,
            base_sequence,
        );
    }
    Bytes::from(b)
}

/// Retries `f` while it fails with a retriable coordinator error
/// ([`is_retriable_txn_error`]), sleeping `pause` between tries, for up
/// to `patience`. Returns the result and how many retries it took.
pub fn retry_coordinator<T>(
    patience: Duration,
    pause: Duration,
    mut f: impl FnMut() -> Result<T, ClientError>,
) -> Result<(T, u32), ClientError> {
    let deadline = Instant::now() + patience;
    let mut retries = 0;
    loop {
        match f() {
            Err(e)
                if e.kafka_code().is_some_and(is_retriable_txn_error)
                    && Instant::now() < deadline =>
            {
                retries += 1;
                std::thread::sleep(pause);
            }
            other => return other.map(|v| (v, retries)),
        }
    }
}

/// A transactional producer on one connection to its coordinator (which
/// single-node is also every partition's leader): Kafka's client-side
/// state machine, without buffering — the caller sends the batches
/// [`TxnProducer::batch`] stamps, on any connection to the partition's
/// leader, with [`TxnProducer::produce_request`].
pub struct TxnProducer {
    coordinator: Client,
    transactional_id: String,
    producer: ProducerIdentity,
    /// Next base sequence per partition.
    sequences: HashMap<(String, i32), i32>,
    /// Partitions added to the open transaction.
    added: BTreeSet<(String, i32)>,
    /// AddPartitionsToTxn retries after CONCURRENT_TRANSACTIONS and the like.
    pub retries: u64,
}

impl TxnProducer {
    /// Finds the coordinator of `transactional_id` through `bootstrap`,
    /// connects to it and gets a producer id and epoch (InitProducerId),
    /// retrying while the coordinator loads (`__transaction_state` is
    /// created on first use) for up to 30 s.
    pub fn init(
        bootstrap: &str,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<TxnProducer, ClientError> {
        let patience = Duration::from_secs(30);
        let pause = Duration::from_millis(50);
        let mut boot = Client::connect(bootstrap)?;
        let (node, _) = retry_coordinator(patience, pause, || {
            boot.find_coordinator(transactional_id, KEY_TYPE_TRANSACTION)
        })?;
        let mut coordinator = Client::connect(node.addr().as_str())?;
        let (producer, _) = retry_coordinator(patience, pause, || {
            coordinator.init_producer_id(Some(transactional_id), transaction_timeout_ms)
        })?;
        Ok(TxnProducer {
            coordinator,
            transactional_id: transactional_id.to_string(),
            producer,
            sequences: HashMap::new(),
            added: BTreeSet::new(),
            retries: 0,
        })
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    pub fn identity(&self) -> ProducerIdentity {
        self.producer
    }

    /// Adds partitions to the open transaction (starting it), those not
    /// yet added, retrying CONCURRENT_TRANSACTIONS (the previous
    /// transaction's markers still being written) every 2 ms for up to
    /// 30 s. Must come before the partition's first batch.
    pub fn add_partitions(&mut self, partitions: &[(String, i32)]) -> Result<(), ClientError> {
        let missing: Vec<(String, i32)> = partitions
            .iter()
            .filter(|p| !self.added.contains(*p))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (id, producer) = (self.transactional_id.clone(), self.producer);
        let coordinator = &mut self.coordinator;
        let ((), retries) =
            retry_coordinator(Duration::from_secs(30), Duration::from_millis(2), || {
                match coordinator.add_partitions_to_txn(&id, producer, &missing)?[..] {
                    [] => Ok(()),
                    // One code for the request: the first refusal's (when the
                    // coordinator refuses, it refuses every partition alike).
                    [(_, _, code), ..] => Err(ClientError::Kafka(code)),
                }
            })?;
        self.retries += u64::from(retries);
        self.added.extend(missing);
        Ok(())
    }

    /// `template` stamped as this producer's next batch to `partition`
    /// (its sequences advanced by the batch's record count). The
    /// partition must have been added to the open transaction.
    pub fn batch(&mut self, topic: &str, partition: i32, template: &[u8]) -> Bytes {
        let count = batches(template)
            .next()
            .map_or(0, |b| b.header.record_count.max(0));
        let seq = self
            .sequences
            .entry((topic.to_string(), partition))
            .or_insert(0);
        let base = *seq;
        *seq = seq.wrapping_add(count) & i32::MAX;
        producer_batch(template, self.producer, base, true)
    }

    /// The Produce request for a batch of this producer.
    pub fn produce_request(&self, topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
        txn_produce_request(Some(&self.transactional_id), topic, partition, batch)
    }

    /// Ends the open transaction (EndTxn): commit or abort. Every batch of
    /// it must have been acknowledged first. A producer that added no
    /// partition has nothing to end.
    pub fn end(&mut self, commit: bool) -> Result<(), ClientError> {
        if self.added.is_empty() {
            return Ok(());
        }
        let (id, producer) = (self.transactional_id.clone(), self.producer);
        let coordinator = &mut self.coordinator;
        retry_coordinator(Duration::from_secs(30), Duration::from_millis(2), || {
            coordinator.end_txn(&id, producer, commit)
        })?;
        self.added.clear();
        Ok(())
    }

    /// The connection to the coordinator (for admin calls beside).
    pub fn coordinator(&mut self) -> &mut Client {
        &mut self.coordinator
    }
}

/// What a read_committed consumer keeps of a partition's batches, fed
/// fetch by fetch: control batches never; a transactional batch of a
/// producer whose transaction starting at or before it was aborted (the
/// fetch's aborted list) not until that producer's next control batch.
#[derive(Debug, Default)]
pub struct ReadCommitted {
    /// Aborted transactions not yet reached: (first offset, producer id).
    pending: BTreeSet<(i64, i64)>,
    /// Producers whose batches are dropped until their next marker.
    aborting: BTreeSet<i64>,
}

impl ReadCommitted {
    /// Learns a fetch response's aborted transactions.
    pub fn add_aborted(&mut self, aborted: &[(i64, i64)]) {
        self.pending
            .extend(aborted.iter().map(|&(pid, first)| (first, pid)));
    }

    /// Whether to keep the batch with this header (its records reach the
    /// application), updating the state for the batches after it.
    pub fn keep(&mut self, h: &sluice_log::batch::BatchHeader) -> bool {
        // Every aborted transaction that starts at or before this batch
        // is active from here on.
        while let Some(&(first, pid)) = self.pending.first() {
            if first > h.last_offset() {
                break;
            }
            self.pending.pop_first();
            self.aborting.insert(pid);
        }
        if h.is_control() {
            self.aborting.remove(&h.producer_id);
            return false;
        }
        !(h.is_transactional() && self.aborting.contains(&h.producer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_batch, plain_record};
    use kafka_protocol::records::Compression;
    use sluice_log::batch::BatchHeader;

    fn template(n: i64) -> Bytes {
        let records: Vec<_> = (0..n)
            .map(|i| plain_record(i, 1_700_000_000_000, None, Bytes::from_static(b"v")))
            .collect();
        encode_batch(&records, Compression::None).expect("encode")
    }

    #[test]
    fn producer_batches_carry_the_producer_and_a_valid_crc() {
        let t = template(3);
        let who = ProducerIdentity {
            producer_id: 42,
            epoch: 7,
        };
        for transactional in [false, true] {
            let b = producer_batch(&t, who, 9, transactional);
            let h = sluice_log::batch::validate(&b).expect("valid");
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 7, 9)
            );
            assert_eq!(h.is_transactional(), transactional);
            assert_eq!(h.record_count, 3);
        }
    }

    fn header(first: i64, last: i64, pid: i64, transactional: bool, control: bool) -> BatchHeader {
        let mut b = template(last - first + 1).to_vec();
        sluice_log::batch::set_base_offset(&mut b, first);
        if transactional {
            sluice_log::batch::set_transactional(&mut b, pid, 0, 0);
        }
        let mut h = BatchHeader::parse(&b).expect("header");
        if control {
            h.attributes |= sluice_log::batch::CONTROL_BIT;
        }
        h
    }

    #[test]
    fn read_committed_drops_aborted_batches_and_markers() {
        let mut rc = ReadCommitted::default();
        // Producer 1 aborted a transaction from offset 0; producer 2 committed
        // one interleaved with it.
        rc.add_aborted(&[(1, 0)]);
        assert!(!rc.keep(&header(0, 1, 1, true, false)), "aborted data");
        assert!(rc.keep(&header(2, 3, 2, true, false)), "committed data");
        assert!(!rc.keep(&header(4, 5, 1, true, false)), "aborted data");
        assert!(!rc.keep(&header(6, 6, 1, true, true)), "abort marker");
        assert!(!rc.keep(&header(7, 7, 2, true, true)), "commit marker");
        assert!(
            rc.keep(&header(8, 9, 1, true, false)),
            "its next transaction"
        );
        assert!(rc.keep(&header(10, 12, -1, false, false)), "plain data");
    }
}
