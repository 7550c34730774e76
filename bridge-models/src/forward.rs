//! The tensor forward pass: the decoder shared by Llama, Qwen2 and Qwen3 in burn tensor
//! operations, on any backend and in any float dtype, differentiable through burn's autodiff.
//!
//! The three families differ only in where biases sit (Qwen2: q, k, v), whether queries and keys
//! get a per-head RMSNorm before the rotary embedding (Qwen3) and how rotary frequencies are
//! scaled (Llama 3). Everything else is common:
//!
//! ```text
//! h = embed_tokens[ids]
//! for each layer:
//!     h = h + o_proj(attention(rope(q_norm(q_proj(n))), rope(k_norm(k_proj(n))), v_proj(n)))   n = input_layernorm(h)
//!     h = h + down_proj(silu(gate_proj(n)) * up_proj(n))                                       n = post_attention_layernorm(h)
//! logits = lm_head(norm(h))            (lm_head = embed_tokensᵀ when tied)
//! ```
//!
//! Attention is causal and grouped-query (each key/value head serves
//! `num_attention_heads / num_key_value_heads` query heads, as in `transformers`' `repeat_kv`);
//! batches are right-padded, positions are `0..T`, and padded keys are masked. Every linear
//! projection computes `x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ` when an adapter is passed.
//!
//! One layer function ([`Decoder::layer_forward`]) serves training (`token_scores` on the tensor
//! engine, [`Decoder::forward_logits`]) and generation (`crate::generate`'s tensor engine, which
//! passes a hook that writes keys and values into its cache). The CPU engines (`crate::fused`,
//! `crate::generate::host`) compute the same function over host buffers with the shared row
//! kernels of `crate::kernels`.
//!
//! # Memory-saving paths
//! Where the tensor engine's custom operations run (`crate::ops`; see
//! [`TensorPaths`](crate::decoder::TensorPaths)), `token_scores` computes log-probabilities and
//! entropies over vocabulary chunks instead of an `[N, V]` log-softmax, and on the GPU attention
//! runs as one fused causal operation instead of materialised `[B, H, T, T]` scores. The rotary
//! embedding is `x·cos + x[perm]·sin±` (a gather, with rotate-half's sign folded into the sin
//! table), exactly the values of the former `x·cos + (x·R)·sin` with a `[d, d]` matrix `R`.
//!
//! # Precision
//! In a half dtype the forward rounds where `transformers` rounds: see
//! [`precision`](crate::weights::precision) for the rules this module implements
//! ([`to_dtype`], [`upcast_half`], [`mul_scalar_rounded`], `affine_rows`, `silu_rounded`,
//! [`query_tables`]).

use crate::decoder::Decoder;
use crate::tensors::tensor_from_host;
use crate::weights::lora::{LoraAdapter, LoraLayer, LoraPair};
use crate::weights::{DecoderLayer, DecoderWeights, Proj, RmsNorm};
use bridge_core::policy::{SequenceBatch, TokenScores};
use bridge_core::{BridgeError, Result};
use burn::module::Param;
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::module::linear;
use burn::tensor::{Bool, DType, Device, FloatDType, Int, Tensor, TensorData};

/// `x·w + b` over the last dimension of `x`, computed as one 2-D product: the leading dimensions
/// are folded into the rows first (a free reshape of the contiguous activations). burn's `linear`
/// on a rank-3 input runs a batched matmul that re-packs the weight per batch and, for a
/// non-contiguous weight, copies it; its backward does the same with the transposed weight.
/// In 2-D every operand (including a transposed view) goes to the strided gemm without a copy.
///
/// # Shapes
/// `x [.., in]`, `w [in, out]`, `b [out]` → `[.., out]`.
fn linear_rows<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    let mut dims = x.dims();
    let inp = dims[D - 1];
    let rows = dims.iter().product::<usize>() / inp.max(1);
    dims[D - 1] = w.dims()[1];
    linear(x.reshape([rows, inp]), w, b).reshape(dims)
}

/// `x·w + b` rounded once: in a half dtype with a bias, the product and the bias are summed in
/// f32 before the single rounding, as PyTorch's `addmm` (and cuBLAS' bias epilogue) do; burn's
/// half-dtype matmul would round the product before the bias is added.
fn affine_rows<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    match (x.dtype(), b) {
        (dtype @ (DType::BF16 | DType::F16), Some(b)) => {
            to_dtype(linear_rows(upcast_half(x), upcast_half(w), Some(upcast_half(b))), dtype)
        }
        (_, b) => linear_rows(x, w, b),
    }
}

