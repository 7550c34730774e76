use super::*;
use bridge_core::BridgeError;
use bridge_core::DataFormat;
use bridge_eval::runner::EvalDataset;
use bridge_eval::verify::{VerifyOptions, verify};
use std::collections::HashSet;
use std::sync::OnceLock;

fn default_splits() -> &'static TaskSplits {
    static SPLITS: OnceLock<TaskSplits> = OnceLock::new();
    SPLITS.get_or_init(|| generate(&TaskConfig::default()).unwrap())
}

fn small(seed: u64) -> TaskConfig {
    TaskConfig {
        seed,
        n_pretrain: 200,
        pretrain_problems: vec![20, 80],
        n_sft: 40,
        n_rl: 200,
        n_test: 40,
        ..TaskConfig::default()
    }
}

const PREFIX: &str = "Q: ";
const MID: &str = "\nA: ";

/// Checks a worked solution line by line, independently of the generator: every reasoning line
/// `a op b = c` is recomputed, the last line is `#### N` with N the last result. Returns N and the
/// number of reasoning lines.
fn check_worked(completion: &str, cfg: &TaskConfig) -> (i64, usize) {
    let lines: Vec<&str> = completion.split('\n').collect();
    let (last, steps) = lines.split_last().unwrap();
    let answer: i64 =
        last.strip_prefix("#### ").unwrap_or_else(|| panic!("no #### in {completion:?}")).parse().unwrap();
    assert!(!steps.is_empty(), "{completion:?}");
    let mut result = None;
    for line in steps {
        let (lhs, c) = line.split_once('=').unwrap_or_else(|| panic!("bad line {line:?}"));
        let pos = lhs.find(['+', '-', '*']).unwrap();
        let a: i64 = lhs[..pos].parse().unwrap();
        let b: i64 = lhs[pos + 1..].parse().unwrap();
        let c: i64 = c.parse().unwrap();
        let expect = match &lhs[pos..pos + 1] {
            "+" => a + b,
            "-" => a - b,
            _ => {
                assert!(a <= cfg.max_factor && b <= cfg.max_factor, "{line}");
                a * b
            }
        };
        assert_eq!(c, expect, "wrong arithmetic in {line:?} of {completion:?}");
        assert!((0..=cfg.max_value).contains(&c), "{line}");
        result = Some(c);
    }
    assert_eq!(Some(answer), result, "#### must repeat the last result: {completion:?}");
    (answer, steps.len())
}

fn question_of(prompt: &str) -> &str {
    prompt.strip_prefix(PREFIX).and_then(|p| p.strip_suffix(MID)).unwrap_or_else(|| panic!("bad prompt {prompt:?}"))
}

fn all_texts(s: &TaskSplits) -> Vec<String> {
    let mut out = s.pretrain.clone();
    out.extend(s.sft.iter().map(|e| format!("{}{}", e.prompt, e.completion)));
    out.extend(s.rl.iter().chain(&s.test).map(|p| format!("{}{}", p.prompt, p.reference)));
    out
}

#[test]
fn sizes_and_show_examples() {
    let cfg = TaskConfig::default();
    let s = default_splits();
    assert_eq!(s.pretrain.len(), cfg.n_pretrain);
    assert_eq!((s.sft.len(), s.rl.len(), s.test.len()), (cfg.n_sft, cfg.n_rl, cfg.n_test));
    assert_eq!(s.problems.pretrain.len(), 1600);
    for d in s.pretrain.iter().take(4) {
        println!("PRETRAIN {d:?}");
    }
    for e in s.sft.iter().take(4) {
        println!("SFT {} {:?} -> {:?}", e.id, e.prompt, e.completion);
    }
    for p in s.rl.iter().take(3).chain(s.test.iter().take(3)) {
        println!("PROMPT {} {:?} ref={} meta={:?}", p.id, p.prompt, p.reference, p.metadata);
    }
}

