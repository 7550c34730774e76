//! Data parallelism: ranks, their shards of a step's batch, and gradient synchronisation.
//!
//! A data-parallel run has `R` ranks, one thread per device in one process. Every rank holds the
//! same weights (θ, and θ̂, w, π_ref where the algorithm uses them) and the same optimiser state;
//! each step, every rank draws the *same* global batch from its data cursors, keeps its
//! [`Shard::range`] of it (whole prompts, so a GRPO group never spans ranks), computes its part
//! of every loss, and the gradients are summed across ranks before any optimiser steps. The
//! optimisers then take the same step on every rank, so the replicas stay equal.
//!
//! # Exactness
//! Each loss is a mean `Σ ℓ / N` over the global batch (tokens, sequences or rows, by its
//! aggregation). A rank computes the mean over its own part and multiplies it by its
//! [`Shard::share`] `n_r / N`; the sum of the ranks' gradients is then the gradient of the
//! global loss, whatever the shard sizes — not merely an average of per-rank means. Rollouts use
//! the sampler's per-completion seeds ([`crate::CausalLm::sample`]: one `next_u64` per
//! completion, drawn in order), so rank `r` samples exactly the completions the single-rank run
//! samples for its prompts ([`Shard::with_rng`]). Two ranks therefore reproduce one rank up to
//! the order of f32 summation.
//!
//! # Pieces
//! - [`GradientSync`]: sums tensors across ranks. [`HostSync`] gathers them on the host and adds
//!   them in rank order (any device; what CI tests); [`CollectiveSync`] is burn's collectives
//!   (`burn::tensor::distributed::all_reduce`: NCCL on CUDA; flex has none).
//! - [`Exchange`]: the in-process rendezvous of the ranks' threads for host values (counts,
//!   metrics, the stop decision) and for [`HostSync`]; a rank that fails aborts it, so that the
//!   others return an error instead of waiting forever.
//! - [`Shard`]: one rank's view: its slice of the batch, its RNG offset, its loss share, the
//!   gradient all-reduce. [`Shard::single`] is the one-rank run, where every method is the
//!   identity and nothing is exchanged (single-device numerics are untouched).

use crate::error::{BridgeError, Result};
use crate::grads::FlatGradients;
use crate::seed::BridgeRng;
use burn::module::Module;
use burn::tensor::{DType, Device, Tensor, TensorData};
use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

type Slot = Option<Box<dyn Any + Send>>;

#[derive(Default)]
struct ExchangeState {
    /// Values deposited in the current round, by rank.
    slots: Vec<Slot>,
    /// Ranks that have deposited in the current round.
    arrived: usize,
    /// Ranks still to read the gathered values (the next round waits for them).
    readers: usize,
    /// The rank that aborted the group, if any.
    aborted: Option<usize>,
}

/// The in-process rendezvous of the `R` ranks of a data-parallel group (one thread each).
///
/// [`Exchange::all_gather`] is a collective: every rank calls it the same number of times, in
/// the same order. [`Exchange::abort`] makes every pending and later call return an error.
pub struct Exchange {
    world: usize,
    state: Mutex<ExchangeState>,
    changed: Condvar,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").field("world", &self.world).finish_non_exhaustive()
    }
}

impl Exchange {
    /// A rendezvous for `world` ranks.
    pub fn new(world: usize) -> Self {
        let state = ExchangeState { slots: (0..world).map(|_| None).collect(), ..ExchangeState::default() };
        Self { world, state: Mutex::new(state), changed: Condvar::new() }
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        // A rank that panicked while holding the lock leaves the state consistent (every update
        // is a few assignments); carry on and let `aborted` tell the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn aborted_error(rank: usize) -> BridgeError {
        BridgeError::Parallel(format!("rank {rank} stopped (see its error); the other ranks stop too"))
    }