impl Proj {
    /// `x·W + b`, plus `scale·(x·Aᵀ)·Bᵀ` when a LoRA pair is given.
    ///
    /// # Shapes
    /// `x [.., in] → [.., out]` (`W [in, out]`, `A [r, in]`, `B [out, r]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>, lora: Option<(&LoraPair, f64)>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        match lora {
            None => affine_rows(x, self.weight.val(), bias),
            Some((pair, scale)) => {
                let down = linear_rows(x.clone(), pair.lora_a.val().transpose(), None);
                let up = linear_rows(down, pair.lora_b.val().transpose(), None);
                affine_rows(x, self.weight.val(), bias) + mul_scalar_rounded(up, scale)
            }
        }
    }
}

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) · weight` over the last dimension. In f32 (and f64, for gradient
    /// checks) everything stays in the dtype of `x`; in a half dtype the normalisation runs in f32
    /// and is cast back before the scale, as `transformers` does.
    ///
    /// # Shapes
    /// `x [.., d] → [.., d]` (`weight [d]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>, eps: f64) -> Tensor<D> {
        let dtype = x.dtype();
        let x = upcast_half(x);
        let inv_rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt().recip();
        to_dtype(x * inv_rms, dtype) * self.weight.val().unsqueeze::<D>()
    }
}

/// `t` in `dtype` (no operation when it already is).
pub(crate) fn to_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(FloatDType::from(dtype)) }
}

/// `t` in f32 when it is a half dtype (bf16, f16), unchanged otherwise (f32 and f64).
pub(crate) fn upcast_half<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.cast(FloatDType::F32),
        _ => t,
    }
}

/// `t · s`. In a half dtype the product is computed in f32 and rounded once, as PyTorch does
/// (burn-flex would first round the scalar itself to the half dtype).
pub(crate) fn mul_scalar_rounded<const D: usize>(t: Tensor<D>, s: f64) -> Tensor<D> {
    match t.dtype() {
        dtype @ (DType::BF16 | DType::F16) => to_dtype(t.cast(FloatDType::F32).mul_scalar(s), dtype),
        _ => t.mul_scalar(s),
    }
}

/// `silu(x)`, in a half dtype computed in f32 and rounded once (PyTorch's kernel; burn's `silu` is
/// `x · sigmoid(x)`, two roundings).
fn silu_rounded<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    to_dtype(silu(upcast_half(x)), dtype)
}

/// Per-call constants of a forward pass: rotary tables and the attention mask.
///
/// # Shapes
/// The rotary tables are `[1 or B, 1, T, d]` (one row per sequence when positions differ by
/// row, as in [`crate::generate`]); `mask_bias` is `[1 or B, 1, T, S]` for `T` queries over `S`
/// keys (`S = T` in training, the filled cache length when decoding).
pub(crate) struct ForwardCtx {
    pub(crate) cos: Tensor<4>,
    /// `sin` with rotate-half's sign folded in ([`signed_sin`]): negated on the first half.
    pub(crate) sin: Tensor<4>,
    /// The query's table: `cos / √head_dim` (the attention scale folded in) in f32/f64, `cos`
    /// in a half dtype (see [`query_tables`]).
    pub(crate) cos_q: Tensor<4>,
    /// The signed `sin / √head_dim` or `sin`, as `cos_q`.
    pub(crate) sin_q: Tensor<4>,
    /// The attention scale still to apply to the scores (`Some` in a half dtype).
    pub(crate) score_scale: Option<f64>,
    /// `[d]`: rotate-half as an index permutation (see [`rotate_half_index`]).
    pub(crate) rot: Tensor<1, Int>,
    /// The additive mask of the materialised attention; `None`: causal attention through the
    /// fused operation (`crate::ops::attention`), which needs right-padded rows and `S = T`, and
    /// reads the unscaled tables `cos`, `sin` for the query too (it applies `1/√d` itself).
    pub(crate) mask_bias: Option<Tensor<4>>,
}

