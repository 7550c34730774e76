//! The quickstart (`cargo run --release --example quickstart`): BRIDGE against its baselines on
//! the embedded arithmetic task, end to end on a CPU, with nothing to download.
//!
//! [`run`] does, for each seed:
//!
//! 1. generates the task splits ([`bridge_tasks`], seeded) and writes them to
//!    `RUN_DIR/seed-S/data/`: levels 1–2 are plain arithmetic the base model has seen worked
//!    out, levels 3–4 need a skill it has never seen (squares, `a^2`) that only the
//!    demonstrations show;
//! 2. pre-trains a tiny Qwen2-style base model from scratch on the pre-training text (LM loss on
//!    every token, AdamW) and caches it as an HF directory `RUN_DIR/base-HASH/`, where `HASH`
//!    digests the model, pre-training and task settings, the seed and the thread count: a second
//!    run reuses it;
//! 3. trains SFT, RL-zero, Cold-start, naive alternating and BRIDGE from that base on an **equal
//!    budget of optimisation steps** ([`BudgetSpec::steps`] calls of
//!    [`TrainingAlgorithm::step`](bridge_bilevel::TrainingAlgorithm), the unit of
//!    [`bridge_bilevel::run_steps`]; Cold-start's SFT stage counts inside it), each at **its own
//!    hyper-parameters** ([`QuickstartConfig::hyper`], chosen by [`sweep`] on the validation
//!    split), evaluating each greedily on the test split every [`BudgetSpec::eval_every`] steps.
//!    The clock of a method counts its training only: evaluation time is measured and left out;
//! 4. summarises (mean ± std over seeds) test accuracy per level and overall, training wall time,
//!    and the time each method needs to reach the best baseline's final accuracy; and tests the
//!    paper's claims on paired differences ([`claims`]);
//! 5. writes `results.json` (with the commit and every setting), `results.md` (the tables) and
//!    `accuracy.png` (accuracy against training wall time, one series per method) to the run
//!    directory.
//!
//! [`sweep`] is the hyper-parameter search every method gets alike: the same grid of learning
//! rates ([`SweepSpec::lrs`]) — crossed with [`SweepSpec::lambdas`] for BRIDGE — the same step
//! budget, data and evaluation, scored by the final accuracy on the validation split (disjoint
//! from test), averaged over the seeds. Its choice is what [`QuickstartConfig::full`] runs.
//!
//! The flex backend is deterministic for a fixed thread count, and its reductions split their
//! work by the thread count, so [`run`] executes everything in a rayon pool of exactly
//! [`QuickstartConfig::threads`] threads (2 by default): the table is reproducible from the seed
//! and the thread count, on any machine with the same floating-point behaviour.

mod claims;
mod report;
mod sweep;

pub use claims::{Claim, Verdict, claims, format_claims};
pub use report::{MethodSummary, Stat, format_table, summarise};
pub use sweep::{SweepPoint, SweepReport, sweep};

use crate::train::evaluate_metrics;
use bridge_bilevel::{
    Bridge, Chord, ColdStart, LoopConfig, Luffy, Metrics, NaiveAlternating, OptimConfig, Ppo, RlZero, RunEvent,
    RunInputs, SftOnly, TrainingAlgorithm, UnrolledBridge, init_state, run_steps,
};
use bridge_core::DataFormat;
use bridge_core::error::ensure_finite;
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, CharCodec, DataCursor, DeviceChoice, FlatGradients,
    GroupOptimizer, InMemorySource, LambdaScheduleConfig, Result, RewardFunction, SequenceBatch, SftExample,
    TokenSequence, derive_seed, independent_copy,
};
use bridge_eval::reward::{AccuracyReward, NoisyReward};
use bridge_eval::runner::{EvalConfig, EvalDataset, PromptTemplate};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights, LoraConfig};
use bridge_report::metrics::MetricsWriter;
use bridge_rl::GrpoConfig;
use bridge_sft::{SftTokenizer, TokenizeConfig, TokenizedSource};
use bridge_tasks::{ALPHABET, TaskConfig, TaskSplits, generate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The methods the quickstart compares (method.md §5), in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// CHORD (arXiv 2508.11408): GRPO with CHORD-φ's weighted SFT term (μ = 0.1), on θ.
    Chord,
    /// LUFFY (arXiv 2504.14945): mixed-policy GRPO, one demonstration in each group, on θ.
    Luffy,
    /// PPO with a critic (value head, GAE), on θ.
    Ppo,
    /// BRIDGE with the unrolled one-step hypergradient as w's outer objective.
    BridgeUnrolled,
}

