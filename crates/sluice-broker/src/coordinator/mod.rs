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
