//! Test doubles for every trait of this crate, small enough to reason about by hand.
//!
//! They are public so that the other crates (and users' crates) can test trainers, rewards and
//! objectives in isolation, without a transformer:
//!
//! * [`BigramLm`]: a [`CausalLm`] whose base θ is a `[V, V]` table of next-token logits and whose
//!   adapter w is a LoRA pair `(A, B)` adding `scale · A·B` to the table. Exact log-probs,
//!   entropies and sampling; gradients reach θ and w like a real model's. Its hidden state after a
//!   token is that token's row of the table.
//! * [`CharCodec`] (re-exported from [`crate::codec`]): one token per character of an alphabet.
//! * [`ExactMatchReward`], [`FnReward`]: [`RewardFunction`]s.
//! * [`ProjectedCooperativeGain`]: a non-linear [`OuterObjective`].

pub use crate::codec::CharCodec;
use crate::data::RlPrompt;
use crate::error::{BridgeError, Result};
use crate::grads::FlatGradients;
use crate::outer::{AdapterGradTerms, OuterObjective, TermWeights};
use crate::policy::{CausalLm, Completion, FinishReason, SamplingParams, SequenceBatch, TextCodec, TokenScores};
use crate::reward::{Reward, RewardFunction};
use crate::sampling::{log_softmax, sample_token};
use crate::seed::BridgeRng;
use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax as log_softmax_t;
use burn::tensor::{Device, Tensor, TensorData};

/// Base weights θ of [`BigramLm`]: next-token logits for each current token.
#[derive(Module, Debug)]
pub struct BigramBase {
    /// `[V, V]`: row `i` holds the logits of the token following token `i`.
    pub table: Param<Tensor<2>>,
}

/// Adapter w of [`BigramLm`]: a LoRA pair adding `scale · a·b` to the table.
#[derive(Module, Debug)]
pub struct BigramAdapter {
    /// `[V, r]`.
    pub a: Param<Tensor<2>>,
    /// `[r, V]`, zero at initialisation so that the adapted model starts equal to the base.
    pub b: Param<Tensor<2>>,
    /// `alpha / r`.
    pub scale: f64,
}

/// A bigram language model: the smallest honest [`CausalLm`].
#[derive(Clone, Debug)]
pub struct BigramLm {
    codec: CharCodec,
}

fn host_tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

impl BigramLm {
    /// A bigram model over `codec`'s vocabulary.
    pub fn new(codec: CharCodec) -> Self {
        Self { codec }
    }

    /// Vocabulary size `V`.
    pub fn vocab_size(&self) -> usize {
        self.codec.vocab_size()
    }

    /// A base with logits drawn from `N(0, std²)`.
    pub fn init_base(&self, std: f64, device: &Device, rng: &mut BridgeRng) -> BigramBase {
        let v = self.vocab_size();
        let values = (0..v * v).map(|_| (rng.normal() * std) as f32).collect();
        BigramBase { table: Param::from_tensor(host_tensor(values, [v, v], device)) }
    }

    /// A LoRA adapter of rank `rank`: `a ~ N(0, 1/rank)`, `b = 0`, scale `alpha / rank`.
    pub fn init_adapter(&self, rank: usize, alpha: f64, device: &Device, rng: &mut BridgeRng) -> BigramAdapter {
        let v = self.vocab_size();
        let std = (1.0 / rank as f64).sqrt();
        let a = (0..v * rank).map(|_| (rng.normal() * std) as f32).collect();
        BigramAdapter {
            a: Param::from_tensor(host_tensor(a, [v, rank], device)),
            b: Param::from_tensor(Tensor::zeros([rank, v], device)),
            scale: alpha / rank as f64,
        }
    }

    /// The effective `[V, V]` logit table `θ + scale·a·b`.
    pub fn effective_table(&self, base: &BigramBase, adapter: Option<&BigramAdapter>) -> Tensor<2> {
        let table = base.table.val();
        match adapter {
            Some(w) => table + w.a.val().matmul(w.b.val()).mul_scalar(w.scale),
            None => table,
        }
    }
}

