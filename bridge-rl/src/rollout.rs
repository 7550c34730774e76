//! Rollouts: groups of sampled completions, their rewards and advantages, and the training batch
//! built from them.
//!
//! "Token in, token out": the trained tokens are exactly the sampled ones (`Completion::tokens`),
//! never re-tokenised from text, and the sampler's per-token log-probs become `π_old` of the
//! importance ratio.

use crate::advantage::{AdvantageScaling, Advantages, compute_advantages};
use bridge_core::{
    BridgeError, BridgeRng, CausalLm, Completion, FinishReason, Result, Reward, RewardFunction, RlPrompt,
    SamplingParams, SequenceBatch, TokenSequence,
};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::Instant;

/// A batch of prompt groups with their sampled completions, rewards and advantages.
#[derive(Clone, Debug)]
pub struct Rollouts {
    /// The prompts, one per group.
    pub prompts: Vec<RlPrompt>,
    /// The prompts' token ids.
    pub prompt_tokens: Vec<Vec<u32>>,
    /// `G` completions per prompt, group after group.
    pub completions: Vec<Completion>,
    /// One reward per completion.
    pub rewards: Vec<Reward>,
    /// Group-relative advantages.
    pub advantages: Advantages,
    /// One flag per completion: `true` for an off-policy demonstration (LUFFY's mixed groups,
    /// [`crate::luffy::collect_mixed_rollouts`]), `false` for a completion sampled from the policy.
    pub off_policy: Vec<bool>,
    /// `G`.
    pub group_size: usize,
    /// The sampler's `max_new_tokens` (`L_max` of Dr.GRPO).
    pub max_new_tokens: usize,
    /// Seconds spent sampling.
    pub generation_seconds: f64,
}

/// Samples `sampling.n` completions per prompt from `π(·; base, adapter)`, scores them with
/// `reward` and computes advantages.
#[allow(clippy::too_many_arguments)]
pub fn collect_rollouts<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    prompts: &[RlPrompt],
    sampling: &SamplingParams,
    reward: &dyn RewardFunction,
    scaling: AdvantageScaling,
    rng: &mut BridgeRng,
) -> Result<Rollouts> {
    sampling.validate()?;
    if sampling.max_new_tokens == 0 {
        return Err(BridgeError::config("sampling.max_new_tokens", "must be ≥ 1 for rollouts"));
    }
    let codec = lm.codec();
    let prompt_tokens: Vec<Vec<u32>> = prompts.iter().map(|p| codec.encode(&p.prompt)).collect::<Result<_>>()?;
    let start = Instant::now();
    let completions = lm.sample(base, adapter, &prompt_tokens, sampling, rng)?;
    let generation_seconds = start.elapsed().as_secs_f64();
    if completions.len() != prompts.len() * sampling.n {
        return Err(BridgeError::Model(format!(
            "sampler returned {} completions for {} prompts × {}",
            completions.len(),
            prompts.len(),
            sampling.n
        )));
    }
    let items: Vec<(&str, &RlPrompt)> =
        completions.iter().map(|c| (c.text.as_str(), &prompts[c.prompt_index])).collect();
    let rewards = reward.score_batch(&items);
    let values: Vec<Option<f64>> = rewards.iter().map(|r| r.value).collect();
    let advantages = compute_advantages(&values, sampling.n, scaling, 1e-4)?;
    Ok(Rollouts {
        prompts: prompts.to_vec(),
        prompt_tokens,
        off_policy: vec![false; completions.len()],
        completions,
        rewards,
        advantages,
        group_size: sampling.n,
        max_new_tokens: sampling.max_new_tokens,
        generation_seconds,
    })
}

