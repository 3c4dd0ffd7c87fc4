//! The report's charts, each rendered to PNG and SVG bytes with its numbers
//! as CSV bytes beside them ([`RenderedChart`]); the report's writer puts
//! them on disk and the HTML inlines the PNG from the same bytes. Text is drawn with the DejaVu Sans font shipped in
//! `reports/assets` (registered with plotters' ab_glyph), so a chart looks
//! the same on every machine and needs no system font library.
//!
//! Colours are Okabe–Ito blue (baseline) and orange (candidate): told
//! apart with any colour vision and, by lightness, in grey-scale; lines
//! also differ by dash and marker so print never depends on colour.

use crate::evidence::Gathered;
use crate::stats::{quantiles, Interval, Unit};
use crate::{Evidence, GroupComparison, Report, Role};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::{BTreeMap, BTreeSet};
use vantage_wire::Metric;

/// The font every chart's text is drawn with.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Baseline colour: Okabe–Ito blue.
const BASE: RGBColor = RGBColor(0x00, 0x72, 0xb2);
/// Candidate colour: Okabe–Ito orange.
const CAND: RGBColor = RGBColor(0xe6, 0x9f, 0x00);
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);

/// One chart's name and how to read it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChartFile {
    /// Title, as drawn.
    pub title: String,
    /// One sentence on how to read it.
    pub caption: String,
    /// File stem: `STEM.png`, `STEM.svg`, `STEM.csv`.
    pub stem: String,
}

/// One chart, rendered: its description and the bytes of each file.
#[derive(Debug, Clone)]
pub struct RenderedChart {
    /// Title, caption and file stem.
    pub file: ChartFile,
    /// `STEM.svg`.
    pub svg: Vec<u8>,
    /// `STEM.png`.
    pub png: Vec<u8>,
    /// `STEM.csv`: the numbers drawn.
    pub csv: Vec<u8>,
}

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The bundled font did not load.
    #[error("the bundled chart font does not load")]
    Font,
    /// Drawing failed.
    #[error("chart {chart}: {reason}")]
    Draw {
        /// The chart's stem.
        chart: String,
        /// What plotters said.
        reason: String,
    },
}

fn register_font() -> Result<(), ChartError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ]
        .into_iter()
        .all(|style| plotters::style::register_font(FAMILY, style, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(ChartError::Font)
    }
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A chart: its size, how to draw it on any backend, and its numbers.
trait Chart {
    fn stem(&self) -> String;
    fn title(&self) -> String;
    fn caption(&self) -> String;
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult;
    fn csv(&self) -> Vec<Vec<String>>;
}

/// Renders `chart` to SVG, PNG and CSV bytes; a failed drawing is an
/// error, never a blank chart.
fn render<C: Chart>(chart: &C) -> Result<RenderedChart, ChartError> {
    let stem = chart.stem();
    let draw_err = |reason: String| ChartError::Draw {
        chart: stem.clone(),
        reason,
    };
    let (w, h) = chart.size();
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart.draw(&area).map_err(draw_err)?;
        area.present().map_err(|e| draw_err(err(e)))?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        chart.draw(&area).map_err(draw_err)?;
        area.present().map_err(|e| draw_err(err(e)))?;
    }
    let png = encode_png(&rgb, w, h).map_err(draw_err)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in chart.csv() {
        out.write_record(&row).map_err(|e| draw_err(err(e)))?;
    }
    let csv = out.into_inner().map_err(|e| draw_err(err(e)))?;
    Ok(RenderedChart {
        file: ChartFile {
            title: chart.title(),
            caption: chart.caption(),
            stem,
        },
        svg: svg.into_bytes(),
        png,
        csv,
    })
}

/// An RGB bitmap as PNG bytes.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, w, h, image::ColorType::Rgb8)
        .map_err(err)?;
    Ok(png)
}

fn text(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&INK)
}

fn bold(size: f64) -> TextStyle<'static> {
    (FAMILY, size, FontStyle::Bold).into_font().color(&INK)
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The two sides of a comparison, named as the report names them.
#[derive(Clone)]
struct Sides {
    baseline: String,
    candidate: String,
}

fn style_of(side: usize) -> (RGBColor, &'static str) {
    if side == 0 {
        (BASE, "baseline")
    } else {
        (CAND, "candidate")
    }
}

/// A labelled line of one side in one panel.
#[derive(Clone)]
struct Line {
    side: usize,
    points: Vec<(f64, f64)>,
    /// Consecutive points farther apart than this along x are not joined
    /// (a stretch with no data is a gap, not a slope).
    max_step: Option<f64>,
}

