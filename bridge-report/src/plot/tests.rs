use super::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bridge-plot-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decodes a PNG into (width, height, RGB bytes), checking it is 8-bit RGB.
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("sane size")];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn decode_file(path: &Path) -> (u32, u32, Vec<u8>) {
    decode(&std::fs::read(path).unwrap())
}

fn px(rgb: &[u8], w: u32, x: u32, y: u32) -> Rgb {
    let i = (y as usize * w as usize + x as usize) * 3;
    Rgb(rgb[i], rgb[i + 1], rgb[i + 2])
}

fn close(a: Rgb, b: Rgb, tol: i32) -> bool {
    (i32::from(a.0) - i32::from(b.0)).abs() <= tol
        && (i32::from(a.1) - i32::from(b.1)).abs() <= tol
        && (i32::from(a.2) - i32::from(b.2)).abs() <= tol
}

fn dark(c: Rgb) -> bool {
    u32::from(c.0) + u32::from(c.1) + u32::from(c.2) < 3 * 110
}

/// Writes sample charts to `$BRIDGE_PLOT_SAMPLE_DIR` when set, for looking at by eye.
fn maybe_sample(name: &str, img: &Image) {
    if let Ok(dir) = std::env::var("BRIDGE_PLOT_SAMPLE_DIR") {
        img.save_png(Path::new(&dir).join(name)).unwrap();
    }
}

#[test]
fn diagonal_series_draws_along_the_plot_diagonal() {
    let pts: Vec<(f64, f64)> = (0..=50).map(|i| (f64::from(i), f64::from(i) * 2.0)).collect();
    let chart = LineChart::new("diagonal").x_label("x").y_label("y").series("y = 2x", pts);
    let (w, h) = (640, 400);
    let bytes = chart.render(w, h).unwrap().encode_png().unwrap();
    let (dw, dh, rgb) = decode(&bytes);
    assert_eq!((dw, dh), (w, h));
    assert_eq!(rgb.len(), (w * h * 3) as usize);
    let blue: Vec<(u32, u32)> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| close(px(&rgb, w, x, y), PALETTE[0], 40))
        .collect();
    assert!(blue.len() > 300, "only {} line pixels", blue.len());
    let (x0, x1) = (blue.iter().map(|p| p.0).min().unwrap(), blue.iter().map(|p| p.0).max().unwrap());
    let (y0, y1) = (blue.iter().map(|p| p.1).min().unwrap(), blue.iter().map(|p| p.1).max().unwrap());
    assert!(x1 - x0 > w / 2 && y1 - y0 > h / 2, "line spans only {x0}..{x1} × {y0}..{y1}");
    // Every line pixel lies near the segment from bottom-left to top-right of its bounding box.
    let (ax, ay, bx, by) = (f64::from(x0), f64::from(y1), f64::from(x1), f64::from(y0));
    let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
    for &(x, y) in &blue {
        let d = ((by - ay) * (f64::from(x) - ax) - (bx - ax) * (f64::from(y) - ay)).abs() / len;
        assert!(d < 4.0, "pixel ({x},{y}) is {d:.1} px off the diagonal");
    }
    // And the diagonal is continuous: sample points along it are drawn.
    for k in 1..20 {
        let t = f64::from(k) / 20.0;
        let (x, y) = ((ax + t * (bx - ax)).round() as u32, (ay + t * (by - ay)).round() as u32);
        let near = (x.saturating_sub(2)..=x + 2)
            .any(|xx| (y.saturating_sub(2)..=y + 2).any(|yy| close(px(&rgb, w, xx, yy), PALETTE[0], 60)));
        assert!(near, "gap near ({x},{y})");
    }
}