impl Method {
    /// The comparison of the paper, run by default, in table order.
    pub const DEFAULT: [Method; 6] =
        [Method::Base, Method::Sft, Method::RlZero, Method::ColdStart, Method::Alternating, Method::Bridge];

    /// Whether [`QuickstartConfig::full`]'s setting for this method was chosen by the search
    /// (the methods of [`Method::DEFAULT`]); the others' settings are borrowed from the nearest
    /// searched method until `--sweep --methods …` is run for them.
    pub fn searched(self) -> bool {
        Method::DEFAULT.contains(&self)
    }

    /// Every method: [`Method::DEFAULT`], then the other algorithms the quickstart can run with
    /// `--methods` (CHORD, LUFFY, PPO, BRIDGE-unrolled).
    pub const ALL: [Method; 10] = [
        Method::Base,
        Method::Sft,
        Method::RlZero,
        Method::ColdStart,
        Method::Alternating,
        Method::Bridge,
        Method::Chord,
        Method::Luffy,
        Method::Ppo,
        Method::BridgeUnrolled,
    ];

    /// The baselines BRIDGE is measured against (the trained methods other than BRIDGE).
    pub const BASELINES: [Method; 4] = [Method::Sft, Method::RlZero, Method::ColdStart, Method::Alternating];

    /// The name printed in tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Method::Base => "Base",
            Method::Sft => "SFT",
            Method::RlZero => "RL-zero",
            Method::ColdStart => "Cold-start",
            Method::Alternating => "Alternating",
            Method::Bridge => "BRIDGE",
            Method::Chord => "CHORD",
            Method::Luffy => "LUFFY",
            Method::Ppo => "PPO",
            Method::BridgeUnrolled => "BRIDGE-unrolled",
        }
    }

    /// The directory name of the method's run (`sft`, `rl_zero`, …), also its name in
    /// `--methods` and in JSON.
    pub fn slug(self) -> &'static str {
        match self {
            Method::Base => "base",
            Method::Sft => "sft",
            Method::RlZero => "rl_zero",
            Method::ColdStart => "cold_start",
            Method::Alternating => "alternating",
            Method::Bridge => "bridge",
            Method::Chord => "chord",
            Method::Luffy => "luffy",
            Method::Ppo => "ppo",
            Method::BridgeUnrolled => "bridge_unrolled",
        }
    }

    /// Whether the method trains (every method but Base).
    pub fn trains(self) -> bool {
        self != Method::Base
    }

    /// Whether the method samples rollouts and scores them with the reward.
    pub fn uses_rl(self) -> bool {
        !matches!(self, Method::Base | Method::Sft)
    }

    /// Whether the method has a λ (BRIDGE's weight of RL against SFT in θ's update (7)).
    pub fn has_lambda(self) -> bool {
        matches!(self, Method::Bridge | Method::BridgeUnrolled)
    }

    /// The algorithm, at its defaults (`None` for Base). CHORD runs the authors' CHORD-φ preset,
    /// LUFFY one demonstration per group (γ = 0.1), PPO TRL's defaults, BRIDGE-unrolled its
    /// unrolled step at the learning rate.
    fn algorithm(self, budget: &BudgetSpec) -> Option<Box<dyn TrainingAlgorithm<Decoder>>> {
        Some(match self {
            Method::Base => return None,
            Method::Sft => Box::new(SftOnly),
            Method::RlZero => Box::new(RlZero),
            Method::ColdStart => Box::new(ColdStart { sft_steps: budget.cold_start_sft_steps }),
            Method::Alternating => Box::new(NaiveAlternating),
            Method::Bridge => Box::new(Bridge::default()),
            Method::Chord => Box::new(Chord::default()),
            Method::Luffy => Box::new(Luffy::default()),
            Method::Ppo => Box::new(Ppo::default()),
            Method::BridgeUnrolled => Box::new(UnrolledBridge::default()),
        })
    }
}

impl std::str::FromStr for Method {
    type Err = BridgeError;