impl Line {
    /// The runs of points drawn as one stroke each.
    fn segments(&self) -> Vec<&[(f64, f64)]> {
        let Some(step) = self.max_step else {
            return vec![&self.points[..]];
        };
        let mut out = Vec::new();
        let mut from = 0;
        for i in 1..self.points.len() {
            if self.points[i].0 - self.points[i - 1].0 > step {
                out.push(&self.points[from..i]);
                from = i;
            }
        }
        if from < self.points.len() {
            out.push(&self.points[from..]);
        }
        out
    }
}

/// Panels of lines: one per group (country).
struct Panels {
    stem: String,
    title: String,
    caption: String,
    x_desc: String,
    y_desc: String,
    log_x: bool,
    panels: Vec<(String, Vec<Line>)>,
    sides: Sides,
    x_labels: fn(f64) -> String,
    /// Vertical marker (the cut-over), in x units.
    marker: Option<(f64, String)>,
    /// Series names for the CSV columns of x and y.
    csv_header: [&'static str; 2],
}

fn grid(n: usize) -> (usize, usize) {
    let cols = if n <= 1 { 1 } else { 2 };
    (n.div_ceil(cols).max(1), cols)
}

impl Panels {
    /// Axes, lines and the marker of one panel, on a linear or log x axis.
    fn fill_panel<DB: DrawingBackend, X>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>,
        lines: &[Line],
        y_top: f64,
    ) -> DrawResult
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_label_formatter(&|x| (self.x_labels)(*x))
            .y_label_formatter(&|y| fmt_ms(*y))
            .label_style(text(13.0))
            .axis_desc_style(text(14.0))
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        for line in lines {
            draw_line(chart, line)?;
        }
        if let Some((at, label)) = &self.marker {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*at, 0.0), (*at, y_top)],
                    INK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*at, y_top * 0.97),
                    text(13.0),
                )))
                .map_err(err)?;
        }
        Ok(())
    }
}

impl Chart for Panels {
    fn stem(&self) -> String {
        self.stem.clone()
    }
    fn title(&self) -> String {
        self.title.clone()
    }
    fn caption(&self) -> String {
        self.caption.clone()
    }
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = grid(self.panels.len());
        (if cols == 1 { 700 } else { 1200 }, 90 + 360 * rows as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, bold(24.0)).map_err(err)?;
        let (legend, body) = root.split_vertically(36);
        let sides = [&self.sides.baseline, &self.sides.candidate];
        for (i, name) in sides.iter().enumerate() {
            let (colour, _) = style_of(i);
            let x = 20 + 420 * i as i32;
            legend
                .draw(&PathElement::new(
                    vec![(x, 18), (x + 40, 18)],
                    colour.stroke_width(3),
                ))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    format!("{} ({name})", style_of(i).1),
                    (x + 50, 10),
                    text(15.0),
                ))
                .map_err(err)?;
        }
        let (rows, cols) = grid(self.panels.len());
        let cells = body.split_evenly((rows, cols));
        for ((name, lines), cell) in self.panels.iter().zip(cells.iter()) {
            let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
            let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
            let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
            let y_max = ys.fold(0.0f64, f64::max);
            if x_min > x_max {
                cell.draw(&Text::new(format!("{name}: no data"), (20, 40), text(16.0)))
                    .map_err(err)?;
                continue;
            }
            let y_top = if y_max > 0.0 { y_max * 1.08 } else { 1.0 };
            let mut builder = ChartBuilder::on(cell);
            builder
                .caption(name, bold(18.0))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60);
            if self.log_x {
                let mut chart = builder
                    .build_cartesian_2d(
                        (x_min.max(1.0)..x_max.max(2.0))
                            .log_scale()
                            .with_key_points(vec![
                                1.0, 2.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0,
                            ]),
                        0.0..y_top,
                    )
                    .map_err(err)?;
                self.fill_panel(&mut chart, lines, y_top)?;
            } else {
                let span = if x_max > x_min { x_max - x_min } else { 1.0 };
                let mut chart = builder
                    .build_cartesian_2d(x_min..x_min + span * 1.02, 0.0..y_top)
                    .map_err(err)?;
                self.fill_panel(&mut chart, lines, y_top)?;
            }
        }
        Ok(())
    }

    fn csv(&self) -> Vec<Vec<String>> {
        let mut rows = vec![vec![
            "group".to_string(),
            "side".to_string(),
            self.csv_header[0].to_string(),
            self.csv_header[1].to_string(),
        ]];
        for (name, lines) in &self.panels {
            for line in lines {
                for (x, y) in &line.points {
                    rows.push(vec![
                        name.clone(),
                        style_of(line.side).1.to_string(),
                        format!("{x}"),
                        format!("{y:.3}"),
                    ]);
                }
            }
        }
        rows
    }
}

