//! Generates completions with the KV-cache engine (`bridge_models::generate`), printed as JSON.
//!
//! ```text
//! cargo run --release --example generate -- --model DIR|FILE.gguf (--text "..." | --ids "1 2 3") \
//!     [--greedy | --temperature T [--top-p P] [--top-k K] --seed S] --max-new-tokens N [--n K] \
//!     [--stop STRING]...
//! ```
//!
//! Output: `{"completions": [{"ids": [...], "text": "...", "logprobs": [...], "finish": "stop|length"}]}`
//! (`n` completions, sample by sample). `--text` encodes with the model's tokenizer (an HF
//! directory's `tokenizer.json`, or the GGUF file's own); the prompt is used as given (no chat
//! template, no special tokens added). With `--ids` the tokenizer is used for decoding when there
//! is one; without one, completions decode to empty text and only the config's `eos_token_id`s
//! stop a completion. The default is sampling at temperature 1 with seed 0.

use bridge_core::policy::{CausalLm, SamplingParams};
use bridge_core::{BridgeError, BridgeRng, IdsOnlyCodec, Result, TextCodec};
use bridge_models::decoder::Decoder;
use bridge_models::gguf::GgufFile;
use bridge_models::hf::open_model;
use bridge_models::tokenizer::HfCodec;
use burn::tensor::Device;
use std::path::{Path, PathBuf};

enum Input {
    Ids(Vec<u32>),
    Text(String),
}

struct Args {
    model: PathBuf,
    input: Input,
    params: SamplingParams,
    seed: u64,
}

fn usage() -> BridgeError {
    BridgeError::InvalidInput(
        "usage: generate --model DIR|FILE.gguf (--text \"...\" | --ids \"1 2 3\") [--greedy | --temperature T \
         [--top-p P] [--top-k K] --seed S] --max-new-tokens N [--n K] [--stop STRING]..."
            .into(),
    )
}

fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| BridgeError::InvalidInput(format!("{flag}: `{v}`: {e}")))
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut input, mut seed) = (None, None, 0u64);
    let mut params = SamplingParams { max_new_tokens: 32, ..Default::default() };
    let mut greedy = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(usage);
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--ids" => {
                let ids = value()?
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(|s| num::<u32>("--ids", s.to_owned()))
                    .collect::<Result<Vec<_>>>()?;
                input = Some(Input::Ids(ids));
            }
            "--text" => input = Some(Input::Text(value()?)),
            "--greedy" => greedy = true,
            "--temperature" => params.temperature = num(&a, value()?)?,
            "--top-p" => params.top_p = Some(num(&a, value()?)?),
            "--top-k" => params.top_k = Some(num(&a, value()?)?),
            "--seed" => seed = num(&a, value()?)?,
            "--max-new-tokens" => params.max_new_tokens = num(&a, value()?)?,
            "--n" => params.n = num(&a, value()?)?,
            "--stop" => params.stop_strings.push(value()?),
            "-h" | "--help" => return Err(usage()),
            other => return Err(BridgeError::InvalidInput(format!("unknown argument `{other}`"))),
        }
    }
    if greedy {
        params.temperature = 0.0;
    }
    params.validate()?;
    match (model, input) {
        (Some(model), Some(input)) => Ok(Args { model, input, params, seed }),
        _ => Err(usage()),
    }
}

fn is_gguf(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The model's tokenizer, or `None` when there is none (an HF directory without tokenizer.json).
fn load_codec(path: &Path) -> Result<Option<HfCodec>> {
    if is_gguf(path) {
        return HfCodec::from_gguf(&GgufFile::open(path)?).map(Some);
    }
    if path.join("tokenizer.json").is_file() { HfCodec::from_dir(path).map(Some) } else { Ok(None) }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let device = Device::flex();
    let (config, weights) = open_model(&args.model, &device)?;
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
