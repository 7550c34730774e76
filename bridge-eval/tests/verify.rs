//! Integration tests for `bridge_eval::verify`: the case table, extraction,
//! agreement with Python `math_verify`, adversarial inputs and GSM-Symbolic.

use std::path::PathBuf;
use std::time::Instant;

use bridge_eval::verify::{
    Answer, CompareOptions, ExtractMethod, ExtractOptions, ParseError, Side, Verdict, VerifyOptions,
    answers_equivalent, extract_answer, parse_answer, try_answers_equivalent, verify,
};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn code(v: &Verdict) -> char {
    match v {
        Verdict::Correct { .. } => 'Y',
        Verdict::Incorrect { .. } => 'N',
        Verdict::Unparseable { side: Side::Prediction | Side::Both, .. } => 'P',
        Verdict::Unparseable { side: Side::Gold, .. } => 'G',
        Verdict::Undecided { .. } => 'U',
        Verdict::TooLong { .. } => 'T',
    }
}

#[test]
fn case_table() {
    let path = manifest_dir().join("fixtures/verify_cases.txt");
    let text = std::fs::read_to_string(&path).expect("fixture verify_cases.txt");
    let opts = VerifyOptions::default();
    let mut n = 0;
    let mut failures = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (expect, rest) = line.split_at(1);
        let (gold, pred) = rest.split_once(" ||| ").unwrap_or_else(|| panic!("bad fixture line {}", lineno + 1));
        let gold = gold.trim();
        let completion = format!("Some reasoning first.\nSo the result is \\boxed{{{pred}}}.");
        let v = verify(&completion, gold, &opts);
        n += 1;
        let got = code(&v);
        let want = expect.chars().next().unwrap_or('?');
        if got != want {
            failures.push(format!("line {}: gold {gold:?} pred {pred:?}: want {want} got {got} ({v:?})", lineno + 1));
        }
    }
    println!("case table: {n} cases, {} failures", failures.len());
    assert!(n >= 300, "table too small: {n}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn last_box_wins_and_other_extractors() {
    let o = VerifyOptions::default();
    let two_boxes = "First I thought \\boxed{3}, but checking again gives \\boxed{4}.";
    assert!(verify(two_boxes, "4", &o).is_correct());
    assert!(!verify(two_boxes, "3", &o).is_correct());
    let nested = "\\boxed{\\frac{\\sqrt{3}}{2}} and finally \\fbox{\\frac{1}{2}}";
    assert!(verify(nested, "0.5", &o).is_correct());
    // An unbalanced last box falls back to the previous one.
    assert!(verify("\\boxed{7} then \\boxed{8", "7", &o).is_correct());
    // GSM8K style gold and prediction.
    let gsm_gold = "She has 3 + 4 = 7 apples.\n#### 7";
    assert!(verify("3+4=7 so\n#### 7", gsm_gold, &o).is_correct());
    assert!(!verify("#### 8", gsm_gold, &o).is_correct());
    // Anchors.
    assert!(verify("Thus, the answer is 12.", "12", &o).is_correct());
    assert!(verify("The final answer is $\\frac{1}{3}$.", "\\frac13", &o).is_correct());
    assert!(verify("Final Answer: (C)", "C", &o).is_correct());
    assert!(verify("**Answer:** 1,250 dollars", "1250", &o).is_correct());
    assert!(verify("The answer is 3.5. Done.", "3.5", &o).is_correct());
    // Math span fallback.
    assert!(verify("So we conclude that $x = 5$", "5", &o).is_correct());
    assert!(verify("which gives \\[ y = \\frac{2}{3} \\]", "\\frac{2}{3}", &o).is_correct());
    // MATH-style gold solution with a box.
    let math_gold = "We have $x^2 = 4$, so $x = \\boxed{2}$.";
    assert!(verify("\\boxed{2}", math_gold, &o).is_correct());
    // No answer at all: unparseable prediction, unless the last-number fallback is on.
    let v = verify("I think it is 42", "42", &o);
    assert_eq!(v.label(), "unparseable_prediction");
    assert_eq!(v.signed_reward(), Some(-1.0));
    let mut fallback = VerifyOptions::default();
    fallback.extract.last_number_fallback = true;
    assert!(verify("I think it is 42", "42", &fallback).is_correct());
    let e = extract_answer("I think it is 42", &fallback.extract).expect("fallback");
    assert_eq!(e.method, ExtractMethod::LastNumber);
}

