//! The flags of `examples/generate.rs`.

use crate::common::{List, ModelArgs, Placement, non_negative, positive, probability};
use bridge_core::SamplingParams;
use clap::Parser;

/// Generate completions with the KV-cache engine, printed as JSON.
#[derive(Parser, Debug)]
#[command(name = "generate", allow_negative_numbers = true)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["ids", "text"]))]
pub struct Args {
    /// The model and its adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt, encoded with the model's tokenizer (used as given: no chat template).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// The prompt's token ids, separated by spaces or commas.
    #[arg(long, value_name = "\"1 2 3\"")]
    pub ids: Option<List<u32>>,
    /// Greedy decoding (temperature 0).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Softmax temperature (0: greedy).
    #[arg(long, value_name = "T", default_value_t = 1.0, value_parser = non_negative)]
    pub temperature: f64,
    /// Nucleus sampling threshold, in (0, 1].
    #[arg(long, value_name = "P", value_parser = probability)]
    pub top_p: Option<f64>,
    /// Keep only the K most likely tokens.
    #[arg(long, value_name = "K", value_parser = positive)]
    pub top_k: Option<usize>,
    /// The sampling seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// New tokens per completion.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = positive)]
    pub max_new_tokens: usize,
    /// Completions per prompt.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = positive)]
    pub n: usize,
    /// A string that ends a completion; repeat for several.
    #[arg(long, value_name = "STRING")]
    pub stop: Vec<String>,
    /// Device and dtype.
    #[command(flatten)]
    pub placement: Placement,
}

impl Args {
    /// The sampling parameters, checked (an error names the field).
    pub fn params(&self) -> bridge_core::Result<SamplingParams> {
        let params = SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: if self.greedy { 0.0 } else { self.temperature },
            top_k: self.top_k,
            top_p: self.top_p,
            n: self.n,
            stop_strings: self.stop.clone(),
            ..SamplingParams::default()
        };
        params.validate()?;
        Ok(params)
    }
}
