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
//! The row arithmetic and its derivatives (RMSNorm, rotary, softmax, SwiGLU, projections,
//! log-partitions) are the crate's CPU row kernels (`crate::kernels::rows`), shared with the
//! host decoding engine; this module lays the work out over whole sequences, keeps the
//! activations and composes the backward.
//!
//! Determinism: every product runs on [`matmul_view`] (fixed summation order whatever the thread
//! count); row-parallel loops write disjoint rows; sums over rows (norm scales, biases, the
//! embedding's scatter) run in a fixed serial order.

use super::pool::{copy_of, give, take, take_zeroed};
use crate::kernels::math::exp_f32;
use crate::kernels::matmul::{View, matmul_view, vectorised};
use crate::kernels::rows;
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

impl ProjSlots {
    /// The range of the flat vector this projection's tensors occupy: they are consecutive,
    /// weight first, then bias, `A`, `B` (the order `fused::flatten` pushes them in).
    fn range(&self) -> (usize, usize) {
        let last = self.lora.map(|(_, b)| b).or(self.bias).unwrap_or(self.weight);
        (self.weight.offset, last.offset + last.len)
    }
}

/// Rows per group: consecutive whole sequences, about this many rows together.
const GROUP_ROWS: usize = 256;

/// The batch's sequences in groups of consecutive sequences. Every row-wise computation of a
/// group (norms, projections of its rows, rotary, attention, SwiGLU, and their backward) runs
/// as one task on one thread, on buffers that fit the cache; the groups run in parallel. The
/// grouping depends only on the batch's shape, never on the thread count.
#[derive(Clone, Copy, Debug)]
struct Groups {
    /// Sequences per group (the last group may have fewer).
    seqs: usize,
    count: usize,
    batch: usize,
    seq: usize,
}

impl Groups {
    fn new(batch: usize, seq: usize) -> Self {
        let seqs = (GROUP_ROWS / seq.max(1)).clamp(1, batch.max(1));
        Self { seqs, count: batch.div_ceil(seqs), batch, seq }
    }

    /// `(first row, rows)` of group `g`.
    fn rows(&self, g: usize) -> (usize, usize) {
        let first = g * self.seqs;
        let n = self.seqs.min(self.batch - first);
        (first * self.seq, n * self.seq)
    }

