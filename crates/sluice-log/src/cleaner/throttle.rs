//! The cleaner's I/O throttle (Kafka's `log.cleaner.io.max.bytes.per.second`):
//! every byte a pass reads or writes is counted, and a pass that gets ahead
//! of the rate sleeps until it is back on it. One throttle is shared by all
//! the cleaner threads of a log, so the rate bounds them together (as
//! Kafka's does).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a window of counted bytes lasts before it starts over, so a
/// pass that idled does not earn a burst.
const WINDOW: Duration = Duration::from_secs(1);
/// Sleeps are cut into slices this long, so a cancelled pass stops promptly.
const SLICE: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Window {
    start: Instant,
    bytes: u64,
}

/// A shared bytes-per-second limit.
#[derive(Debug)]
pub struct Throttle {
    window: Mutex<Window>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            window: Mutex::new(Window {
                start: Instant::now(),
                bytes: 0,
            }),
        }
    }
}

impl Throttle {
    /// Counts `bytes` of I/O and, under a `rate` (bytes per second; None is
    /// unlimited), sleeps until the window's bytes are within it. Returns the
    /// time slept. `cancelled` is polled while sleeping; a true ends the sleep.
    pub fn throttle(
        &self,
        rate: Option<u64>,
        bytes: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Duration {
        let Some(rate) = rate.filter(|&r| r > 0) else {
            return Duration::ZERO;
        };
        // The bytes are counted and the wake-up time worked out under the
        // lock; the sleep is not, so a thread sleeping for one partition never
        // holds up another's cancellation (a topic being deleted, a
        // shutdown). Threads after it count on top of its bytes, so the rate
        // still bounds them together.
        let until = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if now.duration_since(w.start) > WINDOW {
                w.start = now;
                w.bytes = 0;
            }
            w.bytes += bytes;
            let due = Duration::from_secs_f64(w.bytes as f64 / rate as f64);
            if due <= now.duration_since(w.start) {
                return Duration::ZERO;
            }
            w.start + due
        };
        let began = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until || cancelled() {
                break;
            }
            std::thread::sleep((until - now).min(SLICE));
        }
        began.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_sleeps() {
        let t = Throttle::default();
        for _ in 0..1000 {
            assert_eq!(t.throttle(None, 1 << 30, &|| false), Duration::ZERO);
        }
    }

    #[test]
    fn the_rate_is_kept() {
        let t = Throttle::default();
        let start = Instant::now();
        // 1.5 MB at 5 MB/s: at least 0.3 s.
        let mut slept = Duration::ZERO;
        for _ in 0..30 {
            slept += t.throttle(Some(5_000_000), 50_000, &|| false);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(280), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(slept >= Duration::from_millis(250), "{slept:?}");
    }

    #[test]
    fn a_cancelled_sleep_ends_at_once() {
        let t = Throttle::default();
        let start = Instant::now();
        t.throttle(Some(1), 1_000_000, &|| true);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
