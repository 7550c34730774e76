//! [`RewardFunction`]s on top of the verifier: the verifiable rewards of RL.
//!
//! * [`AccuracyReward`]: 1 when [`verify`] judges the completion's answer equivalent to the
//!   reference, else 0 (or ±1 with [`RewardScale::Signed`], identical under group
//!   normalisation); *skipped* when the reference itself is unusable or the comparison ran out of
//!   budget, so that a broken record never teaches the policy anything.
//! * [`FormatReward`]: 1 when the completion carries a final-answer marker (`####`, `\boxed{}`,
//!   "the answer is"), for the optional format bonus; combine with
//!   [`bridge_core::reward::WeightedRewards`].
//! * [`NoisyReward`]: a binary reward flipped with probability `p` from a seeded stream — the
//!   noisy verifier of the paper's robustness experiment (v3: `p = 0.2`).

use crate::verify::{Side, Verdict, VerifyOptions, has_answer_marker, verify};
use bridge_core::{BridgeError, Result, Reward, RewardFunction, RlPrompt, derive_seed};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A noisy verifier: the rewards of `inner` that equal `low` or `high` are swapped (`low ↔ high`)
/// with probability `p`, independently for every scored completion; skips and other values pass
/// through.
///
/// The coin of the `i`-th completion of the `c`-th [`RewardFunction::score_batch`] call (counted
/// from 0 over the reward's life) is a hash of `(seed, c, i)`: the flips are fixed by the seed and
/// the order of the calls, not by the completions' text, so equal completions of one group are
/// flipped independently. [`NoisyReward::calls`] / [`NoisyReward::set_calls`] read and restore the
/// call counter (the only state) for resumed runs. A flipped reward carries the detail
/// `"flipped": true`.
pub struct NoisyReward<R> {
    inner: R,
    p: f64,
    seed: u64,
    low: f64,
    high: f64,
    calls: AtomicU64,
}

impl<R: RewardFunction> NoisyReward<R> {
    /// `inner` (a binary 0/1 reward) flipped with probability `p ∈ [0, 1]`; the error names
    /// `reward_noise`.
    pub fn new(inner: R, p: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(BridgeError::config("reward_noise", format!("must be in [0, 1], got {p}")));
        }
        Ok(Self { inner, p, seed: derive_seed(seed, "reward/noise"), low: 0.0, high: 1.0, calls: AtomicU64::new(0) })
    }

    /// The two values that are swapped (default 0 and 1; use −1 and 1 for a signed reward).
    pub fn with_values(mut self, low: f64, high: f64) -> Self {
        (self.low, self.high) = (low, high);
        self
    }

    /// The flip probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// `score_batch` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Restores the call counter (resume).
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::SeqCst);
    }

    /// Whether the coin of completion `item` of call `call` comes up "flip".
    fn flips(&self, call: u64, item: u64) -> bool {
        // SplitMix64 finaliser over (seed, call, item): a counter-based uniform in [0, 1).
        let mut z = self.seed ^ call.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ item.wrapping_mul(0xd1b5_4a32_d192_ed03);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.p
    }

    fn flip(&self, r: Reward, call: u64, item: u64) -> Reward {
        match r.value {
            Some(v) if (v == self.low || v == self.high) && self.flips(call, item) => {
                let mut flipped = r.with_detail("flipped", true);
                flipped.value = Some(if v == self.low { self.high } else { self.low });
                flipped
            }
            _ => r,
        }
    }
}

impl<R: RewardFunction> RewardFunction for NoisyReward<R> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// One completion: a call of its own.
    fn score(&self, completion: &str, example: &RlPrompt) -> Reward {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.flip(self.inner.score(completion, example), call, 0)
    }

    fn score_batch(&self, items: &[(&str, &RlPrompt)]) -> Vec<Reward> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let rewards = self.inner.score_batch(items);
        rewards.into_iter().enumerate().map(|(i, r)| self.flip(r, call, i as u64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::reward::WeightedRewards;

    fn example(reference: &str) -> RlPrompt {
        RlPrompt::new("t", "q", reference)
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
    fn noisy_reward_flips_at_its_rate_and_is_seeded() {
        let ex = example("7");
        let items: Vec<(&str, &RlPrompt)> =
            (0..1000).map(|i| (if i % 2 == 0 { "#### 7" } else { "#### 8" }, &ex)).collect();
        let clean = AccuracyReward::default().score_batch(&items);
        let noisy = NoisyReward::new(AccuracyReward::default(), 0.2, 3).unwrap();
        let mut flips = 0;
        for call in 0..20 {
            let out = noisy.score_batch(&items);
            for (c, n) in clean.iter().zip(&out) {
                let (c, n) = (c.value.unwrap(), n.value.unwrap());
                if c != n {
                    assert_eq!(n, 1.0 - c, "a flip swaps 0 and 1");
                    flips += 1;
                }
            }
            assert_eq!(noisy.calls(), call + 1);
        }
        // 20 000 coins at p = 0.2: mean 4000, std 57.
        assert!((3750..=4250).contains(&flips), "{flips} flips");
        // Same seed and call count → the same flips; another seed → other flips.
        let again = NoisyReward::new(AccuracyReward::default(), 0.2, 3).unwrap();
        again.set_calls(5);
        noisy.set_calls(5);
        assert_eq!(noisy.score_batch(&items), again.score_batch(&items));
        let other = NoisyReward::new(AccuracyReward::default(), 0.2, 4).unwrap();
        other.set_calls(6);
        assert_ne!(noisy.score_batch(&items), other.score_batch(&items));
        // p = 0 is the clean reward; p = 1 flips everything; skips pass through.
        let none = NoisyReward::new(AccuracyReward::default(), 0.0, 3).unwrap();
        assert_eq!(none.score_batch(&items), clean);
        let all = NoisyReward::new(AccuracyReward::default(), 1.0, 3).unwrap();
        let bad = example("");
        assert!(all.score("#### 7", &bad).is_skip());
        assert_eq!(all.score("#### 7", &ex).value, Some(0.0));
        for p in [-0.1, 1.5, f64::NAN] {
            let e = NoisyReward::new(AccuracyReward::default(), p, 0).err().unwrap();
            assert!(e.to_string().contains("reward_noise"), "{e}");
        }
    }

    #[test]
    fn format_bonus_combines_with_accuracy() {
        let total = WeightedRewards::new("total").with(1.0, AccuracyReward::default()).with(0.1, FormatReward);
        assert_eq!(total.score("#### 8", &example("7")).value, Some(0.1));
        assert_eq!(total.score("#### 7", &example("7")).value, Some(1.1));
        assert_eq!(total.score("seven", &example("7")).value, Some(0.0));
    }
}
