//! # bridge-rl
//!
//! The RL lower-level objective of BRIDGE: GRPO and its variants (method.md §4), usable on its
//! own (the RL-zero baseline) and by the bilevel trainer.
//!
//! * [`advantage`]: group-relative advantages (group std, batch std, Dr.GRPO).
//! * [`loss`]: the clipped surrogate with ε_low/ε_high, KL estimators k1/k2/k3, and the
//!   token-mean / sequence-mean / Dr.GRPO aggregations.
//! * [`rollout`]: groups of sampled completions with rewards and advantages, and the training
//!   batch ("token in, token out") built from them.
//! * [`grpo`]: the GRPO objective at any weights ([`grpo_loss`]), and [`GrpoTrainer`] for RL
//!   alone.

pub mod advantage;
pub mod grpo;
pub mod loss;
pub mod rollout;

pub use grpo::{GrpoConfig, GrpoStepMetrics, GrpoTrainer, grpo_loss};
pub use rollout::{RlTrainingBatch, Rollouts, collect_rollouts};

pub use advantage::{AdvantageScaling, Advantages, compute_advantages};
pub use loss::{
    KlEstimator, LossAggregation, PolicyLossConfig, PolicyLossInputs, PolicyLossOutput, PolicyLossStats, policy_loss,
};
