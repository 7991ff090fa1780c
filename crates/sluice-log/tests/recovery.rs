//! Corruption and recovery: a flipped byte, a cut file, a zeroed index and
//! a pre-allocated zero tail are each detected and handled as docs/FORMAT.md
//! says, with a log message that says what happened.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{PATHS, batch, read_all, small_config};
use sluice_log::{AppendPath, Log, Partition};

/// Runs `f` with tracing output captured, and returns what was logged.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().expect("lock")).into_owned();
    (out, text)
}

/// Appends `n` batches to a fresh partition and drops it without a clean
/// close (as a crash would leave it, minus the page cache). Returns the
/// partition dir and the batches as stored.
fn write_and_abandon(path: AppendPath, n: u64) -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("dir");
    let p = Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("open");
    let mut stored = Vec::new();
    for i in 0..n {
        let b = batch(i, 2, 150, i as i64);
        let info = p.append(&b, 0).expect("append");
        stored.push(common::as_stored(b, info.base_offset, 0));
    }
    (dir, stored)
}

fn active_log(dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir.join("t-0"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

#[test]
fn a_flipped_byte_cuts_the_log_at_that_batch() {
    for path in PATHS {
        let (dir, stored) = write_and_abandon(path, 60);
        let seg = active_log(dir.path());
        let base: i64 = seg
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base");
        // Flip a byte inside the 4th batch of the active segment.
        let mut bytes = std::fs::read(&seg).expect("read");
        let batch_len = stored[0].len();
        let at = 3 * batch_len + batch_len / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&seg, &bytes).expect("write");
        let (p, log) = logged(|| {
            Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("reopen")
        });
        assert!(log.contains("CRC mismatch"), "{path}: log says why:\n{log}");
        assert!(log.contains("truncating the tail"), "{log}");
        let got = read_all(&p);
        // Batches are 2 records each: the 4th batch of the segment starts at base + 6.
        assert_eq!(
            p.log_end(),
            base + 6,
            "{path}: cut before the corrupt batch"
        );
        assert_eq!(got.len() as i64, (base + 6) / 2);
        for (i, (_, b)) in got.iter().enumerate() {
            assert_eq!(b, &stored[i], "{path}: batch {i} intact");
        }
        // The log carries on from the cut.
        let info = p
            .append(&batch(7, 1, 10, 0), 0)
            .expect("append after recovery");
        assert_eq!(info.base_offset, base + 6);
    }
}

#[test]
fn a_cut_file_loses_only_the_partial_batch() {
    for path in PATHS {
        let (dir, stored) = write_and_abandon(path, 10);
        let seg = active_log(dir.path());
        let real: usize = stored.iter().map(|b| b.len()).sum();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open");
        f.set_len((real - 17) as u64).expect("truncate");
        let (p, log) = logged(|| {
            Partition::open(&dir.path().join("t-0"), small_config(path), false).expect("reopen")
        });
        assert!(
            log.contains("runs past the end of the file"),
            "{path}:\n{log}"
        );
        let got: Vec<Vec<u8>> = read_all(&p).into_iter().map(|(_, b)| b).collect();
        assert_eq!(got, stored[..9].to_vec(), "{path}");
        assert_eq!(p.log_end(), 18);
    }
}

#[test]
fn a_zeroed_index_is_rebuilt_from_the_log() {
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        {
            let log = Log::open(dir.path(), small_config(path)).expect("open");
            log.create_topic("t", 1).expect("create");
            let p = log.partition("t", 0).expect("p");
            for i in 0..40 {
                p.append(&batch(i, 2, 150, 0), 0).expect("append");
            }
            log.close().expect("close");
        }
        let index = active_log(dir.path()).with_extension("index");
        let len = std::fs::metadata(&index).expect("index").len();
        assert!(len >= 16, "the index has entries to lose");
        std::fs::write(&index, vec![0u8; len as usize]).expect("zero the index");
        let (log, text) = logged(|| Log::open(dir.path(), small_config(path)).expect("reopen"));
        assert!(log.recovered_clean());
        assert!(
            text.contains("index failed its sanity check"),
            "{path}:\n{text}"
        );
        let p = log.partition("t", 0).expect("p");
        for off in 0..80 {
            let s = p.read(off, 1).expect("read").slice.expect("slice");
            assert_eq!(
                s.first_offset,
                off - off % 2,
                "{path}: offset {off} found via rebuilt index"
            );
        }
    }
}

