//! The decode step with static shapes, captured once per call and replayed: the GPU path of
//! [`DecodeEngine::Graph`](crate::generate::DecodeEngine::Graph).
//!
//! A captured step must replay against the same buffers every time, so nothing in it may depend
//! on the step's position through a *shape* or a host value:
//! - the KV cache is preallocated (`[B, Hkv, capacity, d]`) and written in place at the step's
//!   slot with `select_assign` (burn's in-place write when the cache tensor is uniquely owned,
//!   which [`StaticBatch`] guarantees), and attention runs over all `capacity` slots with the
//!   unfilled ones masked;
//! - the slot, the token ids and the rows' uniform draws are *input tensors* ([`StaticBatch`]'s
//!   `slot`, `tokens`, `uniforms`), refreshed in place before each step; the rotary rows of the
//!   slot are gathered with `select` and the mask is `pad + MASKED · (position > slot)`;
//! - the token is chosen on the device ([`super::select`]) and the step's output is the
//!   `[B, 2]` (token, log-probability) tensor, the only thing read back.
//!
//! [`Stepper`] runs the step either eagerly (a CPU backend, top-p without top-k, or capture turned
//! off) or through burn 0.22.1's `burn::tensor::capture`: three warm-up runs (kernel compilation,
//! autotuning, and every buffer allocated before the capture opens), one run recorded into a
//! CUDA graph, then `Graph::replay` for every step: one graph launch instead of one launch per
//! kernel. On a backend without graphs (wgpu, flex) `capture` falls back to re-running the
//! closure, which is what the eager mode does without the warm-up runs.
//!
//! Rows that finish stay in the batch (their outputs are ignored) until at most half of it is
//! live; then the batch is compacted and the step captured again (new shapes). At most `log₂ B`
//! captures per call, and at most 2× the live rows' compute. Without a graph (eager mode) the
//! batch is compacted as soon as a row finishes, as the tensor engine does.

use super::select::{SelectionRule, read_picks, select};
use crate::decoder::Decoder;
use crate::forward::{ForwardCtx, MASKED};
use crate::weights::DecoderWeights;
use crate::weights::lora::LoraAdapter;
use bridge_core::{BridgeError, Result};
use burn::tensor::{Device, Graph, IndexingUpdateOp, Int, Tensor, TensorData, capture};
use std::cell::RefCell;

/// The tensors a static decode step reads and writes, all of fixed shape for the life of a
/// capture (see the [module docs](self)).
///
/// # Shapes
/// `tokens [B]`, `slot [1]`, `uniforms [B, 1]` (f32); keys and values `[B, Hkv, capacity, d]` per
/// layer; rotary tables `[B, 1, capacity, d]`; `pad [B, 1, 1, capacity]` (additive, f32).
pub(crate) struct StaticBatch {
    tokens: Tensor<1, Int>,
    slot: Tensor<1, Int>,
    uniforms: Tensor<2>,
    keys: Vec<Tensor<4>>,
    values: Vec<Tensor<4>>,
    cos: Tensor<4>,
    sin: Tensor<4>,
    cos_q: Tensor<4>,
    sin_q: Tensor<4>,
    score_scale: Option<f64>,
    pad: Tensor<4>,
    /// `[1, 1, 1, capacity]`: `0, 1, …, capacity − 1`.
    positions: Tensor<4, Int>,
    /// Whether every in-place write found its tensor uniquely owned (meaningful on backends that
    /// track ownership, cubecl and fusion; see `Tensor::can_mut`).
    in_place: bool,
}

/// The cache of a prefilled batch, handed over to a [`StaticBatch`] (the tensor engine's
/// `KvCache`, taken apart).
pub(crate) struct CacheParts {
    pub(crate) keys: Vec<Tensor<4>>,
    pub(crate) values: Vec<Tensor<4>>,
    pub(crate) cos: Tensor<4>,
    pub(crate) sin: Tensor<4>,
    pub(crate) cos_q: Tensor<4>,
    pub(crate) sin_q: Tensor<4>,
    pub(crate) score_scale: Option<f64>,
    pub(crate) pad: Tensor<4>,
}

