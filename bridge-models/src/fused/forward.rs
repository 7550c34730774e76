//! The fused engine's forward pass over host `f32` buffers, keeping what the backward pass
//! ([`super::backward`]) needs.
//!
//! The activations are row-major `[N, width]` with `N = B·T` token rows (row `b·T + t`), so that
//! a head's queries are a strided block of the `[N, Hq·d]` buffer and no transpose is ever
//! copied: the matrix products read strided [`View`]s. Per layer:
//!
//! ```text
//! n1 = rms(x)·g1
//! q,k,v = n1·W{q,k,v} (+b) (+s·(n1·Aᵀ)·Bᵀ)
//! q,k = rope(qk_norm(q,k))
//! P = softmax(q·kᵀ/√d + mask); attn = P·v
//! x2 = x + attn·Wo
//! n2 = rms(x2)·g2
//! y = x2 + (silu(n2·Wg)∘(n2·Wu))·Wd
//! ```
//!
//! The head is computed in blocks of rows (logits `[rows, V]` are never kept whole): the forward
//! keeps each row's log-partition, from which the backward recomputes the block's softmax.
//!
//! The row arithmetic (RMSNorm, rotary, softmax, SwiGLU, projections, log-partitions) is the
//! crate's CPU row kernels (`crate::kernels::rows`), shared with the host decoding engine; this
//! module lays the work out over whole sequences and groups of them ([`Groups`]).

use super::layout::{AttnDims, BatchPlan, Groups, HEAD_BLOCK_ROWS, ParamLayout, ProjSlots};
use super::pool::{copy_of, give, take};
use crate::kernels::matmul::{View, matmul_view, vectorised};
use crate::kernels::rows;
use rayon::prelude::*;

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
pub(super) struct SavedLayer {
    pub(super) x: Vec<f32>,
    pub(super) n1: Vec<f32>,
    pub(super) inv1: Vec<f32>,
    /// Queries and keys before their per-head norm (Qwen3), and the norms' inverse RMS.
    pub(super) q_pre: Option<(Vec<f32>, Vec<f32>)>,
    pub(super) k_pre: Option<(Vec<f32>, Vec<f32>)>,
    /// After the norm and the rotary embedding.
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    /// `[sequences, Hq, T, T]`.
    pub(super) probs: Vec<f32>,
    pub(super) attn: Vec<f32>,
    pub(super) x2: Vec<f32>,
    pub(super) n2: Vec<f32>,
    pub(super) inv2: Vec<f32>,
    pub(super) gate: Vec<f32>,
    pub(super) up: Vec<f32>,
    pub(super) act: Vec<f32>,
    /// `x·Aᵀ` of each adapted projection (q, k, v, o, gate, up, down).
    pub(super) downs: [Option<Vec<f32>>; 7],
}

/// One group's activations.
#[derive(Debug)]
pub(super) struct SavedGroup {
    pub(super) layers: Vec<SavedLayer>,
    /// Final norm input, output and inverse RMS.
    pub(super) xf: Vec<f32>,
    pub(super) nf: Vec<f32>,
    pub(super) invf: Vec<f32>,
}

/// Everything the backward pass needs.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(super) groups: Vec<SavedGroup>,
    /// `[N]`: log-partition of each row's logits.
    pub(super) lse: Vec<f32>,
    /// `[B·(T−1)]`: the entropies, when computed.
    pub(super) entropy: Option<Vec<f32>>,
    /// `[N, r]`: `nf·Aᵀ` of an adapted untied head.
    pub(super) head_down: Option<Vec<f32>>,
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

/// [`rows::rms_norm`] of every row; returns each row's inverse RMS (a pooled buffer).
fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Vec<f32> {
    let mut inv = take(x.len() / w.len());
    vectorised(
        #[inline(always)]
        || rows::rms_norm(x, w, eps, out, Some(&mut inv)),
    );
    inv
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

/// [`rows::rope`] (at scale 1) for every head of every row of `x [n, heads·d]` (rows are whole
/// sequences: row `i` is at position `i mod T`).
fn rope_forward(x: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    for (row, xr) in x.chunks_exact_mut(heads * d).enumerate() {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        xr.chunks_exact_mut(d).for_each(|head| rows::rope(head, c, s, 1.0));
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
                    e[out] = rows::entropy(row, lse_b[i]);
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
pub(super) fn head_logits(
    p: &[f32],
    lay: &ParamLayout,
    nb: &[f32],
    rows: usize,
    logits: &mut [f32],
) -> Option<Vec<f32>> {
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
