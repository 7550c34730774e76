//! GGUF → HF directory (`Pretrained::save_hf_dir`, what `examples/convert.rs` writes) against
//! transformers loading the written directory.
//!
//! The fixtures come from `scripts/convert_reference.py`: `fixtures/tiny_gguf/model.gguf` is a
//! tiny llama written by llama.cpp's own writer (gguf-py: F32, F16, Q8_0 and Q4_0 tensors, Q/K
//! rows permuted as llama.cpp does, a byte-level BPE tokenizer, a chat template);
//! `fixtures/tiny_gguf/transformers.json` and `fixtures/smollm2_convert_reference.json` hold what
//! transformers read and computed from our conversion of that file and of SmolLM2-135M-Instruct
//! Q4_1: the config, every tensor's sums, tokenizer ids, the chat rendering, logits and a greedy
//! continuation. Each test converts again, checks that the files are what transformers read, that
//! our logits on the GGUF file equal transformers' on the converted directory (tolerance below),
//! and that our HF loader on the converted directory gives the GGUF path's logits bit for bit.

mod gguf_common;

use bridge_core::{BridgeError, BridgeRng, CausalLm, IdsOnlyCodec, SamplingParams, TextCodec};
use bridge_models::hf::read_safetensors;
use bridge_models::lora::{LoraAdapter, LoraConfig};
use bridge_models::tokenizer::{ChatMessage, HfCodec};
use bridge_models::{Decoder, DecoderWeights, ModelFormat, Pretrained, open_pretrained};
use burn::tensor::{Device, Int, Tensor, TensorData};
use gguf_common::{fixture, model_cache};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// |Δlogit| allowed between our f32 forward on the GGUF file and transformers' f32 forward on the
/// converted directory (the same f32 weights; only the order of the float operations differs).
const TINY_TOLERANCE: f64 = 1e-4;
/// The same for SmolLM2 (30 layers, hidden 576: more rounding to accumulate), as
/// `gguf_real_models.rs` allows against transformers reading the GGUF file itself.
const SMOL_TOLERANCE: f64 = 1e-3;

fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny_gguf/model.gguf")
}

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-convert-tests-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Logits `[t, vocab]` of `ids` (one sequence) under `model`, as host f32.
fn logits(m: &Pretrained, weights: &DecoderWeights, adapter: Option<&LoraAdapter>, ids: &[u32]) -> Vec<f32> {
    let device = weights.device();
    let lm = Decoder::new(m.config.clone(), Box::new(IdsOnlyCodec { vocab_size: m.config.vocab_size })).unwrap();
    let t: Tensor<2, Int> = Tensor::from_data(
        TensorData::new(ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), [1, ids.len()]),
        &device,
    );
    lm.forward_logits(weights, adapter, t, None).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The whole check of one GGUF file against its transformers reference; returns the largest
