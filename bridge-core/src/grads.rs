//! One parameter group's gradient seen as a vector.
//!
//! burn's [`GradientsParams`] maps parameter ids to tensors of their own ranks; the bilevel step
//! needs to add, scale and compare whole gradients (equation (8) combines three of them).
//! [`FlatGradients`] holds each parameter's gradient flattened to rank 1 together with its shape,
//! keyed by [`ParamId`], and converts back to [`GradientsParams`] for an optimiser.

use crate::error::{BridgeError, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Tensor};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
struct FlatEntry {
    values: Tensor<1>,
    shape: Vec<usize>,
}

impl FlatEntry {
    /// The values in f32: bf16/f16 gradients are summed in f32, never in their own precision.
    fn f32(&self) -> Tensor<1> {
        self.values.clone().cast(burn::tensor::DType::F32)
    }
}

/// `Σ terms` (one-element tensors, f32), added in f64 on the host in order, with one read from the
/// device instead of one per term (each read is a GPU synchronisation).
fn sum_on_host(terms: Vec<Tensor<1>>) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    Tensor::cat(terms, 0).into_data().iter::<f32>().map(f64::from).sum()
}

/// The gradient of one parameter group (e.g. the adapter w), as a vector.
#[derive(Clone, Debug, Default)]
pub struct FlatGradients {
    entries: BTreeMap<ParamId, FlatEntry>,
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    out: &'a mut BTreeMap<ParamId, FlatEntry>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let shape = g.dims().to_vec();
            let n = shape.iter().product::<usize>();
            self.out.insert(param.id, FlatEntry { values: g.reshape([n]), shape });
        }
    }
}

struct Restore<'a> {
    entries: &'a BTreeMap<ParamId, FlatEntry>,
    out: GradientsParams,
}

impl ModuleVisitor for Restore<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(e) = self.entries.get(&param.id)
            && let Ok(dims) = <[usize; D]>::try_from(e.shape.as_slice())
        {
            self.out.register::<D>(param.id, e.values.clone().reshape(dims));
        }
    }
}

impl FlatGradients {
    /// The gradients in `grads` of the parameters of `module` (parameters without a gradient are
    /// left out).
    pub fn from_params<M: Module>(grads: &GradientsParams, module: &M) -> Self {
        let mut entries = BTreeMap::new();
        module.visit(&mut Collect { grads, out: &mut entries });
        Self { entries }
    }

    /// The gradients of `module`'s parameters taken out of a backward pass's `grads`.
    pub fn from_backward<M: Module>(grads: &mut Gradients, module: &M) -> Self {
        Self::from_params(&GradientsParams::from_module(grads, module), module)
    }