    /// Every rank's `value`, in rank order. Blocks until all ranks have called it.
    pub fn all_gather<T: Clone + Send + 'static>(&self, rank: usize, value: T) -> Result<Vec<T>> {
        if rank >= self.world {
            return Err(BridgeError::Parallel(format!("rank {rank} outside a group of {}", self.world)));
        }
        let mut s = self.lock();
        // The previous round's values are still being read: wait for the readers.
        while s.readers > 0 && s.aborted.is_none() {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(r) = s.aborted {
            return Err(Self::aborted_error(r));
        }
        if s.slots[rank].is_some() {
            return Err(BridgeError::Parallel(format!("rank {rank} entered one collective twice")));
        }
        s.slots[rank] = Some(Box::new(value));
        s.arrived += 1;
        if s.arrived == self.world {
            s.readers = self.world;
            self.changed.notify_all();
        } else {
            while s.readers == 0 && s.aborted.is_none() {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if let Some(r) = s.aborted {
                return Err(Self::aborted_error(r));
            }
        }
        let mut out = Vec::with_capacity(self.world);
        for (r, slot) in s.slots.iter().enumerate() {
            let v = slot
                .as_ref()
                .and_then(|b| b.downcast_ref::<T>())
                .ok_or_else(|| BridgeError::Parallel(format!("rank {r} sent a different kind of value")))?;
            out.push(v.clone());
        }
        s.readers -= 1;
        if s.readers == 0 {
            s.slots.iter_mut().for_each(|slot| *slot = None);
            s.arrived = 0;
            self.changed.notify_all();
        }
        Ok(out)
    }

    /// Stops the group: every rank waiting in, or later entering, a collective gets an error
    /// naming `rank`. The first abort is the one reported.
    pub fn abort(&self, rank: usize) {
        let mut s = self.lock();
        s.aborted.get_or_insert(rank);
        self.changed.notify_all();
    }
}

/// Sums tensors across the ranks of a data-parallel group: the one operation gradient
/// synchronisation needs. A collective: every rank calls it with tensors of the same shapes, in
/// the same order, and receives the sums on its own device.
pub trait GradientSync: Send + Sync + fmt::Debug {
    /// A short name for logs (`host`, `nccl`).
    fn name(&self) -> &str;

    /// `Σ_ranks tensors[i]` for every `i`.
    ///
    /// # Shapes
    /// Each `tensors[i]` is `[n_i]`, the same `n_i` on every rank; the result has the same shapes.
    fn all_reduce_sum(&self, rank: usize, tensors: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>>;
}

/// [`GradientSync`] through the host: every rank's tensors are read into host memory, gathered
/// through the [`Exchange`] and added in rank order (f32, `((g₀ + g₁) + g₂) + …`), so the result
/// is the same on every rank and from run to run. Works on any device; the CPU path of data
/// parallelism and what CI tests.
#[derive(Debug)]
pub struct HostSync {
    exchange: Arc<Exchange>,
}

impl HostSync {
    /// Synchronisation through `exchange`.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }
}

impl GradientSync for HostSync {
    fn name(&self) -> &str {
        "host"
    }

    fn all_reduce_sum(&self, rank: usize, tensors: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>> {
        let layout: Vec<(Device, DType)> = tensors.iter().map(|t| (t.device(), t.dtype())).collect();
        let mut host = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.into_iter().enumerate() {
            let v = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| BridgeError::Parallel(format!("reading tensor {i} for the all-reduce: {e:?}")))?;
            host.push(v);
        }
        let all = self.exchange.all_gather(rank, Arc::new(host))?;
        let mut out = Vec::with_capacity(layout.len());
        for (i, (device, dtype)) in layout.into_iter().enumerate() {
            let n = all[0].get(i).map(Vec::len).unwrap_or(0);
            let mut sum = vec![0f32; n];
            for (r, rank_tensors) in all.iter().enumerate() {
                let v = rank_tensors.get(i).filter(|v| v.len() == n).ok_or_else(|| {
                    BridgeError::Parallel(format!("rank {r} sent a different tensor {i} to the all-reduce"))
                })?;
                if r == 0 {
                    sum.copy_from_slice(v);
                } else {
                    sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                }
            }
            let t = Tensor::<1>::from_data(TensorData::new(sum, [n]), &device);
            out.push(if t.dtype() == dtype { t } else { t.cast(dtype) });
        }
        Ok(out)
    }
}

/// [`GradientSync`] on burn's collectives (`burn::tensor::distributed`): NCCL all-reduce on
/// CUDA devices, one process, one thread per device. The tensors of one call are concatenated
/// into one buffer, reduced in one collective, and split again. burn's flex backend has no
/// collectives: use [`HostSync`] there.
pub struct CollectiveSync {
    devices: Vec<Device>,
    _context: burn::tensor::distributed::DistributedContext,
}

impl fmt::Debug for CollectiveSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectiveSync").field("devices", &self.devices.len()).finish_non_exhaustive()
    }
}

