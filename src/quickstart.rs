//! The quickstart (`cargo run --release --example quickstart`): BRIDGE against its baselines on
//! the embedded arithmetic task, end to end on a CPU, with nothing to download.
//!
//! [`run`] does, for each seed:
//!
//! 1. generates the task splits ([`bridge_eval::tasks`], seeded) and writes them to
//!    `RUN_DIR/seed-S/data/`;
//! 2. pre-trains a tiny Qwen2-style base model from scratch on the pre-training text (LM loss on
//!    every token, AdamW) and caches it as an HF directory `RUN_DIR/base-HASH/`, where `HASH`
//!    digests the model, pre-training and task settings, the seed and the thread count: a second
//!    run reuses it. Like the paper's base models it knows the format and the easy levels but
//!    has never seen a worked solution of the hard ones;
//! 3. trains SFT, RL-zero, Cold-start, naive alternating and BRIDGE from that base on an **equal
//!    budget of optimisation steps** ([`BudgetSpec::steps`] calls of
//!    [`TrainingAlgorithm::step`](bridge_bilevel::TrainingAlgorithm), the unit of
//!    [`bridge_bilevel::run_steps`]; Cold-start's SFT stage counts inside it), evaluating each
//!    greedily on the test split every [`BudgetSpec::eval_every`] steps. The clock of a method
//!    counts its training only: evaluation time is measured and left out;
//! 4. summarises (mean ± std over seeds) test accuracy per level and overall, training wall time,
//!    and the time each method needs to reach Cold-start's final accuracy;
//! 5. writes `results.json`, `results.md` (the table) and `accuracy.png` (accuracy against
//!    training wall time, one series per method) to the run directory.
//!
//! The flex backend is deterministic for a fixed thread count, and its reductions split their
//! work by the thread count, so [`run`] executes everything in a rayon pool of exactly
//! [`QuickstartConfig::threads`] threads (2 by default): the table is reproducible from the seed
//! and the thread count, on any machine with the same floating-point behaviour.

mod report;

pub use report::{MethodSummary, Stat, format_table, summarise};

use crate::train::{AlgorithmName, AlgorithmSection, evaluate_metrics};
use bridge_bilevel::{LoopConfig, Metrics, OptimConfig, RunEvent, RunInputs, init_state, run_steps};
use bridge_core::error::ensure_finite;
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, CharCodec, DataCursor, DeviceChoice, FlatGradients,
    GroupOptimizer, InMemorySource, LambdaScheduleConfig, Result, SequenceBatch, SftExample, TokenSequence,
    derive_seed, independent_copy,
};
use bridge_eval::metrics::MetricsWriter;
use bridge_eval::reward::AccuracyReward;
use bridge_eval::runner::{DatasetFormat, EvalConfig, EvalDataset, PromptTemplate};
use bridge_eval::tasks::{ALPHABET, TaskConfig, TaskSplits, generate};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights, LoraConfig};
use bridge_rl::GrpoConfig;
use bridge_sft::{SftTokenizer, TokenizeConfig, TokenizedSource};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// The methods the quickstart compares (method.md §5), in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The pre-trained base model, no training.
    Base,
    /// SFT on the demonstrations.
    Sft,
    /// GRPO from the base model.
    RlZero,
    /// SFT for [`BudgetSpec::cold_start_sft_steps`] steps, then GRPO.
    ColdStart,
    /// Each step one GRPO step then one SFT step, on θ.
    Alternating,
    /// BRIDGE (method.md §3).
    Bridge,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 6] =
        [Method::Base, Method::Sft, Method::RlZero, Method::ColdStart, Method::Alternating, Method::Bridge];

    /// The name printed in tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Method::Base => "Base",
            Method::Sft => "SFT",
            Method::RlZero => "RL-zero",
            Method::ColdStart => "Cold-start",
            Method::Alternating => "Alternating",
            Method::Bridge => "BRIDGE",
        }
    }

    /// The directory name of the method's run (`sft`, `rl_zero`, …).
    pub fn slug(self) -> &'static str {
        match self {
            Method::Base => "base",
            Method::Sft => "sft",
            Method::RlZero => "rl_zero",
            Method::ColdStart => "cold_start",
            Method::Alternating => "alternating",
            Method::Bridge => "bridge",
        }
    }

    fn algorithm(self, budget: &BudgetSpec) -> Option<AlgorithmSection> {
        let name = match self {
            Method::Base => return None,
            Method::Sft => AlgorithmName::Sft,
            Method::RlZero => AlgorithmName::RlZero,
            Method::ColdStart => AlgorithmName::ColdStart,
            Method::Alternating => AlgorithmName::Alternating,
            Method::Bridge => AlgorithmName::Bridge,
        };
        Some(AlgorithmSection { name, sft_steps: budget.cold_start_sft_steps, ..AlgorithmSection::default() })
    }
}

