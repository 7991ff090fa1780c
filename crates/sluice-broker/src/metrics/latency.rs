//! Latency histograms for the metrics page: per API request (from the whole
//! frame read to the response in the socket; a Fetch's includes its long-poll
//! wait, as in Kafka's `TotalTimeMs`), and for appends (time waiting for a
//! blocking-pool thread, time inside the append). Lock-free: one atomic
//! counter per bucket.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`), 50 µs to 10 s.
const BOUNDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// One histogram: counts per bucket (not cumulative; summed when rendered).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.partition_point(|&b| b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram's samples; `labels` is `""` or `key="value"`.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// The broker's latency histograms.
#[derive(Debug)]
pub struct Latencies {
    /// Indexed by API key (0..=MAX_API_KEY).
    requests: Vec<Histogram>,
    /// Produce appends: waiting for a blocking-pool thread.
    pub append_queue: Histogram,
    /// Produce appends: inside `Partition::append` (and a flush, if acks=-1
    /// waits for one).
    pub append: Histogram,
    /// How late a 1 ms timer task wakes on the async runtime: a worker that
    /// is blocked or busy shows here before it shows anywhere else.
    pub tick_lateness: Histogram,
}

/// Kafka's API keys are small numbers; anything above is not served.
const MAX_API_KEY: usize = 127;

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            requests: (0..=MAX_API_KEY).map(|_| Histogram::default()).collect(),
            append_queue: Histogram::default(),
            append: Histogram::default(),
            tick_lateness: Histogram::default(),
        }
    }
}

impl Latencies {
    pub fn observe_request(&self, api_key: i16, d: Duration) {
        if let Some(h) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.get(k))
        {
            h.observe(d);
        }
    }

    /// Prometheus text for every histogram with samples.
    pub fn prometheus(&self, page: &mut super::Page<'_>) {
        let out = &mut *page.0;
        out.push_str("# HELP sluice_request_duration_seconds Time from a request's last byte read to its response's last byte written, by API.\n");
        out.push_str("# TYPE sluice_request_duration_seconds histogram\n");
        for (key, h) in self.requests.iter().enumerate() {
            if h.count() == 0 {
                continue;
            }
            let api = kafka_protocol::messages::ApiKey::try_from(key as i16)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|_| key.to_string());
            h.render(
                "sluice_request_duration_seconds",
                &format!("api=\"{api}\""),
                out,
            );
        }
        out.push_str("# HELP sluice_append_queue_seconds Time a Produce append waited for a blocking-pool thread.\n");
        out.push_str("# TYPE sluice_append_queue_seconds histogram\n");
        self.append_queue
            .render("sluice_append_queue_seconds", "", out);
        out.push_str("# HELP sluice_append_duration_seconds Time inside a Produce append (and its flush when acks=-1 waits for one).\n");
        out.push_str("# TYPE sluice_append_duration_seconds histogram\n");
        self.append
            .render("sluice_append_duration_seconds", "", out);
        out.push_str("# HELP sluice_runtime_tick_lateness_seconds How late a 1 ms timer task on the async runtime wakes.\n");
        out.push_str("# TYPE sluice_runtime_tick_lateness_seconds histogram\n");
        self.tick_lateness
            .render("sluice_runtime_tick_lateness_seconds", "", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_kept() {
        let h = Histogram::default();
        for us in [30, 70, 70, 900, 3_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.render("x", "api=\"Produce\"", &mut out);
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.0001\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.001\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.005\"} 5\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"10\"} 5\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"+Inf\"} 6\n"),
            "{out}"
        );
        assert!(out.contains("x_count{api=\"Produce\"} 6\n"), "{out}");
        assert!(out.contains("x_sum{api=\"Produce\"} 20.00407\n"), "{out}");
    }
}
