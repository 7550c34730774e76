//! The dtype of a model's weights, as configs and command lines name it ([`WeightDType`]), the
//! cast of a whole module to one dtype, and what the forward computes in which precision.
//!
//! # Precision
//! The weights are f32 by default; [`DecoderWeights::cast`] (and [`LoraAdapter::cast`]) convert
//! them to another float dtype, typically bf16 on the GPU. The tensor forward then follows
//! `transformers`' mixed precision exactly where it matters: activations, projections, rotary
//! embedding and SiLU run in the weights' dtype; RMSNorm computes its statistic in f32 and casts
//! back before the scale (`weight * x.to(input_dtype)`); attention scores are upcast to f32 for
//! the mask and the softmax (`softmax(..., dtype=float32).to(q.dtype)`); a projection's product
//! and bias are summed in f32 and rounded once (`addmm`), SiLU and products with a scalar are
//! computed in f32 and rounded once; the logits returned by
//! [`Decoder::forward_logits`](crate::Decoder::forward_logits) and every log-probability are
//! f32. The CPU engines (fused training, host decoding) run f32 weights only.
//!
//! [`DecoderWeights::cast`]: crate::DecoderWeights::cast
//! [`LoraAdapter::cast`]: crate::LoraAdapter::cast

use bridge_core::{BridgeError, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A float dtype for weights: `"f32"` (alias `"float32"`), `"bf16"` (`"bfloat16"`) or `"f16"`
/// (`"float16"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum WeightDType {
    /// 32-bit floats (training, CPU).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl WeightDType {
    /// The burn dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16 => FloatDType::BF16,
            Self::F16 => FloatDType::F16,
        }
    }
}

impl FromStr for WeightDType {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(Self::F16),
            _ => Err(BridgeError::config("dtype", format!("unknown dtype `{s}` (expected f32, bf16 or f16)"))),
        }
    }
}

impl TryFrom<String> for WeightDType {
    type Error = BridgeError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<WeightDType> for String {
    fn from(d: WeightDType) -> String {
        d.to_string()
    }
}

impl fmt::Display for WeightDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// How a model is trained: in which dtype its weights are stored and updated, and in which the
/// forward and backward passes compute. Configs name it `"f32"`, `"bf16"` or `"mixed_bf16"`
/// (alias `"mixed"`).
///
/// | precision | weights (and AdamW state) | forward and backward |
/// |---|---|---|
/// | `f32` | f32 | f32 |
/// | `bf16` | bf16 ("pure bf16": no f32 copy anywhere) | bf16 |
/// | `mixed_bf16` | f32 master weights, f32 AdamW state | bf16, on a cast of the weights |
///
/// `mixed_bf16` is what PyTorch users run (`torch.autocast(dtype=torch.bfloat16)` over f32
/// parameters): every call casts θ (and w) to bf16 inside the autodiff graph, so the backward
/// hands each f32 parameter the bf16 gradient cast back to f32 (burn's `cast` backward), and the
/// optimiser, which sees only the f32 parameters, updates and keeps its moments in f32. Rounding
/// inside the bf16 forward follows the precision rules of the module docs. The CPU engines
/// (fused training, host decoding) run f32 only: bf16 and mixed run the tensor engines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Weights, optimiser state and computation in bf16.
    Bf16,
    /// f32 weights and optimiser state, bf16 computation.
    MixedBf16,
}

impl Precision {
    /// The dtype the weights are stored (and updated) in.
    pub fn weights_dtype(self) -> WeightDType {
        match self {
            Self::F32 | Self::MixedBf16 => WeightDType::F32,
            Self::Bf16 => WeightDType::Bf16,
        }
    }

    /// The dtype forward and backward compute in.
    pub fn compute_dtype(self) -> WeightDType {
        match self {
            Self::F32 => WeightDType::F32,
            Self::Bf16 | Self::MixedBf16 => WeightDType::Bf16,
        }
    }

    /// The dtype a call casts the weights to before computing, when it differs from theirs
    /// (`Some` for mixed precision only).
    pub fn autocast(self) -> Option<WeightDType> {
        (self.weights_dtype() != self.compute_dtype()).then(|| self.compute_dtype())
    }

