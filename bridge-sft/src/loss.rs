//! The SFT loss: negative log-likelihood of the scored target tokens.
//!
//! `J_SFT = E log π(r, y | x)` (method.md §2) is maximised; the loss minimised here is its
//! negation, normalised by a [`LossReduction`]:
//!
//! | reduction | loss | note |
//! |---|---|---|
//! | `token_mean` (default) | `−Σ(logp·mask) / Σmask` | every target token weighs the same (TRL / verl SFT); long solutions weigh more per example |
//! | `sum` | `−Σ(logp·mask)` | the batch's total negative log-likelihood; scales with batch size and length, so the learning rate must be chosen accordingly |
//! | `sequence_mean` | `−mean_b [Σ_j logp·mask / Σ_j mask]` over rows with at least one target | every row weighs the same; with packing a row holds several examples |
//!
//! Positions where the mask is 0 (prompt, padding) never contribute, whatever their log-prob
//! (even `−∞` or NaN), and receive no gradient. A batch without any target is an error.

use bridge_core::{BridgeError, Result, TokenScores};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How the masked log-likelihoods of a batch are reduced to a scalar loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    /// `−Σ(logp·mask) / Σmask`.
    #[default]
    TokenMean,
    /// `−Σ(logp·mask)`.
    Sum,
    /// Mean over rows (with a target) of each row's token-mean NLL.
    SequenceMean,
}

/// A differentiable loss and the number of target tokens it covers.
#[derive(Clone, Debug)]
pub struct MaskedNll {
    /// One-element tensor, differentiable when the scores are.
    pub loss: Tensor<1>,
    /// Number of target tokens (entries of the mask that are > 0).
    pub num_tokens: usize,
}

/// The masked negative log-likelihood of `scores` under `reduction`.
///
/// # Shapes
/// - `scores.logprobs`, `scores.mask`: `[B, T−1]`
/// - returned `loss`: `[1]`
///
/// # Errors
/// [`BridgeError::InvalidInput`] when the shapes differ or the mask holds no target.
pub fn masked_nll(scores: &TokenScores, reduction: LossReduction) -> Result<MaskedNll> {
    let mask = scores.mask.clone();
    let [b, t] = mask.dims();
    if scores.logprobs.dims() != [b, t] {
        return Err(BridgeError::InvalidInput(format!(
            "log-probs of shape {:?} do not match the mask's [{b}, {t}]",
            scores.logprobs.dims()
        )));
    }
    let host: Vec<f32> = mask
        .clone()
        .detach()
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .map_err(|e| BridgeError::Model(format!("reading the loss mask: {e}")))?;
    let num_tokens = host.iter().filter(|&&m| m > 0.0).count();
    let total: f64 = host.iter().map(|&m| f64::from(m)).sum();
    if num_tokens == 0 || total <= 0.0 {
        return Err(BridgeError::InvalidInput("the batch has no target token to compute an SFT loss on".into()));
    }
    let device = mask.device();
    // Zero the unscored positions before multiplying, so that −∞ or NaN there cannot leak in.
    let unscored = mask.clone().lower_equal_elem(0.0);
    let weighted = scores.logprobs.clone().mask_fill(unscored, 0.0) * mask;
    let loss = match reduction {
        LossReduction::TokenMean => weighted.sum().div_scalar(total).neg(),
        LossReduction::Sum => weighted.sum().neg(),
        LossReduction::SequenceMean => {
            let counts: Vec<f64> =
                host.chunks(t.max(1)).map(|row| row.iter().map(|&m| f64::from(m.max(0.0))).sum()).collect();
            let rows = counts.iter().filter(|&&c| c > 0.0).count() as f64;
            let w: Vec<f32> = counts.iter().map(|&c| if c > 0.0 { (1.0 / (c * rows)) as f32 } else { 0.0 }).collect();
            let w = Tensor::<2>::from_data(TensorData::new(w, [b, 1]), &device);
            (weighted * w).sum().neg()
        }
    };
    Ok(MaskedNll { loss, num_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use burn::tensor::Device;

    fn scores(lp: [[f32; 3]; 2], mask: [[f32; 3]; 2]) -> TokenScores {
        let device = Device::flex();
        TokenScores {
            logprobs: Tensor::from_floats(lp, &device),
            entropy: None,
            mask: Tensor::from_floats(mask, &device),
        }
    }

    fn value(n: &MaskedNll) -> f64 {
        n.loss.clone().into_scalar::<f64>()
    }

    #[test]
    fn reductions_match_hand_computations() {
        let s = scores([[-1.0, -2.0, f32::NEG_INFINITY], [-4.0, f32::NAN, -0.5]], [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
        let tm = masked_nll(&s, LossReduction::TokenMean).unwrap();
        assert_eq!(tm.num_tokens, 3);
        assert_eq!(tm.loss.dims(), [1]);
        assert_relative_eq!(value(&tm), 7.0 / 3.0, epsilon = 1e-6);
        assert_relative_eq!(value(&masked_nll(&s, LossReduction::Sum).unwrap()), 7.0, epsilon = 1e-6);
        // rows: (1 + 2)/2 = 1.5 and 4/1 = 4 → 2.75
        assert_relative_eq!(value(&masked_nll(&s, LossReduction::SequenceMean).unwrap()), 2.75, epsilon = 1e-6);
        // A row without targets does not count in the sequence mean.
        let s = scores([[-1.0, -3.0, 0.0], [-9.0, -9.0, -9.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]);
        assert_relative_eq!(value(&masked_nll(&s, LossReduction::SequenceMean).unwrap()), 2.0, epsilon = 1e-6);
    }

    #[test]
    fn empty_mask_and_bad_shapes_are_errors() {
        let s = scores([[-1.0; 3]; 2], [[0.0; 3]; 2]);
        for r in [LossReduction::TokenMean, LossReduction::Sum, LossReduction::SequenceMean] {
            assert!(masked_nll(&s, r).unwrap_err().to_string().contains("no target"));
        }
        let device = Device::flex();
        let bad = TokenScores {
            logprobs: Tensor::from_floats([[-1.0, -1.0]], &device),
            entropy: None,
            mask: Tensor::from_floats([[1.0, 1.0, 1.0]], &device),
        };
        assert!(masked_nll(&bad, LossReduction::TokenMean).is_err());
        assert!(serde_json::from_str::<LossReduction>(r#""sequence_mean""#).is_ok());
    }
}
