//! CHORD (Zhang et al., *On-Policy RL Meets Off-Policy Experts: Harmonizing Supervised
//! Fine-Tuning and Reinforcement Learning via Dynamic Weighting*, arXiv 2508.11408): the SFT loss
//! on expert data as an auxiliary term of the RL step,
//!
//! ```text
//! L_CHORD = (1 − μ)·L_GRPO + μ·L_SFT
//! ```
//!
//! with two controls, as in the authors' code (Trinity-RFT's `mix_chord` policy loss):
//!
//! * **CHORD-μ** — a global weight on a schedule ([`MuSchedule`]): a linear warm-up from 0 to
//!   `peak` over `warmup_steps`, a cosine decay from `peak` to `valley` over `decay_steps`, then
//!   `valley`;
//! * **CHORD-φ** — a per-token weight on the expert tokens' NLL: `φ = p·(1 − p)` with
//!   `p = π_θ(y_t | y_<t)`, computed without gradient ([`chord_sft_loss`]), which down-weights
//!   tokens the model is already sure of (p → 1) and tokens far from it (p → 0).
//!
//! The SFT term is a token mean over the expert batch: `L_SFT = Σ_t −sg(φ_t)·log p_t / Σ_t 1`
//! (φ ≡ 1 without CHORD-φ, the plain token-mean NLL).

use crate::loss::scalar;
use bridge_core::{BridgeError, Result, TokenScores};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The schedule of CHORD's global SFT weight μ (Trinity-RFT's `mu_schedule_function`).
///
/// The default is the CHORD-φ preset of the authors' example (μ constant at 0.1);
/// [`MuSchedule::chord_mu`] is their CHORD-μ preset (0.9 decaying to 0.05 over 200 steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuSchedule {
    /// Steps of the linear warm-up from 0 to `peak` (0: start at `peak`).
    pub warmup_steps: u64,
    /// Steps of the cosine decay from `peak` to `valley` after the warm-up (0: jump to `valley`).
    pub decay_steps: u64,
    /// μ at the end of the warm-up.
    pub peak: f64,
    /// μ after the decay.
    pub valley: f64,
}

impl Default for MuSchedule {
    fn default() -> Self {
        Self { warmup_steps: 0, decay_steps: 0, peak: 0.1, valley: 0.1 }
    }
}

impl MuSchedule {
    /// The CHORD-μ preset of the authors' example config: 0.9 decaying to 0.05 over 200 steps.
    pub fn chord_mu() -> Self {
        Self { warmup_steps: 0, decay_steps: 200, peak: 0.9, valley: 0.05 }
    }

    /// μ at `step` (0-based: the step about to be taken).
    pub fn mu(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps as f64 * self.peak;
        }
        if step >= self.warmup_steps + self.decay_steps {
            return self.valley;
        }
        let progress = (step - self.warmup_steps) as f64 / self.decay_steps as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.peak - self.valley) * cosine + self.valley
    }

    /// Checks the values, naming the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        for (f, v) in [("peak", self.peak), ("valley", self.valley)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(BridgeError::config(format!("{prefix}.{f}"), format!("must lie in [0, 1], got {v}")));
            }
        }
        Ok(())
    }
}

/// CHORD's SFT term on an expert batch and its statistics.
pub struct ChordSftOutput {
    /// `Σ −sg(φ)·log p·m / Σ m`, differentiable (one element).
    pub loss: Tensor<1>,
    /// Its value.
    pub value: f64,
    /// The plain token-mean NLL of the batch (what SFT alone would report).
    pub nll: f64,
    /// Token mean of φ (1 without CHORD-φ).
    pub phi_mean: f64,
    /// Expert tokens in the loss.
    pub tokens: usize,
}

