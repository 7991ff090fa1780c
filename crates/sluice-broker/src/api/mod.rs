//! The Kafka protocol: from a request frame's bytes to the reply's parts.
//!
//! `handle` decodes a frame (`decode`), `dispatch` routes the decoded
//! request to its API family's handler, and the reply comes back as parts —
//! encoded byte runs and, for Fetch, file regions — for `net` to send.
//! Nothing here sees a socket or a connection: a frame that cannot be
//! answered comes back as an [`ApiError`] and `net` decides what to do.
//!
//! Handlers that may touch the disk (creating topics and partitions, index
//! and header reads, fsyncs) take a [`Blocking`] token, which only
//! `off_runtime` makes: they cannot be called on an async worker.

mod acls;
mod admin;
pub mod authz;
pub mod client_quotas;
mod configs;
pub mod coordination;
mod decode;
mod encode;
mod epochs;
pub mod errors;
mod fetch;
pub mod fetch_writer;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producer_ids;
mod producers;
mod reassign;
pub mod sasl;
mod scram_credentials;
pub mod session;
mod topics;
pub mod transactions;
mod txn_markers;
pub mod versions;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

pub use decode::{Decoded, decode_request};
pub use fetch_writer::{Part, PartitionData, RecordsRegion, TopicData};
pub use session::{ListenerInfo, Session};

use crate::state::BrokerState;

/// What a request gets back.
#[derive(Debug)]
pub enum Reply {
    /// The whole response frame (size prefix included), as parts.
    Respond(Vec<Part>),
    /// Produce with acks=0: Kafka sends nothing back.
    NoResponse,
    /// Send this, then close the connection for the reason given (a failed
    /// authentication).
    RespondThenClose(Vec<Part>, String),
}

/// A frame that cannot be answered: the connection that sent it is closed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The frame does not decode, or names an API or version not served.
    #[error("{0}")]
    Malformed(String),
    /// The broker failed to produce an answer (a handler task died, an
    /// encoder refused a field).
    #[error("internal error: {0}")]
    Internal(String),
    /// The session may not send this request now (before authentication,
    /// or after its session expired).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authorization has no rule for this API (`authz::rule_for`): it is
    /// never served.
    #[error("{0}")]
    Unauthorized(String),
}

/// Who sent a request, as the group coordinator reports members.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Proof that the code holding it runs on the blocking pool, where waiting
/// for the disk stalls no other connection. Made only by `off_runtime`.
pub struct Blocking(());

/// Decodes and answers one request frame (without its size prefix) from
/// the connection whose identity is `session`.
pub async fn handle(
    state: &Arc<BrokerState>,
    frame: Bytes,
    session: &mut Session,
) -> Result<Reply, ApiError> {
    // The session's rules first, from the API key alone: before it has
    // authenticated, a connection gets no further than that.
    let key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
    let api = key.and_then(|k| ApiKey::try_from(k).ok());
    session.request_bytes = frame.len();
    session.mute_for = std::time::Duration::ZERO;
    if let Some(why) = session.refuses(api, std::time::Instant::now()) {
        state
            .auth_stats
            .refused_unauthenticated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::Unauthenticated(why));
    }
    match decode_request(frame).map_err(ApiError::Malformed)? {
        Decoded::Request(header, request) => match *request {
            RequestKind::SaslHandshake(r) => {
                let version = header.request_api_version;
                let response = sasl::handshake(state, session, r, version);
                encode::response(
                    ApiKey::SaslHandshake,
                    version,
                    header.correlation_id,
                    &ResponseKind::SaslHandshake(response),
                )
                .map(Reply::Respond)
            }
            RequestKind::SaslAuthenticate(r) => {
                let version = header.request_api_version;
                let done = sasl::authenticate(state, session, r).await;
                let parts = encode::response(
                    ApiKey::SaslAuthenticate,
                    version,
                    header.correlation_id,
                    &ResponseKind::SaslAuthenticate(done.response),
                )?;
                Ok(match done.close {
                    Some(reason) => Reply::RespondThenClose(parts, reason),
                    None => Reply::Respond(parts),
                })
            }
            request => dispatch(state, header, request, session).await,
        },
        // KIP-511: answer in v0 with error 35 and our ranges, so the client
        // can retry with a version we speak.
        Decoded::UnsupportedApiVersions { correlation_id } => Ok(Reply::Respond(
            versions::api_versions_response(correlation_id, 0, errors::UNSUPPORTED_VERSION),
        )),
    }
}

