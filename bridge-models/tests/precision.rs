//! Mixed precision (`Precision::MixedBf16`): bf16 forward and backward on a cast of f32 master
//! weights, f32 gradients, f32 AdamW. Checked on flex against the two things it must equal:
//!
//! - its gradient is, bit for bit, the gradient of the pure-bf16 computation (the same weights
//!   cast to bf16 as leaves, the same loss) cast to f32;
//! - two AdamW steps move the f32 master weights by the update AdamW's formula gives for those
//!   gradients, computed here on the host in f64 (f32 moments; bf16 moments would be off by
//!   their 2⁻⁸ rounding), and the weights stay f32;
//!
//! plus the optimiser state's size: 8 bytes (two f32 moments) per parameter, twice that of pure
//! bf16 training's.

mod common;

use bridge_core::policy::{CausalLm, SequenceBatch, TokenSequence};
use bridge_core::{AdamWSettings, BridgeRng, FlatGradients, GroupOptimizer};
use bridge_models::hf::load_hf_dir;
use bridge_models::lora::{LoraAdapter, LoraConfig};
use bridge_models::{Decoder, DecoderWeights, Precision};
use burn::module::Module;
use burn::tensor::{DType, Device, Tensor, TensorData};
use common::*;

fn batch() -> SequenceBatch {
    SequenceBatch::new(
        vec![
            TokenSequence::prompt_completion(&[1, 2, 3], &[4, 5, 6, 7, 8, 2]),
            TokenSequence::all_scored(vec![9, 8, 7, 1]),
        ],
        0,
    )
    .unwrap()
}

/// `Σ c·logprobs·mask + 0.1 Σ entropy·mask` (fixed weights).
fn loss(lm: &Decoder, w: &DecoderWeights, a: &LoraAdapter) -> Tensor<1> {
    let s = lm.token_scores(w, Some(a), &batch(), true).unwrap();
    let [b, t1] = s.logprobs.dims();
    let c: Vec<f32> = (0..b * t1).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    let c = Tensor::<2>::from_data(TensorData::new(c, [b, t1]), &w.device());
    (s.logprobs * c * s.mask.clone()).sum() + (s.entropy.unwrap() * s.mask).sum().mul_scalar(0.1)
}

/// Every parameter's gradient (base, then adapter) with its dtype, as f32 host values.
fn gradients(lm: &Decoder, w: &DecoderWeights, a: &LoraAdapter) -> (FlatGradients, Vec<(DType, Vec<f32>)>) {
    let mut grads = loss(lm, w, a).backward();
    let gw = FlatGradients::from_backward(&mut grads, w);
    let ga = FlatGradients::from_backward(&mut grads, a);
    let mut out = Vec::new();
    for g in [&gw, &ga] {
        out.extend(g.ids().map(|id| {
            let t = g.get(id).unwrap();
            (t.dtype(), host(t))
        }));
    }
    (gw, out)
}

/// θ's values (every parameter, in the order of their ids, as [`FlatGradients`] keeps them) and
/// their dtypes.
fn values(w: &DecoderWeights) -> Vec<(DType, Vec<f32>)> {
    struct V(std::collections::BTreeMap<burn::module::ParamId, (DType, Vec<f32>)>);
    impl burn::module::ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            self.0.insert(p.id, (t.dtype(), host(t.reshape([-1]))));
        }
    }
    let mut v = V(Default::default());
    w.visit(&mut v);
    v.0.into_values().collect()
}

