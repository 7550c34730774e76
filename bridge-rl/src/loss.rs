//! The GRPO-family policy loss: clipped surrogate, KL to a reference, and the aggregations.
//!
//! Per completion token `t` of sequence `i`, with advantage `A_i`:
//!
//! ```text
//! ρ_t      = exp(log π_θ(t) − log π_old(t))
//! surr_t   = min(ρ_t·A_i, clip(ρ_t, 1−ε_low, 1+ε_high)·A_i)
//! kl_t     = k1: log π_θ − log π_ref
//!            k2: ½ (log π_ref − log π_θ)²
//!            k3: exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1     (the default)
//! ℓ_t      = −surr_t + β_KL · kl_t
//! ```
//!
//! and the loss aggregates `ℓ` over the masked tokens:
//!
//! * [`LossAggregation::TokenMean`] — `Σ ℓ·m / Σ m` over the whole batch (DAPO; the default);
//! * [`LossAggregation::SequenceMean`] — mean over sequences of each sequence's token mean
//!   (the original GRPO);
//! * [`LossAggregation::DrGrpo`] — `Σ ℓ·m / (B · L_max)` with `L_max` the maximum completion
//!   length (Dr.GRPO's constant normaliser).
//!
//! These are TRL's `GRPOTrainer` formulas (`loss_type` = `dapo`, `grpo`, `dr_grpo`) and verl's
//! `compute_policy_loss` / `kl_penalty` (`low_var_kl` is k3).

