//! The TOML-driven training pipeline end to end on a tiny random model and generated data: the run
//! directory holds the resolved config, metrics, checkpoints, the plot and the final model; a
//! second invocation refuses to overwrite the run, and `--resume` continues it to the same result
//! as an uninterrupted run. Every input is checked before the first step: a bad one is an error
//! naming the field, file or line, and leaves the run directory untouched.

mod common;

use bridge::report::metrics::read_metrics;
use bridge::train::{AlgorithmSection, RunMode, TrainConfig, parse_config, train};
use common::{model_and_data, setup};
use std::collections::BTreeMap;
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
    let summary = train(&config(&dir, &data, &straight, 4), RunMode::Fresh).unwrap();
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
    assert!(train(&config(&dir, &data, &straight, 4), RunMode::Fresh).unwrap_err().to_string().contains("--resume"));

    // 2 steps, then resume to 4.
    let resumed = dir.join("resumed");
    train(&config(&dir, &data, &resumed, 2), RunMode::Fresh).unwrap();
    train(&config(&dir, &data, &resumed, 4), RunMode::Resume).unwrap();
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

/// Every file under `dir` with its bytes (`None` when `dir` does not exist).
fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    dir.exists().then(|| {
        let mut out = BTreeMap::new();
        walk(dir, &mut out);
        out
    })
}

/// `cfg` fails with an error containing every one of `names`, and leaves its run directory as
/// it was.
fn refused(cfg: &TrainConfig, mode: RunMode, names: &[&str]) {
    let before = snapshot(&cfg.run.run_dir);
    let e = train(cfg, mode).err().unwrap_or_else(|| panic!("expected an error naming {names:?}")).to_string();
    for n in names {
        assert!(e.contains(n), "the error does not name {n}: {e}");
    }
    assert!(!e.contains("(\"") && !e.contains("Io("), "a Debug form: {e}");
    assert_eq!(snapshot(&cfg.run.run_dir), before, "the run directory changed: {e}");
}

fn edit(cfg: &TrainConfig, f: impl FnOnce(&mut TrainConfig)) -> TrainConfig {
    let mut c = cfg.clone();
    f(&mut c);
    c
}

