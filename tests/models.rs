//! `eval --model FILE.gguf` (and an HF directory, and `--adapter`): the eval example's flags
//! (`examples/cli/eval.rs`) parsed from a command line, the model opened the way the example
//! opens it (`Placement::open`, i.e. `bridge_models::open_pretrained`) and evaluated by the
//! function the example calls (`bridge::evaluate::evaluate_pretrained`).
//!
//! Always on: the tiny GGUF of `bridge-models/fixtures/tiny_gguf/` (written by gguf-py), whose
//! greedy continuation transformers computed on its conversion (`transformers.json`). On the real
//! SmolLM2 (ignored unless fetched; `.ci/run` fetches it and runs them): the greedy completion of
//! `eval` equals transformers' greedy continuation of the same prompt.

#![allow(dead_code)]

#[path = "../examples/cli/common.rs"]
mod common;
#[path = "../examples/cli/eval.rs"]
mod eval;

use bridge::evaluate::evaluate_pretrained;
use bridge_core::{BridgeError, BridgeRng, TextCodec};
use bridge_eval::runner::{EvalDataset, EvalReport};
use bridge_models::lora::{LoraAdapter, LoraConfig};
use clap::Parser;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_gguf() -> PathBuf {
    repo().join("bridge-models/fixtures/tiny_gguf/model.gguf")
}