/// Answers one decoded request.
pub async fn dispatch(
    state: &Arc<BrokerState>,
    header: RequestHeader,
    request: RequestKind,
    session: &mut Session,
) -> Result<Reply, ApiError> {
    let client = ClientAddr(session.peer);
    let started = std::time::Instant::now();
    // Quotas are kept per principal name and client id (Kafka's quota
    // entities); inter-broker requests are never throttled.
    let quota_user = session.principal.name.clone();
    let quota_client = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let version = header.request_api_version;
    let correlation = header.correlation_id;
    let api = ApiKey::try_from(header.request_api_key)
        .map_err(|_| ApiError::Malformed("unknown API key after decoding".into()))?;
    // With an authorizer, Kafka's rules first (`authz`): what is refused
    // is never served. Without one, nothing here is checked.
    let az = authz::Authz::new(state, &session.principal, session.peer.ip());
    let (request, mut fixup) = match &az {
        None => (request, authz::Fixup::None),
        Some(az) => match authz::gate(az, state, api, version, request) {
            authz::Gate::Serve(request, fixup) => (request, fixup),
            authz::Gate::Answer(response) => {
                let mut response = response;
                charge_request_time(
                    state,
                    session,
                    &quota_user,
                    &quota_client,
                    started,
                    &mut response,
                );
                return encode::response(api, version, correlation, &response).map(Reply::Respond);
            }
            authz::Gate::Silent => return Ok(Reply::NoResponse),
            authz::Gate::Refuse(why) => return Err(ApiError::Unauthorized(why)),
        },
    };
    let response = match request {
        RequestKind::ApiVersions(_) => {
            return Ok(Reply::Respond(versions::api_versions_response(
                correlation,
                version,
                errors::NONE,
            )));
        }
        RequestKind::Fetch(mut r) => {
            let follower = r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0;
            // A consumer with a byte-rate quota gets at most what its quota
            // allows over the quota window in one response (Kafka's
            // getMaxValueInQuotaWindow), so one Fetch alone is never over.
            if !follower && let Some(cap) = state.quotas.fetch_max_bytes(&quota_user, &quota_client)
            {
                let cap = i32::try_from(cap.max(1)).unwrap_or(i32::MAX);
                r.max_bytes = r.max_bytes.min(cap);
            }
            let refused = fixup.take_fetch();
            let (parts, throttle_ms) =
                fetch::fetch(state, r, version, correlation, refused, |bytes| {
                    if follower {
                        return 0;
                    }
                    let ms = client_quotas::throttle_for(
                        state,
                        client_quotas::Direction::Fetch,
                        &quota_user,
                        &quota_client,
                        bytes,
                    );
                    if ms > 0 {
                        // A throttled answer carries no records: they were not
                        // sent, so they do not count (Kafka unrecords them too).
                        state.quotas.unrecord_fetch(
                            &quota_user,
                            &quota_client,
                            bytes,
                            std::time::Instant::now(),
                        );
                    }
                    ms
                })
                .await;
            session.mute_for = millis(throttle_ms);
            return Ok(Reply::Respond(parts));
        }
        RequestKind::Produce(r) => {
            // Charged by the request's size, as Kafka does, acks=0 too.
            let throttle_ms = client_quotas::throttle_for(
                state,
                client_quotas::Direction::Produce,
                &quota_user,
                &quota_client,
                session.request_bytes as u64,
            );
            session.mute_for = millis(throttle_ms);
            match produce::produce(state, r).await {
                Some(mut response) => {
                    response.throttle_time_ms = throttle_ms;
                    ResponseKind::Produce(response)
                }
                None => return Ok(Reply::NoResponse),
            }
        }
        RequestKind::Metadata(r) if state.cluster().is_some() => {
            let c = state
                .cluster()
                .ok_or_else(|| ApiError::Internal("no cluster".into()))?;
            ResponseKind::Metadata(
                metadata::cluster_metadata(state, c, r, version, &session.listener.name).await,
            )
        }
        RequestKind::Metadata(r) => {
            // Only creating a topic touches the disk; naming topics that
            // exist (every client's periodic refresh) is answered here,
            // without a blocking-pool thread: a refresh from every client at
            // once grew the pool by a thread each (docs/BENCHMARKS.md, soak).
            let listener = session.listener.name.clone();
            if metadata::creates_topics(state, &r, version) {
                ResponseKind::Metadata(
                    off_runtime(state, move |s, b| {
                        metadata::metadata(s, r, version, Some(b), &listener)
                    })
                    .await?,
                )
            } else {
                ResponseKind::Metadata(metadata::metadata(state, r, version, None, &listener))
            }
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(
            off_runtime(state, move |s, b| {
                list_offsets::list_offsets(s, r, version, b)
            })
            .await?,
        ),
        RequestKind::CreateTopics(r) if state.cluster().is_some() => {
            let c = state
                .cluster()
                .ok_or_else(|| ApiError::Internal("no cluster".into()))?;
            ResponseKind::CreateTopics(topics::cluster_create_topics(state, c, r, version).await)
        }
        RequestKind::DeleteTopics(r) if state.cluster().is_some() => {
            let c = state
                .cluster()
                .ok_or_else(|| ApiError::Internal("no cluster".into()))?;
            ResponseKind::DeleteTopics(topics::cluster_delete_topics(c, r).await)
        }
        RequestKind::CreatePartitions(r) if state.cluster().is_some() => {
            let c = state
                .cluster()
                .ok_or_else(|| ApiError::Internal("no cluster".into()))?;
            ResponseKind::CreatePartitions(topics::cluster_create_partitions(c, r).await)
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(producers::describe_producers(state, r))
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(txn_markers::write_txn_markers(state, r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            reassign::alter_partition_reassignments(state, r, version).await,
        ),
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
            reassign::list_partition_reassignments(state, r),
        ),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(admin::elect_leaders(state, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(epochs::offset_for_leader_epoch(state, r))
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(
            off_runtime(state, move |s, b| topics::create_topics(s, r, version, b)).await?,
        ),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(
            off_runtime(state, move |s, b| topics::delete_topics(s, r, b)).await?,
        ),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            off_runtime(state, move |s, b| topics::create_partitions(s, r, b)).await?,
        ),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(admin::describe_cluster(
            state,
            r,
            version,
            &session.listener.name,
        )),
        RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(
            off_runtime(state, move |s, b| admin::describe_log_dirs(s, r, b)).await?,
        ),
        RequestKind::DescribeTopicPartitions(r) => {
            // Topics the principal may not Describe are left out (or, named,
            // refused) as the answer is paged, so a cursor never names one.
            let checker = az.as_ref().map(authz::Authz::checker);
            let describable = |topic: &str| {
                checker.as_ref().is_none_or(|c| {
                    c.authorize(
                        crate::security::acl::AclOperation::Describe,
                        crate::security::acl::ResourceType::Topic,
                        topic,
                    )
                })
            };
            ResponseKind::DescribeTopicPartitions(admin::describe_topic_partitions(
                state,
                r,
                describable,
            ))
        }
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(
            off_runtime(state, move |s, b| admin::delete_records(s, r, b)).await?,
        ),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(state, r, version))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(
            off_runtime(state, move |s, b| configs::alter_configs(s, r, b)).await?,
        ),
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            off_runtime(state, move |s, b| {
                configs::incremental_alter_configs(s, r, b)
            })
            .await?,
        ),
        RequestKind::InitProducerId(r)
            if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) =>
        {
            ResponseKind::InitProducerId(transactions::init_producer_id(state, r, version).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(
            off_runtime(state, move |s, b| producer_ids::init_producer_id(s, r, b)).await?,
        ),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            transactions::add_partitions_to_txn(state, r, version).await,
        ),
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets_to_txn(state, r, version).await)
        }
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(transactions::end_txn(state, r, version).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(state, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(transactions::describe_transactions(state, r).await)
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(transactions::list_transactions(state, r))
        }
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
            groups::find_coordinator(state, r, version, &session.listener.name).await,
        ),
        RequestKind::JoinGroup(r) => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let host = format!("/{}", client.0.ip());
            ResponseKind::JoinGroup(groups::join_group(state, r, version, &client_id, &host).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(state, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(state, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(state, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(state, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(state, r, version).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(state, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(state, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(state, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(state, r).await)
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(client_quotas::describe_client_quotas(state, r))
        }
        RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(
            off_runtime(state, move |s, b| {
                client_quotas::alter_client_quotas(s, r, b)
            })
            .await?,
        ),
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(
            off_runtime(state, move |s, b| acls::create_acls(s, r, version, b)).await?,
        ),
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acls::describe_acls(state, r, version))
        }
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(
            off_runtime(state, move |s, b| acls::delete_acls(s, r, version, b)).await?,
        ),
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            off_runtime(state, move |s, b| {
                scram_credentials::alter_user_scram_credentials(s, r, b)
            })
            .await?,
        ),
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            scram_credentials::describe_user_scram_credentials(state, r),
        ),
        other => {
            return Err(ApiError::Malformed(format!("no handler for {other:?}")));
        }
    };
    let mut response = response;
    if let Some(az) = &az {
        fixup.apply(az, version, &mut response);
    }
    charge_request_time(
        state,
        session,
        &quota_user,
        &quota_client,
        started,
        &mut response,
    );
    encode::response(api, version, correlation, &response).map(Reply::Respond)
}

/// The request quota (request_percentage): the time this request took,
/// answered as throttle_time_ms (the larger of it and a byte-rate
/// throttle already set), and the connection muted for it.
fn charge_request_time(
    state: &BrokerState,
    session: &mut Session,
    quota_user: &str,
    quota_client: &str,
    started: std::time::Instant,
    response: &mut ResponseKind,
) {
    let request_ms = client_quotas::request_throttle_for(
        state,
        quota_user,
        quota_client,
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    );
    if request_ms > 0 {
        let ms = raise_throttle(response, request_ms);
        session.mute_for = session.mute_for.max(millis(ms));
    }
}

fn millis(ms: i32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Raises a response's `throttle_time_ms` to at least `ms`; returns what it
/// is now (`ms` for a response without the field).
fn raise_throttle(response: &mut ResponseKind, ms: i32) -> i32 {
    macro_rules! raise {
        ($($variant:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$variant(r) => {
                    r.throttle_time_ms = r.throttle_time_ms.max(ms);
                    r.throttle_time_ms
                })*
                _ => ms,
            }
        };
    }
    raise!(
        Produce,
        Metadata,
        ListOffsets,
        OffsetForLeaderEpoch,
        CreateTopics,
        DeleteTopics,
        CreatePartitions,
        DescribeConfigs,
        AlterConfigs,
        IncrementalAlterConfigs,
        DescribeCluster,
        DescribeLogDirs,
        DescribeTopicPartitions,
        DeleteRecords,
        InitProducerId,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeTransactions,
        ListTransactions,
        DescribeProducers,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetDelete,
        ElectLeaders,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        DescribeClientQuotas,
        AlterClientQuotas,
    )
}

/// Runs a handler that may wait for the disk on the blocking pool, handing
/// it the [`Blocking`] token.
pub(crate) async fn off_runtime<T: Send + 'static>(
    state: &Arc<BrokerState>,
    f: impl FnOnce(&BrokerState, &Blocking) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state, &Blocking(())))
        .await
        .map_err(|e| ApiError::Internal(format!("handler task failed: {e}")))
}

/// A protocol string from a Rust one.
pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
