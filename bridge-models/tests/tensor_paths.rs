//! The tensor engine's memory-saving paths (`TensorPaths`: chunked token scores, fused causal
//! attention) against the paths they replace (burn's `log_softmax` over `[N, V]`, materialised
//! attention scores), on flex, on all four fixture families (GQA, rope scaling, untied head,
//! q/k/v biases, Qwen3's q/k norms), with and without an adapter, on right-padded batches:
//! log-probabilities, entropies and the gradient of every parameter of θ and w (with an entropy
//! term in the loss).

mod common;

use bridge_core::policy::{CausalLm, SequenceBatch, TokenScores, TokenSequence};
use bridge_core::{BridgeRng, FlatGradients};
use bridge_models::hf::load_hf_dir;
use bridge_models::lora::{LoraAdapter, LoraConfig};
use bridge_models::{AttentionPath, Decoder, DecoderWeights, ScoringEngine, TensorPaths};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

/// The paths before: materialised log-softmax and attention.
const OLD: TensorPaths =
    TensorPaths { chunked_scores: false, attention: AttentionPath::Materialised, vocab_chunk: None, query_chunk: None };

/// The new paths with small chunks (7 vocabulary columns: the fixtures' vocabularies are not
/// multiples of it; 3 query rows: nor are the batches' lengths), so that several chunks run.
const NEW: TensorPaths =
    TensorPaths { chunked_scores: true, attention: AttentionPath::Fused, vocab_chunk: Some(7), query_chunk: Some(3) };

fn decoder(name: &str, device: &Device, paths: TensorPaths) -> (Decoder, DecoderWeights) {
    let (cfg, w) = load_hf_dir(fixture(name), device).unwrap();
    let lm = Decoder::new(cfg, codec()).unwrap().with_scoring_engine(ScoringEngine::Tensor).with_tensor_paths(paths);
    (lm, w)
}

/// Right-padded rows of different lengths, prompt and completion parts.
fn batch() -> SequenceBatch {
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

fn adapter(lm: &Decoder, device: &Device) -> LoraAdapter {
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..Default::default() };
    randomise_b(lm.init_adapter(&cfg, device, &mut BridgeRng::seed_from_u64(5)).unwrap(), 0.1, 6)
}

/// Fixed pseudo-random loss weights `[B, T−1]`.
fn weights(b: usize, t1: usize, seed: u32, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..b * t1)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, t1]), device)
}

/// `Σ c·logprobs·mask + Σ e·entropy·mask`.
fn loss(s: TokenScores, device: &Device) -> Tensor<1> {
    let [b, t1] = s.logprobs.dims();
    let lp = (s.logprobs * weights(b, t1, 1, device) * s.mask.clone()).sum();
    match s.entropy {
        Some(e) => lp + (e * weights(b, t1, 2, device) * s.mask).sum(),
        None => lp,
    }
}

/// The values at scored positions (mask 1) only: the fused attention is causal without a
/// padding mask, so positions past a row's end attend the padding too (no loss reads them).
fn scored(values: Tensor<2>, mask: &Tensor<2>) -> Vec<f32> {
    host(values).into_iter().zip(host(mask.clone())).filter(|&(_, m)| m > 0.0).map(|(v, _)| v).collect()
}

#[test]
fn scores_and_gradients_match_the_materialised_paths() {
    let device = Device::flex().autodiff();
    for name in FIXTURES {
        let (old, w) = decoder(name, &device, OLD);
        let (new, _) = decoder(name, &device, NEW);
        let a = adapter(&old, &device);
        for adapter in [None, Some(&a)] {
            let run = |lm: &Decoder| {
                let s = lm.token_scores(&w, adapter, &batch(), true).unwrap();
                let (lp, h) = (scored(s.logprobs.clone(), &s.mask), scored(s.entropy.clone().unwrap(), &s.mask));
                let mut grads = loss(s, &device).backward();
                let mut g: Vec<(String, Vec<f32>)> = Vec::new();
                let gb = FlatGradients::from_backward(&mut grads, &w);
                g.extend(gb.ids().map(|id| (format!("base {id}"), host(gb.get(id).unwrap()))));
                if let Some(a) = adapter {
                    let ga = FlatGradients::from_backward(&mut grads, a);
                    g.extend(ga.ids().map(|id| (format!("adapter {id}"), host(ga.get(id).unwrap()))));
                }
                (lp, h, g)
            };
            let (lp_old, h_old, g_old) = run(&old);
            let (lp_new, h_new, g_new) = run(&new);
            let tag = format!("{name} (adapter: {})", adapter.is_some());
            let d_lp = max_abs_diff(&lp_new, &lp_old);
            let d_h = max_abs_diff(&h_new, &h_old);
            // f32, O(1..10) values: differences are summation order only
            assert!(d_lp <= 2e-5, "{tag}: log-probs differ by {d_lp}");
            assert!(d_h <= 2e-5, "{tag}: entropies differ by {d_h}");
            let expected = old.param_groups(&w, adapter);
            assert_eq!(g_old.len(), expected.base.len() + expected.adapter.len(), "{tag}: every parameter");
            assert_eq!(g_new.len(), g_old.len(), "{tag}");
            for ((id, gn), (id_old, go)) in g_new.iter().zip(&g_old) {
                assert_eq!(id, id_old);
                let scale = go.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let d = max_abs_diff(gn, go);
                assert!(scale > 0.0, "{tag} {id}: an all-zero gradient");
                assert!(d <= 1e-4 * scale.max(1.0), "{tag} {id}: gradients differ by {d} (max |g| {scale})");
            }
        }
    }
}
