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

use super::matmul::{VectorKernel, matmul, run_vectorised};
use crate::decoder::{Decoder, DecoderWeights, Proj, RmsNorm};
use crate::lora::LoraAdapter;
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
        matmul(dst, x, &self.weight, m, self.inp, self.out, accumulate, parallel);
        if let Some(b) = &self.bias {
            for row in dst[..m * self.out].chunks_exact_mut(self.out) {
                row.iter_mut().zip(b).for_each(|(y, &b)| *y += b);
            }
        }
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
        let (cos, sin) = lm.rope_rows(&positions);
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
        for (xr, &id) in s.x.chunks_exact_mut(h).zip(steps.iter().flat_map(|st| st.ids)) {
            let id = id as usize;
            xr.copy_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        s.normed.resize(m * h, 0.0);
        s.qkv.resize(m * width, 0.0);
        s.attn.resize(m * qd, 0.0);
        s.gate_up.resize(m * 2 * self.intermediate, 0.0);
        s.act.resize(m * self.intermediate, 0.0);
        let layer_size = self.kv_heads * cap * d;
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&s.x, &layer.input_norm, self.eps, &mut s.normed);
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

            rms_norm_rows(&s.x, &layer.post_norm, self.eps, &mut s.normed);
            layer.gate_up.apply(&s.normed, m, &mut s.gate_up, false, parallel);
            let inter = self.intermediate;
            for (gu, act) in s.gate_up.chunks_exact(2 * inter).zip(s.act.chunks_exact_mut(inter)) {
                let (gate, up) = gu.split_at(inter);
                act.copy_from_slice(gate);
                exp_neg_in_place(act);
                for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
                    *a = g / (1.0 + *a) * u; // silu(g)·u = g·σ(g)·u
                }
            }
            layer.down.apply(&s.act, m, &mut s.x, true, parallel);
        }
        // final norm and head on each row's last token
        let n = steps.len();
        s.last.resize(n * h, 0.0);
        let mut end = 0;
        for (dst, st) in s.last.chunks_exact_mut(h).zip(steps) {
            end += st.ids.len();
            rms_norm_rows(&s.x[(end - 1) * h..end * h], &self.norm, self.eps, dst);
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
            let max = max_of(scores);
            scores.iter_mut().for_each(|s| *s = max - *s);
            exp_neg_in_place(scores);
            let inv_sum = 1.0 / sum_of(scores);
            scores.iter_mut().for_each(|s| *s *= inv_sum);
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

/// `log Σⱼ exp(x[r, j])` of every row `r` of `logits [R, vocab]` (NaN for a row whose largest
/// value is not finite): the normaliser of the recorded log-probabilities, shared by both
/// engines' host token selection. The exponentials are [`exp_f32`]'s (2 ulp), summed in `f64`.
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

/// `[rows, cols]` row-major → its transpose `[cols, rows]`, in 32 × 32 tiles (a naive loop
/// misses the cache on every write for an embedding-sized matrix).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; x.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) · w` for every row `r` of `x`.
#[inline(always)]
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let inv = 1.0 / (dot(xr, xr) / h as f32 + eps).sqrt();
        or.iter_mut().zip(xr).zip(w).for_each(|((o, &x), &w)| *o = x * inv * w);
    }
}

#[inline(always)]
fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = 1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(x, &w)| *x = *x * inv * w);
}

/// HF's rotary embedding `x·cos + rotate_half(x)·sin`, times `scale`, in place.
#[inline(always)]
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], scale: f32) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for j in 0..half {
        let (a, b) = (lo[j], hi[j]);
        lo[j] = (a * cos[j] - b * sin[j]) * scale;
        hi[j] = (b * cos[j + half] + a * sin[j + half]) * scale;
    }
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

/// The sum of the elements, in sixteen interleaved partial sums.
#[inline(always)]
fn sum_of(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &v)| *l += v);
    }
    lanes.iter().sum::<f32>() + tail
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

/// `x ← exp(−x)` for every element (see [`exp_f32`]).
#[inline(always)]
fn exp_neg_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = exp_f32(-*v));
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
    use crate::hf::load_hf_dir;
    use bridge_core::BridgeRng;
    use burn::tensor::{Device, Int, TensorData};

    #[test]
    fn tiled_transpose_is_the_transpose() {
        for (rows, cols) in [(1, 1), (3, 70), (65, 33), (100, 7)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&x, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], x[r * cols + c]);
                }
            }
        }
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
        }
        let bad = [1.0f32, f32::INFINITY, 0.0];
        assert!(log_partitions(&bad, 3)[0].is_nan());
    }

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

    struct Ids(usize);
    impl bridge_core::policy::TextCodec for Ids {
        fn encode(&self, _: &str) -> Result<Vec<u32>> {
            Err(BridgeError::Tokenizer("ids only".into()))
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(format!("{ids:?}"))
        }
        fn vocab_size(&self) -> usize {
            self.0
        }
        fn eos_token_ids(&self) -> &[u32] {
            &[]
        }
        fn pad_token_id(&self) -> u32 {
            0
        }
    }

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
            let lm = Decoder::new(cfg, Box::new(Ids(v))).unwrap();
            let adapter = lm
                .init_adapter(&crate::lora::LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(5))
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
        let lm = Decoder::new(cfg, Box::new(Ids(v))).unwrap();
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
