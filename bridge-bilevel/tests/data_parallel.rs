//! Data parallelism on flex: `R` ranks (threads, host gradient exchange) reproduce one rank with
//! the whole batch, for every algorithm that declares it, and resume exactly.
//!
//! The shards are deliberately uneven (3 prompts and 3 SFT examples per step over 2 ranks: 2 + 1),
//! so that a rank's share of each loss must be its share of the tokens, not `1/R`. Tolerance:
//! `TOL` on every parameter after `STEPS` steps (plain SGD, so the comparison sees the gradients
//! themselves; the only difference is the order of f32 summation).

mod common;

use bridge_bilevel::{
    AuxRollouts, Bridge, Chord, ChordConfig, ColdStart, GradientPath, LoopConfig, Luffy, Metrics, NaiveAlternating,
    OptimConfig, Ppo, PpoConfig, Replica, RlZero, RunEvent, RunInputs, SftOnly, SftRlMixing, TrainState,
    TrainingAlgorithm, UnrolledBridge, init_state, latest_checkpoint, resume_from_checkpoint, run_data_parallel,
    run_steps,
};
use bridge_core::schedule::ConstantLambda;
use bridge_core::testing::BigramLm;
use bridge_core::{AdamWSettings, BridgeError, CooperativeGain, JointSftRl};
use common::*;
use std::path::{Path, PathBuf};

const STEPS: u64 = 3;
const TOL: f32 = 2e-6;

fn sgd_all() -> OptimConfig {
    OptimConfig { theta: AdamWSettings::sgd(0.5), ..OptimConfig::default() }
}

type Make = fn() -> Box<dyn TrainingAlgorithm<BigramLm>>;

fn algorithms() -> Vec<(&'static str, Make)> {
    vec![
        ("sft", || Box::new(SftOnly)),
        ("rl_zero", || Box::new(RlZero)),
        ("cold_start", || Box::new(ColdStart { sft_steps: 1 })),
        ("alternating", || Box::new(NaiveAlternating)),
        ("mixing", || Box::new(SftRlMixing { mu: 0.3 })),
        ("chord", || Box::new(Chord { config: ChordConfig::default() })),
        ("bridge", || Box::new(Bridge::default())),
        ("bridge_fused", || {
            Box::new(Bridge {
                outer: Box::new(CooperativeGain),
                aux_rollouts: AuxRollouts::Shared,
                gradient_path: GradientPath::Fused,
            })
        }),
        ("bridge_separate_rollouts", || {
            Box::new(Bridge {
                outer: Box::new(CooperativeGain),
                aux_rollouts: AuxRollouts::Separate,
                gradient_path: GradientPath::Separate,
            })
        }),
        ("bridge_no_meta", || Box::new(Bridge { outer: Box::new(JointSftRl), ..Bridge::default() })),
        ("luffy", || Box::new(Luffy::default())),
        ("ppo", || Box::new(Ppo::default())),
        ("ppo_whitened", || Box::new(Ppo::new(PpoConfig { whiten_advantages: true, ..PpoConfig::default() }))),
        ("bridge_unrolled", || Box::new(UnrolledBridge::default())),
    ]
}

struct Setup {
    optim: OptimConfig,
    kl_coef: f64,
    sft_batch_size: usize,
}

fn state(algo: &dyn TrainingAlgorithm<BigramLm>, setup: &Setup) -> TrainState<BigramLm> {
    let lm = lm();
    // Every rank builds its own copy (its own parameter ids, the same values).
    let (theta0, w0) = weights(&lm, &device(), 11);
    init_state(algo.needs(), theta0, Some(w0), &setup.optim, setup.kl_coef > 0.0, 5).unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bridge-dp-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `make()` on `ranks` ranks (1: the plain loop) to `steps`, from `resume` when given;
/// returns rank 0's state and the reported metrics.
fn run(
    make: Make,
    ranks: usize,
    setup: &Setup,
    steps: u64,
    dir: &Path,
    resume: Option<&Path>,
) -> Result<(TrainState<BigramLm>, Vec<Metrics>), BridgeError> {
    let lm = lm();
    let (sft, prompts, reward, rl) = (sft_data(&lm), prompts(), contains_reward(), grpo(setup.kl_coef));
    let lambda = ConstantLambda(0.5);
    let inputs = RunInputs {
        sft: &sft,
        prompts: &prompts,
        reward: &reward,
        rl: &rl,
        sft_batch_size: setup.sft_batch_size,
        lambda: &lambda,
    };
    let cfg =
        LoopConfig { total_steps: steps, checkpoint_every: 2, run_dir: dir.to_path_buf(), ..LoopConfig::default() };
    let mut replicas = Vec::new();
    for _ in 0..ranks {
        let mut algorithm = make();
        let mut state = state(algorithm.as_ref(), setup);
        if let Some(ckpt) = resume {
            state = resume_from_checkpoint(state, algorithm.as_mut(), ckpt)?.0;
        }
        replicas.push(Replica { state, algorithm });
    }
    let mut log = Vec::new();
    let record = |e: RunEvent<'_>| {
        if let RunEvent::Step(m) = e {
            log.push(m.clone());
        }
        Ok(())
    };
    let state = if ranks == 1 {
        let Replica { state, mut algorithm } = replicas.pop().unwrap();
        run_steps(&lm, algorithm.as_mut(), state, &inputs, &cfg, |_, _| Ok(Metrics::new()), record)?
    } else {
        run_data_parallel(&lm, replicas, None, &inputs, &cfg, |_, _| Ok(Metrics::new()), record)?.state
    };
    Ok((state, log))
}

