//! BRIDGE: the three simultaneous updates of method.md §3.
//!
//! With all gradients taken at the pre-update point (θ, θ̂, w):
//!
//! ```text
//! θ  ← θ  + α [ (1−λ) ∇_θ J_SFT(θ,w) + λ ∇_θ J_RL(θ,w) ]                       (7)
//! θ̂  ← θ̂  + α ∇_θ J_RL(θ̂,w)                                                    (9)
//! w  ← w  + β [ (1−λ) ∇_w J_SFT(θ,w) + λ ( ∇_w J_RL(θ,w) − ∇_w J_RL(θ̂,w) ) ]   (8)
//! ```
//!
//! (8) is delegated to an [`OuterObjective`]: [`bridge_core::CooperativeGain`] is the equation
//! above; [`bridge_core::JointSftRl`] drops the θ̂ term (the "BRIDGE without meta" ablation, which
//! then needs no θ̂ at all).
//!
//! Two ways to obtain the gradients, selected by [`GradientPath`]:
//!
//! * `Separate` (default): one backward pass per term — `J_SFT(θ,w)`, `J_RL(θ,w)`,
//!   `J_RL(θ̂,w)` — combined on the host exactly as written above. Any outer objective works.
//! * `Fused`: method.md's single-backward formulation,
//!   `L = −[(1−λ) J_SFT(θ,w) + λ J_RL(θ,w)] − J_RL(θ̂, w̃)`, where `w̃` equals w in the forward
//!   pass and scales w's gradient by the objective's θ̂ weight (`−λ` for BRIDGE) in the backward
//!   pass (`w̃ = sg(w) + c·(w − sg(w))`). One backward yields (7), (9) and (8). Requires a linear
//!   outer objective whose SFT and RL weights are θ's, `(1−λ, λ)`.
//!
//! The test `one_step_matches_equations_7_8_9` checks both paths against the equations
//! evaluated term by term with plain SGD.

use crate::algorithm::{
    Metrics, Needs, StepContext, TrainingAlgorithm, next_sft_batch, record_rollouts, rl_batch, rl_loss,
    sample_rollouts, sft_term,
};
use crate::state::TrainState;
use bridge_core::{AdapterGradTerms, BridgeError, CausalLm, CooperativeGain, FlatGradients, OuterObjective, Result};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Which rollouts score the RL-only branch θ̂.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuxRollouts {
    /// θ̂ is scored on the rollouts of (θ, w), with ratio `π(ŷ; θ̂, w)/π_old(ŷ; θ, w)` (method.md's
    /// default).
    #[default]
    Shared,
    /// θ̂ samples its own groups for the same prompts (doubles generation).
    Separate,
}

/// How the gradients of a BRIDGE step are computed (same result, different cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientPath {
    /// One backward pass per term, combined on the host.
    #[default]
    Separate,
    /// One backward pass with the gradient-scaled adapter `w̃`.
    Fused,
}

/// The BRIDGE algorithm.
#[derive(Debug)]
pub struct Bridge {
    /// The upper-level objective producing w's direction (8).
    pub outer: Box<dyn OuterObjective>,
    /// Rollouts of the θ̂ branch.
    pub aux_rollouts: AuxRollouts,
    /// Gradient computation.
    pub gradient_path: GradientPath,
}

impl Default for Bridge {
    fn default() -> Self {
        Self {
            outer: Box::new(CooperativeGain),
            aux_rollouts: AuxRollouts::Shared,
            gradient_path: GradientPath::Separate,
        }
    }
}

/// `w̃ = sg(w) + c·(w − sg(w))`: the value of w, with gradients scaled by `c`.
pub fn gradient_scaled<M: Module>(module: &M, c: f64) -> M {
    struct Scale(f64);
    impl ModuleMapper for Scale {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let c = self.0;
            param.map(|t| {
                let frozen = t.clone().detach();
                frozen.clone() + (t - frozen).mul_scalar(c)
            })
        }
    }
    module.clone().map(&mut Scale(c))
}

impl<L: CausalLm> TrainingAlgorithm<L> for Bridge {
    fn name(&self) -> &str {
        if self.outer.needs_aux_branch() { "bridge" } else { "bridge_no_meta" }
    }

