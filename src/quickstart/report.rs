//! The quickstart's summary over seeds, its table and its plot.

use super::config::Method;
use super::results::{CurvePoint, MethodRun, SeedRun};
use bridge_core::Result;
use bridge_report::plot::{LineChart, grid};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Mean and sample standard deviation over seeds (std 0 for one seed).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator).
    pub std: f64,
    /// Values it summarises.
    pub n: usize,
}

impl Stat {
    /// The statistics of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        Some(Self { mean, std, n })
    }

    /// `mean ± std` (or just the mean) of the values times `scale`.
    pub fn show(&self, scale: f64, decimals: usize, with_std: bool) -> String {
        if with_std {
            format!("{:.d$} ± {:.d$}", self.mean * scale, self.std * scale, d = decimals)
        } else {
            format!("{:.d$}", self.mean * scale, d = decimals)
        }
    }
}

/// One method's row of the table, over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method.
    pub method: Method,
    /// Final test accuracy of level 1, 2, … (fractions).
    pub levels: Vec<Stat>,
    /// Final overall test accuracy.
    pub overall: Stat,
    /// Training wall time, seconds.
    pub train_seconds: Stat,
    /// Training CPU time (all threads), seconds, over the runs that report it.
    #[serde(default)]
    pub train_cpu_seconds: Option<Stat>,
    /// Training CPU time ([`CurvePoint::cpu_time`]) until the test accuracy first reached
    /// the best baseline's final accuracy of the same seed (the highest final accuracy among SFT, RL-zero, Cold-start and
    /// alternating), over the seeds where it did (`None`: no seed did, or no baseline ran).
    pub time_to_best_baseline: Option<Stat>,
    /// Seeds on which the method reached the best baseline's final accuracy.
    pub reached_best_baseline: usize,
    /// Final overall accuracy minus RL-zero's on the same seed (a paired difference: the seeds'
    /// base models differ far more than the methods do); `None` for RL-zero itself or without an
    /// RL-zero run.
    #[serde(default)]
    pub minus_rl_zero: Option<Stat>,
}

/// The baseline with the highest final test accuracy on `seed` (the first in table order on a
/// tie), with that accuracy; `None` when no baseline ran.
pub fn best_baseline(seed: &SeedRun) -> Option<(Method, f64)> {
    let mut best: Option<(Method, f64)> = None;
    for m in Method::BASELINES {
        if let Some(acc) = seed.final_accuracy(m)
            && best.is_none_or(|(_, b)| acc > b)
        {
            best = Some((m, acc));
        }
    }
    best
}

/// The per-method summary of `seeds`, in the order of `methods`.
pub fn summarise(methods: &[Method], seeds: &[SeedRun], levels: u32) -> Vec<MethodSummary> {
    let zero = Stat { mean: 0.0, std: 0.0, n: 0 };
    methods
        .iter()
        .map(|&method| {
            let runs: Vec<(&SeedRun, &MethodRun)> =
                seeds.iter().filter_map(|s| s.methods.iter().find(|m| m.method == method).map(|m| (s, m))).collect();
            let finals: Vec<&CurvePoint> = runs.iter().filter_map(|(_, m)| m.last()).collect();
            let level = |l: usize| {
                Stat::of(&finals.iter().map(|p| p.levels.get(l).copied().unwrap_or(0.0)).collect::<Vec<_>>())
            };
            let times: Vec<f64> = runs.iter().filter_map(|(s, m)| m.time_to_reach(best_baseline(s)?.1)).collect();
            let paired: Vec<f64> = seeds
                .iter()
                .filter_map(|s| {
                    let own = s.methods.iter().find(|m| m.method == method)?.last()?.accuracy;
                    let rl = s.methods.iter().find(|m| m.method == Method::RlZero)?.last()?.accuracy;
                    Some(own - rl)
                })
                .collect();
            MethodSummary {
                minus_rl_zero: if method == Method::RlZero { None } else { Stat::of(&paired) },
                method,
                levels: (0..levels as usize).map(|l| level(l).unwrap_or(zero)).collect(),
                overall: Stat::of(&finals.iter().map(|p| p.accuracy).collect::<Vec<_>>()).unwrap_or(zero),
                train_seconds: Stat::of(&runs.iter().map(|(_, m)| m.train_seconds).collect::<Vec<_>>()).unwrap_or(zero),
                train_cpu_seconds: Stat::of(&runs.iter().filter_map(|(_, m)| m.train_cpu_seconds).collect::<Vec<_>>()),
                reached_best_baseline: times.len(),
                time_to_best_baseline: Stat::of(&times),
            }
        })
        .collect()
}

