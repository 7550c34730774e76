//! One seed of the quickstart: the task data, the pre-trained base model (cached), and training
//! and evaluating each method on it.

use super::config::*;
use super::results::*;
use crate::train::evaluate_metrics;
use bridge_bilevel::{LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, init_state, run_steps};
use bridge_core::DataFormat;
use bridge_core::error::ensure_finite;
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, CharCodec, DataCursor, DeviceChoice, FlatGradients,
    GroupOptimizer, InMemorySource, LambdaScheduleConfig, Result, RewardFunction, SequenceBatch, SftExample,
    TokenSequence, derive_seed, independent_copy,
};
use bridge_eval::reward::{AccuracyReward, NoisyReward};
use bridge_eval::runner::{EvalConfig, EvalDataset};
use bridge_models::{Decoder, DecoderWeights};
use bridge_report::metrics::MetricsWriter;
use bridge_sft::{SftTokenizer, TokenizeConfig, TokenizedSource};
use bridge_tasks::{ALPHABET, TaskConfig, TaskSplits, generate};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `f` inside a rayon pool of exactly `threads` threads (the results depend on it).
pub(super) fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BridgeError::InvalidInput(format!("cannot start {threads} threads: {e}")))?;
    pool.install(f)
}

/// Which split a training run is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Split {
    /// The held-out test split (the reported numbers).
    Test,
    /// The validation split (hyper-parameter search).
    Val,
}

/// The model, data and settings shared by every method of one seed.
pub(super) struct SeedSetup<'a> {
    pub(super) cfg: &'a QuickstartConfig,
    pub(super) seed: u64,
    pub(super) lm: Decoder,
    pub(super) theta0: DecoderWeights,
    pub(super) device: burn::tensor::Device,
    pub(super) sft: InMemorySource<TokenSequence>,
    pub(super) prompts: InMemorySource<bridge_core::RlPrompt>,
    pub(super) test: EvalDataset,
    pub(super) val: Option<EvalDataset>,
    pub(super) eval: EvalConfig,
    pub(super) seed_dir: PathBuf,
    pub(super) base_dir: PathBuf,
    pub(super) base_cached: bool,
    pub(super) pretrain_seconds: f64,
}

impl<'a> SeedSetup<'a> {
    /// Generates the seed's data, pre-trains (or loads) its base model and tokenises everything.
    pub(super) fn new(cfg: &'a QuickstartConfig, seed: u64, progress: &mut (dyn FnMut(&str) + Send)) -> Result<Self> {
        let task = TaskConfig { seed, ..cfg.task.clone() };
        let splits = generate(&task)?;
        let seed_dir = cfg.run_dir.join(format!("seed-{seed}"));
        let data_dir = seed_dir.join("data");
        splits.write_jsonl(&data_dir)?;
        progress(&format!(
            "[seed {seed}] task: {} levels; {} pre-training documents, {} SFT, {} RL, {} test, {} validation → {}",
            task.levels,
            splits.pretrain.len(),
            splits.sft.len(),
            splits.rl.len(),
            splits.test.len(),
            splits.val.len(),
            data_dir.display()
        ));

        let lm =
            Decoder::new(cfg.model.decoder_config(ALPHABET.chars().count() + 1)?, Box::new(CharCodec::new(ALPHABET)))?;
        let device = DeviceChoice::Flex.autodiff_device()?;
        let (base_dir, base_cached, pretrain_seconds) = ensure_base(cfg, &task, &lm, &splits, &device, progress)?;
        let (_, theta0) = bridge_models::open_model(&base_dir, &device)?;
        // A stable path to this seed's base (`seed-S/base/`), so that `train` configs can start
        // from it (see examples/configs/tiny-bridge.toml).
        bridge_models::save_hf_dir(seed_dir.join("base"), lm.config(), &theta0)?;

        let tokenize = TokenizeConfig::default();
        let tokenizer = SftTokenizer::new(lm.codec(), &tokenize)?;
        let examples: InMemorySource<SftExample> = InMemorySource::new(splits.sft.clone());
        let sft = InMemorySource::new(TokenizedSource::new(&examples, &tokenizer)?.sequences().to_vec());
        let test = EvalDataset::load(data_dir.join("test.jsonl"), DataFormat::Auto)?;
        let val = if splits.val.is_empty() {
            None
        } else {
            Some(EvalDataset::load(data_dir.join("val.jsonl"), DataFormat::Auto)?)
        };
        Ok(SeedSetup {
            cfg,
            seed,
            lm,
            theta0,
            device,
            sft,
            prompts: InMemorySource::new(splits.rl.clone()),
            test,
            val,
            eval: cfg.eval_config(),
            seed_dir,
            base_dir,
            base_cached,
            pretrain_seconds,
        })
    }

