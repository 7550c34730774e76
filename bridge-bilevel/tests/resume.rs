//! Checkpoints: resume is exact, and a run killed with SIGKILL leaves a loadable checkpoint.

mod common;

use bridge_bilevel::{
    Bridge, LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, TrainState, TrainingAlgorithm, init_state,
    latest_checkpoint, run_steps,
};
use bridge_core::testing::BigramLm;
use bridge_core::{AdamWSettings, schedule::LinearRamp};
use common::*;
use std::path::Path;

fn fresh_state(algo: &Bridge, seed_weights: u64) -> TrainState<BigramLm> {
    let lm = lm();
    let (theta0, w0) = weights(&lm, &device(), seed_weights);
    let optim = OptimConfig { theta: AdamWSettings::with_lr(0.05), ..OptimConfig::default() };
    init_state(TrainingAlgorithm::<BigramLm>::needs(algo), theta0, Some(w0), &optim, true, 3).unwrap()
}

fn run(
    state: TrainState<BigramLm>,
    total: u64,
    dir: &Path,
    checkpoint_every: u64,
) -> (TrainState<BigramLm>, Vec<Metrics>) {
    let lm = lm();
    let sft = sft_data(&lm);
    let prompts = prompts();
    let reward = contains_reward();
    let rl = grpo(0.02);
    let lambda = LinearRamp { start: 0.2, end: 0.8, steps: 6 };
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size: 2, lambda: &lambda };
    let cfg = LoopConfig {
        total_steps: total,
        eval_every: 0,
        checkpoint_every,
        keep_checkpoints: 2,
        run_dir: dir.into(),
        ..LoopConfig::default()
    };
    let mut algo = Bridge::default();
    let mut log = Vec::new();
    let state = run_steps(
        &lm,
        &mut algo,
        state,
        &inputs,
        &cfg,
        |_, s| Ok(Metrics::from([("theta_sum".to_string(), values(&s.theta).iter().map(|v| f64::from(*v)).sum())])),
        |e| {
            if let RunEvent::Step(m) = e {
                log.push(without_timing(m));
            }
            Ok(())
        },
    )
    .unwrap();
    (state, log)
}

#[test]
fn resume_is_exact() {
    let tmp = std::env::temp_dir().join(format!("bridge-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let algo = Bridge::default();
    // N = 6 steps straight.
    let (straight, log_straight) = run(fresh_state(&algo, 1), 6, &tmp.join("a"), 0);
    // k = 2 steps, checkpoint, then a *fresh* process-like restart: new state with other weights,
    // loaded from the checkpoint, and the remaining N − k = 4 steps.
    let (_, log_first) = run(fresh_state(&algo, 1), 2, &tmp.join("b"), 1);
    let ckpt = latest_checkpoint(&tmp.join("b")).unwrap().expect("a checkpoint");
    assert!(ckpt.ends_with("step-00000002"));
    let (restored, meta) = fresh_state(&algo, 99).load_checkpoint(&ckpt).unwrap();
    assert_eq!(meta.step, 2);
    let (resumed, log_rest) = run(restored, 6, &tmp.join("b"), 1);
    let log_resumed: Vec<Metrics> = log_first.into_iter().chain(log_rest).collect();
    assert_eq!(log_straight, log_resumed, "identical metrics");
    assert_eq!(snapshot(&straight), snapshot(&resumed), "identical parameters (θ, θ̂, w)");
    assert_eq!(values(straight.reference.as_ref().unwrap()), values(resumed.reference.as_ref().unwrap()));
    // keep_checkpoints = 2: only the two newest remain.
    let kept: Vec<_> = std::fs::read_dir(tmp.join("b/checkpoints")).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(kept.iter().filter(|e| e.file_name().to_string_lossy().starts_with("step-")).count(), 2);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn checkpoint_mismatch_is_a_typed_error() {
    let tmp = std::env::temp_dir().join(format!("bridge-mismatch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let algo = Bridge::default();
    let (state, _) = run(fresh_state(&algo, 1), 1, &tmp, 1);
    drop(state);
    let ckpt = latest_checkpoint(&tmp).unwrap().unwrap();
    // A run configured without θ̂ (BRIDGE w/o meta) cannot load a BRIDGE checkpoint.
    let lm = lm();
    let (theta0, w0) = weights(&lm, &device(), 1);
    let no_meta = Bridge { outer: Box::new(bridge_core::JointSftRl), ..Bridge::default() };
    let other: TrainState<BigramLm> =
        init_state(TrainingAlgorithm::<BigramLm>::needs(&no_meta), theta0, Some(w0), &OptimConfig::default(), true, 3)
            .unwrap();
    let err = other.load_checkpoint(&ckpt).err().expect("mismatch");
    assert!(err.to_string().contains("θ̂"), "{err}");
    // A truncated weight file is an error naming it, not a panic.
    let theta_file = ckpt.join("theta.bpk");
    let bytes = std::fs::read(&theta_file).unwrap();
    std::fs::write(&theta_file, &bytes[..bytes.len() / 2]).unwrap();
    let err = fresh_state(&algo, 1).load_checkpoint(&ckpt).err().expect("truncated");
    assert!(err.to_string().contains("theta.bpk"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The child half of the SIGKILL test: trains forever, checkpointing every step.
fn sigkill_child(dir: &Path) {
    let algo = Bridge::default();
    let (_state, _) = run(fresh_state(&algo, 1), u64::MAX, dir, 1);
}

#[test]
fn sigkill_leaves_a_loadable_checkpoint() {
    if let Ok(dir) = std::env::var("BRIDGE_SIGKILL_CHILD_DIR") {
        sigkill_child(Path::new(&dir));
        return;
    }
    let tmp = std::env::temp_dir().join(format!("bridge-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let algo = Bridge::default();
    // Kill the child at several pseudo-random moments after its first checkpoint exists.
    let mut rng = bridge_core::BridgeRng::seed_from_u64(std::process::id() as u64);
    for round in 0..3 {
        let dir = tmp.join(format!("round{round}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["sigkill_leaves_a_loadable_checkpoint", "--exact", "--nocapture"])
            .env("BRIDGE_SIGKILL_CHILD_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while latest_checkpoint(&dir).ok().flatten().is_none() {
            assert!(started.elapsed().as_secs() < 60, "the child wrote no checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.below(150)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let ckpt = latest_checkpoint(&dir).unwrap().expect("latest names a complete checkpoint");
        let (state, meta) = fresh_state(&algo, 7).load_checkpoint(&ckpt).unwrap();
        assert!(meta.step >= 1);
        assert_eq!(state.step, meta.step);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