/// The table: accuracy (%) per level and overall, the overall accuracy minus RL-zero's on the same
/// seed (points), training wall time and CPU time, and the CPU time to the best baseline's final
/// accuracy (s), as mean ± std when there are several seeds.
pub fn format_table(summary: &[MethodSummary], levels: u32, seeds: usize) -> String {
    let multi = seeds > 1;
    let mut header: Vec<String> = vec!["method".into()];
    header.extend((1..=levels).map(|l| format!("L{l} %")));
    header.extend([
        "overall %".into(),
        "− RL-zero".into(),
        "train s".into(),
        "train CPU s".into(),
        "→ best baseline, CPU s".into(),
    ]);
    let mut rows = vec![header];
    for s in summary {
        let mut row = vec![s.method.label().to_owned()];
        row.extend(s.levels.iter().map(|l| l.show(100.0, 1, multi)));
        row.push(s.overall.show(100.0, 1, multi));
        row.push(match &s.minus_rl_zero {
            None => "—".into(),
            Some(d) => format!("{}{}", if d.mean >= 0.0 { "+" } else { "" }, d.show(100.0, 1, multi)),
        });
        row.push(s.train_seconds.show(1.0, 1, multi));
        row.push(s.train_cpu_seconds.map_or("—".into(), |t| t.show(1.0, 1, multi)));
        row.push(match &s.time_to_best_baseline {
            None => "—".into(),
            Some(t) if t.n < seeds => format!("{} ({}/{seeds})", t.show(1.0, 1, t.n > 1), t.n),
            Some(t) => t.show(1.0, 1, multi),
        });
        rows.push(row);
    }
    render_table(&rows)
}

