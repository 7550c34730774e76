//! LUFFY (arXiv 2504.14945): mixed-policy GRPO on θ. Each prompt's group holds
//! `rl.sampling.n − off_policy_per_prompt` completions sampled from the policy and
//! `off_policy_per_prompt` copies of the prompt's demonstration ([`bridge_core::RlPrompt`]'s
//! `demonstration`, e.g. a GSM8K row's worked answer); advantages are taken over the mixed group
//! and demonstration tokens are trained through the policy shaping `f(π) = π/(π + γ)` in place of
//! the clipped ratio. The formulas live in [`bridge_rl::luffy`].
//!
//! LUFFY reads no `D_SFT`: its demonstrations come with its RL prompts. The logged `reward_mean`
//! is that of the sampled completions (comparable with the other algorithms');
//! `mixed_reward_mean` includes the demonstrations.

use crate::algorithm::{
    Metrics, Needs, PolicyTerm, StepContext, TrainingAlgorithm, one_group, record_policy_stats, record_rollouts,
    rl_batch, shard_of, zero_loss,
};
use crate::state::TrainState;
use bridge_core::{CausalLm, FlatGradients, Result};
use bridge_rl::{LuffyConfig, collect_mixed_rollouts, mixed_loss};
use std::time::Instant;

/// The LUFFY algorithm.
#[derive(Clone, Debug, Default)]
pub struct Luffy {
    /// Its settings.
    pub config: LuffyConfig,
}

impl<L: CausalLm> TrainingAlgorithm<L> for Luffy {
    fn name(&self) -> &str {
        "luffy"
    }

    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn data_parallel(&self) -> bool {
        true
    }

    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let step = state.step;
        let mut m = Metrics::new();
        let prompts = state.rl_cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step)?;
        // This rank's prompts, with the on-policy samples the one-rank run draws for them.
        let mine = shard_of(ctx.shard, prompts.clone(), "rl prompts_per_step")?;
        let on_policy_per_prompt = ctx.rl.sampling.n.saturating_sub(self.config.off_policy_per_prompt);
        let rollouts = ctx.shard.with_rng(&mut state.rollout_rng, prompts.len(), on_policy_per_prompt, |rng| {
            collect_mixed_rollouts(
                ctx.lm,
                &state.theta,
                None,
                &mine,
                &ctx.rl.sampling,
                self.config.off_policy_per_prompt,
                ctx.reward,
                ctx.rl.advantage_scaling,
                rng,
            )
        })?;
        record_rollouts(&mut m, "", &rollouts);
        m.insert("mixed_reward_mean".into(), rollouts.reward_mean());
        m.insert("reward_mean".into(), rollouts.on_policy_reward_mean());
        let start = Instant::now();
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        let tokens = batch.num_loss_tokens();
        m.insert("tokens".into(), tokens as f64);
        m.insert("off_policy_tokens".into(), batch.num_off_policy_tokens() as f64);
        let normaliser = batch.loss_normaliser(ctx.rl.loss.aggregation);
        let counts = ctx.shard.sum(vec![tokens as f64, normaliser])?;
        if counts[0] > 0.0 {
            let share = if ctx.shard.is_single() { 1.0 } else { normaliser / counts[1] };
            for _ in 0..ctx.rl.epochs_per_batch {
                // A rank without loss tokens (others have some) adds zeros.
                let (loss, on, off, entropy) = if tokens > 0 {
                    let (out, entropy) = mixed_loss(
                        ctx.lm,
                        &state.theta,
                        None,
                        &batch,
                        state.reference.as_ref(),
                        &ctx.rl.loss,
                        self.config.shaping_gamma,
                        ctx.rl.log_entropy,
                    )?;
                    (out.loss, Some(out.on_policy), Some(out.off_policy), entropy)
                } else {
                    (zero_loss::<L::Base, L::Base>(&state.theta, None)?, None, None, None)
                };
                // On-policy statistics by on-policy tokens, off-policy ones by off-policy tokens.
                let (on_n, off_n) = (on.as_ref().map_or(0.0, |s| s.tokens), off.as_ref().map_or(0.0, |s| s.tokens));
                let off_stat = |f: fn(&bridge_rl::OffPolicyStats) -> f64| off.as_ref().map_or(0.0, f);
                let policy = PolicyTerm { stats: on.as_ref(), normaliser, stat_tokens: on_n, entropy, tokens };
                let extra = [
                    ("off_policy_prob_mean", off_stat(|s| s.prob_mean), off_n),
                    ("off_policy_shaped_mean", off_stat(|s| s.shaped_mean), off_n),
                    ("off_policy_surrogate", off_stat(|s| s.surrogate), off_n),
                ];
                record_policy_stats(ctx, &mut m, "", step, &policy, &extra)?;
                let loss = if share == 1.0 { loss } else { loss.mul_scalar(share) };
                let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
                state.theta =
                    one_group(ctx.shard, "theta", &mut state.optim.theta, state.theta.clone(), g, step, &mut m)?;
            }
        }
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}
