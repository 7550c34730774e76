//! CHORD, LUFFY, PPO with a critic and BRIDGE with the unrolled hypergradient on the bigram task:
//! one step of each equals its loss written term by term (plain SGD), each learns the task, and
//! each resumes bit-exactly from a checkpoint (the PPO critic included).

mod common;

use bridge_bilevel::{
    Chord, ChordConfig, LoopConfig, Luffy, Metrics, OptimConfig, Ppo, PpoConfig, RlZero, RunInputs, StepContext,
    TrainState, TrainingAlgorithm, UnrolledBridge, UnrolledConfig, init_state, latest_checkpoint,
    resume_from_checkpoint,
};
use bridge_core::testing::BigramLm;
use bridge_core::{AdamWSettings, CausalLm, FlatGradients, SequenceBatch, schedule::LinearRamp, step_along};
use bridge_rl::{
    AdvantageScaling, LuffyConfig, MuSchedule, Rollouts, chord_sft_loss, collect_mixed_rollouts, collect_rollouts,
    grpo_loss, mixed_loss, token_advantage_loss,
};
use burn::tensor::{Tensor, TensorData};
use common::*;
use std::path::Path;

const ALPHA: f64 = 0.3;

fn sgd() -> OptimConfig {
    OptimConfig { theta: AdamWSettings::sgd(ALPHA), adapter: Some(AdamWSettings::sgd(0.7)), ..OptimConfig::default() }
}

/// The rollouts the algorithm's first step samples on `weights` (the state's prompt cursor and
/// rollout RNG, cloned, so the step itself draws the same ones).
fn first_rollouts(
    s: &TrainState<BigramLm>,
    ctx: &StepContext<'_, BigramLm>,
    adapter: Option<&<BigramLm as CausalLm>::Adapter>,
) -> Rollouts {
    let (mut cursor, mut rng) = (s.rl_cursor.clone(), s.rollout_rng.clone());
    let prompts = cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step).unwrap();
    collect_rollouts(
        ctx.lm,
        &s.theta,
        adapter,
        &prompts,
        &ctx.rl.sampling,
        ctx.reward,
        ctx.rl.advantage_scaling,
        &mut rng,
    )
    .unwrap()
}

/// A state at θ₀ (and w₀) with plain SGD, and the step context of the common task.
fn one_step(
    algo: &mut dyn TrainingAlgorithm<BigramLm>,
    check: impl FnOnce(&TrainState<BigramLm>, &StepContext<'_, BigramLm>) -> Vec<(Vec<f32>, &'static str)>,
) -> (TrainState<BigramLm>, Metrics) {
    let lm = lm();
    let (theta0, w0) = weights(&lm, &device(), 11);
    let mut state = init_state(algo.needs(), theta0, Some(w0), &sgd(), false, 5).unwrap();
    let (sft, prompts, reward, rl) = (sft_data(&lm), prompts(), contains_reward(), grpo(0.0));
    let ctx = StepContext {
        lm: &lm,
        sft: &sft,
        prompts: &prompts,
        reward: &reward,
        rl: &rl,
        sft_batch_size: 2,
        lambda: 0.35,
        shard: &bridge_core::Shard::single(),
    };
    let expected = check(&state, &ctx);
    let metrics = algo.step(&ctx, &mut state).unwrap();
    for (values_expected, what) in expected {
        let got = match what {
            "theta" => values(&state.theta),
            "adapter" => values(state.adapter.as_ref().unwrap()),
            other => panic!("{other}"),
        };
        let d = max_abs_diff(&got, &values_expected);
        assert!(d < 2e-6, "{what}: {d}");
    }
    (state, metrics)
}

