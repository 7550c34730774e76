//! The algorithm registry: what `[algorithm] name = "…"` of a TOML run config resolves to.
//!
//! Each algorithm has its own table: the `[algorithm]` section is internally tagged by `name`,
//! and its other keys are the options of that algorithm alone — a serde struct implementing
//! [`AlgorithmConfig`] with `#[serde(deny_unknown_fields)]`, so a key another algorithm would
//! take (or a typo) is refused with its name. [`AlgorithmRegistry::builtin`] knows every
//! algorithm of the workspace; a crate of its own adds more with [`AlgorithmRegistry::register`]
//! and runs them through [`crate::train::parse_config_with`] and [`crate::train::train_with`]
//! (`tests/registry.rs` does it from outside the crate).
//!
//! ```
//! use bridge::registry::AlgorithmRegistry;
//! use bridge::models::Decoder;
//! let registry = AlgorithmRegistry::<Decoder>::builtin();
//! let options: toml::Table = toml::from_str("mu = { peak = 0.9, valley = 0.05, decay_steps = 200 }").unwrap();
//! let chord = registry.parse("chord", &options).unwrap();
//! assert!(chord.data().sft && chord.data().rl);
//! let resolved = chord.options().unwrap(); // every default filled in
//! assert_eq!(resolved["phi"].as_bool(), Some(true));
//! let typo: toml::Table = toml::from_str("mu_peek = 0.5").unwrap();
//! assert!(registry.parse("chord", &typo).unwrap_err().to_string().contains("mu_peek"));
//! ```

use bridge_bilevel::{
    AuxRollouts, Bridge, Chord, ChordConfig, ColdStart, GradientPath, Luffy, NaiveAlternating, Ppo, PpoConfig, RlZero,
    SftOnly, SftRlMixing, TrainingAlgorithm, UnrolledBridge, UnrolledConfig,
};
use bridge_core::{BridgeError, CausalLm, CooperativeGain, JointSftRl, OuterObjective, Result};
use bridge_rl::{GrpoConfig, LuffyConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The data an algorithm reads: what the run must load (and refuse to start without).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataNeeds {
    /// `D_SFT` (`[data.sft]`).
    pub sft: bool,
    /// `D_RL` (`[data.rl]`).
    pub rl: bool,
    /// A demonstration with every RL prompt (mixed-policy RL).
    pub demonstrations: bool,
}

impl DataNeeds {
    /// SFT data only.
    pub const SFT: Self = Self { sft: true, rl: false, demonstrations: false };
    /// RL prompts only.
    pub const RL: Self = Self { sft: false, rl: true, demonstrations: false };
    /// Both.
    pub const SFT_RL: Self = Self { sft: true, rl: true, demonstrations: false };
}

/// What an algorithm's checks may read of the rest of the run config.
#[derive(Clone, Copy, Debug)]
pub struct RunContext<'a> {
    /// `[rl]`: rollouts and loss.
    pub rl: &'a GrpoConfig,
    /// `run.steps`.
    pub steps: u64,
}

/// One algorithm's TOML table: a serde struct (refusing unknown fields) that builds the
/// algorithm for models of type `L`.
pub trait AlgorithmConfig<L: CausalLm>: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The data it reads.
    fn data(&self) -> DataNeeds;

    /// Checks the values against the run, naming a bad field as `algorithm.FIELD`.
    fn validate(&self, run: &RunContext<'_>) -> Result<()> {
        let _ = run;
        Ok(())
    }

    /// Warnings about values that are valid but likely not meant (printed before training).
    fn warnings(&self, run: &RunContext<'_>) -> Vec<String> {
        let _ = run;
        Vec::new()
    }

    /// The algorithm.
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>>;
}