/// The query's rotary tables for f32 tables `cos`, `sin` (signed, see [`signed_sin`]) and weights
/// of `dtype`, in `dtype`, with
/// the scale left for the scores: in f32/f64 the softmax scale `1/√d` is folded into the tables
/// (one multiplication fewer per layer; exact up to f32 rounding); in a half dtype it is applied
/// to the scores after `q·kᵀ`, where `transformers` applies it, so that every bf16 rounding
/// happens where it does there.
pub(crate) fn query_tables(
    cos: &Tensor<4>,
    sin: &Tensor<4>,
    head_dim: usize,
    dtype: DType,
) -> (Tensor<4>, Tensor<4>, Option<f64>) {
    let scale = 1.0 / (head_dim as f64).sqrt();
    match dtype {
        DType::BF16 | DType::F16 => (to_dtype(cos.clone(), dtype), to_dtype(sin.clone(), dtype), Some(scale)),
        _ => (to_dtype(cos.clone().mul_scalar(scale), dtype), to_dtype(sin.clone().mul_scalar(scale), dtype), None),
    }
}

/// What is added to the score of a masked (query, key) pair: large and negative but finite, so a
/// fully masked row gives a uniform distribution instead of NaN.
pub(crate) const MASKED: f32 = -1.0e9;

/// The additive attention mask `[rows, 1, T, T]` as host values: 0 where query `i` of row `r`
/// may attend key `j` (`j ≤ i` and `pad(r, j)` false), [`MASKED`] elsewhere.
pub(crate) fn causal_mask(rows: usize, t: usize, pad: impl Fn(usize, usize) -> bool) -> Vec<f32> {
    let mut m = vec![0.0f32; rows * t * t];
    for r in 0..rows {
        for i in 0..t {
            for j in 0..t {
                if j > i || pad(r, j) {
                    m[(r * t + i) * t + j] = MASKED;
                }
            }
        }
    }
    m
}

impl Decoder {
    /// The additive mask `[B or 1, 1, T, T]`: 0 where query `i` may attend key `j` (`j ≤ i` and
    /// `j` is a real token), [`MASKED`] elsewhere.
    fn mask_bias(&self, b: usize, t: usize, valid: Option<&[Vec<bool>]>, device: &Device) -> Tensor<4> {
        match valid {
            None => tensor_from_host(causal_mask(1, t, |_, _| false), [1, 1, t, t], device),
            Some(valid) => tensor_from_host(causal_mask(b, t, |r, j| !valid[r][j]), [b, 1, t, t], device),
        }
    }

    /// The final hidden states `[B, T, hidden]` (after the last norm).
    fn forward_hidden(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        ids: Tensor<2, Int>,
        ctx: &ForwardCtx,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let cfg = self.config();
        let mut h = base.embed_tokens.weight.val().select(0, ids.reshape([b * t])).reshape([b, t, cfg.hidden_size]);
        let scale = adapter.map_or(0.0, LoraAdapter::scale);
        for (i, layer) in base.layers.iter().enumerate() {
            let lora = adapter.and_then(|a| a.layers.get(i));
            h = self.layer_forward(layer, lora, scale, h, ctx, |k, v| (k, v));
        }
        base.norm.forward(h, cfg.rms_norm_eps)
    }

    /// `hidden [.., hidden] → logits [.., vocab]` through the LM head (or the tied embedding).
    pub(crate) fn head<const D: usize>(&self, base: &DecoderWeights, hidden: Tensor<D>) -> Tensor<D> {
        match &base.lm_head {
            Some(head) => head.forward(hidden, None),
            None => linear_rows(hidden, base.embed_tokens.weight.val().transpose(), None),
        }
    }

