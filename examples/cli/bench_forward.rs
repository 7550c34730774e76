//! The flags of `examples/bench_forward.rs`.

use crate::common::positive;
use bridge_models::{AttentionPath, ScoringEngine};
use clap::Parser;
use std::path::PathBuf;

/// Forward+backward throughput of the decoder on the CPU (flex), printed as JSON.
#[derive(Parser, Debug)]
#[command(name = "bench_forward", allow_negative_numbers = true)]
pub struct Args {
    /// A real model (an HF directory or a `.gguf` file, in f32) instead of the tiny random one.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub model: Option<PathBuf>,
    /// Sequences per step.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive)]
    pub batch: usize,
    /// Tokens per sequence (at least 2).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = seq_len)]
    pub seq_len: usize,
    /// The scoring engine: auto (the fused CPU engine for f32 weights on flex), tensor or fused.
    #[arg(long, value_name = "ENGINE", default_value = "auto")]
    pub engine: ScoringEngine,
    /// Timed forward-only steps (and forward+backward steps unless `--backward-steps`).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = positive)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub warmup: usize,
    /// Timed forward+backward steps (default: `--steps`; 0 times the forward pass alone).
    #[arg(long, value_name = "N")]
    pub backward_steps: Option<usize>,
    /// The tensor engine's attention: auto (fused on cubecl, materialised on flex), materialised
    /// or fused.
    #[arg(long, value_name = "PATH", default_value = "auto")]
    pub attention: AttentionPath,
    /// The tensor engine's chunked token scores (off: burn's `[N, V]` log-softmax).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub chunked_scores: bool,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("`{other}`: on or off")),
    }
}

fn seq_len(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        Ok(_) => Err("must be at least 2".into()),
        Err(e) => Err(e.to_string()),
    }
}