    /// Like [`Self::from_backward`], but every float parameter of `module` is present: those the
    /// loss does not reach get a zero gradient. Gradients of one group from different losses can
    /// then always be added.
    pub fn from_backward_dense<M: Module>(grads: &mut Gradients, module: &M) -> Self {
        struct Fill<'a> {
            out: &'a mut BTreeMap<ParamId, FlatEntry>,
        }
        impl ModuleVisitor for Fill<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.out.entry(param.id).or_insert_with(|| {
                    let value = param.val();
                    let shape = value.dims().to_vec();
                    let n = shape.iter().product::<usize>();
                    FlatEntry { values: Tensor::<1>::zeros([n], &value.device()), shape }
                });
            }
        }
        let mut g = Self::from_backward(grads, module);
        module.visit(&mut Fill { out: &mut g.entries });
        g
    }

    /// Converts back to [`GradientsParams`] for an optimiser step on `module`.
    pub fn to_gradients_params<M: Module>(&self, module: &M) -> GradientsParams {
        let mut restore = Restore { entries: &self.entries, out: GradientsParams::new() };
        module.visit(&mut restore);
        restore.out
    }

    /// The gradients in `module`'s parameter order, with whether each parameter has one (zeros
    /// stand in for those that do not): a layout that does not depend on parameter ids, so that
    /// ranks holding their own copies of a module can add their gradients
    /// ([`crate::Shard::all_reduce`]).
    pub fn ordered<M: Module>(&self, module: &M) -> (Vec<bool>, Vec<Tensor<1>>) {
        struct Order<'a> {
            entries: &'a BTreeMap<ParamId, FlatEntry>,
            present: Vec<bool>,
            out: Vec<Tensor<1>>,
        }
        impl ModuleVisitor for Order<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                match self.entries.get(&param.id) {
                    Some(e) => {
                        self.present.push(true);
                        self.out.push(e.values.clone());
                    }
                    None => {
                        let value = param.val();
                        let n = value.dims().iter().product::<usize>();
                        self.present.push(false);
                        self.out.push(Tensor::<1>::zeros([n], &value.device()).cast(value.dtype()));
                    }
                }
            }
        }
        let mut order = Order { entries: &self.entries, present: Vec::new(), out: Vec::new() };
        module.visit(&mut order);
        (order.present, order.out)
    }

    /// The inverse of [`Self::ordered`]: `values[i]` is the gradient of `module`'s `i`-th float
    /// parameter (`None`: no gradient), keyed by this module's parameter ids.
    pub fn from_ordered<M: Module>(values: Vec<Option<Tensor<1>>>, module: &M) -> Self {
        struct Keyed {
            values: std::vec::IntoIter<Option<Tensor<1>>>,
            out: BTreeMap<ParamId, FlatEntry>,
        }
        impl ModuleVisitor for Keyed {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(Some(values)) = self.values.next() {
                    let shape = param.val().dims().to_vec();
                    self.out.insert(param.id, FlatEntry { values, shape });
                }
            }
        }
        let mut keyed = Keyed { values: values.into_iter(), out: BTreeMap::new() };
        module.visit(&mut keyed);
        Self { entries: keyed.out }
    }

    /// Number of parameter tensors held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The parameter ids held, in order.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> + '_ {
        self.entries.keys().copied()
    }

    /// The flattened gradient of one parameter.
    pub fn get(&self, id: ParamId) -> Option<Tensor<1>> {
        self.entries.get(&id).map(|e| e.values.clone())
    }

    /// Total number of scalars.
    pub fn num_elements(&self) -> usize {
        self.entries.values().map(|e| e.shape.iter().product::<usize>()).sum()
    }

    fn check_same_ids(&self, other: &Self, op: &str) -> Result<()> {
        if self.entries.len() != other.entries.len()
            || self.entries.keys().zip(other.entries.keys()).any(|(a, b)| a != b)
        {
            return Err(BridgeError::InvalidInput(format!(
                "{op}: gradients cover different parameters ({} vs {} tensors)",
                self.entries.len(),
                other.entries.len()
            )));
        }
        Ok(())
    }

    /// `self · c`.
    pub fn scale(&self, c: f64) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|(id, e)| (*id, FlatEntry { values: e.values.clone().mul_scalar(c), shape: e.shape.clone() }))
            .collect();
        Self { entries }
    }

    /// `self + other`; both must cover the same parameters.
    pub fn add(&self, other: &Self) -> Result<Self> {
        self.check_same_ids(other, "add")?;
        let entries = self
            .entries
            .iter()
            .zip(other.entries.values())
            .map(|((id, a), b)| {
                (*id, FlatEntry { values: a.values.clone() + b.values.clone(), shape: a.shape.clone() })
            })
            .collect();
        Ok(Self { entries })
    }

    /// `Σ cᵢ·gᵢ` over `terms` (at least one); all must cover the same parameters.
    pub fn linear_combination(terms: &[(f64, &FlatGradients)]) -> Result<Self> {
        let ((c0, g0), rest) =
            terms.split_first().ok_or_else(|| BridgeError::InvalidInput("linear_combination of no terms".into()))?;
        let mut acc = g0.scale(*c0);
        for (c, g) in rest {
            acc = acc.add(&g.scale(*c))?;
        }
        Ok(acc)
    }

    /// The inner product `⟨self, other⟩`.
    pub fn dot(&self, other: &Self) -> Result<f64> {
        self.check_same_ids(other, "dot")?;
        let terms = self.entries.values().zip(other.entries.values()).map(|(a, b)| (a.f32() * b.f32()).sum());
        Ok(sum_on_host(terms.collect()))
    }

    /// The Euclidean norm.
    pub fn norm(&self) -> f64 {
        sum_on_host(self.entries.values().map(|e| e.f32().square().sum()).collect()).sqrt()
    }

    /// Rescales to Euclidean norm at most `max_norm` (global-norm clipping, as `max_grad_norm` in
    /// TRL/verl); returns the clipped gradients and the norm before clipping.
    pub fn clip_norm(&self, max_norm: f64) -> (Self, f64) {
        let norm = self.norm();
        if norm > max_norm && norm.is_finite() { (self.scale(max_norm / norm), norm) } else { (self.clone(), norm) }
    }

    /// Detaches every tensor from the autodiff graph.
    pub fn detach(self) -> Self {
        let entries = self
            .entries
            .into_iter()
            .map(|(id, e)| (id, FlatEntry { values: e.values.detach(), shape: e.shape }))
            .collect();
        Self { entries }
    }
}

/// A copy of `module` whose parameters are new leaves with *new* ids.
///
/// `module.clone()` shares parameter ids with the original, so gradients and optimiser states of
/// the two would be confused. BRIDGE's RL-only base θ̂ starts as such an independent copy of θ₀.
pub fn independent_copy<M: Module>(module: &M) -> M {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            Param::from_tensor(param.val().detach())
        }
    }
    module.clone().map(&mut Fresh)
}

