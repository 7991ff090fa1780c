//! Request decoding, routing and the API handlers.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, RequestKind,
    ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_log::producer::SequenceError;
use sluice_log::{AppendError, FlushPolicy, Partition, ReadError, TopicError, batch::BatchError};

use crate::fetch_writer::{Part, PartitionData, RecordsRegion, TopicData, encode_fetch_response};
use crate::group_handlers as gh;
use crate::server::{Close, Inner};

/// Kafka error codes used here.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
}

/// The API versions this broker speaks (DESIGN.md §4).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// Transaction APIs: not advertised (transactions are not supported), but a
/// client that sends one anyway gets UNSUPPORTED_VERSION in every error field
/// instead of a dropped connection.
const TRANSACTIONAL: &[(ApiKey, i16, i16)] = &[
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// Kafka's default `message.max.bytes` (1 MiB + the 12-byte log overhead).
const MAX_BATCH_BYTES: usize = 1_048_588;

fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .chain(TRANSACTIONAL)
        .find(|(k, _, _)| *k == api)
        .map(|(_, lo, hi)| (*lo, *hi))
}

pub(crate) enum Outcome {
    Respond(Vec<Part>),
    /// Produce with acks=0: Kafka sends nothing back.
    NoResponse,
}

fn protocol(why: impl Into<String>) -> Close {
    Close::Protocol(why.into())
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A request frame, decoded.
pub enum Decoded {
    Request(RequestHeader, Box<RequestKind>),
    /// ApiVersions at a version we do not speak: answered, not refused.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Decodes one request frame (without its size prefix): the API key and
/// version must be ones Sluice serves, and header and body must decode
/// from the frame's bytes alone. The error says why not; the connection
/// that sent it is closed.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, String> {
    if frame.len() < 8 {
        return Err(format!("request header truncated ({} bytes)", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| format!("unknown API key {key}"))?;
    let Some((lo, hi)) = supported(api) else {
        return Err(format!("{api:?} (key {key}) is not supported"));
    };
    if !(lo..=hi).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!("{api:?} v{version} is not supported (v{lo}–v{hi})"));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| format!("bad {api:?} v{version} request header: {e}"))?;
    let request = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| format!("bad {api:?} v{version} request body: {e:#}"))?;
    Ok(Decoded::Request(header, Box::new(request)))
}