    fn needs(&self) -> Needs {
        Needs { adapter: true, theta_hat: self.outer.needs_aux_branch(), theta_sft_optimizer: false }
    }

    fn data_parallel(&self) -> bool {
        true
    }

    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let lambda = ctx.lambda;
        let step = state.next_step();
        let mut m = Metrics::new();
        m.insert("lambda".into(), lambda);
        let w = state.adapter.clone().ok_or_else(|| BridgeError::InvalidInput("BRIDGE needs an adapter".into()))?;
        let with_aux = self.outer.needs_aux_branch();
        let theta_hat = if with_aux {
            Some(state.theta_hat.clone().ok_or_else(|| BridgeError::InvalidInput("BRIDGE needs θ̂".into()))?)
        } else {
            None
        };

        // Rollouts from (θ, w); for `separate`, θ̂ samples its own groups for the same prompts.
        let prompts = state.rl_cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step)?;
        let sample =
            |base: &L::Base, rng: &mut bridge_core::BridgeRng| sample_rollouts(ctx, &prompts, rng, base, Some(&w));
        let rollouts = sample(&state.theta, &mut state.rollout_rng)?;
        record_rollouts(&mut m, "", &rollouts);
        let aux_rollouts = match (&theta_hat, self.aux_rollouts) {
            (Some(th), AuxRollouts::Separate) => {
                let r = sample(th, &mut state.rollout_rng)?;
                record_rollouts(&mut m, "aux_", &r);
                m.insert("cooperative_gain_reward".into(), rollouts.reward_mean() - r.reward_mean());
                Some(r)
            }
            _ => None,
        };
        let start = Instant::now();
        let sft_batch = next_sft_batch(ctx, state)?;
        // One training batch (and one reference forward) per set of rollouts.
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        let aux_batch = match &aux_rollouts {
            Some(r) => Some(rl_batch(ctx, r, state.reference.as_ref())?),
            None => None,
        };
        let aux_source = aux_batch.as_ref().unwrap_or(&batch);

        let (g_theta, g_theta_hat, g_w) = match self.gradient_path {
            GradientPath::Separate => {
                // J_SFT(θ, w)
                let sft = sft_term(ctx, &state.theta, Some(&w), &sft_batch, &mut m, step)?;
                let mut grads = sft.backward();
                let sft_theta = FlatGradients::from_backward_dense(&mut grads, &state.theta);
                let sft_w = FlatGradients::from_backward_dense(&mut grads, &w);
                // J_RL(θ, w)
                let (rl_theta, rl_w) = match rl_loss(ctx, &state.theta, Some(&w), &batch, &mut m, "", step)? {
                    Some(loss) => {
                        let mut grads = loss.backward();
                        (
                            FlatGradients::from_backward_dense(&mut grads, &state.theta),
                            FlatGradients::from_backward_dense(&mut grads, &w),
                        )
                    }
                    None => (sft_theta.scale(0.0), sft_w.scale(0.0)),
                };
                // J_RL(θ̂, w)
                let (aux_theta_hat, aux_w) = match &theta_hat {
                    Some(th) => match rl_loss(ctx, th, Some(&w), aux_source, &mut m, "aux_", step)? {
                        Some(loss) => {
                            let mut grads = loss.backward();
                            let g_th = FlatGradients::from_backward_dense(&mut grads, th);
                            (Some(g_th), Some(FlatGradients::from_backward_dense(&mut grads, &w)))
                        }
                        None => (None, Some(sft_w.scale(0.0))),
                    },
                    None => (None, None),
                };
                // (7): loss gradient of θ = −[(1−λ)∇J_SFT + λ∇J_RL] (summed across ranks below)
                let g_theta = FlatGradients::linear_combination(&[(1.0 - lambda, &sft_theta), (lambda, &rl_theta)])?;
                // (8): the outer objective's ascent direction from the ascent terms. An outer
                // objective may be non-linear in them: sum each term across ranks first.
                let whole = |g: FlatGradients| ctx.shard.all_reduce(&g, &w);
                let terms = AdapterGradTerms {
                    sft: whole(sft_w)?.scale(-1.0),
                    rl: whole(rl_w)?.scale(-1.0),
                    rl_aux: aux_w.map(whole).transpose()?.map(|g| g.scale(-1.0)),
                };
                let g_w = self.outer.adapter_direction(&terms, lambda)?.scale(-1.0);
                (g_theta, aux_theta_hat, Ok(g_w))
            }
            GradientPath::Fused => {
                let weights = self.outer.term_weights(lambda).ok_or_else(|| {
                    BridgeError::config("algorithm.gradient_path", "`fused` needs a linear outer objective")
                })?;
                if (weights.sft - (1.0 - lambda)).abs() > 1e-12 || (weights.rl - lambda).abs() > 1e-12 {
                    return Err(BridgeError::config(
                        "algorithm.gradient_path",
                        "`fused` needs an outer objective weighing SFT and RL like θ, (1−λ, λ)",
                    ));
                }
                let sft = sft_term(ctx, &state.theta, Some(&w), &sft_batch, &mut m, step)?;
                let mut loss = sft.mul_scalar(1.0 - lambda);
                if let Some(rl) = rl_loss(ctx, &state.theta, Some(&w), &batch, &mut m, "", step)? {
                    loss = loss + rl.mul_scalar(lambda);
                }
                if let Some(th) = &theta_hat {
                    let w_tilde = gradient_scaled(&w, weights.rl_aux);
                    if let Some(aux) = rl_loss(ctx, th, Some(&w_tilde), aux_source, &mut m, "aux_", step)? {
                        loss = loss + aux;
                    }
                }
                let mut grads = loss.backward();
                let g_theta = FlatGradients::from_backward_dense(&mut grads, &state.theta);
                let g_theta_hat = theta_hat.as_ref().map(|th| FlatGradients::from_backward_dense(&mut grads, th));
                let g_w = FlatGradients::from_backward_dense(&mut grads, &w);
                (g_theta, g_theta_hat, Err(g_w))
            }
        };
        // Sum every group's gradient across ranks (nothing on one rank); w's terms were summed
        // before (8) on the separate path (`Ok`), its fused gradient is summed here (`Err`).
        let g_theta = ctx.shard.all_reduce(&g_theta, &state.theta)?;
        let g_theta_hat = match (g_theta_hat, &theta_hat) {
            (Some(g), Some(th)) => Some(ctx.shard.all_reduce(&g, th)?),
            _ => None,
        };
        let g_w = match g_w {
            Ok(g) => g,
            Err(g) => ctx.shard.all_reduce(&g, &w)?,
        };
        if let (Some(a), Some(b)) = (m.get("surrogate"), m.get("aux_surrogate")) {
            m.insert("cooperative_gain".into(), a - b);
        }

        // Clip and check every group, then apply all three updates.
        let (g_theta, n) = state.optim.theta.clip(&g_theta, step)?;
        m.insert("grad_norm_theta".into(), n);
        let (g_w, n) = state.optim.adapter.as_ref().ok_or_else(|| missing("adapter optimiser"))?.clip(&g_w, step)?;
        m.insert("grad_norm_adapter".into(), n);
        let g_theta_hat = match (&g_theta_hat, &state.optim.theta_hat) {
            (Some(g), Some(o)) => {
                let (g, n) = o.clip(g, step)?;
                m.insert("grad_norm_theta_hat".into(), n);
                Some(g)
            }
            (Some(_), None) => return Err(missing("θ̂ optimiser")),
            _ => None,
        };
        state.theta = state.optim.theta.apply(state.theta.clone(), &g_theta);
        if let Some(g) = g_theta_hat
            && let Some(o) = state.optim.theta_hat.as_mut()
            && let Some(th) = state.theta_hat.take()
        {
            state.theta_hat = Some(o.apply(th, &g));
        }
        if let Some(o) = state.optim.adapter.as_mut() {
            state.adapter = Some(o.apply(w, &g_w));
        }
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}

fn missing(what: &str) -> BridgeError {
    BridgeError::InvalidInput(format!("BRIDGE step without its {what}"))
}
