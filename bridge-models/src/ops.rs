//! The tensor engine's custom autodiff operations, as burn backend extensions (burn's
//! `extension` feature; the fused CPU engine's `fused/op.rs` uses the same mechanism):
//!
//! - `token_scores`: per-target log-probabilities and entropies over vocabulary chunks, without
//!   an `[N, V]` log-softmax;
//! - `attention`: causal grouped-query attention whose forward is burn's `attention` op (flash
//!   kernels on cubecl) and whose backward recomputes the scores chunk by chunk.
//!
//! Both are written in burn tensor operations of the backend they run on (`prim`), so they run
//! on every backend this crate routes them to: flex (the `flex` feature) and every cubecl runtime
//! (the `cuda` feature). [`supported`] says whether a device is one of them; elsewhere the
//! tensor engine keeps its materialised paths. This module depends on nothing else in the crate.

pub(crate) mod attention;
mod prim;
pub(crate) mod token_scores;

use burn::tensor::Device;

/// Whether the operations of this module run on `device` (with or without autodiff).
pub(crate) fn supported(device: &Device) -> bool {
    let name = format!("{device:?}");
    (cfg!(feature = "flex") && name.contains("Flex(")) || (cfg!(feature = "cuda") && name.contains("Cube("))
}

/// Elements of one f32 temporary of a chunk (a `[rows, columns]` slice of logits, or of
/// attention scores): 2²⁵, 128 MiB. The chunk sizes below keep every temporary under it.
pub(crate) const CHUNK_ELEMENTS: usize = 1 << 25;

/// Vocabulary columns per chunk for `rows` rows: as many as fit [`CHUNK_ELEMENTS`], at least 1.
pub(crate) fn vocab_chunk(rows: usize) -> usize {
    (CHUNK_ELEMENTS / rows.max(1)).max(1)
}

/// Query rows per chunk of the attention backward for `batch·heads` score matrices over `keys`
/// keys, as many as fit [`CHUNK_ELEMENTS`], at least 1.
pub(crate) fn query_chunk(batch_heads: usize, keys: usize) -> usize {
    (CHUNK_ELEMENTS / (batch_heads * keys).max(1)).max(1)
}

/// Deterministic pseudo-random values in [−scale, scale): the inputs of the custom ops' tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}
