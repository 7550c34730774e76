//! The policy a trainer drives: a causal language model with base weights θ and an adapter w.
//!
//! BRIDGE evaluates the same adapter w on two bases in one step — the jointly trained θ and the
//! RL-only θ̂ (method.md §3). [`CausalLm`] therefore keeps the *architecture* (`&self`: config,
//! rotary tables, tokenizer) apart from the *weights*, which are two burn modules passed to every
//! call: `Base` (θ or θ̂) and `Adapter` (w). `π(·|x; θ, w)` is
//! `lm.token_scores(&theta, Some(&w), batch, …)`. Because θ, θ̂ and w are separate modules, they
//! are also the parameter groups that get separate optimisers and gradients ([`ParamGroups`]).
//!
//! Token batches are built on the host ([`SequenceBatch`]) and turned into tensors by the model.
//! Log-probabilities are aligned with *targets*: column `j` of a `[B, T−1]` result is
//! `log π(tokens[j+1] | tokens[..=j])`.

use crate::error::{BridgeError, Result};
use crate::seed::BridgeRng;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Bool, Device, Gradients, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// One token sequence and which of its tokens are scored as targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSequence {
    /// Token ids (no padding).
    pub tokens: Vec<u32>,
    /// `loss_mask[i]`: token `i` is a target of the loss (never true for token 0, which has no
    /// prefix to be predicted from).
    pub loss_mask: Vec<bool>,
}

impl TokenSequence {
    /// `prompt ++ completion`, with only the completion tokens scored (the usual SFT/RL mask).
    pub fn prompt_completion(prompt: &[u32], completion: &[u32]) -> Self {
        let mut tokens = prompt.to_vec();
        tokens.extend_from_slice(completion);
        let mut loss_mask = vec![false; prompt.len()];
        loss_mask.extend(std::iter::repeat_n(true, completion.len()));
        Self { tokens, loss_mask }
    }

    /// Every token after the first is scored (language-model pre-training).
    pub fn all_scored(tokens: Vec<u32>) -> Self {
        let loss_mask = (0..tokens.len()).map(|i| i > 0).collect();
        Self { tokens, loss_mask }
    }
}

/// A right-padded batch of token sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceBatch {
    rows: Vec<TokenSequence>,
    pad_id: u32,
    seq_len: usize,
}

impl SequenceBatch {
    /// Validates and wraps `rows` (padding with `pad_id`): at least one row, every row at least
    /// two tokens long, masks as long as their tokens.
    pub fn new(rows: Vec<TokenSequence>, pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            return Err(BridgeError::InvalidInput("empty sequence batch".into()));
        }
        for (i, r) in rows.iter().enumerate() {
            if r.tokens.len() < 2 {
                return Err(BridgeError::InvalidInput(format!(
                    "sequence {i} has {} tokens; at least 2 are needed",
                    r.tokens.len()
                )));
            }
            if r.loss_mask.len() != r.tokens.len() {
                return Err(BridgeError::InvalidInput(format!(
                    "sequence {i}: loss mask has {} entries for {} tokens",
                    r.loss_mask.len(),
                    r.tokens.len()
                )));
            }
        }
        let seq_len = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        Ok(Self { rows, pad_id, seq_len })
    }

    /// The id that pads rows shorter than [`SequenceBatch::seq_len`].
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of sequences `B`.
    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    /// Padded length `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The sequences.
    pub fn rows(&self) -> &[TokenSequence] {
        &self.rows
    }

    /// Number of scored target tokens.
    pub fn num_targets(&self) -> usize {
        self.rows.iter().map(|r| r.loss_mask.iter().skip(1).filter(|m| **m).count()).sum()
    }

    /// Token ids `[B, T]`, right-padded with the pad id.
    pub fn ids(&self, device: &Device) -> Tensor<2, Int> {
        let mut data = Vec::with_capacity(self.rows.len() * self.seq_len);
        for r in &self.rows {
            data.extend(r.tokens.iter().map(|&t| i64::from(t)));
            data.extend(std::iter::repeat_n(i64::from(self.pad_id), self.seq_len - r.tokens.len()));
        }
        Tensor::from_data(TensorData::new(data, [self.rows.len(), self.seq_len]), device)
    }

    /// Attention mask `[B, T]`: `true` on real tokens, `false` on padding.
    pub fn attention_mask(&self, device: &Device) -> Tensor<2, Bool> {
        let mut data = Vec::with_capacity(self.rows.len() * self.seq_len);
        for r in &self.rows {
            data.extend((0..self.seq_len).map(|j| j < r.tokens.len()));
        }
        Tensor::from_data(TensorData::new(data, [self.rows.len(), self.seq_len]), device)
    }

    /// Target mask `[B, T−1]` as floats: column `j` is 1 where `tokens[j+1]` is a scored target.
    pub fn target_mask(&self, device: &Device) -> Tensor<2> {
        let t1 = self.seq_len - 1;
        let mut data = Vec::with_capacity(self.rows.len() * t1);
        for r in &self.rows {
            data.extend((0..t1).map(|j| if r.loss_mask.get(j + 1).copied().unwrap_or(false) { 1.0f32 } else { 0.0 }));
        }
        Tensor::from_data(TensorData::new(data, [self.rows.len(), t1]), device)
    }
}

