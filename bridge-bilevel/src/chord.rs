//! CHORD (arXiv 2508.11408): the SFT loss on expert demonstrations inside the RL step,
//! `L = (1 − μ)·L_GRPO + μ·L_SFT` on θ, with μ on a schedule (CHORD-μ) and each expert token's
//! NLL weighted by `φ = p(1 − p)` (CHORD-φ). The formulas live in [`bridge_rl::chord`]; this is
//! the training step: one GRPO batch from `D_RL` and one expert batch from `D_SFT` per step, one
//! optimiser on θ (like [`crate::SftRlMixing`], whose fixed weights are `(1, μ)`).

use crate::algorithm::{Metrics, Needs, StepContext, TrainingAlgorithm, next_rollouts, next_sft_batch, one_group};
use crate::algorithm::{record_rollouts, rl_batch, rl_loss};
use crate::state::TrainState;
use bridge_core::{CausalLm, FlatGradients, Result, error::ensure_finite};
use bridge_rl::{MuSchedule, chord_sft_loss};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// CHORD's settings: `algorithm.mu` (the schedule) and `algorithm.phi`. The default is the
/// authors' CHORD-φ preset (μ = 0.1 throughout, φ on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChordConfig {
    /// The schedule of the SFT weight μ.
    pub mu: MuSchedule,
    /// Weight each expert token's NLL by `φ = p(1 − p)` (CHORD-φ); `false`: the plain token-mean
    /// NLL (CHORD-μ).
    pub phi: bool,
}

impl Default for ChordConfig {
    fn default() -> Self {
        Self { mu: MuSchedule::default(), phi: true }
    }
}

impl ChordConfig {
    /// The authors' CHORD-μ preset: μ from 0.9 to 0.05 over 200 steps, no φ.
    pub fn chord_mu() -> Self {
        Self { mu: MuSchedule::chord_mu(), phi: false }
    }

    /// Checks the values, naming the field under `prefix` (e.g. `algorithm`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        self.mu.validate(&format!("{prefix}.mu"))
    }
}

/// The CHORD algorithm.
#[derive(Clone, Debug, Default)]
pub struct Chord {
    /// Its settings.
    pub config: ChordConfig,
}

impl<L: CausalLm> TrainingAlgorithm<L> for Chord {
    fn name(&self) -> &str {
        "chord"
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
        let mu = self.config.mu.mu(step);
        m.insert("mu".into(), mu);
        let rollouts = next_rollouts(ctx, &mut state.rl_cursor, &mut state.rollout_rng, &state.theta, None)?;
        record_rollouts(&mut m, "", &rollouts);
        let start = Instant::now();
        let expert = next_sft_batch(ctx, state)?;
        let scores = ctx.lm.token_scores(&state.theta, None, &expert, false)?;
        let sft = chord_sft_loss(&scores, self.config.phi)?;
        // This rank's part of the whole batch's SFT term (a token mean): its share of the tokens.
        let share = ctx.shard.share(sft.tokens as f64)?;
        let [nll, value, phi_mean]: [f64; 3] = ctx
            .shard
            .sum(vec![share * sft.nll, share * sft.value, share * sft.phi_mean])?
            .try_into()
            .map_err(|_| bridge_core::BridgeError::Parallel("CHORD's statistics".into()))?;
        ensure_finite("chord_sft_loss", value, step)?;
        m.insert("sft_loss".into(), nll);
        m.insert("chord_sft_loss".into(), value);
        m.insert("phi_mean".into(), phi_mean);
        m.insert("sft_tokens".into(), sft.tokens as f64);
        let sft_loss = if share == 1.0 { sft.loss } else { sft.loss.mul_scalar(share) };
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        let loss = match rl_loss(ctx, &state.theta, None, &batch, &mut m, "", step)? {
            Some(rl) => rl.mul_scalar(1.0 - mu) + sft_loss.mul_scalar(mu),
            None => sft_loss.mul_scalar(mu),
        };
        let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
        state.theta = one_group(ctx.shard, "theta", &mut state.optim.theta, state.theta.clone(), g, step, &mut m)?;
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}
