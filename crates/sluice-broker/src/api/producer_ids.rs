//! InitProducerId for idempotent producers (a transactional id goes to the
//! transaction coordinator, `api::transactions`).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Blocking, errors};
use crate::state::BrokerState;

/// A fresh id at epoch 0, or, for a producer that names its id and epoch
/// (KIP-360), the same id one epoch on.
pub fn init_producer_id(
    state: &BrokerState,
    r: InitProducerIdRequest,
    _: &Blocking,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
        out.producer_id = r.producer_id;
        out.producer_epoch = r.producer_epoch + 1;
        return out;
    }
    // In a cluster ids come in blocks reserved through etcd, unique across
    // brokers; alone, from the data directory's own counter.
    let next = match state.cluster() {
        Some(c) => tokio::runtime::Handle::current()
            .block_on(c.cluster.next_producer_id())
            .map_err(|e| e.to_string()),
        None => state.producer_ids.next().map_err(|e| e.to_string()),
    };
    match next {
        Ok(id) => {
            out.producer_id = ProducerId(id);
            out.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!("allocating a producer id: {e}");
            out.error_code = if state.cluster().is_some() {
                // etcd unreachable or contended: the client retries.
                kafka_protocol::ResponseError::CoordinatorNotAvailable.code()
            } else {
                errors::KAFKA_STORAGE_ERROR
            };
        }
    }
    out
}
