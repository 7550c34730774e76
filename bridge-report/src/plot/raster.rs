//! A tiny RGB rasteriser: filled rectangles, anti-aliased thick lines and discs, bitmap text.
//!
//! Coordinates are signed pixels; everything is clipped to the canvas (and to an optional clip
//! rectangle for data), so no input can index out of bounds.

use super::font::{self, ADVANCE, GLYPH_H, GLYPH_W};

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// An axis-aligned rectangle of pixels: `x0..x1` × `y0..y1` (half-open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl Rect {
    pub fn new(x0: i64, y0: i64, x1: i64, y1: i64) -> Self {
        Self { x0, y0, x1: x1.max(x0), y1: y1.max(y0) }
    }
    pub fn width(&self) -> i64 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> i64 {
        self.y1 - self.y0
    }
    fn intersect(&self, o: &Rect) -> Rect {
        Rect::new(self.x0.max(o.x0), self.y0.max(o.y0), self.x1.min(o.x1), self.y1.min(o.y1))
    }
}

/// Text direction for [`Canvas::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Left to right.
    Horizontal,
    /// Bottom to top (rotated 90° counter-clockwise); `(x, y)` is the bottom-left of the run.
    Up,
}

/// An RGB8 pixel buffer.
pub(crate) struct Canvas {
    pub width: i64,
    pub height: i64,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32, bg: Rgb) -> Self {
        let n = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(n * 3);
        for _ in 0..n {
            rgb.extend_from_slice(&[bg.0, bg.1, bg.2]);
        }
        Self { width: i64::from(width), height: i64::from(height), rgb }
    }

    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && x < self.width && y < self.height).then(|| ((y * self.width + x) * 3) as usize)
    }

    /// Blends `c` over the pixel with opacity `a` in `[0, 1]`.
    pub fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f64) {
        let Some(i) = self.index(x, y) else { return };
        let a = a.clamp(0.0, 1.0);
        if a <= 0.0 {
            return;
        }
        for (k, v) in [c.0, c.1, c.2].into_iter().enumerate() {
            let old = f64::from(self.rgb[i + k]);
            self.rgb[i + k] = (old + (f64::from(v) - old) * a).round().clamp(0.0, 255.0) as u8;
        }
    }

    pub fn fill_rect(&mut self, r: Rect, c: Rgb) {
        let r = r.intersect(&self.bounds());
        for y in r.y0..r.y1 {
            for x in r.x0..r.x1 {
                self.blend(x, y, c, 1.0);
            }
        }
    }

    /// A one-pixel rectangle outline.
    pub fn stroke_rect(&mut self, r: Rect, c: Rgb) {
        if r.width() <= 0 || r.height() <= 0 {
            return;
        }
        self.fill_rect(Rect::new(r.x0, r.y0, r.x1, r.y0 + 1), c);
        self.fill_rect(Rect::new(r.x0, r.y1 - 1, r.x1, r.y1), c);
        self.fill_rect(Rect::new(r.x0, r.y0, r.x0 + 1, r.y1), c);
        self.fill_rect(Rect::new(r.x1 - 1, r.y0, r.x1, r.y1), c);
    }

    /// An anti-aliased segment of `width` pixels between pixel centres `a` and `b`, drawn only
    /// inside `clip`. Coverage comes from the distance of each pixel centre to the segment.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), width: f64, c: Rgb, clip: Rect) {
        let hw = (width / 2.0).max(0.5);
        let clip = clip.intersect(&self.bounds());
        if clip.width() <= 0 || clip.height() <= 0 {
            return;
        }
        // Clip the segment to the clip rectangle grown by the pen, so far-away endpoints cost nothing.
        let pad = hw + 1.0;
        let Some((a, b)) = clip_segment(
            a,
            b,
            (clip.x0 as f64 - pad, clip.y0 as f64 - pad),
            (clip.x1 as f64 - 1.0 + pad, clip.y1 as f64 - 1.0 + pad),
        ) else {
            return;
        };
        let x0 = ((a.0.min(b.0) - pad).floor() as i64).max(clip.x0);
        let x1 = ((a.0.max(b.0) + pad).ceil() as i64).min(clip.x1 - 1);
        let y0 = ((a.1.min(b.1) - pad).floor() as i64).max(clip.y0);
        let y1 = ((a.1.max(b.1) + pad).ceil() as i64).min(clip.y1 - 1);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (px, py) = (x as f64, y as f64);
                let t = if len2 > 0.0 { (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let (qx, qy) = (a.0 + t * dx - px, a.1 + t * dy - py);
                let dist = (qx * qx + qy * qy).sqrt();
                let cov = hw + 0.5 - dist;
                if cov > 0.0 {
                    self.blend(x, y, c, cov.min(1.0));
                }
            }
        }
    }

    /// An anti-aliased filled disc.
    pub fn disc(&mut self, centre: (f64, f64), radius: f64, c: Rgb, clip: Rect) {
        self.line(centre, centre, radius * 2.0, c, clip);
    }

    /// Draws `text` with its top-left at `(x, y)` (for [`Dir::Up`], its bottom-left), each font
    /// pixel a `scale`×`scale` block.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, c: Rgb, dir: Dir) {
        let s = scale.max(1);
        for (i, ch) in text.chars().enumerate() {
            let glyph = font::glyph(ch);
            let off = i as i64 * ADVANCE * s;
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - gx)) == 0 {
                        continue;
                    }
                    let (px, py) = match dir {
                        Dir::Horizontal => (x + off + gx * s, y + gy as i64 * s),
                        Dir::Up => (x + gy as i64 * s, y - off - (gx + 1) * s + 1),
                    };
                    self.fill_rect(Rect::new(px, py, px + s, py + s), c);
                }
            }
        }
    }
}

