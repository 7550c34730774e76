//! A training run from a TOML config: the schema (every decision of method.md is a field, with
//! its default) and [`train`], the function behind `examples/train.rs`.
//!
//! A run directory holds `config.resolved.toml` (the config with every default filled in),
//! `metrics.jsonl` (one line per step, plus `"kind": "eval"` lines), `checkpoints/`,
//! `curves.png` (reward, evaluation accuracy, SFT loss, cooperative gain) and `final/` (the
//! merged model as an HF directory with the model's tokenizer files, which every example's
//! `--model` opens, and the adapter alone in PEFT format in `final/adapter`). The schema is
//! documented field by field in `docs/config.md`; `examples/configs/` has working files.
//!
//! `[algorithm] name` resolves through an [`AlgorithmRegistry`]: [`parse_config`] and [`train`]
//! use the workspace's algorithms ([`AlgorithmRegistry::builtin`]); [`parse_config_with`] and
//! [`train_with`] take a registry that a crate of its own has added to.

use crate::registry::{AlgorithmRegistry, AlgorithmSpec, RunContext};
use bridge_bilevel::{
    LoopConfig, Metrics, OptimConfig, Replica, RunEvent, RunInputs, init_state, latest_checkpoint,
    read_checkpoint_meta, resume_from_checkpoint, run_data_parallel, run_steps,
};
use bridge_core::DataFormat;
use bridge_core::reward::WeightedRewards;
use bridge_core::{
    BridgeError, BridgeRng, CausalLm, CharCodec, CollectiveSync, DeviceChoice, ExampleSource, GradientSync,
    InMemorySource, LambdaScheduleConfig, Result, RewardFunction, RlPrompt, TextCodec, independent_copy,
};
use bridge_eval::reward::{AccuracyReward, FormatReward, RewardScale};
use bridge_eval::runner::{EvalConfig, EvalDataset, encode_prompts, evaluate_datasets};
use bridge_models::tokenizer::HfCodec;
use bridge_models::{DecodeEngine, Decoder, DecoderConfig, DecoderWeights, LoraConfig, Precision};
use bridge_report::metrics::{MetricsWriter, ProgressReporter};
use bridge_rl::GrpoConfig;
use bridge_sft::{DatasetConfig, SftTokenizer, TokenizeConfig};
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Data parallelism: the devices of the ranks, as a list (`["cuda:0", "cuda:1"]`) or a count
    /// (`4`: `cuda:0`…`cuda:3` when `device` is CUDA, four `flex` ranks when it is `flex`).
    /// Replaces `device` when set. Unset: one rank on `device`.
    pub devices: Option<DevicesSetting>,
    /// How gradients are summed across ranks: `auto` (NCCL when every rank is a CUDA device,
    /// else the host exchange), `host` or `nccl`.
    pub gradient_sync: GradientSyncChoice,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Write the merged model (with its tokenizer files) and the adapter to `final/` at the end.
    pub save_final: bool,
    /// Evaluate once before the first step (TRL's `eval_on_start`).
    pub eval_on_start: bool,
    /// Stop, evaluate and checkpoint at the end of the step during which this many seconds of
    /// this invocation have passed (unset: no limit); `--resume` continues.
    pub time_limit_s: Option<f64>,
}

/// `run.devices`: a list of devices or a number of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DevicesSetting {
    /// This many ranks on devices of `run.device`'s kind.
    Count(usize),
    /// One rank per listed device, in rank order.
    List(Vec<DeviceChoice>),
}

/// `run.gradient_sync`: how the ranks' gradients are summed ([`bridge_core::GradientSync`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientSyncChoice {
    /// NCCL when every rank is a CUDA device and there are several, else the host exchange.
    #[default]
    Auto,
    /// Through host memory, summed in rank order ([`bridge_core::HostSync`]): any device.
    Host,
    /// burn's collectives, NCCL ([`bridge_core::CollectiveSync`]): CUDA devices only; also with one
    /// device (the only multi-GPU path a single card can exercise).
    Nccl,
}

