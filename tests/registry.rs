//! A crate of its own adds an algorithm to the registry and runs it from a TOML file, through the
//! public API only (as a crate outside the workspace would): its own `[algorithm]` table with
//! unknown fields refused, validation before training, checkpoints and `--resume`.

mod common;

use bridge::bilevel::algorithm::{next_rollouts, next_sft_batch, record_rollouts, rl_batch, rl_loss};
use bridge::bilevel::{Metrics, Needs, StepContext, TrainState, TrainingAlgorithm};
use bridge::core::{BridgeError, CausalLm, FlatGradients, Result, error::ensure_finite};
use bridge::models::Decoder;
use bridge::registry::{AlgorithmConfig, AlgorithmRegistry, DataNeeds, RunContext};
use bridge::report::metrics::read_metrics;
use bridge::train::{RunMode, load_config, load_config_with, train_with};
use common::{model_and_data, setup};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// GRPO on θ with an SFT step every `every` steps instead of an RL step.
struct SftEvery {
    every: u64,
}

impl<L: CausalLm> TrainingAlgorithm<L> for SftEvery {
    fn name(&self) -> &str {
        "sft_every"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let mut m = Metrics::new();
        let loss = if state.step.is_multiple_of(self.every) {
            let batch = next_sft_batch(ctx, state)?;
            let out = bridge::sft::sft_loss(ctx.lm, &state.theta, None, &batch)?;
            m.insert("sft_loss".into(), ensure_finite("sft_loss", out.value, state.step)?);
            Some(out.loss)
        } else {
            let rollouts = next_rollouts(ctx, &mut state.rl_cursor, &mut state.rollout_rng, &state.theta, None)?;
            record_rollouts(&mut m, "", &rollouts);
            let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
            rl_loss(ctx, &state.theta, None, &batch, &mut m, "", state.step)?
        };
        if let Some(loss) = loss {
            let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
            let (g, _) = state.optim.theta.clip(&g, state.step)?;
            state.theta = state.optim.theta.apply(state.theta.clone(), &g);
        }
        Ok(m)
    }
}

/// Its `[algorithm]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SftEveryOptions {
    every: u64,
}

impl AlgorithmConfig<Decoder> for SftEveryOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn validate(&self, _: &RunContext<'_>) -> Result<()> {
        if self.every == 0 {
            return Err(BridgeError::config("algorithm.every", "must be ≥ 1"));
        }
        Ok(())
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<Decoder>> {
        Box::new(SftEvery { every: self.every })
    }
}