/// Width of `text` at `scale`, in pixels.
pub(crate) fn text_width(text: &str, scale: i64) -> i64 {
    font::text_width(text) * scale.max(1)
}

/// Height of a line of text at `scale` (cap height plus descenders), in pixels.
pub(crate) fn text_height(scale: i64) -> i64 {
    GLYPH_H * scale.max(1)
}

/// Liang–Barsky clipping of segment `a`–`b` to the box `lo`–`hi`.
fn clip_segment(a: (f64, f64), b: (f64, f64), lo: (f64, f64), hi: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return None;
    }
    // Work at half scale so that differences of huge coordinates cannot overflow to infinity.
    let h = |p: (f64, f64)| (p.0 * 0.5, p.1 * 0.5);
    let (a, b, lo, hi) = (h(a), h(b), h(lo), h(hi));
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - lo.0), (dx, hi.0 - a.0), (-dy, a.1 - lo.1), (dy, hi.1 - a.1)] {
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
    // Neither can be NaN: every ratio is a finite value over a finite non-zero one.
    if t0 > t1 {
        return None;
    }
    Some((((a.0 + t0 * dx) * 2.0, (a.1 + t0 * dy) * 2.0), ((a.0 + t1 * dx) * 2.0, (a.1 + t1 * dy) * 2.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Rgb = Rgb(255, 255, 255);
    const K: Rgb = Rgb(0, 0, 0);

    fn ink(c: &Canvas, x: i64, y: i64) -> bool {
        c.index(x, y).is_some_and(|i| c.rgb[i] < 128)
    }

    #[test]
    fn line_covers_its_path_and_nothing_far_away() {
        let mut c = Canvas::new(50, 50, W);
        let clip = c.bounds();
        c.line((5.0, 5.0), (45.0, 45.0), 2.0, K, clip);
        for i in 5..=45 {
            assert!(ink(&c, i, i), "({i},{i})");
        }
        assert!(!ink(&c, 45, 5) && !ink(&c, 5, 45));
    }

    #[test]
    fn clipping_keeps_drawing_inside_and_survives_huge_coordinates() {
        let mut c = Canvas::new(40, 40, W);
        let clip = Rect::new(10, 10, 30, 30);
        c.line((-1e9, 20.0), (1e9, 20.0), 3.0, K, clip);
        c.line((f64::NAN, 0.0), (1.0, 1.0), 3.0, K, clip);
        assert!(ink(&c, 15, 20) && !ink(&c, 5, 20) && !ink(&c, 35, 20));
        // Beyond ~1e14 px, f64 cannot place the line precisely, but drawing stays clipped and cheap.
        c.line((-1e300, -1e300), (1e300, 1e300), 3.0, K, clip);
        c.line((-f64::MAX, 0.0), (f64::MAX, 0.0), 3.0, K, clip);
        assert!(!ink(&c, 5, 5) && !ink(&c, 35, 35));
        c.text(-100, -100, "off canvas", 3, K, Dir::Horizontal);
        c.fill_rect(Rect::new(-5, -5, 1000, 2), K);
        assert!(ink(&c, 0, 0));
    }

    #[test]
    fn text_draws_ink_in_its_box() {
        let mut c = Canvas::new(40, 20, W);
        c.text(2, 2, "Hi", 1, K, Dir::Horizontal);
        assert!(ink(&c, 2, 2)); // H's top-left stroke
        assert!(!ink(&c, 2 + text_width("Hi", 1) + 1, 2));
        let mut up = Canvas::new(20, 40, W);
        up.text(2, 30, "Hi", 1, K, Dir::Up);
        assert!((0..20).any(|x| (0..40).any(|y| ink(&up, x, y))));
    }
}
