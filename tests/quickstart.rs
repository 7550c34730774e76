//! The quickstart pipeline end to end in a miniature configuration: data, pre-training and its
//! cache, every method, the table, `results.json` and the PNG.

use bridge::quickstart::{Method, QuickstartConfig, QuickstartReport, SweepReport, Verdict, run, sweep};

#[test]
fn miniature_quickstart_writes_results_plot_and_a_row_per_method() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-miniature");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let cfg = QuickstartConfig { seeds: 2, ..QuickstartConfig::miniature(&dir) };
    let mut lines = Vec::new();
    let report = run(&cfg, &mut |l| lines.push(l.to_owned())).unwrap();

    for m in Method::DEFAULT {
        assert!(report.table.lines().any(|l| l.starts_with(&format!("| {} ", m.label()))), "{m:?}:\n{}", report.table);
    }
    assert_eq!(report.seeds.len(), 2);
    for seed in &report.seeds {
        assert!(!seed.base_cached);
        for run in &seed.methods {
            // base point, then every step (eval_every = 1)
            let expected = if run.method == Method::Base { 1 } else { 1 + cfg.budget.steps as usize };
            assert_eq!(run.curve.len(), expected, "{:?}", run.method);
            assert!(run.curve.iter().all(|p| (0.0..=1.0).contains(&p.accuracy) && p.levels.len() == 2));
        }
    }
    assert!(report.table.contains('±'), "two seeds give mean ± std:\n{}", report.table);
    // Every claim is stated, with one value per seed where it is defined.
    assert_eq!(
        report.claims.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2", "a3", "a4", "b1", "b2", "c"]
    );
    for c in &report.claims {
        assert!(report.claims_table.contains(&format!("({})", c.id)), "{}", report.claims_table);
        // The miniature's RL stage is one evaluation long, so b2 (its first half) has none.
        if c.id == "b2" {
            assert!(c.values.is_empty() && c.measure.contains("steps 2–1"), "{c:?}");
            continue;
        }
        if c.id != "c" {
            assert_eq!(c.values.len(), 2, "{c:?}");
        }
        assert_ne!(c.verdict, Verdict::NotApplicable, "two seeds give an interval: {c:?}");
    }
    assert!(!report.commit.is_empty());

    let json = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let back: QuickstartReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.table, report.table);
    assert_eq!((back.commit, back.config.hyper), (report.commit.clone(), cfg.hyper.clone()));
    assert!(dir.join("seed-0/data/val.jsonl").is_file());
    let png = std::fs::read(dir.join("accuracy.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(dir.join("results.md").is_file());
    assert!(dir.join("seed-0/data/test.jsonl").is_file());
    // The per-level SFT counts of the config (4 of level 1, 12 of level 2) reach the data files.
    let sft = std::fs::read_to_string(dir.join("seed-0/data/sft.jsonl")).unwrap();
    let level_1 = sft.lines().filter(|l| l.ends_with("\"level\":1}")).count();
    assert_eq!((level_1, sft.lines().count()), (4, 16));
    assert!(lines.iter().any(|l| l.contains("pre-training")));

    // A second run reuses the cached base models and reproduces the numbers exactly.
    let again = run(&cfg, &mut |_| {}).unwrap();
    assert!(again.seeds.iter().all(|s| s.base_cached));
    for (a, b) in report.seeds.iter().zip(&again.seeds) {
        for (x, y) in a.methods.iter().zip(&b.methods) {
            let acc = |r: &bridge::quickstart::MethodRun| r.curve.iter().map(|p| p.accuracy).collect::<Vec<_>>();
            assert_eq!(acc(x), acc(y), "{:?}", x.method);
        }
    }
}

/// CHORD, LUFFY, PPO and BRIDGE-unrolled run in the quickstart when asked for (`--methods`), on
/// the same budget, with a row each.
#[test]
fn the_other_algorithms_run_in_the_quickstart() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-others");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let methods = vec![Method::Base, Method::Chord, Method::Luffy, Method::Ppo, Method::BridgeUnrolled];
    let cfg = QuickstartConfig { methods: methods.clone(), ..QuickstartConfig::miniature(&dir) };
    let report = run(&cfg, &mut |_| {}).unwrap();
    for m in methods {
        assert!(report.table.lines().any(|l| l.starts_with(&format!("| {} ", m.label()))), "{m:?}:\n{}", report.table);
        if m.trains() {
            let metrics = std::fs::read_to_string(dir.join(format!("seed-0/{}/metrics.jsonl", m.slug()))).unwrap();
            assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"train\"")).count(), cfg.budget.steps as usize);
        }
    }
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-bad");
    let bad = QuickstartConfig { threads: 0, ..QuickstartConfig::miniature(&dir) };
    assert!(run(&bad, &mut |_| {}).unwrap_err().to_string().contains("threads"));
    let mut bad = QuickstartConfig::miniature(&dir);
    bad.task.n_test = 1_000_000;
    assert!(run(&bad, &mut |_| {}).is_err());
}

