//! A training run from a TOML config: the schema (every decision of method.md is a field, with
//! its default) and [`train`], the function behind `examples/train.rs`.
//!
//! A run directory holds `config.resolved.toml` (the config with every default filled in),
//! `metrics.jsonl` (one line per step, plus `"kind": "eval"` lines), `checkpoints/`,
//! `curves.png` (reward, evaluation accuracy, SFT loss, cooperative gain) and `final/` (the
//! merged model as an HF directory, and the adapter alone in PEFT format). The schema is
//! documented field by field in `docs/config.md`; `examples/configs/` has working files.

use bridge_bilevel::{
    AuxRollouts, Bridge, ColdStart, LoopConfig, Metrics, NaiveAlternating, OptimConfig, RlZero, RunEvent, RunInputs,
    SftOnly, SftRlMixing, TrainingAlgorithm, init_state, latest_checkpoint, run_steps,
};
use bridge_core::reward::WeightedRewards;
use bridge_core::{
    BridgeError, BridgeRng, CausalLm, CharCodec, CooperativeGain, DeviceChoice, InMemorySource, JointSftRl,
    LambdaScheduleConfig, Result, RewardFunction, RlPrompt, TextCodec,
};
use bridge_eval::metrics::{MetricsWriter, ProgressReporter};
use bridge_eval::reward::{AccuracyReward, FormatReward, RewardScale};
use bridge_eval::runner::{DatasetFormat, EvalConfig, EvalDataset, evaluate_datasets};
use bridge_models::tokenizer::HfCodec;
use bridge_models::{DecodeEngine, Decoder, DecoderConfig, DecoderWeights, LoraConfig};
use bridge_rl::GrpoConfig;
use bridge_sft::{DatasetConfig, SftTokenizer, TokenizeConfig, TokenizedSource};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The whole run configuration (`--config FILE.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed, length, device, directory, evaluation and checkpoint cadence.
    #[serde(default)]
    pub run: RunSection,
    /// The model and its tokenizer.
    pub model: ModelSection,
    /// The LoRA adapter w (method.md: rank 16, alpha 16, all projections).
    #[serde(default)]
    pub lora: LoraConfig,
    /// Which algorithm, and its options.
    #[serde(default)]
    pub algorithm: AlgorithmSection,
    /// λ's schedule (method.md: constant 0.5).
    #[serde(default)]
    pub lambda: LambdaScheduleConfig,
    /// Optimisers of θ, θ̂, w (method.md: AdamW, β = α).
    #[serde(default)]
    pub optim: OptimConfig,
    /// SFT batches.
    #[serde(default)]
    pub sft: SftSection,
    /// GRPO: rollouts, advantages, loss.
    #[serde(default)]
    pub rl: GrpoConfig,
    /// The verifiable reward.
    #[serde(default)]
    pub reward: RewardSection,
    /// Data files.
    #[serde(default)]
    pub data: DataSection,
    /// Periodic evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// The run seed (every random stream derives from it).
    pub seed: u64,
    /// Total optimisation steps.
    pub steps: u64,
    /// The run directory.
    pub run_dir: PathBuf,
    /// `flex` (CPU) or `cuda[:N]`.
    pub device: DeviceChoice,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Write the merged model and the adapter to `final/` at the end.
    pub save_final: bool,
    /// Evaluate once before the first step (TRL's `eval_on_start`).
    pub eval_on_start: bool,
    /// Stop, evaluate and checkpoint at the end of the step during which this many seconds of
    /// this invocation have passed (unset: no limit); `--resume` continues.
    pub time_limit_s: Option<f64>,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 100,
            run_dir: PathBuf::from("runs/bridge"),
            device: DeviceChoice::Flex,
            eval_every: 0,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            save_final: true,
            eval_on_start: false,
            time_limit_s: None,
        }
    }
}

/// `[model]`: weights from `path` (HF directory or `.gguf`), or random from `config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// An HF model directory or a `.gguf` file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// An HF `config.json` for a randomly initialised model (when `path` is absent).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The tokenizer.
    #[serde(default)]
    pub codec: CodecSection,
    /// The forward pass rollouts and evaluation decode with (`auto`: the host engine for f32 on a
    /// CPU, the graph engine on a GPU; see `bridge_models::generate`).
    #[serde(default)]
    pub decode_engine: DecodeEngine,
}

