//! Flags and helpers shared by the examples: where (`--device`) and in which dtype (`--dtype`) a
//! model runs, lists of numbers, and the model's tokenizer.
//!
//! Every example's flags are a clap `Parser` in `examples/cli/NAME.rs`, included by the example
//! (`#[path = "cli/NAME.rs"] mod cli;`) and by `tests/cli.rs`, which checks that bad flags are
//! errors naming the flag. (A directory under `examples/` without a `main.rs` is not an example
//! of its own; clap stays a dev-dependency: the libraries parse no command line.)

// Each example uses a subset.
#![allow(dead_code)]

use bridge_core::{DeviceChoice, Result};
use bridge_models::gguf::GgufFile;
use bridge_models::tokenizer::HfCodec;
use bridge_models::{DecoderConfig, DecoderWeights, WeightDType, open_model};
use burn::tensor::Device;
use std::path::Path;
use std::str::FromStr;

/// Where a model runs and the dtype of its weights (`--device`, `--dtype`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Placement {
    /// The backend and device: flex (the CPU), cuda or cuda:N (a build with the `cuda` feature).
    #[arg(long, value_name = "DEVICE", default_value = "flex")]
    pub device: DeviceChoice,
    /// The weights' dtype: f32, bf16 or f16.
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
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

/// A list of values separated by commas and/or whitespace (`"1,16,64"`, `"1 2 3"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T: FromStr> FromStr for List<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|item| item.parse().map_err(|e| format!("`{item}`: {e}")))
            .collect::<std::result::Result<Vec<T>, String>>()
            .map(List)
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

/// A whole number ≥ 1 (clap `value_parser`).
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A non-empty list of whole numbers ≥ 1, separated by commas and/or whitespace (clap
/// `value_parser`).
pub fn sizes(s: &str) -> std::result::Result<List<usize>, String> {
    let list: List<usize> = s.parse()?;
    if list.0.is_empty() || list.0.contains(&0) {
        return Err("expected one or more sizes, none 0".into());
    }
    Ok(list)
}

/// A finite number ≥ 0 (clap `value_parser`).
pub fn non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(x) => Err(format!("must be a finite number ≥ 0, got {x}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A probability in (0, 1] (clap `value_parser`).
pub fn probability(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        Ok(p) => Err(format!("must lie in (0, 1], got {p}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Generation modes as `(name, temperature)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Modes(pub Vec<(String, f64)>);

/// `greedy,sample` → the modes (clap `value_parser`).
pub fn modes(s: &str) -> std::result::Result<Modes, String> {
    let names: List<String> = s.parse()?;
    if names.0.is_empty() {
        return Err("expected greedy and/or sample".into());
    }
    names
        .0
        .iter()
        .map(|m| bridge::bench::generation_mode(m).map_err(|e| e.to_string()))
        .collect::<std::result::Result<_, _>>()
        .map(Modes)
}