    /// A method's [`Method::slug`] (or its label, in any case: `BRIDGE`, `rl-zero`).
    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase().replace('-', "_");
        Method::ALL
            .into_iter()
            .find(|m| m.slug() == key || m.label().to_ascii_lowercase().replace('-', "_") == key)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.slug()).collect();
                BridgeError::config("methods", format!("unknown method {s:?} (one of {})", names.join(", ")))
            })
    }
}

/// One method's hyper-parameters: what [`sweep`] chooses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyper {
    /// AdamW learning rate of every parameter group the method trains (θ; BRIDGE's θ̂ and w;
    /// alternating's SFT optimiser: method.md's β = α; PPO's critic).
    pub lr: f64,
    /// BRIDGE's (and BRIDGE-unrolled's) λ (constant); absent for every other method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

impl Hyper {
    /// `lr 3e-4` or `lr 3e-4, λ 0.5`.
    pub fn label(&self) -> String {
        match self.lambda {
            Some(l) => format!("lr {:e}, λ {l}", self.lr),
            None => format!("lr {:e}", self.lr),
        }
    }

    /// A directory-safe name: `lr3e-4` or `lr3e-4-l0.5`.
    pub fn slug(&self) -> String {
        match self.lambda {
            Some(l) => format!("lr{:e}-l{l}", self.lr),
            None => format!("lr{:e}", self.lr),
        }
    }
}

/// The hyper-parameter search of [`sweep`]: the same grid for every method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// The learning rates every trained method is run at.
    pub lrs: Vec<f64>,
    /// The λ values BRIDGE (and BRIDGE-unrolled) is run at (each crossed with every learning
    /// rate).
    pub lambdas: Vec<f64>,
}

impl SweepSpec {
    /// The grid points of `method`, in search order (learning rate, then λ).
    pub fn grid(&self, method: Method) -> Vec<Hyper> {
        if !method.trains() {
            return Vec::new();
        }
        self.lrs
            .iter()
            .flat_map(|&lr| {
                if method.has_lambda() {
                    self.lambdas.iter().map(|&l| Hyper { lr, lambda: Some(l) }).collect::<Vec<_>>()
                } else {
                    vec![Hyper { lr, lambda: None }]
                }
            })
            .collect()
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
    /// Cold-start: SFT steps before RL (inside `steps`; a multiple of `eval_every`, so that the
    /// curve has a point where the RL stage starts).
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
    /// Each trained method's hyper-parameters (keys: [`Method::slug`]); the defaults are
    /// [`sweep`]'s choice (docs/quickstart.md).
    pub hyper: BTreeMap<Method, Hyper>,
    /// The hyper-parameter search of `--sweep`.
    pub sweep: SweepSpec,
    /// Probability with which every RL reward is flipped (0 ↔ 1) from a seeded stream: a noisy
    /// verifier ([`NoisyReward`]). 0: the clean reward.
    pub reward_noise: f64,
    /// Maximum new tokens of the greedy evaluation.
    pub eval_max_new_tokens: usize,
    /// Prompts per generation call in evaluation.
    pub eval_batch_size: usize,
    /// The methods, in table order.
    pub methods: Vec<Method>,
}

impl QuickstartConfig {
    /// The default run (≤ 10 minutes per seed on a 2-core laptop; see `docs/quickstart.md` for
    /// how the task was designed and how [`QuickstartConfig::hyper`] was chosen).
    pub fn full() -> Self {
        Self {
            seed: 0,
            seeds: 1,
            threads: 2,
            run_dir: PathBuf::from("runs/quickstart"),
            // Levels 1-2: one and two operations, worked out in the pre-training text (level 1
            // only 45 times: the base model half knows it). Levels 3-4: one and two operations with
            // one squared operand (`3^2+4`, `2*5^2-9`), never shown in pre-training: a skill only
            // the demonstrations teach (docs/quickstart.md, "The task"). Level 1 has 255 distinct
            // questions at these limits and level 3 has 282, which bounds their splits.
            task: TaskConfig {
                levels: 4,
                n_pretrain: 3000,
                pretrain_problems: vec![45, 1500],
                n_sft: 920,
                sft_per_level: vec![20, 400, 100, 400],
                n_rl: 258,
                rl_per_level: vec![40, 93, 32, 93],
                n_test: 400,
                test_per_level: vec![100, 100, 100, 100],
                n_val: 200,
                val_per_level: vec![50, 50, 50, 50],
                ops_per_level: vec![1, 2, 1, 2],
                squares_per_level: vec![0, 0, 1, 1],
                max_operand: 9,
                max_factor: 9,
                max_value: 99,
                ..TaskConfig::default()
            },
            model: ModelSpec { hidden_size: 64, intermediate_size: 192, num_layers: 2, num_heads: 4, num_kv_heads: 2 },
            pretrain: PretrainSpec { steps: 1500, batch_size: 32, lr: 3e-3, warmup_steps: 50 },
            budget: BudgetSpec {
                steps: 600,
                eval_every: 50,
                cold_start_sft_steps: 300,
                sft_batch_size: 16,
                prompts_per_step: 8,
                group_size: 4,
                max_new_tokens: 48,
                temperature: 1.0,
                lora: LoraConfig { rank: 8, alpha: 16.0, ..LoraConfig::default() },
                kl_coef: 0.0,
            },
            // `--sweep --seeds 3`'s choice on the validation split (docs/quickstart.md, "The
            // search"; docs/results/quickstart/sweep.json) for the methods of `Method::DEFAULT`.
            // CHORD, LUFFY, PPO and BRIDGE-unrolled have not been through the search yet: theirs
            // are the choice of the nearest searched method (CHORD: Cold-start's, LUFFY and PPO:
            // RL-zero's, BRIDGE-unrolled: BRIDGE's), and the run says so (`Method::searched`);
            // `--sweep --methods …` chooses them the same way as the others.
            hyper: [
                (Method::Sft, Hyper { lr: 1e-3, lambda: None }),
                (Method::RlZero, Hyper { lr: 3e-5, lambda: None }),
                (Method::ColdStart, Hyper { lr: 3e-4, lambda: None }),
                (Method::Alternating, Hyper { lr: 1e-3, lambda: None }),
                (Method::Bridge, Hyper { lr: 1e-3, lambda: Some(0.75) }),
                (Method::Chord, Hyper { lr: 3e-4, lambda: None }),
                (Method::Luffy, Hyper { lr: 3e-5, lambda: None }),
                (Method::Ppo, Hyper { lr: 3e-5, lambda: None }),
                (Method::BridgeUnrolled, Hyper { lr: 1e-3, lambda: Some(0.75) }),
            ]
            .into_iter()
            .collect(),
            sweep: SweepSpec { lrs: vec![3e-5, 1e-4, 3e-4, 1e-3, 3e-3], lambdas: vec![0.25, 0.5, 0.75] },
            reward_noise: 0.0,
            eval_max_new_tokens: 48,
            eval_batch_size: 100,
            methods: Method::DEFAULT.to_vec(),
        }
    }

