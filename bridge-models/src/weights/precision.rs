//! The dtype of a model's weights, as configs and command lines name it.
//!
//! f32 is the default everywhere; bf16 (and f16) are for inference and rollouts on the GPU: see
//! [`DecoderWeights::cast`](crate::DecoderWeights::cast) for what the forward then computes in
//! which precision.

use bridge_core::{BridgeError, Result};
use burn::tensor::FloatDType;
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
