//! The same computations on two backends, compared: the check that a GPU build computes what the
//! CPU (`flex`) computes, run by `examples/gpu.rs check` before any GPU figure is trusted.
//!
//! A small random Qwen2-layout decoder (biased q/k/v, GQA, untied embeddings) and a LoRA adapter
//! with non-zero `B` are built from one seed on both devices (the draws happen on the host, so
//! both hold the same numbers). Compared, each as a maximum absolute difference:
//! - the log-probabilities and entropies of a padded batch of two sequences of different lengths
//!   (`token_scores`, base + adapter), in f32 and in bf16;
//! - the gradients of θ and of w of the summed log-likelihood (relative to the largest gradient
//!   entry of each group);
//! - one AdamW step of θ (the updated weights);
//! - the gradient of θ under mixed precision (`mixed_bf16`: bf16 compute on the f32 weights);
//! - greedy generation with the default engine and token selection (on a GPU: the graph engine,
//!   its decode step replayed from a CUDA graph, tokens chosen on the device) and seeded sampling
//!   with host selection on the tensor engine (tokens, and the log-probabilities recorded while
//!   sampling);
//! - the graph engine sampling with top-k/top-p (device selection from the completions' own
//!   seeded draws) against the reference's graph engine, which on the CPU equals host selection
//!   (`bridge-models/tests/generate.rs`): tokens and log-probabilities;
//! - on the target alone: the device-selected samples' recorded log-probabilities against its
//!   own training forward, in f32 and for bf16 weights (greedy, graph engine).
//!
//! The report also says how the target's graph engine ran ([`GraphRun`]): graphs captured, steps
//! replayed, captures refused.
//!
//! On a GPU, f32 matrix products may accumulate in another order (or in TF32), so the
//! tolerances are those of a correct kernel, not of bitwise equality; each check reports its
//! figure and whether it is within its tolerance.

use bridge_core::policy::{CausalLm, SamplingParams, SequenceBatch, TokenSelection, TokenSequence, param_ids};
use bridge_core::{AdamWSettings, BridgeRng, DeviceChoice, FlatGradients, GroupOptimizer, IdsOnlyCodec, Result};
use bridge_models::generate::Generator;
use bridge_models::{DecodeEngine, Decoder, DecoderConfig, DecoderWeights, LoraAdapter, LoraConfig, Precision};
use burn::tensor::{Device, FloatDType, Tensor};
use serde::Serialize;

/// One compared quantity.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// What was compared.
    pub name: String,
    /// The difference found (maximum absolute, or relative where the name says so; for token
    /// sequences, the number of differing tokens).
    pub difference: f64,
    /// The largest difference accepted.
    pub tolerance: f64,
    /// `difference <= tolerance`.
    pub ok: bool,
}

/// Every comparison between a reference and a target device.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheckReport {
    /// The reference backend (normally `flex`).
    pub reference: String,
    /// The backend checked.
    pub target: String,
    /// The comparisons, in order.
    pub comparisons: Vec<Comparison>,
    /// Whether every comparison is within tolerance.
    pub ok: bool,
    /// How the target's graph engine ran its decode steps.
    pub target_graph: GraphRun,
}

/// The graph engine's counters over the check's generations on one device.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GraphRun {
    /// Decode steps run.
    pub decode_steps: usize,
    /// Graphs captured (0 on a backend without graphs).
    pub captures: usize,
    /// Steps replayed from a hardware graph.
    pub replays: usize,
    /// Captures dropped because an in-place write would have gone to a copy.
    pub refusals: usize,
}

pub(crate) fn check_config() -> Result<DecoderConfig> {
    let mut config = DecoderConfig::from_hf_json(&serde_json::json!({
        "model_type": "qwen2", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": false, "rope_theta": 10000.0
    }))?;
    config.eos_token_ids.clear();
    Ok(config)
}

/// The model, θ and w (with `B` drawn from a normal of std 0.02, so w changes the output) on
/// `device`, all from `seed`.
fn build(device: &Device, seed: u64) -> Result<(Decoder, DecoderWeights, LoraAdapter)> {
    let config = check_config()?;
    let lm = Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size: 96 }))?;
    let mut rng = BridgeRng::seed_from_u64(seed);
    let theta = lm.init_weights(device, &mut rng)?;
    let adapter = lm
        .init_adapter(&LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() }, device, &mut rng)?
        .with_random_b(0.02, &mut rng);
    Ok((lm, theta, adapter))
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

