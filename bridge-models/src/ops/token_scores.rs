//! Token log-probabilities and entropies under `log_softmax(logits)`, computed over the
//! vocabulary in chunks: the `[N, V]` log-softmax (and its f32 copy of half-precision logits) is
//! never materialised.
//!
//! For each row `n` with logits `x[n, ·]` and target `y[n]`:
//!
//! ```text
//! m = max_j x_j,   s = Σ_j exp(x_j − m),   lse = m + log s
//! logp = x_y − lse
//! H    = −Σ_j p_j log p_j = log s − Σ_j exp(x_j − m)(x_j − m) / s        (p = softmax(x))
//! ```
//!
//! The forward makes two passes over the vocabulary, one chunk of columns at a time: the row
//! maxima, then the sums (`s`, and for the entropy `Σ e·u`). It keeps `lse` and `H` per row, and
//! the logits themselves (one `[N, V]` tensor in their own dtype, which the head's matmul
//! produced anyway). The backward recomputes the softmax chunk by chunk:
//!
//! ```text
//! ∂logp/∂x_j = δ_jy − p_j          ∂H/∂x_j = −p_j (log p_j + H)
//! ∂L/∂x_j = g_lp (δ_jy − p_j) − g_H p_j (log p_j + H)
//! ```
//!
//! and writes each chunk of `∂L/∂x` (in the logits' dtype, rounded once from f32) into place.
//! Everything is burn tensor operations of the backend it runs on, so it works on every backend;
//! only the autodiff node is custom. Arithmetic is in f32 for f32/bf16/f16 logits, in f64 for f64
//! logits (gradient checks).

use super::prim::{Prim, arange, bool_float, compute_dtype, int_equal};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Shape, backend_extension};
use burn::tensor::{Int, Tensor};
use std::ops::Range;

/// Token scores as a backend operation: `logits [N, V]`, `targets [N]` → `[K, N]`, row 0 the
/// log-probability of each row's target, row 1 (when `with_entropy`; `K = 2`) the entropy of
/// the row's distribution. `chunk` is the number of vocabulary columns processed at once.
#[backend_extension(Flex: cfg(feature = "flex"), Cube: cfg(feature = "cuda"), Autodiff)]
pub trait TokenScoresBackend: Backend {
    /// See the trait.
    fn chunked_token_scores(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
        with_entropy: bool,
    ) -> FloatTensor<Self> {
        forward::<Self>(&Prim(logits), targets, chunk, with_entropy).out.0
    }
}

#[cfg(feature = "flex")]
impl TokenScoresBackend for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl TokenScoresBackend for burn::backend::Cube {}

/// The column ranges of `v` columns in chunks of `chunk` (the last one shorter).
fn chunks(v: usize, chunk: usize) -> Vec<Range<usize>> {
    let chunk = chunk.max(1);
    (0..v).step_by(chunk).map(|a| a..(a + chunk).min(v)).collect()
}

/// What the forward computes.
struct Forward<B: Backend> {
    /// `[K, N]` in the compute dtype.
    out: Prim<B>,
    /// `[N, 1]`: the log-partition of each row.
    lse: Prim<B>,
    /// `[N, 1]`: the entropy of each row (when asked for).
    entropy: Option<Prim<B>>,
}

