//! LUFFY (Yan et al., *Learning to Reason under Off-Policy Guidance*, arXiv 2504.14945):
//! mixed-policy GRPO. Each prompt's group holds completions sampled from the policy *and*
//! off-policy demonstrations of the same prompt (its worked solution,
//! [`RlPrompt::demonstration`]); rewards are normalised over the mixed group, so a correct
//! demonstration lifts the advantage of nothing but itself when the policy fails, and on-policy
//! successes compete with it when the policy succeeds.
//!
//! Per completion token `t` of sequence `i`, with advantage `A_i` of the mixed group
//! (the authors' `compute_token_on_off_policy_loss` with `off_policy_reshape = "p_div_p_0.1"`):
//!
//! ```text
//! on-policy token:   ℓ_t = −min(ρ_t·A_i, clip(ρ_t, 1−ε_low, 1+ε_high)·A_i) + β_KL·kl_t    ρ_t = π_θ/π_old
//! off-policy token:  ℓ_t = −f(π_θ(t))·A_i,     f(π) = π / (π + γ)   (policy shaping, γ = 0.1)
//! ```
//!
//! The shaping function replaces the importance ratio of a demonstration token (whose behaviour
//! policy is unknown) and its clip: its gradient `γ/(π+γ)²·∇π` is largest for the
//! low-probability tokens the model would not produce itself. The KL estimator needs samples
//! from π_θ, so it applies to on-policy tokens only. The per-token losses are aggregated over
//! all tokens of the batch as GRPO's ([`crate::loss::aggregate`]).

use crate::advantage::{AdvantageScaling, compute_advantages};
use crate::grpo::score_batch;
use crate::loss::{
    PolicyLossConfig, PolicyLossInputs, PolicyLossStats, aggregate, clipped_surrogate, kl_estimate, scalar,
};
use crate::rollout::{RlTrainingBatch, Rollouts};
use bridge_core::{
    BridgeError, BridgeRng, CausalLm, Completion, FinishReason, Result, RewardFunction, RlPrompt, SamplingParams,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// LUFFY's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LuffyConfig {
    /// Demonstrations per group (the authors' `n_prefix`: 1 of 8); the other
    /// `rl.sampling.n − off_policy_per_prompt` members are sampled.
    pub off_policy_per_prompt: usize,
    /// γ of the policy shaping `f(π) = π/(π + γ)`.
    pub shaping_gamma: f64,
}

impl Default for LuffyConfig {
    fn default() -> Self {
        Self { off_policy_per_prompt: 1, shaping_gamma: 0.1 }
    }
}

impl LuffyConfig {
    /// Checks the values against the group size `n` (`rl.sampling.n`), naming the field under
    /// `prefix`.
    pub fn validate(&self, prefix: &str, n: usize) -> Result<()> {
        if self.off_policy_per_prompt == 0 || self.off_policy_per_prompt >= n {
            return Err(BridgeError::config(
                format!("{prefix}.off_policy_per_prompt"),
                format!("must lie in 1..{n} (rl.sampling.n = {n}: at least one member of each group is sampled)"),
            ));
        }
        if !(self.shaping_gamma.is_finite() && self.shaping_gamma > 0.0) {
            return Err(BridgeError::config(
                format!("{prefix}.shaping_gamma"),
                format!("must be a finite number > 0, got {}", self.shaping_gamma),
            ));
        }
        Ok(())
    }
}

/// `f(π) = π / (π + γ)` of each log-probability, differentiable.
///
/// # Shapes
/// `[B, T]` → `[B, T]`
pub fn policy_shaping(logprobs: Tensor<2>, gamma: f64) -> Tensor<2> {
    let p = logprobs.exp();
    p.clone() / p.add_scalar(gamma)
}

