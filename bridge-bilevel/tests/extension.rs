//! A researcher's crate adds an outer objective and a training algorithm without editing ours:
//! this file only uses the public API, as an external crate would.

mod common;

use bridge_bilevel::{
    Bridge, Metrics, Needs, OptimConfig, StepContext, TrainState, TrainingAlgorithm,
    algorithm::{next_sft_batch, record_rollouts, rl_batch, rl_loss},
};
use bridge_core::testing::BigramLm;
use bridge_core::{
    AdamWSettings, AdapterGradTerms, CausalLm, FlatGradients, OuterObjective, Result, TermWeights, error::ensure_finite,
};
use common::*;

/// A new outer objective: the cooperative gain, normalised to unit length before mixing.
#[derive(Debug)]
struct NormalisedGain;

impl OuterObjective for NormalisedGain {
    fn name(&self) -> &str {
        "normalised_gain"
    }
    fn needs_aux_branch(&self) -> bool {
        true
    }
    fn term_weights(&self, _: f64) -> Option<TermWeights> {
        None
    }
    fn adapter_direction(&self, t: &AdapterGradTerms, lambda: f64) -> Result<FlatGradients> {
        let aux = t.rl_aux.as_ref().expect("requested");
        let gain = FlatGradients::linear_combination(&[(1.0, &t.rl), (-1.0, aux)])?;
        let n = gain.norm().max(1e-12);
        FlatGradients::linear_combination(&[(1.0 - lambda, &t.sft), (lambda / n, &gain)])
    }
}

/// A new algorithm: RL on θ with an SFT step every `every` steps, built from the public helpers.
struct SftEvery {
    every: u64,
}

impl<L: CausalLm> TrainingAlgorithm<L> for SftEvery {
    fn name(&self) -> &str {
        "sft_every"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let mut m = Metrics::new();
        let loss = if state.step.is_multiple_of(self.every) {
            let batch = next_sft_batch(ctx, state)?;
            let out = bridge_sft::sft_loss(ctx.lm, &state.theta, None, &batch)?;
            m.insert("sft_loss".into(), ensure_finite("sft_loss", out.value, state.next_step())?);
            Some(out.loss)
        } else {
            let rollouts = bridge_bilevel::algorithm::next_rollouts(
                ctx,
                &mut state.rl_cursor,
                &mut state.rollout_rng,
                &state.theta,
                None,
            )?;
            record_rollouts(&mut m, "", &rollouts);
            let batch = rl_batch(ctx, &rollouts, None)?;
            rl_loss(ctx, &state.theta, None, &batch, &mut m, "", state.step)?
        };
        if let Some(loss) = loss {
            let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
            let (g, _) = state.optim.theta.clip(&g, state.step)?;
            state.theta = state.optim.theta.apply(state.theta.clone(), &g);
        }
        Ok(m)
    }
}

fn run(algo: &mut dyn TrainingAlgorithm<BigramLm>) -> Vec<Metrics> {
    let optim = OptimConfig { theta: AdamWSettings::with_lr(0.05), ..OptimConfig::default() };
    run_loop(algo, 4, &optim, 2, 2, 1).1
}

#[test]
fn a_custom_outer_objective_plugs_into_bridge() {
    let log = run(&mut Bridge { outer: Box::new(NormalisedGain), ..Bridge::default() });
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|m| m.contains_key("grad_norm_adapter") && m.contains_key("grad_norm_theta_hat")));
}

#[test]
fn a_custom_algorithm_runs_in_the_loop() {
    let log = run(&mut SftEvery { every: 2 });
    assert!(log[0].contains_key("sft_loss") && log[1].contains_key("reward_mean") && log[2].contains_key("sft_loss"));
}