fn int_tensor(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Keeps (and reorders) the rows `rows` of every per-row cache tensor in `tensors` (rows are
/// dimension 0; the caller has checked them): how both engines compact a batch or repeat its
/// prompt rows.
///
/// # Shapes
/// each tensor: `[B, …]` → `[rows.len(), …]`
pub(crate) fn select_cache_rows<'t>(
    tensors: impl IntoIterator<Item = &'t mut Tensor<4>>,
    rows: &[usize],
    device: &Device,
) {
    let idx = int_tensor(rows.iter().map(|&r| r as i64).collect(), device);
    for t in tensors {
        *t = t.clone().select(0, idx.clone());
    }
}

/// `values` written over the whole of `*t`, in place when `*t` is uniquely owned.
fn refresh<const D: usize, K>(t: &mut Tensor<D, K>, values: Tensor<D, K>, in_place: &mut bool)
where
    K: burn::tensor::kind::Basic,
{
    *in_place &= t.can_mut();
    let whole = t.dims().map(|n| 0..n);
    t.inplace(|t| t.slice_assign(whole, values));
}

impl StaticBatch {
    /// A batch over a prefilled cache (`rows` rows).
    pub(crate) fn new(parts: CacheParts) -> Self {
        let [b, _, _, capacity] = parts.pad.dims();
        let device = parts.pad.device();
        Self {
            tokens: int_tensor(vec![0; b], &device),
            slot: int_tensor(vec![0], &device),
            uniforms: Tensor::zeros([b, 1], &device),
            keys: parts.keys,
            values: parts.values,
            cos: parts.cos,
            sin: parts.sin,
            cos_q: parts.cos_q,
            sin_q: parts.sin_q,
            score_scale: parts.score_scale,
            pad: parts.pad,
            positions: Tensor::<1, Int>::arange(0..capacity as i64, &device).reshape([1, 1, 1, capacity]),
            in_place: true,
        }
    }

    /// Number of rows `B`.
    pub(crate) fn rows(&self) -> usize {
        self.tokens.dims()[0]
    }

    /// Number of slots per row.
    pub(crate) fn capacity(&self) -> usize {
        self.pad.dims()[3]
    }

    /// Keeps (and reorders) the rows `rows`: compaction. The inputs are reallocated at the new
    /// size, so a graph captured before must not be replayed after.
    pub(crate) fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let b = self.rows();
        if rows.is_empty() || rows.iter().any(|&r| r >= b) {
            return Err(BridgeError::InvalidInput(format!("selecting rows {rows:?} of a batch of {b}")));
        }
        let device = self.pad.device();
        let rope = [&mut self.cos, &mut self.sin, &mut self.cos_q, &mut self.sin_q, &mut self.pad];
        select_cache_rows(self.keys.iter_mut().chain(self.values.iter_mut()).chain(rope), rows, &device);
        self.tokens = int_tensor(vec![0; rows.len()], &device);
        self.uniforms = Tensor::zeros([rows.len(), 1], &device);
        Ok(())
    }

    /// Writes the step's inputs in place: one token per row, the slot they go to, and one
    /// uniform draw per row (ignored by greedy selection).
    pub(crate) fn set_inputs(&mut self, tokens: &[u32], slot: usize, uniforms: &[f32]) -> Result<()> {
        let b = self.rows();
        if tokens.len() != b || uniforms.len() != b {
            return Err(BridgeError::InvalidInput(format!(
                "{} tokens and {} uniforms for a batch of {b}",
                tokens.len(),
                uniforms.len()
            )));
        }
        if slot >= self.capacity() {
            return Err(BridgeError::InvalidInput(format!("the KV cache is full ({} slots)", self.capacity())));
        }
        let device = self.pad.device();
        let mut in_place = self.in_place;
        refresh(&mut self.tokens, int_tensor(tokens.iter().map(|&t| i64::from(t)).collect(), &device), &mut in_place);
        refresh(&mut self.slot, int_tensor(vec![slot as i64], &device), &mut in_place);
        let u = Tensor::from_data(TensorData::new(uniforms.to_vec(), [b, 1]), &device);
        refresh(&mut self.uniforms, u, &mut in_place);
        self.in_place = in_place;
        Ok(())
    }
}