    /// One decoder layer, shared by training and generation.
    ///
    /// `kv` receives the new keys and values `[B, Hkv, T, d]` (after the rotary embedding) and
    /// returns those to attend over, `[B, Hkv, S, d]`: training passes them through
    /// (`|k, v| (k, v)`); the generation engine writes them into its cache and returns the filled
    /// cache. `ctx.mask_bias` must be `[1 or B, 1, T, S]`.
    ///
    /// # Shapes
    /// `x [B, T, hidden] → [B, T, hidden]`.
    pub(crate) fn layer_forward<F>(
        &self,
        layer: &DecoderLayer,
        lora: Option<&LoraLayer>,
        scale: f64,
        x: Tensor<3>,
        ctx: &ForwardCtx,
        kv: F,
    ) -> Tensor<3>
    where
        F: FnOnce(Tensor<4>, Tensor<4>) -> (Tensor<4>, Tensor<4>),
    {
        let cfg = self.config();
        let eps = cfg.rms_norm_eps;
        let l = |f: fn(&LoraLayer) -> Option<&LoraPair>| lora.and_then(f).map(|p| (p, scale));

        // attention block
        let [b, t, _] = x.dims();
        let (hq, hkv, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let n = layer.input_layernorm.forward(x.clone(), eps);
        let attn = &layer.self_attn;
        let mut q = attn.q_proj.forward(n.clone(), l(|w| w.q_proj.as_ref())).reshape([b, t, hq, d]);
        let mut k = attn.k_proj.forward(n.clone(), l(|w| w.k_proj.as_ref())).reshape([b, t, hkv, d]);
        let v = attn.v_proj.forward(n, l(|w| w.v_proj.as_ref())).reshape([b, t, hkv, d]);
        if let Some(qn) = &attn.q_norm {
            q = qn.forward(q, eps);
        }
        if let Some(kn) = &attn.k_norm {
            k = kn.forward(k, eps);
        }
        let k = apply_rope(k.swap_dims(1, 2), &ctx.cos, &ctx.sin, &ctx.rot); // [B, Hkv, T, d]
        let o = match &ctx.mask_bias {
            None => self.fused_attention_block(q.swap_dims(1, 2), k, v.swap_dims(1, 2), ctx, kv),
            Some(mask_bias) => {
                // The softmax scale 1/√d is folded into the query's rotary tables (in f32).
                let q = apply_rope(q.swap_dims(1, 2), &ctx.cos_q, &ctx.sin_q, &ctx.rot); // [B, Hq, T, d]
                let (k, v) = kv(k, v.swap_dims(1, 2)); // [B, Hkv, S, d]
                let s = k.dims()[2];
                // Grouped-query attention without copying keys and values (`repeat_kv`): the
                // n_rep query heads sharing a key/value head are stacked along the time axis of
                // one matmul.
                let n_rep = hq / hkv;
                let mut scores = q.reshape([b, hkv, n_rep * t, d]).matmul(k.swap_dims(2, 3)).reshape([b, hq, t, s]);
                if let Some(scale) = ctx.score_scale {
                    scores = mul_scalar_rounded(scores, scale);
                }
                // Mask and softmax in f32 (the mask is f32), probabilities back in the
                // activations' dtype.
                let dtype = scores.dtype();
                let probs = to_dtype(softmax(upcast_half(scores) + mask_bias.clone(), 3), dtype);
                probs.reshape([b, hkv, n_rep * t, s]).matmul(v).reshape([b, hq, t, d])
            }
        };
        let o = o.swap_dims(1, 2).reshape([b, t, hq * d]);
        let x = x + attn.o_proj.forward(o, l(|w| w.o_proj.as_ref()));

        // MLP block
        let n = layer.post_attention_layernorm.forward(x.clone(), eps);
        let mlp = &layer.mlp;
        let gate = silu_rounded(mlp.gate_proj.forward(n.clone(), l(|w| w.gate_proj.as_ref())));
        let up = mlp.up_proj.forward(n, l(|w| w.up_proj.as_ref()));
        x + mlp.down_proj.forward(gate * up, l(|w| w.down_proj.as_ref()))
    }

    /// Attention through the fused causal operation: the query's rotary embedding with the
    /// unscaled tables (the operation applies `1/√d`), then `crate::ops::attention`.
    ///
    /// # Shapes
    /// `q [B, Hq, T, d]` (before its rotary embedding), `k`, `v [B, Hkv, T, d]` → `[B, Hq, T, d]`.
    fn fused_attention_block<F>(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, ctx: &ForwardCtx, kv: F) -> Tensor<4>
    where
        F: FnOnce(Tensor<4>, Tensor<4>) -> (Tensor<4>, Tensor<4>),
    {
        let q = apply_rope(q, &ctx.cos, &ctx.sin, &ctx.rot);
        let (k, v) = kv(k, v);
        #[cfg(any(feature = "flex", feature = "cuda"))]
        {
            let [b, hq, _, _] = q.dims();
            let s = k.dims()[2];
            let chunk = self.tensor_paths().query_chunk.unwrap_or_else(|| crate::ops::query_chunk(b * hq, s));
            crate::ops::attention::causal_attention(q, k, v, chunk)
        }
        #[cfg(not(any(feature = "flex", feature = "cuda")))]
        {
            let _ = (q, k, v);
            unreachable!("the fused attention is only chosen where crate::ops runs")
        }
    }

    /// The forward constants for weights of `dtype`: rotary tables in `dtype` (computed in f32 and
    /// cast, as `transformers` casts `cos`/`sin` to the activations' dtype), the mask in f32, or
    /// no mask when attention runs through the fused causal operation (`fused_attention`; the
    /// rows must then be right-padded).
    fn ctx(
        &self,
        b: usize,
        t: usize,
        valid: Option<&[Vec<bool>]>,
        device: &Device,
        dtype: DType,
        fused_attention: bool,
    ) -> ForwardCtx {
        let d = self.config().head_dim;
        let (cos, sin) = self.rope().tensors(t, device);
        let sin = signed_sin(sin);
        let (cos_q, sin_q, score_scale) = query_tables(&cos, &sin, d, dtype);
        ForwardCtx {
            cos_q,
            sin_q,
            score_scale,
            cos: to_dtype(cos, dtype),
            sin: to_dtype(sin, dtype),
            rot: rotate_half_index(d, device),
            mask_bias: (!fused_attention).then(|| self.mask_bias(b, t, valid, device)),
        }
    }

    /// Logits `[B, T, vocab]` of `ids [B, T]` under `π(·; base, adapter)`, differentiable when the
    /// weights live on an autodiff device; f32 whatever the weights' dtype. `attention_mask
    /// [B, T]` marks real tokens (`true`) of right-padded rows; positions are `0..T` in every row.
    ///
    /// Fails (instead of panicking) on ids outside the vocabulary, mismatched mask shapes and
    /// weights or adapters that do not fit the config.
    ///
    /// # Shapes
    /// `ids [B, T]`, `attention_mask [B, T]` → logits `[B, T, vocab]`.
    pub fn forward_logits(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<3>> {
        self.check_weights(base, adapter)?;
        let [b, t] = ids.dims();
        if b == 0 || t == 0 {
            return Err(BridgeError::InvalidInput(format!("empty id tensor of shape [{b}, {t}]")));
        }
        let host_ids: Vec<i64> = ids
            .to_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| BridgeError::InvalidInput(format!("reading token ids: {e:?}")))?;
        if let Some(bad) = host_ids.iter().find(|&&x| x < 0 || x as u64 >= self.config().vocab_size as u64) {
            return Err(BridgeError::Model(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config().vocab_size
            )));
        }
        let valid = match attention_mask {
            None => None,
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(BridgeError::InvalidInput(format!(
                        "attention mask has shape {:?}, ids have [{b}, {t}]",
                        m.dims()
                    )));
                }
                let flat: Vec<bool> = m
                    .into_data()
                    .convert::<bool>()
                    .try_into_vec::<bool>()
                    .map_err(|e| BridgeError::InvalidInput(format!("reading the attention mask: {e:?}")))?;
                Some(flat.chunks(t).map(<[bool]>::to_vec).collect::<Vec<_>>())
            }
        };
        let device = base.embed_tokens.weight.device();
        // Causal attention alone is exact when every row is right-padded (real tokens first).
        let right_padded = valid.as_ref().is_none_or(|v| v.iter().all(|r| r.windows(2).all(|w| w[0] || !w[1])));
        let fused = right_padded && self.fused_attention(&device)?;
        let (cast_base, cast_adapter) = self.autocast(base, adapter);
        let (base, adapter) = (cast_base.as_ref().unwrap_or(base), cast_adapter.as_ref().or(adapter));
        let ctx = self.ctx(b, t, valid.as_deref(), &device, base.dtype(), fused);
        let hidden = self.forward_hidden(base, adapter, ids, &ctx);
        Ok(upcast_half(self.head(base, hidden)))
    }

    /// The final hidden states `[B, T, hidden]` of a right-padded batch (padded keys masked) and
    /// its ids `[B, T]`, on the tensor engine.
    fn batch_hidden(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
    ) -> Result<(Tensor<3>, Tensor<2, Int>)> {
        let device = base.embed_tokens.weight.device();
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let valid: Vec<Vec<bool>> = batch.rows().iter().map(|r| (0..t).map(|j| j < r.tokens.len()).collect()).collect();
        let all_full = valid.iter().all(|r| r.iter().all(|&x| x));
        // A sequence batch is right-padded: causal attention is exact at every real position.
        let fused = self.fused_attention(&device)?;
        let ctx = self.ctx(b, t, (!all_full).then_some(valid.as_slice()), &device, base.dtype(), fused);
        let ids = batch.ids(&device);
        Ok((self.forward_hidden(base, adapter, ids.clone(), &ctx), ids))
    }

    /// [`CausalLm::hidden_states`](bridge_core::policy::CausalLm::hidden_states) on the tensor
    /// engine, in f32 whatever the weights' dtype (the caller has checked the weights and the ids).
    ///
    /// # Shapes
    /// `[B, T, hidden]` for a batch of `B` rows padded to `T` tokens.
    pub(crate) fn tensor_hidden_states(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
    ) -> Result<Tensor<3>> {
        Ok(upcast_half(self.batch_hidden(base, adapter, batch)?.0))
    }

    /// [`CausalLm::token_scores`](bridge_core::policy::CausalLm::token_scores) on the tensor
    /// engine (the caller has checked the weights and the ids).
    pub(crate) fn tensor_token_scores(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
        with_entropy: bool,
    ) -> Result<TokenScores> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let (hidden, ids) = self.batch_hidden(base, adapter, batch)?;
        let device = base.embed_tokens.weight.device();
        // The last position predicts nothing that is scored.
        let logits = self.head(base, hidden.slice([0..b, 0..t - 1])); // [B, T−1, V], the weights' dtype
        let targets = ids.slice([0..b, 1..t]);
        let (logprobs, entropy) = if self.chunked_scores(&device) {
            self.chunked_scores_of(logits, targets, with_entropy)
        } else {
            log_softmax_scores(logits, targets, with_entropy)
        };
        Ok(TokenScores { logprobs, entropy, mask: batch.target_mask(&device) })
    }

    /// Token scores through the chunked operation (`crate::ops::token_scores`).
    fn chunked_scores_of(
        &self,
        logits: Tensor<3>,
        targets: Tensor<2, Int>,
        with_entropy: bool,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        #[cfg(any(feature = "flex", feature = "cuda"))]
        {
            let [b, t1, v] = logits.dims();
            let n = b * t1;
            let chunk = self.tensor_paths().vocab_chunk.unwrap_or_else(|| crate::ops::vocab_chunk(n));
            let scores = crate::ops::token_scores::chunked_token_scores(
                logits.reshape([n, v]),
                targets.reshape([n]),
                chunk,
                with_entropy,
            );
            let logprobs = scores.clone().slice([0..1, 0..n]).reshape([b, t1]);
            (logprobs, with_entropy.then(|| scores.slice([1..2, 0..n]).reshape([b, t1])))
        }
        #[cfg(not(any(feature = "flex", feature = "cuda")))]
        {
            let _ = (logits, targets, with_entropy);
            unreachable!("the chunked scores are only chosen where crate::ops runs")
        }
    }
}