    pub(super) fn dataset(&self, split: Split) -> Result<&EvalDataset> {
        match split {
            Split::Test => Ok(&self.test),
            Split::Val => self.val.as_ref().ok_or_else(|| {
                BridgeError::config("quickstart.task.n_val", "the sweep chooses on the validation split: set n_val > 0")
            }),
        }
    }

    /// Every method of the config at its hyper-parameters, evaluated on the test split.
    pub(super) fn run_methods(&self, progress: &mut (dyn FnMut(&str) + Send)) -> Result<SeedRun> {
        let (cfg, seed) = (self.cfg, self.seed);
        let t0 = Instant::now();
        let mut base_point = self.evaluate(Split::Test, 0, 0.0, &self.theta0, None)?;
        base_point.cpu_seconds = Some(0.0);
        let base_eval_seconds = t0.elapsed().as_secs_f64();
        progress(&format!(
            "[seed {seed}] base: test accuracy {:.3} (levels {}) [{base_eval_seconds:.1} s to evaluate]",
            base_point.accuracy,
            fmt_levels(&base_point.levels)
        ));
        let mut methods = Vec::with_capacity(cfg.methods.len());
        for &method in &cfg.methods {
            let run = match cfg.hyper.get(&method) {
                Some(hyper) if method.trains() => {
                    let dir = self.seed_dir.join(method.slug());
                    self.train(method, hyper, Split::Test, cfg.budget.eval_every, &base_point, &dir, progress)?
                }
                _ => MethodRun {
                    method,
                    hyper: None,
                    curve: vec![base_point.clone()],
                    train_seconds: 0.0,
                    train_cpu_seconds: Some(0.0),
                    eval_seconds: base_eval_seconds,
                },
            };
            methods.push(run);
        }
        Ok(SeedRun {
            seed,
            base_dir: self.base_dir.clone(),
            base_cached: self.base_cached,
            pretrain_seconds: self.pretrain_seconds,
            methods,
        })
    }

    pub(super) fn evaluate(
        &self,
        split: Split,
        step: u64,
        seconds: f64,
        theta: &DecoderWeights,
        adapter: Option<&bridge_models::LoraAdapter>,
    ) -> Result<CurvePoint> {
        let data = self.dataset(split)?;
        let m = evaluate_metrics(&self.lm, theta, adapter, std::slice::from_ref(data), &self.eval)?;
        let name = &data.name;
        let levels = (1..=self.cfg.task.levels)
            .map(|l| m.get(&format!("eval_{name}_level_{l}_accuracy")).copied().unwrap_or(0.0))
            .collect();
        Ok(CurvePoint {
            step,
            seconds,
            cpu_seconds: None,
            accuracy: m.get("eval_accuracy").copied().unwrap_or(0.0),
            levels,
        })
    }

    /// The reward of the RL methods: the verifier's accuracy, flipped with probability
    /// [`QuickstartConfig::reward_noise`] from the seed's own stream.
    pub(super) fn reward(&self) -> Result<Box<dyn RewardFunction>> {
        let clean = AccuracyReward::default();
        Ok(if self.cfg.reward_noise > 0.0 {
            Box::new(NoisyReward::new(clean, self.cfg.reward_noise, self.seed)?)
        } else {
            Box::new(clean)
        })
    }