/// Bad data, templates, lengths and settings are errors before step 1 that name the field, file
/// or line; the run directory is not created.
#[test]
fn bad_inputs_fail_before_training() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-checks");
    let data = setup(&dir);
    let run_dir = dir.join("run");
    let good = config(&dir, &data, &run_dir, 2);
    let write = |name: &str, text: &str| {
        let p = data.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let test_lines = std::fs::read_to_string(data.join("test.jsonl")).unwrap();
    let first = test_lines.lines().next().unwrap();
    let sft_lines = std::fs::read_to_string(data.join("sft.jsonl")).unwrap();
    let rl_lines = std::fs::read_to_string(data.join("rl.jsonl")).unwrap();
    let bad_char = |line: &str| {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["question"] = format!("\u{3a9}{}", v["question"].as_str().unwrap()).into();
        v.to_string()
    };

    // An empty evaluation file.
    let empty = write("empty.jsonl", "");
    refused(&edit(&good, |c| c.data.eval[0].path = empty.clone()), RunMode::Fresh, &["empty.jsonl", "no record"]);
    // A character of an evaluation question outside the codec's alphabet (record 2).
    let eval = write("eval-bad.jsonl", &format!("{first}\n{}\n", bad_char(first)));
    refused(
        &edit(&good, |c| c.data.eval[0].path = eval.clone()),
        RunMode::Fresh,
        &["eval-bad.jsonl:2", "not in the alphabet"],
    );
    // An evaluation template with such a character.
    refused(
        &edit(&good, |c| c.eval.prompt = bridge::eval::runner::PromptTemplate::plain("Q\u{3a9} {question}\n")),
        RunMode::Fresh,
        &["test.jsonl:1", "not in the alphabet"],
    );
    // SFT and RL records that do not encode name the file, the line and the field.
    let corrupt = |name: &str, lines: &str, index: usize| {
        let mut lines: Vec<String> = lines.lines().map(str::to_owned).collect();
        lines[index] = bad_char(&lines[index]);
        write(name, &lines.join("\n"))
    };
    let sft = corrupt("sft-bad.jsonl", &sft_lines, 2);
    refused(
        &edit(&good, |c| c.data.sft.as_mut().unwrap().path = sft.clone()),
        RunMode::Fresh,
        &["sft-bad.jsonl:3", "field `question`"],
    );
    let rl = corrupt("rl-bad.jsonl", &rl_lines, 1);
    refused(
        &edit(&good, |c| c.data.rl.as_mut().unwrap().path = rl.clone()),
        RunMode::Fresh,
        &["rl-bad.jsonl:2", "field `question`"],
    );
    // GRPO groups of one, lengths beyond the context, and bad run settings.
    refused(&edit(&good, |c| c.rl.sampling.n = 1), RunMode::Fresh, &["rl.sampling.n"]);
    refused(&edit(&good, |c| c.rl.sampling.top_p = Some(2.0)), RunMode::Fresh, &["rl.sampling.top_p"]);
    refused(
        &edit(&good, |c| c.rl.sampling.max_new_tokens = 40_000),
        RunMode::Fresh,
        &["rl.sampling.max_new_tokens", "context length (32768"],
    );
    refused(&edit(&good, |c| c.eval.max_new_tokens = 40_000), RunMode::Fresh, &["eval.max_new_tokens"]);
    refused(&edit(&good, |c| c.run.steps = 0), RunMode::Fresh, &["run.steps"]);
    refused(&edit(&good, |c| c.run.keep_checkpoints = 0), RunMode::Fresh, &["run.keep_checkpoints"]);
    refused(
        &edit(&good, |c| {
            c.algorithm = AlgorithmSection::named("mixing");
            c.algorithm.options.insert("mu".into(), f64::NAN.into());
        }),
        RunMode::Fresh,
        &["algorithm.mu"],
    );
    let file = write("not-a-dir", "");
    refused(&edit(&good, |c| c.run.run_dir = file.join("run")), RunMode::Fresh, &["run.run_dir", "is a file"]);
    assert!(!run_dir.exists(), "no check created the run directory");

    // Fewer RL prompts than a step takes is a warning, and the run goes on.
    let one = write("rl-one.jsonl", rl_lines.lines().next().unwrap());
    let summary = train(&edit(&good, |c| c.data.rl.as_mut().unwrap().path = one.clone()), RunMode::Fresh).unwrap();
    assert_eq!(summary.steps, 2);
    assert!(summary.warnings.iter().any(|w| w.contains("rl.prompts_per_step")), "{:?}", summary.warnings);
    // So is a data set the algorithm does not read.
    let rl_only = edit(&good, |c| {
        c.algorithm = AlgorithmSection::named("rl_zero");
        c.run.run_dir = dir.join("run-rl-zero");
        c.run.steps = 1;
    });
    let summary = train(&rl_only, RunMode::Fresh).unwrap();
    assert!(summary.warnings.iter().any(|w| w.starts_with("data.sft is set")), "{:?}", summary.warnings);
}

/// `--resume` needs a checkpoint at or before `run.steps`; a directory left by another run is
/// neither reused nor overwritten unless asked.
#[test]
fn run_directory_rules() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-run-dir");
    let data = setup(&dir);
    let cfg = |run: &Path, steps: u64| config(&dir, &data, run, steps);

    // Resuming a directory that does not exist, or that holds no checkpoint.
    let missing = dir.join("missing");
    refused(&cfg(&missing, 2), RunMode::Resume, &["run.run_dir", "does not exist"]);
    assert!(!missing.exists());
    let failed = dir.join("failed");
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(failed.join("metrics.jsonl"), "{\"kind\": \"train\", \"step\": 1}\n").unwrap();
    refused(&cfg(&failed, 2), RunMode::Resume, &["run.run_dir", "holds no checkpoint"]);
    // A fresh run does not reuse it (its metrics.jsonl stays as it was) …
    refused(&cfg(&failed, 2), RunMode::Fresh, &["already holds a run", "metrics.jsonl", "--overwrite"]);
    // … unless told to replace it.
    let summary = train(&cfg(&failed, 2), RunMode::Overwrite).unwrap();
    assert_eq!(summary.steps, 2);
    let lines = read_metrics(failed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.iter().filter(|l| l["kind"] == "train").count(), 2);
    assert!(lines.iter().all(|l| l.get("sft_loss").is_some() || l["kind"] == "eval"), "the old line is gone");

    // Resuming to fewer steps than the checkpoint holds is an error; to as many finishes the run.
    refused(&cfg(&failed, 1), RunMode::Resume, &["run.steps", "--steps 2"]);
    let summary = train(&cfg(&failed, 3), RunMode::Resume).unwrap();
    assert_eq!(summary.steps, 3);
}

