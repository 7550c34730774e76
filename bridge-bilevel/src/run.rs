//! Setting up a run's state and driving the step loop.
//!
//! [`init_state`] builds the [`TrainState`] an algorithm needs from the initial weights θ₀ (and
//! w₀): θ̂ starts as an independent copy of θ₀ (its own parameter ids), π_ref as a frozen copy
//! when the KL coefficient is non-zero. [`run_steps`] runs the loop: λ from the schedule, one
//! algorithm step, periodic evaluation, metrics to a sink, checkpoints. [`run_data_parallel`]
//! runs the same loop on several ranks (one thread per device, [`bridge_core::parallel`]); rank 0
//! evaluates, reports and checkpoints.

use crate::algorithm::{Metrics, Needs, StepContext, TrainingAlgorithm};
use crate::state::{CheckpointMeta, Optimizers, TrainState};
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, DataCursor, ExampleSource, GradientSync, GroupOptimizer,
    LambdaSchedule, PromptSource, Result, RewardFunction, ScheduleState, Shard, TokenSequence, derive_seed,
    independent_copy,
};
use bridge_rl::GrpoConfig;
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Optimiser settings of every parameter group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// θ (α).
    pub theta: AdamWSettings,
    /// θ̂; defaults to θ's settings (method.md: θ and θ̂ share α).
    pub theta_hat: Option<AdamWSettings>,
    /// w (β); defaults to θ's settings (method.md: β = α).
    pub adapter: Option<AdamWSettings>,
    /// θ's SFT optimiser in naive alternating; defaults to θ's settings.
    pub theta_sft: Option<AdamWSettings>,
}

/// Builds the state of a run from θ₀ (and w₀ when the algorithm needs an adapter).
pub fn init_state<L: CausalLm>(
    needs: Needs,
    theta0: L::Base,
    adapter0: Option<L::Adapter>,
    optim: &OptimConfig,
    with_reference: bool,
    seed: u64,
) -> Result<TrainState<L>> {
    let adapter = match (needs.adapter, adapter0) {
        (true, Some(a)) => Some(a),
        (true, None) => return Err(BridgeError::config("lora", "this algorithm trains an adapter: configure one")),
        (false, _) => None,
    };
    let or_theta = |s: &Option<AdamWSettings>| s.clone().unwrap_or_else(|| optim.theta.clone());
    let optimizers = Optimizers {
        theta: GroupOptimizer::new("optim.theta", optim.theta.clone())?,
        theta_hat: if needs.theta_hat {
            Some(GroupOptimizer::new("optim.theta_hat", or_theta(&optim.theta_hat))?)
        } else {
            None
        },
        adapter: if needs.adapter {
            Some(GroupOptimizer::new("optim.adapter", or_theta(&optim.adapter))?)
        } else {
            None
        },
        theta_sft: if needs.theta_sft_optimizer {
            Some(GroupOptimizer::new("optim.theta_sft", or_theta(&optim.theta_sft))?)
        } else {
            None
        },
    };
    Ok(TrainState {
        theta_hat: needs.theta_hat.then(|| independent_copy(&theta0)),
        reference: with_reference.then(|| independent_copy(&theta0).no_grad()),
        theta: theta0,
        adapter,
        optim: optimizers,
        rollout_rng: BridgeRng::for_stream(seed, "rollouts"),
        sft_cursor: DataCursor::new(derive_seed(seed, "data/sft"), true),
        rl_cursor: DataCursor::new(derive_seed(seed, "data/rl"), true),
        step: 0,
    })
}

/// The data, reward and settings of a run.
pub struct RunInputs<'a> {
    /// Tokenised SFT examples.
    pub sft: &'a dyn ExampleSource<Example = TokenSequence>,
    /// RL prompts.
    pub prompts: &'a dyn PromptSource,
    /// The reward.
    pub reward: &'a dyn RewardFunction,
    /// GRPO settings.
    pub rl: &'a GrpoConfig,
    /// SFT examples per step.
    pub sft_batch_size: usize,
    /// λ's schedule.
    pub lambda: &'a dyn LambdaSchedule,
}

