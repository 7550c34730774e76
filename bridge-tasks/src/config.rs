//! [`TaskConfig`]: what [`generate`](super::generate) produces.

use super::alphabet::{ALPHABET, QUESTION_PLACEHOLDER};
use super::arith::Op;
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
/// Problems of level `k` have `k` binary operations unless [`TaskConfig::ops_per_level`] says
/// otherwise, and [`TaskConfig::squares_per_level`] operands written as squares (`a^2`, none by
/// default); every level in `1..=levels` is used. The SFT, RL, test and validation splits are
/// spread evenly over the levels (counts differ by at most one, lower levels first) unless their
/// per-level counts are given ([`TaskConfig::sft_per_level`] and friends).
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
    /// Held-out validation prompts (for choosing hyper-parameters; disjoint from every other
    /// split). 0 by default.
    pub n_val: usize,
    /// SFT examples per level (entry `i` is level `i + 1`). Empty (the default): `n_sft` spread
    /// evenly over the levels; otherwise exactly one entry per level, summing to `n_sft`.
    pub sft_per_level: Vec<usize>,
    /// RL prompts per level, like [`TaskConfig::sft_per_level`] (summing to `n_rl`).
    pub rl_per_level: Vec<usize>,
    /// Test prompts per level, like [`TaskConfig::sft_per_level`] (summing to `n_test`).
    pub test_per_level: Vec<usize>,
    /// Validation prompts per level, like [`TaskConfig::sft_per_level`] (summing to `n_val`).
    pub val_per_level: Vec<usize>,
    /// Binary operations (`+ - *`) per level (entry `i` is level `i + 1`). Empty (the default):
    /// level `k` has `k`; otherwise exactly one entry per level, each `≥ 1`.
    pub ops_per_level: Vec<u32>,
    /// Operands written as squares (`a^2`, worked out as `a*a`; `a ≥ 2`, since `0^2` and `1^2`
    /// can be answered by ignoring the exponent) per level (entry `i` is level `i + 1`; missing
    /// entries are zero). A level with squares is a new skill for a base model
    /// whose pre-training never showed `^` (give it no pre-training problems): its
    /// demonstrations teach it. Each entry is at most the level's number of operands.
    pub squares_per_level: Vec<u32>,
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
            n_val: 0,
            sft_per_level: Vec::new(),
            rl_per_level: Vec::new(),
            test_per_level: Vec::new(),
            val_per_level: Vec::new(),
            ops_per_level: Vec::new(),
            squares_per_level: Vec::new(),
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
        for (field, n) in [
            ("n_pretrain", self.n_pretrain),
            ("n_sft", self.n_sft),
            ("n_rl", self.n_rl),
            ("n_test", self.n_test),
            ("n_val", self.n_val),
        ] {
            if n > MAX_SPLIT_LEN {
                return err(field, format!("must be at most {MAX_SPLIT_LEN}, got {n}"));
            }
        }
        for (field, counts, total) in [
            ("sft_per_level", &self.sft_per_level, ("n_sft", self.n_sft)),
            ("rl_per_level", &self.rl_per_level, ("n_rl", self.n_rl)),
            ("test_per_level", &self.test_per_level, ("n_test", self.n_test)),
            ("val_per_level", &self.val_per_level, ("n_val", self.n_val)),
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
        if !self.ops_per_level.is_empty() && self.ops_per_level.len() != self.levels as usize {
            return err(
                "ops_per_level",
                format!(
                    "has {} entries but there are {} levels (one per level, or none)",
                    self.ops_per_level.len(),
                    self.levels
                ),
            );
        }
        if let Some(i) = self.ops_per_level.iter().position(|&n| !(1..=MAX_LEVEL).contains(&n)) {
            return err(
                "ops_per_level",
                format!("entry {i} must be in 1..={MAX_LEVEL}, got {}", self.ops_per_level[i]),
            );
        }
        if self.squares_per_level.len() > self.levels as usize {
            return err(
                "squares_per_level",
                format!("has {} entries but there are only {} levels", self.squares_per_level.len(), self.levels),
            );
        }
        for level in 1..=self.levels {
            let (ops, squares) = (self.ops(level), self.squares(level));
            if squares > ops + 1 {
                return err(
                    "squares_per_level",
                    format!("level {level} has {squares} squares but only {} operands", ops + 1),
                );
            }
        }
        if self.facts_per_doc > MAX_FACTS_PER_DOC {
            return err("facts_per_doc", format!("must be at most {MAX_FACTS_PER_DOC}, got {}", self.facts_per_doc));
        }
        let ops = self.operators()?;
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

    /// Binary operations of `level`'s problems.
    pub fn ops(&self, level: u32) -> u32 {
        self.ops_per_level.get(level.saturating_sub(1) as usize).copied().unwrap_or(level)
    }

    /// Operands written as squares in `level`'s problems.
    pub fn squares(&self, level: u32) -> u32 {
        self.squares_per_level.get(level.saturating_sub(1) as usize).copied().unwrap_or(0)
    }

    /// The operators, in `+ - *` order.
    pub(crate) fn operators(&self) -> Result<Vec<Op>> {
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

    /// Number of SFT, RL, test and validation problems of `level` (`1..=levels`): the per-level
    /// counts when given, else the totals spread evenly.
    pub fn level_counts(&self, level: u32) -> LevelCounts {
        let count = |per_level: &[usize], n: usize| {
            per_level.get(level.saturating_sub(1) as usize).copied().unwrap_or_else(|| share(n, self.levels, level))
        };
        LevelCounts {
            sft: count(&self.sft_per_level, self.n_sft),
            rl: count(&self.rl_per_level, self.n_rl),
            test: count(&self.test_per_level, self.n_test),
            val: count(&self.val_per_level, self.n_val),
        }
    }

    /// Worked pre-training problems of `level`.
    pub fn pretrain_count(&self, level: u32) -> usize {
        self.pretrain_problems.get(level.saturating_sub(1) as usize).copied().unwrap_or(0)
    }

    /// An upper bound on the characters of prompt + worked solution at `level`: what a
    /// context window must hold. With the defaults, level 4 is bounded by 70 characters.
    pub fn max_chars(&self, level: u32) -> usize {
        let (ops, squares) = (self.ops(level) as usize, self.squares(level) as usize);
        let question = (ops + 1) * digits(self.max_operand) + ops + 2 * ops.saturating_sub(1) + 2 * squares;
        let template = self.prompt_template.chars().count().saturating_sub(QUESTION_PLACEHOLDER.len());
        let line = 3 * digits(self.max_value) + 2;
        let lines = ops + squares;
        template + question + lines * (line + 1) + "#### ".len() + digits(self.max_value)
    }
}

/// How many problems of one level each split gets ([`TaskConfig::level_counts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelCounts {
    /// Worked solutions (`D_SFT`).
    pub sft: usize,
    /// RL prompts.
    pub rl: usize,
    /// Test prompts.
    pub test: usize,
    /// Validation prompts.
    pub val: usize,
}