/// CHORD's SFT term of `scores` (an expert batch's target log-probs): the token mean of
/// `−sg(φ)·log p` over the scored targets, with `φ = p(1 − p)` when `phi`, else 1.
///
/// Unscored positions (prompt, padding) never contribute, whatever their log-prob.
///
/// # Shapes
/// `scores.logprobs`, `scores.mask`: `[B, T]` → `loss` `[1]`
pub fn chord_sft_loss(scores: &TokenScores, phi: bool) -> Result<ChordSftOutput> {
    let mask = scores.mask.clone();
    if scores.logprobs.dims() != mask.dims() {
        return Err(BridgeError::InvalidInput(format!(
            "log-probs of shape {:?} do not match the mask's {:?}",
            scores.logprobs.dims(),
            mask.dims()
        )));
    }
    let total = scalar(mask.clone().sum());
    let tokens = scalar(mask.clone().greater_elem(0.0).float().sum()) as usize;
    if tokens == 0 || total <= 0.0 {
        return Err(BridgeError::InvalidInput("the expert batch has no target token".into()));
    }
    let unscored = mask.clone().lower_equal_elem(0.0);
    let logp = scores.logprobs.clone().mask_fill(unscored, 0.0);
    let weight: Tensor<2> = if phi {
        let p = logp.clone().detach().exp();
        p.clone() * (p.neg() + 1.0)
    } else {
        Tensor::ones(mask.dims(), &mask.device())
    };
    let weight = weight * mask.clone();
    let loss = (logp.clone() * weight.clone()).sum().div_scalar(total).neg();
    let nll = -scalar((logp.detach() * mask).sum()) / total;
    Ok(ChordSftOutput {
        value: scalar(loss.clone().detach()),
        loss,
        nll,
        phi_mean: scalar(weight.sum()) / total,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn mu_follows_the_authors_schedule() {
        // Warm-up 4 steps to 0.8, cosine decay over 4 steps to 0.2, then 0.2 (by hand).
        let s = MuSchedule { warmup_steps: 4, decay_steps: 4, peak: 0.8, valley: 0.2 };
        let expected = [0.0, 0.2, 0.4, 0.6, 0.8, 0.2 + 0.6 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())];
        for (step, e) in expected.iter().enumerate() {
            assert_relative_eq!(s.mu(step as u64), *e, epsilon = 1e-12);
        }
        assert_relative_eq!(s.mu(6), 0.5, epsilon = 1e-12); // halfway through the decay
        assert_eq!((s.mu(8), s.mu(1000)), (0.2, 0.2));
        // The presets: CHORD-φ's constant 0.1, CHORD-μ's decay from 0.9.
        let phi = MuSchedule::default();
        assert_eq!((phi.mu(0), phi.mu(50)), (0.1, 0.1));
        let mu = MuSchedule::chord_mu();
        assert_eq!((mu.mu(0), mu.mu(200)), (0.9, 0.05));
        assert!(
            MuSchedule { peak: 1.5, ..phi.clone() }
                .validate("algorithm")
                .unwrap_err()
                .to_string()
                .contains("algorithm.peak")
        );
        assert!(serde_json::from_str::<MuSchedule>(r#"{"peek": 0.5}"#).unwrap_err().to_string().contains("peek"));
    }

    const LOGP: [f32; 8] = [-0.1, -2.0, -0.7, -9.0, -0.3, f32::NEG_INFINITY, -1.2, -0.05];
    const MASK: [f32; 8] = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];

    /// The formula of the authors' `SFTPhiLossFn` (token-level mean), as scalars in f64.
    fn reference(phi: bool) -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        for (&lp, &m) in LOGP.iter().zip(&MASK) {
            if m > 0.0 {
                let p = f64::from(lp).exp();
                let w = if phi { p * (1.0 - p) } else { 1.0 };
                sum += -f64::from(lp) * w;
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn the_sft_term_matches_the_formula_and_phi_carries_no_gradient() {
        let device = Device::flex().autodiff();
        for phi in [true, false] {
            let logp = Tensor::<2>::from_data(TensorData::new(LOGP.to_vec(), [2, 4]), &device).require_grad();
            let scores = TokenScores {
                logprobs: logp.clone(),
                entropy: None,
                mask: Tensor::from_data(TensorData::new(MASK.to_vec(), [2, 4]), &device),
            };
            let out = chord_sft_loss(&scores, phi).unwrap();
            assert_relative_eq!(out.value, reference(phi), epsilon = 1e-6);
            assert_eq!(out.tokens, 6);
            assert_relative_eq!(out.nll, reference(false), epsilon = 1e-6);
            // ∂L/∂log p_t = −sg(φ_t)/N: φ is a constant weight (no p·φ'(p) term), masked tokens get 0.
            let grads = out.loss.backward();
            let g: Vec<f32> = logp.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
            for (k, (&lp, &m)) in LOGP.iter().zip(&MASK).enumerate() {
                let p = f64::from(lp).exp();
                let w = if m == 0.0 {
                    0.0
                } else if phi {
                    p * (1.0 - p)
                } else {
                    1.0
                };
                assert_relative_eq!(f64::from(g[k]), -w / 6.0, epsilon = 1e-6);
            }
        }
        let empty = TokenScores {
            logprobs: Tensor::zeros([1, 2], &device),
            entropy: None,
            mask: Tensor::zeros([1, 2], &device),
        };
        assert!(chord_sft_loss(&empty, true).is_err());
    }
}
