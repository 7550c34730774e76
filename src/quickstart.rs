//! The quickstart (`cargo run --release --example quickstart`): BRIDGE against its baselines on
//! the embedded arithmetic task, end to end on a CPU, with nothing to download.
//!
//! [`run`] does, for each seed:
//!
//! 1. generates the task splits ([`bridge_tasks`], seeded) and writes them to
//!    `RUN_DIR/seed-S/data/`: levels 1–2 are plain arithmetic the base model has seen worked
//!    out, levels 3–4 need a skill it has never seen (squares, `a^2`) that only the
//!    demonstrations show;
//! 2. pre-trains a tiny Qwen2-style base model from scratch on the pre-training text (LM loss on
//!    every token, AdamW) and caches it as an HF directory `RUN_DIR/base-HASH/`, where `HASH`
//!    digests the model, pre-training and task settings, the seed and the thread count: a second
//!    run reuses it;
//! 3. trains SFT, RL-zero, Cold-start, naive alternating and BRIDGE from that base on an **equal
//!    budget of optimisation steps** ([`BudgetSpec::steps`] calls of
//!    [`TrainingAlgorithm::step`](bridge_bilevel::TrainingAlgorithm), the unit of
//!    [`bridge_bilevel::run_steps`]; Cold-start's SFT stage counts inside it), each at **its own
//!    hyper-parameters** ([`QuickstartConfig::hyper`], chosen by [`sweep`] on the validation
//!    split), evaluating each greedily on the test split every [`BudgetSpec::eval_every`] steps.
//!    The clock of a method counts its training only: evaluation time is measured and left out;
//! 4. summarises (mean ± std over seeds) test accuracy per level and overall, training wall time,
//!    and the time each method needs to reach the best baseline's final accuracy; and tests the
//!    paper's claims on paired differences ([`claims`]);
//! 5. writes `results.json` (with the commit and every setting), `results.md` (the tables) and
//!    `accuracy.png` (accuracy against training wall time, one series per method) to the run
//!    directory.
//!
//! [`sweep`] is the hyper-parameter search every method gets alike: the same grid of learning
//! rates ([`SweepSpec::lrs`]) — crossed with [`SweepSpec::lambdas`] for BRIDGE — the same step
//! budget, data and evaluation, scored by the final accuracy on the validation split (disjoint
//! from test), averaged over the seeds. Its choice is what [`QuickstartConfig::full`] runs.
//!
//! The flex backend is deterministic for a fixed thread count, and its reductions split their
//! work by the thread count, so [`run`] executes everything in a rayon pool of exactly
//! [`QuickstartConfig::threads`] threads (2 by default): the table is reproducible from the seed
//! and the thread count, on any machine with the same floating-point behaviour.

mod claims;
mod config;
mod report;
mod results;
mod seed;
mod sweep;

pub use claims::{Claim, Verdict, claims, format_claims};
pub use config::*;
pub use report::{MethodSummary, Stat, format_table, summarise};
pub use results::*;
use seed::{SeedSetup, in_pool};
pub use seed::{base_dir, pretrain};
pub use sweep::{SweepPoint, SweepReport, sweep};

use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// What [`run`] returns (and writes as `results.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The source the numbers come from: `git` commit of the build's source tree (`+dirty` when
    /// it had uncommitted changes), or `unknown`.
    pub commit: String,
    /// The configuration.
    pub config: QuickstartConfig,
    /// The budget unit, in words.
    pub budget_unit: String,
    /// Per seed.
    pub seeds: Vec<SeedRun>,
    /// Per method, over the seeds.
    pub summary: Vec<MethodSummary>,
    /// The paper's claims, tested on paired differences over the seeds.
    pub claims: Vec<Claim>,
    /// The printed table.
    pub table: String,
    /// The printed claims table.
    pub claims_table: String,
    /// Wall time of the whole invocation, seconds.
    pub total_seconds: f64,
    /// The machine's load average (1, 5, 15 minutes) when the run ended (Linux; empty
    /// elsewhere): how much else was running while the wall times were measured.
    #[serde(default)]
    pub load_average: Vec<f64>,
    /// `results.json`.
    pub results_path: PathBuf,
    /// The accuracy-against-time PNG.
    pub plot_path: PathBuf,
}

