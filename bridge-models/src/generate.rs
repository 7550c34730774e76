//! Batched KV-cache generation that runs the training forward pass, layer for layer.
//!
//! [`Decoder::sample`](bridge_core::policy::CausalLm::sample) runs a fresh [`Generator`], which
//! prefills every prompt once, then decodes one token per step for all rows
//! together, attending over a per-layer key/value cache. Every layer goes through
//! [`Decoder`]'s own layer function (the one `token_scores` uses): the only difference from
//! training is where the keys and values come from, so rollouts and training share one model.
//!
//! # Padding scheme: left padding, per-row positions
//! A batch of prompts of lengths `len_r` is **left-padded** to `P = max len_r`: row `r` has
//! `o_r = P − len_r` pad slots, then its prompt. Cache slot `j` of row `r` holds position
//! `j − o_r` (the rotary tables are built per row, once per request), and the pad slots
//! `j < o_r` are masked out of every query's keys. Because every prompt ends at slot `P − 1`,
//! decode step `s` writes slot `P + s` for all rows at once, and the "last" logits are always
//! those of slot `P − 1` — no gathers.
//!
//! # Cache layout
//! For each layer, keys and values are `[B, Hkv, P + max_new_tokens, head_dim]` (rotary already
//! applied to the keys), preallocated at prefill and written in place with `slice_assign`
//! (no growing concatenations). A decode step attends over the filled prefix `0..P + s + 1`,
//! with a `[B, 1, 1, ·]` additive mask (pad slots) sliced from a table built once.
//!
//! # `n` samples per prompt
//! Each distinct prompt row is prefilled once ([`GenerationStats::prefill_rows`] counts them);
//! its cache rows (and its last logits) are then repeated `n` times, sample by sample.
//!
//! # Finished rows
//! A row that stops (EOS / stop id / stop string / length) is no longer sampled, and the batch is
//! compacted (cache, rotary and mask rows selected) before the next step, so finished rows cost
//! no compute.
//!
//! # Seeded sampling: draw order
//! Before any forward pass, one `next_u64` is drawn from the caller's `rng` per completion, in
//! output order (prompt by prompt, sample by sample), and completion `k` samples every token from
//! its own `BridgeRng::seed_from_u64(seed_k)` (one [`sample_token`] call per token, which draws
//! once when `temperature > 0`). A completion therefore depends only on its prompt, the
//! parameters and its seed — not on what else is in the batch, on compaction or on other rows
//! stopping — and the caller's `rng` always advances by exactly `prompts × n` draws. To reproduce
//! completion `k` of a batch alone, advance a copy of the same `rng` by `k` draws first.
//!
//! # Log-probabilities
//! The recorded log-probability of a token is `log_softmax(logits)` over the full vocabulary at
//! temperature 1, before top-k/top-p truncation (the quantity GRPO's ratio needs). Sampling itself
//! is restricted to the codec's vocabulary (rows beyond it are embedding padding).
//!
//! # Host or device selection
//! With host selection ([`TokenSelection::Host`], the default on a CPU backend) the `[B, V]`
//! logits are copied to the host at every step; `log Z` of every row comes from one vectorised
//! pass (`f32` exponentials, `f64` sums) and tokens from [`sample_token`] (rows in parallel for
//! large steps). On a GPU that copy is 39 MB per step at batch 64 for a 152k vocabulary, so by
//! default ([`TokenSelection::Auto`]) tokens are chosen on the device instead (`generate/select.rs`):
//! the same rule in tensor operations (argmax; temperature, top-k and top-p by inverse CDF over
//! the row's uniform draw, which still comes from the completion's own generator on the host),
//! log-probabilities by a device log-softmax in f32, and one `[B, 2]` read per step. Both give
//! the same tokens for the same seeds (up to a draw landing within f32 rounding of a boundary of
//! the cumulative distribution), so the seeding above holds on every backend.
//!
//! # Engines
//! - [`DecodeEngine::Tensor`] is what the sections above describe: burn tensor operations
//!   through [`Decoder`]'s own layer function, one step at a time with dynamic shapes (attention
//!   over the filled prefix), on any backend.
//! - [`DecodeEngine::Host`] (`generate/host.rs`) runs the same arithmetic over host `f32`
//!   buffers with fused per-row kernels and the adapter merged into the weights: several times
//!   faster on a CPU, where burn-flex pays a pass over memory and an allocation per tensor
//!   operation.
//! - [`DecodeEngine::Graph`] (`generate/graph.rs`) is the GPU path: the prefill is the tensor
//!   engine's, then every decode step has static shapes (KV cache written in place at a slot
//!   held in a tensor, attention over the whole cache with the unfilled slots masked, tokens
//!   chosen on the device), so that it can be captured once with burn's
//!   `burn::tensor::capture` and replayed as one CUDA graph per step; it runs eagerly where the
//!   backend has no graphs, with top-p alone (a sort on the host in burn 0.22.1), or with
//!   [`Generator::with_capture`]`(false)`. Finished rows stay in its batch until at most half is
//!   live (a compaction changes shapes and costs a new capture).
//!
//! All three share this module's loop, padding scheme, seeding and stopping, so they produce the
//! same tokens (up to `f32` rounding order in the log-probabilities; `tests/generate.rs` checks
//! them against each other and the training forward). [`DecodeEngine::Auto`], the default,
//! picks the host engine for `f32` weights on a CPU backend (unless device selection is asked
//! for), the tensor engine for other CPU cases or explicit host selection, and the graph engine
//! on a GPU.

