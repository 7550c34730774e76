//! The flags of `examples/gpu.rs`: `check`, `bench` and `train` subcommands.

use crate::common::{List, Modes, modes, positive, sizes};
use bridge::bench::{GenerationBenchConfig, TrainBenchConfig};
use bridge::train::{RunMode, TrainConfig, load_config};
use bridge_core::{DeviceChoice, TokenSelection};
use bridge_models::WeightDType;
use bridge_models::generate::DecodeEngine;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Everything a GPU session runs, in one binary: a backend check, the throughput benchmarks,
/// and a training run from a TOML config.
#[derive(Parser, Debug)]
#[command(name = "gpu", allow_negative_numbers = true)]
pub struct Args {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The same computations on flex and on the device, compared (exit 1 when out of tolerance).
    #[command(allow_negative_numbers = true)]
    Check {
        /// The device compared against flex.
        #[arg(long, value_name = "DEVICE", default_value = "cuda")]
        device: DeviceChoice,
    },
    /// A training step and KV-cache generation on random weights, as one JSON object.
    #[command(allow_negative_numbers = true)]
    Bench(BenchArgs),
    /// `examples/train.rs` (docs/config.md).
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
}

/// `gpu bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The device.
    #[arg(long, value_name = "DEVICE", default_value = "cuda")]
    pub device: DeviceChoice,
    /// The weights' dtype: f32, bf16 or f16.
    #[arg(long, value_name = "DTYPE", default_value = "bf16")]
    pub dtype: WeightDType,
    /// What to measure, comma-separated: train and/or generate.
    #[arg(long, value_name = "LIST", default_value = "train,generate", value_parser = what)]
    pub what: List<String>,
    /// The model shape of the training step (tiny, smollm2-135m, qwen2.5-0.5b).
    #[arg(long, value_name = "SHAPE", default_value = "qwen2.5-0.5b", value_parser = shape)]
    pub train_shape: String,
    /// Sequences per training step.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = positive)]
    pub train_batch: usize,
    /// Tokens per training sequence.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive)]
    pub train_seq: usize,
    /// Timed training steps.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = positive)]
    pub train_steps: usize,
    /// Untimed training steps first.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub train_warmup: usize,
    /// The model shapes of the generation benchmark, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "qwen2.5-0.5b,smollm2-135m", value_parser = shapes)]
    pub gen_shapes: List<String>,
    /// Generation batch sizes, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "64", value_parser = sizes)]
    pub gen_batch: List<usize>,
    /// Tokens per random prompt.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = positive)]
    pub prompt_len: usize,
    /// New tokens per completion.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = positive)]
    pub new_tokens: usize,
    /// Generation modes, comma-separated: greedy and/or sample.
    #[arg(long, value_name = "LIST", default_value = "greedy,sample", value_parser = modes)]
    pub modes: Modes,
    /// Timed generation runs (the best is reported).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = positive)]
    pub repeats: usize,
    /// Where tokens are chosen: auto, host or device.
    #[arg(long, value_name = "WHERE", default_value = "auto", value_parser = selection)]
    pub selection: TokenSelection,
}

impl BenchArgs {
    /// The training-step benchmark.
    pub fn train(&self) -> TrainBenchConfig {
        TrainBenchConfig {
            batch: self.train_batch,
            seq_len: self.train_seq,
            steps: self.train_steps,
            warmup: self.train_warmup,
            lr: 1e-5,
        }
    }

    /// The generation benchmark.
    pub fn generation(&self) -> GenerationBenchConfig {
        GenerationBenchConfig {
            batches: self.gen_batch.0.clone(),
            prompt_len: self.prompt_len,
            new_tokens: self.new_tokens,
            modes: self.modes.0.clone(),
            repeats: self.repeats,
            selection: self.selection,
            engine: DecodeEngine::Auto,
        }
    }
}

/// `gpu train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The run configuration.
    #[arg(long, value_name = "FILE.toml")]
    pub config: PathBuf,
    /// Total optimisation steps (overrides `run.steps`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Stop after the step that crosses S seconds (overrides `run.time_limit_s`).
    #[arg(long, value_name = "S", value_parser = seconds)]
    pub time_limit_s: Option<f64>,
    /// The device (overrides `run.device`).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceChoice>,
    /// The run directory (overrides `run.run_dir`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Replace a previous run in the run directory instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
}

impl TrainArgs {
    /// The config file with the flags applied, and how the run directory is treated.
    pub fn run(&self) -> bridge_core::Result<(TrainConfig, RunMode)> {
        let mut cfg = load_config(&self.config)?;
        if let Some(n) = self.steps {
            cfg.run.steps = n;
        }
        if self.time_limit_s.is_some() {
            cfg.run.time_limit_s = self.time_limit_s;
        }
        if let Some(d) = self.device {
            cfg.run.device = d;
        }
        if let Some(d) = &self.run_dir {
            cfg.run.run_dir = d.clone();
        }
        Ok((cfg, if self.overwrite { RunMode::Overwrite } else { RunMode::Fresh }))
    }
}

fn what(s: &str) -> Result<List<String>, String> {
    let list: List<String> = s.parse()?;
    match list.0.iter().find(|w| *w != "train" && *w != "generate") {
        Some(w) => Err(format!("`{w}` (expected train and/or generate)")),
        None if list.0.is_empty() => Err("expected train and/or generate".into()),
        None => Ok(list),
    }
}

fn shape(s: &str) -> Result<String, String> {
    bridge::bench::shape_config(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

fn shapes(s: &str) -> Result<List<String>, String> {
    let list: List<String> = s.parse()?;
    for name in &list.0 {
        shape(name)?;
    }
    Ok(list)
}

fn selection(s: &str) -> Result<TokenSelection, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}` (expected auto, host or device)"))
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        Ok(t) => Err(format!("must be a positive number of seconds, got {t}")),
        Err(e) => Err(e.to_string()),
    }
}
