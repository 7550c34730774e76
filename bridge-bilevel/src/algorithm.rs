//! Training algorithms on the bridge-core traits: the [`TrainingAlgorithm`] trait, the step
//! context, shared building blocks, and the baselines of method.md §5.
//!
//! An algorithm advances a [`TrainState`] by one step, drawing SFT batches and RL rollouts
//! through the [`StepContext`]. The built-ins are [`SftOnly`], [`RlZero`], [`ColdStart`],
//! [`NaiveAlternating`], [`SftRlMixing`] and BRIDGE ([`crate::Bridge`], whose ablation without
//! the meta objective is `Bridge` with [`bridge_core::JointSftRl`]). A new algorithm in another
//! crate implements [`TrainingAlgorithm`] with the same public helpers
//! ([`next_sft_batch`], [`next_rollouts`], [`rl_batch`], [`rl_loss`], [`apply_all`]).

use crate::state::TrainState;
use bridge_core::{
    BridgeError, CausalLm, ExampleSource, FlatGradients, GroupOptimizer, PromptSource, Result, RewardFunction,
    RlPrompt, SequenceBatch, Shard, TokenSequence, error::ensure_finite,
};
use bridge_rl::{GrpoConfig, PolicyLossStats, RlTrainingBatch, RolloutStats, Rollouts, collect_rollouts, grpo_loss};
use bridge_sft::sft_loss;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Named scalar metrics of one step (one JSONL line, with `step` added by the loop).
pub type Metrics = BTreeMap<String, f64>;

/// Everything a step may read: the model architecture, the data and the settings.
pub struct StepContext<'a, L: CausalLm> {
    /// The architecture (weights live in the [`TrainState`]).
    pub lm: &'a L,
    /// Tokenised SFT examples (`D_SFT`).
    pub sft: &'a dyn ExampleSource<Example = TokenSequence>,
    /// RL prompts with references (`D_RL`).
    pub prompts: &'a dyn PromptSource,
    /// The verifiable reward.
    pub reward: &'a dyn RewardFunction,
    /// GRPO settings (rollouts and loss).
    pub rl: &'a GrpoConfig,
    /// SFT examples per step.
    pub sft_batch_size: usize,
    /// λ for this step (from the schedule).
    pub lambda: f64,
    /// This rank's part of the step ([`Shard::single`] outside data parallelism): the helpers
    /// below take their shard of every batch, scale every loss by the rank's share and sum the
    /// gradients across ranks.
    pub shard: &'a Shard,
}

/// What an algorithm needs in the [`TrainState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The adapter w and its optimiser.
    pub adapter: bool,
    /// The RL-only base θ̂ and its optimiser.
    pub theta_hat: bool,
    /// A second optimiser for θ's SFT updates.
    pub theta_sft_optimizer: bool,
}

/// One training algorithm: advances the state by one step.
pub trait TrainingAlgorithm<L: CausalLm>: Send {
    /// A short name (`bridge`, `rl_zero`, …).
    fn name(&self) -> &str;

    /// Which parts of the state the algorithm uses.
    fn needs(&self) -> Needs;

    /// One optimisation step; returns its metrics.
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics>;

    /// Writes the algorithm's own state (a critic and its optimiser, anything it carries from
    /// step to step beyond the [`TrainState`]) into `dir`, a checkpoint directory being written
    /// (see [`TrainState::save_checkpoint_with`]). Stateless algorithms write nothing (the
    /// default); their schedules are functions of `state.step`.
    fn save_state(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }

    /// Whether [`Self::step`] is correct with several data-parallel ranks: it draws its batches,
    /// losses and updates through the shard-aware helpers of this module ([`next_sft_batch`],
    /// [`next_rollouts`]/[`sample_rollouts`], [`sft_term`], [`rl_loss`], [`apply_all`]) or uses
    /// [`StepContext::shard`] itself. The default is `false`: a run with `run.devices` refuses the
    /// algorithm before training.
    fn data_parallel(&self) -> bool {
        false
    }

    /// Restores what [`Self::save_state`] wrote into the checkpoint `dir`, after `state` was
    /// loaded from it, so that the run continues exactly.
    fn load_state(&mut self, dir: &Path, state: &TrainState<L>) -> Result<()> {
        let _ = (dir, state);
        Ok(())
    }
}