    /// Whether the products inside a group should fork too: when there are fewer groups than
    /// threads (small batches), a group's products are the only work to share.
    fn inner_parallel(&self) -> bool {
        self.count < rayon::current_num_threads()
    }
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

/// Activations of one layer, for one group's rows, kept for the backward pass.
#[derive(Debug)]
struct SavedLayer {
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
    /// `[sequences, Hq, T, T]`.
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

/// One group's activations.
#[derive(Debug)]
struct SavedGroup {
    layers: Vec<SavedLayer>,
    /// Final norm input, output and inverse RMS.
    xf: Vec<f32>,
    nf: Vec<f32>,
    invf: Vec<f32>,
}

/// Everything the backward pass needs.
#[derive(Debug)]
pub(crate) struct Saved {
    groups: Vec<SavedGroup>,
    /// `[N]`: log-partition of each row's logits.
    lse: Vec<f32>,
    /// `[B·(T−1)]`: the entropies, when computed.
    entropy: Option<Vec<f32>>,
    /// `[N, r]`: `nf·Aᵀ` of an adapted untied head.
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

impl SavedGroup {
    fn recycle(self) {
        let Self { layers, xf, nf, invf } = self;
        layers.into_iter().for_each(SavedLayer::recycle);
        for b in [xf, nf, invf] {
            give(b);
        }
    }
}

impl Saved {
    /// Returns every buffer to the pool (after the backward pass).
    pub(crate) fn recycle(self) {
        let Self { groups, lse, entropy, head_down } = self;
        groups.into_iter().for_each(SavedGroup::recycle);
        give(lse);
        entropy.into_iter().chain(head_down).for_each(give);
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks (sequential: a group runs on one thread)
// ---------------------------------------------------------------------------------------------

/// [`rows::rms_norm`] of every row; returns each row's inverse RMS (a pooled buffer).
fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Vec<f32> {
    let mut inv = take(x.len() / w.len());
    vectorised(
        #[inline(always)]
        || rows::rms_norm(x, w, eps, out, Some(&mut inv)),
    );
    inv
}

/// [`rows::rms_norm_dx`], vectorised.
fn rms_norm_dx(x: &[f32], inv: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    vectorised(
        #[inline(always)]
        || rows::rms_norm_dx(x, inv, w, dy, dx, accumulate),
    );
}

/// [`rows::rms_norm_dw`], vectorised.
fn rms_norm_dw(x: &[f32], inv: &[f32], dy: &[f32], dw: &mut [f32]) {
    vectorised(
        #[inline(always)]
        || rows::rms_norm_dw(x, inv, dy, dw),
    );
}

/// `y [n, out] = x·W + b + s·(x·Aᵀ)·Bᵀ`; returns `x·Aᵀ` when adapted.
#[allow(clippy::too_many_arguments)]
fn proj_forward(
    p: &[f32],
    slots: &ProjSlots,
    scale: f32,
    rank: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    par: bool,
) -> Option<Vec<f32>> {
    let (inp, out) = (slots.inp, slots.out);
    rows::affine(y, x, slots.weight.of(p), slots.bias.map(|b| b.of(p)), n, inp, out, false, par);
    slots.lora.map(|(a, bm)| {
        let mut down = take(n * rank);
        matmul_view(&mut down, rank, View::rows(x, inp), View::rows(a.of(p), inp).t(), n, inp, rank, false, 1.0, par);
        matmul_view(y, out, View::rows(&down, rank), View::rows(bm.of(p), rank).t(), n, rank, out, true, scale, par);
        down
    })
}

/// The input gradient of [`proj_forward`]: `dx (+)= dy·Wᵀ (+ ddown·A)` with `ddown = s·dy·B`,
/// which is returned (for `A`'s gradient) when adapted.
#[allow(clippy::too_many_arguments)]
fn proj_dx(
    p: &[f32],
    slots: &ProjSlots,
    scale: f32,
    rank: usize,
    dy: &[f32],
    n: usize,
    dx: &mut [f32],
    accumulate: bool,
    par: bool,
) -> Option<Vec<f32>> {
    let (inp, out) = (slots.inp, slots.out);
    let w = View::rows(slots.weight.of(p), out).t();
    matmul_view(dx, inp, View::rows(dy, out), w, n, out, inp, accumulate, 1.0, par);
    slots.lora.map(|(a, bm)| {
        let mut ddown = take(n * rank);
        matmul_view(&mut ddown, rank, View::rows(dy, out), View::rows(bm.of(p), rank), n, out, rank, false, scale, par);
        matmul_view(dx, inp, View::rows(&ddown, rank), View::rows(a.of(p), inp), n, rank, inp, true, 1.0, par);
        ddown
    })
}

/// One group's part of a projection's parameter gradients: its input rows, output gradient,
/// and (when adapted) `x·Aᵀ` and `s·dy·B`.
struct ProjRows<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    down: Option<&'a [f32]>,
    ddown: Option<&'a [f32]>,
    n: usize,
}

/// The parameter gradients of [`proj_forward`], summed over the groups in order, into `g`
/// (this projection's part of the gradient vector, which starts at offset `base`):
/// `dW += xᵀ·dy`, `db += Σ dy`, `dB += s·dyᵀ·down`, `dA += ddownᵀ·x`.
fn proj_dw(slots: &ProjSlots, scale: f32, rank: usize, parts: &[ProjRows<'_>], g: &mut [f32], base: usize) {
    let (inp, out) = (slots.inp, slots.out);
    let at = |s: Slot| (s.offset - base)..(s.offset - base + s.len);
    for r in parts {
        let n = r.n;
        matmul_view(
            &mut g[at(slots.weight)],
            out,
            View::rows(r.x, inp).t(),
            View::rows(r.dy, out),
            inp,
            n,
            out,
            true,
            1.0,
            true,
        );
        if let Some(b) = slots.bias {
            let db = &mut g[at(b)];
            vectorised(
                #[inline(always)]
                || rows::add_column_sums(r.dy, db),
            );
        }
        if let (Some((a, bm)), Some(down), Some(ddown)) = (slots.lora, r.down, r.ddown) {
            let db = View::rows(r.dy, out).t();
            matmul_view(&mut g[at(bm)], rank, db, View::rows(down, rank), out, n, rank, true, scale, true);
            let da = View::rows(ddown, rank).t();
            matmul_view(&mut g[at(a)], inp, da, View::rows(r.x, inp), rank, n, inp, true, 1.0, true);
        }
    }
}

/// Disjoint mutable parts of `g` for the sorted, disjoint `(start, end)` ranges.
fn split_ranges<'a>(mut g: &'a mut [f32], ranges: &[(usize, usize)]) -> Vec<&'a mut [f32]> {
    let mut base = 0;
    let mut out = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        let rest = std::mem::take(&mut g);
        let (_, rest) = rest.split_at_mut(start - base);
        let (mine, rest) = rest.split_at_mut(end - start);
        out.push(mine);
        g = rest;
        base = end;
    }
    out
}

/// [`rows::rope`] (at scale 1) for every head of every row of `x [n, heads·d]` (rows are whole
/// sequences: row `i` is at position `i mod T`).
fn rope_forward(x: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    for (row, xr) in x.chunks_exact_mut(heads * d).enumerate() {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        xr.chunks_exact_mut(d).for_each(|head| rows::rope(head, c, s, 1.0));
    }
}

/// Backward of [`rope_forward`], in place on the gradient.
fn rope_backward(dx: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    for (row, xr) in dx.chunks_exact_mut(heads * d).enumerate() {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        xr.chunks_exact_mut(d).for_each(|head| rows::rope_backward(head, c, s));
    }
}

/// Softmax over the first `visible` scores of a row, zeros after them. Rows are right-padded,
/// so the keys a query may attend (`j ≤ i`, `j` a real token) are a prefix of the row (never
/// empty: key 0 is always a real token).
#[inline(always)]
fn softmax_prefix(row: &mut [f32], visible: usize) {
    let (head, tail) = row.split_at_mut(visible);
    rows::softmax_in_place(head);
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

/// Causal grouped-query attention of a group's sequences: `attn [n, Hq·d]`,
/// `probs [sequences, Hq, T, T]`; `valid [n]` marks real tokens.
#[allow(clippy::too_many_arguments)]
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
    for (b, (out, pb)) in attn.chunks_exact_mut(t * qw).zip(probs.chunks_exact_mut(a.heads * t * t)).enumerate() {
        let rows = b * t;
        // real tokens come first: the sequence's length
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
    }
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
    dk.fill(0.0);
    dv.fill(0.0);
    let mut ds = take(t * t);
    let chunks = dq.chunks_exact_mut(t * qw).zip(dk.chunks_exact_mut(t * kw)).zip(dv.chunks_exact_mut(t * kw));
    for (b, ((dqb, dkb), dvb)) in chunks.enumerate() {
        let rows = b * t;
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
                || ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).for_each(|(dsr, pr)| rows::softmax_backward(pr, dsr)),
            );
            // dq = s·dS·k ; dk += s·dSᵀ·q
            matmul_view(&mut dqb[h * d..], qw, View::rows(&ds, t), kh, t, t, d, false, scale, false);
            matmul_view(&mut dkb[g * d..], kw, View::rows(&ds, t).t(), qh, t, t, d, true, scale, false);
        }
    }
    give(ds);
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

