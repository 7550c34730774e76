//! The upper level of a bilevel step: how the adapter w moves.
//!
//! In BRIDGE the adapter's update direction (equation (8)) combines three gradients taken at the
//! pre-update point (θ, θ̂, w):
//!
//! ```text
//! d_w = (1−λ) ∇_w J_SFT(θ,w) + λ ( ∇_w J_RL(θ,w) − ∇_w J_RL(θ̂,w) )
//! ```
//!
//! the gradient of the *cooperative gain* `J_RL(θ,w) − J_RL(θ̂,w)` plus the SFT term. An
//! [`OuterObjective`] receives those terms ([`AdapterGradTerms`]) and returns the ascent
//! direction for w. [`CooperativeGain`] is BRIDGE; [`JointSftRl`] ("plain SFT+RL on w", the
//! BRIDGE-without-meta ablation) ignores the RL-only branch.
//!
//! Objectives that are a fixed linear combination of the terms report their weights through
//! [`OuterObjective::term_weights`]; a trainer can then fold them into one backward pass (see
//! method.md §3) instead of materialising each term.

use crate::error::{BridgeError, Result};
use crate::grads::FlatGradients;
use std::fmt::Debug;

/// The adapter-gradient terms of one bilevel step, each an *ascent* direction at (θ, θ̂, w).
#[derive(Clone, Debug)]
pub struct AdapterGradTerms {
    /// `∇_w J_SFT(θ, w)`.
    pub sft: FlatGradients,
    /// `∇_w J_RL(θ, w)`.
    pub rl: FlatGradients,
    /// `∇_w J_RL(θ̂, w)`, present when the objective asked for the RL-only branch.
    pub rl_aux: Option<FlatGradients>,
}

/// Fixed weights `(c_sft, c_rl, c_aux)` of a linear outer objective:
/// `d_w = c_sft·sft + c_rl·rl + c_aux·rl_aux`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TermWeights {
    /// Weight of `∇_w J_SFT(θ,w)`.
    pub sft: f64,
    /// Weight of `∇_w J_RL(θ,w)`.
    pub rl: f64,
    /// Weight of `∇_w J_RL(θ̂,w)`.
    pub rl_aux: f64,
}

/// The upper-level objective of a bilevel step: produces the adapter's update direction.
pub trait OuterObjective: Send + Sync + Debug {
    /// A short name for logs and configs.
    fn name(&self) -> &str;

    /// Whether the objective needs the RL-only branch θ̂ (and so `terms.rl_aux`).
    fn needs_aux_branch(&self) -> bool;

    /// The weights, when the direction is a fixed linear combination of the terms at this λ.
    fn term_weights(&self, lambda: f64) -> Option<TermWeights>;

    /// The ascent direction for w. The default combines the terms with [`Self::term_weights`].
    fn adapter_direction(&self, terms: &AdapterGradTerms, lambda: f64) -> Result<FlatGradients> {
        let w = self.term_weights(lambda).ok_or_else(|| {
            BridgeError::InvalidInput(format!("outer objective `{}` must implement adapter_direction", self.name()))
        })?;
        let mut parts = vec![(w.sft, &terms.sft), (w.rl, &terms.rl)];
        if w.rl_aux != 0.0 {
            let aux = terms.rl_aux.as_ref().ok_or_else(|| {
                BridgeError::InvalidInput(format!(
                    "outer objective `{}` needs ∇_w J_RL(θ̂,w), which is missing",
                    self.name()
                ))
            })?;
            parts.push((w.rl_aux, aux));
        }
        FlatGradients::linear_combination(&parts)
    }
}

/// BRIDGE's outer objective, equation (8): SFT plus the gradient of the cooperative gain.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CooperativeGain;

impl OuterObjective for CooperativeGain {
    fn name(&self) -> &str {
        "cooperative_gain"
    }
    fn needs_aux_branch(&self) -> bool {
        true
    }
    fn term_weights(&self, lambda: f64) -> Option<TermWeights> {
        Some(TermWeights { sft: 1.0 - lambda, rl: lambda, rl_aux: -lambda })
    }
}

