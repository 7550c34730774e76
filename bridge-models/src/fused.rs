//! The fused CPU training engine: [`CausalLm::token_scores`](bridge_core::policy::CausalLm) as
//! one custom autodiff operation with a hand-written backward pass.
//!
//! burn's autodiff records every tensor operation of the forward (about forty per layer: norms,
//! projections, rotary, masking, softmax, SiLU, reshapes), and burn-flex runs each as its own
//! pass over memory. The fused engine instead:
//!
//! 1. flattens the base θ and the adapter w into one vector (a differentiable `cat` of every
//!    parameter, so that gradients reach each parameter through burn's own graph; the slots
//!    are described by `layout`);
//! 2. runs the whole decoder forward over host `f32` buffers (`forward`), keeping
//!    the activations the backward needs, and returns the per-target log-probabilities as the
//!    output of one graph node (`op`: the burn backend extension);
//! 3. in the backward pass, turns the log-probabilities' gradient into the gradient of the flat
//!    vector (`backward`), which burn splits back to the parameters.
//!
//! The row arithmetic of both passes is the crate's CPU row kernels (`crate::kernels`), which
//! the host decoding engine runs too; activations come from a pool of reused buffers (`pool`).
//!
//! Everything a loss does with the log-probabilities (SFT's NLL, GRPO's clipped ratio and KL,
//! BRIDGE's weighted sums) stays in burn: the engine only replaces the model. Its results equal
//! the tensor engine's up to `f32` rounding (tests compare log-probabilities and every
//! parameter's gradient, and check the backward against finite differences).
//!
//! # When it runs
//! [`ScoringEngine::Auto`](crate::decoder::ScoringEngine) (the default) uses it for `f32`
//! weights on burn's `flex` CPU backend; other backends and dtypes (the GPU, bf16, f64 gradient
//! checks) use the tensor engine.
//! The entropy (when asked for) is an output of the same node, differentiable too.

mod backward;
mod forward;
mod layout;
mod op;
mod pool;

use crate::decoder::Decoder;
use crate::weights::lora::{LoraAdapter, LoraPair};
use crate::weights::{DecoderWeights, Proj, RmsNorm};
use bridge_core::policy::{SequenceBatch, TokenScores};
use bridge_core::{BridgeError, Result};
use burn::module::Param;
use burn::tensor::Tensor;
use layout::{BatchPlan, FusedCall, LayerSlots, ParamLayout, ProjSlots, Slot};
use std::sync::Arc;

/// Collects the parameters in a fixed order (their flattened tensors) and their slots.
struct Flattener {
    parts: Vec<Tensor<1>>,
    total: usize,
}

impl Flattener {
    fn push<const D: usize>(&mut self, p: &Param<Tensor<D>>) -> Slot {
        let t = p.val();
        let len = t.shape().num_elements();
        self.parts.push(t.reshape([len]));
        let slot = Slot { offset: self.total, len };
        self.total += len;
        slot
    }

    fn norm(&mut self, n: &RmsNorm) -> Slot {
        self.push(&n.weight)
    }

    fn proj(&mut self, p: &Proj, lora: Option<&LoraPair>) -> ProjSlots {
        let [out, inp] = p.dims();
        ProjSlots {
            weight: self.push(&p.weight),
            bias: p.bias.as_ref().map(|b| self.push(b)),
            lora: lora.map(|pair| (self.push(&pair.lora_a), self.push(&pair.lora_b))),
            inp,
            out,
        }
    }
}