impl RunSection {
    /// The device of every rank, in rank order (`[device]` without `run.devices`), checked: at
    /// least one, one kind, no CUDA device twice, and NCCL only on CUDA.
    pub fn rank_devices(&self) -> Result<Vec<DeviceChoice>> {
        let devices = match &self.devices {
            None => vec![self.device],
            Some(DevicesSetting::Count(n)) => match self.device {
                DeviceChoice::Flex => vec![DeviceChoice::Flex; *n],
                DeviceChoice::Cuda(_) => (0..*n).map(DeviceChoice::Cuda).collect(),
            },
            Some(DevicesSetting::List(list)) => list.clone(),
        };
        if devices.is_empty() {
            return Err(BridgeError::config("run.devices", "needs at least one device"));
        }
        let cuda = |d: &DeviceChoice| matches!(d, DeviceChoice::Cuda(_));
        if devices.iter().any(cuda) && !devices.iter().all(cuda) {
            return Err(BridgeError::config("run.devices", "mixes flex and CUDA devices: use one kind"));
        }
        for (i, d) in devices.iter().enumerate() {
            if cuda(d) && devices[..i].contains(d) {
                return Err(BridgeError::config("run.devices", format!("lists `{d}` twice (one rank per GPU)")));
            }
        }
        if self.gradient_sync == GradientSyncChoice::Nccl && !devices.iter().all(cuda) {
            return Err(BridgeError::config(
                "run.gradient_sync",
                "`nccl` needs CUDA devices (flex has no collectives: use `host`)",
            ));
        }
        Ok(devices)
    }

    /// The gradient synchronisation of `devices` (`None`: the host exchange, or nothing for one
    /// rank).
    fn gradient_sync(&self, devices: &[DeviceChoice]) -> Result<Option<Arc<dyn GradientSync>>> {
        let all_cuda = devices.iter().all(|d| matches!(d, DeviceChoice::Cuda(_)));
        Ok(match self.gradient_sync {
            GradientSyncChoice::Nccl => Some(Arc::new(CollectiveSync::new(devices)?)),
            GradientSyncChoice::Auto if all_cuda && devices.len() > 1 => Some(Arc::new(CollectiveSync::new(devices)?)),
            _ => None,
        })
    }
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 100,
            run_dir: PathBuf::from("runs/bridge"),
            device: DeviceChoice::Flex,
            devices: None,
            gradient_sync: GradientSyncChoice::Auto,
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
    /// How θ (and w) are trained: `f32`, `bf16` (pure bf16: weights and optimiser state) or
    /// `mixed_bf16` (f32 master weights and AdamW state, bf16 forward and backward).
    #[serde(default)]
    pub precision: Precision,
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

/// `[algorithm]`: `name` picks an algorithm of the registry, and every other key is an option of
/// that algorithm alone (each algorithm has its own table; docs/config.md lists them). Once a
/// config is parsed ([`parse_config_with`]), `options` holds all of the algorithm's options with
/// their defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmSection {
    /// The algorithm's registered name (`bridge` by default).
    #[serde(default = "default_algorithm")]
    pub name: String,
    /// Its options (the table's other keys).
    #[serde(flatten)]
    pub options: toml::Table,
}

fn default_algorithm() -> String {
    "bridge".into()
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        Self { name: default_algorithm(), options: toml::Table::new() }
    }
}

impl AlgorithmSection {
    /// The algorithm `name` with its default options.
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), options: toml::Table::new() }
    }

    /// The section parsed by `registry` (unknown name or option: an error naming it).
    pub fn spec<L: CausalLm + 'static>(&self, registry: &AlgorithmRegistry<L>) -> Result<Box<dyn AlgorithmSpec<L>>> {
        registry.parse(&self.name, &self.options)
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
    pub format: DataFormat,
}

/// Reads and validates a config file; a TOML error names the file, line and key.
pub fn load_config(path: impl AsRef<Path>) -> Result<TrainConfig> {
    load_config_with(path, &AlgorithmRegistry::builtin())
}

/// [`load_config`] with the algorithms of `registry`.
pub fn load_config_with(path: impl AsRef<Path>, registry: &AlgorithmRegistry<Decoder>) -> Result<TrainConfig> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
    parse_config_with(&text, path, registry)
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
    parse_config_with(text, origin, &AlgorithmRegistry::builtin())
}

/// [`parse_config`] with the algorithms of `registry`; the algorithm's options come back with
/// every default filled in.
pub fn parse_config_with(text: &str, origin: &Path, registry: &AlgorithmRegistry<Decoder>) -> Result<TrainConfig> {
    let mut cfg: TrainConfig =
        toml::from_str(text).map_err(|e| BridgeError::config(origin.display().to_string(), e.to_string()))?;
    cfg.algorithm.options = cfg.algorithm.spec(registry)?.options()?;
    cfg.validate_with(registry)?;
    Ok(cfg)
}

