//! Presenting a transfer report: a terminal table, an SVG chart and JSON.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::transfer::{CacheState, Report, Row, SocketChoice, human_bytes};

/// The terminal table: one block per (cache, socket, region, receivers) cell,
/// one line per path, model columns beside measured ones.
pub fn table(report: &Report) -> String {
    let m = &report.meta;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench transfer — {} — {} cores, kernel {}, {}",
        m.date_utc, m.cores, m.kernel, m.cpu
    );
    let _ = writeln!(
        out,
        "file {} on {} ({}), {} ms runs x {} repeats (medians; [min–max])",
        human_bytes(m.file_bytes),
        m.file_dir,
        m.file_system,
        m.run_ms,
        m.repeats
    );
    let _ = writeln!(
        out,
        "read_write buffer {}, splice pipe {}, gather header {} B",
        human_bytes(m.read_buffer_bytes as u64),
        m.splice_pipe_bytes
            .map(|b| human_bytes(b as u64))
            .unwrap_or("?".into()),
        m.gather_header_bytes
    );
    let _ = writeln!(out, "TCP device: {}", m.tcp_offload);
    match m.pinned {
        Some((s, r)) => {
            let _ = writeln!(
                out,
                "senders pinned to CPU {s}, receiver process to CPU {r}"
            );
        }
        None => {
            let _ = writeln!(out, "not pinned: the kernel places senders and receivers");
        }
    }
    let mut last = None;
    for row in &report.rows {
        let key = (row.cache, row.socket, row.region_bytes, row.receivers);
        if last != Some(key) {
            last = Some(key);
            let _ = writeln!(
                out,
                "\n== {:?} cache ({:.0}% resident), {:?}, {} regions, {} receiver{} ==",
                row.cache,
                row.resident_fraction * 100.0,
                row.socket,
                human_bytes(row.region_bytes),
                row.receivers,
                if row.receivers == 1 { "" } else { "s" }
            );
            let _ = writeln!(
                out,
                "{:<16}| {:>5} {:>5} {:>4} {:>3} | {:>21} {:>8} {:>5} {:>9} {:>7} {:>9} {:>11} {:>8} {:>8} {:>6} {:>11} {:>10}",
                "path",
                "sys/x",
                "modes",
                "cpuC",
                "dma",
                "GB/s [min–max]",
                "CPU s/GB",
                "xRW",
                "usr+sys",
                "sys/MiB",
                "sys/xfer",
                "csw/MiB v/i",
                "flt/MiB",
                "userB/B",
                "rcvCPU",
                "core(sirq)",
                "net xRW"
            );
        }
        let _ = writeln!(out, "{}", line(row));
    }
    let _ = writeln!(
        out,
        "\nmodel: sys/x syscalls per transfer, modes user/kernel switches, cpuC CPU copies, dma DMA copies (the article).\n\
         measured: CPU s/GB is the sender's user+system CPU per GB sent, xRW its ratio to read_write (median of\n\
         per-repeat ratios, runs side by side); userB/B bytes through user space per byte sent;\n\
         rcvCPU the receiver's CPU s/GB (on loopback it copies every byte once more, whatever the sender does);\n\
         core(sirq) everything the sender's pinned core did per GB, with its softirq share: on loopback the\n\
         receiving half of TCP runs as softirq on the sending core, inline in the sender or in ksoftirqd;\n\
         net xRW the core's time outside softirq per GB (the sender's own work) and its ratio to read_write."
    );
    out
}

fn line(r: &Row) -> String {
    format!(
        "{:<16}| {:>5} {:>5} {:>4} {:>3} | {:>6.2} [{:>5.2}–{:>5.2}] {:>8.3} {:>5} {:>4.2}+{:<4.2} {:>7.1} {:>9.1} {:>5.2}/{:<5.2} {:>4.0}/{:<3.1} {:>8.2} {:>6.3} {:>11} {:>10}",
        r.path,
        r.model.syscalls_per_transfer,
        r.model.mode_switches,
        r.model.cpu_copies,
        r.model.dma_copies,
        r.gb_per_s,
        r.range.gb_per_s.min,
        r.range.gb_per_s.max,
        r.sender_cpu_s_per_gb,
        ratio(r.sender_cpu_vs_read_write),
        r.sender_user_s_per_gb,
        r.sender_sys_s_per_gb,
        r.syscalls_per_mib,
        r.syscalls_per_transfer,
        r.voluntary_csw_per_mib,
        r.involuntary_csw_per_mib,
        r.minor_faults_per_mib,
        r.major_faults_per_mib,
        r.user_space_bytes_per_byte,
        r.receiver_cpu_s_per_gb,
        match (r.sender_core_s_per_gb, r.sender_core_softirq_s_per_gb) {
            (Some(c), Some(s)) => format!("{c:.3}({s:.2})"),
            _ => "-".into(),
        },
        match (r.sender_core_net_s_per_gb, r.sender_core_net_vs_read_write) {
            (Some(n), Some(x)) => format!("{n:.3} {x:.2}"),
            _ => "-".into(),
        },
    )
}

fn ratio(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

/// Writes the JSON report.
pub fn write_json(report: &Report, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

/// An SVG chart: throughput and sender CPU per GB against region size, one
/// line per path, for hot and cold cache, TCP with one receiver.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "sluice bench transfer: TCP loopback, 1 receiver ({}, {} cores, kernel {})",
                report.meta.date_utc, report.meta.cores, report.meta.kernel
            ),
            ("sans-serif", 20),
        )
        .map_err(|e| e.to_string())?;
    let panels = body.split_evenly((2, 2));
    type Metric = fn(&Row) -> f64;
    let metrics: [(&str, Metric); 2] = [
        ("throughput GB/s", |r| r.gb_per_s),
        ("sender CPU s per GB", |r| r.sender_cpu_s_per_gb),
    ];
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    for (pi, panel) in panels.iter().enumerate() {
        let cache = if pi / 2 == 0 {
            CacheState::Hot
        } else {
            CacheState::Cold
        };
        let (metric_name, metric) = metrics[pi % 2];
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.cache == cache && r.socket == SocketChoice::Tcp && r.receivers == 1)
            .collect();
        if rows.is_empty() {
            continue;
        }
        // x is log2(region bytes), so ticks land on the sizes actually run.
        let log2 = |r: &Row| (r.region_bytes.max(1) as f64).log2();
        let xmin = rows.iter().map(|r| log2(r)).fold(f64::MAX, f64::min) - 0.5;
        let xmax = rows.iter().map(|r| log2(r)).fold(f64::MIN, f64::max) + 0.5;
        let ymax = rows.iter().map(|r| metric(r)).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{cache:?} cache: {metric_name}"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(xmin..xmax, 0.0..ymax.max(1e-9))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("region size (log scale)")
            .x_labels(((xmax - xmin) as usize + 1) * 2)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    human_bytes(2f64.powf(v.round()) as u64)
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        let mut names: Vec<&str> = rows.iter().map(|r| r.path).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        for (i, name) in names.iter().enumerate() {
            let color = colors[i % colors.len()];
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.path == *name)
                .map(|r| (log2(r), metric(r)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
