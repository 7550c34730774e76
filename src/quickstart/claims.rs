//! The paper's claims about the methods, tested on the quickstart's seeds.
//!
//! Every claim is a statement about one number per seed — a paired difference between two methods
//! trained from the same base model on the same data, so that the base models' spread (which is
//! far larger than the methods' differences) cancels. Over `n` seeds the differences give a mean
//! and a 95 % Student-t interval, `mean ± t(0.975, n−1) · std / √n`, and the verdict is:
//!
//! * **held**: the interval lies on the side the paper claims (for an "≈" claim: inside
//!   ±[`EQUAL_MARGIN`] points, an equivalence test);
//! * **not held**: the interval lies on the other side (for "≈": it excludes 0);
//! * **within noise**: the interval contains 0 (for "≈": it contains 0 but reaches beyond the
//!   margin, so neither equality nor a difference is shown);
//! * **n/a**: fewer than two seeds, or the methods were not run.
//!
//! With 3 seeds t = 4.30: only a difference that is consistent across the seeds counts.

use super::config::{BudgetSpec, Method};
use super::report::Stat;
use super::report::{best_baseline, render_table};
use super::results::SeedRun;
use serde::{Deserialize, Serialize};

/// The outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval supports the claim.
    Held,
    /// The interval contradicts it.
    NotHeld,
    /// The interval contains 0 (the claim is neither supported nor contradicted).
    WithinNoise,
    /// Not enough seeds (or runs) to judge.
    NotApplicable,
}

impl Verdict {
    /// As printed.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::NotHeld => "not held",
            Verdict::WithinNoise => "within noise",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One claim and what the seeds say about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// Short id: `a1`…`a4` (final-accuracy ordering), `b1`/`b2` (Cold-start's dip), `c` (time to
    /// the best baseline's accuracy).
    pub id: String,
    /// The claim, in words.
    pub statement: String,
    /// What the paper reports.
    pub paper: String,
    /// The quantity compared, in words (positive = as the paper claims, except for "≈").
    pub measure: String,
    /// Its unit (`points` or `s`).
    pub unit: String,
    /// One value per seed where it is defined, in seed order.
    pub values: Vec<f64>,
    /// Seeds on which it is not defined (e.g. BRIDGE never reached the target), with the reason.
    pub undefined: Vec<String>,
    /// Mean and std of `values`.
    pub stat: Option<Stat>,
    /// The 95 % interval of the mean.
    pub interval: Option<(f64, f64)>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The margin of an "≈" claim, in points: the two methods count as level when the whole 95 %
/// interval of their difference lies within ± this.
pub const EQUAL_MARGIN: f64 = 3.0;

/// Two-sided 97.5 % quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        _ => 1.96,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Sense {
    /// The claim: the measure is positive.
    Positive,
    /// The claim: the measure is 0.
    Equal,
}

// One claim's eight facts, named at each call site (a struct would only repeat the names).
#[allow(clippy::too_many_arguments)]
fn judge(
    id: &str,
    statement: &str,
    paper: &str,
    measure: &str,
    unit: &str,
    values: Vec<f64>,
    undefined: Vec<String>,
    sense: Sense,
) -> Claim {
    let stat = Stat::of(&values);
    let interval = stat.filter(|s| s.n >= 2).map(|s| {
        let half = t_quantile(s.n - 1) * s.std / (s.n as f64).sqrt();
        (s.mean - half, s.mean + half)
    });
    let verdict = match (interval, sense) {
        _ if !undefined.is_empty()
            && sense == Sense::Positive
            && undefined.len() * 2 >= values.len() + undefined.len() =>
        {
            // The measure is undefined on at least half the seeds because the claimed event did
            // not happen there (e.g. BRIDGE never reached the target).
            Verdict::NotHeld
        }
        (None, _) => Verdict::NotApplicable,
        (Some((lo, _)), Sense::Positive) if lo > 0.0 => Verdict::Held,
        (Some((_, hi)), Sense::Positive) if hi < 0.0 => Verdict::NotHeld,
        (Some(_), Sense::Positive) => Verdict::WithinNoise,
        (Some((lo, hi)), Sense::Equal) if lo >= -EQUAL_MARGIN && hi <= EQUAL_MARGIN => Verdict::Held,
        (Some((lo, hi)), Sense::Equal) if lo > 0.0 || hi < 0.0 => Verdict::NotHeld,
        (Some(_), Sense::Equal) => Verdict::WithinNoise,
    };
    Claim {
        id: id.into(),
        statement: statement.into(),
        paper: paper.into(),
        measure: measure.into(),
        unit: unit.into(),
        values,
        undefined,
        stat,
        interval,
        verdict,
    }
}

