//! The `CausalLm` contract on a real decoder: token scores against transformers' logits,
//! sampling (log-probs, determinism, greedy, stopping), hidden states, random init, bad input.

mod common;

use bridge_core::policy::{CausalLm, FinishReason, SamplingParams, SequenceBatch, TokenSequence};
use bridge_core::sampling::{argmax, log_softmax};
use bridge_core::{BridgeError, BridgeRng};
use bridge_models::hf::load_hf_dir;
use bridge_models::{Decoder, DecoderConfig, DecoderWeights};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

fn setup(name: &str, device: &Device) -> (Decoder, DecoderWeights) {
    let (cfg, w) = load_hf_dir(fixture(name), device).unwrap();
    (Decoder::new(cfg, codec()).unwrap(), w)
}

#[test]
fn token_scores_match_transformers_log_probs() {
    let device = Device::flex();
    for name in FIXTURES {
        let (lm, w) = setup(name, &device);
        let r = read_reference(fixture(name).join("reference.json"));
        let rows: Vec<TokenSequence> = r
            .ids
            .iter()
            .zip(&r.mask)
            .map(|(ids, m)| {
                let n = m.iter().filter(|&&x| x).count();
                TokenSequence::prompt_completion(
                    &[ids[0] as u32],
                    &ids[1..n].iter().map(|&x| x as u32).collect::<Vec<_>>(),
                )
            })
            .collect();
        let batch = SequenceBatch::new(rows, 0).unwrap();
        let s = lm.token_scores(&w, None, &batch, true).unwrap();
        let (lp, ent, mask) = (host(s.logprobs), host(s.entropy.unwrap()), host(s.mask));
        let t1 = batch.seq_len() - 1;
        let mut worst = 0.0f32;
        for (b, row) in batch.rows().iter().enumerate() {
            for j in 0..row.tokens.len() - 1 {
                let reference = log_softmax(&r.logits[b][j]);
                let target = row.tokens[j + 1] as usize;
                worst = worst.max((lp[b * t1 + j] - reference[target]).abs());
                let h: f32 = reference.iter().map(|l| -l.exp() * l).sum();
                worst = worst.max((ent[b * t1 + j] - h).abs());
                assert_eq!(mask[b * t1 + j], 1.0);
            }
            for j in row.tokens.len() - 1..t1 {
                assert_eq!(mask[b * t1 + j], 0.0);
            }
        }
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}

#[test]
fn sampled_log_probs_equal_recomputed_ones_and_sampling_is_seeded() {
    let device = Device::flex().autodiff(); // sampling must work (without a graph) on trainable weights
    let (lm, w) = setup("llama3_gqa", &device);
    let prompts = vec![vec![1, 5, 6], vec![3], vec![4, 4, 4, 4, 4]];
    let params = SamplingParams { max_new_tokens: 6, n: 2, temperature: 1.3, top_k: Some(8), ..Default::default() };
    let out = lm.sample(&w, None, &prompts, &params, &mut BridgeRng::seed_from_u64(9)).unwrap();
    assert_eq!(out.len(), 6);
    for (i, c) in out.iter().enumerate() {
        assert_eq!((c.prompt_index, c.sample_index), (i / 2, i % 2));
        assert_eq!(c.tokens.len(), c.logprobs.len());
        assert!(c.tokens.iter().all(|&t| t < 11), "sampling stays within the codec vocabulary");
        let prompt = &prompts[c.prompt_index];
        let batch = SequenceBatch::new(vec![TokenSequence::prompt_completion(prompt, &c.tokens)], 0).unwrap();
        let lp = host(lm.token_scores(&w, None, &batch, false).unwrap().logprobs);
        for (a, b) in c.logprobs.iter().zip(&lp[prompt.len() - 1..]) {
            assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
        }
        let stopped = c.tokens.last().is_some_and(|t| [0, 2].contains(t));
        assert_eq!(c.finish == FinishReason::Stop, stopped);
        if !stopped {
            assert_eq!(c.tokens.len(), 6);
        }
    }
    let again = lm.sample(&w, None, &prompts, &params, &mut BridgeRng::seed_from_u64(9)).unwrap();
    assert_eq!(out, again);
    let other = lm.sample(&w, None, &prompts, &params, &mut BridgeRng::seed_from_u64(10)).unwrap();
    assert_ne!(out, other);
}

#[test]
fn greedy_picks_the_argmax_and_stops_as_asked() {
    let device = Device::flex();
    let (lm, w) = setup("qwen3_qknorm", &device);
    let prompt = vec![1u32, 7, 3];
    let out = lm
        .sample(&w, None, std::slice::from_ref(&prompt), &SamplingParams::greedy(4), &mut BridgeRng::seed_from_u64(0))
        .unwrap();
    let c = &out[0];
    // replay: each greedy token is the argmax (within the codec's 11 ids) of the full forward
    let mut seq = prompt.clone();
    for &tok in &c.tokens {
        let ids: Tensor<2, burn::tensor::Int> = Tensor::from_data(
            TensorData::new(seq.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, seq.len()]),
            &device,
        );
        let logits = host(lm.forward_logits(&w, None, ids, None).unwrap());
        let last = &logits[(seq.len() - 1) * 160..seq.len() * 160];
        assert_eq!(tok as usize, argmax(&last[..11]));
        seq.push(tok);
    }
    // a stop id ends the completion right after it is produced
    let first = c.tokens[0];
    let params = SamplingParams { stop_token_ids: vec![first], ..SamplingParams::greedy(5) };
    let out = lm.sample(&w, None, std::slice::from_ref(&prompt), &params, &mut BridgeRng::seed_from_u64(0)).unwrap();
    assert_eq!((out[0].tokens.clone(), out[0].finish), (vec![first], FinishReason::Stop));
    // stop strings
    let params = SamplingParams { max_new_tokens: 30, stop_strings: vec!["c".into()], ..Default::default() };
    let out = lm.sample(&w, None, &vec![prompt.clone(); 6], &params, &mut BridgeRng::seed_from_u64(4)).unwrap();
    for c in &out {
        if c.finish == FinishReason::Stop && !c.tokens.ends_with(&[0]) && !c.tokens.ends_with(&[2]) {
            assert!(c.text.ends_with('c'), "{c:?}");
        }
    }
    // zero new tokens
    let out = lm.sample(&w, None, &[prompt], &SamplingParams::greedy(0), &mut BridgeRng::seed_from_u64(0)).unwrap();
    assert!(out[0].tokens.is_empty() && out[0].finish == FinishReason::Length);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let device = Device::flex();
    let (lm, w) = setup("qwen2_tied", &device);
    let mut rng = BridgeRng::seed_from_u64(0);
    let p = SamplingParams::greedy(2);
    assert!(matches!(lm.sample(&w, None, &[vec![]], &p, &mut rng), Err(BridgeError::InvalidInput(_))));
    assert!(matches!(lm.sample(&w, None, &[vec![1, 160]], &p, &mut rng), Err(BridgeError::Model(_))));
    let batch = SequenceBatch::new(vec![TokenSequence::all_scored(vec![1, 999])], 0).unwrap();
    assert!(lm.token_scores(&w, None, &batch, false).unwrap_err().to_string().contains("999"));
    let ids = Tensor::from_data(TensorData::new(vec![1i64, 2, 500], [1, 3]), &device);
    assert!(lm.forward_logits(&w, None, ids, None).is_err());
    // weights of another architecture
    let (_, other) = setup("qwen3_qknorm", &device);
    assert!(
        lm.forward_logits(&other, None, Tensor::from_data(TensorData::new(vec![1i64, 2], [1, 2]), &device), None)
            .is_err()
    );
    // an adapter of another architecture
    let (lm3, _) = setup("qwen3_qknorm", &device);
    let a3 = lm3.init_adapter(&Default::default(), &device, &mut rng).unwrap();
    assert!(
        lm.token_scores(
            &w,
            Some(&a3),
            &SequenceBatch::new(vec![TokenSequence::all_scored(vec![1, 2])], 0).unwrap(),
            false
        )
        .is_err()
    );
}