/// A markdown table of `rows` (the first is the header): the first column left-aligned, the
/// others right-aligned, every column padded to its widest cell.
pub(super) fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |x| x.chars().count())).max().unwrap_or(0)).collect();
    let line = |r: &[String]| {
        let cells: Vec<String> = (0..cols)
            .map(|c| {
                let x = r.get(c).map_or("", |x| x.as_str());
                let pad = widths[c] - x.chars().count();
                if c == 0 { format!("{x}{}", " ".repeat(pad)) } else { format!("{}{x}", " ".repeat(pad)) }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let Some((header, body)) = rows.split_first() else { return String::new() };
    let mut out = vec![line(header)];
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| if c == 0 { "-".repeat(*w) } else { format!("{}:", "-".repeat(w.saturating_sub(1))) })
        .collect();
    out.push(format!("| {} |", rule.join(" | ")));
    out.extend(body.iter().map(|r| line(r)));
    out.join("\n")
}

/// Mean curve of `method` over the seeds, point by point (every seed evaluates at the same steps).
fn mean_curve(method: Method, seeds: &[SeedRun], value: impl Fn(&CurvePoint) -> f64) -> Vec<(f64, f64)> {
    let curves: Vec<&Vec<CurvePoint>> =
        seeds.iter().filter_map(|s| s.methods.iter().find(|m| m.method == method).map(|m| &m.curve)).collect();
    let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
    (0..len)
        .map(|i| {
            let n = curves.len() as f64;
            let t = curves.iter().map(|c| c[i].seconds).sum::<f64>() / n;
            let v = curves.iter().map(|c| value(&c[i])).sum::<f64>() / n;
            (t, v)
        })
        .collect()
}

/// `accuracy.png`: test accuracy against training wall time, overall and on the hardest level,
/// one series per method (the mean over seeds); Base is a flat line.
pub(super) fn plot(methods: &[Method], seeds: &[SeedRun], levels: u32, path: &Path) -> Result<()> {
    let hardest = levels as usize - 1;
    let t_max = methods
        .iter()
        .flat_map(|&m| mean_curve(m, seeds, |p| p.accuracy))
        .map(|(t, _)| t)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let chart = |title: String, value: &dyn Fn(&CurvePoint) -> f64| {
        let mut c = LineChart::new(title).x_label("training wall time (s)").y_label("test accuracy").y_range(0.0, 1.0);
        for &m in methods {
            let mut points = mean_curve(m, seeds, value);
            if let (Method::Base, Some(&(_, v))) = (m, points.first()) {
                points = vec![(0.0, v), (t_max, v)];
            }
            c = c.series(m.label(), points);
        }
        c
    };
    let suffix = if seeds.len() > 1 { format!(" (mean of {} seeds)", seeds.len()) } else { String::new() };
    let overall = chart(format!("test accuracy{suffix}"), &|p| p.accuracy);
    let hard = chart(format!("level {levels} accuracy{suffix}"), &|p| p.levels.get(hardest).copied().unwrap_or(0.0));
    grid(vec![overall, hard], 2).save_png(path, 1400, 560)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_the_sample_std() {
        let s = Stat::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
        assert_eq!(Stat::of(&[5.0]).unwrap().std, 0.0);
        assert!(Stat::of(&[]).is_none());
        assert_eq!(s.show(100.0, 1, true), "200.0 ± 100.0");
    }

    /// The "− RL-zero" column pairs seeds: two seeds whose bases differ by 40 points, and a method
    /// that beats RL-zero by 5 and 7 points on them, give +6.0 ± 1.4 (the unpaired means would
    /// carry the 40-point spread).
    #[test]
    fn differences_to_rl_zero_are_paired_by_seed() {
        use super::super::{CurvePoint, MethodRun};
        let run = |method, accuracy| MethodRun {
            method,
            hyper: None,
            curve: vec![CurvePoint { step: 1, seconds: 1.0, cpu_seconds: None, accuracy, levels: vec![accuracy] }],
            train_seconds: 1.0,
            train_cpu_seconds: None,
            eval_seconds: 0.0,
        };
        let seed = |seed, rl, cold| SeedRun {
            seed,
            base_dir: "b".into(),
            base_cached: false,
            pretrain_seconds: 0.0,
            methods: vec![run(Method::RlZero, rl), run(Method::ColdStart, cold)],
        };
        let seeds = [seed(0, 0.20, 0.25), seed(1, 0.60, 0.67)];
        let summary = summarise(&[Method::RlZero, Method::ColdStart], &seeds, 1);
        assert_eq!(summary[0].minus_rl_zero, None);
        let d = summary[1].minus_rl_zero.unwrap();
        assert!((d.mean - 0.06).abs() < 1e-12 && (d.std - 0.02f64.sqrt() / 10.0).abs() < 1e-12, "{d:?}");
        assert!(summary[1].overall.std > 0.25, "the unpaired spread");
        let table = format_table(&summary, 1, 2);
        assert!(table.contains("+6.0 ± 1.4") && table.contains("− RL-zero"), "{table}");
        // Cold-start is the best baseline on both seeds; RL-zero never reaches it.
        assert_eq!(best_baseline(&seeds[0]), Some((Method::ColdStart, 0.25)));
        assert_eq!(summary[0].reached_best_baseline, 0);
        assert_eq!(summary[1].reached_best_baseline, 2);
        assert!(table.contains("→ best baseline, CPU s") && table.contains("train CPU s"), "{table}");
    }
}
