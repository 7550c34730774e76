//! The SFT loss on `BigramLm`, checked against hand computations from its logit table: it
//! ignores prompt and padding tokens, and its gradient reaches exactly the parameters it should.

use approx::assert_relative_eq;
use bridge_core::testing::{BigramAdapter, BigramBase, BigramLm, CharCodec};
use bridge_core::{BridgeRng, FlatGradients, SequenceBatch, TokenSequence};
use bridge_sft::{LossReduction, sft_loss, sft_loss_with};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

const V: usize = 5; // <eos>=0, a=1, b=2, c=3, d=4

fn setup() -> (BigramLm, BigramBase, Device) {
    let device = Device::flex().autodiff();
    let lm = BigramLm::new(CharCodec::new("abcd"));
    let base = lm.init_base(1.0, &device, &mut BridgeRng::seed_from_u64(3));
    (lm, base, device)
}

fn table_of(lm: &BigramLm, base: &BigramBase, adapter: Option<&BigramAdapter>) -> Vec<f64> {
    let t: Vec<f32> = lm.effective_table(base, adapter).into_data().convert::<f32>().try_to_vec().unwrap();
    t.into_iter().map(f64::from).collect()
}

fn log_softmax_row(table: &[f64], row: u32) -> Vec<f64> {
    let r = &table[row as usize * V..(row as usize + 1) * V];
    let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + r.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    r.iter().map(|x| x - lse).collect()
}

/// (context, target) pairs of the scored tokens.
fn target_pairs(rows: &[TokenSequence]) -> Vec<Vec<(u32, u32)>> {
    rows.iter()
        .map(|r| (1..r.tokens.len()).filter(|&j| r.loss_mask[j]).map(|j| (r.tokens[j - 1], r.tokens[j])).collect())
        .collect()
}

/// prompt "ab" → completion "cd<eos>"; prompt "a" → completion "bc"; the second row is padded.
fn rows() -> Vec<TokenSequence> {
    vec![TokenSequence::prompt_completion(&[1, 2], &[3, 4, 0]), TokenSequence::prompt_completion(&[1], &[2, 3])]
}

#[test]
fn loss_matches_a_hand_computation_for_every_reduction() {
    let (lm, base, _) = setup();
    let table = table_of(&lm, &base, None);
    let batch = SequenceBatch::new(rows(), 0).unwrap();
    let pairs = target_pairs(batch.rows());
    let nll: Vec<Vec<f64>> =
        pairs.iter().map(|r| r.iter().map(|&(c, t)| -log_softmax_row(&table, c)[t as usize]).collect()).collect();
    let n: usize = nll.iter().map(Vec::len).sum();
    assert_eq!(n, 5);
    let total: f64 = nll.iter().flatten().sum();

    let out = sft_loss(&lm, &base, None, &batch).unwrap();
    assert_eq!(out.num_tokens, 5);
    assert_eq!(out.loss.dims(), [1]);
    assert_relative_eq!(out.value, total / n as f64, epsilon = 1e-5);
    assert_relative_eq!(out.loss.clone().into_scalar::<f64>(), out.value, epsilon = 1e-12);

    let sum = sft_loss_with(&lm, &base, None, &batch, LossReduction::Sum).unwrap();
    assert_relative_eq!(sum.value, total, epsilon = 1e-4);
    let seq = sft_loss_with(&lm, &base, None, &batch, LossReduction::SequenceMean).unwrap();
    let per_row: Vec<f64> = nll.iter().map(|r| r.iter().sum::<f64>() / r.len() as f64).collect();
    assert_relative_eq!(seq.value, per_row.iter().sum::<f64>() / 2.0, epsilon = 1e-5);
}

#[test]
fn prompt_predictions_and_padding_do_not_change_the_loss() {
    let (lm, base, device) = setup();
    let batch = SequenceBatch::new(rows(), 0).unwrap();
    let reference = sft_loss(&lm, &base, None, &batch).unwrap().value;

    // In prompt "ab" → completion "cd<eos>", row `a` (token 1) of the table only predicts the
    // prompt token `b`: rewriting it must not change the loss.
    let only_b_context = vec![TokenSequence::prompt_completion(&[1, 2], &[3, 4, 0])];
    let batch1 = SequenceBatch::new(only_b_context.clone(), 0).unwrap();
    let before = sft_loss(&lm, &base, None, &batch1).unwrap().value;
    let mut t = table_of(&lm, &base, None);
    for k in 0..V {
        t[V + k] = 10.0 * k as f64 - 17.0; // rewrite row `a`: the prediction of the prompt token `b`
    }
    let changed = BigramBase {
        table: Param::from_tensor(Tensor::from_data(
            TensorData::new(t.iter().map(|&x| x as f32).collect::<Vec<_>>(), [V, V]),
            &device,
        )),
    };
    let after = sft_loss(&lm, &changed, None, &batch1).unwrap().value;
    assert_relative_eq!(before, after, epsilon = 1e-6);
    // ... while rewriting a row that predicts a target does change it.
    let mut t2 = table_of(&lm, &base, None);
    t2[2 * V + 3] += 2.0;
    let changed2 = BigramBase {
        table: Param::from_tensor(Tensor::from_data(
            TensorData::new(t2.iter().map(|&x| x as f32).collect::<Vec<_>>(), [V, V]),
            &device,
        )),
    };
    assert!((sft_loss(&lm, &changed2, None, &batch1).unwrap().value - before).abs() > 1e-3);

    // Changing the prompt's first token (never a target, its prediction is unscored) leaves the
    // loss unchanged too when the scored transitions are the same.
    let other_prompt = vec![TokenSequence::prompt_completion(&[3, 2], &[3, 4, 0])];
    let other = sft_loss(&lm, &base, None, &SequenceBatch::new(other_prompt, 0).unwrap()).unwrap().value;
    assert_relative_eq!(before, other, epsilon = 1e-6);

    // Padding: any pad id gives the same loss.
    for pad in 1..V as u32 {
        let b = SequenceBatch::new(rows(), pad).unwrap();
        assert_relative_eq!(sft_loss(&lm, &base, None, &b).unwrap().value, reference, epsilon = 1e-6);
    }
    // And a row's loss does not depend on the other rows' lengths (padding amount) under sum.
    let alone = SequenceBatch::new(vec![rows()[1].clone()], 0).unwrap();
    let with_long = SequenceBatch::new(
        vec![rows()[1].clone(), TokenSequence::prompt_completion(&[1, 2, 3, 4, 1, 2, 3, 4], &[])],
        0,
    )
    .unwrap();
    let a = sft_loss_with(&lm, &base, None, &alone, LossReduction::Sum).unwrap().value;
    let b = sft_loss_with(&lm, &base, None, &with_long, LossReduction::Sum).unwrap().value;
    assert_relative_eq!(a, b, epsilon = 1e-6);
}

