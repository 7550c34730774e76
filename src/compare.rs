//! Several finished runs of `train` side by side: each run's test accuracy before and after
//! training, its steps and time, and one plot of their curves (what the GPU session reports for
//! its real run, `examples/gpu.rs compare`).
//!
//! A run is read from its `metrics.jsonl` ([`bridge_report::metrics::METRICS_FILE`]): the `"eval"`
//! lines give the accuracy (`eval_accuracy`; the first one is "before" when the run had
//! `eval_on_start`, the last one "after"), the `"train"` lines the steps, the reward and the
//! seconds spent per step (`training_seconds` + `generation_seconds`, summed into the x axis of
//! the plot, so that runs on one wall-clock budget line up).

use bridge_core::{BridgeError, Result};
use bridge_report::plot::{LineChart, grid};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run's outcome.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunOutcome {
    /// The run's name (the method).
    pub name: String,
    /// Test accuracy of the first evaluation (before training when `eval_on_start` was set).
    pub accuracy_before: Option<f64>,
    /// Test accuracy of the last evaluation.
    pub accuracy_after: Option<f64>,
    /// Optimisation steps completed.
    pub steps: u64,
    /// Seconds of training and generation, summed over the steps.
    pub step_seconds: f64,
    /// `reward_mean` of the last step that has one.
    pub last_reward_mean: Option<f64>,
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// Reads `run_dir/metrics.jsonl` into a [`RunOutcome`] named `name`, with its curves: eval
/// accuracy and mean reward against cumulative step seconds.
/// `(x, y)` points of one run's curve.
type Curve = Vec<(f64, f64)>;

fn read_run(name: &str, run_dir: &Path) -> Result<(RunOutcome, Curve, Curve)> {
    let path = run_dir.join(bridge_report::metrics::METRICS_FILE);
    let records = bridge_report::metrics::read_metrics(&path)?;
    let mut seconds = 0.0;
    let (mut accuracy, mut reward) = (Vec::new(), Vec::new());
    let mut outcome = RunOutcome {
        name: name.to_owned(),
        accuracy_before: None,
        accuracy_after: None,
        steps: 0,
        step_seconds: 0.0,
        last_reward_mean: None,
    };
    for r in &records {
        match r.get("kind").and_then(Value::as_str) {
            Some("train") => {
                seconds +=
                    number(r, "training_seconds").unwrap_or(0.0) + number(r, "generation_seconds").unwrap_or(0.0);
                outcome.steps = outcome.steps.max(number(r, "step").unwrap_or(0.0) as u64);
                if let Some(x) = number(r, "reward_mean") {
                    reward.push((seconds, x));
                    outcome.last_reward_mean = Some(x);
                }
            }
            Some("eval") => {
                if let Some(a) = number(r, "eval_accuracy") {
                    outcome.accuracy_before.get_or_insert(a);
                    outcome.accuracy_after = Some(a);
                    accuracy.push((seconds, a));
                }
            }
            _ => {}
        }
    }
    outcome.step_seconds = seconds;
    if records.is_empty() {
        return Err(BridgeError::InvalidInput(format!("{}: no metrics", path.display())));
    }
    Ok((outcome, accuracy, reward))
}

/// Reads every `(name, run_dir)` and, when `png` is given, plots their test accuracy and mean
/// reward against step seconds (two panels, one line per run) into it. A run that cannot be read
/// fails the call, naming its file.
pub fn compare_runs(runs: &[(String, PathBuf)], png: Option<&Path>) -> Result<Vec<RunOutcome>> {
    if runs.is_empty() {
        return Err(BridgeError::InvalidInput("compare: no runs".into()));
    }
    let mut outcomes = Vec::new();
    let mut accuracy = LineChart::new("test accuracy").x_label("training + generation seconds");
    let mut reward = LineChart::new("mean reward").x_label("training + generation seconds");
    for (name, dir) in runs {
        let (outcome, acc, rew) = read_run(name, dir)?;
        accuracy = accuracy.series(name.clone(), acc);
        reward = reward.series(name.clone(), rew);
        outcomes.push(outcome);
    }
    if let Some(png) = png {
        grid(vec![accuracy.y_range(0.0, 1.0), reward], 2).save_png(png, 1120, 400)?;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, lines: &[Value]) {
        std::fs::create_dir_all(dir).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    }

    #[test]
    fn before_and_after_accuracy_steps_and_the_plot() {
        let tmp = std::env::temp_dir().join(format!("bridge-compare-{}", std::process::id()));
        let a = tmp.join("a");
        write(
            &a,
            &[
                serde_json::json!({"kind": "eval", "step": 0, "eval_accuracy": 0.25}),
                serde_json::json!({"kind": "train", "step": 1, "reward_mean": 0.1, "training_seconds": 2.0, "generation_seconds": 1.0}),
                serde_json::json!({"kind": "train", "step": 2, "reward_mean": 0.3, "training_seconds": 2.5}),
                serde_json::json!({"kind": "eval", "step": 2, "eval_accuracy": 0.5}),
            ],
        );
        let b = tmp.join("b");
        write(&b, &[serde_json::json!({"kind": "train", "step": 1, "sft_loss": 1.0, "training_seconds": 1.0})]);
        let png = tmp.join("curves.png");
        let out = compare_runs(&[("a".into(), a), ("b".into(), b)], Some(&png)).unwrap();
        assert_eq!(
            out[0],
            RunOutcome {
                name: "a".into(),
                accuracy_before: Some(0.25),
                accuracy_after: Some(0.5),
                steps: 2,
                step_seconds: 5.5,
                last_reward_mean: Some(0.3),
            }
        );
        assert_eq!((out[1].accuracy_before, out[1].steps, out[1].step_seconds), (None, 1, 1.0));
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let missing = compare_runs(&[("c".into(), tmp.join("c"))], None).unwrap_err();
        assert!(missing.to_string().contains("metrics.jsonl"), "{missing}");
        std::fs::remove_dir_all(&tmp).ok();
    }
}