use crate::decoder::{Decoder, is_flex};
use crate::forward::{ForwardCtx, MASKED, causal_mask, query_tables, rotate_half_index, signed_sin, to_dtype};
use crate::weights::DecoderWeights;
use crate::weights::lora::LoraAdapter;
use bridge_core::policy::{Completion, FinishReason, SamplingParams, TextCodec, TokenSelection};
use bridge_core::sampling::{hits_stop_string, sample_token};
use bridge_core::{BridgeError, BridgeRng, Result};
use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorCreationOptions, TensorData};
use rayon::prelude::*;
use std::cell::RefCell;

pub use crate::decoder::DecodeEngine;

pub(crate) mod graph;
pub(crate) mod host;
pub(crate) mod select;

use graph::{CacheParts, StaticBatch, StepMode, StepModel, Stepper};
use select::{SelectionRule, read_picks, select};

/// Counters of the work a [`Generator`] did (a test hook: the prefill must run once per prompt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenerationStats {
    /// Number of prefill forward calls.
    pub prefill_calls: usize,
    /// Number of prompt rows prefilled (padded batch rows).
    pub prefill_rows: usize,
    /// Number of decode forward calls (one per step).
    pub decode_steps: usize,
    /// Number of rows decoded, summed over steps (with the graph engine, finished rows still in
    /// the batch count too).
    pub decode_rows: usize,
    /// Number of times the batch was compacted after rows finished.
    pub compactions: usize,
    /// Decode steps captured into a graph (the graph engine: one per batch shape, on a backend
    /// that has graphs).
    pub graph_captures: usize,
    /// Decode steps replayed from a hardware graph (one launch each).
    pub graph_replays: usize,
    /// Hardware captures dropped because a tensor the step writes in place was shared (its
    /// write would have gone to a copy, which a replay cannot follow); those steps ran eagerly.
    pub graph_refusals: usize,
}

/// The per-layer key/value cache of a left-padded batch, with its per-row rotary tables and
/// pad mask (see the [module docs](self)).
///
/// # Shapes
/// Keys and values: `[B, Hkv, capacity, head_dim]` per layer; rotary tables
/// `[B, 1, capacity, head_dim]`; mask `[B, 1, 1, capacity]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Tensor<4>>,
    values: Vec<Tensor<4>>,
    cos: Tensor<4>,
    sin: Tensor<4>,
    cos_q: Tensor<4>,
    sin_q: Tensor<4>,
    score_scale: Option<f64>,
    mask: Tensor<4>,
    offsets: Vec<usize>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Number of rows `B`.
    pub fn rows(&self) -> usize {
        self.offsets.len()
    }

    /// Number of filled slots (the same for every row: prompt padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slots allocated per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Left padding `o_r` of each row: slot `j` of row `r` holds position `j − o_r`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Keeps (and reorders, or repeats) the rows `rows` of the cache: compaction after rows
    /// finish, or repetition of prompt rows for `n` samples.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            return Err(BridgeError::InvalidInput("selecting zero cache rows".into()));
        }
        if let Some(bad) = rows.iter().find(|&&r| r >= self.rows()) {
            return Err(BridgeError::InvalidInput(format!("cache row {bad} out of {}", self.rows())));
        }
        let device = self.mask.device();
        let rope = [&mut self.cos, &mut self.sin, &mut self.cos_q, &mut self.sin_q, &mut self.mask];
        graph::select_cache_rows(self.keys.iter_mut().chain(self.values.iter_mut()).chain(rope), rows, &device);
        self.offsets = rows.iter().map(|&r| self.offsets[r]).collect();
        Ok(())
    }

    /// The cache handed over to the graph engine's static batch.
    fn into_parts(self) -> CacheParts {
        CacheParts {
            keys: self.keys,
            values: self.values,
            cos: self.cos,
            sin: self.sin,
            cos_q: self.cos_q,
            sin_q: self.sin_q,
            score_scale: self.score_scale,
            pad: self.mask,
        }
    }
}

fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), device)
}

/// The generation engine: a decoder with graph-free snapshots of its weights θ (and adapter w).
#[derive(Debug)]
pub struct Generator<'a> {
    lm: &'a Decoder,
    base: DecoderWeights,
    adapter: Option<LoraAdapter>,
    rot: Tensor<1, Int>,
    device: Device,
    /// The weights' dtype: that of the rotary tables and the KV cache (the mask stays f32).
    dtype: DType,
    stats: GenerationStats,
    engine: DecodeEngine,
    /// Whether the graph engine captures its step (where the backend can).
    capture: bool,
    /// The host engine's weights, built on first use.
    host: Option<host::HostModel>,
}

fn host_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading logits: {e:?}")))
}

/// Whether `device` is a CPU backend (flex, ndarray), where host selection costs no transfer.
fn is_cpu_backend(device: &Device) -> bool {
    is_flex(device) || format!("{device:?}").contains("NdArray(")
}

/// The cache of a generation in progress, in the engine that runs it (one per `generate` call).
#[allow(clippy::large_enum_variant)]
enum Session {
    Tensor(KvCache),
    Host(host::HostCache),
}

impl Session {
    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        match self {
            Session::Tensor(cache) => cache.select_rows(rows),
            Session::Host(cache) => cache.select_rows(rows),
        }
    }
}

/// Next-token logits `[rows, vocab]` of one step, where the engine left them.
#[allow(clippy::large_enum_variant)]
enum StepLogits {
    Tensor(Tensor<2>),
    Host(Vec<f32>),
}

/// A completion being generated.
struct Row {
    prompt_index: usize,
    sample_index: usize,
    rng: BridgeRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
}

/// The completions of one `generate` call and the cache row each occupies.
struct Progress<'p> {
    rows: Vec<Row>,
    /// `active[c]`: the completion in cache row `c` (finished ones may stay in the graph
    /// engine's batch until it is compacted).
    active: Vec<usize>,
    stop_ids: Vec<u32>,
    params: &'p SamplingParams,
    codec: &'p dyn TextCodec,
}

/// One chosen token: id, log-probability, and the completion's generator after the draw (host
/// selection; device selection advances the generators itself).
type Pick = (usize, f32, Option<BridgeRng>);

impl<'p> Progress<'p> {
    /// One row per completion (prompt by prompt, sample by sample), each seeded with one draw of
    /// `rng` (see the [module docs](self#seeded-sampling-draw-order)).
    fn new(lm: &'p Decoder, prompts: usize, params: &'p SamplingParams, rng: &mut BridgeRng) -> Self {
        let mut rows = Vec::with_capacity(prompts * params.n);
        for prompt_index in 0..prompts {
            for sample_index in 0..params.n {
                rows.push(Row {
                    prompt_index,
                    sample_index,
                    rng: BridgeRng::seed_from_u64(rng.next_u64()),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    finish: (params.max_new_tokens == 0).then_some(FinishReason::Length),
                });
            }
        }
        let codec = lm.text_codec();
        let mut stop_ids: Vec<u32> = codec.eos_token_ids().to_vec();
        stop_ids.extend(&lm.config().eos_token_ids);
        stop_ids.extend(&params.stop_token_ids);
        let active = (0..rows.len()).collect();
        Self { rows, active, stop_ids, params, codec }
    }

    /// Appends `picks[c]` to the completion in cache row `c` (rows already finished are left
    /// alone) and marks the rows that stop; returns the picked token of every cache row.
    fn record(&mut self, picks: Vec<Pick>) -> Result<Vec<u32>> {
        if picks.len() != self.active.len() {
            return Err(BridgeError::Model(format!("{} tokens for {} rows", picks.len(), self.active.len())));
        }
        let mut next = Vec::with_capacity(picks.len());
        for (&k, (tok, logprob, row_rng)) in self.active.iter().zip(picks) {
            next.push(tok as u32);
            let row = &mut self.rows[k];
            if row.finish.is_some() {
                continue;
            }
            if let Some(r) = row_rng {
                row.rng = r;
            }
            row.tokens.push(tok as u32);
            row.logprobs.push(logprob);
            let stop_string = hits_stop_string(self.codec, &row.tokens, &self.params.stop_strings)?;
            if self.stop_ids.contains(&(tok as u32)) || stop_string {
                row.finish = Some(FinishReason::Stop);
            } else if row.tokens.len() >= self.params.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
        }
        Ok(next)
    }

