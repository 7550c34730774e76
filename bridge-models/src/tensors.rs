//! Host-side tensors keyed by HF parameter names: the common currency of the weight loaders.
//!
//! Every loader (HF safetensors directories, GGUF files) produces a [`TensorMap`] whose keys are
//! the Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, …) and whose values are
//! dense f32 arrays in HF layout (`[out, in]` for linear weights). The model is then built from
//! the map in one place, whatever the file format was.

use bridge_core::{BridgeError, Result};
use burn::tensor::{Device, Tensor, TensorData};
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

/// A float tensor of `shape` on `device` holding the row-major `values`.
pub(crate) fn tensor_from_host<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `[rows, cols]` row-major values → their transpose `[cols, rows]`, in 32 × 32 tiles (a naive
/// loop misses the cache on every write for an embedding-sized matrix).
pub(crate) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; x.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(HostTensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(HostTensor::new(vec![2, 3], vec![0.0; 5]).is_err());
    }

    #[test]
    fn tiled_transpose_is_the_transpose() {
        for (rows, cols) in [(0, 3), (1, 1), (3, 70), (65, 33), (100, 7)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&x, rows, cols);
            assert_eq!(t.len(), x.len());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], x[r * cols + c]);
                }
            }
        }
    }
}
