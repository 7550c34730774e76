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
//! * [`unrolled`]: BRIDGE with the exact one-step hypergradient of `J_RL(θ⁺(w), w)` as w's outer
//!   objective (finite-difference Hessian-vector product).
//! * [`chord`], [`luffy`], [`ppo`]: the single-stage SFT+RL mixers CHORD and LUFFY, and PPO with a
//!   critic (the critic is the algorithm's own checkpointed state).
//! * [`state`]: the [`TrainState`] (θ, θ̂, w, π_ref, optimisers, RNG, cursors) and checkpoints.
//! * [`run`]: state initialisation, the step loop, resuming.
//!
//! An algorithm's own state (beyond the [`TrainState`]) goes into every checkpoint through
//! [`TrainingAlgorithm::save_state`] and comes back with [`run::resume_from_checkpoint`].

pub mod algorithm;
pub mod bridge;
pub mod chord;
pub mod luffy;
pub mod ppo;
pub mod run;
pub mod state;
pub mod unrolled;

pub use algorithm::{
    ColdStart, Metrics, NaiveAlternating, Needs, RlZero, SftOnly, SftRlMixing, StepContext, TrainingAlgorithm,
};
pub use bridge::{AuxRollouts, Bridge, GradientPath};
pub use chord::{Chord, ChordConfig};
pub use luffy::Luffy;
pub use ppo::{Critic, Ppo, PpoConfig};
pub use run::{
    LoopConfig, OptimConfig, Replica, RunEvent, RunInputs, init_state, merge_metrics, resume_from_checkpoint,
    run_data_parallel, run_steps,
};
pub use state::{CheckpointMeta, TrainState, latest_checkpoint, prune_checkpoints, read_checkpoint_meta};
pub use unrolled::{Hypergradient, UnrolledBridge, UnrolledConfig, unrolled_hypergradient};
