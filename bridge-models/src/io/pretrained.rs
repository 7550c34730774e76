//! A model on disk as every example and run config opens it: an HF directory or a `.gguf` file,
//! its tokenizer (the directory's `tokenizer.json`, or the GGUF file's own), and optionally a PEFT
//! LoRA adapter on top. [`open_pretrained`] is the one way in; [`Pretrained::save_hf_dir`] the way
//! out to Python tools (what `examples/convert.rs` writes).
//!
//! ```no_run
//! # fn main() -> bridge_core::Result<()> {
//! let device = burn::tensor::Device::flex();
//! let m = bridge_models::open_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf", None, &device)?;
//! let codec = m.require_codec()?; // the GGUF file's own tokenizer
//! # let _ = codec; Ok(()) }
//! ```

use super::gguf::GgufFile;
use super::hf::{load_hf_dir, save_hf_dir, write_atomic};
use super::tokenizer::HfCodec;
use crate::config::DecoderConfig;
use crate::weights::DecoderWeights;
use crate::weights::lora::LoraAdapter;
use bridge_core::{BridgeError, Result, TextCodec};
use burn::tensor::Device;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The form of a model on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// An HF directory: `config.json`, `model.safetensors` (or shards), `tokenizer.json`.
    HfDir,
    /// A llama.cpp `.gguf` file (weights dequantised to f32, the tokenizer from its metadata).
    Gguf,
}

impl ModelFormat {
    /// The form of the model at `path`, or an error naming it when it is neither a directory nor a
    /// `.gguf` file.
    pub fn of(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Self::HfDir);
        }
        if !path.exists() {
            return Err(BridgeError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return Ok(Self::Gguf);
        }
        Err(BridgeError::weights(
            path,
            "expected an HF model directory (config.json + model.safetensors) or a .gguf file",
        ))
    }
}

/// A model opened from disk: architecture, base weights θ, tokenizer and adapter.
#[derive(Debug)]
pub struct Pretrained {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its form.
    pub format: ModelFormat,
    /// The architecture.
    pub config: DecoderConfig,
    /// θ, in f32.
    pub weights: DecoderWeights,
    /// The tokenizer: always present for a GGUF file; `None` for a directory without
    /// `tokenizer.json`.
    pub codec: Option<HfCodec>,
    /// The PEFT adapter asked for, checked against [`Self::config`].
    pub adapter: Option<LoraAdapter>,
}

/// The tokenizer of the model at `path`: a GGUF file's own, or an HF directory's
/// `tokenizer.json` (with its config files); `Ok(None)` for a directory without `tokenizer.json`.
pub fn open_codec(path: impl AsRef<Path>) -> Result<Option<HfCodec>> {
    let path = path.as_ref();
    match ModelFormat::of(path)? {
        ModelFormat::Gguf => HfCodec::from_gguf(&GgufFile::open(path)?).map(Some),
        ModelFormat::HfDir if path.join("tokenizer.json").is_file() => HfCodec::from_dir(path).map(Some),
        ModelFormat::HfDir => Ok(None),
    }
}

/// Opens the weights of the model at `path` (an HF directory or a `.gguf` file, dequantised to
/// f32) on `device`, without its tokenizer: see [`open_pretrained`] for the whole model.
pub fn open_model(path: impl AsRef<Path>, device: &Device) -> Result<(DecoderConfig, DecoderWeights)> {
    let path = path.as_ref();
    match ModelFormat::of(path)? {
        ModelFormat::HfDir => load_hf_dir(path, device),
        ModelFormat::Gguf => gguf_weights(&GgufFile::open(path)?, device),
    }
}

/// The architecture and θ of a parsed GGUF file; errors name the file.
fn gguf_weights(file: &GgufFile, device: &Device) -> Result<(DecoderConfig, DecoderWeights)> {
    let path = file.path();
    let config = DecoderConfig::from_hf_json(&file.hf_config()?).map_err(|e| match e {
        BridgeError::Config { field, message } => BridgeError::weights(path, format!("config `{field}`: {message}")),
        other => other,
    })?;
    let weights = DecoderWeights::from_tensor_map(&config, &file.hf_tensors()?, device).map_err(|e| match e {
        BridgeError::Model(m) => BridgeError::weights(path, m),
        other => other,
    })?;
    Ok((config, weights))
}