/// What one device computed, on the host.
struct Computed {
    logprobs: Vec<f32>,
    entropy: Vec<f32>,
    logprobs_bf16: Vec<f32>,
    grad_theta: Vec<f32>,
    grad_adapter: Vec<f32>,
    grad_theta_mixed: Vec<f32>,
    stepped_theta: Vec<f32>,
    greedy: Vec<Vec<u32>>,
    greedy_logprobs: Vec<f32>,
    sampled: Vec<Vec<u32>>,
    sampled_logprobs: Vec<f32>,
    graph_sampled: Vec<Vec<u32>>,
    graph_sampled_logprobs: Vec<f32>,
    device_sampling_error: f64,
    bf16_graph_error: f64,
    graph: GraphRun,
}

/// The gradients in the module's own parameter order (parameter ids are random per build).
fn flat<M: burn::module::Module>(grads: &FlatGradients, module: &M) -> Vec<f32> {
    param_ids(module).into_iter().flat_map(|id| grads.get(id).map(host).unwrap_or_default()).collect()
}

fn compute(choice: DeviceChoice, seed: u64) -> Result<Computed> {
    let device = choice.autodiff_device()?;
    let (lm, theta, adapter) = build(&device, seed)?;
    let batch = SequenceBatch::new(
        vec![
            TokenSequence::prompt_completion(&[5, 17, 33, 2], &[40, 41, 9, 77, 12, 3]),
            TokenSequence::prompt_completion(&[8, 90], &[11, 62, 4]),
        ],
        0,
    )?;

    let s = lm.token_scores(&theta, Some(&adapter), &batch, true)?;
    let mask = s.mask.clone();
    let logprobs = host(s.logprobs.clone() * mask.clone());
    let entropy = host(s.entropy.clone().map(|e| e * mask.clone()).unwrap_or_else(|| mask.clone()));
    let loss = (s.logprobs * s.mask).sum();
    let mut grads = loss.backward();
    let g_theta = FlatGradients::from_backward(&mut grads, &theta);
    let g_adapter = FlatGradients::from_backward(&mut grads, &adapter);

    let mut opt = GroupOptimizer::new("check", AdamWSettings::with_lr(1e-2))?;
    let stepped = opt.apply(theta.clone(), &g_theta);
    let stepped_theta = host(stepped.embed_tokens.weight.val())
        .into_iter()
        .chain(host(stepped.layers[0].self_attn.q_proj.weight.val()))
        .collect();

    // mixed precision: the same loss computed in bf16 on the f32 weights, f32 gradients
    let mixed =
        Decoder::new(check_config()?, Box::new(IdsOnlyCodec { vocab_size: 96 }))?.with_precision(Precision::MixedBf16);
    let m = mixed.token_scores(&theta, Some(&adapter), &batch, false)?;
    let mut grads = (m.logprobs * m.mask).sum().backward();
    let grad_theta_mixed = flat(&FlatGradients::from_backward(&mut grads, &theta), &theta);

    let half_theta = theta.clone().cast(FloatDType::BF16);
    let half_adapter = adapter.clone().cast(FloatDType::BF16);
    let h = lm.token_scores(&half_theta, Some(&half_adapter), &batch, false)?;
    let logprobs_bf16 = host(h.logprobs * h.mask);

    let prompts = vec![vec![5, 17, 33, 2], vec![8, 90]];
    let mut graph = GraphRun::default();
    let mut count = |g: &Generator<'_>| {
        let s = g.stats();
        graph.decode_steps += s.decode_steps;
        graph.captures += s.graph_captures;
        graph.replays += s.graph_replays;
        graph.refusals += s.graph_refusals;
    };
    // Greedy with the default engine and selection: the graph engine on a GPU, the host engine
    // on the CPU.
    let mut g = Generator::new(&lm, &theta, Some(&adapter))?;
    let greedy = g.generate(&prompts, &SamplingParams::greedy(10), &mut BridgeRng::seed_from_u64(1))?;
    count(&g);
    // Seeded sampling on the host on both devices: the same logits give the same tokens.
    let params = SamplingParams {
        max_new_tokens: 10,
        temperature: 1.0,
        n: 2,
        selection: TokenSelection::Host,
        ..SamplingParams::default()
    };
    let mut g = Generator::new(&lm, &theta, Some(&adapter))?.with_engine(DecodeEngine::Tensor);
    let sampled = g.generate(&prompts, &params, &mut BridgeRng::seed_from_u64(2))?;
    // The graph engine sampling with top-k/top-p, tokens chosen on the device.
    let params = SamplingParams { selection: TokenSelection::Device, top_k: Some(40), top_p: Some(0.95), ..params };
    let mut g = Generator::new(&lm, &theta, Some(&adapter))?.with_engine(DecodeEngine::Graph);
    let graph_sampled = g.generate(&prompts, &params, &mut BridgeRng::seed_from_u64(3))?;
    count(&g);
    // Their recorded log-probabilities must be those the training forward gives on the same
    // device.
    let mut device_sampling_error = 0.0f64;
    for c in &graph_sampled {
        let prompt = &prompts[c.prompt_index];
        let batch = SequenceBatch::new(vec![TokenSequence::prompt_completion(prompt, &c.tokens)], 0)?;
        let scored = host(lm.token_scores(&theta, Some(&adapter), &batch, false)?.logprobs);
        device_sampling_error = device_sampling_error.max(max_abs_diff(&c.logprobs, &scored[prompt.len() - 1..]));
    }
    // bf16 weights (how rollouts run on a GPU): the graph engine's greedy log-probabilities
    // against the bf16 training forward.
    let mut g = Generator::new(&lm, &half_theta, Some(&half_adapter))?.with_engine(DecodeEngine::Graph);
    let half_greedy = g.generate(
        &prompts,
        &SamplingParams { selection: TokenSelection::Device, ..SamplingParams::greedy(10) },
        &mut BridgeRng::seed_from_u64(4),
    )?;
    count(&g);
    let mut bf16_graph_error = 0.0f64;
    for c in &half_greedy {
        let prompt = &prompts[c.prompt_index];
        let batch = SequenceBatch::new(vec![TokenSequence::prompt_completion(prompt, &c.tokens)], 0)?;
        let scored = host(lm.token_scores(&half_theta, Some(&half_adapter), &batch, false)?.logprobs);
        bf16_graph_error = bf16_graph_error.max(max_abs_diff(&c.logprobs, &scored[prompt.len() - 1..]));
    }
    Ok(Computed {
        logprobs,
        entropy,
        logprobs_bf16,
        grad_theta: flat(&g_theta, &theta),
        grad_adapter: flat(&g_adapter, &adapter),
        grad_theta_mixed,
        stepped_theta,
        greedy_logprobs: greedy.iter().flat_map(|c| c.logprobs.clone()).collect(),
        greedy: greedy.into_iter().map(|c| c.tokens).collect(),
        sampled_logprobs: sampled.iter().flat_map(|c| c.logprobs.clone()).collect(),
        sampled: sampled.into_iter().map(|c| c.tokens).collect(),
        graph_sampled_logprobs: graph_sampled.iter().flat_map(|c| c.logprobs.clone()).collect(),
        graph_sampled: graph_sampled.into_iter().map(|c| c.tokens).collect(),
        device_sampling_error,
        bf16_graph_error,
        graph,
    })
}

