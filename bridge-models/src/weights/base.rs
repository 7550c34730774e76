//! The decoder-only transformer shared by Llama, Qwen2 and Qwen3, as a [`CausalLm`].
//!
//! The three families differ only in where biases sit (Qwen2: q, k, v), whether queries and keys
//! get a per-head RMSNorm before the rotary embedding (Qwen3) and how rotary frequencies are
//! scaled (Llama 3). Everything else is common:
//!
//! ```text
//! h = embed_tokens[ids]
//! for each layer:
//!     h = h + o_proj(attention(rope(q_norm(q_proj(n))), rope(k_norm(k_proj(n))), v_proj(n)))   n = input_layernorm(h)
//!     h = h + down_proj(silu(gate_proj(n)) * up_proj(n))                                       n = post_attention_layernorm(h)
//! logits = lm_head(norm(h))            (lm_head = embed_tokensᵀ when tied)
//! ```
//!
//! Attention is causal and grouped-query (each key/value head serves
//! `num_attention_heads / num_key_value_heads` query heads, as in `transformers`' `repeat_kv`);
//! batches are right-padded, positions are `0..T`, and padded keys are masked.
//!
//! # Precision
//! The weights are f32 by default; [`DecoderWeights::cast`] (and [`LoraAdapter::cast`]) convert
//! them to another float dtype, typically bf16 on the GPU. The forward then follows
//! `transformers`' mixed precision exactly where it matters: activations, projections, rotary
//! embedding and SiLU run in the weights' dtype; RMSNorm computes its statistic in f32 and casts
//! back before the scale (`weight * x.to(input_dtype)`); attention scores are upcast to f32 for
//! the mask and the softmax (`softmax(..., dtype=float32).to(q.dtype)`); the logits returned by
//! [`Decoder::forward_logits`] and every log-probability are f32.
//!
//! The weights are split as BRIDGE needs them: [`Decoder`] holds only the architecture (config,
//! rotary tables, codec), [`DecoderWeights`] is the base θ and [`LoraAdapter`] the adapter w. Every
//! linear projection computes `x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ` when an adapter is passed, so θ and w
//! are trained together and one adapter can be applied to two bases without copying.

use crate::config::DecoderConfig;
use crate::lora::{LoraAdapter, LoraLayer, LoraPair};
use crate::tensors::{HostTensor, TensorMap, transpose};
use bridge_core::policy::{CausalLm, Completion, SamplingParams, SequenceBatch, TextCodec, TokenScores};
use bridge_core::{BridgeError, BridgeRng, Result};
use burn::module::ModuleMapper;
use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax as log_softmax_t, silu, softmax};
use burn::tensor::module::linear;
use burn::tensor::{Bool, DType, Device, FloatDType, Int, Tensor, TensorData};
use std::sync::RwLock;

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

/// `x·w + b` over the last dimension of `x`, computed as one 2-D product: the leading dimensions
/// are folded into the rows first (a free reshape of the contiguous activations). burn's `linear`
/// on a rank-3 input runs a batched matmul that re-packs the weight per batch and, for a
/// non-contiguous weight, copies it; its backward does the same with the transposed weight.
/// In 2-D every operand (including a transposed view) goes to the strided gemm without a copy.
pub(crate) fn linear_rows<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    let mut dims = x.dims();
    let inp = dims[D - 1];
    let rows = dims.iter().product::<usize>() / inp.max(1);
    dims[D - 1] = w.dims()[1];
    linear(x.reshape([rows, inp]), w, b).reshape(dims)
}

/// `x·w + b` rounded once: in a half dtype with a bias, the product and the bias are summed in
/// f32 before the single rounding, as PyTorch's `addmm` (and cuBLAS' bias epilogue) do; burn's
/// half-dtype matmul would round the product before the bias is added.
fn affine_rows<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    match (x.dtype(), b) {
        (dtype @ (DType::BF16 | DType::F16), Some(b)) => {
            to_dtype(linear_rows(upcast_half(x), upcast_half(w), Some(upcast_half(b))), dtype)
        }
        (_, b) => linear_rows(x, w, b),
    }
}