fn draw_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    line: &Line,
) -> DrawResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let (colour, _) = style_of(line.side);
    if line.side == 0 {
        for run in line.segments() {
            chart
                .draw_series(DashedLineSeries::new(
                    run.iter().copied(),
                    8,
                    5,
                    colour.stroke_width(3),
                ))
                .map_err(err)?;
        }
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|p| Circle::new(*p, 3, colour.filled())),
            )
            .map_err(err)?;
    } else {
        for run in line.segments() {
            chart
                .draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(3)))
                .map_err(err)?;
        }
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|p| TriangleMarker::new(*p, 4, colour.filled())),
            )
            .map_err(err)?;
    }
    Ok(())
}

/// A chart with one slot per group along x (group `i` centred on `i`,
/// labelled with its name) and values from 0 to `top` along y, its axes
/// drawn: what the bar and speed-up charts share.
fn per_group_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    names: &[String],
    top: f64,
    y_desc: &str,
    y_label: &dyn Fn(f64) -> String,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, bold(20.0))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&|y| y_label(*y))
        .light_line_style(WHITE)
        .label_style(text(14.0))
        .axis_desc_style(text(14.0))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Grouped bars: p50 and p99 of each side per group, deltas labelled.
struct Bars {
    metric: Metric,
    sides: Sides,
    /// (group, [p50 base, p50 cand, p99 base, p99 cand]) in ms.
    rows: Vec<(String, [Option<f64>; 4])>,
}

impl Chart for Bars {
    fn stem(&self) -> String {
        format!("bars_{}", self.metric)
    }
    fn title(&self) -> String {
        format!("{}: p50 and p99 per group", self.metric)
    }
    fn caption(&self) -> String {
        "Left pair p50, right pair p99; baseline plain, candidate hatched; the label is candidate − baseline.".into()
    }
    fn size(&self) -> (u32, u32) {
        (1000, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let top = self
            .rows
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b));
        let top = if top > 0.0 { top * 1.18 } else { 1.0 };
        let names: Vec<String> = self.rows.iter().map(|(g, _)| g.clone()).collect();
        let mut chart = per_group_chart(root, &self.title(), &names, top, "ms", &|y| fmt_ms(y))?;
        let width = 0.18;
        for (i, (_, v)) in self.rows.iter().enumerate() {
            let centre = i as f64;
            for (k, value) in v.iter().enumerate() {
                let Some(value) = value else { continue };
                let side = k % 2;
                let x0 = centre - 0.4 + k as f64 * (width + 0.02) + if k >= 2 { 0.04 } else { 0.0 };
                let (colour, _) = style_of(side);
                let bar = Rectangle::new([(x0, 0.0), (x0 + width, *value)], colour.filled());
                chart.draw_series(std::iter::once(bar)).map_err(err)?;
                if side == 1 {
                    // Hatching: the candidate reads apart in grey-scale too.
                    let steps = 6;
                    let lines = (1..steps).map(|s| {
                        let y = value * s as f64 / steps as f64;
                        PathElement::new(vec![(x0, y), (x0 + width, y)], WHITE.stroke_width(1))
                    });
                    chart.draw_series(lines).map_err(err)?;
                    if let Some(base) = v[k - 1] {
                        let delta = value - base;
                        let label = format!(
                            "{}{} ms",
                            if delta >= 0.0 { "+" } else { "−" },
                            fmt_ms(delta.abs())
                        );
                        // Above the taller bar of the pair, so it never overlaps one.
                        chart
                            .draw_series(std::iter::once(Text::new(
                                label,
                                (x0 - width - 0.02, value.max(base) + top * 0.06),
                                bold(13.0),
                            )))
                            .map_err(err)?;
                    }
                }
                let tag = if k < 2 { "p50" } else { "p99" };
                if side == 0 {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            tag.to_string(),
                            (x0 + 0.04, top * 0.005 + value.min(top * 0.05)),
                            text(11.0).color(&WHITE),
                        )))
                        .map_err(err)?;
                }
            }
        }
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(format!("baseline ({})", self.sides.baseline))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BASE.filled()));
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(format!("candidate ({}), hatched", self.sides.candidate))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], CAND.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(text(14.0))
            .background_style(WHITE.mix(0.9))
            .border_style(INK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
    fn csv(&self) -> Vec<Vec<String>> {
        let cell = |v: &Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let mut rows = vec![[
            "group",
            "p50_baseline_ms",
            "p50_candidate_ms",
            "p99_baseline_ms",
            "p99_candidate_ms",
        ]
        .map(String::from)
        .to_vec()];
        for (g, v) in &self.rows {
            let mut row = vec![g.clone()];
            row.extend(v.iter().map(cell));
            rows.push(row);
        }
        rows
    }
}