#[test]
fn tail_window_limits_the_search() {
    let mut long = String::from("\\boxed{1}");
    long.push_str(&"é".repeat(5000));
    long.push_str(" the answer is 2");
    let o = ExtractOptions::default();
    let e = extract_answer(&long, &o).expect("anchor in tail");
    assert_eq!(e.text, "2");
    // The window bounds where an answer ends, not where it starts.
    let small = ExtractOptions { tail_chars: 10, ..ExtractOptions::default() };
    assert_eq!(extract_answer(&long, &small).map(|e| e.text).as_deref(), Some("2"));
    let early = format!("\\boxed{{1}}{}", "é".repeat(5000));
    assert!(extract_answer(&early, &o).is_none(), "a box ending before the window is not an answer");
    let zero = ExtractOptions { tail_chars: 0, ..ExtractOptions::default() };
    assert!(extract_answer(&long, &zero).is_none());
}

#[test]
fn verdict_rewards_and_labels() {
    let o = VerifyOptions::default();
    let c = verify("\\boxed{5}", "5", &o);
    assert_eq!((c.label(), c.binary_reward(), c.signed_reward()), ("correct", 1.0, Some(1.0)));
    let i = verify("\\boxed{6}", "5", &o);
    assert_eq!((i.label(), i.binary_reward(), i.signed_reward()), ("incorrect", 0.0, Some(-1.0)));
    let g = verify("\\boxed{6}", "\\frac{", &o);
    assert_eq!((g.label(), g.signed_reward()), ("unparseable_gold", None));
    let pred = c.pred().expect("pred");
    assert_eq!(pred.extracted, "5");
    assert_eq!(pred.normalized, "5");
    let u = verify("\\boxed{\\$1,000}", "1000", &o);
    assert_eq!(u.pred().map(|p| p.normalized.as_str()), Some("1000"));
}

#[test]
fn parse_answer_shapes() {
    assert!(matches!(parse_answer("[0,1)"), Ok(Answer::Interval { lo_closed: true, hi_closed: false, .. })));
    assert!(matches!(parse_answer("(1,2,3)"), Ok(Answer::Tuple(v)) if v.len() == 3));
    assert!(matches!(parse_answer("\\{1,2\\}"), Ok(Answer::Set(v)) if v.len() == 2));
    assert!(matches!(parse_answer("\\text{(B)}"), Ok(Answer::Choice('B'))));
    assert!(matches!(parse_answer("Yes"), Ok(Answer::Text(t)) if t == "yes"));
    assert!(matches!(parse_answer("x = 5"), Ok(Answer::Equation(..))));
    assert_eq!(parse_answer(""), Err(ParseError::Empty));
    assert!(parse_answer("\\frac{1}{").is_err());
    let a = parse_answer("\\frac{4}{3}").expect("parses");
    let b = parse_answer("\\frac{3}{4}").expect("parses");
    assert!(!answers_equivalent(&a, &b, &CompareOptions::default()));
}