/// Final overall accuracy of `a` minus `b` on each seed where both ran, in points.
fn paired(seeds: &[SeedRun], a: Method, b: Method) -> Vec<f64> {
    seeds.iter().filter_map(|s| Some(100.0 * (s.final_accuracy(a)? - s.final_accuracy(b)?))).collect()
}

/// Tests the paper's claims (method.md §7) on `seeds`:
///
/// * (a) the final-accuracy ordering BRIDGE > alternating > Cold-start ≈ RL-zero, and BRIDGE
///   above the best baseline of each seed;
/// * (b) Cold-start's dip: its test accuracy at the end of its SFT stage minus (b1) its accuracy
///   at the first evaluation of its RL stage (`budget.eval_every` steps later), and (b2) its mean
///   accuracy over the evaluations of the first half of the RL stage (less noisy; the paper's dip
///   is one RL epoch after the switch, which is later than one evaluation here);
/// * (c) time: BRIDGE reaches the best baseline's final accuracy sooner than that baseline does
///   (the baseline's training CPU time to its own first point at that accuracy, minus BRIDGE's;
///   CPU time because wall time on a shared machine depends on the other load).
pub fn claims(seeds: &[SeedRun], budget: &BudgetSpec) -> Vec<Claim> {
    let mut out = vec![
        judge(
            "a1",
            "BRIDGE ends above naive alternating",
            "36.0–36.4 vs 33.4 (+2.6 to +3.0)",
            "BRIDGE − alternating, final test accuracy",
            "points",
            paired(seeds, Method::Bridge, Method::Alternating),
            Vec::new(),
            Sense::Positive,
        ),
        judge(
            "a2",
            "naive alternating ends above Cold-start",
            "33.4 vs 32.2 (+1.2)",
            "alternating − Cold-start, final test accuracy",
            "points",
            paired(seeds, Method::Alternating, Method::ColdStart),
            Vec::new(),
            Sense::Positive,
        ),
        judge(
            "a3",
            "Cold-start ends level with RL-zero (within ±3 points)",
            "32.2 vs 32.2 (0.0)",
            "Cold-start − RL-zero, final test accuracy",
            "points",
            paired(seeds, Method::ColdStart, Method::RlZero),
            Vec::new(),
            Sense::Equal,
        ),
    ];
    let vs_best: Vec<f64> =
        seeds.iter().filter_map(|s| Some(100.0 * (s.final_accuracy(Method::Bridge)? - best_baseline(s)?.1))).collect();
    out.push(judge(
        "a4",
        "BRIDGE ends above every baseline",
        "36.0–36.4 vs best baseline 33.4 (+2.6 to +3.0)",
        "BRIDGE − the seed's best baseline, final test accuracy",
        "points",
        vs_best,
        Vec::new(),
        Sense::Positive,
    ));

    let switch = budget.cold_start_sft_steps;
    let half = switch + (budget.steps.saturating_sub(switch)) / 2;
    let dip = |measure: &dyn Fn(&super::results::MethodRun) -> Option<f64>| -> Vec<f64> {
        seeds
            .iter()
            .filter_map(|s| {
                let run = s.method(Method::ColdStart)?;
                Some(100.0 * (run.at_step(switch)?.accuracy - measure(run)?))
            })
            .collect()
    };
    let first = dip(&|run| run.curve.iter().find(|p| p.step > switch).map(|p| p.accuracy));
    let early = dip(&|run| {
        let points: Vec<f64> =
            run.curve.iter().filter(|p| p.step > switch && p.step <= half).map(|p| p.accuracy).collect();
        Stat::of(&points).map(|s| s.mean)
    });
    out.push(judge(
        "b1",
        "Cold-start's accuracy dips when its RL stage starts (first RL evaluation)",
        "33.4 → 28.5 after the first RL epoch (−4.9), then 32.2",
        &format!(
            "Cold-start's test accuracy at step {switch} (end of SFT) minus at step {} (first RL evaluation)",
            switch + budget.eval_every
        ),
        "points",
        first,
        Vec::new(),
        Sense::Positive,
    ));
    out.push(judge(
        "b2",
        "Cold-start's accuracy dips in the first half of its RL stage (mean)",
        "33.4 → 28.5 after the first RL epoch (−4.9), then 32.2",
        &format!(
            "Cold-start's test accuracy at step {switch} minus its mean over the evaluations of steps {}–{half}",
            switch + 1
        ),
        "points",
        early,
        Vec::new(),
        Sense::Positive,
    ));

    let (mut faster, mut undefined) = (Vec::new(), Vec::new());
    for s in seeds {
        let (Some((best, target)), Some(bridge)) = (best_baseline(s), s.method(Method::Bridge)) else { continue };
        let Some(t_best) = s.method(best).and_then(|r| r.time_to_reach(target)) else { continue };
        match bridge.time_to_reach(target) {
            Some(t_bridge) => faster.push(t_best - t_bridge),
            None => undefined.push(format!(
                "seed {}: BRIDGE never reached {}'s {:.1} %",
                s.seed,
                best.label(),
                100.0 * target
            )),
        }
    }
    out.push(judge(
        "c",
        "BRIDGE reaches the best baseline's final accuracy in less training time",
        "Qwen3-8B: BRIDGE 49.9 % in 33.5 h vs Cold-start 45.5 % in 39.1 h",
        "training CPU seconds the best baseline needs to reach its final accuracy minus BRIDGE's",
        "CPU s",
        faster,
        undefined,
        Sense::Positive,
    ));
    out
}

