//! The CPU decoding engine: the decoder's forward pass written out over host `f32` buffers, for
//! KV-cache generation with `f32` weights on a CPU backend ([`super::DecodeEngine::Host`]).
//!
//! # Why a second forward
//! On burn-flex every tensor operation is its own pass over memory with a fresh allocation, and
//! a decode step of the tiny benchmark model is about 70 operations per layer on `[B, ·]`
//! activations, with a scalar `expf` inside sigmoid/softmax. This engine runs the same
//! arithmetic as [`Decoder::layer_forward`] with the operations fused per row, scratch buffers
//! reused across steps, and four matrix products per layer (q/k/v fused into one weight,
//! gate/up fused into one), on the `gemm` kernels burn-flex itself uses. The adapter is merged
//! into the weights once per engine (`W + scale·B·A`), so decoding pays nothing for it.
//!
//! The row arithmetic (RMSNorm, rotary, softmax, SwiGLU, projections, `exp`) is the crate's
//! CPU row kernels (`crate::kernels`), the same functions the fused training engine runs; this
//! module adds what is particular to decoding: the KV cache, attention of one new token over
//! it, and the split of a step's rows over threads.
//!
//! # Exactness
//! The arithmetic is the training forward's up to `f32` rounding order (fused weights, the
//! merged adapter, a polynomial `exp` within 2 ulp): `tests/generate.rs` checks that the
//! engine's log-probabilities equal the training forward's (≤ 1e-4), that it emits the tensor
//! engine's tokens for the same seeds, and the unit tests below compare its logits with
//! [`Decoder::forward_logits`] on every fixture family (≤ 1e-4).
//!
//! # Threads and determinism
//! A step's rows are split into one group per rayon thread when the step is large enough
//! ([`PARALLEL_MIN_WORK`]); each group runs every layer and the head for its rows, so a step has
//! one fork–join. A row's numbers depend on how many rows its group multiplies at once (gemm
//! picks kernels by size: differences at the `f32` rounding level), so results are
//! deterministic for a fixed thread count, as burn-flex's are, and a batch agrees with each
//! row alone within 1e-4 in log-probability with the same tokens (`tests/generate.rs`).
//!
//! # Memory
//! The engine holds an `f32` copy of the weights (q/k/v and gate/up re-laid out, the adapter
//! merged), built once per [`super::Generator`]: ≈ 4 bytes per parameter, e.g. 0.5 GB for
//! SmolLM2-135M, next to the burn weights.
//!
//! # Cache
//! The same left-padded layout as the tensor engine ([`super::KvCache`]): slot `j` of a row
//! with `o` pad slots holds position `j − o`, every row's prompt ends at slot `P − 1`, decode
//! step `s` writes slot `P + s`. Pad slots are neither computed nor attended. Finished rows are
//! dropped by remapping logical rows to physical ones (no copy); only the repetition of prompt
//! rows for `n` samples copies cache rows.

use crate::decoder::Decoder;
use crate::kernels::matmul::{VectorKernel, run_vectorised};
use crate::kernels::rows::{affine, embed_rows, rms_norm, rms_norm_in_place, rope, softmax_in_place, swiglu};
use crate::tensors::transpose;
use crate::weights::lora::LoraAdapter;
use crate::weights::{DecoderWeights, Proj, RmsNorm};
use bridge_core::{BridgeError, Result};
use burn::module::Param;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// Work of a step (multiply-adds of its projections) from which its rows are split into groups
/// that run on rayon's threads.
const PARALLEL_MIN_WORK: usize = 1 << 21;

fn host_values<const D: usize>(p: &Param<Tensor<D>>, what: &str) -> Result<Vec<f32>> {
    let t = p.val();
    if t.dtype() != DType::F32 {
        return Err(BridgeError::InvalidInput(format!(
            "the host decoding engine runs f32 weights; `{what}` is {:?}",
            t.dtype()
        )));
    }
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading `{what}` to the host: {e:?}")))
}

/// `x·W + b` with `W [in, out]` row-major (burn's layout of [`Proj`]).
struct Linear {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    inp: usize,
    out: usize,
}