/// Moves `module` along `direction` by `scale`, without an optimiser: `p ← p + scale·d`.
///
/// Used for reference computations (plain gradient steps written as in the paper).
pub fn step_along<M: Module>(module: M, direction: &FlatGradients, scale: f64) -> M {
    struct Step<'a> {
        d: &'a FlatGradients,
        scale: f64,
    }
    impl ModuleMapper for Step<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.d.entries.get(&param.id) {
                Some(e) => {
                    let dims: [usize; D] = param.val().dims();
                    let delta = e.values.clone().reshape(dims).mul_scalar(self.scale);
                    let id = param.id;
                    Param::initialized(id, (param.val() + delta).detach().require_grad())
                }
                None => param,
            }
        }
    }
    module.map(&mut Step { d: direction, scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use burn::module::Module;
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
    }

    fn two(device: &Device) -> Two {
        Two {
            a: Param::from_tensor(Tensor::from_floats([[1.0, 2.0], [3.0, 4.0]], device)),
            b: Param::from_tensor(Tensor::from_floats([0.5, -1.0, 2.0], device)),
        }
    }

    #[test]
    fn round_trip_and_vector_algebra() {
        let device = Device::flex().autodiff();
        let m = two(&device);
        // L = Σ a² + 3 Σ b  →  ∂L/∂a = 2a, ∂L/∂b = 3
        let loss = m.a.val().square().sum() + m.b.val().sum().mul_scalar(3.0);
        let mut grads = loss.backward();
        let g = FlatGradients::from_backward(&mut grads, &m);
        assert_eq!(g.len(), 2);
        assert_eq!(g.num_elements(), 7);
        assert_relative_eq!(g.norm(), (4.0f64 + 16.0 + 36.0 + 64.0 + 27.0).sqrt(), epsilon = 1e-5);
        let h = g.scale(-2.0);
        assert_relative_eq!(g.dot(&h).unwrap(), -2.0 * (4.0 + 16.0 + 36.0 + 64.0 + 27.0), epsilon = 1e-4);
        let sum = FlatGradients::linear_combination(&[(1.0, &g), (0.5, &h)]).unwrap();
        assert!(sum.norm() < 1e-6, "g + 0.5·(−2g) = 0");
        let (clipped, before) = g.clip_norm(1.0);
        assert_relative_eq!(before, g.norm());
        assert_relative_eq!(clipped.norm(), 1.0, epsilon = 1e-5);
        assert_relative_eq!(g.clip_norm(1e6).0.norm(), g.norm(), epsilon = 1e-6);
        let back = g.to_gradients_params(&m);
        let ga: Tensor<2> = back.get::<2>(m.a.id).unwrap();
        assert_eq!(ga.dims(), [2, 2]);
        let v: Vec<f32> = ga.into_data().try_to_vec().unwrap();
        assert_eq!(v, vec![2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn independent_copies_have_their_own_ids_and_gradients() {
        let device = Device::flex().autodiff();
        let m = two(&device);
        let c = independent_copy(&m);
        assert_ne!(m.a.id, c.a.id);
        let loss = m.a.val().sum() + c.a.val().sum().mul_scalar(2.0);
        let mut grads = loss.backward();
        let gm = FlatGradients::from_backward(&mut grads, &m);
        let gc = FlatGradients::from_backward(&mut grads, &c);
        assert_relative_eq!(gm.norm(), 2.0, epsilon = 1e-6); // four ones
        assert_relative_eq!(gc.norm(), 4.0, epsilon = 1e-6); // four twos
        let moved = step_along(c, &gc, -0.5);
        let v: Vec<f32> = moved.a.val().into_data().try_to_vec().unwrap();
        assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn dense_gradients_fill_unreached_parameters_with_zeros() {
        let device = Device::flex().autodiff();
        let m = two(&device);
        let mut grads = m.a.val().sum().backward();
        let dense = FlatGradients::from_backward_dense(&mut grads, &m);
        assert_eq!(dense.len(), 2);
        let b: Vec<f32> = dense.get(m.b.id).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(b, vec![0.0; 3]);
        let mut grads = (m.a.val().sum() + m.b.val().sum()).backward();
        let full = FlatGradients::from_backward(&mut grads, &m);
        assert!(dense.add(&full).is_ok());
    }

    #[test]
    fn mismatched_groups_are_an_error() {
        let device = Device::flex().autodiff();
        let m = two(&device);
        let mut grads = m.a.val().sum().backward();
        let only_a = FlatGradients::from_backward(&mut grads, &m);
        let mut grads = (m.a.val().sum() + m.b.val().sum()).backward();
        let both = FlatGradients::from_backward(&mut grads, &m);
        assert_eq!(only_a.len(), 1);
        assert!(only_a.add(&both).is_err());
        assert!(only_a.dot(&both).is_err());
        assert!(FlatGradients::linear_combination(&[]).is_err());
    }
}
