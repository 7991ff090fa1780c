//! Consumers reading a partition while it is cleaned: an appender writes
//! new values of a few keys, a cleaner cleans over and over, and readers
//! scan the partition from its start to its end, again and again. Every
//! batch a reader gets is whole and valid, and every scan sees, for every
//! key, the latest value acknowledged before the scan started — or a newer
//! one: a swap never hides a latest value, whichever segment list a read
//! lands on.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use sluice_log::batch::{self, BatchHeader};
use sluice_log::cleaner::{RecordSpec, build_batch};
use sluice_log::{AppendPath, CleanerConfig, CleanupPolicy, FlushPolicy, LogConfig, Partition};

const KEYS: usize = 12;
/// How many appends the writer may run ahead of the cleaner's last pass.
const MAX_AHEAD: usize = 3000;
/// The two races share two cores with everything else; one at a time.
static ONE_RACE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(path: AppendPath) -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 512,
        flush: FlushPolicy::Os,
        append_path: path,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..LogConfig::default()
    }
}

/// One scan from the start to the end as it is when the scan catches up:
/// each key's highest offset seen. Panics on a torn or invalid batch.
fn scan(p: &Partition) -> HashMap<Vec<u8>, i64> {
    let mut seen = HashMap::new();
    let mut offset = p.log_start();
    while offset < p.log_end() {
        let r = p.read(offset, 64 * 1024).expect("read");
        let Some(s) = r.slice else { break };
        let mut bytes = vec![0u8; s.len as usize];
        s.segment
            .file()
            .read_exact_at(&mut bytes, s.position)
            .expect("pread");
        let mut pos = 0;
        while pos + batch::HEADER_LEN <= bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            let len = h.total_len().expect("length");
            if pos + len > bytes.len() {
                break; // a cut trailing batch: read again from it
            }
            let b = &bytes[pos..pos + len];
            batch::validate_stored(b).unwrap_or_else(|e| panic!("a torn or bad batch: {e}"));
            if h.last_offset() >= offset {
                if h.record_count > 0 {
                    let set =
                        RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b)).expect("decode");
                    for rec in set.records {
                        let key = rec.key.expect("key").to_vec();
                        let value = rec.value.expect("value");
                        assert!(value.starts_with(&key), "a value under another key");
                        let e = seen.entry(key).or_insert(rec.offset);
                        *e = (*e).max(rec.offset);
                    }
                }
                offset = h.last_offset() + 1;
            }
            pos += len;
        }
    }
    seen
}

fn race(path: AppendPath) {
    let _one = ONE_RACE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("dir");
    let p =
        Arc::new(Partition::open(&dir.path().join("race-0"), config(path), false).expect("open"));
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..KEYS).map(|_| AtomicI64::new(-1)).collect());
    let done = Arc::new(AtomicBool::new(false));
    // Progress so far: cleaner passes, reader scans.
    let passes = Arc::new(AtomicUsize::new(0));
    let scans = Arc::new(AtomicUsize::new(0));
    // Appends so far, and how many there were when the last pass began:
    // the writer waits while it is too far ahead of the cleaner, so a slow,
    // shared machine gets the same race in more time rather than a log that
    // grows faster than it is cleaned.
    let appended = Arc::new(AtomicUsize::new(0));
    let appended_at_pass = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (p, acked, done) = (p.clone(), acked.clone(), done.clone());
        let (appended, appended_at_pass) = (appended.clone(), appended_at_pass.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !done.load(Ordering::Relaxed) {
                if n - appended_at_pass.load(Ordering::Relaxed) > MAX_AHEAD {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let k = n % KEYS;
                let key = format!("key{k:02}");
                let value = format!("{key} version {n} {}", "v".repeat(n % 200));
                let b = build_batch(
                    sluice_log::now_ms(),
                    &[RecordSpec {
                        key: Some(key.as_bytes()),
                        value: Some(value.as_bytes()),
                        timestamp_delta: 0,
                    }],
                    (n % 3) as u8 * 2, // none, snappy, zstd
                );
                let info = p.append(&b, 0).expect("append");
                acked[k].store(info.base_offset, Ordering::Release);
                n += 1;
                appended.store(n, Ordering::Relaxed);
                if n.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            n
        })
    };
    let cleaner = {
        let (p, done, passes) = (p.clone(), done.clone(), passes.clone());
        let (appended, appended_at_pass) = (appended.clone(), appended_at_pass.clone());
        std::thread::spawn(move || {
            let cfg = CleanerConfig {
                dedupe_buffer_bytes: 1 << 16,
                io_buffer_bytes: 4096,
                ..CleanerConfig::default()
            };
            while !done.load(Ordering::Relaxed) {
                appended_at_pass.store(appended.load(Ordering::Relaxed), Ordering::Relaxed);
                if p.clean(&cfg, sluice_log::now_ms())
                    .expect("clean")
                    .is_some()
                {
                    passes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, acked, done, scans) = (p.clone(), acked.clone(), done.clone(), scans.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let floor: Vec<i64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
                    let seen = scan(&p);
                    for (k, &f) in floor.iter().enumerate() {
                        if f < 0 {
                            continue;
                        }
                        let got = seen.get(format!("key{k:02}").as_bytes()).copied();
                        assert!(
                            got.is_some_and(|g| g >= f),
                            "key{k:02}: acknowledged at {f} before the scan, the scan saw {got:?}"
                        );
                    }
                    scans.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // At least 1.5 s, and until the cleaner has swapped under the readers
    // a few times (on two busy cores that can take longer).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500)
        || (passes.load(Ordering::Relaxed) < 10 || scans.load(Ordering::Relaxed) < 10)
            && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let appended = writer.join().expect("writer");
    cleaner.join().expect("cleaner");
    for r in readers {
        r.join().expect("reader");
    }
    let (passes, scans) = (
        passes.load(Ordering::Relaxed),
        scans.load(Ordering::Relaxed),
    );
    eprintln!("{path}: {appended} appends, {passes} cleaner passes, {scans} full scans");
    assert!(
        passes >= 10 && scans >= 10,
        "{passes} passes, {scans} scans"
    );
}

#[test]
fn readers_racing_the_cleaner_on_pwrite() {
    race(AppendPath::Pwrite);
}

#[test]
fn readers_racing_the_cleaner_on_mmap() {
    race(AppendPath::Mmap);
}
