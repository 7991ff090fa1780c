//! The coordinators' state: consumer groups, their committed offsets, and
//! producer ids. No protocol types here beyond error codes: `api` turns
//! requests into these calls.

pub mod groups;
pub mod legacy_offsets;
pub mod offsets;
pub mod producer_ids;
pub mod records;
pub mod slots;
pub mod transactions;

/// Kafka's internal topics: written only by their coordinators, never
/// deleted or grown by clients, created by the coordinators themselves.
pub fn is_internal_topic(name: &str) -> bool {
    name == offsets::OFFSETS_TOPIC || name == transactions::TRANSACTION_TOPIC
}
