//! BRIDGE with the exact one-step hypergradient as the outer objective of w (`bridge_unrolled`),
//! beside the paper's penalty form ([`crate::Bridge`] with [`bridge_core::CooperativeGain`]).
//!
//! θ takes BRIDGE's update (7), `θ⁺ = θ + α ∇_θ G(θ, w)` with `G = (1−λ) J_SFT + λ J_RL`. Instead
//! of the cooperative gain `J_RL(θ, w) − J_RL(θ̂, w)`, w climbs the RL objective *after* that
//! step, `F(w) = J_RL(θ⁺(w), w)`, differentiated through the step:
//!
//! ```text
//! ∇_w F = ∇_w J_RL(θ⁺, w) + α ∇²_{wθ} G(θ, w) · v,        v = ∇_θ J_RL(θ⁺, w)
//!       ≈ ∇_w J_RL(θ⁺, w) + α [∇_w G(θ + εv, w) − ∇_w G(θ − εv, w)] / (2ε),   ε = ε₀ / ‖v‖
//! ```
//!
//! — the mixed Hessian-vector product by central finite differences (DARTS' approximation; two
//! extra gradient evaluations, since burn's autodiff is first-order only). w then moves along
//! `(1−λ) ∇_w J_SFT(θ, w) + λ ∇_w F`: the weights of equation (8), with the cooperative-gain
//! gradient replaced by the hypergradient. There is no θ̂. One step costs five backward passes
//! (SFT and RL at (θ, w), RL at θ⁺, G at θ ± εv) against BRIDGE's three.
//!
//! `J_RL` at θ⁺ and θ ± εv is the GRPO surrogate on the step's rollouts from (θ, w) (importance
//! ratio against their sampling log-probs), like BRIDGE's θ̂ branch with shared rollouts. The
//! unrolled step is plain gradient ascent with step size `alpha` (θ's learning rate unless set):
//! a model of θ's real (AdamW) update, not a replay of it. `tests/hypergradient.rs` checks
//! [`unrolled_hypergradient`] against finite differences of `F` itself.

