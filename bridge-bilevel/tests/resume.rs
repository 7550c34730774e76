//! Checkpoints: resume is exact, a run killed with SIGKILL leaves a loadable checkpoint, and
//! pruning after a resume keeps the valid checkpoints and clears what a killed write left.

mod common;

use bridge_bilevel::{
    Bridge, LoopConfig, Metrics, OptimConfig, RunInputs, TrainState, TrainingAlgorithm, init_state, latest_checkpoint,
    prune_checkpoints,
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
    let theta_sum = |_: &BigramLm, s: &TrainState<BigramLm>| {
        Ok(Metrics::from([("theta_sum".to_string(), values(&s.theta).iter().map(|v| f64::from(*v)).sum())]))
    };
    run_logged(&lm, &mut Bridge::default(), state, &inputs, &cfg, theta_sum, true)
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

/// The step directories of `dir/checkpoints` (sorted) and whether any other entry than `latest`
/// is left.
fn checkpoint_dirs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut steps = Vec::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(dir.join("checkpoints")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") && !name.ends_with(".tmp") {
            steps.push(name);
        } else if name != "latest" {
            other.push(name);
        }
    }
    steps.sort();
    (steps, other)
}

/// The invariant pruning restores: every step directory is complete and no newer than `latest`,
/// at most `keep` of them, `latest` among them, and nothing else.
fn assert_pruned(dir: &Path, keep: usize) {
    let latest = latest_checkpoint(dir).unwrap().expect("latest");
    let latest_name = latest.file_name().unwrap().to_string_lossy().into_owned();
    let (steps, other) = checkpoint_dirs(dir);
    assert!(other.is_empty(), "leftovers: {other:?}");
    assert!(steps.len() <= keep && steps.contains(&latest_name), "{steps:?} (latest {latest_name})");
    for s in &steps {
        assert!(dir.join("checkpoints").join(s).join("state.json").is_file(), "{s} is incomplete");
        assert!(*s <= latest_name, "{s} is newer than latest {latest_name}");
    }
}

/// What a run killed inside `save_checkpoint` leaves, reproduced exactly, then a resume: the
/// first save of the resumed run prunes to the newest complete checkpoints up to `latest` and
/// removes the leftovers. (Pruning by name alone kept the stale `step-6` and the incomplete
/// `step-7` and deleted the valid `step-4` and the new `step-5`.)
#[test]
fn pruning_after_a_killed_write_keeps_the_valid_checkpoints() {
    let tmp = std::env::temp_dir().join(format!("bridge-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let algo = Bridge::default();
    // Checkpoints at steps 2 and 4 (keep = 2).
    let (_, _) = run(fresh_state(&algo, 1), 4, &tmp, 2);
    let root = tmp.join("checkpoints");
    assert_eq!(checkpoint_dirs(&tmp).0, ["step-00000002", "step-00000004"]);
    let copy = |from: &str, to: &str, files: &[&str]| {
        std::fs::create_dir_all(root.join(to)).unwrap();
        for f in files {
            std::fs::copy(root.join(from).join(f), root.join(to).join(f)).unwrap();
        }
    };
    let all: Vec<String> = std::fs::read_dir(root.join("step-00000004"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    // Killed after renaming step-6 into place, before `latest` named it.
    copy("step-00000004", "step-00000006", &all);
    // Killed while writing step-7's files (no state.json yet), after a rename of its directory
    // (impossible with the current writer, but a partial directory all the same).
    copy("step-00000004", "step-00000007", &["theta.bpk"]);
    // Killed in the middle of step-8's temporary directory, and between writing `latest.tmp` and
    // renaming it.
    copy("step-00000004", "step-00000008.tmp", &["theta.bpk", "adapter.bpk"]);
    std::fs::write(root.join("latest.tmp"), "step-00000008").unwrap();
    let ckpt = latest_checkpoint(&tmp).unwrap().unwrap();
    assert!(ckpt.ends_with("step-00000004"), "latest still names the last complete write");

    // Resume from step 4 and save at step 5.
    let (restored, meta) = fresh_state(&algo, 9).load_checkpoint(&ckpt).unwrap();
    assert_eq!(meta.step, 4);
    let (state, _) = run(restored, 5, &tmp, 1);
    assert_eq!(state.step, 5);
    assert_eq!(checkpoint_dirs(&tmp), (vec!["step-00000004".to_string(), "step-00000005".to_string()], vec![]));
    assert_pruned(&tmp, 2);
    // Both kept checkpoints load.
    for name in ["step-00000004", "step-00000005"] {
        let (_, meta) = fresh_state(&algo, 3).load_checkpoint(&root.join(name)).unwrap();
        assert_eq!(checkpoint_step_of(name), meta.step);
    }
    // Without a valid `latest`, nothing is pruned.
    std::fs::remove_file(root.join("latest")).unwrap();
    assert!(prune_checkpoints(&tmp, 1).unwrap().is_empty());
    assert_eq!(checkpoint_dirs(&tmp).0.len(), 2);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn checkpoint_step_of(name: &str) -> u64 {
    name.trim_start_matches("step-").parse().unwrap()
}

/// The child half of the SIGKILL tests: trains forever, checkpointing every step.
fn sigkill_child(dir: &Path) {
    let algo = Bridge::default();
    let (_state, _) = run(fresh_state(&algo, 1), u64::MAX, dir, 1);
}

/// Starts the child on `dir` (re-running this test binary) and waits for its first checkpoint.
fn spawn_child(test: &str, dir: &Path) -> std::process::Child {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env("BRIDGE_SIGKILL_CHILD_DIR", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while latest_checkpoint(dir).ok().flatten().is_none() {
        assert!(started.elapsed().as_secs() < 60, "the child wrote no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
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
        let mut child = spawn_child("sigkill_leaves_a_loadable_checkpoint", &dir);
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

/// SIGKILL while a checkpoint is being written (the parent kills the child as soon as a
/// `step-*.tmp` directory appears), then a resume to one step past `latest`: the resumed run's
/// save prunes to valid checkpoints only.
#[test]
fn sigkill_during_a_checkpoint_write_then_resume_prunes_correctly() {
    if let Ok(dir) = std::env::var("BRIDGE_SIGKILL_CHILD_DIR") {
        sigkill_child(Path::new(&dir));
        return;
    }
    let tmp = std::env::temp_dir().join(format!("bridge-sigkill-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let algo = Bridge::default();
    let mut caught_writing = 0;
    for round in 0..3 {
        let dir = tmp.join(format!("round{round}"));
        let mut child = spawn_child("sigkill_during_a_checkpoint_write_then_resume_prunes_correctly", &dir);
        let started = std::time::Instant::now();
        loop {
            let writing = std::fs::read_dir(dir.join("checkpoints"))
                .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
                .unwrap_or(false);
            if writing || started.elapsed().as_secs() >= 30 {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let (steps, other) = checkpoint_dirs(&dir);
        caught_writing += usize::from(!other.is_empty());
        let ckpt = latest_checkpoint(&dir).unwrap().expect("latest names a complete checkpoint");
        println!("round {round}: killed with {steps:?} and {other:?} left, latest {}", ckpt.display());
        let (state, meta) = fresh_state(&algo, 7).load_checkpoint(&ckpt).unwrap();
        let (resumed, _) = run(state, meta.step + 1, &dir, 1);
        assert_eq!(resumed.step, meta.step + 1);
        assert_pruned(&dir, 2);
    }
    assert!(caught_writing > 0, "no kill landed during a checkpoint write");
    let _ = std::fs::remove_dir_all(&tmp);
}
