//! The loop's options `eval_on_start` (an evaluation before the first step) and `time_limit_s`
//! (the step during which the budget runs out is the last: evaluated and checkpointed).

mod common;

use bridge_bilevel::{
    LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, SftOnly, TrainingAlgorithm, init_state, latest_checkpoint,
    run_steps,
};
use bridge_core::schedule::ConstantLambda;
use common::*;

/// What the loop reported, in order: `("step", n)`, `("eval", n)` (with the step the evaluator
/// saw), `("checkpoint", n)`.
fn events(cfg: &LoopConfig) -> (u64, Vec<(&'static str, u64)>) {
    let lm = lm();
    let mut algo = SftOnly;
    let (theta0, w0) = weights(&lm, &device(), 1);
    let needs = TrainingAlgorithm::<bridge_core::testing::BigramLm>::needs(&algo);
    let state = init_state(needs, theta0, Some(w0), &OptimConfig::default(), false, 2).unwrap();
    let (sft, prompts, reward, rl) = (sft_data(&lm), prompts(), contains_reward(), grpo(0.0));
    let lambda = ConstantLambda(0.5);
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size: 2, lambda: &lambda };
    let mut log = Vec::new();
    let mut evaluated_at = Vec::new();
    let state = run_steps(
        &lm,
        &mut algo,
        state,
        &inputs,
        cfg,
        |_, s| {
            evaluated_at.push(s.step);
            Ok(Metrics::new())
        },
        |e| {
            log.push(match e {
                RunEvent::Step(m) => ("step", m["step"] as u64),
                RunEvent::Eval(m) => ("eval", m["step"] as u64),
                RunEvent::Checkpoint(_) => ("checkpoint", 0),
            });
            Ok(())
        },
    )
    .unwrap();
    let evals: Vec<u64> = log.iter().filter(|e| e.0 == "eval").map(|e| e.1).collect();
    assert_eq!(evals, evaluated_at, "each Eval event reports the step the evaluator saw");
    (state.step, log)
}

fn dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("bridge-loop-options-{}-{name}", std::process::id()))
}

#[test]
fn eval_on_start_evaluates_before_the_first_step() {
    let d = dir("start");
    let cfg = LoopConfig { total_steps: 2, eval_on_start: true, run_dir: d.clone(), ..LoopConfig::default() };
    let (steps, log) = events(&cfg);
    assert_eq!(steps, 2);
    assert_eq!(log, [("eval", 0), ("step", 1), ("step", 2), ("eval", 2), ("checkpoint", 0)]);
    let plain = LoopConfig { eval_on_start: false, ..cfg };
    assert_eq!(events(&plain).1[0], ("step", 1), "off by default: no evaluation before step 1");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn time_limit_ends_the_run_after_the_step_that_crosses_it() {
    let d = dir("limit");
    let cfg = LoopConfig {
        total_steps: 5,
        checkpoint_every: 0,
        time_limit_s: Some(1e-9),
        run_dir: d.clone(),
        ..LoopConfig::default()
    };
    let (steps, log) = events(&cfg);
    assert_eq!(steps, 1, "the first step already crosses the budget");
    assert_eq!(log, [("step", 1), ("eval", 1), ("checkpoint", 0)]);
    assert!(latest_checkpoint(&d).unwrap().is_some(), "the last step is checkpointed");
    let _ = std::fs::remove_dir_all(&d);
    let generous = LoopConfig { time_limit_s: Some(3600.0), ..cfg };
    assert_eq!(events(&generous).0, 5);
    let _ = std::fs::remove_dir_all(d);
}
