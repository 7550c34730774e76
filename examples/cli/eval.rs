//! The flags of `examples/eval.rs`.

use crate::common::{ModelArgs, Placement, non_negative, positive, probability};
use bridge_core::DataFormat;
use bridge_eval::runner::{EvalConfig, PromptTemplate, SampledEval};
use clap::Parser;
use std::path::PathBuf;

/// The instruction appended to each question unless `--instruction` or `--template` is given.
pub const DEFAULT_INSTRUCTION: &str = "Please reason step by step, and put your final answer within \\boxed{}.";

/// Evaluate a model on math benchmarks: greedy pass@1, and with `--k` also avg@k, pass@k and
/// maj@k, scored by the answer verifier. The markdown summary goes to stdout, progress to
/// stderr, the full report to `--out`.
#[derive(Parser, Debug)]
#[command(name = "eval", allow_negative_numbers = true)]
pub struct Args {
    /// The model and its adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Benchmark file (JSONL: GSM8K, MATH or generic); repeat for several.
    #[arg(long, value_name = "FILE.jsonl", required = true)]
    pub data: Vec<PathBuf>,
    /// auto, gsm8k, math, generic or prompt_completion.
    #[arg(long, value_name = "F", default_value = "auto")]
    pub format: DataFormat,
    /// Also sample K completions per prompt: avg@K, pass@j, maj@K.
    #[arg(long, value_name = "K", value_parser = positive)]
    pub k: Option<usize>,
    /// Sampling temperature (default 0.6).
    #[arg(long, value_name = "T", requires = "k", value_parser = non_negative)]
    pub temperature: Option<f64>,
    /// Nucleus threshold (default 0.95; 1 disables).
    #[arg(long, value_name = "P", requires = "k", value_parser = probability)]
    pub top_p: Option<f64>,
    /// Skip the greedy pass@1 run.
    #[arg(long, requires = "k")]
    pub no_greedy: bool,
    /// Only the first N records of each file.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub limit: Option<usize>,
    /// New tokens per completion.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive)]
    pub max_new_tokens: usize,
    /// Prompts per generation call.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = positive)]
    pub batch_size: usize,
    /// Sampling seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Appended to each question inside the chat template ("" for none; default: "Please reason
    /// step by step, and put your final answer within \boxed{}.").
    #[arg(long, value_name = "TEXT", conflicts_with = "template")]
    pub instruction: Option<String>,
    /// A plain prompt with {question}, no chat template.
    #[arg(long, value_name = "TEXT")]
    pub template: Option<String>,
    /// A stop string; repeat for several.
    #[arg(long, value_name = "STR")]
    pub stop: Vec<String>,
    /// Device and dtype.
    #[command(flatten)]
    pub placement: Placement,
    /// Write the JSON report there.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the markdown summary there.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Keep every completion's result in the JSON report.
    #[arg(long)]
    pub keep_records: bool,
}

impl Args {
    /// The evaluation settings the flags describe, checked.
    pub fn eval_config(&self) -> bridge_core::Result<EvalConfig> {
        let prompt = match (&self.instruction, &self.template) {
            (_, Some(template)) => PromptTemplate::Plain { template: template.clone() },
            (Some(i), None) if i.trim().is_empty() => PromptTemplate::default(),
            (Some(i), None) => PromptTemplate::chat_with(i),
            (None, None) => PromptTemplate::chat_with(DEFAULT_INSTRUCTION),
        };
        let sampled = self.k.map(|k| {
            let d = SampledEval::with_k(k);
            SampledEval {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_p: match self.top_p {
                    Some(p) if p >= 1.0 => None,
                    Some(p) => Some(p),
                    None => d.top_p,
                },
                ..d
            }
        });
        let config = EvalConfig {
            prompt,
            max_new_tokens: self.max_new_tokens,
            stop_strings: self.stop.clone(),
            batch_size: self.batch_size,
            limit: self.limit,
            greedy: !self.no_greedy,
            sampled,
            seed: self.seed,
            keep_records: self.keep_records,
            ..EvalConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}
