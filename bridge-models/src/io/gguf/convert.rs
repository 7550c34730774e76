//! GGUF → Hugging Face: the config (`config.json` keys) and the tensor names and layouts.
//!
//! Mirrors what transformers does when it loads a GGUF file (`modeling_gguf_pytorch_utils.py`,
//! `integrations/ggml.py`): metadata keys `{arch}.*` become config fields, `blk.N.*` tensors
//! become `model.layers.N.*`, and for the llama architecture the rows of the Q and K projections,
//! which llama.cpp's converter permuted for its rotary layout, are permuted back.

use super::file::{GgufFile, MetaValue};
use crate::tensors::{HostTensor, TensorMap};
use bridge_core::Result;
use serde_json::{Map, Value, json};

/// Architectures whose GGUF files this module converts.
pub const SUPPORTED_ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// The HF `architectures` entry of a GGUF architecture.
fn hf_class(arch: &str) -> &'static str {
    match arch {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "Qwen3ForCausalLM",
    }
}

/// A JSON number for a metadata value; f32 values are written with their shortest decimal form
/// (so `1e-5` stored as f32 reads back as `1e-5`, as in the original `config.json`).
fn number(v: &MetaValue) -> Option<Value> {
    match v {
        MetaValue::F32(x) => format!("{x}").parse::<f64>().ok().map(Value::from),
        MetaValue::F64(x) => Some(Value::from(*x)),
        other => other.as_i64().map(Value::from),
    }
}

