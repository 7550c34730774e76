//! The [`Decoder`]: the architecture of a decoder-only transformer (Llama, Qwen2/2.5, Qwen3) as
//! BRIDGE uses it, without its weights: config, tokenizer, rotary tables and the choice of
//! scoring engine.
//!
//! The weights are arguments of every call, split as BRIDGE needs them: [`DecoderWeights`] is
//! the base θ and [`LoraAdapter`] the adapter w (`crate::weights`), so that θ and w are trained
//! together and one adapter can be applied to two bases without copying.
//!
//! This module only defines the type, its constructor and the checks every engine runs first.
//! The layers above add what it computes: `crate::forward` the tensor forward pass
//! ([`Decoder::forward_logits`]), `crate::fused` and `crate::generate` the CPU training and
//! decoding engines, and `crate::causal_lm` its
//! [`CausalLm`](bridge_core::policy::CausalLm) implementation, which dispatches to them.

use crate::config::DecoderConfig;
use crate::rope::Rope;
use crate::weights::DecoderWeights;
use crate::weights::lora::{LoraAdapter, LoraConfig};
use crate::weights::precision::{Precision, WeightDType, cast_in_graph};
use bridge_core::policy::TextCodec;
use bridge_core::{BridgeError, BridgeRng, Result};
use burn::tensor::{DType, Device};

/// Which implementation computes [`token_scores`](bridge_core::policy::CausalLm::token_scores)
/// and its gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScoringEngine {
    /// [`ScoringEngine::Fused`] for `f32` weights on the `flex` CPU backend,
    /// [`ScoringEngine::Tensor`] otherwise.
    #[default]
    Auto,
    /// burn tensor operations: any backend and dtype; every output differentiable.
    Tensor,
    /// One fused operation over host `f32` buffers (the `fused` module).
    Fused,
}

impl std::str::FromStr for ScoringEngine {
    type Err = BridgeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "tensor" => Ok(Self::Tensor),
            "fused" => Ok(Self::Fused),
            other => {
                Err(BridgeError::InvalidInput(format!("unknown scoring engine `{other}` (auto, tensor or fused)")))
            }
        }
    }
}

impl std::fmt::Display for ScoringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tensor => "tensor",
            Self::Fused => "fused",
        })
    }
}

/// How the tensor engine computes attention in training (`token_scores`) and in
/// [`Decoder::forward_logits`] without a padding mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionPath {
    /// [`AttentionPath::Fused`] on the cubecl backends (the GPU), [`AttentionPath::Materialised`]
    /// on flex (there the materialised path rounds half-precision scores exactly where
    /// `transformers`' eager attention does, which the bf16 parity tests check).
    #[default]
    Auto,
    /// Scores `q·kᵀ` as a `[B, H, T, S]` tensor, an additive mask, an f32 softmax, `·v`; every
    /// intermediate kept for the backward.
    Materialised,
    /// One custom autodiff operation (`crate::ops::attention`): burn's `attention` op forward
    /// (a flash kernel on cubecl), a backward that recomputes the scores chunk by chunk. Causal
    /// masking only, which is exact for right-padded batches at every real position.
    Fused,
}

impl std::str::FromStr for AttentionPath {
    type Err = BridgeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "materialised" | "materialized" => Ok(Self::Materialised),
            "fused" => Ok(Self::Fused),
            other => Err(BridgeError::InvalidInput(format!(
                "unknown attention path `{other}` (auto, materialised or fused)"
            ))),
        }
    }
}

/// The tensor engine's memory-saving paths, on by default where they run (the flex backend and,
/// in a build with this crate's `cuda` feature, every cubecl backend); turning them off gives the
/// paths they replace, for A/B measurements and equality tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorPaths {
    /// Token log-probabilities and entropies through the chunked operation
    /// (`crate::ops::token_scores`: no `[N, V]` log-softmax) instead of burn's `log_softmax`.
    pub chunked_scores: bool,
    /// The attention path.
    pub attention: AttentionPath,
    /// Vocabulary columns per chunk of the chunked scores (`None`: as many as keep one f32
    /// chunk under 128 MiB).
    pub vocab_chunk: Option<usize>,
    /// Query rows per chunk of the fused attention's backward (`None`: as many as keep one f32
    /// chunk of scores under 128 MiB).
    pub query_chunk: Option<usize>,
}

impl Default for TensorPaths {
    fn default() -> Self {
        Self { chunked_scores: true, attention: AttentionPath::Auto, vocab_chunk: None, query_chunk: None }
    }
}

