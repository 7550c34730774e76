//! Integration tests for `bridge_eval::runner`: dataset loading, pass@k and maj@k, greedy and
//! sampled evaluation of a hand-set bigram model, the report, and the gold solutions of
//! GSM-Symbolic scored as completions.

/// Everything sits in `runner::` so that `cargo test -p bridge-eval runner` selects these tests.
mod runner {
    use bridge_core::testing::{BigramBase, BigramLm, CharCodec};
    use bridge_core::{BridgeError, DataFormat, FinishReason};
    use bridge_eval::runner::{
        EvalConfig, EvalDataset, EvalReport, MajorityVote, Outcome, PromptTemplate, SampledEval, evaluate,
        evaluate_datasets, majority_vote, pass_at_k, score_completion,
    };
    use bridge_eval::verify::VerifyOptions;
    use burn::module::Param;
    use burn::tensor::{Device, Tensor, TensorData};
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    /// A fresh scratch directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bridge-runner-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `(path, line, field)` of a data error.
    fn data_err(e: BridgeError) -> (PathBuf, usize, Option<String>) {
        match e {
            BridgeError::Data { path, line, field, .. } => (path, line, field),
            other => panic!("expected a data error, got {other}"),
        }
    }

    // ---------------------------------------------------------------- datasets