/// A parsed `[algorithm]` table (the type-erased [`AlgorithmConfig`] of its name).
pub trait AlgorithmSpec<L: CausalLm>: Debug + Send + Sync {
    /// The registered name.
    fn name(&self) -> &str;
    /// The data it reads.
    fn data(&self) -> DataNeeds;
    /// [`AlgorithmConfig::validate`].
    fn validate(&self, run: &RunContext<'_>) -> Result<()>;
    /// [`AlgorithmConfig::warnings`].
    fn warnings(&self, run: &RunContext<'_>) -> Vec<String>;
    /// The options with every default filled in (for `config.resolved.toml`).
    fn options(&self) -> Result<toml::Table>;
    /// The algorithm.
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>>;
}

#[derive(Debug)]
struct Spec<C> {
    name: String,
    config: C,
}

impl<L: CausalLm, C: AlgorithmConfig<L>> AlgorithmSpec<L> for Spec<C> {
    fn name(&self) -> &str {
        &self.name
    }
    fn data(&self) -> DataNeeds {
        self.config.data()
    }
    fn validate(&self, run: &RunContext<'_>) -> Result<()> {
        self.config.validate(run)
    }
    fn warnings(&self, run: &RunContext<'_>) -> Vec<String> {
        self.config.warnings(run)
    }
    fn options(&self) -> Result<toml::Table> {
        toml::Table::try_from(&self.config)
            .map_err(|e| BridgeError::config("algorithm", format!("`{}` options do not serialise: {e}", self.name)))
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        self.config.build()
    }
}

type Parser<L> = Box<dyn Fn(&str, &toml::Table) -> Result<Box<dyn AlgorithmSpec<L>>> + Send + Sync>;

/// Algorithm names and the configs their tables parse into.
pub struct AlgorithmRegistry<L: CausalLm> {
    entries: BTreeMap<String, Parser<L>>,
}

impl<L: CausalLm> Debug for AlgorithmRegistry<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlgorithmRegistry").field("names", &self.entries.keys().collect::<Vec<_>>()).finish()
    }
}

impl<L: CausalLm + 'static> AlgorithmRegistry<L> {
    /// A registry without any algorithm.
    pub fn empty() -> Self {
        Self { entries: BTreeMap::new() }
    }

    /// Every algorithm of the workspace: `sft`, `rl_zero`, `cold_start`, `alternating`, `mixing`,
    /// `bridge_no_meta`, `bridge`, `bridge_unrolled`, `chord`, `luffy`, `ppo`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.insert::<SftOptions>("sft");
        r.insert::<RlZeroOptions>("rl_zero");
        r.insert::<ColdStartOptions>("cold_start");
        r.insert::<AlternatingOptions>("alternating");
        r.insert::<MixingOptions>("mixing");
        r.insert::<BridgeNoMetaOptions>("bridge_no_meta");
        r.insert::<BridgeOptions>("bridge");
        r.insert::<UnrolledConfig>("bridge_unrolled");
        r.insert::<ChordConfig>("chord");
        r.insert::<LuffyConfig>("luffy");
        r.insert::<PpoConfig>("ppo");
        r
    }

    fn insert<C: AlgorithmConfig<L>>(&mut self, name: &str) {
        let parser: Parser<L> = Box::new(|name: &str, options: &toml::Table| {
            let config: C = toml::Value::Table(options.clone())
                .try_into()
                .map_err(|e| BridgeError::config("algorithm", format!("`{name}`: {e}")))?;
            Ok(Box::new(Spec { name: name.to_owned(), config }) as Box<dyn AlgorithmSpec<L>>)
        });
        self.entries.insert(name.to_owned(), parser);
    }

    /// Adds the algorithm `name`, whose `[algorithm]` table parses into `C`. A name already
    /// registered is an error (names are never silently replaced).
    pub fn register<C: AlgorithmConfig<L>>(&mut self, name: &str) -> Result<&mut Self> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(BridgeError::config("algorithm.name", format!("{name:?}: use letters, digits and `_`")));
        }
        if self.entries.contains_key(name) {
            return Err(BridgeError::config("algorithm.name", format!("`{name}` is already registered")));
        }
        self.insert::<C>(name);
        Ok(self)
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// Parses the options of `name` (the `[algorithm]` table without `name`); an unknown name is
    /// an error listing the known ones, an unknown option one naming it.
    pub fn parse(&self, name: &str, options: &toml::Table) -> Result<Box<dyn AlgorithmSpec<L>>> {
        let parser = self.entries.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            BridgeError::config("algorithm.name", format!("unknown algorithm `{name}` (one of {})", known.join(", ")))
        })?;
        parser(name, options)
    }
}

/// `sft`: SFT on θ.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftOptions {}

impl<L: CausalLm> AlgorithmConfig<L> for SftOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(SftOnly)
    }
}

