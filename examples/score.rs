//! Prints the logits of a model for one token sequence, as JSON.
//!
//! ```text
//! cargo run --release --example score -- --model DIR (--ids "1 2 3" | --text "...")
//! ```
//!
//! Output: `{"ids": [...], "logits": [[...], ...]}` (one row of `vocab_size` logits per position).
//! `--text` encodes with the tokenizer of `DIR` (`tokenizer.json`, no special tokens added).

use bridge_core::{BridgeError, IdsOnlyCodec, Result, TextCodec};
use bridge_models::decoder::Decoder;
use bridge_models::hf::open_model;
use bridge_models::tokenizer::HfCodec;
use burn::tensor::{Device, Int, Tensor, TensorData};
use std::path::PathBuf;

enum Input {
    Ids(Vec<u32>),
    Text(String),
}

fn usage() -> BridgeError {
    BridgeError::InvalidInput("usage: score --model DIR (--ids \"1 2 3\" | --text \"...\")".into())
}

fn parse_args() -> Result<(PathBuf, Input)> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut input) = (None, None);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(usage);
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--ids" => {
                let ids = value()?
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<u32>().map_err(|e| BridgeError::InvalidInput(format!("--ids: `{s}`: {e}"))))
                    .collect::<Result<Vec<_>>>()?;
                input = Some(Input::Ids(ids));
            }
            "--text" => input = Some(Input::Text(value()?)),
            "-h" | "--help" => return Err(usage()),
            other => return Err(BridgeError::InvalidInput(format!("unknown argument `{other}`"))),
        }
    }
    match (model, input) {
        (Some(m), Some(i)) => Ok((m, i)),
        _ => Err(usage()),
    }
}

fn run() -> Result<()> {
    let (path, input) = parse_args()?;
    let device = Device::flex();
    let (config, weights) = open_model(&path, &device)?;
    let (codec, ids): (Box<dyn TextCodec>, Vec<u32>) = match input {
        Input::Ids(ids) => (Box::new(IdsOnlyCodec { vocab_size: 0 }), ids),
        Input::Text(text) => {
            let codec = HfCodec::from_dir(&path)?;
            let ids = codec.encode(&text)?;
            (Box::new(codec), ids)
        }
    };
    if ids.is_empty() {
        return Err(BridgeError::InvalidInput("no token ids to score".into()));
    }
    let lm = Decoder::new(config, codec)?;
    let t = ids.len();
    let tensor: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, t]), &device);
    let logits = lm.forward_logits(&weights, None, tensor, None)?;
    let v = logits.dims()[2];
    let flat: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading logits: {e:?}")))?;
    let rows: Vec<&[f32]> = flat.chunks(v).collect();
    let out = serde_json::json!({ "ids": ids, "logits": rows });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("score: {e}");
        std::process::exit(1);
    }
}