/// The budget unit, as `results.json` and the table state it.
pub const BUDGET_UNIT: &str = "optimisation steps: one TrainingAlgorithm::step each (one SFT batch, one RL batch, or one \
     of each for alternating and BRIDGE); Cold-start's SFT stage counts inside the budget";

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`; empty where there is none.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// Runs the quickstart: every seed, every method at its [`QuickstartConfig::hyper`], then the
/// tables, `results.json` and the plot. `progress` receives one line per phase and evaluation.
pub fn run(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    cfg.validate()?;
    in_pool(cfg.threads, || run_in_pool(cfg, progress))
}

fn run_in_pool(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| BridgeError::io(&cfg.run_dir, e))?;
    let mut seeds = Vec::with_capacity(cfg.seeds);
    for seed in cfg.seed_list()? {
        let setup = SeedSetup::new(cfg, seed, progress)?;
        seeds.push(setup.run_methods(progress)?);
    }
    let summary = summarise(&cfg.methods, &seeds, cfg.task.levels);
    let table = format_table(&summary, cfg.task.levels, seeds.len());
    let claims = claims(&seeds, &cfg.budget);
    let claims_table = format_claims(&claims);
    let results_path = cfg.run_dir.join("results.json");
    let plot_path = cfg.run_dir.join("accuracy.png");
    report::plot(&cfg.methods, &seeds, cfg.task.levels, &plot_path)?;
    let mut report = QuickstartReport {
        commit: source_commit(),
        config: cfg.clone(),
        budget_unit: BUDGET_UNIT.replace("  ", " "),
        seeds,
        summary,
        claims,
        table,
        claims_table,
        total_seconds: 0.0,
        load_average: load_average(),
        results_path: results_path.clone(),
        plot_path,
    };
    report.total_seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    bridge_models::hf::write_atomic(&results_path, &json)?;
    let md = format!(
        "{}\n\n{}\n\nBudget: {}.\nCommit: {}. Hyper-parameters: {}. Reward noise: {}.\n",
        report.table,
        report.claims_table,
        report.budget_unit,
        report.commit,
        hyper_summary(cfg),
        cfg.reward_noise
    );
    bridge_models::hf::write_atomic(&cfg.run_dir.join("results.md"), md.as_bytes())?;
    Ok(report)
}

/// `SFT lr 3e-4; …; BRIDGE lr 1e-3, λ 0.5` for the trained methods of `cfg`.
pub fn hyper_summary(cfg: &QuickstartConfig) -> String {
    cfg.methods
        .iter()
        .filter_map(|m| cfg.hyper.get(m).map(|h| format!("{} {}", m.label(), h.label())))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_tasks::{TaskConfig, generate};

    #[test]
    fn presets_validate_and_the_cache_key_tracks_the_config() {
        for cfg in [QuickstartConfig::full(), QuickstartConfig::quick(), QuickstartConfig::miniature("x")] {
            cfg.validate().unwrap();
        }
        let cfg = QuickstartConfig::full();
        let a = base_dir(&cfg, &cfg.task).unwrap();
        assert_eq!(a, base_dir(&cfg.clone(), &cfg.task).unwrap());
        let other = TaskConfig { seed: 1, ..cfg.task.clone() };
        assert_ne!(a, base_dir(&cfg, &other).unwrap());
        let bad = QuickstartConfig { seeds: 0, ..QuickstartConfig::full() };
        assert!(bad.validate().unwrap_err().to_string().contains("seeds"));
        let bad = QuickstartConfig {
            budget: BudgetSpec { cold_start_sft_steps: 1000, ..QuickstartConfig::full().budget },
            ..QuickstartConfig::full()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("cold_start_sft_steps"));
        // Hyper-parameters: every trained method has its own, λ is BRIDGE's alone.
        let mut bad = QuickstartConfig::full();
        bad.hyper.remove(&Method::RlZero);
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.rl_zero"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Sft, Hyper { lr: 1e-3, lambda: Some(0.5) });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.sft.lambda"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Bridge, Hyper { lr: 1e-3, lambda: None });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.bridge.lambda"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Bridge, Hyper { lr: -1.0, lambda: Some(0.5) });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.bridge.lr"));
        for (cfg, field) in [
            (QuickstartConfig { reward_noise: 1.5, ..QuickstartConfig::full() }, "reward_noise"),
            (QuickstartConfig { methods: vec![Method::Sft, Method::Sft], ..QuickstartConfig::full() }, "methods"),
            (
                QuickstartConfig { sweep: SweepSpec { lrs: vec![], lambdas: vec![0.5] }, ..QuickstartConfig::full() },
                "sweep.lrs",
            ),
            (
                QuickstartConfig {
                    sweep: SweepSpec { lrs: vec![1e-3], lambdas: vec![1.0] },
                    ..QuickstartConfig::full()
                },
                "sweep.lambdas[0]",
            ),
            (
                QuickstartConfig {
                    budget: BudgetSpec { group_size: 1, ..QuickstartConfig::full().budget },
                    ..QuickstartConfig::full()
                },
                "group_size",
            ),
            (
                QuickstartConfig {
                    budget: BudgetSpec { max_new_tokens: 400, ..QuickstartConfig::full().budget },
                    ..QuickstartConfig::full()
                },
                "max_new_tokens",
            ),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        // The JSON form round-trips, with the methods' slugs as keys.
        let cfg = QuickstartConfig::full();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"rl_zero\":{\"lr\"") && json.contains("\"lambda\""), "{json}");
        assert_eq!(serde_json::from_str::<QuickstartConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let Some(a) = process_cpu_seconds() else { return };
        // Busy work until this process has used 0.1 s of CPU (however loaded the machine is).
        let (mut x, t) = (0u64, Instant::now());
        let mut b = a;
        while b - a < 0.1 && t.elapsed().as_secs_f64() < 120.0 {
            for _ in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            b = process_cpu_seconds().unwrap();
        }
        assert!(b - a >= 0.1, "{a} → {b} ({x}): the CPU time does not grow with work");
        assert!(b - a <= t.elapsed().as_secs_f64() * 2.0 + 0.05, "one thread cannot use more CPU than wall time");
    }

    #[test]
    fn methods_parse_from_slugs_and_labels() {
        for m in Method::ALL {
            assert_eq!(m.slug().parse::<Method>().unwrap(), m);
            assert_eq!(m.label().parse::<Method>().unwrap(), m);
        }
        assert_eq!("rl-zero".parse::<Method>().unwrap(), Method::RlZero);
        assert_eq!("PPO".parse::<Method>().unwrap(), Method::Ppo);
        assert_eq!("bridge-unrolled".parse::<Method>().unwrap(), Method::BridgeUnrolled);
        let e = "trpo".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("methods") && e.contains("trpo") && e.contains("luffy"), "{e}");
        // The default comparison is the paper's; the others run when asked for.
        assert_eq!(QuickstartConfig::full().methods, Method::DEFAULT.to_vec());
        for m in Method::ALL {
            assert_eq!(
                Method::DEFAULT.contains(&m),
                !matches!(m, Method::Chord | Method::Luffy | Method::Ppo | Method::BridgeUnrolled)
            );
            assert!(QuickstartConfig::full().hyper.contains_key(&m) || !m.trains(), "{m:?} has default settings");
        }
    }

    #[test]
    fn the_sweep_grid_crosses_lambda_for_the_bridge_methods_only() {
        let spec = SweepSpec { lrs: vec![1e-4, 1e-3], lambdas: vec![0.25, 0.75] };
        assert_eq!(spec.grid(Method::Base), vec![]);
        assert_eq!(spec.grid(Method::Sft), vec![Hyper { lr: 1e-4, lambda: None }, Hyper { lr: 1e-3, lambda: None }]);
        let b = spec.grid(Method::Bridge);
        assert_eq!(b.len(), 4);
        assert_eq!(b[1], Hyper { lr: 1e-4, lambda: Some(0.75) });
        assert_eq!(b[1].slug(), "lr1e-4-l0.75");
        assert_eq!(spec.grid(Method::BridgeUnrolled), b);
        assert_eq!(spec.grid(Method::Chord).len(), 2, "CHORD, LUFFY, PPO: the learning rate only");
    }

    #[test]
    fn the_presets_tasks_generate_with_their_per_level_counts() {
        for cfg in [QuickstartConfig::full(), QuickstartConfig::quick()] {
            let task = &cfg.task;
            let splits = generate(task).unwrap();
            let count = |ps: &[bridge_tasks::Problem]| {
                (1..=task.levels).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>()
            };
            assert_eq!(count(&splits.problems.test), task.test_per_level);
            assert_eq!(count(&splits.problems.sft), task.sft_per_level);
            assert_eq!(count(&splits.problems.rl), task.rl_per_level);
            assert_eq!(count(&splits.problems.val), task.val_per_level);
            assert_eq!(splits.pretrain.len(), task.n_pretrain);
        }
    }
}