impl Linear {
    /// The projections `parts` (all `[in, ·]`) side by side: one `[in, Σ out]` weight.
    fn fused(parts: &[&Proj], what: &str) -> Result<Self> {
        let inp = parts[0].weight.dims()[0];
        if let [p] = parts {
            // one projection: its values as they are (no second copy)
            let out = p.weight.dims()[1];
            let bias = p.bias.as_ref().map(|b| host_values(b, what)).transpose()?;
            return Ok(Self { weight: host_values(&p.weight, what)?, bias, inp, out });
        }
        let outs: Vec<usize> = parts.iter().map(|p| p.weight.dims()[1]).collect();
        let out: usize = outs.iter().sum();
        let mut weight = vec![0.0f32; inp * out];
        let mut col = 0;
        let any_bias = parts.iter().any(|p| p.bias.is_some());
        let mut bias = any_bias.then(|| vec![0.0f32; out]);
        for (p, &o) in parts.iter().zip(&outs) {
            let w = host_values(&p.weight, what)?;
            for (i, row) in w.chunks_exact(o).enumerate() {
                weight[i * out + col..i * out + col + o].copy_from_slice(row);
            }
            if let (Some(all), Some(b)) = (bias.as_mut(), &p.bias) {
                all[col..col + o].copy_from_slice(&host_values(b, what)?);
            }
            col += o;
        }
        Ok(Self { weight, bias, inp, out })
    }

    /// `dst[m, out] = x[m, in]·W + b`, or `dst += x·W + b` when `accumulate`; `parallel`: see
    /// [`matmul`].
    fn apply(&self, x: &[f32], m: usize, dst: &mut [f32], accumulate: bool, parallel: bool) {
        affine(dst, x, &self.weight, self.bias.as_deref(), m, self.inp, self.out, accumulate, parallel);
    }
}

struct Layer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// `[hidden, (Hq + 2·Hkv)·d]`: q, k, v columns.
    qkv: Linear,
    o: Linear,
    /// `[hidden, 2·intermediate]`: gate, then up columns.
    gate_up: Linear,
    down: Linear,
}

/// The decoder's weights on the host, laid out for decoding (see the [module docs](self)).
pub(crate) struct HostModel {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    layers_n: usize,
    eps: f32,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `[hidden, vocab]`: the LM head, or the tied embedding transposed.
    head: Linear,
}

impl std::fmt::Debug for HostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostModel")
            .field("layers", &self.layers_n)
            .field("hidden", &self.hidden)
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

fn norm_values(n: &RmsNorm, what: &str) -> Result<Vec<f32>> {
    host_values(&n.weight, what)
}

impl HostModel {
    /// Host copies of `base` with `adapter` merged in. Fails unless the weights are `f32`.
    pub(crate) fn new(lm: &Decoder, base: &DecoderWeights, adapter: Option<&LoraAdapter>) -> Result<Self> {
        let cfg = lm.config();
        lm.check_weights(base, adapter)?;
        let merged;
        let w = match adapter {
            Some(a) => {
                merged = base.merge(a)?;
                &merged
            }
            None => base,
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let at = |what: &str| format!("layers.{i}.{what}");
            let a = &l.self_attn;
            layers.push(Layer {
                input_norm: norm_values(&l.input_layernorm, &at("input_layernorm"))?,
                post_norm: norm_values(&l.post_attention_layernorm, &at("post_attention_layernorm"))?,
                q_norm: a.q_norm.as_ref().map(|n| norm_values(n, &at("self_attn.q_norm"))).transpose()?,
                k_norm: a.k_norm.as_ref().map(|n| norm_values(n, &at("self_attn.k_norm"))).transpose()?,
                qkv: Linear::fused(&[&a.q_proj, &a.k_proj, &a.v_proj], &at("self_attn.qkv"))?,
                o: Linear::fused(&[&a.o_proj], &at("self_attn.o_proj"))?,
                gate_up: Linear::fused(&[&l.mlp.gate_proj, &l.mlp.up_proj], &at("mlp.gate_up"))?,
                down: Linear::fused(&[&l.mlp.down_proj], &at("mlp.down_proj"))?,
            });
        }
        let embed = host_values(&w.embed_tokens.weight, "embed_tokens")?;
        let head = match &w.lm_head {
            Some(h) => Linear::fused(&[h], "lm_head")?,
            // tied: the embedding transposed once, the layout gemm reads fastest
            None => Linear {
                weight: transpose(&embed, cfg.vocab_size, cfg.hidden_size),
                bias: None,
                inp: cfg.hidden_size,
                out: cfg.vocab_size,
            },
        };
        Ok(Self {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            intermediate: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            layers_n: cfg.num_hidden_layers,
            eps: cfg.rms_norm_eps as f32,
            embed,
            layers,
            norm: norm_values(&w.norm, "norm")?,
            head,
        })
    }

    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Multiply-adds of one token through the layers (the per-token cost of the projections).
    fn token_work(&self) -> usize {
        let per_layer = self.hidden * (self.q_dim() + 2 * self.kv_dim())
            + self.q_dim() * self.hidden
            + 3 * self.hidden * self.intermediate;
        self.layers_n * per_layer
    }

