//! Causal grouped-query attention as one autodiff operation: the forward is burn's own
//! `attention` op of the backend it runs on (a flash kernel on cubecl when autotune picks one,
//! burn-flex's tiled kernel on the CPU), the backward recomputes the scores over chunks of query
//! rows. The `[B, H, T, T]` scores are never kept for the backward, and never exist in full.
//!
//! burn 0.22's `attention` on an autodiff device is `attention_fallback` (materialised scores,
//! every intermediate saved), and cubecl's flash kernel runs only without `scale`, bias and
//! softcap, with as many key/value heads as query heads. So this operation passes no scale
//! (the default `1/√d` is the decoder's), expands the key/value heads for the forward (GQA:
//! query head `h` reads key/value head `h / n_rep`, `transformers`' `repeat_kv`), and supplies
//! its own backward:
//!
//! ```text
//! per chunk of queries:  S = q·kᵀ/√d (causal: keys ≤ the query's position), P = softmax(S)
//!                        dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP − rowsum(dO ⊙ O))
//!                        dQ = dS·K/√d,  dK += dSᵀ·Q/√d
//! ```
//!
//! (FlashAttention's backward, in burn tensor operations.) The `n_rep` query heads that share a
//! key/value head are stacked along the row axis of one product, so `dK`, `dV` come out summed
//! over them without a repeat. The backward computes in f32 (f64 for f64 inputs); the keys of a
//! chunk stop at its last query (causality), so early chunks are cheaper.
//!
//! Masking is causal only: every query attends every key at or before its position. Batches
//! must be right-padded (real tokens first), which is what training batches are: a real
//! query then never sees a padded key, and padded positions (whose scores every loss masks)
//! attend the padding too.

use super::prim::{Prim, arange, compute_dtype, int_greater};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::AttentionModuleOptions;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, Backend, Shape, backend_extension};
use burn::tensor::Tensor;

/// Causal attention as a backend operation: `q [B, Hq, T, d]`, `k`, `v [B, Hkv, T, d]` →
/// `softmax(q·kᵀ/√d + causal mask)·v`, `[B, Hq, T, d]`. `chunk` is the number of query rows
/// per chunk of the backward.
#[backend_extension(Flex: cfg(feature = "flex"), Cube: cfg(feature = "cuda"), Autodiff)]
pub trait CausalAttentionBackend: Backend {
    /// See the trait.
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let _ = chunk;
        forward::<Self>(q, k, v)
    }
}

#[cfg(feature = "flex")]
impl CausalAttentionBackend for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl CausalAttentionBackend for burn::backend::Cube {}

/// `[B, Hkv, T, d]` → `[B, Hkv·n_rep, T, d]`, key/value head `j` serving heads `j·n_rep..`.
fn repeat_kv<B: Backend>(x: Prim<B>, n_rep: usize) -> Prim<B> {
    if n_rep == 1 {
        return x;
    }
    let [b, h, t, d] = dims4(&x);
    x.reshape(&[b, h, 1, t, d]).expand(&[b, h, n_rep, t, d]).reshape(&[b, h * n_rep, t, d])
}

fn dims4<B: Backend>(x: &Prim<B>) -> [usize; 4] {
    <[usize; 4]>::try_from(x.dims()).unwrap_or_else(|d| unreachable!("attention operand of rank {}", d.len()))
}

fn forward<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>) -> FloatTensor<B> {
    let n_rep = dims4(&Prim::<B>(q.clone()))[1] / dims4(&Prim::<B>(k.clone()))[1].max(1);
    let k = repeat_kv(Prim::<B>(k), n_rep).0;
    let v = repeat_kv(Prim::<B>(v), n_rep).0;
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    B::attention(q, k, v, None, None, options)
}

