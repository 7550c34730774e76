//! The base weights θ of a decoder ([`DecoderWeights`]) and their parts: the token embedding,
//! the layers (grouped-query attention and SwiGLU MLP projections, RMSNorm scales) and the final
//! norm and LM head.
//!
//! Field names mirror the HF keys without the `model.` prefix, and a [`TensorMap`] under those
//! keys is the currency of every loader: [`DecoderWeights::from_tensor_map`] is the one place a
//! map becomes a model, whatever file it came from. This module builds (random init, from a map),
//! checks, exports, casts and merges weights; it computes no forward pass (`crate::forward` adds
//! [`Proj::forward`] and [`RmsNorm::forward`]) and reads no file (`crate::io`).

use super::lora::{LoraAdapter, LoraPair, LoraTarget};
use super::precision::cast_module;
use crate::config::DecoderConfig;
use crate::tensors::{HostTensor, TensorMap, tensor_from_host, transpose};
use bridge_core::{BridgeError, BridgeRng, Result};
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// A linear projection: `weight [in, out]` (burn's `Linear` layout, the transpose of the HF
/// tensor of the same name), optional `bias [out]`.
///
/// The weight is kept transposed relative to `transformers` so that `x·W` needs no copy: burn's
/// `linear` reshapes a non-contiguous (transposed) weight into a fresh buffer on every call.
/// [`DecoderWeights::from_tensor_map`] / [`DecoderWeights::to_tensor_map`] transpose on the host,
/// so files keep the HF `[out, in]` layout.
#[derive(Module, Debug)]
pub struct Proj {
    /// `[in, out]`: the transpose of the HF `…weight [out, in]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Proj {
    /// `[out, in]` of the projection (the HF shape of its weight).
    pub fn dims(&self) -> [usize; 2] {
        let [inp, out] = self.weight.dims();
        [out, inp]
    }
}

/// A projection weight `[in, out]` from HF-layout values `[out, in]`.
fn proj_weight_from_hf(values: &[f32], out: usize, inp: usize, device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(tensor_from_host(transpose(values, out, inp), [inp, out], device))
}

/// The scale vector of an RMSNorm (`weight [d]`); epsilon comes from the config.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[d]`, ones at initialisation.
    pub weight: Param<Tensor<1>>,
}

/// The token embedding (`weight [vocab, hidden]`).
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab, hidden]`.
    pub weight: Param<Tensor<2>>,
}

/// Grouped-query self-attention weights.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// `[heads·head_dim, hidden]`.
    pub q_proj: Proj,
    /// `[kv_heads·head_dim, hidden]`.
    pub k_proj: Proj,
    /// `[kv_heads·head_dim, hidden]`.
    pub v_proj: Proj,
    /// `[hidden, heads·head_dim]`.
    pub o_proj: Proj,
    /// Qwen3's per-head query norm (`[head_dim]`).
    pub q_norm: Option<RmsNorm>,
    /// Qwen3's per-head key norm (`[head_dim]`).
    pub k_norm: Option<RmsNorm>,
}

/// SwiGLU MLP weights.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[intermediate, hidden]`.
    pub gate_proj: Proj,
    /// `[intermediate, hidden]`.
    pub up_proj: Proj,
    /// `[hidden, intermediate]`.
    pub down_proj: Proj,
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Attention block.
    pub self_attn: SelfAttention,
    /// MLP block.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// The projection a LoRA target names.
    pub fn proj(&self, target: LoraTarget) -> &Proj {
        use LoraTarget as T;
        match target {
            T::QProj => &self.self_attn.q_proj,
            T::KProj => &self.self_attn.k_proj,
            T::VProj => &self.self_attn.v_proj,
            T::OProj => &self.self_attn.o_proj,
            T::GateProj => &self.mlp.gate_proj,
            T::UpProj => &self.mlp.up_proj,
            T::DownProj => &self.mlp.down_proj,
        }
    }

    fn proj_mut(&mut self, target: LoraTarget) -> &mut Proj {
        use LoraTarget as T;
        match target {
            T::QProj => &mut self.self_attn.q_proj,
            T::KProj => &mut self.self_attn.k_proj,
            T::VProj => &mut self.self_attn.v_proj,
            T::OProj => &mut self.self_attn.o_proj,
            T::GateProj => &mut self.mlp.gate_proj,
            T::UpProj => &mut self.mlp.up_proj,
            T::DownProj => &mut self.mlp.down_proj,
        }
    }
}