/// Per-target log-probabilities `[B, T−1]` (and entropies) of `logits [B, T−1, V]` through an f32
/// `[B, T−1, V]` log-softmax: the path the chunked operation replaces, kept where that operation
/// does not run and as its reference.
pub(crate) fn log_softmax_scores(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    with_entropy: bool,
) -> (Tensor<2>, Option<Tensor<2>>) {
    let [b, t1, _] = logits.dims();
    let logp = log_softmax(upcast_half(logits), 2); // f32 whatever the weights' dtype
    let entropy = with_entropy.then(|| (logp.clone().exp() * logp.clone()).sum_dim(2).neg().reshape([b, t1]));
    let logprobs = logp.gather(2, targets.reshape([b, t1, 1])).reshape([b, t1]);
    (logprobs, entropy)
}

/// HF's `x·cos + rotate_half(x)·sin` with `rotate_half(x) = cat(−x₂, x₁)` over the last dim,
/// computed as `x·cos + x[perm]·sin±`: `perm` swaps the halves ([`rotate_half_index`], one
/// gather) and `sin±` carries rotate-half's sign ([`signed_sin`]). `x[perm]·sin±` and
/// `rotate_half(x)·sin` are the same products (a sign flip is exact), so this is bit-identical to
/// the formula in every dtype.
///
/// # Shapes
/// `x [B, H, T, d]`, `cos`, `sin± [1 or B, 1, T, d]`, `perm [d]` → `[B, H, T, d]`.
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>, perm: &Tensor<1, Int>) -> Tensor<4> {
    x.clone() * cos.clone() + x.select(3, perm.clone()) * sin.clone()
}