    /// One learning rate for every method and `lambda` for the methods with a λ.
    pub fn uniform_hyper(lr: f64, lambda: f64) -> BTreeMap<Method, Hyper> {
        Method::ALL
            .into_iter()
            .filter(|m| m.trains())
            .map(|m| (m, Hyper { lr, lambda: m.has_lambda().then_some(lambda) }))
            .collect()
    }

    /// `--quick`: the same comparison, smaller (≤ 2 minutes; the CI smoke test).
    pub fn quick() -> Self {
        let full = Self::full();
        Self {
            task: TaskConfig {
                n_pretrain: 1500,
                pretrain_problems: vec![45, 900],
                n_test: 100,
                test_per_level: vec![25; 4],
                n_val: 100,
                val_per_level: vec![25; 4],
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
                n_val: 4,
                ops_per_level: vec![1, 1],
                squares_per_level: vec![0, 1],
                max_operand: 9,
                max_value: 40,
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
            hyper: Self::uniform_hyper(1e-3, 0.5),
            sweep: SweepSpec { lrs: vec![1e-3, 3e-3], lambdas: vec![0.5] },
            eval_max_new_tokens: 12,
            eval_batch_size: 8,
            ..full
        }
    }

    /// Reads a configuration written as JSON (e.g. by `--print-config`); unknown keys are errors.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
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
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return err("methods", &format!("{} is listed twice", m.slug()));
            }
        }
        let b = &self.budget;
        if b.steps == 0 {
            return err("budget.steps", "must be ≥ 1");
        }
        if b.cold_start_sft_steps > b.steps {
            return err("budget.cold_start_sft_steps", "must not exceed budget.steps");
        }
        if b.sft_batch_size == 0 || b.max_new_tokens == 0 {
            return err("budget", "sft_batch_size and max_new_tokens must be ≥ 1");
        }
        if b.prompts_per_step == 0 {
            return err("budget.prompts_per_step", "must be ≥ 1");
        }
        if b.group_size < 2 {
            return err("budget.group_size", "must be ≥ 2 (GRPO's advantages of a group of one are all zero)");
        }
        for &m in self.methods.iter().filter(|m| m.trains()) {
            let field = format!("hyper.{}", m.slug());
            let Some(h) = self.hyper.get(&m) else {
                return err(&field, "is missing: every trained method needs its hyper-parameters");
            };
            AdamWSettings::with_lr(h.lr).validate(&format!("quickstart.{field}.lr"))?;
            check_lambda(m, h.lambda, &format!("{field}.lambda"))?;
        }
        if self.sweep.lrs.is_empty() {
            return err("sweep.lrs", "must hold at least one learning rate");
        }
        for (i, &lr) in self.sweep.lrs.iter().enumerate() {
            AdamWSettings::with_lr(lr).validate(&format!("quickstart.sweep.lrs[{i}]"))?;
        }
        if self.sweep.lambdas.is_empty() {
            return err("sweep.lambdas", "must hold at least one λ");
        }
        for (i, &l) in self.sweep.lambdas.iter().enumerate() {
            check_lambda(Method::Bridge, Some(l), &format!("sweep.lambdas[{i}]"))?;
        }
        if !(0.0..=1.0).contains(&self.reward_noise) {
            return err("reward_noise", &format!("must be in [0, 1], got {}", self.reward_noise));
        }
        AdamWSettings::with_lr(self.pretrain.lr).validate("quickstart.pretrain.lr")?;
        b.lora.validate()?;
        if self.pretrain.batch_size == 0 {
            return err("pretrain.batch_size", "must be ≥ 1");
        }
        if self.eval_max_new_tokens == 0 || self.eval_batch_size == 0 {
            return err("eval", "eval_max_new_tokens and eval_batch_size must be ≥ 1");
        }
        self.task.validate()?;
        let cfg = self.model.decoder_config(ALPHABET.chars().count() + 1)?;
        // A conservative bound: the longest prompt + worked solution, plus the longest generation.
        let longest = (1..=self.task.levels).map(|l| self.task.max_chars(l)).max().unwrap_or(0);
        let context = longest + b.max_new_tokens.max(self.eval_max_new_tokens);
        if context > cfg.max_position_embeddings {
            return err(
                "budget.max_new_tokens",
                &format!(
                    "prompt + completion can reach {context} tokens, beyond the model's context of {}",
                    cfg.max_position_embeddings
                ),
            );
        }
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

