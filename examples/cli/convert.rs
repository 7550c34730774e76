//! The flags of `examples/convert.rs`.

use crate::common::ModelArgs;
use clap::Parser;
use std::path::PathBuf;

/// Write a model (an HF directory or a `.gguf` file, with `--adapter` merged in) as an HF
/// directory that transformers loads: config.json, model.safetensors (f32), tokenizer.json,
/// tokenizer_config.json (chat template) and generation_config.json.
#[derive(Parser, Debug)]
#[command(name = "convert")]
pub struct Args {
    /// The model and its adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The directory to write (created; one that holds files is refused without --overwrite).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace the model files of a directory that already holds some.
    #[arg(long)]
    pub overwrite: bool,
}