/// The tiny Qwen2-style base model (tied embeddings; vocabulary = the task alphabet + EOS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
}

impl ModelSpec {
    /// The decoder config for a vocabulary of `vocab_size` tokens.
    pub fn decoder_config(&self, vocab_size: usize) -> Result<DecoderConfig> {
        let cfg = DecoderConfig::from_hf_json(&serde_json::json!({
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "tie_word_embeddings": true,
            "rope_theta": 10000.0,
            "max_position_embeddings": 256,
            "eos_token_id": 0,
            "pad_token_id": 0,
        }))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Pre-training of the base model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSpec {
    /// Optimisation steps.
    pub steps: u64,
    /// Documents per step.
    pub batch_size: usize,
    /// AdamW learning rate (constant, after a linear warm-up of `warmup_steps`).
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
}

/// The training budget and the settings every method shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Optimisation steps per method (one [`bridge_bilevel::run_steps`] step each: one SFT batch,
    /// one RL batch, or — alternating and BRIDGE — one of each).
    pub steps: u64,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: u64,
    /// Cold-start: SFT steps before RL (inside `steps`).
    pub cold_start_sft_steps: u64,
    /// SFT examples per step.
    pub sft_batch_size: usize,
    /// RL prompts per step.
    pub prompts_per_step: usize,
    /// Rollouts per prompt (the GRPO group size G).
    pub group_size: usize,
    /// Maximum new tokens per rollout.
    pub max_new_tokens: usize,
    /// Rollout temperature.
    pub temperature: f64,
    /// AdamW learning rate of every group (θ, θ̂, w; method.md: β = α).
    pub lr: f64,
    /// BRIDGE's λ (constant).
    pub lambda: f64,
    /// The LoRA adapter (BRIDGE's w).
    pub lora: LoraConfig,
    /// β_KL of the GRPO loss (0 skips the reference forward).
    pub kl_coef: f64,
}

/// Everything a quickstart run does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickstartConfig {
    /// The first seed; seed `s` drives the task splits, the base model, and every stream of the
    /// training runs.
    pub seed: u64,
    /// How many seeds (`seed`, `seed + 1`, …).
    pub seeds: usize,
    /// Rayon threads (the results depend on it; see the module docs).
    pub threads: usize,
    /// Where everything is written.
    pub run_dir: PathBuf,
    /// The task (its `seed` is replaced by the run's).
    pub task: TaskConfig,
    /// The base model.
    pub model: ModelSpec,
    /// Its pre-training.
    pub pretrain: PretrainSpec,
    /// The training budget.
    pub budget: BudgetSpec,
    /// Maximum new tokens of the greedy evaluation.
    pub eval_max_new_tokens: usize,
    /// Prompts per generation call in evaluation.
    pub eval_batch_size: usize,
    /// The methods, in table order.
    pub methods: Vec<Method>,
}

impl QuickstartConfig {
    /// The default run (≤ 10 minutes on a 2-core laptop; see `docs/quickstart.md` for how it was
    /// chosen).
    pub fn full() -> Self {
        Self {
            seed: 0,
            seeds: 1,
            threads: 2,
            run_dir: PathBuf::from("runs/quickstart"),
            // One-digit operands keep the arithmetic learnable by a tiny model in a minute. Level 1
            // has only 238 distinct questions at these limits, so the splits are uneven: 100 test
            // + 20 SFT + 40 RL + 30 pre-training questions of level 1, and the demonstrations
            // (400 per level) go to the levels 2-4 that have thousands.
            task: TaskConfig {
                levels: 4,
                n_pretrain: 3000,
                pretrain_problems: vec![30, 1500],
                n_sft: 1220,
                sft_per_level: vec![20, 400, 400, 400],
                n_rl: 320,
                rl_per_level: vec![40, 93, 93, 94],
                n_test: 400,
                test_per_level: vec![100, 100, 100, 100],
                max_operand: 9,
                max_factor: 9,
                max_value: 40,
                ..TaskConfig::default()
            },
            model: ModelSpec { hidden_size: 64, intermediate_size: 192, num_layers: 2, num_heads: 4, num_kv_heads: 2 },
            pretrain: PretrainSpec { steps: 1500, batch_size: 32, lr: 3e-3, warmup_steps: 50 },
            budget: BudgetSpec {
                steps: 300,
                eval_every: 50,
                cold_start_sft_steps: 150,
                sft_batch_size: 16,
                prompts_per_step: 8,
                group_size: 4,
                max_new_tokens: 48,
                temperature: 1.0,
                lr: 6e-4,
                lambda: 0.5,
                lora: LoraConfig { rank: 8, alpha: 16.0, ..LoraConfig::default() },
                kl_coef: 0.0,
            },
            eval_max_new_tokens: 48,
            eval_batch_size: 100,
            methods: Method::ALL.to_vec(),
        }
    }