#[test]
fn chord_step_is_one_minus_mu_grpo_plus_mu_phi_weighted_sft() {
    for config in [
        ChordConfig::default(),
        ChordConfig { mu: MuSchedule { peak: 0.6, valley: 0.6, ..MuSchedule::default() }, phi: false },
    ] {
        let mu = config.mu.mu(0);
        let phi = config.phi;
        let (state, m) = one_step(&mut Chord { config }, |s, ctx| {
            let mut sft_cursor = s.sft_cursor.clone();
            let r = first_rollouts(s, ctx, None);
            assert!(r.advantages.zero_std_groups < r.advantages.groups, "the batch carries RL signal");
            let batch = r.training_batch(ctx.lm.codec().pad_token_id(), false).unwrap();
            let (rl, _) = grpo_loss(ctx.lm, &s.theta, None, &batch, None, &ctx.rl.loss, false).unwrap();
            let expert = SequenceBatch::new(sft_cursor.next_batch(ctx.sft, 2).unwrap(), 0).unwrap();
            let scores = ctx.lm.token_scores(&s.theta, None, &expert, false).unwrap();
            let sft = chord_sft_loss(&scores, phi).unwrap();
            let g_rl = FlatGradients::from_backward_dense(&mut rl.loss.backward(), &s.theta);
            let g_sft = FlatGradients::from_backward_dense(&mut sft.loss.backward(), &s.theta);
            let g = FlatGradients::linear_combination(&[(1.0 - mu, &g_rl), (mu, &g_sft)]).unwrap();
            vec![(values(&step_along(s.theta.clone(), &g, -ALPHA)), "theta")]
        });
        assert!(state.adapter.is_none(), "CHORD trains θ alone");
        assert_eq!(m["mu"], mu);
        assert!(m.contains_key("phi_mean") && m.contains_key("sft_loss") && m.contains_key("rl_loss"));
    }
}

#[test]
fn luffy_step_is_the_mixed_policy_loss_on_theta() {
    let config = LuffyConfig::default();
    let (state, m) = one_step(&mut Luffy { config: config.clone() }, |s, ctx| {
        let (mut cursor, mut rng) = (s.rl_cursor.clone(), s.rollout_rng.clone());
        let prompts = cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step).unwrap();
        let r = collect_mixed_rollouts(
            ctx.lm,
            &s.theta,
            None,
            &prompts,
            &ctx.rl.sampling,
            1,
            ctx.reward,
            AdvantageScaling::Group,
            &mut rng,
        )
        .unwrap();
        let batch = r.training_batch(ctx.lm.codec().pad_token_id(), false).unwrap();
        assert!(batch.num_off_policy_tokens() > 0);
        let (out, _) =
            mixed_loss(ctx.lm, &s.theta, None, &batch, None, &ctx.rl.loss, config.shaping_gamma, false).unwrap();
        let g = FlatGradients::from_backward_dense(&mut out.loss.backward(), &s.theta);
        vec![(values(&step_along(s.theta.clone(), &g, -ALPHA)), "theta")]
    });
    assert!(state.adapter.is_none());
    assert!(m["off_policy_tokens"] > 0.0 && m.contains_key("off_policy_shaped_mean"));
    assert!(m["mixed_reward_mean"] >= m["reward_mean"], "the demonstrations are correct, so they raise the mean");
}

