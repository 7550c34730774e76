//! Everything a GPU session runs, in one binary (a GPU machine here takes at most 64 MiB of files,
//! and one CUDA binary is ~15 MB compressed): a backend check, the throughput benchmarks, and a
//! training run from a TOML config.
//!
//! ```text
//! ../shared/tools/cuda-build.sh --example gpu --features cuda        # → .gpu/gpu.xz
//! gpu check [--device cuda]
//! gpu dp [--device cuda] [--steps 3]
//! gpu bench [--device cuda] [--dtype bf16] [--precision f32|bf16|mixed_bf16] [--what train,generate,launches]
//!     [--train-shape qwen2.5-0.5b] [--train-batch 8] [--train-seq 1024] [--train-steps 10] [--train-warmup 3]
//!     [--gen-shapes qwen2.5-0.5b,smollm2-135m] [--gen-batch 64] [--prompt-len 256] [--new-tokens 256]
//!     [--modes greedy,sample] [--repeats 2] [--selection auto|host|device]
//!     [--engines graph,tensor] [--capture true|false] [--launches 4,12] [--launch-batch 4]
//!     [--partial FILE]
//! gpu train --config FILE.toml [--steps N] [--time-limit-s S] [--device cuda] [--run-dir DIR] [--overwrite]
//!     [--decode-engine auto|tensor|graph] [--set section.key=VALUE ...]
//! gpu compare --run NAME=RUN_DIR [--run NAME=RUN_DIR ...] [--png FILE]
//! ```
//!
//! The flags are `examples/cli/gpu.rs` (`gpu SUBCOMMAND --help` lists them).
//!
//! - `check` runs [`bridge::device_check::compare_devices`] (flex against the device) and exits 1
//!   when a comparison is out of tolerance.
//! - `dp` runs [`bridge::dp_check::data_parallel_check`] (one rank, one NCCL rank, two host
//!   ranks on the device; docs/data-parallel.md) and exits 1 when a run is out of tolerance.
//! - `bench` prints one JSON object: a training step (forward + backward + AdamW, random init,
//!   random tokens) and KV-cache generation (random prompts, EOS disabled, one completion per
//!   prompt) for the model shapes of [`bridge::bench::shape_config`], once per decode engine of
//!   `--engines`, and (`launches`) the kernel launches per decode step of each shape
//!   ([`bridge::bench::decode_launches`]: the tensor engine, the graph engine's step, and what a
//!   replayed step still issues; a short and a long generation of `--launches` new tokens). Each
//!   measurement that fails (out of memory, say) records its error and the others still run;
//!   `--partial FILE` rewrites the results so far after each measurement. The
//!   PyTorch + transformers counterpart, with the same defaults, is
//!   `bridge-models/scripts/bench_torch.py`.
//! - `train` is `examples/train.rs` (see docs/config.md), with `--set` overrides of single
//!   config values ([`bridge::train::override_config`]).
//! - `compare` prints [`bridge::compare::compare_runs`] of finished runs as JSON (accuracy before
//!   and after, steps, seconds) and plots their curves into `--png`.
//!
//! Results of a run on an H100: docs/results/gpu.md.

#[path = "cli/gpu.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge::bench::{
    GenerationBenchConfig, decode_launches, generation_throughput, shape_config, train_bench, train_step_throughput,
};
use bridge_core::{BridgeError, BridgeRng, DeviceChoice, IdsOnlyCodec, Result};
use bridge_models::{Decoder, TensorPaths};
use clap::Parser;
use common::Placement;
use std::process::ExitCode;
use std::time::Instant;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn check(device: DeviceChoice) -> Result<bool> {
    let t0 = Instant::now();
    let report = bridge::device_check::compare_devices(DeviceChoice::Flex, device, 7)?;
    let mut json = serde_json::to_value(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    json["seconds"] = t0.elapsed().as_secs_f64().into();
    println!("{json}");
    Ok(report.ok)
}

fn dp(device: DeviceChoice, steps: u64) -> Result<bool> {
    let t0 = Instant::now();
    let report = bridge::dp_check::data_parallel_check(device, steps)?;
    let mut json = serde_json::to_value(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    json["seconds"] = t0.elapsed().as_secs_f64().into();
    println!("{json}");
    Ok(report.ok)
}

fn model(shape: &str) -> Result<Decoder> {
    let mut config = shape_config(shape)?;
    config.eos_token_ids.clear(); // every completion runs to --new-tokens
    let vocab_size = config.vocab_size;
    Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size }))
}

fn outcome<T: serde::Serialize>(r: Result<T>, seconds: f64) -> serde_json::Value {
    match r {
        Ok(v) => serde_json::json!({ "result": v, "wall_seconds_with_warmup": seconds }),
        Err(e) => serde_json::json!({ "error": e.to_string(), "wall_seconds_with_warmup": seconds }),
    }
}