impl TrainConfig {
    /// Checks every section, naming the bad field (the workspace's algorithms).
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&AlgorithmRegistry::builtin())
    }

    /// Checks every section against the algorithms of `registry`, naming the bad field.
    pub fn validate_with(&self, registry: &AlgorithmRegistry<Decoder>) -> Result<()> {
        let algorithm = self.algorithm.spec(registry)?;
        algorithm.validate(&RunContext { rl: &self.rl, steps: self.run.steps })?;
        let needs = algorithm.data();
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
        if self.run.steps == 0 {
            return Err(BridgeError::config("run.steps", "must be ≥ 1"));
        }
        // Every rank needs a part of every batch it draws.
        let ranks = self.run.rank_devices()?.len();
        if ranks > 1 {
            if !algorithm.build().data_parallel() {
                return Err(BridgeError::config(
                    "run.devices",
                    format!(
                        "algorithm `{}` does not support data parallelism: train it on one device",
                        self.algorithm.name
                    ),
                ));
            }
            for (field, used, per_step) in [
                ("sft.batch_size", needs.sft, self.sft.batch_size),
                ("rl.prompts_per_step", needs.rl, self.rl.prompts_per_step),
            ] {
                if used && per_step < ranks {
                    return Err(BridgeError::config(
                        field,
                        format!("{per_step} cannot be split across the {ranks} ranks of run.devices (each needs one)"),
                    ));
                }
            }
        }
        if self.run.keep_checkpoints == 0 {
            return Err(BridgeError::config(
                "run.keep_checkpoints",
                "must be ≥ 1 (the newest checkpoint is what --resume continues from)",
            ));
        }
        if self.sft.batch_size == 0 {
            return Err(BridgeError::config("sft.batch_size", "must be ≥ 1"));
        }
        self.sft.tokenize.validate("sft.tokenize")?;
        self.rl.validate("rl")?;
        self.lora.validate()?;
        if needs.sft && self.data.sft.is_none() {
            return Err(BridgeError::config("data.sft", format!("algorithm `{}` needs SFT data", self.algorithm.name)));
        }
        if needs.rl && self.data.rl.is_none() {
            return Err(BridgeError::config(
                "data.rl",
                format!("algorithm `{}` needs RL prompts", self.algorithm.name),
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
        CodecSection::Auto => Box::new(model_codec(model)?),
    })
}

/// The tokenizer of `model.path` (a GGUF file's own or an HF directory's, see
/// [`bridge_models::open_codec`]), for `codec = auto`.
fn model_codec(model: &ModelSection) -> Result<HfCodec> {
    let path = model
        .path
        .as_ref()
        .ok_or_else(|| BridgeError::config("model.codec", "a randomly initialised model needs an explicit codec"))?;
    bridge_models::open_codec(path)?
        .ok_or_else(|| BridgeError::io(path.join("tokenizer.json"), std::io::Error::from(std::io::ErrorKind::NotFound)))
}

/// The model architecture with its codec, and θ₀. A `path` is opened the way every example's
/// `--model` is ([`bridge_models::open_pretrained`]: an HF directory or a `.gguf` file). Both
/// come in the section's precision: θ₀ cast to its weights' dtype, the decoder computing in its
/// compute dtype.
pub fn open_lm(model: &ModelSection, device: &burn::tensor::Device, seed: u64) -> Result<(Decoder, DecoderWeights)> {
    let (lm, weights) = match (&model.path, &model.config) {
        (Some(path), _) => {
            let mut pretrained = bridge_models::open_pretrained(path, None, device)?;
            let codec: Box<dyn TextCodec> = match model.codec {
                CodecSection::Auto => Box::new(pretrained.take_codec()?),
                _ => open_codec(model)?,
            };
            (Decoder::new(pretrained.config, codec)?.with_decode_engine(model.decode_engine), pretrained.weights)
        }
        (None, Some(config)) => {
            let lm = Decoder::new(DecoderConfig::from_file(config)?, open_codec(model)?)?
                .with_decode_engine(model.decode_engine);
            let weights = lm.init_weights(device, &mut BridgeRng::for_stream(seed, "init/base"))?;
            (lm, weights)
        }
        (None, None) => return Err(BridgeError::config("model", "set `path` or `config`")),
    };
    Ok((lm.with_precision(model.precision), model.precision.prepare(weights)))
}

/// The tokenizer files to write beside the final model (`final/`), so that it opens as an HF
/// directory with its tokenizer (`eval --model RUN/final`): the model's own tokenizer, or the
/// `tokenizer_dir` one; `None` for a character codec.
fn final_codec(model: &ModelSection) -> Result<Option<HfCodec>> {
    Ok(match &model.codec {
        CodecSection::Chars { .. } => None,
        CodecSection::TokenizerDir { path } => Some(HfCodec::from_dir(path)?),
        CodecSection::Auto => Some(model_codec(model)?),
    })
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
    /// What the checks before training warned about (also printed to stderr).
    pub warnings: Vec<String>,
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

/// How [`train`] treats the run directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunMode {
    /// A new run: the directory must not hold a previous one (its `metrics.jsonl`,
    /// `checkpoints/`, `config.resolved.toml`, `curves.png` or `final/`).
    #[default]
    Fresh,
    /// Continue the run in the directory from its newest complete checkpoint; the directory
    /// must hold one, at a step no later than `run.steps`.
    Resume,
    /// A new run that replaces a previous one: that run's files (those listed for
    /// [`RunMode::Fresh`]) are deleted once every check has passed, just before training.
    Overwrite,
}

/// The files and directories of a run inside its run directory.
pub const RUN_OUTPUTS: [&str; 5] = ["config.resolved.toml", "metrics.jsonl", "checkpoints", "curves.png", "final"];

/// The outputs of a previous run present in `run_dir` (names from [`RUN_OUTPUTS`]).
fn previous_run(run_dir: &Path) -> Vec<&'static str> {
    RUN_OUTPUTS.into_iter().filter(|name| run_dir.join(name).exists()).collect()
}