    /// `--quick`: the same comparison, smaller (≤ 2 minutes; the CI smoke test).
    pub fn quick() -> Self {
        let full = Self::full();
        Self {
            task: TaskConfig {
                n_pretrain: 1500,
                pretrain_problems: vec![30, 900],
                n_test: 100,
                test_per_level: vec![25; 4],
                ..full.task.clone()
            },
            pretrain: PretrainSpec { steps: 500, ..full.pretrain.clone() },
            budget: BudgetSpec { steps: 40, eval_every: 10, cold_start_sft_steps: 20, ..full.budget.clone() },
            ..full
        }
    }

    /// A miniature configuration for tests: seconds, not minutes (the numbers mean nothing).
    pub fn miniature(run_dir: impl Into<PathBuf>) -> Self {
        let full = Self::full();
        Self {
            run_dir: run_dir.into(),
            task: TaskConfig {
                levels: 2,
                n_pretrain: 60,
                pretrain_problems: vec![10, 10],
                n_sft: 16,
                sft_per_level: vec![4, 12],
                n_rl: 16,
                n_test: 8,
                ..TaskConfig::default()
            },
            model: ModelSpec { hidden_size: 16, intermediate_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1 },
            pretrain: PretrainSpec { steps: 4, batch_size: 8, lr: 3e-3, warmup_steps: 0 },
            budget: BudgetSpec {
                steps: 2,
                eval_every: 1,
                cold_start_sft_steps: 1,
                sft_batch_size: 4,
                prompts_per_step: 2,
                group_size: 2,
                max_new_tokens: 12,
                lora: LoraConfig { rank: 2, alpha: 2.0, ..LoraConfig::default() },
                ..full.budget
            },
            eval_max_new_tokens: 12,
            eval_batch_size: 8,
            ..full
        }
    }

    /// Reads a configuration written as JSON (e.g. by `--print-config`); unknown keys are errors.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| BridgeError::config(path.display().to_string(), e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, msg: &str| Err(BridgeError::config(format!("quickstart.{field}"), msg.to_owned()));
        if self.seeds == 0 {
            return err("seeds", "must be ≥ 1");
        }
        if self.threads == 0 {
            return err("threads", "must be ≥ 1");
        }
        if self.methods.is_empty() {
            return err("methods", "must name at least one method");
        }
        let b = &self.budget;
        if b.steps == 0 {
            return err("budget.steps", "must be ≥ 1");
        }
        if b.cold_start_sft_steps > b.steps {
            return err("budget.cold_start_sft_steps", "must not exceed budget.steps");
        }
        if b.sft_batch_size == 0 || b.prompts_per_step == 0 || b.group_size == 0 || b.max_new_tokens == 0 {
            return err("budget", "batch sizes, group size and max_new_tokens must be ≥ 1");
        }
        if !(b.lambda > 0.0 && b.lambda < 1.0) {
            return err("budget.lambda", "must be in (0, 1)");
        }
        AdamWSettings::with_lr(b.lr).validate("quickstart.budget.lr")?;
        AdamWSettings::with_lr(self.pretrain.lr).validate("quickstart.pretrain.lr")?;
        b.lora.validate()?;
        if self.pretrain.batch_size == 0 {
            return err("pretrain.batch_size", "must be ≥ 1");
        }
        if self.eval_max_new_tokens == 0 || self.eval_batch_size == 0 {
            return err("eval", "eval_max_new_tokens and eval_batch_size must be ≥ 1");
        }
        self.task.validate()?;
        self.model.decoder_config(ALPHABET.chars().count() + 1)?;
        Ok(())
    }

    fn grpo(&self) -> GrpoConfig {
        let b = &self.budget;
        let mut rl = GrpoConfig { prompts_per_step: b.prompts_per_step, log_entropy: false, ..GrpoConfig::default() };
        rl.sampling.n = b.group_size;
        rl.sampling.max_new_tokens = b.max_new_tokens;
        rl.sampling.temperature = b.temperature;
        rl.loss.kl_coef = b.kl_coef;
        rl
    }

    fn eval_config(&self) -> EvalConfig {
        EvalConfig {
            prompt: PromptTemplate::Plain { template: self.task.prompt_template.clone() },
            max_new_tokens: self.eval_max_new_tokens,
            batch_size: self.eval_batch_size,
            category_fields: vec!["level".into()],
            max_failures: 0,
            ..EvalConfig::default()
        }
    }
}