/// The base weights θ of a decoder. Field names mirror the HF keys without the `model.` prefix
/// (`layers.0.self_attn.q_proj.weight` is `model.layers.0.self_attn.q_proj.weight`).
#[derive(Module, Debug)]
pub struct DecoderWeights {
    /// Token embedding.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// The LM head `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<Proj>,
}

// ---------------------------------------------------------------------------------------------
// Construction: random init, from / to a TensorMap.
// ---------------------------------------------------------------------------------------------

fn normal_param<const D: usize>(shape: [usize; D], std: f64, device: &Device, rng: &mut BridgeRng) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    let values = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Param::from_tensor(tensor_from_host(values, shape, device))
}

/// A projection weight `[in, out]` holding the same draws as `normal_param([out, in], ..)` (the
/// HF-layout tensor), transposed.
fn normal_proj_weight(out: usize, inp: usize, std: f64, device: &Device, rng: &mut BridgeRng) -> Param<Tensor<2>> {
    let values: Vec<f32> = (0..out * inp).map(|_| (rng.normal() * std) as f32).collect();
    proj_weight_from_hf(&values, out, inp, device)
}

fn const_param<const D: usize>(shape: [usize; D], value: f32, device: &Device) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_tensor(tensor_from_host(vec![value; n], shape, device))
}

/// The HF tensor names and shapes of one linear projection of the model.
struct ProjSpec {
    name: String,
    out: usize,
    inp: usize,
    bias: bool,
}

fn layer_proj_specs(cfg: &DecoderConfig, i: usize) -> Vec<(LoraTarget, ProjSpec)> {
    use LoraTarget as T;
    let (h, q, kv, f) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
    let spec = |t: T, out, inp, bias| {
        (t, ProjSpec { name: format!("model.layers.{i}.{}.{}", t.module(), t.name()), out, inp, bias })
    };
    vec![
        spec(T::QProj, q, h, cfg.qkv_bias),
        spec(T::KProj, kv, h, cfg.qkv_bias),
        spec(T::VProj, kv, h, cfg.qkv_bias),
        spec(T::OProj, h, q, cfg.o_bias),
        spec(T::GateProj, f, h, cfg.mlp_bias),
        spec(T::UpProj, f, h, cfg.mlp_bias),
        spec(T::DownProj, h, f, cfg.mlp_bias),
    ]
}

/// Reads a tensor of a fixed shape out of a [`TensorMap`], marking it used.
struct MapReader<'a> {
    map: &'a TensorMap,
    used: std::collections::BTreeSet<&'a str>,
    device: &'a Device,
}

impl<'a> MapReader<'a> {
    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<D>>> {
        let t = self.take_host(name, shape)?;
        Ok(Param::from_tensor(tensor_from_host(t.data.clone(), shape, self.device)))
    }

    /// The host tensor `name`, checked to have `shape`, marked used.
    fn take_host<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<&'a HostTensor> {
        let (key, t): (&'a String, &'a HostTensor) =
            self.map.get_key_value(name).ok_or_else(|| BridgeError::Model(format!("tensor `{name}` is missing")))?;
        if t.shape.as_slice() != shape.as_slice() {
            return Err(BridgeError::Model(format!(
                "tensor `{name}` has shape {:?}, expected {:?} from the config",
                t.shape, shape
            )));
        }
        if t.data.len() != shape.iter().product::<usize>() {
            return Err(BridgeError::Model(format!(
                "tensor `{name}` holds {} values for shape {:?}",
                t.data.len(),
                shape
            )));
        }
        self.used.insert(key.as_str());
        Ok(t)
    }

    fn proj(&mut self, spec: &ProjSpec) -> Result<Proj> {
        let hf = self.take_host(&format!("{}.weight", spec.name), [spec.out, spec.inp])?;
        let weight = proj_weight_from_hf(&hf.data, spec.out, spec.inp, self.device);
        let bias = if spec.bias { Some(self.take(&format!("{}.bias", spec.name), [spec.out])?) } else { None };
        Ok(Proj { weight, bias })
    }

    fn norm(&mut self, name: &str, d: usize) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.take(&format!("{name}.weight"), [d])? })
    }
}

