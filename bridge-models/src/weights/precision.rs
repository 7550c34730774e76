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
use burn::module::{Module, ModuleMapper, Param};
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