impl Proj {
    /// `x·W + b`, plus `scale·(x·Aᵀ)·Bᵀ` when a LoRA pair is given.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, lora: Option<(&LoraPair, f64)>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        match lora {
            None => affine_rows(x, self.weight.val(), bias),
            Some((pair, scale)) => {
                let down = linear_rows(x.clone(), pair.lora_a.val().transpose(), None);
                let up = linear_rows(down, pair.lora_b.val().transpose(), None);
                affine_rows(x, self.weight.val(), bias) + mul_scalar_rounded(up, scale)
            }
        }
    }

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

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) · weight` over the last dimension. In f32 (and f64, for gradient
    /// checks) everything stays in the dtype of `x`; in a half dtype the normalisation runs in f32
    /// and is cast back before the scale, as `transformers` does.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, eps: f64) -> Tensor<D> {
        let dtype = x.dtype();
        let x = upcast_half(x);
        let inv_rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt().recip();
        to_dtype(x * inv_rms, dtype) * self.weight.val().unsqueeze::<D>()
    }
}

/// `t` in `dtype` (no operation when it already is).
pub(crate) fn to_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(FloatDType::from(dtype)) }
}

/// `t` in f32 when it is a half dtype (bf16, f16), unchanged otherwise (f32 and f64).
pub(crate) fn upcast_half<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.cast(FloatDType::F32),
        _ => t,
    }
}

/// `t · s`. In a half dtype the product is computed in f32 and rounded once, as PyTorch does
/// (burn-flex would first round the scalar itself to the half dtype).
pub(crate) fn mul_scalar_rounded<const D: usize>(t: Tensor<D>, s: f64) -> Tensor<D> {
    match t.dtype() {
        dtype @ (DType::BF16 | DType::F16) => to_dtype(t.cast(FloatDType::F32).mul_scalar(s), dtype),
        _ => t.mul_scalar(s),
    }
}

/// `silu(x)`, in a half dtype computed in f32 and rounded once (PyTorch's kernel; burn's `silu` is
/// `x · sigmoid(x)`, two roundings).
fn silu_rounded<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    to_dtype(silu(upcast_half(x)), dtype)
}

/// Casts every float parameter to one dtype, keeping parameter ids and `require_grad` flags.
struct CastFloats(FloatDType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| {
            let grad = t.is_require_grad();
            let t = t.cast(dtype).detach();
            if grad { t.require_grad() } else { t }
        })
    }
}

/// `module` with every float parameter cast to `dtype` (detached: a new leaf per parameter).
pub(crate) fn cast_module<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastFloats(dtype))
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
    pub fn proj(&self, target: crate::lora::LoraTarget) -> &Proj {
        use crate::lora::LoraTarget as T;
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

    fn proj_mut(&mut self, target: crate::lora::LoraTarget) -> &mut Proj {
        use crate::lora::LoraTarget as T;
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

fn tensor_from_host<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

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

fn layer_proj_specs(cfg: &DecoderConfig, i: usize) -> Vec<(crate::lora::LoraTarget, ProjSpec)> {
    use crate::lora::LoraTarget as T;
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
            for t in crate::lora::LoraTarget::ALL {
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
    /// generation; see the [module docs](self) for what stays in f32). Saving converts back to
    /// f32 files. Training in a half dtype works (gradients and AdamW state follow the weights'
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
            for t in crate::lora::LoraTarget::ALL {
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

fn check_pair(pair: &LoraPair, [out, inp]: [usize; 2], t: crate::lora::LoraTarget) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// The architecture and its forward pass.
// ---------------------------------------------------------------------------------------------

/// Host-side rotary tables `[positions, head_dim]` (cos and sin of `cat(freqs, freqs)`), grown on
/// demand and shared by every forward pass.
#[derive(Default)]
struct RopeTables {
    positions: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Which implementation computes [`token_scores`](bridge_core::policy::CausalLm::token_scores)
/// and its gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScoringEngine {
    /// [`ScoringEngine::Fused`] for `f32` weights on the `flex` CPU backend,
    /// [`ScoringEngine::Tensor`] otherwise.
    #[default]
    Auto,
    /// burn tensor operations: any backend and dtype; every output differentiable.
    Tensor,
    /// One fused operation over host `f32` buffers (see [`crate::fused`]).
    Fused,
}

impl std::str::FromStr for ScoringEngine {
    type Err = BridgeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "tensor" => Ok(Self::Tensor),
            "fused" => Ok(Self::Fused),
            other => {
                Err(BridgeError::InvalidInput(format!("unknown scoring engine `{other}` (auto, tensor or fused)")))
            }
        }
    }
}

impl std::fmt::Display for ScoringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tensor => "tensor",
            Self::Fused => "fused",
        })
    }
}

/// Whether `device` is burn's `flex` CPU backend (with or without autodiff).
pub(crate) fn is_flex(device: &Device) -> bool {
    format!("{device:?}").contains("Flex(")
}

/// Whether the fused scoring engine can run on `device` (flex, in a build with this crate's
/// `flex` feature).
fn fused_runs_on(device: &Device) -> bool {
    cfg!(feature = "flex") && is_flex(device)
}

impl ScoringEngine {
    /// Whether the fused engine scores weights of `dtype` on `device`; fails when
    /// [`ScoringEngine::Fused`] is asked for where it cannot run.
    pub(crate) fn uses_fused(self, dtype: DType, device: &Device) -> Result<bool> {
        match self {
            Self::Tensor => Ok(false),
            Self::Auto => Ok(dtype == DType::F32 && fused_runs_on(device)),
            Self::Fused if dtype != DType::F32 => Err(BridgeError::InvalidInput(format!(
                "the fused scoring engine runs f32 weights, these are {dtype:?}"
            ))),
            Self::Fused if !fused_runs_on(device) => Err(BridgeError::InvalidInput(format!(
                "the fused scoring engine runs on the flex CPU backend, not on {device:?}"
            ))),
            Self::Fused => Ok(true),
        }
    }
}

/// The architecture of a decoder: config, rotary tables and codec. The weights are passed to
/// every call (see [`CausalLm`]).
pub struct Decoder {
    config: DecoderConfig,
    codec: Box<dyn TextCodec>,
    scoring: ScoringEngine,
    inv_freq: Vec<f32>,
    rope: RwLock<RopeTables>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .field("codec_vocab_size", &self.codec.vocab_size())
            .finish_non_exhaustive()
    }
}

/// Per-call constants of a forward pass: rotary tables and the additive attention mask.
///
/// # Shapes
/// The rotary tables are `[1 or B, 1, T, d]` (one row per sequence when positions differ by
/// row, as in [`crate::generate`]); `mask_bias` is `[1 or B, 1, T, S]` for `T` queries over `S`
/// keys (`S = T` in training, the filled cache length when decoding).
pub(crate) struct ForwardCtx {
    pub(crate) cos: Tensor<4>,
    pub(crate) sin: Tensor<4>,
    /// The query's table: `cos / √head_dim` (the attention scale folded in) in f32/f64, `cos`
    /// in a half dtype (see [`query_tables`]).
    pub(crate) cos_q: Tensor<4>,
    /// `sin / √head_dim` or `sin`, as `cos_q`.
    pub(crate) sin_q: Tensor<4>,
    /// The attention scale still to apply to the scores (`Some` in a half dtype).
    pub(crate) score_scale: Option<f64>,
    /// `[1, 1, d, d]`: see [`rotate_half_matrix`].
    pub(crate) rot: Tensor<4>,
    pub(crate) mask_bias: Tensor<4>,
}

/// The query's rotary tables for f32 tables `cos`, `sin` and weights of `dtype`, in `dtype`, with
/// the scale left for the scores: in f32/f64 the softmax scale `1/√d` is folded into the tables
/// (one multiplication fewer per layer; exact up to f32 rounding); in a half dtype it is applied
/// to the scores after `q·kᵀ`, where `transformers` applies it, so that every bf16 rounding
/// happens where it does there.
pub(crate) fn query_tables(
    cos: &Tensor<4>,
    sin: &Tensor<4>,
    head_dim: usize,
    dtype: DType,
) -> (Tensor<4>, Tensor<4>, Option<f64>) {
    let scale = 1.0 / (head_dim as f64).sqrt();
    match dtype {
        DType::BF16 | DType::F16 => (to_dtype(cos.clone(), dtype), to_dtype(sin.clone(), dtype), Some(scale)),
        _ => (to_dtype(cos.clone().mul_scalar(scale), dtype), to_dtype(sin.clone().mul_scalar(scale), dtype), None),
    }
}

/// What is added to the score of a masked (query, key) pair: large and negative but finite, so a
/// fully masked row gives a uniform distribution instead of NaN.
pub(crate) const MASKED: f32 = -1.0e9;

impl Decoder {
    /// The architecture `config` with the tokenizer `codec`. Fails when the codec's vocabulary
    /// is larger than the embedding.
    pub fn new(config: DecoderConfig, codec: Box<dyn TextCodec>) -> Result<Self> {
        config.validate()?;
        if codec.vocab_size() > config.vocab_size {
            return Err(BridgeError::Tokenizer(format!(
                "the tokenizer has {} tokens but the model's embedding only {} rows",
                codec.vocab_size(),
                config.vocab_size
            )));
        }
        let inv_freq = config.rope_inv_freq().into_iter().map(|f| f as f32).collect();
        Ok(Self { config, codec, scoring: ScoringEngine::Auto, inv_freq, rope: RwLock::new(RopeTables::default()) })
    }

    /// The architecture.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// This decoder scoring with `engine` ([`ScoringEngine::Auto`] by default).
    pub fn with_scoring_engine(mut self, engine: ScoringEngine) -> Self {
        self.scoring = engine;
        self
    }

    /// The engine [`CausalLm::token_scores`] runs on (see [`ScoringEngine`]).
    pub fn scoring_engine(&self) -> ScoringEngine {
        self.scoring
    }

    /// A random base θ (see [`DecoderWeights::init`]).
    pub fn init_weights(&self, device: &Device, rng: &mut BridgeRng) -> Result<DecoderWeights> {
        DecoderWeights::init(&self.config, device, rng)
    }

    /// A fresh LoRA adapter w for this architecture (see [`LoraAdapter::init`]).
    pub fn init_adapter(
        &self,
        lora: &crate::lora::LoraConfig,
        device: &Device,
        rng: &mut BridgeRng,
    ) -> Result<LoraAdapter> {
        LoraAdapter::init(&self.config, lora, device, rng)
    }

    /// Grows the host rotary tables to at least `t` positions.
    fn grow_rope(&self, t: usize) {
        let d = self.config.head_dim;
        let half = d / 2;
        let need_grow = self.rope.read().map(|r| r.positions < t).unwrap_or(true);
        if need_grow {
            let mut tables = self.rope.write().unwrap_or_else(|e| e.into_inner());
            if tables.positions < t {
                let n = t.max(tables.positions * 2).max(64);
                let (mut cos, mut sin) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
                for p in 0..n {
                    for (i, &f) in self.inv_freq.iter().enumerate() {
                        // transformers multiplies in f32, then takes cos/sin of the f32 angle.
                        let angle = f64::from(p as f32 * f);
                        let (s, c) = angle.sin_cos();
                        cos[p * d + i] = c as f32;
                        cos[p * d + i + half] = c as f32;
                        sin[p * d + i] = s as f32;
                        sin[p * d + i + half] = s as f32;
                    }
                }
                *tables = RopeTables { positions: n, cos, sin };
            }
        }
    }

    /// Host rotary rows `(cos, sin)`, each `positions.len() × head_dim` values (row-major), for
    /// arbitrary positions (the generation engine's per-row positions).
    pub(crate) fn rope_rows(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let d = self.config.head_dim;
        self.grow_rope(positions.iter().max().map_or(1, |&p| p + 1));
        let tables = self.rope.read().unwrap_or_else(|e| e.into_inner());
        let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * d), Vec::with_capacity(positions.len() * d));
        for &p in positions {
            cos.extend_from_slice(&tables.cos[p * d..(p + 1) * d]);
            sin.extend_from_slice(&tables.sin[p * d..(p + 1) * d]);
        }
        (cos, sin)
    }

    fn rope_tensors(&self, t: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let d = self.config.head_dim;
        self.grow_rope(t);
        let tables = self.rope.read().unwrap_or_else(|e| e.into_inner());
        let cos = tensor_from_host(tables.cos[..t * d].to_vec(), [1, 1, t, d], device);
        let sin = tensor_from_host(tables.sin[..t * d].to_vec(), [1, 1, t, d], device);
        (cos, sin)
    }

    /// The additive mask `[B or 1, 1, T, T]`: 0 where query `i` may attend key `j` (`j ≤ i` and
    /// `j` is a real token), [`MASKED`] elsewhere.
    fn mask_bias(&self, b: usize, t: usize, lengths: Option<&[Vec<bool>]>, device: &Device) -> Tensor<4> {
        match lengths {
            None => {
                let mut m = vec![0.0f32; t * t];
                for i in 0..t {
                    for j in i + 1..t {
                        m[i * t + j] = MASKED;
                    }
                }
                tensor_from_host(m, [1, 1, t, t], device)
            }
            Some(valid) => {
                let mut m = vec![0.0f32; b * t * t];
                for (r, row) in valid.iter().enumerate() {
                    for i in 0..t {
                        for j in 0..t {
                            if j > i || !row[j] {
                                m[(r * t + i) * t + j] = MASKED;
                            }
                        }
                    }
                }
                tensor_from_host(m, [b, 1, t, t], device)
            }
        }
    }

    pub(crate) fn check_weights(&self, base: &DecoderWeights, adapter: Option<&LoraAdapter>) -> Result<()> {
        base.check(&self.config)?;
        if let Some(a) = adapter {
            a.check(&self.config)?;
            if let Some(dtype) = a.dtype()
                && dtype != base.dtype()
            {
                return Err(BridgeError::Model(format!(
                    "the adapter is {dtype:?} but the base weights are {:?}: cast both to one dtype",
                    base.dtype()
                )));
            }
        }
        Ok(())
    }

    /// The final hidden states `[B, T, hidden]` (after the last norm).
    fn forward_hidden(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        ids: Tensor<2, Int>,
        ctx: &ForwardCtx,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let cfg = &self.config;
        let mut h = base.embed_tokens.weight.val().select(0, ids.reshape([b * t])).reshape([b, t, cfg.hidden_size]);
        let scale = adapter.map_or(0.0, LoraAdapter::scale);
        for (i, layer) in base.layers.iter().enumerate() {
            let lora = adapter.and_then(|a| a.layers.get(i));
            h = self.layer_forward(layer, lora, scale, h, ctx, |k, v| (k, v));
        }
        base.norm.forward(h, cfg.rms_norm_eps)
    }

    /// `hidden [.., hidden] → logits [.., vocab]` through the LM head (or the tied embedding).
    pub(crate) fn head<const D: usize>(&self, base: &DecoderWeights, hidden: Tensor<D>) -> Tensor<D> {
        match &base.lm_head {
            Some(head) => head.forward(hidden, None),
            None => linear_rows(hidden, base.embed_tokens.weight.val().transpose(), None),
        }
    }

    /// One decoder layer, shared by training and generation.
    ///
    /// `kv` receives the new keys and values `[B, Hkv, T, d]` (after the rotary embedding) and
    /// returns those to attend over, `[B, Hkv, S, d]`: training passes them through
    /// (`|k, v| (k, v)`); the generation engine writes them into its cache and returns the filled
    /// cache. `ctx.mask_bias` must be `[1 or B, 1, T, S]`.
    ///
    /// # Shapes
    /// `x [B, T, hidden] → [B, T, hidden]`.
    pub(crate) fn layer_forward<F>(
        &self,
        layer: &DecoderLayer,
        lora: Option<&LoraLayer>,
        scale: f64,
        x: Tensor<3>,
        ctx: &ForwardCtx,
        kv: F,
    ) -> Tensor<3>
    where
        F: FnOnce(Tensor<4>, Tensor<4>) -> (Tensor<4>, Tensor<4>),
    {
        let eps = self.config.rms_norm_eps;
        let l = |f: fn(&LoraLayer) -> Option<&LoraPair>| lora.and_then(f).map(|p| (p, scale));

        // attention block
        let [b, t, _] = x.dims();
        let (hq, hkv, d) = (self.config.num_attention_heads, self.config.num_key_value_heads, self.config.head_dim);
        let n = layer.input_layernorm.forward(x.clone(), eps);
        let attn = &layer.self_attn;
        let mut q = attn.q_proj.forward(n.clone(), l(|w| w.q_proj.as_ref())).reshape([b, t, hq, d]);
        let mut k = attn.k_proj.forward(n.clone(), l(|w| w.k_proj.as_ref())).reshape([b, t, hkv, d]);
        let v = attn.v_proj.forward(n, l(|w| w.v_proj.as_ref())).reshape([b, t, hkv, d]);
        if let Some(qn) = &attn.q_norm {
            q = qn.forward(q, eps);
        }
        if let Some(kn) = &attn.k_norm {
            k = kn.forward(k, eps);
        }
        // The softmax scale 1/√d is folded into the query's rotary tables (in f32).
        let q = apply_rope(q.swap_dims(1, 2), &ctx.cos_q, &ctx.sin_q, &ctx.rot); // [B, Hq, T, d]
        let k = apply_rope(k.swap_dims(1, 2), &ctx.cos, &ctx.sin, &ctx.rot); // [B, Hkv, T, d]
        let (k, v) = kv(k, v.swap_dims(1, 2)); // [B, Hkv, S, d]
        let s = k.dims()[2];
        // Grouped-query attention without copying keys and values (`repeat_kv`): the n_rep query
        // heads sharing a key/value head are stacked along the time axis of one matmul.
        let n_rep = hq / hkv;
        let mut scores = q.reshape([b, hkv, n_rep * t, d]).matmul(k.swap_dims(2, 3)).reshape([b, hq, t, s]);
        if let Some(scale) = ctx.score_scale {
            scores = mul_scalar_rounded(scores, scale);
        }
        // Mask and softmax in f32 (the mask is f32), probabilities back in the activations' dtype.
        let dtype = scores.dtype();
        let probs = to_dtype(softmax(upcast_half(scores) + ctx.mask_bias.clone(), 3), dtype);
        let probs = probs.reshape([b, hkv, n_rep * t, s]);
        let o = probs.matmul(v).reshape([b, hq, t, d]).swap_dims(1, 2).reshape([b, t, hq * d]);
        let x = x + attn.o_proj.forward(o, l(|w| w.o_proj.as_ref()));

        // MLP block
        let n = layer.post_attention_layernorm.forward(x.clone(), eps);
        let mlp = &layer.mlp;
        let gate = silu_rounded(mlp.gate_proj.forward(n.clone(), l(|w| w.gate_proj.as_ref())));
        let up = mlp.up_proj.forward(n, l(|w| w.up_proj.as_ref()));
        x + mlp.down_proj.forward(gate * up, l(|w| w.down_proj.as_ref()))
    }

    pub(crate) fn check_ids(&self, ids: impl IntoIterator<Item = u32>) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some(bad) = ids.into_iter().find(|&x| x as usize >= v) {
            return Err(BridgeError::Model(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        Ok(())
    }

    /// The forward constants for weights of `dtype`: rotary tables in `dtype` (computed in f32 and
    /// cast, as `transformers` casts `cos`/`sin` to the activations' dtype), the mask in f32.
    fn ctx(&self, b: usize, t: usize, valid: Option<&[Vec<bool>]>, device: &Device, dtype: DType) -> ForwardCtx {
        let d = self.config.head_dim;
        let (cos, sin) = self.rope_tensors(t, device);
        let (cos_q, sin_q, score_scale) = query_tables(&cos, &sin, d, dtype);
        let rot = tensor_from_host(rotate_half_matrix(d), [1, 1, d, d], device);
        ForwardCtx {
            cos_q,
            sin_q,
            score_scale,
            cos: to_dtype(cos, dtype),
            sin: to_dtype(sin, dtype),
            rot: to_dtype(rot, dtype),
            mask_bias: self.mask_bias(b, t, valid, device),
        }
    }

    /// Logits `[B, T, vocab]` of `ids [B, T]` under `π(·; base, adapter)`, differentiable when the
    /// weights live on an autodiff device; f32 whatever the weights' dtype. `attention_mask [B, T]` marks real tokens (`true`) of
    /// right-padded rows; positions are `0..T` in every row.
    ///
    /// Fails (instead of panicking) on ids outside the vocabulary, mismatched mask shapes and
    /// weights or adapters that do not fit the config.
    pub fn forward_logits(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<3>> {
        self.check_weights(base, adapter)?;
        let [b, t] = ids.dims();
        if b == 0 || t == 0 {
            return Err(BridgeError::InvalidInput(format!("empty id tensor of shape [{b}, {t}]")));
        }
        let host_ids: Vec<i64> = ids
            .to_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| BridgeError::InvalidInput(format!("reading token ids: {e:?}")))?;
        if let Some(bad) = host_ids.iter().find(|&&x| x < 0 || x as u64 >= self.config.vocab_size as u64) {
            return Err(BridgeError::Model(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let valid = match attention_mask {
            None => None,
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(BridgeError::InvalidInput(format!(
                        "attention mask has shape {:?}, ids have [{b}, {t}]",
                        m.dims()
                    )));
                }
                let flat: Vec<bool> = m
                    .into_data()
                    .convert::<bool>()
                    .try_into_vec::<bool>()
                    .map_err(|e| BridgeError::InvalidInput(format!("reading the attention mask: {e:?}")))?;
                Some(flat.chunks(t).map(<[bool]>::to_vec).collect::<Vec<_>>())
            }
        };
        let device = base.embed_tokens.weight.device();
        let ctx = self.ctx(b, t, valid.as_deref(), &device, base.dtype());
        let hidden = self.forward_hidden(base, adapter, ids, &ctx);
        Ok(upcast_half(self.head(base, hidden)))
    }
}

/// HF's `x·cos + rotate_half(x)·sin` with `rotate_half(x) = cat(−x₂, x₁)` over the last dim,
/// computed as `x·cos + (x·R)·sin` with the signed permutation `R [d, d]` (one small matmul
/// instead of two slices, a negation and a concatenation).
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>, rot: &Tensor<4>) -> Tensor<4> {
    x.clone() * cos.clone() + x.matmul(rot.clone()) * sin.clone()
}

/// The matrix `R [d, d]` with `x·R = rotate_half(x)`.
pub(crate) fn rotate_half_matrix(d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut r = vec![0.0f32; d * d];
    for j in 0..half {
        r[(j + half) * d + j] = -1.0; // out[j] = −x[j + half]
        r[j * d + j + half] = 1.0; // out[j + half] = x[j]
    }
    r
}

impl CausalLm for Decoder {
    type Base = DecoderWeights;
    type Adapter = LoraAdapter;

    fn codec(&self) -> &dyn TextCodec {
        self.codec.as_ref()
    }

    fn token_scores(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        batch: &SequenceBatch,
        with_entropy: bool,
    ) -> Result<TokenScores> {
        self.check_weights(base, adapter)?;
        self.check_ids(batch.rows().iter().flat_map(|r| r.tokens.iter().copied()))?;
        let device = base.embed_tokens.weight.device();
        #[cfg(feature = "flex")]
        if self.scoring.uses_fused(base.dtype(), &device)? {
            return crate::fused::token_scores(self, base, adapter, batch, with_entropy);
        }
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let valid: Vec<Vec<bool>> = batch.rows().iter().map(|r| (0..t).map(|j| j < r.tokens.len()).collect()).collect();
        let all_full = valid.iter().all(|r| r.iter().all(|&x| x));
        let ctx = self.ctx(b, t, (!all_full).then_some(valid.as_slice()), &device, base.dtype());
        let ids = batch.ids(&device);
        let hidden = self.forward_hidden(base, adapter, ids.clone(), &ctx);
        // The last position predicts nothing that is scored.
        let logits = upcast_half(self.head(base, hidden.slice([0..b, 0..t - 1])));
        let logp = log_softmax_t(logits, 2); // [B, T−1, V], f32 whatever the weights' dtype
        let entropy = with_entropy.then(|| (logp.clone().exp() * logp.clone()).sum_dim(2).neg().reshape([b, t - 1]));
        let targets = ids.slice([0..b, 1..t]).reshape([b, t - 1, 1]);
        let logprobs = logp.gather(2, targets).reshape([b, t - 1]);
        Ok(TokenScores { logprobs, entropy, mask: batch.target_mask(&device) })
    }

    /// Samples with the KV-cache engine of [`crate::generate`] (prefill once per prompt, then
    /// incremental decoding of all `n` samples of every prompt together; see that module for the
    /// padding scheme and the seeded draw order). Sampling is restricted to the codec's
    /// vocabulary (embedding rows beyond it are padding); the recorded log-probability is the
    /// policy's own over the full vocabulary at temperature 1, as `token_scores` computes it.
    /// A completion stops at the codec's EOS ids, the config's `eos_token_id`s, `stop_token_ids`
    /// (the stop token is kept) or a stop string in its decoded text.
    fn sample(
        &self,
        base: &DecoderWeights,
        adapter: Option<&LoraAdapter>,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut BridgeRng,
    ) -> Result<Vec<Completion>> {
        crate::generate::generate(self, base, adapter, prompts, params, rng)
    }
}