    /// `module` in [`Precision::weights_dtype`] (returned as it is when every parameter already
    /// is: f32 weights under `f32` and `mixed_bf16`).
    pub fn prepare<M: Module>(self, module: M) -> M {
        struct AllIn(FloatDType, bool);
        impl ModuleVisitor for AllIn {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.1 &= param.val().dtype() == self.0.into();
            }
        }
        let dtype = self.weights_dtype().float_dtype();
        let mut all = AllIn(dtype, true);
        module.visit(&mut all);
        if all.1 { module } else { cast_module(module, dtype) }
    }
}

impl FromStr for Precision {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "mixed_bf16" | "mixed-bf16" | "mixed" => Ok(Self::MixedBf16),
            _ => Err(BridgeError::config(
                "precision",
                format!("unknown precision `{s}` (expected f32, bf16 or mixed_bf16)"),
            )),
        }
    }
}

impl TryFrom<String> for Precision {
    type Error = BridgeError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.to_string()
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::MixedBf16 => "mixed_bf16",
        })
    }
}

/// Casts every float parameter to one dtype inside the autodiff graph: the cast of a tracked
/// parameter is a graph node whose backward casts the gradient back to the parameter's dtype.
struct CastInGraph(FloatDType);

impl ModuleMapper for CastInGraph {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| if t.dtype() == dtype.into() { t } else { t.cast(dtype) })
    }
}

/// A copy of `module` with every float parameter cast to `dtype` as a differentiable operation
/// (same parameter ids; gradients flow back to `module`'s parameters in their own dtype).
pub(crate) fn cast_in_graph<M: Module>(module: &M, dtype: FloatDType) -> M {
    module.clone().map(&mut CastInGraph(dtype))
}

/// Casts every float parameter to one dtype, keeping parameter ids and `require_grad` flags.
struct CastFloats(FloatDType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| {
            let grad = t.is_require_grad();
            let t = t.cast(dtype).detach();
            if grad { t.require_grad() } else { t }
        })
    }
}

/// `module` with every float parameter cast to `dtype` (detached: a new leaf per parameter).
pub(crate) fn cast_module<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastFloats(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_parse_and_name_their_dtypes() {
        for (s, p) in [("f32", Precision::F32), ("BF16", Precision::Bf16), ("mixed", Precision::MixedBf16)] {
            assert_eq!(s.parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!(Precision::MixedBf16.weights_dtype(), WeightDType::F32);
        assert_eq!(Precision::MixedBf16.compute_dtype(), WeightDType::Bf16);
        assert_eq!(Precision::MixedBf16.autocast(), Some(WeightDType::Bf16));
        assert_eq!(Precision::Bf16.autocast(), None);
        assert_eq!(Precision::F32.autocast(), None);
        let err = "f8".parse::<Precision>().unwrap_err();
        assert!(matches!(&err, BridgeError::Config { field, .. } if field == "precision"), "{err}");
        let v: Precision = serde_json::from_str("\"mixed_bf16\"").unwrap();
        assert_eq!(v, Precision::MixedBf16);
    }

    #[test]
    fn names_parse_and_round_trip() {
        for (s, d) in [("f32", WeightDType::F32), ("BF16", WeightDType::Bf16), ("bfloat16", WeightDType::Bf16)] {
            assert_eq!(s.parse::<WeightDType>().unwrap(), d);
            assert_eq!(d.to_string().parse::<WeightDType>().unwrap(), d);
        }
        assert_eq!(WeightDType::Bf16.float_dtype(), FloatDType::BF16);
        let err = "bf61".parse::<WeightDType>().unwrap_err();
        assert!(matches!(&err, BridgeError::Config { field, .. } if field == "dtype"), "{err}");
        let v: WeightDType = serde_json::from_str("\"f16\"").unwrap();
        assert_eq!(v, WeightDType::F16);
        assert!(serde_json::from_str::<WeightDType>("\"int8\"").is_err());
    }
}
