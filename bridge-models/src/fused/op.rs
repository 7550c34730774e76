//! The fused engine as a burn backend extension: a forward on `flex`, and on `Autodiff<flex>`
//! the same forward plus one graph node whose backward is [`backward`].

use super::backward::backward;
use super::forward::{Saved, forward};
use super::layout::FusedCall;
use super::pool;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};
use std::sync::Arc;

/// The flex tensor primitive.
type FlexTensor = FloatTensor<Flex>;

/// The fused operation: `params [P] → logprobs [B·(T−1)]` (followed by the entropies
/// `[B·(T−1)]` when the call asks for them).
#[backend_extension(Flex, Autodiff)]
pub trait FusedScoringBackend: Backend {
    /// The per-target log-probabilities of `call`'s batch under the flat parameters `params`.
    fn fused_token_logprobs(params: FloatTensor<Self>, call: Arc<FusedCall>) -> FloatTensor<Self>;
}

/// The values of a flex tensor, row-major (a view when it is contiguous f32, else a copy).
fn host_values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(
            t.to_contiguous().into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default(),
        ),
    }
}

fn flex_tensor(values: Vec<f32>) -> FlexTensor {
    let n = values.len();
    FlexTensor::from_data(TensorData::new(values, [n]))
}

/// Runs `f` on one of rayon's threads, so that the parallel loops inside it fork from a worker
/// (the caller blocks once, instead of once per loop).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() { f() } else { rayon::join(f, || ()).0 }
}

/// The forward: `logprobs`, followed by the entropies when `call` asks for them.
fn run_forward(params: &[f32], call: &FusedCall, save: bool) -> (FlexTensor, Option<Saved>) {
    let out = in_pool(|| forward(params, &call.layout, &call.plan, call.with_entropy, save));
    let mut values = out.logprobs;
    if let Some(e) = out.entropy {
        values.extend_from_slice(&e);
        pool::give(e);
    }
    (flex_tensor(values), out.saved)
}

impl FusedScoringBackend for Flex {
    fn fused_token_logprobs(params: FlexTensor, call: Arc<FusedCall>) -> FlexTensor {
        run_forward(&host_values(&params), &call, false).0
    }
}

/// What the backward step keeps: the parameters, the activations and the call.
#[derive(Clone)]
struct FusedState {
    params: FlexTensor,
    saved: Arc<Saved>,
    call: Arc<FusedCall>,
}

impl std::fmt::Debug for FusedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedState").field("params", &self.call.layout.total).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct FusedBackward;

impl Backward<Flex, 1> for FusedBackward {
    type State = FusedState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let state = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = host_values(&grad);
            let (dlogprobs, dentropy) = if state.call.with_entropy {
                let (a, b) = grad.split_at(grad.len() / 2);
                (a, Some(b))
            } else {
                (&grad[..], None)
            };
            let params = host_values(&state.params);
            let call = &state.call;
            flex_tensor(in_pool(|| backward(&params, &call.layout, &call.plan, &state.saved, dlogprobs, dentropy)))
        });
        // The activations go back to the pool unless a clone of the state is still alive.
        if let Ok(saved) = Arc::try_unwrap(state.saved) {
            saved.recycle();
        }
    }
}

impl<C: CheckpointStrategy> FusedScoringBackend for Autodiff<Flex, C> {
    fn fused_token_logprobs(params: FloatTensor<Self>, call: Arc<FusedCall>) -> FloatTensor<Self> {
        let (primitive, guard) = params.into_parts();
        match FusedBackward.prepare::<C>([guard]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, saved) = run_forward(&host_values(&primitive), &call, true);
                let saved = Arc::new(saved.unwrap_or_else(|| unreachable!("the forward saves when asked to")));
                prep.finish(FusedState { params: primitive, saved, call }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run_forward(&host_values(&primitive), &call, false).0),
        }
    }
}

/// [`FusedScoringBackend::fused_token_logprobs`] on a tensor of any (flex) device.
pub(crate) fn fused_token_logprobs(params: Tensor<1>, call: Arc<FusedCall>) -> Tensor<1> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedScoringBackend>::fused_token_logprobs(
        params.into_dispatch(),
        call,
    ))
}
