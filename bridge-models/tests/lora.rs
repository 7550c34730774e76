//! LoRA adapter w on a trainable base θ: identity at init, gradients to both groups, merge,
//! PEFT save/load, one adapter on two bases, and the saved-model round trip through transformers.

mod common;

use bridge_core::policy::{CausalLm, SequenceBatch, TokenSequence};
use bridge_core::{BridgeRng, FlatGradients};
use bridge_models::hf::{load_hf_dir, save_hf_dir};
use bridge_models::lora::{LoraAdapter, LoraConfig, LoraTarget};
use bridge_models::{Decoder, DecoderWeights, merge};
use burn::module::Module;
use burn::optim::SgdConfig;
use burn::tensor::Device;
use common::*;

fn setup(name: &str, device: &Device) -> (Decoder, DecoderWeights) {
    let (cfg, w) = load_hf_dir(fixture(name), device).unwrap();
    (Decoder::new(cfg, codec()).unwrap(), w)
}

fn logits(lm: &Decoder, base: &DecoderWeights, adapter: Option<&LoraAdapter>, device: &Device) -> Vec<f32> {
    let r = read_reference(fixture("qwen2_tied").join("reference.json"));
    host(lm.forward_logits(base, adapter, r.ids_tensor(device), Some(r.mask_tensor(device))).unwrap())
}

#[test]
fn adapter_at_init_leaves_the_model_unchanged() {
    let device = Device::flex();
    let (lm, base) = setup("qwen2_tied", &device);
    let adapter = lm.init_adapter(&LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(3)).unwrap();
    assert_eq!(adapter.layers.len(), 2);
    assert!(LoraTarget::ALL.iter().all(|&t| adapter.layers[0].pair(t).is_some()));
    let d = max_abs_diff(&logits(&lm, &base, None, &device), &logits(&lm, &base, Some(&adapter), &device));
    assert_eq!(d, 0.0);
    // Deterministic from the seed.
    let again = lm.init_adapter(&LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(3)).unwrap();
    assert_eq!(adapter.to_tensor_map().unwrap(), again.to_tensor_map().unwrap());
}

#[test]
fn gradients_reach_base_and_adapter() {
    let device = Device::flex().autodiff();
    let (lm, base) = setup("llama3_gqa", &device);
    let adapter = lm.init_adapter(&LoraConfig::default(), &device, &mut BridgeRng::seed_from_u64(1)).unwrap();
    let adapter = randomise_b(adapter, 0.05, 2);
    let batch = SequenceBatch::new(
        vec![TokenSequence::prompt_completion(&[1, 2, 3], &[4, 5, 6, 7]), TokenSequence::all_scored(vec![9, 8, 7])],
        0,
    )
    .unwrap();
    let s = lm.token_scores(&base, Some(&adapter), &batch, true).unwrap();
    let loss = (s.logprobs * s.mask).sum().neg() - s.entropy.unwrap().sum().mul_scalar(0.01);
    let mut grads = loss.backward();
    let groups = lm.param_groups(&base, Some(&adapter));
    let n_base = base.num_params();
    assert_eq!(groups.adapter.len(), 2 * 7 * 2);
    let gb = FlatGradients::from_backward(&mut grads, &base);
    let ga = FlatGradients::from_backward(&mut grads, &adapter);
    assert_eq!(ga.len(), groups.adapter.len(), "every LoRA tensor gets a gradient");
    assert_eq!(gb.len(), groups.base.len(), "every base tensor gets a gradient");
    assert_eq!(gb.num_elements(), n_base);
    assert!(gb.norm() > 0.0 && ga.norm() > 0.0);
    for id in ga.ids() {
        let g = host(ga.get(id).unwrap());
        assert!(g.iter().any(|x| *x != 0.0), "an adapter tensor has an all-zero gradient");
    }
}