/// The causal mask of queries `t0..t1` over keys `0..t1`, for the stacked layout
/// `[B, Hkv, n_rep·(t1 − t0), t1]`: true where the key comes after the query.
fn chunk_mask<B: Backend>(
    device: &B::Device,
    t0: usize,
    t1: usize,
    n_rep: usize,
    b: usize,
    hkv: usize,
) -> BoolTensor<B> {
    let tc = t1 - t0;
    let cols = B::int_expand(B::int_reshape(arange::<B>(0..t1, device), Shape::new([1, t1])), Shape::new([tc, t1]));
    let rows = B::int_expand(B::int_reshape(arange::<B>(t0..t1, device), Shape::new([tc, 1])), Shape::new([tc, t1]));
    let mask = B::bool_reshape(int_greater::<B>(cols, rows), Shape::new([1, tc, t1]));
    let mask = B::bool_reshape(B::bool_expand(mask, Shape::new([n_rep, tc, t1])), Shape::new([1, 1, n_rep * tc, t1]));
    B::bool_expand(mask, Shape::new([b, hkv, n_rep * tc, t1]))
}

/// What the backward step keeps: the three inputs and the output (each in its own dtype).
#[derive(Clone, Debug)]
struct AttentionState<B: Backend> {
    q: Prim<B>,
    k: Prim<B>,
    v: Prim<B>,
    o: Prim<B>,
    chunk: usize,
}

/// `(dQ, dK, dV)` in the inputs' dtypes from `dO [B, Hq, T, d]`.
fn backward<B: Backend>(st: &AttentionState<B>, dout: Prim<B>) -> (Prim<B>, Prim<B>, Prim<B>) {
    let [b, hq, t, d] = dims4(&st.q);
    let [_, hkv, s, _] = dims4(&st.k);
    let n_rep = hq / hkv;
    let cd = compute_dtype(st.q.dtype());
    let device = st.q.device();
    let scale = 1.0 / (d as f64).sqrt();
    let dout = dout.upcast();
    // rowsum(dO ⊙ O) [B, Hq, T, 1]
    let dd = (dout.clone() * st.o.clone().upcast()).sum_dim(3).reshape(&[b, hkv, n_rep, t, 1]);
    let q5 = st.q.clone().upcast().reshape(&[b, hkv, n_rep, t, d]);
    let do5 = dout.reshape(&[b, hkv, n_rep, t, d]);
    let (k, v) = (st.k.clone().upcast(), st.v.clone().upcast());
    let mut dq = Prim::<B>::zeros(&[b, hkv, n_rep, t, d], &device, cd);
    let mut dk = Prim::<B>::zeros(&[b, hkv, s, d], &device, cd);
    let mut dv = Prim::<B>::zeros(&[b, hkv, s, d], &device, cd);
    let chunk = st.chunk.max(1);
    for t0 in (0..t).step_by(chunk) {
        let t1 = (t0 + chunk).min(t);
        let tc = t1 - t0;
        let rows = [0..b, 0..hkv, 0..n_rep, t0..t1, 0..d];
        let keys = [0..b, 0..hkv, 0..t1, 0..d];
        let stacked =
            |x: &Prim<B>, w: usize| x.slice(&[0..b, 0..hkv, 0..n_rep, t0..t1, 0..w]).reshape(&[b, hkv, n_rep * tc, w]);
        let (qc, doc, ddc) = (stacked(&q5, d), stacked(&do5, d), stacked(&dd, 1));
        let (kc, vc) = (k.slice(&keys), v.slice(&keys));
        let scores = qc.clone().matmul(kc.clone().swap_dims(2, 3)).mul_scalar(scale);
        let scores = scores.mask_fill(chunk_mask::<B>(&device, t0, t1, n_rep, b, hkv), f64::NEG_INFINITY);
        let m = scores.clone().max_dim(3);
        let lse = m.clone() + (scores.clone() - m).exp().sum_dim(3).log();
        let p = (scores - lse).exp(); // [B, Hkv, n_rep·tc, t1]
        let dp = doc.clone().matmul(vc.swap_dims(2, 3));
        let ds = p.clone() * (dp - ddc);
        let dv_c = p.swap_dims(2, 3).matmul(doc);
        let dk_c = ds.clone().swap_dims(2, 3).matmul(qc).mul_scalar(scale);
        let dq_c = ds.matmul(kc).mul_scalar(scale).reshape(&[b, hkv, n_rep, tc, d]);
        dq = dq.slice_assign(&rows, dq_c);
        dk = dk.clone().slice_assign(&keys, dk.slice(&keys) + dk_c);
        dv = dv.clone().slice_assign(&keys, dv.slice(&keys) + dv_c);
    }
    (dq.reshape(&[b, hq, t, d]).cast(st.q.dtype().into()), dk.cast(st.k.dtype().into()), dv.cast(st.v.dtype().into()))
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [pq, pk, pv] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if pq.is_none() && pk.is_none() && pv.is_none() {
            return;
        }
        let (dq, dk, dv) = backward::<B>(&ops.state, Prim(grad));
        for (parent, g) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g.0);
            }
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> CausalAttentionBackend for Autodiff<B, C> {
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let (q, gq) = q.into_parts();
        let (k, gk) = k.into_parts();
        let (v, gv) = v.into_parts();
        match AttentionBackward.prepare::<C>([gq, gk, gv]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let o = forward::<B>(q.clone(), k.clone(), v.clone());
                let state = AttentionState { q: Prim(q), k: Prim(k), v: Prim(v), o: Prim(o.clone()), chunk };
                prep.finish(state, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward::<B>(q, k, v)),
        }
    }
}

