//! The flags of `examples/bench_steps.rs`.

use crate::common::positive;
use bridge::models::Decoder;
use bridge::registry::AlgorithmRegistry;
use clap::Parser;

/// Time (and peak memory) of training steps on the CPU, printed as JSON.
#[derive(Parser, Debug)]
#[command(name = "bench_steps", allow_negative_numbers = true)]
pub struct Args {
    /// The algorithm: a name of the built-in registry (sft, rl_zero, cold_start, alternating,
    /// mixing, bridge_no_meta, bridge, chord, luffy, ppo, bridge_unrolled), default options.
    #[arg(long, value_name = "NAME", default_value = "rl_zero", value_parser = algorithm_name)]
    pub algorithm: String,
    /// Timed steps (after one warm-up step).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive)]
    pub steps: usize,
}

/// A name of the built-in algorithm registry.
fn algorithm_name(s: &str) -> Result<String, String> {
    let registry = AlgorithmRegistry::<Decoder>::builtin();
    if registry.names().any(|n| n == s) {
        Ok(s.to_owned())
    } else {
        Err(format!("unknown algorithm `{s}` (expected one of {})", registry.names().collect::<Vec<_>>().join(", ")))
    }
}
