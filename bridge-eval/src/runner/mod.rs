//! The benchmark runner: load a dataset, prompt a [`bridge_core::CausalLm`], score its
//! completions with the [`crate::verify`] answer checker, and report.
//!
//! * [`EvalDataset`]: JSONL in GSM8K, MATH or generic form ([`bridge_core::DataFormat`], auto-detected).
//! * [`PromptTemplate`]: the model's chat template (plus an optional instruction) or a plain
//!   `{question}` template.
//! * [`EvalConfig`]: greedy pass@1 and, with [`SampledEval`], k samples per prompt for avg@k,
//!   unbiased [`pass_at_k`] and maj@k ([`majority_vote`] over the verifier's normalised answers);
//!   batching, seeding, `limit`, `max_new_tokens`, stop strings.
//! * [`evaluate`] → [`EvalReport`]: per-dataset and per-category scores, generation statistics
//!   and the first failures, as JSON ([`EvalReport::write_json`]) or markdown
//!   ([`EvalReport::to_markdown`]).
//!
//! ```no_run
//! use bridge_core::testing::{BigramLm, CharCodec};
//! use bridge_core::{BridgeRng, DeviceChoice};
//! use bridge_core::DataFormat;
//! use bridge_eval::runner::{EvalConfig, EvalDataset, SampledEval, evaluate};
//! # fn main() -> bridge_core::Result<()> {
//! let lm = BigramLm::new(CharCodec::new("0123456789#? "));
//! let base = lm.init_base(1.0, &DeviceChoice::Flex.device()?, &mut BridgeRng::seed_from_u64(0));
//! let data = EvalDataset::load("test.jsonl", DataFormat::Auto)?;
//! let config = EvalConfig { sampled: Some(SampledEval::with_k(8)), limit: Some(100), ..EvalConfig::default() };
//! let report = evaluate(&lm, &base, None, &data, &config)?;
//! println!("{}", report.to_markdown());
//! report.write_json("report.json")?;
//! # Ok(())
//! # }
//! ```

mod config;
mod dataset;
mod eval;
mod prompt;
mod report;
mod score;

pub use config::{EvalConfig, SampledEval};
pub use dataset::{EvalDataset, EvalRecord};
pub use eval::{EvalProgress, encode_prompts, evaluate, evaluate_dataset, evaluate_datasets, score_completion};
pub use prompt::{PromptTemplate, QUESTION_PLACEHOLDER};
pub use report::{
    CategoryReport, DatasetReport, EvalReport, Failure, ModeScores, Outcome, PassAtK, RecordResult, SampleResult,
    shorten,
};
pub use score::{MajorityVote, majority_vote, pass_at_k};
