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

/// A NaN stops the run with an error naming the step it happened in, counted as the `step`
/// metric counts (from 1): one more than the steps that completed. The bigram row of `e` is NaN,
/// so the loss is NaN exactly at the step whose SFT example contains an `e`.
#[test]
fn a_nan_names_the_step_it_happened_in() {
    use bridge_core::BridgeError;
    use bridge_core::testing::BigramBase;
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    let lm = lm();
    let codec = bridge_core::CausalLm::codec(&lm);
    let v = codec.vocab_size();
    let e = codec.encode("e").unwrap()[0] as usize;
    let table: Vec<f32> = (0..v * v).map(|i| if i / v == e { f32::NAN } else { (i % 7) as f32 * 0.1 }).collect();
    let example = |s: &str| {
        let (p, q) = s.split_once('|').unwrap();
        bridge_core::TokenSequence::prompt_completion(&codec.encode(p).unwrap(), &codec.encode(q).unwrap())
    };
    let sft: bridge_core::InMemorySource<_> = ["a|bcd", "b|cab", "c|dea", "d|abc"].iter().map(|s| example(s)).collect();
    let (prompts, reward, rl) = (prompts(), contains_reward(), grpo(0.0));
    let lambda = ConstantLambda(0.5);
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size: 1, lambda: &lambda };
    for seed in 0..4 {
        let theta0 = BigramBase {
            table: Param::from_tensor(Tensor::from_data(TensorData::new(table.clone(), [v, v]), &device())),
        };
        let state = init_state(Default::default(), theta0, None, &OptimConfig::default(), false, seed).unwrap();
        let mut completed = 0;
        let cfg = LoopConfig { total_steps: 4, run_dir: dir(&format!("nan-{seed}")), ..LoopConfig::default() };
        let err = run_steps(
            &lm,
            &mut SftOnly,
            state,
            &inputs,
            &cfg,
            |_, _| Ok(Metrics::new()),
            |ev| {
                if let RunEvent::Step(m) = ev {
                    completed = m["step"] as u64;
                }
                Ok(())
            },
        )
        .err()
        .expect("the `e` example comes within 4 steps");
        match &err {
            BridgeError::NonFinite { quantity, step, .. } => {
                assert_eq!(quantity, "sft_loss");
                assert_eq!(*step, completed + 1, "seed {seed}: {err}");
                assert!(err.to_string().contains(&format!("at step {}", completed + 1)), "{err}");
            }
            other => panic!("expected a non-finite loss, got {other}"),
        }
    }
}