/// Rollouts laid out for the loss: sequences, `π_old` log-probs, advantages and the loss mask.
#[derive(Clone, Debug)]
pub struct RlTrainingBatch {
    /// `prompt ++ completion` per completion, completion tokens scored.
    pub sequences: SequenceBatch,
    /// `[B·(T−1)]` row-major: the sampler's log-prob at each completion target, 0 elsewhere.
    old_logprobs: Vec<f32>,
    /// `[B·(T−1)]` row-major: 1 on completion targets that take part in the loss.
    mask: Vec<f32>,
    /// `[B]`.
    advantages: Vec<f32>,
    /// `L_max` for Dr.GRPO.
    pub max_completion_len: usize,
    /// `[B·(T−1)]` row-major: `log π_ref` of every target, once computed (see
    /// [`RlTrainingBatch::cache_reference`]).
    ref_logprobs: Option<Vec<f32>>,
    /// `[B·(T−1)]` row-major: 1 on the completion targets of off-policy rows (demonstrations).
    off_policy: Vec<f32>,
    /// Per row: the first target column of its completion and the completion's length.
    spans: Vec<(usize, usize)>,
}

impl Rollouts {
    /// The training batch. Completions whose reward was skipped are masked out; so are truncated
    /// ones (finish = length) when `mask_truncated`.
    pub fn training_batch(&self, pad_id: u32, mask_truncated: bool) -> Result<RlTrainingBatch> {
        let rows: Vec<TokenSequence> = self
            .completions
            .iter()
            .map(|c| TokenSequence::prompt_completion(&self.prompt_tokens[c.prompt_index], &c.tokens))
            .collect();
        let sequences = SequenceBatch::new(rows, pad_id)?;
        let t1 = sequences.seq_len() - 1;
        let mut old_logprobs = vec![0.0f32; self.completions.len() * t1];
        let mut mask = vec![0.0f32; self.completions.len() * t1];
        let mut off_policy = vec![0.0f32; self.completions.len() * t1];
        let mut spans = Vec::with_capacity(self.completions.len());
        for (i, c) in self.completions.iter().enumerate() {
            if c.logprobs.len() != c.tokens.len() {
                return Err(BridgeError::Model(format!(
                    "completion {i}: {} log-probs for {} tokens",
                    c.logprobs.len(),
                    c.tokens.len()
                )));
            }
            let keep = self.advantages.valid[i] && !(mask_truncated && c.finish == FinishReason::Length);
            let off = self.off_policy.get(i).copied().unwrap_or(false);
            let p = self.prompt_tokens[c.prompt_index].len();
            spans.push((p.saturating_sub(1), c.tokens.len()));
            for (k, lp) in c.logprobs.iter().enumerate() {
                // completion token k sits at position p + k and is predicted by column p + k − 1
                let col = i * t1 + p + k - 1;
                old_logprobs[col] = *lp;
                mask[col] = if keep { 1.0 } else { 0.0 };
                off_policy[col] = if off { 1.0 } else { 0.0 };
            }
        }
        let advantages = self.advantages.values.iter().map(|&a| a as f32).collect();
        Ok(RlTrainingBatch {
            sequences,
            old_logprobs,
            mask,
            advantages,
            max_completion_len: self.max_new_tokens,
            ref_logprobs: None,
            off_policy,
            spans,
        })
    }

    /// Mean of the non-skipped rewards (0 when all were skipped).
    pub fn reward_mean(&self) -> f64 {
        let v: Vec<f64> = self.rewards.iter().filter_map(|r| r.value).collect();
        if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
    }

