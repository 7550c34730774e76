//! Line charts rendered to PNG with no system dependency.
//!
//! A small built-in rasteriser (anti-aliased thick lines, a 5×9 bitmap font drawn in the source)
//! feeds the pure-Rust `png` encoder: no fontconfig, freetype or font file is needed, so charts
//! render the same on a bare CI machine as on a workstation.
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
//! let loss = LineChart::new("SFT loss").series("sft_loss", vec![(0.0, 2.1), (10.0, 1.4), (20.0, 1.2)]);
//! grid(vec![reward, loss], 2).save_png("runs/demo/summary.png", 1200, 450)?;
//! # Ok(())
//! # }
//! ```

mod font;
mod raster;
mod ticks;

use std::collections::BTreeSet;
use std::path::Path;

use bridge_core::{BridgeError, Result};

pub use raster::Rgb;
use raster::{Canvas, Dir, Rect, text_height, text_width};
use ticks::Axis;

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
        check_size(width, height)?;
        let mut canvas = Canvas::new(width, height, BACKGROUND);
        let area = canvas.bounds();
        self.draw(&mut canvas, area);
        Ok(Image::from_canvas(canvas))
    }

    /// Renders the chart and writes it to `path` as a PNG, atomically (temporary file + rename).
    pub fn save_png(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        self.render(width, height)?.save_png(path)
    }

    fn color(&self, i: usize) -> Rgb {
        self.series[i].color.unwrap_or(PALETTE[i % PALETTE.len()])
    }

    /// Draws the chart into `area` of `canvas`.
    fn draw(&self, canvas: &mut Canvas, area: Rect) {
        let short = area.width().min(area.height());
        // Text scale: 1 for small panels, 2 from ~500 px; the title one step larger.
        let s = if short >= 480 { 2 } else { 1 };
        let ts = s + 1;
        let pad = 6 * s;
        let tick_len = 4 * s;

        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let pts = || self.series.iter().flat_map(|se| se.points.iter().filter(finite));
        let xb = ticks::bounds(pts().map(|p| p.0));
        let yb = ticks::bounds(pts().map(|p| p.1));
        let xa = ticks::axis(xb, self.x_range, (area.width() / (90 * s)).max(2) as usize);
        let ya = ticks::axis(yb, self.y_range, (area.height() / (50 * s)).max(2) as usize);

        // Layout, from the outside in.
        let mut top = area.y0 + pad;
        if !self.title.is_empty() {
            let tw = text_width(&self.title, ts);
            canvas.text(area.x0 + (area.width() - tw) / 2, top, &self.title, ts, TEXT, Dir::Horizontal);
            top += text_height(ts) + pad;
        } else {
            top += text_height(s) / 2;
        }
        let mut bottom = area.y1 - pad;
        let x_label_y = bottom - text_height(s);
        if !self.x_label.is_empty() {
            bottom = x_label_y - pad / 2;
        }
        bottom -= text_height(s) + tick_len + s * 2; // x tick labels
        let mut left = area.x0 + pad;
        if !self.y_label.is_empty() {
            left += text_height(s) + pad / 2;
        }
        let ylab_w = ya.labels.iter().map(|l| text_width(l, s)).max().unwrap_or(0);
        left += ylab_w + tick_len + s * 2;
        // Room on the right for the last x tick label to overhang.
        let last_xw = xa.labels.last().map_or(0, |l| text_width(l, s));
        let right = area.x1 - pad - (last_xw / 2).max(pad);
        let mut plot = Rect::new(left, top, right, bottom);
        if plot.width() < 8 || plot.height() < 8 {
            return; // Too small for axes: title only.
        }
        // The legend goes in the corner of the plot where it hides no data; when every corner
        // would hide some, it moves out to the right of the plot if there is room.
        let mut legend_at = None;
        let show_legend = self.legend.unwrap_or(self.series.len() >= 2) && !self.series.is_empty();
        let legend = if show_legend { self.legend_layout(s, plot) } else { None };
        if let Some(lg) = &legend {
            let paths = self.pixel_paths(&xa, &ya, plot);
            let (corner, hidden) = lg.best_corner(plot, &paths);
            let gap = (last_xw / 2 + 2 * s).max(lg.margin);
            if hidden == 0 || plot.width() - lg.w - gap < plot.width() * 2 / 3 {
                legend_at = Some(corner);
            } else {
                plot.x1 = area.x1 - pad - lg.w - gap;
                legend_at = Some((plot.x1 + gap, plot.y0));
            }
        }
        if !self.x_label.is_empty() {
            let lw = text_width(&self.x_label, s);
            let x = ((plot.x0 + plot.x1) / 2 - lw / 2).clamp(area.x0, (area.x1 - lw).max(area.x0));
            canvas.text(x, x_label_y, &self.x_label, s, TEXT, Dir::Horizontal);
        }
        if !self.y_label.is_empty() {
            let lw = text_width(&self.y_label, s);
            let mid = (plot.y0 + plot.y1) / 2;
            canvas.text(area.x0 + pad, mid + lw / 2, &self.y_label, s, TEXT, Dir::Up);
        }

        let px = |v: f64| plot.x0 as f64 + xa.frac(v) * (plot.width() - 1) as f64;
        let py = |v: f64| (plot.y1 - 1) as f64 - ya.frac(v) * (plot.height() - 1) as f64;

        // Grid lines, ticks and tick labels.
        let mut last_label_end = i64::MIN;
        for (t, l) in xa.ticks.iter().zip(&xa.labels) {
            let x = px(*t).round() as i64;
            if x < plot.x0 || x >= plot.x1 {
                continue;
            }
            canvas.fill_rect(Rect::new(x, plot.y0, x + 1, plot.y1), GRIDLINE);
            canvas.fill_rect(Rect::new(x, plot.y1, x + 1, plot.y1 + tick_len), FRAME);
            let lw = text_width(l, s);
            let lx = x - lw / 2;
            if lx > last_label_end + 2 * s {
                canvas.text(lx, plot.y1 + tick_len + s * 2, l, s, MUTED, Dir::Horizontal);
                last_label_end = lx + lw;
            }
        }
        let cap = 7 * s; // digits are cap height: centre on that, not on the descender cell
        let mut last_label_top = i64::MAX;
        for (t, l) in ya.ticks.iter().zip(&ya.labels) {
            let y = py(*t).round() as i64;
            if y < plot.y0 || y >= plot.y1 {
                continue;
            }
            canvas.fill_rect(Rect::new(plot.x0, y, plot.x1, y + 1), GRIDLINE);
            canvas.fill_rect(Rect::new(plot.x0 - tick_len, y, plot.x0, y + 1), FRAME);
            let ly = y - cap / 2;
            if ly + cap + 2 * s < last_label_top {
                let lw = text_width(l, s);
                canvas.text(plot.x0 - tick_len - s * 2 - lw, ly, l, s, MUTED, Dir::Horizontal);
                last_label_top = ly;
            }
        }
        // The frame one pixel outside the plot so data at the edges stays visible.
        canvas.stroke_rect(Rect::new(plot.x0 - 1, plot.y0 - 1, plot.x1 + 1, plot.y1 + 1), FRAME);

        // Data.
        let line_w = 1.5 * s as f64 + 0.5;
        let mut any_point = false;
        for (i, path) in self.pixel_paths(&xa, &ya, plot).iter().enumerate() {
            let c = self.color(i);
            for w in path.windows(2) {
                canvas.line(w[0], w[1], line_w, c, plot);
            }
            // Markers when points are few enough to matter individually (a single point has no line).
            if path.len() <= 24 {
                for &p in path {
                    canvas.disc(p, line_w * 1.2, c, plot);
                }
            }
            any_point |= !path.is_empty();
        }
        if !any_point {
            let msg = "no data";
            let w = text_width(msg, s);
            let x = plot.x0 + (plot.width() - w) / 2;
            canvas.text(x, plot.y0 + (plot.height() - cap) / 2, msg, s, MUTED, Dir::Horizontal);
        }

        if let (Some(lg), Some(at)) = (legend, legend_at) {
            self.draw_legend(canvas, &lg, at);
        }
    }

    /// Each series' finite points, mapped to pixel coordinates of `plot`.
    fn pixel_paths(&self, xa: &Axis, ya: &Axis, plot: Rect) -> Vec<Vec<(f64, f64)>> {
        let px = |v: f64| plot.x0 as f64 + xa.frac(v) * (plot.width() - 1) as f64;
        let py = |v: f64| (plot.y1 - 1) as f64 - ya.frac(v) * (plot.height() - 1) as f64;
        self.series
            .iter()
            .map(|se| {
                se.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|&(x, y)| (px(x), py(y))).collect()
            })
            .collect()
    }

    /// The legend's size for a plot area, or `None` when it cannot fit.
    fn legend_layout(&self, s: i64, plot: Rect) -> Option<LegendLayout> {
        let swatch = 14 * s;
        let row_h = text_height(s) + 3 * s;
        let inner = 4 * s;
        let max_rows = ((plot.height() - 2 * inner) / row_h).max(1) as usize;
        let rows = self.series.len().min(max_rows);
        let name_w = self.series.iter().take(rows).map(|se| text_width(&se.name, s)).max().unwrap_or(0);
        let w = (inner * 2 + swatch + 4 * s + name_w).min(plot.width() - 4 * s);
        let h = inner * 2 + row_h * rows as i64 - 3 * s;
        (w > swatch && h <= plot.height()).then_some(LegendLayout {
            s,
            w,
            h,
            rows,
            swatch,
            row_h,
            inner,
            margin: 6 * s,
        })
    }

    fn draw_legend(&self, canvas: &mut Canvas, lg: &LegendLayout, (x, y): (i64, i64)) {
        let s = lg.s;
        let bx = Rect::new(x, y, x + lg.w, y + lg.h);
        canvas.fill_rect(bx, BACKGROUND);
        canvas.stroke_rect(bx, GRIDLINE.darker());
        for (i, se) in self.series.iter().take(lg.rows).enumerate() {
            let ry = y + lg.inner + lg.row_h * i as i64;
            let mid = (ry + 7 * s / 2) as f64;
            let sx = (x + lg.inner) as f64;
            canvas.line((sx, mid), (sx + lg.swatch as f64, mid), 1.5 * s as f64 + 1.0, self.color(i), bx);
            canvas.text(x + lg.inner + lg.swatch + 4 * s, ry, &se.name, s, TEXT, Dir::Horizontal);
        }
    }
}