#[test]
fn title_text_is_rendered_in_the_title_band() {
    let (w, h) = (400u32, 300u32);
    let with = LineChart::new("Reward").series("r", vec![(0.0, 1.0), (1.0, 2.0)]).render(w, h).unwrap();
    let without = LineChart::new("").series("r", vec![(0.0, 1.0), (1.0, 2.0)]).render(w, h).unwrap();
    let band = |img: &Image| {
        (0..24)
            .flat_map(|y| (w / 3..2 * w / 3).map(move |x| (x, y)))
            .filter(|&(x, y)| dark(img.pixel(x, y).unwrap()))
            .count()
    };
    assert!(band(&with) > 40, "title band has {} dark pixels", band(&with));
    assert_eq!(band(&without), 0);
    // Tick labels: dark pixels left of the plot area.
    let left =
        (0..h).flat_map(|y| (0..30).map(move |x| (x, y))).filter(|&(x, y)| dark(with.pixel(x, y).unwrap())).count();
    assert!(left > 20);
}

#[test]
fn degenerate_inputs_render_valid_pngs() {
    let charts = [
        LineChart::new("no series"),
        LineChart::new("empty series").series("a", vec![]),
        LineChart::new("one point").series("a", vec![(3.0, 4.0)]),
        LineChart::new("constant").series("a", vec![(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)]),
        LineChart::new("zero").series("a", vec![(5.0, 0.0), (5.0, 0.0)]),
        LineChart::new("huge").series("a", vec![(-f64::MAX, -f64::MAX), (f64::MAX, f64::MAX)]),
        LineChart::new("tiny").series("a", vec![(0.0, 1e-300), (1e-300, 2e-300)]),
        LineChart::new("non-finite").series("a", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (2.0, f64::NEG_INFINITY)]),
        LineChart::new("bad range").series("a", vec![(0.0, 1.0), (1.0, 2.0)]).x_range(1.0, 1.0).y_range(f64::NAN, 2.0),
        LineChart::new("outside range").series("a", vec![(-1e9, -1e9), (1e9, 1e9)]).x_range(0.0, 1.0).y_range(0.0, 1.0),
        LineChart::new("many series").series("a", vec![(0.0, 0.0)]).series("b", vec![]).series("c", vec![(1.0, 1.0)]),
    ];
    for chart in &charts {
        for (w, h) in [(1, 1), (7, 5), (60, 40), (320, 200), (1000, 20)] {
            let img = chart.render(w, h).unwrap_or_else(|e| panic!("{}: {e}", chart.title()));
            let (dw, dh, rgb) = decode(&img.encode_png().unwrap());
            assert_eq!((dw, dh, rgb.len()), (w, h, (w * h * 3) as usize), "{}", chart.title());
        }
    }
    // A single point is still visible, as a marker.
    let img = charts[2].render(300, 200).unwrap();
    let marked = (0..200).flat_map(|y| (0..300).map(move |x| (x, y))).any(|(x, y)| img.pixel(x, y) == Some(PALETTE[0]));
    assert!(marked);
    // Empty-data charts say so.
    maybe_sample("degenerate_empty.png", &charts[0].render(400, 260).unwrap());
    maybe_sample("degenerate_huge.png", &charts[5].render(400, 260).unwrap());
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    let c = LineChart::new("t");
    for (w, h) in [(0, 10), (10, 0), (MAX_DIMENSION + 1, 10)] {
        assert!(matches!(c.render(w, h), Err(BridgeError::InvalidInput(_))));
    }
    assert!(grid(vec![], 0).render(10, 10).is_ok());
}

