//! The fused CPU scoring engine against the tensor engine (burn's own autodiff as the
//! independent reference): log-probabilities, entropies and the gradient of every parameter of
//! θ and w, on all four fixture families (GQA, rope scaling, untied head, q/k/v biases, Qwen3's
//! q/k norms), with and without an adapter, on a padded batch; plus the engine choice.

mod common;

use bridge_core::policy::{CausalLm, SequenceBatch, TokenScores, TokenSequence};
use bridge_core::{BridgeRng, FlatGradients};
use bridge_models::hf::load_hf_dir;
use bridge_models::lora::{LoraAdapter, LoraConfig};
use bridge_models::{Decoder, DecoderWeights, ScoringEngine};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use common::*;

fn decoders(name: &str, device: &Device) -> (Decoder, Decoder, DecoderWeights) {
    let (cfg, w) = load_hf_dir(fixture(name), device).unwrap();
    let fused = Decoder::new(cfg.clone(), codec()).unwrap().with_scoring_engine(ScoringEngine::Fused);
    let tensor = Decoder::new(cfg, codec()).unwrap().with_scoring_engine(ScoringEngine::Tensor);
    (fused, tensor, w)
}

/// Three right-padded rows of different lengths, prompt and completion parts.
fn small_batch() -> SequenceBatch {
    SequenceBatch::new(
        vec![
            TokenSequence::prompt_completion(&[1, 2, 3], &[4, 5, 6, 7, 8, 2, 3]),
            TokenSequence::all_scored(vec![9, 8, 7, 1]),
            TokenSequence::prompt_completion(&[5, 5], &[6, 1, 2]),
        ],
        0,
    )
    .unwrap()
}

/// Forty rows of lengths 2 to 12: several groups of sequences (the engine groups about 256
/// rows), the last one shorter.
fn large_batch() -> SequenceBatch {
    let rows = (0..40u32)
        .map(|i| {
            let len = 2 + (i * 7 % 11) as usize;
            let tokens: Vec<u32> = (0..len as u32).map(|j| 1 + (i * 3 + j * 5) % 9).collect();
            if i % 3 == 0 {
                TokenSequence::all_scored(tokens)
            } else {
                TokenSequence::prompt_completion(&tokens[..1], &tokens[1..])
            }
        })
        .collect();
    SequenceBatch::new(rows, 0).unwrap()
}

fn batches() -> [SequenceBatch; 2] {
    [small_batch(), large_batch()]
}

fn adapter(lm: &Decoder, device: &Device) -> LoraAdapter {
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..Default::default() };
    randomise_b(lm.init_adapter(&cfg, device, &mut BridgeRng::seed_from_u64(5)).unwrap(), 0.1, 6)
}

/// Fixed pseudo-random loss weights `[B, T−1]` (so that every position's gradient differs).
fn weights(b: usize, t1: usize, seed: u32, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..b * t1)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, t1]), device)
}

/// `Σ c·logprobs·mask + Σ e·entropy·mask`.
fn loss(s: TokenScores, device: &Device) -> Tensor<1> {
    let [b, t1] = s.logprobs.dims();
    let mask = s.mask.clone();
    let lp = (s.logprobs * weights(b, t1, 1, device) * mask.clone()).sum();
    match s.entropy {
        Some(e) => lp + (e * weights(b, t1, 2, device) * mask).sum(),
        None => lp,
    }
}

#[test]
fn log_probs_and_entropies_match_the_tensor_engine() {
    let device = Device::flex();
    for name in FIXTURES {
        let (fused, tensor, w) = decoders(name, &device);
        let a = adapter(&fused, &device);
        for (adapter, batch) in [None, Some(&a)].into_iter().flat_map(|a| batches().map(|b| (a, b))) {
            let f = fused.token_scores(&w, adapter, &batch, true).unwrap();
            let t = tensor.token_scores(&w, adapter, &batch, true).unwrap();
            // every position, padding included (both engines attend the same keys there)
            let d_lp = max_abs_diff(&host(f.logprobs.clone()), &host(t.logprobs.clone()));
            let d_h = max_abs_diff(&host(f.entropy.unwrap()), &host(t.entropy.unwrap()));
            assert!(d_lp <= 2e-5, "{name} (adapter: {}): log-probs differ by {d_lp}", adapter.is_some());
            // entropies are sums over the vocabulary of values near log V: 1e-4 is ~2e-5 relative
            assert!(d_h <= 1e-4, "{name} (adapter: {}): entropies differ by {d_h}", adapter.is_some());
            assert_eq!(host(f.mask), host(t.mask));
            // without the entropy: the same log-probs
            let g = fused.token_scores(&w, adapter, &batch, false).unwrap();
            assert!(g.entropy.is_none());
            assert_eq!(host(g.logprobs), host(f.logprobs));
        }
    }
}

