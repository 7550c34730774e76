//! Generates completions with the KV-cache engine (`bridge_models::generate`), printed as JSON.
//!
//! ```text
//! cargo run --release --example generate -- --model DIR|FILE.gguf (--text "..." | --ids "1 2 3") \
//!     [--greedy | --temperature T [--top-p P] [--top-k K] --seed S] --max-new-tokens N [--n K] \
//!     [--stop STRING]... [--dtype f32|bf16|f16] [--device flex|cuda:N]
//! ```
//!
//! Output: `{"completions": [{"ids": [...], "text": "...", "logprobs": [...], "finish": "stop|length"}]}`
//! (`n` completions, sample by sample). `--text` encodes with the model's tokenizer (an HF
//! directory's `tokenizer.json`, or the GGUF file's own); the prompt is used as given (no chat
//! template, no special tokens added). With `--ids` the tokenizer is used for decoding when there
//! is one; without one, completions decode to empty text and only the config's `eos_token_id`s
//! stop a completion. The default is sampling at temperature 1 with seed 0.
//!
//! `--dtype` casts the loaded weights (default `f32`; `bf16`/`f16` compute as `transformers` does
//! in that dtype, see `bridge_models::decoder`); the log-probabilities are f32 either way.
//! `--device` picks the backend: `flex` (the CPU, default) or `cuda:N` (`cuda` = `cuda:0`, in a
//! build with the `cuda` feature).

#[path = "common/args.rs"]
mod args;

use args::{Placement, list, load_codec, num};
use bridge_core::policy::{CausalLm, SamplingParams};
use bridge_core::{BridgeError, BridgeRng, IdsOnlyCodec, Result, TextCodec};
use bridge_models::decoder::Decoder;
use std::path::PathBuf;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

enum Input {
    Ids(Vec<u32>),
    Text(String),
}

struct Args {
    model: PathBuf,
    input: Input,
    params: SamplingParams,
    seed: u64,
    placement: Placement,
}

fn usage() -> BridgeError {
    BridgeError::InvalidInput(format!(
        "usage: generate --model DIR|FILE.gguf (--text \"...\" | --ids \"1 2 3\") [--greedy | --temperature T \
         [--top-p P] [--top-k K] --seed S] --max-new-tokens N [--n K] [--stop STRING]... {}",
        args::PLACEMENT_USAGE
    ))
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut input, mut seed) = (None, None, 0u64);
    let mut params = SamplingParams { max_new_tokens: 32, ..Default::default() };
    let mut placement = Placement::default();
    let mut greedy = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(usage);
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--ids" => input = Some(Input::Ids(list(&a, &value()?)?)),
            "--text" => input = Some(Input::Text(value()?)),
            "--greedy" => greedy = true,
            "--temperature" => params.temperature = num(&a, &value()?)?,
            "--top-p" => params.top_p = Some(num(&a, &value()?)?),
            "--top-k" => params.top_k = Some(num(&a, &value()?)?),
            "--seed" => seed = num(&a, &value()?)?,
            "--max-new-tokens" => params.max_new_tokens = num(&a, &value()?)?,
            "--n" => params.n = num(&a, &value()?)?,
            "--stop" => params.stop_strings.push(value()?),
            "--dtype" => placement.dtype = value()?.parse()?,
            "--device" => placement.device = value()?.parse()?,
            "-h" | "--help" => return Err(usage()),
            other => return Err(BridgeError::InvalidInput(format!("unknown argument `{other}`"))),
        }
    }
    if greedy {
        params.temperature = 0.0;
    }
    params.validate()?;
    match (model, input) {
        (Some(model), Some(input)) => Ok(Args { model, input, params, seed, placement }),
        _ => Err(usage()),
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let (_device, config, weights) = args.placement.open(&args.model)?;
    let codec = load_codec(&args.model)?;
    let (codec, ids): (Box<dyn TextCodec>, Vec<u32>) = match (args.input, codec) {
        (Input::Text(text), Some(c)) => {
            let ids = c.encode(&text)?;
            (Box::new(c), ids)
        }
        (Input::Text(_), None) => {
            return Err(BridgeError::InvalidInput(format!(
                "--text needs a tokenizer, and {} has none (use --ids)",
                args.model.display()
            )));
        }
        (Input::Ids(ids), Some(c)) => (Box::new(c), ids),
        (Input::Ids(ids), None) => (Box::new(IdsOnlyCodec { vocab_size: config.vocab_size }), ids),
    };
    if ids.is_empty() {
        return Err(BridgeError::InvalidInput("the prompt has no tokens".into()));
    }
    let lm = Decoder::new(config, codec)?;
    let mut rng = BridgeRng::seed_from_u64(args.seed);
    let out = lm.sample(&weights, None, &[ids], &args.params, &mut rng)?;
    let completions: Vec<serde_json::Value> = out
        .iter()
        .map(|c| serde_json::json!({ "ids": c.tokens, "text": c.text, "logprobs": c.logprobs, "finish": c.finish }))
        .collect();
    println!("{}", serde_json::json!({ "completions": completions }));
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("generate: {e}");
        std::process::exit(1);
    }
}