impl GgufFile {
    fn checked_arch(&self) -> Result<&str> {
        let arch = self.architecture()?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch) {
            return Err(self.error(format!(
                "architecture `{arch}` is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        Ok(arch)
    }

    fn arch_u64(&self, arch: &str, key: &str) -> Result<Option<u64>> {
        let full = format!("{arch}.{key}");
        match self.get(&full) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.error(format!("metadata `{full}` is {v:?}, not an unsigned integer"))),
        }
    }

    fn required_u64(&self, arch: &str, key: &str) -> Result<u64> {
        self.arch_u64(arch, key)?.ok_or_else(|| self.error(format!("metadata `{arch}.{key}` is missing")))
    }

    /// The model configuration as an HF `config.json` object: `model_type`, `architectures`,
    /// `vocab_size`, `hidden_size`, `intermediate_size`, `num_hidden_layers`,
    /// `num_attention_heads`, `num_key_value_heads`, `head_dim`, `rms_norm_eps`, `rope_theta`,
    /// `max_position_embeddings`, `tie_word_embeddings` (true when there is no `output.weight`),
    /// `attention_bias`, `hidden_act`, `rope_scaling`, and the bos/eos/pad ids when the file has
    /// them.
    pub fn hf_config(&self) -> Result<Value> {
        let arch = self.checked_arch()?;
        let hidden = self.required_u64(arch, "embedding_length")?;
        let heads = self.required_u64(arch, "attention.head_count")?;
        if heads == 0 || hidden == 0 {
            return Err(self.error(format!("metadata: {arch}.embedding_length and head_count must be positive")));
        }
        let kv_heads = self.arch_u64(arch, "attention.head_count_kv")?.unwrap_or(heads);
        let head_dim = match self.arch_u64(arch, "attention.key_length")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => return Err(self.error(format!("hidden size {hidden} is not a multiple of {heads} heads"))),
        };
        let embd = self.tensor_info("token_embd.weight").ok_or_else(|| self.error("no tensor `token_embd.weight`"))?;
        let vocab = match self.arch_u64(arch, "vocab_size")? {
            Some(v) => v,
            None => self
                .get("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|t| t.len() as u64)
                .unwrap_or(embd.dims.last().copied().unwrap_or(0)),
        };
        let eps = self
            .get(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .and_then(number)
            .ok_or_else(|| self.error(format!("metadata `{arch}.attention.layer_norm_rms_epsilon` is missing")))?;
        let rope_theta = self.get(&format!("{arch}.rope.freq_base")).and_then(number).unwrap_or(json!(10000.0));
        let has_bias = self.tensor_info("blk.0.attn_q.bias").is_some();

        let mut c = Map::new();
        c.insert("model_type".into(), json!(arch));
        c.insert("architectures".into(), json!([hf_class(arch)]));
        c.insert("vocab_size".into(), json!(vocab));
        c.insert("hidden_size".into(), json!(hidden));
        c.insert("intermediate_size".into(), json!(self.required_u64(arch, "feed_forward_length")?));
        c.insert("num_hidden_layers".into(), json!(self.required_u64(arch, "block_count")?));
        c.insert("num_attention_heads".into(), json!(heads));
        c.insert("num_key_value_heads".into(), json!(kv_heads));
        c.insert("head_dim".into(), json!(head_dim));
        c.insert("rms_norm_eps".into(), eps);
        c.insert("rope_theta".into(), rope_theta);
        c.insert("max_position_embeddings".into(), json!(self.arch_u64(arch, "context_length")?.unwrap_or(2048)));
        c.insert("tie_word_embeddings".into(), json!(self.tensor_info("output.weight").is_none()));
        c.insert("attention_bias".into(), json!(has_bias));
        c.insert("hidden_act".into(), json!("silu"));
        c.insert("rope_scaling".into(), self.rope_scaling(arch)?);
        for (key, field) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.get(key).and_then(MetaValue::as_u64) {
                c.insert(field.into(), json!(id));
            }
        }
        if let Some(name) = self.get("general.name").and_then(MetaValue::as_str) {
            c.insert("_name_or_path".into(), json!(name));
        }
        Ok(Value::Object(c))
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*` (`null` when absent or `none`).
    fn rope_scaling(&self, arch: &str) -> Result<Value> {
        let kind = self.get(&format!("{arch}.rope.scaling.type")).and_then(MetaValue::as_str).unwrap_or("none");
        if kind == "none" {
            return Ok(Value::Null);
        }
        if !matches!(kind, "linear" | "yarn") {
            return Err(self.error(format!("rope scaling type `{kind}` is not supported")));
        }
        let factor = self.get(&format!("{arch}.rope.scaling.factor")).and_then(number).unwrap_or(json!(1.0));
        let mut s = Map::new();
        s.insert("rope_type".into(), json!(kind));
        s.insert("factor".into(), factor);
        if let Some(n) = self.arch_u64(arch, "rope.scaling.original_context_length")? {
            s.insert("original_max_position_embeddings".into(), json!(n));
        }
        Ok(Value::Object(s))
    }

    /// Every tensor, dequantised to f32, under its HF name and in HF layout (`[out, in]` for
    /// linear weights), with llama's Q/K row permutation undone.
    pub fn hf_tensors(&self) -> Result<TensorMap> {
        let arch = self.checked_arch()?;
        let config = self.hf_config()?;
        let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
        let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
        // Check every name before reading any data.
        let names = self
            .tensors()
            .iter()
            .map(|t| hf_name(&t.name).ok_or_else(|| self.error(format!("tensor `{}` has no HF counterpart", t.name))))
            .collect::<Result<Vec<_>>>()?;
        let mut map = TensorMap::new();
        let mut names = names.into_iter();
        self.for_each_tensor(|info, mut t| {
            let hf = names.next().unwrap_or_default();
            if arch == "llama" {
                let n = if info.name.contains(".attn_q.") {
                    Some(heads)
                } else if info.name.contains(".attn_k.") {
                    Some(kv_heads)
                } else {
                    None
                };
                if let Some(n) = n {
                    t = unpermute_rows(t, n).map_err(|m| self.error(format!("tensor `{}`: {m}", info.name)))?;
                }
            }
            map.insert(hf, t);
            Ok(())
        })?;
        Ok(map)
    }
}

/// The HF name of GGUF tensor `name`, for the tensors of the llama/qwen2/qwen3 decoders.
pub fn hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    if !matches!(param, "weight" | "bias") {
        return None;
    }
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// Undoes llama.cpp's rotary permutation of the rows of a Q or K projection (weight or bias)
/// with `n_head` heads: within each head, row `i·2 + j` of the file is row `j·(d/2) + i` of HF
/// (transformers' `reverse_permute_weights`).
pub fn unpermute_rows(t: HostTensor, n_head: usize) -> std::result::Result<HostTensor, String> {
    let rows = t.shape.first().copied().unwrap_or(0);
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(format!("{rows} rows cannot be split into {n_head} heads of an even size"));
    }
    let cols = t.data.len().checked_div(rows).unwrap_or(0);
    let half = rows / n_head / 2;
    let mut out = vec![0f32; t.data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * 2 * half + i * 2 + j;
                let dst = h * 2 * half + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(HostTensor { shape: t.shape, data: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(hf_name("blk.12.attn_q.weight").unwrap(), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.attn_k.bias").unwrap(), "model.layers.0.self_attn.k_proj.bias");
        assert_eq!(hf_name("blk.3.attn_k_norm.weight").unwrap(), "model.layers.3.self_attn.k_norm.weight");
        assert_eq!(hf_name("blk.1.ffn_norm.weight").unwrap(), "model.layers.1.post_attention_layernorm.weight");
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.ffn_gate_exps.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp's convert `permute`: w.reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(...)
        let (n_head, rows, cols) = (3, 12, 2);
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let half = rows / n_head / 2;
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * 2 * half + j * half + i; // (h, j, i) of HF
                    let dst = h * 2 * half + i * 2 + j; // (h, i, j) after swapaxes
                    gguf[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let back = unpermute_rows(HostTensor::new(vec![rows, cols], gguf).unwrap(), n_head).unwrap();
        assert_eq!(back.data, hf);
        assert!(unpermute_rows(HostTensor::new(vec![6, 1], vec![0.0; 6]).unwrap(), 4).is_err());
    }
}