fn forward<B: Backend>(logits: &Prim<B>, targets: IntTensor<B>, chunk: usize, with_entropy: bool) -> Forward<B> {
    let [n, v] = <[usize; 2]>::try_from(logits.dims()).unwrap_or_else(|d| unreachable!("logits of rank {}", d.len()));
    let ranges = chunks(v, chunk);
    let cols = |r: &Range<usize>| logits.slice(&[0..n, r.clone()]).upcast();
    // pass 1: the row maxima
    let mut maxima: Vec<Prim<B>> = ranges.iter().map(|r| cols(r).max_dim(1)).collect();
    let m = if maxima.len() == 1 { maxima.remove(0) } else { Prim::cat(maxima, 1).max_dim(1) }; // [N, 1]
    // pass 2: Σ exp(x − m) and, for the entropy, Σ exp(x − m)(x − m)
    let (mut s, mut t): (Option<Prim<B>>, Option<Prim<B>>) = (None, None);
    for r in &ranges {
        let u = cols(r) - m.clone();
        let e = u.clone().exp();
        if with_entropy {
            let eu = (e.clone() * u).sum_dim(1);
            t = Some(match t {
                Some(t) => t + eu,
                None => eu,
            });
        }
        let se = e.sum_dim(1);
        s = Some(match s {
            Some(s) => s + se,
            None => se,
        });
    }
    let s = s.unwrap_or_else(|| unreachable!("at least one chunk: V ≥ 1"));
    let log_s = s.clone().log();
    let lse = m + log_s.clone();
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let logp = logits.clone().gather(1, targets).upcast() - lse.clone(); // [N, 1]
    let entropy = t.map(|t| log_s - t / s);
    let out = match &entropy {
        Some(h) => Prim::cat(vec![logp.reshape(&[1, n]), h.clone().reshape(&[1, n])], 0),
        None => logp.reshape(&[1, n]),
    };
    Forward { out, lse, entropy }
}

/// `∂L/∂logits [N, V]` in the logits' dtype, from `grad [K, N]` (the gradient of the output).
fn backward<B: Backend>(state: &ScoresState<B>, grad: Prim<B>) -> Prim<B> {
    let logits = Prim::<B>(state.logits.clone());
    let [n, v] = <[usize; 2]>::try_from(logits.dims()).unwrap_or_else(|d| unreachable!("logits of rank {}", d.len()));
    let dtype = logits.dtype();
    let cdtype = compute_dtype(dtype);
    let grad = grad.cast(cdtype);
    let g_lp = grad.slice(&[0..1, 0..n]).reshape(&[n, 1]);
    let g_h = state.entropy.as_ref().map(|h| (grad.slice(&[1..2, 0..n]).reshape(&[n, 1]), h.clone()));
    let device = logits.device();
    let targets = B::int_reshape(state.targets.clone(), Shape::new([n, 1]));
    let ranges = chunks(v, state.chunk);
    let single = ranges.len() == 1;
    let mut out = (!single).then(|| Prim::<B>::zeros(&[n, v], &device, dtype.into()));
    for r in ranges {
        let c = r.len();
        let lp = logits.slice(&[0..n, r.clone()]).upcast() - state.lse.clone(); // log p, [N, c]
        let p = lp.clone().exp();
        let coef = match &g_h {
            Some((g_h, h)) => g_lp.clone() + g_h.clone() * (lp + h.clone()),
            None => g_lp.clone(),
        };
        let ids =
            B::int_expand(B::int_reshape(arange::<B>(r.clone(), &device), Shape::new([1, c])), Shape::new([n, c]));
        let hit = int_equal::<B>(B::int_expand(targets.clone(), Shape::new([n, c])), ids);
        let d = bool_float::<B>(hit, cdtype) * g_lp.clone() - p * coef;
        let d = d.cast(dtype.into());
        out = Some(match out {
            Some(o) => o.slice_assign(&[0..n, r], d),
            None => d,
        });
    }
    out.unwrap_or_else(|| unreachable!("at least one chunk: V ≥ 1"))
}

/// What the backward step keeps: the logits, the targets, and per row the log-partition and
/// the entropy.
#[derive(Clone, Debug)]
struct ScoresState<B: Backend> {
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: Prim<B>,
    entropy: Option<Prim<B>>,
    chunk: usize,
}

#[derive(Debug)]
struct ScoresBackward;

impl<B: Backend> Backward<B, 1> for ScoresBackward {
    type State = ScoresState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let state = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| backward::<B>(&state, Prim(grad)).0);
    }
}

