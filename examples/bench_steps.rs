//! Time (and peak memory) of training steps on the CPU, printed as JSON: one GRPO step split into
//! generation and loss/backward (issue: RL), and BRIDGE against RL-zero on the same setup.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_steps -- --algorithm rl_zero [--steps 5]
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_steps -- --algorithm bridge  [--steps 5]
//! ```
//!
//! Setup: the tiny Qwen2 benchmark config (vocab 512, hidden 128, intermediate 512, 4 layers,
//! 4 heads, 2 KV heads, tied), random weights, LoRA rank 16 on all projections (BRIDGE), 8 prompts
//! × 4 samples × 48 new tokens (a byte codec without EOS, so every completion has 48 tokens), KL 1e-3, and
//! a reward that varies within groups (completion parity) so that every step has a loss. Peak
//! memory is the process's `VmHWM` (Linux); run one algorithm per process to compare them. The
//! flags are `examples/cli/bench_steps.rs`.

#[path = "cli/bench_steps.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge::bilevel::{LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, init_state, run_steps};
use bridge::core::schedule::ConstantLambda;
use bridge::core::testing::FnReward;
use bridge::core::{
    AdamWSettings, BridgeError, BridgeRng, InMemorySource, Result, Reward, RlPrompt, SamplingParams, TextCodec,
    TokenSequence,
};
use bridge::models::{Decoder, LoraConfig};
use bridge::registry::AlgorithmRegistry;
use bridge::rl::GrpoConfig;
use clap::Parser;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes as tokens (ids 0..256), with no EOS: every completion runs to `max_new_tokens`.
#[derive(Clone)]
struct ByteCodec;

impl TextCodec for ByteCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids.iter().map(|&i| char::from(i.min(255) as u8)).collect())
    }
    fn vocab_size(&self) -> usize {
        256
    }
    fn eos_token_ids(&self) -> &[u32] {
        &[]
    }
    fn pad_token_id(&self) -> u32 {
        0
    }
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run(args: cli::Args) -> Result<serde_json::Value> {
    let algorithm = AlgorithmRegistry::<Decoder>::builtin()
        .parse(&args.algorithm, &toml::Table::new())
        .map_err(|e| BridgeError::config("--algorithm", e.to_string()))?;
    let steps = args.steps as u64;
    let config = bridge::bench::shape_config("tiny")?;
    let codec = ByteCodec;
    let lm = Decoder::new(config, Box::new(codec.clone()))?;
    let device = burn::tensor::Device::flex().autodiff();
    let theta0 = lm.init_weights(&device, &mut BridgeRng::seed_from_u64(0))?;
    let mut algo = algorithm.build();
    let needs = algo.needs();
    let adapter = if needs.adapter {
        Some(lm.init_adapter(&LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(1))?)
    } else {
        None
    };
    let prompts: InMemorySource<RlPrompt> = (0..64)
        .map(|i| {
            RlPrompt::new(
                i.to_string(),
                format!("Q: {}+{}\nA: ", i % 10, (i * 7) % 10),
                ((i % 10) + (i * 7) % 10).to_string(),
            )
        })
        .collect();
    let sft: InMemorySource<TokenSequence> = (0..64)
        .map(|i| {
            let p = codec.encode(&format!("Q: {}+{}\nA: ", i % 10, (i * 7) % 10)).unwrap_or_default();
            let c = codec.encode(&format!("#### {}", (i % 10) + (i * 7) % 10)).unwrap_or_default();
            TokenSequence::prompt_completion(&p, &c)
        })
        .collect();
    let parity = FnReward::new("parity", |c: &str, _: &RlPrompt| {
        Reward::scored(if c.chars().filter(|ch| ch.is_ascii_digit()).count() % 2 == 0 { 1.0 } else { 0.0 })
    });
    let rl = GrpoConfig {
        prompts_per_step: 8,
        sampling: SamplingParams { n: 4, max_new_tokens: 48, stop_token_ids: vec![], ..SamplingParams::default() },
        ..GrpoConfig::default()
    };
    let optim = OptimConfig { theta: AdamWSettings::with_lr(1e-4), ..OptimConfig::default() };
    let state = init_state(needs, theta0, adapter, &optim, true, 0)?;
    let lambda = ConstantLambda(0.5);
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &parity, rl: &rl, sft_batch_size: 8, lambda: &lambda };
    let dir = std::env::temp_dir().join(format!("bridge-bench-steps-{}", std::process::id()));
    let cfg = LoopConfig { total_steps: steps + 1, checkpoint_every: 0, run_dir: dir.clone(), ..LoopConfig::default() };
    let mut log: Vec<(Metrics, f64)> = Vec::new();
    let mut last = std::time::Instant::now();
    run_steps(
        &lm,
        algo.as_mut(),
        state,
        &inputs,
        &cfg,
        |_, _| Ok(Metrics::new()),
        |e| {
            if let RunEvent::Step(m) = e {
                log.push((m.clone(), last.elapsed().as_secs_f64()));
                last = std::time::Instant::now();
            }
            Ok(())
        },
    )?;
    let _ = std::fs::remove_dir_all(dir);
    let timed = &log[1..]; // the first step warms up
    let mean = |k: &str| timed.iter().map(|(m, _)| m.get(k).copied().unwrap_or(0.0)).sum::<f64>() / timed.len() as f64;
    let step_s = timed.iter().map(|(_, s)| s).sum::<f64>() / timed.len() as f64;
    Ok(serde_json::json!({
        "algorithm": algo.name(),
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "timed_steps": timed.len(),
        "step_seconds": step_s,
        "generation_seconds": mean("generation_seconds"),
        "training_seconds": mean("training_seconds"),
        "completion_len_mean": mean("completion_len_mean"),
        "peak_rss_mb": peak_rss_mb(),
    }))
}

fn main() -> std::process::ExitCode {
    match run(cli::Args::parse()) {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_steps: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
