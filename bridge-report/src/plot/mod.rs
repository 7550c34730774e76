//! Line charts through [`plotters`]: PNG (an RGB bitmap encoded by the `png` crate) and SVG.
//!
//! Text is drawn with a font embedded in the crate (`fonts/DejaVuSans-subset.ttf`, DejaVu Sans
//! cut down to Latin-1, Greek and a few symbols; its licence is `fonts/LICENSE-DejaVu.txt`),
//! registered with plotters' `ab_glyph` renderer: no fontconfig, freetype or system font is
//! needed, so charts render the same on a bare CI machine as on a workstation. Axis ranges and
//! tick values are this module's own ("nice" round ticks, overflow-safe for any finite data):
//! plotters draws in the unit square and labels the ticks with them.
//!
//! ```no_run
//! use bridge_report::plot::{LineChart, grid};
//! # fn main() -> bridge_core::Result<()> {
//! let reward = LineChart::new("reward")
//!     .x_label("step")
//!     .y_label("mean reward")
//!     .series("train", vec![(0.0, 0.1), (10.0, 0.3), (20.0, 0.45)])
//!     .series("eval", vec![(0.0, 0.12), (20.0, 0.4)]);
//! reward.save_png("runs/demo/reward.png", 800, 500)?;
//! reward.save_svg("runs/demo/reward.svg", 800, 500)?;
//! let loss = LineChart::new("SFT loss").series("sft_loss", vec![(0.0, 2.1), (10.0, 1.4), (20.0, 1.2)]);
//! grid(vec![reward, loss], 2).save_png("runs/demo/summary.png", 1200, 450)?;
//! # Ok(())
//! # }
//! ```

mod ticks;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use bridge_core::{BridgeError, Result};
use plotters::chart::SeriesLabelPosition;
use plotters::coord::Shift;
use plotters::prelude::{
    BitMapBackend, ChartBuilder, Circle, DrawingArea, DrawingBackend, IntoDrawingArea, PathElement, RGBColor,
    Rectangle, SVGBackend, Text,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontStyle, FontTransform, IntoFont, ShapeStyle, TextStyle};
use ticks::Axis;

/// An RGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl From<Rgb> for RGBColor {
    fn from(c: Rgb) -> Self {
        RGBColor(c.0, c.1, c.2)
    }
}

/// The series colours, in order: distinguishable for up to ten series, then reused.
pub const PALETTE: [Rgb; 10] = [
    Rgb(0x1f, 0x77, 0xb4), // blue
    Rgb(0xff, 0x7f, 0x0e), // orange
    Rgb(0x2c, 0xa0, 0x2c), // green
    Rgb(0xd6, 0x27, 0x28), // red
    Rgb(0x94, 0x67, 0xbd), // purple
    Rgb(0x8c, 0x56, 0x4b), // brown
    Rgb(0xe3, 0x77, 0xc2), // pink
    Rgb(0x7f, 0x7f, 0x7f), // grey
    Rgb(0xbc, 0xbd, 0x22), // olive
    Rgb(0x17, 0xbe, 0xcf), // cyan
];

/// The background colour of every chart.
pub const BACKGROUND: Rgb = Rgb(255, 255, 255);

const TEXT: Rgb = Rgb(0x22, 0x22, 0x22);
const MUTED: Rgb = Rgb(0x55, 0x55, 0x55);
const FRAME: Rgb = Rgb(0x88, 0x88, 0x88);
const GRIDLINE: Rgb = Rgb(0xe6, 0xe6, 0xe6);
const LEGEND_BORDER: Rgb = Rgb(0xac, 0xac, 0xac);

/// The largest width or height accepted, in pixels.
pub const MAX_DIMENSION: u32 = 16_384;

/// One named line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(x, y)` points, drawn in order; points with a NaN or infinite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
    /// The line colour; `None` takes the next colour of [`PALETTE`].
    pub color: Option<Rgb>,
}