    /// The cache rows whose completion is still running.
    fn live(&self) -> Vec<usize> {
        (0..self.active.len()).filter(|&c| self.rows[self.active[c]].finish.is_none()).collect()
    }

    /// Keeps the cache rows `keep` (compaction).
    fn compact(&mut self, keep: &[usize]) {
        self.active = keep.iter().map(|&c| self.active[c]).collect();
    }

    /// One uniform draw in `[0, 1)` per cache row for device selection, from each running
    /// completion's own generator when `rule` samples (0 for finished rows, which draw nothing):
    /// the draw `sample_token` would make on the host.
    fn uniforms(&mut self, rule: &SelectionRule) -> Vec<f32> {
        let draws = rule.draws();
        self.active
            .iter()
            .map(|&k| {
                let row = &mut self.rows[k];
                if draws && row.finish.is_none() { row.rng.next_f64() as f32 } else { 0.0 }
            })
            .collect()
    }

    /// Tokens chosen on the device from `logits [cache rows, V]` (see `generate/select.rs`).
    fn device_picks(&mut self, logits: Tensor<2>, rule: &SelectionRule) -> Result<Vec<Pick>> {
        let rows = self.active.len();
        let u = Tensor::<2>::from_data(TensorData::new(self.uniforms(rule), [rows, 1]), &logits.device());
        Ok(read_picks(select(logits, &u, rule), rows)?.into_iter().map(|(t, l)| (t, l, None)).collect())
    }

    /// Tokens chosen on the host from `logits [.., V]`, cache row `c` reading row `logit_row[c]`.
    fn host_picks(&self, logits: &[f32], logit_row: &[usize], vocab: usize, sample_vocab: usize) -> Vec<Pick> {
        let params = self.params;
        // log Z of every row of the step, once (vectorised)
        let log_z = crate::kernels::rows::log_partitions(logits, vocab);
        let pick = |(c, &k): (usize, &usize)| {
            let row_logits = &logits[logit_row[c] * vocab..(logit_row[c] + 1) * vocab];
            let mut row_rng = self.rows[k].rng.clone();
            let tok =
                sample_token(&row_logits[..sample_vocab], params.temperature, params.top_k, params.top_p, &mut row_rng);
            let logprob = (f64::from(row_logits[tok]) - log_z[logit_row[c]]) as f32;
            (tok, logprob, Some(row_rng))
        };
        // Large steps sample their rows in parallel (each row has its own generator, so the
        // result does not depend on the thread count). Below 2^14 logits (2^16 for greedy, a mere
        // argmax per row) the thread hand-off costs more than it saves (measured on the tiny
        // benchmark model).
        let parallel_from = if params.temperature > 0.0 { 1 << 14 } else { 1 << 16 };
        if self.active.len() * vocab >= parallel_from {
            self.active.par_iter().enumerate().map(pick).collect()
        } else {
            self.active.iter().enumerate().map(pick).collect()
        }
    }

    fn into_completions(self) -> Result<Vec<Completion>> {
        let codec = self.codec;
        self.rows
            .into_iter()
            .map(|r| {
                let text = codec.decode(&r.tokens)?;
                Ok(Completion {
                    prompt_index: r.prompt_index,
                    sample_index: r.sample_index,
                    tokens: r.tokens,
                    text,
                    logprobs: r.logprobs,
                    finish: r.finish.unwrap_or(FinishReason::Length),
                })
            })
            .collect()
    }
}

impl<'a> Generator<'a> {
    /// An engine for `lm` with the weights `base` (and `adapter`), which may live on an autodiff
    /// device: the engine keeps `.valid()` snapshots, so generation never builds a graph. It
    /// decodes with `lm`'s [`DecodeEngine`] until [`Generator::with_engine`] says otherwise.
    pub fn new(lm: &'a Decoder, base: &DecoderWeights, adapter: Option<&LoraAdapter>) -> Result<Self> {
        lm.check_weights(base, adapter)?;
        let base = base.valid();
        let adapter = adapter.map(Module::valid);
        let device = base.embed_tokens.weight.device();
        let d = lm.config().head_dim;
        let dtype = base.dtype();
        let rot = rotate_half_index(d, &device);
        Ok(Self {
            lm,
            base,
            adapter,
            rot,
            device,
            dtype,
            stats: GenerationStats::default(),
            engine: lm.decode_engine(),
            capture: true,
            host: None,
        })
    }

