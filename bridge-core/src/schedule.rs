//! Schedules for BRIDGE's mixing weight λ ∈ [0, 1].
//!
//! λ weighs RL against SFT in equations (7) and (8): `(1−λ)·SFT + λ·RL`. method.md fixes λ = 0.5
//! by default; the paper's text describes λ rising from small to large, which
//! [`LinearRamp`] and [`CosineRamp`] express. [`LambdaScheduleConfig`] is the serde form used in
//! run configs (`kind = "constant" | "linear" | "cosine" | "piecewise_by_epoch"`).

use crate::error::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// Where training stands when λ is asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScheduleState {
    /// Optimiser steps taken so far (0 for the first step).
    pub step: u64,
    /// Completed epochs over the RL prompts (fractional).
    pub epoch: f64,
}

/// A schedule for λ.
pub trait LambdaSchedule: Send + Sync + Debug {
    /// λ at `state`, in `[0, 1]`.
    fn lambda(&self, state: ScheduleState) -> f64;
}

/// λ fixed for the whole run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConstantLambda(pub f64);

impl LambdaSchedule for ConstantLambda {
    fn lambda(&self, _: ScheduleState) -> f64 {
        self.0
    }
}

/// λ moves linearly from `start` to `end` over `steps` steps, then stays at `end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearRamp {
    /// λ at step 0.
    pub start: f64,
    /// λ from step `steps` on.
    pub end: f64,
    /// Length of the ramp in steps (> 0).
    pub steps: u64,
}

impl LambdaSchedule for LinearRamp {
    fn lambda(&self, s: ScheduleState) -> f64 {
        let p = (s.step as f64 / self.steps as f64).min(1.0);
        self.start + (self.end - self.start) * p
    }
}

/// λ follows half a cosine from `start` to `end` over `steps` steps, then stays at `end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineRamp {
    /// λ at step 0.
    pub start: f64,
    /// λ from step `steps` on.
    pub end: f64,
    /// Length of the ramp in steps (> 0).
    pub steps: u64,
}

impl LambdaSchedule for CosineRamp {
    fn lambda(&self, s: ScheduleState) -> f64 {
        let p = (s.step as f64 / self.steps as f64).min(1.0);
        self.start + (self.end - self.start) * 0.5 * (1.0 - (std::f64::consts::PI * p).cos())
    }
}

/// λ = `values[e]` during epoch `e` (the last value for all later epochs).
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseByEpoch {
    /// One value per epoch (non-empty).
    pub values: Vec<f64>,
}

impl LambdaSchedule for PiecewiseByEpoch {
    fn lambda(&self, s: ScheduleState) -> f64 {
        let e = s.epoch.max(0.0).floor() as usize;
        self.values[e.min(self.values.len() - 1)]
    }
}

/// The serde form of a λ schedule, as written in a run config.
///
/// ```
/// use bridge_core::{LambdaScheduleConfig, ScheduleState};
/// let cfg: LambdaScheduleConfig =
///     serde_json::from_str(r#"{"kind": "linear", "start": 0.1, "end": 0.9, "steps": 100}"#).unwrap();
/// let schedule = cfg.build().unwrap();
/// assert!((schedule.lambda(ScheduleState { step: 50, epoch: 0.0 }) - 0.5).abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LambdaScheduleConfig {
    /// [`ConstantLambda`].
    Constant {
        /// λ.
        value: f64,
    },
    /// [`LinearRamp`].
    Linear {
        /// λ at step 0.
        start: f64,
        /// Final λ.
        end: f64,
        /// Ramp length in steps.
        steps: u64,
    },
    /// [`CosineRamp`].
    Cosine {
        /// λ at step 0.
        start: f64,
        /// Final λ.
        end: f64,
        /// Ramp length in steps.
        steps: u64,
    },
    /// [`PiecewiseByEpoch`].
    PiecewiseByEpoch {
        /// λ per epoch.
        values: Vec<f64>,
    },
}

impl Default for LambdaScheduleConfig {
    /// method.md's default: λ = 0.5 throughout.
    fn default() -> Self {
        Self::Constant { value: 0.5 }
    }
}

