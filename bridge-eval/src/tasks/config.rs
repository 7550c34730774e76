//! [`TaskConfig`]: what [`generate`](super::generate) produces.

use super::arith::Op;
use super::{ALPHABET, QUESTION_PLACEHOLDER};
use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};

/// Highest difficulty level the generator supports.
pub const MAX_LEVEL: u32 = 6;
/// Largest accepted `max_value` (keeps every number at most four digits).
pub const MAX_VALUE_LIMIT: i64 = 9999;

/// Largest accepted size of one split.
pub const MAX_SPLIT_LEN: usize = 1_000_000;
/// Largest accepted `facts_per_doc`.
pub const MAX_FACTS_PER_DOC: usize = 64;

/// The arithmetic task family and the sizes of its splits (serde; unknown keys are rejected).
///
/// Problems of level `k` have `k` operations; every level in `1..=levels` is used. The SFT, RL
/// and test splits are spread evenly over the levels (counts differ by at most one, lower levels
/// first) unless their per-level counts are given ([`TaskConfig::sft_per_level`] and friends).
/// The defaults fit a few-minute CPU run: 4000 pre-training documents, 200 worked solutions,
/// 2000 RL prompts, 400 test prompts, with every example at most 96 characters long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// Number of difficulty levels (`1..=MAX_LEVEL`); level `k` has `k` operations.
    pub levels: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Pre-training documents in all: the worked problems of [`TaskConfig::pretrain_problems`],
    /// the rest documents of bare arithmetic facts.
    pub n_pretrain: usize,
    /// Worked problems per level in the pre-training text: entry `i` is level `i + 1`; missing
    /// entries are zero. The default, `[100, 1500]`, shows levels 1 and 2 only, so that the base
    /// model learns the format but has never seen a worked solution of the harder levels.
    pub pretrain_problems: Vec<usize>,
    /// Arithmetic facts (`3+4=7`) per fact document, separated by spaces.
    pub facts_per_doc: usize,
    /// Worked solutions (`D_SFT`).
    pub n_sft: usize,
    /// RL prompts with answers only (`D_RL`).
    pub n_rl: usize,
    /// Held-out test prompts.
    pub n_test: usize,
    /// SFT examples per level (entry `i` is level `i + 1`). Empty (the default): `n_sft` spread
    /// evenly over the levels; otherwise exactly one entry per level, summing to `n_sft`.
    pub sft_per_level: Vec<usize>,
    /// RL prompts per level, like [`TaskConfig::sft_per_level`] (summing to `n_rl`).
    pub rl_per_level: Vec<usize>,
    /// Test prompts per level, like [`TaskConfig::sft_per_level`] (summing to `n_test`).
    pub test_per_level: Vec<usize>,
    /// Largest operand written in a question (operands are `0..=max_operand`).
    pub max_operand: i64,
    /// Largest factor of a multiplication (both factors, intermediate values included).
    pub max_factor: i64,
    /// Largest value of any intermediate result or answer; no result is negative.
    pub max_value: i64,
    /// The operators used, a non-empty subset of `+-*`.
    pub operators: String,
    /// Whether questions may need parentheses (from level 2 on), e.g. `(3+4)*2`.
    pub parentheses: bool,
    /// The prompt: `{question}` is replaced by the question; every other character must be in
    /// [`ALPHABET`].
    pub prompt_template: String,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            levels: 4,
            seed: 0,
            n_pretrain: 4000,
            pretrain_problems: vec![100, 1500],
            facts_per_doc: 8,
            n_sft: 200,
            n_rl: 2000,
            n_test: 400,
            sft_per_level: Vec::new(),
            rl_per_level: Vec::new(),
            test_per_level: Vec::new(),
            max_operand: 20,
            max_factor: 9,
            max_value: 99,
            operators: "+-*".into(),
            parentheses: true,
            prompt_template: "Q: {question}\nA: ".into(),
        }
    }
}

fn digits(n: i64) -> usize {
    n.max(0).to_string().len()
}

/// `n` spread evenly over `levels` levels: the count of level `level` (1-based).
pub(crate) fn share(n: usize, levels: u32, level: u32) -> usize {
    let l = levels as usize;
    n / l + usize::from(((level - 1) as usize) < n % l)
}

