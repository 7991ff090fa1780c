//! `sluice bench transfer` end to end: the real binary, its receiver process,
//! every path and socket and cache state, in a tiny configuration. Asserts
//! what the counters must say, not how fast anything was.

use std::process::Command;

use serde_json::Value;

#[test]
fn transfer_bench_measures_every_path_and_writes_json_and_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "transfer",
            "--sizes",
            "4k,64k",
            "--receivers",
            "1,2",
        ])
        .args([
            "--sockets",
            "tcp,unix",
            "--cache",
            "hot,cold",
            "--repeats",
            "1",
        ])
        .args(["--run-ms", "20", "--file-size", "4m", "--dir"])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table shows model and measurement for every path.
    for path in [
        "read_write",
        "mmap_write",
        "sendfile",
        "splice",
        "io_uring",
        "sendfile_gather",
    ] {
        assert!(stdout.contains(path), "table lacks {path}:\n{stdout}");
    }
    assert!(stdout.contains("TCP device: lo"), "{stdout}");

    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.contains("<svg") && svg_text.contains("sendfile"));

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let rows = report["rows"].as_array().expect("rows array");
    // 6 paths (io_uring where available) x 2 sizes x 2 receiver counts x 2
    // sockets x 2 cache states.
    let paths = if sluice_io::DataPath::IoUring.is_available() {
        6
    } else {
        5
    };
    assert_eq!(rows.len(), paths * 2 * 2 * 2 * 2);
    for row in rows {
        let path = row["path"].as_str().expect("path");
        let num = |k: &str| {
            row[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{path}: {k} missing in {row}"))
        };
        for key in ["region_bytes", "receivers"] {
            assert!(num(key) > 0.0);
        }
        assert!(["tcp", "unix"].contains(&row["socket"].as_str().expect("socket")));
        assert!(["hot", "cold"].contains(&row["cache"].as_str().expect("cache")));
        assert!(num("gb_per_s") > 0.0, "{path}: something was sent");
        assert!(num("sender_cpu_s_per_gb") >= 0.0);
        assert!(num("syscalls_per_mib") > 0.0);
        let user = num("user_space_bytes_per_byte");
        let region = num("region_bytes");
        match path {
            "read_write" => assert_eq!(user, 2.0, "read into and sent from user space"),
            "mmap_write" => assert_eq!(user, 1.0, "sent from the mapping"),
            "sendfile" | "splice" | "io_uring" => assert_eq!(user, 0.0, "{path} is zero-copy"),
            // Only the 64-byte header crosses into the kernel from user memory.
            "sendfile_gather" => assert!((user - 64.0 / (region + 64.0)).abs() < 1e-9),
            other => panic!("unexpected path {other}"),
        }
        if row["cache"] == "hot" {
            assert!(
                num("resident_fraction") > 0.99,
                "{path}: hot means resident"
            );
        }
        assert!(row["model"]["cpu_copies"].is_u64());
        // Ratios are paired per repeat with read_write in the same cell.
        let vs_rw = num("sender_cpu_vs_read_write");
        if path == "read_write" {
            assert_eq!(vs_rw, 1.0);
        } else {
            assert!(vs_rw > 0.0);
        }
    }
    // sendfile makes one call per region here; read+write at least two.
    let per_xfer = |p: &str| {
        rows.iter()
            .filter(|r| r["path"] == p && r["region_bytes"] == 65536)
            .map(|r| r["syscalls_per_transfer"].as_f64().expect("number"))
            .fold(f64::MAX, f64::min)
    };
    assert!(per_xfer("sendfile") <= 1.0 + 1e-9);
    assert!(per_xfer("read_write") >= 2.0);
    if paths == 6 {
        // One io_uring_enter per region, on a blocking socket.
        assert!((per_xfer("io_uring") - 1.0).abs() < 1e-9);
    }
}