/// The first PPO step: the critic starts at 0, so with γ, λ the advantage of the token `k`
/// steps before a completion's end is `(γλ)^k R` (then whitened over the batch) and its return
/// is the same before whitening; the head then moves by `β · mean_t R̂_t·(h_t, 1)`.
#[test]
fn ppo_first_step_matches_gae_from_a_zero_critic_on_both_parameter_groups() {
    let (gamma, lam, beta) = (0.9, 0.8, 0.5);
    let config =
        PpoConfig { gamma, gae_lambda: lam, critic_optim: Some(AdamWSettings::sgd(beta)), ..PpoConfig::default() };
    let mut algo = Ppo::new(config);
    let mut expected_head = (Vec::new(), 0.0f64);
    let (_, m) = one_step(&mut algo, |s, ctx| {
        let r = first_rollouts(s, ctx, None);
        let batch = r.training_batch(ctx.lm.codec().pad_token_id(), false).unwrap();
        let (b, t1) = (batch.sequences.batch_size(), batch.sequences.seq_len() - 1);
        let mut adv = vec![0.0f64; b * t1];
        let mut kept = Vec::new();
        for (i, c) in r.completions.iter().enumerate() {
            let reward = r.rewards[i].value.unwrap();
            let cols = batch.completion_columns(i).unwrap();
            let n = c.tokens.len();
            for (k, col) in cols.enumerate() {
                adv[i * t1 + col] = (gamma * lam).powi((n - 1 - k) as i32) * reward;
                kept.push(i * t1 + col);
            }
        }
        let returns = adv.clone();
        let mean = kept.iter().map(|&k| adv[k]).sum::<f64>() / kept.len() as f64;
        let var = kept.iter().map(|&k| (adv[k] - mean).powi(2)).sum::<f64>() / (kept.len() - 1) as f64;
        let mut white = vec![0.0f32; b * t1];
        for &k in &kept {
            white[k] = ((adv[k] - mean) / (var + 1e-8).sqrt()) as f32;
        }
        let advantages = Tensor::from_data(TensorData::new(white, [b, t1]), &device());
        let (out, _) =
            token_advantage_loss(ctx.lm, &s.theta, None, &batch, advantages, None, &ctx.rl.loss, false).unwrap();
        let g = FlatGradients::from_backward_dense(&mut out.loss.backward(), &s.theta);
        // The head's first SGD step on ½ mean (V − R̂)² from V = 0: w += β mean R̂·h, b += β mean R̂.
        let hidden: Vec<f32> =
            ctx.lm.hidden_states(&s.theta, None, &batch.sequences).unwrap().into_data().try_to_vec().unwrap();
        let (t, v) = (t1 + 1, ctx.lm.vocab_size());
        let mut w = vec![0.0f64; v];
        for &k in &kept {
            let (row, col) = (k / t1, k % t1);
            for (j, wj) in w.iter_mut().enumerate() {
                *wj += returns[k] * f64::from(hidden[(row * t + col) * v + j]);
            }
        }
        let n = kept.len() as f64;
        expected_head =
            (w.iter().map(|x| beta * x / n).collect(), beta * kept.iter().map(|&k| returns[k]).sum::<f64>() / n);
        vec![(values(&step_along(s.theta.clone(), &g, -ALPHA)), "theta")]
    });
    let head = &algo.critic.as_ref().expect("the first step creates the critic").head;
    let w: Vec<f32> = head.weight.val().into_data().try_to_vec().unwrap();
    let b: Vec<f32> = head.bias.val().into_data().try_to_vec().unwrap();
    for (got, want) in w.iter().zip(&expected_head.0) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert!((f64::from(b[0]) - expected_head.1).abs() < 1e-6, "{b:?} vs {}", expected_head.1);
    assert!(m["value_loss"] > 0.0 && m.contains_key("grad_norm_critic"));
}

#[test]
fn unrolled_bridge_step_moves_theta_by_7_and_w_by_the_hypergradient() {
    let lambda = 0.35;
    let config = UnrolledConfig { alpha: Some(0.2), epsilon: 0.01 };
    let (_, m) = one_step(&mut UnrolledBridge { config: config.clone() }, |s, ctx| {
        let w = s.adapter.clone().unwrap();
        let mut sft_cursor = s.sft_cursor.clone();
        let r = first_rollouts(s, ctx, Some(&w));
        let batch = r.training_batch(ctx.lm.codec().pad_token_id(), false).unwrap();
        let sft = SequenceBatch::new(sft_cursor.next_batch(ctx.sft, 2).unwrap(), 0).unwrap();
        let mut g = bridge_sft::sft_loss(ctx.lm, &s.theta, Some(&w), &sft).unwrap().loss.backward();
        let (sft_theta, sft_w) =
            (FlatGradients::from_backward_dense(&mut g, &s.theta), FlatGradients::from_backward_dense(&mut g, &w));
        let (rl, _) = grpo_loss(ctx.lm, &s.theta, Some(&w), &batch, None, &ctx.rl.loss, false).unwrap();
        let rl_theta = FlatGradients::from_backward_dense(&mut rl.loss.backward(), &s.theta);
        // (7), as ascent: −[(1−λ)∇L_SFT + λ∇L_RL]
        let g_theta = FlatGradients::linear_combination(&[(lambda - 1.0, &sft_theta), (-lambda, &rl_theta)]).unwrap();
        let h = bridge_bilevel::unrolled_hypergradient(
            &bridge_core::Shard::single(),
            ctx.lm,
            &s.theta,
            &w,
            &g_theta,
            &sft,
            &batch,
            &ctx.rl.loss,
            lambda,
            0.2,
            0.01,
        )
        .unwrap();
        assert!(h.indirect.norm() > 1e-4, "the term through θ's step matters: {}", h.indirect.norm());
        let d_w = FlatGradients::linear_combination(&[(lambda - 1.0, &sft_w), (lambda, &h.total)]).unwrap();
        vec![
            (values(&step_along(s.theta.clone(), &g_theta, ALPHA)), "theta"),
            (values(&step_along(w, &d_w, 0.7)), "adapter"),
        ]
    });
    assert!(m.contains_key("hypergrad_indirect_norm") && m.contains_key("unrolled_rl_gain"));
}