/// Photo-sync speed-up (candidate / baseline goodput, p50) with intervals.
struct SpeedUp {
    confidence: f64,
    rows: Vec<(String, Option<Interval>)>,
}

impl Chart for SpeedUp {
    fn stem(&self) -> String {
        "speedup_photosync_goodput".into()
    }
    fn title(&self) -> String {
        "Photo-sync speed-up: candidate / baseline goodput (p50)".into()
    }
    fn caption(&self) -> String {
        format!(
            "Dots are the estimate, whiskers the {:.0} % bootstrap interval; above the 1× line is faster.",
            self.confidence * 100.0
        )
    }
    fn size(&self) -> (u32, u32) {
        (900, 520)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let n = self.rows.len().max(1);
        let top = self
            .rows
            .iter()
            .filter_map(|(_, i)| i.as_ref().map(|i| i.high))
            .fold(1.0f64, f64::max)
            * 1.15;
        let names: Vec<String> = self.rows.iter().map(|(g, _)| g.clone()).collect();
        let mut chart = per_group_chart(root, &self.title(), &names, top, "speed-up (×)", &|y| {
            format!("{y:.1}×")
        })?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
                6,
                4,
                INK.stroke_width(1),
            ))
            .map_err(err)?;
        for (i, (_, iv)) in self.rows.iter().enumerate() {
            let x = i as f64;
            let Some(iv) = iv else {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "insufficient data".to_string(),
                        (x - 0.25, top * 0.5),
                        text(13.0),
                    )))
                    .map_err(err)?;
                continue;
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, iv.low), (x, iv.high)],
                    CAND.stroke_width(3),
                )))
                .map_err(err)?;
            for y in [iv.low, iv.high] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x - 0.08, y), (x + 0.08, y)],
                        CAND.stroke_width(3),
                    )))
                    .map_err(err)?;
            }
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, iv.estimate),
                    7,
                    INK.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.2}× [{:.2}, {:.2}]", iv.estimate, iv.low, iv.high),
                    // The last group's label goes left of its dot, inside the plot.
                    (
                        if i + 1 == self.rows.len() {
                            x - 0.45
                        } else {
                            x + 0.1
                        },
                        iv.estimate,
                    ),
                    text(13.0),
                )))
                .map_err(err)?;
        }
        Ok(())
    }
    fn csv(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["group", "ratio", "low", "high"].map(String::from).to_vec()];
        for (g, iv) in &self.rows {
            rows.push(match iv {
                Some(i) => vec![
                    g.clone(),
                    format!("{:.4}", i.estimate),
                    format!("{:.4}", i.low),
                    format!("{:.4}", i.high),
                ],
                None => vec![g.clone(), String::new(), String::new(), String::new()],
            });
        }
        rows
    }
}

/// Country × data-centre matrix of p50.
struct Matrix {
    metric: Metric,
    rows: Vec<String>,
    cols: Vec<String>,
    cells: BTreeMap<(String, String), f64>,
}