impl CollectiveSync {
    /// Starts burn's communication server for `devices` (one per rank, in rank order). Only
    /// CUDA devices have collectives; `choices` names them so that a wrong one is reported.
    pub fn new(choices: &[crate::device::DeviceChoice]) -> Result<Self> {
        if let Some(bad) = choices.iter().find(|c| !matches!(c, crate::device::DeviceChoice::Cuda(_))) {
            return Err(BridgeError::config(
                "run.devices",
                format!(
                    "`{bad}` has no collectives (burn's all-reduce is NCCL on CUDA); flex ranks use the host exchange"
                ),
            ));
        }
        let devices = choices.iter().map(|c| c.device()).collect::<Result<Vec<_>>>()?;
        let config = burn::tensor::distributed::DistributedConfig {
            all_reduce_op: burn::tensor::distributed::ReduceOperation::Sum,
        };
        let context = burn::tensor::distributed::DistributedContext::init(devices.clone(), config);
        Ok(Self { devices, _context: context })
    }
}

impl GradientSync for CollectiveSync {
    fn name(&self) -> &str {
        "nccl"
    }

    fn all_reduce_sum(&self, _rank: usize, tensors: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>> {
        if tensors.is_empty() {
            return Ok(tensors);
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[0]).collect();
        let flat = Tensor::cat(tensors, 0);
        let summed = burn::tensor::distributed::all_reduce(
            flat,
            burn::tensor::distributed::ReduceOperation::Sum,
            self.devices.clone(),
        )
        .resolve();
        let mut out = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for n in sizes {
            out.push(summed.clone().slice(start..start + n));
            start += n;
        }
        Ok(out)
    }
}

/// One rank's view of a data-parallel step (module docs). [`Shard::single`] is the one-rank
/// run: the whole batch, no exchange.
#[derive(Clone, Debug)]
pub struct Shard {
    rank: usize,
    world: usize,
    group: Option<(Arc<Exchange>, Arc<dyn GradientSync>)>,
}

impl Default for Shard {
    fn default() -> Self {
        Self::single()
    }
}

impl Shard {
    /// The whole batch on one rank.
    pub fn single() -> Self {
        Self { rank: 0, world: 1, group: None }
    }

    /// The shards of a group of `world` ranks, in rank order, exchanging host values through one
    /// [`Exchange`] and gradients through `sync` (`None`: [`HostSync`]).
    pub fn group(world: usize, sync: Option<Arc<dyn GradientSync>>) -> Result<Vec<Self>> {
        if world == 0 {
            return Err(BridgeError::config("run.devices", "needs at least one device"));
        }
        if world == 1 && sync.is_none() {
            return Ok(vec![Self::single()]);
        }
        let exchange = Arc::new(Exchange::new(world));
        let sync = sync.unwrap_or_else(|| Arc::new(HostSync::new(exchange.clone())));
        Ok((0..world).map(|rank| Self { rank, world, group: Some((exchange.clone(), sync.clone())) }).collect())
    }

    /// This rank (0 writes metrics and checkpoints).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Whether this is the one-rank run (no exchange at all).
    pub fn is_single(&self) -> bool {
        self.group.is_none()
    }

    /// The gradient synchronisation in use (`None` for one rank).
    pub fn sync_name(&self) -> Option<&str> {
        self.group.as_ref().map(|(_, s)| s.name())
    }

    /// This rank's contiguous part of `total` items: sizes differ by at most one, the first
    /// `total mod R` ranks take the larger part.
    pub fn range(&self, total: usize) -> Range<usize> {
        let (base, extra) = (total / self.world, total % self.world);
        let start = self.rank * base + self.rank.min(extra);
        start..start + base + usize::from(self.rank < extra)
    }

    /// This rank's part ([`Self::range`]) of `items`.
    pub fn select<T>(&self, mut items: Vec<T>) -> Vec<T> {
        if self.is_single() {
            return items;
        }
        let r = self.range(items.len());
        items.truncate(r.end);
        items.drain(..r.start);
        items
    }

