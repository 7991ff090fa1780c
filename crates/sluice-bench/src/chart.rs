//! SVG charts shared by the reports (plotters' SVG backend, no fonts or
//! system libraries needed).

use std::path::Path;

pub(crate) fn svg_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Bars of a few values, one group per label.
pub(crate) fn bar_panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, f64)],
) -> Result<(), String> {
    use plotters::prelude::*;
    let ymax = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..ymax)
        .map_err(svg_err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(svg_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                BLUE.mix(0.6).filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))
        .map_err(svg_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.3}"),
                (SegmentValue::CenterOf(i), *v + ymax * 0.02),
                ("sans-serif", 12),
            )
        }))
        .map_err(svg_err)?;
    Ok(())
}

/// A load generator report as an SVG: latency percentiles as bars, with
/// throughput (and the local broker's CPU per GB) in the title.
pub fn write_load_svg(r: &crate::load::LoadReport, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let (title, body) = root.split_vertically(40);
    let cpu = r
        .broker_cpu_s_per_gb
        .map(|c| format!(", broker {c:.3} CPU s/GB"))
        .unwrap_or_default();
    title
        .titled(
            &format!(
                "sluice bench {}: {:.0} records/s, {:.1} MB/s over {:.1} s{cpu} ({})",
                r.kind,
                r.records_per_s,
                r.mb_per_s,
                r.seconds,
                crate::transfer::utc_now()
            ),
            ("sans-serif", 18),
        )
        .map_err(svg_err)?;
    let bars = vec![
        ("p50".to_string(), r.latency.p50_ms),
        ("p99".to_string(), r.latency.p99_ms),
        ("p99.9".to_string(), r.latency.p999_ms),
        ("max".to_string(), r.latency.max_ms),
    ];
    let what = if r.kind == "e2e" {
        "produce-to-consume latency (ms)"
    } else {
        "request latency (ms)"
    };
    bar_panel(&body, what, &bars)?;
    root.present().map_err(svg_err)
}
