//! One BRIDGE step changes θ, θ̂ and w exactly as equations (7), (8) and (9), computed here term
//! by term with separate backward passes and plain gradient steps (SGD).

mod common;

use bridge_bilevel::{
    AuxRollouts, Bridge, GradientPath, Needs, OptimConfig, StepContext, TrainingAlgorithm, init_state,
};
use bridge_core::{
    AdamWSettings, CausalLm, CooperativeGain, DataCursor, FlatGradients, JointSftRl, LambdaSchedule, ScheduleState,
    SequenceBatch, Shard, schedule::ConstantLambda, step_along,
};
use bridge_rl::{collect_rollouts, grpo_loss};
use bridge_sft::sft_loss;
use common::*;

const ALPHA: f64 = 0.3;
const BETA: f64 = 0.7;
const LAMBDA: f64 = 0.35;

fn sgd_config() -> OptimConfig {
    OptimConfig {
        theta: AdamWSettings::sgd(ALPHA),
        theta_hat: None, // = α
        adapter: Some(AdamWSettings::sgd(BETA)),
        theta_sft: None,
    }
}

fn check_step(gradient_path: GradientPath, kl_coef: f64) {
    let lm = lm();
    let device = device();
    let (theta0, w0) = weights(&lm, &device, 11);
    let needs = Needs { adapter: true, theta_hat: true, theta_sft_optimizer: false };
    let mut state =
        init_state::<bridge_core::testing::BigramLm>(needs, theta0, Some(w0), &sgd_config(), kl_coef > 0.0, 5).unwrap();
    // Give θ̂ a different value from θ (as after some RL-only steps), so the two RL terms differ.
    let (theta_hat_start, _) = weights(&lm, &device, 12);
    state.theta_hat = Some(bridge_core::independent_copy(&theta_hat_start));
    let sft = sft_data(&lm);
    let prompts = prompts();
    let reward = contains_reward();
    let rl = grpo(kl_coef);
    let lambda = ConstantLambda(LAMBDA).lambda(ScheduleState::default());

    // --- the reference: equations (7), (8), (9) term by term at (θ_k, θ̂_k, w_k) ---
    let theta = state.theta.clone();
    let theta_hat = state.theta_hat.clone().unwrap();
    let w = state.adapter.clone().unwrap();
    let mut rl_cursor: DataCursor = state.rl_cursor.clone();
    let mut sft_cursor: DataCursor = state.sft_cursor.clone();
    let mut rng = state.rollout_rng.clone();
    let batch_prompts = rl_cursor.next_batch(&prompts, rl.prompts_per_step).unwrap();
    let rollouts =
        collect_rollouts(&lm, &theta, Some(&w), &batch_prompts, &rl.sampling, &reward, rl.advantage_scaling, &mut rng)
            .unwrap();
    assert!(
        rollouts.advantages.zero_std_groups < rollouts.advantages.groups,
        "the batch carries RL signal: {:?} {:?} {:?}",
        batch_prompts,
        rollouts.completions.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        rollouts.rewards
    );
    let rl_batch = rollouts.training_batch(lm.codec().pad_token_id(), false).unwrap();
    let sft_batch = SequenceBatch::new(sft_cursor.next_batch(&sft, 2).unwrap(), 0).unwrap();
    let reference = state.reference.clone();

    // ∇J_SFT(θ,w) (ascent = −∇loss)
    let mut g = sft_loss(&lm, &theta, Some(&w), &sft_batch).unwrap().loss.backward();
    let j_sft_theta = FlatGradients::from_backward_dense(&mut g, &theta).scale(-1.0);
    let j_sft_w = FlatGradients::from_backward_dense(&mut g, &w).scale(-1.0);
    // ∇J_RL(θ,w)
    let (out, _) = grpo_loss(&lm, &theta, Some(&w), &rl_batch, reference.as_ref(), &rl.loss, false).unwrap();
    let mut g = out.loss.backward();
    let j_rl_theta = FlatGradients::from_backward_dense(&mut g, &theta).scale(-1.0);
    let j_rl_w = FlatGradients::from_backward_dense(&mut g, &w).scale(-1.0);
    // ∇J_RL(θ̂,w) on the shared rollouts
    let (out, _) = grpo_loss(&lm, &theta_hat, Some(&w), &rl_batch, reference.as_ref(), &rl.loss, false).unwrap();
    let mut g = out.loss.backward();
    let j_aux_theta_hat = FlatGradients::from_backward_dense(&mut g, &theta_hat).scale(-1.0);
    let j_aux_w = FlatGradients::from_backward_dense(&mut g, &w).scale(-1.0);

    let d7 = FlatGradients::linear_combination(&[(1.0 - LAMBDA, &j_sft_theta), (LAMBDA, &j_rl_theta)]).unwrap();
    let d8 =
        FlatGradients::linear_combination(&[(1.0 - LAMBDA, &j_sft_w), (LAMBDA, &j_rl_w), (-LAMBDA, &j_aux_w)]).unwrap();
    let expected_theta = values(&step_along(theta.clone(), &d7, ALPHA));
    let expected_theta_hat = values(&step_along(theta_hat.clone(), &j_aux_theta_hat, ALPHA));
    let expected_w = values(&step_along(w.clone(), &d8, BETA));

    // --- the trainer ---
    let mut algo = Bridge { outer: Box::new(CooperativeGain), aux_rollouts: AuxRollouts::Shared, gradient_path };
    let shard = Shard::single();
    let ctx = StepContext {
        lm: &lm,
        sft: &sft,
        prompts: &prompts,
        reward: &reward,
        rl: &rl,
        sft_batch_size: 2,
        lambda,
        shard: &shard,
    };
    let metrics = TrainingAlgorithm::step(&mut algo, &ctx, &mut state).unwrap();
    let (theta1, theta_hat1, w1) = snapshot(&state);

    let moved = max_abs_diff(&values(&theta), &theta1);
    assert!(moved > 1e-3, "θ moved ({moved})");
    assert!(max_abs_diff(&values(&w), &w1) > 1e-3, "w moved");
    let tol = 2e-6;
    assert!(max_abs_diff(&theta1, &expected_theta) < tol, "θ: (7) {}", max_abs_diff(&theta1, &expected_theta));
    assert!(
        max_abs_diff(&theta_hat1, &expected_theta_hat) < tol,
        "θ̂: (9) {}",
        max_abs_diff(&theta_hat1, &expected_theta_hat)
    );
    assert!(max_abs_diff(&w1, &expected_w) < tol, "w: (8) {}", max_abs_diff(&w1, &expected_w));
    // the θ̂ term really matters: dropping it (plain SFT+RL on w) gives a different w
    let without_gain = FlatGradients::linear_combination(&[(1.0 - LAMBDA, &j_sft_w), (LAMBDA, &j_rl_w)]).unwrap();
    assert!(max_abs_diff(&values(&step_along(w, &without_gain, BETA)), &w1) > 1e-4);
    assert!(metrics.contains_key("cooperative_gain") && metrics.contains_key("sft_loss"));
}

#[test]
fn one_step_matches_equations_7_8_9() {
    check_step(GradientPath::Separate, 0.0);
}

#[test]
fn fused_single_backward_matches_equations_7_8_9() {
    check_step(GradientPath::Fused, 0.0);
}

#[test]
fn both_paths_match_with_a_kl_term() {
    check_step(GradientPath::Separate, 0.05);
    check_step(GradientPath::Fused, 0.05);
}

#[test]
fn bridge_without_meta_has_no_theta_hat_and_uses_joint_direction() {
    let algo = Bridge { outer: Box::new(JointSftRl), ..Bridge::default() };
    let needs = <Bridge as TrainingAlgorithm<bridge_core::testing::BigramLm>>::needs(&algo);
    assert!(needs.adapter && !needs.theta_hat);
    assert_eq!(<Bridge as TrainingAlgorithm<bridge_core::testing::BigramLm>>::name(&algo), "bridge_no_meta");
}
