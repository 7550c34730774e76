//! Logit parity with `transformers` on the committed fixtures (made by
//! `scripts/make_fixtures.py`), and the loader's error reporting.

mod common;

use bridge_core::BridgeError;
use bridge_models::hf::{load_hf_dir, read_safetensors, write_safetensors};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights};
use burn::tensor::Device;
use common::*;

#[test]
fn logits_match_transformers_on_every_fixture() {
    let device = Device::flex();
    for name in FIXTURES {
        let dir = fixture(name);
        let (cfg, weights) = load_hf_dir(&dir, &device).unwrap();
        let lm = Decoder::new(cfg, codec()).unwrap();
        let r = read_reference(dir.join("reference.json"));
        let logits = lm.forward_logits(&weights, None, r.ids_tensor(&device), Some(r.mask_tensor(&device))).unwrap();
        let diff = r.max_diff(logits);
        println!("{name}: max |Δlogit| vs transformers = {diff:.3e}");
        assert!(diff <= 1e-4, "{name}: max |Δlogit| = {diff}");
    }
}

#[test]
fn unpadded_rows_do_not_need_a_mask() {
    // Row 0 of the reference batch is full length: without a mask it must give the same logits.
    let device = Device::flex();
    let dir = fixture("qwen3_qknorm");
    let (cfg, weights) = load_hf_dir(&dir, &device).unwrap();
    let lm = Decoder::new(cfg, codec()).unwrap();
    let mut r = read_reference(dir.join("reference.json"));
    r.ids.truncate(1);
    r.mask.truncate(1);
    r.logits.truncate(1);
    let logits = lm.forward_logits(&weights, None, r.ids_tensor(&device), None).unwrap();
    assert!(r.max_diff(logits) <= 1e-4);
}

#[test]
fn tensor_map_round_trips_through_safetensors() {
    let device = Device::flex();
    let dir = fixture("llama3_gqa");
    let (cfg, weights) = load_hf_dir(&dir, &device).unwrap();
    let map = weights.to_tensor_map().unwrap();
    let original = read_safetensors(&dir.join("model.safetensors")).unwrap();
    assert_eq!(map, original);
    let tmp = tempdir("st_roundtrip");
    write_safetensors(&tmp.join("x.safetensors"), &map, None).unwrap();
    assert_eq!(read_safetensors(&tmp.join("x.safetensors")).unwrap(), map);
    let again = DecoderWeights::from_tensor_map(&cfg, &map, &device).unwrap();
    assert_eq!(again.to_tensor_map().unwrap(), map);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bridge-models-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_fixture(name: &str, tag: &str) -> std::path::PathBuf {
    let d = tempdir(tag);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(f), d.join(f)).unwrap();
    }
    d
}

#[test]
fn loader_errors_are_typed_and_name_the_culprit() {
    let device = Device::flex();

    // truncated weights file
    let d = copy_fixture("qwen2_tied", "truncated");
    let st = d.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(matches!(&e, BridgeError::Weights { path, .. } if path == &st), "{e}");

    // missing tensor
    let d = copy_fixture("qwen2_tied", "missing");
    let st = d.join("model.safetensors");
    let mut map = read_safetensors(&st).unwrap();
    map.remove("model.layers.1.self_attn.k_proj.bias");
    write_safetensors(&st, &map, None).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(matches!(&e, BridgeError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("model.layers.1.self_attn.k_proj.bias"), "{e}");

    // wrong shape
    let d = copy_fixture("qwen3_qknorm", "shape");
    let st = d.join("model.safetensors");
    let mut map = read_safetensors(&st).unwrap();
    let t = map.get_mut("model.layers.0.mlp.up_proj.weight").unwrap();
    t.shape.reverse();
    write_safetensors(&st, &map, None).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(e.to_string().contains("model.layers.0.mlp.up_proj.weight") && e.to_string().contains("shape"), "{e}");

    // a config that does not match the weights (qwen3 tensors read as qwen2: q/k norms unused, biases missing)
    let d = copy_fixture("qwen3_qknorm", "mismatch");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    v["model_type"] = "llama".into();
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(e.to_string().contains("not used") && e.to_string().contains("_norm.weight"), "{e}");

    // unknown architecture
    v["model_type"] = "gpt_neox".into();
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(matches!(&e, BridgeError::Weights { .. }) && e.to_string().contains("gpt_neox"), "{e}");

    // no weights at all
    let d = tempdir("empty");
    std::fs::copy(fixture("qwen2_tied").join("config.json"), d.join("config.json")).unwrap();
    assert!(load_hf_dir(&d, &device).unwrap_err().to_string().contains("model.safetensors"));
}

#[test]
fn sharded_directories_load() {
    let device = Device::flex();
    let d = tempdir("sharded");
    std::fs::copy(fixture("llama3_gqa").join("config.json"), d.join("config.json")).unwrap();
    let map = read_safetensors(&fixture("llama3_gqa").join("model.safetensors")).unwrap();
    let (mut a, mut b) = (map.clone(), map.clone());
    let mut weight_map = serde_json::Map::new();
    for (i, k) in map.keys().enumerate() {
        let shard = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        if i % 2 == 0 {
            b.remove(k)
        } else {
            a.remove(k)
        };
        weight_map.insert(k.clone(), shard.into());
    }
    write_safetensors(&d.join("model-00001-of-00002.safetensors"), &a, None).unwrap();
    write_safetensors(&d.join("model-00002-of-00002.safetensors"), &b, None).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (cfg, w) = load_hf_dir(&d, &device).unwrap();
    assert_eq!(w.to_tensor_map().unwrap(), map);
    let r = read_reference(fixture("llama3_gqa").join("reference.json"));
    let lm = Decoder::new(cfg, codec()).unwrap();
    assert!(
        r.max_diff(lm.forward_logits(&w, None, r.ids_tensor(&device), Some(r.mask_tensor(&device))).unwrap()) <= 1e-4
    );

    // a shard listed in the index but missing on disk
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_hf_dir(&d, &device).unwrap_err();
    assert!(e.to_string().contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let cfg = DecoderConfig::from_file(fixture("qwen2_tied").join("config.json")).unwrap();
    let alphabet: String = (0..200u32).filter_map(|i| char::from_u32(0x4e00 + i)).collect();
    let e = Decoder::new(cfg, Box::new(bridge_core::testing::CharCodec::new(&alphabet))).unwrap_err();
    assert!(matches!(e, BridgeError::Tokenizer(_)), "{e}");
}