#[test]
fn random_init_is_deterministic_and_shaped_like_the_config() {
    let device = Device::flex();
    let cfg = DecoderConfig::from_file(fixture("qwen3_qknorm").join("config.json")).unwrap();
    let a = DecoderWeights::init(&cfg, &device, &mut BridgeRng::seed_from_u64(1)).unwrap();
    let b = DecoderWeights::init(&cfg, &device, &mut BridgeRng::seed_from_u64(1)).unwrap();
    let (ma, mb) = (a.to_tensor_map().unwrap(), b.to_tensor_map().unwrap());
    assert_eq!(ma, mb);
    // exactly the tensors transformers has for this config
    let hf = bridge_models::hf::read_safetensors(&fixture("qwen3_qknorm").join("model.safetensors")).unwrap();
    assert_eq!(ma.keys().collect::<Vec<_>>(), hf.keys().collect::<Vec<_>>());
    for (k, t) in &ma {
        assert_eq!(t.shape, hf[k].shape, "{k}");
    }
    let emb = &ma["model.embed_tokens.weight"].data;
    let std = (emb.iter().map(|x| x * x).sum::<f32>() / emb.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.002, "{std}");
}

/// `hidden_states` are the final hidden states: through the LM head (or the tied embedding) they
/// give `forward_logits`' logits at every real position, with and without an adapter, on a
/// right-padded batch; a padded row's states equal those of the row alone.
#[test]
fn hidden_states_through_the_head_are_the_logits() {
    let device = Device::flex();
    for name in FIXTURES {
        let (lm, w) = setup(name, &device);
        let lora = bridge_models::LoraConfig { rank: 2, alpha: 4.0, ..Default::default() };
        let adapter = randomise_b(lm.init_adapter(&lora, &device, &mut BridgeRng::seed_from_u64(2)).unwrap(), 0.1, 3);
        let rows =
            vec![TokenSequence::all_scored(vec![1, 5, 6, 2, 9]), TokenSequence::prompt_completion(&[3], &[4, 7])];
        let batch = SequenceBatch::new(rows.clone(), 0).unwrap();
        for a in [None, Some(&adapter)] {
            let hidden = lm.hidden_states(&w, a, &batch).unwrap();
            let [b, t, h] = hidden.dims();
            assert_eq!((b, t, h), (2, 5, lm.config().hidden_size), "{name}");
            let flat = hidden.clone().reshape([b * t, h]);
            let logits = match &w.lm_head {
                Some(head) => {
                    let out = flat.matmul(head.weight.val());
                    match &head.bias {
                        Some(bias) => out + bias.val().unsqueeze::<2>(),
                        None => out,
                    }
                }
                None => flat.matmul(w.embed_tokens.weight.val().transpose()),
            };
            let expected = lm.forward_logits(&w, a, batch.ids(&device), Some(batch.attention_mask(&device))).unwrap();
            let v = expected.dims()[2];
            let (got, want) = (host(logits), host(expected));
            for (row, r) in rows.iter().enumerate() {
                let span = row * t * v..(row * t + r.tokens.len()) * v;
                let d = max_abs_diff(&got[span.clone()], &want[span]);
                assert!(d <= 1e-4, "{name}, adapter {}: row {row} differs by {d}", a.is_some());
            }
            // The padded second row alone: the same states at its real positions.
            let alone = SequenceBatch::new(vec![rows[1].clone()], 0).unwrap();
            let single = host(lm.hidden_states(&w, a, &alone).unwrap());
            let padded = host(hidden);
            let d = max_abs_diff(&single, &padded[t * h..(t + 3) * h]);
            assert!(d <= 1e-5, "{name}: padding changed the hidden states by {d}");
        }
    }
    // A token outside the vocabulary is an error, not a panic.
    let (lm, w) = setup("qwen2_tied", &device);
    let bad = SequenceBatch::new(vec![TokenSequence::all_scored(vec![1, 999])], 0).unwrap();
    assert!(lm.hidden_states(&w, None, &bad).unwrap_err().to_string().contains("999"));
}