/// `[model.codec]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CodecSection {
    /// `tokenizer.json` beside the weights, or the GGUF file's own tokenizer.
    #[default]
    Auto,
    /// A directory with `tokenizer.json` (and optionally `tokenizer_config.json`).
    TokenizerDir {
        /// The directory.
        path: PathBuf,
    },
    /// One token per character of `alphabet` (id 0 is EOS).
    Chars {
        /// The alphabet.
        alphabet: String,
    },
}

/// The algorithms, by config name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// SFT only.
    Sft,
    /// GRPO only, from the base.
    RlZero,
    /// SFT for `sft_steps`, then GRPO.
    ColdStart,
    /// One RL step then one SFT step, each step.
    Alternating,
    /// `−(J_RL + μ J_SFT)` on θ.
    Mixing,
    /// Update (7) on θ and w, no θ̂.
    BridgeNoMeta,
    /// BRIDGE.
    #[default]
    Bridge,
}

/// The outer objectives, by config name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OuterName {
    /// Equation (8).
    #[default]
    CooperativeGain,
    /// `(1−λ)∇_w J_SFT + λ∇_w J_RL(θ,w)`.
    JointSftRl,
}

/// `[algorithm]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmSection {
    /// The algorithm.
    pub name: AlgorithmName,
    /// Cold start: SFT steps before RL.
    pub sft_steps: u64,
    /// Mixing: the SFT weight μ.
    pub mu: f64,
    /// BRIDGE: the outer objective.
    pub outer: OuterName,
    /// BRIDGE: rollouts of the θ̂ branch (`shared` or `separate`).
    pub aux_rollouts: AuxRollouts,
    /// BRIDGE: `separate` backward passes or the `fused` single backward.
    pub gradient_path: bridge_bilevel::GradientPath,
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        Self {
            name: AlgorithmName::Bridge,
            sft_steps: 50,
            mu: 1.0,
            outer: OuterName::CooperativeGain,
            aux_rollouts: AuxRollouts::Shared,
            gradient_path: bridge_bilevel::GradientPath::Separate,
        }
    }
}

impl AlgorithmSection {
    /// The algorithm object.
    pub fn build<L: CausalLm>(&self) -> Box<dyn TrainingAlgorithm<L>> {
        let outer: Box<dyn bridge_core::OuterObjective> = match self.outer {
            OuterName::CooperativeGain => Box::new(CooperativeGain),
            OuterName::JointSftRl => Box::new(JointSftRl),
        };
        match self.name {
            AlgorithmName::Sft => Box::new(SftOnly),
            AlgorithmName::RlZero => Box::new(RlZero),
            AlgorithmName::ColdStart => Box::new(ColdStart { sft_steps: self.sft_steps }),
            AlgorithmName::Alternating => Box::new(NaiveAlternating),
            AlgorithmName::Mixing => Box::new(SftRlMixing { mu: self.mu }),
            AlgorithmName::BridgeNoMeta => Box::new(Bridge {
                outer: Box::new(JointSftRl),
                aux_rollouts: self.aux_rollouts,
                gradient_path: self.gradient_path,
            }),
            AlgorithmName::Bridge => {
                Box::new(Bridge { outer, aux_rollouts: self.aux_rollouts, gradient_path: self.gradient_path })
            }
        }
    }

    fn uses_sft(&self) -> bool {
        self.name != AlgorithmName::RlZero
    }

    fn uses_rl(&self) -> bool {
        self.name != AlgorithmName::Sft
    }
}

/// `[sft]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftSection {
    /// Examples per SFT step.
    pub batch_size: usize,
    /// Tokenisation (max length, truncation, EOS).
    pub tokenize: TokenizeConfig,
}

impl Default for SftSection {
    fn default() -> Self {
        Self { batch_size: 4, tokenize: TokenizeConfig::default() }
    }
}

