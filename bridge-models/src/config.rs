//! [`DecoderConfig`]: the architecture of a Llama / Qwen2 / Qwen3 decoder, read straight from a
//! Hugging Face `config.json`.
//!
//! HF configs carry dozens of keys; the ones this crate does not need are ignored. A missing
//! required key, a value of the wrong type, an unsupported architecture or rope scaling is a
//! [`BridgeError::Config`] naming the key. Defaults follow `transformers` for each family.

use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::Path;

/// The model family, which decides the bias and normalisation layout of attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3 (`LlamaForCausalLM`): optional biases everywhere (`attention_bias`, `mlp_bias`).
    Llama,
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): bias on q, k, v; none on o or the MLP.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): per-head RMSNorm on q and k; optional `attention_bias`.
    Qwen3,
}

impl Architecture {
    /// The HF `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// The HF class name written to `architectures`.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    fn from_model_type(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    fn from_class_name(s: &str) -> Option<Self> {
        match s {
            "LlamaForCausalLM" | "LlamaModel" => Some(Self::Llama),
            "Qwen2ForCausalLM" | "Qwen2Model" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" | "Qwen3Model" => Some(Self::Qwen3),
            _ => None,
        }
    }
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// Scale factor (> 0).
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// Scale factor for low frequencies.
        factor: f64,
        /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// The architecture of a decoder-only transformer of the Llama / Qwen2 / Qwen3 families.