#[test]
fn deterministic_and_seeded() {
    let a = generate(&small(7)).unwrap();
    assert_eq!(a, generate(&small(7)).unwrap());
    let b = generate(&small(8)).unwrap();
    assert_ne!(a.pretrain, b.pretrain);
    assert_ne!(a.sft, b.sft);
    assert_ne!(a.rl, b.rl);
    assert_ne!(a.test, b.test);
    // The test set depends on neither the SFT, RL nor pre-training counts.
    let c = generate(&TaskConfig { n_rl: 100, n_sft: 12, pretrain_problems: vec![3, 4], ..small(7) }).unwrap();
    assert_eq!(a.test, c.test);
}

#[test]
fn splits_are_disjoint() {
    let s = default_splits();
    let mut seen = HashSet::new();
    let p = &s.problems;
    for q in p.pretrain.iter().chain(&p.sft).chain(&p.rl).chain(&p.test).map(|p| p.question.as_str()) {
        assert!(seen.insert(q), "question {q:?} appears twice");
    }
    // The same from the rendered texts alone.
    let pre: HashSet<&str> = s
        .pretrain
        .iter()
        .filter(|d| d.starts_with(PREFIX))
        .map(|d| question_of(&d[..d.find(MID).unwrap() + MID.len()]))
        .collect();
    assert_eq!(pre.len(), 1600);
    let sft: HashSet<&str> = s.sft.iter().map(|e| question_of(&e.prompt)).collect();
    let rl: HashSet<&str> = s.rl.iter().map(|e| question_of(&e.prompt)).collect();
    let test: HashSet<&str> = s.test.iter().map(|e| question_of(&e.prompt)).collect();
    assert_eq!((sft.len(), rl.len(), test.len()), (200, 2000, 400));
    for (x, y) in [(&pre, &sft), (&pre, &rl), (&pre, &test), (&sft, &rl), (&sft, &test), (&rl, &test)] {
        assert!(x.is_disjoint(y));
    }
}

/// The quickstart's shape: levels 1-2 plain (1 and 2 operations), levels 3-4 one and two
/// operations with one squared operand.
fn with_squares(seed: u64) -> TaskConfig {
    TaskConfig {
        seed,
        max_operand: 9,
        max_value: 99,
        n_pretrain: 300,
        pretrain_problems: vec![40, 100],
        n_sft: 80,
        n_rl: 80,
        n_test: 80,
        n_val: 40,
        ops_per_level: vec![1, 2, 1, 2],
        squares_per_level: vec![0, 0, 1, 1],
        ..TaskConfig::default()
    }
}

#[test]
fn squared_levels_are_worked_as_multiplications_and_never_pretrained() {
    let cfg = with_squares(2);
    let s = generate(&cfg).unwrap();
    let count = |ps: &[Problem]| (1..=4).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>();
    for (split, n) in [(&s.problems.sft, 20), (&s.problems.rl, 20), (&s.problems.test, 20), (&s.problems.val, 10)] {
        assert_eq!(count(split), vec![n; 4]);
    }
    assert_eq!(s.val.len(), 40);
    for p in s.problems.sft.iter().chain(&s.problems.test).chain(&s.problems.val) {
        let e = Expr::parse(&p.question).unwrap();
        let squares = p.question.matches("^2").count() as u32;
        assert_eq!(squares, cfg.squares(p.level), "{p:?}");
        assert_eq!(e.n_powers() as u32, squares);
        assert_eq!(p.question.matches(['+', '-', '*']).count() as u32, cfg.ops(p.level), "{p:?}");
        // Independently recomputed: every line is right, and a square `a^2` is the line `a*a=…`.
        let (answer, lines) = check_worked(&p.solution(), &cfg);
        assert_eq!(answer, p.answer);
        assert_eq!(lines as u32, cfg.ops(p.level) + squares);
        for part in p.question.split(['+', '-', '*', '(', ')']).filter(|t| t.ends_with("^2")) {
            let a = part.trim_end_matches("^2");
            assert!(p.solution().contains(&format!("{a}*{a}=")), "{p:?}");
            assert!(a.parse::<i64>().unwrap() >= 2, "{p:?}");
        }
        assert!(cfg.max_chars(p.level) >= p.prompt(&cfg.prompt_template).len() + p.solution().len());
    }
    // The pre-training text never shows `^`: the squared levels are a new skill.
    assert!(s.pretrain.iter().all(|d| !d.contains('^')));
    assert!(s.problems.pretrain.iter().all(|p| p.level <= 2));
    // Disjoint splits, validation included.
    let mut seen = HashSet::new();
    let p = &s.problems;
    for q in p.pretrain.iter().chain(&p.sft).chain(&p.rl).chain(&p.test).chain(&p.val).map(|p| p.question.as_str()) {
        assert!(seen.insert(q), "question {q:?} appears twice");
    }
    // The test set does not move when the validation split is added.
    let no_val = generate(&TaskConfig { n_val: 0, ..cfg.clone() }).unwrap();
    assert_eq!(no_val.test, s.test);
    // A level cannot have more squares than operands.
    let err = generate(&TaskConfig { squares_per_level: vec![0, 0, 3, 0], ..cfg.clone() }).unwrap_err();
    assert!(err.to_string().contains("squares_per_level"), "{err}");
    let err = generate(&TaskConfig { ops_per_level: vec![1, 2], ..cfg }).unwrap_err();
    assert!(err.to_string().contains("ops_per_level"), "{err}");
}

