//! Axis ranges with "nice" round tick values (1, 2, 2.5 or 5 × 10^k) and their labels.

/// An axis: its drawn range and tick values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Axis {
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<f64>,
    pub labels: Vec<String>,
}

impl Axis {
    /// Position of `v` along the axis in `[0, 1]` (outside for out-of-range values); overflow-safe.
    pub fn frac(&self, v: f64) -> f64 {
        (v * 0.5 - self.min * 0.5) / (self.max * 0.5 - self.min * 0.5)
    }
}

/// The data bounds `(min, max)` of finite values, or `None` when there are none.
pub(crate) fn bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A step among 1, 2, 2.5, 5 × 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let exp = raw.log10().floor();
    let base = 10f64.powf(exp);
    let f = raw / base;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * base
}

/// Widens a degenerate range (empty or a single value) to something drawable.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let mag = lo.abs().max(hi.abs());
    // Relative spans below ~1e-12 are floating-point noise: treat them as one value.
    if hi - lo > mag * 1e-12 && (hi * 0.5 - lo * 0.5) > 0.0 {
        return (lo, hi);
    }
    let c = lo * 0.5 + hi * 0.5;
    if c == 0.0 {
        (-1.0, 1.0)
    } else {
        let d = c.abs() * 0.1;
        (c - d, c + d)
    }
}

/// An axis spanning `data` (or `fixed`, when given), with about `target` ticks at nice values.
/// When the range is not fixed it is extended outward to the nearest ticks.
pub(crate) fn axis(data: Option<(f64, f64)>, fixed: Option<(f64, f64)>, target: usize) -> Axis {
    let target = target.clamp(2, 20) as f64;
    let fixed = fixed.filter(|(a, b)| a.is_finite() && b.is_finite() && a < b);
    let (lo, hi) = match (fixed, data) {
        (Some(r), _) => r,
        (None, Some((a, b))) => widen(a, b),
        (None, None) => (0.0, 1.0),
    };
    let half_span = hi * 0.5 - lo * 0.5;
    let step = nice_step(half_span / target * 2.0);
    let (mut min, mut max) = (lo, hi);
    if fixed.is_none() && step.is_finite() && step > 0.0 {
        // Each end moves out to the next tick when that is close (within 35% of a step);
        // otherwise it gets a 3% margin, so one slightly negative value does not add a whole step.
        let margin = half_span * 0.06;
        let a = (lo / step + 1e-9).floor() * step;
        let b = (hi / step - 1e-9).ceil() * step;
        min = if a.is_finite() && lo * 0.5 - a * 0.5 <= step * 0.175 { a } else { lo - margin };
        max = if b.is_finite() && b * 0.5 - hi * 0.5 <= step * 0.175 { b } else { hi + margin };
        if !(min.is_finite() && max.is_finite() && min < max) {
            (min, max) = (lo, hi);
        }
    }
    let mut ticks = Vec::new();
    if step.is_finite() && step > 0.0 {
        let first = (min / step - 1e-9).ceil();
        let last = (max / step + 1e-9).floor();
        let n = last - first;
        if n.is_finite() && (0.0..=40.0).contains(&n) {
            for i in 0..=(n as i64) {
                let t = (first + i as f64) * step;
                // Snap float noise around zero so no "-0" or "1e-17" labels appear.
                ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
            }
        }
    }
    if ticks.is_empty() {
        ticks = vec![min, max];
    }
    let labels = labels(&ticks, step);
    Axis { min, max, ticks, labels }
}

/// Labels for `ticks` spaced `step` apart, all in one format: plain decimals when that is short,
/// otherwise scientific notation (`2.5e6`, `1e-7`).
pub(crate) fn labels(ticks: &[f64], step: f64) -> Vec<String> {
    let biggest = ticks.iter().fold(0f64, |m, t| m.max(t.abs()));
    let step = if step.is_finite() && step > 0.0 { step } else { biggest.max(1.0) };
    let sci = biggest >= 1e6 || step < 1e-4;
    if !sci {
        // Enough decimals to tell ticks apart: 0 for steps ≥ 1, 1 for 0.5, 2 for 0.25 or 0.05, …
        let mut decimals = 0usize;
        while decimals < 10 {
            let scaled = step * 10f64.powi(decimals as i32);
            if (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0) {
                break;
            }
            decimals += 1;
        }
        return ticks.iter().map(|t| format!("{t:.decimals$}")).collect();
    }
    ticks.iter().map(|&t| sci_label(t, step)).collect()
}

