//! The GRPO objective and a standalone GRPO trainer (the RL-zero baseline).
//!
//! [`grpo_loss`] evaluates the surrogate of `J_RL` at any weights `(base, adapter)` on a
//! [`RlTrainingBatch`]: the bilevel trainer calls it at `(θ, w)` and at `(θ̂, w)` on the same
//! rollouts (`aux_rollouts = shared`), where the importance ratio is `π(ŷ; θ̂, w)/π_old(ŷ; θ, w)`.
//! [`GrpoTrainer`] drives the whole loop for RL alone.

use crate::advantage::AdvantageScaling;
use crate::loss::{
    PolicyLossConfig, PolicyLossInputs, PolicyLossOutput, TokenPolicyLossInputs, policy_loss, token_policy_loss,
};
use crate::rollout::{RlTrainingBatch, Rollouts, collect_rollouts};
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, DataCursor, FinishReason, FlatGradients, GroupOptimizer,
    PromptSource, Result, RewardFunction, SamplingParams, error::ensure_finite,
};
use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Configuration of GRPO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoConfig {
    /// Prompts per step (each gets `sampling.n` completions).
    pub prompts_per_step: usize,
    /// Sampling of the rollouts; `n` is the group size `G`.
    pub sampling: SamplingParams,
    /// Advantage scaling.
    pub advantage_scaling: AdvantageScaling,
    /// The policy loss.
    pub loss: PolicyLossConfig,
    /// Exclude truncated completions (finish = length) from the loss.
    pub mask_truncated: bool,
    /// Optimisation epochs over each rollout batch (μ).
    pub epochs_per_batch: usize,
    /// Compute and log the policy entropy (costs a little per step).
    pub log_entropy: bool,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            prompts_per_step: 8,
            sampling: SamplingParams { n: 4, max_new_tokens: 48, ..SamplingParams::default() },
            advantage_scaling: AdvantageScaling::Group,
            loss: PolicyLossConfig::default(),
            mask_truncated: false,
            epochs_per_batch: 1,
            log_entropy: true,
        }
    }
}

impl GrpoConfig {
    /// Checks every value, naming the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.prompts_per_step == 0 {
            return Err(BridgeError::config(format!("{prefix}.prompts_per_step"), "must be ≥ 1"));
        }
        if self.epochs_per_batch == 0 {
            return Err(BridgeError::config(format!("{prefix}.epochs_per_batch"), "must be ≥ 1"));
        }
        if self.sampling.max_new_tokens == 0 {
            return Err(BridgeError::config(format!("{prefix}.sampling.max_new_tokens"), "must be ≥ 1"));
        }
        self.sampling.validate_as(&format!("{prefix}.sampling"))?;
        if self.sampling.n < 2 {
            return Err(BridgeError::config(
                format!("{prefix}.sampling.n"),
                format!(
                    "GRPO needs at least 2 completions per prompt, got {}: with one, every \
                     group-relative advantage is 0 and nothing is learned",
                    self.sampling.n
                ),
            ));
        }
        self.loss.validate(&format!("{prefix}.loss"))
    }
}

/// The log-probabilities a policy loss reads from `batch`, with the mean entropy when asked for.
pub(crate) struct ScoredBatch {
    /// `log π(·; base, adapter)` `[B, T−1]`, differentiable.
    pub(crate) logprobs: Tensor<2>,
    /// `log π_ref` `[B, T−1]` when `kl_coef > 0`.
    pub(crate) ref_logprobs: Option<Tensor<2>>,
    /// The loss mask `[B, T−1]`.
    pub(crate) mask: Tensor<2>,
    /// Token-mean entropy over the mask.
    pub(crate) entropy: Option<f64>,
}

