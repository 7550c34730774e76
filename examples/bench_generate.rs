//! New-token throughput of the KV-cache generation engine, printed as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_generate [-- --repeats 3]
//! cargo run --release --example bench_generate -- [--model DIR|FILE.gguf] [--dtype f32|bf16|f16] \
//!     [--device flex|cuda:N] [--batches 1,16,64] [--prompt-len N] [--new-tokens N] \
//!     [--modes greedy,sample] [--repeats N] [--engine auto|tensor|host|graph]
//! ```
//!
//! Default model: Qwen2 layout, vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads, 2 KV
//! heads, tied embeddings, random init, on the CPU (`flex`) in f32; 16-token random prompts, 48 new
//! tokens, batch 1, 16 and 64, greedy and sampled (temperature 1, whole vocabulary). A run is one
//! `Generator::generate` call (what `CausalLm::sample` runs); `--engine` picks its forward pass
//! (`auto`: the fused host engine for f32 weights on the CPU, the graph engine on a GPU; `tensor`
//! and `graph` force the tensor engine or the static-shape steps, for comparison). The best of `--repeats` runs (after one warm-up) is reported. EOS is
//! disabled, so every row generates all `--new-tokens` tokens. The measurement is
//! `bridge::bench::generation_throughput` (tokens chosen on the host on the CPU, on the device on
//! a GPU).
//!
//! `--model` benchmarks a real model instead (an HF directory or a `.gguf` file, loaded with
//! `bridge_models::open_model`): random prompts of ids `3..vocab_size`, the tokenizer unused and
//! the config's EOS ids cleared. `--dtype` casts the weights (random or loaded), `--device` picks
//! the backend (`cuda` = `cuda:0`, in a build with the `cuda` feature). The JSON records the
//! model, dtype and device. The GPU benchmark of the generation issue (a binary built with the
//! `cuda` feature, e.g. by `../shared/tools/cuda-build.sh --example bench_generate --features cuda`;
//! the GGUF file is the one `bridge-models/scripts/fetch_models.sh` puts in `~/.cache/bridge-models`):
//!
//! ```text
//! bench_generate --model SmolLM2-135M-Instruct.Q4_1.gguf --dtype bf16 --device cuda \
//!     --batches 64 --prompt-len 256 --new-tokens 256
//! ```
//!
//! The transformers equivalent is `bridge-models/scripts/make_fixtures.py --bench-generate` (same
//! options, with `--dtype float32|bfloat16 --device cpu|cuda`). The flags are
//! `examples/cli/bench_generate.rs`.

#[path = "cli/bench_generate.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge::bench::{GenerationBenchConfig, generation_throughput};
use bridge_core::{BridgeRng, DeviceChoice, IdsOnlyCodec, Result, TokenSelection};
use bridge_models::Decoder;
use clap::Parser;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(a: cli::Args) -> Result<()> {
    let (repeats, prompt_len, new_tokens) = (a.repeats, a.prompt_len, a.new_tokens);
    let mut rng = BridgeRng::seed_from_u64(0);
    let (lm, weights, model_name) = match &a.model {
        None => {
            let config = bridge::bench::shape_config("tiny")?;
            let lm = Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size: 512 }))?;
            let weights = a.placement.cast(lm.init_weights(&a.placement.device()?, &mut rng)?);
            (lm, weights, "tiny random Qwen2 (vocab 512, hidden 128, 4 layers)".to_owned())
        }
        Some(path) => {
            let (_device, mut config, weights) = a.placement.open_weights(path)?;
            config.eos_token_ids.clear(); // every completion runs to --new-tokens
            let codec = IdsOnlyCodec { vocab_size: config.vocab_size };
            (Decoder::new(config, Box::new(codec))?, weights, path.display().to_string())
        }
    };
    let cfg = GenerationBenchConfig {
        batches: a.batches.0.clone(),
        prompt_len,
        new_tokens,
        modes: a.modes.0.clone(),
        repeats,
        selection: TokenSelection::Auto,
        engine: a.engine,
        capture: true,
    };
    let mut results = serde_json::Map::new();
    for r in generation_throughput(&lm, &weights, &cfg, &mut rng)? {
        results.insert(
            format!("{}/batch{}", r.mode, r.batch),
            serde_json::json!({
                "batch": r.batch, "seconds": r.seconds, "seconds_all": r.seconds_all,
                "new_tokens_per_second": r.new_tokens_per_second,
            }),
        );
    }
    let backend = match a.placement.device {
        DeviceChoice::Flex => "flex",
        DeviceChoice::Cuda(_) => "cuda",
    };
    let out = serde_json::json!({
        "framework": format!("bridge (burn {backend}, KV cache)"),
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "engine": a.engine.to_string(),
        "model": model_name, "dtype": a.placement.dtype.to_string(), "device": a.placement.device.to_string(),
        "prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats,
        "results": results,
    });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run(cli::Args::parse()) {
        eprintln!("bench_generate: {e}");
        std::process::exit(1);
    }
}
