//! The broker scenarios' reports for people: terminal tables and SVG charts.

use std::path::Path;

use super::consume::{ConsumeReport, ConsumeRow};
use super::isolation::{IsolationReport, IsolationRun};
use crate::chart::{bar_panel, svg_err};
use crate::stats::median;

/// The terminal table of a consume report.
pub fn consume_table(r: &ConsumeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench broker consume — {} — {} cores, kernel {}; {} MB over {} partitions, {} ms runs x {} rounds, fetch {} KiB (medians)",
        r.machine.date_utc,
        r.machine.cores,
        r.machine.kernel,
        r.fill_bytes / 1_000_000,
        r.partitions,
        r.run_ms,
        r.repeats,
        r.fetch_bytes / 1024
    );
    let _ = writeln!(
        out,
        "{:<11} {:>9} {:>17} {:>9} {:>11} {:>13} {:>8}  syscalls per fetch",
        "path", "consumers", "GB/s [min-max]", "p99 ms", "CPU s/GB", "user B/GB", "RSS MiB"
    );
    for row in &r.rows {
        let calls: Vec<String> = row
            .syscalls_per_fetch
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<11} {:>9} {:>5.2} [{:.2}-{:.2}] {:>9.2} {:>11.3} {:>13.0} {:>8.1}  {}",
            row.path,
            row.consumers,
            row.gb_per_s,
            row.gb_per_s_min,
            row.gb_per_s_max,
            row.fetch_p99_ms,
            row.broker_cpu_s_per_gb,
            row.record_bytes_through_user_space_per_gb,
            row.broker_rss_mib,
            calls.join(", ")
        );
    }
    let bare: Vec<String> = r
        .baseline
        .iter()
        .map(|b| format!("{:.2}", b.gb_per_s))
        .collect();
    let ratios: Vec<String> = r
        .broker_over_bare
        .iter()
        .map(|x| format!("{x:.2}"))
        .collect();
    let _ = writeln!(
        out,
        "bare io-layer sendfile of partition 0's segments: {} GB/s; broker (sendfile, 1 consumer) / bare, per round: {} (median {:.2})",
        bare.join(", "),
        ratios.join(", "),
        r.broker_over_bare_median
    );
    out
}

fn backlog_state(r: &IsolationReport) -> &'static str {
    if r.warm {
        "in the page cache (control)"
    } else {
        "evicted"
    }
}

/// The terminal table of an isolation report.
pub fn isolation_table(r: &IsolationReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench broker isolation — {} — {} cores, kernel {}; producer {} records/s (100 B, 16 KiB batches, acks=1); consumer catches up on {} MB {}; {}",
        r.machine.date_utc,
        r.machine.cores,
        r.machine.kernel,
        r.rate,
        r.backlog_bytes / 1_000_000,
        backlog_state(r),
        match r.pinned {
            Some((b, g)) => format!("broker on CPU {b}, load generator on CPU {g}"),
            None => "nothing pinned".to_string(),
        } + &r
            .data_path
            .as_ref()
            .map(|p| format!("; --data-path {p}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:>5} {:>9} {:>16} {:>16} {:>10} {:>10} {:>13} {:>6}  broker p99 <= ms: produce / append queue / append; tick lateness max; generator send delay p99/max; steal ms total/most in 100 ms",
        "round",
        "isolation",
        "p99 w/ consumer",
        "p99 alone",
        "ratio",
        "p99.9 w/",
        "catch-up GB/s",
        "warmed"
    );
    for run in &r.runs {
        let _ = writeln!(
            out,
            "{:>5} {:>9} {:>13.2} ms {:>13.2} ms {:>9.2}x {:>7.2} ms {:>13.2} {:>6}  {} / {} / {}; {}; {:.2}/{:.2}; {:.0}/{:.0}",
            run.round + 1,
            if run.isolation { "on" } else { "off" },
            run.with_consumer_p99_ms,
            run.alone_p99_ms,
            run.ratio_p99,
            run.with_consumer_p999_ms,
            run.catch_up_gb_per_s,
            run.cold_regions_warmed,
            run.broker_produce_p99_ms,
            run.broker_append_queue_p99_ms,
            run.broker_append_p99_ms,
            run.broker_tick_lateness_max_ms,
            run.generator_send_delay_p99_ms,
            run.generator_send_delay_max_ms,
            run.steal_ms,
            run.steal_max_100ms_ms
        );
    }
    let _ = writeln!(
        out,
        "median p99 ratio (with consumer / alone): isolation on {:.2}x, off {:.2}x (target: on <= 2x)",
        r.ratio_on, r.ratio_off
    );
    out
}

/// The consume report as an SVG: per data path (1 consumer) throughput and
/// broker CPU per GB with the bare sendfile bar beside them, and scaling.
pub fn write_consume_svg(r: &ConsumeReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "sluice bench broker consume ({}, {} cores, kernel {}), medians of {} rounds",
                r.machine.date_utc, r.machine.cores, r.machine.kernel, r.repeats
            ),
            ("sans-serif", 20),
        )
        .map_err(svg_err)?;
    let panels = body.split_evenly((3, 2));
    let one: Vec<&ConsumeRow> = r.rows.iter().filter(|x| x.consumers == 1).collect();
    let mut gbs: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.gb_per_s))
        .collect();
    gbs.push((
        "bare sendfile".into(),
        median(r.baseline.iter().map(|b| b.gb_per_s).collect()).unwrap_or(0.0),
    ));
    bar_panel(&panels[0], "1 consumer: GB/s", &gbs)?;
    let cpu: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.broker_cpu_s_per_gb))
        .collect();
    bar_panel(&panels[1], "1 consumer: broker CPU s per GB", &cpu)?;
    let calls: Vec<(String, f64)> = one
        .iter()
        .map(|x| (x.path.to_string(), x.syscalls_per_fetch.values().sum()))
        .collect();
    bar_panel(
        &panels[2],
        "1 consumer: transfer syscalls per fetch",
        &calls,
    )?;
    lines_by_consumers(&panels[3], "scaling: GB/s by consumers", r, |x| x.gb_per_s)?;
    lines_by_consumers(&panels[4], "broker RSS (MiB) by consumers", r, |x| {
        x.broker_rss_mib
    })?;
    lines_by_consumers(&panels[5], "fetch p99 (ms) by consumers", r, |x| {
        x.fetch_p99_ms
    })?;
    root.present().map_err(svg_err)
}

