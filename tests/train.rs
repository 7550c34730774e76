//! The TOML-driven training pipeline end to end on a tiny random model and generated data: the run
//! directory holds the resolved config, metrics, checkpoints, the plot and the final model; a
//! second invocation refuses to overwrite the run, and `--resume` continues it to the same result
//! as an uninterrupted run.

mod common;

use bridge::eval::metrics::read_metrics;
use bridge::train::{TrainConfig, parse_config, train};
use common::{model_and_data, setup};
use std::path::{Path, PathBuf};

fn config(dir: &Path, data: &Path, run_dir: &Path, steps: u64) -> TrainConfig {
    let text = format!(
        r#"
        [run]
        steps = {steps}
        run_dir = "{run}"
        eval_every = 2
        checkpoint_every = 1
        [lora]
        rank = 2
        alpha = 4.0
        [optim.theta]
        lr = 0.001
        [sft]
        batch_size = 2
        [rl]
        prompts_per_step = 2
        sampling = {{ n = 2, max_new_tokens = 8 }}
        {rest}
        "#,
        run = run_dir.display(),
        rest = model_and_data(dir, data),
    );
    parse_config(&text, Path::new("test.toml")).unwrap()
}

#[test]
fn train_writes_a_complete_run_directory_and_resumes_exactly() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-pipeline");
    let data = setup(&dir);

    // 4 steps straight.
    let straight = dir.join("straight");
    let summary = train(&config(&dir, &data, &straight, 4), false).unwrap();
    assert_eq!(summary.steps, 4);
    assert!(summary.final_eval.contains_key("eval_accuracy"));
    for f in ["config.resolved.toml", "metrics.jsonl", "curves.png", "final/config.json", "final/model.safetensors"] {
        assert!(straight.join(f).exists(), "{f}");
    }
    assert!(straight.join("final/adapter/adapter_model.safetensors").exists());
    let resolved = std::fs::read_to_string(straight.join("config.resolved.toml")).unwrap();
    assert_eq!(parse_config(&resolved, Path::new("resolved")).unwrap(), config(&dir, &data, &straight, 4));
    let lines = read_metrics(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.iter().filter(|l| l["kind"] == "train").count(), 4);
    assert_eq!(lines.iter().filter(|l| l["kind"] == "eval").count(), 2);
    assert!(lines.iter().any(|l| l.get("cooperative_gain").is_some()), "BRIDGE logs its gain");
    // A second run in the same directory is refused rather than overwriting it.
    assert!(train(&config(&dir, &data, &straight, 4), false).unwrap_err().to_string().contains("--resume"));

    // 2 steps, then resume to 4.
    let resumed = dir.join("resumed");
    train(&config(&dir, &data, &resumed, 2), false).unwrap();
    train(&config(&dir, &data, &resumed, 4), true).unwrap();
    let strip = |path: PathBuf| -> Vec<serde_json::Value> {
        read_metrics(path)
            .unwrap()
            .into_iter()
            .map(|mut l| {
                l.as_object_mut().unwrap().retain(|k, _| !k.ends_with("seconds"));
                l
            })
            .collect()
    };
    let a = strip(straight.join("metrics.jsonl"));
    let b = strip(resumed.join("metrics.jsonl"));
    // Both evaluate at step 2 (the first invocation's last step, eval_every = 2) and step 4.
    assert_eq!(a, b, "identical metrics lines");
    let weights = |d: &Path| std::fs::read(d.join("final/model.safetensors")).unwrap();
    assert_eq!(weights(&straight), weights(&resumed), "identical final weights");
}
