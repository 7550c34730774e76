//! GGUF files: weights, configuration and tokenizer of llama.cpp's format.
//!
//! [`GgufFile::open`] parses the header, metadata and tensor directory (versions 2 and 3);
//! [`GgufFile::hf_config`], [`GgufFile::hf_tensors`] and [`GgufFile::tokenizer`] turn them into
//! what an HF model directory provides: a `config.json` object, a [`TensorMap`] of f32 tensors
//! with HF names and layouts, and a `tokenizers::Tokenizer`. [`open_gguf`] does all three.
//!
//! The parser and the dequantisers are this crate's own (see `quants`): candle-core's
//! `quantized::gguf_file` would do the same work but adds a large dependency tree to a 2-core
//! CI build for a few hundred lines of well-specified code.

mod convert;
mod file;
mod quants;
mod vocab;

pub use convert::{SUPPORTED_ARCHITECTURES, hf_name, unpermute_rows};
pub use file::{GgufFile, MetaValue, TensorInfo};
pub use quants::{GgmlType, dequantize};

use crate::tensors::TensorMap;
use bridge_core::Result;
use std::path::Path;

/// A GGUF model converted to HF form: `config.json` object, tensors, tokenizer and chat template.
#[derive(Debug)]
pub struct GgufModel {
    /// The HF config ([`GgufFile::hf_config`]).
    pub config: serde_json::Value,
    /// The dequantised tensors under HF names ([`GgufFile::hf_tensors`]).
    pub tensors: TensorMap,
    /// The tokenizer rebuilt from the metadata, when the file has one.
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// The parsed file (metadata, chat template, token ids).
    pub file: GgufFile,
}

/// Opens the GGUF file at `path` and converts it: config, tensors and tokenizer.
pub fn open_gguf(path: impl AsRef<Path>) -> Result<GgufModel> {
    let file = GgufFile::open(path)?;
    let config = file.hf_config()?;
    let tokenizer = file.tokenizer()?;
    let tensors = file.hf_tensors()?;
    Ok(GgufModel { config, tensors, tokenizer, file })
}