fn write_config(dir: &Path, data: &Path, run_dir: &Path, algorithm: &str, steps: u64) -> PathBuf {
    let text = format!(
        "[run]\nsteps = {steps}\nrun_dir = \"{}\"\ncheckpoint_every = 1\nsave_final = false\n\
         [rl]\nprompts_per_step = 2\nsampling = {{ n = 2, max_new_tokens = 6 }}\n\
         [algorithm]\n{algorithm}\n{}",
        run_dir.display(),
        model_and_data(dir, data)
    );
    let path = dir.join(format!("{}.toml", run_dir.file_name().unwrap().to_string_lossy()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_external_algorithm_registers_and_runs_from_a_toml_file() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-external");
    let data = setup(&dir);
    let mut registry = AlgorithmRegistry::<Decoder>::builtin();
    registry.register::<SftEveryOptions>("sft_every").unwrap();
    assert!(registry.names().any(|n| n == "sft_every") && registry.names().any(|n| n == "bridge"));

    let path = write_config(&dir, &data, &dir.join("run"), "name = \"sft_every\"\nevery = 2", 4);
    // The workspace's own registry does not know it; the extended one does.
    let e = load_config(&path).unwrap_err().to_string();
    assert!(e.contains("unknown algorithm `sft_every`"), "{e}");
    let cfg = load_config_with(&path, &registry).unwrap();
    let summary = train_with(&cfg, RunMode::Fresh, &registry).unwrap();
    assert_eq!(summary.steps, 4);
    let lines = read_metrics(dir.join("run/metrics.jsonl")).unwrap();
    let train: Vec<_> = lines.iter().filter(|l| l["kind"] == "train").collect();
    assert_eq!(train.len(), 4);
    for (i, l) in train.iter().enumerate() {
        assert_eq!(l.get("sft_loss").is_some(), i % 2 == 0, "step {i}: SFT every second step");
        assert_eq!(l.get("reward_mean").is_some(), i % 2 == 1, "step {i}: GRPO otherwise");
    }
    let resolved = std::fs::read_to_string(dir.join("run/config.resolved.toml")).unwrap();
    assert!(resolved.contains("name = \"sft_every\"") && resolved.contains("every = 2"), "{resolved}");

    // Its table refuses unknown fields by name, and its checks run before training.
    let typo = write_config(&dir, &data, &dir.join("typo"), "name = \"sft_every\"\nevry = 2", 4);
    let e = load_config_with(&typo, &registry).unwrap_err().to_string();
    assert!(e.contains("evry"), "{e}");
    let zero = write_config(&dir, &data, &dir.join("zero"), "name = \"sft_every\"\nevery = 0", 4);
    assert!(load_config_with(&zero, &registry).unwrap_err().to_string().contains("algorithm.every"));

    // Resume: 2 steps, then on to 4, trains as 4 straight (the first invocation also evaluates
    // after its last step).
    let part = write_config(&dir, &data, &dir.join("part"), "name = \"sft_every\"\nevery = 2", 2);
    train_with(&load_config_with(&part, &registry).unwrap(), RunMode::Fresh, &registry).unwrap();
    let rest = write_config(&dir, &data, &dir.join("part"), "name = \"sft_every\"\nevery = 2", 4);
    train_with(&load_config_with(&rest, &registry).unwrap(), RunMode::Resume, &registry).unwrap();
    let strip = |p: PathBuf| -> Vec<serde_json::Value> {
        read_metrics(p)
            .unwrap()
            .into_iter()
            .filter(|l| l["kind"] == "train")
            .map(|mut l| {
                l.as_object_mut().unwrap().retain(|k, _| !k.ends_with("seconds"));
                l
            })
            .collect()
    };
    assert_eq!(strip(dir.join("run/metrics.jsonl")), strip(dir.join("part/metrics.jsonl")));
    // A run directory written by another algorithm is not resumed by this one.
    let other = write_config(&dir, &data, &dir.join("part"), "name = \"rl_zero\"", 6);
    let e =
        train_with(&load_config_with(&other, &registry).unwrap(), RunMode::Resume, &registry).unwrap_err().to_string();
    assert!(e.contains("`sft_every`") && e.contains("`rl_zero`"), "{e}");
}

/// LUFFY needs a demonstration with every RL prompt: `rl.jsonl` rows without a worked solution
/// are refused before any step, naming the row.
#[test]
fn luffy_refuses_prompts_without_demonstrations_before_training() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-luffy");
    let data = setup(&dir);
    // rl.jsonl rows are GSM8K rows: their `answer` ("#### N") is the demonstration. A conversation
    // without a final assistant message has none.
    let path = write_config(&dir, &data, &dir.join("luffy"), "name = \"luffy\"", 1);
    let cfg = load_config(&path).unwrap();
    train_with(&cfg, RunMode::Fresh, &AlgorithmRegistry::builtin()).unwrap();
    let mut bare = cfg.clone();
    bare.data.rl.as_mut().unwrap().path = data.join("chat.jsonl");
    std::fs::write(
        data.join("chat.jsonl"),
        "{\"messages\": [{\"role\": \"user\", \"content\": \"1+1=\"}], \"answer\": \"2\"}\n",
    )
    .unwrap();
    bare.data.rl.as_mut().unwrap().format = bridge::core::DataFormat::Messages;
    bare.run.run_dir = dir.join("bare");
    let e = train_with(&bare, RunMode::Fresh, &AlgorithmRegistry::builtin()).unwrap_err().to_string();
    assert!(e.contains("data.rl") && e.contains("chat.jsonl:1"), "{e}");
    assert!(!dir.join("bare/metrics.jsonl").exists(), "refused before training");
}