/// Adversarial inputs: every one returns (no panic, no hang); budget exhaustion
/// is reported rather than timed.
#[test]
fn adversarial_inputs_are_bounded() {
    let o = VerifyOptions::default();
    let deep_braces = format!("\\boxed{{{}1{}}}", "{".repeat(500), "}".repeat(500));
    let deep_parens = format!("\\boxed{{{}1{}}}", "(".repeat(500), ")".repeat(500));
    let deep_frac = format!("\\boxed{{{}1{}}}", "\\frac{1}{".repeat(300), "}".repeat(300));
    let unbalanced = format!("\\boxed{{{}", "{".repeat(10_000));
    let megabyte = "9".repeat(1 << 20);
    let megabyte_box = format!("\\boxed{{{}}}", "1+".repeat(1 << 19));
    let long_sum = format!("\\boxed{{{}1}}", "x+".repeat(290));
    let many_set = format!("\\boxed{{\\{{{}0\\}}}}", (1..300).map(|i| format!("{i},")).collect::<String>());
    let cases: Vec<(String, String)> = vec![
        ("\\boxed{10^{10^{10}}}".into(), "1".into()),
        ("\\boxed{10^{10^{10}}}".into(), "10^{10^{10}}".into()),
        ("\\boxed{2^{2^{2^{2^{2^{2}}}}}}".into(), "2".into()),
        ("\\boxed{(10^{100})!}".into(), "1".into()),
        ("\\boxed{1000000!}".into(), "1".into()),
        ("\\boxed{\\binom{10^{30}}{10^{20}}}".into(), "1".into()),
        ("\\boxed{x^{10^{9}}}".into(), "x".into()),
        ("\\boxed{99999999999999999999999999999999999999999999^{99999}}".into(), "0".into()),
        ("\\boxed{0^{-1}}".into(), "\\infty".into()),
        ("\\boxed{\\frac{1}{0}}".into(), "1".into()),
        ("\\boxed{\\sqrt{-1}}".into(), "1".into()),
        ("\\boxed{1e308*1e308}".into(), "1".into()),
        ("\\boxed{5!!!!!!!!!!!!!!}".into(), "1".into()),
        (deep_braces, "1".into()),
        (deep_parens, "1".into()),
        (deep_frac, "1".into()),
        (unbalanced, "1".into()),
        (megabyte.clone(), megabyte.clone()),
        (format!("\\boxed{{{megabyte}}}"), "1".into()),
        (megabyte_box, "1".into()),
        (long_sum.clone(), long_sum),
        (many_set.clone(), many_set),
        ("\\boxed{".repeat(20_000), "1".into()),
        ("$".repeat(100_000), "1".into()),
        ("\\boxed{}".into(), "".into()),
        ("\\boxed{\u{1F600}\u{0301}}".into(), "é".into()),
        ("#### \u{1F600}".into(), "#### 5".into()),
    ];
    let mut worst = 0.0f64;
    for (pred, gold) in &cases {
        let t = Instant::now();
        let v = verify(pred, gold, &o);
        let dt = t.elapsed().as_secs_f64();
        worst = worst.max(dt);
        assert!(!v.label().is_empty());
    }
    println!("adversarial: {} cases, worst {:.3} ms (dev profile)", cases.len(), worst * 1e3);

    // Budget exhaustion is reported, deterministically.
    let tiny = VerifyOptions { parse_fuel: 10, ..VerifyOptions::default() };
    let v = verify("\\boxed{1+2+3+4+5+6+7+8+9+10}", "55", &tiny);
    match &v {
        Verdict::Unparseable { reason, .. } => assert!(reason.contains("budget"), "{reason}"),
        other => panic!("expected an exhausted parse budget, got {other:?}"),
    }
    let a = parse_answer("(x+1)^{20}").expect("parses");
    let b = parse_answer("(x+1)^{20}+0").expect("parses");
    let tiny_cmp = CompareOptions { fuel: 5, ..CompareOptions::default() };
    assert!(try_answers_equivalent(&a, &b, &tiny_cmp).is_err());
    let v =
        verify("\\boxed{(x+1)^{20}}", "(1+x)^{20}", &VerifyOptions { compare: tiny_cmp, ..VerifyOptions::default() });
    assert_eq!(v.label(), "undecided");
    assert_eq!(v.signed_reward(), None);
    assert!(try_answers_equivalent(&a, &b, &CompareOptions::default()).expect("enough fuel"));
}

fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// Agreement with Python `math_verify` on held-out bare-answer pairs
/// (fixture written by `scripts/make_math_verify_fixture.py`).
#[test]
fn agrees_with_math_verify() {
    let path = manifest_dir().join("fixtures/math_verify_cases.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixture math_verify_cases.jsonl");
    let opts = VerifyOptions::default();
    let (mut n, mut agree) = (0usize, 0usize);
    let mut disagreements = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).expect("fixture json");
        let (Some(gold), Some(pred)) = (json_str(&rec, "gold"), json_str(&rec, "prediction")) else {
            panic!("fixture record lacks gold/prediction: {line}");
        };
        let want = rec.get("math_verify").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let got = verify(&format!("\\boxed{{{pred}}}"), gold, &opts).is_correct();
        n += 1;
        if got == want {
            agree += 1;
        } else {
            disagreements.push(format!("gold {gold:?} pred {pred:?}: math_verify {want}, ours {got}"));
        }
    }
    let rate = agree as f64 / n.max(1) as f64;
    println!("math_verify agreement: {agree}/{n} = {:.2}%", rate * 100.0);
    for d in &disagreements {
        println!("  disagree: {d}");
    }
    assert!(n >= 200, "fixture too small: {n}");
    assert!(rate >= 0.95, "agreement {:.3} below 0.95", rate);
}

/// GSM-Symbolic: every gold `#### N` parses, and gold against itself is 100% correct.
#[test]
fn gsm_symbolic_gold_self_consistency() {
    let path = manifest_dir().join("../../shared/data/gsm_symbolic/test.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("SKIP gsm_symbolic_gold_self_consistency: {} not found", path.display());
        return;
    };
    let opts = VerifyOptions::default();
    let mut n = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).expect("jsonl record");
        let answer = json_str(&rec, "answer").expect("answer field");
        let hashes = answer.rsplit("####").next().map(str::trim).unwrap_or("");
        assert!(answer.contains("####"), "record {}: no ####", i + 1);
        assert!(parse_answer(hashes).is_ok(), "record {}: gold {hashes:?} does not parse", i + 1);
        let v = verify(answer, answer, &opts);
        assert!(v.is_correct(), "record {}: {v:?}", i + 1);
        // And the bare number as a prediction against the full solution.
        let v = verify(&format!("#### {hashes}"), answer, &opts);
        assert!(v.is_correct(), "record {}: {v:?}", i + 1);
        n += 1;
    }
    println!("gsm_symbolic: {n} records, all gold answers parse and self-verify");
    assert!(n > 0);
}

/// Scientific notation is exact; `e` on its own is Euler's constant; a number glued to a lone
/// `e` is text.
#[test]
fn scientific_notation() {
    let o = VerifyOptions::default();
    let judge = |pred: &str, gold: &str| verify(&format!("\\boxed{{{pred}}}"), gold, &o);
    for (pred, gold) in [
        ("1e5", "100000"),
        ("1E5", "100000"),
        ("1e+5", "100000"),
        ("1.5e3", "1500"),
        ("2.5E-3", "0.0025"),
        ("2.5e-3", "\\frac{1}{400}"),
        ("-1e5", "-100000"),
        ("1e5 + 1", "100001"),
        ("1e5x", "100000x"),
        ("1e40", "10^{40}"),
        ("1e999999998", "1E999999998"),
        ("10e999999997", "1e999999998"),
        ("3e", "3e"),
        ("3E", "3e"),
        ("e", "2.718282"),
        ("2 e", "2\\cdot e"),
    ] {
        assert!(judge(pred, gold).is_correct(), "{pred} = {gold}: {:?}", judge(pred, gold));
    }
    for (pred, gold) in [
        ("1e5", "13.591409142295225"),
        ("1e5", "-100000"),
        ("1e999999998", "1e999999999"),
        ("1e-999999998", "1e-999999999"),
        ("1E-7", "0"),
        ("1e20", "100000000000000000001"),
        ("3e", "3"),
        ("3e", "8.154845485377136"),
        ("2e", "2 e"),
    ] {
        let v = judge(pred, gold);
        assert_eq!(v.label(), "incorrect", "{pred} ≠ {gold}: {v:?}");
    }
    assert_eq!(parse_answer("3e"), Ok(Answer::Text("3e".into())));
    assert_eq!(parse_answer("2e^2 + 1"), Ok(Answer::Text("2e^2 + 1".into())));
    assert!(matches!(parse_answer("e^2"), Ok(Answer::Expr(_))));
    assert!(matches!(parse_answer("1e5"), Ok(Answer::Expr(_))));
    assert_eq!(parse_answer("1e99999999999999999999"), Err(ParseError::Unsupported("exponent out of range")));
}

