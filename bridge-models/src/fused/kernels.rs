//! The fused engine's forward and backward passes over host `f32` buffers.
//!
//! Every tensor of the model (base θ and adapter w) lives in one flat parameter vector, at the
//! [`Slot`]s of a [`ParamLayout`]; the gradient comes back in a vector of the same layout. The
//! activations are row-major `[N, width]` with `N = B·T` token rows (row `b·T + t`), so that a
//! head's queries are a strided block of the `[N, Hq·d]` buffer and no transpose is ever copied:
//! the matrix products read strided [`View`]s.
//!
//! ```text
//! forward (per layer):                         backward (per layer, reversed):
//! n1 = rms(x)·g1                               dact = dy·Wdᵀ  ...           (down_proj)
//! q,k,v = n1·W{q,k,v} (+b) (+s·(n1·Aᵀ)·Bᵀ)      dgate, dup = SwiGLU'         → dn2 → dx2
//! q,k = rope(qk_norm(q,k))                     dattn = dx2·Woᵀ ...           (o_proj)
//! P = softmax(q·kᵀ/√d + mask); attn = P·v      dP = dattn·vᵀ; dS = P∘(dP − Σ P∘dP)
//! x2 = x + attn·Wo                             dq = dS·k/√d; dk = dSᵀ·q/√d; dv = Pᵀ·dattn
//! n2 = rms(x2)·g2                              rope', qk_norm', W{q,k,v}ᵀ   → dn1 → dx
//! y = x2 + (silu(n2·Wg)∘(n2·Wu))·Wd
//! ```
//!
//! The head is computed in blocks of rows (logits `[rows, V]` are never kept whole): the forward
//! keeps each row's log-partition, the backward recomputes the block's logits and forms
//! `dlogits = g·(onehot − softmax)`.
//!
//! Determinism: every product runs on [`matmul_view`] (fixed summation order whatever the thread
//! count); row-parallel loops write disjoint rows; sums over rows (norm scales, biases, the
//! embedding's scatter) run in a fixed serial order.

use super::pool::{copy_of, give, take, take_zeroed};
use crate::generate::host::exp_f32;
use crate::generate::matmul::{View, matmul_view, vectorised};
use rayon::prelude::*;

/// Rows per block of the head's logits.
const HEAD_BLOCK_ROWS: usize = 256;

/// Where one tensor sits in the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl Slot {
    fn of<'a>(&self, flat: &'a [f32]) -> &'a [f32] {
        &flat[self.offset..self.offset + self.len]
    }

    fn of_mut<'a>(&self, flat: &'a mut [f32]) -> &'a mut [f32] {
        &mut flat[self.offset..self.offset + self.len]
    }
}

/// A linear projection `y = x·W + b + s·(x·Aᵀ)·Bᵀ`.
#[derive(Clone, Debug)]
pub(crate) struct ProjSlots {
    /// `[inp, out]` (burn's layout).
    pub(crate) weight: Slot,
    /// `[out]`.
    pub(crate) bias: Option<Slot>,
    /// `(A [r, inp], B [out, r])`.
    pub(crate) lora: Option<(Slot, Slot)>,
    pub(crate) inp: usize,
    pub(crate) out: usize,
}

/// The slots of one decoder layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerSlots {
    pub(crate) input_norm: Slot,
    pub(crate) q: ProjSlots,
    pub(crate) k: ProjSlots,
    pub(crate) v: ProjSlots,
    pub(crate) o: ProjSlots,
    pub(crate) q_norm: Option<Slot>,
    pub(crate) k_norm: Option<Slot>,
    pub(crate) post_norm: Slot,
    pub(crate) gate: ProjSlots,
    pub(crate) up: ProjSlots,
    pub(crate) down: ProjSlots,
}

/// The architecture and where every tensor sits in the flat parameter vector.
#[derive(Clone, Debug)]
pub(crate) struct ParamLayout {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) intermediate: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) eps: f32,
    /// LoRA's `alpha / r` (unused without an adapter).
    pub(crate) lora_scale: f32,
    pub(crate) lora_rank: usize,
    /// `[vocab, hidden]`.
    pub(crate) embed: Slot,
    pub(crate) layers: Vec<LayerSlots>,
    pub(crate) norm: Slot,
    /// `None` when tied to the embedding.
    pub(crate) lm_head: Option<ProjSlots>,
    /// Length of the flat vector.
    pub(crate) total: usize,
}

