//! Choosing the backend at run time.
//!
//! burn 0.22 picks the backend through its `Device`: `flex` (pure-Rust CPU, the default) or
//! `cuda:N` (built with the `cuda` feature). A [`DeviceChoice`] is what configs and command lines
//! name; `"cpu"` is accepted as an alias of `flex`.

use crate::error::{BridgeError, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The backend and device a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// burn's pure-Rust CPU backend.
    #[default]
    Flex,
    /// CUDA device with this index.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(Self::Flex),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(BridgeError::config(
                    "device",
                    format!("unknown device `{s}` (expected flex, cpu, cuda or cuda:N)"),
                )),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = BridgeError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => write!(f, "flex"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceChoice {
    /// The burn device (without autodiff), or an error if this build lacks the backend.
    pub fn device(&self) -> Result<Device> {
        match self {
            #[cfg(feature = "flex")]
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => Ok(Device::cuda(*i)),
            #[allow(unreachable_patterns)]
            other => Err(BridgeError::Device(format!(
                "`{other}` is not compiled into this build (enable the `{}` feature)",
                if matches!(other, Self::Flex) { "flex" } else { "cuda" }
            ))),
        }
    }

    /// The same device with autodiff enabled (for training).
    pub fn autodiff_device(&self) -> Result<Device> {
        Ok(self.device()?.autodiff())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("flex".parse::<DeviceChoice>().unwrap(), DeviceChoice::Flex);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Flex);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().to_string().contains("tpu"));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        let d: DeviceChoice = serde_json::from_str("\"cuda:1\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"cuda:1\"");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_device_is_available() {
        assert!(DeviceChoice::Flex.autodiff_device().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_typed_error() {
        assert!(matches!(DeviceChoice::Cuda(0).device(), Err(BridgeError::Device(_))));
    }
}
