//! The GRPO objective.
//!
//! [`grpo_loss`] evaluates the surrogate of `J_RL` at any weights `(base, adapter)` on a
//! [`RlTrainingBatch`]: the bilevel trainer calls it at `(θ, w)` and at `(θ̂, w)` on the same
//! rollouts (`aux_rollouts = shared`), where the importance ratio is `π(ŷ; θ̂, w)/π_old(ŷ; θ, w)`.
//! RL alone (RL-zero) is `bridge-bilevel`'s `RlZero` algorithm, trained by the same run loop as
//! every other method.

use crate::advantage::AdvantageScaling;
use crate::loss::{
    PolicyLossConfig, PolicyLossInputs, PolicyLossOutput, TokenPolicyLossInputs, policy_loss, token_policy_loss,
};
use crate::rollout::{RlTrainingBatch, Rollouts};
use bridge_core::{BridgeError, CausalLm, FinishReason, Result, SamplingParams};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

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

impl ScoredBatch {
    /// The inputs of [`policy_loss`] (and of LUFFY's mixed loss): these scores with `batch`'s
    /// sampler log-probs and per-sequence advantages.
    pub(crate) fn policy_inputs(self, batch: &RlTrainingBatch) -> PolicyLossInputs {
        let device = self.logprobs.device();
        PolicyLossInputs {
            logprobs: self.logprobs,
            old_logprobs: batch.old_logprobs(&device),
            ref_logprobs: self.ref_logprobs,
            advantages: batch.advantages(&device),
            mask: self.mask,
            max_completion_len: batch.max_completion_len,
        }
    }
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
    let entropy = s.entropy;
    Ok((policy_loss(cfg, s.policy_inputs(batch))?, entropy))
}

/// The clipped-surrogate loss of `π(·; base, adapter)` on `batch` with one advantage per token
/// (`advantages [B, T−1]`, PPO's GAE advantages) in place of the batch's per-sequence ones; KL,
/// aggregation and entropy as [`grpo_loss`].
///
/// # Shapes
/// - `batch`: `B` rows padded to `T` tokens; log-probs, mask and `advantages` are `[B, T−1]`
/// - returned `loss`: `[1]`
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

/// The statistics of one step's rollouts (`record_rollouts` in bridge-bilevel writes them into the
/// step's metrics line; the loss statistics come from [`crate::PolicyLossStats`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutStats {
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
    /// Seconds spent generating.
    pub generation_seconds: f64,
}

impl RolloutStats {
    /// The statistics of `rollouts`.
    pub fn of(rollouts: &Rollouts) -> Self {
        let lens: Vec<usize> = rollouts.completions.iter().map(|c| c.tokens.len()).collect();
        let n = lens.len().max(1) as f64;
        let truncated = rollouts.completions.iter().filter(|c| c.finish == FinishReason::Length).count();
        Self {
            reward_mean: rollouts.reward_mean(),
            reward_std: rollouts.reward_std(),
            skipped: rollouts.skipped(),
            zero_std_fraction: rollouts.advantages.zero_std_fraction(),
            completion_len_mean: lens.iter().sum::<usize>() as f64 / n,
            completion_len_min: lens.iter().copied().min().unwrap_or(0),
            completion_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated_fraction: truncated as f64 / n,
            generation_seconds: rollouts.generation_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_stats_are_computed_from_the_completions_by_hand() {
        use crate::advantage::compute_advantages;
        use bridge_core::{Completion, Reward, RlPrompt};
        let completion = |k: usize, len: usize, finish| Completion {
            prompt_index: 0,
            sample_index: k,
            tokens: vec![1; len],
            text: String::new(),
            logprobs: vec![0.0; len],
            finish,
        };
        // One group of three: rewards 1, 0 and skipped; lengths 2, 4 and 6, the last one cut.
        let rewards = vec![Reward::scored(1.0), Reward::scored(0.0), Reward::skip("no answer")];
        let values: Vec<Option<f64>> = rewards.iter().map(|r| r.value).collect();
        let rollouts = Rollouts {
            prompts: vec![RlPrompt::new("p", "q", "a")],
            prompt_tokens: vec![vec![1]],
            completions: vec![
                completion(0, 2, FinishReason::Stop),
                completion(1, 4, FinishReason::Stop),
                completion(2, 6, FinishReason::Length),
            ],
            rewards,
            advantages: compute_advantages(&values, 3, AdvantageScaling::default(), 1e-4).unwrap(),
            off_policy: vec![false; 3],
            group_size: 3,
            max_new_tokens: 6,
            generation_seconds: 1.5,
        };
        let s = RolloutStats::of(&rollouts);
        assert_eq!((s.reward_mean, s.reward_std, s.skipped), (0.5, 0.5, 1));
        assert_eq!((s.completion_len_mean, s.completion_len_min, s.completion_len_max), (4.0, 2, 6));
        assert_eq!((s.truncated_fraction, s.generation_seconds, s.zero_std_fraction), (1.0 / 3.0, 1.5, 0.0));
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