#[test]
fn every_character_is_in_the_alphabet() {
    let mut alphabet: Vec<char> = ALPHABET.chars().collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    assert_eq!(alphabet.iter().collect::<String>(), ALPHABET, "ALPHABET is sorted and has no repeats");
    let mut used = HashSet::new();
    let squares = generate(&with_squares(0)).unwrap();
    for t in all_texts(default_splits()).into_iter().chain(all_texts(&squares)) {
        for c in t.chars() {
            assert!(ALPHABET.contains(c), "{c:?} in {t:?}");
            used.insert(c);
        }
    }
    assert_eq!(used.len(), ALPHABET.chars().count(), "every character of the alphabet is used");
    assert!(all_texts(default_splits()).iter().all(|t| !t.contains('^')), "no square unless asked for");
    for d in &default_splits().pretrain {
        assert!(!d.contains("\n\n") && !d.is_empty() && !d.ends_with('\n'), "{d:?}");
    }
}

#[test]
fn lengths_are_bounded_per_level() {
    let cfg = TaskConfig::default();
    assert!(cfg.max_chars(cfg.levels) <= 96, "{}", cfg.max_chars(cfg.levels));
    assert_eq!(cfg.max_chars(4), 70);
    let s = default_splits();
    let mut longest = [0usize; 5];
    for (e, p) in s.sft.iter().zip(&s.problems.sft) {
        let n = e.prompt.len() + e.completion.len();
        assert!(n <= cfg.max_chars(p.level), "{n} > {} for {e:?}", cfg.max_chars(p.level));
        longest[p.level as usize] = longest[p.level as usize].max(n);
    }
    let all = s.problems.rl.iter().chain(&s.problems.test).chain(&s.problems.pretrain);
    for p in all {
        let n = p.document(&cfg.prompt_template).len();
        assert!(n <= cfg.max_chars(p.level), "{n} for {p:?}");
        longest[p.level as usize] = longest[p.level as usize].max(n);
    }
    println!("longest example per level: {:?}", &longest[1..]);
    assert!(longest[1] < longest[2] && longest[2] < longest[3] && longest[3] < longest[4]);
    assert!(s.pretrain.iter().all(|d| d.len() <= 96));
}