    /// The seeds of the run, in order.
    pub fn seed_list(&self) -> Result<Vec<u64>> {
        (0..self.seeds as u64)
            .map(|i| self.seed.checked_add(i).ok_or_else(|| BridgeError::config("quickstart.seed", "overflows")))
            .collect()
    }
}

fn check_lambda(method: Method, lambda: Option<f64>, field: &str) -> Result<()> {
    match (method.has_lambda(), lambda) {
        (true, Some(l)) if l > 0.0 && l < 1.0 => Ok(()),
        (true, Some(l)) => {
            Err(BridgeError::config(format!("quickstart.{field}"), format!("must be in (0, 1), got {l}")))
        }
        (true, None) => {
            Err(BridgeError::config(format!("quickstart.{field}"), format!("{} needs its λ", method.label())))
        }
        (false, None) => Ok(()),
        (false, Some(_)) => {
            Err(BridgeError::config(format!("quickstart.{field}"), "only BRIDGE and BRIDGE-unrolled have a λ"))
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
    /// Training CPU time so far (all threads, evaluation excluded), seconds, where the platform
    /// tells ([`process_cpu_seconds`]): a cross-check of `seconds` that other load on the machine
    /// does not inflate.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Overall accuracy (on the test split, or the validation split in a sweep).
    pub accuracy: f64,
    /// Accuracy of level 1, 2, ….
    pub levels: Vec<f64>,
}

impl CurvePoint {
    /// Training CPU time so far, or the wall time where the platform does not report CPU time:
    /// the clock of "time to reach" comparisons, because wall times on a shared machine depend
    /// on what else runs (docs/quickstart.md, "Clocks").
    pub fn cpu_time(&self) -> f64 {
        self.cpu_seconds.unwrap_or(self.seconds)
    }
}

/// One method's run on one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// The method.
    pub method: Method,
    /// Its hyper-parameters (`None` for Base).
    #[serde(default)]
    pub hyper: Option<Hyper>,
    /// Evaluations, the first one the base model at step 0.
    pub curve: Vec<CurvePoint>,
    /// Training wall time, seconds (evaluation excluded).
    pub train_seconds: f64,
    /// Training CPU time, seconds (all threads, evaluation excluded; `None` where unknown).
    #[serde(default)]
    pub train_cpu_seconds: Option<f64>,
    /// Time spent evaluating, seconds.
    pub eval_seconds: f64,
}

impl MethodRun {
    /// The last evaluation.
    pub fn last(&self) -> Option<&CurvePoint> {
        self.curve.last()
    }

    /// The training CPU time ([`CurvePoint::cpu_time`]) at which the accuracy first reached
    /// `target` (`None`: never).
    pub fn time_to_reach(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.accuracy >= target - 1e-12).map(CurvePoint::cpu_time)
    }

    /// The evaluation after exactly `step` steps.
    pub fn at_step(&self, step: u64) -> Option<&CurvePoint> {
        self.curve.iter().find(|p| p.step == step)
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

impl SeedRun {
    /// The run of `method`, if it was run.
    pub fn method(&self, method: Method) -> Option<&MethodRun> {
        self.methods.iter().find(|m| m.method == method)
    }

    /// The final overall accuracy of `method`.
    pub fn final_accuracy(&self, method: Method) -> Option<f64> {
        self.method(method)?.last().map(|p| p.accuracy)
    }
}

/// What [`run`] returns (and writes as `results.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The source the numbers come from: `git` commit of the build's source tree (`+dirty` when
    /// it had uncommitted changes), or `unknown`.
    pub commit: String,
    /// The configuration.
    pub config: QuickstartConfig,
    /// The budget unit, in words.
    pub budget_unit: String,
    /// Per seed.
    pub seeds: Vec<SeedRun>,
    /// Per method, over the seeds.
    pub summary: Vec<MethodSummary>,
    /// The paper's claims, tested on paired differences over the seeds.
    pub claims: Vec<Claim>,
    /// The printed table.
    pub table: String,
    /// The printed claims table.
    pub claims_table: String,
    /// Wall time of the whole invocation, seconds.
    pub total_seconds: f64,
    /// The machine's load average (1, 5, 15 minutes) when the run ended (Linux; empty
    /// elsewhere): how much else was running while the wall times were measured.
    #[serde(default)]
    pub load_average: Vec<f64>,
    /// `results.json`.
    pub results_path: PathBuf,
    /// The accuracy-against-time PNG.
    pub plot_path: PathBuf,
}

/// The budget unit, as `results.json` and the table state it.
pub const BUDGET_UNIT: &str = "optimisation steps: one TrainingAlgorithm::step each (one SFT batch, one RL batch, or one \
     of each for alternating and BRIDGE); Cold-start's SFT stage counts inside the budget";

/// The commit this crate was built from (`+dirty` when the tree had uncommitted changes to
/// tracked files; `unknown` outside a git checkout), recorded at build time by `build.rs`.
pub fn source_commit() -> String {
    env!("BRIDGE_BUILD_COMMIT").to_owned()
}

/// CPU time of this process so far (user + system, every thread), seconds: `/proc/self/stat`
/// fields 14–15 in clock ticks of 1/100 s (Linux's `USER_HZ`); `None` on other platforms.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`; empty where there is none.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// Runs `f` inside a rayon pool of exactly `threads` threads (the results depend on it).
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BridgeError::InvalidInput(format!("cannot start {threads} threads: {e}")))?;
    pool.install(f)
}