/// This rank's part of the next SFT batch (`sft_batch_size` tokenised examples from the state's
/// SFT cursor; every rank advances the cursor past the whole batch).
pub fn next_sft_batch<L: CausalLm>(ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<SequenceBatch> {
    let rows = state.sft_cursor.next_batch(ctx.sft, ctx.sft_batch_size)?;
    let rows = shard_of(ctx.shard, rows, "sft batch_size")?;
    SequenceBatch::new(rows, ctx.lm.codec().pad_token_id())
}

/// This rank's part of `items`; an error when it would be empty (`what` names the setting).
pub(crate) fn shard_of<T>(shard: &Shard, items: Vec<T>, what: &str) -> Result<Vec<T>> {
    let total = items.len();
    let mine = shard.select(items);
    if mine.is_empty() && total > 0 {
        return Err(BridgeError::config(
            "run.devices",
            format!("{} ranks cannot share a {what} of {total}: every rank needs at least one", shard.world_size()),
        ));
    }
    Ok(mine)
}

/// Rollouts of the next RL prompts, sampled from `π(·; base, adapter)` with the state's RNG
/// (this rank's prompts: [`sample_rollouts`]).
pub fn next_rollouts<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    rl_cursor: &mut bridge_core::DataCursor,
    rng: &mut bridge_core::BridgeRng,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
) -> Result<Rollouts> {
    let prompts = rl_cursor.next_batch(ctx.prompts, ctx.rl.prompts_per_step)?;
    sample_rollouts(ctx, &prompts, rng, base, adapter)
}

/// Rollouts of this rank's part of the step's `prompts` (whole groups: a group never spans
/// ranks), with the completions the one-rank run samples for them ([`Shard::with_rng`]); `rng`
/// advances past the whole batch.
pub fn sample_rollouts<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    prompts: &[RlPrompt],
    rng: &mut bridge_core::BridgeRng,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
) -> Result<Rollouts> {
    let mine = shard_of(ctx.shard, prompts.to_vec(), "rl prompts_per_step")?;
    ctx.shard.with_rng(rng, prompts.len(), ctx.rl.sampling.n, |rng| {
        collect_rollouts(ctx.lm, base, adapter, &mine, &ctx.rl.sampling, ctx.reward, ctx.rl.advantage_scaling, rng)
    })
}

/// `loss · share`, leaving the loss untouched when the share is 1 (one rank).
fn scaled(loss: Tensor<1>, share: f64) -> Tensor<1> {
    if share == 1.0 { loss } else { loss.mul_scalar(share) }
}

/// A zero loss that reaches every parameter of `base` and `adapter` (zero gradients): the part of
/// a rank whose shard has no loss token while other ranks' have some, so that every rank takes
/// part in the same gradient all-reduce.
pub fn zero_loss<B: Module, A: Module>(base: &B, adapter: Option<&A>) -> Result<Tensor<1>> {
    struct Sum(Option<Tensor<1>>);
    impl ModuleVisitor for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let term = param.val().sum().mul_scalar(0.0);
            self.0 = Some(match self.0.take() {
                Some(acc) => acc + term,
                None => term,
            });
        }
    }
    let mut sum = Sum(None);
    base.visit(&mut sum);
    if let Some(a) = adapter {
        a.visit(&mut sum);
    }
    sum.0.ok_or_else(|| BridgeError::InvalidInput("a model without float parameters".into()))
}

/// `J_SFT` (token-mean NLL) at `(base, adapter)` on this rank's part of an SFT batch, scaled by the
/// rank's share of the batch's tokens, so that the ranks' gradients add up to the whole batch's.
/// Records `sft_loss` (the whole batch's value, on every rank) and `sft_tokens` (this rank's).
pub fn sft_term<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
    m: &mut Metrics,
    step: u64,
) -> Result<Tensor<1>> {
    let out = sft_loss(ctx.lm, base, adapter, batch)?;
    let share = ctx.shard.share(out.num_tokens as f64)?;
    let value = ctx.shard.sum(vec![share * out.value])?[0];
    ensure_finite("sft_loss", value, step)?;
    m.insert("sft_loss".into(), value);
    m.insert("sft_tokens".into(), out.num_tokens as f64);
    Ok(scaled(out.loss, share))
}

/// Adds the rollout statistics (reward, lengths, zero-std groups, generation time) to `m`.
pub fn record_rollouts(m: &mut Metrics, prefix: &str, rollouts: &Rollouts) {
    let r = RolloutStats::of(rollouts);
    for (k, v) in [
        ("reward_mean", r.reward_mean),
        ("reward_std", r.reward_std),
        ("skipped", r.skipped as f64),
        ("zero_std_fraction", r.zero_std_fraction),
        ("completion_len_mean", r.completion_len_mean),
        ("completion_len_min", r.completion_len_min as f64),
        ("completion_len_max", r.completion_len_max as f64),
        ("truncated_fraction", r.truncated_fraction),
    ] {
        m.insert(format!("{prefix}{k}"), v);
    }
    *m.entry("generation_seconds".into()).or_insert(0.0) += r.generation_seconds;
}

