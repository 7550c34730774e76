//! The flags of `examples/score.rs`.

use crate::common::{List, ModelArgs, Placement};
use clap::Parser;

/// Print a model's logits for one token sequence, as JSON.
#[derive(Parser, Debug)]
#[command(name = "score", allow_negative_numbers = true)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["ids", "text"]))]
pub struct Args {
    /// The model and its adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The token ids, separated by spaces or commas.
    #[arg(long, value_name = "\"1 2 3\"")]
    pub ids: Option<List<u32>>,
    /// Text, encoded with the model's tokenizer (no special tokens added).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// Device and dtype.
    #[command(flatten)]
    pub placement: Placement,
}
