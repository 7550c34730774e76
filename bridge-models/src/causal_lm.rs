//! [`Decoder`]'s [`CausalLm`] implementation: the crate's top layer, which sends each call to an
//! engine.
//!
//! - `token_scores` (every loss): the fused CPU training engine (`crate::fused`) for `f32`
//!   weights on burn's `flex` backend unless [`ScoringEngine`](crate::decoder::ScoringEngine)
//!   says otherwise, the tensor forward (`crate::forward`) everywhere else.
//! - `hidden_states` (a PPO critic's features): the tensor forward.
//! - `sample`: a fresh [`Generator`] (the generation loop of [`crate::generate`], which picks
//!   its own decoding engine).
//!
//! Under mixed precision ([`Decoder::with_precision`]) all three first cast the f32 weights to
//! bf16: `token_scores` and `hidden_states` inside the autodiff graph (gradients return to the
//! f32 weights), `sample` on a graph-free snapshot.

use crate::decoder::Decoder;
use crate::generate::Generator;
use crate::weights::DecoderWeights;
use crate::weights::lora::LoraAdapter;
use bridge_core::policy::{CausalLm, Completion, SamplingParams, SequenceBatch, TextCodec, TokenScores};
use bridge_core::{BridgeRng, Result};
use burn::module::Module;
use burn::tensor::Tensor;

impl CausalLm for Decoder {
    type Base = DecoderWeights;
    type Adapter = LoraAdapter;

    fn codec(&self) -> &dyn TextCodec {
        self.text_codec()
    }

    fn token_scores(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
        with_entropy: bool,
    ) -> Result<TokenScores> {
        self.check_weights(base, adapter)?;
        self.check_ids(batch.rows().iter().flat_map(|r| r.tokens.iter().copied()))?;
        // mixed precision: the forward runs on a bf16 cast of the f32 weights, inside the graph
        let (cast_base, cast_adapter) = self.autocast(base, adapter);
        let (base, adapter) = (cast_base.as_ref().unwrap_or(base), cast_adapter.as_ref().or(adapter));
        #[cfg(feature = "flex")]
        if self.scoring_engine().uses_fused(base.dtype(), &base.device())? {
            return crate::fused::token_scores(self, base, adapter, batch, with_entropy);
        }
        self.tensor_token_scores(base, adapter, batch, with_entropy)
    }

    /// The tensor engine's final hidden states (the fused engine keeps them to itself): a forward
    /// pass through burn tensor operations, in f32.
    fn hidden_states(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
    ) -> Result<Tensor<3>> {
        self.check_weights(base, adapter)?;
        self.check_ids(batch.rows().iter().flat_map(|r| r.tokens.iter().copied()))?;
        let (cast_base, cast_adapter) = self.autocast(base, adapter);
        let (base, adapter) = (cast_base.as_ref().unwrap_or(base), cast_adapter.as_ref().or(adapter));
        self.tensor_hidden_states(base, adapter, batch)
    }

    /// Samples with a fresh [`Generator`], the KV-cache engine of [`crate::generate`] (prefill
    /// once per prompt, then incremental decoding of all `n` samples of every prompt together;
    /// see that module for the padding scheme and the seeded draw order). Sampling is restricted to the codec's
    /// vocabulary (embedding rows beyond it are padding); the recorded log-probability is the
    /// policy's own over the full vocabulary at temperature 1, as `token_scores` computes it.
    /// A completion stops at the codec's EOS ids, the config's `eos_token_id`s, `stop_token_ids`
    /// (the stop token is kept) or a stop string in its decoded text.
    fn sample(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut BridgeRng,
    ) -> Result<Vec<Completion>> {
        params.validate()?;
        // mixed precision: sample with a bf16 snapshot of the f32 weights
        let snapshot = self.compute_dtype().is_some().then(|| (base.valid(), adapter.map(Module::valid)));
        let (cast_base, cast_adapter) = match &snapshot {
            Some((b, a)) => self.autocast(b, a.as_ref()),
            None => (None, None),
        };
        let (base, adapter) = (cast_base.as_ref().unwrap_or(base), cast_adapter.as_ref().or(adapter));
        Generator::new(self, base, adapter)?.generate(prompts, params, rng)
    }
}