/// One evaluation of one method: after `step` steps and `seconds` of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps done.
    pub step: u64,
    /// Training wall time so far (evaluation excluded), seconds.
    pub seconds: f64,
    /// Overall test accuracy.
    pub accuracy: f64,
    /// Test accuracy of level 1, 2, ….
    pub levels: Vec<f64>,
}

/// One method's run on one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// The method.
    pub method: Method,
    /// Evaluations, the first one the base model at step 0.
    pub curve: Vec<CurvePoint>,
    /// Training wall time, seconds (evaluation excluded).
    pub train_seconds: f64,
    /// Time spent evaluating, seconds.
    pub eval_seconds: f64,
}

impl MethodRun {
    /// The last evaluation.
    pub fn last(&self) -> Option<&CurvePoint> {
        self.curve.last()
    }

    /// The training time at which the accuracy first reached `target` (`None`: never).
    pub fn time_to_reach(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.accuracy >= target - 1e-12).map(|p| p.seconds)
    }
}

/// Everything one seed produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The cached base model's directory.
    pub base_dir: PathBuf,
    /// Whether the base model was loaded from the cache (not pre-trained by this run).
    pub base_cached: bool,
    /// Pre-training wall time, seconds (0 when cached).
    pub pretrain_seconds: f64,
    /// The runs, in the order of [`QuickstartConfig::methods`].
    pub methods: Vec<MethodRun>,
}

/// What [`run`] returns (and writes as `results.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The configuration.
    pub config: QuickstartConfig,
    /// The budget unit, in words.
    pub budget_unit: String,
    /// Per seed.
    pub seeds: Vec<SeedRun>,
    /// Per method, over the seeds.
    pub summary: Vec<MethodSummary>,
    /// The printed table.
    pub table: String,
    /// Wall time of the whole invocation, seconds.
    pub total_seconds: f64,
    /// `results.json`.
    pub results_path: PathBuf,
    /// The accuracy-against-time PNG.
    pub plot_path: PathBuf,
}

/// The budget unit, as `results.json` and the table state it.
pub const BUDGET_UNIT: &str = "optimisation steps: one TrainingAlgorithm::step each (one SFT batch, one RL batch, or one \
     of each for alternating and BRIDGE); Cold-start's SFT stage counts inside the budget";

/// Runs the quickstart: every seed, every method, then the table, `results.json` and the plot.
/// `progress` receives one line per phase and evaluation.
pub fn run(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    cfg.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| BridgeError::InvalidInput(format!("cannot start {} threads: {e}", cfg.threads)))?;
    pool.install(|| run_in_pool(cfg, progress))
}

fn run_in_pool(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| BridgeError::io(&cfg.run_dir, e))?;
    let mut seeds = Vec::with_capacity(cfg.seeds);
    for i in 0..cfg.seeds {
        let seed = cfg.seed.checked_add(i as u64).ok_or_else(|| BridgeError::config("quickstart.seed", "overflows"))?;
        seeds.push(run_seed(cfg, seed, progress)?);
    }
    let summary = summarise(&cfg.methods, &seeds, cfg.task.levels);
    let table = format_table(&summary, cfg.task.levels, seeds.len());
    let results_path = cfg.run_dir.join("results.json");
    let plot_path = cfg.run_dir.join("accuracy.png");
    report::plot(&cfg.methods, &seeds, cfg.task.levels, &plot_path)?;
    let mut report = QuickstartReport {
        config: cfg.clone(),
        budget_unit: BUDGET_UNIT.replace("  ", " "),
        seeds,
        summary,
        table,
        total_seconds: 0.0,
        results_path: results_path.clone(),
        plot_path,
    };
    report.total_seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    bridge_models::hf::write_atomic(&results_path, &json)?;
    let md = format!("{}\n\nBudget: {}.\n", report.table, report.budget_unit);
    bridge_models::hf::write_atomic(&cfg.run_dir.join("results.md"), md.as_bytes())?;
    Ok(report)
}