/// Loop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Stop after this many steps in total.
    pub total_steps: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// The run directory (checkpoints go under `checkpoints/`).
    pub run_dir: PathBuf,
    /// Evaluate once before the first step (a run that starts at step 0), as TRL's
    /// `eval_on_start`: the "before" of a before/after comparison.
    pub eval_on_start: bool,
    /// Wall-clock budget of this invocation in seconds: the step during which it runs out
    /// becomes the last one (evaluated and checkpointed as such). `None`: no limit. A resumed run
    /// gets the budget afresh.
    pub time_limit_s: Option<f64>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            total_steps: 100,
            eval_every: 0,
            checkpoint_every: 0,
            keep_checkpoints: 2,
            run_dir: PathBuf::from("runs/run"),
            eval_on_start: false,
            time_limit_s: None,
        }
    }
}

/// What the loop reports after each step and evaluation.
pub enum RunEvent<'a> {
    /// A training step finished (metrics include `step` and `lambda`).
    Step(&'a Metrics),
    /// An evaluation finished (metrics include `step`).
    Eval(&'a Metrics),
    /// A checkpoint was written.
    Checkpoint(&'a std::path::Path),
}

/// Runs `algorithm` from `state.step` to `cfg.total_steps`.
///
/// `evaluate` is called every `eval_every` steps and at the end (and before the first step with
/// `eval_on_start`); the run ends early, at the end of a step, once `time_limit_s` has passed
/// (evaluation time included). `on_event` receives every step's metrics, evaluations and
/// checkpoints (write them to JSONL, a progress bar, …). A failing step returns its error before
/// touching the weights (see [`crate::algorithm::apply_all`]); the last checkpoint stays valid.
pub fn run_steps<L: CausalLm, A: TrainingAlgorithm<L> + ?Sized>(
    lm: &L,
    algorithm: &mut A,
    state: TrainState<L>,
    inputs: &RunInputs<'_>,
    cfg: &LoopConfig,
    evaluate: impl FnMut(&L, &TrainState<L>) -> Result<Metrics>,
    on_event: impl FnMut(RunEvent<'_>) -> Result<()>,
) -> Result<TrainState<L>> {
    rank_loop(lm, algorithm, state, inputs, cfg, &Shard::single(), Some(Lead { evaluate, on_event }))
}

/// What only rank 0 does: evaluate and report.
struct Lead<E, O> {
    evaluate: E,
    on_event: O,
}

/// The step loop of one rank ([`run_steps`] is rank 0 of one).
fn rank_loop<L, A, E, O>(
    lm: &L,
    algorithm: &mut A,
    mut state: TrainState<L>,
    inputs: &RunInputs<'_>,
    cfg: &LoopConfig,
    shard: &Shard,
    mut lead: Option<Lead<E, O>>,
) -> Result<TrainState<L>>
where
    L: CausalLm,
    A: TrainingAlgorithm<L> + ?Sized,
    E: FnMut(&L, &TrainState<L>) -> Result<Metrics>,
    O: FnMut(RunEvent<'_>) -> Result<()>,
{
    let started = std::time::Instant::now();
    if let Some(Lead { evaluate, on_event }) = lead.as_mut()
        && cfg.eval_on_start
        && state.step == 0
        && cfg.total_steps > 0
    {
        let mut e = evaluate(lm, &state)?;
        e.insert("step".into(), 0.0);
        on_event(RunEvent::Eval(&e))?;
    }
    while state.step < cfg.total_steps {
        let epoch = state.rl_cursor.epochs_done(inputs.prompts.len());
        let lambda = inputs.lambda.lambda(ScheduleState { step: state.step, epoch });
        let ctx = StepContext {
            lm,
            sft: inputs.sft,
            prompts: inputs.prompts,
            reward: inputs.reward,
            rl: inputs.rl,
            sft_batch_size: inputs.sft_batch_size,
            lambda,
            shard,
        };
        let metrics = algorithm.step(&ctx, &mut state)?;
        let mut metrics = merge_metrics(shard, metrics)?;
        state.step += 1;
        metrics.insert("step".into(), state.step as f64);
        metrics.entry("lambda".into()).or_insert(lambda);
        metrics.insert("rl_epoch".into(), state.rl_cursor.epochs_done(inputs.prompts.len()));
        if let Some(Lead { on_event, .. }) = lead.as_mut() {
            on_event(RunEvent::Step(&metrics))?;
        }
        // Every rank stops at the same step: when any of them has run out of time.
        let mut out_of_time = cfg.time_limit_s.is_some_and(|limit| started.elapsed().as_secs_f64() >= limit);
        if !shard.is_single() {
            out_of_time = shard.sum(vec![f64::from(u8::from(out_of_time))])?[0] > 0.0;
        }
        let last = state.step == cfg.total_steps || out_of_time;
        if let Some(Lead { evaluate, on_event }) = lead.as_mut() {
            if last || (cfg.eval_every > 0 && state.step.is_multiple_of(cfg.eval_every)) {
                let mut e = evaluate(lm, &state)?;
                e.insert("step".into(), state.step as f64);
                on_event(RunEvent::Eval(&e))?;
            }
            if last || (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every)) {
                let dir = state.save_checkpoint_with(
                    &cfg.run_dir,
                    cfg.keep_checkpoints,
                    serde_json::json!({ "algorithm": algorithm.name() }),
                    |tmp| algorithm.save_state(tmp),
                )?;
                on_event(RunEvent::Checkpoint(&dir))?;
            }
        }
        if out_of_time {
            break;
        }
    }
    Ok(state)
}

/// One step's metrics of every rank as one line (the identity on one rank): keys ending in
/// `tokens` and `skipped` (per-rank counts) take the sum, `_min` the minimum, `_max` and `seconds`
/// the maximum; a value every rank reports alike is kept (λ, gradient norms, and the losses and
/// loss statistics that [`rl_loss`] and [`sft_term`] already compute for the whole batch); the
/// rest (per-rank means such as `reward_mean`) take the mean over the ranks that report it —
/// exact for per-completion means when the shards are equally large.
///
/// [`rl_loss`]: crate::algorithm::rl_loss
/// [`sft_term`]: crate::algorithm::sft_term
pub fn merge_metrics(shard: &Shard, metrics: Metrics) -> Result<Metrics> {
    if shard.is_single() {
        return Ok(metrics);
    }
    let all = shard.gather(metrics)?;
    let mut keys: Vec<&String> = all.iter().flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Metrics::new();
    for key in keys {
        let values: Vec<f64> = all.iter().filter_map(|m| m.get(key).copied()).collect();
        let first = values[0];
        let merged = if key.ends_with("tokens") || key.ends_with("skipped") {
            values.iter().sum()
        } else if key.ends_with("_min") {
            values.iter().copied().fold(f64::INFINITY, f64::min)
        } else if key.ends_with("_max") || key.ends_with("seconds") {
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        } else if values.iter().all(|v| v.to_bits() == first.to_bits()) {
            first
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        out.insert(key.clone(), merged);
    }
    Ok(out)
}

/// One rank of a data-parallel run: its state (weights on its device) and its algorithm.
pub struct Replica<L: CausalLm> {
    /// The state, equal on every rank (built the same way, or loaded from the same checkpoint).
    pub state: TrainState<L>,
    /// This rank's instance of the algorithm.
    pub algorithm: Box<dyn TrainingAlgorithm<L>>,
}

/// [`run_steps`] on `replicas.len()` ranks, one thread each: every rank takes its shard of every
/// batch, gradients are summed across ranks with `sync` (`None`: through the host, any device;
/// [`bridge_core::CollectiveSync`]: NCCL on CUDA) and the optimisers take the same step on every
/// rank. Rank 0 runs on this thread, evaluates, reports (`on_event`, metrics merged by
/// [`merge_metrics`]) and writes the checkpoints; it returns rank 0's replica.
///
/// An error or panic on any rank stops every rank; the error returned is the first rank's that
/// is not merely "another rank stopped". An algorithm that does not declare
/// [`TrainingAlgorithm::data_parallel`] is refused before any step when there is more than one
/// rank.
pub fn run_data_parallel<L: CausalLm>(
    lm: &L,
    replicas: Vec<Replica<L>>,
    sync: Option<Arc<dyn GradientSync>>,
    inputs: &RunInputs<'_>,
    cfg: &LoopConfig,
    evaluate: impl FnMut(&L, &TrainState<L>) -> Result<Metrics>,
    on_event: impl FnMut(RunEvent<'_>) -> Result<()>,
) -> Result<Replica<L>> {
    let world = replicas.len();
    if world == 0 {
        return Err(BridgeError::config("run.devices", "needs at least one device"));
    }
    if let Some(r) = replicas.iter().find(|r| world > 1 && !r.algorithm.data_parallel()) {
        return Err(BridgeError::config(
            "run.devices",
            format!("algorithm `{}` does not support data parallelism: train it on one device", r.algorithm.name()),
        ));
    }
    let steps: Vec<u64> = replicas.iter().map(|r| r.state.step).collect();
    if steps.iter().any(|s| *s != steps[0]) {
        return Err(BridgeError::Parallel(format!("the ranks start at different steps: {steps:?}")));
    }
    let shards = Shard::group(world, sync)?;
    let mut replicas = replicas.into_iter();
    let Some(Replica { state, algorithm: mut lead_algorithm }) = replicas.next() else {
        return Err(BridgeError::config("run.devices", "needs at least one device"));
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = replicas
            .zip(shards.iter().skip(1))
            .map(|(Replica { state, mut algorithm }, shard)| {
                scope.spawn(move || {
                    let _guard = AbortOnDrop(shard);
                    let out =
                        rank_loop(lm, algorithm.as_mut(), state, inputs, cfg, shard, None::<Lead<NoEval<L>, NoEvent>>);
                    if out.is_err() {
                        shard.abort();
                    }
                    out.map(|state| Replica { state, algorithm })
                })
            })
            .collect();
        let lead = {
            let _guard = AbortOnDrop(&shards[0]);
            let out = rank_loop(
                lm,
                lead_algorithm.as_mut(),
                state,
                inputs,
                cfg,
                &shards[0],
                Some(Lead { evaluate, on_event }),
            );
            if out.is_err() {
                shards[0].abort();
            }
            out
        };
        let mut results = vec![lead.map(|state| Replica { state, algorithm: lead_algorithm })];
        for (rank, w) in workers.into_iter().enumerate() {
            results
                .push(w.join().unwrap_or_else(|_| Err(BridgeError::Parallel(format!("rank {} panicked", rank + 1)))));
        }
        let mut first_error = None;
        let mut lead = None;
        for r in results {
            match r {
                Ok(replica) => {
                    lead.get_or_insert(replica);
                }
                Err(e) => {
                    let secondary = matches!(&e, BridgeError::Parallel(m) if m.contains("stopped"));
                    match &first_error {
                        None => first_error = Some(e),
                        Some(BridgeError::Parallel(m)) if m.contains("stopped") && !secondary => first_error = Some(e),
                        _ => {}
                    }
                }
            }
        }
        match (first_error, lead) {
            (Some(e), _) => Err(e),
            (None, Some(lead)) => Ok(lead),
            (None, None) => Err(BridgeError::Parallel("no rank finished".into())),
        }
    })
}

type NoEval<L> = fn(&L, &TrainState<L>) -> Result<Metrics>;
type NoEvent = fn(RunEvent<'_>) -> Result<()>;

/// Aborts the group when a rank's thread unwinds (a panic), so that the others do not wait.
struct AbortOnDrop<'a>(&'a Shard);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Loads the checkpoint `checkpoint_dir` of a [`run_steps`] run into `state` and `algorithm`:
/// the state's weights, optimisers, RNG, cursors and step, then the algorithm's own state
/// ([`TrainingAlgorithm::load_state`]). A checkpoint written by another algorithm is an error
/// naming both.
pub fn resume_from_checkpoint<L: CausalLm, A: TrainingAlgorithm<L> + ?Sized>(
    state: TrainState<L>,
    algorithm: &mut A,
    checkpoint_dir: &std::path::Path,
) -> Result<(TrainState<L>, CheckpointMeta)> {
    let (state, meta) = state.load_checkpoint(checkpoint_dir)?;
    if let Some(name) = meta.extra.get("algorithm").and_then(|v| v.as_str())
        && name != algorithm.name()
    {
        return Err(BridgeError::checkpoint(
            checkpoint_dir,
            format!("written by algorithm `{name}`, resumed with `{}`", algorithm.name()),
        ));
    }
    algorithm.load_state(checkpoint_dir, &state)?;
    Ok((state, meta))
}