fn param_to_host<const D: usize>(p: &Param<Tensor<D>>) -> Result<HostTensor> {
    let t = p.val();
    let shape = t.dims().to_vec();
    let data: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading a weight back to the host: {e:?}")))?;
    HostTensor::new(shape, data)
}

impl DecoderWeights {
    /// A random model: every linear weight and the embedding drawn from
    /// `N(0, initializer_range²)` on the host from `rng` (deterministic, independent of burn's
    /// global RNG), biases zero, norms one — `transformers`' `_init_weights`.
    pub fn init(cfg: &DecoderConfig, device: &Device, rng: &mut BridgeRng) -> Result<Self> {
        cfg.validate()?;
        let std = cfg.initializer_range;
        let embed_tokens = Embedding { weight: normal_param([cfg.vocab_size, cfg.hidden_size], std, device, rng) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let mut projs = layer_proj_specs(cfg, i).into_iter().map(|(_, s)| Proj {
                weight: normal_proj_weight(s.out, s.inp, std, device, rng),
                bias: s.bias.then(|| const_param([s.out], 0.0, device)),
            });
            // The iterator yields q, k, v, o, gate, up, down in order.
            let mut next = || projs.next().ok_or_else(|| BridgeError::Model("projection list too short".into()));
            let (q_proj, k_proj, v_proj, o_proj) = (next()?, next()?, next()?, next()?);
            let (gate_proj, up_proj, down_proj) = (next()?, next()?, next()?);
            let qk_norm = || cfg.qk_norm.then(|| RmsNorm { weight: const_param([cfg.head_dim], 1.0, device) });
            layers.push(DecoderLayer {
                self_attn: SelfAttention { q_proj, k_proj, v_proj, o_proj, q_norm: qk_norm(), k_norm: qk_norm() },
                mlp: Mlp { gate_proj, up_proj, down_proj },
                input_layernorm: RmsNorm { weight: const_param([cfg.hidden_size], 1.0, device) },
                post_attention_layernorm: RmsNorm { weight: const_param([cfg.hidden_size], 1.0, device) },
            });
        }
        let norm = RmsNorm { weight: const_param([cfg.hidden_size], 1.0, device) };
        let lm_head = (!cfg.tie_word_embeddings).then(|| Proj {
            weight: normal_proj_weight(cfg.vocab_size, cfg.hidden_size, std, device, rng),
            bias: None,
        });
        Ok(Self { embed_tokens, layers, norm, lm_head })
    }