/// The model, data and settings shared by every method of one seed.
struct SeedSetup<'a> {
    cfg: &'a QuickstartConfig,
    seed: u64,
    lm: Decoder,
    theta0: DecoderWeights,
    device: burn::tensor::Device,
    sft: InMemorySource<TokenSequence>,
    prompts: InMemorySource<bridge_core::RlPrompt>,
    test: EvalDataset,
    eval: EvalConfig,
    seed_dir: PathBuf,
}

fn run_seed(cfg: &QuickstartConfig, seed: u64, progress: &mut (dyn FnMut(&str) + Send)) -> Result<SeedRun> {
    let task = TaskConfig { seed, ..cfg.task.clone() };
    let splits = generate(&task)?;
    let seed_dir = cfg.run_dir.join(format!("seed-{seed}"));
    let data_dir = seed_dir.join("data");
    splits.write_jsonl(&data_dir)?;
    progress(&format!(
        "[seed {seed}] task: {} levels; {} pre-training documents, {} SFT, {} RL, {} test → {}",
        task.levels,
        splits.pretrain.len(),
        splits.sft.len(),
        splits.rl.len(),
        splits.test.len(),
        data_dir.display()
    ));

    let lm = Decoder::new(cfg.model.decoder_config(ALPHABET.chars().count() + 1)?, Box::new(CharCodec::new(ALPHABET)))?;
    let device = DeviceChoice::Flex.autodiff_device()?;
    let (base_dir, base_cached, pretrain_seconds) = ensure_base(cfg, &task, &lm, &splits, &device, progress)?;
    let (_, theta0) = bridge_models::open_model(&base_dir, &device)?;
    // A stable path to this seed's base (`seed-S/base/`), so that `train` configs can start from it
    // (see examples/configs/tiny-bridge.toml).
    bridge_models::save_hf_dir(seed_dir.join("base"), lm.config(), &theta0)?;

    let codec = lm.codec();
    let tokenize = TokenizeConfig::default();
    let tokenizer = SftTokenizer::new(codec, &tokenize)?;
    let examples: InMemorySource<SftExample> = InMemorySource::new(splits.sft.clone());
    let sft = InMemorySource::new(TokenizedSource::new(&examples, &tokenizer)?.sequences().to_vec());
    let test = EvalDataset::load(data_dir.join("test.jsonl"), DatasetFormat::Auto)?;
    let setup = SeedSetup {
        cfg,
        seed,
        lm,
        theta0,
        device,
        sft,
        prompts: InMemorySource::new(splits.rl.clone()),
        test,
        eval: cfg.eval_config(),
        seed_dir,
    };

    let t0 = Instant::now();
    let base_point = setup.evaluate(0, 0.0, &setup.theta0, None)?;
    let base_eval_seconds = t0.elapsed().as_secs_f64();
    progress(&format!(
        "[seed {seed}] base: accuracy {:.3} (levels {}) [{base_eval_seconds:.1} s to evaluate]",
        base_point.accuracy,
        fmt_levels(&base_point.levels)
    ));
    let mut methods = Vec::with_capacity(cfg.methods.len());
    for &method in &cfg.methods {
        let run = match method.algorithm(&cfg.budget) {
            None => MethodRun {
                method,
                curve: vec![base_point.clone()],
                train_seconds: 0.0,
                eval_seconds: base_eval_seconds,
            },
            Some(section) => setup.train(method, &section, &base_point, progress)?,
        };
        methods.push(run);
    }
    Ok(SeedRun { seed, base_dir, base_cached, pretrain_seconds, methods })
}

fn fmt_levels(levels: &[f64]) -> String {
    levels.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>().join("/")
}