/// Opens the model at `path` (an HF directory or a `.gguf` file) on `device` in f32, with its
/// tokenizer, and the PEFT adapter directory `adapter` when given.
///
/// Every failure is a typed error naming the file: a missing path, a file that is neither, a
/// malformed config, tensor, tokenizer or adapter (an adapter for another architecture included).
pub fn open_pretrained(path: impl AsRef<Path>, adapter: Option<&Path>, device: &Device) -> Result<Pretrained> {
    let path = path.as_ref();
    let format = ModelFormat::of(path)?;
    let (config, weights, codec) = match format {
        ModelFormat::HfDir => {
            let (config, weights) = load_hf_dir(path, device)?;
            let codec = if path.join("tokenizer.json").is_file() { Some(HfCodec::from_dir(path)?) } else { None };
            (config, weights, codec)
        }
        ModelFormat::Gguf => {
            let file = GgufFile::open(path)?;
            let (config, weights) = gguf_weights(&file, device)?;
            (config, weights, Some(HfCodec::from_gguf(&file)?))
        }
    };
    if let Some(codec) = &codec {
        codec.check_fits(config.vocab_size).map_err(|e| BridgeError::weights(path, e.to_string()))?;
    }
    let adapter = adapter.map(|dir| LoraAdapter::load_peft(dir, &config, device)).transpose()?;
    Ok(Pretrained { path: path.to_path_buf(), format, config, weights, codec, adapter })
}

impl Pretrained {
    /// The tokenizer, or an error naming the model when it has none (an HF directory without
    /// `tokenizer.json`).
    pub fn require_codec(&self) -> Result<&HfCodec> {
        self.codec.as_ref().ok_or_else(|| self.no_codec())
    }

    /// Moves the tokenizer out (see [`Self::require_codec`]).
    pub fn take_codec(&mut self) -> Result<HfCodec> {
        let err = self.no_codec();
        self.codec.take().ok_or(err)
    }

    fn no_codec(&self) -> BridgeError {
        BridgeError::io(self.path.join("tokenizer.json"), std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    /// θ with the adapter folded in (θ itself without one).
    pub fn merged_weights(&self) -> Result<DecoderWeights> {
        match &self.adapter {
            Some(a) => self.weights.merge(a),
            None => Ok(self.weights.clone()),
        }
    }

    /// Writes the model as an HF directory that `transformers` loads
    /// (`AutoModelForCausalLM.from_pretrained(dir)`, `AutoTokenizer.from_pretrained(dir)`):
    /// `config.json` and `model.safetensors` (f32, the adapter merged in when there is one, see
    /// [`save_hf_dir`]), and, when the model has a tokenizer, `tokenizer.json`,
    /// `tokenizer_config.json` (BOS/EOS/pad tokens and the chat template) and
    /// `generation_config.json` (the ids that end a completion). Each file is written
    /// atomically. [`open_pretrained`] on the result gives the same weights, tokenizer and
    /// template.
    pub fn save_hf_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        if dir.exists() && !dir.is_dir() {
            return Err(BridgeError::checkpoint(dir, "exists and is not a directory"));
        }
        if self.format == ModelFormat::HfDir && same_dir(&self.path, dir) {
            return Err(BridgeError::checkpoint(dir, "is the directory the model was read from"));
        }
        save_hf_dir(dir, &self.config, &self.merged_weights()?)?;
        match &self.codec {
            Some(codec) => save_codec(dir, codec, &self.config),
            None => Ok(()),
        }
    }
}

/// Writes the tokenizer files of an HF directory for `codec` into `dir` (which exists):
/// `tokenizer.json`, `tokenizer_config.json` (BOS/EOS/pad tokens, the chat template, the context
/// length of `config`) and `generation_config.json` (the ids that end a completion), each
/// atomically. [`HfCodec::from_dir`] reads back the same tokenizer, special ids and template.
pub fn save_codec(dir: impl AsRef<Path>, codec: &HfCodec, config: &DecoderConfig) -> Result<()> {
    let dir = dir.as_ref();
    let tokenizer = codec
        .tokenizer()
        .to_string(true)
        .map_err(|e| BridgeError::checkpoint(dir, format!("serialising tokenizer.json: {e}")))?;
    write_atomic(&dir.join("tokenizer.json"), tokenizer.as_bytes())?;
    let token = |id: u32| codec.tokenizer().id_to_token(id);
    let eos = codec.eos_token_ids();
    let mut tok_cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_position_embeddings,
        "bos_token": codec.bos_token(),
        "eos_token": codec.eos_token(),
        "pad_token": token(codec.pad_token_id()),
    });
    if let Some(t) = codec.chat_template() {
        tok_cfg["chat_template"] = Value::String(t.to_owned());
    }
    let bos_id = codec.bos_token().and_then(|b| codec.tokenizer().token_to_id(b));
    let gen_cfg = json!({
        "bos_token_id": bos_id,
        "eos_token_id": if eos.len() == 1 { json!(eos[0]) } else { json!(eos) },
        "pad_token_id": codec.pad_token_id(),
    });
    for (name, value) in [("tokenizer_config.json", tok_cfg), ("generation_config.json", gen_cfg)] {
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| BridgeError::checkpoint(dir, format!("serialising {name}: {e}")))?;
        write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}
