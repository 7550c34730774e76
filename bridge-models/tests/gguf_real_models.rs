//! The real GGUF models of `scripts/fetch_models.sh` against gguf-py and transformers
//! (`fixtures/smollm2_gguf_reference.json`, `fixtures/qwen25_gguf_reference.json`, written by
//! `scripts/gguf_reference.py`). Each test prints a note and passes when its model is absent.

mod gguf_common;

use bridge_core::{BridgeRng, CausalLm, SamplingParams, TextCodec};
use bridge_models::gguf::GgufFile;
use bridge_models::tokenizer::{ChatMessage, HfCodec};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights};
use burn::tensor::{Device, Int, Tensor, TensorData};
use gguf_common::{cached_model, fixture};
use serde_json::Value;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4.gguf";

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
}

/// Our dequantised tensors (GGUF names, no permutation) against gguf-py's statistics.
fn check_gguf_tensors(file: &GgufFile, reference: &Value) {
    for r in reference["gguf_tensors"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let t = file.read_tensor(name).unwrap();
        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
        let abs_sum: f64 = t.data.iter().map(|&v| f64::from(v).abs()).sum();
        assert!(close(abs_sum, r["abs_sum"].as_f64().unwrap(), 1e-9), "{name}: Σ|x| {abs_sum} vs {}", r["abs_sum"]);
        assert!((sum - r["sum"].as_f64().unwrap()).abs() <= 1e-9 * abs_sum, "{name}: Σx {sum} vs {}", r["sum"]);
        for (i, want) in floats(&r["first"]).into_iter().enumerate() {
            assert!(close(f64::from(t.data[i]), want, 1e-6), "{name}[{i}]: {} vs {want}", t.data[i]);
        }
        let idx = r["strided_index"].as_array().unwrap();
        for (i, want) in idx.iter().zip(floats(&r["strided"])) {
            let i = i.as_u64().unwrap() as usize;
            assert!(close(f64::from(t.data[i]), want, 1e-6), "{name}[{i}]: {} vs {want}", t.data[i]);
        }
        println!("{name} ({}): matches gguf-py (Σx = {sum:.6})", r["type"].as_str().unwrap());
    }
}

