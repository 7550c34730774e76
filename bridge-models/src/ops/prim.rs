//! A typed handle over one backend's float tensor primitive, so that the custom operations of
//! this module read as tensor code although they run below burn's `Tensor` API (on the inner
//! backend of an autodiff device, inside a backward step).
//!
//! Every method is one backend operation (or none). Binary operations broadcast like burn's own
//! tensors (the backends broadcast size-1 dimensions, which `attention_fallback` relies on too).

use burn::backend::tensor::{BoolTensor, FloatTensor, IntTensor};
use burn::backend::{Backend, DType, FloatDType, Scalar, Shape, Slice, TensorMetadata, get_or_init_device_settings};
use std::ops::Range;

/// A float tensor of backend `B`.
#[derive(Debug)]
pub(crate) struct Prim<B: Backend>(pub(crate) FloatTensor<B>);

impl<B: Backend> Clone for Prim<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// `ranges` as burn slices.
fn slices(ranges: &[Range<usize>]) -> Vec<Slice> {
    ranges.iter().cloned().map(Slice::from).collect()
}

/// The dtype the operations compute in for inputs of `dtype`: f32 for the half dtypes (as
/// `upcast_half` in the forward), the input's own otherwise (f64 stays f64 for gradient checks).
pub(crate) fn compute_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

impl<B: Backend> Prim<B> {
    pub(crate) fn dims(&self) -> Vec<usize> {
        self.0.shape().to_vec()
    }

    pub(crate) fn dtype(&self) -> DType {
        self.0.dtype()
    }

    pub(crate) fn device(&self) -> B::Device {
        self.0.device()
    }

    /// Zeros of `shape` in `dtype`.
    pub(crate) fn zeros(shape: &[usize], device: &B::Device, dtype: FloatDType) -> Self {
        Self(B::float_zeros(Shape::from(shape.to_vec()), device, dtype))
    }

    /// `self` in `dtype` (no operation when it already is).
    pub(crate) fn cast(self, dtype: FloatDType) -> Self {
        if self.dtype() == DType::from(dtype) { self } else { Self(B::float_cast(self.0, dtype)) }
    }

    /// `self` in its compute dtype ([`compute_dtype`]).
    pub(crate) fn upcast(self) -> Self {
        let dtype = compute_dtype(self.dtype());
        self.cast(dtype)
    }

    pub(crate) fn slice(&self, ranges: &[Range<usize>]) -> Self {
        Self(B::float_slice(self.0.clone(), &slices(ranges)))
    }

    /// `self` with `value` written over `ranges` (in place where the backend can).
    pub(crate) fn slice_assign(self, ranges: &[Range<usize>], value: Self) -> Self {
        Self(B::float_slice_assign(self.0, &slices(ranges), value.0))
    }

    pub(crate) fn reshape(self, dims: &[usize]) -> Self {
        Self(B::float_reshape(self.0, Shape::from(dims.to_vec())))
    }

    pub(crate) fn swap_dims(self, a: usize, b: usize) -> Self {
        Self(B::float_swap_dims(self.0, a, b))
    }

    pub(crate) fn expand(self, dims: &[usize]) -> Self {
        Self(B::float_expand(self.0, Shape::from(dims.to_vec())))
    }

    pub(crate) fn matmul(self, rhs: Self) -> Self {
        Self(B::float_matmul(self.0, rhs.0))
    }

    pub(crate) fn exp(self) -> Self {
        Self(B::float_exp(self.0))
    }

    pub(crate) fn log(self) -> Self {
        Self(B::float_log(self.0))
    }

    pub(crate) fn mul_scalar(self, s: f64) -> Self {
        Self(B::float_mul_scalar(self.0, Scalar::from(s)))
    }

    /// Maximum over `dim`, kept as a size-1 dimension.
    pub(crate) fn max_dim(self, dim: usize) -> Self {
        Self(B::float_max_dim(self.0, dim))
    }

    /// Sum over `dim`, kept as a size-1 dimension.
    pub(crate) fn sum_dim(self, dim: usize) -> Self {
        Self(B::float_sum_dim(self.0, dim))
    }

    /// `self[.., indices[..], ..]` along `dim` (`indices` has `self`'s rank).
    pub(crate) fn gather(self, dim: usize, indices: IntTensor<B>) -> Self {
        Self(B::float_gather(dim, self.0, indices))
    }

    /// `value` where `mask` is true, `self` elsewhere.
    pub(crate) fn mask_fill(self, mask: BoolTensor<B>, value: f64) -> Self {
        Self(B::float_mask_fill(self.0, mask, Scalar::from(value)))
    }

    pub(crate) fn cat(parts: Vec<Self>, dim: usize) -> Self {
        Self(B::float_cat(parts.into_iter().map(|p| p.0).collect(), dim))
    }
}

impl<B: Backend> std::ops::Add for Prim<B> {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(B::float_add(self.0, rhs.0))
    }
}

impl<B: Backend> std::ops::Sub for Prim<B> {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(B::float_sub(self.0, rhs.0))
    }
}

impl<B: Backend> std::ops::Mul for Prim<B> {
    type Output = Self;
    fn mul(self, rhs: Self) -> Self {
        Self(B::float_mul(self.0, rhs.0))
    }
}

impl<B: Backend> std::ops::Div for Prim<B> {
    type Output = Self;
    fn div(self, rhs: Self) -> Self {
        Self(B::float_div(self.0, rhs.0))
    }
}

/// `0..n` as an int tensor `[n]` on `device` plus `offset`.
pub(crate) fn arange<B: Backend>(range: Range<usize>, device: &B::Device) -> IntTensor<B> {
    let int = get_or_init_device_settings::<B>(device).int_dtype;
    B::int_arange(range.start as i64..range.end as i64, device, int)
}

/// `lhs == rhs` element-wise (broadcasting), as a bool tensor.
pub(crate) fn int_equal<B: Backend>(lhs: IntTensor<B>, rhs: IntTensor<B>) -> BoolTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&lhs.device()).bool_dtype;
    B::int_equal(lhs, rhs, bool_dtype)
}

/// `lhs > rhs` element-wise (broadcasting), as a bool tensor.
pub(crate) fn int_greater<B: Backend>(lhs: IntTensor<B>, rhs: IntTensor<B>) -> BoolTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&lhs.device()).bool_dtype;
    B::int_greater(lhs, rhs, bool_dtype)
}

/// A bool tensor as 0/1 floats of `dtype`.
pub(crate) fn bool_float<B: Backend>(mask: BoolTensor<B>, dtype: FloatDType) -> Prim<B> {
    Prim(B::bool_into_float(mask, dtype))
}