/// Everything a run needs, loaded and checked before its first step.
struct Prepared {
    device: burn::tensor::Device,
    /// The devices of ranks 1.. of a data-parallel run (`run.devices`).
    replica_devices: Vec<burn::tensor::Device>,
    /// How the ranks' gradients are summed (`None`: one rank, or the host exchange).
    sync: Option<Arc<dyn GradientSync>>,
    lm: Decoder,
    theta0: DecoderWeights,
    sft: InMemorySource<bridge_core::TokenSequence>,
    prompts: InMemorySource<RlPrompt>,
    eval_sets: Vec<EvalDataset>,
    /// The checkpoint a resumed run starts from.
    checkpoint: Option<PathBuf>,
    /// The parsed `[algorithm]` table.
    spec: Box<dyn AlgorithmSpec<Decoder>>,
    warnings: Vec<String>,
}

/// Checks the run directory against `mode` without touching it: the checkpoint to resume from,
/// or an error (a resume without a checkpoint, or past `run.steps`; a fresh run over a previous
/// one; a path that is not a directory).
fn check_run_dir(cfg: &TrainConfig, mode: RunMode) -> Result<Option<PathBuf>> {
    let run_dir = &cfg.run.run_dir;
    let field = "run.run_dir";
    if let Some(file) = run_dir.ancestors().find(|a| a.is_file()) {
        return Err(BridgeError::config(
            field,
            format!("{} cannot be a run directory: {} is a file", run_dir.display(), file.display()),
        ));
    }
    match mode {
        RunMode::Resume => {
            if !run_dir.is_dir() {
                return Err(BridgeError::config(field, format!("cannot resume: {} does not exist", run_dir.display())));
            }
            let ckpt = latest_checkpoint(run_dir)?.ok_or_else(|| {
                BridgeError::config(
                    field,
                    format!(
                        "cannot resume: {} holds no checkpoint (no complete checkpoints/latest); start it afresh \
                         with --overwrite",
                        run_dir.display()
                    ),
                )
            })?;
            let step = read_checkpoint_meta(&ckpt)?.step;
            if step > cfg.run.steps {
                return Err(BridgeError::config(
                    "run.steps",
                    format!(
                        "{} is below the step of the checkpoint to resume from ({step}, {}): pass --steps {step} or more",
                        cfg.run.steps,
                        ckpt.display()
                    ),
                ));
            }
            Ok(Some(ckpt))
        }
        RunMode::Fresh => {
            let found = previous_run(run_dir);
            if !found.is_empty() {
                return Err(BridgeError::config(
                    field,
                    format!(
                        "{} already holds a run ({}): pass --resume to continue it, --overwrite to replace it, \
                         or choose another run_dir",
                        run_dir.display(),
                        found.join(", ")
                    ),
                ));
            }
            Ok(None)
        }
        RunMode::Overwrite => Ok(None),
    }
}

