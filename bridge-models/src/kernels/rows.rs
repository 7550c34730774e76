//! The decoder layer's operations over row-major `f32` rows, each written once for both CPU
//! engines, with its backward next to it where training needs one (and the training head's
//! log-probability, entropy and their gradient).
//!
//! Every function is a plain `#[inline(always)]` loop: callers run it inside
//! [`vectorised`](super::matmul::vectorised) (or a [`VectorKernel`]) so that it is compiled for
//! the CPU's vector extension. The order of every floating-point operation is part of the
//! contract: both engines' results are pinned to these exact formulas (the fused engine's
//! gradients are compared bit for bit across thread counts, the decoding engine's tokens with
//! the tensor engine's).

use super::math::{dot, exp_f32, max_of, sum_by, sum_of};
use super::matmul::{VectorKernel, matmul, run_vectorised, vectorised};

/// `dst[m, out] (+)= x[m, inp]·w[inp, out]`, then `+ b` on every row: a linear projection with
/// the weight in burn's `[in, out]` layout. `accumulate` adds the product to `dst` (the bias is
/// added after it); `parallel`: see [`matmul`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn affine(
    dst: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    inp: usize,
    out: usize,
    accumulate: bool,
    parallel: bool,
) {
    matmul(dst, x, w, m, inp, out, accumulate, parallel);
    if let Some(b) = b {
        vectorised(
            #[inline(always)]
            || add_to_rows(&mut dst[..m * out], b),
        );
    }
}

/// `y[r] += b` for every row `r` of `y` (rows of `b.len()` values).
#[inline(always)]
pub(crate) fn add_to_rows(y: &mut [f32], b: &[f32]) {
    y.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(y, &b)| *y += b));
}

/// `db += Σ_r dy[r]`: the column sums of `dy` (rows of `db.len()` values), the backward of
/// [`add_to_rows`].
#[inline(always)]
pub(crate) fn add_column_sums(dy: &[f32], db: &mut [f32]) {
    for row in dy.chunks_exact(db.len()) {
        db.iter_mut().zip(row).for_each(|(b, &g)| *b += g);
    }
}

/// `out[i] = table[ids[i]]`: the embedding rows of `ids` (rows of `width` values).
#[inline(always)]
pub(crate) fn embed_rows<'a>(table: &[f32], width: usize, ids: impl IntoIterator<Item = &'a u32>, out: &mut [f32]) {
    for (row, &id) in out.chunks_exact_mut(width).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * width..(id + 1) * width]);
    }
}

/// `1 / sqrt(mean(x²) + eps)`: the inverse RMS of one row.
#[inline(always)]
pub(crate) fn inv_rms(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt()
}

/// RMSNorm of every row of `x` (rows of `w.len()` values): `out = x · inv_rms(x) · w`. Each
/// row's inverse RMS is written to `inv` when given (what [`rms_norm_dx`] needs).
#[inline(always)]
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], mut inv: Option<&mut [f32]>) {
    let h = w.len();
    for (r, (xr, or)) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)).enumerate() {
        let s = inv_rms(xr, eps);
        or.iter_mut().zip(xr).zip(w).for_each(|((o, &x), &w)| *o = x * s * w);
        if let Some(inv) = inv.as_deref_mut() {
            inv[r] = s;
        }
    }
}

/// [`rms_norm`] of one row, in place (Qwen3's per-head query and key norms while decoding).
#[inline(always)]
pub(crate) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let s = inv_rms(x, eps);
    x.iter_mut().zip(w).for_each(|(x, &w)| *x = *x * s * w);
}

/// The input gradient of [`rms_norm`]: `dx (+)= ∂/∂x` for the output gradient `dy`, from the
/// input `x` and its rows' inverse RMS `inv`.
#[inline(always)]
pub(crate) fn rms_norm_dx(x: &[f32], inv: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    let h = w.len();
    let mut gw = vec![0.0f32; h];
    for (((dxr, xr), dyr), &inv) in dx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(dy.chunks_exact(h)).zip(inv) {
        gw.iter_mut().zip(dyr).zip(w).for_each(|((g, &dy), &w)| *g = dy * w);
        let c = inv * inv * inv * dot(xr, &gw) / h as f32;
        if accumulate {
            dxr.iter_mut().zip(xr).zip(&gw).for_each(|((d, &x), &g)| *d += inv * g - c * x);
        } else {
            dxr.iter_mut().zip(xr).zip(&gw).for_each(|((d, &x), &g)| *d = inv * g - c * x);
        }
    }
}