/// `rl_zero`: GRPO on θ from the base.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlZeroOptions {}

impl<L: CausalLm> AlgorithmConfig<L> for RlZeroOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::RL
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(RlZero)
    }
}

/// `cold_start`: `sft_steps` SFT steps, then GRPO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColdStartOptions {
    /// SFT steps before RL.
    pub sft_steps: u64,
}

impl Default for ColdStartOptions {
    fn default() -> Self {
        Self { sft_steps: 50 }
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for ColdStartOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn warnings(&self, run: &RunContext<'_>) -> Vec<String> {
        if self.sft_steps >= run.steps {
            vec![format!(
                "algorithm.sft_steps = {} covers all run.steps = {}: cold start takes no RL step",
                self.sft_steps, run.steps
            )]
        } else {
            Vec::new()
        }
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(ColdStart { sft_steps: self.sft_steps })
    }
}

/// `alternating`: one GRPO step then one SFT step on θ, each step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternatingOptions {}

impl<L: CausalLm> AlgorithmConfig<L> for AlternatingOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(NaiveAlternating)
    }
}

/// `mixing`: the loss `−(J_RL + μ J_SFT)` on θ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixingOptions {
    /// The SFT weight μ.
    pub mu: f64,
}

impl Default for MixingOptions {
    fn default() -> Self {
        Self { mu: 1.0 }
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for MixingOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn validate(&self, _: &RunContext<'_>) -> Result<()> {
        if !(self.mu.is_finite() && self.mu >= 0.0) {
            return Err(BridgeError::config("algorithm.mu", format!("must be a finite number ≥ 0, got {}", self.mu)));
        }
        Ok(())
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(SftRlMixing { mu: self.mu })
    }
}

/// BRIDGE's outer objectives, by config name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OuterName {
    /// Equation (8).
    #[default]
    CooperativeGain,
    /// `(1−λ)∇_w J_SFT + λ∇_w J_RL(θ,w)`.
    JointSftRl,
}

/// `bridge`: equations (7), (8), (9).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeOptions {
    /// The outer objective of w.
    pub outer: OuterName,
    /// Rollouts of the θ̂ branch (`shared` or `separate`).
    pub aux_rollouts: AuxRollouts,
    /// `separate` backward passes or the `fused` single backward.
    pub gradient_path: GradientPath,
}

impl<L: CausalLm> AlgorithmConfig<L> for BridgeOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        let outer: Box<dyn OuterObjective> = match self.outer {
            OuterName::CooperativeGain => Box::new(CooperativeGain),
            OuterName::JointSftRl => Box::new(JointSftRl),
        };
        Box::new(Bridge { outer, aux_rollouts: self.aux_rollouts, gradient_path: self.gradient_path })
    }
}

/// `bridge_no_meta`: update (7) on θ and w, no θ̂ (BRIDGE with the `joint_sft_rl` objective).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeNoMetaOptions {
    /// Kept for configs written for `bridge` (there is no θ̂ branch to roll out).
    pub aux_rollouts: AuxRollouts,
    /// `separate` backward passes or the `fused` single backward.
    pub gradient_path: GradientPath,
}