/// Writes the results so far to `--partial` (if given), so that a run cut short by a timeout
/// still leaves what it measured. Best effort: a failed write is reported, not fatal.
fn save_partial(a: &cli::BenchArgs, out: &serde_json::Value) {
    if let Some(path) = &a.partial
        && let Err(e) = std::fs::write(path, out.to_string())
    {
        eprintln!("--partial {}: {e}", path.display());
    }
}

fn bench(a: &cli::BenchArgs) -> Result<()> {
    let placement = Placement { device: a.device, dtype: a.dtype };
    let device = placement.device()?;
    let (train_cfg, generation) = (a.train(), a.generation());
    let mut out = serde_json::json!({
        "framework": format!("bridge (burn 0.22.1, {})", placement.device),
        "dtype": placement.dtype.to_string(),
    });
    if a.what.0.iter().any(|w| w == "train") {
        let t0 = Instant::now();
        let r = (|| match a.train_precision() {
            Some(precision) => train_bench(&a.train_shape, precision, TensorPaths::default(), &device, &train_cfg),
            None => {
                let lm = model(&a.train_shape)?;
                let weights =
                    placement.cast(lm.init_weights(&device.clone().autodiff(), &mut BridgeRng::seed_from_u64(0))?);
                train_step_throughput(&lm, weights, &train_cfg, &mut BridgeRng::seed_from_u64(1))
            }
        })();
        out["train"] = outcome(r, t0.elapsed().as_secs_f64());
        out["train"]["shape"] = a.train_shape.clone().into();
        eprintln!("train: {}", out["train"]);
        save_partial(a, &out);
    }
    if a.what.0.iter().any(|w| w == "generate") {
        let mut shapes = serde_json::Map::new();
        for shape in &a.gen_shapes.0 {
            for &engine in &a.engines.0 {
                let t0 = Instant::now();
                let cfg = GenerationBenchConfig { engine, ..generation.clone() };
                let r = (|| {
                    let lm = model(shape)?;
                    let weights = placement.cast(lm.init_weights(&device, &mut BridgeRng::seed_from_u64(0))?);
                    generation_throughput(&lm, &weights, &cfg, &mut BridgeRng::seed_from_u64(2))
                })();
                let v = outcome(r, t0.elapsed().as_secs_f64());
                eprintln!("generate {shape} ({engine}): {v}");
                shapes.insert(format!("{shape}/{engine}"), v);
                out["generate"] = serde_json::json!({
                    "prompt_len": generation.prompt_len, "new_tokens": generation.new_tokens,
                    "repeats": generation.repeats, "selection": generation.selection,
                    "capture": generation.capture, "shapes": shapes.clone(),
                });
                save_partial(a, &out);
            }
        }
    }
    if a.what.0.iter().any(|w| w == "launches") {
        let mut launches = serde_json::Map::new();
        for shape in &a.gen_shapes.0 {
            let t0 = Instant::now();
            let r = (|| {
                let lm = model(shape)?;
                let weights = placement.cast(lm.init_weights(&device, &mut BridgeRng::seed_from_u64(0))?);
                let r =
                    decode_launches(&lm, &weights, a.launch_batch, 16, a.launches, &mut BridgeRng::seed_from_u64(3))?;
                Ok(r.map_or_else(
                    || serde_json::json!({ "skipped": "this backend does not report kernel launches" }),
                    |x| serde_json::to_value(x).unwrap_or_default(),
                ))
            })();
            let v = outcome(r, t0.elapsed().as_secs_f64());
            eprintln!("launches {shape}: {v}");
            launches.insert(shape.clone(), v);
            out["launches_per_decode_step"] = serde_json::Value::Object(launches.clone());
            save_partial(a, &out);
        }
    }
    println!("{out}");
    Ok(())
}

fn train(a: &cli::TrainArgs) -> Result<()> {
    let (cfg, mode) = a.run()?;
    let summary = bridge::train::train(&cfg, mode)?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn compare(a: &cli::CompareArgs) -> Result<()> {
    let outcomes = bridge::compare::compare_runs(&a.runs(), a.png.as_deref())?;
    println!("{}", serde_json::to_string(&outcomes).map_err(|e| BridgeError::InvalidInput(e.to_string()))?);
    Ok(())
}

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let (name, result) = match &args.command {
        cli::Command::Check { device } => {
            ("check", check(*device).map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }))
        }
        cli::Command::Dp { device, steps } => {
            ("dp", dp(*device, *steps as u64).map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }))
        }
        cli::Command::Bench(a) => ("bench", bench(a).map(|()| ExitCode::SUCCESS)),
        cli::Command::Train(a) => ("train", train(a).map(|()| ExitCode::SUCCESS)),
        cli::Command::Compare(a) => ("compare", compare(a).map(|()| ExitCode::SUCCESS)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("gpu {name}: {e}");
        ExitCode::FAILURE
    })
}