/// Loads the model and every data set, and checks everything a run will read before its first
/// step: tokenisation of the SFT and RL data and of every evaluation prompt, the lengths against
/// the model's context, the data sizes against the batch sizes.
fn prepare(cfg: &TrainConfig, mode: RunMode, registry: &AlgorithmRegistry<Decoder>) -> Result<Prepared> {
    cfg.validate_with(registry)?;
    let spec = cfg.algorithm.spec(registry)?;
    let data_needs = spec.data();
    let checkpoint = check_run_dir(cfg, mode)?;
    let mut warnings = spec.warnings(&RunContext { rl: &cfg.rl, steps: cfg.run.steps });
    let rank_devices = cfg.run.rank_devices()?;
    let device = rank_devices[0].autodiff_device()?;
    // Every rank's device exists in this build (rank 0's is opened below).
    let replica_devices = rank_devices[1..].iter().map(|d| d.autodiff_device()).collect::<Result<Vec<_>>>()?;
    let sync = cfg.run.gradient_sync(&rank_devices)?;
    let (lm, theta0) = open_lm(&cfg.model, &device, cfg.run.seed)?;
    let codec = lm.codec();
    let algorithm = cfg.algorithm.name.as_str();

    // A data set smaller than what one step takes (the user may mean it: the cursor wraps).
    let mut small = |field: &str, d: &DatasetConfig, have: usize, what: &str, per_step: &str, need: usize| {
        if have < need {
            warnings.push(format!(
                "{field}: {} holds {have} {what}, fewer than {per_step} = {need}: every step repeats some",
                d.path.display()
            ));
        }
    };
    let sft = match &cfg.data.sft {
        Some(d) if data_needs.sft => {
            let tokenizer = SftTokenizer::new(codec, &cfg.sft.tokenize)?;
            let tokenized = d.load_sft_tokenized(&tokenizer).map_err(|e| match e {
                BridgeError::InvalidInput(m) => BridgeError::config("data.sft", format!("{}: {m}", d.path.display())),
                e => e,
            })?;
            small("data.sft", d, tokenized.len(), "usable examples", "sft.batch_size", cfg.sft.batch_size);
            Some(InMemorySource::new(tokenized.sequences().to_vec()))
        }
        _ => None,
    };
    let mut longest_rl_prompt = 0;
    let prompts = match &cfg.data.rl {
        Some(d) if data_needs.rl => {
            let (prompts, ids) = d.load_rl_encoded(codec)?;
            if data_needs.demonstrations
                && let Some(p) = prompts.items().iter().find(|p| p.demonstration.is_none())
            {
                let source = p.metadata.get("source").and_then(|v| v.as_str()).unwrap_or(&p.id);
                return Err(BridgeError::config(
                    "data.rl",
                    format!(
                        "algorithm `{algorithm}` needs a worked solution with every RL prompt (a GSM8K `answer`, a \
                         MATH `solution`, a `completion` or a final assistant message); {source} has none"
                    ),
                ));
            }
            longest_rl_prompt = ids.iter().map(Vec::len).max().unwrap_or(0);
            small("data.rl", d, prompts.len(), "prompts", "rl.prompts_per_step", cfg.rl.prompts_per_step);
            Some(prompts)
        }
        _ => None,
    };
    for (field, set, used) in
        [("data.sft", cfg.data.sft.is_some(), sft.is_some()), ("data.rl", cfg.data.rl.is_some(), prompts.is_some())]
    {
        if set && !used {
            warnings.push(format!("{field} is set, but algorithm `{algorithm}` does not train on it: it is not read"));
        }
    }
    let sft = sft.unwrap_or_else(|| InMemorySource::new(Vec::new()));
    let prompts: InMemorySource<RlPrompt> = prompts.unwrap_or_else(|| InMemorySource::new(Vec::new()));
    let mut eval_sets = Vec::with_capacity(cfg.data.eval.len());
    let mut eval_prompt_len = 0;
    for e in &cfg.data.eval {
        let set = EvalDataset::load(&e.path, e.format)?;
        let (_, ids) = encode_prompts(&set, &cfg.eval, codec)?;
        eval_prompt_len = ids.iter().map(Vec::len).fold(eval_prompt_len, usize::max);
        eval_sets.push(set);
    }

    // Lengths against the model's context.
    let context = lm.config().max_position_embeddings;
    let mut check_length = |field: &str, new_tokens: usize, prompt: usize, what: &str| -> Result<()> {
        if new_tokens > context {
            return Err(BridgeError::config(
                field,
                format!("{new_tokens} is more than the model's context length ({context} tokens)"),
            ));
        }
        if prompt + new_tokens > context {
            warnings.push(format!(
                "{field} = {new_tokens} after the longest {what} ({prompt} tokens) exceeds the model's context \
                 length ({context} tokens)"
            ));
        }
        Ok(())
    };
    if data_needs.rl {
        check_length("rl.sampling.max_new_tokens", cfg.rl.sampling.max_new_tokens, longest_rl_prompt, "RL prompt")?;
    }
    if !eval_sets.is_empty() {
        check_length("eval.max_new_tokens", cfg.eval.max_new_tokens, eval_prompt_len, "evaluation prompt")?;
    }
    Ok(Prepared { device, replica_devices, sync, lm, theta0, sft, prompts, eval_sets, checkpoint, spec, warnings })
}

