//! Forward+backward throughput of the decoder on the CPU (`flex`), printed as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_forward [-- --steps 20 --warmup 3]
//! ```
//!
//! Model: Qwen2 layout, vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads, 2 KV heads,
//! tied embeddings; batch 16 × 64 tokens, every target scored. A step is `token_scores` on an
//! autodiff device, the summed log-likelihood, and its backward pass. The PyTorch equivalent is
//! `bridge-models/scripts/make_fixtures.py --bench`.

use bridge_core::policy::{CausalLm, SequenceBatch, TokenSequence};
use bridge_core::testing::CharCodec;
use bridge_core::{BridgeError, BridgeRng, Result};
use bridge_models::{Decoder, DecoderConfig};
use burn::module::Module;
use std::time::Instant;

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BridgeError::InvalidInput(format!("{name} needs a number"))),
    }
}

fn run() -> Result<()> {
    let (steps, warmup) = (arg("--steps", 20)?, arg("--warmup", 3)?);
    // `--backward-steps 0` times the forward pass alone (e.g. to profile it).
    let backward_steps = arg("--backward-steps", steps)?;
    let (batch, seq) = (16usize, 64usize);
    let config = DecoderConfig::from_hf_json(&serde_json::json!({
        "model_type": "qwen2", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 512,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": true, "rope_theta": 10000.0
    }))?;
    let lm = Decoder::new(config, Box::new(CharCodec::new("abc")))?;
    let device = burn::tensor::Device::flex().autodiff();
    let mut rng = BridgeRng::seed_from_u64(0);
    let weights = lm.init_weights(&device, &mut rng)?;
    let rows =
        (0..batch).map(|_| TokenSequence::all_scored((0..seq).map(|_| rng.below(512) as u32).collect())).collect();
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
    let t0 = Instant::now();
    let mut last = 0.0;
    for _ in 0..backward_steps {
        last = step()?;
    }
    let dt = t0.elapsed().as_secs_f64();

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
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "batch": batch, "seq_len": seq, "steps": steps,
        "forward_backward": {
            "seconds_per_step": dt / backward_steps.max(1) as f64,
            "tokens_per_second": (batch * seq * backward_steps) as f64 / dt,
        },
        "forward_only": {"seconds_per_step": dt_fwd / steps as f64, "tokens_per_second": tokens / dt_fwd},
        "final_loss": last,
    });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_forward: {e}");
        std::process::exit(1);
    }
}
