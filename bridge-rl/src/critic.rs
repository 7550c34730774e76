//! PPO's critic: a value head on the policy's final hidden states, generalised advantage
//! estimation (GAE) and the clipped value loss — the formulas of TRL's `PPOTrainer` and verl's
//! `compute_gae_advantage_return` / `compute_value_loss`.
//!
//! With an outcome reward `R` on the last completion token (`r_t = 0` before it) and values
//! `V_t` predicted at every completion token, per sequence:
//!
//! ```text
//! δ_t  = r_t + γ·V_{t+1} − V_t                 (V after the last token = 0)
//! A_t  = δ_t + γλ·A_{t+1}        (= Σ_l (γλ)^l δ_{t+l})
//! R̂_t  = A_t + V_t                             (the value target)
//! ```
//!
//! then the advantages are whitened over the batch's tokens (`(A − mean)/√(var + 1e-8)`, unbiased
//! variance, TRL's `masked_whiten`), and the value loss is
//!
//! ```text
//! L_V = ½ · mean_t max((V_t − R̂_t)², (clip(V_t, V_t^old − c, V_t^old + c) − R̂_t)²)
//! ```
//!
//! The value head reads the hidden states *detached* from the policy ([`critic_features`]): the
//! value loss trains the head alone and the policy loss the policy alone (two parameter groups
//! with their own optimisers, as PPO with a separate critic).

use crate::loss::scalar;
use bridge_core::{BridgeError, CausalLm, Result, SequenceBatch};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

/// A linear value head `V = h·w + b` on the final hidden states.
#[derive(Module, Debug)]
pub struct ValueHead {
    /// `[H, 1]`.
    pub weight: Param<Tensor<2>>,
    /// `[1]`.
    pub bias: Param<Tensor<1>>,
}

impl ValueHead {
    /// A head predicting 0 everywhere (zero weight and bias: deterministic, no random stream).
    pub fn zeros(hidden_size: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([hidden_size, 1], device)),
            bias: Param::from_tensor(Tensor::zeros([1], device)),
        }
    }

    /// The hidden size `H` it reads.
    pub fn hidden_size(&self) -> usize {
        self.weight.val().dims()[0]
    }

    /// The values of every position.
    ///
    /// # Shapes
    /// `hidden [B, T, H]` → `[B, T]`
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, h] = hidden.dims();
        let v = hidden.reshape([b * t, h]).matmul(self.weight.val()) + self.bias.val().unsqueeze::<2>();
        v.reshape([b, t])
    }
}

/// The critic's features of `batch`'s targets: the final hidden state at position `j` for target
/// column `j` (the state before the token it predicts), detached from `base` and `adapter`.
///
/// # Shapes
/// `[B, T−1, H]` for a batch of `B` rows padded to `T` tokens.
pub fn critic_features<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
) -> Result<Tensor<3>> {
    let hidden = lm.hidden_states(base, adapter, batch)?.detach();
    let [b, t, h] = hidden.dims();
    if b != batch.batch_size() || t != batch.seq_len() {
        return Err(BridgeError::Model(format!(
            "hidden states of shape [{b}, {t}, {h}] for a batch of [{}, {}]",
            batch.batch_size(),
            batch.seq_len()
        )));
    }
    Ok(hidden.slice([0..b, 0..t - 1]))
}

/// GAE of one trajectory: `(advantages, returns)` of `rewards` and `values` (the same length; the
/// value after the last step is 0).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    if rewards.len() != values.len() {
        return Err(BridgeError::InvalidInput(format!("GAE of {} rewards and {} values", rewards.len(), values.len())));
    }
    let n = rewards.len();
    let mut advantages = vec![0.0; n];
    let mut next_advantage = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_advantage = delta + gamma * lambda * next_advantage;
        advantages[t] = next_advantage;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((advantages, returns))
}

