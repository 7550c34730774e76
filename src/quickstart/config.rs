//! The quickstart's configuration: the methods, their hyper-parameters, the model, pre-training,
//! budget and search settings.

use bridge_bilevel::{
    Bridge, Chord, ColdStart, Luffy, NaiveAlternating, Ppo, RlZero, SftOnly, TrainingAlgorithm, UnrolledBridge,
};
use bridge_core::{AdamWSettings, BridgeError, Result};
use bridge_eval::runner::{EvalConfig, PromptTemplate};
use bridge_models::{Decoder, DecoderConfig, LoraConfig};
use bridge_rl::GrpoConfig;
use bridge_tasks::{ALPHABET, TaskConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub(super) fn algorithm(self, budget: &BudgetSpec) -> Option<Box<dyn TrainingAlgorithm<Decoder>>> {
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

/// One method's hyper-parameters: what [`sweep`](crate::quickstart::sweep()) chooses.
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

/// The hyper-parameter search of [`sweep`](crate::quickstart::sweep()): the same grid for every method.
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
    /// [`sweep`](crate::quickstart::sweep())'s choice (docs/quickstart.md).
    pub hyper: BTreeMap<Method, Hyper>,
    /// The hyper-parameter search of `--sweep`.
    pub sweep: SweepSpec,
    /// Probability with which every RL reward is flipped (0 ↔ 1) from a seeded stream: a noisy
    /// verifier ([`NoisyReward`](bridge_eval::reward::NoisyReward)). 0: the clean reward.
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

    pub(super) fn grpo(&self) -> GrpoConfig {
        let b = &self.budget;
        let mut rl = GrpoConfig { prompts_per_step: b.prompts_per_step, log_entropy: false, ..GrpoConfig::default() };
        rl.sampling.n = b.group_size;
        rl.sampling.max_new_tokens = b.max_new_tokens;
        rl.sampling.temperature = b.temperature;
        rl.loss.kl_coef = b.kl_coef;
        rl
    }

    pub(super) fn eval_config(&self) -> EvalConfig {
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
