//! # sluice-bench: measuring the data paths
//!
//! `transfer` reproduces the source article's table with measurements: every
//! data path of `sluice-io`, over loopback TCP and Unix sockets, against a
//! receiver process, with the article's model printed beside what was counted.

pub mod append;
pub mod chart;
pub mod harness;
pub mod load;
pub mod local;
pub mod process;
pub mod receiver;
pub mod report;
pub mod stats;
pub mod transfer;
mod usage;

pub use usage::{CoreTime, Usage, pin_to_cpu};
