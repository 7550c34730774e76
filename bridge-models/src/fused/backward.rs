//! The fused engine's backward pass: the gradient of `Σ dlogprobs·logprobs + Σ dentropy·entropy`
//! with respect to the flat parameter vector, from the activations [`super::forward`] saved.
//!
//! ```text
//! per layer, reversed:
//! dact = dy·Wdᵀ  ...           (down_proj)
//! dgate, dup = SwiGLU'         → dn2 → dx2
//! dattn = dx2·Woᵀ ...           (o_proj)
//! dP = dattn·vᵀ; dS = P∘(dP − Σ P∘dP)
//! dq = dS·k/√d; dk = dSᵀ·q/√d; dv = Pᵀ·dattn
//! rope', qk_norm', W{q,k,v}ᵀ   → dn1 → dx
//! ```
//!
//! The head recomputes each block's logits and forms `dlogits = g·(onehot − softmax)`. The
//! derivatives of the row operations are the row kernels' (`crate::kernels::rows`).
//!
//! Determinism: every product runs on [`matmul_view`] (fixed summation order whatever the thread
//! count); row-parallel loops write disjoint rows; sums over rows (norm scales, biases, the
//! embedding's scatter) and over groups run in a fixed serial order.

use super::forward::{Saved, SavedLayer, head_logits};
use super::layout::{
    AttnDims, BatchPlan, DOWN, GATE, Groups, HEAD_BLOCK_ROWS, K, LayerSlots, O, ParamLayout, ProjSlots, Q, Slot, UP, V,
};
use super::pool::{copy_of, give, take, take_zeroed};
use crate::kernels::matmul::{View, matmul_view, vectorised};
use crate::kernels::rows;
use rayon::prelude::*;

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

/// Backward of [`rope_forward`], in place on the gradient.
fn rope_backward(dx: &mut [f32], heads: usize, d: usize, seq: usize, cos: &[f32], sin: &[f32]) {
    for (row, xr) in dx.chunks_exact_mut(heads * d).enumerate() {
        let t = row % seq;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        xr.chunks_exact_mut(d).for_each(|head| rows::rope_backward(head, c, s));
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
                let idx = start + i;
                let target = ((idx % t) + 1 < t).then(|| plan.ids[idx + 1] as usize);
                vectorised(
                    #[inline(always)]
                    || rows::log_softmax_backward(row, lse[i], target, w, we, h),
                );
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
