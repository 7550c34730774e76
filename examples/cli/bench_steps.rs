//! The flags of `examples/bench_steps.rs`.

use crate::common::positive;
use bridge::train::AlgorithmName;
use clap::Parser;

/// Time (and peak memory) of training steps on the CPU, printed as JSON.
#[derive(Parser, Debug)]
#[command(name = "bench_steps", allow_negative_numbers = true)]
pub struct Args {
    /// The algorithm (sft, rl_zero, cold_start, alternating, mixing, bridge_no_meta, bridge).
    #[arg(long, value_name = "NAME", default_value = "rl_zero")]
    pub algorithm: AlgorithmName,
    /// Timed steps (after one warm-up step).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive)]
    pub steps: usize,
}
