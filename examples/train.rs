//! Train with BRIDGE or any baseline from a TOML config.
//!
//! ```text
//! cargo run --release --example train -- --config FILE.toml [--resume DIR] [--steps N]
//! ```
//!
//! The schema is documented in docs/config.md; examples/configs/ has working files. `--resume DIR`
//! continues the run in DIR from its newest checkpoint (DIR overrides `run.run_dir`).

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut config, mut resume, mut steps) = (None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--resume" => resume = args.next().map(PathBuf::from),
            "--steps" => steps = args.next().and_then(|s| s.parse::<u64>().ok()),
            "-h" | "--help" => {
                println!("usage: train --config FILE.toml [--resume DIR] [--steps N]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("train: unknown argument `{other}` (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("train: --config FILE.toml is required");
        return ExitCode::from(2);
    };
    let run = || -> bridge::core::Result<bridge::train::RunSummary> {
        let mut cfg = bridge::train::load_config(&config)?;
        if let Some(dir) = &resume {
            cfg.run.run_dir = dir.clone();
        }
        if let Some(n) = steps {
            cfg.run.steps = n;
        }
        bridge::train::train(&cfg, resume.is_some())
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