    /// Population standard deviation of the non-skipped rewards.
    pub fn reward_std(&self) -> f64 {
        let v: Vec<f64> = self.rewards.iter().filter_map(|r| r.value).collect();
        if v.len() < 2 {
            return 0.0;
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    /// Number of skipped completions.
    pub fn skipped(&self) -> usize {
        self.rewards.iter().filter(|r| r.is_skip()).count()
    }

    /// Mean of the non-skipped rewards of the completions sampled from the policy (demonstrations
    /// left out; 0 when there is none).
    pub fn on_policy_reward_mean(&self) -> f64 {
        let v: Vec<f64> =
            self.rewards.iter().zip(&self.off_policy).filter(|(_, off)| !**off).filter_map(|(r, _)| r.value).collect();
        if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
    }
}

impl RlTrainingBatch {
    /// `π_old` log-probs `[B, T−1]`.
    ///
    /// # Shapes
    /// `B` = the batch's rows, `T` = its padded length; the same for [`Self::mask`],
    /// [`Self::ref_logprobs`] and [`Self::off_policy_mask`] (`[B, T−1]`) and
    /// [`Self::advantages`] (`[B]`).
    pub fn old_logprobs(&self, device: &Device) -> Tensor<2> {
        let shape = [self.sequences.batch_size(), self.sequences.seq_len() - 1];
        Tensor::from_data(TensorData::new(self.old_logprobs.clone(), shape), device)
    }

    /// The loss mask `[B, T−1]`.
    pub fn mask(&self, device: &Device) -> Tensor<2> {
        let shape = [self.sequences.batch_size(), self.sequences.seq_len() - 1];
        Tensor::from_data(TensorData::new(self.mask.clone(), shape), device)
    }

    /// Advantages `[B]`.
    pub fn advantages(&self, device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(self.advantages.clone(), [self.advantages.len()]), device)
    }

    /// Computes `log π_ref` of the batch once under `reference` (used without adapter), so that
    /// several loss evaluations on the same batch — BRIDGE's θ and θ̂ branches, GRPO's epochs —
    /// share one reference forward.
    pub fn cache_reference<L: CausalLm>(&mut self, lm: &L, reference: &L::Base) -> Result<()> {
        let scores = lm.token_scores(reference, None, &self.sequences, false)?;
        let values = scores
            .logprobs
            .detach()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| BridgeError::Model(format!("reading reference log-probs: {e}")))?;
        self.ref_logprobs = Some(values);
        Ok(())
    }

    /// The cached `log π_ref` `[B, T−1]`, if [`Self::cache_reference`] was called.
    pub fn ref_logprobs(&self, device: &Device) -> Option<Tensor<2>> {
        let shape = [self.sequences.batch_size(), self.sequences.seq_len() - 1];
        self.ref_logprobs.as_ref().map(|v| Tensor::from_data(TensorData::new(v.clone(), shape), device))
    }

    /// Number of tokens in the loss.
    pub fn num_loss_tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m > 0.0).count()
    }

    /// What `aggregation` divides this batch's summed loss by, up to a constant: loss tokens
    /// (token mean), rows with at least one loss token (sequence mean), rows (Dr.GRPO, whose
    /// `L_max` is the same on every rank). A data-parallel rank's share of the global loss is its
    /// count over the sum of all ranks' counts ([`bridge_core::Shard::share`]).
    pub fn loss_normaliser(&self, aggregation: crate::loss::LossAggregation) -> f64 {
        let width = self.sequences.seq_len().saturating_sub(1).max(1);
        match aggregation {
            crate::loss::LossAggregation::TokenMean => self.num_loss_tokens() as f64,
            crate::loss::LossAggregation::SequenceMean => {
                self.mask.chunks(width).filter(|row| row.iter().any(|m| *m > 0.0)).count() as f64
            }
            crate::loss::LossAggregation::DrGrpo => self.sequences.batch_size() as f64,
        }
    }

    /// The off-policy mask `[B, T−1]`: 1 on the completion targets of demonstration rows.
    pub fn off_policy_mask(&self, device: &Device) -> Tensor<2> {
        let shape = [self.sequences.batch_size(), self.sequences.seq_len() - 1];
        Tensor::from_data(TensorData::new(self.off_policy.clone(), shape), device)
    }

    /// Number of off-policy targets in the loss.
    pub fn num_off_policy_tokens(&self) -> usize {
        self.mask.iter().zip(&self.off_policy).filter(|(m, o)| **m > 0.0 && **o > 0.0).count()
    }

    /// The loss mask `[B·(T−1)]` row-major, on the host.
    pub fn mask_values(&self) -> &[f32] {
        &self.mask
    }

    /// The target columns of row `row`'s completion (`start..start + len` of the `[B, T−1]`
    /// layout); `None` past the last row.
    pub fn completion_columns(&self, row: usize) -> Option<std::ops::Range<usize>> {
        self.spans.get(row).map(|&(start, len)| start..start + len)
    }
}