/// Runs the quickstart: every seed, every method at its [`QuickstartConfig::hyper`], then the
/// tables, `results.json` and the plot. `progress` receives one line per phase and evaluation.
pub fn run(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    cfg.validate()?;
    in_pool(cfg.threads, || run_in_pool(cfg, progress))
}

fn run_in_pool(cfg: &QuickstartConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<QuickstartReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| BridgeError::io(&cfg.run_dir, e))?;
    let mut seeds = Vec::with_capacity(cfg.seeds);
    for seed in cfg.seed_list()? {
        let setup = SeedSetup::new(cfg, seed, progress)?;
        seeds.push(setup.run_methods(progress)?);
    }
    let summary = summarise(&cfg.methods, &seeds, cfg.task.levels);
    let table = format_table(&summary, cfg.task.levels, seeds.len());
    let claims = claims(&seeds, &cfg.budget);
    let claims_table = format_claims(&claims);
    let results_path = cfg.run_dir.join("results.json");
    let plot_path = cfg.run_dir.join("accuracy.png");
    report::plot(&cfg.methods, &seeds, cfg.task.levels, &plot_path)?;
    let mut report = QuickstartReport {
        commit: source_commit(),
        config: cfg.clone(),
        budget_unit: BUDGET_UNIT.replace("  ", " "),
        seeds,
        summary,
        claims,
        table,
        claims_table,
        total_seconds: 0.0,
        load_average: load_average(),
        results_path: results_path.clone(),
        plot_path,
    };
    report.total_seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BridgeError::InvalidInput(e.to_string()))?;
    bridge_models::hf::write_atomic(&results_path, &json)?;
    let md = format!(
        "{}\n\n{}\n\nBudget: {}.\nCommit: {}. Hyper-parameters: {}. Reward noise: {}.\n",
        report.table,
        report.claims_table,
        report.budget_unit,
        report.commit,
        hyper_summary(cfg),
        cfg.reward_noise
    );
    bridge_models::hf::write_atomic(&cfg.run_dir.join("results.md"), md.as_bytes())?;
    Ok(report)
}

