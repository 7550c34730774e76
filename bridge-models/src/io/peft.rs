//! PEFT adapter directories: `adapter_config.json` and `adapter_model.safetensors`, the files
//! `peft.PeftModel.from_pretrained` reads, for a [`LoraAdapter`] (whose tensor names are
//! [`LoraAdapter::to_tensor_map`]'s).

use super::hf::{read_safetensors, write_atomic, write_safetensors};
use crate::config::DecoderConfig;
use crate::weights::lora::{LoraAdapter, LoraConfig, LoraTarget};
use bridge_core::{BridgeError, Result};
use burn::tensor::Device;
use serde_json::{Value, json};
use std::path::Path;

impl LoraAdapter {
    /// Saves the adapter as a PEFT directory (`adapter_config.json`, `adapter_model.safetensors`),
    /// writing each file atomically.
    pub fn save_peft(&self, dir: impl AsRef<Path>, cfg: &DecoderConfig) -> Result<()> {
        let dir = dir.as_ref();
        self.check(cfg)?;
        std::fs::create_dir_all(dir).map_err(|e| BridgeError::io(dir, e))?;
        let targets: Vec<&str> = LoraTarget::ALL
            .iter()
            .filter(|t| self.layers.iter().any(|l| l.pair(**t).is_some()))
            .map(|t| t.name())
            .collect();
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "target_modules": targets,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "base_model_name_or_path": null,
            "revision": null,
        });
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| BridgeError::checkpoint(dir, format!("serialising adapter_config.json: {e}")))?;
        write_safetensors(&dir.join("adapter_model.safetensors"), &self.to_tensor_map()?, None)?;
        write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
    }

    /// Loads a PEFT LoRA directory saved by [`LoraAdapter::save_peft`] or by PEFT itself for a
    /// base of architecture `cfg`. Errors name the file (and the tensor).
    pub fn load_peft(dir: impl AsRef<Path>, cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| BridgeError::io(&cfg_path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| BridgeError::weights(&cfg_path, format!("not valid JSON: {e}")))?;
        let field = |k: &str| v.get(k).filter(|x| !x.is_null());
        let bad = |k: &str, m: String| BridgeError::weights(&cfg_path, format!("`{k}`: {m}"));
        if let Some(t) = field("peft_type").and_then(Value::as_str)
            && t != "LORA"
        {
            return Err(bad("peft_type", format!("expected LORA, got {t}")));
        }
        if field("use_rslora").and_then(Value::as_bool).unwrap_or(false) {
            return Err(bad("use_rslora", "rank-stabilised LoRA is not supported".into()));
        }
        let rank =
            field("r").and_then(Value::as_u64).ok_or_else(|| bad("r", "missing or not an integer".into()))? as usize;
        let alpha = field("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
        let targets: Vec<String> = match field("target_modules") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| bad("target_modules", "expected strings".into())))
                .collect::<Result<_>>()?,
            Some(Value::String(s)) if s == "all-linear" => LoraConfig::default().targets,
            other => return Err(bad("target_modules", format!("expected a list of module names, got {other:?}"))),
        };
        let lora = LoraConfig { rank, alpha, targets };
        lora.validate().map_err(|e| bad("target_modules", e.to_string()))?;

        let st_path = dir.join("adapter_model.safetensors");
        let map = read_safetensors(&st_path)?;
        LoraAdapter::from_tensor_map(cfg, &lora, &map, device).map_err(|e| match e {
            BridgeError::Model(m) => BridgeError::weights(&st_path, m),
            other => other,
        })
    }
}