fn relative(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max).max(1e-12);
    max_abs_diff(a, b) / scale
}

fn differing_tokens(a: &[Vec<u32>], b: &[Vec<u32>]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).filter(|(p, q)| p != q).count() + x.len().abs_diff(y.len()))
        .sum::<usize>() as f64
}

/// Runs every comparison of the [module docs](self) between `reference` and `target`.
pub fn compare_devices(reference: DeviceChoice, target: DeviceChoice, seed: u64) -> Result<DeviceCheckReport> {
    let a = compute(reference, seed)?;
    let b = compute(target, seed)?;
    let mut comparisons = Vec::new();
    let mut add = |name: &str, difference: f64, tolerance: f64| {
        comparisons.push(Comparison { name: name.into(), difference, tolerance, ok: difference <= tolerance });
    };
    add("token log-probs, f32 (max abs)", max_abs_diff(&a.logprobs, &b.logprobs), 2e-3);
    add("entropies, f32 (max abs)", max_abs_diff(&a.entropy, &b.entropy), 2e-3);
    add("token log-probs, bf16 (max abs)", max_abs_diff(&a.logprobs_bf16, &b.logprobs_bf16), 0.15);
    add("gradient of θ (max abs / max |g|)", relative(&a.grad_theta, &b.grad_theta), 1e-2);
    add("gradient of w (max abs / max |g|)", relative(&a.grad_adapter, &b.grad_adapter), 1e-2);
    add("θ after one AdamW step (max abs)", max_abs_diff(&a.stepped_theta, &b.stepped_theta), 1e-3);
    // bf16 compute: the two backends round in different places (flex's materialised attention
    // rounds scores to bf16 as transformers' eager attention does, a GPU's fused kernel keeps
    // them in f32), so only bf16-sized differences are accepted
    add("gradient of θ, mixed_bf16 (max abs / max |g|)", relative(&a.grad_theta_mixed, &b.grad_theta_mixed), 5e-2);
    add("greedy tokens (differing)", differing_tokens(&a.greedy, &b.greedy), 0.0);
    add("greedy log-probs (max abs)", max_abs_diff(&a.greedy_logprobs, &b.greedy_logprobs), 2e-3);
    add("sampled tokens, same seed (differing)", differing_tokens(&a.sampled, &b.sampled), 0.0);
    add("sampled log-probs (max abs)", max_abs_diff(&a.sampled_logprobs, &b.sampled_logprobs), 2e-3);
    add(
        "graph engine, top-k/top-p sampled tokens, same seed (differing)",
        differing_tokens(&a.graph_sampled, &b.graph_sampled),
        0.0,
    );
    add(
        "graph engine, top-k/top-p sampled log-probs (max abs)",
        max_abs_diff(&a.graph_sampled_logprobs, &b.graph_sampled_logprobs),
        2e-3,
    );
    add(
        "graph engine sampling on the target: log-probs vs its training forward (max abs)",
        b.device_sampling_error,
        2e-3,
    );
    add(
        "graph engine, bf16 greedy on the target: log-probs vs its bf16 training forward (max abs)",
        b.bf16_graph_error,
        0.15,
    );
    let ok = comparisons.iter().all(|c| c.ok);
    Ok(DeviceCheckReport {
        reference: reference.to_string(),
        target: target.to_string(),
        comparisons,
        ok,
        target_graph: b.graph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flex against itself: every difference is exactly zero (the check is deterministic), and
    /// the computed quantities are not trivially empty.
    #[test]
    fn flex_against_flex_is_exact() {
        let r = compare_devices(DeviceChoice::Flex, DeviceChoice::Flex, 3).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.comparisons.len(), 15);
        let (cross, own) = r.comparisons.split_at(13);
        assert!(cross.iter().all(|c| c.difference == 0.0), "{r:?}");
        assert!(own[0].difference < 1e-5 && own[1].difference < 2e-2, "{own:?}");
        // flex runs the graph engine's steps eagerly: nothing captured
        assert!(r.target_graph.decode_steps > 0 && r.target_graph.captures == 0 && r.target_graph.replays == 0);
        let c = compute(DeviceChoice::Flex, 3).unwrap();
        assert_eq!(c.logprobs.len(), 2 * 9);
        assert!(c.grad_adapter.iter().any(|&g| g != 0.0) && c.grad_theta.iter().any(|&g| g != 0.0));
        assert_eq!((c.greedy.len(), c.sampled.len(), c.graph_sampled.len()), (2, 4, 4));
        assert!(c.logprobs_bf16.iter().zip(&c.logprobs).any(|(h, f)| h != f), "bf16 differs from f32");
        // the mixed-precision gradient: the f32 one up to bf16 rounding, not equal to it
        assert_ne!(c.grad_theta_mixed, c.grad_theta);
        let d = relative(&c.grad_theta, &c.grad_theta_mixed);
        assert!(d < 5e-2, "mixed vs f32 gradient: {d}");
    }

    /// A different seed is a different model: the comparison reports it (the check can fail).
    #[test]
    fn different_models_are_reported() {
        let a = compute(DeviceChoice::Flex, 3).unwrap();
        let b = compute(DeviceChoice::Flex, 4).unwrap();
        assert!(max_abs_diff(&a.logprobs, &b.logprobs) > 1e-2);
        assert!(relative(&a.grad_theta, &b.grad_theta) > 1e-2);
    }
}
