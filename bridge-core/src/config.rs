//! Serde configuration types shared by the trainers.
//!
//! Every config struct denies unknown fields, so a typo in a run config is an error naming the
//! key instead of a silently ignored setting.

use crate::error::{BridgeError, Result};
use burn::optim::{AdamWConfig, ModuleOptimizer};
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters of one parameter group (θ, θ̂ or w each get their own optimiser).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWSettings {
    /// Learning rate (α for θ and θ̂, β for w in the paper's notation).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip applied by the trainer before the step (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, max_grad_norm: Some(1.0) }
    }
}

impl AdamWSettings {
    /// Settings with learning rate `lr` and the other defaults.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }

    /// Checks every value, naming the field (prefixed with `prefix`, e.g. `optim.theta`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad = |f: &str, m: String| Err(BridgeError::config(format!("{prefix}.{f}"), m));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", format!("must be a finite number ≥ 0, got {}", self.lr));
        }
        for (f, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(f, format!("must lie in [0, 1), got {v}"));
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad("eps", format!("must be > 0, got {}", self.eps));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad("weight_decay", format!("must be ≥ 0, got {}", self.weight_decay));
        }
        if let Some(n) = self.max_grad_norm
            && (n.is_nan() || n <= 0.0)
        {
            return bad("max_grad_norm", format!("must be > 0, got {n}"));
        }
        Ok(())
    }

    /// A burn AdamW optimiser with these settings (the learning rate is passed at each step).
    pub fn build(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::tensor::{Device, Tensor};

    #[derive(Module, Debug)]
    struct P {
        x: Param<Tensor<1>>,
    }

    #[test]
    fn validate_names_the_field() {
        assert!(AdamWSettings::default().validate("optim").is_ok());
        let e = AdamWSettings { beta2: 1.0, ..Default::default() }.validate("optim.w").unwrap_err();
        assert!(e.to_string().contains("optim.w.beta2"), "{e}");
        assert!(AdamWSettings { lr: f64::NAN, ..Default::default() }.validate("o").is_err());
        assert!(AdamWSettings { max_grad_norm: Some(0.0), ..Default::default() }.validate("o").is_err());
        let typo = serde_json::from_str::<AdamWSettings>(r#"{"learning_rate": 0.1}"#).unwrap_err();
        assert!(typo.to_string().contains("learning_rate"));
    }

    #[test]
    fn built_optimiser_takes_an_adam_step() {
        // First AdamW step moves each coordinate by lr·sign(g) (bias-corrected m/√v = ±1).
        let device = Device::flex().autodiff();
        let p = P { x: Param::from_tensor(Tensor::from_floats([1.0, -2.0], &device)) };
        let loss = (p.x.val() * Tensor::from_floats([3.0, -0.5], &device)).sum();
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &p);
        let mut optim = AdamWSettings::with_lr(0.1).build();
        let p = optim.step(0.1, p, grads);
        let v: Vec<f32> = p.x.val().into_data().try_to_vec().unwrap();
        assert!((v[0] - 0.9).abs() < 1e-4 && (v[1] + 1.9).abs() < 1e-4, "{v:?}");
    }
}