    /// This engine decoding with `engine` (by default the decoder's, [`DecodeEngine::Auto`]
    /// unless set with [`Decoder::with_decode_engine`]).
    pub fn with_engine(mut self, engine: DecodeEngine) -> Self {
        self.engine = engine;
        self
    }

    /// Whether the graph engine captures its decode step into a replayable graph where the
    /// backend supports it (`true` by default); `false` runs the same static-shape steps eagerly
    /// (how the GPU benchmark counts the kernels a replay saves).
    pub fn with_capture(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    /// The engine [`Generator::generate`] runs for `params` (never [`DecodeEngine::Auto`]; see
    /// its resolution there). Fails when the host engine is asked for with weights that are not
    /// `f32` or with [`TokenSelection::Device`], or the graph engine with
    /// [`TokenSelection::Host`].
    pub fn engine_for(&self, params: &SamplingParams) -> Result<DecodeEngine> {
        let cpu = is_cpu_backend(&self.device);
        match self.engine {
            DecodeEngine::Tensor => Ok(DecodeEngine::Tensor),
            DecodeEngine::Auto if cpu && self.dtype == DType::F32 && params.selection != TokenSelection::Device => {
                Ok(DecodeEngine::Host)
            }
            DecodeEngine::Auto if cpu || params.selection == TokenSelection::Host => Ok(DecodeEngine::Tensor),
            DecodeEngine::Auto => Ok(DecodeEngine::Graph),
            DecodeEngine::Host if self.dtype != DType::F32 => Err(BridgeError::InvalidInput(format!(
                "the host decoding engine runs f32 weights, these are {:?}",
                self.dtype
            ))),
            DecodeEngine::Host if params.selection == TokenSelection::Device => Err(BridgeError::InvalidInput(
                "the host decoding engine selects tokens on the host: use `selection = \"host\"` or \"auto\"".into(),
            )),
            DecodeEngine::Host => Ok(DecodeEngine::Host),
            DecodeEngine::Graph if params.selection == TokenSelection::Host => Err(BridgeError::InvalidInput(
                "the graph decoding engine selects tokens on the device: use `selection = \"device\"` or \"auto\""
                    .into(),
            )),
            DecodeEngine::Graph => Ok(DecodeEngine::Graph),
        }
    }

    /// Whether [`Generator::generate`] runs the host engine for `params` (see
    /// [`Generator::engine_for`], whose errors this returns).
    pub fn uses_host_engine(&self, params: &SamplingParams) -> Result<bool> {
        Ok(self.engine_for(params)? == DecodeEngine::Host)
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// Whether the tensor engine chooses tokens on the device for `params` ([`TokenSelection`]:
    /// `auto` is the device on a GPU, the host on a CPU backend). The graph engine always does,
    /// the host engine never.
    pub fn selects_on_device(&self, params: &SamplingParams) -> bool {
        match params.selection {
            TokenSelection::Host => false,
            TokenSelection::Device => true,
            TokenSelection::Auto => !is_cpu_backend(&self.device),
        }
    }

    fn check_prompts(&self, prompts: &[Vec<u32>]) -> Result<()> {
        if prompts.is_empty() {
            return Err(BridgeError::InvalidInput("no prompts".into()));
        }
        for (pi, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(BridgeError::InvalidInput(format!("prompt {pi} is empty")));
            }
            self.lm.check_ids(p.iter().copied()).map_err(|e| BridgeError::Model(format!("prompt {pi}: {e}")))?;
        }
        Ok(())
    }

    /// Runs the layers over `x` with the cache hook, then the final norm and head on the last
    /// slot: `x [B, T, hidden] → logits [B, V]`. `slots` is where `x`'s keys/values go.
    fn layers(&self, cache: &mut KvCache, x: Tensor<3>, ctx: &ForwardCtx, slots: std::ops::Range<usize>) -> Tensor<2> {
        let cfg = self.lm.config();
        let [b, t, _] = x.dims();
        let (hkv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        let scale = self.adapter.as_ref().map_or(0.0, LoraAdapter::scale);
        let mut h = x;
        for (i, layer) in self.base.layers.iter().enumerate() {
            let lora = self.adapter.as_ref().and_then(|a| a.layers.get(i));
            let (keys, values) = (&mut cache.keys[i], &mut cache.values[i]);
            let slots = slots.clone();
            h = self.lm.layer_forward(layer, lora, scale, h, ctx, |k, v| {
                let region = [0..b, 0..hkv, slots.clone(), 0..d];
                // Move the cache out (leaving a cheap placeholder) so that it is uniquely owned and
                // `slice_assign` writes in place instead of copying the whole cache.
                let old_k = std::mem::replace(keys, k.clone());
                let old_v = std::mem::replace(values, v.clone());
                *keys = old_k.slice_assign(region.clone(), k.clone());
                *values = old_v.slice_assign(region, v.clone());
                if slots.start == 0 {
                    // prefill: the new keys are all there is
                    (k, v)
                } else {
                    let filled = [0..b, 0..hkv, 0..slots.end, 0..d];
                    (keys.clone().slice(filled.clone()), values.clone().slice(filled))
                }
            });
        }
        let last = self.base.norm.forward(h.slice([0..b, t - 1..t]), cfg.rms_norm_eps);
        self.lm.head(&self.base, last).reshape([b, cfg.vocab_size])
    }

    /// Prefills `prompts` (left-padded, see the [module docs](self)) into a fresh cache of
    /// `capacity` slots per row, and returns it with the logits of each prompt's last token.
    /// This and [`Generator::decode`] are the tensor engine's steps, whatever
    /// [`Generator::with_engine`] chose for [`Generator::generate`].
    ///
    /// # Shapes
    /// Returns logits `[prompts, vocab]`.
    pub fn prefill(&mut self, prompts: &[Vec<u32>], capacity: usize) -> Result<(KvCache, Tensor<2>)> {
        self.check_prompts(prompts)?;
        let cfg = self.lm.config();
        let (b, p) = (prompts.len(), prompts.iter().map(Vec::len).max().unwrap_or(1));
        if capacity < p {
            return Err(BridgeError::InvalidInput(format!("cache capacity {capacity} < prompt length {p}")));
        }
        let (hkv, d, cap) = (cfg.num_key_value_heads, cfg.head_dim, capacity);
        let device = &self.device;
        let pad = i64::from(self.lm.text_codec().pad_token_id().min(cfg.vocab_size as u32 - 1));
        let offsets: Vec<usize> = prompts.iter().map(|q| p - q.len()).collect();
        let mut ids = Vec::with_capacity(b * p);
        for q in prompts {
            ids.extend(std::iter::repeat_n(pad, p - q.len()));
            ids.extend(q.iter().map(|&x| i64::from(x)));
        }
        // Per-row rotary tables for every slot of the cache, and the pad mask.
        let positions: Vec<usize> = offsets.iter().flat_map(|&o| (0..cap).map(move |j| j.saturating_sub(o))).collect();
        let (cos, sin) = self.lm.rope().rows(&positions);
        let cos: Tensor<4> = Tensor::from_data(TensorData::new(cos, [b, 1, cap, d]), device);
        let sin = signed_sin(Tensor::from_data(TensorData::new(sin, [b, 1, cap, d]), device));
        let dtype = self.dtype;
        let (cos_q, sin_q, score_scale) = query_tables(&cos, &sin, d, dtype);
        let mask: Vec<f32> =
            offsets.iter().flat_map(|&o| (0..cap).map(move |j| if j < o { MASKED } else { 0.0 })).collect();
        let prefill_mask = causal_mask(b, p, |r, j| j < offsets[r]);
        // allocated in the weights' dtype directly (no f32 cache to cast)
        let zeros =
            || Tensor::<4>::zeros([b, hkv, cap, d], TensorCreationOptions::new(device.clone()).with_dtype(dtype));
        let mut cache = KvCache {
            keys: (0..cfg.num_hidden_layers).map(|_| zeros()).collect(),
            values: (0..cfg.num_hidden_layers).map(|_| zeros()).collect(),
            cos_q,
            sin_q,
            score_scale,
            cos: to_dtype(cos, dtype),
            sin: to_dtype(sin, dtype),
            mask: Tensor::from_data(TensorData::new(mask, [b, 1, 1, cap]), device),
            offsets,
            len: p,
            capacity: cap,
        };
        let rows = [0..b, 0..1, 0..p, 0..d];
        let ctx = ForwardCtx {
            cos: cache.cos.clone().slice(rows.clone()),
            sin: cache.sin.clone().slice(rows.clone()),
            cos_q: cache.cos_q.clone().slice(rows.clone()),
            sin_q: cache.sin_q.clone().slice(rows),
            score_scale: cache.score_scale,
            rot: self.rot.clone(),
            mask_bias: Some(Tensor::from_data(TensorData::new(prefill_mask, [b, 1, p, p]), device)),
        };
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [b, p]), device);
        let x = self.base.embed_tokens.weight.val().select(0, ids.reshape([b * p])).reshape([b, p, cfg.hidden_size]);
        let logits = self.layers(&mut cache, x, &ctx, 0..p);
        self.stats.prefill_calls += 1;
        self.stats.prefill_rows += b;
        Ok((cache, logits))
    }

