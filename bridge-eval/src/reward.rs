//! [`RewardFunction`]s on top of the verifier: the verifiable rewards of RL.
//!
//! * [`AccuracyReward`]: 1 when [`verify`] judges the completion's answer equivalent to the
//!   reference, else 0 (or ±1 with [`RewardScale::Signed`], identical under group
//!   normalisation); *skipped* when the reference itself is unusable or the comparison ran out of
//!   budget, so that a broken record never teaches the policy anything.
//! * [`FormatReward`]: 1 when the completion carries a final-answer marker (`####`, `\boxed{}`,
//!   "the answer is"), for the optional format bonus; combine with
//!   [`bridge_core::reward::WeightedRewards`].

use crate::verify::{Side, Verdict, VerifyOptions, has_answer_marker, verify};
use bridge_core::{Reward, RewardFunction, RlPrompt};
use serde::{Deserialize, Serialize};

/// How a verdict becomes a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardScale {
    /// Correct 1, otherwise 0 (method.md's default).
    #[default]
    Binary,
    /// Correct +1, otherwise −1 (the paper's equation).
    Signed,
}

/// The accuracy reward: the verifier's judgement of the completion against `RlPrompt::reference`.
#[derive(Clone, Debug, Default)]
pub struct AccuracyReward {
    /// Verifier options (extraction, comparison).
    pub options: VerifyOptions,
    /// Binary or signed.
    pub scale: RewardScale,
}

impl RewardFunction for AccuracyReward {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        let verdict = verify(completion, &example.reference, &self.options);
        let (hit, miss) = match self.scale {
            RewardScale::Binary => (1.0, 0.0),
            RewardScale::Signed => (1.0, -1.0),
        };
        let reward = match &verdict {
            Verdict::Correct { .. } => Reward::scored(hit),
            Verdict::Incorrect { .. }
            | Verdict::Unparseable { side: Side::Prediction, .. }
            | Verdict::TooLong { side: Side::Prediction, .. } => Reward::scored(miss),
            Verdict::Unparseable { reason, .. } => Reward::skip(format!("reference unusable: {reason}")),
            Verdict::TooLong { limit, .. } => Reward::skip(format!("reference longer than {limit}")),
            Verdict::Undecided { .. } => Reward::skip("comparison ran out of budget"),
        };
        let reward = reward.with_detail("verdict", verdict.label());
        match verdict.pred() {
            Some(p) => reward.with_detail("prediction", p.normalized.clone()),
            None => reward,
        }
    }
}

/// 1 when the completion states a final answer in a recognised form, else 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct FormatReward;

impl RewardFunction for FormatReward {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, completion: &str, _example: &RlPrompt) -> Reward {
        Reward::scored(if has_answer_marker(completion) { 1.0 } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::Metadata;
    use bridge_core::reward::WeightedRewards;

    fn example(reference: &str) -> RlPrompt {
        RlPrompt { id: "t".into(), prompt: "q".into(), reference: reference.into(), metadata: Metadata::new() }
    }

    #[test]
    fn accuracy_reward_maps_verdicts() {
        let r = AccuracyReward::default();
        assert_eq!(r.score("3+4=7\n#### 7", &example("7")).value, Some(1.0));
        assert_eq!(r.score("so \\boxed{\\frac{1}{2}}", &example("0.5")).value, Some(1.0));
        assert_eq!(r.score("#### 8", &example("7")).value, Some(0.0));
        assert_eq!(r.score("I don't know", &example("7")).value, Some(0.0));
        let skipped = r.score("#### 7", &example(""));
        assert!(skipped.is_skip(), "{skipped:?}");
        let signed = AccuracyReward { scale: RewardScale::Signed, ..AccuracyReward::default() };
        assert_eq!(signed.score("#### 8", &example("7")).value, Some(-1.0));
        let detail = r.score("#### 1,234", &example("1234"));
        assert_eq!(detail.value, Some(1.0));
        assert_eq!(detail.details.get("verdict").and_then(|v| v.as_str()), Some("correct"));
    }

    #[test]
    fn format_bonus_combines_with_accuracy() {
        let total = WeightedRewards::new("total").with(1.0, AccuracyReward::default()).with(0.1, FormatReward);
        assert_eq!(total.score("#### 8", &example("7")).value, Some(0.1));
        assert_eq!(total.score("#### 7", &example("7")).value, Some(1.1));
        assert_eq!(total.score("seven", &example("7")).value, Some(0.0));
    }
}