/// The scale's gradient of [`rms_norm`]: `dw += Σ_rows dy·x·inv`.
#[inline(always)]
pub(crate) fn rms_norm_dw(x: &[f32], inv: &[f32], dy: &[f32], dw: &mut [f32]) {
    let h = dw.len();
    for ((xr, dyr), &inv) in x.chunks_exact(h).zip(dy.chunks_exact(h)).zip(inv) {
        dw.iter_mut().zip(xr).zip(dyr).for_each(|((g, &x), &dy)| *g += dy * x * inv);
    }
}

/// HF's rotary embedding of one head `x [d]` in place, times `scale`:
/// `(x·cos + rotate_half(x)·sin)·scale` with `rotate_half(x) = cat(−x₂, x₁)` and `cos`, `sin`
/// the position's tables (`[d]` each). The decoding engine folds the attention scale `1/√d` into
/// the queries here; a `scale` of 1 is exact.
#[inline(always)]
pub(crate) fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], scale: f32) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for j in 0..half {
        let (a, b) = (lo[j], hi[j]);
        lo[j] = (a * cos[j] - b * sin[j]) * scale;
        hi[j] = (b * cos[j + half] + a * sin[j + half]) * scale;
    }
}

/// Backward of [`rope`] at scale 1, in place on the head's gradient.
#[inline(always)]
pub(crate) fn rope_backward(dx: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = dx.len() / 2;
    let (lo, hi) = dx.split_at_mut(half);
    for j in 0..half {
        let (dl, dh) = (lo[j], hi[j]);
        lo[j] = dl * cos[j] + dh * sin[j + half];
        hi[j] = dh * cos[j + half] - dl * sin[j];
    }
}

/// SwiGLU: `act = silu(gate)·up = gate·σ(gate)·up`, elementwise.
#[inline(always)]
pub(crate) fn swiglu(gate: &[f32], up: &[f32], act: &mut [f32]) {
    for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
        *a = g / (1.0 + exp_f32(-g)) * u;
    }
}

/// Backward of [`swiglu`]: `dact → (dgate, dup)`.
#[inline(always)]
pub(crate) fn swiglu_backward(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    for ((((dg, du), &g), &u), &da) in dgate.iter_mut().zip(dup.iter_mut()).zip(gate).zip(up).zip(dact) {
        let sig = 1.0 / (1.0 + exp_f32(-g));
        *du = da * g * sig;
        *dg = da * u * sig * (1.0 + g * (1.0 - sig));
    }
}

/// Softmax of one row of scores, in place: `exp(x − max) / Σ exp(x − max)` (the sum in
/// [`sum_of`]'s order, then one multiplication by its inverse).
#[inline(always)]
pub(crate) fn softmax_in_place(x: &mut [f32]) {
    let max = max_of(x);
    x.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / sum_of(x);
    x.iter_mut().for_each(|p| *p *= inv);
}

/// Backward of [`softmax_in_place`] for one row of probabilities `p`: `dp ← p∘(dp − Σ p∘dp)`,
/// in place on the probabilities' gradient.
#[inline(always)]
pub(crate) fn softmax_backward(p: &[f32], dp: &mut [f32]) {
    let dot = dot(dp, p);
    dp.iter_mut().zip(p).for_each(|(x, &y)| *x = y * (*x - dot));
}

/// `log Σ exp(row)` in `f32` with the maximum subtracted (the training engine's log-partition,
/// [`sum_by`]'s order).
#[inline(always)]
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    let max = max_of(row);
    max + sum_by(row, |l| exp_f32(l - max)).ln()
}

/// The entropy `H = z − Σ softmax(l)·l` of one row of logits `l` with log-partition `z`
/// (from [`log_sum_exp`]).
#[inline(always)]
pub(crate) fn entropy(row: &[f32], z: f32) -> f32 {
    let mean: f32 = row.iter().map(|&l| exp_f32(l - z) * l).sum();
    z - mean
}

/// Backward of a row's log-probability of `target` and its [`entropy`]: overwrites the logits
/// `row` (log-partition `z`, entropy `h`) with the gradient of `w·log p[target] + we·H`,
/// `w·(onehot − p) − we·p·(log p + H)`.
#[inline(always)]
pub(crate) fn log_softmax_backward(row: &mut [f32], z: f32, target: Option<usize>, w: f32, we: f32, h: f32) {
    if we == 0.0 {
        row.iter_mut().for_each(|l| *l = -w * exp_f32(*l - z));
    } else {
        row.iter_mut().for_each(|l| {
            let logp = *l - z;
            let prob = exp_f32(logp);
            *l = -w * prob - we * prob * (logp + h);
        });
    }
    if let Some(t) = target {
        row[t] += w;
    }
}