#[test]
fn gradient_matches_the_analytic_one_and_skips_unscored_contexts() {
    let (lm, base, _) = setup();
    let table = table_of(&lm, &base, None);
    let batch = SequenceBatch::new(rows(), 0).unwrap();
    let pairs: Vec<(u32, u32)> = target_pairs(batch.rows()).into_iter().flatten().collect();
    let n = pairs.len() as f64;
    // d(token-mean NLL)/d table[c][k] = (1/N) Σ_{targets (c, t)} (softmax_c[k] − [k = t]).
    let mut expected = vec![0.0f64; V * V];
    for &(c, t) in &pairs {
        let p: Vec<f64> = log_softmax_row(&table, c).iter().map(|l| l.exp()).collect();
        for k in 0..V {
            expected[c as usize * V + k] += (p[k] - f64::from(u8::from(k as u32 == t))) / n;
        }
    }
    let out = sft_loss(&lm, &base, None, &batch).unwrap();
    let mut grads = out.loss.backward();
    let g = FlatGradients::from_backward(&mut grads, &base);
    assert_eq!(g.len(), 1);
    let got: Vec<f32> = g.get(base.table.id).unwrap().into_data().convert::<f32>().try_to_vec().unwrap();
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert_relative_eq!(f64::from(*a), *b, epsilon = 1e-6, max_relative = 1e-4);
        // `<eos>` (= pad) never precedes a target here: its row gets no gradient.
        if i / V == 0 {
            assert_eq!(*a, 0.0, "the pad/eos row only predicts padding and prompt tokens");
        }
    }
}

#[test]
fn gradient_reaches_the_adapter_only_when_given() {
    let (lm, base, device) = setup();
    let adapter = lm.init_adapter(2, 4.0, &device, &mut BridgeRng::seed_from_u64(9));
    let batch = SequenceBatch::new(rows(), 0).unwrap();

    // B = 0: the adapted model equals the base, ∂L/∂A = scale·(∂L/∂T)·Bᵀ = 0, ∂L/∂B = scale·Aᵀ·(∂L/∂T) ≠ 0.
    let plain = sft_loss(&lm, &base, None, &batch).unwrap().value;
    let out = sft_loss(&lm, &base, Some(&adapter), &batch).unwrap();
    assert_relative_eq!(out.value, plain, epsilon = 1e-6);
    let mut grads = out.loss.backward();
    let gb = FlatGradients::from_backward(&mut grads, &base);
    let ga = FlatGradients::from_backward(&mut grads, &adapter);
    assert!(gb.norm() > 1e-3);
    let norm = |id| ga.get(id).map_or(0.0, |t: Tensor<1>| t.square().sum().into_scalar::<f64>().sqrt());
    assert_eq!(norm(adapter.a.id), 0.0);
    assert!(norm(adapter.b.id) > 1e-3);
    // ∂L/∂B = scale·Aᵀ·G where G = ∂L/∂T (= the base gradient, since T = θ + scale·A·B).
    let a: Vec<f32> = adapter.a.val().into_data().try_to_vec().unwrap();
    let g_t: Vec<f32> = gb.get(base.table.id).unwrap().into_data().try_to_vec().unwrap();
    let g_b: Vec<f32> = ga.get(adapter.b.id).unwrap().into_data().try_to_vec().unwrap();
    for r in 0..2 {
        for k in 0..V {
            let expected: f32 = (0..V).map(|i| a[i * 2 + r] * g_t[i * V + k]).sum::<f32>() * adapter.scale as f32;
            assert_relative_eq!(g_b[r * V + k], expected, epsilon = 1e-6, max_relative = 1e-4);
        }
    }

    // Without the adapter, it gets no gradient at all.
    let out = sft_loss(&lm, &base, None, &batch).unwrap();
    let mut grads = out.loss.backward();
    assert!(FlatGradients::from_backward(&mut grads, &adapter).is_empty());
    assert_eq!(FlatGradients::from_backward(&mut grads, &base).len(), 1);
}

#[test]
fn a_batch_without_targets_is_an_error() {
    let (lm, base, _) = setup();
    let batch = SequenceBatch::new(vec![TokenSequence::prompt_completion(&[1, 2, 3], &[])], 0).unwrap();
    assert!(sft_loss(&lm, &base, None, &batch).is_err());
}