/// Our codec's ids and chat renderings against transformers' GGUF tokenizer.
fn check_tokenizer(codec: &HfCodec, reference: &Value) {
    let texts = reference["texts"].as_array().unwrap();
    for t in texts {
        let text = t["text"].as_str().unwrap();
        let want: Vec<u32> = t["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(codec.encode(text).unwrap(), want, "ids of {text:?}");
        let back = codec.decode(&want).unwrap();
        if !text.contains("<|") {
            assert_eq!(back, text, "round trip of {text:?}");
        }
    }
    let chats = reference["chats"].as_array().unwrap();
    for c in chats {
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let got = codec.apply_chat_template(&messages, c["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(got, c["rendered"].as_str().unwrap());
    }
    println!("tokenizer: {} texts and {} chat renderings identical to transformers", texts.len(), chats.len());
}

#[test]
fn smollm2_tensors_and_config_match_gguf_py_and_transformers() {
    let Some(path) = cached_model(SMOL) else { return };
    let reference = fixture("smollm2_gguf_reference.json");
    let file = GgufFile::open(&path).unwrap();
    check_gguf_tensors(&file, &reference);

    let config = file.hf_config().unwrap();
    for (k, want) in reference["config"].as_object().unwrap() {
        let got = &config[k.as_str()];
        match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) if k == "rms_norm_eps" => assert!((g - w).abs() < 1e-9, "{k}: {g} vs {w}"),
            _ => assert_eq!(got, want, "config `{k}`"),
        }
    }

    // HF names and layouts, with llama's Q/K rows un-permuted as transformers does.
    let map = file.hf_tensors().unwrap();
    assert_eq!(map.len(), file.tensors().len());
    assert!(!map.contains_key("lm_head.weight"), "SmolLM2 ties its embeddings");
    for r in reference["hf_tensors"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let t = &map[name];
        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        let cols = *t.shape.last().unwrap();
        for (row, want) in r["rows"].as_object().unwrap() {
            let row: usize = row.parse().unwrap();
            for (j, w) in floats(want).into_iter().enumerate() {
                let g = f64::from(t.data[row * cols + j]);
                assert!(close(g, w, 1e-6), "{name}[{row}, {j}]: {g} vs transformers {w}");
            }
        }
        let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
        assert!(close(sum, r["sum"].as_f64().unwrap(), 1e-7), "{name}: Σ {sum} vs {}", r["sum"]);
    }
    println!("hf tensors: {} tensors, names/shapes/rows match transformers", map.len());
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let Some(path) = cached_model(SMOL) else { return };
    let reference = fixture("smollm2_gguf_reference.json");
    let file = GgufFile::open(&path).unwrap();
    let codec = HfCodec::from_gguf(&file).unwrap();
    assert_eq!(codec.eos_token_ids(), &[2]);
    assert_eq!(codec.pad_token_id(), 2);
    assert_eq!(codec.vocab_size(), 49152);
    codec.check_fits(49152).unwrap();
    assert!(codec.check_fits(49151).is_err());
    check_tokenizer(&codec, &reference);
    let prompt = codec.render_prompt("What is 12 + 7? Answer with a number.").unwrap();
    assert_eq!(prompt, reference["logits"]["prompt"].as_str().unwrap());
}

/// Our f32 forward of the fixture's prompt and our greedy continuation against transformers loading
/// the same GGUF: the first `slice` logits of every position (and, where the fixture has them, its
/// top-k entries and their ids), argmax, max and logsumexp within 1e-3, and identical greedy tokens
/// and text. Returns the largest |Δlogit| seen.
fn check_logits_and_greedy(path: &std::path::Path, reference: &Value) -> f64 {
    let lr = &reference["logits"];
    let device = Device::flex();
    let file = GgufFile::open(path).unwrap();
    let codec = HfCodec::from_gguf(&file).unwrap();
    let cfg = DecoderConfig::from_hf_json(&file.hf_config().unwrap()).unwrap();
    let weights = DecoderWeights::from_tensor_map(&cfg, &file.hf_tensors().unwrap(), &device).unwrap();
    codec.check_fits(cfg.vocab_size).unwrap();
    let ids: Vec<u32> = lr["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(codec.encode(lr["prompt"].as_str().unwrap()).unwrap(), ids);
    let model = Decoder::new(cfg, Box::new(codec)).unwrap();

    let t = ids.len();
    let id_tensor: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), [1, t]), &device);
    let logits = model.forward_logits(&weights, None, id_tensor, None).unwrap();
    let [_, _, vocab] = logits.dims();
    let data: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
    let slice = lr["slice"].as_u64().unwrap() as usize;
    let first = lr["first"].as_array().unwrap();
    assert_eq!(first.len(), t, "one logit row per prompt position");
    let (mut worst, mut worst_top, mut worst_max, mut worst_lse) = (0f64, 0f64, 0f64, 0f64);
    for (p, want_row) in first.iter().enumerate() {
        let row = &data[p * vocab..(p + 1) * vocab];
        for (j, w) in floats(want_row).into_iter().enumerate().take(slice) {
            worst = worst.max((f64::from(row[j]) - w).abs());
        }
        if let (Some(top_ids), Some(top)) = (lr.get("top_ids"), lr.get("top")) {
            for (id, w) in top_ids[p].as_array().unwrap().iter().zip(floats(&top[p])) {
                worst_top = worst_top.max((f64::from(row[id.as_u64().unwrap() as usize]) - w).abs());
            }
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        worst_max = worst_max.max((f64::from(max) - lr["max"][p].as_f64().unwrap()).abs());
        let lse = f64::from(max) + row.iter().map(|&x| f64::from(x - max).exp()).sum::<f64>().ln();
        worst_lse = worst_lse.max((lse - lr["logsumexp"][p].as_f64().unwrap()).abs());
        let argmax =
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
        assert_eq!(argmax as u64, lr["argmax"][p].as_u64().unwrap(), "argmax at position {p}");
    }
    println!("logits: max |Δ| over {t}×{slice} = {worst:.2e}, max |Δ logsumexp| = {worst_lse:.2e}");
    if lr.get("top").is_some() {
        println!(
            "logits: max |Δ| over the top-{} of each position = {worst_top:.2e}",
            lr["top"][0].as_array().unwrap().len()
        );
    }
    println!("logits: max |Δ max| = {worst_max:.2e}; argmax identical at all {t} positions");
    assert!(worst < 1e-3, "max |Δlogit| {worst}");
    assert!(worst_top < 1e-3, "max |Δlogit| over the top entries {worst_top}");
    assert!(worst_max < 1e-3, "max |Δ max logit| {worst_max}");
    assert!(worst_lse < 1e-3, "max |Δ logsumexp| {worst_lse}");

    let want: Vec<u32> = lr["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let mut rng = BridgeRng::seed_from_u64(0);
    let out = model.sample(&weights, None, &[ids], &SamplingParams::greedy(want.len()), &mut rng).unwrap();
    println!("greedy: {:?}", out[0].text);
    assert_eq!(out[0].tokens, want);
    assert_eq!(out[0].text, lr["greedy_text"].as_str().unwrap());
    worst.max(worst_top).max(worst_max)
}

#[test]
fn smollm2_logits_and_greedy_continuation_match_transformers() {
    let Some(path) = cached_model(SMOL) else { return };
    check_logits_and_greedy(&path, &fixture("smollm2_gguf_reference.json"));
}

#[test]
fn qwen25_logits_and_greedy_continuation_match_transformers() {
    let Some(path) = cached_model(QWEN) else { return };
    let reference = fixture("qwen25_gguf_reference.json");
    // A 20-token continuation (no early <|im_end|>) whose every step transformers chose with a
    // top-1/top-2 margin far above the 1e-3 tolerance, so identical tokens are a meaningful check.
    assert_eq!(reference["logits"]["greedy_ids"].as_array().unwrap().len(), 20);
    assert!(reference["logits"]["greedy_min_margin"].as_f64().unwrap() > 1e-2);
    let worst = check_logits_and_greedy(&path, &reference);
    println!("qwen2.5-coder-0.5b: max |Δlogit| = {worst:.2e} (tolerance 1e-3)");
}

#[test]
fn qwen25_tensors_and_tokenizer_match_references() {
    let Some(path) = cached_model(QWEN) else { return };
    let reference = fixture("qwen25_gguf_reference.json");
    let file = GgufFile::open(&path).unwrap();
    check_gguf_tensors(&file, &reference);
    let codec = HfCodec::from_gguf(&file).unwrap();
    assert_eq!(codec.eos_token_ids(), &[151645]);
    assert_eq!(codec.pad_token_id(), 151643);
    check_tokenizer(&codec, &reference);
    let config = file.hf_config().unwrap();
    assert_eq!(config["model_type"], "qwen2");
    assert_eq!(config["attention_bias"], true);
    assert_eq!(config["tie_word_embeddings"], false, "this file stores output.weight separately");
    assert_eq!((config["num_attention_heads"].as_u64(), config["num_key_value_heads"].as_u64()), (Some(14), Some(2)));
    codec.check_fits(config["vocab_size"].as_u64().unwrap() as usize).unwrap();
    assert!(DecoderConfig::from_hf_json(&config).is_ok());
}

/// `bridge_core::sampling::hits_stop_string` decodes only a suffix of a completion; on the real
/// byte-level tokenizers it must agree with decoding everything, at every step of a generator
/// that has not stopped yet: for encoded text (multi-byte characters included), for random ids
/// (which split UTF-8 sequences across tokens) and for stop strings cut out of the text itself.
#[test]
fn stop_strings_in_a_decoded_suffix_agree_with_the_whole_text_on_real_tokenizers() {
    use bridge_core::sampling::hits_stop_string;
    let (mut checked, mut hits) = (0usize, 0usize);
    for name in [SMOL, QWEN] {
        let Some(path) = cached_model(name) else { continue };
        let codec = HfCodec::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let mut rng = BridgeRng::seed_from_u64(7);
        let text = "Let's compute: 12 × 7 = 84.  Then 84 − 9 = 75 ✓\n\nSo the answer is \\boxed{75}.\n#### 75 — 日本語のテキスト 🙂 done";
        let mut sequences = vec![codec.encode(text).unwrap()];
        for _ in 0..60 {
            let v = codec.vocab_size();
            sequences.push((0..40).map(|_| rng.below(v as u64) as u32).collect());
        }
        for tokens in &sequences {
            let whole = codec.decode(tokens).unwrap();
            let chars: Vec<char> = whole.chars().collect();
            let mut stops = vec!["####".to_string(), "\n\n".into(), "boxed{".into(), "日本".into(), "🙂".into()];
            for _ in 0..3 {
                let (a, len) = (rng.below(chars.len().max(1) as u64) as usize, 1 + rng.below(6) as usize);
                stops.push(chars[a..(a + len).min(chars.len())].iter().collect());
            }
            stops.retain(|s| !s.is_empty());
            for n in 1..=tokens.len() {
                let before = codec.decode(&tokens[..n - 1]).unwrap();
                if stops.iter().any(|s| before.contains(s.as_str())) {
                    break;
                }
                let now = codec.decode(&tokens[..n]).unwrap();
                let want = stops.iter().any(|s| now.contains(s.as_str()));
                assert_eq!(hits_stop_string(&codec, &tokens[..n], &stops).unwrap(), want, "{name}: {now:?} {stops:?}");
                checked += 1;
                hits += usize::from(want);
            }
        }
    }
    println!("{checked} prefixes checked, {hits} of them a first hit");
    assert!(checked == 0 || hits > 20, "too few stop-string hits to test anything: {hits}");
}
