//! Group-relative advantages (GRPO and its variants).
//!
//! Rewards arrive in groups of `G` completions of the same prompt. The advantage of completion
//! `i` of a group is `A_i = (R_i − mean_group) / (scale + ε)`, where the scale is
//!
//! * [`AdvantageScaling::Group`] — the group's standard deviation (GRPO, the default);
//! * [`AdvantageScaling::Batch`] — the standard deviation of all rewards in the batch
//!   (TRL's `scale_rewards="batch"`);
//! * [`AdvantageScaling::None`] — no division (Dr.GRPO).
//!
//! Standard deviations are the unbiased (Bessel-corrected) ones, as `torch.std` computes them in
//! TRL and verl. Skipped completions (reward `None`) are left out of every statistic and get
//! advantage 0 and no loss weight. A group whose valid rewards are all equal (or which has fewer
//! than two valid rewards) has zero advantage everywhere; such groups are counted.

use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};

/// How group-centred rewards are scaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScaling {
    /// Divide by the group's reward standard deviation (GRPO).
    #[default]
    Group,
    /// Divide by the batch's reward standard deviation.
    Batch,
    /// Do not divide (Dr.GRPO).
    None,
}

/// Advantages of a batch of groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    /// One advantage per completion (0 for skipped ones), in input order.
    pub values: Vec<f64>,
    /// Whether each completion takes part in the loss (false when its reward was skipped).
    pub valid: Vec<bool>,
    /// Number of groups whose valid rewards are all equal (no learning signal).
    pub zero_std_groups: usize,
    /// Number of groups.
    pub groups: usize,
}

impl Advantages {
    /// Fraction of groups without learning signal.
    pub fn zero_std_fraction(&self) -> f64 {
        if self.groups == 0 { 0.0 } else { self.zero_std_groups as f64 / self.groups as f64 }
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Computes the advantages of `rewards`, laid out as consecutive groups of `group_size`.
pub fn compute_advantages(
    rewards: &[Option<f64>],
    group_size: usize,
    scaling: AdvantageScaling,
    eps: f64,
) -> Result<Advantages> {
    if group_size == 0 || !rewards.len().is_multiple_of(group_size) {
        return Err(BridgeError::InvalidInput(format!("{} rewards do not form groups of {group_size}", rewards.len())));
    }
    if let Some(bad) = rewards.iter().flatten().find(|r| !r.is_finite()) {
        return Err(BridgeError::InvalidInput(format!("non-finite reward {bad}")));
    }
    let valid: Vec<bool> = rewards.iter().map(Option::is_some).collect();
    let all: Vec<f64> = rewards.iter().flatten().copied().collect();
    let batch_std = mean_std(&all).1;
    let mut values = vec![0.0; rewards.len()];
    let mut zero_std_groups = 0;
    let groups = rewards.len() / group_size;
    for g in 0..groups {
        let range = g * group_size..(g + 1) * group_size;
        let vals: Vec<f64> = rewards[range.clone()].iter().flatten().copied().collect();
        let (mean, std) = mean_std(&vals);
        let spread = vals.iter().any(|v| (v - mean).abs() > 0.0);
        if !spread || vals.len() < 2 {
            zero_std_groups += 1;
            continue;
        }
        let scale = match scaling {
            AdvantageScaling::Group => std + eps,
            AdvantageScaling::Batch => batch_std + eps,
            AdvantageScaling::None => 1.0,
        };
        for i in range {
            if let Some(r) = rewards[i] {
                values[i] = (r - mean) / scale;
            }
        }
    }
    Ok(Advantages { values, valid, zero_std_groups, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn group_scaling_matches_hand_values() {
        // group 1: rewards 1, 0, 0, 1 → mean 0.5, unbiased std = sqrt(1/3)
        // group 2: all zero → no signal
        let r = [Some(1.0), Some(0.0), Some(0.0), Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(0.0)];
        let a = compute_advantages(&r, 4, AdvantageScaling::Group, 1e-4).unwrap();
        let s = (1.0f64 / 3.0).sqrt() + 1e-4;
        assert_relative_eq!(a.values[0], 0.5 / s, epsilon = 1e-12);
        assert_relative_eq!(a.values[1], -0.5 / s, epsilon = 1e-12);
        assert!(a.values[4..].iter().all(|v| *v == 0.0));
        assert_eq!((a.zero_std_groups, a.groups), (1, 2));
        assert_relative_eq!(a.zero_std_fraction(), 0.5);
    }

    #[test]
    fn batch_and_unscaled_variants() {
        let r = [Some(1.0), Some(0.0), Some(3.0), Some(1.0)];
        // batch: mean 1.25, unbiased var = (0.0625+1.5625+3.0625+0.0625)/3 = 1.5833…
        let batch_std = (4.75f64 / 3.0).sqrt();
        let a = compute_advantages(&r, 2, AdvantageScaling::Batch, 0.0).unwrap();
        assert_relative_eq!(a.values[0], 0.5 / batch_std, epsilon = 1e-12);
        assert_relative_eq!(a.values[2], 1.0 / batch_std, epsilon = 1e-12);
        let a = compute_advantages(&r, 2, AdvantageScaling::None, 1e-4).unwrap();
        assert_eq!(a.values, vec![0.5, -0.5, 1.0, -1.0]);
    }

    #[test]
    fn skipped_rewards_are_left_out() {
        let r = [Some(1.0), None, Some(0.0), Some(2.0), None, None];
        let a = compute_advantages(&r, 3, AdvantageScaling::None, 0.0).unwrap();
        assert_eq!(a.values, vec![0.5, 0.0, -0.5, 0.0, 0.0, 0.0]);
        assert_eq!(a.valid, vec![true, false, true, true, false, false]);
        assert_eq!(a.zero_std_groups, 1, "a group with one valid reward has no signal");
        assert!(compute_advantages(&r, 4, AdvantageScaling::Group, 0.0).is_err());
        assert!(compute_advantages(&[Some(f64::NAN)], 1, AdvantageScaling::Group, 0.0).is_err());
    }
}