/// The tokens of a demonstration as a completion of at most `max_new_tokens` tokens: its text
/// encoded, then the codec's first EOS id; cut (finish = length, no EOS) when longer.
fn demonstration_completion<L: CausalLm>(
    lm: &L,
    prompt: &RlPrompt,
    prompt_index: usize,
    sample_index: usize,
    max_new_tokens: usize,
) -> Result<Completion> {
    let codec = lm.codec();
    let text = prompt.demonstration.as_ref().ok_or_else(|| {
        BridgeError::InvalidInput(format!(
            "RL prompt `{}` has no demonstration: mixed-policy RL (LUFFY) needs the worked solution of every prompt \
             (a GSM8K `answer`, a MATH `solution`, a prompt/completion `completion`)",
            prompt.id
        ))
    })?;
    let mut tokens = codec.encode(text)?;
    tokens.extend(codec.eos_token_ids().first());
    let finish = if tokens.len() > max_new_tokens {
        tokens.truncate(max_new_tokens);
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    if tokens.is_empty() {
        return Err(BridgeError::InvalidInput(format!("RL prompt `{}`: the demonstration has no token", prompt.id)));
    }
    let text = codec.decode(&tokens)?;
    // π_old of a demonstration is unknown and never read (policy shaping replaces the ratio).
    let logprobs = vec![0.0; tokens.len()];
    Ok(Completion { prompt_index, sample_index, tokens, text, logprobs, finish })
}

/// Mixed groups for `prompts`: per prompt, `sampling.n − off_policy` completions sampled from
/// `π(·; base, adapter)`, then `off_policy` copies of the prompt's demonstration (flagged in
/// [`Rollouts::off_policy`]); every member is scored by `reward` and the advantages are
/// normalised over the mixed group of `sampling.n`.
#[allow(clippy::too_many_arguments)]
pub fn collect_mixed_rollouts<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    prompts: &[RlPrompt],
    sampling: &SamplingParams,
    off_policy: usize,
    reward: &dyn RewardFunction,
    scaling: AdvantageScaling,
    rng: &mut BridgeRng,
) -> Result<Rollouts> {
    sampling.validate()?;
    let n = sampling.n;
    if off_policy == 0 || off_policy >= n {
        return Err(BridgeError::config(
            "algorithm.off_policy_per_prompt",
            format!("must lie in 1..{n} (the group size rl.sampling.n)"),
        ));
    }
    if sampling.max_new_tokens == 0 {
        return Err(BridgeError::config("sampling.max_new_tokens", "must be ≥ 1 for rollouts"));
    }
    // Every prompt needs its demonstration before anything is sampled.
    let demos: Vec<Completion> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| demonstration_completion(lm, p, i, n - off_policy, sampling.max_new_tokens))
        .collect::<Result<_>>()?;
    let codec = lm.codec();
    let prompt_tokens: Vec<Vec<u32>> = prompts.iter().map(|p| codec.encode(&p.prompt)).collect::<Result<_>>()?;
    let on = SamplingParams { n: n - off_policy, ..sampling.clone() };
    let start = Instant::now();
    let sampled = lm.sample(base, adapter, &prompt_tokens, &on, rng)?;
    let generation_seconds = start.elapsed().as_secs_f64();
    if sampled.len() != prompts.len() * on.n {
        return Err(BridgeError::Model(format!(
            "sampler returned {} completions for {} prompts × {}",
            sampled.len(),
            prompts.len(),
            on.n
        )));
    }
    let mut completions = Vec::with_capacity(prompts.len() * n);
    let mut flags = Vec::with_capacity(prompts.len() * n);
    let mut sampled = sampled.into_iter();
    for demo in demos {
        completions.extend(sampled.by_ref().take(on.n));
        flags.extend(std::iter::repeat_n(false, on.n));
        for k in 0..off_policy {
            completions.push(Completion { sample_index: on.n + k, ..demo.clone() });
            flags.push(true);
        }
    }
    let items: Vec<(&str, &RlPrompt)> =
        completions.iter().map(|c| (c.text.as_str(), &prompts[c.prompt_index])).collect();
    let rewards = reward.score_batch(&items);
    let values: Vec<Option<f64>> = rewards.iter().map(|r| r.value).collect();
    let advantages = compute_advantages(&values, n, scaling, 1e-4)?;
    Ok(Rollouts {
        prompts: prompts.to_vec(),
        prompt_tokens,
        completions,
        rewards,
        advantages,
        off_policy: flags,
        group_size: n,
        max_new_tokens: sampling.max_new_tokens,
        generation_seconds,
    })
}