    /// Runs `sample` on this rank's part of a batch of `total` items, each drawing `per_item`
    /// values from `rng` (a sampler's per-completion seeds), with the RNG the single-rank run
    /// would have at this rank's first item; `rng` then advances past the whole batch, as in the
    /// single-rank run. On one rank `sample` gets `rng` itself.
    pub fn with_rng<T>(
        &self,
        rng: &mut BridgeRng,
        total: usize,
        per_item: usize,
        sample: impl FnOnce(&mut BridgeRng) -> Result<T>,
    ) -> Result<T> {
        if self.is_single() {
            return sample(rng);
        }
        let mut own = rng.clone();
        for _ in 0..self.range(total).start * per_item {
            own.next_u64();
        }
        let out = sample(&mut own)?;
        for _ in 0..total * per_item {
            rng.next_u64();
        }
        Ok(out)
    }

    /// Every rank's `value`, in rank order (`[value]` on one rank).
    pub fn gather<T: Clone + Send + 'static>(&self, value: T) -> Result<Vec<T>> {
        match &self.group {
            None => Ok(vec![value]),
            Some((exchange, _)) => exchange.all_gather(self.rank, value),
        }
    }

    /// `Σ_ranks values[i]` for every `i`, added in rank order in f64 (the values on one rank).
    pub fn sum(&self, values: Vec<f64>) -> Result<Vec<f64>> {
        if self.is_single() {
            return Ok(values);
        }
        let all = self.gather(values)?;
        let mut out = all[0].clone();
        for (r, v) in all.iter().enumerate().skip(1) {
            if v.len() != out.len() {
                return Err(BridgeError::Parallel(format!("rank {r} summed {} values, rank 0 {}", v.len(), out.len())));
            }
            out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
        }
        Ok(out)
    }

    /// This rank's share `n_r / Σ n` of a loss normaliser (tokens, sequences or rows) whose local
    /// value is `local`: the factor of this rank's mean loss in the global mean. `1` on one rank;
    /// `0` when no rank has any.
    pub fn share(&self, local: f64) -> Result<f64> {
        if self.is_single() {
            return Ok(1.0);
        }
        let total = self.sum(vec![local])?[0];
        Ok(if total > 0.0 { local / total } else { 0.0 })
    }

    /// The sum across ranks of the gradients `grads` of `module`'s parameters (the identity on
    /// one rank). Parameters are matched by their position in `module` (ids may differ between
    /// ranks); a parameter has a gradient afterwards exactly when some rank had one, so that an
    /// optimiser steps the same parameters as in the single-rank run.
    pub fn all_reduce<M: Module>(&self, grads: &FlatGradients, module: &M) -> Result<FlatGradients> {
        let Some((_, sync)) = &self.group else {
            return Ok(grads.clone());
        };
        let (present, tensors) = grads.ordered(module);
        let everywhere = self.gather(present)?;
        let any: Vec<bool> = (0..tensors.len()).map(|i| everywhere.iter().any(|p| p.get(i) == Some(&true))).collect();
        if everywhere.iter().any(|p| p.len() != any.len()) {
            return Err(BridgeError::Parallel("ranks hold modules with different parameters".into()));
        }
        let kept: Vec<Tensor<1>> = tensors.into_iter().zip(&any).filter(|(_, a)| **a).map(|(t, _)| t).collect();
        let mut summed = sync.all_reduce_sum(self.rank, kept)?.into_iter();
        let mut out = Vec::with_capacity(any.len());
        for a in any {
            out.push(if a { summed.next() } else { None });
        }
        Ok(FlatGradients::from_ordered(out, module))
    }