impl CausalLm for BigramLm {
    type Base = BigramBase;
    type Adapter = BigramAdapter;

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn token_scores(
        &self,
        base: &BigramBase,
        adapter: Option<&BigramAdapter>,
        batch: &SequenceBatch,
        with_entropy: bool,
    ) -> Result<TokenScores> {
        let table = self.effective_table(base, adapter);
        let device = table.device();
        let [v, _] = table.dims();
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if let Some(bad) = batch.rows().iter().flat_map(|r| &r.tokens).find(|&&x| x as usize >= v) {
            return Err(BridgeError::Model(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        let ids = batch.ids(&device);
        let inputs = ids.clone().slice([0..b, 0..t - 1]).reshape([b * (t - 1)]);
        let targets = ids.slice([0..b, 1..t]).reshape([b * (t - 1), 1]);
        let logp = log_softmax_t(table.select(0, inputs), 1); // [B·(T−1), V]
        let entropy = with_entropy.then(|| (logp.clone().exp() * logp.clone()).sum_dim(1).neg().reshape([b, t - 1]));
        let logprobs = logp.gather(1, targets).reshape([b, t - 1]);
        Ok(TokenScores { logprobs, entropy, mask: batch.target_mask(&device) })
    }

    /// A bigram's state after token `j` is its row of the effective logit table: `[B, T, V]`.
    fn hidden_states(
        &self,
        base: &BigramBase,
        adapter: Option<&BigramAdapter>,
        batch: &SequenceBatch,
    ) -> Result<Tensor<3>> {
        let table = self.effective_table(base, adapter);
        let device = table.device();
        let [v, _] = table.dims();
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if let Some(bad) = batch.rows().iter().flat_map(|r| &r.tokens).find(|&&x| x as usize >= v) {
            return Err(BridgeError::Model(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        Ok(table.select(0, batch.ids(&device).reshape([b * t])).reshape([b, t, v]))
    }

    fn sample(
        &self,
        base: &BigramBase,
        adapter: Option<&BigramAdapter>,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut BridgeRng,
    ) -> Result<Vec<Completion>> {
        params.validate()?;
        let v = self.vocab_size();
        let table: Vec<f32> = self
            .effective_table(base, adapter)
            .detach()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| BridgeError::Model(format!("reading the logit table: {e}")))?;
        let mut out = Vec::with_capacity(prompts.len() * params.n);
        // One seed per completion, drawn first (the draw order of `CausalLm::sample`).
        let mut seeds: Vec<u64> = (0..prompts.len() * params.n).map(|_| rng.next_u64()).collect::<Vec<_>>();
        seeds.reverse();
        for (pi, prompt) in prompts.iter().enumerate() {
            let last = *prompt.last().ok_or_else(|| BridgeError::InvalidInput(format!("prompt {pi} is empty")))?;
            if last as usize >= v {
                return Err(BridgeError::Model(format!(
                    "prompt {pi}: token id {last} is outside the vocabulary of {v}"
                )));
            }
            for si in 0..params.n {
                let mut rng = BridgeRng::seed_from_u64(seeds.pop().unwrap_or_default());
                let rng = &mut rng;
                let (mut cur, mut tokens, mut logprobs) = (last as usize, Vec::new(), Vec::new());
                let mut finish = FinishReason::Length;
                while tokens.len() < params.max_new_tokens {
                    let row = &table[cur * v..(cur + 1) * v];
                    let next = sample_token(row, params.temperature, params.top_k, params.top_p, rng);
                    tokens.push(next as u32);
                    logprobs.push(log_softmax(row)[next]);
                    cur = next;
                    let id = next as u32;
                    if self.codec.eos_token_ids().contains(&id) || params.stop_token_ids.contains(&id) {
                        finish = FinishReason::Stop;
                        break;
                    }
                    if crate::sampling::hits_stop_string(&self.codec, &tokens, &params.stop_strings)? {
                        finish = FinishReason::Stop;
                        break;
                    }
                }
                let text = self.codec.decode(&tokens)?;
                out.push(Completion { prompt_index: pi, sample_index: si, tokens, text, logprobs, finish });
            }
        }
        Ok(out)
    }
}

/// Reward 1 when the trimmed completion equals the trimmed reference, else 0; skipped when the
/// reference is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactMatchReward;

impl RewardFunction for ExactMatchReward {
    fn name(&self) -> &str {
        "exact_match"
    }

    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        let reference = example.reference.trim();
        if reference.is_empty() {
            return Reward::skip("empty reference");
        }
        let hit = completion.trim() == reference;
        Reward::scored(if hit { 1.0 } else { 0.0 }).with_detail("completion", completion.trim())
    }
}

/// A reward defined by a closure.
pub struct FnReward<F> {
    name: String,
    f: F,
}

impl<F: Fn(&str, &RlPrompt) -> Reward + Send + Sync> FnReward<F> {
    /// Wraps `f` under `name`.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        Self { name: name.into(), f }
    }
}

impl<F: Fn(&str, &RlPrompt) -> Reward + Send + Sync> RewardFunction for FnReward<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        (self.f)(completion, example)
    }
}

/// A non-linear outer objective: BRIDGE's direction with the gain term's component that conflicts
/// with the SFT term projected out (PCGrad-style). Shows that objectives need not be linear.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProjectedCooperativeGain;

impl OuterObjective for ProjectedCooperativeGain {
    fn name(&self) -> &str {
        "projected_cooperative_gain"
    }
    fn needs_aux_branch(&self) -> bool {
        true
    }
    fn term_weights(&self, _lambda: f64) -> Option<TermWeights> {
        None
    }
    fn adapter_direction(&self, terms: &AdapterGradTerms, lambda: f64) -> Result<FlatGradients> {
        let aux = terms.rl_aux.as_ref().ok_or_else(|| BridgeError::InvalidInput("missing ∇_w J_RL(θ̂,w)".into()))?;
        let gain = FlatGradients::linear_combination(&[(1.0, &terms.rl), (-1.0, aux)])?;
        let overlap = gain.dot(&terms.sft)?;
        let sft_sq = terms.sft.dot(&terms.sft)?;
        let gain = if overlap < 0.0 && sft_sq > 0.0 {
            FlatGradients::linear_combination(&[(1.0, &gain), (-overlap / sft_sq, &terms.sft)])?
        } else {
            gain
        };
        FlatGradients::linear_combination(&[(1.0 - lambda, &terms.sft), (lambda, &gain)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TokenSequence;
    use approx::assert_relative_eq;

    fn setup() -> (BigramLm, BigramBase, BigramAdapter, Device) {
        let device = Device::flex().autodiff();
        let lm = BigramLm::new(CharCodec::new("abc"));
        let mut rng = BridgeRng::seed_from_u64(1);
        let base = lm.init_base(1.0, &device, &mut rng);
        let mut adapter = lm.init_adapter(2, 2.0, &device, &mut rng);
        // give b non-zero values so the adapter changes the model
        adapter.b = Param::from_tensor(Tensor::from_floats([[0.3, -0.2, 0.1, 0.5], [0.0, 0.4, -0.3, 0.2]], &device));
        (lm, base, adapter, device)
    }

    #[test]
    fn codec_round_trips_and_rejects_unknown_input() {
        let c = CharCodec::new("ab c");
        let ids = c.encode("a cab").unwrap();
        assert_eq!(c.decode(&ids).unwrap(), "a cab");
        assert_eq!(c.decode(&[1, 0, 2]).unwrap(), "ab");
        assert!(c.encode("z").is_err());
        assert!(c.decode(&[9]).is_err());
    }

    #[test]
    fn token_scores_match_a_hand_computation() {
        let (lm, base, adapter, device) = setup();
        let batch = SequenceBatch::new(
            vec![TokenSequence::prompt_completion(&[1], &[2, 3]), TokenSequence::all_scored(vec![3, 1])],
            0,
        )
        .unwrap();
        let scores = lm.token_scores(&base, Some(&adapter), &batch, true).unwrap();
        let table: Vec<f32> = lm.effective_table(&base, Some(&adapter)).into_data().try_to_vec().unwrap();
        let row = |i: usize| log_softmax(&table[i * 4..(i + 1) * 4]);
        let lp: Vec<f32> = scores.logprobs.into_data().try_to_vec().unwrap();
        assert_relative_eq!(lp[0], row(1)[2], epsilon = 1e-5);
        assert_relative_eq!(lp[1], row(2)[3], epsilon = 1e-5);
        assert_relative_eq!(lp[2], row(3)[1], epsilon = 1e-5);
        let ent: Vec<f32> = scores.entropy.unwrap().into_data().try_to_vec().unwrap();
        let h: f32 = row(1).iter().map(|l| -l.exp() * l).sum();
        assert_relative_eq!(ent[0], h, epsilon = 1e-5);
        let mask: Vec<f32> = scores.mask.into_data().try_to_vec().unwrap();
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 0.0]);
        let _ = device;
    }

    #[test]
    fn hidden_states_are_the_table_rows_of_each_token() {
        let (lm, base, adapter, _) = setup();
        let batch = SequenceBatch::new(
            vec![TokenSequence::all_scored(vec![1, 2, 3]), TokenSequence::all_scored(vec![3, 1])],
            0,
        )
        .unwrap();
        let h = lm.hidden_states(&base, Some(&adapter), &batch).unwrap();
        assert_eq!(h.dims(), [2, 3, 4]);
        let h: Vec<f32> = h.into_data().try_to_vec().unwrap();
        let table: Vec<f32> = lm.effective_table(&base, Some(&adapter)).into_data().try_to_vec().unwrap();
        // row 1, position 2 is padding (token 0)
        for (pos, token) in [(0, 1), (1, 2), (2, 3), (3, 3), (4, 1), (5, 0)] {
            assert_eq!(&h[pos * 4..(pos + 1) * 4], &table[token * 4..(token + 1) * 4], "position {pos}");
        }
    }

    #[test]
    fn gradients_reach_base_and_adapter_groups() {
        let (lm, base, adapter, _) = setup();
        let batch = SequenceBatch::new(vec![TokenSequence::all_scored(vec![1, 2, 3])], 0).unwrap();
        let s = lm.token_scores(&base, Some(&adapter), &batch, false).unwrap();
        let loss = (s.logprobs * s.mask).sum().neg();
        let mut grads = loss.backward();
        let groups = lm.param_groups(&base, Some(&adapter));
        assert_eq!((groups.base.len(), groups.adapter.len()), (1, 2));
        let (gb, ga) = groups.split(&mut grads, &base, &adapter);
        assert_eq!((gb.len(), ga.len()), (1, 2));
        // Without the adapter, no adapter gradient exists.
        let s = lm.token_scores(&base, None, &batch, false).unwrap();
        let mut grads = (s.logprobs * s.mask).sum().backward();
        assert!(FlatGradients::from_backward(&mut grads, &adapter).is_empty());
        assert_eq!(FlatGradients::from_backward(&mut grads, &base).len(), 1);
    }

    #[test]
    fn sampled_logprobs_equal_recomputed_ones_and_greedy_is_argmax() {
        let (lm, base, adapter, _) = setup();
        let params = SamplingParams { max_new_tokens: 6, n: 3, ..Default::default() };
        let mut rng = BridgeRng::seed_from_u64(4);
        let out = lm.sample(&base, Some(&adapter), &[vec![1], vec![2, 3]], &params, &mut rng).unwrap();
        assert_eq!(out.len(), 6);
        for c in &out {
            let prompt: &[u32] = if c.prompt_index == 0 { &[1] } else { &[2, 3] };
            let batch = SequenceBatch::new(vec![TokenSequence::prompt_completion(prompt, &c.tokens)], 0).unwrap();
            let s = lm.token_scores(&base, Some(&adapter), &batch, false).unwrap();
            let lp: Vec<f32> = s.logprobs.into_data().try_to_vec().unwrap();
            let recomputed = &lp[prompt.len() - 1..];
            for (a, b) in c.logprobs.iter().zip(recomputed) {
                assert_relative_eq!(a, b, epsilon = 1e-5);
            }
            assert_eq!(c.finish == FinishReason::Stop, c.tokens.last() == Some(&0));
        }
        // Same seed, same samples.
        let again = lm
            .sample(&base, Some(&adapter), &[vec![1], vec![2, 3]], &params, &mut BridgeRng::seed_from_u64(4))
            .unwrap();
        assert_eq!(out, again);
        let greedy = lm.sample(&base, None, &[vec![1]], &SamplingParams::greedy(1), &mut rng).unwrap();
        let table: Vec<f32> = base.table.val().into_data().try_to_vec().unwrap();
        assert_eq!(greedy[0].tokens[0] as usize, crate::sampling::argmax(&table[4..8]));
    }

    #[test]
    fn stop_strings_and_bad_prompts() {
        let (lm, base, _, _) = setup();
        let params = SamplingParams {
            max_new_tokens: 50,
            stop_strings: vec!["b".into()],
            stop_token_ids: vec![],
            ..Default::default()
        };
        let out = lm.sample(&base, None, &vec![vec![1]; 5], &params, &mut BridgeRng::seed_from_u64(2)).unwrap();
        for c in out {
            if c.finish == FinishReason::Stop && !c.tokens.ends_with(&[0]) {
                assert!(c.text.ends_with('b'), "{c:?}");
            }
        }
        assert!(lm.sample(&base, None, &[vec![]], &params, &mut BridgeRng::seed_from_u64(2)).is_err());
        assert!(lm.sample(&base, None, &[vec![99]], &params, &mut BridgeRng::seed_from_u64(2)).is_err());
    }
}
