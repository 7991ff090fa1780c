//! Fetch: gathers a file region per partition and answers through the
//! zero-copy writer (`fetch_writer`); long-polls until `min_bytes` are there.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::FetchRequest;
use sluice_log::ReadError;

use super::errors;
use super::fetch_writer::{Part, PartitionData, RecordsRegion, TopicData, encode_fetch_response};
use super::topics::partition;
use crate::state::BrokerState;

/// Fetch: gathers a file region per partition; parks until `min_bytes` are
/// there or `max_wait_ms` passes, woken by appends.
/// `throttle` is given the response's record bytes and returns the
/// consumer byte-rate quota's `throttle_time_ms`; a throttled response is
/// sent without records (Kafka's KIP-219 behaviour: the client waits out the
/// throttle before fetching again). Returns the parts and the throttle.
/// `refused` are topics the authorizer refused (`authz`), answered in
/// their place as they are; a fetch with nothing else in it is answered at
/// once.
pub async fn fetch(
    state: &Arc<BrokerState>,
    r: FetchRequest,
    version: i16,
    correlation: i32,
    mut refused: Vec<(usize, TopicData)>,
    throttle: impl FnOnce(u64) -> i32,
) -> (Vec<Part>, i32) {
    let only_refused = r.topics.is_empty() && !refused.is_empty();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0));
    let min_bytes = u64::try_from(r.min_bytes).unwrap_or(0);
    let max_bytes = u64::try_from(r.max_bytes).unwrap_or(0).max(1);
    let r = Arc::new(r);
    loop {
        let notified = state.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Index lookups, header reads and warming cold pages may wait on the
        // disk: they run on the blocking pool, so a consumer catching up on
        // old data never stalls the workers that serve everyone else.
        let gathered = if !state.config.fetch_isolation {
            Ok(collect_fetch(state, &r, max_bytes, false).unwrap_or_default())
        } else if let Some(hot) = collect_cached_fetch(state, &r, max_bytes) {
            // Everything it needs is in the page cache: no hand-off.
            Ok(hot)
        } else {
            let (gather_state, gather_req) = (state.clone(), r.clone());
            tokio::task::spawn_blocking(move || {
                let (topics, total, any_error) =
                    collect_fetch(&gather_state, &gather_req, max_bytes, false).unwrap_or_default();
                let (cold_regions, cold_bytes) = warm_cold_regions(&topics);
                gather_state.stats.add_offloaded(cold_regions, cold_bytes);
                (topics, total, any_error)
            })
            .await
        };
        let (topics, total, any_error) = match gathered {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("fetch task failed: {e}");
                (Vec::new(), 0, true)
            }
        };
        let now = tokio::time::Instant::now();
        if total >= min_bytes.max(1) || any_error || only_refused || now >= deadline {
            let throttle_ms = throttle(total);
            let mut topics = topics;
            super::authz::reinsert(&mut topics, std::mem::take(&mut refused));
            if throttle_ms > 0 {
                for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    p.records = None;
                    p.aborted_transactions.clear();
                }
            }
            let parts =
                encode_fetch_response(version, correlation, throttle_ms, errors::NONE, 0, &topics);
            return (parts, throttle_ms);
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
    state: &BrokerState,
    r: &FetchRequest,
    max_bytes: u64,
) -> Option<(Vec<TopicData>, u64, bool)> {
    let gathered = collect_fetch(state, r, max_bytes, true)?;
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

/// Marks a follower fetch whose last fetched epoch diverged from the
/// leader's log (not a Kafka code: answered with DivergingEpoch).
const DIVERGED: i16 = i16::MIN;

/// Gathers a file region per requested partition. With `cached_only`, reads
/// only from the page cache and returns None as soon as a read would wait.
fn collect_fetch(
    state: &BrokerState,
    r: &FetchRequest,
    max_bytes: u64,
    cached_only: bool,
) -> Option<(Vec<TopicData>, u64, bool)> {
    let mut total = 0u64;
    let mut any_error = false;
    // Partitions past --max-partitions-per-fetch are answered without
    // records, as Kafka answers the partitions a response has no room left
    // for (KIP-74): no error, their offsets, and the client asks again
    // (librdkafka and the Java client rotate the partitions they name).
    let limit = state.config.max_partitions_per_fetch;
    // A follower's fetch names its broker id (Kafka's replica id).
    let follower = r.replica_id.0;
    // v4+: read_committed consumers stop at the last stable offset.
    let read_committed = r.isolation_level == 1;
    let mut named = 0usize;
    let mut topics = Vec::with_capacity(r.topics.len());
    for ft in &r.topics {
        let name = ft.topic.0.to_string();
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData {
                partition: fp.partition,
                error_code: errors::NONE,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: None,
                diverging_epoch: None,
                aborted_transactions: Vec::new(),
            };
            named += 1;
            if named > limit {
                if let Some(part) = partition(state, &name, fp.partition) {
                    pd.high_watermark = part.high_watermark();
                    pd.last_stable_offset = pd.high_watermark;
                    pd.log_start_offset = part.log_start();
                }
                partitions.push(pd);
                continue;
            }
            // In a cluster only the leader serves a partition; a follower
            // reads up to the log end, a consumer up to the high watermark.
            let target = match state.cluster() {
                None => partition(state, &name, fp.partition)
                    .map(|p| (p, None))
                    .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
                Some(c) => c
                    .replicas
                    .leader_replica(&name, fp.partition, fp.current_leader_epoch)
                    .and_then(|(replica, _)| {
                        let hw = if follower >= 0 {
                            if fp.last_fetched_epoch >= 0 {
                                let (epoch, end) =
                                    replica.log.end_offset_for_epoch(fp.last_fetched_epoch);
                                if epoch < fp.last_fetched_epoch || end < fp.fetch_offset {
                                    return Err(DIVERGED);
                                }
                            }
                            c.replicas
                                .follower_fetched(&replica, follower, fp.fetch_offset)
                        } else {
                            replica.log.high_watermark()
                        };
                        Ok((replica.log.clone(), Some(hw)))
                    }),
            };
            match target {
                Err(DIVERGED) => {
                    // The follower's last epoch ends earlier here (or is
                    // unknown): tell it where, with no records.
                    if let Some((replica, _)) = state
                        .cluster()
                        .and_then(|c| c.replicas.leader_replica(&name, fp.partition, -1).ok())
                    {
                        let (epoch, end) = replica.log.end_offset_for_epoch(fp.last_fetched_epoch);
                        if epoch < 0 || end < 0 {
                            // An epoch past every one this log knows: no
                            // boundary to give. As Kafka, out of range; the
                            // follower falls back to the high watermark.
                            pd.error_code = errors::OFFSET_OUT_OF_RANGE;
                        } else {
                            pd.diverging_epoch = Some((epoch, end));
                        }
                        pd.high_watermark = replica.log.high_watermark();
                        pd.last_stable_offset = pd.high_watermark;
                        pd.log_start_offset = replica.log.log_start();
                    }
                    any_error = true;
                }
                Err(code) => {
                    pd.error_code = code;
                    any_error = true;
                }
                Ok((part, hw)) => {
                    // The first batch is sent whole even past the budget.
                    let budget = u64::try_from(fp.partition_max_bytes)
                        .unwrap_or(0)
                        .min(max_bytes.saturating_sub(total));
                    // A read_committed consumer reads up to the last stable
                    // offset (no open transaction's records), any other
                    // consumer up to the high watermark, a follower to the
                    // log end.
                    let lso = (follower < 0 && read_committed).then(|| part.last_stable_offset());
                    let bound = match (lso, hw) {
                        (Some(lso), _) => Some(lso),
                        (None, Some(hw)) if follower < 0 => Some(hw),
                        _ => None,
                    };
                    let read = match bound {
                        Some(b) => part.read_upto(fp.fetch_offset, budget, b, cached_only),
                        None if cached_only => part.read_cached(fp.fetch_offset, budget),
                        None => part.read(fp.fetch_offset, budget),
                    };
                    match read {
                        Ok(res) => {
                            pd.high_watermark = hw.unwrap_or(res.log_end);
                            pd.last_stable_offset =
                                part.last_stable_offset().min(pd.high_watermark);
                            if let (Some(lso), true) = (lso, res.slice.is_some()) {
                                pd.aborted_transactions =
                                    part.aborted_transactions(fp.fetch_offset, lso);
                            }
                            pd.log_start_offset = res.log_start;
                            if let Some(slice) = res.slice
                                && (budget > 0 || total == 0)
                            {
                                total += slice.len;
                                if follower >= 0
                                    && let Some(c) = state.cluster()
                                {
                                    c.replicas
                                        .stats
                                        .follower_fetch_bytes
                                        .fetch_add(slice.len, std::sync::atomic::Ordering::Relaxed);
                                }
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
                            pd.error_code = errors::OFFSET_OUT_OF_RANGE;
                            pd.high_watermark = hw.unwrap_or(log_end);
                            pd.last_stable_offset = pd.high_watermark;
                            pd.log_start_offset = log_start;
                            any_error = true;
                        }
                        Err(e) if cached_only && e.is_would_block() => return None,
                        Err(e) => {
                            tracing::error!(topic = %name, partition = fp.partition, "read failed: {e}");
                            pd.error_code = errors::KAFKA_STORAGE_ERROR;
                            any_error = true;
                        }
                    }
                }
            }
            partitions.push(pd);
        }
        topics.push(TopicData { name, partitions });
    }
    if named > limit {
        tracing::debug!(
            named,
            limit,
            "fetch names more partitions than --max-partitions-per-fetch"
        );
    }
    Some((topics, total, any_error))
}