/// A line chart: title, axis labels, any number of series.
///
/// Axis ranges follow the data (extended to round tick values) unless fixed with
/// [`LineChart::x_range`] / [`LineChart::y_range`]. Empty series, single points, constant values
/// and huge ranges all render; nothing about the data can make rendering panic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
    legend: Option<bool>,
}

impl LineChart {
    /// An empty chart titled `title` (which may be empty).
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), ..Self::default() }
    }

    /// Sets the label under the x axis.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Sets the label beside the y axis (drawn rotated).
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Adds a series named `name`, coloured from [`PALETTE`] in order of addition.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series { name: name.into(), points, color: None });
        self
    }

    /// Adds a series with an explicit colour.
    pub fn series_colored(mut self, name: impl Into<String>, points: Vec<(f64, f64)>, color: Rgb) -> Self {
        self.series.push(Series { name: name.into(), points, color: Some(color) });
        self
    }

    /// Fixes the x range (ignored unless `min < max`, both finite); points outside are clipped.
    pub fn x_range(mut self, min: f64, max: f64) -> Self {
        self.x_range = Some((min, max));
        self
    }

    /// Fixes the y range (ignored unless `min < max`, both finite); points outside are clipped.
    pub fn y_range(mut self, min: f64, max: f64) -> Self {
        self.y_range = Some((min, max));
        self
    }

    /// Forces the legend on or off. By default it is shown when there are two or more series.
    pub fn legend(mut self, show: bool) -> Self {
        self.legend = Some(show);
        self
    }

    /// The chart's title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The chart's series, in order.
    pub fn series_list(&self) -> &[Series] {
        &self.series
    }

    /// Renders the chart to an in-memory image of `width` × `height` pixels.
    pub fn render(&self, width: u32, height: u32) -> Result<Image> {
        render_bitmap(width, height, |area| self.draw(area))
    }

    /// Renders the chart and writes it to `path` as a PNG, atomically (temporary file + rename).
    pub fn save_png(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        self.render(width, height)?.save_png(path)
    }

    /// Renders the chart as an SVG document of `width` × `height` pixels (text as `<text>`
    /// elements in the `sans-serif` family).
    pub fn render_svg(&self, width: u32, height: u32) -> Result<String> {
        render_svg(width, height, |area| self.draw(area))
    }

    /// Renders the chart and writes it to `path` as SVG, atomically.
    pub fn save_svg(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        bridge_core::fs::write_atomic(path.as_ref(), self.render_svg(width, height)?.as_bytes())
    }

    fn color(&self, i: usize) -> Rgb {
        self.series[i].color.unwrap_or(PALETTE[i % PALETTE.len()])
    }

    /// Each series' finite points in the unit square of the plot (`(0, 0)` bottom left), cut
    /// into runs of segments clipped to it.
    fn unit_paths(&self, xa: &Axis, ya: &Axis) -> Vec<Vec<Vec<(f64, f64)>>> {
        self.series
            .iter()
            .map(|se| {
                let pts: Vec<(f64, f64)> = se
                    .points
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .map(|&(x, y)| (xa.frac(x), ya.frac(y)))
                    .collect();
                let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
                for w in pts.windows(2) {
                    let Some((a, b)) = clip_to_unit(w[0], w[1]) else { continue };
                    match runs.last_mut() {
                        Some(run) if run.last() == Some(&a) => run.push(b),
                        _ => runs.push(vec![a, b]),
                    }
                }
                runs
            })
            .collect()
    }

    /// Draws the chart into `area`. Nothing about the data makes it fail; an area too small
    /// for axes gets the title only.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let (w, h) = area.dim_in_pixel();
        let (w, h) = (i64::from(w), i64::from(h));
        // Text scale: 1 for small panels, 2 from ~500 px.
        let s = if w.min(h) >= 480 { 2.0 } else { 1.0 };
        let font = |size: f64, color: Rgb| -> TextStyle<'static> {
            (FONT_FAMILY, size * s).into_font().color(&RGBColor::from(color))
        };
        let (label_font, title_font) = (font(12.0, MUTED), font(15.0, TEXT));
        let text_w = |t: &str, f: &TextStyle<'_>| area.estimate_text_size(t, f).map_or(0, |(tw, _)| i64::from(tw));
        let pad = (6.0 * s) as i64;
        let text_h = (12.0 * s / 1.24).ceil() as i64 + 2;

        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let pts = || self.series.iter().flat_map(|se| se.points.iter().filter(finite));
        let xb = ticks::bounds(pts().map(|p| p.0));
        let yb = ticks::bounds(pts().map(|p| p.1));
        let xa = ticks::axis(xb, self.x_range, (w as f64 / (90.0 * s)).max(2.0) as usize);
        let ya = ticks::axis(yb, self.y_range, (h as f64 / (50.0 * s)).max(2.0) as usize);

        let title_h = if self.title.is_empty() { 0 } else { (15.0 * s / 1.24).ceil() as i64 + pad };
        let x_area = text_h + pad + if self.x_label.is_empty() { 0 } else { text_h + pad / 2 };
        let ylab_w = ya.labels.iter().map(|l| text_w(l, &label_font)).max().unwrap_or(0);
        let y_area = ylab_w + pad + if self.y_label.is_empty() { 0 } else { text_h + pad / 2 };
        let last_xw = xa.labels.last().map_or(0, |l| text_w(l, &label_font));
        let right = (last_xw / 2).max(pad);
        let plot_w = w - 2 * pad - y_area - right;
        let plot_h = h - 2 * pad - title_h - x_area;
        let err = |e: &dyn std::fmt::Display| e.to_string();
        if plot_w < 8 || plot_h < 8 {
            if !self.title.is_empty() && title_h <= h {
                let tw = text_w(&self.title, &title_font);
                area.draw(&Text::new(self.title.clone(), (((w - tw) / 2) as i32, pad as i32), title_font))
                    .map_err(|e| err(&e))?;
            }
            return Ok(());
        }

        let mut builder = ChartBuilder::on(area);
        builder
            .margin_top(pad as u32)
            .margin_bottom(pad as u32)
            .margin_left(pad as u32)
            .margin_right(right as u32)
            .x_label_area_size(x_area as u32)
            .y_label_area_size(y_area as u32);
        if !self.title.is_empty() {
            builder.caption(&self.title, title_font);
        }
        let mut chart = builder.build_cartesian_2d(0f64..1f64, 0f64..1f64).map_err(|e| err(&e))?;

        // Grid lines at the ticks, the frame, tick marks and labels (positions from this
        // module's axes: plotters' own tick choice would not match them), axis labels.
        let in_unit = |v: &f64| (0.0..=1.0).contains(v);
        let xk: Vec<(f64, &String)> =
            xa.ticks.iter().map(|&t| xa.frac(t)).zip(&xa.labels).filter(|(v, _)| in_unit(v)).collect();
        let yk: Vec<(f64, &String)> =
            ya.ticks.iter().map(|&t| ya.frac(t)).zip(&ya.labels).filter(|(v, _)| in_unit(v)).collect();
        let grid_style = ShapeStyle { color: RGBColor::from(GRIDLINE).to_rgba(), filled: false, stroke_width: 1 };
        chart
            .draw_series(
                xk.iter()
                    .map(|&(x, _)| PathElement::new(vec![(x, 0.0), (x, 1.0)], grid_style))
                    .chain(yk.iter().map(|&(y, _)| PathElement::new(vec![(0.0, y), (1.0, y)], grid_style))),
            )
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (1.0, 1.0)], RGBColor::from(FRAME))))
            .map_err(|e| err(&e))?;
        let base = area.get_base_pixel();
        let at = |x: f64, y: f64| {
            let (px, py) = chart.backend_coord(&(x, y));
            (px - base.0, py - base.1)
        };
        let tick = (4.0 * s) as i32;
        let frame = RGBColor::from(FRAME);
        let (x_left, y_bottom) = at(0.0, 0.0);
        let mut last_end = i32::MIN;
        for &(x, label) in &xk {
            let (px, _) = at(x, 0.0);
            area.draw(&PathElement::new(vec![(px, y_bottom), (px, y_bottom + tick)], frame)).map_err(|e| err(&e))?;
            let lw = text_w(label, &label_font) as i32;
            if px - lw / 2 > last_end + (2.0 * s) as i32 {
                let style = label_font.pos(Pos::new(HPos::Center, VPos::Top));
                area.draw(&Text::new(label.as_str(), (px, y_bottom + tick + 2), style)).map_err(|e| err(&e))?;
                last_end = px + lw / 2;
            }
        }
        let mut last_top = i32::MAX;
        for &(y, label) in &yk {
            let (_, py) = at(0.0, y);
            area.draw(&PathElement::new(vec![(x_left - tick, py), (x_left, py)], frame)).map_err(|e| err(&e))?;
            if py + text_h as i32 / 2 < last_top {
                let style = label_font.pos(Pos::new(HPos::Right, VPos::Center));
                area.draw(&Text::new(label.as_str(), (x_left - tick - 2, py), style)).map_err(|e| err(&e))?;
                last_top = py - text_h as i32 / 2;
            }
        }
        let (x_right, y_top) = at(1.0, 1.0);
        if !self.x_label.is_empty() {
            let style = font(12.0, TEXT).pos(Pos::new(HPos::Center, VPos::Bottom));
            let x = (x_left + x_right) / 2;
            area.draw(&Text::new(self.x_label.as_str(), (x, (h - pad) as i32), style)).map_err(|e| err(&e))?;
        }
        if !self.y_label.is_empty() {
            let style = font(12.0, TEXT).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top));
            let y = (y_top + y_bottom) / 2;
            area.draw(&Text::new(self.y_label.as_str(), (pad as i32, y), style)).map_err(|e| err(&e))?;
        }

        // Data, then the legend in the corner where it hides the least of it.
        let paths = self.unit_paths(&xa, &ya);
        let stroke = (1.5 * s + 0.5).round() as u32;
        let mut any_point = false;
        for (i, (runs, se)) in paths.iter().zip(&self.series).enumerate() {
            let c = RGBColor::from(self.color(i));
            let style = ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: stroke };
            let anno =
                chart.draw_series(runs.iter().map(|run| PathElement::new(run.clone(), style))).map_err(|e| err(&e))?;
            let inside: Vec<(f64, f64)> = se
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (xa.frac(x), ya.frac(y)))
                .filter(|p| (0.0..=1.0).contains(&p.0) && (0.0..=1.0).contains(&p.1))
                .collect();
            any_point |= !inside.is_empty();
            let sw = (14.0 * s) as i32;
            let half = (stroke as i32 / 2).max(1);
            anno.label(se.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - half), (x + sw, y + half)], c.filled()));
            // Markers when points are few enough to matter individually (a single point has no line).
            if se.points.len() <= 24 {
                let r = (f64::from(stroke) * 1.2).ceil() as i32;
                chart.draw_series(inside.iter().map(|&p| Circle::new(p, r, c.filled()))).map_err(|e| err(&e))?;
            }
        }
        if !any_point {
            let msg = "no data";
            let style = label_font.pos(Pos::new(HPos::Center, VPos::Center));
            chart.plotting_area().draw(&Text::new(msg, (0.5, 0.5), style)).map_err(|e| err(&e))?;
        }
        let show_legend = self.legend.unwrap_or(self.series.len() >= 2) && !self.series.is_empty();
        if show_legend {
            let name_w = self.series.iter().map(|se| text_w(&se.name, &label_font)).max().unwrap_or(0);
            let lw = (name_w + (30.0 * s) as i64) as f64 / plot_w as f64;
            let lh = (self.series.len() as i64 * (text_h + (4.0 * s) as i64) + pad) as f64 / plot_h as f64;
            chart
                .configure_series_labels()
                .position(legend_corner(&paths, lw, lh))
                .margin((6.0 * s) as u32)
                .legend_area_size((18.0 * s) as u32)
                .label_font(font(12.0, TEXT))
                .background_style(RGBColor::from(BACKGROUND))
                .border_style(RGBColor::from(LEGEND_BORDER))
                .draw()
                .map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

/// The corner of the plot (upper right, upper left, lower right, lower left: first best wins)
/// where a legend box of `w` × `h` (fractions of the plot) covers the fewest sampled points of
/// `paths` (unit-square runs).
fn legend_corner(paths: &[Vec<Vec<(f64, f64)>>], w: f64, h: f64) -> SeriesLabelPosition {
    let (mx, my) = (0.02, 0.03);
    let corners = [
        (SeriesLabelPosition::UpperRight, (1.0 - mx - w, 1.0 - my - h)),
        (SeriesLabelPosition::UpperLeft, (mx, 1.0 - my - h)),
        (SeriesLabelPosition::LowerRight, (1.0 - mx - w, my)),
        (SeriesLabelPosition::LowerLeft, (mx, my)),
    ];
    let hidden = |(x0, y0): (f64, f64)| -> usize {
        let inside = |(px, py): (f64, f64)| px >= x0 && px <= x0 + w && py >= y0 && py <= y0 + h;
        paths
            .iter()
            .flatten()
            .flat_map(|run| run.windows(2))
            .map(|seg| {
                let (a, b) = (seg[0], seg[1]);
                (0..=50)
                    .filter(|&k| inside((a.0 + (b.0 - a.0) * k as f64 / 50.0, a.1 + (b.1 - a.1) * k as f64 / 50.0)))
                    .count()
            })
            .sum()
    };
    corners
        .into_iter()
        .map(|(pos, at)| (pos, hidden(at)))
        .min_by_key(|&(_, n)| n)
        .map_or(SeriesLabelPosition::UpperRight, |(p, _)| p)
}

/// The part of the segment `a`–`b` inside the unit square (Liang–Barsky), if any.
fn clip_to_unit(a: (f64, f64), b: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0), (dx, 1.0 - a.0), (-dy, a.1), (dy, 1.0 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0.is_nan() || t1.is_nan() || t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

/// The font family every chart's text uses: the embedded DejaVu Sans subset, registered once.
const FONT_FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../fonts/DejaVuSans-subset.ttf");

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(BridgeError::InvalidInput("the embedded chart font does not parse".into())) }
}

