//! CPU row kernels: the decoder's arithmetic over host `f32` rows, written once and shared by the
//! two CPU engines, the fused training engine (`fused`) and the host decoding engine
//! (`generate::host`).
//!
//! - [`matmul`]: the matrix product (the `gemm` crate's kernels behind a bounds-checked,
//!   strided wrapper) and the trampoline that compiles a loop for AVX-512 or AVX2+FMA: the
//!   crate's one module allowed `unsafe`.
//! - [`math`]: vector primitives in a fixed summation order (dot product, maximum, sum, a
//!   branch-free `exp`).
//! - [`rows`]: the layer's operations on rows, each next to its backward where training needs
//!   one: projection (`x·W + b`), RMSNorm, rotary embedding, SwiGLU, softmax, log-partitions,
//!   the embedding lookup.
//!
//! The engines differ in how they lay out and schedule the work (whole sequences with saved
//! activations for the backward; one new token per row over a KV cache), not in this arithmetic:
//! a kernel here is the one place its formula is written for the CPU. Every kernel is a plain
//! `#[inline(always)]` loop over slices; a caller runs it inside [`matmul::vectorised`] (or a
//! [`matmul::VectorKernel`]) so that it is compiled for the CPU's vector extension.
//!
//! This module depends on nothing else in the crate.

pub(crate) mod math;
pub(crate) mod matmul;
pub(crate) mod rows;
