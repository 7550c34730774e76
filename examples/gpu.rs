//! Everything a GPU session runs, in one binary (a GPU machine here takes at most 64 MiB of files,
//! and one CUDA binary is ~15 MB compressed): a backend check, the throughput benchmarks, and a
//! training run from a TOML config.
//!
//! ```text
//! ../shared/tools/cuda-build.sh --example gpu --features cuda        # → .gpu/gpu.xz
//! gpu check [--device cuda]
//! gpu bench [--device cuda] [--dtype bf16] [--what train,generate,launches]
//!     [--train-shape qwen2.5-0.5b] [--train-batch 8] [--train-seq 1024] [--train-steps 10] [--train-warmup 3]
//!     [--gen-shapes qwen2.5-0.5b,smollm2-135m] [--gen-batch 64] [--prompt-len 256] [--new-tokens 256]
//!     [--modes greedy,sample] [--repeats 2] [--selection auto|host|device]
//!     [--engines graph,tensor] [--capture true|false] [--launches 4,12] [--launch-batch 4]
//!     [--partial FILE]
//! gpu train --config FILE.toml [--steps N] [--time-limit-s S] [--device cuda] [--run-dir DIR]
//!     [--decode-engine auto|tensor|graph] [--set section.key=VALUE ...]
//! gpu compare --run NAME=RUN_DIR [--run NAME=RUN_DIR ...] [--png FILE]
//! ```
//!
//! - `check` runs [`bridge::device_check::compare_devices`] (flex against the device) and exits 1
//!   when a comparison is out of tolerance.
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

#[path = "common/args.rs"]
mod args;

use args::{Placement, list, num};
use bridge::bench::{
    GenerationBenchConfig, TrainBenchConfig, decode_launches, generation_mode, generation_throughput, shape_config,
    train_step_throughput,
};
use bridge_core::{BridgeError, BridgeRng, DeviceChoice, IdsOnlyCodec, Result, TokenSelection};
use bridge_models::{DecodeEngine, Decoder, WeightDType};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: gpu check [--device cuda] | gpu bench [options, see examples/gpu.rs] | \
                     gpu train --config FILE.toml [--steps N] [--time-limit-s S] [--device D] [--run-dir DIR] \
                     [--decode-engine E] [--set KEY=VALUE ...] | gpu compare --run NAME=DIR ... [--png FILE]";

fn flags(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(BridgeError::InvalidInput(format!("unexpected argument `{flag}`; {USAGE}")));
        }
        let value = it.next().ok_or_else(|| BridgeError::InvalidInput(format!("{flag} needs a value")))?;
        out.push((flag.clone(), value.clone()));
    }
    Ok(out)
}

