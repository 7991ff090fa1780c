//! A writer for the log's crash test: appends batches to `crash-0` under
//! `flush=always` forever and prints `ACK <base offset> <run> <n>` after each
//! append returns. The test kills it with SIGKILL at random moments.
//!
//! Usage: log_crash_writer DATA_DIR mmap|pwrite RUN

use std::io::Write;

use sluice_log::{FlushPolicy, Log, LogConfig};

/// The batch a writer appends as its `n`th in run `run`: the test rebuilds it
/// from the same numbers.
pub fn crash_batch(run: u64, n: u64) -> Vec<u8> {
    let value = format!("run {run} batch {n} ").repeat(200);
    let values: Vec<&[u8]> = (0..4).map(|_| value.as_bytes()).collect();
    sluice_log::batch::build_batch((run * 1_000_000 + n) as i64, &values)
}

/// The log settings of the crash test: small segments so kills land in rolls
/// too, and every append synced before it is acknowledged.
pub fn crash_config(append_path: sluice_log::AppendPath) -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        segment_age: None,
        retention_bytes: None,
        retention_age: None,
        index_interval_bytes: 4096,
        flush: FlushPolicy::Always,
        append_path,
        ..LogConfig::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: log_crash_writer DATA_DIR mmap|pwrite RUN");
        std::process::exit(2);
    }
    let path = args[2].parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let config = crash_config(path);
    let run: u64 = args[3].parse().unwrap_or(0);
    let log = Log::open(std::path::Path::new(&args[1]), config).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(1)
    });
    if log.partition("crash", 0).is_none() {
        log.create_topic("crash", 1).unwrap_or_else(|e| {
            eprintln!("create: {e}");
            std::process::exit(1)
        });
    }
    let Some(p) = log.partition("crash", 0) else {
        std::process::exit(1)
    };
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        let b = crash_batch(run, n);
        match p.append(&b, 0) {
            Ok(info) => {
                // One write per line: a pipe write under PIPE_BUF is atomic.
                let line = format!("ACK {} {run} {n}\n", info.base_offset);
                if out
                    .write_all(line.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                eprintln!("append: {e}");
                std::process::exit(1);
            }
        }
    }
}
