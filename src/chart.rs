//! The SVG charts the reports draw (`bench`, `bench --sync-rates`, `check`, a rehearsal):
//! line panels stacked on one time axis, and latency bars on a log scale, with axis labels
//! a reader takes in at a glance (`120k`, `35%`, `2.5 s`, not `120000.0`).
//!
//! Input: series of points, already in the panel's unit. Output: an SVG file.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// How a panel's values read on its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Thousands: `120k`.
    Kilo,
    /// A fraction 0..1 shown as `35%`.
    Percent,
    /// Seconds: `2.5`.
    Seconds,
}

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Line {
    /// Empty: no legend entry.
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub width: u32,
}

/// One chart of lines over the shared x axis.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub y_desc: String,
    pub unit: Unit,
    pub lines: Vec<Line>,
    /// The y axis reaches at least this (a goal line, 100 %…).
    pub y_floor: f64,
}

/// Colours in the order lines take them.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
/// The colour of a goal or a yardstick.
pub const GOAL: RGBColor = RGBColor(214, 39, 40);

/// Formats an axis value in a unit, with the decimals the axis span needs.
#[must_use]
pub fn label(unit: Unit, v: f64, span: f64) -> String {
    match unit {
        Unit::Kilo => {
            let k = v / 1000.0;
            if span >= 10_000.0 || k == k.round() {
                format!("{k:.0}k")
            } else {
                format!("{k:.1}k")
            }
        }
        Unit::Percent => format!("{:.0}%", v * 100.0),
        Unit::Seconds => seconds(v, span),
    }
}

fn seconds(v: f64, span: f64) -> String {
    if span >= 10.0 {
        format!("{v:.0}")
    } else if span >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn failed(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Io {
        what: format!("draw {}", path.display()),
        source: std::io::Error::other(e),
    }
}

/// Panels stacked top to bottom over one x axis in seconds; the first panel gets the
/// most height.
///
/// # Errors
/// The file cannot be written.
pub fn draw_panels(path: &Path, caption: &str, x_desc: &str, panels: &[Panel]) -> Result<()> {
    let fail = failed(path);
    let max_x = panels
        .iter()
        .flat_map(|p| &p.lines)
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.1, f64::max)
        * 1.02;
    let heights: Vec<u32> = match panels.len() {
        1 => vec![520],
        n => std::iter::once(400)
            .chain(std::iter::repeat_n(220, n - 1))
            .collect(),
    };
    let total: u32 = heights.iter().sum::<u32>() + 40;
    let root = SVGBackend::new(path, (1000, total)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root
        .titled(caption, ("sans-serif", 20))
        .map_err(|e| fail(e.to_string()))?;
    let mut rest = root;
    for (i, panel) in panels.iter().enumerate() {
        let (area, below) = if i + 1 < panels.len() {
            rest.split_vertically(i32::try_from(heights[i]).unwrap_or(i32::MAX))
        } else {
            let whole = rest.clone();
            (whole, rest)
        };
        draw_panel(&area, panel, max_x, x_desc, i + 1 == panels.len()).map_err(&fail)?;
        rest = below;
    }
    rest.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    max_x: f64,
    x_desc: &str,
    last: bool,
) -> std::result::Result<(), String> {
    let max_y = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(panel.y_floor, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(if last { 40 } else { 22 })
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| e.to_string())?;
    let unit = panel.unit;
    let x_fmt = move |v: &f64| seconds(*v, max_x);
    let y_fmt = move |v: &f64| label(unit, *v, max_y);
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(panel.y_desc.as_str())
        .light_line_style(RGBColor(242, 242, 242))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .y_labels(6)
        .x_labels(12);
    if last {
        mesh.x_desc(x_desc);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for line in &panel.lines {
        let style = line.color.stroke_width(line.width);
        let drawn = chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(|e| e.to_string())?;
        // A line without a label (a repeat of one labelled) stays out of the legend.
        if !line.label.is_empty() {
            drawn
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One group of latency bars (a check): its values in milliseconds, and its target.
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub name: String,
    /// (label, milliseconds), one bar each, in the legend's order.
    pub bars: Vec<(String, f64)>,
    pub target_ms: Option<f64>,
}

/// Latency bars per group on a log scale of milliseconds, each group's target as a red
/// tick across it.
///
/// # Errors
/// The file cannot be written.
pub fn draw_latency_bars(path: &Path, caption: &str, groups: &[BarGroup]) -> Result<()> {
    let fail = failed(path);
    let values = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.1).chain(g.target_ms));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.1, 1.0) } else { (lo, hi) };
    // Whole decades around the values, so the bars' lengths compare.
    let lo = 10f64.powf(lo.max(0.001).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    let n = groups.len().max(1) as f64;
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(70)
        // Room on the right for the legend, clear of the bars.
        .build_cartesian_2d(0.0..n + 0.7, (lo..hi).log_scale())
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("milliseconds (log scale)")
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        })
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    let per = groups
        .iter()
        .map(|g| g.bars.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for (i, g) in groups.iter().enumerate() {
        let x0 = i as f64 + 0.1;
        let w = 0.8 / per;
        for (j, (_, ms)) in g.bars.iter().enumerate() {
            let c = PALETTE[j % PALETTE.len()];
            let x = x0 + j as f64 * w;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, lo), (x + w * 0.9, ms.max(lo))],
                    c.filled(),
                )))
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(t) = g.target_ms {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x0 - 0.05, t), (x0 + 0.85, t)],
                    GOAL.stroke_width(3),
                )))
                .map_err(|e| fail(e.to_string()))?;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                g.name.clone(),
                (x0, hi / 1.6),
                ("sans-serif", 15),
            )))
            .map_err(|e| fail(e.to_string()))?;
    }
    // The legend: one entry per bar kind, and the target.
    if let Some(first) = groups.first() {
        for (j, (name, _)) in first.bars.iter().enumerate() {
            let c = PALETTE[j % PALETTE.len()];
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(|e| fail(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
        }
    }
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
        .map_err(|e| fail(e.to_string()))?
        .label("target p95")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GOAL.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Rows/s per interval of a (seconds, rows) timeline, placed at the interval's end and
/// shifted by `offset` seconds.
#[must_use]
pub fn rates(timeline: &[(f64, u64)], offset: f64) -> Vec<(f64, f64)> {
    timeline
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| {
            (
                offset + w[1].0,
                w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_read_in_their_unit() {
        assert_eq!(label(Unit::Kilo, 160_000.0, 200_000.0), "160k");
        assert_eq!(label(Unit::Kilo, 2_500.0, 5_000.0), "2.5k");
        assert_eq!(label(Unit::Kilo, 0.0, 5_000.0), "0k");
        assert_eq!(label(Unit::Percent, 0.35, 1.0), "35%");
        assert_eq!(label(Unit::Seconds, 2.5, 5.0), "2.5");
        assert_eq!(label(Unit::Seconds, 120.0, 300.0), "120");
    }

    #[test]
    fn rates_are_per_interval_and_shifted() {
        let r = rates(
            &[(0.0, 0), (0.5, 1000), (1.0, 1000), (1.0, 1000), (2.0, 3000)],
            10.0,
        );
        assert_eq!(r, vec![(10.5, 2000.0), (11.0, 0.0), (12.0, 2000.0)]);
    }
}