/// The flat parameter vector of `base` (and `adapter`) and its layout.
fn flatten(lm: &Decoder, base: &DecoderWeights, adapter: Option<&LoraAdapter>) -> (Tensor<1>, ParamLayout) {
    let cfg = lm.config();
    let mut f = Flattener { parts: Vec::new(), total: 0 };
    let embed = f.push(&base.embed_tokens.weight);
    let mut layers = Vec::with_capacity(base.layers.len());
    for (i, layer) in base.layers.iter().enumerate() {
        let lora = adapter.and_then(|a| a.layers.get(i));
        let attn = &layer.self_attn;
        let mlp = &layer.mlp;
        layers.push(LayerSlots {
            input_norm: f.norm(&layer.input_layernorm),
            q: f.proj(&attn.q_proj, lora.and_then(|l| l.q_proj.as_ref())),
            k: f.proj(&attn.k_proj, lora.and_then(|l| l.k_proj.as_ref())),
            v: f.proj(&attn.v_proj, lora.and_then(|l| l.v_proj.as_ref())),
            o: f.proj(&attn.o_proj, lora.and_then(|l| l.o_proj.as_ref())),
            q_norm: attn.q_norm.as_ref().map(|n| f.norm(n)),
            k_norm: attn.k_norm.as_ref().map(|n| f.norm(n)),
            post_norm: f.norm(&layer.post_attention_layernorm),
            gate: f.proj(&mlp.gate_proj, lora.and_then(|l| l.gate_proj.as_ref())),
            up: f.proj(&mlp.up_proj, lora.and_then(|l| l.up_proj.as_ref())),
            down: f.proj(&mlp.down_proj, lora.and_then(|l| l.down_proj.as_ref())),
        });
    }
    let norm = f.norm(&base.norm);
    let lm_head = base.lm_head.as_ref().map(|h| f.proj(h, None));
    let layout = ParamLayout {
        vocab: cfg.vocab_size,
        hidden: cfg.hidden_size,
        intermediate: cfg.intermediate_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_key_value_heads,
        head_dim: cfg.head_dim,
        eps: cfg.rms_norm_eps as f32,
        lora_scale: adapter.map_or(0.0, |a| a.scale() as f32),
        lora_rank: adapter.map_or(0, |a| a.config.rank),
        embed,
        layers,
        norm,
        lm_head,
        total: f.total,
    };
    (Tensor::cat(f.parts, 0), layout)
}

/// The batch's ids, padding and rotary tables.
fn batch_plan(lm: &Decoder, batch: &SequenceBatch) -> BatchPlan {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let mut ids = Vec::with_capacity(b * t);
    let mut valid = Vec::with_capacity(b * t);
    for row in batch.rows() {
        ids.extend_from_slice(&row.tokens);
        ids.extend(std::iter::repeat_n(batch.pad_id(), t - row.tokens.len()));
        valid.extend((0..t).map(|j| j < row.tokens.len()));
    }
    let (cos, sin) = lm.rope().rows(&(0..t).collect::<Vec<_>>());
    BatchPlan { batch: b, seq: t, ids, valid, cos, sin }
}