/// The model a step runs: the decoder, its graph-free weights and the selection rule.
pub(crate) struct StepModel<'a> {
    pub(crate) lm: &'a Decoder,
    pub(crate) base: &'a DecoderWeights,
    pub(crate) adapter: Option<&'a LoraAdapter>,
    /// `[d]`: rotate-half as an index permutation, see `crate::forward::rotate_half_index`.
    pub(crate) rot: &'a Tensor<1, Int>,
    pub(crate) rule: SelectionRule,
}

/// One decode step over `batch`: embeds its tokens, runs every layer with the cache written in
/// place at its slot, and selects the next token of every row.
///
/// # Shapes
/// Returns `[B, 2]`: (token id, log-probability) per row.
pub(crate) fn step(model: &StepModel<'_>, batch: &mut StaticBatch) -> Tensor<2> {
    let cfg = model.lm.config();
    let b = batch.rows();
    let x = model.base.embed_tokens.weight.val().select(0, batch.tokens.clone()).reshape([b, 1, cfg.hidden_size]);
    let at_slot = |t: &Tensor<4>| t.clone().select(2, batch.slot.clone()); // [B, 1, 1, d]
    // Slots after the current one are not filled yet.
    let future = batch.positions.clone().greater(batch.slot.clone().reshape([1, 1, 1, 1]));
    let ctx = ForwardCtx {
        cos: at_slot(&batch.cos),
        sin: at_slot(&batch.sin),
        cos_q: at_slot(&batch.cos_q),
        sin_q: at_slot(&batch.sin_q),
        score_scale: batch.score_scale,
        rot: model.rot.clone(),
        mask_bias: Some(batch.pad.clone() + future.float().mul_scalar(MASKED)),
    };
    let scale = model.adapter.map_or(0.0, LoraAdapter::scale);
    let slot = batch.slot.clone();
    let mut in_place = batch.in_place;
    let mut h = x;
    for (i, layer) in model.base.layers.iter().enumerate() {
        let lora = model.adapter.and_then(|a| a.layers.get(i));
        let (keys, values) = (&mut batch.keys[i], &mut batch.values[i]);
        h = model.lm.layer_forward(layer, lora, scale, h, &ctx, |k, v| {
            in_place &= keys.can_mut() && values.can_mut();
            keys.inplace(|c| c.select_assign(2, slot.clone(), k, IndexingUpdateOp::Assign));
            values.inplace(|c| c.select_assign(2, slot.clone(), v, IndexingUpdateOp::Assign));
            (keys.clone(), values.clone())
        });
    }
    batch.in_place = in_place;
    let last = model.base.norm.forward(h, cfg.rms_norm_eps);
    let logits = model.lm.head(model.base, last).reshape([b, cfg.vocab_size]);
    select(logits, &batch.uniforms, &model.rule)
}

/// How a [`Stepper`] runs its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepMode {
    /// Each step runs the closure (no warm-up, no capture).
    Eager,
    /// The step is captured once (per batch shape) and replayed.
    Capture,
}

type StepFn<'a> = Box<dyn FnMut() -> Tensor<2> + 'a>;

/// Runs [`step`] over a shared [`StaticBatch`], eagerly or through a captured graph.
pub(crate) struct Stepper<'a> {
    model: &'a StepModel<'a>,
    batch: &'a RefCell<StaticBatch>,
    device: Device,
    mode: StepMode,
    graph: Option<Graph<Tensor<2>, StepFn<'a>>>,
    /// Hardware graphs captured so far.
    pub(crate) captures: usize,
    /// Steps replayed from a hardware graph.
    pub(crate) replays: usize,
    /// Hardware captures dropped because a tensor the graph writes was not uniquely owned (the
    /// write would have gone to a copy): the steps ran eagerly instead.
    pub(crate) refusals: usize,
}

impl<'a> Stepper<'a> {
    pub(crate) fn new(
        model: &'a StepModel<'a>,
        batch: &'a RefCell<StaticBatch>,
        device: Device,
        mode: StepMode,
    ) -> Self {
        Self { model, batch, device, mode, graph: None, captures: 0, replays: 0, refusals: 0 }
    }

    /// Whether a captured graph replays as one hardware launch (CUDA graphs).
    pub(crate) fn has_hardware_graph(&self) -> bool {
        self.graph.as_ref().is_some_and(Graph::is_hardware)
    }