/// Per-target scores of a [`SequenceBatch`] under a policy.
#[derive(Clone, Debug)]
pub struct TokenScores {
    /// `[B, T−1]`: `log π(tokens[j+1] | tokens[..=j])`; arbitrary where `mask` is 0.
    pub logprobs: Tensor<2>,
    /// `[B, T−1]`: entropy of the predictive distribution at each position, when asked for.
    pub entropy: Option<Tensor<2>>,
    /// `[B, T−1]`: 1 on scored targets, 0 elsewhere (prompt and padding).
    pub mask: Tensor<2>,
}

/// How completions are sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Maximum number of new tokens per completion.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Completions per prompt (a GRPO group).
    pub n: usize,
    /// Extra token ids that end a completion (the model's EOS ids always do).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a completion once they appear in its decoded text.
    pub stop_strings: Vec<String>,
    /// Where each token is chosen (see [`TokenSelection`]; `auto` by default).
    pub selection: TokenSelection,
}

/// Where a generator chooses each next token and computes its log-probability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSelection {
    /// `host` on a CPU backend, `device` otherwise (on a GPU).
    #[default]
    Auto,
    /// On the host, from the whole `[B, V]` logits copied there at every step, with
    /// [`sample_token`](crate::sampling::sample_token); log-probabilities accumulated in f64.
    Host,
    /// On the device, by the same rule in tensor operations: greedy is an argmax; sampling
    /// (temperature, top-k, top-p) picks by inverse CDF at a uniform drawn on the host from the
    /// completion's own seeded generator, so it draws the host path's tokens for the same seeds
    /// (up to a draw within f32 rounding of a boundary of the cumulative distribution);
    /// log-probabilities come from a device log-softmax in f32. Only `[B, 2]` numbers cross to
    /// the host per step.
    Device,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            n: 1,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            selection: TokenSelection::Auto,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens` tokens, one completion per prompt.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, temperature: 0.0, ..Self::default() }
    }

    /// Checks the values, naming the bad field (`sampling.n`, …).
    pub fn validate(&self) -> Result<()> {
        self.validate_as("sampling")
    }

    /// Checks the values, naming the bad field under `prefix` (e.g. `rl.sampling` gives
    /// `rl.sampling.n`).
    pub fn validate_as(&self, prefix: &str) -> Result<()> {
        let field = |name: &str| format!("{prefix}.{name}");
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(BridgeError::config(field("temperature"), format!("must be ≥ 0, got {}", self.temperature)));
        }
        if self.top_k == Some(0) {
            return Err(BridgeError::config(field("top_k"), "must be ≥ 1"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(BridgeError::config(field("top_p"), format!("must lie in (0, 1], got {p}")));
        }
        if self.n == 0 {
            return Err(BridgeError::config(field("n"), "must be ≥ 1"));
        }
        Ok(())
    }
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS id, a stop id or a stop string was produced.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One sampled completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Index of the prompt in the request.
    pub prompt_index: usize,
    /// Index of this sample within the prompt's group (`0..n`).
    pub sample_index: usize,
    /// The sampled token ids, exactly as trained on ("token in, token out"), stop token included.
    pub tokens: Vec<u32>,
    /// The decoded completion text (special tokens skipped).
    pub text: String,
    /// Per-token log-probabilities under the policy (temperature 1, before truncation).
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// One message of a conversation (`role` is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_owned(), content: content.to_owned() }
    }
}

/// Renders `messages` in ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), followed by the
/// assistant header when `add_generation_prompt`: the fallback for models without a template.
pub fn render_chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
    }
    if add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

/// Turns text into token ids and back, and renders prompts.
pub trait TextCodec: Send + Sync {
    /// Encodes `text` without adding special tokens.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Decodes `ids`, skipping special tokens.
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Size of the vocabulary (the model's embedding must have at least this many rows).
    fn vocab_size(&self) -> usize;
    /// Ids that end a completion.
    fn eos_token_ids(&self) -> &[u32];
    /// Id used to pad batches.
    fn pad_token_id(&self) -> u32;
    /// Renders a user message as a generation prompt (chat template, or the plain text).
    fn render_prompt(&self, message: &str) -> Result<String> {
        Ok(message.to_owned())
    }
    /// Renders a conversation with the model's chat template; the default is ChatML
    /// ([`render_chatml`]).
    fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        Ok(render_chatml(messages, add_generation_prompt))
    }
}

/// A causal language model a trainer drives, with its weights passed in as base θ and adapter w.
pub trait CausalLm: Send + Sync {
    /// The base weights θ (all transformer weights).
    type Base: Module;
    /// The adapter w (e.g. LoRA factors), applicable to any `Base` of this architecture.
    type Adapter: Module;

    /// The tokenizer and prompt renderer that go with the model.
    fn codec(&self) -> &dyn TextCodec;

    /// Log-probabilities (and optionally entropies) of every target of `batch` under
    /// `π(·; base, adapter)`, differentiable when the weights live on an autodiff device.
    fn token_scores(
        &self,
        base: &Self::Base,
        adapter: Option<&Self::Adapter>,
        batch: &SequenceBatch,
        with_entropy: bool,
    ) -> Result<TokenScores>;

    /// Samples `params.n` completions for each prompt (token ids), without building a graph.
    /// Output order: prompt by prompt, sample by sample.
    ///
    /// # Draw order
    /// Before sampling, draw one `rng.next_u64()` per completion, in output order, and sample
    /// completion `k` from its own generator seeded with the `k`-th value; `rng` then advances by
    /// exactly `prompts × n` draws. A completion then depends only on its prompt and its seed,
    /// not on the rest of the batch, which is what lets data-parallel ranks sample their shards
    /// of a batch and reproduce the single-device rollouts ([`crate::Shard::with_rng`]). Both
    /// built-in models (`bridge_models::Decoder`, [`crate::testing::BigramLm`]) follow it.
    fn sample(
        &self,
        base: &Self::Base,
        adapter: Option<&Self::Adapter>,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut BridgeRng,
    ) -> Result<Vec<Completion>>;

    /// The final hidden states of every position of `batch` under `π(·; base, adapter)` (after
    /// the last norm, before the LM head): the features a head on the model reads (a PPO critic's
    /// value head). Row `b`, position `j` summarises `tokens[..=j]`, so column `j` of the
    /// `[B, T−1]` target scores is predicted from position `j`. Differentiable like
    /// [`Self::token_scores`]; a model that does not expose them returns
    /// [`BridgeError::Model`] (the default).
    ///
    /// # Shapes
    /// `[B, T, H]` for a batch of `B` rows padded to `T` tokens (`H`: the hidden size).
    fn hidden_states(
        &self,
        base: &Self::Base,
        adapter: Option<&Self::Adapter>,
        batch: &SequenceBatch,
    ) -> Result<Tensor<3>> {
        let _ = (base, adapter, batch);
        Err(BridgeError::Model("this model does not expose its hidden states".into()))
    }

    /// The two parameter groups: base θ and adapter w.
    fn param_groups(&self, base: &Self::Base, adapter: Option<&Self::Adapter>) -> ParamGroups {
        ParamGroups { base: param_ids(base), adapter: adapter.map(param_ids).unwrap_or_default() }
    }
}

/// The ids of the float parameters of a module.
pub fn param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// The parameter groups of an augmented model: base θ and adapter w.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamGroups {
    /// Parameters of the base θ.
    pub base: Vec<ParamId>,
    /// Parameters of the adapter w.
    pub adapter: Vec<ParamId>,
}

impl ParamGroups {
    /// Splits the gradients of one backward pass into the base group's and the adapter group's.
    pub fn split<B: Module, A: Module>(
        &self,
        grads: &mut Gradients,
        base: &B,
        adapter: &A,
    ) -> (GradientsParams, GradientsParams) {
        (
            GradientsParams::from_params(grads, base, &self.base),
            GradientsParams::from_params(grads, adapter, &self.adapter),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_pads_and_aligns_the_target_mask() {
        let device = Device::flex();
        let rows =
            vec![TokenSequence::prompt_completion(&[5, 6], &[7, 8, 9]), TokenSequence::prompt_completion(&[1], &[2])];
        let b = SequenceBatch::new(rows, 0).unwrap();
        assert_eq!((b.batch_size(), b.seq_len(), b.num_targets()), (2, 5, 4));
        let ids: Vec<i64> = b.ids(&device).into_data().convert::<i64>().try_to_vec().unwrap();
        assert_eq!(ids, vec![5, 6, 7, 8, 9, 1, 2, 0, 0, 0]);
        let att: Vec<bool> = b.attention_mask(&device).into_data().try_to_vec().unwrap();
        assert_eq!(att, vec![true, true, true, true, true, true, true, false, false, false]);
        // targets are tokens 1..T: row 0 scores 7, 8, 9 (columns 1..4), row 1 scores 2 (column 0).
        let m: Vec<f32> = b.target_mask(&device).into_data().try_to_vec().unwrap();
        assert_eq!(m, vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn chatml_fallback_renders_a_generation_prompt() {
        let m = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "1+1?")];
        assert_eq!(
            render_chatml(&m, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn bad_batches_are_rejected() {
        assert!(SequenceBatch::new(vec![], 0).is_err());
        assert!(SequenceBatch::new(vec![TokenSequence::all_scored(vec![1])], 0).is_err());
        let bad = TokenSequence { tokens: vec![1, 2, 3], loss_mask: vec![false, true] };
        assert!(SequenceBatch::new(vec![bad], 0).unwrap_err().to_string().contains("loss mask"));
    }

    #[test]
    fn sampling_params_validate_and_reject_typos() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { top_p: Some(0.0), ..Default::default() }.validate().is_err());
        assert!(SamplingParams { n: 0, ..Default::default() }.validate().is_err());
        let e = SamplingParams { n: 0, ..Default::default() }.validate_as("rl.sampling").unwrap_err();
        assert_eq!(e.to_string(), "config `rl.sampling.n`: must be ≥ 1");
        let err = serde_json::from_str::<SamplingParams>(r#"{"temprature": 0.5}"#).unwrap_err();
        assert!(err.to_string().contains("temprature"));
        let p: SamplingParams = serde_json::from_str(r#"{"n": 4, "top_p": 0.9}"#).unwrap();
        assert_eq!((p.n, p.top_p, p.max_new_tokens), (4, Some(0.9), 256));
    }
}