    /// Runs each row's new tokens (`steps[i].ids`, written to slots `steps[i].first_slot..`
    /// of its cache row, then attending causally over the row) through the layers, and returns
    /// the logits `[steps.len(), vocab]` of each row's last new token.
    ///
    /// Rows never interact, so a step is split into row groups that run whole (every layer, and
    /// the head) on rayon's threads: one fork–join per step, none per operation.
    fn forward(&self, lm: &Decoder, cache: &mut HostCache, steps: &[RowStep<'_>]) -> Result<Vec<f32>> {
        let d = self.head_dim;
        let HostCache { rows_data, scratch, spare_logits, .. } = cache;
        // each step's cache row, as a unique borrow (a row appears in one step at most)
        let mut by_row: Vec<Option<&mut RowKv>> = rows_data.iter_mut().map(Some).collect();
        let mut rows: Vec<&mut RowKv> = Vec::with_capacity(steps.len());
        for st in steps {
            rows.push(by_row.get_mut(st.row).and_then(Option::take).ok_or_else(|| {
                BridgeError::InvalidInput(format!("cache row {} is missing or used twice in one step", st.row))
            })?);
        }
        let positions: Vec<usize> = steps
            .iter()
            .zip(&rows)
            .flat_map(|(st, row)| (st.first_slot..st.first_slot + st.ids.len()).map(|j| j - row.offset))
            .collect();
        let (cos, sin) = lm.rope().rows(&positions);
        let tokens = positions.len();
        let groups = if tokens * self.token_work() >= PARALLEL_MIN_WORK {
            rayon::current_num_threads().min(steps.len()).max(1)
        } else {
            1
        };
        let per_group = steps.len().div_ceil(groups);
        scratch.resize_with(groups, Scratch::default);
        // the previous step's logits buffer, handed back by `recycle` (no fresh [B, V] per step)
        let mut logits = std::mem::take(spare_logits);
        logits.clear();
        logits.resize(steps.len() * self.vocab, 0.0);
        // one job per group: its steps, cache rows, slices of the rotary tables and logits
        let parallel = groups == 1;
        let mut jobs = Vec::with_capacity(groups);
        let mut first = 0;
        let parts = steps.chunks(per_group).zip(rows.chunks_mut(per_group));
        for ((steps, rows), (out, scratch)) in
            parts.zip(logits.chunks_mut(per_group * self.vocab).zip(scratch.iter_mut()))
        {
            let n: usize = steps.iter().map(|st| st.ids.len()).sum();
            let (cos, sin) = (&cos[first * d..(first + n) * d], &sin[first * d..(first + n) * d]);
            jobs.push(Group { model: self, steps, rows, cos, sin, scratch, out, parallel });
            first += n;
        }
        if groups > 1 {
            jobs.into_par_iter().for_each(run_vectorised);
        } else {
            jobs.into_iter().for_each(run_vectorised);
        }
        Ok(logits)
    }

    /// [`HostModel::forward`] for one group of rows; `cos`/`sin` hold its tokens' rotary rows,
    /// `out` its rows' logits; `parallel`: whether its matrix products may use rayon's threads
    /// (only when the step is not split into groups).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_group(
        &self,
        steps: &[RowStep<'_>],
        rows: &mut [&mut RowKv],
        cos: &[f32],
        sin: &[f32],
        s: &mut Scratch,
        out: &mut [f32],
        parallel: bool,
    ) {
        let (h, d, cap) = (self.hidden, self.head_dim, rows.first().map_or(0, |r| r.capacity));
        let (qd, kvd) = (self.q_dim(), self.kv_dim());
        let width = qd + 2 * kvd;
        let m: usize = steps.iter().map(|st| st.ids.len()).sum();
        let q_scale = 1.0 / (d as f32).sqrt();
        // (row index in the group, slot) of every token
        let tokens: Vec<(usize, usize)> = steps
            .iter()
            .enumerate()
            .flat_map(|(r, st)| (st.first_slot..st.first_slot + st.ids.len()).map(move |j| (r, j)))
            .collect();
        s.x.resize(m * h, 0.0);
        embed_rows(&self.embed, h, steps.iter().flat_map(|st| st.ids), &mut s.x);
        s.normed.resize(m * h, 0.0);
        s.qkv.resize(m * width, 0.0);
        s.attn.resize(m * qd, 0.0);
        s.gate_up.resize(m * 2 * self.intermediate, 0.0);
        s.act.resize(m * self.intermediate, 0.0);
        let layer_size = self.kv_heads * cap * d;
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&s.x, &layer.input_norm, self.eps, &mut s.normed, None);
            layer.qkv.apply(&s.normed, m, &mut s.qkv, false, parallel);
            for (i, (row, &(r, slot))) in s.qkv.chunks_exact_mut(width).zip(&tokens).enumerate() {
                let (q, kv) = row.split_at_mut(qd);
                let (k, v) = kv.split_at_mut(kvd);
                let (c, sn) = (&cos[i * d..(i + 1) * d], &sin[i * d..(i + 1) * d]);
                for head in q.chunks_exact_mut(d) {
                    if let Some(w) = &layer.q_norm {
                        rms_norm_in_place(head, w, self.eps);
                    }
                    rope(head, c, sn, q_scale);
                }
                let cache = &mut *rows[r];
                for (g, head) in k.chunks_exact_mut(d).enumerate() {
                    if let Some(w) = &layer.k_norm {
                        rms_norm_in_place(head, w, self.eps);
                    }
                    rope(head, c, sn, 1.0);
                    // keys transposed ([d, capacity] per head), values as they are
                    let kt = li * layer_size + g * d * cap + slot;
                    for (c, &x) in head.iter().enumerate() {
                        cache.keys[kt + c * cap] = x;
                    }
                    let at = li * layer_size + (g * cap + slot) * d;
                    cache.values[at..at + d].copy_from_slice(&v[g * d..(g + 1) * d]);
                }
            }
            for (i, (o, &(r, slot))) in s.attn.chunks_exact_mut(qd).zip(&tokens).enumerate() {
                let q = &s.qkv[i * width..i * width + qd];
                let layer_kv = li * layer_size..(li + 1) * layer_size;
                let row = &*rows[r];
                self.attend(q, &row.keys[layer_kv.clone()], &row.values[layer_kv], row.offset, slot, &mut s.scores, o);
            }
            layer.o.apply(&s.attn, m, &mut s.x, true, parallel);

            rms_norm(&s.x, &layer.post_norm, self.eps, &mut s.normed, None);
            layer.gate_up.apply(&s.normed, m, &mut s.gate_up, false, parallel);
            let inter = self.intermediate;
            for (gu, act) in s.gate_up.chunks_exact(2 * inter).zip(s.act.chunks_exact_mut(inter)) {
                let (gate, up) = gu.split_at(inter);
                swiglu(gate, up, act);
            }
            layer.down.apply(&s.act, m, &mut s.x, true, parallel);
        }
        // final norm and head on each row's last token
        let n = steps.len();
        s.last.resize(n * h, 0.0);
        let mut end = 0;
        for (dst, st) in s.last.chunks_exact_mut(h).zip(steps) {
            end += st.ids.len();
            rms_norm(&s.x[(end - 1) * h..end * h], &self.norm, self.eps, dst, None);
        }
        self.head.apply(&s.last, n, out, false, parallel);
    }

    /// Attention of one token (query heads `q [Hq·d]`) at `slot` over the slots
    /// `from..=slot` of one layer of its cache row (`keys` `[Hkv, d, capacity]`, transposed so
    /// that the scores of all slots accumulate in one vectorised pass per key dimension;
    /// `values` `[Hkv, capacity, d]`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn attend(
        &self,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        from: usize,
        slot: usize,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let d = self.head_dim;
        let cap = keys.len() / (self.kv_heads * d).max(1);
        let n_rep = self.heads / self.kv_heads;
        for (hq, (qh, oh)) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let g = hq / n_rep;
            let vs = &values[(g * cap + from) * d..(g * cap + slot + 1) * d];
            let n = slot + 1 - from;
            scores.clear();
            scores.resize(n, 0.0);
            // sixteen slots at a time, their scores held in registers across the key dimension
            let mut j = 0;
            while j < n {
                let w = (n - j).min(16);
                let mut acc = [0.0f32; 16];
                for (c, &qc) in qh.iter().enumerate() {
                    let at = (g * d + c) * cap + from + j;
                    for (a, &k) in acc.iter_mut().zip(&keys[at..at + w]) {
                        *a += qc * k;
                    }
                }
                scores[j..j + w].copy_from_slice(&acc[..w]);
                j += w;
            }
            softmax_in_place(scores);
            weighted_sum(scores, vs, oh);
        }
    }

    /// Writes the left-padded `prompts` into a fresh cache of `capacity` slots per row and
    /// returns it with each prompt's last-token logits `[prompts, vocab]`.
    pub(crate) fn prefill(&self, lm: &Decoder, prompts: &[Vec<u32>], capacity: usize) -> Result<(HostCache, Vec<f32>)> {
        let p = prompts.iter().map(Vec::len).max().unwrap_or(1);
        if capacity < p {
            return Err(BridgeError::InvalidInput(format!("cache capacity {capacity} < prompt length {p}")));
        }
        let size = self.layers_n * self.kv_dim() * capacity;
        let mut cache = HostCache {
            rows_data: prompts
                .iter()
                .map(|q| RowKv { offset: p - q.len(), capacity, keys: vec![0.0; size], values: vec![0.0; size] })
                .collect(),
            rows: (0..prompts.len()).collect(),
            len: p,
            capacity,
            scratch: Vec::new(),
            spare_logits: Vec::new(),
        };
        let steps: Vec<RowStep<'_>> =
            prompts.iter().enumerate().map(|(r, q)| RowStep { row: r, first_slot: p - q.len(), ids: q }).collect();
        let logits = self.forward(lm, &mut cache, &steps)?;
        Ok((cache, logits))
    }

    /// Appends `tokens[r]` to logical row `r` and returns the next-token logits `[rows, vocab]`.
    pub(crate) fn decode(&self, lm: &Decoder, cache: &mut HostCache, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() != cache.rows.len() {
            return Err(BridgeError::InvalidInput(format!(
                "{} tokens for a cache of {} rows",
                tokens.len(),
                cache.rows.len()
            )));
        }
        if cache.len >= cache.capacity {
            return Err(BridgeError::InvalidInput(format!("the KV cache is full ({} slots)", cache.capacity)));
        }
        let slot = cache.len;
        let steps: Vec<RowStep<'_>> = cache
            .rows
            .iter()
            .zip(tokens)
            .map(|(&row, id)| RowStep { row, first_slot: slot, ids: std::slice::from_ref(id) })
            .collect();
        let logits = self.forward(lm, cache, &steps)?;
        cache.len += 1;
        Ok(logits)
    }
}

