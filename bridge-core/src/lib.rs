//! # bridge-core
//!
//! The vocabulary every other `bridge` crate speaks. It is deliberately small:
//!
//! | module | what it defines |
//! |---|---|
//! | [`policy`] | [`CausalLm`]: a causal LM whose base θ and adapter w are separate modules, so one adapter can be applied to two bases (θ and BRIDGE's RL-only θ̂) in one step; [`SequenceBatch`], [`SamplingParams`], [`Completion`], [`TextCodec`] |
//! | [`reward`] | [`RewardFunction`]: scores a completion against an example's reference, or skips it |
//! | [`data`] | [`SftSource`] / [`PromptSource`] (through [`ExampleSource`]), [`DataCursor`] for seeded, resumable shuffling |
//! | [`dataset`] | [`DataFormat`]: the JSONL forms (GSM8K, MATH, prompt/completion, messages, generic), detected once; a [`dataset::Record`]'s question, worked solution and final answer, for SFT/RL data and benchmarks alike |
//! | [`grads`] | [`FlatGradients`]: one parameter group's gradient as a vector (add, scale, dot) |
//! | [`outer`] | [`OuterObjective`]: the upper level of a bilevel step; [`CooperativeGain`] is BRIDGE's equation (8) |
//! | [`schedule`] | [`LambdaSchedule`] for λ: constant, linear ramp, cosine, piecewise by epoch |
//! | [`sampling`] | host-side token sampling (temperature, top-k, top-p) shared by every generator |
//! | [`config`], [`device`], [`seed`], [`error`] | serde configs, run-time backend choice, deterministic RNG, the error type |
//! | [`testing`] | test doubles for each trait ([`testing::BigramLm`], [`testing::CharCodec`], …) |
//!
//! Conventions used throughout: objectives are *maximised* (as in the paper) and gradients of
//! objectives are *ascent* directions; a trainer that "moves θ along g" feeds `−g` to an
//! optimiser as the gradient of a loss.

pub mod codec;
pub mod config;
pub mod data;
pub mod dataset;
pub mod device;
pub mod error;
pub mod fs;
pub mod grads;
pub mod jsonl;
pub mod outer;
pub mod parallel;
pub mod policy;
pub mod prompt;
pub mod reward;
pub mod sampling;
pub mod schedule;
pub mod seed;
pub mod testing;

pub use codec::{CharCodec, IdsOnlyCodec};
pub use config::{AdamWSettings, GroupOptimizer, OptimizerKind};
pub use data::{DataCursor, ExampleSource, InMemorySource, Metadata, PromptSource, RlPrompt, SftExample, SftSource};
pub use dataset::DataFormat;
pub use device::DeviceChoice;
pub use error::{BridgeError, Result};
pub use grads::{FlatGradients, independent_copy, step_along};
pub use outer::{AdapterGradTerms, CooperativeGain, JointSftRl, OuterObjective, TermWeights};
pub use parallel::{CollectiveSync, Exchange, GradientSync, HostSync, Shard};
pub use policy::{
    CausalLm, ChatMessage, Completion, FinishReason, ParamGroups, SamplingParams, SequenceBatch, TextCodec,
    TokenScores, TokenSelection, TokenSequence,
};
pub use prompt::PromptTemplate;
pub use reward::{Reward, RewardFunction};
pub use schedule::{LambdaSchedule, LambdaScheduleConfig, ScheduleState};
pub use seed::{BridgeRng, derive_seed};