/// One batch: right-padded ids and the rotary tables of positions `0..T`.
#[derive(Clone, Debug)]
pub(crate) struct BatchPlan {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// `[B·T]`.
    pub(crate) ids: Vec<u32>,
    /// `[B·T]`: real token (`true`) or padding.
    pub(crate) valid: Vec<bool>,
    /// `[T·d]` each.
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
}

/// What the forward pass returns.
#[derive(Debug)]
pub(crate) struct ForwardOut {
    /// `[B·(T−1)]`: `log π(ids[b, t+1] | ids[b, ..=t])`.
    pub(crate) logprobs: Vec<f32>,
    /// `[B·(T−1)]`, when asked for.
    pub(crate) entropy: Option<Vec<f32>>,
    /// The activations the backward pass needs, when asked for.
    pub(crate) saved: Option<Saved>,
}

/// Activations of one layer kept for the backward pass.
#[derive(Debug)]
pub(crate) struct SavedLayer {
    x: Vec<f32>,
    n1: Vec<f32>,
    inv1: Vec<f32>,
    /// Queries and keys before their per-head norm (Qwen3), and the norms' inverse RMS.
    q_pre: Option<(Vec<f32>, Vec<f32>)>,
    k_pre: Option<(Vec<f32>, Vec<f32>)>,
    /// After the norm and the rotary embedding.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `[B, Hq, T, T]`.
    probs: Vec<f32>,
    attn: Vec<f32>,
    x2: Vec<f32>,
    n2: Vec<f32>,
    inv2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    /// `x·Aᵀ` of each adapted projection (q, k, v, o, gate, up, down).
    downs: [Option<Vec<f32>>; 7],
}

/// Everything the backward pass needs.
#[derive(Debug)]
pub(crate) struct Saved {
    layers: Vec<SavedLayer>,
    /// Final norm input, output and inverse RMS.
    xf: Vec<f32>,
    nf: Vec<f32>,
    invf: Vec<f32>,
    /// `[N]`: log-partition of each row's logits.
    lse: Vec<f32>,
    /// `[B·(T−1)]`: the entropies, when computed.
    entropy: Option<Vec<f32>>,
    head_down: Option<Vec<f32>>,
}

impl SavedLayer {
    /// Returns every buffer to the pool.
    fn recycle(self) {
        let Self { x, n1, inv1, q_pre, k_pre, q, k, v, probs, attn, x2, n2, inv2, gate, up, act, downs } = self;
        for b in [x, n1, inv1, q, k, v, probs, attn, x2, n2, inv2, gate, up, act] {
            give(b);
        }
        for (a, b) in q_pre.into_iter().chain(k_pre) {
            give(a);
            give(b);
        }
        downs.into_iter().flatten().for_each(give);
    }
}

