//! The hyper-parameter search (`quickstart --sweep`): every method gets the same grid, budget,
//! data and evaluation, and is scored on the validation split.

use super::config::{Hyper, Method, QuickstartConfig};
use super::report::{Stat, render_table};
use super::results::{CurvePoint, source_commit};
use super::seed::{SeedSetup, Split, in_pool};
use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// One grid point of one method: its final validation accuracy on every seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The method.
    pub method: Method,
    /// The setting.
    pub hyper: Hyper,
    /// Final overall validation accuracy per seed, in seed order.
    pub val_accuracy: Vec<f64>,
    /// Final validation accuracy per level, per seed.
    pub val_levels: Vec<Vec<f64>>,
    /// Their mean over the seeds: what the choice maximises.
    pub mean: f64,
    /// Training wall time per seed, seconds.
    pub train_seconds: Vec<f64>,
}

/// What [`sweep`] returns (and writes as `sweep.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The source the numbers come from (see [`super::QuickstartReport::commit`]).
    pub commit: String,
    /// The configuration searched (its `hyper` is not used).
    pub config: QuickstartConfig,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Final base-model validation accuracy per seed (every method's starting point).
    pub base_val_accuracy: Vec<f64>,
    /// Every grid point of every method, in method then grid order.
    pub points: Vec<SweepPoint>,
    /// Each method's chosen setting: the grid point with the highest mean validation accuracy
    /// (the first in grid order on a tie).
    pub chosen: BTreeMap<Method, Hyper>,
    /// The printed table.
    pub table: String,
    /// Wall time, seconds.
    pub total_seconds: f64,
    /// `sweep.json`.
    pub path: PathBuf,
}