/// Rotate-half as a permutation of the last dimension: `[half, .., d−1, 0, .., half−1]`
/// (`x[perm] = cat(x₂, x₁)`; the sign of `−x₂` lives in [`signed_sin`]).
///
/// # Shapes
/// Returns `[d]`.
pub(crate) fn rotate_half_index(d: usize, device: &Device) -> Tensor<1, Int> {
    let half = d / 2;
    let perm: Vec<i64> = (0..d).map(|j| ((j + half) % d) as i64).collect();
    Tensor::from_data(TensorData::new(perm, [d]), device)
}

/// `sin` with rotate-half's sign folded in: negated on the first half of the last dimension
/// (exact: a sign flip).
///
/// # Shapes
/// `sin [.., d] → [.., d]`.
pub(crate) fn signed_sin(sin: Tensor<4>) -> Tensor<4> {
    let d = sin.dims()[3];
    let sign: Vec<f32> = (0..d).map(|j| if j < d / 2 { -1.0 } else { 1.0 }).collect();
    let sign = to_dtype(tensor_from_host(sign, [1, 1, 1, d], &sin.device()), sin.dtype());
    sin * sign
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix `R [d, d]` with `x·R = rotate_half(x)`: the rotary path before the gather.
    fn rotate_half_matrix(d: usize) -> Vec<f32> {
        let half = d / 2;
        let mut r = vec![0.0f32; d * d];
        for j in 0..half {
            r[(j + half) * d + j] = -1.0; // out[j] = −x[j + half]
            r[j * d + j + half] = 1.0; // out[j + half] = x[j]
        }
        r
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// `x·cos + x[perm]·sin±` against the former `x·cos + (x·R)·sin`, for keys (the plain
    /// tables) and queries (the tables with the attention scale folded in, or the plain ones in a
    /// half dtype): the same values, bit for bit, in f32 and in bf16.
    #[test]
    fn rotary_gather_is_bit_identical_to_the_matrix_form() {
        let device = Device::flex();
        let (b, h, t, d) = (2, 3, 5, 8);
        let x32 = tensor_from_host(pseudo_random(b * h * t * d, 7), [b, h, t, d], &device);
        let cos = tensor_from_host(pseudo_random(t * d, 11), [1, 1, t, d], &device);
        let sin = tensor_from_host(pseudo_random(t * d, 13), [1, 1, t, d], &device);
        let rot = tensor_from_host(rotate_half_matrix(d), [1, 1, d, d], &device);
        let perm = rotate_half_index(d, &device);
        for dtype in [DType::F32, DType::BF16] {
            let x = to_dtype(x32.clone(), dtype);
            let old = |cos: Tensor<4>, sin: Tensor<4>| {
                host(x.clone() * cos + x.clone().matmul(to_dtype(rot.clone(), dtype)) * sin)
            };
            // keys
            let new = host(apply_rope(
                x.clone(),
                &to_dtype(cos.clone(), dtype),
                &to_dtype(signed_sin(sin.clone()), dtype),
                &perm,
            ));
            assert_eq!(new, old(to_dtype(cos.clone(), dtype), to_dtype(sin.clone(), dtype)), "{dtype:?} keys");
            // queries
            let (cos_q, sin_q, scale) = query_tables(&cos, &signed_sin(sin.clone()), d, dtype);
            let (cos_q_old, sin_q_old, scale_old) = query_tables(&cos, &sin, d, dtype);
            assert_eq!(scale, scale_old);
            assert_eq!(
                host(apply_rope(x.clone(), &cos_q, &sin_q, &perm)),
                old(cos_q_old, sin_q_old),
                "{dtype:?} queries"
            );
        }
    }
}