/// The training batch of `rollouts`, with `log π_ref` computed once when the KL term is on (so
/// that every loss evaluation on it — θ and θ̂ branches, several epochs — shares one reference
/// forward).
pub fn rl_batch<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    rollouts: &Rollouts,
    reference: Option<&L::Base>,
) -> Result<RlTrainingBatch> {
    let mut batch = rollouts.training_batch(ctx.lm.codec().pad_token_id(), ctx.rl.mask_truncated)?;
    if ctx.rl.loss.kl_coef > 0.0 && batch.num_loss_tokens() > 0 {
        let reference =
            reference.ok_or_else(|| BridgeError::InvalidInput("kl_coef > 0 needs a reference model".into()))?;
        batch.cache_reference(ctx.lm, reference)?;
    }
    Ok(batch)
}

/// The whole batch's means from every rank's `(mean, count)` pairs: `Σ_r mean_r·n_r / Σ_r n_r`
/// for each pair (0 where no rank counts anything); the means themselves on one rank. Exact for
/// losses and statistics that are means over tokens, sequences or rows.
pub fn whole_batch_means(shard: &Shard, pairs: &[(f64, f64)]) -> Result<Vec<f64>> {
    if shard.is_single() {
        return Ok(pairs.iter().map(|(v, _)| *v).collect());
    }
    let mut flat: Vec<f64> = pairs.iter().map(|(v, n)| if *n > 0.0 { v * n } else { 0.0 }).collect();
    flat.extend(pairs.iter().map(|(_, n)| *n));
    let sums = shard.sum(flat)?;
    let (weighted, counts) = sums.split_at(pairs.len());
    Ok(weighted.iter().zip(counts).map(|(w, n)| if *n > 0.0 { w / n } else { 0.0 }).collect())
}

/// The GRPO loss at `(base, adapter)` on a training batch, with its statistics recorded under
/// `prefix` (`None` when no completion token takes part in the loss, on any rank).
///
/// With several ranks the loss is this rank's part of the whole batch's loss (scaled by its
/// share of the aggregation's normaliser, [`RlTrainingBatch::loss_normaliser`]); a rank without
/// loss tokens returns a [`zero_loss`]. The statistics are the whole batch's (the same on every
/// rank): the loss by shares, the per-token means by token counts. `{prefix}tokens` is this
/// rank's count.
pub fn rl_loss<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &RlTrainingBatch,
    m: &mut Metrics,
    prefix: &str,
    step: u64,
) -> Result<Option<burn::tensor::Tensor<1>>> {
    let tokens = batch.num_loss_tokens();
    m.insert(format!("{prefix}tokens"), tokens as f64);
    let normaliser = batch.loss_normaliser(ctx.rl.loss.aggregation);
    let counts = ctx.shard.sum(vec![tokens as f64, normaliser])?;
    if counts[0] == 0.0 {
        return Ok(None);
    }
    // A rank without loss tokens (others have some) adds zeros to the statistics and a zero
    // gradient to the all-reduce.
    let (loss, stats, entropy) = if tokens == 0 {
        (zero_loss(base, adapter)?, None, None)
    } else {
        let (out, entropy) = grpo_loss(ctx.lm, base, adapter, batch, None, &ctx.rl.loss, ctx.rl.log_entropy)?;
        (out.loss, Some(out.stats), entropy)
    };
    let share = if ctx.shard.is_single() { 1.0 } else { normaliser / counts[1] };
    let policy = PolicyTerm { stats: stats.as_ref(), normaliser, stat_tokens: tokens as f64, entropy, tokens };
    record_policy_stats(ctx, m, prefix, step, &policy, &[])?;
    Ok(Some(scaled(loss, share)))
}

/// One rank's policy-loss statistics, for [`record_policy_stats`].
pub(crate) struct PolicyTerm<'a> {
    /// The statistics (`None`: no loss token on this rank).
    pub stats: Option<&'a PolicyLossStats>,
    /// What the loss's aggregation divides by on this rank ([`RlTrainingBatch::loss_normaliser`]).
    pub normaliser: f64,
    /// The tokens the per-token statistics average over (LUFFY: the on-policy ones).
    pub stat_tokens: f64,
    /// The mean entropy over the loss tokens, when computed.
    pub entropy: Option<f64>,
    /// Loss tokens on this rank.
    pub tokens: usize,
}

