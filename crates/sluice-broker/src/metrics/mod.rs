//! Counters, histograms and the Prometheus page.
//!
//! Everything here is a number some other layer bumps; nothing here knows a
//! socket or a request. The page itself is assembled by `Broker::metrics_text`,
//! which can see every layer.

pub mod latency;

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use sluice_io::Counters;

pub use latency::{Histogram, Latencies};

/// Running totals of what the connections' data paths did.
#[derive(Debug, Default)]
pub struct DataPathStats {
    totals: Mutex<StatsSnapshot>,
}

/// A copy of the totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatsSnapshot {
    /// The io layer's own counters, summed over every response sent.
    pub io: Counters,
    /// Bytes of file regions (record data) in responses sent.
    pub record_bytes: u64,
    /// Bytes encoded in memory (headers and fields) in responses sent.
    pub encoded_bytes: u64,
    pub responses: u64,
    /// Fetch regions that were not in the page cache and were read in on the
    /// blocking pool before sending, and their bytes.
    pub cold_regions: u64,
    pub cold_bytes: u64,
    /// Fetch gathers handed to the blocking pool because something they
    /// needed was not in the page cache (the rest ran on the async worker).
    pub fetch_gathers_offloaded: u64,
}

impl StatsSnapshot {
    /// Record bytes that crossed into user space on their way out: zero on the
    /// sendfile and splice paths, 2× the records for read+write, 1× for mmap.
    pub fn record_bytes_through_user_space(&self) -> u64 {
        self.io.user_space_bytes.saturating_sub(self.encoded_bytes)
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self, page: &mut Page<'_>) {
        let counters = [
            ("sluice_responses_total", "Responses sent.", self.responses),
            (
                "sluice_response_record_bytes_total",
                "Record bytes (file regions) in responses.",
                self.record_bytes,
            ),
            (
                "sluice_response_encoded_bytes_total",
                "Encoded header and field bytes in responses.",
                self.encoded_bytes,
            ),
            (
                "sluice_io_kernel_bytes_total",
                "Bytes sent without passing through user space.",
                self.io.kernel_bytes,
            ),
            (
                "sluice_io_user_space_bytes_total",
                "Bytes passed through user space by the data path.",
                self.io.user_space_bytes,
            ),
            (
                "sluice_record_bytes_through_user_space_total",
                "Record bytes that entered user space on the way out.",
                self.record_bytes_through_user_space(),
            ),
            (
                "sluice_io_eagain_total",
                "Sends that found the socket full.",
                self.io.eagain,
            ),
            (
                "sluice_fetch_cold_regions_total",
                "Fetch regions read into the page cache off the async workers.",
                self.cold_regions,
            ),
            (
                "sluice_fetch_cold_bytes_total",
                "Bytes of those regions.",
                self.cold_bytes,
            ),
            (
                "sluice_fetch_gathers_offloaded_total",
                "Fetch gathers run on the blocking pool because a page they needed was not cached.",
                self.fetch_gathers_offloaded,
            ),
        ];
        for (name, help, value) in counters {
            page.one(name, help, "counter", value);
        }
        let calls: Vec<(String, u64)> = sluice_io::Syscall::ALL
            .iter()
            .map(|call| {
                (
                    format!("{{call=\"{}\"}}", call.name()),
                    self.io.calls(*call),
                )
            })
            .collect();
        page.family(
            "sluice_io_syscalls_total",
            "System calls made by the data path, by call.",
            "counter",
            &calls,
        );
    }
}

impl DataPathStats {
    pub fn add(&self, io: &Counters, record_bytes: u64, encoded_bytes: u64) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.io += *io;
        t.record_bytes += record_bytes;
        t.encoded_bytes += encoded_bytes;
        t.responses += 1;
    }

    /// One fetch gather ran on the blocking pool and warmed `regions` cold
    /// regions of `bytes` in all.
    pub fn add_offloaded(&self, regions: u64, bytes: u64) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.fetch_gathers_offloaded += 1;
        t.cold_regions += regions;
        t.cold_bytes += bytes;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Open client connections, and those refused for being over the limit.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    pub open: AtomicUsize,
    /// Refused for being over --max-connections.
    pub refused: AtomicU64,
    /// Refused for being over their source address's limit.
    pub refused_per_ip: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_slow: AtomicU64,
}

/// Writes metric families in Prometheus text format.
pub struct Page<'a>(pub &'a mut String);

impl Page<'_> {
    /// One family: `kind` is `counter` or `gauge`; each sample is its label
    /// text (`{a="b"}` or empty) and value.
    pub fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    /// A family of one unlabelled sample.
    pub fn one(&mut self, name: &str, help: &str, kind: &str, value: u64) {
        self.family(name, help, kind, &[(String::new(), value)]);
    }
}
