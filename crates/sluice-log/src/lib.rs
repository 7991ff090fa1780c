//! # sluice-log: topics, partitions and segments (not built yet)
//!
//! The layer above `sluice-io`: partitions stored as Kafka-layout segment
//! files, appended through a memory-mapped active segment and read back as
//! file regions for the io layer to send. See DESIGN.md §3 and issue #3.
//! It knows the RecordBatch header but not the Kafka wire protocol.