    /// Appends one token per row (`tokens[r]` to row `r`) and returns the next-token logits.
    ///
    /// # Shapes
    /// `tokens`: one id per cache row; returns logits `[B, vocab]`.
    pub fn decode(&mut self, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor<2>> {
        let cfg = self.lm.config();
        let b = cache.rows();
        if tokens.len() != b {
            return Err(BridgeError::InvalidInput(format!("{} tokens for a cache of {b} rows", tokens.len())));
        }
        self.lm.check_ids(tokens.iter().copied())?;
        let slot = cache.len;
        if slot >= cache.capacity {
            return Err(BridgeError::InvalidInput(format!("the KV cache is full ({} slots)", cache.capacity)));
        }
        let d = cfg.head_dim;
        let ids: Tensor<1, Int> = Tensor::from_data(
            TensorData::new(tokens.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [b]),
            &self.device,
        );
        let x = self.base.embed_tokens.weight.val().select(0, ids).reshape([b, 1, cfg.hidden_size]);
        let row = [0..b, 0..1, slot..slot + 1, 0..d];
        let ctx = ForwardCtx {
            cos: cache.cos.clone().slice(row.clone()),
            sin: cache.sin.clone().slice(row.clone()),
            cos_q: cache.cos_q.clone().slice(row.clone()),
            sin_q: cache.sin_q.clone().slice(row),
            score_scale: cache.score_scale,
            rot: self.rot.clone(),
            mask_bias: Some(cache.mask.clone().slice([0..b, 0..1, 0..1, 0..slot + 1])),
        };
        let logits = self.layers(cache, x, &ctx, slot..slot + 1);
        cache.len += 1;
        self.stats.decode_steps += 1;
        self.stats.decode_rows += b;
        Ok(logits)
    }

    /// Samples `params.n` completions per prompt (output order: prompt by prompt, sample by
    /// sample), with the seeding described in the [module docs](self), on the engine of
    /// [`Generator::engine_for`]. The semantics are those of
    /// [`CausalLm::sample`](bridge_core::policy::CausalLm::sample).
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut BridgeRng,
    ) -> Result<Vec<Completion>> {
        params.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        self.check_prompts(prompts)?;
        let lm = self.lm;
        let vocab = lm.config().vocab_size;
        let sample_vocab = lm.text_codec().vocab_size().min(vocab);
        let rule =
            SelectionRule { temperature: params.temperature, top_k: params.top_k, top_p: params.top_p, sample_vocab };
        let mut progress = Progress::new(lm, prompts.len(), params, rng);
        if params.max_new_tokens == 0 {
            return progress.into_completions();
        }
        let engine = self.engine_for(params)?;
        let on_device = match engine {
            DecodeEngine::Host => false,
            DecodeEngine::Graph => true,
            _ => self.selects_on_device(params),
        };
        let n = params.n;
        let capacity = prompts.iter().map(Vec::len).max().unwrap_or(1) + params.max_new_tokens;
        let (mut session, mut logits) = if engine == DecodeEngine::Host {
            if self.host.is_none() {
                self.host = Some(host::HostModel::new(lm, &self.base, self.adapter.as_ref())?);
            }
            let model = self.host.as_ref().ok_or_else(|| BridgeError::Model("no host engine".into()))?;
            let (cache, logits) = model.prefill(lm, prompts, capacity)?;
            self.stats.prefill_calls += 1;
            self.stats.prefill_rows += prompts.len();
            (Session::Host(cache), StepLogits::Host(logits))
        } else {
            let (cache, logits) = self.prefill(prompts, capacity)?;
            (Session::Tensor(cache), StepLogits::Tensor(logits))
        };
        // `logit_row[c]`: the row of `logits` that cache row `c` reads.
        let mut logit_row: Vec<usize> = progress.active.iter().map(|&k| k / n).collect();
        if n > 1 {
            session.select_rows(&logit_row)?;
            if let (true, StepLogits::Tensor(t)) = (on_device, &logits) {
                // the device path reads logits row by row: repeat each prompt's row n times
                logits = StepLogits::Tensor(t.clone().select(0, index_tensor(&logit_row, &self.device)));
            }
        }
        loop {
            let picks = match logits {
                StepLogits::Tensor(t) if on_device => progress.device_picks(t, &rule)?,
                logits => {
                    let host = match logits {
                        StepLogits::Tensor(t) => host_vec(t)?,
                        StepLogits::Host(v) => v,
                    };
                    let picks = progress.host_picks(&host, &logit_row, vocab, sample_vocab);
                    if let Session::Host(cache) = &mut session {
                        cache.recycle(host);
                    }
                    picks
                }
            };
            let mut next = progress.record(picks)?;
            let keep = progress.live();
            if keep.is_empty() {
                break;
            }
            if engine == DecodeEngine::Graph {
                let Session::Tensor(cache) = session else {
                    return Err(BridgeError::Model("the graph engine decodes a tensor cache".into()));
                };
                self.decode_graph(cache, &mut progress, next, rule)?;
                break;
            }
            if keep.len() < progress.active.len() {
                session.select_rows(&keep)?;
                next = keep.iter().map(|&c| next[c]).collect();
                progress.compact(&keep);
                self.stats.compactions += 1;
            }
            logits = match &mut session {
                Session::Tensor(cache) => StepLogits::Tensor(self.decode(cache, &next)?),
                Session::Host(cache) => {
                    let model = self.host.as_ref().ok_or_else(|| BridgeError::Model("no host engine".into()))?;
                    let logits = model.decode(lm, cache, &next)?;
                    self.stats.decode_steps += 1;
                    self.stats.decode_rows += next.len();
                    StepLogits::Host(logits)
                }
            };
            logit_row = (0..progress.active.len()).collect();
        }
        progress.into_completions()
    }