/// One line per data path of a row metric against the consumer count (log
/// scale), when more than one count was run.
fn lines_by_consumers<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    r: &ConsumeReport,
    metric: fn(&ConsumeRow) -> f64,
) -> Result<(), String> {
    use plotters::prelude::*;
    let mut counts: Vec<u32> = r.rows.iter().map(|x| x.consumers).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() < 2 {
        return Ok(());
    }
    let ymax = r.rows.iter().map(metric).fold(0.0, f64::max) * 1.2;
    let xs = |c: u32| f64::from(c).log2();
    let xmax = xs(*counts.last().unwrap_or(&1)) + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..xmax, 0.0..ymax.max(1e-9))
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("consumers (log scale)")
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
                format!("{}", 2f64.powf(v.round()) as u64)
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(svg_err)?;
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    let mut paths: Vec<&str> = r.rows.iter().map(|x| x.path.as_str()).collect();
    paths.dedup();
    for (i, p) in paths.iter().enumerate() {
        let color = colors[i % colors.len()];
        let pts: Vec<(f64, f64)> = r
            .rows
            .iter()
            .filter(|x| x.path == *p)
            .map(|x| (xs(x.consumers), metric(x)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(svg_err)?
            .label(*p)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(svg_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(svg_err)?;
    Ok(())
}

/// The isolation report as an SVG: produce p99 alone and with the catching-up
/// consumer, isolation on and off (medians).
pub fn write_isolation_svg(r: &IsolationReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "produce p99 at {} records/s while a consumer catches up on {} MB {} ({})",
                r.rate,
                r.backlog_bytes / 1_000_000,
                backlog_state(r),
                r.machine.date_utc
            ),
            ("sans-serif", 18),
        )
        .map_err(svg_err)?;
    let med = |on: bool, f: fn(&IsolationRun) -> f64| {
        median(r.runs.iter().filter(|x| x.isolation == on).map(f).collect()).unwrap_or(0.0)
    };
    let bars = vec![
        ("on: alone".to_string(), med(true, |x| x.alone_p99_ms)),
        (
            "on: with consumer".to_string(),
            med(true, |x| x.with_consumer_p99_ms),
        ),
        ("off: alone".to_string(), med(false, |x| x.alone_p99_ms)),
        (
            "off: with consumer".to_string(),
            med(false, |x| x.with_consumer_p99_ms),
        ),
    ];
    bar_panel(
        &body,
        "produce p99 (ms), cold-read isolation on / off",
        &bars,
    )?;
    root.present().map_err(svg_err)
}
