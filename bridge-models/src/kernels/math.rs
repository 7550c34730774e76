//! Vector primitives in a fixed order of operations: sixteen interleaved partial sums (an order
//! the compiler vectorises, and the same whatever the CPU), and a branch-free polynomial `exp`.

/// `Σ f(x)` over the elements, in sixteen interleaved partial sums, then the tail: the one
/// summation order of every sum the engines take over a row.
#[inline(always)]
pub(crate) fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &v)| *l += f(v));
    }
    lanes.iter().sum::<f32>() + tail
}

/// The sum of the elements ([`sum_by`]'s order).
#[inline(always)]
pub(crate) fn sum_of(x: &[f32]) -> f32 {
    sum_by(x, |v| v)
}

/// A dot product in sixteen interleaved partial sums (a fixed order the compiler vectorises).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for ((acc, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element (−∞ for none), in sixteen lanes (NaNs are not propagated: the scores are
/// finite).
#[inline(always)]
pub(crate) fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    lanes.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// `eˣ` in `f32` to within 2 ulp for `x ∈ [−87, 88]` (Cephes' `expf`: Cody–Waite reduction by
/// ln 2, a degree-5 polynomial, the exponent written into the bits), branch-free so that loops
/// over slices vectorise. Arguments are clamped to `[−87, 88]` first: smaller ones give
/// `e⁻⁸⁷ ≈ 1.6e-38` instead of a denormal or zero, larger ones `e⁸⁸` instead of overflowing
/// (both are what softmax and SiLU need); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    e * f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_3;
        }
        assert!(worst <= 2.0 * f64::from(f32::EPSILON), "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0) < 2e-38);
        assert!(exp_f32(1000.0).is_finite());
    }

    #[test]
    fn reductions_match_an_f64_reference() {
        for len in [0usize, 1, 15, 16, 17, 40, 100] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0).collect();
            let y: Vec<f32> = (0..len).map(|i| ((i * 104_729) % 97) as f32 / 11.0 - 4.0).collect();
            let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
            let prod: f64 = x.iter().zip(&y).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            assert!((f64::from(sum_of(&x)) - sum).abs() <= 1e-4, "{len}: sum");
            assert!((f64::from(dot(&x, &y)) - prod).abs() <= 1e-4, "{len}: dot");
            let sq: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!((f64::from(sum_by(&x, |v| v * v)) - sq).abs() <= 1e-3, "{len}: sum of squares");
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_of(&x), max, "{len}: max");
        }
    }
}