/// Embedding, every layer and the final norm for the rows `[first, first + n)` of one group.
fn group_forward(
    p: &[f32],
    lay: &ParamLayout,
    plan: &BatchPlan,
    (first, n): (usize, usize),
    par: bool,
    save: bool,
) -> SavedGroup {
    let t = plan.seq;
    let (hdim, inter) = (lay.hidden, lay.intermediate);
    let a = AttnDims { seq: t, heads: lay.heads, kv_heads: lay.kv_heads, d: lay.head_dim };
    let (qw, kw) = (a.q_width(), a.kv_width());
    let (s, r) = (lay.lora_scale, lay.lora_rank);
    let valid = &plan.valid[first..first + n];

    let mut x = take(n * hdim);
    rows::embed_rows(lay.embed.of(p), hdim, &plan.ids[first..first + n], &mut x);

    let mut layers = Vec::with_capacity(if save { lay.layers.len() } else { 0 });
    for l in &lay.layers {
        let mut n1 = take(n * hdim);
        let inv1 = rms_norm_forward(&x, l.input_norm.of(p), lay.eps, &mut n1);
        let (mut q, mut k, mut v) = (take(n * qw), take(n * kw), take(n * kw));
        let dq = proj_forward(p, &l.q, s, r, &n1, n, &mut q, par);
        let dk = proj_forward(p, &l.k, s, r, &n1, n, &mut k, par);
        let dv = proj_forward(p, &l.v, s, r, &n1, n, &mut v, par);
        let q_pre = l.q_norm.map(|w| head_norm_forward(&mut q, w.of(p), lay.eps));
        let k_pre = l.k_norm.map(|w| head_norm_forward(&mut k, w.of(p), lay.eps));
        rope_forward(&mut q, a.heads, a.d, t, &plan.cos, &plan.sin);
        rope_forward(&mut k, a.kv_heads, a.d, t, &plan.cos, &plan.sin);
        let mut attn = take(n * qw);
        let mut probs = take(n / t * a.heads * t * t);
        attention_forward(&q, &k, &v, valid, a, &mut attn, &mut probs);
        let mut x2 = copy_of(&x);
        let mut o = take(n * hdim);
        let d_o = proj_forward(p, &l.o, s, r, &attn, n, &mut o, par);
        x2.iter_mut().zip(&o).for_each(|(x, &o)| *x += o);
        give(o);

        let mut n2 = take(n * hdim);
        let inv2 = rms_norm_forward(&x2, l.post_norm.of(p), lay.eps, &mut n2);
        let (mut gate, mut up) = (take(n * inter), take(n * inter));
        let dg = proj_forward(p, &l.gate, s, r, &n2, n, &mut gate, par);
        let du = proj_forward(p, &l.up, s, r, &n2, n, &mut up, par);
        let mut act = take(n * inter);
        vectorised(
            #[inline(always)]
            || rows::swiglu(&gate, &up, &mut act),
        );
        let mut y = copy_of(&x2);
        let mut mlp = take(n * hdim);
        let dd = proj_forward(p, &l.down, s, r, &act, n, &mut mlp, par);
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
            layers.push(layer);
        } else {
            layer.recycle();
        }
        x = y;
    }
    let mut nf = take(n * hdim);
    let invf = rms_norm_forward(&x, lay.norm.of(p), lay.eps, &mut nf);
    SavedGroup { layers, xf: x, nf, invf }
}