fn check(args: &[String]) -> Result<bool> {
    let mut device = DeviceChoice::Cuda(0);
    for (flag, value) in flags(args)? {
        match flag.as_str() {
            "--device" => device = value.parse()?,
            other => return Err(BridgeError::InvalidInput(format!("check: unknown flag `{other}`"))),
        }
    }
    let t0 = Instant::now();
    let report = bridge::device_check::compare_devices(DeviceChoice::Flex, device, 7)?;
    let mut json = serde_json::to_value(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    json["seconds"] = t0.elapsed().as_secs_f64().into();
    println!("{json}");
    Ok(report.ok)
}

struct BenchArgs {
    placement: Placement,
    what: Vec<String>,
    train_shape: String,
    train: TrainBenchConfig,
    gen_shapes: Vec<String>,
    generation: GenerationBenchConfig,
    engines: Vec<DecodeEngine>,
    launches: (usize, usize),
    launch_batch: usize,
    partial: Option<PathBuf>,
}

fn bench_args(args: &[String]) -> Result<BenchArgs> {
    let mut a = BenchArgs {
        placement: Placement { device: DeviceChoice::Cuda(0), dtype: WeightDType::Bf16 },
        what: vec!["train".into(), "generate".into()],
        train_shape: "qwen2.5-0.5b".into(),
        train: TrainBenchConfig { batch: 8, seq_len: 1024, steps: 10, warmup: 3, lr: 1e-5 },
        gen_shapes: vec!["qwen2.5-0.5b".into(), "smollm2-135m".into()],
        generation: GenerationBenchConfig {
            batches: vec![64],
            prompt_len: 256,
            new_tokens: 256,
            modes: vec![("greedy".into(), 0.0), ("sample".into(), 1.0)],
            repeats: 2,
            selection: TokenSelection::Auto,
            engine: DecodeEngine::Auto,
            capture: true,
        },
        engines: vec![DecodeEngine::Auto],
        launches: (4, 12),
        launch_batch: 4,
        partial: None,
    };
    for (flag, value) in flags(args)? {
        let f = flag.as_str();
        match f {
            "--device" => a.placement.device = value.parse()?,
            "--dtype" => a.placement.dtype = value.parse()?,
            "--what" => a.what = list(f, &value)?,
            "--train-shape" => a.train_shape = value,
            "--train-batch" => a.train.batch = num(f, &value)?,
            "--train-seq" => a.train.seq_len = num(f, &value)?,
            "--train-steps" => a.train.steps = num(f, &value)?,
            "--train-warmup" => a.train.warmup = num(f, &value)?,
            "--gen-shapes" => a.gen_shapes = list(f, &value)?,
            "--gen-batch" => a.generation.batches = list(f, &value)?,
            "--prompt-len" => a.generation.prompt_len = num(f, &value)?,
            "--new-tokens" => a.generation.new_tokens = num(f, &value)?,
            "--repeats" => a.generation.repeats = num(f, &value)?,
            "--selection" => {
                a.generation.selection = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|_| BridgeError::InvalidInput(format!("--selection: `{value}` (auto, host or device)")))?
            }
            "--engines" => a.engines = list(f, &value)?,
            "--capture" => a.generation.capture = num(f, &value)?,
            "--launch-batch" => a.launch_batch = num(f, &value)?,
            "--partial" => a.partial = Some(PathBuf::from(value)),
            "--launches" => match list::<usize>(f, &value)?.as_slice() {
                &[short, long] if short >= 1 && long > short => a.launches = (short, long),
                _ => return Err(BridgeError::InvalidInput(format!("--launches: `{value}` (SHORT,LONG new tokens)"))),
            },
            "--modes" => {
                a.generation.modes =
                    list::<String>(f, &value)?.iter().map(|m| generation_mode(m)).collect::<Result<_>>()?
            }
            other => return Err(BridgeError::InvalidInput(format!("bench: unknown flag `{other}`"))),
        }
    }
    for w in &a.what {
        if !["train", "generate", "launches"].contains(&w.as_str()) {
            return Err(BridgeError::InvalidInput(format!("--what: `{w}` (expected train, generate, launches)")));
        }
    }
    Ok(a)
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
fn save_partial(a: &BenchArgs, out: &serde_json::Value) {
    if let Some(path) = &a.partial
        && let Err(e) = std::fs::write(path, out.to_string())
    {
        eprintln!("--partial {}: {e}", path.display());
    }
}

fn bench(args: &[String]) -> Result<()> {
    let a = bench_args(args)?;
    let device = a.placement.device()?;
    let mut out = serde_json::json!({
        "framework": format!("bridge (burn 0.22.1, {})", a.placement.device),
        "dtype": a.placement.dtype.to_string(),
    });
    if a.what.iter().any(|w| w == "train") {
        let t0 = Instant::now();
        let r = (|| {
            let lm = model(&a.train_shape)?;
            let weights =
                a.placement.cast(lm.init_weights(&device.clone().autodiff(), &mut BridgeRng::seed_from_u64(0))?);
            train_step_throughput(&lm, weights, &a.train, &mut BridgeRng::seed_from_u64(1))
        })();
        out["train"] = outcome(r, t0.elapsed().as_secs_f64());
        out["train"]["shape"] = a.train_shape.clone().into();
        eprintln!("train: {}", out["train"]);
        save_partial(&a, &out);
    }
    if a.what.iter().any(|w| w == "generate") {
        let mut generation = serde_json::Map::new();
        for shape in &a.gen_shapes {
            for &engine in &a.engines {
                let t0 = Instant::now();
                let cfg = GenerationBenchConfig { engine, ..a.generation.clone() };
                let r = (|| {
                    let lm = model(shape)?;
                    let weights = a.placement.cast(lm.init_weights(&device, &mut BridgeRng::seed_from_u64(0))?);
                    generation_throughput(&lm, &weights, &cfg, &mut BridgeRng::seed_from_u64(2))
                })();
                let v = outcome(r, t0.elapsed().as_secs_f64());
                eprintln!("generate {shape} ({engine}): {v}");
                generation.insert(format!("{shape}/{engine}"), v);
                out["generate"] = serde_json::json!({
                    "prompt_len": a.generation.prompt_len, "new_tokens": a.generation.new_tokens,
                    "repeats": a.generation.repeats, "selection": a.generation.selection,
                    "capture": a.generation.capture, "shapes": generation.clone(),
                });
                save_partial(&a, &out);
            }
        }
    }
    if a.what.iter().any(|w| w == "launches") {
        let mut launches = serde_json::Map::new();
        for shape in &a.gen_shapes {
            let t0 = Instant::now();
            let r = (|| {
                let lm = model(shape)?;
                let weights = a.placement.cast(lm.init_weights(&device, &mut BridgeRng::seed_from_u64(0))?);
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
            save_partial(&a, &out);
        }
    }
    println!("{out}");
    Ok(())
}

fn train(args: &[String]) -> Result<()> {
    let (mut config, mut steps, mut limit, mut device, mut run_dir) = (None, None, None, None, None);
    let (mut decode_engine, mut sets) = (None, Vec::new());
    for (flag, value) in flags(args)? {
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value)),
            "--device" => device = Some(value.parse::<DeviceChoice>()?),
            "--run-dir" => run_dir = Some(PathBuf::from(value)),
            "--steps" => steps = Some(num::<u64>(&flag, &value)?),
            "--time-limit-s" => limit = Some(num::<f64>(&flag, &value)?),
            "--decode-engine" => decode_engine = Some(value.parse::<DecodeEngine>()?),
            "--set" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    BridgeError::InvalidInput(format!("--set: `{value}` (expected section.key=VALUE)"))
                })?;
                sets.push((k.to_owned(), v.to_owned()));
            }
            other => return Err(BridgeError::InvalidInput(format!("train: unknown flag `{other}`"))),
        }
    }
    let path = config.ok_or_else(|| BridgeError::InvalidInput("train: --config FILE.toml is required".into()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| BridgeError::io(&path, e))?;
    let text = bridge::train::override_config(&text, &path, &sets)?;
    let mut cfg = bridge::train::parse_config(&text, &path)?;
    if let Some(n) = steps {
        cfg.run.steps = n;
    }
    if limit.is_some() {
        cfg.run.time_limit_s = limit;
    }
    if let Some(d) = device {
        cfg.run.device = d;
    }
    if let Some(d) = run_dir {
        cfg.run.run_dir = d;
    }
    if let Some(e) = decode_engine {
        cfg.model.decode_engine = e;
    }
    let summary = bridge::train::train(&cfg, false)?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn compare(args: &[String]) -> Result<()> {
    let (mut runs, mut png) = (Vec::new(), None);
    for (flag, value) in flags(args)? {
        match flag.as_str() {
            "--run" => {
                let (name, dir) = value
                    .split_once('=')
                    .ok_or_else(|| BridgeError::InvalidInput(format!("--run: `{value}` (expected NAME=RUN_DIR)")))?;
                runs.push((name.to_owned(), PathBuf::from(dir)));
            }
            "--png" => png = Some(PathBuf::from(value)),
            other => return Err(BridgeError::InvalidInput(format!("compare: unknown flag `{other}`"))),
        }
    }
    let outcomes = bridge::compare::compare_runs(&runs, png.as_deref())?;
    println!("{}", serde_json::to_string(&outcomes).map_err(|e| BridgeError::InvalidInput(e.to_string()))?);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "check" => check(rest).map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
        "bench" => bench(rest).map(|()| ExitCode::SUCCESS),
        "train" => train(rest).map(|()| ExitCode::SUCCESS),
        "compare" => compare(rest).map(|()| ExitCode::SUCCESS),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("gpu {command}: {e}");
        ExitCode::FAILURE
    })
}