use crate::algorithm::{
    Metrics, Needs, StepContext, TrainingAlgorithm, next_sft_batch, record_rollouts, rl_batch, sample_rollouts,
    zero_loss,
};
use crate::state::TrainState;
use bridge_core::{
    BridgeError, CausalLm, FlatGradients, Result, SequenceBatch, Shard, error::ensure_finite, step_along,
};
use bridge_rl::{PolicyLossConfig, RlTrainingBatch, grpo_loss};
use bridge_sft::sft_loss;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The settings of `bridge_unrolled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnrolledConfig {
    /// α of the unrolled step `θ⁺ = θ + α ∇_θ G` (`None`: θ's learning rate, `optim.theta.lr`).
    pub alpha: Option<f64>,
    /// ε₀ of the finite-difference step `ε = ε₀ / ‖v‖` (DARTS: 0.01).
    pub epsilon: f64,
}

impl Default for UnrolledConfig {
    fn default() -> Self {
        Self { alpha: None, epsilon: 0.01 }
    }
}

impl UnrolledConfig {
    /// Checks the values, naming the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if let Some(a) = self.alpha
            && !(a.is_finite() && a >= 0.0)
        {
            return Err(BridgeError::config(
                format!("{prefix}.alpha"),
                format!("must be a finite number ≥ 0, got {a}"),
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(BridgeError::config(
                format!("{prefix}.epsilon"),
                format!("must be a finite number > 0, got {}", self.epsilon),
            ));
        }
        Ok(())
    }
}

/// What one evaluation of [`unrolled_hypergradient`] produced (ascent directions of w).
#[derive(Clone, Debug)]
pub struct Hypergradient {
    /// `∇_w J_RL(θ⁺, w)`: the direct term.
    pub direct: FlatGradients,
    /// `α ∇²_{wθ} G · v` by finite differences: the term through θ's step.
    pub indirect: FlatGradients,
    /// `direct + indirect = ∇_w F`.
    pub total: FlatGradients,
    /// `J_RL(θ⁺, w)` (the negated GRPO loss at θ⁺).
    pub rl_objective_after: f64,
    /// `‖v‖ = ‖∇_θ J_RL(θ⁺, w)‖`.
    pub v_norm: f64,
}

/// Ascent gradients `(∇_θ, ∇_w)` of `c_sft·J_SFT + c_rl·J_RL` at `(base, w)` with one backward
/// pass (a zero weight skips its term; an RL batch without tokens contributes nothing), and the
/// objective's value — of the whole batch: with several ranks, each rank's terms are scaled by
/// its share and the gradients and value summed across ranks (`shard`).
#[allow(clippy::too_many_arguments)]
pub fn objective_gradients<L: CausalLm>(
    shard: &Shard,
    lm: &L,
    base: &L::Base,
    w: &L::Adapter,
    sft: &SequenceBatch,
    rl: &RlTrainingBatch,
    rl_cfg: &PolicyLossConfig,
    c_sft: f64,
    c_rl: f64,
) -> Result<(FlatGradients, FlatGradients, f64)> {
    let mut loss: Option<burn::tensor::Tensor<1>> = None;
    let mut value = 0.0;
    if c_sft != 0.0 {
        let out = sft_loss(lm, base, Some(w), sft)?;
        let share = shard.share(out.num_tokens as f64)?;
        value -= c_sft * out.value * share;
        loss = Some(out.loss.mul_scalar(c_sft * share));
    }
    let tokens = rl.num_loss_tokens();
    let normaliser = rl.loss_normaliser(rl_cfg.aggregation);
    let counts = if c_rl != 0.0 { shard.sum(vec![tokens as f64, normaliser])? } else { vec![0.0, 0.0] };
    if counts[0] > 0.0 {
        let term = if tokens > 0 {
            let share = if shard.is_single() { 1.0 } else { normaliser / counts[1] };
            let (out, _) = grpo_loss(lm, base, Some(w), rl, None, rl_cfg, false)?;
            value -= c_rl * out.stats.loss * share;
            out.loss.mul_scalar(c_rl * share)
        } else {
            // Other ranks have RL tokens: take part in the all-reduce with zeros.
            zero_loss(base, Some(w))?
        };
        loss = Some(match loss {
            Some(l) => l + term,
            None => term,
        });
    }
    let Some(loss) = loss else {
        return Err(BridgeError::InvalidInput("an objective without any term".into()));
    };
    let mut grads = loss.backward();
    let g_base = FlatGradients::from_backward_dense(&mut grads, base).scale(-1.0);
    let g_w = FlatGradients::from_backward_dense(&mut grads, w).scale(-1.0);
    let value = shard.sum(vec![value])?[0];
    Ok((shard.all_reduce(&g_base, base)?, shard.all_reduce(&g_w, w)?, value))
}

/// The hypergradient `∇_w J_RL(θ⁺(w), w)` of the unrolled step `θ⁺ = θ + α g_theta`, where
/// `g_theta = ∇_θ G(θ, w)`, `G = (1−λ) J_SFT + λ J_RL` on the batches `sft` and `rl` (module
/// docs): three gradient evaluations (at θ⁺ and θ ± εv).
#[allow(clippy::too_many_arguments)]
pub fn unrolled_hypergradient<L: CausalLm>(
    shard: &Shard,
    lm: &L,
    theta: &L::Base,
    w: &L::Adapter,
    g_theta: &FlatGradients,
    sft: &SequenceBatch,
    rl: &RlTrainingBatch,
    rl_cfg: &PolicyLossConfig,
    lambda: f64,
    alpha: f64,
    epsilon: f64,
) -> Result<Hypergradient> {
    let theta_plus = step_along(theta.clone(), g_theta, alpha);
    let (v, direct, rl_objective_after) = objective_gradients(shard, lm, &theta_plus, w, sft, rl, rl_cfg, 0.0, 1.0)?;
    let v_norm = v.norm();
    let indirect = if v_norm > 0.0 && alpha > 0.0 {
        let eps = epsilon / v_norm;
        let (c_sft, c_rl) = (1.0 - lambda, lambda);
        let plus = step_along(theta.clone(), &v, eps);
        let (_, w_plus, _) = objective_gradients(shard, lm, &plus, w, sft, rl, rl_cfg, c_sft, c_rl)?;
        let minus = step_along(theta.clone(), &v, -eps);
        let (_, w_minus, _) = objective_gradients(shard, lm, &minus, w, sft, rl, rl_cfg, c_sft, c_rl)?;
        FlatGradients::linear_combination(&[(alpha / (2.0 * eps), &w_plus), (-alpha / (2.0 * eps), &w_minus)])?
    } else {
        direct.scale(0.0)
    };
    let total = direct.add(&indirect)?;
    Ok(Hypergradient { direct, indirect, total, rl_objective_after, v_norm })
}

/// BRIDGE with the unrolled hypergradient as w's outer objective (module docs).
#[derive(Clone, Debug, Default)]
pub struct UnrolledBridge {
    /// Its settings.
    pub config: UnrolledConfig,
}

impl<L: CausalLm> TrainingAlgorithm<L> for UnrolledBridge {
    fn name(&self) -> &str {
        "bridge_unrolled"
    }

    fn needs(&self) -> Needs {
        Needs { adapter: true, ..Needs::default() }
    }

    fn data_parallel(&self) -> bool {
        true
    }

    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let (lambda, step) = (ctx.lambda, state.step);
        let mut m = Metrics::new();
        m.insert("lambda".into(), lambda);
        let w = state
            .adapter
            .clone()
            .ok_or_else(|| BridgeError::InvalidInput("bridge_unrolled needs an adapter".into()))?;
        let prompts = state.rl_cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step)?;
        let rollouts = sample_rollouts(ctx, &prompts, &mut state.rollout_rng, &state.theta, Some(&w))?;
        record_rollouts(&mut m, "", &rollouts);
        let start = Instant::now();
        let sft_batch = next_sft_batch(ctx, state)?;
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        m.insert("tokens".into(), batch.num_loss_tokens() as f64);
        // Whether any rank has RL tokens (every rank takes the same branches below).
        let shard = ctx.shard;
        let has_rl = shard.sum(vec![batch.num_loss_tokens() as f64])?[0] > 0.0;
        let lm = ctx.lm;
        let cfg = &ctx.rl.loss;
        // (θ, w): J_SFT and J_RL apart (w's direction needs ∇_w J_SFT alone).
        let (sft_theta, sft_w, j_sft) =
            objective_gradients(shard, lm, &state.theta, &w, &sft_batch, &batch, cfg, 1.0, 0.0)?;
        ensure_finite("sft_loss", -j_sft, step)?;
        m.insert("sft_loss".into(), -j_sft);
        let (rl_theta, j_rl) = if has_rl {
            let (g, _, j) = objective_gradients(shard, lm, &state.theta, &w, &sft_batch, &batch, cfg, 0.0, 1.0)?;
            ensure_finite("rl_loss", -j, step)?;
            m.insert("rl_loss".into(), -j);
            (g, Some(j))
        } else {
            (sft_theta.scale(0.0), None)
        };
        // (7): θ's ascent direction ∇_θ G.
        let g_theta = FlatGradients::linear_combination(&[(1.0 - lambda, &sft_theta), (lambda, &rl_theta)])?;
        let alpha = self.config.alpha.unwrap_or_else(|| state.optim.theta.settings().lr);
        let d_w = if has_rl {
            let h = unrolled_hypergradient(
                shard,
                lm,
                &state.theta,
                &w,
                &g_theta,
                &sft_batch,
                &batch,
                cfg,
                lambda,
                alpha,
                self.config.epsilon,
            )?;
            m.insert("hypergrad_direct_norm".into(), h.direct.norm());
            m.insert("hypergrad_indirect_norm".into(), h.indirect.norm());
            m.insert("hypergrad_v_norm".into(), h.v_norm);
            if let Some(j) = j_rl {
                m.insert("unrolled_rl_gain".into(), h.rl_objective_after - j);
            }
            FlatGradients::linear_combination(&[(1.0 - lambda, &sft_w), (lambda, &h.total)])?
        } else {
            sft_w.scale(1.0 - lambda)
        };
        // Check both groups, then move θ along (7) and w along d_w.
        let (g_theta, n) = state.optim.theta.clip(&g_theta.scale(-1.0), step)?;
        m.insert("grad_norm_theta".into(), n);
        let adapter_optim = state
            .optim
            .adapter
            .as_mut()
            .ok_or_else(|| BridgeError::InvalidInput("bridge_unrolled without its adapter optimiser".into()))?;
        let (g_w, n) = adapter_optim.clip(&d_w.scale(-1.0), step)?;
        m.insert("grad_norm_adapter".into(), n);
        state.theta = state.optim.theta.apply(state.theta.clone(), &g_theta);
        state.adapter = Some(adapter_optim.apply(w, &g_w));
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}