#[test]
fn mixed_precision_is_f32_adamw_on_the_bf16_gradient() {
    let device = Device::flex().autodiff();
    for name in ["qwen2_tied", "llama3_gqa"] {
        let (cfg, w) = load_hf_dir(fixture(name), &device).unwrap();
        let mixed = Decoder::new(cfg.clone(), codec()).unwrap().with_precision(Precision::MixedBf16);
        let plain = Decoder::new(cfg, codec()).unwrap();
        let lora = LoraConfig { rank: 4, alpha: 8.0, ..Default::default() };
        let a = randomise_b(mixed.init_adapter(&lora, &device, &mut BridgeRng::seed_from_u64(5)).unwrap(), 0.1, 6);
        let settings = AdamWSettings { lr: 1e-3, ..AdamWSettings::default() };
        let mut opt = GroupOptimizer::new("optim.theta", settings.clone()).unwrap();
        let mut theta = w;
        let mut history: Vec<Vec<Vec<f32>>> = Vec::new(); // gradients of θ per step
        let mut weights = vec![values(&theta)];
        for step in 0..2 {
            let (g, got) = gradients(&mixed, &theta, &a);
            // the pure-bf16 computation on the same weights, cast to bf16 as leaves
            let (_, want) =
                gradients(&plain, &Precision::Bf16.prepare(theta.clone()), &Precision::Bf16.prepare(a.clone()));
            assert_eq!(got.len(), want.len());
            for (i, ((dt, g_mixed), (dt_ref, g_bf16))) in got.iter().zip(&want).enumerate() {
                assert_eq!((*dt, *dt_ref), (DType::F32, DType::BF16), "{name} step {step} parameter {i}");
                assert_eq!(g_mixed, g_bf16, "{name} step {step} parameter {i}: not the bf16 gradient cast to f32");
            }
            history.push(got.into_iter().take(g.len()).map(|(_, v)| v).collect());
            theta = opt.apply(theta, &g);
            weights.push(values(&theta));
        }
        // the master weights stay f32 and move by AdamW's f32 update (host f64 reference)
        let (b1, b2, eps) = (f64::from(0.9f32), f64::from(0.999f32), 1e-8f64);
        for (p, w0) in weights[0].iter().enumerate() {
            let (mut m, mut v) = (vec![0.0f64; w0.1.len()], vec![0.0f64; w0.1.len()]);
            for step in 0..2 {
                let (dtype, before) = &weights[step][p];
                let (dtype_after, after) = &weights[step + 1][p];
                assert_eq!((*dtype, *dtype_after), (DType::F32, DType::F32), "{name}: master weights stay f32");
                let t = (step + 1) as i32;
                for (j, &g) in history[step][p].iter().enumerate() {
                    let g = f64::from(g);
                    m[j] = b1 * m[j] + (1.0 - b1) * g;
                    v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                    let delta = 1e-3 * (m[j] / (1.0 - b1.powi(t))) / ((v[j] / (1.0 - b2.powi(t))).sqrt() + eps);
                    let moved = f64::from(before[j]) - f64::from(after[j]);
                    // f32 arithmetic on the device: a few f32 ulps of the update and the weight
                    let tol = 1e-5 * delta.abs() + 4.0 * f64::from(f32::EPSILON) * f64::from(before[j].abs());
                    assert!(
                        (moved - delta).abs() <= tol,
                        "{name} step {step} parameter {p}[{j}]: moved {moved}, AdamW in f64 says {delta}"
                    );
                }
            }
        }
        // f32 state: two f32 moments per parameter; pure bf16 training keeps bf16 moments
        let n: usize = weights[0].iter().map(|(_, v)| v.len()).sum();
        let mixed_bytes = opt.optimizer().to_record().into_bytes().unwrap().len();
        let mut opt16 = GroupOptimizer::new("optim.theta", settings).unwrap();
        let theta16 = Precision::Bf16.prepare(theta.clone());
        let (g16, _) = gradients(&plain, &theta16, &Precision::Bf16.prepare(a.clone()));
        let theta16 = opt16.apply(theta16, &g16);
        assert!(values(&theta16).iter().all(|(d, _)| *d == DType::BF16));
        let bf16_bytes = opt16.optimizer().to_record().into_bytes().unwrap().len();
        assert!(mixed_bytes >= 8 * n, "{name}: {mixed_bytes} bytes of state for {n} parameters");
        assert!(bf16_bytes < 5 * n, "{name}: pure bf16 state {bf16_bytes} bytes for {n} parameters");
    }
}