/// [`CausalAttentionBackend::causal_attention`] on tensors of any device this build supports
/// (see [`supported`](super::supported)).
///
/// # Shapes
/// `q [B, Hq, T, d]`, `k`, `v [B, Hkv, T, d]` (`Hkv` divides `Hq`) → `[B, Hq, T, d]`.
pub(crate) fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, chunk: usize) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as CausalAttentionBackend>::causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        chunk.max(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::causal_mask;
    use crate::ops::test_values as values;
    use burn::tensor::activation::softmax;
    use burn::tensor::{DType, Device, TensorCreationOptions, TensorData};

    fn tensor(shape: [usize; 4], seed: u64, dtype: DType, device: &Device) -> Tensor<4> {
        let n = shape.iter().product();
        Tensor::from_data(
            TensorData::new(values(n, seed, 1.5), shape),
            TensorCreationOptions::new(device.clone()).with_dtype(dtype),
        )
    }

    fn host(t: Tensor<4>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_into_vec::<f64>().unwrap()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// Materialised causal attention in burn tensor operations (keys and values repeated per
    /// query head, an additive mask, a softmax): what the decoder's materialised path computes.
    fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [b, hq, t, d] = q.dims();
        let hkv = k.dims()[1];
        let n_rep = hq / hkv;
        let repeat = |x: Tensor<4>| x.unsqueeze_dim::<5>(2).expand([b, hkv, n_rep, t, d]).reshape([b, hq, t, d]);
        let bias: Tensor<4> = Tensor::from_data(
            TensorData::new(
                causal_mask(1, t, |_, _| false).into_iter().map(f64::from).collect::<Vec<_>>(),
                [1, 1, t, t],
            ),
            TensorCreationOptions::new(q.device()).with_dtype(q.dtype()),
        );
        let scores = q.matmul(repeat(k).swap_dims(2, 3)).mul_scalar(1.0 / (d as f64).sqrt());
        softmax(scores + bias, 3).matmul(repeat(v))
    }

    /// Output, and the gradients of `Σ c ⊙ out` for q, k, v.
    fn run(
        f: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
        shapes: ([usize; 4], [usize; 4]),
        dtype: DType,
        device: &Device,
    ) -> [Vec<f64>; 4] {
        let q = tensor(shapes.0, 1, dtype, device).require_grad();
        let k = tensor(shapes.1, 2, dtype, device).require_grad();
        let v = tensor(shapes.1, 3, dtype, device).require_grad();
        let out = f(q.clone(), k.clone(), v.clone());
        let c = tensor(shapes.0, 4, dtype, device);
        let g = (out.clone() * c).sum().backward();
        [host(out), host(q.grad(&g).unwrap()), host(k.grad(&g).unwrap()), host(v.grad(&g).unwrap())]
    }

    /// The fused operation against the materialised path in f32: output and the three
    /// gradients, grouped-query (4 query heads over 2 key/value heads) and multi-head, for
    /// backward chunks of 1, 3 and 4 queries (not dividing T = 11), T and more than T.
    ///
    /// Tolerance 2e-6: inputs and outputs are O(1) and both paths compute in f32; they differ
    /// only in summation order (flex's attention kernel, the chunked backward's separate
    /// products), a few f32 ulps (1.2e-7 each) per accumulated term over at most T = 11 keys.
    #[test]
    fn matches_materialised_attention_in_f32() {
        let device = Device::flex().autodiff();
        for shapes in [([2, 4, 11, 8], [2, 2, 11, 8]), ([1, 3, 11, 4], [1, 3, 11, 4])] {
            let reference = run(reference, shapes, DType::F32, &device);
            for chunk in [1, 3, 4, 11, 32] {
                let fused = run(|q, k, v| causal_attention(q, k, v, chunk), shapes, DType::F32, &device);
                for (i, what) in ["output", "dq", "dk", "dv"].iter().enumerate() {
                    let d = max_abs_diff(&fused[i], &reference[i]);
                    assert!(d < 2e-6, "{shapes:?}, chunk {chunk}: {what} differs by {d}");
                }
            }
        }
    }

    /// In f64 the two paths agree to rounding (1e-12), so any error of the backward's algebra
    /// shows; plus central finite differences of the fused operation's own forward.
    #[test]
    fn matches_in_f64_and_finite_differences() {
        let device = Device::flex().autodiff();
        let shapes = ([1, 2, 5, 4], [1, 1, 5, 4]);
        let reference = run(reference, shapes, DType::F64, &device);
        let fused = run(|q, k, v| causal_attention(q, k, v, 2), shapes, DType::F64, &device);
        for i in 0..4 {
            let d = max_abs_diff(&fused[i], &reference[i]);
            assert!(d < 1e-12, "f64: part {i} differs by {d}");
        }
        // finite differences of Σ c ⊙ out with respect to every key entry
        let q = tensor(shapes.0, 1, DType::F64, &device);
        let v = tensor(shapes.1, 3, DType::F64, &device);
        let c = tensor(shapes.0, 4, DType::F64, &device);
        let kv = values(20, 2, 1.5);
        let objective = |k: &[f64]| {
            let k = Tensor::<4>::from_data(
                TensorData::new(k.to_vec(), shapes.1),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::F64),
            );
            let out = causal_attention(q.clone(), k, v.clone(), 2);
            (out * c.clone()).sum().into_data().convert::<f64>().try_into_vec::<f64>().unwrap()[0]
        };
        let eps = 1e-6;
        for i in 0..kv.len() {
            let (mut up, mut down) = (kv.clone(), kv.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (objective(&up) - objective(&down)) / (2.0 * eps);
            assert!((fd - fused[2][i]).abs() < 1e-7, "key {i}: backward {} vs finite difference {fd}", fused[2][i]);
        }
    }

    /// bf16 inputs: output and gradients in bf16, close to the f32 computation on the same
    /// (bf16-valued) inputs.
    #[test]
    fn bf16_inputs_give_bf16_outputs_and_gradients() {
        let device = Device::flex().autodiff();
        let shapes = ([1, 4, 9, 8], [1, 2, 9, 8]);
        let q = tensor(shapes.0, 1, DType::BF16, &device).require_grad();
        let k = tensor(shapes.1, 2, DType::BF16, &device).require_grad();
        let v = tensor(shapes.1, 3, DType::BF16, &device).require_grad();
        let out = causal_attention(q.clone(), k.clone(), v.clone(), 4);
        assert_eq!(out.dtype(), DType::BF16);
        let g = out.clone().sum().backward();
        for x in [&q, &k, &v] {
            assert_eq!(x.grad(&g).unwrap().dtype(), DType::BF16);
        }
        let up = |x: &Tensor<4>| x.clone().cast(burn::tensor::FloatDType::F32).detach();
        let reference = reference(up(&q), up(&k), up(&v));
        let d = max_abs_diff(&host(out), &host(reference));
        assert!(d < 2e-2, "bf16 output differs from f32 by {d}");
    }
}