/// [`CausalLm::token_scores`](bridge_core::policy::CausalLm::token_scores) through the fused
/// engine (the caller has checked the weights, the ids and the engine choice).
pub(crate) fn token_scores(
    lm: &Decoder,
    base: &DecoderWeights,
    adapter: Option<&LoraAdapter>,
    batch: &SequenceBatch,
    with_entropy: bool,
) -> Result<TokenScores> {
    let device = base.embed_tokens.weight.device();
    let (b, t) = (batch.batch_size(), batch.seq_len());
    if t < 2 {
        return Err(BridgeError::InvalidInput(format!("a batch of length {t} has no target to score")));
    }
    let (flat, layout) = flatten(lm, base, adapter);
    let call = Arc::new(FusedCall { layout, plan: batch_plan(lm, batch), with_entropy });
    let m = b * (t - 1);
    let out = op::fused_token_logprobs(flat, call);
    let (logprobs, entropy) = if with_entropy {
        (out.clone().narrow(0, 0, m).reshape([b, t - 1]), Some(out.narrow(0, m, m).reshape([b, t - 1])))
    } else {
        (out.reshape([b, t - 1]), None)
    };
    Ok(TokenScores { logprobs, entropy, mask: batch.target_mask(&device) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DecoderConfig;
    use crate::weights::lora::LoraConfig;
    use bridge_core::BridgeRng;
    use bridge_core::policy::TokenSequence;
    use bridge_core::testing::CharCodec;
    use burn::tensor::Device;

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// `Σ c·logprobs + Σ e·entropy` in f64.
    fn objective(out: &forward::ForwardOut, c: &[f32], e: &[f32]) -> f64 {
        let lp: f64 = out.logprobs.iter().zip(c).map(|(&x, &c)| f64::from(x) * f64::from(c)).sum();
        let h: f64 = out.entropy.as_ref().unwrap().iter().zip(e).map(|(&x, &e)| f64::from(x) * f64::from(e)).sum();
        lp + h
    }

    /// The hand-written backward against central finite differences of the forward, on the
    /// largest-gradient coordinate of every tensor (base and adapter), for a Qwen3 layout (q/k
    /// norms, untied head) and a Qwen2 one (q/k/v biases, tied head).
    #[test]
    fn backward_matches_finite_differences() {
        let configs = [
            serde_json::json!({
                "model_type": "qwen3", "vocab_size": 24, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                "tie_word_embeddings": false, "rope_theta": 10000.0
            }),
            serde_json::json!({
                "model_type": "qwen2", "vocab_size": 24, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "tie_word_embeddings": true, "rope_theta": 10000.0
            }),
        ];
        let device = Device::flex();
        for json in configs {
            let cfg = DecoderConfig::from_hf_json(&json).unwrap();
            let lm = Decoder::new(cfg, Box::new(CharCodec::new("abcdefgh"))).unwrap();
            let mut rng = BridgeRng::seed_from_u64(7);
            let base = lm.init_weights(&device, &mut rng).unwrap();
            let lora = LoraConfig { rank: 2, alpha: 4.0, ..Default::default() };
            let adapter = lm.init_adapter(&lora, &device, &mut rng).unwrap().with_random_b(0.2, &mut rng);
            let batch = SequenceBatch::new(
                vec![
                    TokenSequence::prompt_completion(&[1, 2, 3], &[4, 5, 6]),
                    TokenSequence::all_scored(vec![7, 3, 1, 9]),
                ],
                0,
            )
            .unwrap();
            let (flat, layout) = flatten(&lm, &base, Some(&adapter));
            let mut p = host(flat);
            let plan = batch_plan(&lm, &batch);
            let m = batch.batch_size() * (batch.seq_len() - 1);
            let c: Vec<f32> = (0..m).map(|i| ((i * 7 % 5) as f32 - 2.0) / 2.0).collect();
            let e: Vec<f32> = (0..m).map(|i| ((i * 3 % 4) as f32 - 1.5) / 3.0).collect();
            let out = forward::forward(&p, &layout, &plan, true, true);
            let g = backward::backward(&p, &layout, &plan, out.saved.as_ref().unwrap(), &c, Some(&e));

            let mut slots = vec![layout.embed, layout.norm];
            for l in &layout.layers {
                slots.extend([l.input_norm, l.post_norm]);
                slots.extend(l.q_norm.into_iter().chain(l.k_norm));
                for proj in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                    slots.push(proj.weight);
                    slots.extend(proj.bias);
                    if let Some((a, b)) = proj.lora {
                        slots.extend([a, b]);
                    }
                }
            }
            if let Some(head) = &layout.lm_head {
                slots.push(head.weight);
            }
            let covered: usize = slots.iter().map(|s| s.len).sum();
            assert_eq!(covered, layout.total, "the test visits every tensor");
            // small next to the weights (std 0.02, and the norms make the objective sensitive to
            // their scale), large next to the forward's f32 rounding
            let h = 2e-4f32;
            for slot in slots {
                let i =
                    (slot.offset..slot.offset + slot.len).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
                let x = p[i];
                p[i] = x + h;
                let up = objective(&forward::forward(&p, &layout, &plan, true, false), &c, &e);
                p[i] = x - h;
                let down = objective(&forward::forward(&p, &layout, &plan, true, false), &c, &e);
                p[i] = x;
                let fd = ((up - down) / (2.0 * f64::from(h))) as f32;
                assert!(
                    (fd - g[i]).abs() <= 5e-3 + 1e-2 * g[i].abs(),
                    "{}: coordinate {i} (slot at {}): backward {} vs finite difference {fd}",
                    json["model_type"],
                    slot.offset,
                    g[i]
                );
            }
        }
    }
}