/// The fixture's verdicts of Python `math_verify` (scripts/make_scientific_fixture.py) against
/// ours: we give the intended verdict on every pair, and differ from `math_verify` only where it
/// reads a lower-case `e` glued to digits as Euler's constant (or does not finish).
#[test]
fn scientific_notation_against_math_verify() {
    let path = manifest_dir().join("fixtures/math_verify_scientific.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixture math_verify_scientific.jsonl");
    let opts = VerifyOptions::default();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).expect("fixture json");
        let (gold, pred) = (json_str(&rec, "gold").unwrap(), json_str(&rec, "prediction").unwrap());
        let ours = rec["ours"].as_bool().unwrap();
        let got = verify(&format!("\\boxed{{{pred}}}"), gold, &opts).is_correct();
        assert_eq!(got, ours, "gold {gold:?} pred {pred:?}");
        if let Some(mv) = rec["math_verify"].as_bool()
            && mv != ours
        {
            let glued_e = |s: &str| s.as_bytes().windows(2).any(|w| w[0].is_ascii_digit() && w[1] == b'e');
            assert!(glued_e(pred) || glued_e(gold), "unexplained disagreement: gold {gold:?} pred {pred:?}");
        }
        n += 1;
    }
    assert!(n >= 25, "fixture too small: {n}");
}

/// Long answers: plain numbers of any length are compared exactly (within the parse budget);
/// any other answer over `max_answer_len` is its own outcome, never "no answer".
#[test]
fn long_answers() {
    let o = VerifyOptions::default();
    let digits: String = (0..5000).map(|i| char::from(b'0' + ((i * 7 + 3) % 10) as u8)).collect();
    let n = format!("9{digits}");
    let boxed = format!("Lots of work.\n\\boxed{{{n}}}");
    let v = verify(&boxed, &n, &o);
    assert!(v.is_correct(), "{}", v.label());
    assert!(verify(&format!("#### {n}"), &format!("So:\n#### {n}"), &o).is_correct());
    let mut other = n.clone();
    other.pop();
    other.push(if n.ends_with('1') { '2' } else { '1' });
    assert_eq!(verify(&boxed, &other, &o).label(), "incorrect");
    assert_eq!(verify(&boxed, &n[..n.len() - 1], &o).label(), "incorrect");
    // The same number with separators, or in scientific notation.
    let grouped: String = {
        let head = n.len() % 3;
        let mut g = n[..head].to_string();
        for chunk in n.as_bytes()[head..].chunks(3) {
            if !g.is_empty() {
                g.push(',');
            }
            g.push_str(std::str::from_utf8(chunk).unwrap());
        }
        g
    };
    assert!(verify(&format!("\\boxed{{{grouped}}}"), &n, &o).is_correct());
    let power = format!("1{}", "0".repeat(4999));
    assert!(verify("\\boxed{1e4999}", &power, &o).is_correct());
    assert_eq!(verify("\\boxed{1e4998}", &power, &o).label(), "incorrect");
    let long_decimal = format!("0.{}1", "0".repeat(3000));
    assert!(verify(&format!("\\boxed{{{long_decimal}}}"), "1e-3001", &o).is_correct());
    // Not a number: too long to judge, on either side.
    let expr = format!("x{}", "+x".repeat(600));
    let v = verify(&format!("\\boxed{{{expr}}}"), "x", &o);
    assert_eq!((v.label(), v.signed_reward()), ("too_long_prediction", Some(-1.0)));
    assert_eq!(v.pred().map(|p| p.extracted.len()), Some(expr.len()));
    let v = verify("\\boxed{2}", &expr, &o);
    assert_eq!((v.label(), v.signed_reward()), ("too_long_gold", None));
    // A number longer than the parse budget allows (16 bytes per step) is reported, not hung on.
    let huge = "7".repeat(16 * (o.parse_fuel as usize + 1));
    let v = verify(&format!("\\boxed{{{huge}}}"), &huge, &o);
    assert!(matches!(&v, Verdict::Unparseable { reason, .. } if reason.contains("budget")), "{}", v.label());
}