fn fixture(name: &str) -> Value {
    let p = repo().join("bridge-models/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-models-tests-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One GSM8K-form record per question, with a gold answer no model will produce (so that every
/// completion is kept in the report's failures, text included).
fn write_data(dir: &Path, questions: &[&str]) -> PathBuf {
    let path = dir.join("data.jsonl");
    let lines: Vec<String> = questions
        .iter()
        .map(|q| serde_json::json!({ "question": q, "answer": "#### -987654321" }).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// What `examples/eval.rs` does with `argv`, returning the report.
fn run_eval(argv: &[&str]) -> bridge_core::Result<EvalReport> {
    let args = eval::Args::try_parse_from(argv).unwrap();
    let config = args.eval_config()?;
    let datasets =
        args.data.iter().map(|p| EvalDataset::load(p, args.format)).collect::<bridge_core::Result<Vec<_>>>()?;
    let (_device, model) = args.placement.open(&args.model)?;
    evaluate_pretrained(model, &datasets, &config, &mut |_| {})
}

/// The greedy completion text of the report's only record.
fn completion(report: &EvalReport) -> String {
    let d = &report.datasets[0];
    assert_eq!(d.records, 1);
    let g = d.greedy.as_ref().unwrap();
    assert_eq!((g.completions, g.correct), (1, 0));
    d.failures[0].completion.clone()
}

#[test]
fn eval_takes_a_gguf_file_and_generates_what_transformers_does() {
    let reference = fixture("tiny_gguf/transformers.json");
    let chat = &reference["chat"];
    let dir = temp_dir("tiny");
    let data = write_data(&dir, &[chat["question"].as_str().unwrap()]);
    let greedy: Vec<u32> = chat["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let max_new = greedy.len().to_string();
    let gguf = tiny_gguf();
    let argv = |model: &Path| -> Vec<String> {
        [
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--instruction",
            "",
            "--max-new-tokens",
            &max_new,
        ]
        .map(String::from)
        .to_vec()
    };
    let args = argv(&gguf);
    let report = run_eval(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let text = completion(&report);
    let codec = bridge_models::open_codec(&gguf).unwrap().unwrap();
    assert_eq!(text, codec.decode(&greedy).unwrap(), "eval's greedy completion is transformers' continuation");
    let g = report.datasets[0].greedy.as_ref().unwrap();
    assert_eq!(g.generated_tokens, greedy.len(), "transformers' continuation has no EOS: eval runs to the limit");

    // The same model as an HF directory (`examples/convert.rs`) evaluates identically.
    let converted = dir.join("hf");
    bridge_models::open_pretrained(&gguf, None, &burn::tensor::Device::flex())
        .unwrap()
        .save_hf_dir(&converted)
        .unwrap();
    let args = argv(&converted);
    let again = run_eval(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    assert_eq!(completion(&again), text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_applies_an_adapter_to_a_gguf_file() {
    let reference = fixture("tiny_gguf/transformers.json");
    let dir = temp_dir("adapter");
    let data = write_data(&dir, &[reference["chat"]["question"].as_str().unwrap()]);
    let gguf = tiny_gguf();
    let device = burn::tensor::Device::flex();
    let base = bridge_models::open_pretrained(&gguf, None, &device).unwrap();
    let mut rng = BridgeRng::seed_from_u64(3);
    let lora = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    let adapter = LoraAdapter::init(&base.config, &lora, &device, &mut rng).unwrap().with_random_b(0.5, &mut rng);
    let adapter_dir = dir.join("adapter");
    adapter.save_peft(&adapter_dir, &base.config).unwrap();
    let (g, d, a) = (gguf.to_str().unwrap(), data.to_str().unwrap(), adapter_dir.to_str().unwrap());
    let common = ["--data", d, "--instruction", "", "--max-new-tokens", "12"];
    let plain = run_eval(&[&["eval", "--model", g][..], &common].concat()).unwrap();
    let adapted = run_eval(&[&["eval", "--model", g, "--adapter", a][..], &common].concat()).unwrap();
    assert_ne!(completion(&plain), completion(&adapted), "the adapter changes the greedy completion");
    // The merged model (convert --adapter) gives the adapted completion.
    let merged = dir.join("merged");
    bridge_models::open_pretrained(&gguf, Some(&adapter_dir), &device).unwrap().save_hf_dir(&merged).unwrap();
    let m = run_eval(&[&["eval", "--model", merged.to_str().unwrap()][..], &common].concat()).unwrap();
    assert_eq!(completion(&m), completion(&adapted));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_errors_name_the_model_file() {
    let dir = temp_dir("errors");
    let data = write_data(&dir, &["What is 1 + 1?"]);
    let d = data.to_str().unwrap();
    let absent = dir.join("absent.gguf");
    let e = run_eval(&["eval", "--model", absent.to_str().unwrap(), "--data", d]).unwrap_err();
    assert!(e.to_string().contains("absent.gguf"), "{e}");
    // A weights-only directory: the error names the missing tokenizer.json.
    let m = bridge_models::open_pretrained(tiny_gguf(), None, &burn::tensor::Device::flex()).unwrap();
    let weights_only = dir.join("weights-only");
    bridge_models::save_hf_dir(&weights_only, &m.config, &m.weights).unwrap();
    let e = run_eval(&["eval", "--model", weights_only.to_str().unwrap(), "--data", d]).unwrap_err();
    assert!(matches!(e, BridgeError::Io { .. }) && e.to_string().contains("tokenizer.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `eval --model SmolLM2…gguf`: the greedy completion of the fixture's prompt is transformers'
/// (`bridge-models/fixtures/smollm2_convert_reference.json`, transformers on the converted
/// directory, and `smollm2_gguf_reference.json`, transformers on the GGUF file itself).
#[test]
#[ignore = "needs ~/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf; run by .ci/run after fetch_models.sh"]
fn eval_takes_the_smollm2_gguf() {
    let cache = match std::env::var_os("BRIDGE_MODELS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/bridge-models"),
    };
    let gguf = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(gguf.is_file(), "{} is absent: run bridge-models/scripts/fetch_models.sh", gguf.display());
    let reference = fixture("smollm2_convert_reference.json");
    let chat = &reference["chat"];
    let dir = temp_dir("smollm2");
    let data = write_data(&dir, &[chat["question"].as_str().unwrap()]);
    let greedy = chat["greedy_ids"].as_array().unwrap().len().to_string();
    let report = run_eval(&[
        "eval",
        "--model",
        gguf.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--instruction",
        "",
        "--max-new-tokens",
        &greedy,
    ])
    .unwrap();
    let text = completion(&report);
    assert_eq!(text, chat["greedy_text"].as_str().unwrap());
    let on_gguf = fixture("smollm2_gguf_reference.json");
    assert!(on_gguf["logits"]["greedy_text"].as_str().unwrap().starts_with(&text), "{text:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