use bridge_core::{BridgeError, Result};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Estimator of `KL(π_θ ‖ π_ref)` per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log π_θ − log π_ref` (unbiased, high variance).
    K1,
    /// `½ (log π_ref − log π_θ)²`.
    K2,
    /// `exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1` (unbiased, low variance).
    #[default]
    K3,
}

/// How per-token losses become one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over all completion tokens of the batch (DAPO).
    #[default]
    TokenMean,
    /// Mean over sequences of per-sequence token means (GRPO).
    SequenceMean,
    /// Sum divided by `B · L_max` (Dr.GRPO).
    DrGrpo,
}

/// Hyper-parameters of the policy loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyLossConfig {
    /// Lower clip range ε_low (ratio floor `1 − ε_low`).
    pub epsilon_low: f64,
    /// Upper clip range ε_high (ratio ceiling `1 + ε_high`).
    pub epsilon_high: f64,
    /// β_KL; 0 disables the KL term and the reference forward altogether.
    pub kl_coef: f64,
    /// The KL estimator.
    pub kl_estimator: KlEstimator,
    /// The aggregation.
    pub aggregation: LossAggregation,
}

impl Default for PolicyLossConfig {
    fn default() -> Self {
        Self {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            kl_coef: 1e-3,
            kl_estimator: KlEstimator::K3,
            aggregation: LossAggregation::TokenMean,
        }
    }
}

impl PolicyLossConfig {
    /// Checks the values, naming the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        for (f, v) in
            [("epsilon_low", self.epsilon_low), ("epsilon_high", self.epsilon_high), ("kl_coef", self.kl_coef)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(BridgeError::config(
                    format!("{prefix}.{f}"),
                    format!("must be a finite number ≥ 0, got {v}"),
                ));
            }
        }
        if self.epsilon_low >= 1.0 {
            return Err(BridgeError::config(format!("{prefix}.epsilon_low"), "must be < 1"));
        }
        Ok(())
    }
}

/// The tensors a policy loss is computed from.
///
/// # Shapes
/// * `logprobs`, `old_logprobs`, `ref_logprobs`, `mask`: `[B, T]` (targets of the sequences)
/// * `advantages`: `[B]`
pub struct PolicyLossInputs {
    /// `log π_θ` of each target, differentiable.
    pub logprobs: Tensor<2>,
    /// `log π_old` (the sampler's log-probs), constant.
    pub old_logprobs: Tensor<2>,
    /// `log π_ref`, constant; required when `kl_coef > 0`.
    pub ref_logprobs: Option<Tensor<2>>,
    /// One advantage per sequence.
    pub advantages: Tensor<1>,
    /// 1 on completion tokens that take part in the loss, 0 elsewhere.
    pub mask: Tensor<2>,
    /// `L_max` for [`LossAggregation::DrGrpo`] (the sampler's `max_new_tokens`).
    pub max_completion_len: usize,
}

/// Scalar statistics of a policy-loss evaluation (all over masked tokens).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyLossStats {
    /// The loss value.
    pub loss: f64,
    /// Token mean of the clipped surrogate.
    pub surrogate: f64,
    /// Token mean of the KL estimate (0 when disabled).
    pub kl: f64,
    /// Token mean of the ratio ρ.
    pub ratio_mean: f64,
    /// Fraction of tokens with ρ < 1−ε_low and A < 0 (clipped from below).
    pub clip_low_fraction: f64,
    /// Fraction of tokens with ρ > 1+ε_high and A > 0 (clipped from above).
    pub clip_high_fraction: f64,
    /// Fraction of tokens outside the clip range (either side).
    pub clip_fraction: f64,
    /// Number of masked tokens.
    pub tokens: f64,
}

/// The loss tensor (one element, differentiable) and its statistics.
pub struct PolicyLossOutput {
    /// The loss to minimise.
    pub loss: Tensor<1>,
    /// Its statistics.
    pub stats: PolicyLossStats,
}

/// The per-token KL estimate between `logprobs` (π_θ) and `ref_logprobs` (π_ref).
///
/// # Shapes
/// `[B, T]` in, `[B, T]` out.
pub fn kl_estimate(logprobs: Tensor<2>, ref_logprobs: Tensor<2>, estimator: KlEstimator) -> Tensor<2> {
    let log_r = ref_logprobs - logprobs; // log π_ref − log π_θ
    match estimator {
        KlEstimator::K1 => log_r.neg(),
        KlEstimator::K2 => log_r.square().mul_scalar(0.5),
        KlEstimator::K3 => log_r.clone().exp() - log_r - 1.0,
    }
}

pub(crate) fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}

/// Evaluates the policy loss of [`PolicyLossConfig`] on `inputs` (one advantage per sequence).
pub fn policy_loss(cfg: &PolicyLossConfig, inputs: PolicyLossInputs) -> Result<PolicyLossOutput> {
    let PolicyLossInputs { logprobs, old_logprobs, ref_logprobs, advantages, mask, max_completion_len } = inputs;
    let [b, t] = logprobs.dims();
    let advantages = advantages.reshape([b, 1]).expand([b, t]);
    token_policy_loss(
        cfg,
        TokenPolicyLossInputs { logprobs, old_logprobs, ref_logprobs, advantages, mask, max_completion_len },
    )
}

/// The clipped surrogate `min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)` per token (GRPO's, and the
/// on-policy part of LUFFY's mixed loss).
///
/// # Shapes
/// `ratio`, `advantages`: `[B, T]` → `[B, T]`
pub(crate) fn clipped_surrogate(cfg: &PolicyLossConfig, ratio: Tensor<2>, advantages: Tensor<2>) -> Tensor<2> {
    let unclipped = ratio.clone() * advantages.clone();
    let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high) * advantages;
    unclipped.min_pair(clipped)
}

/// The tensors of [`token_policy_loss`]: [`PolicyLossInputs`] with one advantage per token (PPO's
/// GAE advantages).
///
/// # Shapes
/// `logprobs`, `old_logprobs`, `ref_logprobs`, `advantages`, `mask`: `[B, T]`
pub struct TokenPolicyLossInputs {
    /// `log π_θ` of each target, differentiable.
    pub logprobs: Tensor<2>,
    /// `log π_old`, constant.
    pub old_logprobs: Tensor<2>,
    /// `log π_ref`, constant; required when `kl_coef > 0`.
    pub ref_logprobs: Option<Tensor<2>>,
    /// One advantage per token, constant.
    pub advantages: Tensor<2>,
    /// 1 on completion tokens that take part in the loss, 0 elsewhere.
    pub mask: Tensor<2>,
    /// `L_max` for [`LossAggregation::DrGrpo`].
    pub max_completion_len: usize,
}

/// `Σ masked` reduced by `aggregation`, where `masked` is a per-token loss already multiplied by
/// `mask` and `tokens = Σ mask > 0`.
///
/// # Shapes
/// `masked`, `mask`: `[B, T]` → `[1]`
pub fn aggregate(
    aggregation: LossAggregation,
    masked: Tensor<2>,
    mask: &Tensor<2>,
    tokens: f64,
    max_completion_len: usize,
) -> Result<Tensor<1>> {
    let [b, _] = masked.dims();
    Ok(match aggregation {
        LossAggregation::TokenMean => masked.sum().div_scalar(tokens),
        LossAggregation::SequenceMean => {
            let per_seq_tokens = mask.clone().sum_dim(1).clamp_min(1.0); // [B, 1]
            let has_tokens = mask.clone().sum_dim(1).greater_elem(0.0).float(); // [B, 1]
            let seqs = scalar(has_tokens.clone().sum());
            (masked.sum_dim(1) / per_seq_tokens * has_tokens).sum().div_scalar(seqs)
        }
        LossAggregation::DrGrpo => {
            if max_completion_len == 0 {
                return Err(BridgeError::InvalidInput("Dr.GRPO aggregation needs max_completion_len > 0".into()));
            }
            masked.sum().div_scalar((b * max_completion_len) as f64)
        }
    })
}

/// Evaluates the policy loss of [`PolicyLossConfig`] on `inputs` with per-token advantages.
pub fn token_policy_loss(cfg: &PolicyLossConfig, inputs: TokenPolicyLossInputs) -> Result<PolicyLossOutput> {
    let TokenPolicyLossInputs { logprobs, old_logprobs, ref_logprobs, advantages: adv, mask, max_completion_len } =
        inputs;
    let tokens = scalar(mask.clone().sum());
    if tokens <= 0.0 {
        return Err(BridgeError::InvalidInput("policy loss over a batch without completion tokens".into()));
    }
    let ratio = (logprobs.clone() - old_logprobs).exp();
    let surrogate = clipped_surrogate(cfg, ratio.clone(), adv.clone());
    let mut per_token = surrogate.clone().neg();
    let mut kl_mean = 0.0;
    if cfg.kl_coef > 0.0 {
        let reference =
            ref_logprobs.ok_or_else(|| BridgeError::InvalidInput("kl_coef > 0 needs reference log-probs".into()))?;
        let kl = kl_estimate(logprobs, reference, cfg.kl_estimator);
        kl_mean = scalar((kl.clone().detach() * mask.clone()).sum()) / tokens;
        per_token = per_token + kl.mul_scalar(cfg.kl_coef);
    }
    let masked = per_token * mask.clone();
    let loss = aggregate(cfg.aggregation, masked, &mask, tokens, max_completion_len)?;
    let ratio_d = ratio.detach();
    let adv_pos = adv.clone().greater_elem(0.0);
    let adv_neg = adv.lower_elem(0.0);
    let low = ratio_d.clone().lower_elem(1.0 - cfg.epsilon_low);
    let high = ratio_d.clone().greater_elem(1.0 + cfg.epsilon_high);
    let frac = |m: burn::tensor::Tensor<2, burn::tensor::Bool>| scalar((m.float() * mask.clone()).sum()) / tokens;
    let stats = PolicyLossStats {
        loss: scalar(loss.clone().detach()),
        surrogate: scalar((surrogate.detach() * mask.clone()).sum()) / tokens,
        kl: kl_mean,
        ratio_mean: scalar((ratio_d * mask.clone()).sum()) / tokens,
        clip_low_fraction: frac(low.clone().bool_and(adv_neg)),
        clip_high_fraction: frac(high.clone().bool_and(adv_pos)),
        clip_fraction: frac(low.bool_or(high)),
        tokens,
    };
    Ok(PolicyLossOutput { loss, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use burn::tensor::{Device, TensorData};

    const B: usize = 3;
    const T: usize = 4;
    // Fixed tensors: three sequences of up to four completion tokens.
    const LOGP: [f64; 12] = [-1.0, -0.5, -2.0, -0.1, -0.3, -1.2, -0.7, -3.0, -0.05, -0.9, -1.5, -0.2];
    const OLD: [f64; 12] = [-1.1, -0.2, -2.0, -0.6, -0.3, -1.0, -1.2, -1.0, -0.5, -0.9, -1.0, -0.2];
    const REF: [f64; 12] = [-0.9, -0.6, -1.5, -0.4, -0.2, -1.4, -0.8, -2.0, -0.3, -1.0, -1.1, -0.1];
    const MASK: [f64; 12] = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    const ADV: [f64; 3] = [1.5, -0.8, 0.4];

    fn t2(v: &[f64; 12], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [B, T]), device)
    }

    fn inputs(device: &Device, logp: Tensor<2>) -> PolicyLossInputs {
        PolicyLossInputs {
            logprobs: logp,
            old_logprobs: t2(&OLD, device),
            ref_logprobs: Some(t2(&REF, device)),
            advantages: Tensor::from_data(
                TensorData::new(ADV.iter().map(|&x| x as f32).collect::<Vec<_>>(), [B]),
                device,
            ),
            mask: t2(&MASK, device),
            max_completion_len: 6,
        }
    }

    /// Independent scalar reference: TRL's GRPOTrainer._compute_loss written as loops (f64).
    fn reference(cfg: &PolicyLossConfig) -> (f64, Vec<f64>) {
        let mut per_token = vec![0.0; B * T];
        for (i, &a) in ADV.iter().enumerate() {
            for j in 0..T {
                let k = i * T + j;
                let ratio = (LOGP[k] - OLD[k]).exp();
                let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
                let surr = (ratio * a).min(clipped * a);
                let d = REF[k] - LOGP[k];
                let kl = match cfg.kl_estimator {
                    KlEstimator::K1 => -d,
                    KlEstimator::K2 => 0.5 * d * d,
                    KlEstimator::K3 => d.exp() - d - 1.0,
                };
                per_token[k] = -surr + cfg.kl_coef * kl;
            }
        }
        let masked: Vec<f64> = per_token.iter().zip(MASK).map(|(l, m)| l * m).collect();
        let loss = match cfg.aggregation {
            LossAggregation::TokenMean => masked.iter().sum::<f64>() / MASK.iter().sum::<f64>(),
            LossAggregation::SequenceMean => {
                (0..B)
                    .map(|i| {
                        masked[i * T..(i + 1) * T].iter().sum::<f64>() / MASK[i * T..(i + 1) * T].iter().sum::<f64>()
                    })
                    .sum::<f64>()
                    / B as f64
            }
            LossAggregation::DrGrpo => masked.iter().sum::<f64>() / (B * 6) as f64,
        };
        (loss, per_token)
    }

    #[test]
    fn every_variant_matches_the_reference_formulas() {
        let device = Device::flex();
        for aggregation in [LossAggregation::TokenMean, LossAggregation::SequenceMean, LossAggregation::DrGrpo] {
            for kl_estimator in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
                for (epsilon_low, epsilon_high, kl_coef) in [(0.2, 0.2, 0.0), (0.2, 0.28, 0.04), (0.1, 0.5, 1.0)] {
                    let cfg = PolicyLossConfig { epsilon_low, epsilon_high, kl_coef, kl_estimator, aggregation };
                    let out = policy_loss(&cfg, inputs(&device, t2(&LOGP, &device))).unwrap();
                    let (expected, _) = reference(&cfg);
                    assert_relative_eq!(out.stats.loss, expected, epsilon = 1e-6);
                }
            }
        }
    }

    /// Per-token advantages (PPO's GAE): the same formulas with `A_{i,t}` in place of `A_i`;
    /// advantages constant along each row reproduce [`policy_loss`].
    #[test]
    fn per_token_advantages_match_the_reference_formulas() {
        let device = Device::flex();
        let adv_tokens: [f64; 12] = [0.5, -1.0, 2.0, 0.3, -0.2, 1.1, 0.0, 0.7, -1.5, 0.4, 0.9, -0.6];
        for aggregation in [LossAggregation::TokenMean, LossAggregation::SequenceMean, LossAggregation::DrGrpo] {
            let cfg = PolicyLossConfig { kl_coef: 0.1, aggregation, ..Default::default() };
            let mut per_token = [0.0; 12];
            for k in 0..B * T {
                let ratio = (LOGP[k] - OLD[k]).exp();
                let a = adv_tokens[k];
                let surr = (ratio * a).min(ratio.clamp(0.8, 1.2) * a);
                let d = REF[k] - LOGP[k];
                per_token[k] = (-surr + 0.1 * (d.exp() - d - 1.0)) * MASK[k];
            }
            let expected = match aggregation {
                LossAggregation::TokenMean => per_token.iter().sum::<f64>() / MASK.iter().sum::<f64>(),
                LossAggregation::SequenceMean => {
                    (0..B)
                        .map(|i| {
                            per_token[i * T..(i + 1) * T].iter().sum::<f64>()
                                / MASK[i * T..(i + 1) * T].iter().sum::<f64>()
                        })
                        .sum::<f64>()
                        / B as f64
                }
                LossAggregation::DrGrpo => per_token.iter().sum::<f64>() / (B * 6) as f64,
            };
            let i = inputs(&device, t2(&LOGP, &device));
            let out = token_policy_loss(
                &cfg,
                TokenPolicyLossInputs {
                    logprobs: i.logprobs,
                    old_logprobs: i.old_logprobs,
                    ref_logprobs: i.ref_logprobs,
                    advantages: t2(&adv_tokens, &device),
                    mask: i.mask,
                    max_completion_len: 6,
                },
            )
            .unwrap();
            assert_relative_eq!(out.stats.loss, expected, epsilon = 1e-6);
            // Row-constant token advantages are policy_loss exactly.
            let rows: Vec<f64> = (0..B * T).map(|k| ADV[k / T]).collect();
            let i = inputs(&device, t2(&LOGP, &device));
            let a = token_policy_loss(
                &cfg,
                TokenPolicyLossInputs {
                    logprobs: i.logprobs,
                    old_logprobs: i.old_logprobs,
                    ref_logprobs: i.ref_logprobs,
                    advantages: t2(&rows.try_into().unwrap(), &device),
                    mask: i.mask,
                    max_completion_len: 6,
                },
            )
            .unwrap();
            let b = policy_loss(&cfg, inputs(&device, t2(&LOGP, &device))).unwrap();
            assert_eq!(a.stats, b.stats);
        }
    }

    #[test]
    fn hand_computed_token_and_statistics() {
        // Sequence 0, token 1: ρ = e^{0.3−…}: logp −0.5, old −0.2 → ρ = e^{−0.3} = 0.7408 (< 0.8), A = 1.5 > 0
        // → min(0.7408·1.5, 0.8·1.5) = 1.1112 (not clipped: the min keeps the unclipped value).
        let ratio = (-0.3f64).exp();
        assert_relative_eq!(ratio * 1.5, (ratio * 1.5).min(0.8 * 1.5));
        let device = Device::flex();
        let cfg = PolicyLossConfig { kl_coef: 0.0, ..Default::default() };
        let out = policy_loss(&cfg, inputs(&device, t2(&LOGP, &device))).unwrap();
        // Masked tokens: 9. Ratios outside [0.8, 1.2]: seq0 t1 (0.741), seq1 t1 (0.819 no), seq2 t0 (1.568),
        // seq2 t2 (0.607) → 3 of 9 outside the range.
        assert_relative_eq!(out.stats.clip_fraction, 3.0 / 9.0, epsilon = 1e-6);
        // Clipped from above with A > 0: seq2 t0 (ρ 1.568, A 0.4). From below with A < 0: none (seq1 has ρ ≥ 0.8).
        assert_relative_eq!(out.stats.clip_high_fraction, 1.0 / 9.0, epsilon = 1e-6);
        assert_relative_eq!(out.stats.clip_low_fraction, 0.0);
        assert_relative_eq!(out.stats.tokens, 9.0);
        assert_eq!(out.stats.kl, 0.0);
    }

    #[test]
    fn gradient_with_respect_to_logprobs_is_the_analytic_one() {
        let device = Device::flex().autodiff();
        let cfg = PolicyLossConfig { kl_coef: 0.1, ..Default::default() };
        let logp = t2(&LOGP, &device).require_grad();
        let out = policy_loss(&cfg, inputs(&device, logp.clone())).unwrap();
        let grads = out.loss.backward();
        let g: Vec<f32> = logp.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        let n: f64 = MASK.iter().sum();
        for (i, &a) in ADV.iter().enumerate() {
            for j in 0..T {
                let k = i * T + j;
                let ratio = (LOGP[k] - OLD[k]).exp();
                // d(−min(ρA, clip(ρ)A))/dlogp = −ρA where the unclipped branch is active, else 0.
                let clipped_active = (a > 0.0 && ratio > 1.2) || (a < 0.0 && ratio < 0.8);
                let d_surr = if clipped_active { 0.0 } else { -ratio * a };
                // d k3/dlogp = 1 − exp(ref − logp)
                let d_kl = 1.0 - (REF[k] - LOGP[k]).exp();
                let expected = MASK[k] * (d_surr + 0.1 * d_kl) / n;
                assert_relative_eq!(f64::from(g[k]), expected, epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn missing_reference_and_empty_masks_are_errors() {
        let device = Device::flex();
        let mut i = inputs(&device, t2(&LOGP, &device));
        i.ref_logprobs = None;
        assert!(policy_loss(&PolicyLossConfig::default(), i).is_err());
        let mut i = inputs(&device, t2(&LOGP, &device));
        i.ref_logprobs = None;
        assert!(policy_loss(&PolicyLossConfig { kl_coef: 0.0, ..Default::default() }, i).is_ok());
        let mut i = inputs(&device, t2(&LOGP, &device));
        i.mask = Tensor::zeros([B, T], &device);
        assert!(policy_loss(&PolicyLossConfig::default(), i).is_err());
        assert!(PolicyLossConfig { epsilon_low: 1.0, ..Default::default() }.validate("rl").is_err());
        assert!(PolicyLossConfig { kl_coef: -1.0, ..Default::default() }.validate("rl").is_err());
    }
}
