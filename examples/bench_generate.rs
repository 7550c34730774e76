//! New-token throughput of the KV-cache generation engine on the CPU (`flex`), printed as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_generate [-- --repeats 3]
//! ```
//!
//! Model: Qwen2 layout, vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads, 2 KV heads,
//! tied embeddings, random init; 16-token random prompts, 48 new tokens (EOS disabled, so every
//! row generates all of them), batch 1, 16 and 64, greedy and sampled (temperature 1). A run is
//! one `CausalLm::sample` call; the best of `--repeats` runs (after one warm-up) is reported. The
//! transformers equivalent is `bridge-models/scripts/make_fixtures.py --bench-generate`.

use bridge_core::policy::{CausalLm, SamplingParams};
use bridge_core::{BridgeError, BridgeRng, Result, TextCodec};
use bridge_models::{Decoder, DecoderConfig};
use std::time::Instant;

/// The whole vocabulary, no EOS.
struct BenchCodec;

impl TextCodec for BenchCodec {
    fn encode(&self, _text: &str) -> Result<Vec<u32>> {
        Err(BridgeError::Tokenizer("bench codec".into()))
    }
    fn decode(&self, _ids: &[u32]) -> Result<String> {
        Ok(String::new())
    }
    fn vocab_size(&self) -> usize {
        512
    }
    fn eos_token_ids(&self) -> &[u32] {
        &[]
    }
    fn pad_token_id(&self) -> u32 {
        0
    }
}

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
    let repeats = arg("--repeats", 3)?.max(1);
    let (prompt_len, new_tokens) = (arg("--prompt-len", 16)?, arg("--new-tokens", 48)?);
    let config = DecoderConfig::from_hf_json(&serde_json::json!({
        "model_type": "qwen2", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 512,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": true, "rope_theta": 10000.0
    }))?;
    let lm = Decoder::new(config, Box::new(BenchCodec))?;
    let device = burn::tensor::Device::flex();
    let mut rng = BridgeRng::seed_from_u64(0);
    let weights = lm.init_weights(&device, &mut rng)?;
    let mut results = serde_json::Map::new();
    for (mode, temperature) in [("greedy", 0.0), ("sample", 1.0)] {
        let params = SamplingParams { max_new_tokens: new_tokens, temperature, ..Default::default() };
        for batch in [1usize, 16, 64] {
            let prompts: Vec<Vec<u32>> =
                (0..batch).map(|_| (0..prompt_len).map(|_| 3 + rng.below(509) as u32).collect()).collect();
            let mut times = Vec::with_capacity(repeats);
            for i in 0..=repeats {
                let t0 = Instant::now();
                let out = lm.sample(&weights, None, &prompts, &params, &mut BridgeRng::seed_from_u64(1))?;
                let dt = t0.elapsed().as_secs_f64();
                if out.iter().any(|c| c.tokens.len() != new_tokens) {
                    return Err(BridgeError::Model("a completion stopped early".into()));
                }
                if i > 0 {
                    times.push(dt); // the first run is a warm-up
                }
            }
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            results.insert(
                format!("{mode}/batch{batch}"),
                serde_json::json!({
                    "batch": batch, "seconds": best, "seconds_all": times,
                    "new_tokens_per_second": (batch * new_tokens) as f64 / best,
                }),
            );
        }
    }
    let out = serde_json::json!({
        "framework": "bridge (burn flex, KV cache)",
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats,
        "results": results,
    });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_generate: {e}");
        std::process::exit(1);
    }
}
