//! The unrolled hypergradient of `bridge_unrolled` against finite differences of the unrolled
//! objective itself, `F(w) = J_RL(θ + α ∇_θ G(θ, w), w)` with `G = (1−λ) J_SFT + λ J_RL`, on the
//! bigram model in f64 (its own test binary: the device's float type is set before any tensor).
//!
//! The rollouts and the SFT batch are fixed; the clip range is wide enough never to bind, so `F`
//! is smooth. Directional derivatives `(F(w + δd) − F(w − δd)) / 2δ` along random directions `d`
//! must equal `⟨∇_w F, d⟩`, and must *not* equal the direct term `⟨∇_w J_RL(θ⁺, w), d⟩` alone.

mod common;

use bridge_bilevel::unrolled::{objective_gradients, unrolled_hypergradient};
use bridge_core::testing::BigramAdapter;
use bridge_core::{BridgeRng, CausalLm, FlatGradients, SequenceBatch, step_along};
use bridge_rl::{KlEstimator, LossAggregation, PolicyLossConfig, RlTrainingBatch, collect_rollouts, grpo_loss};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use common::*;

fn random_direction(w: &BigramAdapter, rng: &mut BridgeRng) -> FlatGradients {
    let device = w.a.val().device();
    let mut random = |dims: [usize; 2]| {
        let v: Vec<f64> = (0..dims[0] * dims[1]).map(|_| rng.normal()).collect();
        Tensor::<2>::from_data(TensorData::new(v, dims), &device)
    };
    let (ra, rb) = (random(w.a.val().dims()), random(w.b.val().dims()));
    let loss = (w.a.val() * ra).sum() + (w.b.val() * rb).sum();
    FlatGradients::from_backward(&mut loss.backward(), w)
}

#[test]
fn the_hypergradient_is_the_derivative_of_the_unrolled_objective() {
    let mut flex = Device::flex();
    flex.configure(FloatDType::F64).expect("f64 before any tensor");
    let lm = lm();
    let (theta, w) = weights(&lm, &device(), 21);
    assert_eq!(theta.table.val().dtype(), DType::F64, "the check runs in f64");
    let (sft_data, prompts, reward) = (sft_data(&lm), prompts(), contains_reward());
    let rl = grpo(0.0);
    let batch_prompts = bridge_core::DataCursor::new(1, true).next_batch(&prompts, 3).unwrap();
    let rollouts = collect_rollouts(
        &lm,
        &theta,
        Some(&w),
        &batch_prompts,
        &rl.sampling,
        &reward,
        rl.advantage_scaling,
        &mut BridgeRng::seed_from_u64(4),
    )
    .unwrap();
    assert!(rollouts.advantages.zero_std_groups < rollouts.advantages.groups, "the batch carries RL signal");
    let batch: RlTrainingBatch = rollouts.training_batch(lm.codec().pad_token_id(), false).unwrap();
    let sft = SequenceBatch::new(bridge_core::DataCursor::new(2, true).next_batch(&sft_data, 3).unwrap(), 0).unwrap();
    // No clipping for ratios in (0.01, 101), no KL: F is smooth.
    let cfg = PolicyLossConfig {
        epsilon_low: 0.99,
        epsilon_high: 100.0,
        kl_coef: 0.0,
        kl_estimator: KlEstimator::K3,
        aggregation: LossAggregation::TokenMean,
    };
    let (lambda, alpha) = (0.4, 4.0);
    let inner = |w: &BigramAdapter| {
        objective_gradients(&bridge_core::Shard::single(), &lm, &theta, w, &sft, &batch, &cfg, 1.0 - lambda, lambda)
            .unwrap()
    };
    // F(w) = J_RL(θ⁺(w), w), θ⁺(w) = θ + α ∇_θ G(θ, w).
    let unrolled = |w: &BigramAdapter| {
        let theta_plus = step_along(theta.clone(), &inner(w).0, alpha);
        -grpo_loss(&lm, &theta_plus, Some(w), &batch, None, &cfg, false).unwrap().0.stats.loss
    };
    let g_theta = inner(&w).0;
    let hypergradient = |eps: f64| {
        let single = bridge_core::Shard::single();
        unrolled_hypergradient(&single, &lm, &theta, &w, &g_theta, &sft, &batch, &cfg, lambda, alpha, eps).unwrap()
    };
    let precise = hypergradient(1e-4);
    let default_eps = hypergradient(0.01);
    let scale = precise.total.norm();
    println!(
        "‖direct‖ {:.3e}, ‖indirect‖ {:.3e}, ‖v‖ {:.3e}",
        precise.direct.norm(),
        precise.indirect.norm(),
        precise.v_norm
    );
    assert!(precise.indirect.norm() > 0.02 * scale, "the term through θ's step is not negligible here");
    let mut rng = BridgeRng::seed_from_u64(8);
    let delta = 1e-5;
    let (mut direct_misses, mut worst, mut worst_default) = (0, 0.0f64, 0.0f64);
    for _ in 0..8 {
        let d = random_direction(&w, &mut rng);
        let fd = (unrolled(&step_along(w.clone(), &d, delta)) - unrolled(&step_along(w.clone(), &d, -delta)))
            / (2.0 * delta);
        let tol = 1e-6 * scale * d.norm();
        let exact = precise.total.dot(&d).unwrap();
        worst = worst.max((exact - fd).abs() / (scale * d.norm()));
        assert!((exact - fd).abs() < tol, "⟨∇F, d⟩ = {exact} vs finite differences {fd} (tolerance {tol:e})");
        // DARTS' default ε₀ = 0.01 is close too.
        let approx = default_eps.total.dot(&d).unwrap();
        worst_default = worst_default.max((approx - fd).abs() / (scale * d.norm()));
        assert!((approx - fd).abs() < 1e-5 * scale * d.norm(), "ε₀ = 0.01: {approx} vs {fd}");
        if (precise.direct.dot(&d).unwrap() - fd).abs() > 100.0 * tol {
            direct_misses += 1;
        }
    }
    println!("worst |⟨∇F, d⟩ − FD| / (‖∇F‖‖d‖): {worst:.1e} (ε₀ = 1e-4), {worst_default:.1e} (ε₀ = 0.01)");
    assert!(direct_misses >= 6, "without the Hessian-vector term the check fails ({direct_misses} of 8 directions)");
}