/// Several charts laid out in a grid of `cols` columns, rendered into one image; see [`grid`].
#[derive(Clone, Debug, PartialEq)]
pub struct ChartGrid {
    charts: Vec<LineChart>,
    cols: usize,
}

/// Lays `charts` out row by row, `cols` to a row (`cols` of 0 is taken as 1).
pub fn grid(charts: Vec<LineChart>, cols: usize) -> ChartGrid {
    ChartGrid { charts, cols: cols.max(1) }
}

impl ChartGrid {
    /// Number of rows the grid needs.
    pub fn rows(&self) -> usize {
        self.charts.len().div_ceil(self.cols)
    }

    /// Number of columns actually used (at most the number of charts).
    pub fn cols(&self) -> usize {
        self.cols.min(self.charts.len()).max(1)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let cells = area.split_evenly((self.rows().max(1), self.cols()));
        for (chart, cell) in self.charts.iter().zip(&cells) {
            chart.draw(cell)?;
        }
        Ok(())
    }

    /// Renders all charts into one `width` × `height` image, each in an equal cell.
    pub fn render(&self, width: u32, height: u32) -> Result<Image> {
        render_bitmap(width, height, |area| self.draw(area))
    }

    /// Renders the grid and writes it to `path` as a PNG, atomically.
    pub fn save_png(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        self.render(width, height)?.save_png(path)
    }