// ---------------------------------------------------------------------------------------------
// Learning and resume.
// ---------------------------------------------------------------------------------------------

fn mean(log: &[Metrics], key: &str, range: std::ops::Range<usize>) -> f64 {
    let n = range.len() as f64;
    log[range].iter().map(|m| m[key]).sum::<f64>() / n
}

/// 60 steps from a random bigram: the mean reward of the last 10 steps is well above that of
/// the first 10 (which is near chance).
fn learns(algo: &mut dyn TrainingAlgorithm<BigramLm>, lr: f64) -> Vec<Metrics> {
    let optim = OptimConfig { theta: AdamWSettings::with_lr(lr), ..OptimConfig::default() };
    let (_, log) = run_loop(algo, 60, &optim, 3, 4, 9);
    let (early, late) = (mean(&log, "reward_mean", 0..10), mean(&log, "reward_mean", 50..60));
    println!("{}: reward {early:.3} → {late:.3}", algo.name());
    assert!(late > early + 0.3 && late > 0.75, "{}: reward {early:.2} → {late:.2}", algo.name());
    log
}

/// RL-zero (GRPO alone), the reference the other RL methods are compared with, through the same
/// run loop (it replaced `bridge_rl::GrpoTrainer`): it learns the task, and with one epoch per
/// batch the policy that is trained is the one that sampled (importance ratio 1).
#[test]
fn rl_zero_learns_the_task_with_ratio_one() {
    let log = learns(&mut RlZero, 0.1);
    for m in &log {
        assert!((m["ratio_mean"] - 1.0).abs() < 1e-5, "{}", m["ratio_mean"]);
    }
}

#[test]
fn chord_learns_the_task_and_its_sft_loss_falls() {
    let log = learns(&mut Chord::default(), 0.1);
    assert!(mean(&log, "sft_loss", 50..60) < mean(&log, "sft_loss", 0..10));
}

#[test]
fn luffy_learns_the_task() {
    learns(&mut Luffy::default(), 0.1);
}

#[test]
fn ppo_learns_the_task_and_its_critic_fits_the_returns() {
    let log = learns(&mut Ppo::default(), 0.1);
    assert!(mean(&log, "value_loss", 50..60) < mean(&log, "value_loss", 0..10), "the critic learns");
}

#[test]
fn unrolled_bridge_learns_the_task() {
    learns(&mut UnrolledBridge { config: UnrolledConfig { alpha: Some(0.1), ..UnrolledConfig::default() } }, 0.1);
}

/// Runs `algo` from `state` to `total` steps (λ ramps, KL on: the reference is part of the
/// state), checkpointing every `checkpoint_every` steps; returns the state and the metrics
/// without wall-clock entries.
fn run(
    algo: &mut dyn TrainingAlgorithm<BigramLm>,
    state: TrainState<BigramLm>,
    total: u64,
    dir: &Path,
    checkpoint_every: u64,
) -> (TrainState<BigramLm>, Vec<Metrics>) {
    let lm = lm();
    let (sft, prompts, reward, rl) = (sft_data(&lm), prompts(), contains_reward(), grpo(0.02));
    let lambda = LinearRamp { start: 0.2, end: 0.8, steps: 6 };
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size: 2, lambda: &lambda };
    let cfg = LoopConfig { total_steps: total, checkpoint_every, run_dir: dir.into(), ..LoopConfig::default() };
    run_logged(&lm, algo, state, &inputs, &cfg, |_, _| Ok(Metrics::new()), true)
}