    /// Forgets the captured graph (before the batch changes shape).
    pub(crate) fn invalidate(&mut self) {
        self.graph = None;
    }

    /// Runs one step over the batch's current inputs and reads back `(token, log-probability)`
    /// per row.
    pub(crate) fn run(&mut self) -> Result<Vec<(usize, f32)>> {
        let picked = match self.mode {
            StepMode::Eager => step(self.model, &mut self.batch.borrow_mut()),
            StepMode::Capture => self.replay()?,
        };
        read_picks(picked, self.batch.borrow().rows())
    }

    /// The one `unsafe` call outside `kernels/matmul.rs`: burn's `Graph::replay` (see the SAFETY
    /// note inside).
    #[allow(unsafe_code)]
    fn replay(&mut self) -> Result<Tensor<2>> {
        if self.graph.is_none() {
            let (model, batch) = (self.model, self.batch);
            let closure: StepFn<'a> = Box::new(move || step(model, &mut batch.borrow_mut()));
            let graph = capture(&self.device, closure);
            if !graph.is_hardware() {
                // No graphs on this backend (or the capture failed): `replay` would re-run the
                // closure; run the steps eagerly from now on (no more warm-up runs).
                drop(graph);
                self.mode = StepMode::Eager;
                return Ok(step(self.model, &mut self.batch.borrow_mut()));
            }
            self.captures += 1;
            if !self.batch.borrow().in_place {
                // A write went to a copy: the graph would replay against stale buffers.
                drop(graph);
                self.refusals += 1;
                self.mode = StepMode::Eager;
                return Ok(step(self.model, &mut self.batch.borrow_mut()));
            }
            self.graph = Some(graph);
        }
        let graph = self.graph.as_mut().ok_or_else(|| BridgeError::Model("no captured graph".into()))?;
        if !self.batch.borrow().in_place {
            return Err(BridgeError::Model("an input of the captured decode step was refreshed through a copy".into()));
        }
        self.replays += 1;
        // SAFETY (`Graph::replay`'s contract): every tensor the captured step reads or writes
        // stays alive and in place until the graph is dropped — the weights are borrowed from the
        // `Generator` for `'a`, the batch's tensors live in the `RefCell` for `'a` and are only
        // ever rewritten in place (`in_place` is checked above and before every replay, and a
        // compaction invalidates the graph first), and the step's intermediates are pinned by
        // cubecl's capture pool. Nothing else touches these tensors concurrently: this thread
        // issues the input refreshes, the replay and the read of its output on the device's one
        // stream, in that order.
        let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { graph.replay() }.clone()));
        // burn's `replay` panics when the driver refuses the launch: an error for the caller.
        replayed.map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            BridgeError::Device(format!("replaying the captured decode step failed: {why}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, KvCache};
    use crate::io::hf::load_hf_dir;
    use bridge_core::IdsOnlyCodec;
    use std::path::PathBuf;

    fn setup() -> (Decoder, DecoderWeights) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("llama3_gqa");
        let (cfg, w) = load_hf_dir(path, &Device::flex()).unwrap();
        let v = cfg.vocab_size;
        (Decoder::new(cfg, Box::new(IdsOnlyCodec { vocab_size: v })).unwrap(), w)
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// A prefilled cache of three left-padded prompts with room for `steps` more tokens.
    fn prefilled(lm: &Decoder, w: &DecoderWeights, steps: usize) -> (KvCache, Tensor<1, Int>) {
        let prompts = vec![vec![1u32, 17, 159, 42, 99, 7], vec![1, 5, 64], vec![3, 120, 8, 77, 15, 31, 9]];
        let mut g = Generator::new(lm, w, None).unwrap();
        let (cache, _) = g.prefill(&prompts, 7 + steps).unwrap();
        let rot = crate::forward::rotate_half_index(lm.config().head_dim, &Device::flex());
        (cache, rot)
    }

    /// The static step against the tensor engine's dynamic decode step: the same picks (greedy)
    /// and log-probabilities, step after step, with the slot, the tokens and the mask all read
    /// from tensors. Running a step again on the same inputs (as `capture`'s warm-up runs do)
    /// changes nothing: the KV write at the slot is an assignment, not an accumulation.
    #[test]
    fn static_steps_equal_the_dynamic_decode_and_repeat_idempotently() {
        let (lm, w) = setup();
        let steps = 4;
        let (cache, rot) = prefilled(&lm, &w, steps);
        let mut dynamic = cache.clone();
        let rule = SelectionRule { temperature: 0.0, top_k: None, top_p: None, sample_vocab: lm.config().vocab_size };
        let model = StepModel { lm: &lm, base: &w, adapter: None, rot: &rot, rule };
        let mut batch = StaticBatch::new(cache.clone().into_parts());
        let mut g = Generator::new(&lm, &w, None).unwrap();
        let mut tokens = vec![5u32, 9, 11];
        for s in 0..steps {
            let slot = 7 + s;
            batch.set_inputs(&tokens, slot, &[0.0; 3]).unwrap();
            let first = host(step(&model, &mut batch));
            let again = host(step(&model, &mut batch));
            assert_eq!(first, again, "step {s}: a repeated step is idempotent");
            let logits = g.decode(&mut dynamic, &tokens).unwrap();
            let v = lm.config().vocab_size;
            let want: Vec<f32> = host(logits);
            for r in 0..3 {
                let row = &want[r * v..(r + 1) * v];
                let argmax = bridge_core::sampling::argmax(row);
                let logp = bridge_core::sampling::log_softmax(row)[argmax];
                assert_eq!(first[2 * r] as usize, argmax, "step {s} row {r}");
                assert!((first[2 * r + 1] - logp).abs() < 1e-5, "step {s} row {r}");
            }
            tokens = (0..3).map(|r| first[2 * r] as u32).collect();
        }
        // the cache written in place holds what the dynamic cache holds in its filled slots
        let k_static = host(batch.keys[0].clone());
        let k_dynamic = host(dynamic.clone().into_parts().keys[0].clone());
        let worst = k_static.iter().zip(&k_dynamic).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    /// `Capture` mode on a backend without graphs: `capture` runs the step three times to warm
    /// up, finds no graph and the stepper carries on eagerly, with the eager stepper's results.
    #[test]
    fn capture_mode_without_graphs_falls_back_to_eager_steps() {
        let (lm, w) = setup();
        let steps = 3;
        let (cache, rot) = prefilled(&lm, &w, steps);
        let rule = SelectionRule { temperature: 1.0, top_k: Some(30), top_p: Some(0.9), sample_vocab: 150 };
        let model = StepModel { lm: &lm, base: &w, adapter: None, rot: &rot, rule };
        let run = |mode| {
            let batch = RefCell::new(StaticBatch::new(cache.clone().into_parts()));
            let mut stepper = Stepper::new(&model, &batch, Device::flex(), mode);
            let mut out = Vec::new();
            let mut tokens = vec![5u32, 9, 11];
            for s in 0..steps {
                let u = [0.1 + 0.2 * s as f32, 0.5, 0.93];
                batch.borrow_mut().set_inputs(&tokens, 7 + s, &u).unwrap();
                let picks = stepper.run().unwrap();
                tokens = picks.iter().map(|p| p.0 as u32).collect();
                out.push(picks);
            }
            (out, stepper.captures, stepper.replays, stepper.has_hardware_graph())
        };
        let (eager, ..) = run(StepMode::Eager);
        let (captured, captures, replays, hardware) = run(StepMode::Capture);
        assert_eq!(eager, captured);
        assert_eq!((captures, replays, hardware), (0, 0, false));
    }

    #[test]
    fn static_batch_inputs_are_checked() {
        let (lm, w) = setup();
        let (cache, _) = prefilled(&lm, &w, 2);
        let mut batch = StaticBatch::new(cache.into_parts());
        assert_eq!((batch.rows(), batch.capacity()), (3, 9));
        assert!(batch.set_inputs(&[1, 2], 7, &[0.0; 3]).is_err(), "a token per row");
        assert!(batch.set_inputs(&[1, 2, 3], 9, &[0.0; 3]).is_err(), "the cache is full");
        assert!(batch.select_rows(&[0, 3]).is_err(), "row out of range");
        assert!(batch.select_rows(&[]).is_err());
        batch.select_rows(&[2, 0]).unwrap();
        assert_eq!(batch.rows(), 2);
        batch.set_inputs(&[1, 2], 8, &[0.0; 2]).unwrap();
    }
}