/// `run.devices = 2` (two flex ranks, host gradient exchange) trains like one device (the same
/// losses and rewards at every step, up to f32 summation order), writes one metrics line per step,
/// and resumes exactly.
#[test]
fn two_ranks_train_like_one_device_and_resume_exactly() {
    use bridge::train::DevicesSetting;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-data-parallel");
    let data = setup(&dir);
    let two = |run_dir: &Path, steps: u64| {
        edit(&config(&dir, &data, run_dir, steps), |c| c.run.devices = Some(DevicesSetting::Count(2)))
    };
    let one_dir = dir.join("one");
    train(&config(&dir, &data, &one_dir, 4), RunMode::Fresh).unwrap();
    let two_dir = dir.join("two");
    train(&two(&two_dir, 4), RunMode::Fresh).unwrap();
    let train_lines = |d: &Path| -> Vec<serde_json::Value> {
        read_metrics(d.join("metrics.jsonl")).unwrap().into_iter().filter(|l| l["kind"] == "train").collect()
    };
    let (one, many) = (train_lines(&one_dir), train_lines(&two_dir));
    assert_eq!(one.len(), 4);
    assert_eq!(many.len(), 4, "one line per step, written once");
    for (a, b) in one.iter().zip(&many) {
        for key in ["sft_loss", "rl_loss", "aux_rl_loss", "reward_mean", "grad_norm_theta", "grad_norm_adapter"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "step {}: {key} {x} (one device) vs {y} (two)",
                a["step"]
            );
        }
        assert_eq!(a["tokens"], b["tokens"], "loss tokens summed over the ranks");
    }
    let evals = |d: &Path| -> Vec<serde_json::Value> {
        read_metrics(d.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|l| l["kind"] == "eval")
            .map(|mut l| {
                l.as_object_mut().unwrap().retain(|k, _| !k.ends_with("seconds"));
                l
            })
            .collect()
    };
    assert_eq!(evals(&one_dir), evals(&two_dir), "rank 0 evaluates the same model");

    // Two ranks, 2 steps, then resume to 4: the same run.
    let resumed = dir.join("two-resumed");
    train(&two(&resumed, 2), RunMode::Fresh).unwrap();
    train(&two(&resumed, 4), RunMode::Resume).unwrap();
    let strip = |v: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.into_iter()
            .map(|mut l| {
                l.as_object_mut().unwrap().retain(|k, _| !k.ends_with("seconds"));
                l
            })
            .collect()
    };
    assert_eq!(strip(train_lines(&two_dir)), strip(train_lines(&resumed)));
    let weights = |d: &Path| std::fs::read(d.join("final/model.safetensors")).unwrap();
    assert_eq!(weights(&two_dir), weights(&resumed), "identical final weights");
}

/// Data-parallel settings that cannot work are refused before anything is written.
#[test]
fn bad_data_parallel_settings_fail_before_training() {
    use bridge::train::{DevicesSetting, GradientSyncChoice};
    use bridge_core::DeviceChoice;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-data-parallel-checks");
    let data = setup(&dir);
    let good = config(&dir, &data, &dir.join("run"), 2);
    let devices = |d: DevicesSetting| edit(&good, |c| c.run.devices = Some(d));
    // sft.batch_size = 2 and rl.prompts_per_step = 2 cannot feed three ranks.
    refused(&devices(DevicesSetting::Count(3)), RunMode::Fresh, &["sft.batch_size", "3 ranks of run.devices"]);
    refused(
        &edit(&devices(DevicesSetting::Count(3)), |c| c.sft.batch_size = 3),
        RunMode::Fresh,
        &["rl.prompts_per_step", "3 ranks of run.devices"],
    );
    refused(&devices(DevicesSetting::Count(0)), RunMode::Fresh, &["run.devices", "at least one"]);
    refused(
        &devices(DevicesSetting::List(vec![DeviceChoice::Cuda(0), DeviceChoice::Cuda(0)])),
        RunMode::Fresh,
        &["run.devices", "twice"],
    );
    refused(
        &devices(DevicesSetting::List(vec![DeviceChoice::Flex, DeviceChoice::Cuda(1)])),
        RunMode::Fresh,
        &["run.devices", "mixes"],
    );
    refused(&edit(&good, |c| c.run.gradient_sync = GradientSyncChoice::Nccl), RunMode::Fresh, &["run.gradient_sync"]);
    // The TOML spellings.
    let parsed = |devices: &str| {
        let base = toml::to_string(&good).unwrap();
        let with = base.replacen("[run]\n", &format!("[run]\ndevices = {devices}\n"), 1);
        parse_config(&with, Path::new("dp.toml")).map(|c| c.run.devices)
    };
    assert_eq!(parsed("2").unwrap(), Some(DevicesSetting::Count(2)));
    assert_eq!(
        parsed(r#"["cuda:0", "cuda:1"]"#).unwrap(),
        Some(DevicesSetting::List(vec![DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]))
    );
    assert!(parsed(r#"["tpu:0"]"#).unwrap_err().to_string().contains("devices"));
}