fn fresh_state(algo: &dyn TrainingAlgorithm<BigramLm>, weight_seed: u64) -> TrainState<BigramLm> {
    let lm = lm();
    let (theta0, w0) = weights(&lm, &device(), weight_seed);
    let optim = OptimConfig { theta: AdamWSettings::with_lr(0.05), ..OptimConfig::default() };
    init_state(algo.needs(), theta0, Some(w0), &optim, true, 3).unwrap()
}

/// N = 6 steps straight against k = 2 steps, a checkpoint, then a fresh algorithm and a state
/// with other weights loaded from it, and N − k more: identical metrics and parameters.
fn resumes_exactly<A: TrainingAlgorithm<BigramLm>>(name: &str, make: impl Fn() -> A, extra: impl Fn(&A) -> Vec<f32>) {
    let tmp = std::env::temp_dir().join(format!("bridge-resume-new-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut straight_algo = make();
    let (straight, log_straight) = run(&mut straight_algo, fresh_state(&make(), 1), 6, &tmp.join("a"), 0);
    let mut first = make();
    let (_, log_first) = run(&mut first, fresh_state(&make(), 1), 2, &tmp.join("b"), 1);
    let ckpt = latest_checkpoint(&tmp.join("b")).unwrap().expect("a checkpoint");
    let mut resumed_algo = make();
    let (restored, meta) = resume_from_checkpoint(fresh_state(&make(), 99), &mut resumed_algo, &ckpt).unwrap();
    assert_eq!(meta.step, 2);
    let (resumed, log_rest) = run(&mut resumed_algo, restored, 6, &tmp.join("b"), 1);
    let log_resumed: Vec<Metrics> = log_first.into_iter().chain(log_rest).collect();
    assert_eq!(log_straight, log_resumed, "{name}: identical metrics");
    assert_eq!(snapshot(&straight), snapshot(&resumed), "{name}: identical parameters");
    assert_eq!(extra(&straight_algo), extra(&resumed_algo), "{name}: identical algorithm state");
    // Another algorithm's checkpoint is refused, naming both.
    let last = latest_checkpoint(&tmp.join("b")).unwrap().expect("a checkpoint");
    let e = resume_from_checkpoint(fresh_state(&make(), 1), &mut bridge_bilevel::RlZero, &last).err().unwrap();
    assert!(e.to_string().contains(&format!("`{name}`")) && e.to_string().contains("`rl_zero`"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn chord_resumes_exactly() {
    let mu = MuSchedule { warmup_steps: 2, decay_steps: 3, peak: 0.8, valley: 0.1 };
    resumes_exactly("chord", || Chord { config: ChordConfig { mu: mu.clone(), phi: true } }, |_| Vec::new());
}

#[test]
fn luffy_resumes_exactly() {
    resumes_exactly("luffy", Luffy::default, |_| Vec::new());
}

#[test]
fn ppo_resumes_exactly_with_its_critic() {
    resumes_exactly("ppo", Ppo::default, |p: &Ppo| {
        let head = &p.critic.as_ref().expect("a critic").head;
        let mut v: Vec<f32> = head.weight.val().into_data().try_to_vec().unwrap();
        v.extend(head.bias.val().into_data().try_to_vec::<f32>().unwrap());
        assert!(v.iter().any(|x| *x != 0.0), "the critic trained");
        v
    });
}

#[test]
fn unrolled_bridge_resumes_exactly() {
    resumes_exactly("bridge_unrolled", UnrolledBridge::default, |_| Vec::new());
}

#[test]
fn algorithms_without_a_critic_checkpoint_no_critic_file() {
    let tmp = std::env::temp_dir().join(format!("bridge-no-critic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut chord = Chord::default();
    let _ = run(&mut chord, fresh_state(&Chord::default(), 1), 1, &tmp, 1);
    let ckpt = latest_checkpoint(&tmp).unwrap().unwrap();
    assert!(!ckpt.join("critic.bpk").exists());
    let mut ppo = Ppo::default();
    let _ = run(&mut ppo, fresh_state(&Ppo::default(), 1), 1, &tmp.join("ppo"), 1);
    let ckpt = latest_checkpoint(&tmp.join("ppo")).unwrap().unwrap();
    assert!(ckpt.join("critic.bpk").exists() && ckpt.join("optim-critic.bpk").exists());
    let _ = std::fs::remove_dir_all(&tmp);
}
