//! Writes a model as an HF directory that `transformers` loads, e.g. a GGUF file for Python tools.
//!
//! ```text
//! cargo run --release --example convert -- --model DIR|FILE.gguf [--adapter DIR] --out DIR [--overwrite]
//! ```
//!
//! The model opens as in every example (`bridge_models::open_pretrained`): a `.gguf` file's
//! weights are dequantised to f32, its tokenizer and chat template rebuilt from its metadata;
//! `--adapter` (a PEFT LoRA directory) is merged into the weights. `--out` receives
//! `config.json`, `model.safetensors` (f32), `tokenizer.json`, `tokenizer_config.json` (BOS/EOS/
//! pad tokens, chat template) and `generation_config.json`
//! (`bridge_models::Pretrained::save_hf_dir`), which load with
//! `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`; the
//! logits transformers computes from it match ours on the GGUF file (`tests/convert.rs`,
//! `bridge-models/scripts/convert_reference.py`). The flags are `examples/cli/convert.rs`.

#[path = "cli/convert.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge_core::{BridgeError, Result};
use clap::Parser;
use std::process::ExitCode;

fn run(args: &cli::Args) -> Result<()> {
    let out = &args.out;
    let holds_files = out.is_dir() && std::fs::read_dir(out).map_err(|e| BridgeError::io(out, e))?.next().is_some();
    if holds_files && !args.overwrite {
        return Err(BridgeError::InvalidInput(format!(
            "--out {} already holds files (pass --overwrite to replace the model files in it)",
            out.display()
        )));
    }
    let device = burn::tensor::Device::flex();
    let model = bridge_models::open_pretrained(&args.model.path, args.model.adapter.as_deref(), &device)?;
    model.save_hf_dir(out)?;
    eprintln!(
        "{} ({:?}, {} layers, vocab {}{}) → {}",
        args.model.path.display(),
        model.config.architecture,
        model.config.num_hidden_layers,
        model.config.vocab_size,
        if model.adapter.is_some() { ", adapter merged" } else { "" },
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(&cli::Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert: {e}");
            ExitCode::FAILURE
        }
    }
}