/// The forward pass; keeps the activations when `save`.
pub(crate) fn forward(p: &[f32], lay: &ParamLayout, plan: &BatchPlan, with_entropy: bool, save: bool) -> ForwardOut {
    let (bsz, t) = (plan.batch, plan.seq);
    let n = bsz * t;
    let (hdim, vocab, r) = (lay.hidden, lay.vocab, lay.lora_rank);
    let grp = Groups::new(bsz, t);
    let par = grp.inner_parallel();
    let groups: Vec<SavedGroup> =
        (0..grp.count).into_par_iter().map(|g| group_forward(p, lay, plan, grp.rows(g), par, save)).collect();

    // head, in blocks of rows
    let mut lse = take(n);
    let mut logprobs = vec![0.0f32; bsz * (t - 1)];
    let mut entropy = with_entropy.then(|| take(bsz * (t - 1)));
    let mut logits = take(HEAD_BLOCK_ROWS.min(n) * vocab);
    let mut head_down = lay.lm_head.as_ref().and_then(|h| h.lora.map(|_| take(n * r)));
    for (g, sg) in groups.iter().enumerate() {
        let (first, rows_g) = grp.rows(g);
        for off in (0..rows_g).step_by(HEAD_BLOCK_ROWS) {
            let rows = HEAD_BLOCK_ROWS.min(rows_g - off);
            let start = first + off;
            let nb = &sg.nf[off * hdim..(off + rows) * hdim];
            let down = head_logits(p, lay, nb, rows, &mut logits[..rows * vocab]);
            if let (Some(all), Some(down)) = (head_down.as_mut(), down) {
                all[start * r..(start + rows) * r].copy_from_slice(&down);
                give(down);
            }
            let block = &logits[..rows * vocab];
            let lse_b = &mut lse[start..start + rows];
            let per_task = (16_384 / vocab).max(1);
            lse_b.par_chunks_mut(per_task).zip(block.par_chunks(vocab * per_task)).for_each(|(z, chunk)| {
                vectorised(
                    #[inline(always)]
                    || z.iter_mut().zip(chunk.chunks_exact(vocab)).for_each(|(z, row)| *z = rows::log_sum_exp(row)),
                )
            });
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
    }
    give(logits);
    let saved = if save {
        Some(Saved { groups, lse, entropy: entropy.as_deref().map(copy_of), head_down })
    } else {
        groups.into_iter().for_each(SavedGroup::recycle);
        give(lse);
        head_down.into_iter().for_each(give);
        None
    };
    ForwardOut { logprobs, entropy, saved }
}

/// Logits `[rows, V]` of the final-norm rows `nb`; returns `nb·Aᵀ` for an adapted untied head.
fn head_logits(p: &[f32], lay: &ParamLayout, nb: &[f32], rows: usize, logits: &mut [f32]) -> Option<Vec<f32>> {
    let (hdim, vocab) = (lay.hidden, lay.vocab);
    match &lay.lm_head {
        Some(head) => proj_forward(p, head, lay.lora_scale, lay.lora_rank, nb, rows, logits, true),
        None => {
            // tied: nb·Eᵀ with E [V, H]
            let e = View::rows(lay.embed.of(p), hdim).t();
            matmul_view(logits, vocab, View::rows(nb, hdim), e, rows, hdim, vocab, false, 1.0, true);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// One group's gradients through one layer (rows of the group).
struct LayerGrads {
    /// The layer output's gradient (`dy`), and the pieces the parameter gradients need.
    dy: Vec<f32>,
    dgate: Vec<f32>,
    dup: Vec<f32>,
    dn2: Vec<f32>,
    dx2: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// The q/k gradients after the rotary backward, before the q/k norms' (their scales'
    /// gradients need them).
    dq_normed: Option<Vec<f32>>,
    dk_normed: Option<Vec<f32>>,
    dn1: Vec<f32>,
    ddowns: [Option<Vec<f32>>; 7],
    /// The layer input's gradient.
    dx: Vec<f32>,
}

impl LayerGrads {
    fn recycle(self) -> Vec<f32> {
        let Self { dy, dgate, dup, dn2, dx2, dq, dk, dv, dq_normed, dk_normed, dn1, ddowns, dx } = self;
        for b in [dy, dgate, dup, dn2, dx2, dq, dk, dv, dn1] {
            give(b);
        }
        dq_normed.into_iter().chain(dk_normed).chain(ddowns.into_iter().flatten()).for_each(give);
        dx
    }
}

/// The row-wise part of one layer's backward for one group: from the output gradient `dy` to
/// the input gradient, keeping what the parameter gradients need.
fn group_layer_backward(
    p: &[f32],
    lay: &ParamLayout,
    l: &LayerSlots,
    sl: &SavedLayer,
    plan: &BatchPlan,
    dy: Vec<f32>,
    par: bool,
) -> LayerGrads {
    let t = plan.seq;
    let n = sl.x.len() / lay.hidden;
    let (hdim, inter) = (lay.hidden, lay.intermediate);
    let a = AttnDims { seq: t, heads: lay.heads, kv_heads: lay.kv_heads, d: lay.head_dim };
    let (qw, kw) = (a.q_width(), a.kv_width());
    let (s, r) = (lay.lora_scale, lay.lora_rank);

    // MLP: y = x2 + act·Wd
    let mut dact = take(n * inter);
    let dd_down = proj_dx(p, &l.down, s, r, &dy, n, &mut dact, false, par);
    let (mut dgate, mut dup) = (take(n * inter), take(n * inter));
    vectorised(
        #[inline(always)]
        || rows::swiglu_backward(&sl.gate, &sl.up, &dact, &mut dgate, &mut dup),
    );
    give(dact);
    let mut dn2 = take(n * hdim);
    let dd_gate = proj_dx(p, &l.gate, s, r, &dgate, n, &mut dn2, false, par);
    let dd_up = proj_dx(p, &l.up, s, r, &dup, n, &mut dn2, true, par);
    let mut dx2 = copy_of(&dy);
    rms_norm_dx(&sl.x2, &sl.inv2, l.post_norm.of(p), &dn2, &mut dx2, true);

    // attention: x2 = x + attn·Wo
    let mut dattn = take(n * qw);
    let dd_o = proj_dx(p, &l.o, s, r, &dx2, n, &mut dattn, false, par);
    let (mut dq, mut dk, mut dv) = (take(n * qw), take(n * kw), take(n * kw));
    attention_backward(&sl.q, &sl.k, &sl.v, &sl.probs, &dattn, a, &mut dq, &mut dk, &mut dv);
    give(dattn);
    rope_backward(&mut dq, a.heads, a.d, t, &plan.cos, &plan.sin);
    rope_backward(&mut dk, a.kv_heads, a.d, t, &plan.cos, &plan.sin);
    let mut dq_normed = None;
    if let (Some(w), Some((pre, inv))) = (l.q_norm, sl.q_pre.as_ref()) {
        let dy = copy_of(&dq);
        rms_norm_dx(pre, inv, w.of(p), &dy, &mut dq, false);
        dq_normed = Some(dy);
    }
    let mut dk_normed = None;
    if let (Some(w), Some((pre, inv))) = (l.k_norm, sl.k_pre.as_ref()) {
        let dy = copy_of(&dk);
        rms_norm_dx(pre, inv, w.of(p), &dy, &mut dk, false);
        dk_normed = Some(dy);
    }
    let mut dn1 = take(n * hdim);
    let dd_q = proj_dx(p, &l.q, s, r, &dq, n, &mut dn1, false, par);
    let dd_k = proj_dx(p, &l.k, s, r, &dk, n, &mut dn1, true, par);
    let dd_v = proj_dx(p, &l.v, s, r, &dv, n, &mut dn1, true, par);
    let mut dx = copy_of(&dx2);
    rms_norm_dx(&sl.x, &sl.inv1, l.input_norm.of(p), &dn1, &mut dx, true);
    LayerGrads {
        dy,
        dgate,
        dup,
        dn2,
        dx2,
        dq,
        dk,
        dv,
        dq_normed,
        dk_normed,
        dn1,
        ddowns: [dd_q, dd_k, dd_v, dd_o, dd_gate, dd_up, dd_down],
        dx,
    }
}

/// One layer's parameter gradients from every group's saved activations and gradients,
/// summed over the groups in order: the seven projections in parallel, then the norms' scales.
fn layer_param_grads(
    lay: &ParamLayout,
    l: &LayerSlots,
    layer: usize,
    saved: &Saved,
    grads: &[LayerGrads],
    g: &mut [f32],
) {
    let (s, r) = (lay.lora_scale, lay.lora_rank);
    let hdim = lay.hidden;
    let projs: [(&ProjSlots, usize); 7] =
        [(&l.q, Q), (&l.k, K), (&l.v, V), (&l.o, O), (&l.gate, GATE), (&l.up, UP), (&l.down, DOWN)];
    let mut order: Vec<usize> = (0..7).collect();
    order.sort_by_key(|&i| projs[i].0.range().0);
    let ranges: Vec<(usize, usize)> = order.iter().map(|&i| projs[i].0.range()).collect();
    let parts = split_ranges(g, &ranges);
    parts.into_par_iter().zip(order.par_iter()).for_each(|(gs, &i)| {
        let (slots, which) = projs[i];
        let rows: Vec<ProjRows<'_>> = saved
            .groups
            .iter()
            .zip(grads)
            .map(|(sg, gr)| {
                let sl = &sg.layers[layer];
                let (x, dy): (&[f32], &[f32]) = match which {
                    Q => (&sl.n1, &gr.dq),
                    K => (&sl.n1, &gr.dk),
                    V => (&sl.n1, &gr.dv),
                    O => (&sl.attn, &gr.dx2),
                    GATE => (&sl.n2, &gr.dgate),
                    UP => (&sl.n2, &gr.dup),
                    _ => (&sl.act, &gr.dy),
                };
                ProjRows {
                    x,
                    dy,
                    down: sl.downs[which].as_deref(),
                    ddown: gr.ddowns[which].as_deref(),
                    n: sl.x.len() / hdim,
                }
            })
            .collect();
        proj_dw(slots, s, r, &rows, gs, slots.range().0);
    });
    // the norms' scales, serially (a fixed order)
    for (sg, gr) in saved.groups.iter().zip(grads) {
        let sl = &sg.layers[layer];
        rms_norm_dw(&sl.x, &sl.inv1, &gr.dn1, l.input_norm.of_mut(g));
        rms_norm_dw(&sl.x2, &sl.inv2, &gr.dn2, l.post_norm.of_mut(g));
        if let (Some(w), Some((pre, inv)), Some(dy)) = (l.q_norm, sl.q_pre.as_ref(), gr.dq_normed.as_ref()) {
            rms_norm_dw(pre, inv, dy, w.of_mut(g));
        }
        if let (Some(w), Some((pre, inv)), Some(dy)) = (l.k_norm, sl.k_pre.as_ref(), gr.dk_normed.as_ref()) {
            rms_norm_dw(pre, inv, dy, w.of_mut(g));
        }
    }
}

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
    let (hdim, vocab) = (lay.hidden, lay.vocab);
    let (s, r) = (lay.lora_scale, lay.lora_rank);
    let grp = Groups::new(bsz, t);
    let par = grp.inner_parallel();
    let mut g = vec![0.0f32; lay.total];

    // head: dlogits = g·(onehot − softmax), per block of rows; the final norm's gradient per group
    let mut logits = take(HEAD_BLOCK_ROWS.min(n) * vocab);
    let mut dnfs: Vec<Vec<f32>> = Vec::with_capacity(grp.count);
    for (gi, sg) in saved.groups.iter().enumerate() {
        let (first, rows_g) = grp.rows(gi);
        let mut dnf = take_zeroed(rows_g * hdim);
        for off in (0..rows_g).step_by(HEAD_BLOCK_ROWS) {
            let rows = HEAD_BLOCK_ROWS.min(rows_g - off);
            let start = first + off;
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
            let nb = &sg.nf[off * hdim..(off + rows) * hdim];
            if let Some(down) = head_logits(p, lay, nb, rows, &mut logits[..rows * vocab]) {
                give(down);
            }
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
            let dnb = &mut dnf[off * hdim..(off + rows) * hdim];
            match &lay.lm_head {
                Some(head) => {
                    let down = saved.head_down.as_ref().map(|d| &d[start * r..(start + rows) * r]);
                    let ddown = proj_dx(p, head, s, r, dl, rows, dnb, false, true);
                    let (a, b) = head.range();
                    let part = ProjRows { x: nb, dy: dl, down, ddown: ddown.as_deref(), n: rows };
                    proj_dw(head, s, r, &[part], &mut g[a..b], a);
                    ddown.into_iter().for_each(give);
                }
                None => {
                    let e = lay.embed;
                    // dE [V, H] += dlogitsᵀ·nb ; dnb = dlogits·E
                    let dlt = View::rows(dl, vocab).t();
                    matmul_view(e.of_mut(&mut g), hdim, dlt, View::rows(nb, hdim), vocab, rows, hdim, true, 1.0, true);
                    let ev = View::rows(e.of(p), hdim);
                    matmul_view(dnb, hdim, View::rows(dl, vocab), ev, rows, vocab, hdim, false, 1.0, true);
                }
            }
        }
        dnfs.push(dnf);
    }
    give(logits);

    // final norm: row-wise per group, the scale serially
    let mut dys: Vec<Vec<f32>> = saved
        .groups
        .par_iter()
        .zip(&dnfs)
        .map(|(sg, dnf)| {
            let mut dx = take(sg.xf.len());
            rms_norm_dx(&sg.xf, &sg.invf, lay.norm.of(p), dnf, &mut dx, false);
            dx
        })
        .collect();
    for (sg, dnf) in saved.groups.iter().zip(&dnfs) {
        rms_norm_dw(&sg.xf, &sg.invf, dnf, lay.norm.of_mut(&mut g));
    }
    dnfs.into_iter().for_each(give);

    for (li, l) in lay.layers.iter().enumerate().rev() {
        let grads: Vec<LayerGrads> = saved
            .groups
            .par_iter()
            .zip(dys)
            .map(|(sg, dy)| group_layer_backward(p, lay, l, &sg.layers[li], plan, dy, par))
            .collect();
        layer_param_grads(lay, l, li, saved, &grads, &mut g);
        dys = grads.into_iter().map(LayerGrads::recycle).collect();
    }

    // embedding: scatter-add the rows' gradients (serial, a fixed order)
    let de = lay.embed.of_mut(&mut g);
    for (gi, dx) in dys.into_iter().enumerate() {
        let (first, rows_g) = grp.rows(gi);
        for (row, &id) in dx.chunks_exact(hdim).zip(&plan.ids[first..first + rows_g]) {
            let id = id as usize;
            de[id * hdim..(id + 1) * hdim].iter_mut().zip(row).for_each(|(e, &d)| *e += d);
        }
        give(dx);
    }
    g
}
