//! # bridge-bilevel
//!
//! The orchestrator: composes a [`bridge_core::CausalLm`], a reward, SFT data and RL prompts, and
//! an [`bridge_core::OuterObjective`] into training algorithms — BRIDGE (method.md §3) and every
//! baseline of §5 — with resumable, atomic checkpoints.
//!
//! * [`algorithm`]: the [`TrainingAlgorithm`] trait, the step context, shared building blocks,
//!   and the baselines (SFT, RL-zero, cold start, naive alternating, SFT+RL mixing).
//! * [`bridge`]: BRIDGE's equations (7), (8), (9), with shared or separate θ̂ rollouts and a
//!   separate-backward or fused single-backward gradient path.
//! * [`state`]: the [`TrainState`] (θ, θ̂, w, π_ref, optimisers, RNG, cursors) and checkpoints.
//! * [`run`]: state initialisation and the step loop.

pub mod algorithm;
pub mod bridge;
pub mod run;
pub mod state;

pub use algorithm::{
    ColdStart, Metrics, NaiveAlternating, Needs, RlZero, SftOnly, SftRlMixing, StepContext, TrainingAlgorithm,
};
pub use bridge::{AuxRollouts, Bridge, GradientPath};
pub use run::{LoopConfig, OptimConfig, RunEvent, RunInputs, init_state, run_steps};
pub use state::{CheckpointMeta, TrainState, latest_checkpoint, prune_checkpoints, read_checkpoint_meta};
