//! BRIDGE against its baselines, end to end on a CPU with nothing to download.
//!
//! ```text
//! cargo run --release --example quickstart [-- --quick] [--seeds N] [--seed S] [--run-dir DIR] [--threads N]
//! ```
//!
//! Generates the embedded arithmetic task, pre-trains a tiny base model from scratch (cached in
//! the run directory), trains Base/SFT/RL-zero/Cold-start/alternating/BRIDGE on an equal step
//! budget, and prints a table of test accuracy per level, wall time and time to Cold-start's
//! final accuracy; writes `results.json`, `results.md` and `accuracy.png` (default run
//! directory `runs/quickstart/`, or `runs/quickstart-quick/` with `--quick`). See
//! `docs/quickstart.md` and the `bridge::quickstart` module.

use bridge::core::{BridgeError, Result};
use bridge::quickstart::{QuickstartConfig, run};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: quickstart [--quick] [--seeds N] [--seed S] [--run-dir DIR] [--threads N]
                  [--config FILE.json] [--print-config]

  --quick        a smaller run (≤ 2 minutes), the CI smoke test
  --seeds N      repeat with N seeds (S, S+1, …) and report mean ± std (default 1)
  --seed S       the first seed (default 0)
  --run-dir DIR  where to write (default runs/quickstart, or runs/quickstart-quick with --quick)
  --threads N    compute threads (default 2; results depend on it, so keep it fixed to reproduce)
  --config FILE  the whole configuration as JSON (start from --print-config); flags override it
  --print-config print the configuration as JSON and exit";

fn parse(args: &[String]) -> Result<Option<QuickstartConfig>> {
    let (mut quick, mut print, mut config) = (false, false, None);
    let (mut seeds, mut seed, mut run_dir, mut threads) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next().cloned().ok_or_else(|| BridgeError::InvalidInput(format!("{name} needs a value\n\n{USAGE}")))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>().map_err(|_| BridgeError::InvalidInput(format!("{name} needs a whole number, got {v:?}")))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--seeds" => seeds = Some(number("--seeds", value("--seeds")?)?),
            "--seed" => seed = Some(number("--seed", value("--seed")?)?),
            "--threads" => threads = Some(number("--threads", value("--threads")?)?),
            "--run-dir" => run_dir = Some(PathBuf::from(value("--run-dir")?)),
            "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--print-config" => print = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(BridgeError::InvalidInput(format!("unknown argument {other:?}\n\n{USAGE}"))),
        }
    }
    let mut cfg = match (&config, quick) {
        (Some(path), _) => QuickstartConfig::load(path)?,
        (None, true) => {
            QuickstartConfig { run_dir: PathBuf::from("runs/quickstart-quick"), ..QuickstartConfig::quick() }
        }
        (None, false) => QuickstartConfig::full(),
    };
    let too_big = |name: &str| BridgeError::InvalidInput(format!("{name} is too large"));
    if let Some(n) = seeds {
        cfg.seeds = usize::try_from(n).map_err(|_| too_big("--seeds"))?;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    if let Some(n) = threads {
        cfg.threads = usize::try_from(n).map_err(|_| too_big("--threads"))?;
    }
    if let Some(d) = run_dir {
        cfg.run_dir = d;
    }
    cfg.validate()?;
    if print {
        println!("{}", serde_json::to_string_pretty(&cfg).map_err(|e| BridgeError::InvalidInput(e.to_string()))?);
        return Ok(None);
    }
    Ok(Some(cfg))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            if !args.iter().any(|a| a == "--print-config") {
                println!("{USAGE}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "quickstart: {} seed(s) from {}, {} threads, budget {} steps per method → {}",
        cfg.seeds,
        cfg.seed,
        cfg.threads,
        cfg.budget.steps,
        cfg.run_dir.display()
    );
    match run(&cfg, &mut |line| eprintln!("{line}")) {
        Ok(report) => {
            println!("\n{}\n", report.table);
            println!("Budget: {}.", report.budget_unit);
            println!(
                "Times are training wall time without evaluation ({} threads); \"→ Cold-start\" is when a method \
                 first reached Cold-start's final accuracy.",
                cfg.threads
            );
            println!(
                "Wrote {} and {} in {:.1} s.",
                report.results_path.display(),
                report.plot_path.display(),
                report.total_seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
