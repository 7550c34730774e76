//! BRIDGE against its baselines, end to end on a CPU with nothing to download.
//!
//! ```text
//! cargo run --release --example quickstart [-- --quick] [--seeds N] [--seed S] [--sweep]
//!     [--sweep-only] [--reward-noise P] [--methods sft,bridge] [--run-dir DIR] [--threads N]
//!     [--config FILE.json] [--print-config]
//! ```
//!
//! Generates the embedded arithmetic task, pre-trains a tiny base model from scratch (cached in
//! the run directory), trains Base/SFT/RL-zero/Cold-start/alternating/BRIDGE on an equal step
//! budget, each at its own tuned hyper-parameters (`--sweep` re-runs the search on the validation
//! split), and prints a table of test accuracy per level, wall time and time to the best
//! baseline's final accuracy, and a table of the paper's claims; writes `results.json`,
//! `results.md` and `accuracy.png` (default run directory `runs/quickstart/`, or
//! `runs/quickstart-quick/` with `--quick`). See `docs/quickstart.md` and the
//! `bridge::quickstart` module.

use bridge::quickstart::{Method, QuickstartConfig, hyper_summary, run, sweep};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// BRIDGE against its baselines on the embedded arithmetic task (docs/quickstart.md).
#[derive(Parser, Debug)]
#[command(name = "quickstart")]
struct Args {
    /// A smaller run (≤ 2 minutes), the CI smoke test.
    #[arg(long)]
    quick: bool,
    /// Repeat with N seeds (S, S+1, …) and report mean ± std and the claims table.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    seeds: Option<usize>,
    /// The first seed.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Re-run the hyper-parameter search (every method, the same grid, scored on the validation
    /// split), then the comparison at the chosen settings.
    #[arg(long)]
    sweep: bool,
    /// With --sweep: stop after the search (print and write its table; no comparison).
    #[arg(long, requires = "sweep")]
    sweep_only: bool,
    /// Flip every RL reward with probability P (a noisy verifier).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    reward_noise: Option<f64>,
    /// The methods to run, comma-separated (base, sft, rl_zero, cold_start, alternating, bridge;
    /// also chord, luffy, ppo, bridge_unrolled).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    methods: Option<Vec<Method>>,
    /// Where to write (default runs/quickstart, or runs/quickstart-quick with --quick).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Compute threads (default 2; results depend on it, so keep it fixed to reproduce).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    threads: Option<usize>,
    /// The whole configuration as JSON (start from --print-config); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn config(&self) -> bridge::core::Result<QuickstartConfig> {
        let mut cfg = match (&self.config, self.quick) {
            (Some(path), _) => QuickstartConfig::load(path)?,
            (None, true) => {
                QuickstartConfig { run_dir: PathBuf::from("runs/quickstart-quick"), ..QuickstartConfig::quick() }
            }
            (None, false) => QuickstartConfig::full(),
        };
        cfg.seeds = self.seeds.unwrap_or(cfg.seeds);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.threads = self.threads.unwrap_or(cfg.threads);
        cfg.reward_noise = self.reward_noise.unwrap_or(cfg.reward_noise);
        if let Some(methods) = &self.methods {
            cfg.methods = methods.clone();
        }
        if let Some(dir) = &self.run_dir {
            cfg.run_dir = dir.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match args.config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        match serde_json::to_string_pretty(&cfg) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut progress = |line: &str| eprintln!("{line}");
    if args.sweep {
        eprintln!(
            "quickstart --sweep: {} seed(s) from {}, learning rates {:?}, BRIDGE λ {:?}, {} steps per run → {}",
            cfg.seeds,
            cfg.seed,
            cfg.sweep.lrs,
            cfg.sweep.lambdas,
            cfg.budget.steps,
            cfg.run_dir.display()
        );
        match sweep(&cfg, &mut progress) {
            Ok(report) => {
                println!("\nValidation accuracy of every setting:\n\n{}\n", report.table);
                println!("Wrote {} in {:.1} s.", report.path.display(), report.total_seconds);
                if args.sweep_only {
                    return ExitCode::SUCCESS;
                }
                cfg.hyper = report.chosen;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "quickstart: {} seed(s) from {}, {} threads, budget {} steps per method, reward noise {} → {}\n  settings: {}",
        cfg.seeds,
        cfg.seed,
        cfg.threads,
        cfg.budget.steps,
        cfg.reward_noise,
        cfg.run_dir.display(),
        hyper_summary(&cfg)
    );
    let unsearched: Vec<&str> = cfg.methods.iter().filter(|m| !m.searched()).map(|m| m.label()).collect();
    if !args.sweep && !unsearched.is_empty() {
        eprintln!(
            "note: the settings of {} were not chosen by the search (docs/quickstart.md): they are the nearest \
             searched method's; add --sweep to choose them on the validation split",
            unsearched.join(", ")
        );
    }
    match run(&cfg, &mut progress) {
        Ok(report) => {
            println!("\n{}\n", report.table);
            println!("{}\n", report.claims_table);
            println!("Budget: {}.", report.budget_unit);
            println!("Settings: {}.", hyper_summary(&cfg));
            println!(
                "Times are training wall time and CPU time (all threads) without evaluation ({} threads); \"→ best \
                 baseline\" is the CPU time at which a method first reached the best baseline's final accuracy on the \
                 same seed. Commit {}.",
                cfg.threads, report.commit
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("quickstart").chain(args.iter().copied()))
    }

    #[test]
    fn flags_parse_and_bad_flags_name_themselves() {
        let a = parse(&["--quick", "--seeds", "3", "--methods", "sft,bridge", "--reward-noise", "0.2"]).unwrap();
        let cfg = a.config().unwrap();
        assert_eq!((cfg.seeds, cfg.reward_noise), (3, 0.2));
        assert_eq!(cfg.methods, vec![Method::Sft, Method::Bridge]);
        for (args, flag) in [
            (&["--seeds", "ten"][..], "--seeds"),
            (&["--seeds", "-3"], "--seeds"),
            (&["--threads", "-1"], "--threads"),
            (&["--seed", "1.5"], "--seed"),
            (&["--threads", "x"], "--threads"),
            (&["--reward-noise", "lots"], "--reward-noise"),
            (&["--methods", "sft,trpo"], "--methods"),
            (&["--frobnicate"], "--frobnicate"),
            (&["--sweep-only"], "--sweep"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        // Values clap accepts but the configuration refuses.
        for (args, field) in [
            (&["--seeds", "0"][..], "seeds"),
            (&["--threads", "0"], "threads"),
            (&["--reward-noise", "2"], "reward_noise"),
            (&["--reward-noise", "-0.1"], "reward_noise"),
        ] {
            let e = parse(args).unwrap().config().unwrap_err().to_string();
            assert!(e.contains(field), "{args:?}: {e}");
        }
    }
}
