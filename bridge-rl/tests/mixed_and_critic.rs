//! LUFFY's mixed groups and PPO's critic features on `BigramLm`: group layout, demonstration
//! tokens, advantages over the mixed group (by hand), the off-policy mask of the training batch,
//! typed errors; the critic's features carry no gradient back to the policy.

use approx::assert_relative_eq;
use bridge_core::testing::{BigramLm, CharCodec, FnReward};
use bridge_core::{BridgeRng, CausalLm, FlatGradients, Reward, RlPrompt, SamplingParams};
use bridge_rl::{AdvantageScaling, ValueHead, collect_mixed_rollouts, critic_features};
use burn::tensor::Device;

fn setup() -> (BigramLm, bridge_core::testing::BigramBase) {
    let lm = BigramLm::new(CharCodec::new("abcde"));
    let base = lm.init_base(0.5, &Device::flex().autodiff(), &mut BridgeRng::seed_from_u64(1));
    (lm, base)
}

fn reward() -> FnReward<impl Fn(&str, &RlPrompt) -> Reward + Send + Sync> {
    FnReward::new("contains", |c: &str, p: &RlPrompt| Reward::scored(if c.contains(&p.reference) { 1.0 } else { 0.0 }))
}

#[test]
fn mixed_groups_hold_samples_then_demonstrations_with_advantages_over_the_group() {
    let (lm, base) = setup();
    let prompts = vec![
        RlPrompt::new("p0", "a", "b").with_demonstration("bcd"),
        RlPrompt::new("p1", "c", "e").with_demonstration("de"),
    ];
    let sampling = SamplingParams { n: 5, max_new_tokens: 3, ..Default::default() };
    let r = collect_mixed_rollouts(
        &lm,
        &base,
        None,
        &prompts,
        &sampling,
        2,
        &reward(),
        AdvantageScaling::Group,
        &mut BridgeRng::seed_from_u64(3),
    )
    .unwrap();
    assert_eq!((r.completions.len(), r.group_size), (10, 5));
    assert_eq!(r.off_policy, [false, false, false, true, true, false, false, false, true, true]);
    let codec = lm.codec();
    for (i, c) in r.completions.iter().enumerate() {
        assert_eq!((c.prompt_index, c.sample_index), (i / 5, i % 5));
        if r.off_policy[i] {
            // "bcd" + EOS is 4 tokens: cut at max_new_tokens = 3 (no EOS); "de" + EOS fits.
            let expected: Vec<u32> = if i < 5 { codec.encode("bcd").unwrap() } else { codec.encode("de").unwrap() };
            let mut with_eos = expected.clone();
            with_eos.push(0);
            with_eos.truncate(3);
            assert_eq!(c.tokens, with_eos);
            assert_eq!(c.finish == bridge_core::FinishReason::Length, i < 5);
        }
    }
    // Advantages: (R − mean)/(std + 1e-4) over each group of five, demonstrations included.
    let values: Vec<f64> = r.rewards.iter().map(|x| x.value.unwrap()).collect();
    assert_eq!((values[3], values[4], values[8], values[9]), (1.0, 1.0, 1.0, 1.0), "the demonstrations are correct");
    for g in 0..2 {
        let group = &values[g * 5..g * 5 + 5];
        let mean = group.iter().sum::<f64>() / 5.0;
        let std = (group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        for (k, &v) in group.iter().enumerate() {
            let expected = if std > 0.0 { (v - mean) / (std + 1e-4) } else { 0.0 };
            assert_relative_eq!(r.advantages.values[g * 5 + k], expected, epsilon = 1e-12);
        }
    }
    assert_relative_eq!(
        r.on_policy_reward_mean(),
        [0, 1, 2, 5, 6, 7].iter().map(|&i| values[i]).sum::<f64>() / 6.0,
        epsilon = 1e-12
    );
    // The training batch marks exactly the demonstrations' completion targets as off-policy.
    let batch = r.training_batch(0, false).unwrap();
    let t1 = batch.sequences.seq_len() - 1;
    let off: Vec<f32> = batch.off_policy_mask(&Device::flex()).into_data().try_to_vec().unwrap();
    for (i, c) in r.completions.iter().enumerate() {
        let cols = batch.completion_columns(i).unwrap();
        assert_eq!(cols.len(), c.tokens.len());
        for j in 0..t1 {
            let expected = if r.off_policy[i] && cols.contains(&j) { 1.0 } else { 0.0 };
            assert_eq!(off[i * t1 + j], expected, "row {i} column {j}");
        }
    }
    assert_eq!(batch.num_off_policy_tokens(), 2 * 3 + 2 * 3);
}

#[test]
fn a_prompt_without_demonstration_or_a_group_without_samples_is_an_error() {
    let (lm, base) = setup();
    let sampling = SamplingParams { n: 4, max_new_tokens: 3, ..Default::default() };
    let mut rng = BridgeRng::seed_from_u64(0);
    let prompts = vec![RlPrompt::new("p0", "a", "b").with_demonstration("b"), RlPrompt::new("no-demo", "c", "d")];
    let e =
        collect_mixed_rollouts(&lm, &base, None, &prompts, &sampling, 1, &reward(), AdvantageScaling::Group, &mut rng)
            .unwrap_err();
    assert!(e.to_string().contains("`no-demo`") && e.to_string().contains("demonstration"), "{e}");
    let e = collect_mixed_rollouts(
        &lm,
        &base,
        None,
        &prompts[..1],
        &sampling,
        4,
        &reward(),
        AdvantageScaling::Group,
        &mut rng,
    )
    .unwrap_err();
    assert!(e.to_string().contains("off_policy_per_prompt"), "{e}");
}

#[test]
fn the_critic_features_are_the_hidden_states_and_carry_no_gradient_to_the_policy() {
    let (lm, base) = setup();
    let batch = bridge_core::SequenceBatch::new(
        vec![
            bridge_core::TokenSequence::prompt_completion(&[1], &[2, 3, 0]),
            bridge_core::TokenSequence::all_scored(vec![4, 5]),
        ],
        0,
    )
    .unwrap();
    let features = critic_features(&lm, &base, None, &batch).unwrap();
    assert_eq!(features.dims(), [2, 3, 6]);
    let hidden: Vec<f32> = lm.hidden_states(&base, None, &batch).unwrap().into_data().try_to_vec().unwrap();
    let f: Vec<f32> = features.clone().into_data().try_to_vec().unwrap();
    for row in 0..2 {
        assert_eq!(&f[row * 18..(row + 1) * 18], &hidden[row * 24..row * 24 + 18], "positions 0..T−1");
    }
    // A value loss on the features reaches the head and nothing else.
    let head = ValueHead::zeros(6, &features.device());
    let loss = head.forward(features).sum();
    let mut grads = loss.backward();
    assert!(FlatGradients::from_backward(&mut grads, &base).is_empty(), "no gradient reaches θ");
    assert_eq!(FlatGradients::from_backward(&mut grads, &head).len(), 2);
}
