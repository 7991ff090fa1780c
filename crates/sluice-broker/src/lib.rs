//! # sluice-broker: the Kafka wire protocol (not built yet)
//!
//! Connections, framing, request routing and handlers over `sluice-log`, with
//! the Fetch response written as byte runs plus file regions through
//! `sluice-io`. See DESIGN.md §2 and §4 and issue #4.