    #[test]
    fn gsm8k_math_and_generic_files_load() {
        let dir = scratch("formats");
        let gsm = write(
            &dir,
            "gsm.jsonl",
            "{\"question\": \"How many?\", \"answer\": \"3 + 4 = 7\\n#### 1,234\"}\n\n\
         {\"question\": \"Q2\", \"answer\": \"#### -5\", \"difficulty\": 2}\n",
        );
        let ds = EvalDataset::load(&gsm, DataFormat::Auto).unwrap();
        assert_eq!((ds.format, ds.name.as_str(), ds.len()), (DataFormat::Gsm8k, "gsm", 2));
        assert_eq!(ds.records[0].id, "gsm.jsonl:1");
        assert_eq!(ds.records[0].question, "How many?");
        assert_eq!(ds.records[0].gold, "1234", "thousands commas are removed (bridge_core::dataset)");
        assert_eq!(ds.records[0].solution.as_deref(), Some("3 + 4 = 7\n#### 1,234"));
        assert_eq!(ds.records[1].id, "gsm.jsonl:3", "ids count physical lines, blank ones included");
        assert_eq!(ds.records[1].gold, "-5");
        assert_eq!(ds.records[1].category("difficulty").as_deref(), Some("2"));
        assert_eq!(ds.path.as_deref(), Some(gsm.as_path()));

        let math = write(
            &dir,
            "math.jsonl",
            r#"{"problem": "Half?", "solution": "It is $\\boxed{1}$, no: $\\boxed{\\frac{1}{2}}$.", "level": "Level 5", "type": "Algebra"}
{"problem": "P2", "solution": "so \\boxed{3}", "answer": "7"}
{"problem": "P3", "answer": 12}
"#,
        );
        let ds = EvalDataset::load(&math, DataFormat::Auto).unwrap();
        assert_eq!(ds.format, DataFormat::Math);
        let golds: Vec<&str> = ds.records.iter().map(|r| r.gold.as_str()).collect();
        assert_eq!(golds, [r"\frac{1}{2}", "7", "12"]);
        assert_eq!(ds.records[0].category("level").as_deref(), Some("Level 5"));
        assert_eq!(ds.records[0].category("type").as_deref(), Some("Algebra"));
        assert!(!ds.records[0].metadata.contains_key("problem"), "consumed fields are not metadata");
        assert_eq!(ds.records[2].solution, None);

        let generic = write(
            &dir,
            "gen.jsonl",
            "{\"prompt\": \"1+1=\", \"answer\": 2}\n{\"question\": \"Capital?\", \"answer\": \" Paris \", \"id\": 7}\n",
        );
        let ds = EvalDataset::load(&generic, DataFormat::Auto).unwrap();
        assert_eq!(ds.format, DataFormat::Generic);
        assert_eq!((ds.records[0].question.as_str(), ds.records[0].gold.as_str()), ("1+1=", "2"));
        assert_eq!((ds.records[1].question.as_str(), ds.records[1].gold.as_str()), ("Capital?", "Paris"));
        assert_eq!(ds.records[1].metadata.get("id"), Some(&Value::from(7)));

        // A forced format wins over detection: the whole GSM8K solution becomes the gold answer.
        let ds = EvalDataset::load(&gsm, DataFormat::Generic).unwrap();
        assert_eq!(ds.records[0].gold, "3 + 4 = 7\n#### 1,234");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn malformed_lines_name_file_line_and_field() {
        let dir = scratch("malformed");
        let cases: &[(&str, DataFormat, usize, Option<&str>)] = &[
            (
                "{\"question\":\"q\",\"answer\":\"#### 1\"}\n{\"question\":\"q\",\"answer\":\"no marker\"}\n",
                DataFormat::Gsm8k,
                2,
                Some("answer"),
            ),
            ("{\"question\":\"q\",\"answer\":\"#### 1\"}\n\n{not json\n", DataFormat::Auto, 3, None),
            (
                "{\"question\":\"q\",\"answer\":\"#### 1\"}\n{\"answer\":\"#### 2\"}\n",
                DataFormat::Auto,
                2,
                Some("question"),
            ),
            ("{\"question\":\"q\",\"answer\":[1]}\n", DataFormat::Generic, 1, Some("answer")),
            ("{\"question\":\"q\",\"answer\":\"  \"}\n", DataFormat::Generic, 1, Some("answer")),
            ("{\"question\":7,\"answer\":\"1\"}\n", DataFormat::Generic, 1, Some("question")),
            ("{\"problem\":\"p\",\"solution\":\"no box here\"}\n", DataFormat::Auto, 1, Some("solution")),
            ("{\"problem\":\"p\"}\n", DataFormat::Math, 1, Some("solution")),
            ("{\"problem\":\"p\",\"solution\":\"\\\\boxed{1}\"}\n[1, 2]\n", DataFormat::Auto, 2, None),
            ("{\"text\":\"what format?\"}\n", DataFormat::Auto, 1, None),
        ];
        for (i, (text, format, line, field)) in cases.iter().enumerate() {
            let path = write(&dir, &format!("bad{i}.jsonl"), text);
            let err = EvalDataset::load(&path, *format).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with(&format!("{}:{line}:", path.display())), "case {i}: {message}");
            let (p, l, f) = data_err(err);
            assert_eq!((p, l, f.as_deref()), (path, *line, *field), "case {i}: {message}");
        }
        assert!(matches!(EvalDataset::load(dir.join("absent.jsonl"), DataFormat::Auto), Err(BridgeError::Io { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    // ---------------------------------------------------------------- metrics

    #[test]
    fn pass_at_k_matches_hand_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(pass_at_k(5, 2, 1).unwrap(), 0.4));
        assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7));
        assert_eq!(pass_at_k(5, 0, 3).unwrap(), 0.0);
        assert_eq!(pass_at_k(5, 4, 2).unwrap(), 1.0, "n − c < k");
        assert_eq!(pass_at_k(5, 5, 5).unwrap(), 1.0);
        assert!(pass_at_k(5, 2, 6).is_err());
        assert!(pass_at_k(5, 2, 0).is_err());
    }

    #[test]
    fn pass_at_k_matches_subset_enumeration() {
        for n in 1..=9usize {
            for c in 0..=n {
                for k in 1..=n {
                    // Samples 0..c are the correct ones; count k-subsets holding at least one.
                    let (mut subsets, mut hits) = (0u64, 0u64);
                    for mask in 0u32..(1 << n) {
                        if mask.count_ones() as usize == k {
                            subsets += 1;
                            if mask & ((1u32 << c) - 1) != 0 {
                                hits += 1;
                            }
                        }
                    }
                    let expected = hits as f64 / subsets as f64;
                    let got = pass_at_k(n, c, k).unwrap();
                    assert!((got - expected).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {expected}");
                }
            }
        }
    }

    #[test]
    fn majority_vote_on_hand_made_answers() {
        let mv = |index, votes| Some(MajorityVote { index, votes });
        assert_eq!(
            majority_vote(&[Some("1"), Some("2"), Some("2"), Some("1"), Some("3")]),
            mv(0, 2),
            "tie: first seen wins"
        );
        assert_eq!(majority_vote(&[Some("2"), Some("1"), Some("1"), Some("2")]), mv(0, 2));
        assert_eq!(majority_vote(&[None, Some("5"), Some("7"), Some("7")]), mv(2, 2));
        assert_eq!(majority_vote(&[Some("x"), Some("y"), Some("y"), Some("y"), Some("x")]), mv(1, 3));
        assert_eq!(majority_vote(&[Some("a".to_owned())]), mv(0, 1));
        assert_eq!(majority_vote::<&str>(&[None, None, None]), None);
        assert_eq!(majority_vote::<&str>(&[]), None);
    }

    // ---------------------------------------------------------------- evaluation

    const ALPHABET: &str = "abcdefz0123456789";

    /// A bigram model whose transitions are set by hand: `(from, to, logit)`, every other logit 0
    /// (so an unset row's argmax is token 0, `<eos>`).
    fn hand_set_model(edges: &[(char, Option<char>, f32)]) -> (BigramLm, BigramBase) {
        hand_set_model_over(ALPHABET, edges)
    }

    fn hand_set_model_over(alphabet: &str, edges: &[(char, Option<char>, f32)]) -> (BigramLm, BigramBase) {
        let id = |c: char| alphabet.chars().position(|a| a == c).unwrap() + 1;
        let lm = BigramLm::new(CharCodec::new(alphabet));
        let v = lm.vocab_size();
        let mut table = vec![0.0f32; v * v];
        for &(from, to, logit) in edges {
            table[id(from) * v + to.map_or(0, id)] = logit;
        }
        let device = Device::flex();
        let base =
            BigramBase { table: Param::from_tensor(Tensor::<2>::from_data(TensorData::new(table, [v, v]), &device)) };
        (lm, base)
    }

    /// Greedy: a → "1", b → "2", c → "3", d → "z", e → "eeee…"; ends with `<eos>` after each
    /// answer character, except e, which repeats until `max_new_tokens`.
    fn toy_model() -> (BigramLm, BigramBase) {
        toy_model_over(ALPHABET)
    }

    fn toy_model_over(alphabet: &str) -> (BigramLm, BigramBase) {
        const HIGH: f32 = 40.0;
        hand_set_model_over(
            alphabet,
            &[
                ('a', Some('1'), HIGH),
                ('b', Some('2'), HIGH),
                ('c', Some('3'), HIGH),
                ('d', Some('z'), HIGH),
                ('e', Some('e'), HIGH),
                ('1', None, HIGH),
                ('2', None, HIGH),
                ('3', None, HIGH),
                ('z', None, HIGH),
            ],
        )
    }

    /// a: right, b: right, c: wrong ("3" ≠ "5"), d: no number, e: truncated with no number.
    const TOY: &str = r#"{"question": "a", "answer": "1", "level": 1}
{"question": "b", "answer": "2", "level": 1}
{"question": "c", "answer": "5", "level": 2}
{"question": "d", "answer": "4", "level": 2}
{"question": "e", "answer": "7", "level": 2}
"#;

    fn toy_config() -> EvalConfig {
        let mut verify = VerifyOptions::default();
        verify.extract.last_number_fallback = true; // completions are bare numbers
        EvalConfig {
            prompt: PromptTemplate::Plain { template: "{question}".into() },
            max_new_tokens: 4,
            batch_size: 2,
            verify,
            ..EvalConfig::default()
        }
    }

    #[test]
    fn greedy_evaluation_of_a_hand_set_bigram_model() {
        let (lm, base) = toy_model();
        let data = EvalDataset::parse("toy.jsonl", TOY, DataFormat::Auto).unwrap();
        let config = EvalConfig { keep_records: true, ..toy_config() };
        let report = evaluate(&lm, &base, None, &data, &config).unwrap();
        assert_eq!(report.datasets.len(), 1);
        let d = &report.datasets[0];
        assert_eq!((d.name.as_str(), d.records, d.format), ("toy", 5, DataFormat::Generic));
        assert!(d.sampled.is_none());
        let g = d.greedy.as_ref().unwrap();
        assert_eq!((g.records, g.completions, g.correct, g.unparseable), (5, 5, 2, 2));
        assert!((g.accuracy - 0.4).abs() < 1e-12);
        assert_eq!(g.generated_tokens, 2 + 2 + 2 + 2 + 4, "stop tokens count; e runs to max_new_tokens");
        assert!((g.mean_completion_tokens - 2.4).abs() < 1e-12);
        assert!((g.truncation_rate - 0.2).abs() < 1e-12);
        assert!(g.pass_at.is_empty() && g.maj_at_k.is_none());

        let outcomes: Vec<Outcome> = d.record_results.iter().map(|r| r.greedy.as_ref().unwrap().outcome).collect();
        use Outcome::*;
        assert_eq!(outcomes, [Correct, Correct, Incorrect, UnparseablePrediction, UnparseablePrediction]);

        // Per category: level 1 = {a, b} all right, level 2 = {c, d, e} all wrong.
        let cats: Vec<(&str, &str, usize, f64)> = d
            .categories
            .iter()
            .map(|c| (c.field.as_str(), c.value.as_str(), c.records, c.greedy.as_ref().unwrap().accuracy))
            .collect();
        assert_eq!(cats, [("level", "1", 2, 1.0), ("level", "2", 3, 0.0)]);

        // The failures, in record order, with what was predicted.
        let fails: Vec<(&str, Option<&str>, Outcome, FinishReason)> =
            d.failures.iter().map(|f| (f.id.as_str(), f.prediction.as_deref(), f.outcome, f.finish)).collect();
        assert_eq!(
            fails,
            [
                ("toy.jsonl:3", Some("3"), Incorrect, FinishReason::Stop),
                ("toy.jsonl:4", None, UnparseablePrediction, FinishReason::Stop),
                ("toy.jsonl:5", None, UnparseablePrediction, FinishReason::Length),
            ]
        );
        assert_eq!((d.failures[0].prompt.as_str(), d.failures[0].gold.as_str()), ("c", "5"));
        assert_eq!(d.failures[2].completion, "eeee");

        // Batch size, limit and max_failures.
        for batch_size in [1, 3, 8] {
            let r = evaluate(&lm, &base, None, &data, &EvalConfig { batch_size, ..toy_config() }).unwrap();
            assert_eq!(r.datasets[0].greedy.as_ref().unwrap().correct, 2, "batch size {batch_size}");
        }
        let r =
            evaluate(&lm, &base, None, &data, &EvalConfig { limit: Some(3), max_failures: 0, ..toy_config() }).unwrap();
        let d = &r.datasets[0];
        assert_eq!(d.records, 3);
        assert!((d.greedy.as_ref().unwrap().accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!(d.failures.is_empty());
    }

    #[test]
    fn stop_strings_and_chat_prompts_reach_the_model() {
        let (lm, base) = toy_model();
        let data = EvalDataset::parse("toy.jsonl", TOY, DataFormat::Auto).unwrap();
        // Stopping on "ee" ends e's completion early: no longer truncated.
        let config = EvalConfig { stop_strings: vec!["ee".into()], ..toy_config() };
        let g = evaluate(&lm, &base, None, &data, &config).unwrap().datasets[0].greedy.clone().unwrap();
        assert_eq!((g.generated_tokens, g.truncation_rate), (2 * 4 + 2, 0.0));

        // CharCodec's chat template is the identity, so a chat prompt with the instruction "e" is
        // "a\ne": the bigram model continues from e's row ("eeee", no answer) instead of a's ("1").
        let one =
            EvalDataset::parse("one.jsonl", "{\"question\": \"a\", \"answer\": \"1\"}\n", DataFormat::Auto).unwrap();
        let chat = |instruction: Option<&str>| EvalConfig {
            prompt: PromptTemplate::Chat { system_prompt: None, instruction: instruction.map(str::to_owned) },
            keep_records: true,
            ..toy_config()
        };
        let (lm_nl, base_nl) = toy_model_over(&format!("{ALPHABET}\n"));
        let plain = evaluate(&lm_nl, &base_nl, None, &one, &chat(None)).unwrap();
        assert_eq!(plain.datasets[0].greedy.as_ref().unwrap().correct, 1);
        let instructed = evaluate(&lm_nl, &base_nl, None, &one, &chat(Some("e"))).unwrap();
        let r = &instructed.datasets[0].record_results[0];
        assert_eq!(r.greedy.as_ref().unwrap().finish, FinishReason::Length);
        assert_eq!(instructed.datasets[0].failures[0].prompt, "a\ne");
        // A prompt the tokenizer cannot encode is a typed error, not a panic.
        let err = evaluate(&lm, &base, None, &one, &chat(Some("e"))).unwrap_err();
        assert!(matches!(err, BridgeError::Tokenizer(_)), "{err}");
    }

    #[test]
    fn sampled_evaluation_reports_avg_pass_and_maj_at_k() {
        // With near-one-hot rows, sampling reproduces the greedy answers.
        let (lm, base) = toy_model();
        let data = EvalDataset::parse("toy.jsonl", TOY, DataFormat::Auto).unwrap();
        let config = EvalConfig { sampled: Some(SampledEval::with_k(4)), ..toy_config() };
        let report = evaluate(&lm, &base, None, &data, &config).unwrap();
        let s = report.datasets[0].sampled.as_ref().unwrap();
        assert_eq!((s.samples_per_record, s.completions, s.correct), (4, 20, 8));
        assert!((s.accuracy - 0.4).abs() < 1e-12);
        assert_eq!(s.pass_at.iter().map(|p| p.k).collect::<Vec<_>>(), [1, 2, 4]);
        assert!(s.pass_at.iter().all(|p| (p.value - 0.4).abs() < 1e-12));
        assert!((s.maj_at_k.unwrap() - 0.4).abs() < 1e-12);

        // f → "1" or "2" with equal probability (gold 1), g → "3" or "2" (gold 2), h → "4"/"5"/"6".
        let (lm, base) = hand_set_model(&[
            ('f', Some('1'), 40.0),
            ('f', Some('2'), 40.0),
            ('d', Some('3'), 40.0),
            ('d', Some('2'), 40.0),
            ('e', Some('4'), 40.0),
            ('e', Some('5'), 40.0),
            ('e', Some('6'), 40.0),
        ]);
        let text = "{\"question\":\"f\",\"answer\":\"1\"}\n{\"question\":\"d\",\"answer\":\"2\"}\n{\"question\":\"e\",\"answer\":\"6\"}\n";
        let data = EvalDataset::parse("mix.jsonl", text, DataFormat::Auto).unwrap();
        let sampled = SampledEval { k: 8, temperature: 1.0, top_p: None, top_k: None, pass_at: vec![1, 3, 8] };
        let config = EvalConfig { sampled: Some(sampled), keep_records: true, seed: 11, ..toy_config() };
        let report = evaluate(&lm, &base, None, &data, &config).unwrap();
        let d = &report.datasets[0];
        let s = d.sampled.as_ref().unwrap();
        // Recompute every sampled metric from the per-sample results.
        let mut avg = 0.0;
        let mut pass = [0.0; 3];
        let mut maj = 0.0;
        for r in &d.record_results {
            assert_eq!(r.samples.len(), 8);
            let c = r.samples.iter().filter(|x| x.is_correct()).count();
            avg += c as f64 / 8.0;
            for (p, k) in pass.iter_mut().zip([1, 3, 8]) {
                *p += pass_at_k(8, c, k).unwrap();
            }
            let answers: Vec<Option<String>> = r.samples.iter().map(|x| x.normalized.clone()).collect();
            let vote = majority_vote(&answers).unwrap();
            maj += if r.samples[vote.index].is_correct() { 1.0 } else { 0.0 };
        }
        assert!((s.accuracy - avg / 3.0).abs() < 1e-12);
        for (p, got) in pass.iter().zip(&s.pass_at) {
            assert!((got.value - p / 3.0).abs() < 1e-12);
        }
        assert!((s.maj_at_k.unwrap() - maj / 3.0).abs() < 1e-12);
        // Mixed outcomes did occur (the seed gives both answers for f), so the metrics differ.
        assert!(s.accuracy > 0.0 && s.accuracy < 1.0, "{}", s.accuracy);
        assert!(s.pass_at(8).unwrap() >= s.pass_at(3).unwrap() && s.pass_at(3).unwrap() >= s.pass_at(1).unwrap());

        // Seeded: the same seed reproduces every sample, whatever the batch size; another seed differs.
        let again = evaluate(&lm, &base, None, &data, &config).unwrap();
        assert_eq!(again.datasets[0].record_results, d.record_results);
        let other = evaluate(&lm, &base, None, &data, &EvalConfig { seed: 12, ..config.clone() }).unwrap();
        assert_ne!(other.datasets[0].record_results, d.record_results);
    }

    #[test]
    fn bad_configs_and_empty_datasets_are_errors() {
        let (lm, base) = toy_model();
        let data = EvalDataset::parse("toy.jsonl", TOY, DataFormat::Auto).unwrap();
        let err = evaluate(&lm, &base, None, &data, &EvalConfig { batch_size: 0, ..toy_config() }).unwrap_err();
        assert!(matches!(err, BridgeError::Config { .. }), "{err}");
        let bad_template = EvalConfig { prompt: PromptTemplate::Plain { template: "Q:".into() }, ..toy_config() };
        assert!(evaluate(&lm, &base, None, &data, &bad_template).is_err());
        let err = evaluate(&lm, &base, None, &data, &EvalConfig { limit: Some(0), ..toy_config() }).unwrap_err();
        assert!(err.to_string().contains("no records"), "{err}");
        let empty = EvalDataset::parse("empty.jsonl", "\n\n", DataFormat::Auto).unwrap();
        assert!(empty.is_empty());
        assert!(evaluate(&lm, &base, None, &empty, &toy_config()).is_err());
    }

    // ---------------------------------------------------------------- report

    /// Structural equality with floats compared to a relative 1e-12.
    fn same_json(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
            }
            _ => a == b,
        }
    }

    fn two_dataset_report() -> EvalReport {
        let (lm, base) = toy_model();
        let toy = EvalDataset::parse("toy.jsonl", TOY, DataFormat::Auto).unwrap();
        let other =
            EvalDataset::parse("other|set.jsonl", "{\"question\":\"a\",\"answer\":\"1\"}\n", DataFormat::Auto).unwrap();
        let config = EvalConfig { sampled: Some(SampledEval::with_k(2)), keep_records: true, ..toy_config() };
        let mut seen = Vec::new();
        let report =
            evaluate_datasets(&lm, &base, None, &[toy, other], &config, &mut |p| seen.push((p.mode, p.done, p.total)))
                .unwrap();
        assert_eq!(
            seen,
            [
                ("greedy", 2, 5),
                ("greedy", 4, 5),
                ("greedy", 5, 5),
                ("sample", 2, 5),
                ("sample", 4, 5),
                ("sample", 5, 5),
                ("greedy", 1, 1),
                ("sample", 1, 1)
            ]
        );
        report
    }

    #[test]
    fn report_json_round_trips() {
        let report = two_dataset_report();
        let dir = scratch("report");
        let path = dir.join("report.json");
        report.write_json(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back = EvalReport::from_json(&text).unwrap();
        let (a, b) = (serde_json::to_value(&report).unwrap(), serde_json::to_value(&back).unwrap());
        assert!(same_json(&a, &b), "round trip changed the report");
        assert_eq!(back.datasets.len(), 2);
        assert_eq!(back.datasets[0].failures, report.datasets[0].failures);
        assert_eq!(back.datasets[0].record_results, report.datasets[0].record_results);
        assert_eq!(back.config.sampled, report.config.sampled);
        assert_eq!(a["datasets"][0]["greedy"]["correct"], 2);
        assert_eq!(a["datasets"][0]["failures"][0]["outcome"], "incorrect");
        assert!(EvalReport::from_json("{\"datasets\": 3}").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn markdown_has_the_per_dataset_and_category_tables() {
        let report = two_dataset_report();
        let md = report.to_markdown();
        let lines: Vec<&str> = md.lines().collect();
        let header = "| dataset | records | pass@1 (greedy) | avg@2 | pass@1 | pass@2 | maj@2 | unparseable | mean tokens | truncated | tokens/s | wall s |";
        let at = lines.iter().position(|l| *l == header).unwrap_or_else(|| panic!("no header in\n{md}"));
        assert!(lines[at + 1].starts_with("| --- |"));
        assert!(
            lines[at + 2].starts_with("| toy | 5 | 40.0 | 40.0 | 40.0 | 40.0 | 40.0 | 2/5 | 2.4 | 20.0% |"),
            "{md}"
        );
        assert!(lines[at + 3].starts_with("| other\\|set | 1 | 100.0 |"), "pipes are escaped:\n{md}");
        assert!(md.contains("## By category"));
        assert!(md.contains("| toy | level | 1 | 2 | 100.0 | 100.0 | 100.0 |"), "{md}");
        assert!(md.contains("| toy | level | 2 | 3 | 0.0 | 0.0 | 0.0 |"), "{md}");
        assert!(md.contains("## First failures"));
        assert!(md.contains("| toy.jsonl:3 | greedy | incorrect | `5` | `3` | stop |"), "{md}");
    }

    // ---------------------------------------------------------------- real data

    #[test]
    fn gsm_symbolic_gold_solutions_score_100_percent() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/gsm_symbolic/test.jsonl");
        if !path.exists() {
            eprintln!("skipping: {} is absent", path.display());
            return;
        }
        let data = EvalDataset::load(&path, DataFormat::Auto).unwrap();
        assert_eq!(data.format, DataFormat::Gsm8k);
        assert!(!data.is_empty());
        let opts = VerifyOptions::default();
        let wrong: Vec<(String, Outcome)> = data
            .records
            .iter()
            .map(|r| (r, score_completion(r.solution.as_deref().unwrap(), &r.gold, &opts)))
            .filter(|(_, s)| !s.is_correct())
            .map(|(r, s)| (r.id.clone(), s.outcome))
            .collect();
        assert!(wrong.is_empty(), "{} of {} gold solutions not accepted: {wrong:?}", wrong.len(), data.len());
        eprintln!("{} GSM-Symbolic gold solutions scored 100% correct", data.len());
    }
}