/// Decodes and answers one request frame (without its size prefix).
pub(crate) async fn handle(
    inner: &Arc<Inner>,
    frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<Outcome, Close> {
    let (header, request) = match decode_request(frame).map_err(protocol)? {
        Decoded::Request(header, request) => (header, *request),
        Decoded::UnsupportedApiVersions { correlation_id } => {
            // KIP-511: answer in v0 with error 35 and our ranges, so the client
            // can retry with a version we speak.
            return Ok(Outcome::Respond(api_versions_response(
                correlation_id,
                0,
                code::UNSUPPORTED_VERSION,
            )));
        }
    };
    let version = header.request_api_version;
    let api = ApiKey::try_from(header.request_api_key)
        .map_err(|_| protocol("unknown API key after decoding"))?;
    let response = match request {
        RequestKind::ApiVersions(_) => {
            return Ok(Outcome::Respond(api_versions_response(
                header.correlation_id,
                version,
                code::NONE,
            )));
        }
        RequestKind::Fetch(r) => {
            let named: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
            let limit = inner.config.max_partitions_per_fetch;
            if named > limit {
                return Err(protocol(format!(
                    "Fetch names {named} partitions, more than --max-partitions-per-fetch {limit}"
                )));
            }
            return Ok(Outcome::Respond(
                fetch(inner, r, version, header.correlation_id).await,
            ));
        }
        RequestKind::Produce(r) => match produce(inner, r).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Ok(Outcome::NoResponse),
        },
        // Handlers that may touch the disk (topic auto-creation, index and
        // header reads, fsyncs) run on the blocking pool, off the workers.
        RequestKind::Metadata(r) => {
            // Only creating a topic touches the disk; naming topics that
            // exist (every client's periodic refresh) is answered here,
            // without a blocking-pool thread: a refresh from every client at
            // once grew the pool by a thread each (docs/BENCHMARKS.md, soak).
            let creates = r.topics.as_ref().is_some_and(|list| {
                list.iter().any(|t| {
                    t.name
                        .as_ref()
                        .is_some_and(|n| inner.log.partition_count(&n.0).is_none())
                })
            });
            if creates {
                ResponseKind::Metadata(off_runtime(inner, move |i| metadata(i, r, version)).await?)
            } else {
                ResponseKind::Metadata(metadata(inner, r, version))
            }
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(off_runtime(inner, move |i| list_offsets(i, r)).await?)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(off_runtime(inner, move |i| create_topics(i, r)).await?)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(off_runtime(inner, move |i| delete_topics(i, r)).await?)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs(inner, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(off_runtime(inner, move |i| init_producer_id(i, r)).await?)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(gh::find_coordinator(inner, r, version))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let host = format!("/{}", peer.ip());
            ResponseKind::JoinGroup(gh::join_group(inner, r, version, &client_id, &host).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(gh::sync_group(inner, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(gh::heartbeat(inner, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(gh::leave_group(inner, r, version)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(gh::offset_commit(inner, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(gh::offset_fetch(inner, r, version))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(gh::list_groups(inner, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(gh::describe_groups(inner, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(off_runtime(inner, move |i| gh::delete_groups(i, r)).await?)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(off_runtime(inner, move |i| gh::offset_delete(i, r)).await?)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions(inner, r))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            let mut out = kafka_protocol::messages::AddPartitionsToTxnResponse::default();
            out.error_code = code::UNSUPPORTED_VERSION;
            out.results_by_topic_v3_and_below = r
                .v3_and_below_topics
                .into_iter()
                .map(|t| {
                    let mut tr = kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
                    tr.results_by_partition = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
                            pr.partition_index = *p;
                            pr.partition_error_code = code::UNSUPPORTED_VERSION;
                            pr
                        })
                        .collect();
                    tr.name = t.name;
                    tr
                })
                .collect();
            ResponseKind::AddPartitionsToTxn(out)
        }
        RequestKind::AddOffsetsToTxn(_) => {
            let mut out = kafka_protocol::messages::AddOffsetsToTxnResponse::default();
            out.error_code = code::UNSUPPORTED_VERSION;
            ResponseKind::AddOffsetsToTxn(out)
        }
        RequestKind::EndTxn(r) => {
            let mut out = kafka_protocol::messages::EndTxnResponse::default();
            out.error_code = code::UNSUPPORTED_VERSION;
            out.producer_id = r.producer_id;
            out.producer_epoch = r.producer_epoch;
            ResponseKind::EndTxn(out)
        }
        RequestKind::TxnOffsetCommit(r) => {
            let mut out = kafka_protocol::messages::TxnOffsetCommitResponse::default();
            out.topics = r
                .topics
                .into_iter()
                .map(|t| {
                    let mut tr = kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
                    tr.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
                            pr.partition_index = p.partition_index;
                            pr.error_code = code::UNSUPPORTED_VERSION;
                            pr
                        })
                        .collect();
                    tr.name = t.name;
                    tr
                })
                .collect();
            ResponseKind::TxnOffsetCommit(out)
        }
        other => return Err(protocol(format!("no handler for {other:?}"))),
    };
    encode(api, version, header.correlation_id, &response).map(Outcome::Respond)
}

/// Runs a synchronous handler on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> T + Send + 'static,
) -> Result<T, Close> {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .map_err(|e| Close::Io(format!("handler task failed: {e}")))
}

fn encode(
    api: ApiKey,
    version: i16,
    correlation: i32,
    response: &ResponseKind,
) -> Result<Vec<Part>, Close> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation;
    header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| response.encode(&mut buf, version))
        .map_err(|e| Close::Io(format!("encoding {api:?} v{version} response: {e}")))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(vec![Part::Bytes(buf.to_vec())])
}

/// ApiVersions: the response header is v0 at every version, and no optional
/// tagged fields are sent (librdkafka < 2.2 misparses them).
fn api_versions_response(correlation: i32, version: i16, error: i16) -> Vec<Part> {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error;
    r.api_keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *lo;
            v.max_version = *hi;
            v
        })
        .collect();
    let mut buf = BytesMut::with_capacity(128);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&correlation.to_be_bytes());
    if r.encode(&mut buf, version).is_err() {
        // Cannot happen for the versions we answer with; fall back to v0.
        buf.truncate(8);
        let _ = r.encode(&mut buf, 0);
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    vec![Part::Bytes(buf.to_vec())]
}

fn topic_error_code(e: &TopicError) -> i16 {
    match e {
        TopicError::InvalidName(..) => code::INVALID_TOPIC_EXCEPTION,
        TopicError::Exists(_) => code::TOPIC_ALREADY_EXISTS,
        TopicError::NotFound(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidPartitions => code::INVALID_PARTITIONS,
        TopicError::Io { .. } => code::KAFKA_STORAGE_ERROR,
    }
}

/// Looks a topic up, creating it on first use when allowed. Returns the
/// partition count, or a Kafka error code.
fn ensure_topic(inner: &Inner, name: &str, create: bool) -> Result<u32, i16> {
    if let Some(n) = inner.log.partition_count(name) {
        return Ok(n);
    }
    if let Err(e) = sluice_log::validate_topic_name(name) {
        return Err(topic_error_code(&e));
    }
    if !create {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    match inner
        .log
        .create_topic(name, inner.config.default_partitions.max(1))
    {
        Ok(()) => {
            tracing::info!(topic = name, "auto-created topic");
            Ok(inner.config.default_partitions.max(1))
        }
        // Another connection created it first.
        Err(TopicError::Exists(_)) => inner
            .log
            .partition_count(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(e) => Err(topic_error_code(&e)),
    }
}

fn partition(inner: &Inner, topic: &str, index: i32) -> Option<Arc<Partition>> {
    u32::try_from(index)
        .ok()
        .and_then(|i| inner.log.partition(topic, i))
}

fn metadata(inner: &Inner, r: MetadataRequest, version: i16) -> MetadataResponse {
    let may_create =
        inner.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    // Null asks for every topic; so does an empty list in v0.
    let every =
        r.topics.is_none() || (version == 0 && r.topics.as_ref().is_some_and(|t| t.is_empty()));
    let mut topics: Vec<(String, Result<u32, i16>)> = match &r.topics {
        _ if every => inner
            .log
            .topics()
            .into_iter()
            .map(|(t, n)| (t, Ok(n)))
            .collect(),
        None => Vec::new(),
        Some(list) => list
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .map(|name| {
                let found = ensure_topic(inner, &name, may_create);
                (name, found)
            })
            .collect(),
    };
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(0);
    broker.host = str_bytes(&inner.advertised.ip().to_string());
    broker.port = i32::from(inner.advertised.port());
    out.brokers = vec![broker];
    out.cluster_id = Some(str_bytes("sluice"));
    out.controller_id = BrokerId(0);
    out.topics = topics
        .into_iter()
        .map(|(name, found)| {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(TopicName(str_bytes(&name)));
            match found {
                Ok(n) => {
                    t.partitions = (0..n as i32)
                        .map(|i| {
                            let mut p = MetadataResponsePartition::default();
                            p.partition_index = i;
                            p.leader_id = BrokerId(0);
                            // −1 keeps clients from offset-validation round trips.
                            p.leader_epoch = -1;
                            p.replica_nodes = vec![BrokerId(0)];
                            p.isr_nodes = vec![BrokerId(0)];
                            p
                        })
                        .collect();
                }
                Err(code) => t.error_code = code,
            }
            t
        })
        .collect();
    out
}

fn append_error_code(e: &AppendError) -> i16 {
    match e {
        AppendError::InvalidBatch(BatchError::CrcMismatch { .. }) => code::CORRUPT_MESSAGE,
        AppendError::InvalidBatch(BatchError::UnsupportedMagic(_)) => {
            code::UNSUPPORTED_FOR_MESSAGE_FORMAT
        }
        AppendError::InvalidBatch(_) | AppendError::Empty => code::INVALID_RECORD,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
            code::OUT_OF_ORDER_SEQUENCE_NUMBER
        }
        AppendError::Sequence(SequenceError::FencedEpoch { .. }) => code::INVALID_PRODUCER_EPOCH,
        AppendError::TooLarge { .. } => code::RECORD_LIST_TOO_LARGE,
        AppendError::Offline(_) | AppendError::Io { .. } | AppendError::NoSpace { .. } => {
            code::KAFKA_STORAGE_ERROR
        }
    }
}

/// Produce: validates and appends each partition's batches; acks=-1 returns
/// once they are durable under the flush policy (`always`: synced by the
/// append; an interval: flushed now; `os`: left to the OS). acks=0 gets no
/// response at all.
async fn produce(inner: &Arc<Inner>, r: ProduceRequest) -> Option<ProduceResponse> {
    let acks = r.acks;
    let mut out = ProduceResponse::default();
    let mut appended_any = false;
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        // Known topics are a map lookup; creating one touches the disk, so
        // it runs on the blocking pool.
        let found = match inner.log.partition_count(&name) {
            Some(n) => Ok(n),
            None => {
                let (create_inner, create_name) = (inner.clone(), name.clone());
                let create = inner.config.auto_create_topics;
                tokio::task::spawn_blocking(move || {
                    ensure_topic(&create_inner, &create_name, create)
                })
                .await
                .unwrap_or(Err(code::KAFKA_STORAGE_ERROR))
            }
        };
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        for pd in topic.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = pd.index;
            p.base_offset = -1;
            p.log_append_time_ms = -1;
            p.log_start_offset = -1;
            let part = match &found {
                Ok(_) => partition(inner, &name, pd.index).ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
                Err(code) => Err(*code),
            };
            let records = pd.records.unwrap_or_default();
            let result = match part {
                Err(code) => Err(code),
                Ok(_) if records.len() > MAX_BATCH_BYTES => Err(code::MESSAGE_TOO_LARGE),
                Ok(part) => {
                    let durable_wait =
                        acks == -1 && matches!(inner.config.log.flush, FlushPolicy::Interval(_));
                    let log_part = part.clone();
                    let queued = std::time::Instant::now();
                    let appended = tokio::task::spawn_blocking(move || {
                        let started = std::time::Instant::now();
                        let result = log_part.append(&records, 0).and_then(|info| {
                            if durable_wait {
                                log_part.flush().map_err(|source| AppendError::Io {
                                    partition: log_part.name().to_string(),
                                    source,
                                })?;
                            }
                            Ok(info)
                        });
                        (result, started - queued, started.elapsed())
                    })
                    .await
                    .map(|(result, queue, took)| {
                        inner.latencies.append_queue.observe(queue);
                        inner.latencies.append.observe(took);
                        result
                    });
                    match appended {
                        Ok(Ok(info)) => {
                            appended_any = true;
                            Ok((info, part.log_start()))
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(topic = %name, partition = pd.index, "produce refused: {e}");
                            Err(append_error_code(&e))
                        }
                        Err(e) => {
                            tracing::error!("append task failed: {e}");
                            Err(code::KAFKA_STORAGE_ERROR)
                        }
                    }
                }
            };
            match result {
                Ok((info, log_start)) => {
                    p.base_offset = info.base_offset;
                    p.log_start_offset = log_start;
                }
                Err(code) => p.error_code = code,
            }
            t.partition_responses.push(p);
        }
        out.responses.push(t);
    }
    if appended_any {
        inner.appended.notify_waiters();
    }
    (acks != 0).then_some(out)
}

/// Fetch: gathers a file region per partition; parks until `min_bytes` are
/// there or `max_wait_ms` passes, woken by appends.
async fn fetch(inner: &Arc<Inner>, r: FetchRequest, version: i16, correlation: i32) -> Vec<Part> {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0));
    let min_bytes = u64::try_from(r.min_bytes).unwrap_or(0);
    let max_bytes = u64::try_from(r.max_bytes).unwrap_or(0).max(1);
    let r = Arc::new(r);
    loop {
        let notified = inner.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Index lookups, header reads and warming cold pages may wait on the
        // disk: they run on the blocking pool, so a consumer catching up on
        // old data never stalls the workers that serve everyone else.
        let gathered = if !inner.config.fetch_isolation {
            Ok(collect_fetch(inner, &r, max_bytes, false).unwrap_or_default())
        } else if let Some(hot) = collect_cached_fetch(inner, &r, max_bytes) {
            // Everything it needs is in the page cache: no hand-off.
            Ok(hot)
        } else {
            let (gather_inner, gather_req) = (inner.clone(), r.clone());
            tokio::task::spawn_blocking(move || {
                let (topics, total, errors) =
                    collect_fetch(&gather_inner, &gather_req, max_bytes, false).unwrap_or_default();
                let (cold_regions, cold_bytes) = warm_cold_regions(&topics);
                gather_inner.stats.add_offloaded(cold_regions, cold_bytes);
                (topics, total, errors)
            })
            .await
        };
        let (topics, total, errors) = match gathered {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("fetch task failed: {e}");
                (Vec::new(), 0, true)
            }
        };
        let now = tokio::time::Instant::now();
        if total >= min_bytes.max(1) || errors || now >= deadline {
            return encode_fetch_response(version, correlation, 0, code::NONE, 0, &topics);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Reads into the page cache every region not fully there (`readahead`, no
/// copy into user space), so the send that follows cannot block on the disk.
/// Returns (regions warmed, bytes warmed).
fn warm_cold_regions(topics: &[TopicData]) -> (u64, u64) {
    let (mut regions, mut bytes) = (0, 0);
    for region in topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
    {
        let file = region.segment.file();
        if sluice_io::cache::is_resident(file, region.position, region.len).unwrap_or(true) {
            continue;
        }
        if let Err(e) = sluice_io::cache::fill(file, region.position, region.len) {
            tracing::warn!("warming a cold region: {e}");
            continue;
        }
        regions += 1;
        bytes += region.len;
    }
    (regions, bytes)
}

/// The fetch gathered on the async worker, if every header it reads and every
/// region it would send is ready in the page cache (`cachestat`, plus
/// `RWF_NOWAIT` probes of each region's first and last page, since
/// `cachestat` also counts pages readahead has not filled yet); None sends
/// it to the blocking pool, which may wait for the disk and reads cold
/// regions in before they are sent.
///
/// Measured (docs/BENCHMARKS.md, target 4): restricting this to tail reads,
/// or dropping it, made no difference the isolation runs could tell from
/// their noise, while it is worth 25–40 % of one consumer's throughput.
fn collect_cached_fetch(
    inner: &Inner,
    r: &FetchRequest,
    max_bytes: u64,
) -> Option<(Vec<TopicData>, u64, bool)> {
    let gathered = collect_fetch(inner, r, max_bytes, true)?;
    let all_ready = gathered
        .0
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
        .all(|region| {
            sluice_io::cache::is_ready(region.segment.file(), region.position, region.len)
                .unwrap_or(false)
        });
    all_ready.then_some(gathered)
}

/// Gathers a file region per requested partition. With `cached_only`, reads
/// only from the page cache and returns None as soon as a read would wait.
fn collect_fetch(
    inner: &Inner,
    r: &FetchRequest,
    max_bytes: u64,
    cached_only: bool,
) -> Option<(Vec<TopicData>, u64, bool)> {
    let mut total = 0u64;
    let mut errors = false;
    let mut topics = Vec::with_capacity(r.topics.len());
    for ft in &r.topics {
        let name = ft.topic.0.to_string();
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData {
                partition: fp.partition,
                error_code: code::NONE,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: None,
            };
            match partition(inner, &name, fp.partition) {
                None => {
                    pd.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                    errors = true;
                }
                Some(part) => {
                    // The first batch is sent whole even past the budget.
                    let budget = u64::try_from(fp.partition_max_bytes)
                        .unwrap_or(0)
                        .min(max_bytes.saturating_sub(total));
                    let read = if cached_only {
                        part.read_cached(fp.fetch_offset, budget)
                    } else {
                        part.read(fp.fetch_offset, budget)
                    };
                    match read {
                        Ok(res) => {
                            pd.high_watermark = res.log_end;
                            pd.last_stable_offset = res.log_end;
                            pd.log_start_offset = res.log_start;
                            if let Some(slice) = res.slice
                                && (budget > 0 || total == 0)
                            {
                                total += slice.len;
                                pd.records = Some(RecordsRegion {
                                    segment: slice.segment,
                                    position: slice.position,
                                    len: slice.len,
                                });
                            }
                        }
                        Err(ReadError::OffsetOutOfRange {
                            log_start, log_end, ..
                        }) => {
                            pd.error_code = code::OFFSET_OUT_OF_RANGE;
                            pd.high_watermark = log_end;
                            pd.last_stable_offset = log_end;
                            pd.log_start_offset = log_start;
                            errors = true;
                        }
                        Err(e) if cached_only && e.is_would_block() => return None,
                        Err(e) => {
                            tracing::error!(topic = %name, partition = fp.partition, "read failed: {e}");
                            pd.error_code = code::KAFKA_STORAGE_ERROR;
                            errors = true;
                        }
                    }
                }
            }
            partitions.push(pd);
        }
        topics.push(TopicData { name, partitions });
    }
    Some((topics, total, errors))
}

fn list_offsets(inner: &Inner, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for lp in topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = lp.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            p.leader_epoch = -1;
            match partition(inner, &name, lp.partition_index) {
                None => p.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => match lp.timestamp {
                    -1 => p.offset = part.log_end(),
                    -2 => p.offset = part.log_start(),
                    ts if ts >= 0 => match part.offset_for_timestamp(ts) {
                        Ok(Some(offset)) => {
                            p.offset = offset;
                            p.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(_) => p.error_code = code::KAFKA_STORAGE_ERROR,
                    },
                    // −3 (max timestamp) and other specials: the latest offset.
                    _ => p.offset = part.log_end(),
                },
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}

fn create_topics(inner: &Inner, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = topic.name.clone();
        let partitions = if topic.num_partitions == -1 {
            inner.config.default_partitions as i32
        } else {
            topic.num_partitions
        };
        res.num_partitions = partitions;
        res.replication_factor = 1;
        let outcome = if partitions <= 0 {
            Err((
                code::INVALID_PARTITIONS,
                "partition count must be positive".to_string(),
            ))
        } else if topic.replication_factor > 1 {
            Err((
                code::INVALID_REPLICATION_FACTOR,
                "one broker: replication factor must be 1".to_string(),
            ))
        } else if let Err(e) = sluice_log::validate_topic_name(&name) {
            Err((topic_error_code(&e), e.to_string()))
        } else if r.validate_only {
            if inner.log.topics().iter().any(|(t, _)| *t == name) {
                Err((
                    code::TOPIC_ALREADY_EXISTS,
                    format!("topic {name:?} already exists"),
                ))
            } else {
                Ok(())
            }
        } else {
            inner
                .log
                .create_topic(&name, partitions as u32)
                .map_err(|e| (topic_error_code(&e), e.to_string()))
        };
        if let Err((code, message)) = outcome {
            res.error_code = code;
            res.error_message = Some(str_bytes(&message));
        }
        out.topics.push(res);
    }
    out
}

fn delete_topics(inner: &Inner, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut names: Vec<TopicName> = r.topic_names;
    names.extend(r.topics.into_iter().filter_map(|t| t.name));
    let mut out = DeleteTopicsResponse::default();
    for name in names {
        let mut res = DeletableTopicResult::default();
        if let Err(e) = inner.log.delete_topic(name.0.as_str()) {
            res.error_code = topic_error_code(&e);
            res.error_message = Some(str_bytes(&e.to_string()));
        }
        res.name = Some(name);
        out.responses.push(res);
    }
    out
}

/// The configuration a topic or the broker reports, as Kafka names it.
fn config_entries(inner: &Inner, broker: bool) -> Vec<(&'static str, String)> {
    let log = &inner.config.log;
    let ms = |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
    let mut entries = vec![
        ("cleanup.policy", "delete".to_string()),
        ("compression.type", "producer".to_string()),
        ("max.message.bytes", MAX_BATCH_BYTES.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("min.insync.replicas", "1".to_string()),
        (
            "retention.bytes",
            log.retention_bytes
                .map_or("-1".to_string(), |b| b.to_string()),
        ),
        ("retention.ms", ms(log.retention_age)),
        ("segment.bytes", log.segment_bytes.to_string()),
        ("segment.ms", ms(log.segment_age)),
        (
            "segment.index.bytes",
            (log.index_interval_bytes.max(1) * 8).to_string(),
        ),
        ("index.interval.bytes", log.index_interval_bytes.to_string()),
        (
            "flush.messages",
            match log.flush {
                FlushPolicy::Always => "1".to_string(),
                _ => i64::MAX.to_string(),
            },
        ),
        (
            "flush.ms",
            match log.flush {
                FlushPolicy::Interval(d) => d.as_millis().to_string(),
                FlushPolicy::Always => "0".to_string(),
                FlushPolicy::Os => i64::MAX.to_string(),
            },
        ),
    ];
    if broker {
        entries.extend([
            ("broker.id", "0".to_string()),
            ("log.dirs", inner.config.data_dir.display().to_string()),
            (
                "num.partitions",
                inner.config.default_partitions.to_string(),
            ),
            (
                "auto.create.topics.enable",
                inner.config.auto_create_topics.to_string(),
            ),
            (
                "socket.request.max.bytes",
                inner.config.max_frame_bytes.to_string(),
            ),
            ("default.replication.factor", "1".to_string()),
        ]);
    }
    entries
}

/// DescribeConfigs for topics (type 2) and the broker (type 4): read-only
/// values from the broker's settings, enough for common tools.
fn describe_configs(inner: &Inner, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = res.resource_type;
        result.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let entries = match res.resource_type {
            TOPIC if inner.log.topics().iter().any(|(t, _)| t == name) => {
                Some(config_entries(inner, false))
            }
            TOPIC => {
                result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                None
            }
            BROKER if name.is_empty() || name == "0" => Some(config_entries(inner, true)),
            _ => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message = Some(str_bytes("unknown resource"));
                None
            }
        };
        for (key, value) in entries.unwrap_or_default() {
            if let Some(keys) = &res.configuration_keys
                && !keys.iter().any(|k| k.as_str() == key)
            {
                continue;
            }
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(key);
            c.value = Some(str_bytes(&value));
            c.read_only = true;
            c.config_source = if res.resource_type == BROKER { 4 } else { 5 }; // static broker / default
            result.configs.push(c);
        }
        out.results.push(result);
    }
    out
}

fn create_partitions(inner: &Inner, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut out = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default();
        let name = t.name.0.to_string();
        res.name = t.name;
        let current = inner.log.topics().into_iter().find(|(n, _)| *n == name);
        let outcome = match current {
            None => Err((
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic {name:?}"),
            )),
            Some((_, n)) if t.count <= n as i32 => Err((
                code::INVALID_PARTITIONS,
                format!("topic {name:?} has {n} partitions; the count can only grow"),
            )),
            Some(_) if r.validate_only => Ok(()),
            Some(_) => inner
                .log
                .add_partitions(&name, t.count as u32)
                .map_err(|e| (topic_error_code(&e), e.to_string())),
        };
        if let Err((code, message)) = outcome {
            res.error_code = code;
            res.error_message = Some(str_bytes(&message));
        }
        out.results.push(res);
    }
    out
}

/// InitProducerId for idempotent producers: a fresh id at epoch 0, or, for a
/// producer that names its id and epoch (KIP-360), the same id one epoch on.
/// Transactional ids are not supported (transactions are out of scope).
fn init_producer_id(inner: &Inner, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        out.error_code = code::UNSUPPORTED_VERSION;
        return out;
    }
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
        out.producer_id = r.producer_id;
        out.producer_epoch = r.producer_epoch + 1;
        return out;
    }
    match inner.producer_ids.next() {
        Ok(id) => {
            out.producer_id = ProducerId(id);
            out.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!("allocating a producer id: {e}");
            out.error_code = code::KAFKA_STORAGE_ERROR;
        }
    }
    out
}