impl<B: Backend, C: CheckpointStrategy> TokenScoresBackend for Autodiff<B, C> {
    fn chunked_token_scores(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
        with_entropy: bool,
    ) -> FloatTensor<Self> {
        let (logits, guard) = logits.into_parts();
        match ScoresBackward.prepare::<C>([guard]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let f = forward::<B>(&Prim(logits.clone()), targets.clone(), chunk, with_entropy);
                let state = ScoresState { logits, targets, lse: f.lse, entropy: f.entropy, chunk };
                prep.finish(state, f.out.0)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward::<B>(&Prim(logits), targets, chunk, with_entropy).out.0),
        }
    }
}

/// [`TokenScoresBackend::chunked_token_scores`] on tensors of any device this build supports
/// (see [`supported`](super::supported)).
///
/// # Shapes
/// `logits [N, V]`, `targets [N]` → `[1 or 2, N]` (log-probabilities, then entropies).
pub(crate) fn chunked_token_scores(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
    with_entropy: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(<burn::backend::Dispatch as TokenScoresBackend>::chunked_token_scores(
        logits.into_dispatch(),
        targets.into_dispatch(),
        chunk.max(1),
        with_entropy,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::log_softmax_scores;
    use crate::ops::test_values as values;
    use burn::tensor::{DType, Device, FloatDType, TensorCreationOptions, TensorData};

    fn f32_tensor<const D: usize>(v: Vec<f64>, shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), shape), device)
    }

    fn host(t: Tensor<2>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_into_vec::<f64>().unwrap()
    }

    fn targets(n: usize, v: usize, device: &Device) -> Tensor<1, Int> {
        let t: Vec<i64> = (0..n).map(|i| ((i * 7 + 3) % v) as i64).collect();
        Tensor::from_data(TensorData::new(t, [n]), device)
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// `Σ c·logp + Σ e·H` with fixed weights (every row's gradient differs).
    fn loss(logp: Tensor<2>, entropy: Option<Tensor<2>>, device: &Device) -> Tensor<1> {
        let n = logp.dims()[1];
        let c = f32_tensor(values(n, 11, 1.0), [1, n], device);
        let e = f32_tensor(values(n, 12, 1.0), [1, n], device);
        let l = (logp * c).sum();
        match entropy {
            Some(h) => l + (h * e).sum(),
            None => l,
        }
    }

    /// The chunked operation against the f32 log-softmax path: values and the gradient of the
    /// logits, with and without the entropy, for chunk sizes that do (1, 37) and do not (5, 8)
    /// divide V = 37, and one larger than V.
    #[test]
    fn matches_the_log_softmax_path() {
        let device = Device::flex().autodiff();
        let (n, v) = (9, 37);
        // logits up to ±8: a peaked softmax, so that the maxima matter
        let x = values(n * v, 3, 8.0);
        for with_entropy in [false, true] {
            let leaf = f32_tensor(x.clone(), [n, v], &device).require_grad();
            let (lp, h) = log_softmax_scores(
                leaf.clone().reshape([1, n, v]),
                targets(n, v, &device).reshape([1, n]),
                with_entropy,
            );
            let g = loss(lp.clone(), h.clone(), &device).backward();
            let g_ref = host(leaf.grad(&g).unwrap());
            let (lp_ref, h_ref) = (host(lp), h.map(host));
            for chunk in [1, 5, 8, 37, 100] {
                let leaf = f32_tensor(x.clone(), [n, v], &device).require_grad();
                let out = chunked_token_scores(leaf.clone(), targets(n, v, &device), chunk, with_entropy);
                assert_eq!(out.dims(), [if with_entropy { 2 } else { 1 }, n]);
                let lp = out.clone().slice([0..1, 0..n]);
                let h = with_entropy.then(|| out.slice([1..2, 0..n]));
                let d_lp = max_abs_diff(&host(lp.clone()), &lp_ref);
                assert!(d_lp < 2e-6, "chunk {chunk}: log-probs differ by {d_lp}");
                if let (Some(h), Some(h_ref)) = (&h, &h_ref) {
                    let d_h = max_abs_diff(&host(h.clone()), h_ref);
                    assert!(d_h < 2e-6, "chunk {chunk}: entropies differ by {d_h}");
                }
                let g = loss(lp, h, &device).backward();
                let grad = host(leaf.grad(&g).unwrap());
                let d_g = max_abs_diff(&grad, &g_ref);
                assert!(d_g < 1e-6, "chunk {chunk}, entropy {with_entropy}: gradients differ by {d_g}");
            }
        }
    }

    /// bf16 logits: the scores are f32 (as the log-softmax path's), the gradient is bf16, and
    /// both agree with the f32 path on the same (bf16-valued) logits up to bf16 rounding.
    #[test]
    fn bf16_logits_give_f32_scores_and_bf16_gradients() {
        let device = Device::flex().autodiff();
        let (n, v) = (6, 29);
        let x = f32_tensor(values(n * v, 5, 6.0), [n, v], &device).cast(FloatDType::BF16);
        let leaf = x.clone().detach().require_grad();
        let out = chunked_token_scores(leaf.clone(), targets(n, v, &device), 4, true);
        assert_eq!(out.dtype(), DType::F32);
        let g = loss(out.clone().slice([0..1, 0..n]), Some(out.clone().slice([1..2, 0..n])), &device).backward();
        let grad = leaf.grad(&g).unwrap();
        assert_eq!(grad.dtype(), DType::BF16);
        let leaf32 = x.cast(FloatDType::F32).detach().require_grad();
        let (lp, h) =
            log_softmax_scores(leaf32.clone().reshape([1, n, v]), targets(n, v, &device).reshape([1, n]), true);
        assert!(max_abs_diff(&host(out.clone().slice([0..1, 0..n])), &host(lp.clone())) < 2e-6);
        assert!(max_abs_diff(&host(out.slice([1..2, 0..n])), &host(h.clone().unwrap())) < 2e-6);
        let g32 = loss(lp, h, &device).backward();
        let g_ref = host(leaf32.grad(&g32).unwrap());
        // one bf16 rounding of an f32 value: relative error ≤ 2⁻⁸ (plus f32 noise near zero)
        for (a, b) in host(grad).iter().zip(&g_ref) {
            assert!((a - b).abs() <= b.abs() / 256.0 + 1e-6, "bf16 gradient {a} vs f32 {b}");
        }
    }

    /// The backward against central finite differences of the forward, in f64 (a tiny case; one
    /// chunk size that divides V and one that does not).
    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let (n, v) = (3, 7);
        let x = values(n * v, 9, 3.0);
        let w_lp = values(n, 21, 1.0);
        let w_h = values(n, 22, 1.0);
        let f64_tensor = |x: Vec<f64>, shape: [usize; 2]| {
            Tensor::<2>::from_data(
                TensorData::new(x, shape),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::F64),
            )
        };
        for chunk in [3, 7] {
            let objective = |x: &[f64]| -> (f64, Option<Vec<f64>>) {
                let leaf = f64_tensor(x.to_vec(), [n, v]).require_grad();
                assert_eq!(leaf.dtype(), DType::F64);
                let out = chunked_token_scores(leaf.clone(), targets(n, v, &device), chunk, true);
                let weights = f64_tensor([w_lp.clone(), w_h.clone()].concat(), [2, n]);
                let l = (out * weights).sum();
                let value = l.clone().into_data().convert::<f64>().try_into_vec::<f64>().unwrap()[0];
                let g = l.backward();
                (value, leaf.grad(&g).map(host))
            };
            let grad = objective(&x).1.unwrap();
            let eps = 1e-6;
            for i in 0..n * v {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += eps;
                down[i] -= eps;
                let fd = (objective(&up).0 - objective(&down).0) / (2.0 * eps);
                assert!(
                    (fd - grad[i]).abs() < 1e-7,
                    "chunk {chunk}, logit {i}: backward {} vs finite difference {fd}",
                    grad[i]
                );
            }
        }
    }
}