impl SeedSetup<'_> {
    fn evaluate(
        &self,
        step: u64,
        seconds: f64,
        theta: &DecoderWeights,
        adapter: Option<&bridge_models::LoraAdapter>,
    ) -> Result<CurvePoint> {
        let m = evaluate_metrics(&self.lm, theta, adapter, std::slice::from_ref(&self.test), &self.eval)?;
        let name = &self.test.name;
        let levels = (1..=self.cfg.task.levels)
            .map(|l| m.get(&format!("eval_{name}_level_{l}_accuracy")).copied().unwrap_or(0.0))
            .collect();
        Ok(CurvePoint { step, seconds, accuracy: m.get("eval_accuracy").copied().unwrap_or(0.0), levels })
    }

    fn train(
        &self,
        method: Method,
        section: &AlgorithmSection,
        base_point: &CurvePoint,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<MethodRun> {
        let (cfg, seed, b) = (self.cfg, self.seed, &self.cfg.budget);
        let mut algorithm = section.build::<Decoder>();
        let needs = algorithm.needs();
        let adapter0 = if needs.adapter {
            Some(self.lm.init_adapter(&b.lora, &self.device, &mut BridgeRng::for_stream(seed, "init/lora"))?)
        } else {
            None
        };
        let optim = OptimConfig { theta: AdamWSettings::with_lr(b.lr), ..OptimConfig::default() };
        let state = init_state(needs, independent_copy(&self.theta0), adapter0, &optim, b.kl_coef > 0.0, seed)?;
        let rl = cfg.grpo();
        let lambda = LambdaScheduleConfig::Constant { value: b.lambda }.build()?;
        let reward = AccuracyReward::default();
        let inputs = RunInputs {
            sft: &self.sft,
            prompts: &self.prompts,
            reward: &reward,
            rl: &rl,
            sft_batch_size: b.sft_batch_size,
            lambda: lambda.as_ref(),
        };
        let run_dir = self.seed_dir.join(method.slug());
        let loop_cfg = LoopConfig {
            total_steps: b.steps,
            eval_every: b.eval_every,
            checkpoint_every: 0,
            keep_checkpoints: 1,
            run_dir: run_dir.clone(),
            ..LoopConfig::default()
        };
        let mut writer = MetricsWriter::create(&run_dir)?;
        let mut curve = vec![base_point.clone()];
        let mut eval_seconds = 0.0;
        let label = method.label();
        let started = Instant::now();
        run_steps(
            &self.lm,
            algorithm.as_mut(),
            state,
            &inputs,
            &loop_cfg,
            |_, s| {
                let t = Instant::now();
                let train_s = (t - started).as_secs_f64() - eval_seconds;
                let point = self.evaluate(s.step, train_s, &s.theta, s.adapter.as_ref())?;
                eval_seconds += t.elapsed().as_secs_f64();
                progress(&format!(
                    "[seed {seed}] {label:<11} step {:>4}/{}: accuracy {:.3} (levels {}) after {train_s:.1} s",
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
        Ok(MethodRun { method, curve, train_seconds, eval_seconds })
    }
}

fn tagged(kind: &str, m: &Metrics) -> serde_json::Map<String, serde_json::Value> {
    let mut line = serde_json::Map::new();
    line.insert("kind".into(), kind.into());
    for (k, v) in m {
        line.insert(k.clone(), serde_json::json!(v));
    }
    line
}

/// FNV-1a, 64 bits: a digest that is stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
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
fn ensure_base(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_the_cache_key_tracks_the_config() {
        for cfg in [QuickstartConfig::full(), QuickstartConfig::quick(), QuickstartConfig::miniature("x")] {
            cfg.validate().unwrap();
        }
        let cfg = QuickstartConfig::full();
        let a = base_dir(&cfg, &cfg.task).unwrap();
        assert_eq!(a, base_dir(&cfg.clone(), &cfg.task).unwrap());
        let other = TaskConfig { seed: 1, ..cfg.task.clone() };
        assert_ne!(a, base_dir(&cfg, &other).unwrap());
        let bad = QuickstartConfig { seeds: 0, ..QuickstartConfig::full() };
        assert!(bad.validate().unwrap_err().to_string().contains("seeds"));
        let bad = QuickstartConfig {
            budget: BudgetSpec { cold_start_sft_steps: 1000, ..QuickstartConfig::full().budget },
            ..QuickstartConfig::full()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("cold_start_sft_steps"));
    }

    #[test]
    fn the_presets_tasks_generate_with_their_per_level_counts() {
        for cfg in [QuickstartConfig::full(), QuickstartConfig::quick()] {
            let task = &cfg.task;
            let splits = generate(task).unwrap();
            let count = |ps: &[bridge_eval::tasks::Problem]| {
                (1..=task.levels).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>()
            };
            assert_eq!(count(&splits.problems.test), task.test_per_level);
            assert_eq!(count(&splits.problems.sft), task.sft_per_level);
            assert_eq!(count(&splits.problems.rl), task.rl_per_level);
            assert_eq!(splits.pretrain.len(), task.n_pretrain);
        }
    }
}
