//! Client quotas on the wire: DescribeClientQuotas and AlterClientQuotas
//! (KIP-546) over `security::quotas`, and the throttle time a Produce or
//! Fetch answers with (KIP-13, KIP-219).
//!
//! Throttling as Kafka does it (KIP-219): the response carries
//! `throttle_time_ms` at once, and the broker then reads nothing more from
//! the connection for that long (clients from the KIP-219 versions on also
//! hold back themselves). Kafka meters a Produce by its request's size and a
//! Fetch by its response's; a throttled Fetch is answered without records,
//! whose bytes are taken back (`Quotas::unrecord_fetch`).

use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, alter_client_quotas_response, describe_client_quotas_response,
};

use super::{Blocking, errors, str_bytes};
use crate::security::quotas::{Alteration, FilterComponent, QuotaFilter, QuotaKey};
use crate::state::BrokerState;

/// DescribeClientQuotas (v0–1): the entities the filter matches, with
/// their quotas. A refused filter is the response's error (entries null).
pub fn describe_client_quotas(
    state: &BrokerState,
    r: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    // authz: DescribeConfigs on Cluster
    let mut out = DescribeClientQuotasResponse::default();
    let components: Vec<FilterComponent> = r
        .components
        .iter()
        .map(|c| FilterComponent {
            entity_type: c.entity_type.to_string(),
            match_type: c.match_type,
            name: c._match.as_ref().map(|m| m.to_string()),
        })
        .collect();
    match QuotaFilter::new(&components, r.strict) {
        Err((code, message)) => {
            out.error_code = code;
            out.error_message = Some(str_bytes(&message));
            out.entries = None;
        }
        Ok(filter) => {
            out.error_code = errors::NONE;
            // Kafka's null, not the generated default's "".
            out.error_message = None;
            let entries = state
                .quotas
                .describe(&filter)
                .into_iter()
                .map(|(entity, values)| {
                    let mut entry = describe_client_quotas_response::EntryData::default();
                    entry.entity = entity
                        .components()
                        .into_iter()
                        .map(|(t, name)| {
                            let mut e = describe_client_quotas_response::EntityData::default();
                            e.entity_type = str_bytes(t);
                            e.entity_name = name.map(str_bytes);
                            e
                        })
                        .collect();
                    entry.values = values
                        .into_iter()
                        .map(|(key, value)| {
                            let mut v = describe_client_quotas_response::ValueData::default();
                            v.key = str_bytes(&key);
                            v.value = value;
                            v
                        })
                        .collect();
                    entry
                })
                .collect();
            out.entries = Some(entries);
        }
    }
    out
}

/// AlterClientQuotas (v0–1): each entry applied or refused on its own, the
/// file written once (`validate_only`: checked, nothing changed). Each
/// entry's entity is answered as it was asked.
pub fn alter_client_quotas(
    state: &BrokerState,
    r: AlterClientQuotasRequest,
    _: &Blocking,
) -> AlterClientQuotasResponse {
    // authz: AlterConfigs on Cluster
    let alterations: Vec<Alteration> = r
        .entries
        .iter()
        .map(|e| Alteration {
            entity: e
                .entity
                .iter()
                .map(|c| {
                    (
                        c.entity_type.to_string(),
                        c.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            ops: e
                .ops
                .iter()
                .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                .collect(),
        })
        .collect();
    let results = state.quotas.alter(&alterations, r.validate_only);
    let mut out = AlterClientQuotasResponse::default();
    out.entries = r
        .entries
        .into_iter()
        .zip(results)
        .map(|(asked, result)| {
            let mut entry = alter_client_quotas_response::EntryData::default();
            entry.entity = asked
                .entity
                .into_iter()
                .map(|c| {
                    let mut e = alter_client_quotas_response::EntityData::default();
                    e.entity_type = c.entity_type;
                    e.entity_name = c.entity_name;
                    e
                })
                .collect();
            (entry.error_code, entry.error_message) = match result {
                Ok(()) => (errors::NONE, None),
                Err((code, message)) => (code, Some(str_bytes(&message))),
            };
            entry
        })
        .collect();
    out
}

/// Which byte rate a Produce or Fetch counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `producer_byte_rate`: the Produce request's size in bytes.
    Produce,
    /// `consumer_byte_rate`: the Fetch response's size in bytes.
    Fetch,
}

/// Records `bytes` of a Produce or Fetch from `user` (the principal's name,
/// Kafka's quota user) with `client_id` (the request header's; "" when
/// null) and returns the `throttle_time_ms` to answer with: 0 within the
/// quota or without one (then this is one atomic load).
pub fn throttle_for(
    state: &BrokerState,
    direction: Direction,
    user: &str,
    client_id: &str,
    bytes: u64,
) -> i32 {
    let key = match direction {
        Direction::Produce => QuotaKey::ProducerByteRate,
        Direction::Fetch => QuotaKey::ConsumerByteRate,
    };
    if !state.quotas.any(key) {
        return 0;
    }
    let now = Instant::now();
    let throttle = match direction {
        Direction::Produce => state.quotas.record_produce(user, client_id, bytes, now),
        Direction::Fetch => state.quotas.record_fetch(user, client_id, bytes, now),
    };
    millis(throttle)
}

/// Records the time spent handling a request (`request_percentage`) and
/// returns its `throttle_time_ms` (at most one quota window, as Kafka).
/// Kafka answers Produce and Fetch with the larger of this and the
/// byte-rate throttle, and exempts acks=0 Produce and inter-broker
/// requests.
pub fn request_throttle_for(
    state: &BrokerState,
    user: &str,
    client_id: &str,
    handler_nanos: u64,
) -> i32 {
    if !state.quotas.any(QuotaKey::RequestPercentage) {
        return 0;
    }
    millis(
        state
            .quotas
            .record_request_time(user, client_id, handler_nanos, Instant::now()),
    )
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}