/// Every parameter's gradient (`id → values`).
fn gradients(
    lm: &Decoder,
    base: &DecoderWeights,
    adapter: Option<&LoraAdapter>,
    batch: &SequenceBatch,
    entropy: bool,
) -> Vec<(String, Vec<f32>)> {
    let device = base.device();
    let s = lm.token_scores(base, adapter, batch, entropy).unwrap();
    let mut grads = loss(s, &device).backward();
    let mut out = Vec::new();
    let gb = FlatGradients::from_backward(&mut grads, base);
    for id in gb.ids() {
        out.push((format!("base {id}"), host(gb.get(id).unwrap())));
    }
    if let Some(a) = adapter {
        let ga = FlatGradients::from_backward(&mut grads, a);
        for id in ga.ids() {
            out.push((format!("adapter {id}"), host(ga.get(id).unwrap())));
        }
    }
    out
}

#[test]
fn every_gradient_matches_the_tensor_engine() {
    let device = Device::flex().autodiff();
    for name in FIXTURES {
        let (fused, tensor, w) = decoders(name, &device);
        let a = adapter(&fused, &device);
        let cases = [(None, false, small_batch()), (Some(&a), false, small_batch()), (Some(&a), true, large_batch())];
        for (adapter, entropy, batch) in cases {
            let f = gradients(&fused, &w, adapter, &batch, entropy);
            let t = gradients(&tensor, &w, adapter, &batch, entropy);
            // base: embedding, every norm and projection (and bias, q/k norm, head); adapter:
            // every A and B
            let groups = fused.param_groups(&w, adapter);
            let expected = groups.base.len() + groups.adapter.len();
            assert_eq!(f.len(), expected, "{name}: every parameter gets a gradient");
            assert_eq!(f.len(), t.len());
            for ((id, gf), (id_t, gt)) in f.iter().zip(&t) {
                assert_eq!(id, id_t);
                let scale = gt.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let d = max_abs_diff(gf, gt);
                assert!(scale > 0.0, "{name} {id}: an all-zero gradient");
                assert!(
                    d <= 1e-4 * scale.max(1.0),
                    "{name} (adapter: {}, entropy: {entropy}) {id}: gradients differ by {d} (max |g| {scale})",
                    adapter.is_some()
                );
            }
        }
    }
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    let device = Device::flex().autodiff();
    let (fused, _, w) = decoders("llama3_gqa", &device);
    let a = adapter(&fused, &device);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| gradients(&fused, &w, Some(&a), &large_batch(), true))
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn the_engine_choice_is_checked() {
    let device = Device::flex();
    let (fused, _, w) = decoders("qwen2_tied", &device);
    assert_eq!(fused.scoring_engine(), ScoringEngine::Fused);
    let half = w.cast(FloatDType::BF16);
    let err = fused.token_scores(&half, None, &small_batch(), false).unwrap_err().to_string();
    assert!(err.contains("f32"), "{err}");
    // Auto falls back to the tensor engine for bf16 weights.
    let (cfg, _) = load_hf_dir(fixture("qwen2_tied"), &device).unwrap();
    let auto = Decoder::new(cfg, codec()).unwrap();
    assert_eq!(auto.scoring_engine(), ScoringEngine::Auto);
    assert!(auto.token_scores(&half, None, &small_batch(), false).is_ok());
    for e in [ScoringEngine::Auto, ScoringEngine::Tensor, ScoringEngine::Fused] {
        assert_eq!(e.to_string().parse::<ScoringEngine>().unwrap(), e);
    }
    assert!("fast".parse::<ScoringEngine>().unwrap_err().to_string().contains("fast"));
}