#[test]
fn gold_solutions_are_correct_and_the_verifier_accepts_them() {
    let cfg = TaskConfig::default();
    let s = default_splits();
    let opts = VerifyOptions::default();
    for (e, p) in s.sft.iter().zip(&s.problems.sft) {
        let (answer, n_lines) = check_worked(&e.completion, &cfg);
        assert_eq!(n_lines as u32, p.level);
        // The lines solve the question: its independently parsed value is the answer.
        let q = question_of(&e.prompt);
        assert_eq!(Expr::parse(q).unwrap().solve().unwrap().1, answer, "{q}");
        let operands = q.split(['+', '-', '*', '(', ')']).filter(|n| !n.is_empty());
        assert!(operands.clone().count() == p.level as usize + 1, "{q}");
        assert!(operands.map(|n| n.parse::<i64>().unwrap()).all(|n| (0..=cfg.max_operand).contains(&n)), "{q}");
        assert!(verify(&e.completion, &answer.to_string(), &opts).is_correct(), "{e:?}");
        assert!(verify(&e.completion, &e.completion, &opts).is_correct());
        assert!(!verify(&e.completion, &(answer + 1).to_string(), &opts).is_correct());
    }
    for (rp, p) in s.test.iter().zip(&s.problems.test).chain(s.rl.iter().zip(&s.problems.rl)) {
        assert_eq!(question_of(&rp.prompt), p.question);
        let (answer, n_lines) = check_worked(&p.solution(), &cfg);
        assert_eq!(rp.reference, answer.to_string());
        assert_eq!(rp.metadata.get("level").and_then(|v| v.as_u64()), Some(u64::from(p.level)));
        assert_eq!(n_lines as u32, p.level);
        let v = verify(&p.solution(), &rp.reference, &opts);
        assert!(v.is_correct(), "{rp:?}: {}", v.label());
    }
}

#[test]
fn test_and_other_splits_are_balanced_across_levels() {
    let s = default_splits();
    let count = |ps: &[Problem]| (1..=4).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>();
    assert_eq!(count(&s.problems.test), vec![100; 4]);
    assert_eq!(count(&s.problems.sft), vec![50; 4]);
    assert_eq!(count(&s.problems.rl), vec![500; 4]);
    assert_eq!(count(&s.problems.pretrain), vec![100, 1500, 0, 0]);
    // Shuffled: the levels are interleaved.
    assert_ne!(s.problems.test[..100].iter().map(|p| p.level).collect::<HashSet<_>>().len(), 1);
    let t = generate(&TaskConfig { n_test: 10, ..small(1) }).unwrap();
    assert_eq!(count(&t.problems.test), vec![3, 3, 2, 2]);
}

#[test]
fn per_level_counts_are_honoured_and_splits_stay_disjoint() {
    // The quickstart's shape: few level-1 questions (its space is small), many hard ones.
    let cfg = TaskConfig {
        levels: 3,
        max_operand: 9,
        max_value: 40,
        n_pretrain: 300,
        pretrain_problems: vec![120],
        n_sft: 90,
        sft_per_level: vec![0, 40, 50],
        n_rl: 75,
        rl_per_level: vec![25, 20, 30],
        n_test: 60,
        test_per_level: vec![10, 20, 30],
        ..small(4)
    };
    let s = generate(&cfg).unwrap();
    let count = |ps: &[Problem]| (1..=3).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>();
    assert_eq!(count(&s.problems.sft), vec![0, 40, 50]);
    assert_eq!(count(&s.problems.rl), vec![25, 20, 30]);
    assert_eq!(count(&s.problems.test), vec![10, 20, 30]);
    assert_eq!(count(&s.problems.pretrain), vec![120, 0, 0]);
    assert_eq!((s.sft.len(), s.rl.len(), s.test.len(), s.pretrain.len()), (90, 75, 60, 300));
    for (e, p) in s.rl.iter().zip(&s.problems.rl) {
        assert_eq!(e.metadata.get("level").and_then(|v| v.as_u64()), Some(u64::from(p.level)));
    }
    let mut seen = HashSet::new();
    let p = &s.problems;
    for q in p.pretrain.iter().chain(&p.sft).chain(&p.rl).chain(&p.test).map(|p| p.question.as_str()) {
        assert!(seen.insert(q), "question {q:?} appears twice");
    }
    // Deterministic; and the test set does not move when only the other counts do.
    assert_eq!(s, generate(&cfg).unwrap());
    let other = TaskConfig { n_sft: 30, sft_per_level: vec![10, 10, 10], pretrain_problems: vec![50], ..cfg.clone() };
    assert_eq!(generate(&other).unwrap().test, s.test);
    // Per-level counts equal to the even spread give the same splits as none.
    let even = TaskConfig { n_test: 10, ..small(1) };
    let explicit = TaskConfig { test_per_level: vec![3, 3, 2, 2], ..even.clone() };
    assert_eq!(generate(&even).unwrap(), generate(&explicit).unwrap());
    // Level 1's capacity still bounds its splits, whatever the other levels get.
    let err = generate(&TaskConfig { n_test: 240, test_per_level: vec![180, 30, 30], ..cfg }).unwrap_err();
    assert!(err.to_string().contains("level 1 (1 operations, 0 squares) has only 238"), "{err}");
}

