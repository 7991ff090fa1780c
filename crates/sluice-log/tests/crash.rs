//! Crash safety: a real writer process appending with flush=always is killed
//! with SIGKILL at pseudo-random moments, 30 times per append path. After each
//! kill the log is reopened (unclean) and must hold every acknowledged batch
//! intact, serve nothing corrupt past the last good batch, and take new appends.
//!
//! SIGKILL kills the process, not the machine: the page cache survives, so
//! this tests recovery from torn appends and unclean shutdown, not power loss.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::read_all;
use sluice_log::{Log, LogConfig};

#[path = "../src/bin/log_crash_writer.rs"]
#[allow(dead_code)]
mod writer;

const KILLS_PER_PATH: u64 = 30;

fn config(path: &str) -> LogConfig {
    writer::crash_config(path.parse().expect("append path"))
}

fn crash_runs(path: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let mut acked: Vec<(i64, u64, u64)> = Vec::new();
    let mut rng: u64 = 0x1234_5678_9abc_def1;
    for run in 0..KILLS_PER_PATH {
        let mut child = Command::new(env!("CARGO_BIN_EXE_log_crash_writer"))
            .arg(dir.path())
            .arg(path)
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start writer");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(15 + rng % 120));
        child.kill().expect("SIGKILL");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read acks");
        child.wait().expect("reap");
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[0], "ACK", "unexpected writer output {line:?}");
            acked.push((
                f[1].parse().expect("offset"),
                f[2].parse().expect("run"),
                f[3].parse().expect("n"),
            ));
        }

        let log = Log::open(dir.path(), config(path)).expect("reopen after kill");
        assert!(!log.recovered_clean());
        let p = log.partition("crash", 0).expect("partition");
        // Everything served is a whole, valid batch (read_all checks CRCs).
        let served = read_all(&p);
        let by_offset: std::collections::HashMap<i64, &Vec<u8>> =
            served.iter().map(|(h, b)| (h.base_offset, b)).collect();
        for &(offset, r, n) in &acked {
            let mut want = writer::crash_batch(r, n);
            sluice_log::batch::set_base_offset(&mut want, offset);
            sluice_log::batch::set_leader_epoch(&mut want, 0);
            let got = by_offset.get(&offset).unwrap_or_else(|| {
                panic!("{path}: acknowledged batch at {offset} lost (run {run})")
            });
            assert!(
                **got == want,
                "{path}: acknowledged batch at {offset} differs"
            );
        }
        let last = served.last().map(|(h, _)| h.last_offset() + 1).unwrap_or(0);
        assert_eq!(p.log_end(), last, "{path}: the end is the last good batch");
        // The log takes new appends where it ended.
        let b = writer::crash_batch(999, run);
        let info = p.append(&b, 0).expect("append after recovery");
        assert_eq!(info.base_offset, last);
        // Remember it like an ack: it must survive the next crash too.
        acked.push((info.base_offset, 999, run));
    }
    assert!(
        acked.len() as u64 > KILLS_PER_PATH,
        "the writer made progress"
    );
}

#[test]
fn mmap_appends_survive_sigkill() {
    crash_runs("mmap");
}

#[test]
fn pwrite_appends_survive_sigkill() {
    crash_runs("pwrite");
}