impl<L: CausalLm> AlgorithmConfig<L> for BridgeNoMetaOptions {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(Bridge {
            outer: Box::new(JointSftRl),
            aux_rollouts: self.aux_rollouts,
            gradient_path: self.gradient_path,
        })
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for UnrolledConfig {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn validate(&self, _: &RunContext<'_>) -> Result<()> {
        UnrolledConfig::validate(self, "algorithm")
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(UnrolledBridge { config: self.clone() })
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for ChordConfig {
    fn data(&self) -> DataNeeds {
        DataNeeds::SFT_RL
    }
    fn validate(&self, _: &RunContext<'_>) -> Result<()> {
        ChordConfig::validate(self, "algorithm")
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(Chord { config: self.clone() })
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for LuffyConfig {
    fn data(&self) -> DataNeeds {
        DataNeeds { demonstrations: true, ..DataNeeds::RL }
    }
    fn validate(&self, run: &RunContext<'_>) -> Result<()> {
        LuffyConfig::validate(self, "algorithm", run.rl.sampling.n)
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(Luffy { config: self.clone() })
    }
}

impl<L: CausalLm> AlgorithmConfig<L> for PpoConfig {
    fn data(&self) -> DataNeeds {
        DataNeeds::RL
    }
    fn validate(&self, _: &RunContext<'_>) -> Result<()> {
        PpoConfig::validate(self, "algorithm")
    }
    fn build(&self) -> Box<dyn TrainingAlgorithm<L>> {
        Box::new(Ppo::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::testing::BigramLm;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_builtin_parses_its_defaults_and_builds_its_algorithm() {
        let r = AlgorithmRegistry::<BigramLm>::builtin();
        let rl = GrpoConfig::default();
        let run = RunContext { rl: &rl, steps: 10 };
        for name in r.names() {
            let spec = r.parse(name, &toml::Table::new()).unwrap();
            spec.validate(&run).unwrap();
            assert_eq!(spec.build().name(), name, "the built algorithm reports its registered name");
            // The resolved options parse back to the same options.
            let resolved = spec.options().unwrap();
            assert_eq!(r.parse(name, &resolved).unwrap().options().unwrap(), resolved, "{name}");
        }
        assert_eq!(r.names().count(), 11);
    }

    #[test]
    fn each_table_refuses_the_options_of_another() {
        let r = AlgorithmRegistry::<BigramLm>::builtin();
        // `mu` is mixing's (and a table in chord), `sft_steps` cold start's.
        let e = r.parse("sft", &table("sft_steps = 3")).unwrap_err().to_string();
        assert!(e.contains("sft_steps") && e.contains("algorithm"), "{e}");
        let e = r.parse("ppo", &table("shaping_gamma = 0.2")).unwrap_err().to_string();
        assert!(e.contains("shaping_gamma"), "{e}");
        let e = r.parse("chord", &table("mu = { peek = 0.9 }")).unwrap_err().to_string();
        assert!(e.contains("peek"), "{e}");
        let e = r.parse("bridge", &table("outer = \"nope\"")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = r.parse("grpo", &toml::Table::new()).unwrap_err().to_string();
        assert!(e.contains("unknown algorithm `grpo`") && e.contains("luffy"), "{e}");
        let chord = r.parse("chord", &table("phi = false\nmu = { peak = 0.9, valley = 0.05, decay_steps = 200 }"));
        let resolved = chord.unwrap().options().unwrap();
        assert_eq!(resolved["mu"]["warmup_steps"].as_integer(), Some(0));
        // Values are checked with the run's context.
        let rl = GrpoConfig::default(); // n = 4
        let run = RunContext { rl: &rl, steps: 10 };
        let e = r.parse("luffy", &table("off_policy_per_prompt = 4")).unwrap().validate(&run).unwrap_err();
        assert!(e.to_string().contains("algorithm.off_policy_per_prompt"), "{e}");
        let e = r.parse("ppo", &table("gae_lambda = 1.5")).unwrap().validate(&run).unwrap_err();
        assert!(e.to_string().contains("algorithm.gae_lambda"), "{e}");
        let e = r.parse("mixing", &table("mu = -1.0")).unwrap().validate(&run).unwrap_err();
        assert!(e.to_string().contains("algorithm.mu"), "{e}");
        let mut r = r;
        assert!(r.register::<SftOptions>("sft").is_err(), "names are never replaced");
        assert!(r.register::<SftOptions>("a b").is_err());
    }

    /// docs/config.md shows every built-in algorithm's table with its defaults: each name as
    /// `name = "NAME"` and each of its options as `KEY = VALUE` (the resolved default).
    #[test]
    fn docs_config_lists_every_algorithm_with_its_defaults() {
        let docs = include_str!("../docs/config.md");
        let r = AlgorithmRegistry::<BigramLm>::builtin();
        let mut missing = Vec::new();
        for name in r.names() {
            let spec = r.parse(name, &toml::Table::new()).unwrap();
            let heading = format!("name = \"{name}\"");
            if !docs.contains(&heading) {
                missing.push(heading);
            }
            for (key, value) in spec.options().unwrap() {
                let line = format!("{key} = {value}");
                if !docs.contains(&line) {
                    missing.push(format!("{name}: {line}"));
                }
            }
        }
        assert!(missing.is_empty(), "docs/config.md lacks:\n{}", missing.join("\n"));
    }
}