/// Whether the tensor engine's custom operations (`crate::ops`) run on `device`.
pub(crate) fn ops_run_on(device: &Device) -> bool {
    #[cfg(any(feature = "flex", feature = "cuda"))]
    return crate::ops::supported(device);
    #[cfg(not(any(feature = "flex", feature = "cuda")))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` is burn's `flex` CPU backend (with or without autodiff).
pub(crate) fn is_flex(device: &Device) -> bool {
    format!("{device:?}").contains("Flex(")
}

/// Whether the fused scoring engine can run on `device` (flex, in a build with this crate's
/// `flex` feature).
fn fused_runs_on(device: &Device) -> bool {
    cfg!(feature = "flex") && is_flex(device)
}

impl ScoringEngine {
    /// Whether the fused engine scores weights of `dtype` on `device`; fails when
    /// [`ScoringEngine::Fused`] is asked for where it cannot run.
    pub(crate) fn uses_fused(self, dtype: DType, device: &Device) -> Result<bool> {
        match self {
            Self::Tensor => Ok(false),
            Self::Auto => Ok(dtype == DType::F32 && fused_runs_on(device)),
            Self::Fused if dtype != DType::F32 => Err(BridgeError::InvalidInput(format!(
                "the fused scoring engine runs f32 weights, these are {dtype:?}"
            ))),
            Self::Fused if !fused_runs_on(device) => Err(BridgeError::InvalidInput(format!(
                "the fused scoring engine runs on the flex CPU backend, not on {device:?}"
            ))),
            Self::Fused => Ok(true),
        }
    }
}

/// Which forward pass [`Decoder::sample`](bridge_core::policy::CausalLm::sample) decodes with
/// (see `crate::generate`, section "Engines").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeEngine {
    /// [`DecodeEngine::Host`] for `f32` weights on a CPU backend (unless device selection is asked
    /// for), [`DecodeEngine::Tensor`] for other weights on a CPU backend or with host selection
    /// asked for, [`DecodeEngine::Graph`] otherwise (a GPU).
    #[default]
    Auto,
    /// burn tensor operations through [`Decoder`]'s layer function, one dynamic-shape step at a
    /// time (attention over the filled prefix): any backend and dtype, host or device selection.
    Tensor,
    /// Fused host kernels over `f32` copies of the weights, adapter merged: CPU, `f32` only.
    Host,
    /// Static-shape decode steps (KV cache written in place, attention over the whole cache
    /// masked, tokens chosen on the device) captured once and replayed as one CUDA graph; run
    /// eagerly where the backend cannot capture.
    Graph,
}

impl std::str::FromStr for DecodeEngine {
    type Err = BridgeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "tensor" => Ok(Self::Tensor),
            "host" => Ok(Self::Host),
            "graph" => Ok(Self::Graph),
            other => {
                Err(BridgeError::InvalidInput(format!("unknown decode engine `{other}` (auto, tensor, host or graph)")))
            }
        }
    }
}

impl std::fmt::Display for DecodeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tensor => "tensor",
            Self::Host => "host",
            Self::Graph => "graph",
        })
    }
}