/// Runs (or, with [`RunMode::Resume`], continues) the training the config describes.
///
/// Everything the run will read is loaded and checked before anything is written and before its
/// first step (see `docs/config.md`, "Checks before training"): a bad config, data file, prompt,
/// length or run directory is an error naming the field, file or line, and leaves the run
/// directory untouched. Then the run directory, `checkpoints/`, `config.resolved.toml` and
/// `metrics.jsonl` are created (an unwritable location fails here, still before step 1). Warnings
/// (data smaller than a batch, a prompt that may overflow the context, unused data) go to stderr
/// and into [`RunSummary::warnings`].
pub fn train(cfg: &TrainConfig, mode: RunMode) -> Result<RunSummary> {
    train_with(cfg, mode, &AlgorithmRegistry::builtin())
}

/// [`train`] with the algorithms of `registry`.
pub fn train_with(cfg: &TrainConfig, mode: RunMode, registry: &AlgorithmRegistry<Decoder>) -> Result<RunSummary> {
    let started = Instant::now();
    let Prepared { device, replica_devices, sync, lm, theta0, sft, prompts, eval_sets, checkpoint, spec, warnings } =
        prepare(cfg, mode, registry)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let seed = cfg.run.seed;
    let run_dir = cfg.run.run_dir.clone();
    let mut algorithm = spec.build();
    let needs = algorithm.needs();
    let adapter0 = if needs.adapter {
        let adapter = lm.init_adapter(&cfg.lora, &device, &mut BridgeRng::for_stream(seed, "init/lora"))?;
        Some(cfg.model.precision.prepare(adapter))
    } else {
        None
    };
    let reward = cfg.reward.build();
    let lambda = cfg.lambda.build()?;
    // Ranks 1.. of a data-parallel run: the same weights, copied to their devices (their own
    // parameters), the same state built the same way.
    let with_reference = cfg.rl.loss.kl_coef > 0.0;
    let mut replicas = Vec::with_capacity(replica_devices.len());
    for d in &replica_devices {
        let theta = independent_copy(&theta0.clone().to_device(d));
        let adapter = adapter0.as_ref().map(|a| independent_copy(&a.clone().to_device(d)));
        let mut algorithm = spec.build();
        let mut state = init_state(needs, theta, adapter, &cfg.optim, with_reference, seed)?;
        if let Some(ckpt) = &checkpoint {
            state = resume_from_checkpoint(state, algorithm.as_mut(), ckpt)?.0;
        }
        replicas.push(Replica { state, algorithm });
    }
    let mut state = init_state(needs, theta0, adapter0, &cfg.optim, with_reference, seed)?;
    if let Some(ckpt) = &checkpoint {
        state = resume_from_checkpoint(state, algorithm.as_mut(), ckpt)?.0;
    }

    // Every check passed: write.
    if mode == RunMode::Overwrite {
        for name in previous_run(&run_dir) {
            let path = run_dir.join(name);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| BridgeError::io(&path, e))?;
        }
    }
    let checkpoints = run_dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).map_err(|e| BridgeError::io(&checkpoints, e))?;
    let mut writer = match &checkpoint {
        Some(_) => MetricsWriter::resume(&run_dir, state.step)?,
        None => MetricsWriter::create(&run_dir)?,
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
        sft: &sft,
        prompts: &prompts,
        reward: reward.as_ref(),
        rl: &cfg.rl,
        sft_batch_size: cfg.sft.batch_size,
        lambda: lambda.as_ref(),
    };
    let mut final_eval = Metrics::new();
    let evaluate = |lm: &Decoder, s: &bridge_bilevel::TrainState<Decoder>| {
        evaluate_metrics(lm, &s.theta, s.adapter.as_ref(), &eval_sets, &cfg.eval)
    };
    let on_event = |event: RunEvent<'_>| {
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
    };
    let state = if replicas.is_empty() && sync.is_none() {
        run_steps(&lm, algorithm.as_mut(), state, &inputs, &loop_cfg, evaluate, on_event)?
    } else {
        // Data parallel (rank 0 is this state): one thread per rank, rank 0 reports and writes.
        replicas.insert(0, Replica { state, algorithm });
        run_data_parallel(&lm, replicas, sync, &inputs, &loop_cfg, evaluate, on_event)?.state
    };
    progress.finish();
    let metrics_path = run_dir.join(bridge_report::metrics::METRICS_FILE);
    bridge_report::plot::plot_metrics(
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
        if let Some(codec) = final_codec(&cfg.model)? {
            bridge_models::pretrained::save_codec(&final_dir, &codec, lm.config())?;
        }
        if let Some(a) = &state.adapter {
            a.save_peft(final_dir.join("adapter"), lm.config())?;
        }
    }
    Ok(RunSummary { steps: state.step, final_eval, wall_seconds: started.elapsed().as_secs_f64(), run_dir, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid config: a random-init model, a character codec, SFT and RL data.
    const MINIMAL: &str = r#"
            [model]
            config = "tiny/config.json"
            codec = { kind = "chars", alphabet = "0123456789+=#\n " }
            [data.sft]
            path = "sft.jsonl"
            [data.rl]
            path = "rl.jsonl"
        "#;

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
        let text = MINIMAL;
        let cfg = parse_config(text, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.algorithm.name, "bridge");
        assert_eq!(cfg.lambda, LambdaScheduleConfig::Constant { value: 0.5 });
        assert_eq!((cfg.lora.rank, cfg.lora.alpha), (16, 16.0));
        assert_eq!(cfg.rl.loss.epsilon_low, 0.2);
        assert_eq!(cfg.rl.loss.kl_coef, 1e-3);
        assert_eq!(cfg.algorithm.options["aux_rollouts"].as_str(), Some("shared"), "the defaults are filled in");
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
        // [model] precision: f32 by default, a typo names the value
        assert_eq!(cfg.model.precision, Precision::F32);
        let mixed = text.replace("[model]", "[model]\nprecision = \"mixed_bf16\"");
        assert_eq!(parse_config(&mixed, Path::new("t.toml")).unwrap().model.precision, Precision::MixedBf16);
        let bad =
            parse_config(&text.replace("[model]", "[model]\nprecision = \"fp8\""), Path::new("t.toml")).unwrap_err();
        assert!(bad.to_string().contains("fp8") && bad.to_string().contains("t.toml"), "{bad}");
        assert_eq!(cfg.model.decode_engine, DecodeEngine::Auto);
        let graph = text.replace("[model]", "[model]\ndecode_engine = \"graph\"");
        assert_eq!(parse_config(&graph, Path::new("t.toml")).unwrap().model.decode_engine, DecodeEngine::Graph);
        let bad = parse_config(&text.replace("[model]", "[model]\ndecode_engine = \"fast\""), Path::new("t.toml"));
        assert!(bad.unwrap_err().to_string().contains("fast"));
    }

    /// A mixed-precision model opens as f32 weights with a bf16-computing decoder; a bf16 one as
    /// bf16 weights.
    #[test]
    fn open_lm_applies_the_precision() {
        let dir = std::env::temp_dir().join(format!("bridge-open-lm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        let json = serde_json::json!({
            "model_type": "qwen2", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "tie_word_embeddings": true
        });
        std::fs::write(&config, json.to_string()).unwrap();
        let device = burn::tensor::Device::flex();
        for (precision, dtype, compute) in [
            (Precision::F32, burn::tensor::DType::F32, None),
            (Precision::Bf16, burn::tensor::DType::BF16, None),
            (Precision::MixedBf16, burn::tensor::DType::F32, Some(bridge_models::WeightDType::Bf16)),
        ] {
            let model = ModelSection {
                path: None,
                config: Some(config.clone()),
                codec: CodecSection::Chars { alphabet: "abc".into() },
                precision,
                decode_engine: DecodeEngine::Auto,
            };
            let (lm, w) = open_lm(&model, &device, 0).unwrap();
            assert_eq!((w.dtype(), lm.compute_dtype()), (dtype, compute), "{precision}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Each algorithm has its own table: its options round-trip through the resolved config
    /// (nested tables included), another algorithm's option is refused with its name, and values
    /// are checked against the rest of the config.
    #[test]
    fn algorithm_tables_are_per_algorithm() {
        let base = MINIMAL;
        let with = |algorithm: &str| parse_config(&format!("[algorithm]\n{algorithm}\n{base}"), Path::new("t.toml"));
        for algorithm in [
            "name = \"chord\"\nphi = false\nmu = { peak = 0.9, valley = 0.05, decay_steps = 200 }",
            "name = \"ppo\"\ngae_lambda = 0.9\ncritic_optim = { lr = 1e-4 }",
            "name = \"luffy\"\nshaping_gamma = 0.2",
            "name = \"bridge_unrolled\"\nalpha = 1e-3",
            "name = \"cold_start\"\nsft_steps = 7",
        ] {
            let cfg = with(algorithm).unwrap();
            let resolved = toml::to_string_pretty(&cfg).unwrap();
            assert_eq!(parse_config(&resolved, Path::new("r.toml")).unwrap(), cfg, "{resolved}");
        }
        let chord = with("name = \"chord\"\nmu = { peak = 0.9 }").unwrap();
        assert_eq!(chord.algorithm.options["mu"]["valley"].as_float(), Some(0.1), "defaults filled in");
        for (algorithm, field) in [
            ("name = \"sft\"\nmu = 1.0", "mu"),
            ("name = \"bridge\"\nsft_steps = 3", "sft_steps"),
            ("name = \"chord\"\nmu = { peek = 0.9 }", "peek"),
            ("name = \"ppo\"\ngamma = 2.0", "algorithm.gamma"),
            ("name = \"luffy\"\noff_policy_per_prompt = 4", "algorithm.off_policy_per_prompt"),
            ("name = \"grpo\"", "unknown algorithm `grpo`"),
        ] {
            let e = with(algorithm).unwrap_err().to_string();
            assert!(e.contains(field), "{algorithm}: {e}");
        }
        // LUFFY reads RL prompts only; PPO too.
        let rl_only = base.replace("[data.sft]\n            path = \"sft.jsonl\"", "");
        for name in ["luffy", "ppo"] {
            parse_config(&format!("[algorithm]\nname = \"{name}\"\n{rl_only}"), Path::new("t.toml")).unwrap();
        }
        let e = parse_config(&format!("[algorithm]\nname = \"chord\"\n{rl_only}"), Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("data.sft"), "{e}");
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
            (bridge.algorithm.name.as_str(), cold.algorithm.name.as_str(), zero.algorithm.name.as_str()),
            ("bridge", "cold_start", "rl_zero")
        );
        assert_eq!(bridge.run.device, DeviceChoice::Cuda(0));
        for other in [&mut cold, &mut zero] {
            other.algorithm = bridge.algorithm.clone();
            other.run.run_dir = bridge.run.run_dir.clone();
            assert_eq!(*other, bridge);
        }
    }

    /// The CPU walkthrough's config (docs/real-models.md) parses, runs on the CPU, and trains on
    /// the prompt that the walkthrough's `eval --instruction "…"` evaluates.
    #[test]
    fn smollm2_cpu_walkthrough_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        let cfg = load_config(dir.join("smollm2-gsm-bridge-cpu.toml")).unwrap();
        assert_eq!(
            (cfg.run.device, cfg.algorithm.name.as_str(), cfg.run.save_final),
            (DeviceChoice::Flex, "bridge", true)
        );
        assert!(cfg.data.eval.is_empty(), "the walkthrough evaluates with the eval example");
        let instruction = "Solve the problem step by step. End with a line of the form '#### <number>'.";
        for data in [cfg.data.sft.as_ref().unwrap(), cfg.data.rl.as_ref().unwrap()] {
            assert_eq!(data.template, bridge_core::prompt::PromptTemplate::chat_with(instruction));
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