/// The tensors of [`mixed_policy_loss`]: GRPO's [`PolicyLossInputs`] (advantages over the mixed
/// group; `old_logprobs` read on on-policy tokens only) and which tokens are demonstrations.
///
/// # Shapes
/// `policy` as [`PolicyLossInputs`] (`[B, T]`, advantages `[B]`); `off_policy`: `[B, T]`
pub struct MixedPolicyLossInputs {
    /// The inputs of the on-policy clipped surrogate, over all tokens of the batch.
    pub policy: PolicyLossInputs,
    /// 1 on the tokens of demonstrations, 0 on sampled ones.
    pub off_policy: Tensor<2>,
}

/// Statistics of the off-policy part of a [`mixed_policy_loss`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OffPolicyStats {
    /// Off-policy tokens in the loss.
    pub tokens: f64,
    /// Their mean probability π_θ.
    pub prob_mean: f64,
    /// Their mean shaped probability f(π_θ).
    pub shaped_mean: f64,
    /// Their mean `A·f(π_θ)`.
    pub surrogate: f64,
}

/// The loss of [`mixed_policy_loss`] with its statistics.
pub struct MixedPolicyLossOutput {
    /// The loss to minimise (one element).
    pub loss: Tensor<1>,
    /// The on-policy tokens' statistics (`loss` is the whole loss; `surrogate`, `ratio_mean`,
    /// the clip fractions and `kl` are over on-policy tokens, `tokens` counts them).
    pub on_policy: PolicyLossStats,
    /// The demonstrations' statistics.
    pub off_policy: OffPolicyStats,
}

/// LUFFY's mixed-policy loss (module docs): the clipped surrogate on sampled tokens, policy
/// shaping `−f(π)·A` on demonstration tokens, aggregated over all tokens by `cfg.aggregation`.
pub fn mixed_policy_loss(
    cfg: &PolicyLossConfig,
    shaping_gamma: f64,
    inputs: MixedPolicyLossInputs,
) -> Result<MixedPolicyLossOutput> {
    let MixedPolicyLossInputs {
        policy: PolicyLossInputs { logprobs, old_logprobs, ref_logprobs, advantages, mask, max_completion_len },
        off_policy,
    } = inputs;
    let [b, t] = logprobs.dims();
    let tokens = scalar(mask.clone().sum());
    if tokens <= 0.0 {
        return Err(BridgeError::InvalidInput("policy loss over a batch without completion tokens".into()));
    }
    let adv = advantages.reshape([b, 1]).expand([b, t]);
    let off = off_policy * mask.clone();
    let on = mask.clone() - off.clone();
    // On-policy: GRPO's clipped surrogate.
    let ratio = (logprobs.clone() - old_logprobs).exp();
    let surrogate = clipped_surrogate(cfg, ratio.clone(), adv.clone());
    // Off-policy: policy shaping in place of the ratio, no clip.
    let shaped = policy_shaping(logprobs.clone(), shaping_gamma);
    let off_surrogate = shaped.clone() * adv.clone();
    let mut per_token = (surrogate.clone() * on.clone() + off_surrogate.clone() * off.clone()).neg();
    let on_tokens = scalar(on.clone().sum());
    let mut kl_mean = 0.0;
    if cfg.kl_coef > 0.0 {
        let reference =
            ref_logprobs.ok_or_else(|| BridgeError::InvalidInput("kl_coef > 0 needs reference log-probs".into()))?;
        let kl = kl_estimate(logprobs.clone(), reference, cfg.kl_estimator) * on.clone();
        kl_mean = scalar(kl.clone().detach().sum()) / on_tokens.max(1.0);
        per_token = per_token + kl.mul_scalar(cfg.kl_coef);
    }
    let loss = aggregate(cfg.aggregation, per_token * mask.clone(), &mask, tokens, max_completion_len)?;
    let mean_over = |x: Tensor<2>, m: &Tensor<2>, n: f64| if n > 0.0 { scalar((x * m.clone()).sum()) / n } else { 0.0 };
    let ratio_d = ratio.detach();
    let low = ratio_d.clone().lower_elem(1.0 - cfg.epsilon_low);
    let high = ratio_d.clone().greater_elem(1.0 + cfg.epsilon_high);
    let adv_pos = adv.clone().greater_elem(0.0).float();
    let adv_neg = adv.lower_elem(0.0).float();
    let off_tokens = scalar(off.clone().sum());
    let on_policy = PolicyLossStats {
        loss: scalar(loss.clone().detach()),
        surrogate: mean_over(surrogate.detach(), &on, on_tokens),
        kl: kl_mean,
        ratio_mean: mean_over(ratio_d, &on, on_tokens),
        clip_low_fraction: mean_over(low.clone().float() * adv_neg, &on, on_tokens),
        clip_high_fraction: mean_over(high.clone().float() * adv_pos, &on, on_tokens),
        clip_fraction: mean_over(low.bool_or(high).float(), &on, on_tokens),
        tokens: on_tokens,
    };
    let off_policy = OffPolicyStats {
        tokens: off_tokens,
        prob_mean: mean_over(logprobs.detach().exp(), &off, off_tokens),
        shaped_mean: mean_over(shaped.detach(), &off, off_tokens),
        surrogate: mean_over(off_surrogate.detach(), &off, off_tokens),
    };
    Ok(MixedPolicyLossOutput { loss, on_policy, off_policy })
}

