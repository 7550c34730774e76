//! Every baseline runs on the same traits and does what its definition says.

mod common;

use bridge_bilevel::{
    Bridge, ColdStart, Metrics, NaiveAlternating, OptimConfig, RlZero, SftOnly, SftRlMixing, TrainState,
    TrainingAlgorithm,
};
use bridge_core::testing::BigramLm;
use bridge_core::{AdamWSettings, JointSftRl};
use common::*;

fn run_algo(algo: &mut dyn TrainingAlgorithm<BigramLm>, steps: u64) -> (TrainState<BigramLm>, Vec<Metrics>) {
    let optim = OptimConfig {
        theta: AdamWSettings::with_lr(0.05),
        theta_sft: Some(AdamWSettings::with_lr(0.1)),
        ..OptimConfig::default()
    };
    run_loop(algo, steps, &optim, 5, 4, 9)
}

#[test]
fn sft_only_lowers_the_sft_loss_and_leaves_no_adapter() {
    let (state, log) = run_algo(&mut SftOnly, 30);
    assert!(state.adapter.is_none() && state.theta_hat.is_none());
    assert!(log[29]["sft_loss"] < log[0]["sft_loss"] * 0.8, "{} → {}", log[0]["sft_loss"], log[29]["sft_loss"]);
    assert!(!log[0].contains_key("reward_mean"));
}

#[test]
fn rl_zero_samples_and_never_sees_demonstrations() {
    let (_, log) = run_algo(&mut RlZero, 3);
    assert!(log.iter().all(|m| m.contains_key("reward_mean") && !m.contains_key("sft_loss")));
}

#[test]
fn cold_start_switches_from_sft_to_rl() {
    let (_, log) = run_algo(&mut ColdStart { sft_steps: 2 }, 4);
    let stages: Vec<f64> = log.iter().map(|m| m["stage"]).collect();
    assert_eq!(stages, vec![0.0, 0.0, 1.0, 1.0]);
    assert!(log[0].contains_key("sft_loss") && log[3].contains_key("reward_mean"));
}

#[test]
fn alternating_does_rl_then_sft_each_step_with_two_optimisers() {
    let (state, log) = run_algo(&mut NaiveAlternating, 3);
    assert!(state.optim.theta_sft.is_some());
    for m in &log {
        assert!(m.contains_key("reward_mean") && m.contains_key("sft_loss") && m.contains_key("grad_norm_theta_sft"));
    }
}

#[test]
fn mixing_has_one_loss_on_theta() {
    let (state, log) = run_algo(&mut SftRlMixing { mu: 0.5 }, 3);
    assert!(state.adapter.is_none());
    assert!(log.iter().all(|m| m.contains_key("sft_loss") && m.contains_key("reward_mean")));
}

#[test]
fn bridge_and_its_ablation_train_the_adapter() {
    let (state, log) = run_algo(&mut Bridge::default(), 3);
    assert!(state.theta_hat.is_some() && state.adapter.is_some());
    assert!(log.iter().all(|m| m.contains_key("grad_norm_theta_hat") && m.contains_key("cooperative_gain")));
    let (state, log) = run_algo(&mut Bridge { outer: Box::new(JointSftRl), ..Bridge::default() }, 3);
    assert!(state.theta_hat.is_none() && state.adapter.is_some());
    assert!(log.iter().all(|m| m.contains_key("grad_norm_adapter") && !m.contains_key("cooperative_gain")));
}

#[test]
fn separate_aux_rollouts_sample_twice_and_log_the_reward_gain() {
    let mut algo = Bridge { aux_rollouts: bridge_bilevel::AuxRollouts::Separate, ..Bridge::default() };
    let (_, log) = run_algo(&mut algo, 2);
    assert!(log.iter().all(|m| m.contains_key("aux_reward_mean") && m.contains_key("cooperative_gain_reward")));
}