    /// Builds the model from HF-named host tensors: the single place where a weight map becomes
    /// a model, whatever file it came from.
    ///
    /// Every tensor the config implies must be present with its exact shape, and every tensor of
    /// the map must be used (except rotary caches and a tied `lm_head.weight`), so a config that
    /// does not match the weights is reported instead of silently mis-loaded. Errors are
    /// [`BridgeError::Model`] naming the tensor.
    pub fn from_tensor_map(cfg: &DecoderConfig, map: &TensorMap, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut r = MapReader { map, used: Default::default(), device };
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let embed_tokens = Embedding { weight: r.take("model.embed_tokens.weight", [cfg.vocab_size, h])? };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let specs = layer_proj_specs(cfg, i);
            let mut projs = Vec::with_capacity(7);
            for (_, s) in &specs {
                projs.push(r.proj(s)?);
            }
            let mut it = projs.into_iter();
            let mut next = || it.next().ok_or_else(|| BridgeError::Model("projection list too short".into()));
            let (q_proj, k_proj, v_proj, o_proj) = (next()?, next()?, next()?, next()?);
            let (gate_proj, up_proj, down_proj) = (next()?, next()?, next()?);
            let p = format!("model.layers.{i}");
            let (q_norm, k_norm) = if cfg.qk_norm {
                (Some(r.norm(&format!("{p}.self_attn.q_norm"), d)?), Some(r.norm(&format!("{p}.self_attn.k_norm"), d)?))
            } else {
                (None, None)
            };
            layers.push(DecoderLayer {
                self_attn: SelfAttention { q_proj, k_proj, v_proj, o_proj, q_norm, k_norm },
                mlp: Mlp { gate_proj, up_proj, down_proj },
                input_layernorm: r.norm(&format!("{p}.input_layernorm"), h)?,
                post_attention_layernorm: r.norm(&format!("{p}.post_attention_layernorm"), h)?,
            });
        }
        let norm = r.norm("model.norm", h)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(r.proj(&ProjSpec { name: "lm_head".into(), out: cfg.vocab_size, inp: h, bias: false })?)
        };
        let unused: Vec<&String> = map
            .keys()
            .filter(|k| {
                let ignorable =
                    k.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && k.as_str() == "lm_head.weight");
                !(r.used.contains(k.as_str()) || ignorable)
            })
            .collect();
        if let Some(first) = unused.first() {
            return Err(BridgeError::Model(format!(
                "{} tensor(s) are not used by a {} model with this config, e.g. `{first}`",
                unused.len(),
                cfg.architecture.model_type()
            )));
        }
        Ok(Self { embed_tokens, layers, norm, lm_head })
    }

    /// The weights as HF-named host tensors (f32, `[out, in]` layout), e.g. to save them.
    pub fn to_tensor_map(&self) -> Result<TensorMap> {
        let mut map = TensorMap::new();
        map.insert("model.embed_tokens.weight".into(), param_to_host(&self.embed_tokens.weight)?);
        let put_proj = |map: &mut TensorMap, name: String, p: &Proj| -> Result<()> {
            let w = param_to_host(&p.weight)?; // [in, out]
            let [inp, out] = p.weight.dims();
            map.insert(format!("{name}.weight"), HostTensor::new(vec![out, inp], transpose(&w.data, inp, out))?);
            if let Some(b) = &p.bias {
                map.insert(format!("{name}.bias"), param_to_host(b)?);
            }
            Ok(())
        };
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for t in LoraTarget::ALL {
                put_proj(&mut map, format!("{p}.{}.{}", t.module(), t.name()), l.proj(t))?;
            }
            if let Some(n) = &l.self_attn.q_norm {
                map.insert(format!("{p}.self_attn.q_norm.weight"), param_to_host(&n.weight)?);
            }
            if let Some(n) = &l.self_attn.k_norm {
                map.insert(format!("{p}.self_attn.k_norm.weight"), param_to_host(&n.weight)?);
            }
            map.insert(format!("{p}.input_layernorm.weight"), param_to_host(&l.input_layernorm.weight)?);
            map.insert(
                format!("{p}.post_attention_layernorm.weight"),
                param_to_host(&l.post_attention_layernorm.weight)?,
            );
        }
        map.insert("model.norm.weight".into(), param_to_host(&self.norm.weight)?);
        if let Some(head) = &self.lm_head {
            put_proj(&mut map, "lm_head".into(), head)?;
        }
        Ok(map)
    }

    /// These weights with every parameter in `dtype` (e.g. [`FloatDType::BF16`] for GPU
    /// generation; see [`precision`](crate::weights::precision) for what stays in f32). Saving
    /// converts back to f32 files. Training in a half dtype works (gradients and AdamW state follow the weights'
    /// dtype) but keeps no f32 master copy, so updates smaller than bf16's resolution are lost:
    /// prefer training the f32 weights and casting a snapshot for rollouts or evaluation.
    pub fn cast(self, dtype: FloatDType) -> Self {
        cast_module(self, dtype)
    }

    /// The device the weights live on (that of the embedding).
    pub fn device(&self) -> Device {
        self.embed_tokens.weight.val().device()
    }

    /// The dtype of the weights (that of the embedding).
    pub fn dtype(&self) -> DType {
        self.embed_tokens.weight.val().dtype()
    }

    /// Checks that these weights have the shapes `cfg` implies (cheap: shapes only).
    pub fn check(&self, cfg: &DecoderConfig) -> Result<()> {
        let bad = |what: String| Err(BridgeError::Model(format!("weights do not match the config: {what}")));
        if self.layers.len() != cfg.num_hidden_layers {
            return bad(format!("{} layers, config has {}", self.layers.len(), cfg.num_hidden_layers));
        }
        if self.embed_tokens.weight.dims() != [cfg.vocab_size, cfg.hidden_size] {
            return bad(format!("embedding {:?}", self.embed_tokens.weight.dims()));
        }
        if self.lm_head.is_none() != cfg.tie_word_embeddings {
            return bad("lm_head presence disagrees with tie_word_embeddings".into());
        }
        for (i, l) in self.layers.iter().enumerate() {
            for (t, s) in layer_proj_specs(cfg, i) {
                if l.proj(t).dims() != [s.out, s.inp] {
                    return bad(format!("`{}` has shape {:?}", s.name, l.proj(t).dims()));
                }
            }
            if l.self_attn.q_norm.is_some() != cfg.qk_norm {
                return bad(format!("layer {i}: q/k norm presence disagrees with the architecture"));
            }
        }
        Ok(())
    }

    /// Folds the adapter into a new set of base weights: `W ← W + scale·B·A` for every adapted
    /// projection. The result is detached from any graph; its parameters are fresh (new ids).
    pub fn merge(&self, adapter: &LoraAdapter) -> Result<Self> {
        if adapter.layers.len() != self.layers.len() {
            return Err(BridgeError::Model(format!(
                "adapter has {} layers, the base has {}",
                adapter.layers.len(),
                self.layers.len()
            )));
        }
        let fresh1 = |p: &Param<Tensor<1>>| Param::from_tensor(p.val().detach());
        let fresh2 = |p: &Param<Tensor<2>>| Param::from_tensor(p.val().detach());
        let fresh_proj = |p: &Proj| Proj { weight: fresh2(&p.weight), bias: p.bias.as_ref().map(fresh1) };
        let fresh_norm = |n: &RmsNorm| RmsNorm { weight: fresh1(&n.weight) };
        let scale = adapter.scale();
        let mut layers = Vec::with_capacity(self.layers.len());
        for (l, a) in self.layers.iter().zip(&adapter.layers) {
            let mut new = DecoderLayer {
                self_attn: SelfAttention {
                    q_proj: fresh_proj(&l.self_attn.q_proj),
                    k_proj: fresh_proj(&l.self_attn.k_proj),
                    v_proj: fresh_proj(&l.self_attn.v_proj),
                    o_proj: fresh_proj(&l.self_attn.o_proj),
                    q_norm: l.self_attn.q_norm.as_ref().map(fresh_norm),
                    k_norm: l.self_attn.k_norm.as_ref().map(fresh_norm),
                },
                mlp: Mlp {
                    gate_proj: fresh_proj(&l.mlp.gate_proj),
                    up_proj: fresh_proj(&l.mlp.up_proj),
                    down_proj: fresh_proj(&l.mlp.down_proj),
                },
                input_layernorm: fresh_norm(&l.input_layernorm),
                post_attention_layernorm: fresh_norm(&l.post_attention_layernorm),
            };
            for t in LoraTarget::ALL {
                if let Some(pair) = a.pair(t) {
                    let w = l.proj(t);
                    check_pair(pair, w.dims(), t)?;
                    // (B·A)ᵀ = Aᵀ·Bᵀ, in the `[in, out]` layout of the stored weight.
                    let delta = pair.lora_a.val().transpose().matmul(pair.lora_b.val().transpose()).mul_scalar(scale);
                    new.proj_mut(t).weight = Param::from_tensor((w.weight.val() + delta).detach());
                }
            }
            layers.push(new);
        }
        Ok(Self {
            embed_tokens: Embedding { weight: fresh2(&self.embed_tokens.weight) },
            layers,
            norm: fresh_norm(&self.norm),
            lm_head: self.lm_head.as_ref().map(fresh_proj),
        })
    }
}

fn check_pair(pair: &LoraPair, [out, inp]: [usize; 2], t: LoraTarget) -> Result<()> {
    let [ra, ia] = pair.lora_a.dims();
    let [ob, rb] = pair.lora_b.dims();
    if ia != inp || ob != out || ra != rb {
        return Err(BridgeError::Model(format!(
            "LoRA pair for `{}` has A {:?} and B {:?}, which do not fit a [{out}, {inp}] weight",
            t.name(),
            [ra, ia],
            [ob, rb]
        )));
    }
    Ok(())
}

/// Folds the adapter w into the base θ: a new [`DecoderWeights`] with `W + (alpha/r)·B·A` for
/// every adapted projection (see [`DecoderWeights::merge`]).
pub fn merge(base: &DecoderWeights, adapter: &LoraAdapter) -> Result<DecoderWeights> {
    base.merge(adapter)
}