/// One row group's forward pass, as a kernel for [`run_vectorised`].
struct Group<'a, 'r> {
    model: &'a HostModel,
    steps: &'a [RowStep<'a>],
    rows: &'a mut [&'r mut RowKv],
    cos: &'a [f32],
    sin: &'a [f32],
    scratch: &'a mut Scratch,
    out: &'a mut [f32],
    parallel: bool,
}

impl VectorKernel for Group<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        self.model.forward_group(self.steps, self.rows, self.cos, self.sin, self.scratch, self.out, self.parallel);
    }
}

/// New tokens of one cache row: `ids` go to slots `first_slot..first_slot + ids.len()`.
#[derive(Clone, Copy, Debug)]
struct RowStep<'a> {
    /// Physical cache row.
    row: usize,
    first_slot: usize,
    ids: &'a [u32],
}

/// Buffers a row group's forward pass reuses from step to step (fresh large allocations are
/// page faults).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    scores: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    last: Vec<f32>,
}

/// One row of the host KV cache: keys `[layers, Hkv, d, capacity]` (transposed), values
/// `[layers, Hkv, capacity, d]`.
struct RowKv {
    /// Pad slots at the start of the row.
    offset: usize,
    capacity: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// The host engine's KV cache: one [`RowKv`] per physical row, and the map from the
/// generation loop's (logical) rows to physical ones.
pub(crate) struct HostCache {
    rows_data: Vec<RowKv>,
    /// Physical row of each logical row.
    rows: Vec<usize>,
    len: usize,
    capacity: usize,
    /// One per row group of a step.
    scratch: Vec<Scratch>,
    /// A logits buffer handed back after sampling, reused by the next step.
    spare_logits: Vec<f32>,
}

impl HostCache {
    /// Hands a step's logits buffer back, for the next step to fill (a `[B, V]` buffer is
    /// 39 MB at batch 64 for a 152k vocabulary: fresh ones are page faults on every step).
    pub(crate) fn recycle(&mut self, logits: Vec<f32>) {
        self.spare_logits = logits;
    }

