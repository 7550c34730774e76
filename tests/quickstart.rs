//! The quickstart pipeline end to end in a miniature configuration: data, pre-training and its
//! cache, every method, the table, `results.json` and the PNG.

use bridge::quickstart::{Method, QuickstartConfig, QuickstartReport, run};

#[test]
fn miniature_quickstart_writes_results_plot_and_a_row_per_method() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-miniature");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let cfg = QuickstartConfig { seeds: 2, ..QuickstartConfig::miniature(&dir) };
    let mut lines = Vec::new();
    let report = run(&cfg, &mut |l| lines.push(l.to_owned())).unwrap();

    for m in Method::ALL {
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

    let json = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let back: QuickstartReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.table, report.table);
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

#[test]
fn bad_configurations_are_errors_not_panics() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart-bad");
    let bad = QuickstartConfig { threads: 0, ..QuickstartConfig::miniature(&dir) };
    assert!(run(&bad, &mut |_| {}).unwrap_err().to_string().contains("threads"));
    let mut bad = QuickstartConfig::miniature(&dir);
    bad.task.n_test = 1_000_000;
    assert!(run(&bad, &mut |_| {}).is_err());
}