    /// Trains `method` at `hyper` for the budget, evaluating on `split` every `eval_every` steps
    /// (and at the end); `start` is the curve's first point (the base model).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train(
        &self,
        method: Method,
        hyper: &Hyper,
        split: Split,
        eval_every: u64,
        start: &CurvePoint,
        run_dir: &Path,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<MethodRun> {
        let (cfg, seed, b) = (self.cfg, self.seed, &self.cfg.budget);
        let mut algorithm =
            method.algorithm(b).ok_or_else(|| BridgeError::InvalidInput("Base does not train".into()))?;
        let needs = algorithm.needs();
        let adapter0 = if needs.adapter {
            Some(self.lm.init_adapter(&b.lora, &self.device, &mut BridgeRng::for_stream(seed, "init/lora"))?)
        } else {
            None
        };
        let optim = OptimConfig { theta: AdamWSettings::with_lr(hyper.lr), ..OptimConfig::default() };
        let state = init_state(needs, independent_copy(&self.theta0), adapter0, &optim, b.kl_coef > 0.0, seed)?;
        let rl = cfg.grpo();
        // λ is BRIDGE's alone; the other algorithms never read the schedule.
        let lambda = LambdaScheduleConfig::Constant { value: hyper.lambda.unwrap_or(0.5) }.build()?;
        let reward = self.reward()?;
        let inputs = RunInputs {
            sft: &self.sft,
            prompts: &self.prompts,
            reward: reward.as_ref(),
            rl: &rl,
            sft_batch_size: b.sft_batch_size,
            lambda: lambda.as_ref(),
        };
        let loop_cfg = LoopConfig {
            total_steps: b.steps,
            eval_every,
            checkpoint_every: 0,
            keep_checkpoints: 1,
            run_dir: run_dir.to_path_buf(),
            ..LoopConfig::default()
        };
        let mut writer = MetricsWriter::create(run_dir)?;
        let mut curve = vec![start.clone()];
        let (mut eval_seconds, mut eval_cpu) = (0.0, 0.0);
        let label = method.label();
        let what = if split == Split::Val { "validation" } else { "test" };
        let setting = hyper.label();
        let started = Instant::now();
        let cpu_started = process_cpu_seconds();
        run_steps(
            &self.lm,
            algorithm.as_mut(),
            state,
            &inputs,
            &loop_cfg,
            |_, s| {
                let (t, cpu) = (Instant::now(), process_cpu_seconds());
                let train_s = (t - started).as_secs_f64() - eval_seconds;
                let mut point = self.evaluate(split, s.step, train_s, &s.theta, s.adapter.as_ref())?;
                point.cpu_seconds = cpu.zip(cpu_started).map(|(now, start)| now - start - eval_cpu);
                eval_seconds += t.elapsed().as_secs_f64();
                if let (Some(before), Some(after)) = (cpu, process_cpu_seconds()) {
                    eval_cpu += after - before;
                }
                progress(&format!(
                    "[seed {seed}] {label:<11} ({setting}) step {:>4}/{}: {what} accuracy {:.3} (levels {}) after \
                     {train_s:.1} s",
                    s.step,
                    b.steps,
                    point.accuracy,
                    fmt_levels(&point.levels)
                ));
                let mut m = Metrics::new();
                m.insert("eval_accuracy".into(), point.accuracy);
                m.insert("train_seconds".into(), train_s);
                curve.push(point);
                Ok(m)
            },
            |event| match event {
                RunEvent::Step(m) => writer.write(&tagged("train", m)),
                RunEvent::Eval(m) => writer.write(&tagged("eval", m)),
                RunEvent::Checkpoint(_) => Ok(()),
            },
        )?;
        let train_seconds = curve.last().map_or(0.0, |p| p.seconds);
        let train_cpu_seconds = curve.last().and_then(|p| p.cpu_seconds);
        Ok(MethodRun { method, hyper: Some(*hyper), curve, train_seconds, train_cpu_seconds, eval_seconds })
    }
}

pub(super) fn fmt_levels(levels: &[f64]) -> String {
    levels.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>().join("/")
}

pub(super) fn tagged(kind: &str, m: &Metrics) -> serde_json::Map<String, serde_json::Value> {
    let mut line = serde_json::Map::new();
    line.insert("kind".into(), kind.into());
    for (k, v) in m {
        line.insert(k.clone(), serde_json::json!(v));
    }
    line
}

/// FNV-1a, 64 bits: a digest that is stable across Rust versions (unlike `DefaultHasher`).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The cache directory of the base model of `task` (whose `seed` is the run's).
pub fn base_dir(cfg: &QuickstartConfig, task: &TaskConfig) -> Result<PathBuf> {
    let key = serde_json::json!({
        "version": 1,
        "model": cfg.model,
        "pretrain": cfg.pretrain,
        "task": task,
        "threads": cfg.threads,
    });
    let text = serde_json::to_string(&key).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    Ok(cfg.run_dir.join(format!("base-{:016x}", fnv1a(text.as_bytes()))))
}

