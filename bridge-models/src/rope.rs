//! The rotary embedding's `cos`/`sin` tables, computed once on the host and shared by every
//! engine: the tensor forward reads them as tensors, the CPU engines as rows.

use crate::config::DecoderConfig;
use crate::tensors::tensor_from_host;
use burn::tensor::{Device, Tensor};
use std::sync::RwLock;

/// Host-side rotary tables `[positions, head_dim]` (cos and sin of `cat(freqs, freqs)`).
#[derive(Default)]
struct RopeTables {
    positions: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The rotary tables of one architecture, grown on demand (behind a lock: a [`Decoder`] is
/// shared between threads).
///
/// [`Decoder`]: crate::decoder::Decoder
pub(crate) struct Rope {
    head_dim: usize,
    inv_freq: Vec<f32>,
    tables: RwLock<RopeTables>,
}

impl Rope {
    /// The (empty) tables of `config`'s rotary embedding (its frequencies and scaling).
    pub(crate) fn new(config: &DecoderConfig) -> Self {
        let inv_freq = config.rope_inv_freq().into_iter().map(|f| f as f32).collect();
        Self { head_dim: config.head_dim, inv_freq, tables: RwLock::new(RopeTables::default()) }
    }

    /// Grows the tables to at least `t` positions.
    fn grow(&self, t: usize) {
        let d = self.head_dim;
        let half = d / 2;
        let need_grow = self.tables.read().map(|r| r.positions < t).unwrap_or(true);
        if need_grow {
            let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
            if tables.positions < t {
                let n = t.max(tables.positions * 2).max(64);
                let (mut cos, mut sin) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
                for p in 0..n {
                    for (i, &f) in self.inv_freq.iter().enumerate() {
                        // transformers multiplies in f32, then takes cos/sin of the f32 angle.
                        let angle = f64::from(p as f32 * f);
                        let (s, c) = angle.sin_cos();
                        cos[p * d + i] = c as f32;
                        cos[p * d + i + half] = c as f32;
                        sin[p * d + i] = s as f32;
                        sin[p * d + i + half] = s as f32;
                    }
                }
                *tables = RopeTables { positions: n, cos, sin };
            }
        }
    }

    /// Host rotary rows `(cos, sin)`, each `positions.len() × head_dim` values (row-major), for
    /// arbitrary positions (the generation engines' per-row positions).
    pub(crate) fn rows(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let d = self.head_dim;
        self.grow(positions.iter().max().map_or(1, |&p| p + 1));
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * d), Vec::with_capacity(positions.len() * d));
        for &p in positions {
            cos.extend_from_slice(&tables.cos[p * d..(p + 1) * d]);
            sin.extend_from_slice(&tables.sin[p * d..(p + 1) * d]);
        }
        (cos, sin)
    }

    /// The tables of positions `0..t` as f32 tensors on `device`.
    ///
    /// # Shapes
    /// Returns `(cos, sin)`, each `[1, 1, t, head_dim]`.
    pub(crate) fn tensors(&self, t: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let d = self.head_dim;
        self.grow(t);
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let cos = tensor_from_host(tables.cos[..t * d].to_vec(), [1, 1, t, d], device);
        let sin = tensor_from_host(tables.sin[..t * d].to_vec(), [1, 1, t, d], device);
        (cos, sin)
    }
}