    /// Tells the other ranks that this one stopped (after an error or a panic): their pending
    /// and next collectives return an error instead of waiting.
    pub fn abort(&self) {
        if let Some((exchange, _)) = &self.group {
            exchange.abort(self.rank);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn ranges_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for world in 1..5 {
            for total in 0..11 {
                let shards = Shard::group(world, None).unwrap();
                let ranges: Vec<_> = shards.iter().map(|s| s.range(total)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[world - 1].end, total);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (min, max) = (ranges.iter().map(|r| r.len()).min(), ranges.iter().map(|r| r.len()).max());
                assert!(max.unwrap() - min.unwrap() <= 1, "{world} ranks, {total} items: {ranges:?}");
            }
        }
        let s = &Shard::group(3, None).unwrap()[1];
        assert_eq!(s.range(8), 3..6);
        assert_eq!(s.select((0..8).collect::<Vec<_>>()), vec![3, 4, 5]);
    }

    /// Runs `f(shard)` on every rank of a `world`-rank host group, one thread each.
    fn on_ranks<T: Send>(world: usize, f: impl Fn(Shard) -> T + Sync) -> Vec<T> {
        let shards = Shard::group(world, None).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = shards.into_iter().map(|sh| s.spawn(|| f(sh))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn gather_and_sum_are_in_rank_order_and_reusable() {
        let out = on_ranks(3, |s| {
            let mut seen = Vec::new();
            for round in 0..50 {
                let g = s.gather((s.rank(), round)).unwrap();
                assert_eq!(g, vec![(0, round), (1, round), (2, round)]);
                seen.push(s.sum(vec![s.rank() as f64, 1.0]).unwrap());
            }
            (s.share(s.rank() as f64 + 1.0).unwrap(), seen)
        });
        let shares: Vec<f64> = out.iter().map(|(sh, _)| *sh).collect();
        assert_eq!(shares, vec![1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]);
        assert!(out.iter().all(|(_, seen)| seen.iter().all(|v| v == &vec![3.0, 3.0])));
    }

    #[test]
    fn an_aborting_rank_releases_the_others_with_an_error() {
        let out = on_ranks(3, |s| {
            if s.rank() == 1 {
                s.abort();
                return None;
            }
            Some(s.gather(s.rank()).unwrap_err().to_string())
        });
        assert!(out[0].as_ref().unwrap().contains("rank 1 stopped"), "{out:?}");
        assert!(out[2].as_ref().unwrap().contains("rank 1 stopped"));
    }

    #[test]
    fn rng_offsets_reproduce_the_single_rank_draws() {
        let mut single = BridgeRng::seed_from_u64(9);
        let whole: Vec<u64> = (0..7 * 2).map(|_| single.next_u64()).collect();
        let out = on_ranks(3, |s| {
            let mut rng = BridgeRng::seed_from_u64(9);
            let part = s
                .with_rng(&mut rng, 7, 2, |r| Ok((0..s.range(7).len() * 2).map(|_| r.next_u64()).collect::<Vec<_>>()))
                .unwrap();
            (part, rng.next_u64())
        });
        let joined: Vec<u64> = out.iter().flat_map(|(p, _)| p.clone()).collect();
        assert_eq!(joined, whole);
        let next = single.next_u64();
        assert!(out.iter().all(|(_, n)| *n == next), "every rank's RNG ends where the single rank's does");
    }

    #[derive(burn::module::Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<2>>,
    }

    #[test]
    fn gradients_are_summed_by_position_and_keep_their_sparsity() {
        let device = Device::flex().autodiff();
        let out = on_ranks(2, |s| {
            // Each rank builds its own module (its own parameter ids).
            let m = Two {
                a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)),
                b: Param::from_tensor(Tensor::from_floats([[1.0, 2.0], [3.0, 4.0]], &device)),
            };
            let c = (s.rank() + 1) as f32;
            // Rank 0's loss reaches only `a`; rank 1's reaches only `a` too, scaled.
            let loss = m.a.val().mul_scalar(c).sum();
            let g = FlatGradients::from_backward(&mut loss.backward(), &m);
            let summed = s.all_reduce(&g, &m).unwrap();
            let a: Vec<f32> = summed.get(m.a.id).unwrap().into_data().try_into_vec().unwrap();
            (a, summed.get(m.b.id).is_none(), summed.len())
        });
        for (a, b_absent, len) in out {
            assert_eq!(a, vec![3.0, 3.0]);
            assert!(b_absent, "a parameter without a gradient on every rank stays without one");
            assert_eq!(len, 1);
        }
    }

    #[test]
    fn collectives_refuse_flex_devices_naming_the_field() {
        let e = CollectiveSync::new(&[crate::device::DeviceChoice::Flex]).unwrap_err().to_string();
        assert!(e.contains("run.devices") && e.contains("flex"), "{e}");
    }
}