/// Records the whole batch's policy-loss statistics under `prefix` (the same on every rank): the
/// loss as a mean by the aggregation's normaliser, the per-token statistics by `stat_tokens`, the
/// entropy by the loss tokens, and `extra` `(key, mean, count)` alike. A non-finite loss is an
/// error naming `step`.
pub(crate) fn record_policy_stats<L: CausalLm>(
    ctx: &StepContext<'_, L>,
    m: &mut Metrics,
    prefix: &str,
    step: u64,
    term: &PolicyTerm<'_>,
    extra: &[(&str, f64, f64)],
) -> Result<()> {
    let s = term.stats;
    let stat = |f: fn(&PolicyLossStats) -> f64| (s.map_or(0.0, f), term.stat_tokens);
    let mut pairs = vec![
        (s.map_or(0.0, |s| s.loss), term.normaliser),
        stat(|s| s.surrogate),
        stat(|s| s.kl),
        stat(|s| s.ratio_mean),
        stat(|s| s.clip_fraction),
        stat(|s| s.clip_low_fraction),
        stat(|s| s.clip_high_fraction),
    ];
    pairs.extend(extra.iter().map(|(_, v, n)| (*v, *n)));
    pairs.push((term.entropy.unwrap_or(0.0), term.tokens as f64));
    let global = whole_batch_means(ctx.shard, &pairs)?;
    ensure_finite(&format!("{prefix}rl_loss"), global[0], step)?;
    let keys = ["rl_loss", "surrogate", "kl", "ratio_mean", "clip_fraction", "clip_low_fraction", "clip_high_fraction"];
    for (k, v) in keys.iter().chain(extra.iter().map(|(k, _, _)| k)).zip(&global) {
        m.insert(format!("{prefix}{k}"), *v);
    }
    if term.entropy.is_some() || (term.tokens == 0 && ctx.rl.log_entropy) {
        m.insert(format!("{prefix}entropy"), global[global.len() - 1]);
    }
    Ok(())
}

/// One update of a parameter group: the module, its optimiser, and its loss gradient (this
/// rank's part: [`apply_all`] sums it across ranks).
pub struct GroupUpdate<'a, M> {
    /// Metric name of the gradient norm.
    pub name: &'a str,
    /// The optimiser.
    pub optim: &'a mut GroupOptimizer,
    /// The module (taken out of the state; put back by the caller).
    pub module: M,
    /// The gradient of the loss (parameters move along its negative).
    pub grads: FlatGradients,
}

/// Sums every group's gradient across the ranks of `shard` (nothing on one rank), then clips and
/// checks them all, then applies them: a non-finite gradient in any group stops the step before
/// any weight changes.
pub fn apply_all<M: Module>(
    shard: &Shard,
    updates: Vec<GroupUpdate<'_, M>>,
    step: u64,
    m: &mut Metrics,
) -> Result<Vec<M>> {
    let mut clipped = Vec::with_capacity(updates.len());
    for u in &updates {
        let summed = shard.all_reduce(&u.grads, &u.module)?;
        let (g, norm) = u.optim.clip(&summed, step)?;
        m.insert(format!("grad_norm_{}", u.name), norm);
        clipped.push(g);
    }
    Ok(updates.into_iter().zip(clipped).map(|(u, g)| u.optim.apply(u.module, &g)).collect())
}

/// [`apply_all`] of one group: sums across ranks, clips, checks and applies `grads` to `module`.
pub fn one_group<M: Module>(
    shard: &Shard,
    name: &str,
    optim: &mut GroupOptimizer,
    module: M,
    grads: FlatGradients,
    step: u64,
    m: &mut Metrics,
) -> Result<M> {
    let mut out = apply_all(shard, vec![GroupUpdate { name, optim, module, grads }], step, m)?;
    out.pop().ok_or_else(|| BridgeError::InvalidInput("no group updated".into()))
}

/// SFT on θ: `θ ← θ + α ∇_θ J_SFT(θ)` (the SFT baseline).
#[derive(Clone, Debug, Default)]
pub struct SftOnly;

/// One SFT step on θ with optimiser `optim` (shared by [`SftOnly`], [`ColdStart`] and
/// [`NaiveAlternating`]).
fn sft_step<L: CausalLm>(ctx: &StepContext<'_, L>, state: &mut TrainState<L>, use_sft_optim: bool) -> Result<Metrics> {
    let mut m = Metrics::new();
    let step = state.next_step();
    let start = Instant::now();
    let batch = next_sft_batch(ctx, state)?;
    let loss = sft_term(ctx, &state.theta, None, &batch, &mut m, step)?;
    let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
    let optim = match (use_sft_optim, state.optim.theta_sft.as_mut()) {
        (true, Some(o)) => o,
        _ => &mut state.optim.theta,
    };
    state.theta = one_group(ctx.shard, "theta", optim, state.theta.clone(), g, step, &mut m)?;
    *m.entry("training_seconds".into()).or_insert(0.0) += start.elapsed().as_secs_f64();
    Ok(m)
}