/// LUFFY's loss of `π(·; base, adapter)` on a batch of mixed groups
/// ([`collect_mixed_rollouts`]'s [`Rollouts::training_batch`]), with the mean entropy when asked
/// for; `reference` as in [`crate::grpo_loss`].
#[allow(clippy::too_many_arguments)]
pub fn mixed_loss<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &RlTrainingBatch,
    reference: Option<&L::Base>,
    cfg: &PolicyLossConfig,
    shaping_gamma: f64,
    with_entropy: bool,
) -> Result<(MixedPolicyLossOutput, Option<f64>)> {
    let s = score_batch(lm, base, adapter, batch, reference, cfg, with_entropy)?;
    let (entropy, off_policy) = (s.entropy, batch.off_policy_mask(&s.logprobs.device()));
    let inputs = MixedPolicyLossInputs { policy: s.policy_inputs(batch), off_policy };
    Ok((mixed_policy_loss(cfg, shaping_gamma, inputs)?, entropy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{KlEstimator, LossAggregation};
    use approx::assert_relative_eq;
    use burn::tensor::{Device, TensorData};

    const B: usize = 3;
    const T: usize = 4;
    const LOGP: [f64; 12] = [-1.0, -0.5, -2.0, -0.1, -0.3, -1.2, -0.7, -3.0, -0.05, -0.9, -1.5, -0.2];
    const OLD: [f64; 12] = [-1.1, -0.2, -2.0, -0.6, 0.0, 0.0, 0.0, 0.0, -0.5, -0.9, -1.0, -0.2];
    const REF: [f64; 12] = [-0.9, -0.6, -1.5, -0.4, -0.2, -1.4, -0.8, -2.0, -0.3, -1.0, -1.1, -0.1];
    const MASK: [f64; 12] = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    /// Row 1 is a demonstration.
    const OFF: [f64; 12] = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    const ADV: [f64; 3] = [1.5, -0.8, 0.4];

    fn t2(v: &[f64; 12], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [B, T]), device)
    }

    fn inputs(device: &Device, logp: Tensor<2>) -> MixedPolicyLossInputs {
        MixedPolicyLossInputs {
            policy: PolicyLossInputs {
                logprobs: logp,
                old_logprobs: t2(&OLD, device),
                ref_logprobs: Some(t2(&REF, device)),
                advantages: Tensor::from_data(
                    TensorData::new(ADV.iter().map(|&x| x as f32).collect::<Vec<_>>(), [B]),
                    device,
                ),
                mask: t2(&MASK, device),
                max_completion_len: 6,
            },
            off_policy: t2(&OFF, device),
        }
    }

    /// The authors' per-token formulas as scalar loops (f64): the loss and ∂loss/∂log π_θ.
    fn reference(cfg: &PolicyLossConfig, gamma: f64) -> (f64, [f64; 12]) {
        let mut per_token = [0.0; 12];
        let mut grad = [0.0; 12];
        for k in 0..B * T {
            let a = ADV[k / T];
            if OFF[k] > 0.0 {
                let p = LOGP[k].exp();
                per_token[k] = -a * p / (p + gamma);
                grad[k] = -a * gamma * p / (p + gamma).powi(2); // d f/d log p = γp/(p+γ)²
            } else {
                let r = (LOGP[k] - OLD[k]).exp();
                let c = r.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
                let unclipped_is_min = r * a <= c * a;
                per_token[k] = -(r * a).min(c * a);
                grad[k] = if unclipped_is_min { -r * a } else { 0.0 };
                let d = REF[k] - LOGP[k];
                per_token[k] += cfg.kl_coef * (d.exp() - d - 1.0);
                grad[k] += cfg.kl_coef * (1.0 - d.exp());
            }
        }
        let n: f64 = MASK.iter().sum();
        let (norm, loss): (Vec<f64>, f64) = match cfg.aggregation {
            LossAggregation::TokenMean => (vec![n; B], per_token.iter().zip(MASK).map(|(l, m)| l * m).sum::<f64>() / n),
            LossAggregation::DrGrpo => {
                (vec![(B * 6) as f64; B], per_token.iter().zip(MASK).map(|(l, m)| l * m).sum::<f64>() / (B * 6) as f64)
            }
            LossAggregation::SequenceMean => {
                let rows: Vec<f64> = (0..B).map(|i| MASK[i * T..(i + 1) * T].iter().sum::<f64>() * B as f64).collect();
                let loss = (0..B * T).map(|k| per_token[k] * MASK[k] / rows[k / T]).sum();
                (rows, loss)
            }
        };
        for k in 0..B * T {
            grad[k] *= MASK[k] / norm[k / T];
        }
        (loss, grad)
    }

    #[test]
    fn mixed_loss_and_its_gradient_match_the_reference_formulas() {
        let device = Device::flex().autodiff();
        for aggregation in [LossAggregation::TokenMean, LossAggregation::SequenceMean, LossAggregation::DrGrpo] {
            for (kl_coef, gamma) in [(0.0, 0.1), (0.05, 0.1), (0.0, 0.5)] {
                let cfg =
                    PolicyLossConfig { kl_coef, kl_estimator: KlEstimator::K3, aggregation, ..Default::default() };
                let logp = t2(&LOGP, &device).require_grad();
                let out = mixed_policy_loss(&cfg, gamma, inputs(&device, logp.clone())).unwrap();
                let (expected, expected_grad) = reference(&cfg, gamma);
                assert_relative_eq!(out.on_policy.loss, expected, epsilon = 1e-6);
                let grads = out.loss.backward();
                let g: Vec<f32> = logp.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
                for k in 0..B * T {
                    assert_relative_eq!(f64::from(g[k]), expected_grad[k], epsilon = 1e-6);
                }
                // Statistics: 3 demonstration tokens (row 1, its 4th is masked), 7 sampled ones.
                assert_eq!((out.on_policy.tokens, out.off_policy.tokens), (7.0, 3.0));
                let shaped: f64 = [4, 5, 6].iter().map(|&k| LOGP[k].exp() / (LOGP[k].exp() + gamma)).sum::<f64>() / 3.0;
                assert_relative_eq!(out.off_policy.shaped_mean, shaped, epsilon = 1e-6);
                assert_relative_eq!(out.off_policy.surrogate, -0.8 * shaped, epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn shaping_is_pi_over_pi_plus_gamma_and_the_config_is_checked() {
        let device = Device::flex();
        let lp = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, (0.1f32).ln(), -30.0], [1, 3]), &device);
        let f: Vec<f32> = policy_shaping(lp, 0.1).into_data().try_to_vec().unwrap();
        assert_relative_eq!(f[0], 1.0 / 1.1, epsilon = 1e-6);
        assert_relative_eq!(f[1], 0.5, epsilon = 1e-6);
        assert!(f[2] < 1e-11);
        assert!(LuffyConfig::default().validate("algorithm", 4).is_ok());
        let e = LuffyConfig { off_policy_per_prompt: 4, ..Default::default() }.validate("algorithm", 4).unwrap_err();
        assert!(e.to_string().contains("algorithm.off_policy_per_prompt"), "{e}");
        let e = LuffyConfig { shaping_gamma: 0.0, ..Default::default() }.validate("algorithm", 4).unwrap_err();
        assert!(e.to_string().contains("algorithm.shaping_gamma"), "{e}");
        let typo = serde_json::from_str::<LuffyConfig>(r#"{"shaping_gama": 0.2}"#).unwrap_err();
        assert!(typo.to_string().contains("shaping_gama"));
    }
}