/// "Plain SFT+RL on w": `d_w = (1−λ)∇_w J_SFT + λ∇_w J_RL(θ,w)` — no RL-only branch (the
/// BRIDGE-without-meta ablation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JointSftRl;

impl OuterObjective for JointSftRl {
    fn name(&self) -> &str {
        "joint_sft_rl"
    }
    fn needs_aux_branch(&self) -> bool {
        false
    }
    fn term_weights(&self, lambda: f64) -> Option<TermWeights> {
        Some(TermWeights { sft: 1.0 - lambda, rl: lambda, rl_aux: 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ProjectedCooperativeGain;
    use approx::assert_relative_eq;
    use burn::module::{Module, Param};
    use burn::tensor::{Device, Tensor};

    #[derive(Module, Debug)]
    struct W {
        w: Param<Tensor<1>>,
    }

    /// Gradients of L = ⟨c, w⟩ are c: a way to build FlatGradients with chosen values.
    fn grad_of(m: &W, c: [f32; 3]) -> FlatGradients {
        let device = m.w.val().device();
        let loss = (m.w.val() * Tensor::from_floats(c, &device)).sum();
        FlatGradients::from_backward(&mut loss.backward(), m)
    }

    fn values(g: &FlatGradients, m: &W) -> Vec<f32> {
        g.get(m.w.id).unwrap().into_data().try_to_vec().unwrap()
    }

    #[test]
    fn cooperative_gain_is_equation_8() {
        let device = Device::flex().autodiff();
        let m = W { w: Param::from_tensor(Tensor::zeros([3], &device)) };
        let terms = AdapterGradTerms {
            sft: grad_of(&m, [1.0, 0.0, 2.0]),
            rl: grad_of(&m, [0.0, 4.0, 1.0]),
            rl_aux: Some(grad_of(&m, [2.0, 1.0, 1.0])),
        };
        let lambda = 0.25;
        let d = values(&CooperativeGain.adapter_direction(&terms, lambda).unwrap(), &m);
        // (1−λ)·sft + λ·(rl − rl_aux), by hand:
        let expected =
            [0.75 * 1.0 + 0.25 * (0.0 - 2.0), 0.75 * 0.0 + 0.25 * (4.0 - 1.0), 0.75 * 2.0 + 0.25 * (1.0 - 1.0)];
        for (a, b) in d.iter().zip(expected) {
            assert_relative_eq!(*a, b, epsilon = 1e-6);
        }
        let j = values(&JointSftRl.adapter_direction(&terms, lambda).unwrap(), &m);
        let expected = [0.75, 1.0, 1.75];
        for (a, b) in j.iter().zip(expected) {
            assert_relative_eq!(*a, b, epsilon = 1e-6);
        }
        assert!(CooperativeGain.needs_aux_branch() && !JointSftRl.needs_aux_branch());
    }

    #[test]
    fn missing_aux_branch_is_an_error_and_nonlinear_objectives_work() {
        let device = Device::flex().autodiff();
        let m = W { w: Param::from_tensor(Tensor::zeros([3], &device)) };
        let terms =
            AdapterGradTerms { sft: grad_of(&m, [1.0, 0.0, 0.0]), rl: grad_of(&m, [0.0, 1.0, 0.0]), rl_aux: None };
        assert!(CooperativeGain.adapter_direction(&terms, 0.5).is_err());
        // A non-linear objective (the test double) projects out the conflicting component.
        let terms = AdapterGradTerms {
            sft: grad_of(&m, [1.0, 0.0, 0.0]),
            rl: grad_of(&m, [0.0, 2.0, 0.0]),
            rl_aux: Some(grad_of(&m, [0.0, 0.0, 0.0])),
        };
        let d = values(&ProjectedCooperativeGain.adapter_direction(&terms, 0.5).unwrap(), &m);
        assert_relative_eq!(d[0], 0.5, epsilon = 1e-6);
        assert_relative_eq!(d[1], 1.0, epsilon = 1e-6);
        assert!(ProjectedCooperativeGain.term_weights(0.5).is_none());
    }
}