#[test]
fn pretraining_shows_no_worked_hard_problem() {
    let cfg = TaskConfig::default();
    let (mut problems, mut facts) = (0, 0);
    for d in &default_splits().pretrain {
        if let Some(rest) = d.strip_prefix(PREFIX) {
            let (q, solution) = rest.split_once(MID).unwrap();
            let (_, n) = check_worked(solution, &cfg);
            assert!(n <= 2, "{d:?}");
            assert_eq!(Problem::from_question(q).unwrap().solution(), solution);
            problems += 1;
        } else {
            for fact in d.split(' ') {
                check_worked(&format!("{fact}\n#### {}", fact.split('=').nth(1).unwrap()), &cfg);
                facts += 1;
            }
        }
    }
    assert_eq!(problems, 1600);
    assert_eq!(facts, 2400 * 8);
}

#[test]
fn parentheses_and_operators_can_be_restricted() {
    let cfg = TaskConfig { parentheses: false, operators: "+-".into(), ..small(3) };
    let s = generate(&cfg).unwrap();
    for t in all_texts(&s) {
        assert!(!t.contains(['(', ')', '*']), "{t:?}");
    }
    let with = generate(&small(3)).unwrap();
    assert!(with.test.iter().any(|p| p.prompt.contains('(')));
}

