//! Where the fused engine's data lives: the flat parameter vector and the [`Slot`] of every
//! tensor in it ([`ParamLayout`]), the batch ([`BatchPlan`]), and the split of the batch into
//! groups of whole sequences ([`Groups`]).
//!
//! Every tensor of the model (base θ and adapter w) lives in one flat parameter vector, at the
//! slots of a [`ParamLayout`]; the gradient comes back in a vector of the same layout.

/// Rows per block of the head's logits.
pub(super) const HEAD_BLOCK_ROWS: usize = 256;

/// Where one tensor sits in the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl Slot {
    pub(super) fn of<'a>(&self, flat: &'a [f32]) -> &'a [f32] {
        &flat[self.offset..self.offset + self.len]
    }

    pub(super) fn of_mut<'a>(&self, flat: &'a mut [f32]) -> &'a mut [f32] {
        &mut flat[self.offset..self.offset + self.len]
    }
}

/// A linear projection `y = x·W + b + s·(x·Aᵀ)·Bᵀ`.
#[derive(Clone, Debug)]
pub(crate) struct ProjSlots {
    /// `[inp, out]` (burn's layout).
    pub(crate) weight: Slot,
    /// `[out]`.
    pub(crate) bias: Option<Slot>,
    /// `(A [r, inp], B [out, r])`.
    pub(crate) lora: Option<(Slot, Slot)>,
    pub(crate) inp: usize,
    pub(crate) out: usize,
}

/// The slots of one decoder layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerSlots {
    pub(crate) input_norm: Slot,
    pub(crate) q: ProjSlots,
    pub(crate) k: ProjSlots,
    pub(crate) v: ProjSlots,
    pub(crate) o: ProjSlots,
    pub(crate) q_norm: Option<Slot>,
    pub(crate) k_norm: Option<Slot>,
    pub(crate) post_norm: Slot,
    pub(crate) gate: ProjSlots,
    pub(crate) up: ProjSlots,
    pub(crate) down: ProjSlots,
}

/// The architecture and where every tensor sits in the flat parameter vector.
#[derive(Clone, Debug)]
pub(crate) struct ParamLayout {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) intermediate: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) eps: f32,
    /// LoRA's `alpha / r` (unused without an adapter).
    pub(crate) lora_scale: f32,
    pub(crate) lora_rank: usize,
    /// `[vocab, hidden]`.
    pub(crate) embed: Slot,
    pub(crate) layers: Vec<LayerSlots>,
    pub(crate) norm: Slot,
    /// `None` when tied to the embedding.
    pub(crate) lm_head: Option<ProjSlots>,
    /// Length of the flat vector.
    pub(crate) total: usize,
}

/// One batch: right-padded ids and the rotary tables of positions `0..T`.
#[derive(Clone, Debug)]
pub(crate) struct BatchPlan {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// `[B·T]`.
    pub(crate) ids: Vec<u32>,
    /// `[B·T]`: real token (`true`) or padding.
    pub(crate) valid: Vec<bool>,
    /// `[T·d]` each.
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
}

impl ProjSlots {
    /// The range of the flat vector this projection's tensors occupy: they are consecutive,
    /// weight first, then bias, `A`, `B` (the order `fused::flatten` pushes them in).
    pub(super) fn range(&self) -> (usize, usize) {
        let last = self.lora.map(|(_, b)| b).or(self.bias).unwrap_or(self.weight);
        (self.weight.offset, last.offset + last.len)
    }
}

/// Rows per group: consecutive whole sequences, about this many rows together.
const GROUP_ROWS: usize = 256;

/// The batch's sequences in groups of consecutive sequences. Every row-wise computation of a
/// group (norms, projections of its rows, rotary, attention, SwiGLU, and their backward) runs
/// as one task on one thread, on buffers that fit the cache; the groups run in parallel. The
/// grouping depends only on the batch's shape, never on the thread count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Groups {
    /// Sequences per group (the last group may have fewer).
    pub(super) seqs: usize,
    pub(super) count: usize,
    pub(super) batch: usize,
    pub(super) seq: usize,
}

impl Groups {
    pub(super) fn new(batch: usize, seq: usize) -> Self {
        let seqs = (GROUP_ROWS / seq.max(1)).clamp(1, batch.max(1));
        Self { seqs, count: batch.div_ceil(seqs), batch, seq }
    }

    /// `(first row, rows)` of group `g`.
    pub(super) fn rows(&self, g: usize) -> (usize, usize) {
        let first = g * self.seqs;
        let n = self.seqs.min(self.batch - first);
        (first * self.seq, n * self.seq)
    }

    /// Whether the products inside a group should fork too: when there are fewer groups than
    /// threads (small batches), a group's products are the only work to share.
    pub(super) fn inner_parallel(&self) -> bool {
        self.count < rayon::current_num_threads()
    }
}

/// Dimensions of one attention call.
#[derive(Clone, Copy)]
pub(super) struct AttnDims {
    pub(super) seq: usize,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) d: usize,
}

impl AttnDims {
    pub(super) fn q_width(&self) -> usize {
        self.heads * self.d
    }
    pub(super) fn kv_width(&self) -> usize {
        self.kv_heads * self.d
    }
}

/// Index of each projection in [`SavedLayer::downs`].
pub(super) const Q: usize = 0;

pub(super) const K: usize = 1;

pub(super) const V: usize = 2;

pub(super) const O: usize = 3;

pub(super) const GATE: usize = 4;

pub(super) const UP: usize = 5;

pub(super) const DOWN: usize = 6;

/// One call of the fused operation: the model's layout, the batch, and whether the entropies
/// are computed too.
#[derive(Debug)]
pub(crate) struct FusedCall {
    pub(crate) layout: ParamLayout,
    pub(crate) plan: BatchPlan,
    pub(crate) with_entropy: bool,
}
