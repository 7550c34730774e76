//! What a quickstart run records: evaluation points, per-method and per-seed runs, and the
//! clocks they are measured with.

use super::config::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One evaluation of one method: after `step` steps and `seconds` of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps done.
    pub step: u64,
    /// Training wall time so far (evaluation excluded), seconds.
    pub seconds: f64,
    /// Training CPU time so far (all threads, evaluation excluded), seconds, where the platform
    /// tells ([`process_cpu_seconds`]): a cross-check of `seconds` that other load on the machine
    /// does not inflate.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Overall accuracy (on the test split, or the validation split in a sweep).
    pub accuracy: f64,
    /// Accuracy of level 1, 2, ….
    pub levels: Vec<f64>,
}

impl CurvePoint {
    /// Training CPU time so far, or the wall time where the platform does not report CPU time:
    /// the clock of "time to reach" comparisons, because wall times on a shared machine depend
    /// on what else runs (docs/quickstart.md, "Clocks").
    pub fn cpu_time(&self) -> f64 {
        self.cpu_seconds.unwrap_or(self.seconds)
    }
}

/// One method's run on one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// The method.
    pub method: Method,
    /// Its hyper-parameters (`None` for Base).
    #[serde(default)]
    pub hyper: Option<Hyper>,
    /// Evaluations, the first one the base model at step 0.
    pub curve: Vec<CurvePoint>,
    /// Training wall time, seconds (evaluation excluded).
    pub train_seconds: f64,
    /// Training CPU time, seconds (all threads, evaluation excluded; `None` where unknown).
    #[serde(default)]
    pub train_cpu_seconds: Option<f64>,
    /// Time spent evaluating, seconds.
    pub eval_seconds: f64,
}

impl MethodRun {
    /// The last evaluation.
    pub fn last(&self) -> Option<&CurvePoint> {
        self.curve.last()
    }

    /// The training CPU time ([`CurvePoint::cpu_time`]) at which the accuracy first reached
    /// `target` (`None`: never).
    pub fn time_to_reach(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.accuracy >= target - 1e-12).map(CurvePoint::cpu_time)
    }

    /// The evaluation after exactly `step` steps.
    pub fn at_step(&self, step: u64) -> Option<&CurvePoint> {
        self.curve.iter().find(|p| p.step == step)
    }
}

/// Everything one seed produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The cached base model's directory.
    pub base_dir: PathBuf,
    /// Whether the base model was loaded from the cache (not pre-trained by this run).
    pub base_cached: bool,
    /// Pre-training wall time, seconds (0 when cached).
    pub pretrain_seconds: f64,
    /// The runs, in the order of [`QuickstartConfig::methods`].
    pub methods: Vec<MethodRun>,
}

impl SeedRun {
    /// The run of `method`, if it was run.
    pub fn method(&self, method: Method) -> Option<&MethodRun> {
        self.methods.iter().find(|m| m.method == method)
    }

    /// The final overall accuracy of `method`.
    pub fn final_accuracy(&self, method: Method) -> Option<f64> {
        self.method(method)?.last().map(|p| p.accuracy)
    }
}

/// The commit this crate was built from (`+dirty` when the tree had uncommitted changes to
/// tracked files; `unknown` outside a git checkout), recorded at build time by `build.rs`.
pub fn source_commit() -> String {
    env!("BRIDGE_BUILD_COMMIT").to_owned()
}

/// CPU time of this process so far (user + system, every thread), seconds: `/proc/self/stat`
/// fields 14–15 in clock ticks of 1/100 s (Linux's `USER_HZ`); `None` on other platforms.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}
