//! Reward functions: how a completion is scored against an example.
//!
//! A [`RewardFunction`] returns a [`Reward`]: a number, or *not applicable* (skip), which the RL
//! trainer excludes from the loss and counts in its metrics — e.g. when the reference itself
//! cannot be parsed. `details` carries what should be logged (the extracted answer, the
//! verifier's verdict).

use crate::data::{Metadata, RlPrompt};
use serde::{Deserialize, Serialize};

/// The outcome of scoring one completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// The reward, or `None` when this completion should be skipped (not applicable).
    pub value: Option<f64>,
    /// Anything worth logging about how the value was reached.
    #[serde(default)]
    pub details: Metadata,
}

impl Reward {
    /// A scored completion.
    pub fn scored(value: f64) -> Self {
        Self { value: Some(value), details: Metadata::new() }
    }

    /// A completion the reward does not apply to, with the reason logged under `skip`.
    pub fn skip(reason: impl Into<String>) -> Self {
        let mut details = Metadata::new();
        details.insert("skip".into(), serde_json::Value::String(reason.into()));
        Self { value: None, details }
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Whether the completion is excluded from the loss.
    pub fn is_skip(&self) -> bool {
        self.value.is_none()
    }
}

/// Scores completions against an example's reference and metadata.
pub trait RewardFunction: Send + Sync {
    /// A short name used in metric keys (`reward/<name>`).
    fn name(&self) -> &str;

    /// Scores one completion (the decoded text only, prompt excluded).
    fn score(&self, completion: &str, example: &RlPrompt) -> Reward;

    /// Scores a batch; the default scores each item in turn.
    fn score_batch(&self, items: &[(&str, &RlPrompt)]) -> Vec<Reward> {
        items.iter().map(|(completion, example)| self.score(completion, example)).collect()
    }
}

impl<R: RewardFunction + ?Sized> RewardFunction for Box<R> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        (**self).score(completion, example)
    }
    fn score_batch(&self, items: &[(&str, &RlPrompt)]) -> Vec<Reward> {
        (**self).score_batch(items)
    }
}

/// A weighted sum of reward functions (e.g. accuracy + 0.1 · format).
///
/// The sum is skipped when any *component* skips, so a skipped accuracy is never hidden by a
/// format bonus.
pub struct WeightedRewards {
    name: String,
    parts: Vec<(f64, Box<dyn RewardFunction>)>,
}

impl WeightedRewards {
    /// An empty sum named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), parts: Vec::new() }
    }

    /// Adds `weight · reward`.
    pub fn with(mut self, weight: f64, reward: impl RewardFunction + 'static) -> Self {
        self.parts.push((weight, Box::new(reward)));
        self
    }
}

impl RewardFunction for WeightedRewards {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        let mut total = 0.0;
        let mut details = Metadata::new();
        let mut skipped = None;
        for (weight, part) in &self.parts {
            let r = part.score(completion, example);
            details.insert(part.name().to_owned(), serde_json::to_value(&r).unwrap_or_default());
            match r.value {
                Some(v) => total += weight * v,
                None => skipped = Some(part.name().to_owned()),
            }
        }
        let value = if skipped.is_some() { None } else { Some(total) };
        Reward { value, details }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ExactMatchReward, FnReward};

    fn prompt(reference: &str) -> RlPrompt {
        RlPrompt::new("0", "q", reference)
    }

    #[test]
    fn exact_match_scores_and_skips() {
        let r = ExactMatchReward;
        assert_eq!(r.score(" 42\n", &prompt("42")).value, Some(1.0));
        assert_eq!(r.score("41", &prompt("42")).value, Some(0.0));
        assert!(r.score("41", &prompt("")).is_skip());
        let batch = r.score_batch(&[("42", &prompt("42")), ("0", &prompt("42"))]);
        assert_eq!(batch.iter().map(|r| r.value).collect::<Vec<_>>(), vec![Some(1.0), Some(0.0)]);
    }

    #[test]
    fn weighted_sum_adds_and_propagates_skips() {
        let len_bonus =
            FnReward::new("short", |c: &str, _: &RlPrompt| Reward::scored(if c.len() < 4 { 1.0 } else { 0.0 }));
        let sum = WeightedRewards::new("total").with(1.0, ExactMatchReward).with(0.5, len_bonus);
        assert_eq!(sum.score("42", &prompt("42")).value, Some(1.5));
        assert_eq!(sum.score("43 is it", &prompt("42")).value, Some(0.0));
        let skipped = sum.score("42", &prompt(""));
        assert!(skipped.is_skip());
        assert!(skipped.details.contains_key("exact_match"));
    }
}