#[test]
fn too_many_problems_is_an_error_not_a_hang() {
    // Level 1 has 772 distinct questions with the default limits (enumerated exactly).
    let cfg = TaskConfig { n_rl: 2600, ..TaskConfig::default() };
    let err = generate(&cfg).unwrap_err();
    assert!(matches!(err, BridgeError::Config { .. }), "{err}");
    assert!(err.to_string().contains("level 1 (1 operations, 0 squares) has only 772"), "{err}");
    // A sampled level (raw space too large to enumerate) with 14 admissible questions.
    let cfg = TaskConfig {
        levels: 4,
        operators: "*".into(),
        max_factor: 0,
        n_pretrain: 0,
        pretrain_problems: vec![],
        n_sft: 0,
        n_rl: 0,
        n_test: 80,
        ..TaskConfig::default()
    };
    let err = generate(&cfg).unwrap_err();
    assert!(err.to_string().contains("level 1 (1 operations, 0 squares) has only 1"), "{err}");
    let cfg = TaskConfig { n_test: 0, n_rl: 4 * 20, ..cfg };
    let err = generate(&cfg).unwrap_err();
    assert!(err.to_string().contains("level 1 (1 operations, 0 squares) has only 1"), "{err}");
    let cfg = TaskConfig { levels: 4, n_rl: 0, n_test: 0, n_sft: 0, pretrain_problems: vec![1, 1, 1, 20], ..cfg };
    let err = generate(&TaskConfig { n_pretrain: 23, ..cfg }).unwrap_err();
    assert!(err.to_string().contains("level 4 (4 operations, 0 squares) has too few (only 0 found"), "{err}");
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        TaskConfig { levels: 0, ..Default::default() },
        TaskConfig { levels: MAX_LEVEL + 1, ..Default::default() },
        TaskConfig { max_operand: 0, ..Default::default() },
        TaskConfig { max_value: 10, ..Default::default() },
        TaskConfig { max_factor: -1, ..Default::default() },
        TaskConfig { operators: "".into(), ..Default::default() },
        TaskConfig { operators: "+/".into(), ..Default::default() },
        TaskConfig { operators: "++".into(), ..Default::default() },
        TaskConfig { pretrain_problems: vec![1, 2, 3, 4, 5], ..Default::default() },
        TaskConfig { pretrain_problems: vec![4000, 1], ..Default::default() },
        TaskConfig { pretrain_problems: vec![usize::MAX, 1], ..Default::default() },
        TaskConfig { facts_per_doc: 0, ..Default::default() },
        TaskConfig { n_rl: MAX_SPLIT_LEN + 1, ..Default::default() },
        TaskConfig { sft_per_level: vec![100, 100], ..Default::default() },
        TaskConfig { sft_per_level: vec![50, 50, 50, 49], ..Default::default() },
        TaskConfig { rl_per_level: vec![2000, 0, 0, 0, 0], ..Default::default() },
        TaskConfig { test_per_level: vec![usize::MAX, 1, 0, 0], ..Default::default() },
        TaskConfig { prompt_template: "Question: {question}\nA: ".into(), ..Default::default() },
        TaskConfig { prompt_template: "Q: \nA: ".into(), ..Default::default() },
        TaskConfig { prompt_template: "Q: {question}{question}".into(), ..Default::default() },
    ];
    for cfg in bad {
        let err = generate(&cfg).unwrap_err();
        assert!(matches!(err, BridgeError::Config { .. }), "{err}");
    }
    assert!(TaskConfig::default().validate().is_ok());
    let parsed: TaskConfig = serde_json::from_str(r#"{"seed": 3, "n_rl": 10}"#).unwrap();
    assert_eq!(parsed, TaskConfig { seed: 3, n_rl: 10, ..Default::default() });
    assert!(serde_json::from_str::<TaskConfig>(r#"{"n_train": 10}"#).is_err());
    let json = serde_json::to_string(&TaskConfig::default()).unwrap();
    assert_eq!(serde_json::from_str::<TaskConfig>(&json).unwrap(), TaskConfig::default());
}

#[test]
fn files_round_trip() {
    let s = generate(&small(5)).unwrap();
    let dir = std::env::temp_dir().join(format!("bridge-tasks-test-{}", std::process::id()));
    s.write_jsonl(&dir).unwrap();
    assert_eq!(read_pretrain(dir.join("pretrain.txt")).unwrap(), s.pretrain);
    let test = EvalDataset::load(dir.join("test.jsonl"), DataFormat::Auto).unwrap();
    assert_eq!(test.format, DataFormat::Gsm8k);
    assert_eq!(test.records.len(), s.test.len());
    for (r, p) in test.records.iter().zip(&s.test) {
        assert_eq!(r.question, question_of(&p.prompt));
        assert_eq!(r.gold, p.reference);
        assert_eq!(r.category("level"), p.metadata.get("level").map(|l| l.to_string()));
    }
    let sft_text = std::fs::read_to_string(dir.join("sft.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(sft_text.lines().next().unwrap()).unwrap();
    assert_eq!(first["answer"], serde_json::Value::from(s.sft[0].completion.clone()));
    assert_eq!(first["id"], serde_json::Value::from(s.sft[0].id.clone()));
    let rl = EvalDataset::load(dir.join("rl.jsonl"), DataFormat::Auto).unwrap();
    assert_eq!(
        rl.records.iter().map(|r| r.gold.clone()).collect::<Vec<_>>(),
        s.rl.iter().map(|p| p.reference.clone()).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(read_pretrain(dir.join("pretrain.txt")).is_err());
}