/// Scores `batch` under `π(·; base, adapter)` (and `π_ref` when the KL term is on; see
/// [`grpo_loss`]).
pub(crate) fn score_batch<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &RlTrainingBatch,
    reference: Option<&L::Base>,
    cfg: &PolicyLossConfig,
    with_entropy: bool,
) -> Result<ScoredBatch> {
    let scores = lm.token_scores(base, adapter, &batch.sequences, with_entropy)?;
    let device = scores.logprobs.device();
    let mask = batch.mask(&device);
    let ref_logprobs = if cfg.kl_coef > 0.0 {
        match batch.ref_logprobs(&device) {
            Some(cached) => Some(cached),
            None => {
                let reference =
                    reference.ok_or_else(|| BridgeError::InvalidInput("kl_coef > 0 needs a reference model".into()))?;
                Some(lm.token_scores(reference, None, &batch.sequences, false)?.logprobs.detach())
            }
        }
    } else {
        None
    };
    let entropy = match scores.entropy {
        Some(e) => {
            let tokens = mask.clone().sum().into_scalar::<f64>().max(1.0);
            Some((e.detach() * mask.clone()).sum().into_scalar::<f64>() / tokens)
        }
        None => None,
    };
    Ok(ScoredBatch { logprobs: scores.logprobs, ref_logprobs, mask, entropy })
}

/// The GRPO loss of `π(·; base, adapter)` on `batch`, and the mean entropy when asked for.
///
/// `reference` is `π_ref`'s base (used without adapter); it is required when `kl_coef > 0` and the
/// batch has no cached reference log-probs ([`RlTrainingBatch::cache_reference`]), and not
/// evaluated otherwise.
pub fn grpo_loss<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &RlTrainingBatch,
    reference: Option<&L::Base>,
    cfg: &PolicyLossConfig,
    with_entropy: bool,
) -> Result<(PolicyLossOutput, Option<f64>)> {
    let s = score_batch(lm, base, adapter, batch, reference, cfg, with_entropy)?;
    let device = s.logprobs.device();
    let out = policy_loss(
        cfg,
        PolicyLossInputs {
            logprobs: s.logprobs,
            old_logprobs: batch.old_logprobs(&device),
            ref_logprobs: s.ref_logprobs,
            advantages: batch.advantages(&device),
            mask: s.mask,
            max_completion_len: batch.max_completion_len,
        },
    )?;
    Ok((out, s.entropy))
}

/// The clipped-surrogate loss of `π(·; base, adapter)` on `batch` with one advantage per token
/// (`advantages [B, T−1]`, PPO's GAE advantages) in place of the batch's per-sequence ones; KL,
/// aggregation and entropy as [`grpo_loss`].
#[allow(clippy::too_many_arguments)]
pub fn token_advantage_loss<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &RlTrainingBatch,
    advantages: Tensor<2>,
    reference: Option<&L::Base>,
    cfg: &PolicyLossConfig,
    with_entropy: bool,
) -> Result<(PolicyLossOutput, Option<f64>)> {
    let s = score_batch(lm, base, adapter, batch, reference, cfg, with_entropy)?;
    let device = s.logprobs.device();
    if advantages.dims() != s.logprobs.dims() {
        return Err(BridgeError::InvalidInput(format!(
            "{:?} token advantages for log-probs of shape {:?}",
            advantages.dims(),
            s.logprobs.dims()
        )));
    }
    let out = token_policy_loss(
        cfg,
        TokenPolicyLossInputs {
            logprobs: s.logprobs,
            old_logprobs: batch.old_logprobs(&device),
            ref_logprobs: s.ref_logprobs,
            advantages,
            mask: s.mask,
            max_completion_len: batch.max_completion_len,
        },
    )?;
    Ok((out, s.entropy))
}