/// Returns the base model's directory, pre-training and saving it first unless it is cached;
/// with whether it was cached and the pre-training seconds.
pub(super) fn ensure_base(
    cfg: &QuickstartConfig,
    task: &TaskConfig,
    lm: &Decoder,
    splits: &TaskSplits,
    device: &burn::tensor::Device,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(PathBuf, bool, f64)> {
    let dir = base_dir(cfg, task)?;
    let seed = task.seed;
    let complete = ["config.json", "model.safetensors", "pretrain.json"].iter().all(|f| dir.join(f).is_file());
    if complete {
        progress(&format!("[seed {seed}] base model: cached in {}", dir.display()));
        return Ok((dir, true, 0.0));
    }
    progress(&format!(
        "[seed {seed}] base model: pre-training {} steps × {} documents from scratch…",
        cfg.pretrain.steps, cfg.pretrain.batch_size
    ));
    let started = Instant::now();
    let (theta, losses) = pretrain(lm, &splits.pretrain, &cfg.pretrain, seed, device, progress)?;
    let seconds = started.elapsed().as_secs_f64();
    bridge_models::save_hf_dir(&dir, lm.config(), &theta)?;
    let meta = serde_json::json!({
        "seed": seed,
        "model": cfg.model,
        "pretrain": cfg.pretrain,
        "task": task,
        "threads": cfg.threads,
        "seconds": seconds,
        "loss": losses,
    });
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    // Written last: its presence marks a complete cache entry.
    bridge_models::hf::write_atomic(&dir.join("pretrain.json"), &json)?;
    progress(&format!("[seed {seed}] base model: pre-trained in {seconds:.1} s → {}", dir.display()));
    Ok((dir, false, seconds))
}

/// Pre-trains a fresh model on `documents` (each followed by EOS; LM loss on every token).
/// Returns the weights and the mean loss of every tenth of the run.
pub fn pretrain(
    lm: &Decoder,
    documents: &[String],
    spec: &PretrainSpec,
    seed: u64,
    device: &burn::tensor::Device,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(DecoderWeights, Vec<f64>)> {
    let codec = lm.codec();
    let eos = codec.eos_token_ids().first().copied().unwrap_or(0);
    let docs = documents
        .iter()
        .map(|d| {
            let mut tokens = codec.encode(d)?;
            tokens.push(eos);
            Ok(TokenSequence::all_scored(tokens))
        })
        .collect::<Result<Vec<_>>>()?;
    if docs.is_empty() {
        return Err(BridgeError::config("quickstart.task.n_pretrain", "there is no pre-training document"));
    }
    let source = InMemorySource::new(docs);
    let mut cursor = DataCursor::new(derive_seed(seed, "pretrain/data"), true);
    let mut theta = lm.init_weights(device, &mut BridgeRng::for_stream(seed, "init/base"))?;
    let mut optim: Option<GroupOptimizer> = None;
    let chunk = (spec.steps / 10).max(1);
    let (mut losses, mut sum, mut n) = (Vec::new(), 0.0, 0u64);
    for step in 0..spec.steps {
        let lr =
            if step < spec.warmup_steps { spec.lr * (step + 1) as f64 / spec.warmup_steps as f64 } else { spec.lr };
        // A new learning rate keeps the AdamW moments: the burn optimiser moves over.
        let mut next = GroupOptimizer::new(
            "quickstart.pretrain",
            AdamWSettings { weight_decay: 0.01, ..AdamWSettings::with_lr(lr) },
        )?;
        if let Some(prev) = optim.take() {
            next.set_optimizer(prev.optimizer().clone());
        }
        let rows = cursor.next_batch(&source, spec.batch_size)?;
        let batch = SequenceBatch::new(rows, codec.pad_token_id())?;
        let out = bridge_sft::sft_loss(lm, &theta, None, &batch)?;
        ensure_finite("pretrain loss", out.value, step)?;
        let grads = FlatGradients::from_backward(&mut out.loss.backward(), &theta);
        let (grads, _) = next.clip(&grads, step)?;
        theta = next.apply(theta, &grads);
        optim = Some(next);
        sum += out.value;
        n += 1;
        if (step + 1) % chunk == 0 || step + 1 == spec.steps {
            let mean = sum / n as f64;
            losses.push(mean);
            progress(&format!("  pre-training step {:>5}/{}: loss {mean:.3}", step + 1, spec.steps));
            (sum, n) = (0.0, 0);
        }
    }
    Ok((theta, losses))
}