impl TaskConfig {
    /// Checks every field; the error names the field at fault (`tasks.<field>`).
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, msg: String| Err(BridgeError::config(format!("tasks.{field}"), msg));
        if !(1..=MAX_LEVEL).contains(&self.levels) {
            return err("levels", format!("must be in 1..={MAX_LEVEL}, got {}", self.levels));
        }
        if self.max_operand < 1 {
            return err("max_operand", format!("must be at least 1, got {}", self.max_operand));
        }
        if !(self.max_operand..=MAX_VALUE_LIMIT).contains(&self.max_value) {
            return err(
                "max_value",
                format!(
                    "must be in max_operand..={MAX_VALUE_LIMIT} ({}..={MAX_VALUE_LIMIT}), got {}",
                    self.max_operand, self.max_value
                ),
            );
        }
        if self.max_factor < 0 {
            return err("max_factor", format!("must not be negative, got {}", self.max_factor));
        }
        for (field, n) in
            [("n_pretrain", self.n_pretrain), ("n_sft", self.n_sft), ("n_rl", self.n_rl), ("n_test", self.n_test)]
        {
            if n > MAX_SPLIT_LEN {
                return err(field, format!("must be at most {MAX_SPLIT_LEN}, got {n}"));
            }
        }
        for (field, counts, total) in [
            ("sft_per_level", &self.sft_per_level, ("n_sft", self.n_sft)),
            ("rl_per_level", &self.rl_per_level, ("n_rl", self.n_rl)),
            ("test_per_level", &self.test_per_level, ("n_test", self.n_test)),
        ] {
            if counts.is_empty() {
                continue;
            }
            if counts.len() != self.levels as usize {
                return err(
                    field,
                    format!(
                        "has {} entries but there are {} levels (one count per level, or none)",
                        counts.len(),
                        self.levels
                    ),
                );
            }
            let sum = counts.iter().try_fold(0usize, |a, &b| a.checked_add(b));
            if sum != Some(total.1) {
                return err(
                    field,
                    format!(
                        "sums to {} but {} is {}",
                        sum.map_or("more than usize".into(), |s| s.to_string()),
                        total.0,
                        total.1
                    ),
                );
            }
        }
        if self.facts_per_doc > MAX_FACTS_PER_DOC {
            return err("facts_per_doc", format!("must be at most {MAX_FACTS_PER_DOC}, got {}", self.facts_per_doc));
        }
        let ops = self.ops()?;
        if ops.is_empty() {
            return err("operators", "must name at least one of `+-*`".into());
        }
        if self.pretrain_problems.len() > self.levels as usize {
            return err(
                "pretrain_problems",
                format!("has {} entries but there are only {} levels", self.pretrain_problems.len(), self.levels),
            );
        }
        let n_problems = self.pretrain_problems.iter().try_fold(0usize, |a, &b| a.checked_add(b));
        match n_problems {
            Some(n) if n <= self.n_pretrain => {
                if n < self.n_pretrain && self.facts_per_doc == 0 {
                    return err("facts_per_doc", "must be at least 1 when there are fact documents".into());
                }
            }
            _ => {
                return err(
                    "pretrain_problems",
                    format!("asks for more problems than n_pretrain ({}) documents", self.n_pretrain),
                );
            }
        }
        if self.prompt_template.matches(QUESTION_PLACEHOLDER).count() != 1 {
            return err("prompt_template", format!("must contain {QUESTION_PLACEHOLDER} exactly once"));
        }
        if let Some(c) = self.prompt_template.replace(QUESTION_PLACEHOLDER, "").chars().find(|c| !ALPHABET.contains(*c))
        {
            return err("prompt_template", format!("character {c:?} is not in the task alphabet {ALPHABET:?}"));
        }
        Ok(())
    }

    /// The operators, in `+ - *` order.
    pub(crate) fn ops(&self) -> Result<Vec<Op>> {
        let mut seen = Vec::new();
        for c in self.operators.chars() {
            let op = Op::from_symbol(c).ok_or_else(|| {
                BridgeError::config("tasks.operators", format!("unknown operator {c:?} (use `+`, `-`, `*`)"))
            })?;
            if seen.contains(&op) {
                return Err(BridgeError::config("tasks.operators", format!("operator {c:?} appears twice")));
            }
            seen.push(op);
        }
        Ok([Op::Add, Op::Sub, Op::Mul].into_iter().filter(|op| seen.contains(op)).collect())
    }

    /// Number of SFT, RL and test problems of `level` (`1..=levels`): the per-level counts when
    /// given, else the totals spread evenly.
    pub fn level_counts(&self, level: u32) -> (usize, usize, usize) {
        let count = |per_level: &[usize], n: usize| {
            per_level.get(level.saturating_sub(1) as usize).copied().unwrap_or_else(|| share(n, self.levels, level))
        };
        (
            count(&self.sft_per_level, self.n_sft),
            count(&self.rl_per_level, self.n_rl),
            count(&self.test_per_level, self.n_test),
        )
    }

    /// Worked pre-training problems of `level`.
    pub fn pretrain_count(&self, level: u32) -> usize {
        self.pretrain_problems.get(level.saturating_sub(1) as usize).copied().unwrap_or(0)
    }

    /// An upper bound on the characters of prompt + worked solution at `level`: what a
    /// context window must hold. With the defaults, level 4 is bounded by 70 characters.
    pub fn max_chars(&self, level: u32) -> usize {
        let l = level as usize;
        let question = (l + 1) * digits(self.max_operand) + l + 2 * l.saturating_sub(1);
        let template = self.prompt_template.chars().count().saturating_sub(QUESTION_PLACEHOLDER.len());
        let line = 3 * digits(self.max_value) + 2;
        template + question + l * (line + 1) + "#### ".len() + digits(self.max_value)
    }
}