fn assert_close(what: &str, a: &TrainState<BigramLm>, b: &TrainState<BigramLm>, tol: f32) {
    let (x, y) = (snapshot(a), snapshot(b));
    for (name, u, v) in [("θ", &x.0, &y.0), ("θ̂", &x.1, &y.1), ("w", &x.2, &y.2)] {
        let d = max_abs_diff(u, v);
        assert!(d <= tol, "{what}: {name} differs by {d} (tolerance {tol})");
    }
}

#[test]
fn two_and_three_ranks_reproduce_one_rank_for_every_data_parallel_algorithm() {
    let setup = Setup { optim: sgd_all(), kl_coef: 0.0, sft_batch_size: 3 };
    for (name, make) in algorithms() {
        assert!(make().data_parallel(), "{name} declares data parallelism");
        let one_dir = temp_dir(&format!("{name}-1"));
        let (one, one_log) = run(make, 1, &setup, STEPS, &one_dir, None).unwrap();
        let start = snapshot(&state(make().as_ref(), &setup));
        assert!(max_abs_diff(&start.0, &snapshot(&one).0) > 1e-3, "{name}: θ moves");
        for ranks in [2, 3] {
            let dir = temp_dir(&format!("{name}-{ranks}"));
            let (many, log) = run(make, ranks, &setup, STEPS, &dir, None).unwrap();
            assert_close(&format!("{name}, {ranks} ranks"), &one, &many, TOL);
            assert_eq!(log.len(), one_log.len(), "{name}: one line per step");
            // The whole batch's losses, as the single rank reports them.
            for (a, b) in one_log.iter().zip(&log) {
                for key in ["sft_loss", "rl_loss", "aux_rl_loss", "surrogate", "kl", "grad_norm_theta"] {
                    if let (Some(x), Some(y)) = (a.get(key), b.get(key)) {
                        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{name}, {ranks} ranks: {key} {x} vs {y}");
                    }
                }
                for key in ["tokens", "sft_tokens"] {
                    assert_eq!(a.get(key), b.get(key), "{name}, {ranks} ranks: {key} is the sum over ranks");
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir_all(one_dir);
    }
}

#[test]
fn two_ranks_match_one_with_adamw_and_a_kl_term() {
    let setup = Setup { optim: OptimConfig::default(), kl_coef: 0.05, sft_batch_size: 4 };
    let all = algorithms();
    let pick = |n: &str| *all.iter().find(|(name, _)| *name == n).unwrap();
    for (name, make) in [pick("rl_zero"), pick("bridge"), pick("luffy")] {
        let (one, _) = run(make, 1, &setup, STEPS, &temp_dir(&format!("adam-{name}-1")), None).unwrap();
        let (two, _) = run(make, 2, &setup, STEPS, &temp_dir(&format!("adam-{name}-2")), None).unwrap();
        assert_close(&format!("{name} (AdamW, KL)"), &one, &two, 1e-5);
    }
}

#[test]
fn two_ranks_resume_exactly() {
    let setup = Setup { optim: OptimConfig::default(), kl_coef: 0.0, sft_batch_size: 3 };
    let all = algorithms();
    let pick = |n: &str| *all.iter().find(|(name, _)| *name == n).unwrap();
    for (name, make) in [pick("sft"), pick("rl_zero"), pick("bridge"), pick("ppo")] {
        let straight_dir = temp_dir(&format!("resume-{name}-straight"));
        let (straight, straight_log) = run(make, 2, &setup, 4, &straight_dir, None).unwrap();
        let dir = temp_dir(&format!("resume-{name}-split"));
        run(make, 2, &setup, 2, &dir, None).unwrap();
        let ckpt = latest_checkpoint(&dir).unwrap().expect("a checkpoint at step 2");
        let (resumed, log) = run(make, 2, &setup, 4, &dir, Some(&ckpt)).unwrap();
        assert_close(&format!("{name} resumed on 2 ranks"), &straight, &resumed, 0.0);
        assert_eq!(resumed.step, 4);
        let strip = |l: &[Metrics]| l.iter().map(without_timing).collect::<Vec<_>>();
        assert_eq!(strip(&straight_log[2..]), strip(&log), "{name}: the resumed steps report the same metrics");
        for d in [straight_dir, dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// An algorithm from another crate that does not declare data parallelism (the default).
struct Undeclared;

impl TrainingAlgorithm<BigramLm> for Undeclared {
    fn name(&self) -> &str {
        "undeclared"
    }
    fn needs(&self) -> bridge_bilevel::Needs {
        bridge_bilevel::Needs::default()
    }
    fn step(
        &mut self,
        ctx: &bridge_bilevel::StepContext<'_, BigramLm>,
        state: &mut TrainState<BigramLm>,
    ) -> Result<Metrics, BridgeError> {
        SftOnly.step(ctx, state)
    }
}

#[test]
fn an_algorithm_without_data_parallelism_is_refused_before_any_step() {
    let setup = Setup { optim: sgd_all(), kl_coef: 0.0, sft_batch_size: 3 };
    let dir = temp_dir("undeclared");
    let e = run(|| Box::new(Undeclared), 2, &setup, 2, &dir, None).err().expect("refused").to_string();
    assert!(e.contains("run.devices") && e.contains("undeclared"), "{e}");
    assert!(!dir.exists(), "nothing written");
    // One rank runs it.
    run(|| Box::new(Undeclared), 1, &setup, 2, &dir, None).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_rank_stops_every_rank_with_its_own_error() {
    // Three ranks cannot share an SFT batch of two: rank 2's shard is empty.
    let setup = Setup { optim: sgd_all(), kl_coef: 0.0, sft_batch_size: 2 };
    let dir = temp_dir("fail");
    let e = run(algorithms()[0].1, 3, &setup, 2, &dir, None).err().expect("stopped").to_string();
    assert!(e.contains("run.devices") && e.contains("sft batch_size of 2"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