/// Runs every trained method of `cfg` at every point of its grid ([`super::SweepSpec::grid`]) on
/// every seed, for the full budget, scores each run by its final accuracy on the validation split
/// (`task.n_val` prompts, disjoint from test) and chooses, per method, the setting with the
/// highest mean over the seeds. Writes `sweep.json` and `sweep.md` to `cfg.run_dir`; the runs
/// themselves go to `RUN_DIR/seed-S/sweep/METHOD-SETTING/`.
///
/// The test split is not looked at. The base models are the same (and cached) as [`super::run`]'s,
/// and a run at the chosen setting trains exactly as it does in [`super::run`].
pub fn sweep(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<SweepReport> {
    cfg.validate()?;
    if cfg.task.n_val == 0 {
        return Err(BridgeError::config(
            "quickstart.task.n_val",
            "the sweep chooses on the validation split: set n_val > 0",
        ));
    }
    in_pool(cfg.threads, || sweep_in_pool(cfg, progress))
}

fn sweep_in_pool(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<SweepReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| BridgeError::io(&cfg.run_dir, e))?;
    let seeds = cfg.seed_list()?;
    let methods: Vec<Method> = cfg.methods.iter().copied().filter(|m| m.trains()).collect();
    let mut points: Vec<SweepPoint> = methods
        .iter()
        .flat_map(|&m| cfg.sweep.grid(m).into_iter().map(move |hyper| (m, hyper)))
        .map(|(method, hyper)| SweepPoint {
            method,
            hyper,
            val_accuracy: Vec::new(),
            val_levels: Vec::new(),
            mean: 0.0,
            train_seconds: Vec::new(),
        })
        .collect();
    let total = points.len() * seeds.len();
    let mut base_val_accuracy = Vec::new();
    let mut done = 0;
    for &seed in &seeds {
        let setup = SeedSetup::new(cfg, seed, progress)?;
        let mut base: CurvePoint = setup.evaluate(Split::Val, 0, 0.0, &setup.theta0, None)?;
        base.cpu_seconds = Some(0.0);
        progress(&format!("[seed {seed}] base: validation accuracy {:.3}", base.accuracy));
        base_val_accuracy.push(base.accuracy);
        for point in &mut points {
            done += 1;
            progress(&format!(
                "sweep run {done}/{total}: seed {seed}, {} at {}",
                point.method.label(),
                point.hyper.label()
            ));
            let dir = setup.seed_dir.join("sweep").join(format!("{}-{}", point.method.slug(), point.hyper.slug()));
            let run = setup.train(point.method, &point.hyper, Split::Val, cfg.budget.steps, &base, &dir, progress)?;
            let last = run.last().cloned().unwrap_or_else(|| base.clone());
            point.val_accuracy.push(last.accuracy);
            point.val_levels.push(last.levels);
            point.train_seconds.push(run.train_seconds);
        }
    }
    for p in &mut points {
        p.mean = Stat::of(&p.val_accuracy).map_or(0.0, |s| s.mean);
    }
    let chosen = choose(&points);
    let table = format_sweep(&points, &chosen, seeds.len());
    let path = cfg.run_dir.join("sweep.json");
    let report = SweepReport {
        commit: source_commit(),
        config: cfg.clone(),
        seeds,
        base_val_accuracy,
        points,
        chosen,
        table,
        total_seconds: started.elapsed().as_secs_f64(),
        path: path.clone(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    bridge_models::hf::write_atomic(&path, &json)?;
    let md = format!("{}\n\nCommit: {}.\n", report.table, report.commit);
    bridge_models::hf::write_atomic(&cfg.run_dir.join("sweep.md"), md.as_bytes())?;
    Ok(report)
}

/// Per method, the grid point with the highest mean validation accuracy; the first in grid order
/// (smaller learning rate, then smaller λ) on a tie.
pub fn choose(points: &[SweepPoint]) -> BTreeMap<Method, Hyper> {
    let mut best: BTreeMap<Method, &SweepPoint> = BTreeMap::new();
    for p in points {
        match best.get(&p.method) {
            Some(b) if b.mean >= p.mean => {}
            _ => {
                best.insert(p.method, p);
            }
        }
    }
    best.into_iter().map(|(m, p)| (m, p.hyper)).collect()
}

/// The sweep's table: one row per grid point, validation accuracy (%) mean ± std over the seeds,
/// the chosen rows marked.
pub fn format_sweep(points: &[SweepPoint], chosen: &BTreeMap<Method, Hyper>, seeds: usize) -> String {
    let mut rows = vec![vec!["method".to_owned(), "setting".into(), "val overall %".into(), "chosen".into()]];
    for p in points {
        let stat = Stat::of(&p.val_accuracy).unwrap_or(Stat { mean: 0.0, std: 0.0, n: 0 });
        rows.push(vec![
            p.method.label().to_owned(),
            p.hyper.label(),
            stat.show(100.0, 1, seeds > 1),
            if chosen.get(&p.method) == Some(&p.hyper) { "✓".into() } else { String::new() },
        ]);
    }
    render_table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(method: Method, lr: f64, lambda: Option<f64>, mean: f64) -> SweepPoint {
        SweepPoint {
            method,
            hyper: Hyper { lr, lambda },
            val_accuracy: vec![mean],
            val_levels: vec![vec![mean]],
            mean,
            train_seconds: vec![1.0],
        }
    }

    #[test]
    fn the_choice_is_the_best_mean_and_the_first_on_a_tie() {
        let points = [
            point(Method::Sft, 1e-4, None, 0.30),
            point(Method::Sft, 3e-4, None, 0.50),
            point(Method::Sft, 1e-3, None, 0.50),
            point(Method::Bridge, 1e-4, Some(0.25), 0.40),
            point(Method::Bridge, 1e-4, Some(0.5), 0.45),
            point(Method::Bridge, 3e-4, Some(0.25), 0.44),
        ];
        let chosen = choose(&points);
        assert_eq!(chosen[&Method::Sft], Hyper { lr: 3e-4, lambda: None });
        assert_eq!(chosen[&Method::Bridge], Hyper { lr: 1e-4, lambda: Some(0.5) });
        let table = format_sweep(&points, &chosen, 1);
        assert_eq!(table.lines().filter(|l| l.contains('✓')).count(), 2, "{table}");
        assert!(table.contains("lr 1e-4, λ 0.5"), "{table}");
    }
}
