//! A tiny, fully deterministic setup shared by the bilevel tests: a bigram policy over "abcde",
//! SFT demonstrations and RL prompts whose reward is "the completion contains the reference character".

#![allow(dead_code)]

use bridge_bilevel::{
    LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, TrainState, TrainingAlgorithm, init_state, run_steps,
};
use bridge_core::schedule::ConstantLambda;
use bridge_core::testing::{BigramAdapter, BigramBase, BigramLm, CharCodec, FnReward};
use bridge_core::{BridgeRng, CausalLm, InMemorySource, Reward, RlPrompt, TokenSequence};
use bridge_rl::{GrpoConfig, PolicyLossConfig};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

pub fn lm() -> BigramLm {
    BigramLm::new(CharCodec::new("abcde"))
}

pub fn device() -> Device {
    Device::flex().autodiff()
}

/// θ₀ and a w₀ whose B is non-zero, so that both LoRA factors receive gradient.
pub fn weights(lm: &BigramLm, device: &Device, seed: u64) -> (BigramBase, BigramAdapter) {
    let mut rng = BridgeRng::seed_from_u64(seed);
    let base = lm.init_base(0.5, device, &mut rng);
    let mut adapter = lm.init_adapter(2, 2.0, device, &mut rng);
    let v = lm.vocab_size();
    let b: Vec<f32> = (0..2 * v).map(|_| (rng.normal() * 0.3) as f32).collect();
    adapter.b = Param::from_tensor(Tensor::from_data(TensorData::new(b, [2, v]), device));
    (base, adapter)
}

pub fn sft_data(lm: &BigramLm) -> InMemorySource<TokenSequence> {
    let c = lm.codec();
    ["a|bcd", "b|cde", "c|dea", "d|eab", "e|abc"]
        .iter()
        .map(|s| {
            let (p, q) = s.split_once('|').unwrap();
            let mut completion = c.encode(q).unwrap();
            completion.push(0);
            TokenSequence::prompt_completion(&c.encode(p).unwrap(), &completion)
        })
        .collect()
}

pub fn prompts() -> InMemorySource<RlPrompt> {
    [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "a")]
        .iter()
        // The demonstration (LUFFY's off-policy trace) is the reference followed by EOS.
        .map(|(p, r)| RlPrompt::new(*p, *p, *r).with_demonstration(*r))
        .collect()
}

pub fn contains_reward() -> FnReward<impl Fn(&str, &RlPrompt) -> Reward + Send + Sync> {
    FnReward::new("contains", |c: &str, p: &RlPrompt| {
        Reward::scored(if c.contains(p.reference.as_str()) { 1.0 } else { 0.0 })
    })
}

pub fn grpo(kl_coef: f64) -> GrpoConfig {
    GrpoConfig {
        prompts_per_step: 3,
        sampling: bridge_core::SamplingParams { n: 8, max_new_tokens: 3, ..Default::default() },
        loss: PolicyLossConfig { kl_coef, ..PolicyLossConfig::default() },
        ..GrpoConfig::default()
    }
}

pub fn values<M: burn::module::Module>(m: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Metrics without wall-clock entries.
pub fn without_timing(m: &Metrics) -> Metrics {
    m.iter().filter(|(k, _)| !k.ends_with("seconds")).map(|(k, v)| (k.clone(), *v)).collect()
}

pub fn snapshot(state: &TrainState<BigramLm>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        values(&state.theta),
        state.theta_hat.as_ref().map(values).unwrap_or_default(),
        state.adapter.as_ref().map(values).unwrap_or_default(),
    )
}

/// Runs `algo` for `steps` steps (λ = 0.5, no KL, no evaluation) and returns the state and the
/// per-step metrics.
pub fn run_loop(
    algo: &mut dyn TrainingAlgorithm<BigramLm>,
    steps: u64,
    optim: &OptimConfig,
    sft_batch_size: usize,
    weight_seed: u64,
    run_seed: u64,
) -> (TrainState<BigramLm>, Vec<Metrics>) {
    let lm = lm();
    let (theta0, w0) = weights(&lm, &device(), weight_seed);
    let state = init_state(algo.needs(), theta0, Some(w0), optim, false, run_seed).unwrap();
    let (sft, prompts, reward, rl) = (sft_data(&lm), prompts(), contains_reward(), grpo(0.0));
    let lambda = ConstantLambda(0.5);
    let inputs = RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size, lambda: &lambda };
    let dir = std::env::temp_dir().join(format!("bridge-loop-{}-{}-{steps}", std::process::id(), algo.name()));
    let cfg = LoopConfig { total_steps: steps, run_dir: dir.clone(), ..LoopConfig::default() };
    let (state, log) = run_logged(&lm, algo, state, &inputs, &cfg, |_, _| Ok(Metrics::new()), false);
    let _ = std::fs::remove_dir_all(dir);
    (state, log)
}

/// Runs `algo` from `state` through `run_steps` (`evaluate` as its evaluation hook) and returns
/// the final state and every step's metrics, without the wall-clock entries when `untimed`.
pub fn run_logged(
    lm: &BigramLm,
    algo: &mut dyn TrainingAlgorithm<BigramLm>,
    state: TrainState<BigramLm>,
    inputs: &RunInputs<'_>,
    cfg: &LoopConfig,
    evaluate: impl FnMut(&BigramLm, &TrainState<BigramLm>) -> bridge_core::Result<Metrics>,
    untimed: bool,
) -> (TrainState<BigramLm>, Vec<Metrics>) {
    let mut log = Vec::new();
    let state = run_steps(lm, algo, state, inputs, cfg, evaluate, |e| {
        if let RunEvent::Step(m) = e {
            log.push(if untimed { without_timing(m) } else { m.clone() });
        }
        Ok(())
    })
    .unwrap();
    (state, log)
}