    /// Renders the grid as an SVG document.
    pub fn render_svg(&self, width: u32, height: u32) -> Result<String> {
        render_svg(width, height, |area| self.draw(area))
    }

    /// Renders the grid and writes it to `path` as SVG, atomically.
    pub fn save_svg(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        bridge_core::fs::write_atomic(path.as_ref(), self.render_svg(width, height)?.as_bytes())
    }
}

fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(BridgeError::InvalidInput(format!(
            "image size {width}x{height}: each side must be between 1 and {MAX_DIMENSION} pixels"
        )));
    }
    Ok(())
}

fn drawing_error(e: String) -> BridgeError {
    BridgeError::InvalidInput(format!("chart drawing failed: {e}"))
}

/// A white `width` × `height` RGB bitmap with `draw` applied.
fn render_bitmap(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<Image> {
    check_size(width, height)?;
    register_font()?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        area.fill(&RGBColor::from(BACKGROUND)).map_err(|e| drawing_error(e.to_string()))?;
        draw(&area).map_err(drawing_error)?;
        area.present().map_err(|e| drawing_error(e.to_string()))?;
    }
    Ok(Image { width, height, rgb })
}

/// An SVG document of `width` × `height` with `draw` applied.
fn render_svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<String> {
    check_size(width, height)?;
    register_font()?;
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        area.fill(&RGBColor::from(BACKGROUND)).map_err(|e| drawing_error(e.to_string()))?;
        draw(&area).map_err(drawing_error)?;
        area.present().map_err(|e| drawing_error(e.to_string()))?;
    }
    Ok(svg)
}

