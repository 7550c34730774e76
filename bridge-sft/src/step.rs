//! The SFT loss of a batch ([`sft_loss`]), the building block every training algorithm composes:
//! `SftOnly` (the "SFT" row of method.md §5), cold start, alternating, mixing and BRIDGE (with
//! its RL terms, e.g. `(1−λ)·L_SFT + λ·L_RL`) in `bridge-bilevel`, which split the gradient into
//! the base and adapter groups, clip, check finiteness and update. Training goes through those
//! algorithms and their run loop (`bridge_bilevel::run_steps`); this crate holds no loop.

use crate::loss::{LossReduction, MaskedNll, masked_nll};
use bridge_core::{CausalLm, Result, SequenceBatch};
use burn::tensor::Tensor;

/// The SFT loss of one batch.
#[derive(Clone, Debug)]
pub struct SftLossOutput {
    /// `−J_SFT` of the batch under the chosen reduction: a one-element tensor, differentiable
    /// with respect to the base and (when given) the adapter.
    pub loss: Tensor<1>,
    /// Number of target tokens scored.
    pub num_tokens: usize,
    /// The loss value on the host (may be non-finite: callers check it with
    /// [`bridge_core::error::ensure_finite`] before acting on it).
    pub value: f64,
}

/// The token-mean SFT loss `−Σ(logp·mask)/Σmask` of `batch` under `π(·; base, adapter)`.
///
/// # Shapes
/// - `batch`: `B` rows padded to `T` tokens; the scores are `[B, T−1]`
/// - returned `loss`: `[1]`
pub fn sft_loss<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
) -> Result<SftLossOutput> {
    sft_loss_with(lm, base, adapter, batch, LossReduction::TokenMean)
}

/// [`sft_loss`] with another [`LossReduction`].
///
/// # Shapes
/// - `batch`: `B` rows padded to `T` tokens; the scores are `[B, T−1]`
/// - returned `loss`: `[1]`
pub fn sft_loss_with<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
    reduction: LossReduction,
) -> Result<SftLossOutput> {
    let scores = lm.token_scores(base, adapter, batch, false)?;
    let MaskedNll { loss, num_tokens } = masked_nll(&scores, reduction)?;
    let value = loss.clone().detach().into_scalar::<f64>();
    Ok(SftLossOutput { loss, num_tokens, value })
}