/// `log Σⱼ exp(x[r, j])` of every row `r` of `logits [R, vocab]` (NaN for a row whose largest
/// value is not finite): the normaliser of the log-probabilities the generation loop records.
/// The exponentials are [`exp_f32`]'s (2 ulp), summed in `f64` (a vocabulary-sized sum of
/// probabilities, for sampling rather than for a gradient).
pub(crate) fn log_partitions(logits: &[f32], vocab: usize) -> Vec<f64> {
    run_vectorised(LogPartitions { logits, vocab })
}

struct LogPartitions<'a> {
    logits: &'a [f32],
    vocab: usize,
}

impl VectorKernel for LogPartitions<'_> {
    type Output = Vec<f64>;
    #[inline(always)]
    fn run(self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.logits.len() / self.vocab.max(1));
        for row in self.logits.chunks_exact(self.vocab.max(1)) {
            let max = max_of(row);
            if !max.is_finite() {
                out.push(f64::NAN);
                continue;
            }
            let mut lanes = [0.0f64; 8];
            let chunks = row.chunks_exact(8);
            let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(exp_f32(x - max))).sum();
            for c in chunks {
                for (l, &x) in lanes.iter_mut().zip(c) {
                    *l += f64::from(exp_f32(x - max));
                }
            }
            out.push(f64::from(max) + (lanes.iter().sum::<f64>() + tail).ln());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 101) as f32 / 29.0 - 1.7).collect()
    }

    #[test]
    fn log_partitions_match_an_f64_log_sum_exp() {
        let vocab = 37;
        let logits: Vec<f32> = (0..3 * vocab).map(|i| ((i * 7919) % 101) as f32 / 7.0 - 6.0).collect();
        let got = log_partitions(&logits, vocab);
        for (row, &z) in logits.chunks(vocab).zip(&got) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let want = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            assert!((z - want).abs() < 1e-6, "{z} vs {want}");
            assert!((f64::from(log_sum_exp(row)) - want).abs() < 1e-5, "f32 log-sum-exp");
        }
        let bad = [1.0f32, f32::INFINITY, 0.0];
        assert!(log_partitions(&bad, 3)[0].is_nan());
    }

    #[test]
    fn forward_kernels_match_their_formulas_in_f64() {
        let (h, eps) = (24usize, 1e-6f32);
        let x = values(3 * h, 1);
        let w = values(h, 2);
        let mut out = vec![0.0f32; x.len()];
        let mut inv = vec![0.0f32; 3];
        rms_norm(&x, &w, eps, &mut out, Some(&mut inv));
        for (r, xr) in x.chunks(h).enumerate() {
            let ms: f64 = xr.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / h as f64;
            let s = 1.0 / (ms + f64::from(eps)).sqrt();
            assert!((f64::from(inv[r]) - s).abs() <= 1e-5 * s);
            for j in 0..h {
                let want = f64::from(xr[j]) * s * f64::from(w[j]);
                assert!((f64::from(out[r * h + j]) - want).abs() <= 1e-5, "rms_norm");
            }
            let mut row = xr.to_vec();
            rms_norm_in_place(&mut row, &w, eps);
            assert_eq!(row, out[r * h..(r + 1) * h], "in place: the same bits");
        }
        // rotary: a rotation of each (x_j, x_{j+d/2}) pair by the angle whose cos/sin are given
        let d = 8;
        let angles: Vec<f64> = (0..d / 2).map(|j| 0.3 + j as f64).collect();
        let cos: Vec<f32> = angles.iter().chain(&angles).map(|a| a.cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().chain(&angles).map(|a| a.sin() as f32).collect();
        let head = values(d, 3);
        let mut rotated = head.clone();
        rope(&mut rotated, &cos, &sin, 0.5);
        for j in 0..d / 2 {
            let (a, b) = (f64::from(head[j]), f64::from(head[j + d / 2]));
            let (c, s) = (angles[j].cos(), angles[j].sin());
            assert!((f64::from(rotated[j]) - 0.5 * (a * c - b * s)).abs() <= 1e-6);
            assert!((f64::from(rotated[j + d / 2]) - 0.5 * (b * c + a * s)).abs() <= 1e-6);
        }
        // the backward of a rotation is the inverse rotation
        let mut back = head.clone();
        rope(&mut back, &cos, &sin, 1.0);
        rope_backward(&mut back, &cos, &sin);
        assert!(back.iter().zip(&head).all(|(a, b)| (a - b).abs() <= 1e-6));
        // SwiGLU and softmax
        let (g, u) = (values(40, 4), values(40, 5));
        let mut act = vec![0.0f32; 40];
        swiglu(&g, &u, &mut act);
        for i in 0..40 {
            let gi = f64::from(g[i]);
            let want = gi / (1.0 + (-gi).exp()) * f64::from(u[i]);
            assert!((f64::from(act[i]) - want).abs() <= 1e-6, "swiglu");
        }
        let mut p = values(21, 6);
        let z: f64 = p.iter().map(|&v| f64::from(v).exp()).sum();
        let want: Vec<f64> = p.iter().map(|&v| f64::from(v).exp() / z).collect();
        softmax_in_place(&mut p);
        assert!(p.iter().zip(&want).all(|(&a, &b)| (f64::from(a) - b).abs() <= 1e-6), "softmax");
    }

    /// The backward kernels against central finite differences of `Σ c·forward(x)` in f64.
    #[test]
    fn backward_kernels_match_finite_differences() {
        let (h, eps) = (16usize, 1e-6f32);
        let x = values(2 * h, 7);
        let w = values(h, 8);
        let c = values(2 * h, 9);
        let objective = |x: &[f32], w: &[f32]| -> f64 {
            let mut out = vec![0.0f32; x.len()];
            rms_norm(x, w, eps, &mut out, None);
            out.iter().zip(&c).map(|(&o, &c)| f64::from(o) * f64::from(c)).sum()
        };
        let mut inv = vec![0.0f32; 2];
        let mut out = vec![0.0f32; x.len()];
        rms_norm(&x, &w, eps, &mut out, Some(&mut inv));
        let mut dx = vec![0.0f32; x.len()];
        rms_norm_dx(&x, &inv, &w, &c, &mut dx, false);
        let mut dw = vec![0.0f32; h];
        rms_norm_dw(&x, &inv, &c, &mut dw);
        let step = 1e-2f32;
        for i in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&up, &w) - objective(&down, &w)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(dx[i])).abs() <= 1e-3, "rms_norm dx[{i}]: {fd} vs {}", dx[i]);
        }
        for i in 0..h {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&x, &up) - objective(&x, &down)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(dw[i])).abs() <= 1e-3, "rms_norm dw[{i}]: {fd} vs {}", dw[i]);
        }
        // SwiGLU: Σ c·act
        let (g, u, ca) = (values(20, 10), values(20, 11), values(20, 12));
        let (mut dg, mut du) = (vec![0.0f32; 20], vec![0.0f32; 20]);
        swiglu_backward(&g, &u, &ca, &mut dg, &mut du);
        let objective = |g: &[f32], u: &[f32]| -> f64 {
            let mut act = vec![0.0f32; g.len()];
            swiglu(g, u, &mut act);
            act.iter().zip(&ca).map(|(&a, &c)| f64::from(a) * f64::from(c)).sum()
        };
        for i in 0..20 {
            let (mut up, mut down) = (g.clone(), g.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&up, &u) - objective(&down, &u)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(dg[i])).abs() <= 1e-3, "swiglu dgate[{i}]: {fd} vs {}", dg[i]);
            let (mut up, mut down) = (u.clone(), u.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&g, &up) - objective(&g, &down)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(du[i])).abs() <= 1e-3, "swiglu dup[{i}]: {fd} vs {}", du[i]);
        }
        // a row's log-probability of a target and its entropy: w·log p[2] + we·H
        let (l0, (w, we)) = (values(11, 15), (0.7f32, -1.3f32));
        let objective = |l: &[f32]| -> f64 {
            let z = log_sum_exp(l);
            f64::from(w) * f64::from(l[2] - z) + f64::from(we) * f64::from(entropy(l, z))
        };
        let z = log_sum_exp(&l0);
        let mut dl = l0.clone();
        log_softmax_backward(&mut dl, z, Some(2), w, we, entropy(&l0, z));
        for i in 0..11 {
            let (mut up, mut down) = (l0.clone(), l0.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&up) - objective(&down)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(dl[i])).abs() <= 1e-3, "log-softmax dl[{i}]: {fd} vs {}", dl[i]);
        }
        // softmax: Σ c·softmax(x)
        let (s, cs) = (values(13, 13), values(13, 14));
        let objective = |s: &[f32]| -> f64 {
            let mut p = s.to_vec();
            softmax_in_place(&mut p);
            p.iter().zip(&cs).map(|(&p, &c)| f64::from(p) * f64::from(c)).sum()
        };
        let mut p = s.clone();
        softmax_in_place(&mut p);
        let mut ds = cs.clone();
        softmax_backward(&p, &mut ds);
        for i in 0..13 {
            let (mut up, mut down) = (s.clone(), s.clone());
            up[i] += step;
            down[i] -= step;
            let fd = (objective(&up) - objective(&down)) / (2.0 * f64::from(step));
            assert!((fd - f64::from(ds[i])).abs() <= 1e-3, "softmax ds[{i}]: {fd} vs {}", ds[i]);
        }
    }
}