/// What one GRPO step did (one JSONL line of the metrics file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepMetrics {
    /// Step index (0-based).
    pub step: u64,
    /// Mean reward of the non-skipped completions.
    pub reward_mean: f64,
    /// Standard deviation of those rewards.
    pub reward_std: f64,
    /// Completions whose reward was skipped.
    pub skipped: usize,
    /// Fraction of groups whose rewards were all equal.
    pub zero_std_fraction: f64,
    /// Mean completion length in tokens.
    pub completion_len_mean: f64,
    /// Shortest completion.
    pub completion_len_min: usize,
    /// Longest completion.
    pub completion_len_max: usize,
    /// Fraction of completions cut by `max_new_tokens`.
    pub truncated_fraction: f64,
    /// Loss of the last epoch.
    pub loss: f64,
    /// Token-mean clipped surrogate of the last epoch.
    pub surrogate: f64,
    /// Token-mean KL to the reference (0 when disabled).
    pub kl: f64,
    /// Token-mean policy entropy (when logged).
    pub entropy: Option<f64>,
    /// Mean importance ratio.
    pub ratio_mean: f64,
    /// Fraction of tokens clipped from below.
    pub clip_low_fraction: f64,
    /// Fraction of tokens clipped from above.
    pub clip_high_fraction: f64,
    /// Fraction of tokens outside the clip range.
    pub clip_fraction: f64,
    /// Completion tokens in the loss.
    pub tokens: usize,
    /// Base gradient norm before clipping (last epoch).
    pub grad_norm: f64,
    /// Seconds spent generating.
    pub generation_seconds: f64,
    /// Seconds spent in loss, backward and optimiser.
    pub training_seconds: f64,
}

impl GrpoStepMetrics {
    /// The rollout part of the metrics.
    pub fn from_rollouts(step: u64, rollouts: &Rollouts) -> Self {
        let lens: Vec<usize> = rollouts.completions.iter().map(|c| c.tokens.len()).collect();
        let n = lens.len().max(1) as f64;
        let truncated = rollouts.completions.iter().filter(|c| c.finish == FinishReason::Length).count();
        Self {
            step,
            reward_mean: rollouts.reward_mean(),
            reward_std: rollouts.reward_std(),
            skipped: rollouts.skipped(),
            zero_std_fraction: rollouts.advantages.zero_std_fraction(),
            completion_len_mean: lens.iter().sum::<usize>() as f64 / n,
            completion_len_min: lens.iter().copied().min().unwrap_or(0),
            completion_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated_fraction: truncated as f64 / n,
            generation_seconds: rollouts.generation_seconds,
            ..Self::default()
        }
    }
}

/// GRPO alone: the RL-zero baseline, on the base θ and (optionally) an adapter w.
pub struct GrpoTrainer<L: CausalLm> {
    /// The architecture.
    pub lm: L,
    /// The base θ being trained.
    pub base: L::Base,
    /// The adapter w, trained with its own optimiser when present.
    pub adapter: Option<L::Adapter>,
    reference: Option<L::Base>,
    base_optim: GroupOptimizer,
    adapter_optim: Option<GroupOptimizer>,
    /// The configuration.
    pub config: GrpoConfig,
    /// The sampling RNG (part of a checkpoint).
    pub rng: BridgeRng,
    /// The prompt cursor (part of a checkpoint).
    pub cursor: DataCursor,
    /// Steps taken.
    pub step: u64,
}

impl<L: CausalLm> GrpoTrainer<L> {
    /// A trainer starting from `base` (which is also π_ref when `kl_coef > 0`).
    pub fn new(
        lm: L,
        base: L::Base,
        adapter: Option<(L::Adapter, AdamWSettings)>,
        base_settings: AdamWSettings,
        config: GrpoConfig,
        seed: u64,
    ) -> Result<Self> {
        config.validate("rl")?;
        let reference = (config.loss.kl_coef > 0.0).then(|| base.clone().no_grad());
        let (adapter, adapter_optim) = match adapter {
            Some((a, s)) => (Some(a), Some(GroupOptimizer::new("optim.adapter", s)?)),
            None => (None, None),
        };
        Ok(Self {
            lm,
            base,
            adapter,
            reference,
            base_optim: GroupOptimizer::new("optim.base", base_settings)?,
            adapter_optim,
            config,
            rng: BridgeRng::for_stream(seed, "rollouts"),
            cursor: DataCursor::new(bridge_core::derive_seed(seed, "data/rl"), true),
            step: 0,
        })
    }