///
/// Deserialise it from a `config.json` with [`DecoderConfig::from_hf_json`] /
/// [`DecoderConfig::from_file`] (or serde: it implements `Deserialize` through the same path),
/// and write it back for `transformers` with [`DecoderConfig::to_hf_json`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct DecoderConfig {
    /// The model family.
    pub architecture: Architecture,
    /// Rows of the embedding (and of the LM head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head (`hidden_size / num_attention_heads` unless given, as in Qwen3).
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Rescaling of the rotary frequencies, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (always for Qwen2; `attention_bias` otherwise).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias` for Llama and Qwen3).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys before the rotary embedding (Qwen3).
    pub qk_norm: bool,
    /// Longest context the model was trained for (informational; not enforced).
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (HF allows one id or a list).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Standard deviation of the normal initialisation of random models.
    pub initializer_range: f64,
}

fn obj_get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn req_usize(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    match obj_get(obj, key) {
        None => Err(BridgeError::config(key, "missing required key")),
        Some(v) => as_usize(v, key),
    }
}

fn opt_usize(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    obj_get(obj, key).map(|v| as_usize(v, key)).transpose()
}

fn as_usize(v: &Value, key: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| BridgeError::config(key, format!("expected a non-negative integer, got {v}")))
}

fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
    obj_get(obj, key)
        .map(|v| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| BridgeError::config(key, format!("expected a token id, got {v}")))
        })
        .transpose()
}

fn opt_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    obj_get(obj, key)
        .map(|v| v.as_f64().ok_or_else(|| BridgeError::config(key, format!("expected a number, got {v}"))))
        .transpose()
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    obj_get(obj, key)
        .map(|v| v.as_bool().ok_or_else(|| BridgeError::config(key, format!("expected true or false, got {v}"))))
        .transpose()
}

/// Parses an HF `rope_scaling` (or `rope_parameters`) object; `field` names it in errors.
/// Returns `None` for the default (unscaled) rope.
fn parse_rope_scaling(v: &Value, field: &str) -> Result<Option<RopeScaling>> {
    let obj = v.as_object().ok_or_else(|| BridgeError::config(field, format!("expected an object, got {v}")))?;
    let kind = obj_get(obj, "rope_type")
        .or_else(|| obj_get(obj, "type"))
        .map(|t| t.as_str().ok_or_else(|| BridgeError::config(format!("{field}.rope_type"), "expected a string")))
        .transpose()?
        .unwrap_or("default");
    let sub = |k: &str| format!("{field}.{k}");
    let factor = || -> Result<f64> {
        let f = opt_f64(obj, "factor")
            .map_err(|_| BridgeError::config(sub("factor"), "expected a number"))?
            .ok_or_else(|| BridgeError::config(sub("factor"), "missing required key"))?;
        if !(f.is_finite() && f > 0.0) {
            return Err(BridgeError::config(sub("factor"), format!("must be > 0, got {f}")));
        }
        Ok(f)
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: factor()? })),
        "llama3" => {
            let num = |k: &str| -> Result<f64> {
                opt_f64(obj, k)
                    .map_err(|_| BridgeError::config(sub(k), "expected a number"))?
                    .ok_or_else(|| BridgeError::config(sub(k), "missing required key"))
            };
            let low = num("low_freq_factor")?;
            let high = num("high_freq_factor")?;
            if !(low > 0.0 && high > low) {
                return Err(BridgeError::config(
                    sub("high_freq_factor"),
                    format!("need 0 < low_freq_factor < high_freq_factor, got {low} and {high}"),
                ));
            }
            let orig = opt_usize(obj, "original_max_position_embeddings")
                .map_err(|_| BridgeError::config(sub("original_max_position_embeddings"), "expected an integer"))?
                .ok_or_else(|| BridgeError::config(sub("original_max_position_embeddings"), "missing required key"))?;
            Ok(Some(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: orig,
            }))
        }
        other => Err(BridgeError::config(
            sub("rope_type"),
            format!("unsupported rope scaling `{other}` (supported: default, linear, llama3)"),
        )),
    }
}

impl DecoderConfig {
    /// Reads an HF `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| BridgeError::weights(path, format!("config is not valid JSON: {e}")))?;
        Self::from_hf_json(&value)
    }

    /// Interprets a parsed HF `config.json`, ignoring keys it does not need.
    pub fn from_hf_json(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| BridgeError::config("config.json", "expected a JSON object at the top level"))?;
        let architecture = match obj_get(obj, "model_type") {
            Some(v) => {
                let s = v.as_str().ok_or_else(|| BridgeError::config("model_type", "expected a string"))?;
                Architecture::from_model_type(s).ok_or_else(|| {
                    BridgeError::config(
                        "model_type",
                        format!("unsupported architecture `{s}` (supported: llama, qwen2, qwen3)"),
                    )
                })?
            }
            None => {
                let names = obj_get(obj, "architectures")
                    .and_then(Value::as_array)
                    .ok_or_else(|| BridgeError::config("model_type", "missing (and no `architectures` list either)"))?;
                let first = names.first().and_then(Value::as_str).unwrap_or("");
                Architecture::from_class_name(first).ok_or_else(|| {
                    BridgeError::config(
                        "architectures",
                        format!("unsupported architecture `{first}` (supported: llama, qwen2, qwen3)"),
                    )
                })?
            }
        };
        if opt_bool(obj, "use_sliding_window")?.unwrap_or(false) {
            return Err(BridgeError::config("use_sliding_window", "sliding-window attention is not supported"));
        }
        let vocab_size = req_usize(obj, "vocab_size")?;
        let hidden_size = req_usize(obj, "hidden_size")?;
        let intermediate_size = req_usize(obj, "intermediate_size")?;
        let num_hidden_layers = req_usize(obj, "num_hidden_layers")?;
        let num_attention_heads = req_usize(obj, "num_attention_heads")?;
        let num_key_value_heads = opt_usize(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 {
            return Err(BridgeError::config("num_attention_heads", "must be ≥ 1"));
        }
        let head_dim = match opt_usize(obj, "head_dim")? {
            Some(d) => d,
            None => {
                if !hidden_size.is_multiple_of(num_attention_heads) {
                    return Err(BridgeError::config(
                        "head_dim",
                        format!(
                            "missing, and hidden_size {hidden_size} is not divisible by {num_attention_heads} heads"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        // `rope_parameters` (transformers ≥ 5) holds the theta and the scaling; the older keys
        // `rope_theta` / `rope_scaling` sit at the top level.
        let (mut rope_theta, mut rope_scaling) = (None, None);
        if let Some(rp) = obj_get(obj, "rope_parameters") {
            let rp_obj = rp.as_object().ok_or_else(|| BridgeError::config("rope_parameters", "expected an object"))?;
            rope_theta = opt_f64(rp_obj, "rope_theta")
                .map_err(|_| BridgeError::config("rope_parameters.rope_theta", "expected a number"))?;
            rope_scaling = parse_rope_scaling(rp, "rope_parameters")?;
        }
        if let Some(t) = opt_f64(obj, "rope_theta")? {
            rope_theta = Some(t);
        }
        if let Some(rs) = obj_get(obj, "rope_scaling") {
            rope_scaling = parse_rope_scaling(rs, "rope_scaling")?;
        }
        let attention_bias = opt_bool(obj, "attention_bias")?.unwrap_or(false);
        let eos_token_ids = match obj_get(obj, "eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| BridgeError::config("eos_token_id", format!("expected token ids, got {v}")))
                })
                .collect::<Result<_>>()?,
            Some(v) => vec![
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| BridgeError::config("eos_token_id", format!("expected a token id, got {v}")))?,
            ],
        };
        let default_max_pos = if architecture == Architecture::Llama { 2048 } else { 32768 };
        let cfg = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            tie_word_embeddings: opt_bool(obj, "tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: architecture != Architecture::Qwen2 && attention_bias,
            mlp_bias: architecture == Architecture::Llama && opt_bool(obj, "mlp_bias")?.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
            max_position_embeddings: opt_usize(obj, "max_position_embeddings")?.unwrap_or(default_max_pos),
            bos_token_id: opt_u32(obj, "bos_token_id")?,
            eos_token_ids,
            pad_token_id: opt_u32(obj, "pad_token_id")?,
            initializer_range: opt_f64(obj, "initializer_range")?.unwrap_or(0.02),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the sizes fit together, naming the bad key.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(BridgeError::config(k, "must be ≥ 1"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(BridgeError::config(
                "num_key_value_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(BridgeError::config(
                "head_dim",
                format!("must be even for rotary embeddings, got {}", self.head_dim),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(BridgeError::config("rms_norm_eps", format!("must be > 0, got {}", self.rms_norm_eps)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(BridgeError::config("rope_theta", format!("must be > 1, got {}", self.rope_theta)));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return Err(BridgeError::config("initializer_range", "must be ≥ 0"));
        }
        Ok(())
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The rotary inverse frequencies `[head_dim / 2]`, rescaled as `rope_scaling` says
    /// (computed like `transformers`' `ROPE_INIT_FUNCTIONS`).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .map(|f| f as f32 as f64)
            .collect();
        match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// A complete HF `config.json` for this architecture (float32 weights), loadable by
    /// `transformers`' `AutoModelForCausalLM`.
    pub fn to_hf_json(&self) -> Value {
        let a = self.architecture;
        let mut obj = json!({
            "architectures": [a.class_name()],
            "model_type": a.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.as_ref().map(rope_scaling_json),
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let m = obj.as_object_mut().expect("json! object literal");
        m.insert(
            "eos_token_id".into(),
            match self.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
        );
        match a {
            Architecture::Llama => {
                m.insert("attention_bias".into(), json!(self.qkv_bias));
                m.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Architecture::Qwen2 => {
                m.insert("use_sliding_window".into(), json!(false));
            }
            Architecture::Qwen3 => {
                m.insert("attention_bias".into(), json!(self.qkv_bias));
                m.insert("use_sliding_window".into(), json!(false));
            }
        }
        obj
    }
}

fn rope_scaling_json(s: &RopeScaling) -> Value {
    match s {
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

impl TryFrom<Value> for DecoderConfig {
    type Error = BridgeError;

    fn try_from(value: Value) -> Result<Self> {
        Self::from_hf_json(&value)
    }
}

impl From<DecoderConfig> for Value {
    fn from(cfg: DecoderConfig) -> Self {
        cfg.to_hf_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen2_json() -> Value {
        json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
            "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_scaling": null, "tie_word_embeddings": true,
            "max_position_embeddings": 32768, "bos_token_id": 151643, "eos_token_id": 151645,
            "sliding_window": 32768, "use_sliding_window": false, "max_window_layers": 21,
            "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true
        })
    }

    #[test]
    fn qwen2_defaults_and_extra_keys() {
        let c = DecoderConfig::from_hf_json(&qwen2_json()).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2);
        assert_eq!((c.head_dim, c.num_key_value_heads, c.kv_dim()), (64, 2, 128));
        assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm && c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, vec![151645]);
        assert_eq!(c.rope_scaling, None);
        // serde goes through the same path, and the HF json round-trips
        let c2: DecoderConfig = serde_json::from_value(qwen2_json()).unwrap();
        assert_eq!(c, c2);
        let back = DecoderConfig::from_hf_json(&c.to_hf_json()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn llama3_rope_scaling_and_eos_list() {
        let v = json!({
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "rope_theta": 500000.0, "eos_token_id": [128001, 128008, 128009], "attention_bias": false,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        });
        let c = DecoderConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { factor: 32.0, .. })));
        let f = c.rope_inv_freq();
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], (1.0f64 as f32) as f64); // highest frequency unchanged
        let unscaled = 1.0 / 500000f64.powf(62.0 / 64.0);
        assert!((f[31] - unscaled as f32 as f64 / 32.0).abs() < 1e-12); // lowest divided by factor
        assert_eq!(DecoderConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn rope_parameters_object_is_read() {
        let mut v = qwen2_json();
        let m = v.as_object_mut().unwrap();
        m.remove("rope_theta");
        m.remove("rope_scaling");
        m.insert("rope_parameters".into(), json!({"rope_type": "linear", "rope_theta": 12345.0, "factor": 2.0}));
        let c = DecoderConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.rope_theta, 12345.0);
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        m_default(&mut v);
        assert_eq!(DecoderConfig::from_hf_json(&v).unwrap().rope_scaling, None);
    }

    fn m_default(v: &mut Value) {
        v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1.0e6});
    }

    #[test]
    fn qwen3_head_dim_and_qk_norm() {
        let v = json!({
            "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "attention_bias": false, "eos_token_id": 151645, "rope_theta": 1000000, "tie_word_embeddings": true
        });
        let c = DecoderConfig::from_hf_json(&v).unwrap();
        assert!(c.qk_norm && !c.qkv_bias);
        assert_eq!((c.head_dim, c.q_dim(), c.kv_dim()), (128, 2048, 1024));
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = qwen2_json();
        v.as_object_mut().unwrap().remove("hidden_size");
        let e = DecoderConfig::from_hf_json(&v).unwrap_err();
        assert!(matches!(&e, BridgeError::Config { field, .. } if field == "hidden_size"), "{e}");
        let e = serde_json::from_value::<DecoderConfig>(v).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");

        let mut v = qwen2_json();
        v["model_type"] = json!("gpt2");
        let e = DecoderConfig::from_hf_json(&v).unwrap_err();
        assert!(matches!(&e, BridgeError::Config { field, .. } if field == "model_type"), "{e}");
        assert!(e.to_string().contains("gpt2"));

        let mut v = qwen2_json();
        v.as_object_mut().unwrap().remove("model_type");
        v["architectures"] = json!(["MistralForCausalLM"]);
        assert!(DecoderConfig::from_hf_json(&v).unwrap_err().to_string().contains("MistralForCausalLM"));

        let mut v = qwen2_json();
        v["num_key_value_heads"] = json!(3);
        assert!(DecoderConfig::from_hf_json(&v).unwrap_err().to_string().contains("num_key_value_heads"));

        let mut v = qwen2_json();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(DecoderConfig::from_hf_json(&v).unwrap_err().to_string().contains("yarn"));

        let mut v = qwen2_json();
        v["vocab_size"] = json!("many");
        assert!(DecoderConfig::from_hf_json(&v).unwrap_err().to_string().contains("vocab_size"));
    }
}