#[test]
fn an_unflushed_preallocated_tail_is_not_data() {
    let (dir, stored) = write_and_abandon(AppendPath::Mmap, 5);
    let seg = active_log(dir.path());
    let on_disk = std::fs::metadata(&seg).expect("meta").len();
    assert_eq!(on_disk, 16 * 1024, "mmap segments are pre-allocated");
    let p = Partition::open(
        &dir.path().join("t-0"),
        small_config(AppendPath::Mmap),
        false,
    )
    .expect("reopen");
    let got: Vec<Vec<u8>> = read_all(&p).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored);
    assert_eq!(p.log_end(), 10);
}

/// Idempotent-producer state comes back after a crash and after a clean
/// shutdown, whether it is read from the snapshot written at the last roll
/// (plus the batches after it) or, when the snapshot is damaged, rebuilt
/// from every batch header.
#[test]
fn producer_state_survives_reopen_from_snapshot_or_from_the_log() {
    use sluice_log::AppendError;
    for path in PATHS {
        let dir = tempfile::tempdir().expect("dir");
        let pdir = dir.path().join("t-0");
        let with = |pid: i64, seq: i32| {
            let mut b = batch(seq as u64 + pid as u64 * 1000, 2, 300, 0);
            sluice_log::batch::set_producer(&mut b, pid, 0, seq);
            b
        };
        // Two producers interleaved over several 16 KiB segments.
        let mut offsets = std::collections::HashMap::new();
        {
            let p = Partition::open(&pdir, small_config(path), false).expect("open");
            // Two records a batch: sequences go up by two.
            for seq in (0..120).step_by(2) {
                for pid in [42, 43] {
                    let info = p.append(&with(pid, seq), 0).expect("append");
                    offsets.insert((pid, seq), info.base_offset);
                }
            }
            // The seal thread of a roll writes it, off the append path.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !pdir.join("producer.snapshot").exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(
                pdir.join("producer.snapshot").exists(),
                "{path}: a roll writes the snapshot"
            );
            // Dropped without close: a crash.
        }
        let check = |p: &Partition, what: &str| {
            for pid in [42, 43] {
                for seq in [112, 118] {
                    let retry = p.append(&with(pid, seq), 0).expect("retry");
                    assert!(retry.duplicate, "{path} {what}: {pid}/{seq} is a duplicate");
                    assert_eq!(retry.base_offset, offsets[&(pid, seq)], "{path} {what}");
                }
                let gap = p.append(&with(pid, 140), 0).expect_err("gap");
                assert!(matches!(gap, AppendError::Sequence(_)), "{path} {what}");
            }
        };
        let p = Partition::open(&pdir, small_config(path), false).expect("reopen after crash");
        check(&p, "after a crash");
        for pid in [42, 43] {
            let next = p.append(&with(pid, 120), 0).expect("next in sequence");
            assert!(!next.duplicate);
        }
        p.close().expect("clean close");
        drop(p);
        let p = Partition::open(&pdir, small_config(path), true).expect("clean reopen");
        check(&p, "after a clean close");
        p.close().expect("clean close");
        drop(p);
        // A damaged snapshot is ignored, and the log still knows everything.
        let snap = pdir.join("producer.snapshot");
        let mut bytes = std::fs::read(&snap).expect("snapshot");
        bytes[20] ^= 1;
        std::fs::write(&snap, bytes).expect("damage");
        let (p, text) =
            logged(|| Partition::open(&pdir, small_config(path), true).expect("reopen"));
        assert!(
            text.contains("ignoring the producer snapshot"),
            "{path}:\n{text}"
        );
        check(&p, "with a damaged snapshot");
        assert_eq!(read_all(&p).len(), 122, "{path}: every batch once");
    }
}
