//! Forward+backward throughput of the decoder on the CPU (`flex`), printed as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_forward [-- --steps 20 --warmup 3]
//! cargo run --release --example bench_forward -- [--model DIR|FILE.gguf] [--batch 16] [--seq-len 64] \
//!     [--engine auto|tensor|fused] [--steps N] [--warmup N] [--backward-steps N]
//! ```
//!
//! Default model: Qwen2 layout, vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads, 2 KV
//! heads, tied embeddings, random init; batch 16 × 64 random tokens, every target scored. A step
//! is `token_scores` on an autodiff device, the summed log-likelihood, and its backward pass.
//! `--engine` picks the scoring engine (`auto`: the fused CPU engine for f32 weights on flex;
//! `tensor`: burn tensor operations, for comparison). For the tensor engine, `--attention
//! auto|materialised|fused` and `--chunked-scores on|off` choose its paths (`TensorPaths`).
//! `forward_backward.memory` is the peak memory of the forward+backward steps
//! (`bridge::bench::PeakMemory`: the process's peak resident set on flex). `--model` benchmarks
//! a real model instead (an HF directory or a `.gguf` file, loaded in f32 with
//! `bridge_models::open_model`).
//! The PyTorch equivalent is `bridge-models/scripts/make_fixtures.py --bench` (same `--model`,
//! `--batch`, `--seq-len`). The flags are `examples/cli/bench_forward.rs`.

#[path = "cli/bench_forward.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge_core::policy::{CausalLm, SequenceBatch, TokenSequence};
use bridge_core::{BridgeRng, IdsOnlyCodec, Result};
use bridge_models::{Decoder, TensorPaths, open_model};
use burn::module::Module;
use clap::Parser;
use std::time::Instant;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: cli::Args) -> Result<()> {
    let (steps, warmup, batch, seq, engine) = (args.steps, args.warmup, args.batch, args.seq_len, args.engine);
    // `--backward-steps 0` times the forward pass alone (e.g. to profile it).
    let backward_steps = args.backward_steps.unwrap_or(steps);
    let paths =
        TensorPaths { attention: args.attention, chunked_scores: args.chunked_scores, ..TensorPaths::default() };
    let device = burn::tensor::Device::flex().autodiff();
    let mut rng = BridgeRng::seed_from_u64(0);
    let (config, weights, model_name) = match &args.model {
        None => {
            let config = bridge::bench::shape_config("tiny")?;
            let weights = Decoder::new(config.clone(), Box::new(IdsOnlyCodec { vocab_size: 512 }))?
                .init_weights(&device, &mut rng)?;
            (config, weights, "tiny random Qwen2 (vocab 512, hidden 128, 4 layers)".to_owned())
        }
        Some(path) => {
            let (config, weights) = open_model(path, &device)?;
            (config, weights, path.display().to_string())
        }
    };
    let vocab = config.vocab_size;
    let lm = Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size: vocab }))?
        .with_scoring_engine(engine)
        .with_tensor_paths(paths);
    let rows = (0..batch)
        .map(|_| TokenSequence::all_scored((0..seq).map(|_| rng.below(vocab as u64) as u32).collect()))
        .collect();
    let batch_data = SequenceBatch::new(rows, 0)?;

    let step = || -> Result<f64> {
        let s = lm.token_scores(&weights, None, &batch_data, false)?;
        let loss = (s.logprobs * s.mask).sum().neg();
        let value = loss.clone().into_scalar::<f32>() as f64;
        let _grads = loss.backward();
        Ok(value)
    };
    for _ in 0..warmup.min(backward_steps) {
        step()?;
    }
    let probe = bridge::bench::MemoryProbe::start(&device);
    let t0 = Instant::now();
    let mut last = 0.0;
    for _ in 0..backward_steps {
        last = step()?;
    }
    let dt = t0.elapsed().as_secs_f64();
    let memory = probe.finish()?;

    // forward only, no graph
    let plain = weights.clone().valid();
    let fwd =
        || lm.token_scores(&plain, None, &batch_data, false).map(|s| s.logprobs.sum().into_scalar::<f32>() as f64);
    fwd()?;
    let t1 = Instant::now();
    for _ in 0..steps {
        fwd()?;
    }
    let dt_fwd = t1.elapsed().as_secs_f64();

    let tokens = (batch * seq * steps) as f64;
    let out = serde_json::json!({
        "framework": "bridge (burn flex)",
        "engine": engine.to_string(),
        "paths": paths,
        "model": model_name,
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "batch": batch, "seq_len": seq, "steps": steps,
        "forward_backward": {
            "seconds_per_step": dt / backward_steps.max(1) as f64,
            "tokens_per_second": (batch * seq * backward_steps) as f64 / dt,
            "memory": memory,
        },
        "forward_only": {"seconds_per_step": dt_fwd / steps as f64, "tokens_per_second": tokens / dt_fwd},
        "final_loss": last,
    });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run(cli::Args::parse()) {
        eprintln!("bench_forward: {e}");
        std::process::exit(1);
    }
}