/// |Δlogit| seen.
fn check_conversion(gguf: &Path, reference: &Value, tolerance: f64, tag: &str) -> f64 {
    let device = Device::flex();
    let from_gguf = open_pretrained(gguf, None, &device).unwrap();
    assert_eq!(from_gguf.format, ModelFormat::Gguf);
    let dir = temp_dir(tag);
    from_gguf.save_hf_dir(&dir).unwrap();

    // The files are the ones transformers read when the fixture was written.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config, reference["config"], "config.json differs from the one transformers loaded");
    let tensors = read_safetensors(&dir.join("model.safetensors")).unwrap();
    let want = reference["tensors"].as_object().unwrap();
    assert_eq!(tensors.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "tensor names");
    for (name, t) in &tensors {
        let w = &want[name];
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        let sum: f64 = t.data.iter().map(|&x| f64::from(x)).sum();
        let abs_sum: f64 = t.data.iter().map(|&x| f64::from(x).abs()).sum();
        let w_abs = w["abs_sum"].as_f64().unwrap();
        assert!((abs_sum - w_abs).abs() <= 1e-9 * w_abs, "{name}: Σ|x| {abs_sum} vs {w_abs}");
        assert!((sum - w["sum"].as_f64().unwrap()).abs() <= 1e-9 * w_abs, "{name}: Σx {sum} vs {}", w["sum"]);
    }

    // The tokenizer files: transformers' ids on them, and ours, from the directory and the GGUF.
    let from_dir = open_pretrained(&dir, None, &device).unwrap();
    assert_eq!(from_dir.format, ModelFormat::HfDir);
    assert_eq!(from_dir.config, from_gguf.config);
    let (gguf_codec, dir_codec) = (from_gguf.require_codec().unwrap(), from_dir.require_codec().unwrap());
    assert_eq!(dir_codec.eos_token_ids(), gguf_codec.eos_token_ids());
    assert_eq!(dir_codec.pad_token_id(), gguf_codec.pad_token_id());
    assert_eq!(dir_codec.bos_token(), gguf_codec.bos_token());
    assert_eq!(dir_codec.chat_template(), gguf_codec.chat_template());
    for t in reference["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        assert_eq!(gguf_codec.encode(text).unwrap(), ids_of(&t["ids"]), "GGUF codec vs transformers: {text:?}");
        assert_eq!(dir_codec.encode(text).unwrap(), ids_of(&t["ids"]), "converted codec vs transformers: {text:?}");
    }
    let chat = &reference["chat"];
    let question = chat["question"].as_str().unwrap();
    for codec in [gguf_codec, dir_codec] {
        let prompt = codec.apply_chat_template(&[ChatMessage::new("user", question)], true).unwrap();
        assert_eq!(prompt, chat["prompt"].as_str().unwrap(), "chat rendering");
        assert_eq!(codec.encode(&prompt).unwrap(), ids_of(&chat["ids"]));
    }

    // Logits: ours on the GGUF file against transformers on the directory, and ours on the
    // directory against ours on the GGUF file.
    let ids = ids_of(&chat["ids"]);
    let ours = logits(&from_gguf, &from_gguf.weights, None, &ids);
    let reloaded = logits(&from_dir, &from_dir.weights, None, &ids);
    assert_eq!(ours, reloaded, "the converted directory gives other logits than the GGUF file");
    let vocab = from_gguf.config.vocab_size;
    let slice = chat["slice"].as_u64().unwrap() as usize;
    let (mut worst, mut worst_lse) = (0f64, 0f64);
    for (p, want_row) in chat["first"].as_array().unwrap().iter().enumerate() {
        let row = &ours[p * vocab..(p + 1) * vocab];
        for (j, w) in floats(want_row).into_iter().enumerate().take(slice) {
            worst = worst.max((f64::from(row[j]) - w).abs());
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        worst = worst.max((f64::from(max) - chat["max"][p].as_f64().unwrap()).abs());
        let lse = f64::from(max) + row.iter().map(|&x| f64::from(x - max).exp()).sum::<f64>().ln();
        worst_lse = worst_lse.max((lse - chat["logsumexp"][p].as_f64().unwrap()).abs());
        let argmax = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
        assert_eq!(argmax.0 as u64, chat["argmax"][p].as_u64().unwrap(), "argmax at position {p}");
    }
    println!(
        "{tag}: {} positions × {slice} logits + max: max |Δ| = {worst:.2e}, max |Δ logsumexp| = {worst_lse:.2e} \
         (transformers {})",
        ids.len(),
        reference["transformers"]
    );
    assert!(worst < tolerance && worst_lse < tolerance, "|Δlogit| {worst}, |Δlogsumexp| {worst_lse} ≥ {tolerance}");

    // transformers' greedy continuation (it did not stop at EOS; an ids-only codec has none).
    let want = ids_of(&chat["greedy_ids"]);
    let lm = Decoder::new(from_gguf.config.clone(), Box::new(IdsOnlyCodec { vocab_size: vocab })).unwrap();
    let params = SamplingParams::greedy(want.len());
    let out = lm.sample(&from_gguf.weights, None, &[ids], &params, &mut BridgeRng::seed_from_u64(0)).unwrap();
    assert_eq!(out[0].tokens, want, "greedy continuation");
    let _ = std::fs::remove_dir_all(&dir);
    worst.max(worst_lse)
}

#[test]
fn tiny_gguf_converts_to_a_directory_transformers_reads_with_the_same_logits() {
    check_conversion(&tiny_gguf(), &fixture("tiny_gguf/transformers.json"), TINY_TOLERANCE, "tiny");
}

#[test]
#[ignore = "needs ~/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf; run by .ci/run after fetch_models.sh"]
fn smollm2_converts_to_a_directory_transformers_reads_with_the_same_logits() {
    let path = model_cache().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is absent: run bridge-models/scripts/fetch_models.sh", path.display());
    check_conversion(&path, &fixture("smollm2_convert_reference.json"), SMOL_TOLERANCE, "smollm2");
}

#[test]
fn an_adapter_is_merged_into_the_converted_weights() {
    let device = Device::flex();
    let base = open_pretrained(tiny_gguf(), None, &device).unwrap();
    let mut rng = BridgeRng::seed_from_u64(7);
    let adapter = LoraAdapter::init(
        &base.config,
        &LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() },
        &device,
        &mut rng,
    )
    .unwrap()
    .with_random_b(0.05, &mut rng);
    let adapter_dir = temp_dir("adapter");
    adapter.save_peft(&adapter_dir, &base.config).unwrap();

    let with = open_pretrained(tiny_gguf(), Some(&adapter_dir), &device).unwrap();
    let out = temp_dir("merged");
    with.save_hf_dir(&out).unwrap();
    let merged = open_pretrained(&out, None, &device).unwrap();
    assert!(merged.adapter.is_none());
    let ids = [269, 117, 115, 260, 10, 87, 104, 265];
    let expected = logits(&with, &with.weights, with.adapter.as_ref(), &ids);
    let got = logits(&merged, &merged.weights, None, &ids);
    let plain = logits(&base, &base.weights, None, &ids);
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff(&plain, &expected) > 1e-2, "the adapter changes the logits");
    assert!(diff(&got, &expected) < 1e-4, "merged {}", diff(&got, &expected));
    let _ = std::fs::remove_dir_all(&adapter_dir);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_paths_are_typed_errors_naming_the_file() {
    let device = Device::flex();
    let dir = temp_dir("errors");
    // Neither a directory nor a .gguf file.
    let txt = dir.join("model.bin");
    std::fs::write(&txt, b"not a model").unwrap();
    let e = open_pretrained(&txt, None, &device).unwrap_err();
    assert!(matches!(&e, BridgeError::Weights { path, .. } if path == &txt), "{e}");
    // Missing.
    let e = open_pretrained(dir.join("absent.gguf"), None, &device).unwrap_err();
    assert!(e.to_string().contains("absent.gguf"), "{e}");
    // A directory without tokenizer.json opens, but has no codec to give.
    let m = open_pretrained(tiny_gguf(), None, &device).unwrap();
    let weights_only = dir.join("weights-only");
    bridge_models::save_hf_dir(&weights_only, &m.config, &m.weights).unwrap();
    let opened = open_pretrained(&weights_only, None, &device).unwrap();
    assert!(opened.codec.is_none());
    assert!(bridge_models::open_codec(&weights_only).unwrap().is_none());
    let e = opened.require_codec().unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    // Writing over a file, or into the directory the model came from.
    let e = m.save_hf_dir(&txt).unwrap_err();
    assert!(e.to_string().contains("model.bin"), "{e}");
    let e = opened.save_hf_dir(&weights_only).unwrap_err();
    assert!(e.to_string().contains("read from"), "{e}");
    // An adapter that is not a PEFT directory.
    let e = open_pretrained(tiny_gguf(), Some(&weights_only), &device).unwrap_err();
    assert!(e.to_string().contains("adapter_config.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_tokenizer_files_round_trip_through_from_dir() {
    let device = Device::flex();
    let m = open_pretrained(tiny_gguf(), None, &device).unwrap();
    let dir = temp_dir("codec");
    bridge_models::pretrained::save_codec(&dir, m.require_codec().unwrap(), &m.config).unwrap();
    let back = HfCodec::from_dir(&dir).unwrap();
    let codec = m.require_codec().unwrap();
    assert_eq!((back.eos_token_ids(), back.pad_token_id()), (codec.eos_token_ids(), codec.pad_token_id()));
    assert_eq!(back.eos_token(), Some("<|im_end|>"));
    assert_eq!(back.bos_token(), Some("<|im_start|>"));
    assert_eq!(back.vocab_size(), codec.vocab_size());
    let text = "<|im_start|>the cat<|im_end|>";
    assert_eq!(back.encode(text).unwrap(), codec.encode(text).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
