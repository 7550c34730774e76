//! Evaluate a model on math benchmarks: greedy pass@1, and with `--k` also avg@k, pass@k and
//! maj@k, scored by the answer verifier.
//!
//! ```text
//! cargo run --release --example eval -- --model DIR|FILE.gguf [--adapter DIR] --data FILE.jsonl
//!     [--data MORE.jsonl] [--k K] [--limit N] [--max-new-tokens N] [--out report.json]
//! ```
//!
//! `--model` is an HF model directory (`config.json`, safetensors, `tokenizer.json`) or a
//! `.gguf` file (its own tokenizer and chat template), opened as every example and `train` open
//! a model (`bridge_models::open_pretrained`); `--adapter` adds a PEFT LoRA adapter. Data files are
//! JSONL in GSM8K, MATH or generic (`prompt`/`question` + `answer`) form. The markdown summary
//! goes to stdout, progress to stderr, the full report (per-category scores, first failures) to
//! `--out`. Run with `--help` for every option (they are `examples/cli/eval.rs`).

#[path = "cli/eval.rs"]
mod cli;
#[path = "cli/common.rs"]
mod common;

use bridge::evaluate::evaluate_pretrained;
use bridge_core::Result;
use bridge_eval::runner::{EvalDataset, EvalProgress};
use clap::Parser;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: &cli::Args) -> Result<()> {
    let eval_config = args.eval_config()?;
    // The report's folders exist before the (long) evaluation, not after it.
    for path in [&args.out, &args.markdown].into_iter().flatten() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| bridge_core::BridgeError::io(dir, e))?;
        }
    }
    let datasets = args.data.iter().map(|p| EvalDataset::load(p, args.format)).collect::<Result<Vec<_>>>()?;
    for d in &datasets {
        eprintln!("{}: {} records ({})", d.name, d.len(), d.format.name());
    }
    let (_device, model) = args.placement.open(&args.model)?;
    eprintln!("model {} on {}", args.model.path.display(), args.placement.device);
    let mut progress = |p: &EvalProgress| eprintln!("[{}] {} {}/{}", p.dataset, p.mode, p.done, p.total);
    let report = evaluate_pretrained(model, &datasets, &eval_config, &mut progress)?;
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