/// `[reward]`: accuracy from the verifier, plus an optional format bonus.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardSection {
    /// `binary` (1/0, the default) or `signed` (±1).
    pub scale: RewardScale,
    /// Weight of the format reward (0: none, method.md's default).
    pub format_weight: f64,
}

impl RewardSection {
    /// The reward function.
    pub fn build(&self) -> Box<dyn RewardFunction> {
        let accuracy = AccuracyReward { scale: self.scale, ..AccuracyReward::default() };
        if self.format_weight == 0.0 {
            Box::new(accuracy)
        } else {
            Box::new(WeightedRewards::new("accuracy+format").with(1.0, accuracy).with(self.format_weight, FormatReward))
        }
    }
}

/// `[data]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// `D_SFT`: prompts with worked solutions.
    pub sft: Option<DatasetConfig>,
    /// `D_RL`: prompts with final answers.
    pub rl: Option<DatasetConfig>,
    /// Evaluation sets.
    pub eval: Vec<EvalData>,
}

/// One evaluation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalData {
    /// The JSONL file.
    pub path: PathBuf,
    /// Its format (`auto` detects).
    #[serde(default)]
    pub format: DatasetFormat,
}

/// Reads and validates a config file; a TOML error names the file, line and key.
pub fn load_config(path: impl AsRef<Path>) -> Result<TrainConfig> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
    parse_config(&text, path)
}

/// `text` (a TOML config) with each `(dotted.key, value)` of `sets` written over it: `value` is
/// read as a TOML value (`2`, `1e-4`, `true`, `"x"`, `{ n = 2 }`), or taken as a string when it is
/// not one; missing tables are created. Fails naming the key when a key crosses a value that is
/// not a table.
pub fn override_config(text: &str, origin: &Path, sets: &[(String, String)]) -> Result<String> {
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| BridgeError::config(origin.display().to_string(), e.to_string()))?;
    for (key, value) in sets {
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let parts: Vec<&str> = key.split('.').collect();
        let (last, tables) = parts.split_last().filter(|(l, _)| !l.is_empty()).ok_or_else(|| {
            BridgeError::config(key.clone(), "an override needs a key (`section.key=value`)".to_string())
        })?;
        let mut table = &mut doc;
        for part in tables {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| BridgeError::config(key.clone(), format!("`{part}` is not a table")))?;
        }
        table.insert(last.to_string(), parsed);
    }
    toml::to_string(&doc).map_err(|e| BridgeError::config(origin.display().to_string(), e.to_string()))
}

/// Parses and validates config text (`origin` names it in errors).
pub fn parse_config(text: &str, origin: &Path) -> Result<TrainConfig> {
    let cfg: TrainConfig =
        toml::from_str(text).map_err(|e| BridgeError::config(origin.display().to_string(), e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

impl TrainConfig {
    /// Checks every section, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.model.path.is_none() == self.model.config.is_none() {
            return Err(BridgeError::config("model", "set exactly one of `path` (weights) or `config` (random init)"));
        }
        self.lambda.build()?;
        for (name, s) in [
            ("optim.theta", Some(&self.optim.theta)),
            ("optim.theta_hat", self.optim.theta_hat.as_ref()),
            ("optim.adapter", self.optim.adapter.as_ref()),
            ("optim.theta_sft", self.optim.theta_sft.as_ref()),
        ] {
            if let Some(s) = s {
                s.validate(name)?;
            }
        }
        if self.sft.batch_size == 0 {
            return Err(BridgeError::config("sft.batch_size", "must be ≥ 1"));
        }
        self.sft.tokenize.validate("sft.tokenize")?;
        self.rl.validate("rl")?;
        self.lora.validate()?;
        if self.algorithm.uses_sft() && self.data.sft.is_none() {
            return Err(BridgeError::config("data.sft", format!("algorithm {:?} needs SFT data", self.algorithm.name)));
        }
        if self.algorithm.uses_rl() && self.data.rl.is_none() {
            return Err(BridgeError::config(
                "data.rl",
                format!("algorithm {:?} needs RL prompts", self.algorithm.name),
            ));
        }
        if self.run.time_limit_s.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            return Err(BridgeError::config("run.time_limit_s", "must be a positive number of seconds"));
        }
        if !self.reward.format_weight.is_finite() {
            return Err(BridgeError::config("reward.format_weight", "must be finite"));
        }
        Ok(())
    }
}