    /// One GRPO step: rollouts on the next prompts, then `epochs_per_batch` updates.
    pub fn train_step<S: PromptSource>(&mut self, prompts: &S, reward: &dyn RewardFunction) -> Result<GrpoStepMetrics> {
        let batch_prompts = self.cursor.next_batch(prompts, self.config.prompts_per_step)?;
        let rollouts = collect_rollouts(
            &self.lm,
            &self.base,
            self.adapter.as_ref(),
            &batch_prompts,
            &self.config.sampling,
            reward,
            self.config.advantage_scaling,
            &mut self.rng,
        )?;
        let mut metrics = GrpoStepMetrics::from_rollouts(self.step, &rollouts);
        let mut batch = rollouts.training_batch(self.lm.codec().pad_token_id(), self.config.mask_truncated)?;
        if let Some(reference) = self.reference.as_ref().filter(|_| self.config.loss.kl_coef > 0.0) {
            batch.cache_reference(&self.lm, reference)?;
        }
        metrics.tokens = batch.num_loss_tokens();
        let start = Instant::now();
        if metrics.tokens > 0 {
            for _ in 0..self.config.epochs_per_batch {
                let (out, entropy) = grpo_loss(
                    &self.lm,
                    &self.base,
                    self.adapter.as_ref(),
                    &batch,
                    self.reference.as_ref(),
                    &self.config.loss,
                    self.config.log_entropy,
                )?;
                ensure_finite("rl_loss", out.stats.loss, self.step)?;
                let mut grads = out.loss.backward();
                let g_base = FlatGradients::from_backward(&mut grads, &self.base);
                let (g_base, norm) = self.base_optim.clip(&g_base, self.step)?;
                let g_adapter = match (&self.adapter, &self.adapter_optim) {
                    (Some(a), Some(o)) => Some(o.clip(&FlatGradients::from_backward(&mut grads, a), self.step)?.0),
                    _ => None,
                };
                self.base = self.base_optim.apply(self.base.clone(), &g_base);
                if let (Some(a), Some(o), Some(g)) = (self.adapter.take(), self.adapter_optim.as_mut(), g_adapter) {
                    self.adapter = Some(o.apply(a, &g));
                }
                let s = out.stats;
                metrics.loss = s.loss;
                metrics.surrogate = s.surrogate;
                metrics.kl = s.kl;
                metrics.ratio_mean = s.ratio_mean;
                metrics.clip_low_fraction = s.clip_low_fraction;
                metrics.clip_high_fraction = s.clip_high_fraction;
                metrics.clip_fraction = s.clip_fraction;
                metrics.entropy = entropy;
                metrics.grad_norm = norm;
            }
        }
        metrics.training_seconds = start.elapsed().as_secs_f64();
        self.step += 1;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::testing::{BigramLm, CharCodec, FnReward};
    use bridge_core::{InMemorySource, Reward, RlPrompt};
    use burn::tensor::Device;

    fn prompt(text: &str, reference: &str) -> RlPrompt {
        RlPrompt::new(text, text, reference)
    }

    /// Toy task with a verifiable answer: after the prompt, the first sampled character must be
    /// the reference. A random bigram starts near chance (1/6); GRPO must raise it.
    #[test]
    fn grpo_raises_the_mean_reward_of_a_toy_task() {
        let device = Device::flex().autodiff();
        let lm = BigramLm::new(CharCodec::new("abcde"));
        let mut rng = BridgeRng::seed_from_u64(0);
        let base = lm.init_base(0.5, &device, &mut rng);
        let config = GrpoConfig {
            prompts_per_step: 4,
            sampling: SamplingParams { n: 8, max_new_tokens: 3, ..SamplingParams::default() },
            loss: PolicyLossConfig { kl_coef: 0.01, ..PolicyLossConfig::default() },
            ..GrpoConfig::default()
        };
        let mut trainer =
            GrpoTrainer::new(lm, base, None, AdamWSettings { lr: 0.2, ..AdamWSettings::default() }, config, 7).unwrap();
        let prompts = InMemorySource::new(vec![prompt("a", "c"), prompt("b", "e"), prompt("c", "a"), prompt("d", "b")]);
        let first_char = FnReward::new("first_char", |c: &str, p: &RlPrompt| {
            Reward::scored(if c.starts_with(p.reference.as_str()) { 1.0 } else { 0.0 })
        });
        let mut history = Vec::new();
        for _ in 0..40 {
            let m = trainer.train_step(&prompts, &first_char).unwrap();
            assert!(m.tokens > 0 && m.loss.is_finite() && m.kl >= 0.0);
            assert!(m.entropy.is_some());
            history.push(m.reward_mean);
        }
        let early: f64 = history[..5].iter().sum::<f64>() / 5.0;
        let late: f64 = history[35..].iter().sum::<f64>() / 5.0;
        assert!(early < 0.5, "starts near chance: {history:?}");
        assert!(late > 0.9, "GRPO learns the task: {history:?}");
    }

    #[test]
    fn single_epoch_ratio_is_one_and_adapter_is_trained() {
        let device = Device::flex().autodiff();
        let lm = BigramLm::new(CharCodec::new("ab"));
        let mut rng = BridgeRng::seed_from_u64(3);
        let base = lm.init_base(0.5, &device, &mut rng);
        let adapter = lm.init_adapter(2, 2.0, &device, &mut rng);
        let config = GrpoConfig {
            prompts_per_step: 2,
            sampling: SamplingParams { n: 4, max_new_tokens: 4, ..SamplingParams::default() },
            loss: PolicyLossConfig { kl_coef: 0.0, ..PolicyLossConfig::default() },
            ..GrpoConfig::default()
        };
        let b_before: Vec<f32> = adapter.b.val().into_data().try_to_vec().unwrap();
        let mut trainer = GrpoTrainer::new(
            lm,
            base,
            Some((adapter, AdamWSettings::with_lr(0.1))),
            AdamWSettings::with_lr(0.1),
            config,
            1,
        )
        .unwrap();
        let prompts = InMemorySource::new(vec![prompt("a", "b"), prompt("b", "a")]);
        let reward =
            FnReward::new("has_b", |c: &str, _: &RlPrompt| Reward::scored(if c.contains('b') { 1.0 } else { 0.0 }));
        let mut trained = false;
        for _ in 0..5 {
            let m = trainer.train_step(&prompts, &reward).unwrap();
            // Sampling and training share one implementation: π_θ = π_old exactly at epoch 1.
            assert!((m.ratio_mean - 1.0).abs() < 1e-5, "{m:?}");
            assert_eq!(m.kl, 0.0);
            trained |= m.zero_std_fraction < 1.0;
        }
        assert!(trained, "at least one step had a learning signal");
        let b_after: Vec<f32> = trainer.adapter.as_ref().unwrap().b.val().into_data().try_to_vec().unwrap();
        assert_ne!(b_before, b_after, "the adapter's B received gradient and moved");
    }

    #[test]
    fn config_validation_names_fields() {
        let bad = GrpoConfig { epochs_per_batch: 0, ..GrpoConfig::default() };
        assert!(bad.validate("rl").unwrap_err().to_string().contains("rl.epochs_per_batch"));
        for n in [0, 1] {
            let mut one = GrpoConfig::default();
            one.sampling.n = n;
            let e = one.validate("rl").unwrap_err().to_string();
            assert!(e.starts_with("config `rl.sampling.n`"), "{e}");
        }
        let mut top_k = GrpoConfig::default();
        top_k.sampling.top_k = Some(0);
        assert!(top_k.validate("rl").unwrap_err().to_string().starts_with("config `rl.sampling.top_k`"));
        let typo = serde_json::from_str::<GrpoConfig>(r#"{"prompts_per_stp": 3}"#).unwrap_err();
        assert!(typo.to_string().contains("prompts_per_stp"));
    }
}
