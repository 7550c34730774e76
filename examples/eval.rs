//! Evaluate a model on math benchmarks: greedy pass@1, and with `--k` also avg@k, pass@k and
//! maj@k, scored by the answer verifier.
//!
//! ```text
//! cargo run --release --example eval -- --model DIR --data FILE.jsonl [--data MORE.jsonl]
//!     [--k K] [--limit N] [--max-new-tokens N] [--out report.json]
//! ```
//!
//! `DIR` is an HF model directory (`config.json`, safetensors, `tokenizer.json`); data files are
//! JSONL in GSM8K, MATH or generic (`prompt`/`question` + `answer`) form. The markdown summary
//! goes to stdout, progress to stderr, the full report (per-category scores, first failures) to
//! `--out`. Run with `--help` for every option (they are `examples/cli/eval.rs`).

#[path = "cli/eval.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge_core::Result;
use bridge_eval::runner::{EvalDataset, EvalProgress, evaluate_datasets};
use bridge_models::tokenizer::HfCodec;
use bridge_models::{Decoder, LoraAdapter, open_model};
use clap::Parser;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: &cli::Args) -> Result<()> {
    let eval_config = args.eval_config()?;
    let datasets = args.data.iter().map(|p| EvalDataset::load(p, args.format)).collect::<Result<Vec<_>>>()?;
    for d in &datasets {
        eprintln!("{}: {} records ({})", d.name, d.len(), d.format.name());
    }
    let device = args.device.device()?;
    let (config, weights) = open_model(&args.model, &device)?;
    let adapter = args.adapter.as_ref().map(|dir| LoraAdapter::load_peft(dir, &config, &device)).transpose()?;
    let codec = HfCodec::from_dir(&args.model)?;
    let lm = Decoder::new(config, Box::new(codec))?;
    eprintln!("model {} on {}", args.model.display(), args.device);

    let mut progress = |p: &EvalProgress| eprintln!("[{}] {} {}/{}", p.dataset, p.mode, p.done, p.total);
    let report = evaluate_datasets(&lm, &weights, adapter.as_ref(), &datasets, &eval_config, &mut progress)?;
    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(path) = &args.out {
        report.write_json(path)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.markdown {
        report.write_markdown(path)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(&cli::Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eval: {e}");
            ExitCode::FAILURE
        }
    }
}