    /// Keeps (and reorders, or repeats) the logical rows `rows`. Dropping and reordering only
    /// remaps; a repeated row's cache is copied, so that each copy can grow on its own.
    pub(crate) fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            return Err(BridgeError::InvalidInput("selecting zero cache rows".into()));
        }
        if let Some(bad) = rows.iter().find(|&&r| r >= self.rows.len()) {
            return Err(BridgeError::InvalidInput(format!("cache row {bad} out of {}", self.rows.len())));
        }
        let mut seen = vec![false; self.rows.len()];
        let mut mapped = Vec::with_capacity(rows.len());
        for &r in rows {
            let phys = self.rows[r];
            if std::mem::replace(&mut seen[r], true) {
                let src = &self.rows_data[phys];
                let copy = RowKv {
                    offset: src.offset,
                    capacity: src.capacity,
                    keys: src.keys.clone(),
                    values: src.values.clone(),
                };
                self.rows_data.push(copy);
                mapped.push(self.rows_data.len() - 1);
            } else {
                mapped.push(phys);
            }
        }
        self.rows = mapped;
        Ok(())
    }
}

/// `out = Σⱼ p[j]·v[j]` over the rows `v[j]` (`out.len()` values each) of `values`, with the
/// accumulators kept in registers, sixteen columns at a time.
#[inline(always)]
fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len();
    let mut c = 0;
    while c + 16 <= d {
        let mut acc = [0.0f32; 16];
        for (&pj, v) in p.iter().zip(values.chunks_exact(d)) {
            for (a, &v) in acc.iter_mut().zip(&v[c..c + 16]) {
                *a += pj * v;
            }
        }
        out[c..c + 16].copy_from_slice(&acc);
        c += 16;
    }
    for (col, o) in out.iter_mut().enumerate().skip(c) {
        *o = p.iter().zip(values.chunks_exact(d)).map(|(&pj, v)| pj * v[col]).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hf::load_hf_dir;
    use bridge_core::BridgeRng;
    use bridge_core::IdsOnlyCodec;
    use burn::tensor::{Device, Int, TensorData};

    fn full_logits(lm: &Decoder, w: &DecoderWeights, a: Option<&LoraAdapter>, seq: &[u32]) -> Vec<f32> {
        let device = w.device();
        let ids: Tensor<2, Int> = Tensor::from_data(
            TensorData::new(seq.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, seq.len()]),
            &device,
        );
        lm.forward_logits(w, a, ids, None).unwrap().into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// Prefill + decode logits of the host engine against the training forward over each whole
    /// sequence, on every fixture family (GQA + rope scaling, biases + tied head, Qwen2, Qwen3
    /// q/k norms), with and without an adapter, with a repeated row and a dropped row.
    #[test]
    fn host_engine_logits_equal_the_training_forward() {
        let device = Device::flex();
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for name in ["llama3_gqa", "llama_bias_tied", "qwen2_tied", "qwen3_qknorm"] {
            let (cfg, w) = load_hf_dir(fixtures.join(name), &device).unwrap();
            let v = cfg.vocab_size;
            let lm = Decoder::new(cfg, Box::new(IdsOnlyCodec { vocab_size: v })).unwrap();
            let adapter = lm
                .init_adapter(&crate::weights::lora::LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(5))
                .unwrap()
                .with_random_b(0.2, &mut BridgeRng::seed_from_u64(6));
            for a in [None, Some(&adapter)] {
                let prompts = vec![vec![1u32, 17, 159, 42, 99, 7], vec![1, 5, 64], vec![3, 120, 8, 77, 15, 31, 9, 140]];
                let model = HostModel::new(&lm, &w, a).unwrap();
                let steps = 4;
                let p = 8;
                let (mut cache, first) = model.prefill(&lm, &prompts, p + steps).unwrap();
                // logical rows after selection: prompt 0, prompt 2 twice (prompt 1 dropped)
                let picked = [0usize, 2, 2];
                cache.select_rows(&picked).unwrap();
                let seqs: Vec<Vec<u32>> = picked
                    .iter()
                    .enumerate()
                    .map(|(c, &r)| {
                        let mut s = prompts[r].clone();
                        s.extend((0..steps).map(|k| ((c * 31 + k * 7 + 2) % v) as u32));
                        s
                    })
                    .collect();
                let mut worst = 0.0f32;
                for (r, prompt) in prompts.iter().enumerate() {
                    let full = full_logits(&lm, &w, a, prompt);
                    let at = (prompt.len() - 1) * v;
                    worst = worst.max(max_diff(&first[r * v..(r + 1) * v], &full[at..at + v]));
                }
                for k in 0..steps {
                    let toks: Vec<u32> = seqs.iter().map(|s| s[s.len() - steps + k]).collect();
                    let step = model.decode(&lm, &mut cache, &toks).unwrap();
                    for (c, s) in seqs.iter().enumerate() {
                        let full = full_logits(&lm, &w, a, s);
                        let at = (s.len() - steps + k) * v;
                        worst = worst.max(max_diff(&step[c * v..(c + 1) * v], &full[at..at + v]));
                    }
                }
                assert!(model.decode(&lm, &mut cache, &[1, 1, 1]).is_err(), "the cache is full");
                println!("{name} (adapter: {}): max |Δlogit| host engine vs forward = {worst:.3e}", a.is_some());
                assert!(worst <= 1e-4, "{name}: {worst}");
            }
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    use std::path::PathBuf;

    #[test]
    fn host_engine_refuses_half_weights_and_bad_rows() {
        let device = Device::flex();
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let (cfg, w) = load_hf_dir(fixtures.join("qwen2_tied"), &device).unwrap();
        let v = cfg.vocab_size;
        let lm = Decoder::new(cfg, Box::new(IdsOnlyCodec { vocab_size: v })).unwrap();
        let half = w.clone().cast(burn::tensor::FloatDType::BF16);
        assert!(matches!(HostModel::new(&lm, &half, None), Err(BridgeError::InvalidInput(_))));
        let model = HostModel::new(&lm, &w, None).unwrap();
        let (mut cache, _) = model.prefill(&lm, &[vec![1, 2], vec![3]], 3).unwrap();
        assert!(model.prefill(&lm, &[vec![1, 2, 3]], 2).is_err());
        assert!(model.decode(&lm, &mut cache, &[1]).is_err());
        assert!(cache.select_rows(&[]).is_err());
        assert!(cache.select_rows(&[2]).is_err());
    }
}