/// A rendered RGB8 image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel at `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some(Rgb(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]))
    }

    /// Row-major RGB8 bytes.
    pub fn as_rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Encodes the image as PNG bytes.
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Balanced);
        let err = |e: png::EncodingError| BridgeError::InvalidInput(format!("PNG encoding failed: {e}"));
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&self.rgb).map_err(err)?;
        writer.finish().map_err(err)?;
        Ok(out)
    }

    /// Writes the image to `path` as a PNG, atomically: to a temporary file beside it, then renamed
    /// over `path`. Creates missing parent directories.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.encode_png()?;
        bridge_core::fs::write_atomic(path.as_ref(), &bytes)
    }
}

/// One chart per key of `records` (as read by [`crate::metrics::read_metrics`]), with `x_key`
/// on the x axis. Records lacking either key, or whose value is not a finite number, are skipped;
/// points are sorted by x.
pub fn metrics_charts(records: &[serde_json::Value], keys: &[&str], x_key: &str) -> Vec<LineChart> {
    keys.iter()
        .map(|&key| {
            let mut pts: Vec<(f64, f64)> = records
                .iter()
                .filter_map(|r| {
                    let x = r.get(x_key)?.as_f64()?;
                    let y = r.get(key)?.as_f64()?;
                    (x.is_finite() && y.is_finite()).then_some((x, y))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            LineChart::new(key).x_label(x_key).series(key, pts)
        })
        .collect()
}

/// Plots `keys` from the JSONL metrics file at `metrics_path`, one panel per key against `x_key`
/// (usually `"step"`), into the PNG `out_png`. Panels are 560×360 pixels, two to a row.
///
/// Errors: the metrics file cannot be read or has a malformed line, `keys` is empty, or the PNG
/// cannot be written.
pub fn plot_metrics(
    metrics_path: impl AsRef<Path>,
    keys: &[&str],
    x_key: &str,
    out_png: impl AsRef<Path>,
) -> Result<()> {
    if keys.is_empty() {
        return Err(BridgeError::InvalidInput("plot_metrics: no keys to plot".into()));
    }
    let records = crate::metrics::read_metrics(metrics_path)?;
    let charts = metrics_charts(&records, keys, x_key);
    let cols = charts.len().min(2);
    let rows = charts.len().div_ceil(cols);
    let (w, h) = (560 * cols as u32, 360 * rows.min(40) as u32);
    grid(charts, cols).save_png(out_png, w.min(MAX_DIMENSION), h.min(MAX_DIMENSION))
}

/// The keys that hold a number in at least one of `records`, sorted, without `x_key`: a default
/// for what to plot.
pub fn numeric_keys(records: &[serde_json::Value], x_key: &str) -> Vec<String> {
    let keys: BTreeSet<&String> = records
        .iter()
        .filter_map(serde_json::Value::as_object)
        .flat_map(|o| o.iter().filter(|(k, v)| *k != x_key && v.is_number()).map(|(k, _)| k))
        .collect();
    keys.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests;
