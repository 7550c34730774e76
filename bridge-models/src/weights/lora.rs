//! LoRA adapter w, kept apart from the base θ so that both are trained at once.
//!
//! For every layer and every targeted projection, the adapter holds `lora_A [r, in]` and
//! `lora_B [out, r]`; the decoder computes `x·Wᵀ + b + (alpha/r)·(x·Aᵀ)·Bᵀ`. Unlike burn's
//! `apply_lora`, nothing is frozen: θ and w are two modules with two parameter groups, and the
//! same adapter can be passed with two different bases (BRIDGE's θ and θ̂) in one step.
//!
//! Adapters are saved on their own in the PEFT format (`adapter_model.safetensors` with keys
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{target}.lora_{A|B}.weight`, and
//! `adapter_config.json`), so `peft.PeftModel.from_pretrained` loads them: this module names the
//! tensors ([`LoraAdapter::to_tensor_map`], [`LoraAdapter::from_tensor_map`]); the I/O layer
//! writes and reads the directory ([`LoraAdapter::save_peft`], [`LoraAdapter::load_peft`]).

use super::precision::cast_module;
use crate::config::DecoderConfig;
use crate::tensors::{HostTensor, TensorMap};
use bridge_core::{BridgeError, BridgeRng, Result};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// A linear projection of a decoder layer that LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoraTarget {
    /// Query projection.
    QProj,
    /// Key projection.
    KProj,
    /// Value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl LoraTarget {
    /// Every target, in layer order.
    pub const ALL: [Self; 7] =
        [Self::QProj, Self::KProj, Self::VProj, Self::OProj, Self::GateProj, Self::UpProj, Self::DownProj];

    /// The HF module name (`q_proj`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OProj => "o_proj",
            Self::GateProj => "gate_proj",
            Self::UpProj => "up_proj",
            Self::DownProj => "down_proj",
        }
    }

    /// The parent module (`self_attn` or `mlp`).
    pub fn module(self) -> &'static str {
        match self {
            Self::QProj | Self::KProj | Self::VProj | Self::OProj => "self_attn",
            Self::GateProj | Self::UpProj | Self::DownProj => "mlp",
        }
    }

    /// The target called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

fn default_rank() -> usize {
    16
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    LoraTarget::ALL.iter().map(|t| t.name().to_owned()).collect()
}

/// Shape of a LoRA adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of every pair.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// `alpha`; the update is scaled by `alpha / r`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Projections to adapt, by HF name.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: default_rank(), alpha: default_alpha(), targets: default_targets() }
    }
}

impl LoraConfig {
    /// Checks the values and resolves the target names, naming the bad field.
    pub fn validate(&self) -> Result<Vec<LoraTarget>> {
        if self.rank == 0 {
            return Err(BridgeError::config("lora.rank", "must be ≥ 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(BridgeError::config("lora.alpha", format!("must be > 0, got {}", self.alpha)));
        }
        if self.targets.is_empty() {
            return Err(BridgeError::config("lora.targets", "must name at least one projection"));
        }
        let mut out = Vec::new();
        for name in &self.targets {
            let t = LoraTarget::from_name(name).ok_or_else(|| {
                BridgeError::config(
                    "lora.targets",
                    format!("unknown projection `{name}` (expected one of {:?})", default_targets()),
                )
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// One LoRA pair.
#[derive(Module, Debug)]
pub struct LoraPair {
    /// `[r, in]`: Kaiming-uniform at initialisation (PEFT's default).
    pub lora_a: Param<Tensor<2>>,
    /// `[out, r]`: zero at initialisation, so the adapted model starts equal to the base.
    pub lora_b: Param<Tensor<2>>,
}

/// The pairs of one decoder layer (`None` for projections that are not targeted).
#[derive(Module, Debug)]
pub struct LoraLayer {
    /// Query projection.
    pub q_proj: Option<LoraPair>,
    /// Key projection.
    pub k_proj: Option<LoraPair>,
    /// Value projection.
    pub v_proj: Option<LoraPair>,
    /// Attention output projection.
    pub o_proj: Option<LoraPair>,
    /// MLP gate projection.
    pub gate_proj: Option<LoraPair>,
    /// MLP up projection.
    pub up_proj: Option<LoraPair>,
    /// MLP down projection.
    pub down_proj: Option<LoraPair>,
}

impl LoraLayer {
    /// The pair adapting `target`, if any.
    pub fn pair(&self, target: LoraTarget) -> Option<&LoraPair> {
        match target {
            LoraTarget::QProj => self.q_proj.as_ref(),
            LoraTarget::KProj => self.k_proj.as_ref(),
            LoraTarget::VProj => self.v_proj.as_ref(),
            LoraTarget::OProj => self.o_proj.as_ref(),
            LoraTarget::GateProj => self.gate_proj.as_ref(),
            LoraTarget::UpProj => self.up_proj.as_ref(),
            LoraTarget::DownProj => self.down_proj.as_ref(),
        }
    }

    fn slot(&mut self, target: LoraTarget) -> &mut Option<LoraPair> {
        match target {
            LoraTarget::QProj => &mut self.q_proj,
            LoraTarget::KProj => &mut self.k_proj,
            LoraTarget::VProj => &mut self.v_proj,
            LoraTarget::OProj => &mut self.o_proj,
            LoraTarget::GateProj => &mut self.gate_proj,
            LoraTarget::UpProj => &mut self.up_proj,
            LoraTarget::DownProj => &mut self.down_proj,
        }
    }

    fn empty() -> Self {
        Self { q_proj: None, k_proj: None, v_proj: None, o_proj: None, gate_proj: None, up_proj: None, down_proj: None }
    }
}

/// The adapter w: LoRA pairs for every layer, applicable to any base of its architecture.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// One entry per decoder layer.
    pub layers: Vec<LoraLayer>,
    /// Rank, alpha and targets.
    #[module(skip)]
    pub config: LoraConfig,
}

/// `[out, in]` of each target for `cfg`.
fn target_dims(cfg: &DecoderConfig, t: LoraTarget) -> [usize; 2] {
    let (h, q, kv, f) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
    match t {
        LoraTarget::QProj => [q, h],
        LoraTarget::KProj | LoraTarget::VProj => [kv, h],
        LoraTarget::OProj => [h, q],
        LoraTarget::GateProj | LoraTarget::UpProj => [f, h],
        LoraTarget::DownProj => [h, f],
    }
}

fn peft_key(layer: usize, t: LoraTarget, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.{}.lora_{which}.weight", t.module(), t.name())
}

fn host_param(t: &HostTensor, device: &Device) -> Param<Tensor<2>> {
    let shape = [t.shape[0], t.shape[1]];
    Param::from_tensor(Tensor::from_data(TensorData::new(t.data.clone(), shape), device))
}

impl LoraAdapter {
    /// This adapter with every `B` factor drawn from `N(0, std²)` (layer by layer, then q, k, v,
    /// o, gate, up, down, row-major): an adapter that changes the model's output, for tests and
    /// backend checks (a fresh adapter has `B = 0` and equals the base).
    pub fn with_random_b(mut self, std: f64, rng: &mut BridgeRng) -> Self {
        for layer in &mut self.layers {
            for pair in [
                &mut layer.q_proj,
                &mut layer.k_proj,
                &mut layer.v_proj,
                &mut layer.o_proj,
                &mut layer.gate_proj,
                &mut layer.up_proj,
                &mut layer.down_proj,
            ]
            .into_iter()
            .flatten()
            {
                let b = pair.lora_b.val();
                let [o, r] = b.dims();
                let values: Vec<f32> = (0..o * r).map(|_| (rng.normal() * std) as f32).collect();
                let fresh: Tensor<2> = Tensor::from_data(TensorData::new(values, [o, r]), &b.device());
                let fresh = fresh.cast(b.dtype());
                pair.lora_b = Param::from_tensor(fresh);
            }
        }
        self
    }

    /// This adapter with every parameter in `dtype` (see [`DecoderWeights::cast`]).
    ///
    /// [`DecoderWeights::cast`]: crate::DecoderWeights::cast
    pub fn cast(self, dtype: burn::tensor::FloatDType) -> Self {
        cast_module(self, dtype)
    }

    /// The dtype of the adapter's parameters (`None` for an adapter without any pair).
    pub fn dtype(&self) -> Option<burn::tensor::DType> {
        self.layers
            .iter()
            .find_map(|l| LoraTarget::ALL.into_iter().find_map(|t| l.pair(t)))
            .map(|p| p.lora_a.val().dtype())
    }

    /// A fresh adapter for `cfg`: `lora_A` Kaiming-uniform (`U(−1/√in, 1/√in)`, PEFT's default)
    /// drawn on the host from `rng`, `lora_B` zero.
    pub fn init(cfg: &DecoderConfig, lora: &LoraConfig, device: &Device, rng: &mut BridgeRng) -> Result<Self> {
        let targets = lora.validate()?;
        let r = lora.rank;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            let mut layer = LoraLayer::empty();
            for t in LoraTarget::ALL {
                if !targets.contains(&t) {
                    continue;
                }
                let [out, inp] = target_dims(cfg, t);
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..r * inp).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
                *layer.slot(t) = Some(LoraPair {
                    lora_a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [r, inp]), device)),
                    lora_b: Param::from_tensor(Tensor::zeros([out, r], device)),
                });
            }
            layers.push(layer);
        }
        Ok(Self { layers, config: lora.clone() })
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// Checks that the adapter fits a base of architecture `cfg` (shapes only).
    pub fn check(&self, cfg: &DecoderConfig) -> Result<()> {
        if self.layers.len() != cfg.num_hidden_layers {
            return Err(BridgeError::Model(format!(
                "adapter has {} layers, the model {}",
                self.layers.len(),
                cfg.num_hidden_layers
            )));
        }
        let r = self.config.rank;
        for (i, l) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(p) = l.pair(t) {
                    let [out, inp] = target_dims(cfg, t);
                    if p.lora_a.dims() != [r, inp] || p.lora_b.dims() != [out, r] {
                        return Err(BridgeError::Model(format!(
                            "adapter layer {i} `{}`: A {:?} and B {:?} do not fit [{out}, {inp}] at rank {r}",
                            t.name(),
                            p.lora_a.dims(),
                            p.lora_b.dims()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The adapter as PEFT-named host tensors.
    pub fn to_tensor_map(&self) -> Result<TensorMap> {
        let mut map = TensorMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(p) = l.pair(t) {
                    for (which, param) in [("A", &p.lora_a), ("B", &p.lora_b)] {
                        let v = param.val();
                        let shape = v.dims().to_vec();
                        let data = v
                            .into_data()
                            .convert::<f32>()
                            .try_into_vec::<f32>()
                            .map_err(|e| BridgeError::Model(format!("reading an adapter weight: {e:?}")))?;
                        map.insert(peft_key(i, t, which), HostTensor::new(shape, data)?);
                    }
                }
            }
        }
        Ok(map)
    }

    /// The adapter of configuration `lora` for a base of architecture `cfg` from PEFT-named host
    /// tensors (`base_model.model.model.layers.{i}.{module}.{target}.lora_{A|B}[.default].weight`).
    ///
    /// Every targeted projection needs both factors with the shapes `cfg` and the rank imply, and
    /// every tensor of the map must belong to the adapter; errors are [`BridgeError::Model`]
    /// naming the tensor.
    pub fn from_tensor_map(cfg: &DecoderConfig, lora: &LoraConfig, map: &TensorMap, device: &Device) -> Result<Self> {
        let resolved = lora.validate()?;
        let rank = lora.rank;
        let mut used = 0usize;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let mut layer = LoraLayer::empty();
            for t in LoraTarget::ALL {
                let (ka, kb) = (peft_key(i, t, "A"), peft_key(i, t, "B"));
                // PEFT may keep the adapter name in the key ("lora_A.default.weight").
                let get = |k: &str| map.get(k).or_else(|| map.get(&k.replace(".weight", ".default.weight")));
                match (get(&ka), get(&kb)) {
                    (Some(a), Some(b)) => {
                        let [out, inp] = target_dims(cfg, t);
                        if a.shape != [rank, inp] || b.shape != [out, rank] {
                            return Err(BridgeError::Model(format!(
                                "`{ka}` / `{kb}` have shapes {:?} / {:?}, expected {:?} / {:?}",
                                a.shape,
                                b.shape,
                                [rank, inp],
                                [out, rank]
                            )));
                        }
                        *layer.slot(t) =
                            Some(LoraPair { lora_a: host_param(a, device), lora_b: host_param(b, device) });
                        used += 2;
                    }
                    (None, None) if !resolved.contains(&t) => {}
                    (None, None) | (None, Some(_)) => {
                        return Err(BridgeError::Model(format!("tensor `{ka}` is missing")));
                    }
                    (Some(_), None) => return Err(BridgeError::Model(format!("tensor `{kb}` is missing"))),
                }
            }
            layers.push(layer);
        }
        if used != map.len() {
            let extra = map
                .keys()
                .find(|k| {
                    !(0..cfg.num_hidden_layers).any(|i| {
                        LoraTarget::ALL.iter().any(|&t| {
                            let (a, b) = (peft_key(i, t, "A"), peft_key(i, t, "B"));
                            [
                                a.clone(),
                                b.clone(),
                                a.replace(".weight", ".default.weight"),
                                b.replace(".weight", ".default.weight"),
                            ]
                            .contains(k)
                        })
                    })
                })
                .cloned()
                .unwrap_or_default();
            return Err(BridgeError::Model(format!(
                "tensor `{extra}` does not belong to a LoRA adapter of this model"
            )));
        }
        Ok(Self { layers, config: lora.clone() })
    }
}
