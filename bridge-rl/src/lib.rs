//! # bridge-rl
//!
//! The RL lower-level objective of BRIDGE: GRPO and its variants (method.md §4), usable on its
//! own (the RL-zero baseline, `bridge_bilevel::RlZero`) and by the bilevel trainer.
//!
//! * [`advantage`]: group-relative advantages (group std, batch std, Dr.GRPO).
//! * [`loss`]: the clipped surrogate with ε_low/ε_high, KL estimators k1/k2/k3, and the
//!   token-mean / sequence-mean / Dr.GRPO aggregations.
//! * [`rollout`]: groups of sampled completions with rewards and advantages, and the training
//!   batch ("token in, token out") built from them.
//! * [`grpo`]: the GRPO objective at any weights ([`grpo_loss`]; [`token_advantage_loss`] with
//!   per-token advantages).
//! * [`chord`]: CHORD's SFT term (`φ = p(1−p)` token weights) and its μ schedule.
//! * [`luffy`]: LUFFY's mixed on-/off-policy groups and policy-shaping loss.
//! * [`critic`]: PPO's value head, GAE and clipped value loss.

pub mod advantage;
pub mod chord;
pub mod critic;
pub mod grpo;
pub mod loss;
pub mod luffy;
pub mod rollout;

pub use chord::{ChordSftOutput, MuSchedule, chord_sft_loss};
pub use critic::{ValueHead, ValueLossOutput, critic_features, gae, value_loss, whiten};
pub use grpo::{GrpoConfig, RolloutStats, grpo_loss, token_advantage_loss};
pub use luffy::{
    LuffyConfig, MixedPolicyLossInputs, MixedPolicyLossOutput, OffPolicyStats, collect_mixed_rollouts, mixed_loss,
    mixed_policy_loss, policy_shaping,
};
pub use rollout::{RlTrainingBatch, Rollouts, collect_rollouts};

pub use advantage::{AdvantageScaling, Advantages, compute_advantages};
pub use loss::{
    KlEstimator, LossAggregation, PolicyLossConfig, PolicyLossInputs, PolicyLossOutput, PolicyLossStats,
    TokenPolicyLossInputs, aggregate, policy_loss, token_policy_loss,
};
