//! Hugging Face model directories: `config.json` plus `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), read into a [`TensorMap`] and then [`DecoderWeights`], and
//! written back as a directory `transformers` loads (f32, `[out, in]` layout).
//!
//! Reading and writing go through the `safetensors` crate directly rather than burn-store: the
//! loaders need full control over the names (HF keys in, HF keys out, PEFT keys for adapters)
//! and a host-side [`TensorMap`] that the GGUF loader produces too, and burn-store would add a
//! regex remapping layer between the two that hides which tensor is missing or mis-shaped.

use crate::config::DecoderConfig;
use crate::tensors::{HostTensor, TensorMap};
use crate::weights::DecoderWeights;
use bridge_core::{BridgeError, Result};
use burn::tensor::Device;
use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Name of the single-file weights of an HF directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the shard index of a sharded HF directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the config of an HF directory.
pub const CONFIG_FILE: &str = "config.json";

fn decode_values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let v = match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => return None,
    };
    Some(v)
}

/// Reads every tensor of a `.safetensors` file as f32 (from f32, f64, bf16 or f16).
///
/// A truncated or corrupt file, or a tensor of another dtype, is a [`BridgeError::Weights`]
/// naming the file (and the tensor).
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| BridgeError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| BridgeError::weights(path, format!("not a valid safetensors file (truncated?): {e}")))?;
    let mut map = TensorMap::new();
    for (name, view) in st.iter() {
        let data = decode_values(view.dtype(), view.data()).ok_or_else(|| {
            BridgeError::weights(path, format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()))
        })?;
        let t = HostTensor::new(view.shape().to_vec(), data)
            .map_err(|e| BridgeError::weights(path, format!("tensor `{name}`: {e}")))?;
        map.insert(name.to_owned(), t);
    }
    Ok(map)
}

/// An f32 tensor borrowed for serialisation.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

pub use bridge_core::fs::write_atomic;

/// Writes `map` as an f32 `.safetensors` file (atomically), with optional string metadata.
pub fn write_safetensors(path: &Path, map: &TensorMap, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let views = map.iter().map(|(k, t)| (k.as_str(), F32View { shape: &t.shape, data: &t.data }));
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| BridgeError::weights(path, format!("serialising: {e}")))?;
    write_atomic(path, &bytes)
}

/// Reads the weights of an HF directory (single file or shards) into a [`TensorMap`].
pub fn load_tensor_map(dir: &Path) -> Result<TensorMap> {
    let index = dir.join(INDEX_FILE);
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return read_safetensors(&single);
    }
    if !index.is_file() {
        return Err(BridgeError::weights(dir, format!("neither {WEIGHTS_FILE} nor {INDEX_FILE} found")));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| BridgeError::io(&index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BridgeError::weights(&index, format!("not valid JSON: {e}")))?;
    let weight_map = v
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| BridgeError::weights(&index, "missing `weight_map` object"))?;
    let mut files = BTreeSet::new();
    for (name, file) in weight_map {
        let f =
            file.as_str().ok_or_else(|| BridgeError::weights(&index, format!("`{name}`: shard is not a string")))?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(BridgeError::weights(&index, format!("`{name}`: suspicious shard name `{f}`")));
        }
        files.insert(f.to_owned());
    }
    let mut map = TensorMap::new();
    for f in files {
        map.append(&mut read_safetensors(&dir.join(f))?);
    }
    if let Some((name, file)) = weight_map.iter().find(|(k, _)| !map.contains_key(k.as_str())) {
        return Err(BridgeError::weights(dir.join(file.as_str().unwrap_or("")), format!("tensor `{name}` is missing")));
    }
    Ok(map)
}

/// Loads an HF model directory: `config.json` and the safetensors weights.
///
/// Errors name the file (and tensor): a missing or malformed config, an unsupported
/// architecture, a truncated file, a missing, extra or mis-shaped tensor.
pub fn load_hf_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(DecoderConfig, DecoderWeights)> {
    let dir = dir.as_ref();
    let cfg_path = dir.join(CONFIG_FILE);
    let config = DecoderConfig::from_file(&cfg_path).map_err(|e| match e {
        BridgeError::Config { field, message } => {
            BridgeError::weights(&cfg_path, format!("config `{field}`: {message}"))
        }
        other => other,
    })?;
    let map = load_tensor_map(dir)?;
    let weights = DecoderWeights::from_tensor_map(&config, &map, device).map_err(|e| match e {
        BridgeError::Model(m) => BridgeError::weights(dir, m),
        other => other,
    })?;
    Ok((config, weights))
}

/// Saves a model as an HF directory (`config.json` + `model.safetensors`, f32, `[out, in]`)
/// that `transformers`' `AutoModelForCausalLM.from_pretrained` loads. Each file is written
/// atomically; a directory holding a sharded checkpoint is refused rather than mixed.
pub fn save_hf_dir(dir: impl AsRef<Path>, config: &DecoderConfig, weights: &DecoderWeights) -> Result<()> {
    let dir = dir.as_ref();
    weights.check(config)?;
    std::fs::create_dir_all(dir).map_err(|e| BridgeError::io(dir, e))?;
    if dir.join(INDEX_FILE).exists() {
        return Err(BridgeError::checkpoint(
            dir,
            format!("holds a sharded checkpoint ({INDEX_FILE}); refusing to mix"),
        ));
    }
    let map = weights.to_tensor_map()?;
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    write_safetensors(&dir.join(WEIGHTS_FILE), &map, Some(meta))?;
    let text = serde_json::to_string_pretty(&config.to_hf_json())
        .map_err(|e| BridgeError::checkpoint(dir, format!("serialising config.json: {e}")))?;
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        let f16_value = |h: u16| decode_values(Dtype::F16, &h.to_le_bytes()).unwrap()[0];
        assert_eq!(f16_value(0x3c00), 1.0);
        assert_eq!(f16_value(0xc000), -2.0);
        assert_eq!(f16_value(0x7bff), 65504.0);
        assert_eq!(f16_value(0x0001), 2f32.powi(-24));
        assert_eq!(f16_value(0x0200), 2f32.powi(-15));
        assert!(f16_value(0x7e00).is_nan());
        assert_eq!(f16_value(0xfc00), f32::NEG_INFINITY);
        let bf = decode_values(Dtype::BF16, &[0x80, 0x3f]).unwrap();
        assert_eq!(bf, vec![1.0]);
    }
}