/// The claims as a table: claim, paper, the per-seed values, mean ± std [95 % interval], verdict.
pub fn format_claims(claims: &[Claim]) -> String {
    let mut rows = vec![vec![
        "claim".to_owned(),
        "paper".into(),
        "per seed".into(),
        "mean ± std [95 % CI]".into(),
        "verdict".into(),
    ]];
    for c in claims {
        let mut per_seed: Vec<String> = c.values.iter().map(|v| format!("{v:+.1}")).collect();
        per_seed.extend(c.undefined.iter().map(|_| "never".to_owned()));
        let stat = match (&c.stat, c.interval) {
            (Some(s), Some((lo, hi))) => format!("{:+.1} ± {:.1} [{lo:+.1}, {hi:+.1}] {}", s.mean, s.std, c.unit),
            (Some(s), None) => format!("{:+.1} {}", s.mean, c.unit),
            _ => "—".into(),
        };
        rows.push(vec![
            format!("({}) {}", c.id, c.statement),
            c.paper.clone(),
            per_seed.join(" / "),
            stat,
            c.verdict.label().into(),
        ]);
    }
    render_table(&rows)
}

#[cfg(test)]
mod tests {
    use super::super::{CurvePoint, MethodRun};
    use super::*;

    fn run(method: Method, curve: &[(u64, f64, f64)]) -> MethodRun {
        MethodRun {
            method,
            hyper: None,
            curve: curve
                .iter()
                .map(|&(step, seconds, accuracy)| CurvePoint {
                    step,
                    seconds,
                    cpu_seconds: None,
                    accuracy,
                    levels: vec![accuracy],
                })
                .collect(),
            train_seconds: curve.last().map_or(0.0, |p| p.1),
            train_cpu_seconds: None,
            eval_seconds: 0.0,
        }
    }

    fn budget() -> BudgetSpec {
        let mut b = super::super::QuickstartConfig::full().budget;
        (b.steps, b.eval_every, b.cold_start_sft_steps) = (4, 1, 2);
        b
    }

    /// Three seeds, hand-made: BRIDGE is 2, 3, 4 points above alternating (t interval
    /// 3 ± 4.303·1/√3 = [0.52, 5.48]: held); Cold-start dips by 10 points on every seed.
    fn seeds() -> Vec<SeedRun> {
        (0..3)
            .map(|i| {
                let d = 0.01 * i as f64;
                SeedRun {
                    seed: i,
                    base_dir: "b".into(),
                    base_cached: true,
                    pretrain_seconds: 0.0,
                    methods: vec![
                        run(Method::Sft, &[(0, 0.0, 0.3), (4, 4.0, 0.40)]),
                        run(Method::RlZero, &[(0, 0.0, 0.3), (4, 8.0, 0.35 + d)]),
                        run(Method::ColdStart, &[(0, 0.0, 0.3), (2, 2.0, 0.45), (3, 4.0, 0.35), (4, 6.0, 0.35 - d)]),
                        run(Method::Alternating, &[(0, 0.0, 0.3), (2, 5.0, 0.42), (4, 10.0, 0.44)]),
                        run(Method::Bridge, &[(0, 0.0, 0.3), (2, 6.0, 0.44 + d), (4, 12.0, 0.46 + d)]),
                    ],
                }
            })
            .collect()
    }