/// The search runs every trained method at every grid point on the validation split, chooses the
/// best mean, and is deterministic.
#[test]
fn miniature_sweep_chooses_per_method_on_validation() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-sweep");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let cfg = QuickstartConfig {
        seeds: 2,
        methods: vec![Method::Base, Method::Sft, Method::Bridge],
        ..QuickstartConfig::miniature(&dir)
    };
    let report = sweep(&cfg, &mut |_| {}).unwrap();
    // SFT: 2 learning rates; BRIDGE: 2 learning rates × 1 λ; Base is not searched.
    assert_eq!(report.points.len(), 4);
    for p in &report.points {
        assert_eq!(p.val_accuracy.len(), 2);
        assert!(p.val_accuracy.iter().all(|a| (0.0..=1.0).contains(a)));
        assert!(dir.join(format!("seed-0/sweep/{}-{}/metrics.jsonl", p.method.slug(), p.hyper.slug())).is_file());
    }
    for m in [Method::Sft, Method::Bridge] {
        let best = report.points.iter().filter(|p| p.method == m).map(|p| p.mean).fold(f64::MIN, f64::max);
        let chosen = report.points.iter().find(|p| p.method == m && p.hyper == report.chosen[&m]).unwrap();
        assert_eq!(chosen.mean, best);
    }
    assert!(!report.chosen.contains_key(&Method::Base));
    let back: SweepReport = serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(back.chosen, report.chosen);
    assert!(dir.join("sweep.md").is_file());
    let again = sweep(&cfg, &mut |_| {}).unwrap();
    let accuracies = |r: &SweepReport| r.points.iter().map(|p| p.val_accuracy.clone()).collect::<Vec<_>>();
    assert_eq!(accuracies(&again), accuracies(&report));
    // Without a validation split there is nothing to choose on.
    let mut no_val = cfg.clone();
    no_val.task.n_val = 0;
    assert!(sweep(&no_val, &mut |_| {}).unwrap_err().to_string().contains("n_val"));
}

/// `reward_noise` reaches the RL reward: with p = 1 every reward of the first step (whose rollouts
/// are the same as the clean run's) is flipped, so its mean is one minus the clean mean.
#[test]
fn reward_noise_flips_the_rl_rewards() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-noise");
    let first_reward = |p: f64, name: &str| {
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let cfg =
            QuickstartConfig { reward_noise: p, methods: vec![Method::RlZero], ..QuickstartConfig::miniature(&dir) };
        run(&cfg, &mut |_| {}).unwrap();
        let text = std::fs::read_to_string(dir.join("seed-0/rl_zero/metrics.jsonl")).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(text.lines().find(|l| l.contains("\"kind\":\"train\"")).unwrap()).unwrap();
        line["reward_mean"].as_f64().unwrap()
    };
    let clean = first_reward(0.0, "clean");
    let flipped = first_reward(1.0, "flipped");
    assert!((clean + flipped - 1.0).abs() < 1e-9, "clean {clean}, all flipped {flipped}");
}
