//! Serde configuration types shared by the trainers.
//!
//! Every config struct denies unknown fields, so a typo in a run config is an error naming the
//! key instead of a silently ignored setting.

use crate::error::{BridgeError, Result, ensure_finite};
use crate::grads::FlatGradients;
use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

/// Which update rule a parameter group uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (method.md's decision for θ, θ̂ and w).
    #[default]
    AdamW,
    /// Plain SGD `p ← p − lr·g` (no momentum, no decay): the exact reference in tests.
    Sgd,
}

/// Optimiser hyper-parameters of one parameter group (θ, θ̂ or w each get their own optimiser).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWSettings {
    /// The update rule (AdamW by default; `sgd` ignores the betas, eps and weight decay).
    pub kind: OptimizerKind,
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
        Self {
            kind: OptimizerKind::AdamW,
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
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

    /// Plain SGD with learning rate `lr` and no clipping (exact reference computations).
    pub fn sgd(lr: f64) -> Self {
        Self { kind: OptimizerKind::Sgd, lr, max_grad_norm: None, ..Self::default() }
    }

    /// A burn optimiser with these settings (the learning rate is passed at each step).
    pub fn build(&self) -> ModuleOptimizer {
        if self.kind == OptimizerKind::Sgd {
            return SgdConfig::new().init();
        }
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }
}

/// The optimiser of one parameter group (θ, θ̂ or w): AdamW plus global-norm clipping.
///
/// [`GroupOptimizer::apply`] takes a *loss* gradient: the parameters move along `−grads`. To move
/// along an objective's ascent direction `d` (as the paper writes its updates), pass
/// `d.scale(-1.0)`.
#[derive(Clone)]
pub struct GroupOptimizer {
    settings: AdamWSettings,
    optim: ModuleOptimizer,
}

impl GroupOptimizer {
    /// Validates `settings` (field names prefixed with `name`) and builds the optimiser.
    pub fn new(name: &str, settings: AdamWSettings) -> Result<Self> {
        settings.validate(name)?;
        let optim = settings.build();
        Ok(Self { settings, optim })
    }

    /// The settings.
    pub fn settings(&self) -> &AdamWSettings {
        &self.settings
    }

    /// The burn optimiser (its state is what checkpoints save).
    pub fn optimizer(&self) -> &ModuleOptimizer {
        &self.optim
    }

    /// Replaces the burn optimiser (e.g. with one whose state was loaded from a checkpoint).
    pub fn set_optimizer(&mut self, optim: ModuleOptimizer) {
        self.optim = optim;
    }

    /// Clips `grads` to `max_grad_norm` and checks them: returns the gradients to apply and the
    /// norm before clipping, or [`BridgeError::NonFinite`] when the norm is NaN or infinite.
    ///
    /// Trainers clip *every* group first and apply only when all succeeded, so that a NaN in one
    /// group never leaves the others half-updated.
    pub fn clip(&self, grads: &FlatGradients, step: u64) -> Result<(FlatGradients, f64)> {
        let (grads, norm) = match self.settings.max_grad_norm {
            Some(max) => grads.clip_norm(max),
            None => (grads.clone(), grads.norm()),
        };
        ensure_finite("gradient norm", norm, step)?;
        Ok((grads, norm))
    }

    /// One AdamW step of `module` along `−grads` (gradients of a loss, already clipped).
    pub fn apply<M: Module>(&mut self, module: M, grads: &FlatGradients) -> M {
        let params = grads.to_gradients_params(&module);
        self.optim.step(self.settings.lr, module, params)
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
    fn group_optimizer_clips_and_rejects_nan() {
        let device = Device::flex().autodiff();
        let p = P { x: Param::from_tensor(Tensor::from_floats([1.0, -2.0], &device)) };
        let settings = AdamWSettings { lr: 0.5, max_grad_norm: Some(1.0), ..Default::default() };
        let mut opt = GroupOptimizer::new("optim.theta", settings).unwrap();
        let loss = (p.x.val() * Tensor::from_floats([3.0, 4.0], &device)).sum();
        let g = FlatGradients::from_backward(&mut loss.backward(), &p);
        let (g, norm) = opt.clip(&g, 0).unwrap();
        let p = opt.apply(p, &g);
        assert!((norm - 5.0).abs() < 1e-5);
        let v: Vec<f32> = p.x.val().into_data().try_to_vec().unwrap();
        assert!((v[0] - 0.5).abs() < 1e-4 && (v[1] + 2.5).abs() < 1e-4, "{v:?}");
        let loss = (p.x.val() * f32::NAN).sum();
        let g = FlatGradients::from_backward(&mut loss.backward(), &p);
        assert!(matches!(opt.clip(&g, 3), Err(BridgeError::NonFinite { step: 3, .. })));
        assert!(GroupOptimizer::new("optim.w", AdamWSettings { lr: -1.0, ..Default::default() }).is_err());
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
