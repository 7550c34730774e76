//! Flags and helpers shared by the examples: which model (`--model`, `--adapter`), where
//! (`--device`) and in which dtype (`--dtype`) it runs, and lists of numbers.
//!
//! Every example's flags are a clap `Parser` in `examples/cli/NAME.rs`, included by the example
//! (`#[path = "cli/NAME.rs"] mod cli;`) and by `tests/cli.rs`, which checks that bad flags are
//! errors naming the flag. (A directory under `examples/` without a `main.rs` is not an example
//! of its own; clap stays a dev-dependency: the libraries parse no command line.)

// Each example uses a subset.
#![allow(dead_code)]

use bridge_core::{DeviceChoice, Result};
use bridge_models::{DecoderConfig, DecoderWeights, Pretrained, WeightDType, open_model, open_pretrained};
use burn::tensor::Device;
use std::path::PathBuf;
use std::str::FromStr;

/// The model an example runs (`--model`, `--adapter`), opened by `bridge_models::open_pretrained`
/// as `train`'s `[model] path` is: an HF directory or a `.gguf` file, with its own tokenizer.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// An HF model directory (config.json, *.safetensors, tokenizer.json) or a `.gguf` file
    /// (weights dequantised to f32, its own tokenizer and chat template).
    #[arg(long = "model", value_name = "DIR|FILE.gguf")]
    pub path: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) applied on
    /// top of the model, e.g. a training run's `final/adapter`.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

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

    /// The weights alone of the model at `path` (`bridge_models::open_model`: an HF directory or a
    /// `.gguf` file, no tokenizer) on the chosen device, in the chosen dtype.
    pub fn open_weights(&self, path: &std::path::Path) -> Result<(Device, DecoderConfig, DecoderWeights)> {
        let device = self.device()?;
        let (config, weights) = open_model(path, &device)?;
        Ok((device, config, self.cast(weights)))
    }

    /// The model of `model` (weights, tokenizer, adapter: see `bridge_models::open_pretrained`) on
    /// the chosen device, its weights and adapter in the chosen dtype.
    pub fn open(&self, model: &ModelArgs) -> Result<(Device, Pretrained)> {
        let device = self.device()?;
        let mut m = open_pretrained(&model.path, model.adapter.as_deref(), &device)?;
        if self.dtype != WeightDType::F32 {
            m.weights = m.weights.cast(self.dtype.float_dtype());
            m.adapter = m.adapter.map(|a| a.cast(self.dtype.float_dtype()));
        }
        Ok((device, m))
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