#[test]
fn merged_weights_give_the_same_logits() {
    let device = Device::flex();
    for name in FIXTURES {
        let (lm, base) = setup(name, &device);
        let cfg = LoraConfig { rank: 4, alpha: 8.0, ..Default::default() };
        let adapter = randomise_b(lm.init_adapter(&cfg, &device, &mut BridgeRng::seed_from_u64(5)).unwrap(), 0.1, 6);
        let adapted = logits(&lm, &base, Some(&adapter), &device);
        let plain = logits(&lm, &base, None, &device);
        assert!(max_abs_diff(&adapted, &plain) > 1e-2, "{name}: the adapter should change the logits");
        let merged = merge(&base, &adapter).unwrap();
        let d = max_abs_diff(&adapted, &logits(&lm, &merged, None, &device));
        assert!(d <= 1e-4, "{name}: merged vs adapted: {d}");
    }
}

#[test]
fn peft_save_and_load_round_trip() {
    let device = Device::flex();
    let (lm, base) = setup("qwen3_qknorm", &device);
    let cfg = LoraConfig { rank: 3, alpha: 6.0, targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()] };
    let adapter = randomise_b(lm.init_adapter(&cfg, &device, &mut BridgeRng::seed_from_u64(7)).unwrap(), 0.1, 8);
    let dir = std::env::temp_dir().join(format!("bridge-models-peft-{}", std::process::id()));
    adapter.save_peft(&dir, lm.config()).unwrap();
    let map = bridge_models::hf::read_safetensors(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(map.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert!(map.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(map.len(), 2 * 3 * 2);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        (v["r"].as_u64(), v["lora_alpha"].as_f64(), v["peft_type"].as_str()),
        (Some(3), Some(6.0), Some("LORA"))
    );

    let loaded = LoraAdapter::load_peft(&dir, lm.config(), &device).unwrap();
    assert_eq!(loaded.config, cfg);
    let d = max_abs_diff(&logits(&lm, &base, Some(&adapter), &device), &logits(&lm, &base, Some(&loaded), &device));
    assert_eq!(d, 0.0);

    // an adapter for another architecture is refused with a typed error naming the tensor
    let (lm2, _) = setup("llama3_gqa", &device);
    let e = LoraAdapter::load_peft(&dir, lm2.config(), &device).unwrap_err();
    assert!(e.to_string().contains("lora_A") || e.to_string().contains("shape"), "{e}");
}

#[test]
fn one_adapter_on_two_bases_in_one_graph() {
    let device = Device::flex().autodiff();
    let (lm, theta) = setup("qwen2_tied", &device);
    // θ̂: another base of the same architecture.
    let theta_hat = lm.init_weights(&device, &mut BridgeRng::seed_from_u64(11)).unwrap();
    let adapter = randomise_b(
        lm.init_adapter(&LoraConfig { rank: 2, ..Default::default() }, &device, &mut BridgeRng::seed_from_u64(12))
            .unwrap(),
        0.05,
        13,
    );
    let batch = SequenceBatch::new(vec![TokenSequence::all_scored(vec![3, 1, 4, 1, 5, 9])], 0).unwrap();
    let score = |base: &DecoderWeights| {
        let s = lm.token_scores(base, Some(&adapter), &batch, false).unwrap();
        (s.logprobs * s.mask).sum()
    };
    // joint graph: the adapter's gradient is the sum of its gradients through each base
    let mut g = (score(&theta) + score(&theta_hat)).backward();
    let joint = FlatGradients::from_backward(&mut g, &adapter);
    let g1 = FlatGradients::from_backward(&mut score(&theta).backward(), &adapter);
    let g2 = FlatGradients::from_backward(&mut score(&theta_hat).backward(), &adapter);
    let sum = g1.add(&g2).unwrap();
    let diff = FlatGradients::linear_combination(&[(1.0, &joint), (-1.0, &sum)]).unwrap().norm();
    assert!(diff <= 1e-5 * sum.norm().max(1.0), "joint vs separate: {diff}");
    assert!(g1.dot(&g2).unwrap().abs() < g1.norm() * g2.norm(), "the two bases give different directions");
    // both bases get gradients too
    assert_eq!(FlatGradients::from_backward(&mut g, &theta).len(), lm.param_groups(&theta, None).base.len());
}

/// One SGD step on θ and w from the qwen2 fixture, then merge: the model saved in
/// `fixtures/roundtrip_qwen2`.
fn trained_and_merged() -> (Decoder, DecoderWeights) {
    let device = Device::flex().autodiff();
    let (lm, base) = setup("qwen2_tied", &device);
    let adapter = lm
        .init_adapter(
            &LoraConfig { rank: 4, alpha: 8.0, ..Default::default() },
            &device,
            &mut BridgeRng::seed_from_u64(21),
        )
        .unwrap();
    let batch = SequenceBatch::new(
        vec![
            TokenSequence::prompt_completion(&[1, 40, 41], &[42, 43, 44, 2]),
            TokenSequence::prompt_completion(&[1, 7], &[8, 9, 2]),
        ],
        0,
    )
    .unwrap();
    let s = lm.token_scores(&base, Some(&adapter), &batch, false).unwrap();
    let loss = (s.logprobs * s.mask).sum().neg();
    let mut grads = loss.backward();
    let (gb, ga) = lm.param_groups(&base, Some(&adapter)).split(&mut grads, &base, &adapter);
    let base = SgdConfig::new().init().step(0.05, base, gb);
    let adapter = SgdConfig::new().init().step(0.05, adapter, ga);
    let merged = merge(&base, &adapter).unwrap().valid();
    (lm, merged)
}

/// Regenerates `fixtures/roundtrip_qwen2` (config.json, model.safetensors, rust_logits.json);
/// then run `scripts/make_fixtures.py --check fixtures/roundtrip_qwen2` to write reference.json.
#[test]
#[ignore = "writes the committed fixture; run by hand with --ignored"]
fn regenerate_roundtrip_fixture() {
    let (lm, merged) = trained_and_merged();
    let dir = fixture("roundtrip_qwen2");
    save_hf_dir(&dir, lm.config(), &merged).unwrap();
    let device = Device::flex();
    let r = read_reference(fixture("qwen2_tied").join("reference.json"));
    let logits = lm.forward_logits(&merged, None, r.ids_tensor(&device), Some(r.mask_tensor(&device))).unwrap();
    let [b, t, v] = logits.dims();
    let flat = host(logits);
    let nested: Vec<Vec<Vec<f32>>> =
        (0..b).map(|i| (0..t).map(|j| flat[(i * t + j) * v..(i * t + j + 1) * v].to_vec()).collect()).collect();
    let mask: Vec<Vec<u8>> = r.mask.iter().map(|row| row.iter().map(|&m| u8::from(m)).collect()).collect();
    let out = serde_json::json!({"input_ids": r.ids, "attention_mask": mask, "logits": nested});
    std::fs::write(dir.join("rust_logits.json"), out.to_string()).unwrap();
}

#[test]
fn saved_model_loads_in_transformers_with_the_same_logits() {
    // The committed fixture was written by `regenerate_roundtrip_fixture` and checked with
    // transformers (`make_fixtures.py --check`), which wrote reference.json.
    let device = Device::flex();
    let dir = fixture("roundtrip_qwen2");
    let (cfg, saved) = load_hf_dir(&dir, &device).unwrap();
    let lm = Decoder::new(cfg, codec()).unwrap();
    let r = read_reference(dir.join("reference.json"));
    let run =
        |w: &DecoderWeights| lm.forward_logits(w, None, r.ids_tensor(&device), Some(r.mask_tensor(&device))).unwrap();
    let d = r.max_diff(run(&saved));
    println!("roundtrip_qwen2: max |Δlogit| (ours on the saved model vs transformers) = {d:.3e}");
    assert!(d <= 1e-4, "{d}");
    // Re-running the step reproduces the saved model.
    let (_, merged) = trained_and_merged();
    let d = r.max_diff(run(&merged));
    assert!(d <= 1e-4, "re-trained vs transformers: {d}");
    // And saving it again gives a directory that loads to the same tensors.
    let tmp = std::env::temp_dir().join(format!("bridge-models-save-{}", std::process::id()));
    save_hf_dir(&tmp, lm.config(), &saved).unwrap();
    let (_, again) = load_hf_dir(&tmp, &device).unwrap();
    assert_eq!(again.to_tensor_map().unwrap(), saved.to_tensor_map().unwrap());
}