/// The codec a model section asks for.
pub fn open_codec(model: &ModelSection) -> Result<Box<dyn TextCodec>> {
    Ok(match &model.codec {
        CodecSection::Chars { alphabet } => Box::new(CharCodec::new(alphabet)),
        CodecSection::TokenizerDir { path } => Box::new(HfCodec::from_dir(path)?),
        CodecSection::Auto => {
            let path = model.path.as_ref().ok_or_else(|| {
                BridgeError::config("model.codec", "a randomly initialised model needs an explicit codec")
            })?;
            if path.is_dir() {
                Box::new(HfCodec::from_dir(path)?)
            } else {
                Box::new(HfCodec::from_gguf(&bridge_models::gguf::GgufFile::open(path)?)?)
            }
        }
    })
}

/// The model architecture with its codec, and θ₀.
pub fn open_lm(model: &ModelSection, device: &burn::tensor::Device, seed: u64) -> Result<(Decoder, DecoderWeights)> {
    let codec = open_codec(model)?;
    match (&model.path, &model.config) {
        (Some(path), _) => {
            let (config, weights) = bridge_models::open_model(path, device)?;
            Ok((Decoder::new(config, codec)?.with_decode_engine(model.decode_engine), weights))
        }
        (None, Some(config)) => {
            let lm = Decoder::new(DecoderConfig::from_file(config)?, codec)?.with_decode_engine(model.decode_engine);
            let weights = lm.init_weights(device, &mut BridgeRng::for_stream(seed, "init/base"))?;
            Ok((lm, weights))
        }
        (None, None) => Err(BridgeError::config("model", "set `path` or `config`")),
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Steps completed.
    pub steps: u64,
    /// The last evaluation's metrics.
    pub final_eval: Metrics,
    /// Wall-clock seconds of this invocation.
    pub wall_seconds: f64,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// Evaluation metrics of (θ, w) on `sets`: `eval_accuracy` (mean over sets) and per-set values.
pub fn evaluate_metrics(
    lm: &Decoder,
    theta: &DecoderWeights,
    adapter: Option<&bridge_models::LoraAdapter>,
    sets: &[EvalDataset],
    cfg: &EvalConfig,
) -> Result<Metrics> {
    let mut m = Metrics::new();
    if sets.is_empty() {
        return Ok(m);
    }
    let report = evaluate_datasets(lm, theta, adapter, sets, cfg, &mut |_| {})?;
    let mut total = 0.0;
    for d in &report.datasets {
        let acc = d.greedy.as_ref().or(d.sampled.as_ref()).map(|s| s.accuracy).unwrap_or(0.0);
        m.insert(format!("eval_{}_accuracy", d.name), acc);
        total += acc;
        for c in &d.categories {
            if let Some(s) = c.greedy.as_ref().or(c.sampled.as_ref()) {
                m.insert(format!("eval_{}_{}_{}_accuracy", d.name, c.field, c.value), s.accuracy);
            }
        }
    }
    m.insert("eval_accuracy".into(), total / report.datasets.len() as f64);
    Ok(m)
}

/// Runs (or, with `resume`, continues) the training the config describes.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<RunSummary> {
    cfg.validate()?;
    let started = Instant::now();
    let seed = cfg.run.seed;
    let run_dir = cfg.run.run_dir.clone();
    let device = cfg.run.device.autodiff_device()?;
    let (lm, theta0) = open_lm(&cfg.model, &device, seed)?;
    let mut algorithm = cfg.algorithm.build::<Decoder>();
    let needs = algorithm.needs();
    let adapter0 = if needs.adapter {
        Some(lm.init_adapter(&cfg.lora, &device, &mut BridgeRng::for_stream(seed, "init/lora"))?)
    } else {
        None
    };
    let codec = lm.codec();
    let empty_sft = TokenizedSourceOrEmpty::load(cfg, codec)?;
    let prompts: InMemorySource<RlPrompt> = match &cfg.data.rl {
        Some(d) => d.load_rl(codec)?,
        None => InMemorySource::new(Vec::new()),
    };
    let eval_sets: Vec<EvalDataset> =
        cfg.data.eval.iter().map(|e| EvalDataset::load(&e.path, e.format)).collect::<Result<_>>()?;
    let reward = cfg.reward.build();
    let lambda = cfg.lambda.build()?;

    let mut state = init_state(needs, theta0, adapter0, &cfg.optim, cfg.rl.loss.kl_coef > 0.0, seed)?;
    std::fs::create_dir_all(&run_dir).map_err(|e| BridgeError::io(&run_dir, e))?;
    let existing = latest_checkpoint(&run_dir)?;
    let mut writer = match (&existing, resume) {
        (Some(ckpt), true) => {
            state = state.load_checkpoint(ckpt)?.0;
            MetricsWriter::resume(&run_dir, state.step)?
        }
        (Some(_), false) => {
            return Err(BridgeError::config(
                "run.run_dir",
                format!("{} already holds a run: pass --resume or choose another run_dir", run_dir.display()),
            ));
        }
        (None, _) => MetricsWriter::create(&run_dir)?,
    };
    let resolved = toml::to_string_pretty(cfg).map_err(|e| BridgeError::config("config", e.to_string()))?;
    bridge_models::hf::write_atomic(&run_dir.join("config.resolved.toml"), resolved.as_bytes())?;

    let mut progress = ProgressReporter::new(cfg.run.steps).resume_from(state.step);
    let loop_cfg = LoopConfig {
        total_steps: cfg.run.steps,
        eval_every: cfg.run.eval_every,
        checkpoint_every: cfg.run.checkpoint_every,
        keep_checkpoints: cfg.run.keep_checkpoints,
        run_dir: run_dir.clone(),
        eval_on_start: cfg.run.eval_on_start,
        time_limit_s: cfg.run.time_limit_s,
    };
    let inputs = RunInputs {
        sft: &empty_sft.0,
        prompts: &prompts,
        reward: reward.as_ref(),
        rl: &cfg.rl,
        sft_batch_size: cfg.sft.batch_size,
        lambda: lambda.as_ref(),
    };
    let mut final_eval = Metrics::new();
    let state = run_steps(
        &lm,
        algorithm.as_mut(),
        state,
        &inputs,
        &loop_cfg,
        |lm, s| evaluate_metrics(lm, &s.theta, s.adapter.as_ref(), &eval_sets, &cfg.eval),
        |event| {
            match event {
                RunEvent::Step(m) => {
                    let mut line = serde_json::Map::new();
                    line.insert("kind".into(), "train".into());
                    for (k, v) in m {
                        line.insert(k.clone(), serde_json::json!(v));
                    }
                    writer.write(&line)?;
                    let shown: Vec<(&str, f64)> = ["reward_mean", "sft_loss", "cooperative_gain"]
                        .iter()
                        .filter_map(|k| m.get(*k).map(|v| (*k, *v)))
                        .collect();
                    progress.update(m.get("step").copied().unwrap_or(0.0) as u64, &shown);
                }
                RunEvent::Eval(m) => {
                    let mut line = serde_json::Map::new();
                    line.insert("kind".into(), "eval".into());
                    for (k, v) in m {
                        line.insert(k.clone(), serde_json::json!(v));
                    }
                    writer.write(&line)?;
                    if let Some(a) = m.get("eval_accuracy") {
                        progress.message(&format!("step {}: eval accuracy {:.3}", m["step"], a));
                    }
                    final_eval = m.clone();
                }
                RunEvent::Checkpoint(_) => {}
            }
            Ok(())
        },
    )?;
    progress.finish();
    let metrics_path = run_dir.join(bridge_eval::metrics::METRICS_FILE);
    bridge_eval::plot::plot_metrics(
        &metrics_path,
        &["reward_mean", "eval_accuracy", "sft_loss", "cooperative_gain"],
        "step",
        run_dir.join("curves.png"),
    )?;
    if cfg.run.save_final {
        let final_dir = run_dir.join("final");
        let weights = match &state.adapter {
            Some(a) => bridge_models::merge(&state.theta, a)?,
            None => state.theta.clone(),
        };
        bridge_models::save_hf_dir(&final_dir, lm.config(), &weights)?;
        if let Some(a) = &state.adapter {
            a.save_peft(final_dir.join("adapter"), lm.config())?;
        }
    }
    Ok(RunSummary { steps: state.step, final_eval, wall_seconds: started.elapsed().as_secs_f64(), run_dir })
}

/// The SFT data of a run, tokenised, or an empty source for algorithms without SFT.
struct TokenizedSourceOrEmpty(InMemorySource<bridge_core::TokenSequence>);

impl TokenizedSourceOrEmpty {
    fn load(cfg: &TrainConfig, codec: &dyn TextCodec) -> Result<Self> {
        match &cfg.data.sft {
            Some(d) if cfg.algorithm.uses_sft() => {
                let examples = d.load_sft(codec)?;
                let tokenizer = SftTokenizer::new(codec, &cfg.sft.tokenize)?;
                let tokenized = TokenizedSource::new(&examples, &tokenizer)?;
                Ok(Self(InMemorySource::new(tokenized.sequences().to_vec())))
            }
            _ => Ok(Self(InMemorySource::new(Vec::new()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_values_create_tables_and_name_bad_keys() {
        let text = "[run]\nsteps = 5\n[rl]\nsampling = { n = 4, max_new_tokens = 256 }\n[model]\npath = \"m.gguf\"\n";
        let sets = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let origin = Path::new("c.toml");
        let out = override_config(
            text,
            origin,
            &sets(&[
                ("run.steps", "7"),
                ("rl.sampling.max_new_tokens", "8"),
                ("eval.limit", "4"),
                ("model.decode_engine", "graph"),
                ("run.time_limit_s", "2.5"),
            ]),
        )
        .unwrap();
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(v["run"]["steps"].as_integer(), Some(7));
        assert_eq!(v["run"]["time_limit_s"].as_float(), Some(2.5));
        assert_eq!(v["rl"]["sampling"]["max_new_tokens"].as_integer(), Some(8));
        assert_eq!(v["rl"]["sampling"]["n"].as_integer(), Some(4), "siblings kept");
        assert_eq!(v["eval"]["limit"].as_integer(), Some(4), "tables created");
        assert_eq!(v["model"]["decode_engine"].as_str(), Some("graph"), "a bare word is a string");
        let bad = override_config(text, origin, &sets(&[("model.path.x", "1")])).unwrap_err();
        assert!(bad.to_string().contains("model.path.x"), "{bad}");
        assert!(override_config(text, origin, &sets(&[("run.", "1")])).is_err());
    }

    #[test]
    fn config_defaults_follow_method_md_and_typos_are_errors() {
        let text = r#"
            [model]
            config = "tiny/config.json"
            codec = { kind = "chars", alphabet = "0123456789+=#\n " }
            [data.sft]
            path = "sft.jsonl"
            [data.rl]
            path = "rl.jsonl"
        "#;
        let cfg = parse_config(text, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.algorithm.name, AlgorithmName::Bridge);
        assert_eq!(cfg.lambda, LambdaScheduleConfig::Constant { value: 0.5 });
        assert_eq!((cfg.lora.rank, cfg.lora.alpha), (16, 16.0));
        assert_eq!(cfg.rl.loss.epsilon_low, 0.2);
        assert_eq!(cfg.rl.loss.kl_coef, 1e-3);
        assert_eq!(cfg.algorithm.aux_rollouts, AuxRollouts::Shared);
        // the resolved config round-trips
        let resolved = toml::to_string_pretty(&cfg).unwrap();
        assert_eq!(parse_config(&resolved, Path::new("r.toml")).unwrap(), cfg);
        let typo = parse_config(&text.replace("[data.rl]", "[data.rl]\npaht = 1"), Path::new("t.toml")).unwrap_err();
        assert!(typo.to_string().contains("paht"), "{typo}");
        let typo = parse_config(&format!("{text}\n[rl.loss]\nepsilon_lo = 0.1\n"), Path::new("t.toml")).unwrap_err();
        assert!(typo.to_string().contains("epsilon_lo"), "{typo}");
        let bad = parse_config(&format!("{text}\n[lambda]\nkind = \"constant\"\nvalue = 2.0\n"), Path::new("t.toml"))
            .unwrap_err();
        assert!(bad.to_string().contains("lambda.value"), "{bad}");
        let no_rl = parse_config(&text.replace("[data.rl]\n            path = \"rl.jsonl\"", ""), Path::new("t.toml"));
        assert!(no_rl.unwrap_err().to_string().contains("data.rl"));
        let run = |extra: &str| parse_config(&format!("[run]\n{extra}\n{text}"), Path::new("t.toml"));
        let limited = run("time_limit_s = 90\neval_on_start = true").unwrap();
        assert_eq!((limited.run.time_limit_s, limited.run.eval_on_start), (Some(90.0), true));
        assert_eq!((cfg.run.time_limit_s, cfg.run.eval_on_start), (None, false));
        let bad = run("time_limit_s = -1").unwrap_err();
        assert!(bad.to_string().contains("run.time_limit_s"), "{bad}");
        assert_eq!(cfg.model.decode_engine, DecodeEngine::Auto);
        let graph = text.replace("[model]", "[model]\ndecode_engine = \"graph\"");
        assert_eq!(parse_config(&graph, Path::new("t.toml")).unwrap().model.decode_engine, DecodeEngine::Graph);
        let bad = parse_config(&text.replace("[model]", "[model]\ndecode_engine = \"fast\""), Path::new("t.toml"));
        assert!(bad.unwrap_err().to_string().contains("fast"));
    }

    /// The GPU run's three configs (examples/configs/smollm2-gsm-*.toml) parse and differ only in
    /// the algorithm and the run directory.
    #[test]
    fn smollm2_configs_parse_and_match() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        let bridge = load_config(dir.join("smollm2-gsm-bridge.toml")).unwrap();
        let mut cold = load_config(dir.join("smollm2-gsm-cold-start.toml")).unwrap();
        let mut zero = load_config(dir.join("smollm2-gsm-rl-zero.toml")).unwrap();
        assert_eq!(
            (bridge.algorithm.name, cold.algorithm.name, zero.algorithm.name),
            (AlgorithmName::Bridge, AlgorithmName::ColdStart, AlgorithmName::RlZero)
        );
        assert_eq!(bridge.run.device, DeviceChoice::Cuda(0));
        for other in [&mut cold, &mut zero] {
            other.algorithm = bridge.algorithm.clone();
            other.run.run_dir = bridge.run.run_dir.clone();
            assert_eq!(*other, bridge);
        }
    }

    /// With the real SmolLM2 tokenizer (skipped when its GGUF was not fetched), the configs'
    /// training prompts (SFT and RL data) are exactly their evaluation prompts: the model's chat
    /// template, its default system prompt and the instruction after the question.
    #[test]
    fn smollm2_configs_train_and_evaluate_on_the_same_prompt() {
        let cache = match std::env::var_os("BRIDGE_MODELS") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/bridge-models"),
        };
        let gguf = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !gguf.is_file() {
            println!("skipped: {} is absent (run bridge-models/scripts/fetch_models.sh)", gguf.display());
            return;
        }
        let codec = HfCodec::from_gguf(&bridge_models::gguf::GgufFile::open(&gguf).unwrap()).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        let cfg = load_config(dir.join("smollm2-gsm-bridge.toml")).unwrap();
        let question = "Tom has 3 apples and buys 4 more. How many apples does he have?";
        let evaluated = cfg.eval.prompt.render_question(question, &codec).unwrap();
        for data in [cfg.data.sft.as_ref().unwrap(), cfg.data.rl.as_ref().unwrap()] {
            assert_eq!(data.template.render_question(question, &codec).unwrap(), evaluated);
        }
        assert!(evaluated.starts_with("<|im_start|>system\n"), "the template's default system prompt: {evaluated}");
        assert!(evaluated.ends_with("'#### <number>'.<|im_end|>\n<|im_start|>assistant\n"), "{evaluated}");
    }
}