fn sci_label(t: f64, step: f64) -> String {
    if t == 0.0 {
        return "0".to_owned();
    }
    let exp = t.abs().log10().floor() as i32;
    let mant = t / 10f64.powi(exp);
    // Mantissa digits needed to resolve the step at this exponent (at most 3).
    let rel = step / 10f64.powi(exp);
    let mut decimals = 0usize;
    while decimals < 3 {
        let scaled = rel * 10f64.powi(decimals as i32);
        if scaled >= 1.0 - 1e-9 && (scaled - scaled.round()).abs() < 1e-6 * scaled {
            break;
        }
        decimals += 1;
    }
    let (mut mant, mut exp) = (mant, exp);
    // Rounding can give "10.0e5": renormalise.
    if format!("{mant:.decimals$}").trim_start_matches('-').starts_with("10") {
        mant /= 10.0;
        exp += 1;
    }
    let m = format!("{mant:.decimals$}");
    let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { &m };
    format!("{m}e{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        let a = axis(Some((0.03, 0.97)), None, 6);
        assert_eq!(a.min, 0.0);
        assert_eq!(a.max, 1.0);
        assert_eq!(a.labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let a = axis(Some((0.0, 1000.0)), None, 6);
        assert_eq!(a.labels, ["0", "200", "400", "600", "800", "1000"]);
        let a = axis(Some((-3.2, 7.9)), None, 5);
        assert!(a.min <= -3.2 && a.max >= 7.9);
        assert_eq!(a.labels, ["-2.5", "0.0", "2.5", "5.0", "7.5"]);
        // A far tick is not worth a whole step of empty space: a small margin is used instead.
        assert!(a.min > -3.6 && a.max < 8.3, "{a:?}");
        let a = axis(Some((-0.0076, 0.73)), None, 5);
        assert_eq!(a.labels.first().map(String::as_str), Some("0.0"));
    }

    #[test]
    fn degenerate_ranges_are_widened() {
        let a = axis(None, None, 5);
        assert_eq!((a.min, a.max), (0.0, 1.0));
        let a = axis(Some((0.0, 0.0)), None, 5);
        assert!(a.min < 0.0 && a.max > 0.0);
        let a = axis(Some((5.0, 5.0)), None, 5);
        assert!(a.min < 5.0 && a.max > 5.0 && a.ticks.len() >= 2);
        let a = axis(Some((1.0, 1.0 + 1e-15)), None, 5);
        assert!(a.ticks.len() >= 2 && a.min < 1.0);
    }

    #[test]
    fn huge_and_tiny_ranges_have_finite_ticks_and_scientific_labels() {
        for (lo, hi) in [(-f64::MAX, f64::MAX), (-1e300, 1e300), (1e-300, 2e-300), (0.0, 3e7), (0.0, 2e-6)] {
            let a = axis(Some((lo, hi)), None, 5);
            assert!(a.min.is_finite() && a.max.is_finite() && a.min < a.max, "{lo} {hi}: {a:?}");
            assert!(a.ticks.len() >= 2 && a.ticks.len() <= 42, "{lo} {hi}: {a:?}");
            assert!(a.frac(lo).is_finite() && a.frac(hi).is_finite());
        }
        let a = axis(Some((0.0, 3e7)), None, 4);
        assert_eq!(a.labels, ["0", "1e7", "2e7", "3e7"]);
        let a = axis(Some((0.0, 2e-6)), None, 5);
        assert_eq!(a.labels, ["0", "5e-7", "1e-6", "1.5e-6", "2e-6"]);
    }

    #[test]
    fn fixed_range_is_kept() {
        let a = axis(Some((0.2, 0.3)), Some((0.0, 1.0)), 5);
        assert_eq!((a.min, a.max), (0.0, 1.0));
        assert_eq!(a.labels.first().map(String::as_str), Some("0.0"));
    }
}