/// `SFT lr 3e-4; …; BRIDGE lr 1e-3, λ 0.5` for the trained methods of `cfg`.
pub fn hyper_summary(cfg: &QuickstartConfig) -> String {
    cfg.methods
        .iter()
        .filter_map(|m| cfg.hyper.get(m).map(|h| format!("{} {}", m.label(), h.label())))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which split a training run is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// The held-out test split (the reported numbers).
    Test,
    /// The validation split (hyper-parameter search).
    Val,
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
    val: Option<EvalDataset>,
    eval: EvalConfig,
    seed_dir: PathBuf,
    base_dir: PathBuf,
    base_cached: bool,
    pretrain_seconds: f64,
}

impl<'a> SeedSetup<'a> {
    /// Generates the seed's data, pre-trains (or loads) its base model and tokenises everything.
    fn new(cfg: &'a QuickstartConfig, seed: u64, progress: &mut (dyn FnMut(&str) + Send)) -> Result<Self> {
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

    fn dataset(&self, split: Split) -> Result<&EvalDataset> {
        match split {
            Split::Test => Ok(&self.test),
            Split::Val => self.val.as_ref().ok_or_else(|| {
                BridgeError::config("quickstart.task.n_val", "the sweep chooses on the validation split: set n_val > 0")
            }),
        }
    }

    /// Every method of the config at its hyper-parameters, evaluated on the test split.
    fn run_methods(&self, progress: &mut (dyn FnMut(&str) + Send)) -> Result<SeedRun> {
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

    fn evaluate(
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
    fn reward(&self) -> Result<Box<dyn RewardFunction>> {
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
    fn train(
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

fn fmt_levels(levels: &[f64]) -> String {
    levels.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>().join("/")
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
        // Hyper-parameters: every trained method has its own, λ is BRIDGE's alone.
        let mut bad = QuickstartConfig::full();
        bad.hyper.remove(&Method::RlZero);
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.rl_zero"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Sft, Hyper { lr: 1e-3, lambda: Some(0.5) });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.sft.lambda"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Bridge, Hyper { lr: 1e-3, lambda: None });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.bridge.lambda"));
        let mut bad = QuickstartConfig::full();
        bad.hyper.insert(Method::Bridge, Hyper { lr: -1.0, lambda: Some(0.5) });
        assert!(bad.validate().unwrap_err().to_string().contains("hyper.bridge.lr"));
        for (cfg, field) in [
            (QuickstartConfig { reward_noise: 1.5, ..QuickstartConfig::full() }, "reward_noise"),
            (QuickstartConfig { methods: vec![Method::Sft, Method::Sft], ..QuickstartConfig::full() }, "methods"),
            (
                QuickstartConfig { sweep: SweepSpec { lrs: vec![], lambdas: vec![0.5] }, ..QuickstartConfig::full() },
                "sweep.lrs",
            ),
            (
                QuickstartConfig {
                    sweep: SweepSpec { lrs: vec![1e-3], lambdas: vec![1.0] },
                    ..QuickstartConfig::full()
                },
                "sweep.lambdas[0]",
            ),
            (
                QuickstartConfig {
                    budget: BudgetSpec { group_size: 1, ..QuickstartConfig::full().budget },
                    ..QuickstartConfig::full()
                },
                "group_size",
            ),
            (
                QuickstartConfig {
                    budget: BudgetSpec { max_new_tokens: 400, ..QuickstartConfig::full().budget },
                    ..QuickstartConfig::full()
                },
                "max_new_tokens",
            ),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        // The JSON form round-trips, with the methods' slugs as keys.
        let cfg = QuickstartConfig::full();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"rl_zero\":{\"lr\"") && json.contains("\"lambda\""), "{json}");
        assert_eq!(serde_json::from_str::<QuickstartConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let Some(a) = process_cpu_seconds() else { return };
        // Busy work until this process has used 0.1 s of CPU (however loaded the machine is).
        let (mut x, t) = (0u64, Instant::now());
        let mut b = a;
        while b - a < 0.1 && t.elapsed().as_secs_f64() < 120.0 {
            for _ in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            b = process_cpu_seconds().unwrap();
        }
        assert!(b - a >= 0.1, "{a} → {b} ({x}): the CPU time does not grow with work");
        assert!(b - a <= t.elapsed().as_secs_f64() * 2.0 + 0.05, "one thread cannot use more CPU than wall time");
    }

    #[test]
    fn methods_parse_from_slugs_and_labels() {
        for m in Method::ALL {
            assert_eq!(m.slug().parse::<Method>().unwrap(), m);
            assert_eq!(m.label().parse::<Method>().unwrap(), m);
        }
        assert_eq!("rl-zero".parse::<Method>().unwrap(), Method::RlZero);
        assert_eq!("PPO".parse::<Method>().unwrap(), Method::Ppo);
        assert_eq!("bridge-unrolled".parse::<Method>().unwrap(), Method::BridgeUnrolled);
        let e = "trpo".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("methods") && e.contains("trpo") && e.contains("luffy"), "{e}");
        // The default comparison is the paper's; the others run when asked for.
        assert_eq!(QuickstartConfig::full().methods, Method::DEFAULT.to_vec());
        for m in Method::ALL {
            assert_eq!(
                Method::DEFAULT.contains(&m),
                !matches!(m, Method::Chord | Method::Luffy | Method::Ppo | Method::BridgeUnrolled)
            );
            assert!(QuickstartConfig::full().hyper.contains_key(&m) || !m.trains(), "{m:?} has default settings");
        }
    }

    #[test]
    fn the_sweep_grid_crosses_lambda_for_the_bridge_methods_only() {
        let spec = SweepSpec { lrs: vec![1e-4, 1e-3], lambdas: vec![0.25, 0.75] };
        assert_eq!(spec.grid(Method::Base), vec![]);
        assert_eq!(spec.grid(Method::Sft), vec![Hyper { lr: 1e-4, lambda: None }, Hyper { lr: 1e-3, lambda: None }]);
        let b = spec.grid(Method::Bridge);
        assert_eq!(b.len(), 4);
        assert_eq!(b[1], Hyper { lr: 1e-4, lambda: Some(0.75) });
        assert_eq!(b[1].slug(), "lr1e-4-l0.75");
        assert_eq!(spec.grid(Method::BridgeUnrolled), b);
        assert_eq!(spec.grid(Method::Chord).len(), 2, "CHORD, LUFFY, PPO: the learning rate only");
    }

    #[test]
    fn the_presets_tasks_generate_with_their_per_level_counts() {
        for cfg in [QuickstartConfig::full(), QuickstartConfig::quick()] {
            let task = &cfg.task;
            let splits = generate(task).unwrap();
            let count = |ps: &[bridge_tasks::Problem]| {
                (1..=task.levels).map(|l| ps.iter().filter(|p| p.level == l).count()).collect::<Vec<_>>()
            };
            assert_eq!(count(&splits.problems.test), task.test_per_level);
            assert_eq!(count(&splits.problems.sft), task.sft_per_level);
            assert_eq!(count(&splits.problems.rl), task.rl_per_level);
            assert_eq!(count(&splits.problems.val), task.val_per_level);
            assert_eq!(splits.pretrain.len(), task.n_pretrain);
        }
    }
}