/// Size and spacing of a legend box.
struct LegendLayout {
    s: i64,
    w: i64,
    h: i64,
    rows: usize,
    swatch: i64,
    row_h: i64,
    inner: i64,
    margin: i64,
}

impl LegendLayout {
    /// The corner of `plot` (top right, top left, bottom right, bottom left: first best wins) where
    /// the legend hides the fewest sampled data points, and that count.
    fn best_corner(&self, plot: Rect, paths: &[Vec<(f64, f64)>]) -> ((i64, i64), usize) {
        let (w, h, m) = (self.w, self.h, self.margin);
        let corners = [
            (plot.x1 - m - w, plot.y0 + m),
            (plot.x0 + m, plot.y0 + m),
            (plot.x1 - m - w, plot.y1 - m - h),
            (plot.x0 + m, plot.y1 - m - h),
        ];
        let hidden = |(x, y): (i64, i64)| -> usize {
            let r = (x as f64 - 3.0, y as f64 - 3.0, (x + w) as f64 + 3.0, (y + h) as f64 + 3.0);
            let inside = |(px, py): (f64, f64)| px >= r.0 && px <= r.2 && py >= r.1 && py <= r.3;
            let mut count = 0;
            for path in paths {
                for pair in path.windows(2) {
                    // Sample each segment finely enough that a line crossing the box is seen.
                    let (a, b) = (pair[0], pair[1]);
                    let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / 4.0).clamp(1.0, 400.0) as usize;
                    count += (0..=n)
                        .filter(|&k| {
                            let t = k as f64 / n as f64;
                            inside((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)))
                        })
                        .count();
                }
                if let [p] = path.as_slice() {
                    count += 5 * usize::from(inside(*p));
                }
            }
            count
        };
        corners.iter().map(|&c| (c, hidden(c))).min_by_key(|&(_, n)| n).unwrap_or((corners[0], 0))
    }
}

impl Rgb {
    fn darker(self) -> Rgb {
        Rgb(self.0 / 4 * 3, self.1 / 4 * 3, self.2 / 4 * 3)
    }
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

    /// Renders all charts into one `width` × `height` image, each in an equal cell.
    pub fn render(&self, width: u32, height: u32) -> Result<Image> {
        check_size(width, height)?;
        let mut canvas = Canvas::new(width, height, BACKGROUND);
        let (cols, rows) = (self.cols() as i64, self.rows().max(1) as i64);
        let (w, h) = (i64::from(width), i64::from(height));
        for (i, chart) in self.charts.iter().enumerate() {
            let (c, r) = (i as i64 % cols, i as i64 / cols);
            let cell = Rect::new(c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows);
            chart.draw(&mut canvas, cell);
        }
        Ok(Image::from_canvas(canvas))
    }

    /// Renders the grid and writes it to `path` as a PNG, atomically.
    pub fn save_png(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        self.render(width, height)?.save_png(path)
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

/// A rendered RGB8 image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    fn from_canvas(c: Canvas) -> Self {
        Self { width: c.width as u32, height: c.height as u32, rgb: c.rgb }
    }

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