/// One GRPO step on θ.
fn rl_step<L: CausalLm>(ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
    let mut m = Metrics::new();
    let rollouts = next_rollouts(ctx, &mut state.rl_cursor, &mut state.rollout_rng, &state.theta, None)?;
    record_rollouts(&mut m, "", &rollouts);
    let start = Instant::now();
    let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
    let step = state.next_step();
    for _ in 0..ctx.rl.epochs_per_batch {
        let loss = rl_loss(ctx, &state.theta, None, &batch, &mut m, "", step)?;
        let Some(loss) = loss else { break };
        let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
        state.theta = one_group(ctx.shard, "theta", &mut state.optim.theta, state.theta.clone(), g, step, &mut m)?;
    }
    *m.entry("training_seconds".into()).or_insert(0.0) += start.elapsed().as_secs_f64();
    Ok(m)
}

impl<L: CausalLm> TrainingAlgorithm<L> for SftOnly {
    fn name(&self) -> &str {
        "sft"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn data_parallel(&self) -> bool {
        true
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        sft_step(ctx, state, false)
    }
}

/// GRPO on θ from the base model (RL-zero).
#[derive(Clone, Debug, Default)]
pub struct RlZero;

impl<L: CausalLm> TrainingAlgorithm<L> for RlZero {
    fn name(&self) -> &str {
        "rl_zero"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn data_parallel(&self) -> bool {
        true
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        rl_step(ctx, state)
    }
}

/// SFT for `sft_steps` steps, then GRPO (the two-stage pipeline).
#[derive(Clone, Debug)]
pub struct ColdStart {
    /// Length of the SFT stage in steps.
    pub sft_steps: u64,
}

impl<L: CausalLm> TrainingAlgorithm<L> for ColdStart {
    fn name(&self) -> &str {
        "cold_start"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn data_parallel(&self) -> bool {
        true
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let mut m = if state.step < self.sft_steps { sft_step(ctx, state, false)? } else { rl_step(ctx, state)? };
        m.insert("stage".into(), if state.step < self.sft_steps { 0.0 } else { 1.0 });
        Ok(m)
    }
}

/// Each step: one GRPO step, then one SFT step, both on θ, each with its own optimiser.
#[derive(Clone, Debug, Default)]
pub struct NaiveAlternating;

impl<L: CausalLm> TrainingAlgorithm<L> for NaiveAlternating {
    fn name(&self) -> &str {
        "alternating"
    }
    fn needs(&self) -> Needs {
        Needs { theta_sft_optimizer: true, ..Needs::default() }
    }
    fn data_parallel(&self) -> bool {
        true
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let mut m = rl_step(ctx, state)?;
        let sft = sft_step(ctx, state, true)?;
        for (k, v) in sft {
            match k.as_str() {
                "training_seconds" => *m.entry(k).or_insert(0.0) += v,
                "grad_norm_theta" => {
                    m.insert("grad_norm_theta_sft".into(), v);
                }
                _ => {
                    m.insert(k, v);
                }
            }
        }
        Ok(m)
    }
}

/// One stage with the loss `−(J_RL + μ·J_SFT)` on θ.
#[derive(Clone, Debug)]
pub struct SftRlMixing {
    /// Weight μ of the SFT term.
    pub mu: f64,
}

impl<L: CausalLm> TrainingAlgorithm<L> for SftRlMixing {
    fn name(&self) -> &str {
        "mixing"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn data_parallel(&self) -> bool {
        true
    }
    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let mut m = Metrics::new();
        let rollouts = next_rollouts(ctx, &mut state.rl_cursor, &mut state.rollout_rng, &state.theta, None)?;
        record_rollouts(&mut m, "", &rollouts);
        let start = Instant::now();
        let batch = next_sft_batch(ctx, state)?;
        let step = state.next_step();
        let sft = sft_term(ctx, &state.theta, None, &batch, &mut m, step)?;
        let rl_batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        let rl = rl_loss(ctx, &state.theta, None, &rl_batch, &mut m, "", step)?;
        let loss = match rl {
            Some(rl) => rl + sft.mul_scalar(self.mu),
            None => sft.mul_scalar(self.mu),
        };
        let g = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
        state.theta = one_group(ctx.shard, "theta", &mut state.optim.theta, state.theta.clone(), g, step, &mut m)?;
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }
}
