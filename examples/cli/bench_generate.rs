//! The flags of `examples/bench_generate.rs`.

use crate::common::{List, Modes, Placement, modes, positive, sizes};
use bridge_models::generate::DecodeEngine;
use clap::Parser;
use std::path::PathBuf;

/// New-token throughput of the KV-cache generation engine, printed as JSON.
#[derive(Parser, Debug)]
#[command(name = "bench_generate", allow_negative_numbers = true)]
pub struct Args {
    /// A real model (an HF directory or a `.gguf` file) instead of the tiny random one.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub model: Option<PathBuf>,
    /// Device and dtype.
    #[command(flatten)]
    pub placement: Placement,
    /// Batch sizes (prompts per call), comma-separated.
    #[arg(long, value_name = "LIST", default_value = "1,16,64", value_parser = sizes)]
    pub batches: List<usize>,
    /// Tokens per random prompt.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive)]
    pub prompt_len: usize,
    /// New tokens per completion.
    #[arg(long, value_name = "N", default_value_t = 48, value_parser = positive)]
    pub new_tokens: usize,
    /// Modes, comma-separated: greedy and/or sample (temperature 1).
    #[arg(long, value_name = "LIST", default_value = "greedy,sample", value_parser = modes)]
    pub modes: Modes,
    /// Timed runs (the best is reported), after one warm-up.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive)]
    pub repeats: usize,
    /// The decoding engine: auto, tensor, host or graph.
    #[arg(long, value_name = "ENGINE", default_value = "auto")]
    pub engine: DecodeEngine,
}