fn check_unit(field: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(BridgeError::config(field, format!("λ must lie in [0, 1], got {v}")))
    }
}

fn check_steps(steps: u64) -> Result<u64> {
    if steps == 0 { Err(BridgeError::config("lambda.steps", "must be at least 1")) } else { Ok(steps) }
}

impl LambdaScheduleConfig {
    /// Validates the values and builds the schedule.
    pub fn build(&self) -> Result<Box<dyn LambdaSchedule>> {
        Ok(match self {
            Self::Constant { value } => Box::new(ConstantLambda(check_unit("lambda.value", *value)?)),
            Self::Linear { start, end, steps } => Box::new(LinearRamp {
                start: check_unit("lambda.start", *start)?,
                end: check_unit("lambda.end", *end)?,
                steps: check_steps(*steps)?,
            }),
            Self::Cosine { start, end, steps } => Box::new(CosineRamp {
                start: check_unit("lambda.start", *start)?,
                end: check_unit("lambda.end", *end)?,
                steps: check_steps(*steps)?,
            }),
            Self::PiecewiseByEpoch { values } => {
                if values.is_empty() {
                    return Err(BridgeError::config("lambda.values", "needs at least one value"));
                }
                for (i, v) in values.iter().enumerate() {
                    check_unit(&format!("lambda.values[{i}]"), *v)?;
                }
                Box::new(PiecewiseByEpoch { values: values.clone() })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn at(step: u64, epoch: f64) -> ScheduleState {
        ScheduleState { step, epoch }
    }

    #[test]
    fn schedules_match_hand_values() {
        assert_eq!(ConstantLambda(0.5).lambda(at(1000, 3.0)), 0.5);
        let lin = LinearRamp { start: 0.2, end: 0.8, steps: 10 };
        assert_relative_eq!(lin.lambda(at(0, 0.0)), 0.2);
        assert_relative_eq!(lin.lambda(at(5, 0.0)), 0.5);
        assert_relative_eq!(lin.lambda(at(25, 0.0)), 0.8);
        let cos = CosineRamp { start: 0.0, end: 1.0, steps: 4 };
        assert_relative_eq!(cos.lambda(at(0, 0.0)), 0.0);
        assert_relative_eq!(cos.lambda(at(1, 0.0)), 0.5 * (1.0 - (std::f64::consts::PI / 4.0).cos()));
        assert_relative_eq!(cos.lambda(at(2, 0.0)), 0.5, epsilon = 1e-12);
        assert_relative_eq!(cos.lambda(at(9, 0.0)), 1.0);
        let pw = PiecewiseByEpoch { values: vec![0.1, 0.5, 0.9] };
        assert_eq!(pw.lambda(at(0, 0.99)), 0.1);
        assert_eq!(pw.lambda(at(0, 1.0)), 0.5);
        assert_eq!(pw.lambda(at(0, 7.5)), 0.9);
    }

    #[test]
    fn config_parses_validates_and_rejects_typos() {
        assert_eq!(LambdaScheduleConfig::default().build().unwrap().lambda(at(3, 0.0)), 0.5);
        let cfg: LambdaScheduleConfig =
            serde_json::from_str(r#"{"kind": "piecewise_by_epoch", "values": [0.2, 0.7]}"#).unwrap();
        assert_eq!(cfg.build().unwrap().lambda(at(0, 1.2)), 0.7);
        let typo =
            serde_json::from_str::<LambdaScheduleConfig>(r#"{"kind": "linear", "start": 0.1, "end": 0.9, "step": 5}"#);
        assert!(typo.unwrap_err().to_string().contains("step"));
        let err = LambdaScheduleConfig::Constant { value: 1.5 }.build().unwrap_err();
        assert!(err.to_string().contains("lambda.value"));
        assert!(LambdaScheduleConfig::Linear { start: 0.0, end: 1.0, steps: 0 }.build().is_err());
        assert!(LambdaScheduleConfig::PiecewiseByEpoch { values: vec![] }.build().is_err());
        let err = LambdaScheduleConfig::PiecewiseByEpoch { values: vec![0.1, -0.1] }.build().unwrap_err();
        assert!(err.to_string().contains("lambda.values[1]"));
    }
}