#[test]
fn save_png_is_atomic_and_replaces() {
    let dir = scratch("save");
    let path = dir.join("sub/chart.png");
    let chart = LineChart::new("t").series("a", vec![(0.0, 0.0), (1.0, 1.0)]);
    chart.save_png(&path, 200, 100).unwrap();
    chart.save_png(&path, 300, 150).unwrap();
    let (w, h, _) = decode_file(&path);
    assert_eq!((w, h), (300, 150));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from("chart.png")], "temporary files left behind");
    // Writing into a path whose parent is a file fails with an I/O error naming the path.
    let err = chart.save_png(path.join("x.png"), 10, 10).unwrap_err();
    assert!(matches!(err, BridgeError::Io { .. }), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn grid_places_each_chart_in_its_cell() {
    let mk = |t: &str, k: f64| {
        LineChart::new(t).x_label("step").series(t, (0..30).map(|i| (f64::from(i), k * f64::from(i).sqrt())).collect())
    };
    let g = grid(vec![mk("reward", 1.0), mk("accuracy", 0.5), mk("SFT loss", -1.0), mk("cooperative gain", 2.0)], 2);
    assert_eq!((g.rows(), g.cols()), (2, 2));
    let img = g.render(800, 600).unwrap();
    let (w, h, rgb) = decode(&img.encode_png().unwrap());
    assert_eq!((w, h), (800, 600));
    for (cx, cy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let blue = (cy * 300..(cy + 1) * 300)
            .flat_map(|y| (cx * 400..(cx + 1) * 400).map(move |x| (x, y)))
            .filter(|&(x, y)| close(px(&rgb, w, x, y), PALETTE[0], 40))
            .count();
        assert!(blue > 50, "cell ({cx},{cy}) has {blue} line pixels");
    }
    maybe_sample("grid.png", &img);
    // A partial last row leaves the empty cell blank.
    let img = grid(vec![mk("a", 1.0), mk("b", 1.0), mk("c", 1.0)], 2).render(800, 600).unwrap();
    assert!((300..600).all(|y| (420..800).all(|x| img.pixel(x, y) == Some(BACKGROUND))));
}

#[test]
fn legend_names_series_and_avoids_the_data() {
    let rising: Vec<(f64, f64)> = (0..=40).map(|i| (f64::from(i), f64::from(i))).collect();
    let falling: Vec<(f64, f64)> = (0..=40).map(|i| (f64::from(i), 40.0 - f64::from(i) * 0.5)).collect();
    let chart = LineChart::new("Two series")
        .x_label("step")
        .y_label("value")
        .series("rising", rising)
        .series("falling", falling);
    let img = chart.render(800, 500).unwrap();
    maybe_sample("legend.png", &img);
    let (w, h) = (img.width(), img.height());
    // Both series colours appear as legend swatches: short horizontal runs of pure colour.
    for c in [PALETTE[0], PALETTE[1]] {
        let run = (0..h).any(|y| {
            let mut n = 0;
            (0..w).any(|x| {
                n = if img.pixel(x, y) == Some(c) { n + 1 } else { 0 };
                n >= 20
            })
        });
        assert!(run, "{c:?} has no legend swatch");
    }
    // Without the legend there is no such run.
    let bare = chart.clone().legend(false).render(800, 500).unwrap();
    assert_ne!(bare, img);
}

#[test]
fn palette_colours_are_distinct() {
    for (i, a) in PALETTE.iter().enumerate() {
        for b in &PALETTE[..i] {
            let d = (i32::from(a.0) - i32::from(b.0)).abs()
                + (i32::from(a.1) - i32::from(b.1)).abs()
                + (i32::from(a.2) - i32::from(b.2)).abs();
            assert!(d > 90, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn plot_metrics_draws_one_panel_per_key() {
    let dir = scratch("metrics");
    let mut log = crate::metrics::MetricsWriter::create(&dir).unwrap();
    for step in 0..200u64 {
        let s = step as f64;
        let reward = 0.8 * (1.0 - (-s / 60.0).exp()) + 0.05 * (s * 0.7).sin();
        let acc = 0.2 + 0.6 * (1.0 - (-s / 80.0).exp());
        let loss = 2.5 * (-s / 50.0).exp() + 0.6 + 0.05 * (s * 1.3).cos();
        let gain = 0.1 * (s / 30.0).sin() + 0.0005 * s;
        log.write_scalars(step, &[("reward", reward), ("sft_loss", loss), ("cooperative_gain", gain)]).unwrap();
        if step % 20 == 0 {
            log.write_scalars(step, &[("eval_accuracy", acc), ("sft_loss", f64::NAN)]).unwrap();
        }
    }
    drop(log);
    let path = dir.join(crate::metrics::METRICS_FILE);
    let out = dir.join("metrics.png");
    plot_metrics(&path, &["reward", "eval_accuracy", "sft_loss", "cooperative_gain"], "step", &out).unwrap();
    let (w, h, _) = decode_file(&out);
    assert_eq!((w, h), (1120, 720));
    if let Ok(sample_dir) = std::env::var("BRIDGE_PLOT_SAMPLE_DIR") {
        std::fs::copy(&out, Path::new(&sample_dir).join("metrics.png")).unwrap();
    }

    let records = crate::metrics::read_metrics(&path).unwrap();
    let charts = metrics_charts(&records, &["eval_accuracy", "sft_loss", "missing"], "step");
    assert_eq!(charts[0].series_list()[0].points.len(), 10);
    assert_eq!(charts[1].series_list()[0].points.len(), 200, "NaN (null) values are skipped");
    assert!(charts[2].series_list()[0].points.is_empty());
    assert_eq!(numeric_keys(&records, "step"), ["cooperative_gain", "eval_accuracy", "reward", "sft_loss"]);
    // A key with no data still yields a valid PNG.
    plot_metrics(&path, &["missing"], "step", dir.join("empty.png")).unwrap();
    assert_eq!(decode_file(&dir.join("empty.png")).0, 560);

    assert!(matches!(plot_metrics(&path, &[], "step", &out), Err(BridgeError::InvalidInput(_))));
    std::fs::write(&path, "{\"step\": 1}\n{oops\n").unwrap();
    let err = plot_metrics(&path, &["reward"], "step", &out).unwrap_err();
    assert!(matches!(err, BridgeError::Data { line: 2, .. }), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eight_series_each_show_their_colour() {
    let mut chart = LineChart::new("λ schedule sweep: reward vs step").x_label("step").y_label("mean reward");
    for k in 0..8 {
        let kf = f64::from(k);
        let pts = (0..=300).map(|i| {
            let s = f64::from(i) * 50.0;
            (s, (0.2 + 0.08 * kf) * (1.0 - (-s / (2000.0 + 400.0 * kf)).exp()) + 0.01 * (s / 700.0 + kf).sin())
        });
        chart = chart.series(format!("lambda={:.2}", 0.1 * kf), pts.collect());
    }
    let img = chart.render(900, 560).unwrap();
    maybe_sample("eight_series.png", &img);
    for c in &PALETTE[..8] {
        let n = (0..img.height())
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y) == Some(*c))
            .count();
        assert!(n > 100, "{c:?}: {n} pixels");
    }
}

#[test]
fn svg_has_the_text_and_each_series_colour() {
    let chart = LineChart::new("Reward & loss")
        .x_label("step")
        .series("a", vec![(0.0, 0.0), (1.0, 1.0)])
        .series("b", vec![(0.0, 1.0), (1.0, 0.0)]);
    let svg = chart.render_svg(400, 300).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("\nReward &amp; loss\n") && svg.contains("\nstep\n"), "title and axis label are text: {svg}");
    for c in &PALETTE[..2] {
        let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        assert!(svg.contains(&hex), "{hex} missing");
    }
    assert!(!svg.contains(&format!("#{:02X}{:02X}{:02X}", PALETTE[2].0, PALETTE[2].1, PALETTE[2].2)));
    let dir = scratch("svg");
    grid(vec![chart.clone(), chart], 2).save_svg(dir.join("g.svg"), 800, 300).unwrap();
    let text = std::fs::read_to_string(dir.join("g.svg")).unwrap();
    assert_eq!(text.matches("Reward &amp; loss").count(), 2);
    assert!(matches!(LineChart::new("t").render_svg(0, 5), Err(BridgeError::InvalidInput(_))));
    let _ = std::fs::remove_dir_all(dir);
}
