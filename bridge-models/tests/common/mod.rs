//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bridge_core::BridgeRng;
use bridge_core::testing::CharCodec;
use bridge_models::LoraAdapter;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde_json::Value;
use std::path::PathBuf;

/// `bridge-models/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The HF fixtures made by `scripts/make_fixtures.py`.
pub const FIXTURES: [&str; 4] = ["llama3_gqa", "llama_bias_tied", "qwen2_tied", "qwen3_qknorm"];

/// A small codec whose vocabulary fits every fixture.
pub fn codec() -> Box<CharCodec> {
    Box::new(CharCodec::new("abcdefghij"))
}

/// A reference produced by transformers: ids, mask and logits.
pub struct Reference {
    pub ids: Vec<Vec<i64>>,
    pub mask: Vec<Vec<bool>>,
    pub logits: Vec<Vec<Vec<f32>>>,
}

pub fn read_reference(path: PathBuf) -> Reference {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ids: Vec<Vec<i64>> = serde_json::from_value(v["input_ids"].clone()).unwrap();
    let mask: Vec<Vec<i64>> = serde_json::from_value(v["attention_mask"].clone()).unwrap();
    let logits: Vec<Vec<Vec<f32>>> = serde_json::from_value(v["logits"].clone()).unwrap();
    Reference { ids, mask: mask.into_iter().map(|r| r.into_iter().map(|m| m != 0).collect()).collect(), logits }
}

impl Reference {
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let (b, t) = (self.ids.len(), self.ids[0].len());
        Tensor::from_data(TensorData::new(self.ids.concat(), [b, t]), device)
    }

    pub fn mask_tensor(&self, device: &Device) -> Tensor<2, Bool> {
        let (b, t) = (self.ids.len(), self.ids[0].len());
        Tensor::from_data(TensorData::new(self.mask.concat(), [b, t]), device)
    }

    /// Max |Δ| between `logits [B, T, V]` and the reference, over real (unpadded) positions.
    pub fn max_diff(&self, logits: Tensor<3>) -> f32 {
        let [b, t, v] = logits.dims();
        let ours: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let mut worst = 0.0f32;
        for r in 0..b {
            for p in 0..t {
                if !self.mask[r][p] {
                    continue;
                }
                for k in 0..v {
                    worst = worst.max((ours[(r * t + p) * v + k] - self.logits[r][p][k]).abs());
                }
            }
        }
        worst
    }
}

/// A tensor's values on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Max |a − b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Gives every `lora_B` random values so that the adapter changes the model.
pub fn randomise_b(adapter: LoraAdapter, std: f64, seed: u64) -> LoraAdapter {
    adapter.with_random_b(std, &mut BridgeRng::seed_from_u64(seed))
}