    /// The graph engine's decode steps after the prefill and the first token: `tokens` holds the
    /// token each cache row appends next (see `generate/graph.rs`).
    fn decode_graph(
        &mut self,
        mut cache: KvCache,
        progress: &mut Progress<'_>,
        mut tokens: Vec<u32>,
        rule: SelectionRule,
    ) -> Result<()> {
        let mut slot = cache.len();
        let live = progress.live();
        if live.len() < progress.active.len() {
            cache.select_rows(&live)?;
            tokens = live.iter().map(|&c| tokens[c]).collect();
            progress.compact(&live);
            self.stats.compactions += 1;
        }
        let model = StepModel { lm: self.lm, base: &self.base, adapter: self.adapter.as_ref(), rot: &self.rot, rule };
        let batch = RefCell::new(StaticBatch::new(cache.into_parts()));
        let mode = if self.capture && !is_cpu_backend(&self.device) && rule.capturable() {
            StepMode::Capture
        } else {
            StepMode::Eager
        };
        let mut stepper = Stepper::new(&model, &batch, self.device.clone(), mode);
        let mut stats = GenerationStats::default();
        let result = (|| -> Result<()> {
            loop {
                let live = progress.live();
                if live.is_empty() {
                    return Ok(());
                }
                let rows = progress.active.len();
                // Finished rows stay while a hardware graph replays and at least half are live.
                if live.len() < rows && (!stepper.has_hardware_graph() || 2 * live.len() <= rows) {
                    stepper.invalidate();
                    batch.borrow_mut().select_rows(&live)?;
                    tokens = live.iter().map(|&c| tokens[c]).collect();
                    progress.compact(&live);
                    stats.compactions += 1;
                }
                let uniforms = progress.uniforms(&rule);
                batch.borrow_mut().set_inputs(&tokens, slot, &uniforms)?;
                let picks = stepper.run()?;
                slot += 1;
                stats.decode_steps += 1;
                stats.decode_rows += progress.active.len();
                tokens = progress.record(picks.into_iter().map(|(t, l)| (t, l, None)).collect())?;
            }
        })();
        self.stats.compactions += stats.compactions;
        self.stats.decode_steps += stats.decode_steps;
        self.stats.decode_rows += stats.decode_rows;
        self.stats.graph_captures += stepper.captures;
        self.stats.graph_replays += stepper.replays;
        self.stats.graph_refusals += stepper.refusals;
        result
    }
}
