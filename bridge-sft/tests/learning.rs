//! The SFT baseline trainer on `BigramLm`: a tiny model learns a deterministic-bigram toy set,
//! the adapter is trained or frozen as configured, and a non-finite loss stops before any update.

use bridge_core::testing::{BigramBase, BigramLm, CharCodec};
use bridge_core::{AdamWSettings, BridgeError, BridgeRng, ExampleSource, InMemorySource, SftExample};
use bridge_sft::{BatchConfig, SftConfig, SftTrainer, TokenizeConfig};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

const CHAIN: &str = "abcdefgh";

/// Every example is a piece of the chain a→b→…→h→<eos>: each next token is determined by the
/// current one, so the optimal loss is 0.
fn toy_set() -> InMemorySource<SftExample> {
    (1..CHAIN.len())
        .flat_map(|split| {
            (0..split).map(move |start| SftExample {
                id: format!("{start}-{split}"),
                prompt: CHAIN[start..split].into(),
                completion: CHAIN[split..].into(),
            })
        })
        .collect()
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn config(lr: f64) -> SftConfig {
    SftConfig {
        batch: BatchConfig { batch_size: 6, packing: false },
        optim: AdamWSettings { lr, max_grad_norm: Some(1.0), ..AdamWSettings::default() },
        seed: 7,
        ..SftConfig::default()
    }
}

#[test]
fn a_tiny_model_learns_a_deterministic_bigram_set() {
    let device = Device::flex().autodiff();
    let lm = BigramLm::new(CharCodec::new(CHAIN));
    let base = lm.init_base(0.1, &device, &mut BridgeRng::seed_from_u64(1));
    let source = toy_set();
    let mut trainer = SftTrainer::new(lm, base, None, &source, config(0.1)).unwrap();
    let all = trainer.data().sequences().to_vec();
    assert_eq!(all.len(), source.len());
    let initial = trainer.eval_loss(&all).unwrap();
    assert!(initial > 1.5, "starts near ln(9): {initial}");
    let mut last = None;
    for _ in 0..300 {
        let m = trainer.step().unwrap();
        assert!(m.loss.is_finite() && m.grad_norm.is_finite() && m.num_tokens > 0);
        assert_eq!((m.num_examples, m.num_rows, m.lr), (6, 6, 0.1));
        last = Some(m);
    }
    let final_loss = trainer.eval_loss(&all).unwrap();
    println!("token-mean SFT loss of the toy set: {initial:.4} → {final_loss:.6} after 300 steps");
    assert!(final_loss < 0.05, "SFT should drive the loss to ~0: {initial} → {final_loss}");
    let last = last.unwrap();
    assert_eq!((last.step, trainer.steps_done()), (299, 300));
    assert!(last.epoch > 50.0, "{}", last.epoch);
}

#[test]
fn packed_batches_learn_too() {
    let device = Device::flex().autodiff();
    let lm = BigramLm::new(CharCodec::new(CHAIN));
    let base = lm.init_base(0.1, &device, &mut BridgeRng::seed_from_u64(2));
    let source = toy_set();
    let cfg = SftConfig {
        tokenize: TokenizeConfig { max_len: Some(20), ..TokenizeConfig::default() },
        batch: BatchConfig { batch_size: 8, packing: true },
        ..config(0.1)
    };
    let mut trainer = SftTrainer::new(lm, base, None, &source, cfg).unwrap();
    let all = trainer.data().sequences().to_vec();
    let initial = trainer.eval_loss(&all).unwrap();
    for _ in 0..150 {
        let m = trainer.step().unwrap();
        assert!(m.num_rows < m.num_examples, "8 examples of ≤ 9 tokens pack into fewer rows of 20");
    }
    let final_loss = trainer.eval_loss(&all).unwrap();
    println!("packed: {initial:.4} → {final_loss:.6} after 150 steps");
    // The first token of each packed example is unscored, so packing changes no target.
    assert!(final_loss < 0.05, "{initial} → {final_loss}");
}

#[test]
fn adapter_is_trained_only_with_its_own_optimiser() {
    let device = Device::flex().autodiff();
    let lm = BigramLm::new(CharCodec::new(CHAIN));
    let mut rng = BridgeRng::seed_from_u64(3);
    let base = lm.init_base(0.1, &device, &mut rng);
    let adapter = lm.init_adapter(2, 2.0, &device, &mut rng);
    let (a0, b0) = (values(adapter.a.val()), values(adapter.b.val()));
    let source = toy_set();

    // Frozen adapter: used, never changed.
    let mut frozen = SftTrainer::new(lm.clone(), base, Some(adapter), &source, config(0.05)).unwrap();
    let table0 = values(frozen.base().table.val());
    for _ in 0..3 {
        let m = frozen.step().unwrap();
        assert_eq!((m.adapter_grad_norm, m.adapter_lr), (None, None));
    }
    assert_ne!(values(frozen.base().table.val()), table0, "the base is trained");
    let (base, adapter) = frozen.into_parts();
    let adapter = adapter.unwrap();
    assert_eq!((values(adapter.a.val()), values(adapter.b.val())), (a0.clone(), b0.clone()));

    // Trained adapter: its own learning rate (with warm-up) and clipping.
    let cfg = SftConfig {
        adapter_optim: Some(AdamWSettings { lr: 0.02, max_grad_norm: Some(1e-3), ..AdamWSettings::default() }),
        warmup_steps: 4,
        ..config(0.05)
    };
    let mut trained = SftTrainer::new(lm.clone(), base, Some(adapter), &source, cfg).unwrap();
    let m = trained.step().unwrap();
    assert_eq!((m.lr, m.adapter_lr), (0.05 / 4.0, Some(0.02 / 4.0)));
    assert!(m.adapter_grad_norm.unwrap() > 1e-3, "B gets a gradient (A does not while B = 0)");
    let m = trained.step().unwrap();
    assert_eq!(m.adapter_lr, Some(0.02 / 2.0));
    let adapter = trained.adapter().unwrap();
    assert_ne!(values(adapter.b.val()), b0, "B moved");
    assert_ne!(values(adapter.a.val()), a0, "A moves once B ≠ 0");

    // A frozen adapter with an adapter optimiser is an error at the first step, before any update.
    let base = lm.init_base(0.1, &device, &mut rng);
    let table0 = values(base.table.val());
    let frozen_adapter = lm.init_adapter(2, 2.0, &device, &mut rng).no_grad();
    let cfg = SftConfig { adapter_optim: Some(AdamWSettings::default()), ..config(0.05) };
    let mut t = SftTrainer::new(lm.clone(), base, Some(frozen_adapter), &source, cfg).unwrap();
    assert!(t.step().unwrap_err().to_string().contains("no adapter parameter"));
    assert_eq!((values(t.base().table.val()), t.steps_done()), (table0, 0));

    // An adapter optimiser without an adapter is a config error.
    let base = lm.init_base(0.1, &device, &mut rng);
    let cfg = SftConfig { adapter_optim: Some(AdamWSettings::default()), ..config(0.05) };
    let e = SftTrainer::new(lm, base, None, &source, cfg).unwrap_err();
    assert!(e.to_string().contains("adapter_optim"), "{e}");
}

#[test]
fn non_finite_loss_stops_before_the_update() {
    let device = Device::flex().autodiff();
    let lm = BigramLm::new(CharCodec::new(CHAIN));
    let v = lm.vocab_size();
    let table = Tensor::<2>::full([v, v], f32::NAN, &device);
    let base = BigramBase { table: Param::from_tensor(table) };
    let source = toy_set();
    let mut trainer = SftTrainer::new(lm, base, None, &source, config(0.1)).unwrap();
    let cursor = trainer.cursor().clone();
    let e = trainer.step().unwrap_err();
    assert!(matches!(e, BridgeError::NonFinite { ref quantity, step: 0, .. } if quantity == "sft_loss"), "{e}");
    assert_eq!(trainer.cursor(), &cursor, "the data position is restored");
    assert_eq!(trainer.steps_done(), 0);
    assert!(values(trainer.base().table.val()).iter().all(|x| x.is_nan()), "weights untouched");
}

#[test]
fn config_rejects_typos_and_bad_values() {
    let cfg: SftConfig = serde_json::from_str(
        r#"{"batch": {"batch_size": 2, "packing": true}, "tokenize": {"max_len": 64}, "optim": {"lr": 0.001}}"#,
    )
    .unwrap();
    assert!(cfg.validate("sft").is_ok());
    assert!(serde_json::from_str::<SftConfig>(r#"{"batch_sise": 2}"#).unwrap_err().to_string().contains("batch_sise"));
    let packing_without_len = SftConfig { batch: BatchConfig { batch_size: 2, packing: true }, ..SftConfig::default() };
    assert!(packing_without_len.validate("sft").unwrap_err().to_string().contains("sft.batch.packing"));
    let zero = SftConfig { batch: BatchConfig { batch_size: 0, packing: false }, ..SftConfig::default() };
    assert!(zero.validate("sft").unwrap_err().to_string().contains("sft.batch.batch_size"));
}