impl Saved {
    /// Returns every buffer to the pool (after the backward pass).
    pub(crate) fn recycle(self) {
        let Self { layers, xf, nf, invf, lse, entropy, head_down } = self;
        layers.into_iter().for_each(SavedLayer::recycle);
        for b in [xf, nf, invf, lse] {
            give(b);
        }
        entropy.into_iter().chain(head_down).for_each(give);
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/// Rows per rayon task for row-wise loops of `width` values per row (about 16k values a task).
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// `out = x / rms(x) · w` per row; returns each row's inverse RMS.
fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Vec<f32> {
    let h = w.len();
    let mut inv = take(x.len() / h);
    let chunk = rows_per_task(h);
    out.par_chunks_mut(chunk * h).zip(x.par_chunks(chunk * h)).zip(inv.par_chunks_mut(chunk)).for_each(
        |((o, x), inv)| {
            vectorised(
                #[inline(always)]
                || {
                    for ((or, xr), inv) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(inv.iter_mut()) {
                        *inv = 1.0 / (dot(xr, xr) / h as f32 + eps).sqrt();
                        or.iter_mut().zip(xr).zip(w).for_each(|((o, &x), &w)| *o = x * *inv * w);
                    }
                },
            )
        },
    );
    inv
}

/// Backward of [`rms_norm_forward`]: `dx (+)= ∂/∂x`, `dw += ∂/∂w` for the output gradient `dy`.
fn rms_norm_backward(x: &[f32], inv: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool, dw: &mut [f32]) {
    let h = w.len();
    // dw: serial over rows (a fixed order).
    vectorised(
        #[inline(always)]
        || {
            for ((xr, dyr), &inv) in x.chunks_exact(h).zip(dy.chunks_exact(h)).zip(inv) {
                dw.iter_mut().zip(xr).zip(dyr).for_each(|((g, &x), &dy)| *g += dy * x * inv);
            }
        },
    );
    let chunk = rows_per_task(h);
    dx.par_chunks_mut(chunk * h)
        .zip(x.par_chunks(chunk * h))
        .zip(dy.par_chunks(chunk * h))
        .zip(inv.par_chunks(chunk))
        .for_each(|(((dx, x), dy), inv)| {
            vectorised(
                #[inline(always)]
                || {
                    let mut gw = vec![0.0f32; h];
                    for (((dxr, xr), dyr), &inv) in
                        dx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(dy.chunks_exact(h)).zip(inv)
                    {
                        gw.iter_mut().zip(dyr).zip(w).for_each(|((g, &dy), &w)| *g = dy * w);
                        let c = inv * inv * inv * dot(xr, &gw) / h as f32;
                        if accumulate {
                            dxr.iter_mut().zip(xr).zip(&gw).for_each(|((d, &x), &g)| *d += inv * g - c * x);
                        } else {
                            dxr.iter_mut().zip(xr).zip(&gw).for_each(|((d, &x), &g)| *d = inv * g - c * x);
                        }
                    }
                },
            )
        });
}

/// Adds the column sums of `dy [N, out]` to `db`.
fn add_column_sums(dy: &[f32], db: &mut [f32]) {
    vectorised(
        #[inline(always)]
        || {
            for row in dy.chunks_exact(db.len()) {
                db.iter_mut().zip(row).for_each(|(b, &g)| *b += g);
            }
        },
    )
}

/// A dot product in sixteen interleaved partial sums (a fixed order the compiler vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// The largest element (−∞ for none), in sixteen lanes.
#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
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

/// `x ← exp(x − shift)` for every element; returns their sum (sixteen interleaved partial sums).
#[inline(always)]
fn exp_shifted_in_place(x: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c.iter_mut()) {
            *v = exp_f32(*v - shift);
            *l += *v;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - shift);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y [N, out] = x·W + b + s·(x·Aᵀ)·Bᵀ`; returns `x·Aᵀ` when adapted.
fn proj_forward(
    p: &[f32],
    slots: &ProjSlots,
    scale: f32,
    rank: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Option<Vec<f32>> {
    let (inp, out) = (slots.inp, slots.out);
    matmul_view(y, out, View::rows(x, inp), View::rows(slots.weight.of(p), out), n, inp, out, false, 1.0, true);
    if let Some(b) = slots.bias {
        let b = b.of(p);
        y.par_chunks_mut(out * rows_per_task(out)).for_each(|c| {
            vectorised(
                #[inline(always)]
                || c.chunks_exact_mut(out).for_each(|row| row.iter_mut().zip(b).for_each(|(y, &b)| *y += b)),
            )
        });
    }
    slots.lora.map(|(a, bm)| {
        let mut down = take(n * rank);
        matmul_view(&mut down, rank, View::rows(x, inp), View::rows(a.of(p), inp).t(), n, inp, rank, false, 1.0, true);
        matmul_view(y, out, View::rows(&down, rank), View::rows(bm.of(p), rank).t(), n, rank, out, true, scale, true);
        down
    })
}

/// Backward of [`proj_forward`]: parameter gradients into `g`, `dx (+)= dy·Wᵀ (+ s·dy·B·A)`.
#[allow(clippy::too_many_arguments)]
fn proj_backward(
    p: &[f32],
    g: &mut [f32],
    slots: &ProjSlots,
    scale: f32,
    rank: usize,
    x: &[f32],
    down: Option<&[f32]>,
    dy: &[f32],
    n: usize,
    dx: &mut [f32],
    accumulate: bool,
) {
    let (inp, out) = (slots.inp, slots.out);
    // dW [inp, out] += xᵀ·dy
    matmul_view(slots.weight.of_mut(g), out, View::rows(x, inp).t(), View::rows(dy, out), inp, n, out, true, 1.0, true);
    if let Some(b) = slots.bias {
        add_column_sums(dy, b.of_mut(g));
    }
    matmul_view(
        dx,
        inp,
        View::rows(dy, out),
        View::rows(slots.weight.of(p), out).t(),
        n,
        out,
        inp,
        accumulate,
        1.0,
        true,
    );
    if let (Some((a, bm)), Some(down)) = (slots.lora, down) {
        // dB [out, r] += s·dyᵀ·down
        matmul_view(
            bm.of_mut(g),
            rank,
            View::rows(dy, out).t(),
            View::rows(down, rank),
            out,
            n,
            rank,
            true,
            scale,
            true,
        );
        // ddown [N, r] = s·dy·B
        let mut ddown = take(n * rank);
        matmul_view(
            &mut ddown,
            rank,
            View::rows(dy, out),
            View::rows(bm.of(p), rank),
            n,
            out,
            rank,
            false,
            scale,
            true,
        );
        // dA [r, inp] += ddownᵀ·x
        matmul_view(a.of_mut(g), inp, View::rows(&ddown, rank).t(), View::rows(x, inp), rank, n, inp, true, 1.0, true);
        // dx += ddown·A
        matmul_view(dx, inp, View::rows(&ddown, rank), View::rows(a.of(p), inp), n, rank, inp, true, 1.0, true);
        give(ddown);
    }
}

/// HF's `x·cos + rotate_half(x)·sin` for every head of every row of `x [N, heads·d]` (row
/// `b·T + t` at position `t`).
fn rope_forward(x: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    let width = heads * d;
    let half = d / 2;
    x.par_chunks_mut(width).enumerate().for_each(|(row, xr)| {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        for head in xr.chunks_exact_mut(d) {
            let (lo, hi) = head.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (lo[j], hi[j]);
                lo[j] = a * c[j] - b * s[j];
                hi[j] = b * c[j + half] + a * s[j + half];
            }
        }
    });
}

/// Backward of [`rope_forward`], in place on the gradient.
fn rope_backward(dx: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    let width = heads * d;
    let half = d / 2;
    dx.par_chunks_mut(width).enumerate().for_each(|(row, xr)| {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        for head in xr.chunks_exact_mut(d) {
            let (lo, hi) = head.split_at_mut(half);
            for j in 0..half {
                let (dl, dh) = (lo[j], hi[j]);
                lo[j] = dl * c[j] + dh * s[j + half];
                hi[j] = dh * c[j + half] - dl * s[j];
            }
        }
    });
}

/// `silu(g)·u` elementwise.
fn swiglu_forward(gate: &[f32], up: &[f32], act: &mut [f32]) {
    act.par_chunks_mut(16_384).zip(gate.par_chunks(16_384)).zip(up.par_chunks(16_384)).for_each(|((a, g), u)| {
        vectorised(
            #[inline(always)]
            || {
                for ((a, &g), &u) in a.iter_mut().zip(g).zip(u) {
                    *a = g / (1.0 + exp_f32(-g)) * u;
                }
            },
        )
    });
}

/// Backward of [`swiglu_forward`]: `dact → (dgate, dup)`.
fn swiglu_backward(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    dgate
        .par_chunks_mut(16_384)
        .zip(dup.par_chunks_mut(16_384))
        .zip(gate.par_chunks(16_384))
        .zip(up.par_chunks(16_384))
        .zip(dact.par_chunks(16_384))
        .for_each(|((((dg, du), g), u), da)| {
            vectorised(
                #[inline(always)]
                || {
                    for ((((dg, du), &g), &u), &da) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(da) {
                        let sig = 1.0 / (1.0 + exp_f32(-g));
                        let silu = g * sig;
                        *du = da * silu;
                        *dg = da * u * sig * (1.0 + g * (1.0 - sig));
                    }
                },
            )
        });
}

/// Softmax over the first `visible` scores of a row, zeros after them. Rows are right-padded,
/// so the keys a query may attend (`j ≤ i`, `j` a real token) are a prefix of the row. A query
/// with no visible key cannot occur (every row has a real first token).
#[inline(always)]
fn softmax_prefix(row: &mut [f32], visible: usize) {
    let (head, tail) = row.split_at_mut(visible);
    let max = max_of(head);
    let inv = 1.0 / exp_shifted_in_place(head, max);
    head.iter_mut().for_each(|p| *p *= inv);
    tail.fill(0.0);
}

/// Dimensions of one attention call.
#[derive(Clone, Copy)]
struct AttnDims {
    seq: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl AttnDims {
    fn q_width(&self) -> usize {
        self.heads * self.d
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.d
    }
}

/// Causal grouped-query attention of every sequence: `attn [N, Hq·d]`, `probs [B, Hq, T, T]`.
fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    valid: &[bool],
    a: AttnDims,
    attn: &mut [f32],
    probs: &mut [f32],
) {
    let (t, d) = (a.seq, a.d);
    let (qw, kw) = (a.q_width(), a.kv_width());
    let n_rep = a.heads / a.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    attn.par_chunks_mut(t * qw).zip(probs.par_chunks_mut(a.heads * t * t)).enumerate().for_each(|(b, (out, pb))| {
        let rows = b * t;
        // real tokens come first: the row's length
        let len = valid[rows..rows + t].iter().take_while(|&&v| v).count().max(1);
        for (h, p) in pb.chunks_exact_mut(t * t).enumerate() {
            let g = h / n_rep;
            let qh = View::strided(&q[rows * qw + h * d..], qw);
            let kh = View::strided(&k[rows * kw + g * d..], kw);
            let vh = View::strided(&v[rows * kw + g * d..], kw);
            matmul_view(p, t, qh, kh.t(), t, d, t, false, scale, false);
            vectorised(
                #[inline(always)]
                || {
                    for (i, row) in p.chunks_exact_mut(t).enumerate() {
                        softmax_prefix(row, (i + 1).min(len));
                    }
                },
            );
            matmul_view(&mut out[h * d..], qw, View::rows(p, t), vh, t, t, d, false, 1.0, false);
        }
    });
}

/// Backward of [`attention_forward`]: `dattn → (dq, dk, dv)` (overwritten).
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    dattn: &[f32],
    a: AttnDims,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, d) = (a.seq, a.d);
    let (qw, kw) = (a.q_width(), a.kv_width());
    let n_rep = a.heads / a.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    dq.par_chunks_mut(t * qw).zip(dk.par_chunks_mut(t * kw)).zip(dv.par_chunks_mut(t * kw)).enumerate().for_each(
        |(b, ((dqb, dkb), dvb))| {
            let rows = b * t;
            dkb.fill(0.0);
            dvb.fill(0.0);
            let mut ds = vec![0.0f32; t * t];
            for h in 0..a.heads {
                let g = h / n_rep;
                let p = &probs[(b * a.heads + h) * t * t..(b * a.heads + h + 1) * t * t];
                let doh = View::strided(&dattn[rows * qw + h * d..], qw);
                let qh = View::strided(&q[rows * qw + h * d..], qw);
                let kh = View::strided(&k[rows * kw + g * d..], kw);
                let vh = View::strided(&v[rows * kw + g * d..], kw);
                // dv += Pᵀ·dO
                matmul_view(&mut dvb[g * d..], kw, View::rows(p, t).t(), doh, t, t, d, true, 1.0, false);
                // dP = dO·vᵀ, then dS = P∘(dP − Σⱼ P∘dP)
                matmul_view(&mut ds, t, doh, vh.t(), t, d, t, false, 1.0, false);
                vectorised(
                    #[inline(always)]
                    || {
                        for (dsr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                            let dot = dot(dsr, pr);
                            dsr.iter_mut().zip(pr).for_each(|(x, &y)| *x = y * (*x - dot));
                        }
                    },
                );
                // dq = s·dS·k ; dk += s·dSᵀ·q
                matmul_view(&mut dqb[h * d..], qw, View::rows(&ds, t), kh, t, t, d, false, scale, false);
                matmul_view(&mut dkb[g * d..], kw, View::rows(&ds, t).t(), qh, t, t, d, true, scale, false);
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/// Index of each projection in [`SavedLayer::downs`].
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Per-head RMSNorm over `d` values (Qwen3's q/k norm), in place; returns the input and the
/// inverse RMS per (row, head).
fn head_norm_forward(x: &mut [f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let pre = copy_of(x);
    let inv = rms_norm_forward(&pre, w, eps, x);
    (pre, inv)
}

/// The forward pass; keeps the activations when `save`.
pub(crate) fn forward(p: &[f32], lay: &ParamLayout, plan: &BatchPlan, with_entropy: bool, save: bool) -> ForwardOut {
    let (bsz, t) = (plan.batch, plan.seq);
    let n = bsz * t;
    let (hdim, inter) = (lay.hidden, lay.intermediate);
    let a = AttnDims { seq: t, heads: lay.heads, kv_heads: lay.kv_heads, d: lay.head_dim };
    let (qw, kw) = (a.q_width(), a.kv_width());
    let (s, r) = (lay.lora_scale, lay.lora_rank);

    // embedding
    let embed = lay.embed.of(p);
    let mut x = take(n * hdim);
    x.chunks_exact_mut(hdim).zip(&plan.ids).for_each(|(row, &id)| {
        let id = id as usize;
        row.copy_from_slice(&embed[id * hdim..(id + 1) * hdim]);
    });

    let mut saved_layers = Vec::with_capacity(if save { lay.layers.len() } else { 0 });
    for l in &lay.layers {
        let mut n1 = take(n * hdim);
        let inv1 = rms_norm_forward(&x, l.input_norm.of(p), lay.eps, &mut n1);
        let (mut q, mut k, mut v) = (take(n * qw), take(n * kw), take(n * kw));
        let dq = proj_forward(p, &l.q, s, r, &n1, n, &mut q);
        let dk = proj_forward(p, &l.k, s, r, &n1, n, &mut k);
        let dv = proj_forward(p, &l.v, s, r, &n1, n, &mut v);
        let q_pre = l.q_norm.map(|w| head_norm_forward(&mut q, w.of(p), lay.eps));
        let k_pre = l.k_norm.map(|w| head_norm_forward(&mut k, w.of(p), lay.eps));
        rope_forward(&mut q, a.heads, a.d, t, &plan.cos, &plan.sin);
        rope_forward(&mut k, a.kv_heads, a.d, t, &plan.cos, &plan.sin);
        let mut attn = take(n * qw);
        let mut probs = take(bsz * a.heads * t * t);
        attention_forward(&q, &k, &v, &plan.valid, a, &mut attn, &mut probs);
        let mut x2 = copy_of(&x);
        let mut o = take(n * hdim);
        let d_o = proj_forward(p, &l.o, s, r, &attn, n, &mut o);
        x2.iter_mut().zip(&o).for_each(|(x, &o)| *x += o);
        give(o);

        let mut n2 = take(n * hdim);
        let inv2 = rms_norm_forward(&x2, l.post_norm.of(p), lay.eps, &mut n2);
        let (mut gate, mut up) = (take(n * inter), take(n * inter));
        let dg = proj_forward(p, &l.gate, s, r, &n2, n, &mut gate);
        let du = proj_forward(p, &l.up, s, r, &n2, n, &mut up);
        let mut act = take(n * inter);
        swiglu_forward(&gate, &up, &mut act);
        let mut y = copy_of(&x2);
        let mut mlp = take(n * hdim);
        let dd = proj_forward(p, &l.down, s, r, &act, n, &mut mlp);
        y.iter_mut().zip(&mlp).for_each(|(y, &m)| *y += m);
        give(mlp);

        let layer = SavedLayer {
            x,
            n1,
            inv1,
            q_pre,
            k_pre,
            q,
            k,
            v,
            probs,
            attn,
            x2,
            n2,
            inv2,
            gate,
            up,
            act,
            downs: [dq, dk, dv, d_o, dg, du, dd],
        };
        if save {
            saved_layers.push(layer);
        } else {
            layer.recycle();
        }
        x = y;
    }

    let mut nf = take(n * hdim);
    let invf = rms_norm_forward(&x, lay.norm.of(p), lay.eps, &mut nf);

    // head, in blocks of rows
    let vocab = lay.vocab;
    let mut lse = take(n);
    let mut logprobs = vec![0.0f32; bsz * (t - 1)];
    let mut entropy = with_entropy.then(|| vec![0.0f32; bsz * (t - 1)]);
    let mut logits = take(HEAD_BLOCK_ROWS.min(n) * vocab);
    let mut head_down = lay.lm_head.as_ref().and_then(|h| h.lora.map(|_| take(n * r)));
    for start in (0..n).step_by(HEAD_BLOCK_ROWS) {
        let rows = HEAD_BLOCK_ROWS.min(n - start);
        let nb = &nf[start * hdim..(start + rows) * hdim];
        let down = head_logits(p, lay, nb, rows, &mut logits[..rows * vocab]);
        if let (Some(all), Some(down)) = (head_down.as_mut(), down) {
            all[start * r..(start + rows) * r].copy_from_slice(&down);
        }
        let block = &logits[..rows * vocab];
        let lse_b = &mut lse[start..start + rows];
        lse_b.par_chunks_mut(rows_per_task(vocab)).zip(block.par_chunks(vocab * rows_per_task(vocab))).for_each(
            |(z, rows)| {
                vectorised(
                    #[inline(always)]
                    || z.iter_mut().zip(rows.chunks_exact(vocab)).for_each(|(z, row)| *z = log_sum_exp(row)),
                )
            },
        );
        for (i, row) in block.chunks_exact(vocab).enumerate() {
            let idx = start + i;
            let (b, tt) = (idx / t, idx % t);
            if tt + 1 == t {
                continue;
            }
            let target = plan.ids[idx + 1] as usize;
            let out = b * (t - 1) + tt;
            logprobs[out] = row[target] - lse_b[i];
            if let Some(e) = entropy.as_mut() {
                let z = lse_b[i];
                let mean: f32 = row.iter().map(|&l| exp_f32(l - z) * l).sum();
                e[out] = z - mean;
            }
        }
    }

    give(logits);
    let saved = Saved { layers: saved_layers, xf: x, nf, invf, lse, entropy: entropy.clone(), head_down };
    let saved = if save {
        Some(saved)
    } else {
        saved.recycle();
        None
    };
    ForwardOut { logprobs, entropy, saved }
}

/// `log Σ exp(row)` with the max subtracted.
#[inline(always)]
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = max_of(row);
    let mut lanes = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&l| exp_f32(l - max)).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(s, &l)| *s += exp_f32(l - max));
    }
    max + (lanes.iter().sum::<f32>() + tail).ln()
}

/// Logits `[rows, V]` of the final-norm rows `nb`; returns `nb·Aᵀ` for an adapted untied head.
fn head_logits(p: &[f32], lay: &ParamLayout, nb: &[f32], rows: usize, logits: &mut [f32]) -> Option<Vec<f32>> {
    let (hdim, vocab) = (lay.hidden, lay.vocab);
    match &lay.lm_head {
        Some(head) => proj_forward(p, head, lay.lora_scale, lay.lora_rank, nb, rows, logits),
        None => {
            // tied: nb·Eᵀ with E [V, H]
            matmul_view(
                logits,
                vocab,
                View::rows(nb, hdim),
                View::rows(lay.embed.of(p), hdim).t(),
                rows,
                hdim,
                vocab,
                false,
                1.0,
                true,
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// The gradient of `Σ dlogprobs·logprobs + Σ dentropy·entropy` with respect to every parameter,
/// in the layout of `p` (`dentropy` only when the forward computed the entropy).
///
/// With `log p = l − lse` and `H = −Σ p·log p` per row: `∂logp[target]/∂l = onehot − p` and
/// `∂H/∂l = −p·(log p + H)`.
pub(crate) fn backward(
    p: &[f32],
    lay: &ParamLayout,
    plan: &BatchPlan,
    saved: &Saved,
    dlogprobs: &[f32],
    dentropy: Option<&[f32]>,
) -> Vec<f32> {
    let (bsz, t) = (plan.batch, plan.seq);
    let n = bsz * t;
    let (hdim, inter, vocab) = (lay.hidden, lay.intermediate, lay.vocab);
    let a = AttnDims { seq: t, heads: lay.heads, kv_heads: lay.kv_heads, d: lay.head_dim };
    let (qw, kw) = (a.q_width(), a.kv_width());
    let (s, r) = (lay.lora_scale, lay.lora_rank);
    let mut g = vec![0.0f32; lay.total];

    // head: dlogits = g·(onehot − softmax), per block of rows
    let mut dnf = take_zeroed(n * hdim);
    let mut logits = take(HEAD_BLOCK_ROWS.min(n) * vocab);
    for start in (0..n).step_by(HEAD_BLOCK_ROWS) {
        let rows = HEAD_BLOCK_ROWS.min(n - start);
        // (row's gradient of its log-prob, of its entropy, its entropy)
        let weight = |i: usize| {
            let idx = start + i;
            let (b, tt) = (idx / t, idx % t);
            if tt + 1 == t {
                return (0.0, 0.0, 0.0);
            }
            let out = b * (t - 1) + tt;
            match (dentropy, saved.entropy.as_ref()) {
                (Some(de), Some(h)) => (dlogprobs[out], de[out], h[out]),
                _ => (dlogprobs[out], 0.0, 0.0),
            }
        };
        if (0..rows).all(|i| matches!(weight(i), (0.0, 0.0, _))) {
            continue;
        }
        let nb = &saved.nf[start * hdim..(start + rows) * hdim];
        head_logits(p, lay, nb, rows, &mut logits[..rows * vocab]);
        let block = &mut logits[..rows * vocab];
        let lse = &saved.lse[start..start + rows];
        block.par_chunks_mut(vocab).enumerate().for_each(|(i, row)| {
            let (w, we, h) = weight(i);
            let z = lse[i];
            vectorised(
                #[inline(always)]
                || {
                    if we == 0.0 {
                        row.iter_mut().for_each(|l| *l = -w * exp_f32(*l - z));
                    } else {
                        row.iter_mut().for_each(|l| {
                            let logp = *l - z;
                            let prob = exp_f32(logp);
                            *l = -w * prob - we * prob * (logp + h);
                        });
                    }
                },
            );
            let idx = start + i;
            if (idx % t) + 1 < t {
                row[plan.ids[idx + 1] as usize] += w;
            }
        });
        let dl = &logits[..rows * vocab];
        let dnb = &mut dnf[start * hdim..(start + rows) * hdim];
        match &lay.lm_head {
            Some(head) => {
                let down = saved.head_down.as_ref().map(|d| &d[start * r..(start + rows) * r]);
                proj_backward(p, &mut g, head, s, r, nb, down, dl, rows, dnb, false);
            }
            None => {
                let e = lay.embed;
                // dE [V, H] += dlogitsᵀ·nb ; dnb = dlogits·E
                matmul_view(
                    e.of_mut(&mut g),
                    hdim,
                    View::rows(dl, vocab).t(),
                    View::rows(nb, hdim),
                    vocab,
                    rows,
                    hdim,
                    true,
                    1.0,
                    true,
                );
                matmul_view(
                    dnb,
                    hdim,
                    View::rows(dl, vocab),
                    View::rows(e.of(p), hdim),
                    rows,
                    vocab,
                    hdim,
                    false,
                    1.0,
                    true,
                );
            }
        }
    }

    // final norm
    let mut dx = take(n * hdim);
    rms_norm_backward(&saved.xf, &saved.invf, lay.norm.of(p), &dnf, &mut dx, false, lay.norm.of_mut(&mut g));
    give(dnf);
    give(logits);

    let (mut dn, mut dact) = (take(n * hdim), take(n * inter));
    let (mut dgate, mut dup) = (take(n * inter), take(n * inter));
    let (mut dattn, mut dq, mut dk, mut dv) = (take(n * qw), take(n * qw), take(n * kw), take(n * kw));
    for (l, sl) in lay.layers.iter().zip(&saved.layers).rev() {
        let down = |i: usize| sl.downs[i].as_deref();
        // MLP: y = x2 + act·Wd ; dx holds dy, which is also the residual's dx2
        proj_backward(p, &mut g, &l.down, s, r, &sl.act, down(DOWN), &dx, n, &mut dact, false);
        swiglu_backward(&sl.gate, &sl.up, &dact, &mut dgate, &mut dup);
        proj_backward(p, &mut g, &l.gate, s, r, &sl.n2, down(GATE), &dgate, n, &mut dn, false);
        proj_backward(p, &mut g, &l.up, s, r, &sl.n2, down(UP), &dup, n, &mut dn, true);
        rms_norm_backward(&sl.x2, &sl.inv2, l.post_norm.of(p), &dn, &mut dx, true, l.post_norm.of_mut(&mut g));

        // attention: x2 = x + attn·Wo ; dx holds dx2
        proj_backward(p, &mut g, &l.o, s, r, &sl.attn, down(O), &dx, n, &mut dattn, false);
        attention_backward(&sl.q, &sl.k, &sl.v, &sl.probs, &dattn, a, &mut dq, &mut dk, &mut dv);
        rope_backward(&mut dq, a.heads, a.d, t, &plan.cos, &plan.sin);
        rope_backward(&mut dk, a.kv_heads, a.d, t, &plan.cos, &plan.sin);
        if let (Some(w), Some((pre, inv))) = (l.q_norm, sl.q_pre.as_ref()) {
            let dy = copy_of(&dq);
            rms_norm_backward(pre, inv, w.of(p), &dy, &mut dq, false, w.of_mut(&mut g));
            give(dy);
        }
        if let (Some(w), Some((pre, inv))) = (l.k_norm, sl.k_pre.as_ref()) {
            let dy = copy_of(&dk);
            rms_norm_backward(pre, inv, w.of(p), &dy, &mut dk, false, w.of_mut(&mut g));
            give(dy);
        }
        proj_backward(p, &mut g, &l.q, s, r, &sl.n1, down(Q), &dq, n, &mut dn, false);
        proj_backward(p, &mut g, &l.k, s, r, &sl.n1, down(K), &dk, n, &mut dn, true);
        proj_backward(p, &mut g, &l.v, s, r, &sl.n1, down(V), &dv, n, &mut dn, true);
        rms_norm_backward(&sl.x, &sl.inv1, l.input_norm.of(p), &dn, &mut dx, true, l.input_norm.of_mut(&mut g));
    }

    for b in [dn, dact, dgate, dup, dattn, dq, dk, dv] {
        give(b);
    }
    // embedding: scatter-add the rows' gradients (serial, a fixed order)
    let de = lay.embed.of_mut(&mut g);
    for (row, &id) in dx.chunks_exact(hdim).zip(&plan.ids) {
        let id = id as usize;
        de[id * hdim..(id + 1) * hdim].iter_mut().zip(row).for_each(|(e, &d)| *e += d);
    }
    g
}
