//! Command-line pieces shared by the `generate`, `score` and `bench_generate` examples: numbers,
//! lists, the model's tokenizer, and where (`--device`) and in which dtype (`--dtype`) the model
//! runs.
//!
//! Each example includes this file with `#[path = "common/args.rs"] mod args;` (a directory under
//! `examples/` without a `main.rs` is not an example of its own).

// Each example uses a subset.
#![allow(dead_code)]

use bridge_core::{BridgeError, DeviceChoice, Result};
use bridge_models::gguf::GgufFile;
use bridge_models::tokenizer::HfCodec;
use bridge_models::{DecoderConfig, DecoderWeights, WeightDType, open_model};
use burn::tensor::Device;
use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;

/// The usage text of `--dtype` and `--device`.
pub const PLACEMENT_USAGE: &str = "[--dtype f32|bf16|f16] [--device flex|cuda:N]";

/// `value` parsed as a `T` (a number, usually); the error names `flag`.
pub fn num<T: FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: Display,
{
    value.parse().map_err(|e| BridgeError::InvalidInput(format!("{flag}: `{value}`: {e}")))
}

/// A list separated by commas and/or whitespace (`"1,16,64"`, `"1 2 3"`), each item parsed as a
/// `T`; the error names `flag`. An empty `value` is an empty list.
pub fn list<T: FromStr>(flag: &str, value: &str) -> Result<Vec<T>>
where
    T::Err: Display,
{
    value.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()).map(|s| num(flag, s)).collect()
}

/// Where a model runs (`--device`, default `flex`) and the dtype of its weights (`--dtype`,
/// default `f32`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement {
    /// The backend and device.
    pub device: DeviceChoice,
    /// The weights' dtype.
    pub dtype: WeightDType,
}

impl Placement {
    /// The burn device, or a typed error when this build lacks its backend.
    pub fn device(&self) -> Result<Device> {
        self.device.device()
    }

    /// `weights` in the chosen dtype (unchanged for f32).
    pub fn cast(&self, weights: DecoderWeights) -> DecoderWeights {
        match self.dtype {
            WeightDType::F32 => weights,
            dtype => weights.cast(dtype.float_dtype()),
        }
    }

    /// The model at `path` (an HF directory or a `.gguf` file, see `open_model`) on the chosen
    /// device, in the chosen dtype.
    pub fn open(&self, path: &Path) -> Result<(Device, DecoderConfig, DecoderWeights)> {
        let device = self.device()?;
        let (config, weights) = open_model(path, &device)?;
        Ok((device, config, self.cast(weights)))
    }
}

/// Whether `path` is a `.gguf` file.
pub fn is_gguf(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The model's tokenizer: a `.gguf` file's own, or an HF directory's `tokenizer.json`; `None`
/// for a directory without one.
pub fn load_codec(path: &Path) -> Result<Option<HfCodec>> {
    if is_gguf(path) {
        return HfCodec::from_gguf(&GgufFile::open(path)?).map(Some);
    }
    if path.join("tokenizer.json").is_file() { HfCodec::from_dir(path).map(Some) } else { Ok(None) }
}