/// The architecture of a decoder: config, rotary tables and codec. The weights are passed to
/// every call (see [`CausalLm`](bridge_core::policy::CausalLm)).
pub struct Decoder {
    config: DecoderConfig,
    codec: Box<dyn TextCodec>,
    scoring: ScoringEngine,
    paths: TensorPaths,
    compute_dtype: Option<WeightDType>,
    decoding: DecodeEngine,
    rope: Rope,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .field("codec_vocab_size", &self.codec.vocab_size())
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// The architecture `config` with the tokenizer `codec`. Fails when the codec's vocabulary
    /// is larger than the embedding.
    pub fn new(config: DecoderConfig, codec: Box<dyn TextCodec>) -> Result<Self> {
        config.validate()?;
        if codec.vocab_size() > config.vocab_size {
            return Err(BridgeError::Tokenizer(format!(
                "the tokenizer has {} tokens but the model's embedding only {} rows",
                codec.vocab_size(),
                config.vocab_size
            )));
        }
        let rope = Rope::new(&config);
        Ok(Self {
            config,
            codec,
            scoring: ScoringEngine::Auto,
            paths: TensorPaths::default(),
            compute_dtype: None,
            decoding: DecodeEngine::Auto,
            rope,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The tokenizer (what [`CausalLm::codec`](bridge_core::policy::CausalLm::codec) returns).
    pub(crate) fn text_codec(&self) -> &dyn TextCodec {
        self.codec.as_ref()
    }

    /// The rotary tables every engine reads.
    pub(crate) fn rope(&self) -> &Rope {
        &self.rope
    }

    /// This decoder scoring with `engine` ([`ScoringEngine::Auto`] by default).
    pub fn with_scoring_engine(mut self, engine: ScoringEngine) -> Self {
        self.scoring = engine;
        self
    }

    /// The engine [`CausalLm::token_scores`](bridge_core::policy::CausalLm::token_scores) runs
    /// on (see [`ScoringEngine`]).
    pub fn scoring_engine(&self) -> ScoringEngine {
        self.scoring
    }

    /// This decoder with the tensor engine's paths `paths` ([`TensorPaths::default`] unless set).
    pub fn with_tensor_paths(mut self, paths: TensorPaths) -> Self {
        self.paths = paths;
        self
    }

    /// The tensor engine's paths.
    pub fn tensor_paths(&self) -> TensorPaths {
        self.paths
    }

    /// This decoder computing in `precision` (see [`Precision`]): for
    /// [`Precision::MixedBf16`] every call casts the (f32 master) weights to bf16 inside the
    /// autodiff graph before the forward, so gradients come back to the f32 weights in f32;
    /// [`Precision::F32`] and [`Precision::Bf16`] compute in the weights' own dtype (cast the
    /// weights with [`Precision::prepare`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.compute_dtype = precision.autocast();
        self
    }

    /// The dtype every call computes in when the weights are in another one (`None`: the
    /// weights' own; see [`Decoder::with_precision`]).
    pub fn compute_dtype(&self) -> Option<WeightDType> {
        self.compute_dtype
    }

    /// `base` and `adapter` cast to [`Decoder::compute_dtype`] inside the autodiff graph when it
    /// differs from the weights' dtype (mixed precision); `(None, None)` when they compute as
    /// they are. Use as `cast.as_ref().unwrap_or(base)`.
    pub(crate) fn autocast(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
    ) -> (Option<DecoderWeights>, Option<LoraAdapter>) {
        match self.compute_dtype.map(WeightDType::float_dtype) {
            Some(dtype) if DType::from(dtype) != base.dtype() => {
                (Some(cast_in_graph(base, dtype)), adapter.map(|a| cast_in_graph(a, dtype)))
            }
            _ => (None, None),
        }
    }

    /// Whether the tensor engine runs attention through the fused operation on `device`; fails
    /// when [`AttentionPath::Fused`] is asked for where it cannot run.
    pub(crate) fn fused_attention(&self, device: &Device) -> Result<bool> {
        match self.paths.attention {
            AttentionPath::Materialised => Ok(false),
            AttentionPath::Auto => Ok(ops_run_on(device) && !is_flex(device)),
            AttentionPath::Fused if ops_run_on(device) => Ok(true),
            AttentionPath::Fused => Err(BridgeError::InvalidInput(format!(
                "the fused attention runs on flex and (built with the `cuda` feature) cubecl devices, not on {device:?}"
            ))),
        }
    }

    /// Whether the tensor engine scores tokens with the chunked operation on `device`.
    pub(crate) fn chunked_scores(&self, device: &Device) -> bool {
        self.paths.chunked_scores && ops_run_on(device)
    }

    /// This decoder sampling with `engine` ([`DecodeEngine::Auto`] by default): the engine every
    /// `Generator` built for it starts with.
    pub fn with_decode_engine(mut self, engine: DecodeEngine) -> Self {
        self.decoding = engine;
        self
    }

    /// The engine [`CausalLm::sample`](bridge_core::policy::CausalLm::sample) decodes with (see
    /// [`DecodeEngine`]).
    pub fn decode_engine(&self) -> DecodeEngine {
        self.decoding
    }

    /// A random base θ (see [`DecoderWeights::init`]).
    pub fn init_weights(&self, device: &Device, rng: &mut BridgeRng) -> Result<DecoderWeights> {
        DecoderWeights::init(&self.config, device, rng)
    }

    /// A fresh LoRA adapter w for this architecture (see [`LoraAdapter::init`]).
    pub fn init_adapter(&self, lora: &LoraConfig, device: &Device, rng: &mut BridgeRng) -> Result<LoraAdapter> {
        LoraAdapter::init(&self.config, lora, device, rng)
    }

    /// Checks that `base` (and `adapter`) fit this architecture and share one dtype.
    pub(crate) fn check_weights(&self, base: &DecoderWeights, adapter: Option<&LoraAdapter>) -> Result<()> {
        base.check(&self.config)?;
        if let Some(a) = adapter {
            a.check(&self.config)?;
            if let Some(dtype) = a.dtype()
                && dtype != base.dtype()
            {
                return Err(BridgeError::Model(format!(
                    "the adapter is {dtype:?} but the base weights are {:?}: cast both to one dtype",
                    base.dtype()
                )));
            }
        }
        Ok(())
    }

    /// Checks that every id lies inside the vocabulary.
    pub(crate) fn check_ids(&self, ids: impl IntoIterator<Item = u32>) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some(bad) = ids.into_iter().find(|&x| x as usize >= v) {
            return Err(BridgeError::Model(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        Ok(())
    }
}
