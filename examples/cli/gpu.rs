//! The flags of `examples/gpu.rs`: `check`, `dp`, `bench`, `train` and `compare` subcommands.

use crate::common::{List, Modes, modes, positive, sizes};
use bridge::bench::{GenerationBenchConfig, TrainBenchConfig};
use bridge::train::{RunMode, TrainConfig, override_config, parse_config};
use bridge_core::{BridgeError, DeviceChoice, TokenSelection};
use bridge_models::generate::DecodeEngine;
use bridge_models::{Precision, WeightDType};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Everything a GPU session runs, in one binary: a backend check, the throughput benchmarks,
/// a training run from a TOML config, and training runs compared.
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
    /// Data parallelism on one device: BRIDGE steps on one rank, on one rank through NCCL (CUDA)
    /// and on two host-exchange ranks, compared and timed (exit 1 when out of tolerance).
    Dp {
        /// The device.
        #[arg(long, value_name = "DEVICE", default_value = "cuda")]
        device: DeviceChoice,
        /// BRIDGE steps per run.
        #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive)]
        steps: usize,
    },
    /// A training step and KV-cache generation on random weights, as one JSON object.
    #[command(allow_negative_numbers = true)]
    Bench(BenchArgs),
    /// `examples/train.rs` (docs/config.md).
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
    /// Finished runs side by side: test accuracy before and after, one JSON object (and a plot).
    Compare(CompareArgs),
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
    /// The training step's precision: f32, bf16 or mixed_bf16 (f32 master weights, bf16
    /// compute); by default `--dtype`'s (f16 weights train in pure f16).
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<Precision>,
    /// What to measure, comma-separated: train, generate and/or launches (kernel launches per
    /// decode step).
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
    /// The decoding engines the generation benchmark runs, comma-separated: auto, tensor, host,
    /// graph.
    #[arg(long, value_name = "LIST", default_value = "auto", value_parser = engines)]
    pub engines: List<DecodeEngine>,
    /// Whether the graph engine captures its step and replays it (`false`: the same steps run
    /// eagerly).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub capture: bool,
    /// Kernel launches per decode step: the difference between generations of SHORT and LONG new
    /// tokens, divided by LONG − SHORT.
    #[arg(long, value_name = "SHORT,LONG", default_value = "4,12", value_parser = launches)]
    pub launches: (usize, usize),
    /// Prompts per generation of the launch count.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = positive)]
    pub launch_batch: usize,
    /// Also write the results so far to FILE after every measurement, so that a run cut short by
    /// a timeout leaves what it measured.
    #[arg(long, value_name = "FILE")]
    pub partial: Option<PathBuf>,
}

impl BenchArgs {
    /// The training step's precision: `--precision`, else `--dtype`'s; `None` for f16 weights
    /// (no [`Precision`] of their own: the step trains pure f16 weights).
    pub fn train_precision(&self) -> Option<Precision> {
        self.precision.or(match self.dtype {
            WeightDType::F32 => Some(Precision::F32),
            WeightDType::Bf16 => Some(Precision::Bf16),
            _ => None,
        })
    }

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
            capture: self.capture,
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
    /// The engine rollouts and evaluation decode with (overrides `model.decode_engine`): auto,
    /// tensor, host or graph.
    #[arg(long, value_name = "ENGINE")]
    pub decode_engine: Option<DecodeEngine>,
    /// Write VALUE (a TOML value, or else a string) at the dotted key over the config file before
    /// it is parsed, e.g. `--set rl.sampling.n=2`; repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = key_value)]
    pub sets: Vec<(String, String)>,
}

impl TrainArgs {
    /// The config file with the flags applied, and how the run directory is treated.
    pub fn run(&self) -> bridge_core::Result<(TrainConfig, RunMode)> {
        let text = std::fs::read_to_string(&self.config).map_err(|e| BridgeError::io(&self.config, e))?;
        let text = override_config(&text, &self.config, &self.sets)?;
        let mut cfg = parse_config(&text, &self.config)?;
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
        if let Some(e) = self.decode_engine {
            cfg.model.decode_engine = e;
        }
        Ok((cfg, if self.overwrite { RunMode::Overwrite } else { RunMode::Fresh }))
    }
}

/// `gpu compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// A run to compare, as NAME=RUN_DIR; repeatable.
    #[arg(long = "run", value_name = "NAME=RUN_DIR", required = true, value_parser = key_value)]
    pub runs: Vec<(String, String)>,
    /// Also plot the runs' curves into this PNG file.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
}

impl CompareArgs {
    /// The runs as `(name, run directory)`.
    pub fn runs(&self) -> Vec<(String, PathBuf)> {
        self.runs.iter().map(|(name, dir)| (name.clone(), PathBuf::from(dir))).collect()
    }
}

fn what(s: &str) -> Result<List<String>, String> {
    let list: List<String> = s.parse()?;
    match list.0.iter().find(|w| !["train", "generate", "launches"].contains(&w.as_str())) {
        Some(w) => Err(format!("`{w}` (expected train, generate and/or launches)")),
        None if list.0.is_empty() => Err("expected train, generate and/or launches".into()),
        None => Ok(list),
    }
}

fn engines(s: &str) -> Result<List<DecodeEngine>, String> {
    let list: List<DecodeEngine> = s.parse()?;
    if list.0.is_empty() {
        return Err("expected one or more of auto, tensor, host, graph".into());
    }
    Ok(list)
}

fn launches(s: &str) -> Result<(usize, usize), String> {
    let list: List<usize> = s.parse()?;
    match list.0.as_slice() {
        &[short, long] if short >= 1 && long > short => Ok((short, long)),
        _ => Err(format!("`{s}` (expected SHORT,LONG new tokens with 1 ≤ SHORT < LONG)")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` (expected KEY=VALUE)")),
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
