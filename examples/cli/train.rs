//! The flags of `examples/train.rs`.

use bridge::train::{RunMode, TrainConfig, load_config};
use clap::Parser;
use std::path::PathBuf;

/// Train with BRIDGE or any baseline from a TOML config (schema: docs/config.md; working files:
/// examples/configs/).
#[derive(Parser, Debug)]
#[command(name = "train", allow_negative_numbers = true)]
pub struct Args {
    /// The run configuration.
    #[arg(long, value_name = "FILE.toml")]
    pub config: PathBuf,
    /// Continue the run in DIR from its newest checkpoint (DIR overrides `run.run_dir`).
    #[arg(long, value_name = "DIR", conflicts_with = "overwrite")]
    pub resume: Option<PathBuf>,
    /// Start afresh in `run.run_dir` even if it holds a previous run, deleting that run's
    /// metrics, checkpoints, plot and final model once every check has passed.
    #[arg(long)]
    pub overwrite: bool,
    /// Total optimisation steps (overrides `run.steps`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
}

impl Args {
    /// The config file with the flags applied, and how the run directory is treated.
    pub fn run(&self) -> bridge::core::Result<(TrainConfig, RunMode)> {
        let mut cfg = load_config(&self.config)?;
        if let Some(dir) = &self.resume {
            cfg.run.run_dir = dir.clone();
        }
        if let Some(n) = self.steps {
            cfg.run.steps = n;
        }
        let mode = match (&self.resume, self.overwrite) {
            (Some(_), _) => RunMode::Resume,
            (None, true) => RunMode::Overwrite,
            (None, false) => RunMode::Fresh,
        };
        Ok((cfg, mode))
    }
}
