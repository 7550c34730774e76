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

use crate::algorithm::{Metrics, Needs, StepContext, TrainingAlgorithm, one_group, record_rollouts, rl_batch};
use crate::state::TrainState;
use bridge_core::{CausalLm, FlatGradients, Result, error::ensure_finite};
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

    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let step = state.step;
        let mut m = Metrics::new();
        let prompts = state.rl_cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step)?;
        let rollouts = collect_mixed_rollouts(
            ctx.lm,
            &state.theta,
            None,
            &prompts,
            &ctx.rl.sampling,
            self.config.off_policy_per_prompt,
            ctx.reward,
            ctx.rl.advantage_scaling,
            &mut state.rollout_rng,
        )?;
        record_rollouts(&mut m, "", &rollouts);
        m.insert("mixed_reward_mean".into(), rollouts.reward_mean());
        m.insert("reward_mean".into(), rollouts.on_policy_reward_mean());
        let start = Instant::now();
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        m.insert("tokens".into(), batch.num_loss_tokens() as f64);
        m.insert("off_policy_tokens".into(), batch.num_off_policy_tokens() as f64);
        if batch.num_loss_tokens() > 0 {
            for _ in 0..ctx.rl.epochs_per_batch {
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
                let (on, off) = (&out.on_policy, &out.off_policy);
                ensure_finite("rl_loss", on.loss, step)?;
                for (k, v) in [
                    ("rl_loss", on.loss),
                    ("surrogate", on.surrogate),
                    ("kl", on.kl),
                    ("ratio_mean", on.ratio_mean),
                    ("clip_fraction", on.clip_fraction),
                    ("clip_low_fraction", on.clip_low_fraction),
                    ("clip_high_fraction", on.clip_high_fraction),
                    ("off_policy_prob_mean", off.prob_mean),
                    ("off_policy_shaped_mean", off.shaped_mean),
                    ("off_policy_surrogate", off.surrogate),
                ] {
                    m.insert(k.into(), v);
                }
                if let Some(e) = entropy {
                    m.insert("entropy".into(), e);
                }
                let g = FlatGradients::from_backward(&mut out.loss.backward(), &state.theta);
                state.theta =
                    one_group(ctx.shard, "theta", &mut state.optim.theta, state.theta.clone(), g, step, &mut m)?;
            }
        }
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}
