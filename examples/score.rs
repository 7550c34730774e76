//! Prints the logits of a model for one token sequence, as JSON.
//!
//! ```text
//! cargo run --release --example score -- --model DIR|FILE.gguf [--adapter DIR] \
//!     (--ids "1 2 3" | --text "...") [--dtype f32|bf16|f16] [--device flex|cuda:N]
//! ```
//!
//! The flags are `examples/cli/score.rs` (`--help` lists them).
//!
//! Output: `{"ids": [...], "logits": [[...], ...]}` (one row of `vocab_size` f32 logits per
//! position). The model opens as in every example (`bridge_models::open_pretrained`; `--adapter`
//! adds a PEFT LoRA adapter). `--text` encodes with the model's tokenizer (an HF directory's `tokenizer.json`, or
//! the GGUF file's own; no special tokens added). `--dtype` casts the loaded weights (default
//! `f32`; the logits are f32 whatever the dtype, see `bridge_models::decoder`); `--device` picks
//! the backend: `flex` (the CPU, default) or `cuda:N` (`cuda` = `cuda:0`, in a build with the
//! `cuda` feature).

#[path = "cli/score.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge_core::{BridgeError, IdsOnlyCodec, Result, TextCodec};
use bridge_models::decoder::Decoder;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Parser;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: cli::Args) -> Result<()> {
    let (device, mut model) = args.placement.open(&args.model)?;
    let (codec, ids): (Box<dyn TextCodec>, Vec<u32>) = match (args.ids, args.text) {
        (Some(ids), _) => (Box::new(IdsOnlyCodec { vocab_size: 0 }), ids.0),
        (None, text) => {
            let codec = model.codec.take().ok_or_else(|| {
                BridgeError::InvalidInput(format!(
                    "--text needs a tokenizer, and {} has none (use --ids)",
                    args.model.path.display()
                ))
            })?;
            let ids = codec.encode(&text.unwrap_or_default())?;
            (Box::new(codec), ids)
        }
    };
    if ids.is_empty() {
        return Err(BridgeError::InvalidInput("no token ids to score".into()));
    }
    let lm = Decoder::new(model.config, codec)?;
    let t = ids.len();
    let tensor: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, t]), &device);
    let logits = lm.forward_logits(&model.weights, model.adapter.as_ref(), tensor, None)?;
    let v = logits.dims()[2];
    let flat: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading logits: {e}")))?;
    let rows: Vec<&[f32]> = flat.chunks(v).collect();
    let out = serde_json::json!({ "ids": ids, "logits": rows });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run(cli::Args::parse()) {
        eprintln!("score: {e}");
        std::process::exit(1);
    }
}
