//! Train with BRIDGE or any baseline from a TOML config.
//!
//! ```text
//! cargo run --release --example train -- --config FILE.toml [--resume DIR | --overwrite] [--steps N]
//! ```
//!
//! The schema, and the checks made before the first step, are documented in docs/config.md;
//! examples/configs/ has working files. `--resume DIR` continues the run in DIR from its newest
//! checkpoint (DIR overrides `run.run_dir`); `--overwrite` replaces a previous run in
//! `run.run_dir` (by default a run directory that holds one is refused). The flags are
//! `examples/cli/train.rs`.

#[path = "cli/train.rs"]
mod cli;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let run = || -> bridge::core::Result<bridge::train::RunSummary> {
        let (cfg, mode) = args.run()?;
        bridge::train::train(&cfg, mode)
    };
    match run() {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("train: {e}");
            ExitCode::FAILURE
        }
    }
}
