//! Host-side tensors keyed by HF parameter names: the common currency of the weight loaders.
//!
//! Every loader (HF safetensors directories, GGUF files) produces a [`TensorMap`] whose keys are
//! the Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, …) and whose values are
//! dense f32 arrays in HF layout (`[out, in]` for linear weights). The model is then built from
//! the map in one place, whatever the file format was.

use bridge_core::{BridgeError, Result};
use std::collections::BTreeMap;

/// A dense f32 array with its shape, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Wraps `data`, checking that it has `shape.iter().product()` values.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(BridgeError::InvalidInput(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Tensors keyed by their HF parameter names.
pub type TensorMap = BTreeMap<String, HostTensor>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(HostTensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(HostTensor::new(vec![2, 3], vec![0.0; 5]).is_err());
    }
}
