//! Generates completions with the KV-cache engine (`bridge_models::generate`), printed as JSON.
//!
//! ```text
//! cargo run --release --example generate -- --model DIR|FILE.gguf [--adapter DIR] (--text "..." | --ids "1 2 3") \
//!     [--greedy | --temperature T [--top-p P] [--top-k K] --seed S] --max-new-tokens N [--n K] \
//!     [--stop STRING]... [--dtype f32|bf16|f16] [--device flex|cuda:N]
//! ```
//!
//! Output: `{"completions": [{"ids": [...], "text": "...", "logprobs": [...], "finish": "stop|length"}]}`
//! (`n` completions, sample by sample). The model opens as in every example
//! (`bridge_models::open_pretrained`; `--adapter` adds a PEFT LoRA adapter). `--text` encodes with the model's tokenizer (an HF
//! directory's `tokenizer.json`, or the GGUF file's own); the prompt is used as given (no chat
//! template, no special tokens added). With `--ids` the tokenizer is used for decoding when there
//! is one; without one, completions decode to empty text and only the config's `eos_token_id`s
//! stop a completion. The default is sampling at temperature 1 with seed 0.
//!
//! `--dtype` casts the loaded weights (default `f32`; `bf16`/`f16` compute as `transformers` does
//! in that dtype, see `bridge_models::decoder`); the log-probabilities are f32 either way.
//! `--device` picks the backend: `flex` (the CPU, default) or `cuda:N` (`cuda` = `cuda:0`, in a
//! build with the `cuda` feature). The flags are `examples/cli/generate.rs`.

#[path = "cli/generate.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge_core::policy::CausalLm;
use bridge_core::{BridgeError, BridgeRng, IdsOnlyCodec, Result, TextCodec};
use bridge_models::decoder::Decoder;
use clap::Parser;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: cli::Args) -> Result<()> {
    let params = args.params()?;
    let (_device, mut model) = args.placement.open(&args.model)?;
    let (codec, ids): (Box<dyn TextCodec>, Vec<u32>) = match (args.ids, args.text, model.codec.take()) {
        (None, Some(text), Some(c)) => {
            let ids = c.encode(&text)?;
            (Box::new(c), ids)
        }
        (None, _, None) => {
            return Err(BridgeError::InvalidInput(format!(
                "--text needs a tokenizer, and {} has none (use --ids)",
                args.model.path.display()
            )));
        }
        (Some(ids), _, Some(c)) => (Box::new(c), ids.0),
        (Some(ids), _, None) => (Box::new(IdsOnlyCodec { vocab_size: model.config.vocab_size }), ids.0),
        (None, None, Some(_)) => return Err(BridgeError::InvalidInput("give --text or --ids".into())),
    };
    if ids.is_empty() {
        return Err(BridgeError::InvalidInput("the prompt has no tokens".into()));
    }
    let lm = Decoder::new(model.config, codec)?;
    let mut rng = BridgeRng::seed_from_u64(args.seed);
    let out = lm.sample(&model.weights, model.adapter.as_ref(), &[ids], &params, &mut rng)?;
    let completions: Vec<serde_json::Value> = out
        .iter()
        .map(|c| serde_json::json!({ "ids": c.tokens, "text": c.text, "logprobs": c.logprobs, "finish": c.finish }))
        .collect();
    println!("{}", serde_json::json!({ "completions": completions }));
    Ok(())
}

fn main() {
    if let Err(e) = run(cli::Args::parse()) {
        eprintln!("generate: {e}");
        std::process::exit(1);
    }
}