/// Whitens `values` in place: `(x − mean)/√(var + 1e-8)`, with the unbiased variance (TRL's
/// `masked_whiten` over the masked tokens). Fewer than two values are only centred.
pub fn whiten(values: &mut [f64]) {
    let n = values.len();
    if n == 0 {
        return;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let scale = if n > 1 {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        1.0 / (var + 1e-8).sqrt()
    } else {
        1.0
    };
    for v in values {
        *v = (*v - mean) * scale;
    }
}

/// A value-loss evaluation.
pub struct ValueLossOutput {
    /// `L_V` (one element), differentiable through `values`.
    pub loss: Tensor<1>,
    /// Its value.
    pub value: f64,
    /// Fraction of tokens where the clipped term is the larger one.
    pub clip_fraction: f64,
}

/// The clipped value loss (module docs) over the masked tokens; `clip = None` leaves it
/// unclipped (`½·mean (V − R̂)²`).
///
/// # Shapes
/// `values`, `old_values`, `returns`, `mask`: `[B, T]` → `loss` `[1]`
pub fn value_loss(
    values: Tensor<2>,
    old_values: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    clip: Option<f64>,
) -> Result<ValueLossOutput> {
    let tokens = scalar(mask.clone().sum());
    if tokens <= 0.0 {
        return Err(BridgeError::InvalidInput("value loss over a batch without completion tokens".into()));
    }
    let unclipped = (values.clone() - returns.clone()).square();
    let (per_token, clip_fraction) = match clip {
        Some(c) => {
            let clipped_values = old_values.clone() + (values - old_values).clamp(-c, c);
            let clipped = (clipped_values - returns).square();
            let frac = scalar((clipped.clone().greater(unclipped.clone()).float() * mask.clone()).sum()) / tokens;
            (unclipped.max_pair(clipped), frac)
        }
        None => (unclipped, 0.0),
    };
    let loss = (per_token * mask).sum().div_scalar(tokens).mul_scalar(0.5);
    Ok(ValueLossOutput { value: scalar(loss.clone().detach()), loss, clip_fraction })
}

/// A host `[rows, cols]` matrix as a tensor.
///
/// # Shapes
/// `values`: `rows·cols` row-major → `[rows, cols]`
pub fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn gae_is_the_discounted_sum_of_td_errors() {
        let rewards = [0.0, 0.0, 0.0, 1.0];
        let values = [0.2, -0.1, 0.5, 0.3];
        for (gamma, lambda) in [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)] {
            let (adv, ret) = gae(&rewards, &values, gamma, lambda).unwrap();
            let delta: Vec<f64> =
                (0..4).map(|t| rewards[t] + gamma * if t < 3 { values[t + 1] } else { 0.0 } - values[t]).collect();
            for t in 0..4 {
                let closed: f64 = (t..4).map(|k| (gamma * lambda).powi((k - t) as i32) * delta[k]).sum();
                assert_relative_eq!(adv[t], closed, epsilon = 1e-12);
                assert_relative_eq!(ret[t], closed + values[t], epsilon = 1e-12);
            }
        }
        // λ = γ = 1: every advantage is the outcome minus the value (Monte Carlo).
        let (adv, _) = gae(&rewards, &values, 1.0, 1.0).unwrap();
        assert_relative_eq!(adv[1], 1.0 + 0.1, epsilon = 1e-12);
        assert!(gae(&[1.0], &[], 1.0, 1.0).is_err());
    }

    #[test]
    fn whitening_centres_and_scales() {
        let mut x = [1.0, 2.0, 3.0, 6.0];
        whiten(&mut x);
        let var: f64 = (4.0 + 1.0 + 0.0 + 9.0) / 3.0; // mean 3, unbiased
        assert_relative_eq!(x[0], -2.0 / (var + 1e-8).sqrt(), epsilon = 1e-12);
        assert_relative_eq!(x.iter().sum::<f64>(), 0.0, epsilon = 1e-12);
    }

    #[test]
    fn value_loss_matches_the_formula_and_its_gradient() {
        let device = Device::flex().autodiff();
        let v = [0.5f32, -0.2, 1.4, 0.0, 0.9, 0.3];
        let old = [0.2f32, 0.1, 0.2, 0.0, 0.8, 0.8];
        let ret = [1.0f32, -1.0, 0.0, 5.0, 1.0, 0.0];
        let mask = [1.0f32, 1.0, 1.0, 0.0, 1.0, 1.0];
        for clip in [Some(0.2), None] {
            let values = matrix(v.to_vec(), 2, 3, &device).require_grad();
            let out = value_loss(
                values.clone(),
                matrix(old.to_vec(), 2, 3, &device),
                matrix(ret.to_vec(), 2, 3, &device),
                matrix(mask.to_vec(), 2, 3, &device),
                clip,
            )
            .unwrap();
            // TRL's formula as scalars; the gradient picks the larger branch (clipped: 0 when V
            // is outside the clip range).
            let (mut sum, mut grad, mut clipped_count) = (0.0, [0.0f64; 6], 0.0);
            for k in 0..6 {
                let (vk, ok, rk) = (f64::from(v[k]), f64::from(old[k]), f64::from(ret[k]));
                let u = (vk - rk).powi(2);
                let (c, inside) = match clip {
                    Some(c) => {
                        let vc = ok + (vk - ok).clamp(-c, c);
                        ((vc - rk).powi(2), (vk - ok).abs() < c)
                    }
                    None => (f64::NEG_INFINITY, true),
                };
                if mask[k] > 0.0 {
                    sum += u.max(c);
                    grad[k] = if u >= c || inside { (vk - rk) / 5.0 } else { 0.0 };
                    clipped_count += f64::from(u8::from(c > u));
                }
            }
            assert_relative_eq!(out.value, 0.5 * sum / 5.0, epsilon = 1e-6);
            assert_relative_eq!(out.clip_fraction, clipped_count / 5.0, epsilon = 1e-9);
            let g: Vec<f32> = values.grad(&out.loss.backward()).unwrap().into_data().try_to_vec().unwrap();
            for k in 0..6 {
                assert_relative_eq!(f64::from(g[k]), grad[k], epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn the_head_is_linear_in_the_features() {
        let device = Device::flex();
        let mut head = ValueHead::zeros(3, &device);
        assert_eq!(head.hidden_size(), 3);
        head.weight = Param::from_tensor(matrix(vec![1.0, -2.0, 0.5], 3, 1, &device));
        head.bias = Param::from_tensor(Tensor::from_floats([0.25], &device));
        let h = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 1.0, 2.0, 0.0, 3.0, -4.0], [1, 2, 3]), &device);
        let v: Vec<f32> = head.forward(h).into_data().try_to_vec().unwrap();
        assert_eq!(v, vec![1.0 - 2.0 + 1.0 + 0.25, 0.0 - 6.0 - 2.0 + 0.25]);
    }
}