    #[test]
    fn verdicts_follow_the_t_interval() {
        let c = claims(&seeds(), &budget());
        let get = |id: &str| c.iter().find(|c| c.id == id).unwrap();
        let a1 = get("a1");
        assert_eq!(a1.values.len(), 3);
        for (v, want) in a1.values.iter().zip([2.0, 3.0, 4.0]) {
            assert!((v - want).abs() < 1e-9, "{:?}", a1.values);
        }
        let (lo, hi) = a1.interval.unwrap();
        assert!((lo - (3.0 - 4.303 / 3f64.sqrt())).abs() < 1e-9 && (hi - (3.0 + 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert_eq!(a1.verdict, Verdict::Held);
        // Alternating − Cold-start: 9, 10, 11 points: held.
        assert_eq!(get("a2").verdict, Verdict::Held);
        // Cold-start − RL-zero: 0, −2, −4: the interval [−7.0, +3.0] contains 0 but reaches beyond
        // ±3: neither equal nor different.
        assert_eq!(get("a3").verdict, Verdict::WithinNoise);
        // BRIDGE − best baseline (alternating 0.44): +2, +3, +4.
        assert_eq!(get("a4").verdict, Verdict::Held);
        // The dip: 0.45 at step 2, 0.35 at step 3: +10 on every seed (std 0: held). The first
        // half of the RL stage (steps 3..=3) has the one point.
        for id in ["b1", "b2"] {
            let b = get(id);
            assert!(b.values.iter().all(|v| (v - 10.0).abs() < 1e-9), "{:?}", b.values);
            assert_eq!(b.verdict, Verdict::Held);
        }
        // Time: alternating reaches its 0.44 at 10 s; BRIDGE reaches 0.44 at 6 s on every seed.
        let t = get("c");
        assert_eq!(t.values, vec![4.0, 4.0, 4.0]);
        assert_eq!(t.verdict, Verdict::Held);
        let table = format_claims(&c);
        assert!(table.contains("| (a1) BRIDGE ends above naive alternating") && table.contains("held"), "{table}");
    }

    #[test]
    fn contradicted_noisy_and_undefined_claims() {
        let mut s = seeds();
        // BRIDGE now ends 5, 6, 7 points below alternating and never reaches it.
        for seed in &mut s {
            let bridge = seed.methods.iter_mut().find(|m| m.method == Method::Bridge).unwrap();
            let d = 0.01 * seed.seed as f64;
            bridge.curve = run(Method::Bridge, &[(0, 0.0, 0.3), (4, 12.0, 0.39 - d)]).curve;
        }
        let c = claims(&s, &budget());
        let get = |id: &str| c.iter().find(|c| c.id == id).unwrap();
        assert_eq!(get("a1").verdict, Verdict::NotHeld);
        let t = get("c");
        assert_eq!((t.values.len(), t.undefined.len()), (0, 3));
        assert_eq!(t.verdict, Verdict::NotHeld);
        assert!(format_claims(&c).contains("never"));
        // One seed: nothing can be judged.
        let one = claims(&s[..1], &budget());
        assert!(one.iter().all(|c| c.verdict == Verdict::NotApplicable || c.id == "c"), "{one:?}");
        // Differences of both signs: within noise.
        let noisy = judge("x", "", "", "", "points", vec![3.0, -2.0, 1.0], Vec::new(), Sense::Positive);
        assert_eq!(noisy.verdict, Verdict::WithinNoise);
        let unequal = judge("x", "", "", "", "points", vec![5.0, 6.0, 7.0], Vec::new(), Sense::Equal);
        assert_eq!(unequal.verdict, Verdict::NotHeld);
        let equal = judge("x", "", "", "", "points", vec![0.5, -0.5, 0.2], Vec::new(), Sense::Equal);
        assert_eq!(equal.verdict, Verdict::Held);
        assert!((t_quantile(2) - 4.303).abs() < 1e-12 && t_quantile(100) == 1.96);
    }
}