impl Chart for Matrix {
    fn stem(&self) -> String {
        format!("matrix_{}", self.metric)
    }
    fn title(&self) -> String {
        format!("{} p50 (ms) by country and data centre", self.metric)
    }
    fn caption(&self) -> String {
        "All data at hand, both sides merged; darker is slower; the best data centre of each country is boxed.".into()
    }
    fn size(&self) -> (u32, u32) {
        (
            220 + 170 * self.cols.len().max(1) as u32,
            140 + 70 * self.rows.len().max(1) as u32,
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title(), bold(20.0)).map_err(err)?;
        let (lo, hi) = self
            .cells
            .values()
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
        let (left, top) = (120i32, 40i32);
        let (cw, ch) = (170i32, 70i32);
        for (j, dc) in self.cols.iter().enumerate() {
            root.draw(&Text::new(
                dc.clone(),
                (left + j as i32 * cw + 20, top - 25),
                bold(15.0),
            ))
            .map_err(err)?;
        }
        for (i, country) in self.rows.iter().enumerate() {
            let y = top + i as i32 * ch;
            root.draw(&Text::new(
                country.clone(),
                (20, y + ch / 2 - 8),
                bold(15.0),
            ))
            .map_err(err)?;
            let best = self
                .cols
                .iter()
                .filter_map(|dc| self.cells.get(&(country.clone(), dc.clone())))
                .fold(f64::MAX, |a, b| a.min(*b));
            for (j, dc) in self.cols.iter().enumerate() {
                let x = left + j as i32 * cw;
                let rect = [(x, y), (x + cw - 4, y + ch - 4)];
                match self.cells.get(&(country.clone(), dc.clone())) {
                    Some(v) => {
                        // Light (fast) to dark (slow) in one hue: reads in grey-scale.
                        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
                        let shade = |a: f64, b: f64| (a + (b - a) * t) as u8;
                        let fill =
                            RGBColor(shade(222.0, 8.0), shade(235.0, 48.0), shade(247.0, 107.0));
                        root.draw(&Rectangle::new(rect, fill.filled()))
                            .map_err(err)?;
                        let ink = if t > 0.5 { WHITE } else { INK };
                        root.draw(&Text::new(
                            format!("{} ms", fmt_ms(*v)),
                            (x + 30, y + ch / 2 - 10),
                            text(16.0).color(&ink),
                        ))
                        .map_err(err)?;
                        if (*v - best).abs() < f64::EPSILON {
                            root.draw(&Rectangle::new(rect, CAND.stroke_width(4)))
                                .map_err(err)?;
                        }
                    }
                    None => {
                        root.draw(&Rectangle::new(rect, RGBColor(0xf4, 0xf4, 0xf4).filled()))
                            .map_err(err)?;
                        root.draw(&Text::new(
                            "no data".to_string(),
                            (x + 45, y + ch / 2 - 10),
                            text(14.0).color(&RGBColor(0x77, 0x77, 0x77)),
                        ))
                        .map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    }
    fn csv(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["country", "datacenter", "p50_ms"]
            .map(String::from)
            .to_vec()];
        for ((c, dc), v) in &self.cells {
            rows.push(vec![c.clone(), dc.clone(), format!("{v:.3}")]);
        }
        rows
    }
}

/// Percentiles of the spectrum: 1 − 10^(−k/10), up to what the sample
/// count supports (at least one sample beyond the percentile).
fn spectrum(units: &[Unit]) -> Vec<(f64, f64)> {
    let total: u64 = units.iter().map(Unit::samples).sum();
    let xs: Vec<f64> = (0..=50)
        .map(|k| 10f64.powf(k as f64 / 10.0))
        .take_while(|x| *x <= total as f64)
        .collect();
    let qs: Vec<f64> = xs.iter().map(|x| 1.0 - 1.0 / x).collect();
    match quantiles(units, &qs) {
        Some(v) => xs
            .into_iter()
            .zip(v)
            .map(|(x, v)| (x, v as f64 / 1000.0))
            .collect(),
        None => Vec::new(),
    }
}

fn cdf(units: &[Unit]) -> Vec<(f64, f64)> {
    let qs: Vec<f64> = (0..=200).map(|i| i as f64 / 200.0).collect();
    match quantiles(units, &qs) {
        Some(v) => v
            .into_iter()
            .zip(qs)
            .map(|(v, q)| (v as f64 / 1000.0, q))
            .collect(),
        None => Vec::new(),
    }
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p < 1e-9 {
        "0%".into()
    } else if (p - p.round()).abs() < 1e-6 {
        format!("{p:.0}%")
    } else {
        format!("{}%", format!("{p:.4}").trim_end_matches('0'))
    }
}

fn latency_metrics_to_chart(report: &Report) -> Vec<Metric> {
    let mut out: BTreeSet<Metric> = [Metric::QuicRequest, Metric::QuicColdRequest]
        .into_iter()
        .collect();
    for c in &report.claims {
        if c.claim.metric.unit() == vantage_wire::Unit::Microseconds {
            out.insert(c.claim.metric);
        }
    }
    let present: BTreeSet<&str> = report.groups.iter().map(|g| g.metric.as_str()).collect();
    out.into_iter()
        .filter(|m| present.contains(m.name()))
        .collect()
}

/// Renders every chart of `report`, in reading order, from the evidence
/// the report was built from.
pub fn render_charts(
    report: &Report,
    evidence: &Evidence,
) -> Result<Vec<RenderedChart>, ChartError> {
    register_font()?;
    let sides = Sides {
        baseline: report.baseline.clone(),
        candidate: report.candidate.clone(),
    };
    let mut files = Vec::new();

    for metric in latency_metrics_to_chart(report) {
        let mut spec_panels = Vec::new();
        let mut cdf_panels = Vec::new();
        for (subject, by_side) in groups_of(evidence, metric) {
            let mut spec_lines = Vec::new();
            let mut cdf_lines = Vec::new();
            for (side, g) in by_side.into_iter().enumerate() {
                if let Some(g) = g {
                    spec_lines.push(Line {
                        max_step: None,
                        side,
                        points: spectrum(&g.units),
                    });
                    cdf_lines.push(Line {
                        max_step: None,
                        side,
                        points: cdf(&g.units),
                    });
                }
            }
            spec_panels.push((subject.clone(), spec_lines));
            cdf_panels.push((subject, cdf_lines));
        }
        if spec_panels.is_empty() {
            continue;
        }
        files.push(render(&Panels {
                stem: format!("spectrum_{metric}"),
                title: format!("{metric}: percentile spectrum"),
                caption: "Latency at each percentile, on HdrHistogram's 1/(1−p) scale: the tail reads to the right.".into(),
                x_desc: "percentile".into(),
                y_desc: "ms".into(),
                log_x: true,
                panels: spec_panels,
                sides: sides.clone(),
                x_labels: percentile_label,
                marker: None,
                csv_header: ["inverse_tail_1_over_1_minus_p", "value_ms"],
        })?);
        files.push(render(&Panels {
            stem: format!("cdf_{metric}"),
            title: format!("{metric}: cumulative distribution"),
            caption: "Share of requests at or below each latency; a curve further left is faster."
                .into(),
            x_desc: "ms".into(),
            y_desc: "share of requests".into(),
            log_x: false,
            panels: cdf_panels,
            sides: sides.clone(),
            x_labels: |x| fmt_ms(x),
            marker: None,
            csv_header: ["value_ms", "quantile"],
        })?);
        let rows: Vec<(String, [Option<f64>; 4])> = report
            .groups
            .iter()
            .filter(|g| g.metric == metric.name())
            .map(|g: &GroupComparison| {
                let ms = |v: Option<u64>| v.map(|v| v as f64 / 1000.0);
                let at =
                    |side: &crate::Side, i: usize| ms(side.percentiles.get(i).copied().flatten());
                (
                    g.subject.clone(),
                    [
                        at(&g.baseline, 0),
                        at(&g.candidate, 0),
                        at(&g.baseline, 2),
                        at(&g.candidate, 2),
                    ],
                )
            })
            .collect();
        files.push(render(&Bars {
            metric,
            sides: sides.clone(),
            rows,
        })?);
        files.push(render(&timeline(evidence, metric, &sides))?);
    }

    let speed: Vec<(String, Option<Interval>)> = report
        .groups
        .iter()
        .filter(|g| g.metric == Metric::PhotosyncGoodput.name())
        .map(|g| {
            (
                g.subject.clone(),
                g.percentiles
                    .iter()
                    .find(|p| (p.percentile - 50.0).abs() < 1e-9)
                    .map(|p| p.ratio),
            )
        })
        .collect();
    if !speed.is_empty() {
        files.push(render(&SpeedUp {
            confidence: report.confidence,
            rows: speed,
        })?);
    }

    // Which data centre serves each country best, from everything at hand.
    let metric = Metric::QuicRequest;
    let mut cells = BTreeMap::new();
    for ((country, dc), units) in &evidence.matrix {
        if let Some(v) = quantiles(units, &[0.5]) {
            cells.insert((country.clone(), dc.clone()), v[0] as f64 / 1000.0);
        }
    }
    let countries: BTreeSet<String> = cells.keys().map(|(c, _)| c.clone()).collect();
    let dcs: BTreeSet<String> = cells.keys().map(|(_, d)| d.clone()).collect();
    if !cells.is_empty() {
        files.push(render(&Matrix {
            metric,
            rows: countries.into_iter().collect(),
            cols: dcs.into_iter().collect(),
            cells,
        })?);
    }
    Ok(files)
}

/// The groups of `metric`, each with its (baseline, candidate) data.
fn groups_of(evidence: &Evidence, metric: Metric) -> Vec<(String, [Option<&Gathered>; 2])> {
    let mut out: BTreeMap<String, [Option<&Gathered>; 2]> = BTreeMap::new();
    for (i, role) in [Role::Baseline, Role::Candidate].into_iter().enumerate() {
        for (key, g) in &evidence.side(role).groups {
            if key.last().map(String::as_str) == Some(metric.name()) {
                let subject = key[..key.len() - 1].join("/");
                out.entry(subject).or_default()[i] = Some(g);
            }
        }
    }
    out.into_iter().collect()
}

/// How finely the timeline is drawn: a point per window for a few hours,
/// per hour up to three days, per day beyond (a month of one-minute
/// points is unreadable), never finer than the units themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeBucket {
    ms: u64,
    unit_ms: u64,
    unit: &'static str,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

impl TimeBucket {
    /// For data spanning `range_ms`, whose units are `block_ms` long.
    fn choose(range_ms: u64, block_ms: u64) -> Self {
        let ms = if range_ms > 3 * DAY_MS {
            DAY_MS
        } else if range_ms > 6 * HOUR_MS {
            HOUR_MS
        } else {
            block_ms
        }
        .max(block_ms)
        .max(1);
        let (unit_ms, unit) = if ms >= DAY_MS {
            (DAY_MS, "days")
        } else if ms >= HOUR_MS {
            (HOUR_MS, "hours")
        } else {
            (60_000, "minutes")
        };
        TimeBucket { ms, unit_ms, unit }
    }

    fn name(&self) -> &'static str {
        match self.ms {
            DAY_MS => "day",
            HOUR_MS => "hour",
            _ => "window",
        }
    }
}

/// (x, y) on a chart.
type Point = (f64, f64);

/// (x, p50 ms) and (x, p99 ms) per bucket with data, x its first window
/// in the bucket's unit from `start`; buckets without a unit have no point.
fn bucket_points(g: &Gathered, start: u64, bucket: TimeBucket) -> [Vec<Point>; 2] {
    // Each bucket's point sits at its first window, so a point never
    // appears before the data it shows (the cut-over mark is exact).
    let mut by_bucket: BTreeMap<u64, (u64, Vec<&Unit>)> = BTreeMap::new();
    for (u, w) in g.units.iter().zip(&g.windows) {
        let entry = by_bucket
            .entry(w.saturating_sub(start) / bucket.ms)
            .or_insert((*w, Vec::new()));
        entry.0 = entry.0.min(*w);
        entry.1.push(u);
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for (first, units) in by_bucket.into_values() {
        if let Some(v) = quantiles(units, &[0.5, 0.99]) {
            let x = first.saturating_sub(start) as f64 / bucket.unit_ms as f64;
            p50.push((x, v[0] as f64 / 1000.0));
            p99.push((x, v[1] as f64 / 1000.0));
        }
    }
    [p50, p99]
}

/// The length of the units' blocks: the resolution's, or for the probes'
/// windows the longest window read (a last window may be cut short); times the most series any group's
/// units were merged from (a long one-minute selection merges a probe's
/// consecutive windows), so a bucket never falls between two units.
fn block_ms(evidence: &Evidence) -> u64 {
    let base = match evidence.resolution {
        vantage_store::Resolution::Hour => HOUR_MS,
        vantage_store::Resolution::Day => DAY_MS,
        vantage_store::Resolution::Window => match evidence.longest_window_ms {
            0 => 60_000,
            ms => ms,
        },
    };
    let merged = evidence
        .sides
        .iter()
        .flat_map(|side| side.groups.values())
        .map(|g| g.merged.max(1))
        .max()
        .unwrap_or(1);
    base.saturating_mul(merged)
}

/// p50 and p99 per window, hour or day over time for each group, the
/// cut-over marked where the candidate's data begins; a stretch without
/// data is a gap in the lines.
fn timeline(evidence: &Evidence, metric: Metric, sides: &Sides) -> Panels {
    let spans = [Role::Baseline, Role::Candidate].map(|r| evidence.side(r).span);
    let start = spans.iter().flatten().map(|(a, _)| *a).min().unwrap_or(0);
    let end = spans
        .iter()
        .flatten()
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(start);
    let bucket = TimeBucket::choose(end.saturating_sub(start), block_ms(evidence));
    let x_of = |ms: u64| ms.saturating_sub(start) as f64 / bucket.unit_ms as f64;
    // More than one bucket without data between two points: a gap.
    let max_step = Some(1.5 * bucket.ms as f64 / bucket.unit_ms as f64);
    // Each panel says how many windows its probes left silent (Methods
    // has them by side): the merged line cannot show one probe missing.
    let silent = evidence.silent_windows();
    let mut panels = Vec::new();
    for (subject, by_side) in groups_of(evidence, metric) {
        let missing: u64 = silent
            .iter()
            .filter(|s| s.counted && s.group.join("/") == subject)
            .map(|s| s.silent)
            .sum();
        let subject = match missing {
            0 => subject,
            n => format!("{subject} ({n} silent windows)"),
        };
        let mut lines = Vec::new();
        for (side, g) in by_side.into_iter().enumerate() {
            let Some(g) = g else { continue };
            for points in bucket_points(g, start, bucket) {
                lines.push(Line {
                    side,
                    points,
                    max_step,
                });
            }
        }
        panels.push((subject, lines));
    }
    // The cut-over: the stored phase switch in range, if there is one;
    // else where the candidate begins, if it all follows the baseline.
    let stored = evidence
        .cut_overs()
        .iter()
        .rev()
        .find(|c| (start..=end).contains(&c.at_unix_ms));
    let cut = match (stored, spans) {
        (Some(c), _) => Some((x_of(c.at_unix_ms), format!("cut-over: {}", c.phase))),
        (None, [Some((_, b_end)), Some((c_start, _))]) if b_end <= c_start => {
            Some((x_of(c_start), "cut-over".to_string()))
        }
        _ => None,
    };
    let per = bucket.name();
    Panels {
        stem: format!("timeline_{metric}"),
        title: format!("{metric}: p50 (lower line) and p99 per {per} over time"),
        caption: format!("Each point is one {per}, all probes of the group merged; a break in a line is a stretch with no data (silent windows are counted in Methods); the vertical line marks the cut-over: the stored phase switch, or else where the candidate's data begins."),
        x_desc: format!("{} from the first window", bucket.unit),
        y_desc: "ms".into(),
        log_x: false,
        panels,
        sides: sides.clone(),
        x_labels: |x| {
            // Two decimals, trailing zeros dropped: 0.05, 0.1, 2.
            let s = format!("{x:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        },
        marker: cut,
        csv_header: [bucket.unit, "value_ms"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: u64) -> Unit {
        let mut h = vantage_wire::new_latency_histogram();
        h.record_n(v, 10).unwrap();
        Unit::from_histogram(&h)
    }

    #[test]
    fn the_timeline_draws_windows_hours_or_days_by_range_never_finer_than_its_units() {
        let minute = 60_000;
        let pick = |range, block| TimeBucket::choose(range, block);
        assert_eq!(pick(2 * HOUR_MS, minute).ms, minute);
        assert_eq!(pick(2 * HOUR_MS, minute).unit, "minutes");
        assert_eq!(pick(DAY_MS, minute).ms, HOUR_MS);
        assert_eq!(pick(DAY_MS, minute).unit, "hours");
        assert_eq!(pick(28 * DAY_MS, minute).ms, DAY_MS);
        assert_eq!(pick(28 * DAY_MS, minute).name(), "day");
        assert_eq!(pick(2 * HOUR_MS, HOUR_MS).ms, HOUR_MS, "hourly roll-ups");
        assert_eq!(pick(DAY_MS, DAY_MS).unit, "days", "daily roll-ups");
    }

    #[test]
    fn a_month_is_drawn_daily_and_days_without_data_are_gaps_not_slopes() {
        // Hourly units over 10 days; nothing on days 3 and 4.
        let start = 1_790_000_000_000 / DAY_MS * DAY_MS;
        let mut g = Gathered::default();
        for hour in 0..240u64 {
            if (72..120).contains(&hour) {
                continue;
            }
            g.units.push(unit(1000 + hour));
            g.windows.push(start + hour * HOUR_MS);
            g.unit_probes.push(0);
        }
        let bucket = TimeBucket::choose(240 * HOUR_MS, HOUR_MS);
        let [p50, p99] = bucket_points(&g, start, bucket);
        let days: Vec<f64> = p50.iter().map(|p| p.0).collect();
        assert_eq!(days, [0.0, 1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(p99.len(), 8);
        // Day 0 holds hours 0..24: its median unit is hour 11 or 12.
        assert!((1.0..=1.03).contains(&p50[0].1), "{}", p50[0].1);
        let line = Line {
            side: 1,
            points: p50,
            max_step: Some(1.5),
        };
        let runs: Vec<usize> = line.segments().iter().map(|r| r.len()).collect();
        assert_eq!(runs, [3, 5], "broken across the two empty days");
        let joined = Line {
            max_step: None,
            ..line
        };
        assert_eq!(joined.segments().len(), 1);
    }
}
